"""The ledger recomputed from the contracts' events alone, folded in chain order.

:func:`build_ledger` replays every indexed event with the contracts' own rules (``contracts/src``) and
yields an :class:`AuditLedger`: accounts (stake, unbonding, counters, slashes, earnings, fees, rewards,
attested and measured figures, reliability, verified throughput), escrow jobs, vouchers per (client,
provider), client
deposits, slashes with their evidence, attestations, verifier reports, reward epochs, the ETH each contract
should hold, and time series. Nothing is read from contract state except the parameters
(:func:`read_parameters`, from the contracts' view functions at a block, never from the deployment file).

Where an event carries a number the rules also determine (a settlement's fee and payout from the job's price,
a slash's finder reward, a claim's amount from the epochs' pots and work, a deposit's new balance...), the
fold computes it too and records any difference as an :class:`Anomaly`; ``verify`` reports them.

Rules mirrored here (see docs/CONTRACTS.md):

* A slash takes from stake first, then from unbonding stake; so of ``amount`` slashed,
  ``min(amount, stake)`` came from stake.
* Job counters saturate (``uint64`` completed, ``uint32`` failed and disputes lost).
* Rewards: money arriving in epoch ``e`` less the treasury share is ``pot(e)``; a provider's reward for an
  ended epoch is ``pot(e) * work(e, provider) // totalWork(e)``; ``claimable`` is the sum over ended epochs
  minus what it claimed. An epoch is ``(timestamp - genesis) // epoch_length``.
* A single voucher redemption pays ``amount - amount * fee_bps // 10000`` (it emits no ``ProviderPaid``); a
  batch pays what its ``ProviderPaid`` says.

Facts the events do not carry (so the ledger cannot know them): a job's ``acceptBy`` (only in the calldata);
where a dispute or timeout's refund went when the client's address refused ETH (only ``PaymentCredited``
says); ETH forced into a contract without a call (``selfdestruct``), which shows only as a balance above
what the contract owes.

Serialisation: the models are pydantic; ``model_dump()`` gives Python values, ``model_dump(mode="json")`` hex
strings for bytes, ``"0x<job id>"`` keys for jobs and ``"<client>/<provider>"`` keys for vouchers.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, PrivateAttr, field_serializer
from web3 import Web3
from web3.types import BlockIdentifier

from proxima.audit.errors import AuditError
from proxima.audit.state import StateReader
from proxima.marketplace.matching.reliability import ProviderStats, reliability, verified_throughput
from proxima.sdk.chain import Deployment

if TYPE_CHECKING:
    from proxima.audit.store import AuditStore, IndexedEvent

__all__ = [
    "BPS",
    "JOB_STATUSES",
    "SLASH_KINDS",
    "AccountRecord",
    "Anomaly",
    "AttestationRecord",
    "AuditLedger",
    "DepositRecord",
    "EpochRecord",
    "JobRecord",
    "LedgerError",
    "LedgerParameters",
    "MoneyFlows",
    "ReportRecord",
    "SeriesPoint",
    "SlashRecord",
    "VoucherRecord",
    "build_ledger",
    "ledger_of",
    "read_parameters",
]

log = logging.getLogger(__name__)

BPS = 10_000
_U32 = 2**32 - 1
_U64 = 2**64 - 1
_ZERO = "0x0000000000000000000000000000000000000000"

JOB_STATUSES = ("None", "Accepted", "Delivered", "Disputed", "Settled", "Refunded")
"""``IJobEscrow.Status`` names by their number."""

SLASH_KINDS: dict[str, str] = {
    "EQUIVOCATION": "equivocation",
    "CANARY": "canary",
    "INVALID_RESULT": "invalid_result",
    "MISSED_DEADLINE": "timeout",
    "LOST_DISPUTE": "dispute",
}
"""``Slashed.reason`` (bytes32 text) -> slash kind; an unknown reason is kind ``"other"``."""

SlashKind = Literal["equivocation", "canary", "invalid_result", "timeout", "dispute", "other"]
JobStatusName = Literal["Accepted", "Delivered", "Disputed", "Settled", "Refunded"]


class LedgerError(AuditError):
    """The ledger cannot be built or queried as asked (the message names what is wrong)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="hex")


class LedgerParameters(_Model):
    """The deployment's rules as its contracts report them (wei, seconds, basis points).

    Attributes:
        chain_id: The chain. block_number: The block they were read at.
        min_provider_stake, min_verifier_stake, unbonding_delay: ``ProviderRegistry``.
        genesis, epoch_length, treasury_bps: ``RewardPool``.
        fee_bps, finder_share_bps, dispute_bond_bps, dispute_window, verdict_quorum, max_job_duration,
            min_challenge_window, max_challenge_window: ``JobEscrow``.
        voucher_fee_bps, withdrawal_delay: ``PaymentVouchers``.
        equivocation_slash_bps, fault_slash_bps, fault_finder_share_bps, fault_verdict_quorum:
            ``FaultProofs``.
    """

    chain_id: int
    block_number: int
    min_provider_stake: int
    min_verifier_stake: int
    unbonding_delay: int
    genesis: int
    epoch_length: int
    treasury_bps: int
    fee_bps: int
    finder_share_bps: int
    dispute_bond_bps: int
    dispute_window: int
    verdict_quorum: int
    max_job_duration: int
    min_challenge_window: int
    max_challenge_window: int
    voucher_fee_bps: int
    withdrawal_delay: int
    equivocation_slash_bps: int
    fault_slash_bps: int
    fault_finder_share_bps: int
    fault_verdict_quorum: int

    def epoch_at(self, timestamp: int) -> int:
        """The reward epoch containing ``timestamp`` (0 before genesis)."""
        if timestamp <= self.genesis or self.epoch_length <= 0:
            return 0
        return (timestamp - self.genesis) // self.epoch_length


_PARAMETER_CALLS: tuple[tuple[str, str, str], ...] = (
    ("min_provider_stake", "ProviderRegistry", "minProviderStake"),
    ("min_verifier_stake", "ProviderRegistry", "minVerifierStake"),
    ("unbonding_delay", "ProviderRegistry", "unbondingDelay"),
    ("genesis", "RewardPool", "genesis"),
    ("epoch_length", "RewardPool", "epochLength"),
    ("treasury_bps", "RewardPool", "treasuryBps"),
    ("fee_bps", "JobEscrow", "feeBps"),
    ("finder_share_bps", "JobEscrow", "finderShareBps"),
    ("dispute_bond_bps", "JobEscrow", "disputeBondBps"),
    ("dispute_window", "JobEscrow", "disputeWindow"),
    ("verdict_quorum", "JobEscrow", "verdictQuorum"),
    ("max_job_duration", "JobEscrow", "maxJobDuration"),
    ("min_challenge_window", "JobEscrow", "minChallengeWindow"),
    ("max_challenge_window", "JobEscrow", "maxChallengeWindow"),
    ("voucher_fee_bps", "PaymentVouchers", "feeBps"),
    ("withdrawal_delay", "PaymentVouchers", "withdrawalDelay"),
    ("equivocation_slash_bps", "FaultProofs", "equivocationSlashBps"),
    ("fault_slash_bps", "FaultProofs", "faultSlashBps"),
    ("fault_finder_share_bps", "FaultProofs", "finderShareBps"),
    ("fault_verdict_quorum", "FaultProofs", "verdictQuorum"),
)


def read_parameters(w3: Web3, deployment: Deployment, block: BlockIdentifier = "latest") -> LedgerParameters:
    """Read the deployment's parameters from its contracts' view functions at ``block``.

    Args:
        w3: The JSON-RPC connection.
        deployment: Contract addresses (its ``parameters`` are ignored: only the chain is trusted).
        block: Block number or tag.

    Raises:
        StateReadError: If a contract does not answer (wrong address, wrong chain).
    """
    number = block if isinstance(block, int) else int(w3.eth.get_block(block)["number"])
    reader = StateReader(w3, deployment, number)
    values = reader.call_many([(contract, fn, ()) for _, contract, fn in _PARAMETER_CALLS])
    named = {name: int(v) for (name, _, _), v in zip(_PARAMETER_CALLS, values, strict=True)}
    return LedgerParameters(chain_id=int(w3.eth.chain_id), block_number=number, **named)


# --- records ----------------------------------------------------------------------------------------------


class AccountRecord(_Model):
    """A provider or verifier, as its events tell (wei, FLOP/s, bytes/s, seconds).

    ``rewards_claimable`` is what it could claim at the ledger's block; ``reliability`` is
    :func:`proxima.marketplace.matching.reliability.reliability` of its counters, stake, slashes and reports
    (no gateway observations); ``verified_throughput`` is
    :func:`~proxima.marketplace.matching.reliability.verified_throughput` with its attested figure as the
    claim (there is no offer on chain). ``attestation_nonce`` is the next nonce its signatures must carry.
    """

    address: str
    role: Literal["provider", "verifier"]
    peer_id: bytes | None
    metadata_hash: bytes
    registered_at: int
    registered_block: int
    stake: int
    unbonding: int
    unbond_ready_at: int
    jobs_completed: int
    jobs_failed: int
    disputes_lost: int
    total_slashed: int
    slashes: int
    earned: int
    fees_paid: int
    rewards_claimed: int
    rewards_claimable: int
    gemm_flops: int
    mem_bandwidth: int
    attested_epoch: int
    attested_at: int
    attestations: int
    reports_passed: int
    reports_failed: int
    measured_flops: int
    reported_at: int
    reports_made: int
    attestation_nonce: int
    reliability: float
    verified_throughput: float


class JobRecord(_Model):
    """An escrow job. ``outcome``: ``confirmed``, ``released``, ``timed_out``, ``dispute_valid``,
    ``dispute_invalid``, ``dispute_expired`` or ``None`` while open."""

    job_id: bytes
    client: str
    provider: str
    price: int
    slash_amount: int
    spec_hash: bytes
    delivery_deadline: int
    challenge_window: int
    status: JobStatusName
    result_hash: bytes
    challenge_ends_at: int
    dispute_ends_at: int
    dispute_bond: int
    opened_at: int
    opened_block: int
    open_tx: bytes
    closed_at: int | None
    outcome: str | None
    payout: int
    fee: int
    refund: int
    slashed: int
    verdict_signers: int


class VoucherRecord(_Model):
    """Redeemed vouchers of one client to one provider: cumulative totals, payout and fees."""

    client: str
    provider: str
    amount: int
    jobs: int
    redemptions: int
    payout: int
    fees: int
    last_redeemed_at: int


class DepositRecord(_Model):
    """A client's voucher deposit."""

    client: str
    balance: int
    pending_withdrawal: int
    withdrawable_at: int
    deposited: int
    withdrawn: int
    redeemed: int


class SlashRecord(_Model):
    """One slash with its evidence. ``job_id`` is the job it was for (``ref``); ``evidence`` holds the proof's
    event fields (result hashes, verdict signers, refund...)."""

    account: str
    amount: int
    from_stake: int
    from_unbonding: int
    finder: str
    finder_reward: int
    to_pool: int
    reason: str
    kind: SlashKind
    job_id: bytes
    tx_hash: bytes
    block_number: int
    log_index: int
    timestamp: int
    evidence: dict[str, Any]


class AttestationRecord(_Model):
    """One attested measurement (FLOP/s, bytes/s)."""

    provider: str
    benchmark_id: bytes
    gemm_flops: int
    mem_bandwidth: int
    epoch: int
    nonce: int
    tx_hash: bytes
    block_number: int
    log_index: int
    timestamp: int


class ReportRecord(_Model):
    """One verifier report about a provider."""

    verifier: str
    provider: str
    challenge_id: bytes
    measured_flops: int
    passed: bool
    nonce: int
    tx_hash: bytes
    block_number: int
    log_index: int
    timestamp: int


class EpochRecord(_Model):
    """A reward epoch: its pot (after rollovers), money in, work and what was claimed of it.

    ``rewards`` is each provider's share ``pot * work // total_work`` (final once ``ended``); ``claimed`` the
    part of it already claimed.
    """

    epoch: int
    start: int
    end: int
    ended: bool
    pot: int
    funded: int
    treasury: int
    rolled_in: int
    rolled_out: int
    total_work: int
    work: dict[str, int]
    rewards: dict[str, int]
    claimed: int


class MoneyFlows(_Model):
    """ETH each contract should hold, recomputed twice from events.

    ``expected`` is value in minus value out by contract name (deposits, stakes, prices, bonds, fees in;
    payouts, refunds, withdrawals, claims out); ``owed`` is the sum of what it owes by the ledger's balances
    (stakes + unbonding; open prices + bonds + credits; deposits; pot + treasury). ``totals`` are the
    contracts' own total counters as the ledger computes them.
    """

    inflows: dict[str, int]
    outflows: dict[str, int]
    expected: dict[str, int]
    owed: dict[str, int]
    totals: dict[str, int]
    credits: dict[str, int]


class SeriesPoint(_Model):
    """Activity in one time bucket ``[start, end)``; ``total_stake`` is the bonded stake at its end."""

    start: int
    end: int
    jobs_opened: int
    jobs_settled: int
    jobs_failed: int
    volume: int
    fees: int
    slashes: int
    slashed: int
    attestations: int
    reports: int
    registrations: int
    total_stake: int


class Anomaly(_Model):
    """An event whose numbers break the contracts' rules (or that cannot be read)."""

    kind: str
    subject: str
    expected: str
    actual: str
    detail: str
    block_number: int
    tx_hash: bytes


_TICKS = ("jobs_opened", "jobs_settled", "jobs_failed", "volume", "fees", "slashes", "slashed",
          "attestations", "reports", "registrations")  # fmt: skip


class AuditLedger(_Model):
    """Everything the events say, at one block (see the module docstring)."""

    block_number: int
    block_timestamp: int
    current_epoch: int
    parameters: LedgerParameters
    accounts: dict[str, AccountRecord]
    jobs: dict[bytes, JobRecord]
    vouchers: dict[tuple[str, str], VoucherRecord]
    deposits: dict[str, DepositRecord]
    slashes: list[SlashRecord]
    attestations: list[AttestationRecord]
    reports: list[ReportRecord]
    epochs: dict[int, EpochRecord]
    money: MoneyFlows
    faults: dict[str, int]
    canaries: dict[bytes, tuple[str, int]]
    anomalies: list[Anomaly]
    events: int
    _ticks: list[tuple[int, int, int]] = PrivateAttr(default_factory=list)
    _stake_ticks: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _stake_history: dict[str, list[tuple[int, int, int]]] = PrivateAttr(default_factory=dict)

    @field_serializer("jobs", when_used="json")
    def _jobs_json(self, jobs: dict[bytes, JobRecord]) -> dict[str, Any]:
        return {"0x" + k.hex(): v.model_dump(mode="json") for k, v in jobs.items()}

    @field_serializer("vouchers", when_used="json")
    def _vouchers_json(self, vouchers: dict[tuple[str, str], VoucherRecord]) -> dict[str, Any]:
        return {f"{c}/{p}": v.model_dump(mode="json") for (c, p), v in vouchers.items()}

    @field_serializer("canaries", when_used="json")
    def _canaries_json(self, canaries: dict[bytes, tuple[str, int]]) -> dict[str, Any]:
        return {"0x" + k.hex(): [v[0], v[1]] for k, v in canaries.items()}

    def stake_at(self, account: str, block_number: int, tx_index: int) -> int | None:
        """The account's bonded stake just before transaction ``tx_index`` of ``block_number``.

        Returns ``None`` if it was not registered then.
        """
        history = self._stake_history.get(account)
        if not history:
            return None
        at = bisect.bisect_left(history, (block_number, tx_index, -1))
        return None if at == 0 else history[at - 1][2]

    def is_active_at(self, account: str, role: str, block_number: int, tx_index: int) -> bool:
        """Whether ``account`` was an active ``role`` (``"provider"``/``"verifier"``) before that transaction:
        registered as it, with at least the minimum stake."""
        record = self.accounts.get(account)
        stake = self.stake_at(account, block_number, tx_index)
        if record is None or record.role != role or stake is None:
            return False
        minimum = (
            self.parameters.min_provider_stake if role == "provider" else self.parameters.min_verifier_stake
        )
        return stake >= minimum

    def series(self, bucket_s: int) -> list[SeriesPoint]:
        """Activity per bucket of ``bucket_s`` seconds, from the first event's bucket to the ledger's block.

        Raises:
            LedgerError: If ``bucket_s`` is not a positive int or asks for more than 100,000 buckets.
        """
        if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or bucket_s <= 0:
            raise LedgerError(f"bucket_s must be a positive number of seconds, got {bucket_s!r}")
        if not self._ticks and not self._stake_ticks:
            return []
        first = min(t[0] for t in (self._ticks[:1] + [(s[0], 0, 0) for s in self._stake_ticks[:1]]))
        origin = first - first % bucket_s
        last = max(self.block_timestamp, first)
        count = (last - origin) // bucket_s + 1
        if count > 100_000:
            raise LedgerError(
                f"bucket_s={bucket_s} makes {count} buckets (at most 100000): use a larger bucket"
            )
        sums = [[0] * len(_TICKS) for _ in range(count)]
        for timestamp, key, amount in self._ticks:
            sums[(timestamp - origin) // bucket_s][key] += amount
        stakes = [0] * count
        stake_iter = iter(self._stake_ticks)
        current = 0
        pending = next(stake_iter, None)
        for i in range(count):
            end = origin + (i + 1) * bucket_s
            while pending is not None and pending[0] < end:
                current = pending[1]
                pending = next(stake_iter, None)
            stakes[i] = current
        return [
            SeriesPoint(
                start=origin + i * bucket_s,
                end=origin + (i + 1) * bucket_s,
                total_stake=stakes[i],
                **dict(zip(_TICKS, sums[i], strict=True)),
            )
            for i in range(count)
        ]


# --- the fold ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Account:
    address: str
    role: Literal["provider", "verifier"]
    peer_id: bytes | None
    metadata_hash: bytes
    registered_at: int
    registered_block: int
    stake: int
    unbonding: int = 0
    unbond_ready_at: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    disputes_lost: int = 0
    total_slashed: int = 0
    slashes: int = 0
    earned: int = 0
    fees_paid: int = 0
    rewards_claimed: int = 0
    gemm_flops: int = 0
    mem_bandwidth: int = 0
    attested_epoch: int = 0
    attested_at: int = 0
    attestations: int = 0
    reports_passed: int = 0
    reports_failed: int = 0
    measured_flops: int = 0
    reported_at: int = 0
    reports_made: int = 0
    nonce: int = 0


@dataclass(slots=True)
class _Rewards:
    """The contract's per-provider slot, mirrored, plus the epochs worked in."""

    epoch: int = 0
    work: int = 0
    credited: int = 0
    claimed_through: int = 0  # every epoch below this one was paid by a claim
    worked: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Epoch:
    pot: int = 0
    funded: int = 0
    treasury: int = 0
    rolled_in: int = 0
    rolled_out: int = 0
    total_work: int = 0
    work: dict[str, int] = field(default_factory=dict)
    claimed: int = 0


@dataclass(slots=True)
class _Pending:
    client: str
    provider: str
    amount: int


_CONTRACT_NAMES = (
    "ProviderRegistry",
    "AttestationRegistry",
    "JobEscrow",
    "PaymentVouchers",
    "FaultProofs",
    "RewardPool",
)


class _Fold:
    """Applies events one by one (chain order) to mutable state, then freezes it into an AuditLedger."""

    def __init__(self, parameters: LedgerParameters) -> None:
        self.p = parameters
        self.accounts: dict[str, _Account] = {}
        self.jobs: dict[bytes, dict[str, Any]] = {}
        self.vouchers: dict[tuple[str, str], dict[str, Any]] = {}
        self.deposits: dict[str, dict[str, Any]] = {}
        self.slashes: list[dict[str, Any]] = []
        self.attestations: list[AttestationRecord] = []
        self.reports: list[ReportRecord] = []
        self.rewards: dict[str, _Rewards] = {}
        self.epochs: dict[int, _Epoch] = {}
        self.faults: dict[str, int] = {}
        self.canaries: dict[bytes, tuple[str, int]] = {}
        self.credits: dict[str, int] = {}
        self.inflows = dict.fromkeys(_CONTRACT_NAMES, 0)
        self.outflows = dict.fromkeys(_CONTRACT_NAMES, 0)
        self.staked = 0
        self.unbonding = 0
        self.pool = 0
        self.treasury = 0
        self.anomalies: list[Anomaly] = []
        self.ticks: list[tuple[int, int, int]] = []
        self.stake_ticks: list[tuple[int, int]] = []
        self.stake_history: dict[str, list[tuple[int, int, int]]] = {}
        self.pending: list[_Pending] = []
        self.slash_in_tx: dict[tuple[bytes, str], dict[str, Any]] = {}
        self.tx: bytes = b""
        self.event: IndexedEvent | None = None
        self.count = 0
        self._tick_index = {name: i for i, name in enumerate(_TICKS)}
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            name[3:]: getattr(self, name) for name in dir(self) if name.startswith("on_")
        }

    # --- plumbing -------------------------------------------------------------------------------------

    def anomaly(self, kind: str, subject: str, expected: object, actual: object, detail: str) -> None:
        event = self.event
        self.anomalies.append(
            Anomaly(
                kind=kind,
                subject=subject,
                expected=str(expected),
                actual=str(actual),
                detail=detail,
                block_number=event.block_number if event else 0,
                tx_hash=event.tx_hash if event else b"",
            )
        )

    def check(self, kind: str, subject: str, expected: int, actual: int, detail: str) -> None:
        if expected != actual:
            self.anomaly(kind, subject, expected, actual, detail)

    def tick(self, key: str, amount: int = 1) -> None:
        assert self.event is not None
        self.ticks.append((self.event.timestamp, self._tick_index[key], amount))

    def stake_changed(self, account: _Account) -> None:
        assert self.event is not None
        self.stake_history.setdefault(account.address, []).append(
            (self.event.block_number, self.event.tx_index, account.stake)
        )
        self.stake_ticks.append((self.event.timestamp, self.staked))

    def apply(self, event: IndexedEvent) -> None:
        if event.tx_hash != self.tx:
            self.end_tx()
            self.tx = event.tx_hash
        self.event = event
        self.count += 1
        handler = self.handlers.get(event.name)
        if handler is None:
            return  # AccessControl's role events and the like carry no money
        try:
            handler(event.args)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self.anomaly(
                "malformed_event",
                f"{event.contract}.{event.name}",
                "the event's ABI arguments",
                repr(event.args),
                f"block {event.block_number} log {event.log_index}: cannot apply it "
                f"({type(err).__name__}: {err})",
            )

    def end_tx(self) -> None:
        """Single voucher redemptions (no ProviderPaid in their transaction) pay amount less the fee."""
        for item in self.pending:
            fee = item.amount * self.p.voucher_fee_bps // BPS
            self.earn(item.provider, item.amount - fee, fee)
            pair = self.vouchers[(item.client, item.provider)]
            pair["payout"] += item.amount - fee
            pair["fees"] += fee
        self.pending.clear()
        self.slash_in_tx.clear()

    def account(self, address: str) -> _Account:
        found = self.accounts.get(address)
        if found is None:
            raise KeyError(f"{address} is not registered")
        return found

    def earn(self, provider: str, payout: int, fee: int) -> None:
        account = self.accounts.get(provider)
        if account is not None:
            account.earned += payout
            account.fees_paid += fee
        self.tick("fees", fee)

    def epoch(self, number: int) -> _Epoch:
        found = self.epochs.get(number)
        if found is None:
            found = self.epochs[number] = _Epoch()
        return found

    def share(self, number: int, work: int) -> int:
        if work == 0:
            return 0
        e = self.epochs.get(number)
        if e is None or e.total_work == 0:
            return 0
        return e.pot * work // e.total_work

    def now_epoch(self) -> int:
        assert self.event is not None
        return self.p.epoch_at(self.event.timestamp)

    # --- ProviderRegistry -----------------------------------------------------------------------------

    def _register(
        self, a: dict[str, Any], role: Literal["provider", "verifier"], peer_id: bytes | None
    ) -> None:
        assert self.event is not None
        address = a["account"]
        if address in self.accounts:
            self.anomaly("rule", address, "one registration", "a second one", "RegistryAlreadyRegistered")
            return
        stake = int(a["stake"])
        account = _Account(
            address=address,
            role=role,
            peer_id=peer_id,
            metadata_hash=a["metadataHash"],
            registered_at=self.event.timestamp,
            registered_block=self.event.block_number,
            stake=stake,
        )
        self.accounts[address] = account
        self.staked += stake
        self.inflows["ProviderRegistry"] += stake
        minimum = self.p.min_provider_stake if role == "provider" else self.p.min_verifier_stake
        if stake < minimum:
            self.anomaly("rule", address, f">= {minimum}", stake, "registered below the minimum stake")
        self.stake_changed(account)
        self.tick("registrations")

    def on_ProviderRegistered(self, a: dict[str, Any]) -> None:  # noqa: N802 - named after the event
        self._register(a, "provider", bytes(a["peerId"]))

    def on_VerifierRegistered(self, a: dict[str, Any]) -> None:  # noqa: N802
        self._register(a, "verifier", None)

    def on_MetadataUpdated(self, a: dict[str, Any]) -> None:  # noqa: N802
        self.account(a["account"]).metadata_hash = a["metadataHash"]

    def on_StakeIncreased(self, a: dict[str, Any]) -> None:  # noqa: N802
        account = self.account(a["account"])
        amount = int(a["amount"])
        account.stake += amount
        self.staked += amount
        self.inflows["ProviderRegistry"] += amount
        self.check("rule", account.address, account.stake, a["newStake"], "StakeIncreased.newStake")
        self.stake_changed(account)

    def on_UnbondRequested(self, a: dict[str, Any]) -> None:  # noqa: N802
        account = self.account(a["account"])
        amount = int(a["amount"])
        if amount > account.stake:
            self.anomaly("rule", account.address, f"<= {account.stake}", amount, "unbond above the stake")
        account.stake -= amount
        account.unbonding += amount
        account.unbond_ready_at = int(a["readyAt"])
        self.staked -= amount
        self.unbonding += amount
        self.check(
            "rule", account.address, account.unbonding, a["totalUnbonding"], "UnbondRequested.totalUnbonding"
        )
        assert self.event is not None
        self.check(
            "rule",
            account.address,
            self.event.timestamp + self.p.unbonding_delay,
            a["readyAt"],
            "UnbondRequested.readyAt = block time + unbondingDelay",
        )
        self.stake_changed(account)

    def on_StakeWithdrawn(self, a: dict[str, Any]) -> None:  # noqa: N802
        account = self.account(a["account"])
        amount = int(a["amount"])
        self.check(
            "rule", account.address, account.unbonding, amount, "StakeWithdrawn pays all unbonding stake"
        )
        assert self.event is not None
        if self.event.timestamp < account.unbond_ready_at:
            self.anomaly(
                "rule",
                account.address,
                f">= {account.unbond_ready_at}",
                self.event.timestamp,
                "withdrawn early",
            )
        account.unbonding -= amount
        self.unbonding -= amount
        self.outflows["ProviderRegistry"] += amount

    def on_Slashed(self, a: dict[str, Any]) -> None:  # noqa: N802
        assert self.event is not None
        account = self.account(a["account"])
        amount = int(a["amount"])
        from_stake = min(amount, account.stake)
        from_unbonding = amount - from_stake
        if from_unbonding > account.unbonding:
            self.anomaly(
                "rule",
                account.address,
                f"<= {account.stake + account.unbonding}",
                amount,
                "slashed beyond stake",
            )
        account.stake -= from_stake
        account.unbonding -= from_unbonding
        account.total_slashed += amount
        account.slashes += 1
        self.staked -= from_stake
        self.unbonding -= from_unbonding
        self.outflows["ProviderRegistry"] += amount
        reason = bytes(a["reason"]).rstrip(b"\0").decode("ascii", "replace")
        kind = SLASH_KINDS.get(reason, "other")
        finder = a["finder"]
        reward = int(a["finderReward"])
        share = self.p.finder_share_bps if kind in ("timeout", "dispute") else self.p.fault_finder_share_bps
        expected = 0 if finder == _ZERO else amount * share // BPS
        self.check(
            "rule", account.address, expected, reward, f"Slashed.finderReward ({kind}) = amount * share"
        )
        record: dict[str, Any] = {
            "account": account.address,
            "amount": amount,
            "from_stake": from_stake,
            "from_unbonding": from_unbonding,
            "finder": finder,
            "finder_reward": reward,
            "to_pool": amount - reward,
            "reason": reason,
            "kind": kind,
            "job_id": bytes(a["ref"]),
            "tx_hash": self.event.tx_hash,
            "block_number": self.event.block_number,
            "log_index": self.event.log_index,
            "timestamp": self.event.timestamp,
            "evidence": {},
        }
        job = self.jobs.get(bytes(a["ref"])) if kind in ("timeout", "dispute") else None
        if job is not None:
            job["slashed"] += amount
            record["evidence"] = {"slash_amount": job["slash_amount"], "client": job["client"]}
            if kind == "dispute":
                record["evidence"]["verdict_signers"] = job["verdict_signers"]
                record["evidence"]["result_hash"] = job["result_hash"]
        self.slashes.append(record)
        self.slash_in_tx[(self.event.tx_hash, account.address)] = record
        self.stake_changed(account)
        self.tick("slashes")
        self.tick("slashed", amount)

    def on_OutcomeRecorded(self, a: dict[str, Any]) -> None:  # noqa: N802
        account = self.accounts.get(a["provider"])
        if account is None:
            return  # a voucher may pay an address that never registered; its counters are not audited
        account.jobs_completed = min(account.jobs_completed + int(a["completed"]), _U64)
        account.jobs_failed = min(account.jobs_failed + int(a["failed"]), _U32)
        account.disputes_lost = min(account.disputes_lost + int(a["disputesLost"]), _U32)

    # --- AttestationRegistry --------------------------------------------------------------------------

    def on_AttestationSubmitted(self, a: dict[str, Any]) -> None:  # noqa: N802
        assert self.event is not None
        account = self.account(a["provider"])
        nonce = int(a["nonce"])
        # a provider-signed batch emits one event per measurement, all with the batch's nonce
        if nonce != account.nonce and nonce != account.nonce - 1:
            self.anomaly(
                "rule", account.address, account.nonce, nonce, "AttestationSubmitted.nonce out of order"
            )
        if int(a["epoch"]) < account.attested_epoch:
            self.anomaly("rule", account.address, f">= {account.attested_epoch}", a["epoch"], "stale epoch")
        account.nonce = nonce + 1
        account.gemm_flops = int(a["gemmFlops"])
        account.mem_bandwidth = int(a["memBandwidth"])
        account.attested_epoch = int(a["epoch"])
        account.attested_at = self.event.timestamp
        account.attestations += 1
        e = self.event
        self.attestations.append(
            AttestationRecord(
                provider=account.address,
                benchmark_id=bytes(a["benchmarkId"]),
                gemm_flops=int(a["gemmFlops"]),
                mem_bandwidth=int(a["memBandwidth"]),
                epoch=int(a["epoch"]),
                nonce=nonce,
                tx_hash=e.tx_hash,
                block_number=e.block_number,
                log_index=e.log_index,
                timestamp=e.timestamp,
            )
        )
        self.tick("attestations")

    def on_VerifierReportSubmitted(self, a: dict[str, Any]) -> None:  # noqa: N802
        e = self.event
        assert e is not None
        verifier = self.account(a["verifier"])
        provider = self.account(a["provider"])
        nonce = int(a["nonce"])
        self.check(
            "rule", verifier.address, verifier.nonce, nonce, "VerifierReportSubmitted.nonce out of order"
        )
        verifier.nonce = nonce + 1
        verifier.reports_made += 1
        passed = bool(a["passed"])
        if passed:
            provider.reports_passed += 1
        else:
            provider.reports_failed += 1
        provider.measured_flops = int(a["measuredFlops"])
        provider.reported_at = e.timestamp
        self.reports.append(
            ReportRecord(
                verifier=verifier.address,
                provider=provider.address,
                challenge_id=bytes(a["challengeId"]),
                measured_flops=int(a["measuredFlops"]),
                passed=passed,
                nonce=nonce,
                tx_hash=e.tx_hash,
                block_number=e.block_number,
                log_index=e.log_index,
                timestamp=e.timestamp,
            )
        )
        self.tick("reports")

    # --- JobEscrow ------------------------------------------------------------------------------------

    def job(self, job_id: bytes) -> dict[str, Any]:
        found = self.jobs.get(bytes(job_id))
        if found is None:
            raise KeyError(f"job 0x{bytes(job_id).hex()} was never opened")
        return found

    def close(self, job: dict[str, Any], status: JobStatusName, outcome: str) -> None:
        assert self.event is not None
        job["status"] = status
        job["outcome"] = outcome
        job["closed_at"] = self.event.timestamp

    def on_JobOpened(self, a: dict[str, Any]) -> None:  # noqa: N802
        e = self.event
        assert e is not None
        job_id = bytes(a["jobId"])
        if job_id in self.jobs:
            self.anomaly("rule", "0x" + job_id.hex(), "a new job id", "an existing one", "EscrowJobExists")
            return
        price = int(a["price"])
        self.jobs[job_id] = {
            "job_id": job_id,
            "client": a["client"],
            "provider": a["provider"],
            "price": price,
            "slash_amount": int(a["slashAmount"]),
            "spec_hash": bytes(a["specHash"]),
            "delivery_deadline": int(a["deliveryDeadline"]),
            "challenge_window": int(a["challengeWindow"]),
            "status": "Accepted",
            "result_hash": b"\0" * 32,
            "challenge_ends_at": 0,
            "dispute_ends_at": 0,
            "dispute_bond": 0,
            "opened_at": e.timestamp,
            "opened_block": e.block_number,
            "open_tx": e.tx_hash,
            "closed_at": None,
            "outcome": None,
            "payout": 0,
            "fee": 0,
            "refund": 0,
            "slashed": 0,
            "verdict_signers": 0,
        }
        self.inflows["JobEscrow"] += price
        self.tick("jobs_opened")

    def on_ResultCommitted(self, a: dict[str, Any]) -> None:  # noqa: N802
        job = self.job(a["jobId"])
        job["status"] = "Delivered"
        job["result_hash"] = bytes(a["resultHash"])
        job["challenge_ends_at"] = int(a["challengeEndsAt"])

    def on_JobSettled(self, a: dict[str, Any]) -> None:  # noqa: N802
        job = self.job(a["jobId"])
        subject = "0x" + job["job_id"].hex()
        payout, fee = int(a["payout"]), int(a["fee"])
        bond = job["dispute_bond"] if job["status"] == "Disputed" else 0
        expected_fee = job["price"] * self.p.fee_bps // BPS
        self.check("rule", subject, expected_fee, fee, "JobSettled.fee = price * feeBps / 10000")
        self.check(
            "rule",
            subject,
            job["price"] - expected_fee + bond,
            payout,
            "JobSettled.payout = price - fee + bond",
        )
        if a["provider"] != job["provider"]:
            self.anomaly(
                "rule", subject, job["provider"], a["provider"], "JobSettled.provider is not the job's"
            )
        outcome = "dispute_valid" if bond else ("confirmed" if a["confirmed"] else "released")
        self.close(job, "Settled", outcome)
        job["payout"], job["fee"] = payout, fee
        self.outflows["JobEscrow"] += payout + fee
        self.earn(job["provider"], payout, fee)
        self.tick("jobs_settled")
        self.tick("volume", job["price"])

    def on_JobTimedOut(self, a: dict[str, Any]) -> None:  # noqa: N802
        job = self.job(a["jobId"])
        refund = int(a["refund"])
        self.check("rule", "0x" + job["job_id"].hex(), job["price"], refund, "JobTimedOut.refund = price")
        self.close(job, "Refunded", "timed_out")
        job["refund"] = refund
        self.outflows["JobEscrow"] += refund
        self.tick("jobs_failed")
        record = self.slash_in_tx.get((self.tx, job["provider"]))
        if record is not None:
            record["evidence"] = {
                **record["evidence"],
                "refund": refund,
                "deadline": job["delivery_deadline"],
            }

    def on_JobDisputed(self, a: dict[str, Any]) -> None:  # noqa: N802
        job = self.job(a["jobId"])
        bond = int(a["bond"])
        expected = job["price"] * self.p.dispute_bond_bps // BPS
        self.check(
            "rule", "0x" + job["job_id"].hex(), expected, bond, "JobDisputed.bond = price * disputeBondBps"
        )
        job["status"] = "Disputed"
        job["dispute_bond"] = bond
        job["dispute_ends_at"] = int(a["disputeEndsAt"])
        self.inflows["JobEscrow"] += bond

    def on_DisputeResolved(self, a: dict[str, Any]) -> None:  # noqa: N802
        job = self.job(a["jobId"])
        signers = int(a["signers"])
        job["verdict_signers"] = signers
        if signers < self.p.verdict_quorum:
            self.anomaly(
                "rule", "0x" + job["job_id"].hex(), f">= {self.p.verdict_quorum}", signers, "verdict quorum"
            )
        if a["resultValid"]:
            return  # JobSettled follows in the same transaction, paying the bond to the provider
        refund = job["price"] + job["dispute_bond"]
        self.close(job, "Refunded", "dispute_invalid")
        job["refund"] = refund
        self.outflows["JobEscrow"] += refund
        self.tick("jobs_failed")

    def on_DisputeExpired(self, a: dict[str, Any]) -> None:  # noqa: N802
        job = self.job(a["jobId"])
        subject = "0x" + job["job_id"].hex()
        refund, bond = int(a["refund"]), int(a["bondToProvider"])
        self.check("rule", subject, job["price"], refund, "DisputeExpired.refund = price")
        self.check("rule", subject, job["dispute_bond"], bond, "DisputeExpired.bondToProvider = the bond")
        self.close(job, "Refunded", "dispute_expired")
        job["refund"] = refund
        self.outflows["JobEscrow"] += refund + bond
        self.earn(job["provider"], bond, 0)
        self.tick("jobs_failed")

    def on_PaymentCredited(self, a: dict[str, Any]) -> None:  # noqa: N802
        amount = int(a["amount"])
        self.credits[a["account"]] = self.credits.get(a["account"], 0) + amount
        self.outflows["JobEscrow"] -= amount  # counted as paid by DisputeExpired; it stays in escrow

    def on_CreditWithdrawn(self, a: dict[str, Any]) -> None:  # noqa: N802
        amount = int(a["amount"])
        held = self.credits.get(a["account"], 0)
        self.check("rule", a["account"], held, amount, "CreditWithdrawn pays the whole credit")
        self.credits[a["account"]] = held - amount
        self.outflows["JobEscrow"] += amount

    # --- PaymentVouchers ------------------------------------------------------------------------------

    def deposit(self, client: str) -> dict[str, Any]:
        found = self.deposits.get(client)
        if found is None:
            found = self.deposits[client] = {
                "client": client,
                "balance": 0,
                "pending_withdrawal": 0,
                "withdrawable_at": 0,
                "deposited": 0,
                "withdrawn": 0,
                "redeemed": 0,
            }
        return found

    def on_Deposited(self, a: dict[str, Any]) -> None:  # noqa: N802
        d = self.deposit(a["client"])
        amount = int(a["amount"])
        d["balance"] += amount
        d["deposited"] += amount
        self.inflows["PaymentVouchers"] += amount
        self.check("rule", d["client"], d["balance"], a["balance"], "Deposited.balance")

    def on_WithdrawalRequested(self, a: dict[str, Any]) -> None:  # noqa: N802
        d = self.deposit(a["client"])
        d["pending_withdrawal"] = int(a["amount"])
        d["withdrawable_at"] = int(a["withdrawableAt"])

    def on_WithdrawalCancelled(self, a: dict[str, Any]) -> None:  # noqa: N802
        d = self.deposit(a["client"])
        d["pending_withdrawal"] = 0
        d["withdrawable_at"] = 0

    def on_Withdrawn(self, a: dict[str, Any]) -> None:  # noqa: N802
        d = self.deposit(a["client"])
        amount = int(a["amount"])
        self.check(
            "rule", d["client"], min(d["pending_withdrawal"], d["balance"]), amount, "Withdrawn.amount"
        )
        d["balance"] -= amount
        d["withdrawn"] += amount
        d["pending_withdrawal"] = 0
        d["withdrawable_at"] = 0
        self.outflows["PaymentVouchers"] += amount
        self.check("rule", d["client"], d["balance"], a["balance"], "Withdrawn.balance")

    def on_VoucherRedeemed(self, a: dict[str, Any]) -> None:  # noqa: N802
        e = self.event
        assert e is not None
        client, provider = a["client"], a["provider"]
        key = (client, provider)
        pair = self.vouchers.get(key)
        if pair is None:
            pair = self.vouchers[key] = {
                "client": client,
                "provider": provider,
                "amount": 0,
                "jobs": 0,
                "redemptions": 0,
                "payout": 0,
                "fees": 0,
                "last_redeemed_at": 0,
            }
        subject = f"{client}/{provider}"
        amount, jobs = int(a["amount"]), int(a["jobs"])
        cumulative, cumulative_jobs = int(a["cumulativeAmount"]), int(a["cumulativeJobs"])
        self.check(
            "rule", subject, cumulative - pair["amount"], amount, "VoucherRedeemed.amount = new - redeemed"
        )
        self.check(
            "rule", subject, cumulative_jobs - pair["jobs"], jobs, "VoucherRedeemed.jobs = new - redeemed"
        )
        pair["amount"], pair["jobs"] = cumulative, cumulative_jobs
        pair["redemptions"] += 1
        pair["last_redeemed_at"] = e.timestamp
        d = self.deposit(client)
        if amount > d["balance"]:
            self.anomaly("rule", client, f"<= {d['balance']}", amount, "redeemed beyond the deposit")
        d["balance"] -= amount
        d["redeemed"] += amount
        self.outflows["PaymentVouchers"] += amount
        self.pending.append(_Pending(client, provider, amount))
        self.tick("volume", amount)

    def on_ProviderPaid(self, a: dict[str, Any]) -> None:  # noqa: N802
        provider = a["provider"]
        batch = [p for p in self.pending if p.provider == provider]
        self.pending = [p for p in self.pending if p.provider != provider]
        total = sum(p.amount for p in batch)
        payout, fee = int(a["payout"]), int(a["fee"])
        expected_fee = total * self.p.voucher_fee_bps // BPS
        self.check("rule", provider, expected_fee, fee, "ProviderPaid.fee = redeemed * feeBps / 10000")
        self.check("rule", provider, total - expected_fee, payout, "ProviderPaid.payout = redeemed - fee")
        for item in batch:  # the batch's fee, spread per pair in proportion (rounded down, rest to the last)
            pair = self.vouchers[(item.client, provider)]
            share = item.amount * self.p.voucher_fee_bps // BPS
            pair["fees"] += share
            pair["payout"] += item.amount - share
        self.earn(provider, payout, fee)

    # --- RewardPool -----------------------------------------------------------------------------------

    def credit(self, epoch_number: int, to_pool: int, to_treasury: int) -> None:
        subject = f"epoch {epoch_number}"
        self.check("rule", subject, self.now_epoch(), epoch_number, "money goes to the current epoch")
        total = to_pool + to_treasury
        self.check(
            "rule", subject, total * self.p.treasury_bps // BPS, to_treasury, "treasury share = treasuryBps"
        )
        e = self.epoch(epoch_number)
        e.pot += to_pool
        e.funded += to_pool
        e.treasury += to_treasury
        self.pool += to_pool
        self.treasury += to_treasury
        self.inflows["RewardPool"] += total

    def on_PoolFunded(self, a: dict[str, Any]) -> None:  # noqa: N802
        self.credit(int(a["epoch"]), int(a["toPool"]), int(a["toTreasury"]))

    def on_FeesDeposited(self, a: dict[str, Any]) -> None:  # noqa: N802
        number, work, provider = int(a["epoch"]), int(a["work"]), a["provider"]
        self.credit(number, int(a["toPool"]), int(a["toTreasury"]))
        if work == 0:
            return
        r = self.rewards.setdefault(provider, _Rewards())
        if r.epoch != number:
            r.credited += self.share(r.epoch, r.work)
            r.epoch, r.work = number, 0
        r.work += work
        if not r.worked or r.worked[-1] != number:
            r.worked.append(number)
        e = self.epoch(number)
        e.total_work += work
        e.work[provider] = e.work.get(provider, 0) + work

    def on_EpochRolledOver(self, a: dict[str, Any]) -> None:  # noqa: N802
        source, target, amount = int(a["fromEpoch"]), int(a["toEpoch"]), int(a["amount"])
        src = self.epoch(source)
        self.check("rule", f"epoch {source}", src.pot, amount, "EpochRolledOver.amount = the epoch's pot")
        if src.total_work:
            self.anomaly(
                "rule", f"epoch {source}", "no work", src.total_work, "rolled over an epoch with work"
            )
        self.check("rule", f"epoch {source}", self.now_epoch(), target, "rolled into the current epoch")
        src.pot -= amount
        src.rolled_out += amount
        dst = self.epoch(target)
        dst.pot += amount
        dst.rolled_in += amount

    def on_RewardsClaimed(self, a: dict[str, Any]) -> None:  # noqa: N802
        provider, amount = a["provider"], int(a["amount"])
        r = self.rewards.setdefault(provider, _Rewards())
        now = self.now_epoch()
        expected = r.credited
        if r.epoch < now:
            expected += self.share(r.epoch, r.work)
            r.work = 0
        r.credited = 0
        self.check("rule", provider, expected, amount, "RewardsClaimed.amount = rewards of ended epochs")
        for number in r.worked:
            if r.claimed_through <= number < now:
                self.epoch(number).claimed += self.share(number, self.epoch(number).work.get(provider, 0))
        r.claimed_through = max(r.claimed_through, now)
        account = self.accounts.get(provider)
        if account is not None:
            account.rewards_claimed += amount
        self.pool -= amount
        self.outflows["RewardPool"] += amount

    def on_TreasuryWithdrawn(self, a: dict[str, Any]) -> None:  # noqa: N802
        amount = int(a["amount"])
        if amount > self.treasury:
            self.anomaly("rule", "treasury", f"<= {self.treasury}", amount, "treasury overdrawn")
        self.treasury -= amount
        self.outflows["RewardPool"] += amount

    # --- FaultProofs ----------------------------------------------------------------------------------

    def proven(self, a: dict[str, Any], kind: int, evidence: dict[str, Any]) -> None:
        provider, job_id = a["provider"], bytes(a["jobId"])
        key = f"{provider}/0x{job_id.hex()}"
        if key in self.faults:
            self.anomaly("rule", key, "one fault per (provider, job)", "a second one", "FaultAlreadyProven")
        self.faults[key] = kind
        record = self.slash_in_tx.get((self.tx, provider))
        if record is None:
            self.anomaly(
                "rule", key, "a Slashed event in the same transaction", "none", "proof without slash"
            )
            return
        self.check("rule", key, record["amount"], a["slashed"], "proof's slashed = Slashed.amount")
        if record["job_id"] != job_id:
            self.anomaly("rule", key, "0x" + job_id.hex(), "0x" + record["job_id"].hex(), "Slashed.ref")
        record["evidence"] = evidence

    def on_EquivocationProven(self, a: dict[str, Any]) -> None:  # noqa: N802
        evidence = {"result_hash_a": bytes(a["resultHashA"]), "result_hash_b": bytes(a["resultHashB"])}
        self.proven(a, 1, evidence)

    def on_CanaryFaultProven(self, a: dict[str, Any]) -> None:  # noqa: N802
        self.proven(a, 2, {"result_hash": bytes(a["resultHash"])})

    def on_InvalidResultProven(self, a: dict[str, Any]) -> None:  # noqa: N802
        self.proven(a, 3, {"result_hash": bytes(a["resultHash"])})

    def on_CanaryCommitted(self, a: dict[str, Any]) -> None:  # noqa: N802
        assert self.event is not None
        commitment = bytes(a["commitment"])
        if commitment in self.canaries:
            self.anomaly(
                "rule", "0x" + commitment.hex(), "one commitment", "a second one", "CanaryAlreadyCommitted"
            )
            return
        self.canaries[commitment] = (a["verifier"], self.event.timestamp)

    # --- freezing -------------------------------------------------------------------------------------

    def finish(self, block_number: int, block_timestamp: int) -> AuditLedger:
        self.end_tx()
        self.event = None
        current = self.p.epoch_at(block_timestamp)
        epochs: dict[int, EpochRecord] = {}
        for number in sorted(self.epochs):
            e = self.epochs[number]
            start = self.p.genesis + number * self.p.epoch_length
            rewards = {p: self.share(number, w) for p, w in sorted(e.work.items())}
            epochs[number] = EpochRecord(
                epoch=number,
                start=start,
                end=start + self.p.epoch_length,
                ended=number < current,
                pot=e.pot,
                funded=e.funded,
                treasury=e.treasury,
                rolled_in=e.rolled_in,
                rolled_out=e.rolled_out,
                total_work=e.total_work,
                work=dict(sorted(e.work.items())),
                rewards=rewards,
                claimed=e.claimed,
            )
        accounts: dict[str, AccountRecord] = {}
        for address in sorted(self.accounts, key=str.lower):
            acc = self.accounts[address]
            r = self.rewards.get(address, _Rewards())
            earned_rewards = sum(
                self.share(n, self.epochs[n].work.get(address, 0)) for n in r.worked if n < current
            )
            claimable = earned_rewards - acc.rewards_claimed
            mirror = r.credited + (self.share(r.epoch, r.work) if r.epoch < current else 0)
            if mirror != claimable:
                self.anomaly(
                    "rule", address, claimable, mirror, "claimable by epochs vs the pool's per-provider slot"
                )
            stats = ProviderStats(
                address=to_checksum_address(address),
                stake_wei=acc.stake if acc.role == "provider" else 0,
                jobs_completed=acc.jobs_completed,
                jobs_failed=acc.jobs_failed,
                disputes_lost=acc.disputes_lost,
                total_slashed_wei=acc.total_slashed,
                attested_flops=acc.gemm_flops,
                verified_flops=acc.measured_flops,
                report_passes=acc.reports_passed,
                report_failures=acc.reports_failed,
            )
            accounts[address] = AccountRecord(
                address=address,
                role=acc.role,
                peer_id=acc.peer_id,
                metadata_hash=acc.metadata_hash,
                registered_at=acc.registered_at,
                registered_block=acc.registered_block,
                stake=acc.stake,
                unbonding=acc.unbonding,
                unbond_ready_at=acc.unbond_ready_at,
                jobs_completed=acc.jobs_completed,
                jobs_failed=acc.jobs_failed,
                disputes_lost=acc.disputes_lost,
                total_slashed=acc.total_slashed,
                slashes=acc.slashes,
                earned=acc.earned,
                fees_paid=acc.fees_paid,
                rewards_claimed=acc.rewards_claimed,
                rewards_claimable=claimable,
                gemm_flops=acc.gemm_flops,
                mem_bandwidth=acc.mem_bandwidth,
                attested_epoch=acc.attested_epoch,
                attested_at=acc.attested_at,
                attestations=acc.attestations,
                reports_passed=acc.reports_passed,
                reports_failed=acc.reports_failed,
                measured_flops=acc.measured_flops,
                reported_at=acc.reported_at,
                reports_made=acc.reports_made,
                attestation_nonce=acc.nonce,
                reliability=reliability(stats),
                verified_throughput=verified_throughput(acc.gemm_flops, stats),
            )
        escrowed = sum(
            j["price"] + (j["dispute_bond"] if j["status"] == "Disputed" else 0)
            for j in self.jobs.values()
            if j["status"] in ("Accepted", "Delivered", "Disputed")
        ) + sum(self.credits.values())
        deposits = sum(d["balance"] for d in self.deposits.values())
        owed = dict.fromkeys(_CONTRACT_NAMES, 0)
        owed["ProviderRegistry"] = self.staked + self.unbonding
        owed["JobEscrow"] = escrowed
        owed["PaymentVouchers"] = deposits
        owed["RewardPool"] = self.pool + self.treasury
        money = MoneyFlows(
            inflows=dict(self.inflows),
            outflows=dict(self.outflows),
            expected={n: self.inflows[n] - self.outflows[n] for n in _CONTRACT_NAMES},
            owed=owed,
            totals={
                "total_staked": self.staked,
                "total_unbonding": self.unbonding,
                "total_escrowed": escrowed,
                "total_deposits": deposits,
                "pool_balance": self.pool,
                "treasury_balance": self.treasury,
                "current_epoch": current,
            },
            credits={k: v for k, v in sorted(self.credits.items()) if v},
        )
        ledger = AuditLedger(
            block_number=block_number,
            block_timestamp=block_timestamp,
            current_epoch=current,
            parameters=self.p,
            accounts=accounts,
            jobs={k: JobRecord(**v) for k, v in self.jobs.items()},
            vouchers={k: VoucherRecord(**v) for k, v in self.vouchers.items()},
            deposits={k: DepositRecord(**v) for k, v in self.deposits.items()},
            slashes=[SlashRecord(**s) for s in self.slashes],
            attestations=self.attestations,
            reports=self.reports,
            epochs=epochs,
            money=money,
            faults=self.faults,
            canaries=self.canaries,
            anomalies=self.anomalies,
            events=self.count,
        )
        ledger._ticks = self.ticks
        ledger._stake_ticks = self.stake_ticks
        ledger._stake_history = self.stake_history
        return ledger


def build_ledger(
    events: Iterable[IndexedEvent], parameters: LedgerParameters, *, block_number: int, block_timestamp: int
) -> AuditLedger:
    """Fold ``events`` (in chain order) into the ledger at ``block_number``.

    Args:
        events: Indexed events of one deployment, in chain order.
        parameters: The deployment's rules (:func:`read_parameters`).
        block_number: The block the ledger stands at (the index's checkpoint).
        block_timestamp: Its timestamp (decides which reward epochs have ended).

    Returns:
        The ledger; rule violations found on the way are in ``anomalies``.
    """
    fold = _Fold(parameters)
    for event in events:
        fold.apply(event)
    ledger = fold.finish(block_number, block_timestamp)
    log.debug(
        "ledger built",
        extra={"events": ledger.events, "block": block_number, "anomalies": len(ledger.anomalies)},
    )
    return ledger


def ledger_of(store: AuditStore, parameters: LedgerParameters) -> AuditLedger:
    """The ledger of everything ``store`` indexed, at its checkpoint.

    Raises:
        LedgerError: If the store has not indexed anything yet.
    """
    checkpoint = store.checkpoint()
    if checkpoint is None:
        raise LedgerError("the audit index is empty: run `proxima-audit sync` first")
    return build_ledger(
        store.events(to_block=checkpoint.number),
        parameters,
        block_number=checkpoint.number,
        block_timestamp=checkpoint.timestamp,
    )
