"""The node's duties on chain: commit escrow results, collect escrow payments, redeem vouchers, attest.

Every duty can be called synchronously (tests, CLI) and :meth:`ChainDuties.run` loops them under trio, each
pass in a worker thread. Each duty reads the chain before it acts, so a pass repeated after a crash or a lost
receipt never sends a transaction twice: a result already committed is only recorded, a voucher already
redeemed is only marked.

Deadlines are judged by chain time (the latest block's timestamp), as the contracts judge them; the wall clock
only paces the loop and the redemption interval.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.types import TxReceipt

from proxima.node.store import NodeStore, StoredJob
from proxima.sdk.bindings import JobStatus, ProximaContracts
from proxima.sdk.eip712 import AttestationBatch, LocalSigner, Measurement, SignedMessage, Voucher
from proxima.sdk.errors import ContractRevertError
from proxima.sdk.types import Address

__all__ = ["ChainDuties", "DutySettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DutySettings:
    """How often and when the node acts on chain.

    Attributes:
        commit_margin: Seconds before a pending commit's delivery deadline by which the loop retries it,
            however long its error backoff.
        redeem_threshold: Redeem vouchers once this many wei are outstanding over all clients.
        redeem_interval: Or once this many seconds passed since the last redemption (or the start).
        poll_interval: Seconds between passes of :meth:`ChainDuties.run` (a job completion wakes it sooner).
        max_backoff: Longest wait after failing passes (the wait doubles from ``poll_interval``).
        attestation_ttl: Seconds an attestation batch stays valid after it is signed.
        release_payments: Call ``releasePayment`` for this node's escrow jobs once their challenge window
            ends.
    """

    commit_margin: int = 60
    redeem_threshold: int = 10**17
    redeem_interval: float = 3_600.0
    poll_interval: float = 2.0
    max_backoff: float = 60.0
    attestation_ttl: int = 600
    release_payments: bool = True

    def __post_init__(self) -> None:
        for name in ("commit_margin", "redeem_threshold", "attestation_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"DutySettings.{name} must be a non-negative integer, got {value!r}")
        for name in ("redeem_interval", "poll_interval", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"DutySettings.{name} must be a positive number of seconds, got {value!r}")
        if self.max_backoff < self.poll_interval:
            raise ValueError(
                f"DutySettings.max_backoff ({self.max_backoff}) must be at least poll_interval "
                f"({self.poll_interval})"
            )


def _tx_hash(receipt: TxReceipt) -> bytes:
    return bytes(receipt["transactionHash"])


class ChainDuties:
    """Sends the node's transactions: result commitments, payment releases, voucher redemptions, attestations.

    Args:
        contracts: The deployment's bindings.
        account: The node's key (the provider address); it signs and pays for the transactions.
        store: The node's store.
        settings: Thresholds and pacing.
        clock: Wall-clock time (redemption interval, deadline-aware backoff).
    """

    def __init__(
        self,
        contracts: ProximaContracts,
        account: LocalAccount,
        store: NodeStore,
        settings: DutySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.contracts = contracts
        self.account = account
        self.provider: Address = to_checksum_address(account.address)
        self.store = store
        self.settings = settings or DutySettings()
        self._clock = clock
        self._signer = LocalSigner(account)
        self._last_redeem = clock()
        self._attestation_lock = threading.Lock()
        self._requested_attestation: tuple[tuple[Measurement, ...], int] | None = None
        self._unpayable_logged: set[tuple[Address, int]] = set()
        self._wake = trio.Event()

    def __repr__(self) -> str:
        return f"ChainDuties({self.provider})"

    def _log_tx(self, kind: str, receipt: TxReceipt, job_id: bytes | None = None, **extra: object) -> None:
        log.info(
            "chain transaction",
            extra={
                "kind": kind,
                "job_id": job_id.hex() if job_id is not None else None,
                "tx_hash": _tx_hash(receipt).hex(),
                "gas_used": int(receipt["gasUsed"]),
                **extra,
            },
        )

    # --- escrow --------------------------------------------------------------------------------------

    def commit_pending(self) -> list[bytes]:
        """Commit the result hash of every completed escrow job, earliest deadline first.

        A job whose result is already on chain (a commit whose receipt was lost) is recorded as committed
        without a new transaction; one whose deadline passed, or that the chain refunded, is marked failed.

        Returns:
            The hashes of the commit transactions sent.

        Raises:
            Exception: Whatever the chain connection raises when it is unreachable (the store is left
                consistent: each job is recorded as soon as its transaction is mined).
        """
        sent: list[bytes] = []
        for stored in self.store.pending_commits():
            tx = self._commit_one(stored)
            if tx is not None:
                sent.append(tx)
        return sent

    def _commit_one(self, stored: StoredJob) -> bytes | None:
        job_id, hex_id = stored.job_id, stored.job_id.hex()
        result_hash = stored.result_hash
        assert result_hash is not None  # a completed job always has one (store invariant)
        escrow = self.contracts.escrow
        onchain = escrow.job_of(job_id)
        if onchain.status in (JobStatus.DELIVERED, JobStatus.DISPUTED, JobStatus.SETTLED):
            if onchain.result_hash == result_hash:
                log.info("result already committed on chain", extra={"job_id": hex_id})
                self.store.mark_committed(job_id, None, challenge_ends_at=onchain.challenge_ends_at)
                if onchain.status is JobStatus.SETTLED:
                    self.store.mark_settled(job_id, None)
            else:
                log.error(
                    "a different result is committed on chain for this job",
                    extra={"job_id": hex_id, "ours": result_hash.hex(), "onchain": onchain.result_hash.hex()},
                )
                self.store.fail_job(job_id, f"chain holds result 0x{onchain.result_hash.hex()}, not ours")
            return None
        if onchain.status is not JobStatus.ACCEPTED:
            state = onchain.status.name.lower()
            log.error(
                "escrow job is no longer open; result not committed",
                extra={"job_id": hex_id, "status": state},
            )
            self.store.fail_job(job_id, f"escrow job is {state} on chain; the result was not committed")
            return None
        now = self.contracts.chain.now()
        if now > onchain.delivery_deadline:
            log.error(
                "delivery deadline passed before the result was committed",
                extra={"job_id": hex_id, "deadline": onchain.delivery_deadline, "chain_time": now},
            )
            self.store.fail_job(job_id, f"delivery deadline {onchain.delivery_deadline} passed at {now}")
            return None
        try:
            receipt = escrow.commit_result(self.account, job_id, result_hash)
        except ContractRevertError as err:
            if err.error_name == "EscrowDeadlinePassed":
                log.error("delivery deadline passed while committing", extra={"job_id": hex_id})
                self.store.fail_job(job_id, f"delivery deadline passed: {err}")
                return None
            log.error("commit reverted; will retry", extra={"job_id": hex_id, "error": str(err)})
            return None
        committed = escrow.events(receipt, "ResultCommitted")
        ends_at = int(committed[0].args["challengeEndsAt"]) if committed else None
        self.store.mark_committed(
            job_id, _tx_hash(receipt), challenge_ends_at=ends_at, gas_used=int(receipt["gasUsed"])
        )
        self._log_tx("commit", receipt, job_id, challenge_ends_at=ends_at)
        return _tx_hash(receipt)

    def release_payments(self) -> list[bytes]:
        """Collect payment for committed escrow jobs whose challenge window ended without a dispute.

        Jobs the client confirmed (already paid) are recorded as settled; disputed ones wait for the verdict;
        ones the chain refunded to the client are marked failed.

        Returns:
            The hashes of the ``releasePayment`` transactions sent.
        """
        sent: list[bytes] = []
        escrow = self.contracts.escrow
        now = self.contracts.chain.now()
        for stored in self.store.pending_settlements(now=now):
            job_id, hex_id = stored.job_id, stored.job_id.hex()
            onchain = escrow.job_of(job_id)
            if onchain.status is JobStatus.SETTLED:
                self.store.mark_settled(job_id, None)
            elif onchain.status is JobStatus.REFUNDED:
                log.error("escrow job refunded to the client", extra={"job_id": hex_id})
                self.store.fail_job(job_id, "refunded to the client on chain (dispute lost or expired)")
            elif onchain.status is JobStatus.DELIVERED and now > onchain.challenge_ends_at:
                try:
                    receipt = escrow.release_payment(self.account, job_id)
                except ContractRevertError as err:
                    log.warning("release reverted; will retry", extra={"job_id": hex_id, "error": str(err)})
                    continue
                self.store.mark_settled(job_id, _tx_hash(receipt), gas_used=int(receipt["gasUsed"]))
                paid = escrow.events(receipt, "JobSettled")
                self._log_tx("release", receipt, job_id, payout=paid[0].args["payout"] if paid else None)
                sent.append(_tx_hash(receipt))
            elif onchain.status is JobStatus.DISPUTED:
                log.debug("escrow job disputed; waiting for the verdict", extra={"job_id": hex_id})
        return sent

    # --- vouchers ------------------------------------------------------------------------------------

    def redeem_vouchers(self, force: bool = False) -> bytes | None:
        """Redeem every client's latest unredeemed voucher in one batch, when it is due.

        It is due when ``force`` is set, when the outstanding total reaches ``redeem_threshold``, or when
        ``redeem_interval`` passed since the last redemption. Vouchers already redeemed on chain are only
        marked; when a client's deposit no longer covers its latest voucher (another provider redeemed
        first), the largest older voucher it still covers is redeemed instead.

        Returns:
            The batch transaction's hash, or ``None`` if nothing was sent.
        """
        pending = self.store.unredeemed_vouchers()
        if not pending:
            return None
        accounts = {a.client: a for a in self.store.voucher_accounts()}
        outstanding = sum(accounts[s.message.client].outstanding for s in pending)
        elapsed = self._clock() - self._last_redeem
        if not (
            force or outstanding >= self.settings.redeem_threshold or elapsed >= self.settings.redeem_interval
        ):
            return None
        batch = [v for v in (self._redeemable(s) for s in pending) if v is not None]
        if not batch:
            return None
        receipt = self.contracts.vouchers.redeem_batch(self.account, self.provider, batch)
        tx = _tx_hash(receipt)
        self.store.mark_redeemed([s.message for s in batch], tx, gas_used=int(receipt["gasUsed"]))
        self._last_redeem = self._clock()
        paid = self.contracts.vouchers.events(receipt, "ProviderPaid")
        self._log_tx(
            "redeem",
            receipt,
            vouchers=len(batch),
            amount=sum(
                int(e.args["amount"]) for e in self.contracts.vouchers.events(receipt, "VoucherRedeemed")
            ),
            payout=int(paid[0].args["payout"]) if paid else None,
        )
        return tx

    def _redeemable(self, latest: SignedMessage[Voucher]) -> SignedMessage[Voucher] | None:
        """The voucher of this client to put in the batch: its latest, an older one, or none."""
        client = latest.message.client
        vouchers = self.contracts.vouchers
        redeemed = vouchers.redeemed_of(client, self.provider)
        if redeemed.amount >= latest.message.cumulative_amount:
            log.info("voucher already redeemed on chain", extra={"client": client})
            self.store.mark_redeemed([latest.message], None)
            return None
        balance = vouchers.deposit_of(client).balance
        for signed in reversed(self.store.vouchers_of(client)):
            v = signed.message
            if v.cumulative_amount <= redeemed.amount or v.cumulative_jobs < redeemed.jobs:
                break
            if v.cumulative_amount - redeemed.amount <= balance:
                if v.cumulative_jobs != latest.message.cumulative_jobs:
                    log.warning(
                        "client's deposit no longer covers its latest voucher; redeeming an older one",
                        extra={"client": client, "cumulative_jobs": v.cumulative_jobs, "balance": balance},
                    )
                return signed
        key = (client, latest.message.cumulative_jobs)
        level = logging.DEBUG if key in self._unpayable_logged else logging.WARNING
        self._unpayable_logged.add(key)
        log.log(
            level,
            "client's deposit covers none of its unredeemed vouchers",
            extra={
                "client": client,
                "owed": latest.message.cumulative_amount - redeemed.amount,
                "balance": balance,
            },
        )
        return None

    # --- attestations --------------------------------------------------------------------------------

    def submit_attestation(self, measurements: Sequence[Measurement], epoch: int) -> bytes:
        """Sign ``measurements`` of ``epoch`` as one batch (the chain's next nonce) and submit it.

        Returns:
            The transaction hash.

        Raises:
            ValueError: If there are no measurements.
            ContractRevertError: If the registry refuses it (for example a stale epoch).
        """
        if not measurements:
            raise ValueError("an attestation batch needs at least one measurement")
        registry = self.contracts.attestations
        nonce = registry.nonce_of(self.provider)
        batch = AttestationBatch(
            provider=self.provider,
            epoch=epoch,
            nonce=nonce,
            deadline=self.contracts.chain.now() + self.settings.attestation_ttl,
            measurements=tuple(measurements),
        )
        receipt = registry.submit_attestation_batch(self.account, batch.sign(self._signer, registry.domain))
        tx = _tx_hash(receipt)
        self.store.record_attestation(epoch, nonce, len(measurements), tx, gas_used=int(receipt["gasUsed"]))
        self._log_tx("attest", receipt, epoch=epoch, nonce=nonce, measurements=len(measurements))
        return tx

    def request_attestation(self, measurements: Sequence[Measurement], epoch: int) -> None:
        """Queue an attestation for :meth:`run` to submit (retried on errors; a newer request replaces it)."""
        if not measurements:
            raise ValueError("an attestation batch needs at least one measurement")
        with self._attestation_lock:
            self._requested_attestation = (tuple(measurements), epoch)

    def _submit_requested(self) -> None:
        with self._attestation_lock:
            requested = self._requested_attestation
        if requested is None:
            return
        try:
            self.submit_attestation(*requested)
        except ContractRevertError as err:
            if err.error_name not in ("AttestationStaleEpoch", "AttestationUnknownProvider"):
                raise
            log.error("attestation refused by the registry; dropped", extra={"error": str(err)})
        with self._attestation_lock:
            if self._requested_attestation is requested:
                self._requested_attestation = None

    # --- loop ----------------------------------------------------------------------------------------

    def run_once(self) -> bool:
        """One pass over every duty; an error in one is logged and does not stop the others.

        Returns:
            Whether every duty ran without error.
        """
        duties: list[tuple[str, Callable[[], object]]] = [("commit", self.commit_pending)]
        if self.settings.release_payments:
            duties.append(("release", self.release_payments))
        duties += [("redeem", self.redeem_vouchers), ("attest", self._submit_requested)]
        ok = True
        for name, duty in duties:
            try:
                duty()
            except Exception as err:  # noqa: BLE001 - a chain duty must never bring the node down
                ok = False
                log.error("chain duty failed", extra={"duty": name, "error": f"{type(err).__name__}: {err}"})
        return ok

    def wake(self) -> None:
        """Start the next pass now (call from the trio thread, e.g. when a job completes)."""
        self._wake.set()

    def _next_delay(self, failures: int) -> float:
        s = self.settings
        delay = min(s.poll_interval * 2**failures, s.max_backoff) if failures else s.poll_interval
        deadlines = [j.job.delivery_deadline for j in self.store.pending_commits() if j.job.delivery_deadline]
        if deadlines and failures:
            # Never back off past the point where a pending commit would miss its deadline.
            until_margin = min(deadlines) - s.commit_margin - self._clock()
            delay = min(delay, max(until_margin, s.poll_interval))
        return delay

    async def run(self) -> None:
        """Loop the duties until cancelled; chain calls run in worker threads.

        Errors (an unreachable chain, a reverted transaction) are logged and retried with exponential
        backoff. Cancellation waits for the pass in progress, so a transaction being sent is recorded.
        """
        failures = 0
        log.info("chain duties started", extra={"provider": self.provider})
        try:
            while True:
                ok = await trio.to_thread.run_sync(self.run_once)
                failures = 0 if ok else min(failures + 1, 32)
                try:
                    delay = await trio.to_thread.run_sync(self._next_delay, failures)
                except Exception as err:  # noqa: BLE001 - pacing must not stop the duties
                    log.error("cannot plan the next pass", extra={"error": f"{type(err).__name__}: {err}"})
                    delay = self.settings.poll_interval
                with trio.move_on_after(delay):
                    await self._wake.wait()
                self._wake = trio.Event()
        finally:
            log.info("chain duties stopped", extra={"provider": self.provider})
