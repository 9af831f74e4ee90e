"""The auditor's views of the ledger: rows, filters, sorting, paging and CSV/JSON export.

Both ``proxima-audit`` and the HTTP API (and the explorer) show these, so a number reads the same
everywhere. Every function takes an :class:`~proxima.audit.ledger.AuditLedger` (the ledger folded from
events at the index's checkpoint) and returns pydantic models; pages say which block they describe.

Amounts are wei, as Python ints in the models; in JSON (API, ``--json``, JSON export) they are decimal
strings (JSON numbers lose precision above 2**53), in CSV plain decimal integers. Addresses are EIP-55
checksummed; hashes and job ids ``0x`` + lowercase hex. Sorting is total: ties are broken by address, job id
or chain position, so the same ledger always gives the same rows in the same order.

Locations (``country``, ``region``) come from the providers' signed offers (see
:meth:`proxima.audit.service.AuditService.set_offers`): they are what each provider claims, never a fact
the chain proves, and rows say so in ``location_source``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from proxima.audit.ledger import (
    AccountRecord,
    AttestationRecord,
    AuditLedger,
    EpochRecord,
    JobRecord,
    LedgerError,
    ReportRecord,
    SlashRecord,
)
from proxima.audit.service import LOCATION_SOURCE, ProviderLocation

__all__ = [
    "EXPORTS",
    "JOB_STATUSES",
    "LOCATION_NOTE",
    "PROVIDER_SORTS",
    "SLASH_KINDS",
    "AttestationPage",
    "AttestationRow",
    "ExportName",
    "JobPage",
    "JobRow",
    "JobStatusName",
    "MoneyRow",
    "Page",
    "ProviderDetail",
    "ProviderEpochRow",
    "ProviderEpochShare",
    "ProviderPage",
    "ProviderRow",
    "ProviderSort",
    "RewardEpochRow",
    "RewardPage",
    "SeriesPage",
    "SeriesRow",
    "SlashKind",
    "SlashPage",
    "SlashRow",
    "Summary",
    "attestations",
    "export",
    "export_rows",
    "job_detail",
    "jobs",
    "provider_detail",
    "providers",
    "reward_epochs",
    "series",
    "slashes",
    "summary",
    "to_csv",
    "to_json",
]

LOCATION_NOTE: Final = LOCATION_SOURCE
"""How locations are labelled wherever they are shown."""

Wei = Annotated[
    int, PlainSerializer(str, return_type=str, when_used="json"), WithJsonSchema({"type": "string"})
]
"""An amount in wei: an int in Python, a decimal string in JSON."""

ProviderSort = Literal[
    "stake", "reliability", "throughput", "earned", "jobs", "slashed", "address", "registered"
]
PROVIDER_SORTS: Final[tuple[str, ...]] = get_args(ProviderSort)
JobStatusName = Literal["accepted", "delivered", "disputed", "settled", "refunded"]
JOB_STATUSES: Final[tuple[str, ...]] = get_args(JobStatusName)
SlashKind = Literal["equivocation", "canary", "invalid_result", "timeout", "dispute", "other"]
SLASH_KINDS: Final[tuple[str, ...]] = get_args(SlashKind)
ExportName = Literal["providers", "jobs", "slashes", "attestations", "rewards"]
EXPORTS: Final[tuple[str, ...]] = get_args(ExportName)


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


# --- rows ---------------------------------------------------------------------------------------------------


class ProviderRow(_Row):
    """A provider or verifier, as the ledger recomputes it from events.

    Attributes:
        address: The account.
        role: ``provider`` or ``verifier``.
        peer_id: Its libp2p peer id bytes (``0x`` hex), providers only.
        registered_at: Unix time of its registration.
        stake_wei, unbonding_wei: Stake bonded, and waiting to be withdrawn.
        reliability: The matching engine's reliability score from its counters (0-1); None for verifiers.
        verified_throughput_flops: Its attested GEMM throughput discounted by verifier reports.
        gemm_flops, mem_bandwidth: Its latest attested figures.
        earned_wei: Paid for jobs (escrow and vouchers), after fees.
        fees_paid_wei: Fees taken from its payments.
        rewards_claimed_wei, rewards_claimable_wei: Reward pool shares claimed, and claimable now.
        jobs_completed, jobs_failed, disputes_lost: The registry's counters.
        slashes, total_slashed_wei: How often and how much it was slashed.
        attestations, reports_passed, reports_failed: Attestations it signed; verifier reports about it.
        country, region: Where it says it is (its signed offer), if known.
        location_source: How the location is known.
    """

    address: str
    role: str
    peer_id: str | None = None
    registered_at: int
    stake_wei: Wei
    unbonding_wei: Wei
    reliability: float | None
    verified_throughput_flops: float | None
    gemm_flops: int
    mem_bandwidth: int
    earned_wei: Wei
    fees_paid_wei: Wei
    rewards_claimed_wei: Wei
    rewards_claimable_wei: Wei
    jobs_completed: int
    jobs_failed: int
    disputes_lost: int
    slashes: int
    total_slashed_wei: Wei
    attestations: int
    reports_passed: int
    reports_failed: int
    country: str | None = None
    region: str | None = None
    location_source: str | None = None


class JobRow(_Row):
    """An escrow job.

    Attributes:
        job_id: ``0x`` + 64 hex digits.
        client, provider: The parties.
        status: ``accepted``, ``delivered``, ``disputed``, ``settled`` or ``refunded``.
        price_wei: Escrowed price. slash_amount_wei: Stake at risk if it never delivers.
        spec_hash, result_hash: What was asked; what was committed (None before delivery).
        opened_block, opened_at, open_tx: When and by which transaction it was opened.
        delivery_deadline: When the provider had to deliver by. challenge_ends_at: End of the client's
            challenge window once delivered.
        disputed, dispute_bond_wei, verdict_signers: Whether the client disputed it, its bond, and how many
            verifiers signed the resolving verdict.
        closed_at, outcome: When and how it ended (``confirmed``, ``released``, ``timed_out``,
            ``dispute_valid``, ``dispute_invalid``, ``dispute_expired``; None while open).
        payout_wei, fee_wei, refund_wei, slashed_wei: How it settled (0 while open).
    """

    job_id: str
    client: str
    provider: str
    status: str
    price_wei: Wei
    slash_amount_wei: Wei
    spec_hash: str
    result_hash: str | None
    opened_block: int
    opened_at: int
    open_tx: str
    delivery_deadline: int
    challenge_ends_at: int | None
    disputed: bool
    dispute_bond_wei: Wei
    verdict_signers: int
    closed_at: int | None
    outcome: str | None
    payout_wei: Wei
    fee_wei: Wei
    refund_wei: Wei
    slashed_wei: Wei


class SlashRow(_Row):
    """A slash and the evidence behind it.

    Attributes:
        block_number, timestamp, tx_hash: Where it happened.
        kind: ``equivocation``, ``canary``, ``invalid_result``, ``timeout``, ``dispute`` (or ``other``).
        reason: The registry's reason text (``EQUIVOCATION``, ``MISSED_DEADLINE``...).
        account: Who was slashed. amount_wei: How much it lost (from stake, then from unbonding stake).
        finder, finder_reward_wei: Who proved it and what they got. to_pool_wei: The rest, to the pool.
        job_id: The job it concerned, if any.
        evidence: The proof's public facts (result hashes, reason, reference), as text.
    """

    block_number: int
    timestamp: int
    tx_hash: str
    kind: str
    reason: str
    account: str
    amount_wei: Wei
    from_stake_wei: Wei
    from_unbonding_wei: Wei
    finder: str | None
    finder_reward_wei: Wei
    to_pool_wei: Wei
    job_id: str | None
    evidence: dict[str, str]


class AttestationRow(_Row):
    """A provider's performance attestation or a verifier's measurement report.

    Attributes:
        block_number, log_index, timestamp, tx_hash: Where it was accepted.
        kind: ``attestation`` (signed by the provider) or ``report`` (signed by a verifier).
        provider: Whom it is about. signer: Who signed it.
        gemm_flops, mem_bandwidth, epoch: Attested figures and their epoch (attestations).
        measured_flops, passed: The verifier's measurement and verdict (reports).
        reference: Benchmark id (attestations) or challenge id (reports).
    """

    block_number: int
    log_index: int
    timestamp: int
    tx_hash: str
    kind: str
    provider: str
    signer: str
    gemm_flops: int | None = None
    mem_bandwidth: int | None = None
    epoch: int | None = None
    measured_flops: int | None = None
    passed: bool | None = None
    reference: str


class ProviderEpochShare(_Row):
    """One provider's share of one reward epoch: its work and ``pot * work // total_work`` (final once the
    epoch ended; claims are per provider over all ended epochs, so the chain does not say which epoch a claim
    drew from)."""

    provider: str
    work: int
    reward_wei: Wei


class RewardEpochRow(_Row):
    """One reward epoch.

    Attributes:
        epoch: Its number. start, end: Its time span (Unix seconds). ended: Whether it is over (its rewards
            final).
        pot_wei: What its providers share (after rollovers). funded_wei: Money that arrived in it, less
            the treasury's share (``treasury_wei``). rolled_in_wei, rolled_out_wei: Moved in from an
            epoch without work, or out to a later one.
        total_work: Work units credited in it. providers: Providers with work in it.
        claimed_wei: Rewards claimed from it.
        shares: Each provider's work and share in it, by address.
    """

    epoch: int
    start: int
    end: int
    ended: bool
    pot_wei: Wei
    funded_wei: Wei
    treasury_wei: Wei
    rolled_in_wei: Wei
    rolled_out_wei: Wei
    total_work: int
    providers: int
    claimed_wei: Wei
    shares: list[ProviderEpochShare]


class ProviderEpochRow(_Row):
    """One provider's part of one reward epoch: its work and its share of the pot (final once the epoch
    ended)."""

    epoch: int
    work: int
    reward_wei: Wei
    final: bool


class MoneyRow(_Row):
    """ETH one contract should hold, recomputed from events two ways.

    Attributes:
        contract: Its name.
        expected_wei: Value in minus value out.
        owed_wei: The sum of what it owes (stakes, open prices and bonds, deposits, pot...).
    """

    contract: str
    expected_wei: Wei
    owed_wei: Wei


class Summary(_Row):
    """Totals over the ledger at one block."""

    block_number: int
    block_timestamp: int
    chain_id: int
    current_epoch: int
    providers: int
    verifiers: int
    total_stake_wei: Wei
    jobs: int
    jobs_by_status: dict[str, int]
    escrow_volume_wei: Wei
    voucher_volume_wei: Wei
    fees_wei: Wei
    slashes: int
    slashed_wei: Wei
    rewards_claimed_wei: Wei
    attestations: int
    reports: int
    epochs: int
    money: list[MoneyRow]
    anomalies: int
    events: int
    locations_known: int
    verified_block: int | None = None
    verified_ok: bool | None = None


class SeriesRow(_Row):
    """Activity in one time bucket ``[start, end)``; ``total_stake_wei`` is the bonded stake at its end."""

    start: int
    end: int
    jobs_opened: int
    jobs_settled: int
    jobs_failed: int
    volume_wei: Wei
    fees_wei: Wei
    slashes: int
    slashed_wei: Wei
    attestations: int
    reports: int
    registrations: int
    total_stake_wei: Wei


T = TypeVar("T", bound=_Row)


class Page(_Row, Generic[T]):
    """A page of rows.

    Attributes:
        block_number: The block the ledger describes.
        total: Rows matching the filters (all pages).
        limit, offset: The page asked for.
        data: The rows.
    """

    block_number: int
    total: int
    limit: int
    offset: int
    data: list[T]


class ProviderPage(Page[ProviderRow]):
    """A page of providers and verifiers."""


class JobPage(Page[JobRow]):
    """A page of escrow jobs."""


class SlashPage(Page[SlashRow]):
    """A page of slashes."""


class AttestationPage(Page[AttestationRow]):
    """A page of attestations and reports."""


class RewardPage(Page[RewardEpochRow]):
    """A page of reward epochs."""


class SeriesPage(_Row):
    """The ledger over time, in buckets of ``bucket_s`` seconds."""

    block_number: int
    bucket_s: int
    points: list[SeriesRow]


class ProviderDetail(_Row):
    """One account and everything the ledger knows about it."""

    block_number: int
    account: ProviderRow
    attestations: list[AttestationRow]
    slashes: list[SlashRow]
    jobs: list[JobRow]
    epochs: list[ProviderEpochRow]


# --- building rows from the ledger ------------------------------------------------------------------------


_ZERO_ADDRESS: Final = "0x" + "00" * 20


def _nonzero(value: bytes) -> str | None:
    return None if not any(value) else "0x" + bytes(value).hex()


def _location_fields(address: str, locations: Mapping[str, ProviderLocation]) -> dict[str, Any]:
    where = locations.get(address)
    if where is None:
        return {}
    return {"country": where.country, "region": where.region, "location_source": where.source}


def _provider_row(record: AccountRecord, locations: Mapping[str, ProviderLocation]) -> ProviderRow:
    return ProviderRow(
        address=record.address,
        role=record.role,
        peer_id=_hex(record.peer_id),
        registered_at=record.registered_at,
        stake_wei=record.stake,
        unbonding_wei=record.unbonding,
        # A verifier runs no jobs: the prior's mean would read as a score it never earned.
        reliability=record.reliability if record.role == "provider" else None,
        verified_throughput_flops=record.verified_throughput if record.role == "provider" else None,
        gemm_flops=record.gemm_flops,
        mem_bandwidth=record.mem_bandwidth,
        earned_wei=record.earned,
        fees_paid_wei=record.fees_paid,
        rewards_claimed_wei=record.rewards_claimed,
        rewards_claimable_wei=record.rewards_claimable,
        jobs_completed=record.jobs_completed,
        jobs_failed=record.jobs_failed,
        disputes_lost=record.disputes_lost,
        slashes=record.slashes,
        total_slashed_wei=record.total_slashed,
        attestations=record.attestations,
        reports_passed=record.reports_passed,
        reports_failed=record.reports_failed,
        **_location_fields(record.address, locations),
    )


def _job_row(record: JobRecord) -> JobRow:
    return JobRow(
        job_id="0x" + record.job_id.hex(),
        client=record.client,
        provider=record.provider,
        status=record.status.lower(),
        price_wei=record.price,
        slash_amount_wei=record.slash_amount,
        spec_hash="0x" + record.spec_hash.hex(),
        result_hash=_nonzero(record.result_hash),
        opened_block=record.opened_block,
        opened_at=record.opened_at,
        open_tx="0x" + record.open_tx.hex(),
        delivery_deadline=record.delivery_deadline,
        challenge_ends_at=record.challenge_ends_at or None,
        disputed=record.dispute_bond > 0,
        dispute_bond_wei=record.dispute_bond,
        verdict_signers=record.verdict_signers,
        closed_at=record.closed_at,
        outcome=record.outcome,
        payout_wei=record.payout,
        fee_wei=record.fee,
        refund_wei=record.refund,
        slashed_wei=record.slashed,
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def _slash_row(record: SlashRecord) -> SlashRow:
    return SlashRow(
        block_number=record.block_number,
        timestamp=record.timestamp,
        tx_hash="0x" + record.tx_hash.hex(),
        kind=record.kind,
        reason=record.reason,
        account=record.account,
        amount_wei=record.amount,
        from_stake_wei=record.from_stake,
        from_unbonding_wei=record.from_unbonding,
        finder=None if record.finder == _ZERO_ADDRESS else record.finder,
        finder_reward_wei=record.finder_reward,
        to_pool_wei=record.to_pool,
        job_id=_nonzero(record.job_id),
        evidence={k: _text(v) for k, v in sorted(record.evidence.items())},
    )


def _attestation_row(record: AttestationRecord) -> AttestationRow:
    return AttestationRow(
        block_number=record.block_number,
        log_index=record.log_index,
        timestamp=record.timestamp,
        tx_hash="0x" + record.tx_hash.hex(),
        kind="attestation",
        provider=record.provider,
        signer=record.provider,
        gemm_flops=record.gemm_flops,
        mem_bandwidth=record.mem_bandwidth,
        epoch=record.epoch,
        reference="0x" + record.benchmark_id.hex(),
    )


def _report_row(record: ReportRecord) -> AttestationRow:
    return AttestationRow(
        block_number=record.block_number,
        log_index=record.log_index,
        timestamp=record.timestamp,
        tx_hash="0x" + record.tx_hash.hex(),
        kind="report",
        provider=record.provider,
        signer=record.verifier,
        measured_flops=record.measured_flops,
        passed=record.passed,
        reference="0x" + record.challenge_id.hex(),
    )


def _epoch_row(record: EpochRecord) -> RewardEpochRow:
    return RewardEpochRow(
        epoch=record.epoch,
        start=record.start,
        end=record.end,
        ended=record.ended,
        pot_wei=record.pot,
        funded_wei=record.funded,
        treasury_wei=record.treasury,
        rolled_in_wei=record.rolled_in,
        rolled_out_wei=record.rolled_out,
        total_work=record.total_work,
        providers=sum(1 for w in record.work.values() if w),
        claimed_wei=record.claimed,
        shares=[
            ProviderEpochShare(provider=p, work=w, reward_wei=record.rewards.get(p, 0))
            for p, w in sorted(record.work.items(), key=lambda item: item[0].lower())
            if w
        ],
    )


# --- paging -------------------------------------------------------------------------------------------------

R = TypeVar("R", bound=_Row)


def _check_paging(limit: int, offset: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def _page(
    page_type: type[Page[R]], ledger: AuditLedger, rows: Sequence[R], limit: int, offset: int
) -> Page[R]:
    _check_paging(limit, offset)
    return page_type(
        block_number=ledger.block_number,
        total=len(rows),
        limit=limit,
        offset=offset,
        data=list(rows[offset : offset + limit]),
    )


# --- queries ------------------------------------------------------------------------------------------------

_PROVIDER_KEYS: Final[dict[str, Callable[[ProviderRow], Any]]] = {
    "stake": lambda r: r.stake_wei,
    "reliability": lambda r: -1.0 if r.reliability is None else r.reliability,
    "throughput": lambda r: -1.0 if r.verified_throughput_flops is None else r.verified_throughput_flops,
    "earned": lambda r: r.earned_wei,
    "jobs": lambda r: r.jobs_completed,
    "slashed": lambda r: r.total_slashed_wei,
    "address": lambda r: r.address.lower(),
    "registered": lambda r: r.registered_at,
}


def provider_rows(
    ledger: AuditLedger, locations: Mapping[str, ProviderLocation] | None = None
) -> list[ProviderRow]:
    """Every account, by address."""
    where = locations or {}
    return [_provider_row(ledger.accounts[a], where) for a in sorted(ledger.accounts, key=str.lower)]


def providers(
    ledger: AuditLedger,
    locations: Mapping[str, ProviderLocation] | None = None,
    *,
    role: str | None = None,
    country: str | None = None,
    region: str | None = None,
    sort: str = "stake",
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> ProviderPage:
    """Providers and verifiers, filtered, sorted (ties by address) and paged.

    Args:
        ledger: The ledger.
        locations: Claimed locations by address (from signed offers).
        role: ``provider`` or ``verifier``; None: both.
        country, region: Only accounts claiming this location.
        sort: One of :data:`PROVIDER_SORTS`.
        descending: Largest first (addresses: Z first).
        limit, offset: The page.

    Raises:
        ValueError: For an unknown sort key, role or a bad page.
    """
    if sort not in _PROVIDER_KEYS:
        raise ValueError(f"sort must be one of {', '.join(PROVIDER_SORTS)}, got {sort!r}")
    if role is not None and role not in ("provider", "verifier"):
        raise ValueError(f"role must be provider or verifier, got {role!r}")
    rows = [
        r
        for r in provider_rows(ledger, locations)
        if (role is None or r.role == role)
        and (country is None or r.country == country)
        and (region is None or r.region == region)
    ]
    key = _PROVIDER_KEYS[sort]
    rows.sort(key=lambda r: r.address.lower())  # the tie-break, kept by the stable sort below
    rows.sort(key=key, reverse=descending)
    return ProviderPage.model_validate(_page(ProviderPage, ledger, rows, limit, offset), from_attributes=True)


def job_rows(ledger: AuditLedger) -> list[JobRow]:
    """Every escrow job, in the order they were opened."""
    rows = [_job_row(j) for j in ledger.jobs.values()]
    rows.sort(key=lambda r: (r.opened_block, r.job_id))
    return rows


def jobs(
    ledger: AuditLedger,
    *,
    provider: str | None = None,
    client: str | None = None,
    status: str | None = None,
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> JobPage:
    """Escrow jobs by opening block (newest first by default; ties by job id), filtered and paged.

    Raises:
        ValueError: For an unknown status or a bad page.
    """
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
    rows = [
        r
        for r in job_rows(ledger)
        if (provider is None or r.provider == provider)
        and (client is None or r.client == client)
        and (status is None or r.status == status)
    ]
    if descending:
        rows.reverse()
    return JobPage.model_validate(_page(JobPage, ledger, rows, limit, offset), from_attributes=True)


def job_detail(ledger: AuditLedger, job_id: bytes) -> JobRow | None:
    """One escrow job, or None."""
    record = ledger.jobs.get(bytes(job_id))
    return None if record is None else _job_row(record)


def slash_rows(ledger: AuditLedger) -> list[SlashRow]:
    """Every slash, in chain order."""
    return [_slash_row(s) for s in ledger.slashes]


def slashes(
    ledger: AuditLedger,
    *,
    provider: str | None = None,
    kind: str | None = None,
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> SlashPage:
    """Slashes with their evidence, newest first by default, filtered by account and kind, paged.

    Raises:
        ValueError: For an unknown kind or a bad page.
    """
    if kind is not None and kind not in SLASH_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SLASH_KINDS)}, got {kind!r}")
    rows = [
        r
        for r in slash_rows(ledger)
        if (provider is None or r.account == provider) and (kind is None or r.kind == kind)
    ]
    if descending:
        rows.reverse()
    return SlashPage.model_validate(_page(SlashPage, ledger, rows, limit, offset), from_attributes=True)


def attestation_rows(ledger: AuditLedger) -> list[AttestationRow]:
    """Every attestation and verifier report, in chain order."""
    rows = [_attestation_row(a) for a in ledger.attestations] + [_report_row(r) for r in ledger.reports]
    rows.sort(key=lambda r: (r.block_number, r.log_index))
    return rows


def attestations(
    ledger: AuditLedger,
    *,
    provider: str | None = None,
    kind: str | None = None,
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
) -> AttestationPage:
    """Attestations and verifier reports, newest first by default, filtered and paged.

    Raises:
        ValueError: For an unknown kind or a bad page.
    """
    if kind is not None and kind not in ("attestation", "report"):
        raise ValueError(f"kind must be attestation or report, got {kind!r}")
    rows = [
        r
        for r in attestation_rows(ledger)
        if (provider is None or r.provider == provider) and (kind is None or r.kind == kind)
    ]
    if descending:
        rows.reverse()
    return AttestationPage.model_validate(
        _page(AttestationPage, ledger, rows, limit, offset), from_attributes=True
    )


def epoch_rows(ledger: AuditLedger) -> list[RewardEpochRow]:
    """Every reward epoch with activity, by number."""
    return [_epoch_row(ledger.epochs[n]) for n in sorted(ledger.epochs)]


def reward_epochs(
    ledger: AuditLedger, *, descending: bool = True, limit: int = 50, offset: int = 0
) -> RewardPage:
    """Reward epochs, newest first by default, paged."""
    rows = epoch_rows(ledger)
    if descending:
        rows.reverse()
    return RewardPage.model_validate(_page(RewardPage, ledger, rows, limit, offset), from_attributes=True)


def provider_detail(
    ledger: AuditLedger, address: str, locations: Mapping[str, ProviderLocation] | None = None
) -> ProviderDetail | None:
    """One account with its attestations and reports, slashes, jobs and reward epochs (chain order).

    Args:
        ledger: The ledger.
        address: The checksummed address.
        locations: Claimed locations by address.

    Returns:
        The detail, or None when no such account registered.
    """
    record = ledger.accounts.get(address)
    if record is None:
        return None
    row = _provider_row(record, locations or {})
    epochs = []
    for number in sorted(ledger.epochs):
        epoch = ledger.epochs[number]
        work = int(epoch.work.get(address, 0))
        if work:
            epochs.append(
                ProviderEpochRow(
                    epoch=number, work=work, reward_wei=epoch.rewards.get(address, 0), final=epoch.ended
                )
            )
    return ProviderDetail(
        block_number=ledger.block_number,
        account=row,
        attestations=[a for a in attestation_rows(ledger) if address in (a.provider, a.signer)],
        slashes=[s for s in slash_rows(ledger) if s.account == address],
        jobs=[j for j in job_rows(ledger) if address in (j.provider, j.client)],
        epochs=epochs,
    )


def summary(
    ledger: AuditLedger,
    locations: Mapping[str, ProviderLocation] | None = None,
    *,
    verified_block: int | None = None,
    verified_ok: bool | None = None,
) -> Summary:
    """Totals over the ledger, and the last verification's outcome when one is given."""
    accounts = provider_rows(ledger, locations)
    job_list = job_rows(ledger)
    by_status = dict.fromkeys(JOB_STATUSES, 0)
    for j in job_list:
        by_status[j.status] = by_status.get(j.status, 0) + 1
    contracts = sorted(set(ledger.money.owed) | set(ledger.money.expected))
    return Summary(
        block_number=ledger.block_number,
        block_timestamp=ledger.block_timestamp,
        chain_id=ledger.parameters.chain_id,
        current_epoch=ledger.current_epoch,
        providers=sum(1 for a in accounts if a.role == "provider"),
        verifiers=sum(1 for a in accounts if a.role == "verifier"),
        total_stake_wei=sum(a.stake_wei for a in accounts),
        jobs=len(job_list),
        jobs_by_status=by_status,
        escrow_volume_wei=sum(j.price_wei for j in job_list),
        voucher_volume_wei=sum(v.amount for v in ledger.vouchers.values()),
        fees_wei=sum(a.fees_paid_wei for a in accounts),
        slashes=len(ledger.slashes),
        slashed_wei=sum(s.amount for s in ledger.slashes),
        rewards_claimed_wei=sum(a.rewards_claimed_wei for a in accounts),
        attestations=len(ledger.attestations),
        reports=len(ledger.reports),
        epochs=len(ledger.epochs),
        money=[
            MoneyRow(
                contract=c, expected_wei=ledger.money.expected.get(c, 0), owed_wei=ledger.money.owed.get(c, 0)
            )
            for c in contracts
        ],
        anomalies=len(ledger.anomalies),
        events=ledger.events,
        locations_known=sum(1 for a in accounts if a.country is not None),
        verified_block=verified_block,
        verified_ok=verified_ok,
    )


def series(ledger: AuditLedger, bucket_s: int) -> SeriesPage:
    """The ledger over time in buckets of ``bucket_s`` seconds (for charts).

    Raises:
        ValueError: If ``bucket_s`` is not positive or makes too many buckets.
    """
    if bucket_s < 1:
        raise ValueError(f"bucket_s must be positive, got {bucket_s}")
    try:
        points = ledger.series(bucket_s)
    except LedgerError as err:
        raise ValueError(str(err)) from err
    return SeriesPage(
        block_number=ledger.block_number,
        bucket_s=bucket_s,
        points=[
            SeriesRow(
                start=p.start,
                end=p.end,
                jobs_opened=p.jobs_opened,
                jobs_settled=p.jobs_settled,
                jobs_failed=p.jobs_failed,
                volume_wei=p.volume,
                fees_wei=p.fees,
                slashes=p.slashes,
                slashed_wei=p.slashed,
                attestations=p.attestations,
                reports=p.reports,
                registrations=p.registrations,
                total_stake_wei=p.total_stake,
            )
            for p in points
        ],
    )


# --- export -------------------------------------------------------------------------------------------------

_EXPORT_ROWS: Final[
    dict[str, tuple[type[_Row], Callable[[AuditLedger, Mapping[str, ProviderLocation]], Sequence[_Row]]]]
] = {
    "providers": (ProviderRow, lambda ledger, where: provider_rows(ledger, where)),
    "jobs": (JobRow, lambda ledger, where: job_rows(ledger)),
    "slashes": (SlashRow, lambda ledger, where: slash_rows(ledger)),
    "attestations": (AttestationRow, lambda ledger, where: attestation_rows(ledger)),
    "rewards": (RewardEpochRow, lambda ledger, where: epoch_rows(ledger)),
}


def export_rows(
    ledger: AuditLedger, what: str, locations: Mapping[str, ProviderLocation] | None = None
) -> tuple[type[_Row], list[_Row]]:
    """The whole table ``what`` (one of :data:`EXPORTS`) in its natural order, with its row model.

    Raises:
        ValueError: For an unknown table.
    """
    if what not in _EXPORT_ROWS:
        raise ValueError(f"what must be one of {', '.join(EXPORTS)}, got {what!r}")
    model, build = _EXPORT_ROWS[what]
    return model, list(build(ledger, locations or {}))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, list):
        items = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        return json.dumps(items, separators=(",", ":"))
    return str(value)


def to_csv(model: type[_Row], rows: Sequence[_Row]) -> str:
    """CSV with a header of the model's fields, in declaration order; wei as decimal integers."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = list(model.model_fields)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(getattr(row, c)) for c in columns])
    return out.getvalue()


def to_json(rows: Sequence[_Row]) -> str:
    """A JSON array of the rows (fields in declaration order; wei as decimal strings)."""
    return json.dumps([r.model_dump(mode="json") for r in rows], indent=2) + "\n"


def export(
    ledger: AuditLedger, what: str, fmt: str, locations: Mapping[str, ProviderLocation] | None = None
) -> str:
    """The whole table ``what`` as ``csv`` or ``json`` text.

    Raises:
        ValueError: For an unknown table or format.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"format must be csv or json, got {fmt!r}")
    model, rows = export_rows(ledger, what, locations)
    return to_csv(model, rows) if fmt == "csv" else to_json(rows)
