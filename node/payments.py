"""Payment checks: is a job request paid for, by a funded escrow job or by a voucher the deposit covers?

Both checks read the chain (a few ``eth_call``s, about 5 ms each on py-evm) and block: call them from a worker
thread. :meth:`PaymentChecker.accept_voucher` checks and records a voucher as one step, serialised per client,
so two requests built on the same previous voucher cannot both be accepted.

Voucher deposits are shared by all the providers a client pays (docs/CONTRACTS.md, known limitations): a
client can sign vouchers to several providers that together exceed its deposit, and the first to redeem is
paid. So the node bounds what it has accepted and not redeemed from each client
(``max_unredeemed_per_client``) and counts only the part of the deposit that is not being withdrawn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from proxima.node.errors import NodeError
from proxima.node.store import AcceptedJob, NodeStore, StaleVoucherError
from proxima.sdk.bindings import EscrowJob, JobStatus, ProximaContracts, decode_logs
from proxima.sdk.eip712 import SignedMessage, Voucher, recover_signer
from proxima.sdk.errors import SignatureError
from proxima.sdk.types import Address

__all__ = ["PaymentChecker", "PaymentError", "PaymentErrorReason"]

log = logging.getLogger(__name__)

_JOB_OPENED_TOPIC = keccak(text="JobOpened(bytes32,address,address,uint256,uint256,bytes32,uint64,uint64)")
_LOG_WINDOWS = (16, 256)
"""Recent block windows searched for a job's ``JobOpened`` event before the whole possible range."""


class PaymentErrorReason(StrEnum):
    """Why a payment was refused."""

    NOT_FOUND = "not_found"
    """No escrow job with this id is on chain."""
    NOT_OPEN = "not_open"
    """The escrow job exists but is no longer waiting for a result (delivered, settled or refunded)."""
    WRONG_PROVIDER = "wrong_provider"
    WRONG_CLIENT = "wrong_client"
    WRONG_SPEC = "wrong_spec"
    UNDERPAID = "underpaid"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"
    STALE_VOUCHER = "stale_voucher"
    INSUFFICIENT_DEPOSIT = "insufficient_deposit"
    EXPOSURE_LIMIT = "exposure_limit"


class PaymentError(NodeError):
    """A job request is not paid for.

    Args:
        reason: The machine-readable reason.
        detail: What exactly is wrong, for the client.
    """

    def __init__(self, reason: PaymentErrorReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"payment refused ({reason.value}): {detail}")


class PaymentChecker:
    """Checks the payment of job requests against the chain and the node's store.

    Args:
        contracts: The deployment's bindings.
        provider: This node's address.
        store: The node's store (latest vouchers per client).
        max_unredeemed_per_client: The most wei the node accepts from one client through vouchers before
            they are redeemed on chain.
        deadline_margin: Seconds an escrow job's delivery deadline must still be ahead (to run the job and
            commit its result).
        clock: Wall-clock time; the later of it and the latest block's time is taken as "now".
    """

    def __init__(
        self,
        contracts: ProximaContracts,
        provider: Address,
        store: NodeStore,
        max_unredeemed_per_client: int,
        *,
        deadline_margin: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_unredeemed_per_client < 0:
            raise ValueError(f"max_unredeemed_per_client must be >= 0, got {max_unredeemed_per_client}")
        if deadline_margin < 0:
            raise ValueError(f"deadline_margin must be >= 0, got {deadline_margin}")
        self.contracts = contracts
        self.provider: Address = to_checksum_address(provider)
        self.store = store
        self.max_unredeemed_per_client = max_unredeemed_per_client
        self.deadline_margin = deadline_margin
        self._clock = clock
        self._client_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._max_job_duration: int | None = None

    def _now(self) -> int:
        return max(self.contracts.chain.now(), int(self._clock()))

    # --- escrow --------------------------------------------------------------------------------------

    def check_escrow(self, job_id: bytes, client: str, spec_hash: bytes, price: int) -> EscrowJob:
        """Check that escrow job ``job_id`` pays this node for this request.

        The job must be on chain and accepted (not yet delivered), name this node as provider and
        ``client`` as client, hold at least ``price``, have been opened for ``spec_hash`` (from its
        ``JobOpened`` event), and have its delivery deadline at least ``deadline_margin`` seconds ahead.

        Args:
            job_id: The 32-byte escrow job id.
            client: The requesting client's address.
            spec_hash: The hash of the requested workload and input.
            price: The price this node asks for the request, in wei.

        Returns:
            The job as stored on chain (its ``delivery_deadline`` is the one to record).

        Raises:
            PaymentError: With the first reason that applies.
        """
        if len(job_id) != 32:
            raise PaymentError(PaymentErrorReason.NOT_FOUND, f"a job id is 32 bytes, got {len(job_id)}")
        hex_id = "0x" + job_id.hex()
        job = self.contracts.escrow.job_of(job_id)
        if job.status is JobStatus.NONE:
            raise PaymentError(PaymentErrorReason.NOT_FOUND, f"no escrow job {hex_id} on chain")
        if job.status is not JobStatus.ACCEPTED:
            raise PaymentError(
                PaymentErrorReason.NOT_OPEN,
                f"escrow job {hex_id} is {job.status.name.lower()}, not waiting for a result",
            )
        if job.provider != self.provider:
            raise PaymentError(
                PaymentErrorReason.WRONG_PROVIDER,
                f"escrow job {hex_id} is for provider {job.provider}, not this node ({self.provider})",
            )
        if job.client != to_checksum_address(client):
            raise PaymentError(
                PaymentErrorReason.WRONG_CLIENT,
                f"escrow job {hex_id} belongs to {job.client}, not the requester {client}",
            )
        if job.price < price:
            raise PaymentError(
                PaymentErrorReason.UNDERPAID,
                f"escrow job {hex_id} holds {job.price} wei but this request costs {price} wei",
            )
        now = self._now()
        if job.delivery_deadline < now + self.deadline_margin:
            raise PaymentError(
                PaymentErrorReason.EXPIRED,
                f"escrow job {hex_id} must be delivered by {job.delivery_deadline}; it is {now} and "
                f"this node needs {self.deadline_margin}s of margin",
            )
        opened_spec = self._opened_spec_hash(job_id, job.delivery_deadline)
        if opened_spec is None:
            raise PaymentError(
                PaymentErrorReason.NOT_FOUND, f"no JobOpened event found for escrow job {hex_id}"
            )
        if opened_spec != spec_hash:
            raise PaymentError(
                PaymentErrorReason.WRONG_SPEC,
                f"escrow job {hex_id} was opened for spec 0x{opened_spec.hex()}, the request is "
                f"spec 0x{spec_hash.hex()}",
            )
        return job

    def _opened_spec_hash(self, job_id: bytes, delivery_deadline: int) -> bytes | None:
        """The spec hash in the job's ``JobOpened`` event (the chain keeps it only there).

        The job was opened at most ``maxJobDuration`` before its deadline; recent blocks are searched first
        because a client normally sends the request right after opening the job.
        """
        chain = self.contracts.chain
        latest = chain.block_number()
        earliest = self._first_block_at(delivery_deadline - self._job_duration_limit(), latest)
        starts = [max(latest - w + 1, earliest) for w in _LOG_WINDOWS] + [earliest]
        searched_from = latest + 1
        for start in starts:
            if start >= searched_from:
                continue
            raw = chain.w3.eth.get_logs(
                {
                    "address": self.contracts.escrow.address,
                    "fromBlock": start,
                    "toBlock": searched_from - 1,
                    "topics": ["0x" + _JOB_OPENED_TOPIC.hex(), "0x" + job_id.hex()],
                }
            )
            for event in decode_logs(raw, {self.contracts.escrow.address: "JobEscrow"}):
                if event.name == "JobOpened" and event.args["jobId"] == job_id:
                    return bytes(event.args["specHash"])
            searched_from = start
        return None

    def _job_duration_limit(self) -> int:
        if self._max_job_duration is None:
            self._max_job_duration = self.contracts.escrow.parameter("maxJobDuration")
        return self._max_job_duration

    def _first_block_at(self, timestamp: int, latest: int) -> int:
        """The first block at or after ``timestamp`` (binary search; never before the deployment)."""
        w3 = self.contracts.chain.w3
        low, high = self.contracts.deployment.block_number, latest
        while low < high:
            middle = (low + high) // 2
            if int(w3.eth.get_block(middle)["timestamp"]) < timestamp:
                low = middle + 1
            else:
                high = middle
        return low

    # --- vouchers ------------------------------------------------------------------------------------

    def check_voucher(self, signed: SignedMessage[Voucher], client: str, price: int) -> None:
        """Check that ``signed`` pays this node ``price`` for one more job of ``client``.

        The voucher must be signed by ``client`` in the PaymentVouchers domain, name this node, count exactly
        one job more than the latest voucher accepted (or redeemed) and at least ``price`` wei more; the
        client's deposit, less any pending withdrawal, must cover all of it that is not redeemed yet, and
        that unredeemed amount must stay within ``max_unredeemed_per_client``.

        Raises:
            PaymentError: With the first reason that applies.
        """
        self._check_voucher(signed, client, price)

    def accept_voucher(
        self, signed: SignedMessage[Voucher], client: str, price: int, job: AcceptedJob | None = None
    ) -> None:
        """Check a voucher as :meth:`check_voucher` does and record it (with ``job``, atomically).

        Requests from one client are serialised; the store re-checks inside its transaction that no other
        voucher was accepted since, so of two requests built on the same previous voucher one wins.

        Raises:
            PaymentError: If the payment is refused (``stale_voucher`` for the request that lost a race).
            DuplicateJobError: If ``job`` was already accepted (then the voucher is not kept either).
        """
        with self._lock_for(client):
            previous_jobs, redeemed = self._check_voucher(signed, client, price)
            try:
                self.store.record_voucher(signed, previous_jobs=previous_jobs, redeemed=redeemed, job=job)
            except StaleVoucherError as err:
                raise PaymentError(PaymentErrorReason.STALE_VOUCHER, str(err)) from err

    def _lock_for(self, client: str) -> threading.Lock:
        with self._guard:
            return self._client_locks.setdefault(to_checksum_address(client), threading.Lock())

    def _check_voucher(
        self, signed: SignedMessage[Voucher], client: str, price: int
    ) -> tuple[int, tuple[int, int]]:
        """Returns the ``cumulative_jobs`` the voucher was checked against and the redeemed totals read."""
        v = signed.message
        client = to_checksum_address(client)
        if v.client != client:
            raise PaymentError(
                PaymentErrorReason.WRONG_CLIENT, f"the voucher is from {v.client}, the request from {client}"
            )
        try:
            signer = recover_signer(v, self.contracts.vouchers.domain, signed.signature)
        except SignatureError as err:
            raise PaymentError(
                PaymentErrorReason.BAD_SIGNATURE, f"unreadable voucher signature: {err}"
            ) from err
        if signer != client:
            raise PaymentError(
                PaymentErrorReason.BAD_SIGNATURE,
                f"the voucher is signed by {signer}, not by the client {client}",
            )
        if v.provider != self.provider:
            raise PaymentError(
                PaymentErrorReason.WRONG_PROVIDER,
                f"the voucher pays {v.provider}, not this node ({self.provider})",
            )
        chain_redeemed = self.contracts.vouchers.redeemed_of(client, self.provider)
        account = self.store.voucher_account(client)
        prev_amount, prev_jobs = chain_redeemed.amount, chain_redeemed.jobs
        if account is not None:
            prev_amount = max(prev_amount, account.redeemed_amount)
            prev_jobs = max(prev_jobs, account.redeemed_jobs)
            if account.latest is not None and account.latest.message.cumulative_jobs >= prev_jobs:
                prev_amount = max(prev_amount, account.latest.message.cumulative_amount)
                prev_jobs = account.latest.message.cumulative_jobs
        if v.cumulative_jobs != prev_jobs + 1:
            raise PaymentError(
                PaymentErrorReason.STALE_VOUCHER,
                f"the voucher counts {v.cumulative_jobs} jobs; the next one from {client} must count "
                f"{prev_jobs + 1}",
            )
        if v.cumulative_amount <= prev_amount:
            raise PaymentError(
                PaymentErrorReason.STALE_VOUCHER,
                f"the voucher's {v.cumulative_amount} wei is not more than the {prev_amount} wei already "
                "accepted",
            )
        if v.cumulative_amount - prev_amount < price:
            raise PaymentError(
                PaymentErrorReason.UNDERPAID,
                f"the voucher adds {v.cumulative_amount - prev_amount} wei but this request costs "
                f"{price} wei",
            )
        unredeemed = v.cumulative_amount - chain_redeemed.amount
        deposit = self.contracts.vouchers.deposit_of(client)
        available = deposit.balance - min(deposit.pending_withdrawal, deposit.balance)
        if unredeemed > available:
            raise PaymentError(
                PaymentErrorReason.INSUFFICIENT_DEPOSIT,
                f"{client} owes this node {unredeemed} wei through vouchers but its deposit covers "
                f"{available} wei (balance {deposit.balance}, {deposit.pending_withdrawal} being withdrawn)",
            )
        if unredeemed > self.max_unredeemed_per_client:
            raise PaymentError(
                PaymentErrorReason.EXPOSURE_LIMIT,
                f"accepting it would leave {unredeemed} wei of {client}'s vouchers unredeemed; this node "
                f"allows {self.max_unredeemed_per_client} wei until it redeems",
            )
        return prev_jobs, (chain_redeemed.amount, chain_redeemed.jobs)
