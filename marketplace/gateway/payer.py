"""The gateway's paying account: cumulative vouchers per provider, and per-job escrow.

The gateway pays providers with its operator's key (an eth-account ``LocalAccount``) and charges its clients
through its own accounts (:class:`~proxima.marketplace.gateway.dispatch.SpendLedger`). To every provider
the gateway is one client.

**Vouchers** (the default, fast: no transaction per job). Each provider gets a chain of cumulative vouchers
(:class:`~proxima.sdk.eip712.Voucher` in the ``PaymentVouchers`` domain). The node accepts a voucher only if
it counts exactly one job more than the latest one it recorded and at least the job's price more wei, and it
records the voucher together with the job it accepts (``node/payments.py``). Every voucher is written to the
job database *before* it is sent, in one of four states:

``inflight``   sent (or about to be), no answer yet; later vouchers build on it (optimistically);
``accepted``   the node recorded it (it answered with a result, or a later voucher built on it was accepted);
``refused``    the node refused the request before recording it: the next voucher reuses its count;
``uncertain``  no usable answer (timeout, broken stream, a failure that can come after acceptance, a
               restart while it was in flight): it may or may not be recorded.

The next voucher builds on the highest voucher that is not refused (the "recorded" assumption). A node that
answers ``unpaid`` with a *stale voucher* reason proves the assumption wrong: :meth:`Payer.resync` waits
until the vouchers sent before it are answered, reads the count the node expects from its message when it
says so (else takes the other assumption: the highest uncertain voucher was not recorded), and the attempt
retries once with a new voucher.

What the gateway risks: a provider that accepts a job and then fails (or never answers) keeps that job's
voucher: the next voucher to it includes that job's price, so the provider is paid for it. The gateway
operator absorbs that price; the client is never charged for it (the dispatcher charges clients only for a
delivered, verified result). The amount at risk per provider is bounded by the node's own exposure limit
(``max_unredeemed_per_client``, default 0.1 ETH) and by the deposit: :meth:`Payer.ensure_deposit` keeps the
``PaymentVouchers`` deposit above what the gateway owes through vouchers not yet redeemed.

**Escrow** (per job, on chain): quote -> :meth:`Payer.check_quote` (signed by the placed provider, for this
gateway and input, price within the cap, deadlines sane) -> :meth:`Payer.open_escrow` (``openJob`` with the
price as value) -> the job request with ``EscrowPayment`` -> on a verified result
:meth:`Payer.escrow_delivered`; :meth:`Payer.settle_escrows` (the dispatcher's duty loop, in a worker
thread) then confirms it once the provider has committed the same result hash on chain (payment released at
once), and claims back (``claimTimeout``: refund, the provider slashed, its ``jobs_failed`` incremented) every
escrow whose attempt failed and whose delivery deadline has passed.

A delivered escrow result that fails verification is *rejected* (:meth:`Payer.escrow_rejected`): the
gateway disputes it (``disputeResult``, posting the bond) once the provider has committed that result on
chain, and resolves the dispute at once with a quorum of verifier signatures over ``Verdict(escrowId,
resultHash, false)`` in the escrow's domain (:meth:`Payer.escrow_verdicts` keeps them,
:meth:`Payer.dispute_escrow` files both transactions): price and bond come back, the provider is slashed.
A provider that never commits is claimed back after its deadline, as for a failed attempt.

Chain calls block: call :meth:`open_escrow`, :meth:`settle_escrows`, :meth:`dispute_escrow`,
:meth:`ensure_deposit` and :meth:`outstanding` from worker threads. The voucher methods touch only the
database and a signature and are meant for the dispatcher's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from proxima.marketplace.errors import MarketError
from proxima.marketplace.gateway.jobstore import EventType, JobStore
from proxima.sdk.bindings import JobStatus as ChainJobStatus
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import ChainError
from proxima.sdk.eip712 import LocalSigner, Signature, Verdict, Voucher
from proxima.sdk.errors import SignatureError
from proxima.sdk.jobs import Domains, ErrorCode, Quote, VoucherPayment
from proxima.sdk.types import Address

__all__ = [
    "EscrowAction",
    "EscrowOpenError",
    "IssuedVoucher",
    "Payer",
    "PayerError",
    "QuoteRejectedError",
    "VoucherOutcome",
    "VoucherPosition",
    "is_stale_voucher",
]

log = logging.getLogger(__name__)

_EXPECTED_COUNT = re.compile(r"must count (\d+)")
_ALREADY_ACCEPTED = re.compile(r"not more than the (\d+) wei already accepted")
_BASE_SQL: Final = (
    "SELECT cumulative_jobs, cumulative_amount FROM vouchers WHERE provider = ? AND state != 'refused' "
    "ORDER BY cumulative_jobs DESC, id DESC LIMIT 1"
)
"""The voucher the next one builds on: the highest that may be recorded by the node."""
_INSERT_VOUCHER_SQL: Final = (
    "INSERT INTO vouchers (provider, cumulative_jobs, cumulative_amount, price_wei, signature, state, "
    "attempt, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_QUOTE_MARGIN_S: Final = 15
"""A quote must leave at least this many seconds to open it on chain."""


class PayerError(MarketError):
    """Root of the payer's errors."""


class QuoteRejectedError(PayerError):
    """A provider's quote is not acceptable for this job (the attempt fails over; nothing was paid).

    Args:
        provider: The provider.
        problem: What is wrong.
    """

    def __init__(self, provider: str, problem: str) -> None:
        self.provider = provider
        self.problem = problem
        super().__init__(f"quote from {provider} refused: {problem}")


class EscrowOpenError(PayerError):
    """``openJob`` failed (reverted, refused by the chain node, or no receipt); nothing is escrowed.

    Args:
        escrow_id: The escrow job id (``0x`` hex).
        problem: What went wrong.
    """

    def __init__(self, escrow_id: str, problem: str) -> None:
        self.escrow_id = escrow_id
        self.problem = problem
        super().__init__(f"cannot open escrow job {escrow_id}: {problem}")


class VoucherOutcome(StrEnum):
    """What became of a voucher that was sent."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class IssuedVoucher:
    """A voucher the payer signed for one attempt.

    Attributes:
        row: Its row in the ``vouchers`` table.
        provider: The provider it pays.
        cumulative_jobs: Jobs it covers, all included.
        cumulative_amount: Wei it covers, all included.
        price_wei: What this job adds.
        payment: The payment to put in the job request.
        attempt: The attempt it pays (``<job id>#<n>``).
    """

    row: int
    provider: Address
    cumulative_jobs: int
    cumulative_amount: int
    price_wei: int
    payment: VoucherPayment
    attempt: str = ""


@dataclass(frozen=True)
class VoucherPosition:
    """Where the vouchers to one provider stand (for status pages and tests).

    Attributes:
        provider: The provider.
        accepted_jobs: ``cumulative_jobs`` of the highest accepted voucher (0 if none).
        accepted_amount: Its ``cumulative_amount``.
        inflight: Vouchers sent without an answer yet.
        uncertain: Vouchers whose fate is unknown.
        next_jobs: The count the next voucher will carry.
        next_base_amount: The amount the next voucher builds on.
    """

    provider: Address
    accepted_jobs: int
    accepted_amount: int
    inflight: int
    uncertain: int
    next_jobs: int
    next_base_amount: int


@dataclass(frozen=True)
class EscrowAction:
    """One thing :meth:`Payer.settle_escrows` did.

    Attributes:
        escrow_id: The escrow job (``0x`` hex).
        job_id: The gateway job it paid for.
        action: ``"confirmed"``, ``"claimed"``, ``"settled"``, ``"paid_unused"``, ``"mismatch"``,
            ``"not_opened"``, ``"disputed"`` (a rejected result disputed and resolved: refunded, provider
            slashed), ``"dispute_lost"`` (the verdict found the result valid) or ``"error"``.
        detail: Extra information (the error, the amount refunded...).
        tx: The hash of the transaction that did it, if one was sent.
        slashed_wei: Stake the provider lost (``disputed``).
    """

    escrow_id: str
    job_id: str
    action: str
    detail: str = ""
    tx: str | None = None
    slashed_wei: int | None = None


def is_stale_voucher(code: ErrorCode, message: str) -> bool:
    """Whether a node's refusal says the voucher does not follow the latest one it recorded."""
    return code is ErrorCode.UNPAID and "stale_voucher" in message


class Payer:
    """The gateway's paying account.

    Args:
        account: The operator's key; it signs vouchers and job requests and sends escrow transactions.
        contracts: The deployment's bindings.
        store: The job database (vouchers and escrows are kept there).
        clock: Wall-clock time (unix seconds).
    """

    def __init__(
        self,
        account: LocalAccount,
        contracts: ProximaContracts,
        store: JobStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self.signer = LocalSigner(account)
        self.address: Address = self.signer.address
        self.contracts = contracts
        self.domains = Domains.from_deployment(contracts.deployment)
        self.store = store
        self._clock = clock
        self._changed: dict[Address, asyncio.Event] = {}
        with store.transaction() as conn:
            # Vouchers sent by a previous process that never heard back: their fate is unknown.
            moved = conn.execute(
                "UPDATE vouchers SET state = 'uncertain', updated_at = ? WHERE state = 'inflight'",
                (self._clock(),),
            ).rowcount
        if moved:
            log.info("vouchers in flight at the last stop are uncertain", extra={"count": moved})

    def __repr__(self) -> str:
        return f"Payer({self.address})"

    # --- vouchers ------------------------------------------------------------------------------------

    def _base(self, provider: Address) -> tuple[int, int]:
        rows = self.store.read(_BASE_SQL, (provider,))
        if not rows:
            return 0, 0
        return int(rows[0]["cumulative_jobs"]), int(rows[0]["cumulative_amount"])

    def issue_voucher(self, provider: str, price_wei: int, attempt: str) -> IssuedVoucher:
        """Sign the next voucher to ``provider`` for one more job of ``price_wei``; stored before it returns.

        Args:
            provider: The provider's address.
            price_wei: The job's price (what the node will ask: billing units times its unit price).
            attempt: Which attempt it pays (for the record), e.g. ``"0x..#2"``.

        Raises:
            PayerError: If the price is not positive.
        """
        if isinstance(price_wei, bool) or not isinstance(price_wei, int) or price_wei <= 0:
            raise PayerError(f"a voucher needs a positive price, got {price_wei!r}")
        provider = to_checksum_address(provider)
        with self.store.transaction() as conn:
            row = conn.execute(_BASE_SQL, (provider,)).fetchone()
            jobs, amount = (
                (0, 0) if row is None else (int(row["cumulative_jobs"]), int(row["cumulative_amount"]))
            )
            voucher = Voucher(
                client=self.address,
                provider=provider,
                cumulative_amount=amount + price_wei,
                cumulative_jobs=jobs + 1,
            )
            signature = voucher.sign(self.signer, self.domains.vouchers_domain).signature.to_bytes()
            now = self._clock()
            cursor = conn.execute(
                _INSERT_VOUCHER_SQL,
                (
                    provider,
                    jobs + 1,
                    str(amount + price_wei),
                    str(price_wei),
                    signature,
                    "inflight",
                    attempt,
                    now,
                    now,
                ),
            )
            row_id = int(cursor.lastrowid or 0)
        log.debug(
            "voucher issued",
            extra={
                "job_id": attempt.partition("#")[0],
                "provider": provider,
                "cumulative_jobs": jobs + 1,
                "price": price_wei,
                "attempt": attempt,
            },
        )
        return IssuedVoucher(
            row=row_id,
            provider=provider,
            cumulative_jobs=jobs + 1,
            cumulative_amount=amount + price_wei,
            price_wei=price_wei,
            payment=VoucherPayment(voucher=voucher, signature=signature),
            attempt=attempt,
        )

    def find_voucher(self, payment: VoucherPayment) -> IssuedVoucher | None:
        """The issued voucher a stored request carries (after a restart), or ``None``."""
        v = payment.voucher
        rows = self.store.read(
            "SELECT id, price_wei, attempt FROM vouchers WHERE provider = ? AND cumulative_jobs = ? "
            "AND signature = ?",
            (v.provider, v.cumulative_jobs, payment.signature),
        )
        if not rows:
            return None
        return IssuedVoucher(
            row=int(rows[0]["id"]),
            provider=v.provider,
            cumulative_jobs=v.cumulative_jobs,
            cumulative_amount=v.cumulative_amount,
            price_wei=int(rows[0]["price_wei"]),
            payment=payment,
            attempt=str(rows[0]["attempt"]),
        )

    def settle_voucher(self, issued: IssuedVoucher, outcome: VoucherOutcome) -> None:
        """Record what became of a voucher (from the dispatcher's event loop).

        ``accepted`` also marks accepted every uncertain voucher below it to the same provider (the node
        accepted this one only because it had recorded those).
        """
        now = self._clock()
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE vouchers SET state = ?, updated_at = ? WHERE id = ?", (outcome.value, now, issued.row)
            )
            if outcome is VoucherOutcome.ACCEPTED:
                conn.execute(
                    "UPDATE vouchers SET state = 'accepted', updated_at = ? WHERE provider = ? "
                    "AND cumulative_jobs < ? AND state = 'uncertain'",
                    (now, issued.provider, issued.cumulative_jobs),
                )
        log.debug(
            "voucher settled",
            extra={
                "job_id": issued.attempt.partition("#")[0],
                "provider": issued.provider,
                "cumulative_jobs": issued.cumulative_jobs,
                "outcome": outcome.value,
            },
        )
        self._wake(issued.provider)

    def _wake(self, provider: Address) -> None:
        event = self._changed.pop(provider, None)
        if event is not None:
            event.set()

    async def resync(self, issued: IssuedVoucher, message: str, *, timeout: float) -> None:
        """After a *stale voucher* refusal of ``issued`` (already settled as refused): make the next voucher
        follow what the node recorded.

        If vouchers sent to that provider before this one were still unanswered, the refusal may only mean
        that this one overtook them: wait (up to ``timeout``) for their answers and build on the result.
        Otherwise the node's message decides: when it names the count it expects, uncertain vouchers at or
        below the node's latest are marked accepted and those above it refused (a count above anything
        accepted here, after a lost database, is taken as the base); when it names the amount it holds,
        that amount becomes the base; else the highest uncertain voucher is taken as not recorded (the
        other assumption). Accepted vouchers are never demoted: the node's acceptance is proof.
        """
        provider = issued.provider
        job_id = issued.attempt.partition("#")[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waited = False
        while True:
            waiting = self.store.read(
                "SELECT COUNT(*) AS n FROM vouchers WHERE provider = ? AND state = 'inflight' AND id < ?",
                (provider, issued.row),
            )[0]["n"]
            remaining = deadline - loop.time()
            if not waiting or remaining <= 0:
                break
            waited = True
            event = self._changed.setdefault(provider, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
        if waited:
            log.info(
                "stale voucher overtook earlier ones; rebuilding on their outcome",
                extra={"job_id": job_id, "provider": provider},
            )
            return
        expected = _EXPECTED_COUNT.search(message)
        holds = _ALREADY_ACCEPTED.search(message)
        now = self._clock()
        with self.store.transaction() as conn:
            if expected is not None:
                latest = int(expected.group(1)) - 1
                conn.execute(
                    "UPDATE vouchers SET state = 'accepted', updated_at = ? WHERE provider = ? "
                    "AND state = 'uncertain' AND cumulative_jobs <= ?",
                    (now, provider, latest),
                )
                conn.execute(
                    "UPDATE vouchers SET state = 'refused', updated_at = ? WHERE provider = ? "
                    "AND state = 'uncertain' AND cumulative_jobs > ?",
                    (now, provider, latest),
                )
                top = conn.execute(
                    "SELECT MAX(cumulative_jobs) AS j FROM vouchers WHERE provider = ? "
                    "AND state = 'accepted'",
                    (provider,),
                ).fetchone()["j"]
                if latest > int(top or 0):
                    # The node counts vouchers this database never saw accepted (a lost database). Build on
                    # the largest amount ever signed to it; a refusal naming the node's amount corrects it.
                    amounts = conn.execute(
                        "SELECT cumulative_amount FROM vouchers WHERE provider = ?", (provider,)
                    ).fetchall()
                    signed = max((int(r["cumulative_amount"]) for r in amounts), default=0)
                    conn.execute(
                        _INSERT_VOUCHER_SQL,
                        (provider, latest, str(signed), "0", b"", "accepted", "resync", now, now),
                    )
                log.info(
                    "vouchers resynchronised with the node's count",
                    extra={"job_id": job_id, "provider": provider, "node_latest_jobs": latest},
                )
            elif holds is not None:
                amount = int(holds.group(1))
                conn.execute(
                    _INSERT_VOUCHER_SQL,
                    (
                        provider,
                        issued.cumulative_jobs - 1,
                        str(amount),
                        "0",
                        b"",
                        "accepted",
                        "resync",
                        now,
                        now,
                    ),
                )
                log.info(
                    "vouchers resynchronised with the node's amount",
                    extra={"job_id": job_id, "provider": provider, "amount": amount},
                )
            else:
                top_uncertain = conn.execute(
                    "SELECT id, cumulative_jobs FROM vouchers WHERE provider = ? AND state = 'uncertain' "
                    "ORDER BY cumulative_jobs DESC, id DESC LIMIT 1",
                    (provider,),
                ).fetchone()
                if top_uncertain is not None:
                    conn.execute(
                        "UPDATE vouchers SET state = 'refused', updated_at = ? WHERE id = ?",
                        (now, top_uncertain["id"]),
                    )
                    log.info(
                        "uncertain voucher taken as not recorded",
                        extra={
                            "job_id": job_id,
                            "provider": provider,
                            "cumulative_jobs": int(top_uncertain["cumulative_jobs"]),
                        },
                    )

    def position(self, provider: str) -> VoucherPosition:
        """Where the vouchers to ``provider`` stand."""
        provider = to_checksum_address(provider)
        rows = self.store.read(
            "SELECT state, cumulative_jobs, cumulative_amount FROM vouchers WHERE provider = ?", (provider,)
        )
        accepted = [r for r in rows if r["state"] == "accepted"]
        top = max(accepted, key=lambda r: int(r["cumulative_jobs"]), default=None)
        jobs, amount = self._base(provider)
        return VoucherPosition(
            provider=provider,
            accepted_jobs=0 if top is None else int(top["cumulative_jobs"]),
            accepted_amount=0 if top is None else int(top["cumulative_amount"]),
            inflight=sum(1 for r in rows if r["state"] == "inflight"),
            uncertain=sum(1 for r in rows if r["state"] == "uncertain"),
            next_jobs=jobs + 1,
            next_base_amount=amount,
        )

    def outstanding(self) -> int:
        """Wei the gateway owes through vouchers that are not redeemed yet (reads the chain; blocking).

        Counts, per provider, the highest voucher that may be recorded (not refused) less what the provider
        redeemed on chain.
        """
        owed: dict[str, int] = {}
        for row in self.store.read(
            "SELECT provider, cumulative_amount FROM vouchers WHERE state != 'refused'"
        ):
            owed[row["provider"]] = max(owed.get(row["provider"], 0), int(row["cumulative_amount"]))
        total = 0
        for provider, amount in sorted(owed.items()):
            redeemed = self.contracts.vouchers.redeemed_of(self.address, provider).amount
            total += max(amount - redeemed, 0)
        return total

    def deposit_available(self) -> int:
        """The ``PaymentVouchers`` deposit less any pending withdrawal (blocking chain read)."""
        deposit = self.contracts.vouchers.deposit_of(self.address)
        return deposit.balance - min(deposit.pending_withdrawal, deposit.balance)

    def ensure_deposit(self, min_wei: int) -> int:
        """Top up the ``PaymentVouchers`` deposit so that at least ``min_wei`` is available (blocking).

        Returns:
            The available deposit afterwards.

        Raises:
            PayerError: If the deposit transaction fails (the message says why; no key material).
        """
        available = self.deposit_available()
        if available >= min_wei:
            return available
        top_up = min_wei - available
        try:
            self.contracts.vouchers.deposit(self.account, top_up)
        except ChainError as err:
            raise PayerError(f"cannot deposit {top_up} wei into PaymentVouchers: {err}") from err
        log.info("voucher deposit topped up", extra={"amount": top_up, "available": available + top_up})
        return available + top_up

    # --- escrow --------------------------------------------------------------------------------------

    def check_quote(
        self,
        quote: Quote,
        provider: str,
        *,
        spec_hash: bytes,
        max_price_wei: int | None,
        max_duration_s: int,
    ) -> None:
        """Check a provider's quote before opening it (chain-free).

        Args:
            quote: The quote.
            provider: The provider the job was placed on.
            spec_hash: The hash of the job's workload and input.
            max_price_wei: The most the job may pay this provider (``None``: no cap).
            max_duration_s: The furthest delivery deadline accepted, in seconds from now (a failed job's
                escrow can be claimed back only after it).

        Raises:
            QuoteRejectedError: Naming the first problem.
        """
        terms = quote.terms
        provider = to_checksum_address(provider)
        now = int(self._clock())
        problems: list[str] = []
        try:
            signer = quote.signer(self.domains.escrow_domain)
        except SignatureError as err:
            signer = None
            problems.append(f"unreadable signature: {err}")
        if terms.provider != provider:
            problems.append(f"the terms name provider {terms.provider}, the job was placed on {provider}")
        elif signer is not None and signer != provider:
            problems.append(f"signed by {signer}, not by {provider}")
        if terms.client != self.address:
            problems.append(f"the terms name client {terms.client}, not this gateway ({self.address})")
        if terms.spec_hash != spec_hash:
            problems.append("the terms are for another workload or input (spec hash differs)")
        if max_price_wei is not None and terms.price > max_price_wei:
            problems.append(f"price {terms.price} wei is above the job's cap of {max_price_wei} wei")
        if terms.price <= 0:
            problems.append("the price is zero")
        if terms.accept_by < now + _QUOTE_MARGIN_S:
            problems.append(f"the quote must be opened by {terms.accept_by}, too soon (now {now})")
        if terms.delivery_deadline > now + max_duration_s:
            problems.append(
                f"delivery deadline {terms.delivery_deadline} is more than {max_duration_s}s away (now {now})"
            )
        if self.escrow_state("0x" + terms.job_id.hex()) is not None:
            problems.append(f"escrow job 0x{terms.job_id.hex()} was seen before")
        if problems:
            raise QuoteRejectedError(provider, "; ".join(problems))

    def open_escrow(self, quote: Quote, job_id: str, attempt: int) -> None:
        """Open the escrow job of ``quote`` on chain, paying its price (blocking).

        The escrow is recorded (``opening``) before the transaction is sent and ``open`` once it is mined.

        Raises:
            EscrowOpenError: If the transaction reverts, is refused or is not mined; the escrow is then
                recorded ``not_opened``.
        """
        terms = quote.terms
        escrow_id = "0x" + terms.job_id.hex()
        now = self._clock()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO escrows (escrow_id, job_id, attempt, provider, price_wei, accept_by, "
                "delivery_deadline, terms, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'opening', ?, ?)",
                (
                    escrow_id,
                    job_id,
                    attempt,
                    terms.provider,
                    str(terms.price),
                    terms.accept_by,
                    terms.delivery_deadline,
                    json.dumps(quote.model_dump(mode="json")),
                    now,
                    now,
                ),
            )
        try:
            receipt = self.contracts.escrow.open_job(self.account, quote.signed())
        except (ChainError, SignatureError) as err:
            self._set_escrow(escrow_id, "not_opened", note=str(err)[:500])
            raise EscrowOpenError(escrow_id, str(err)) from err
        tx = bytes(receipt["transactionHash"]).hex()
        self._set_escrow(escrow_id, "open", tx="0x" + tx)
        log.info(
            "escrow opened",
            extra={
                "job_id": job_id,
                "escrow_id": escrow_id,
                "provider": terms.provider,
                "price": terms.price,
            },
        )

    def _set_escrow(self, escrow_id: str, state: str, **columns: str | None) -> None:
        with self.store.transaction() as conn:
            self._update_escrow(conn, escrow_id, state, **columns)

    def _update_escrow(self, conn: Any, escrow_id: str, state: str, **columns: str | None) -> None:
        names = "".join(f", {name} = ?" for name in columns)
        conn.execute(
            f"UPDATE escrows SET state = ?, updated_at = ?{names} WHERE escrow_id = ?",  # noqa: S608 - our names
            (state, self._clock(), *columns.values(), escrow_id),
        )

    def escrow_state(self, escrow_id: str) -> str | None:
        """The recorded state of an escrow job (``opening``, ``open``, ``delivered``, ``failed``,
        ``confirmed``, ``claimed``...), or ``None`` if it was never opened here."""
        rows = self.store.read("SELECT state FROM escrows WHERE escrow_id = ?", (escrow_id,))
        return None if not rows else str(rows[0]["state"])

    def escrows(self, job_id: str) -> list[dict[str, Any]]:
        """The escrows opened for a gateway job, oldest first (state, provider, price, deadline, tx)."""
        rows = self.store.read(
            "SELECT escrow_id, attempt, provider, price_wei, delivery_deadline, state, result_hash, tx, note "
            "FROM escrows WHERE job_id = ? ORDER BY attempt",
            (job_id,),
        )
        return [dict(r) for r in rows]

    def reconcile_opening(self, escrow_id: str) -> str:
        """For an escrow left ``opening`` by a restart: ``open`` if the chain holds it, else unchanged
        (blocking chain read). Returns the state."""
        state = self.escrow_state(escrow_id)
        if state != "opening":
            return state or "unknown"
        onchain = self.contracts.escrow.job_of(bytes.fromhex(escrow_id[2:]))
        if onchain.status is not ChainJobStatus.NONE:
            self._set_escrow(escrow_id, "open")
            return "open"
        return "opening"

    def escrow_delivered(self, escrow_id: str, result_hash: bytes) -> None:
        """A verified result came for this escrow job: confirm it once the provider commits it on chain."""
        self._set_escrow(escrow_id, "delivered", result_hash="0x" + result_hash.hex())

    def escrow_rejected(self, escrow_id: str, result_hash: bytes, reason: str) -> None:
        """The result delivered for this escrow job failed verification: dispute it (never confirm it)."""
        if self.escrow_state(escrow_id) in ("open", "opening"):
            self._set_escrow(escrow_id, "rejected", result_hash="0x" + result_hash.hex(), note=reason[:500])

    def escrow_verdicts(self, escrow_id: str, signatures: Sequence[tuple[Address, Signature]]) -> None:
        """Keep verifier signatures over ``Verdict(escrowId, resultHash, false)`` for the dispute."""
        data = json.dumps([[address, "0x" + sig.to_bytes().hex()] for address, sig in signatures])
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE escrows SET verdicts = ?, updated_at = ? WHERE escrow_id = ?",
                (data, self._clock(), escrow_id),
            )

    def _verdicts(self, escrow_id: str) -> list[tuple[Address, Signature]]:
        rows = self.store.read("SELECT verdicts FROM escrows WHERE escrow_id = ?", (escrow_id,))
        if not rows or rows[0]["verdicts"] is None:
            return []
        return [
            (Address(address), Signature.from_bytes(bytes.fromhex(sig[2:])))
            for address, sig in json.loads(rows[0]["verdicts"])
        ]

    def dispute_escrow(self, escrow_id: str) -> EscrowAction | None:
        """Dispute a rejected escrow result now, if it can be (blocking; also the duty loop's).

        Once the provider has committed the rejected result on chain (``Delivered``) and verdict signatures
        are kept: ``disputeResult`` (posting the bond) then ``resolveDispute`` with them. A provider that
        never commits is claimed back after its deadline.

        Returns:
            What was done, or ``None`` when it is not time yet (not committed, no verdicts yet).

        Raises:
            ChainError: If a transaction fails (retried by the next duty pass).
        """
        rows = self.store.read(
            "SELECT escrow_id, job_id, state, delivery_deadline, accept_by, result_hash FROM escrows "
            "WHERE escrow_id = ?",
            (escrow_id,),
        )
        if not rows or rows[0]["state"] != "rejected":
            return None
        return self._settle_rejected(rows[0], self.contracts.chain.now())

    def _settle_rejected(self, row: Any, now: int) -> EscrowAction | None:
        escrow = self.contracts.escrow
        escrow_id, job_id = str(row["escrow_id"]), str(row["job_id"])
        raw_id = bytes.fromhex(escrow_id[2:])
        onchain = escrow.job_of(raw_id)
        status = onchain.status
        if status is ChainJobStatus.ACCEPTED:
            if now <= onchain.delivery_deadline:
                return None
            receipt = escrow.claim_timeout(self.account, raw_id)
            tx = "0x" + bytes(receipt["transactionHash"]).hex()
            self._set_escrow(escrow_id, "claimed", tx=tx)
            return EscrowAction(escrow_id, job_id, "claimed", f"refund {onchain.price} wei", tx)
        if status is ChainJobStatus.REFUNDED:
            self._set_escrow(escrow_id, "claimed", note="refunded on chain")
            return EscrowAction(escrow_id, job_id, "claimed", "refunded")
        if status is ChainJobStatus.SETTLED:
            self._set_escrow(escrow_id, "settled", note="paid although rejected (not disputed in time)")
            log.warning(
                "a rejected escrow result was paid (not disputed within its challenge window)",
                extra={"job_id": job_id, "escrow_id": escrow_id, "provider": onchain.provider},
            )
            return EscrowAction(escrow_id, job_id, "settled")
        ours = row["result_hash"]
        theirs = "0x" + onchain.result_hash.hex()
        if ours is not None and theirs != ours:
            self._set_escrow(escrow_id, "mismatch", note=f"chain holds {theirs}, the rejected receipt {ours}")
            return EscrowAction(escrow_id, job_id, "mismatch", theirs)
        verdicts = self._verdicts(escrow_id)
        if not verdicts:
            return None  # the evidence task stores them; without verifiers the result cannot be disputed
        quorum = escrow.parameter("verdictQuorum")
        if len(verdicts) < quorum:
            return None
        disputed_tx = None
        if status is ChainJobStatus.DELIVERED:
            if now > onchain.challenge_ends_at:
                return None  # too late to dispute: it settles (logged when it does)
            disputed_tx = "0x" + bytes(escrow.dispute_result(self.account, raw_id)["transactionHash"]).hex()
        elif status is not ChainJobStatus.DISPUTED:
            return None
        verdict = Verdict(job_id=raw_id, result_hash=onchain.result_hash, result_valid=False)
        receipt = escrow.resolve_dispute(self.account, verdict, verdicts)
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        slashed = sum(int(e.args["amount"]) for e in self.contracts.registry.events(receipt, "Slashed"))
        self._set_escrow(escrow_id, "disputed", tx=tx, note=f"dispute {disputed_tx}; slashed {slashed} wei")
        log.info(
            "rejected escrow result disputed and refunded; provider slashed",
            extra={
                "job_id": job_id,
                "escrow_id": escrow_id,
                "provider": onchain.provider,
                "slashed": slashed,
            },
        )
        return EscrowAction(escrow_id, job_id, "disputed", f"slashed {slashed} wei", tx, slashed)

    def escrow_failed(self, escrow_id: str, reason: str) -> None:
        """The attempt paid by this escrow failed: claim it back after its delivery deadline."""
        if self.escrow_state(escrow_id) in ("open", "opening"):
            self._set_escrow(escrow_id, "failed", note=reason[:500])

    def settle_escrows(self) -> list[EscrowAction]:
        """One pass over the escrows that still need a transaction (blocking; the duty loop's).

        * ``delivered``: confirm once the chain holds our result hash (``Delivered``, within the challenge
          window); claim back if the provider never committed by its deadline; a different hash on chain
          is logged as ``mismatch`` (a dispute is left to the operator).
        * ``failed`` (and ``opening`` ones the chain holds): claim back after the delivery deadline
          (``claimTimeout``); if the provider committed a result anyway, it is paid after the challenge
          window (``paid_unused``, absorbed by the operator).
        * ``rejected`` (the result failed verification): disputed and resolved with the kept verdicts once
          the provider commits it (:meth:`dispute_escrow`), claimed back if it never does.

        Returns:
            What was done; an error on one escrow does not stop the others.
        """
        rows = self.store.read(
            "SELECT escrow_id, job_id, state, delivery_deadline, accept_by, result_hash FROM escrows "
            "WHERE state IN ('opening', 'open', 'delivered', 'failed', 'rejected') ORDER BY delivery_deadline"
        )
        if not rows:
            return []
        actions: list[EscrowAction] = []
        escrow = self.contracts.escrow
        now = self.contracts.chain.now()
        for row in rows:
            escrow_id, job_id, state = row["escrow_id"], row["job_id"], row["state"]
            try:
                if state == "rejected":
                    action = self._settle_rejected(row, now)
                else:
                    action = self._settle_one(escrow_id, job_id, state, row, now)
            except ChainError as err:
                log.warning(
                    "escrow settlement failed; will retry",
                    extra={"job_id": job_id, "escrow_id": escrow_id, "error": str(err)[:300]},
                )
                actions.append(EscrowAction(escrow_id, job_id, "error", str(err)[:300]))
                continue
            if action is not None:
                actions.append(action)
                if action.action in ("confirmed", "claimed", "disputed"):
                    self.store.add_event(
                        job_id, EventType.SETTLED, {"escrow_id": escrow_id, "action": action.action}
                    )
        del escrow
        return actions

    def _settle_one(self, escrow_id: str, job_id: str, state: str, row: Any, now: int) -> EscrowAction | None:
        escrow = self.contracts.escrow
        raw_id = bytes.fromhex(escrow_id[2:])
        onchain = escrow.job_of(raw_id)
        status = onchain.status
        if state == "opening":
            if status is ChainJobStatus.NONE:
                if now > int(row["accept_by"]):
                    self._set_escrow(escrow_id, "not_opened", note="never opened on chain")
                    return EscrowAction(escrow_id, job_id, "not_opened")
                return None
            state = "failed"  # opened, but the attempt did not go on from here
            self._set_escrow(escrow_id, "failed", note="found open on chain after a restart")
        if state == "open":
            return None  # an attempt is using it
        if status is ChainJobStatus.SETTLED:
            self._set_escrow(escrow_id, "settled")
            return EscrowAction(escrow_id, job_id, "settled")
        if status is ChainJobStatus.REFUNDED:
            self._set_escrow(escrow_id, "claimed", note="refunded on chain")
            return EscrowAction(escrow_id, job_id, "claimed", "refunded by someone else")
        if status is ChainJobStatus.ACCEPTED:
            if now <= onchain.delivery_deadline:
                return None
            receipt = escrow.claim_timeout(self.account, raw_id)
            tx = "0x" + bytes(receipt["transactionHash"]).hex()
            self._set_escrow(escrow_id, "claimed", tx=tx)
            log.info(
                "escrow claimed back after its deadline",
                extra={"job_id": job_id, "escrow_id": escrow_id, "provider": onchain.provider, "tx": tx},
            )
            return EscrowAction(escrow_id, job_id, "claimed", f"refund {onchain.price} wei")
        if status is ChainJobStatus.DELIVERED:
            ours = row["result_hash"]
            theirs = "0x" + onchain.result_hash.hex()
            if state == "failed" or ours is None:
                self._set_escrow(escrow_id, "paid_unused", note=f"provider committed {theirs}")
                log.warning(
                    "provider committed a result this gateway never received; it is paid after the challenge "
                    "window (operator's loss)",
                    extra={"job_id": job_id, "escrow_id": escrow_id, "provider": onchain.provider},
                )
                return EscrowAction(escrow_id, job_id, "paid_unused")
            if theirs != ours:
                self._set_escrow(escrow_id, "mismatch", note=f"chain holds {theirs}, the receipt {ours}")
                log.error(
                    "provider committed a different result than it delivered (dispute it)",
                    extra={"job_id": job_id, "escrow_id": escrow_id, "onchain": theirs, "receipt": ours},
                )
                return EscrowAction(escrow_id, job_id, "mismatch", theirs)
            if now > onchain.challenge_ends_at:
                return None  # the provider releases the payment itself; wait to see it settled
            receipt = escrow.confirm_result(self.account, raw_id)
            tx = "0x" + bytes(receipt["transactionHash"]).hex()
            self._set_escrow(escrow_id, "confirmed", tx=tx)
            log.info("escrow result confirmed", extra={"job_id": job_id, "escrow_id": escrow_id, "tx": tx})
            return EscrowAction(escrow_id, job_id, "confirmed")
        return None  # disputed: the verdict decides
