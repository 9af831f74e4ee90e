"""The gateway's job execution: place each stored job, pay, run it, verify it, fail over, settle.

:class:`Dispatcher` runs on the gateway's asyncio loop and owns one task per job inside a task group of its
own (:meth:`Dispatcher.run`): nothing is fire-and-forget, and stopping the gateway cancels the tasks without
marking their jobs failed: the next start resumes them (:meth:`JobStore.unfinished`).

One job, in order:

1. **cache** (deterministic workloads, unless the job opted out): a stored verified result is served at once;
2. **spec**: a :class:`~proxima.marketplace.matching.spec.JobSpec` from the record (billing units, FLOPs and
   payload sizes from the input, the client's constraints, the gateway's network coordinate);
3. **place**: ``engine.place(spec, market.snapshot(), exclude=...)`` excluding providers whose circuit breaker
   is open, every provider of a dark region, and the providers that already failed this job;
4. **reserve** the most the placement may cost (``price x redundancy`` over the chosen provider and its
   backups) on the client's budget: refused -> the job fails with ``budget``, nothing is paid;
5. **attempts**, at most ``max_attempts``, over the chosen provider then its backups (re-placing when they run
   out): pay (a voucher, or a quote checked and opened in escrow), sign the request (the first attempt uses
   the job's own id, later ones fresh ids; escrow attempts the quote's id), ``runner.run_job``, then verify
   the result again here (:func:`proxima.sdk.jobclient.check_result`: signature, job, shape). A refusal, a
   transport error or timeout, an invalid answer or a missed deadline is recorded (the attempt, the circuit
   breakers, the chain-state observation) and the job moves on;
6. **verify** (:mod:`proxima.marketplace.gateway.verify`): a matmul result must pass Freivalds' test; an
   embed job runs on ``copies`` distinct providers at once (its ``redundancy``, at least the policy's
   ``embed_redundancy``) whose embeddings must agree (a disagreement is settled by the verifiers' verdicts,
   or without verifiers by a further provider's majority). A result that fails is *rejected*: the attempt
   ends ``rejected`` (``verification_failed``, with the check's detail), the provider is excluded for this
   job and recorded as failed, the job moves on to the next provider, and evidence against it is filed on
   chain in the background (never blocking the job);
7. **settle**: the client is charged once, the price paid for each delivered and verified result it gets
   (one per copy); a job that fails or is cancelled releases its reservation and is charged nothing, and a
   rejected result is never charged;
8. **canary**: after a matmul job succeeds on provider P, with the policy's ``canary_rate`` (a deterministic
   draw from the job id) P also gets a canary of the same shape from a verifier, as a job of the gateway's
   own (kind ``canary``, voucher-paid, charged to nobody); a wrong answer is proven on chain.

Residency is a hard constraint of the engine and holds through every failover: when the only regions a job
may use are dark, it fails with ``region_unavailable`` rather than moving elsewhere. Regional failover: a
failed attempt whose failure darkens its region skips that region's remaining backups, and the job is
re-placed in the next-best region its residency allows.

A restart resumes unfinished jobs: a job whose last attempt was sent re-sends *the same* signed request to
the same provider first (the node answers a finished job id with its stored result; a request older than
``resend_max_age_s`` is re-signed with a fresh ``issued_at``, the same job id and payment, because nodes
refuse stale requests before looking the job up), then continues with failover.

Every log line carries ``job_id``. Timing per job (milliseconds): ``match`` (snapshot and placement),
``queue`` and ``compute`` (the provider's signed receipt), ``verify`` (checking the result here: signature,
Freivalds, comparisons of redundant results), ``settle``
(payment bookkeeping and charge), ``dispatch`` (everything else: paying, signing, network, failed attempts),
``total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Collection, Coroutine, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from eth_utils.address import to_checksum_address
from pydantic import ValidationError

from proxima.marketplace.errors import MarketConfigError, MarketError
from proxima.marketplace.gateway.cache import ResultCache, UnverifiedResultError, receipt_json
from proxima.marketplace.gateway.health import HealthTracker
from proxima.marketplace.gateway.jobstore import (
    InvalidJobError,
    JobRecord,
    JobStatus,
    JobStore,
    JobStoreError,
    UnknownJobError,
)
from proxima.marketplace.gateway.metrics import VerificationMetrics
from proxima.marketplace.gateway.payer import (
    EscrowAction,
    EscrowOpenError,
    IssuedVoucher,
    Payer,
    QuoteRejectedError,
    VoucherOutcome,
    is_stale_voucher,
)
from proxima.marketplace.gateway.verify import (
    CanaryTicket,
    EvidenceFiler,
    EvidenceKind,
    EvidenceOutcome,
    VerdictCollection,
    VerificationPolicy,
    VerifierPool,
    canary_due,
    check_canary,
    check_json,
    check_result_json,
    results_agree,
)
from proxima.marketplace.matching.engine import (
    Candidate,
    NoCandidateError,
    Placement,
    Reservation,
    ReservationError,
)
from proxima.marketplace.matching.snapshot import MarketSnapshot
from proxima.marketplace.matching.spec import JobSpec
from proxima.sdk.jobclient import (
    InvalidResponseError,
    JobClientError,
    JobRejectedError,
    JobTimeoutError,
    JobTransportError,
    check_result,
)
from proxima.sdk.jobs import (
    ErrorCode,
    EscrowPayment,
    JobRequest,
    JobResult,
    Quote,
    QuoteRequest,
    VoucherPayment,
    sign_request,
)
from proxima.sdk.offers import Offer
from proxima.sdk.types import Address
from proxima.sdk.verification import CheckResult
from proxima.sdk.vivaldi import VivaldiCoordinate
from proxima.sdk.workloads import (
    EmbedInput,
    MatmulInput,
    WorkloadSpecError,
    canonical_json,
    parse_input,
    spec_hash,
)
from proxima.sdk.workloads import billing_units as workload_units

__all__ = [
    "CLIENT_SPEC_FIELDS",
    "DispatchSettings",
    "Dispatcher",
    "JobRunner",
    "MarketView",
    "ObservationSink",
    "Placer",
    "SpendLedger",
    "build_spec",
]

log = logging.getLogger(__name__)

CLIENT_SPEC_FIELDS: Final = frozenset(
    {
        "hardware",
        "residency",
        "max_price_wei",
        "budget_wei",
        "latency_target_s",
        "redundancy",
        "min_reliability",
    }
)
"""The JobSpec fields a client chooses; the dispatcher computes the others from the job."""

# Embedding cost model, as the node's embed workload estimates it (node/workloads/embed.py; the marketplace
# does not import the node): about four characters per word piece, at most 256 tokens per text, plus
# attention.
_EMBED_HIDDEN, _EMBED_FFN, _EMBED_LAYERS, _EMBED_MAX_TOKENS = 384, 1536, 6, 256
_EMBED_FLOPS_PER_TOKEN = (
    2 * _EMBED_LAYERS * (4 * _EMBED_HIDDEN * _EMBED_HIDDEN + 2 * _EMBED_HIDDEN * _EMBED_FFN)
)
_EMBED_DIM = 384
_BASE64_GROWTH = 4 / 3
_CAPACITY_POLL_S: Final = 0.5
"""Longest wait between placements of a job waiting for a slot (offers may free capacity too)."""

# Refusals a node can give after it accepted the job (and recorded its voucher): their voucher is uncertain.
_MAYBE_ACCEPTED = frozenset({ErrorCode.INVALID_INPUT, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE})
# Refusals caused by this gateway, not by the provider: not held against the provider's record.
_GATEWAY_FAULTS = frozenset(
    {ErrorCode.BAD_SIGNATURE, ErrorCode.EXPIRED, ErrorCode.MALFORMED, ErrorCode.DUPLICATE}
)


# --- collaborators -----------------------------------------------------------------------------------------


class JobRunner(Protocol):
    """Sends job protocol requests to providers (:class:`proxima.marketplace.network.MarketNetwork`).

    Both raise the :mod:`proxima.sdk.jobclient` errors unchanged (``JobRejectedError``, ``JobTimeoutError``,
    ``JobTransportError``, ``InvalidResponseError``).
    """

    async def run_job(self, offer: Offer, request: JobRequest, *, timeout: float) -> JobResult:
        """Send a signed job request to the offer's provider and return its checked result."""
        ...

    async def request_quote(self, offer: Offer, request: QuoteRequest, *, timeout: float) -> Quote:
        """Ask the offer's provider for signed escrow terms."""
        ...


class MarketView(Protocol):
    """The market as the dispatcher sees it (built from the network's offer book and the chain state)."""

    def snapshot(self) -> MarketSnapshot:
        """A current snapshot of the live offers (cached by the implementation as it sees fit)."""
        ...

    def offer(self, provider: Address) -> Offer | None:
        """The provider's live offer (where to dial it), or ``None``."""
        ...

    def client_coordinate(self) -> VivaldiCoordinate | None:
        """This gateway's network coordinate (the client side of RTT predictions)."""
        ...


class SpendLedger(Protocol):
    """Client budgets (implemented by the gateway's accounts). Every call is idempotent per ``job_id``."""

    def reserve(self, client: Address, job_id: str, amount_wei: int) -> None:
        """Set the job's reservation to ``amount_wei``; raises a ``MarketError`` (budget exceeded) if it
        does not fit in the client's budget."""
        ...

    def charge(self, job_id: str, amount_wei: int) -> None:
        """Final charge (at most the reservation); releases the rest."""
        ...

    def release(self, job_id: str) -> None:
        """Nothing is charged; the reservation is released."""
        ...


class ObservationSink(Protocol):
    """Where the gateway's own record of providers goes (``ChainState.record_observation``)."""

    def record_observation(self, provider: Address, success: bool) -> None:
        """One attempt's outcome."""
        ...


class Placer(Protocol):
    """The matching engine (:class:`proxima.marketplace.matching.engine.MatchingEngine`)."""

    def place(
        self, spec: JobSpec, snapshot: MarketSnapshot, *, exclude: Collection[Address] = ()
    ) -> Placement:
        """A placement (chosen provider and ranked backups), or ``NoCandidateError``."""
        ...

    def reserve(self, placement: Placement) -> Reservation:
        """Hold a slot on the chosen providers (counted by later placements)."""
        ...

    def unreserve(self, reservation: Reservation) -> None:
        """Release the holds (idempotent)."""
        ...

    def bind(self, reservation: Reservation, provider: Address) -> None:
        """The job was sent to ``provider`` (a backup takes over a chosen provider's hold)."""
        ...


# --- settings -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher runs jobs.

    Attributes:
        max_attempts: Attempts per job, over all providers (the first included).
        attempt_timeout_s: Seconds one attempt may take (request, queue, compute, answer): its deadline.
        quote_timeout_s: Seconds for an escrow quote.
        job_timeout_s: Seconds a whole job may take before it fails with ``deadline``.
        max_concurrent_jobs: Jobs dispatched at once (others wait their turn).
        escrow_max_duration_s: Furthest escrow delivery deadline accepted in a quote (a failed attempt's
            escrow can be claimed back only after it).
        resend_max_age_s: After a restart, a stored request older than this is re-signed (same job id and
            payment, fresh ``issued_at``) before it is sent again; nodes refuse requests older than 300 s.
        duty_interval_s: Seconds between passes of the duty loop (escrow confirmations and claims, deposit).
        deposit_headroom_wei: If positive, the duty loop keeps the voucher deposit at least this much above
            what the gateway owes through unredeemed vouchers.
        stale_voucher_retries: Times an attempt re-issues its voucher after a *stale voucher* refusal.
        capacity_wait_s: How long a job whose qualifying providers are all busy waits for a free slot before
            it fails with ``no_candidate``.
    """

    max_attempts: int = 3
    attempt_timeout_s: float = 60.0
    quote_timeout_s: float = 10.0
    job_timeout_s: float = 600.0
    max_concurrent_jobs: int = 256
    escrow_max_duration_s: int = 3_600
    resend_max_age_s: float = 240.0
    duty_interval_s: float = 10.0
    deposit_headroom_wei: int = 0
    stale_voucher_retries: int = 2
    capacity_wait_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "max_concurrent_jobs", "escrow_max_duration_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MarketConfigError(f"DispatchSettings.{name} must be an integer >= 1, got {value!r}")
        for name in ("deposit_headroom_wei", "stale_voucher_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MarketConfigError(f"DispatchSettings.{name} must be an integer >= 0, got {value!r}")
        for name in (
            "attempt_timeout_s",
            "quote_timeout_s",
            "job_timeout_s",
            "resend_max_age_s",
            "duty_interval_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise MarketConfigError(f"DispatchSettings.{name} must be a positive number, got {value!r}")
        wait = self.capacity_wait_s
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < math.inf:
            raise MarketConfigError(f"DispatchSettings.capacity_wait_s must be a number >= 0, got {wait!r}")


# --- spec ---------------------------------------------------------------------------------------------------


def _sizes(workload: str, inp: Any, payload: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(flops, input_bytes, output_bytes)`` of a parsed input (bytes as they travel: JSON, base64)."""
    input_bytes = len(canonical_json(dict(payload)))
    if isinstance(inp, MatmulInput):
        m, k, n = inp.dims
        itemsize = 4 if inp.element_type == "float32" else 8
        return 2 * m * k * n, input_bytes, int(m * n * itemsize * _BASE64_GROWTH)
    if isinstance(inp, EmbedInput):
        flops = 0
        for text in inp.texts:
            tokens = min(_EMBED_MAX_TOKENS, math.ceil(len(text) / 4) + 2)
            flops += tokens * (_EMBED_FLOPS_PER_TOKEN + 4 * _EMBED_LAYERS * tokens * _EMBED_HIDDEN)
        return flops, input_bytes, int(len(inp.texts) * _EMBED_DIM * 4 * _BASE64_GROWTH)
    raise WorkloadSpecError(f"no cost model for workload {workload!r}")


def _wei(value: Any) -> Any:
    """Amounts may come as decimal strings (JSON); JobSpec wants integers."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def build_spec(
    job_id: str,
    workload: str,
    payload: Mapping[str, Any],
    constraints: Mapping[str, Any],
    coordinate: VivaldiCoordinate | None = None,
) -> JobSpec:
    """The matching engine's view of a job.

    Call it before storing a job to check the client's constraints (the dispatcher calls it again when it
    places the job).

    Args:
        job_id: ``0x`` + 64 hex digits.
        workload: The workload.
        payload: Its input.
        constraints: The client's choices, keys from :data:`CLIENT_SPEC_FIELDS`.
        coordinate: The gateway's network coordinate.

    Raises:
        InvalidJobError: Naming the field at fault.
    """
    unknown = sorted(set(constraints) - CLIENT_SPEC_FIELDS)
    if unknown:
        raise InvalidJobError(
            "spec", f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(CLIENT_SPEC_FIELDS))}"
        )
    try:
        inp = parse_input(workload, payload)
        units = workload_units(workload, inp)
        flops, input_bytes, output_bytes = _sizes(workload, inp, payload)
    except WorkloadSpecError as err:
        raise InvalidJobError("input", str(err)) from err
    model = getattr(inp, "model", "")
    fields = {name: _wei(value) if name.endswith("_wei") else value for name, value in constraints.items()}
    try:
        return JobSpec.model_validate(
            {
                **fields,
                "job_id": job_id,
                "workload": workload,
                "model": model if isinstance(model, str) else "",
                "units": units,
                "flops": flops,
                "input_bytes": input_bytes,
                "output_bytes": output_bytes,
                "client_coordinate": coordinate,
            }
        )
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidJobError(f"spec.{where}" if where else "spec", first["msg"]) from err


# --- internals ----------------------------------------------------------------------------------------------


class _JobLog(logging.LoggerAdapter[logging.Logger]):
    """Puts ``job_id`` on every line, merged with the call site's ``extra``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class _Failure(Exception):  # noqa: N818 - internal signal, not an error type of the API
    """One attempt failed (or the job must fail): ``code`` and ``message`` go to the record."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        provider_fault: bool = True,
        reliability: bool | None = None,
        final: bool = False,
        rejected: _Rejection | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.rejected = rejected
        """Set when a delivered result failed verification (the attempt ends ``rejected``)."""
        self.provider_fault = provider_fault
        """Counts against the provider's circuit breaker."""
        self.reliability = provider_fault if reliability is None else reliability
        """Counts against the provider's record (the chain-state observation behind its reliability)."""
        self.final = final
        super().__init__(f"{code}: {message}")


@dataclass
class _Delivered:
    result: JobResult
    request: JobRequest
    provider: Address
    price: int
    n: int
    verify_s: float
    issued: IssuedVoucher | None
    check: CheckResult | None = None
    region: str = ""


@dataclass(frozen=True)
class _Rejection:
    """A delivered result that failed verification: what the evidence needs."""

    check: CheckResult
    verify_s: float
    result: JobResult
    request: JobRequest
    collected: tuple[VerdictCollection, int] | None = None
    canary: CanaryTicket | None = None


@dataclass
class _Run:
    record: JobRecord
    log: _JobLog
    started: float = field(default_factory=time.monotonic)
    match_s: float = 0.0
    settle_s: float = 0.0
    attempts: int = 0
    failed: set[Address] = field(default_factory=set)
    reserved: int = 0
    last_error: tuple[str, str] | None = None
    spec: JobSpec | None = None
    reservation: Reservation | None = None
    used: set[Address] = field(default_factory=set)
    """Providers holding a delivered result of this job not yet decided (redundant runs)."""
    max_attempts: int = 0
    canary: CanaryTicket | None = None
    """A canary job: the committed spec hash and salt (its proof's reveal)."""
    expected: Mapping[str, Any] | None = None
    """A canary job: the committed answer."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _bytes32(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(str(value).removeprefix("0x"))


def _now_s() -> int:
    return int(time.time())


# --- the dispatcher -----------------------------------------------------------------------------------------


class Dispatcher:
    """Runs stored jobs: placement, payment, attempts with failover, verification, settlement.

    Args:
        store: The job database.
        engine: The matching engine.
        market: Current offers (snapshot) and how to reach a provider.
        runner: Sends requests to providers.
        payer: The gateway's paying account.
        spend: Client budgets.
        health: Circuit breakers.
        settings: Limits and timeouts.
        cache: The result cache (``None``: no caching).
        observations: Where each attempt's outcome is recorded for reliability (``ChainState``).
        verification: How results are checked (Freivalds rounds, embed redundancy, canary rate).
        evidence: Files evidence against rejected results on chain (``None``: evidence is ``skipped``).
        verifiers: The verifiers (judge disagreeing redundant results, issue canaries); ``None``: none.
        metrics: Where checks, evidence and canaries are counted.
    """

    def __init__(
        self,
        store: JobStore,
        engine: Placer,
        market: MarketView,
        runner: JobRunner,
        payer: Payer,
        spend: SpendLedger,
        health: HealthTracker,
        settings: DispatchSettings | None = None,
        *,
        cache: ResultCache | None = None,
        observations: ObservationSink | None = None,
        verification: VerificationPolicy | None = None,
        evidence: EvidenceFiler | None = None,
        verifiers: VerifierPool | None = None,
        metrics: VerificationMetrics | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.market = market
        self.runner = runner
        self.payer = payer
        self.spend = spend
        self.health = health
        self.settings = settings or DispatchSettings()
        self.cache = cache
        self.observations = observations
        self.policy = verification or VerificationPolicy()
        self.evidence = evidence
        self.verifiers = verifiers if verifiers is not None and len(verifiers) else None
        self.metrics = metrics
        self._background: set[asyncio.Task[None]] = set()
        self._quarantine: dict[Address, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pending: deque[str] = deque()
        self._cancelled: set[str] = set()
        self._slots: asyncio.Semaphore | None = None
        self._freed = asyncio.Event()
        self._ready = threading.Event()
        self._started_at = time.monotonic()

    # --- life cycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished jobs, then serve submitted ones and run the duty loop until cancelled.

        Cancelling it cancels the jobs' tasks; their jobs stay unfinished in the store for the next start.
        """
        loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_jobs)
        self._freed = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._loop = loop
                self._finish_ledger()
                unfinished = self.store.unfinished()
                resumed = [job.id for job in unfinished]
                in_flight = {a.provider for job in unfinished for a in job.attempts if a.outcome == "running"}
                if in_flight:
                    # After a restart the offer book starts empty: resuming at once would find neither the
                    # providers the stored requests went to nor their backups. Give the gossip time to bring
                    # back at least those providers' offers.
                    await self._market_warm(in_flight, self.settings.capacity_wait_s)
                for job_id in resumed:
                    self._start(job_id)
                self._drain()
                self._ready.set()
                log.info("dispatcher started", extra={"resumed": len(resumed)})
                group.create_task(self._duties(), name="dispatcher-duties")
        finally:
            self._ready.clear()
            self._group = None
            self._loop = None
            self._tasks.clear()
            log.info("dispatcher stopped")

    def submit(self, job_id: str) -> None:
        """Schedule a stored job (idempotent: a job already running or finished is left alone).

        Callable from any thread; before :meth:`run` starts, the job waits for it.
        """
        self._pending.append(job_id)
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._drain()
        else:
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        while self._pending and self._group is not None:
            self._start(self._pending.popleft())

    def _start(self, job_id: str) -> None:
        if self._group is None or job_id in self._tasks:
            return
        record = self.store.get(job_id)
        if record is None or record.finished:
            return
        task = self._group.create_task(self._drive(job_id), name=f"job-{job_id[:10]}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    def cancel(self, job_id: str) -> bool:
        """Cancel a job (any thread): it stops, and nothing is charged unless its result was already in.

        Returns:
            Whether it was cancelled now (``False`` if it had finished).

        Raises:
            UnknownJobError: If there is no such job.
        """
        cancelled = self.store.cancel(job_id)
        if cancelled:
            self._cancelled.add(job_id)
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._cancel_task, job_id)
            else:
                self._release(job_id)
        return cancelled

    def _cancel_task(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        else:
            self._cancelled.discard(job_id)
            self._release(job_id)

    async def wait(self, job_id: str, timeout: float) -> JobRecord:
        """The job once it is finished, or as it is when ``timeout`` passes.

        Raises:
            UnknownJobError: If there is no such job.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            record = self.store.get(job_id)
            if record is None:
                raise UnknownJobError(job_id)
            remaining = deadline - loop.time()
            if record.finished or remaining <= 0:
                return record
            events = await self.store.wait_event(job_id, seen, remaining)
            if events:
                seen = events[-1].seq

    async def run_duties_once(self) -> None:
        """One pass of the duty loop: settle escrows (confirm, claim back) and top up the voucher deposit."""
        actions = await asyncio.to_thread(self.payer.settle_escrows)
        for action in actions:
            log.info(
                "escrow duty",
                extra={"job_id": action.job_id, "escrow_id": action.escrow_id, "action": action.action},
            )
            if action.action == "disputed":
                self._escrow_proven(action)
        if self.settings.deposit_headroom_wei > 0:

            def top_up() -> int:
                return self.payer.ensure_deposit(
                    self.payer.outstanding() + self.settings.deposit_headroom_wei
                )

            await asyncio.to_thread(top_up)

    def _escrow_proven(self, action: EscrowAction) -> None:
        """A rejected escrow result was disputed and resolved on chain: the attempt's evidence says so."""
        rows = self.store.read(
            "SELECT n FROM attempts WHERE job_id = ? AND attempt_job_id = ?",
            (action.job_id, action.escrow_id),
        )
        if not rows:
            return
        outcome = EvidenceOutcome(
            "escrow",
            "proven",
            f"escrow {action.escrow_id} disputed: {action.detail}",
            action.tx,
            action.slashed_wei,
        )
        with contextlib.suppress(JobStoreError):
            self.store.set_evidence(action.job_id, int(rows[0]["n"]), outcome.as_json())
        if self.metrics is not None:
            self.metrics.evidence_filed("escrow", "proven")

    async def _duties(self) -> None:
        while True:
            try:
                await self.run_duties_once()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - a failed pass is retried; the duty loop must not die
                log.error("dispatcher duty pass failed", extra={"error": f"{type(err).__name__}: {err}"})
            await asyncio.sleep(self.settings.duty_interval_s)

    def _finish_ledger(self) -> None:
        """Charges and releases a previous process decided but did not get to make."""
        for job_id, status, charged in self.store.ledger_pending():
            try:
                if status is JobStatus.SUCCEEDED and charged is not None:
                    self.spend.charge(job_id, charged)
                    self.store.set_ledger(job_id, "charged")
                else:
                    self.spend.release(job_id)
                    self.store.set_ledger(job_id, "released")
            except Exception as err:  # noqa: BLE001 - logged, retried at the next start
                log.error("cannot finish a job's charge", extra={"job_id": job_id, "error": str(err)})

    def _release(self, job_id: str) -> None:
        record = self.store.get(job_id)
        if record is None:
            return
        if self.store.ledger_of(job_id)[0] == "reserved":
            try:
                self.spend.release(job_id)
                self.store.set_ledger(job_id, "released")
            except Exception as err:  # noqa: BLE001 - finished at the next start
                log.error("cannot release a reservation", extra={"job_id": job_id, "error": str(err)})

    # --- one job ---------------------------------------------------------------------------------------

    async def _drive(self, job_id: str) -> None:
        assert self._slots is not None
        jlog = _JobLog(log, {"job_id": job_id})
        try:
            async with self._slots:
                record = self.store.get(job_id)
                if record is None or record.finished:
                    return
                run = _Run(record, jlog)
                try:
                    async with asyncio.timeout(self.settings.job_timeout_s):
                        await self._run(run)
                except TimeoutError:
                    self._fail(
                        run, "deadline", f"the job did not finish within {self.settings.job_timeout_s} s"
                    )
                finally:
                    if run.reservation is not None:
                        self.engine.unreserve(run.reservation)
                        self._freed.set()
                        self._freed = asyncio.Event()
        except asyncio.CancelledError:
            if job_id in self._cancelled:
                jlog.info("job task cancelled")
                self._release(job_id)
                self._cancelled.discard(job_id)
                return  # the job's own cancellation is not the group's
            raise
        except Exception:  # noqa: BLE001 - a bug must not leave the job hanging or take other jobs down
            jlog.exception("job dispatch crashed")
            with contextlib.suppress(JobStoreError):
                self.store.fail(job_id, code="internal", message="the gateway failed to dispatch the job")
            self._release(job_id)

    async def _run(self, run: _Run) -> None:
        record = run.record
        if record.kind == "canary":
            # A canary is sent to one provider only, by the task that drew it; a restart ends it.
            self._fail(
                run, "interrupted", "the gateway stopped while the canary ran; canaries are not resumed"
            )
            return
        copies = self.policy.copies(record.workload, int(record.spec.get("redundancy", 1) or 1))
        # A job run redundantly wants results confirmed by several providers: a cached entry cannot say that.
        cacheable = record.use_cache and copies == 1 and self.cache is not None and not record.attempts
        if cacheable and self._serve_cached(run):
            return
        try:
            run.spec = build_spec(
                record.id, record.workload, record.input, record.spec, self.market.client_coordinate()
            )
        except InvalidJobError as err:
            self._fail(run, "invalid_spec", str(err))
            return
        requested = run.spec.redundancy
        if copies > requested:
            # The gateway's policy runs more copies than the client asked for: the reservation made at the
            # door and the job's total budget grow in proportion (refused like any budget overrun).
            budget = run.spec.budget_wei
            update: dict[str, Any] = {"redundancy": copies}
            if budget is not None:
                update["budget_wei"] = budget * copies // requested
            run.spec = run.spec.model_copy(update=update)
            ledger, reserved = self.store.ledger_of(record.id)
            if ledger == "reserved" and reserved and not record.attempts:
                grown = reserved * copies // requested
                try:
                    self.spend.reserve(record.client, record.id, grown)
                except MarketError as err:
                    self._fail(run, "budget", f"{copies} redundant copies do not fit the budget: {err}")
                    return
                self.store.set_ledger(record.id, "reserved", reserved_wei=grown)
        run.max_attempts = self.settings.max_attempts + copies - 1
        run.attempts = len(record.attempts)
        run.failed = {a.provider for a in record.attempts if a.outcome in ("failed", "rejected")}
        ledger, reserved = self.store.ledger_of(record.id)
        if ledger == "reserved" and reserved:
            self._hold(run, reserved)  # resumed: the reservation made before the restart stands
        if copies > 1:
            await self._run_redundant(run, copies)
            return
        if record.attempts and record.attempts[-1].outcome == "running":
            delivered = await self._resume_attempt(run)
            if delivered is not None:
                await self._succeed(run, delivered)
                return
        queue: deque[Candidate] = deque()
        placement: Placement | None = None
        idle_placements = 0  # placements whose candidates were all excluded by the time they were tried
        while run.attempts < run.max_attempts:
            if not queue:
                if idle_placements >= 3:
                    self._fail(run, "providers_unavailable", "every placed provider became unavailable")
                    return
                placement = await self._place(run, replaced=placement is not None or bool(record.attempts))
                if placement is None:
                    return
                queue.extend(placement.chosen)
                queue.extend(placement.backups)
                idle_placements += 1
            candidate = queue.popleft()
            if self._skip(run, candidate):
                continue
            idle_placements = 0
            try:
                delivered = await self._attempt(run, candidate)
            except _Failure as failure:
                if failure.final:
                    self._fail(run, failure.code, failure.message)
                    return
                continue
            await self._succeed(run, delivered)
            return
        code, message = run.last_error or ("no_attempt", "no attempt could be made")
        self._fail(run, code, f"all {run.attempts} attempts failed; the last: {message}")

    # --- redundant runs -------------------------------------------------------------------------------

    async def _run_redundant(self, run: _Run, copies: int) -> None:
        """Run the job on ``copies`` distinct providers at once; succeed when that many results agree.

        Each result passes its own check first (matmul: Freivalds). Results that disagree are judged by the
        verifiers (a quorum signing one invalid rejects it, with those signatures as its evidence); without
        verifiers (or without a verdict) a further provider is asked and the majority decides. Rejected
        results are never charged; the job is charged each agreeing copy's price.
        """
        record = run.record
        for attempt in record.attempts:
            if attempt.outcome == "running":  # a copy interrupted by a restart: run another one
                self._attempt_failed(
                    run,
                    attempt.n,
                    attempt.provider,
                    attempt.region,
                    _Failure("interrupted", "the gateway stopped while this copy ran", provider_fault=False),
                )
        pool: list[_Delivered] = []
        judged: set[int] = set()
        queue: deque[Candidate] = deque()
        placed = False
        tie_breakers = 0
        idle_placements = 0
        while True:
            want = copies - len(pool) + tie_breakers
            batch: list[Candidate] = []
            while len(batch) < want and run.attempts + len(batch) < run.max_attempts:
                if not queue:
                    if idle_placements >= 3:
                        break
                    placement = await self._place(
                        run, replaced=placed or bool(record.attempts), copies=None if not placed else 1
                    )
                    if placement is None:
                        self._release_pool(run, pool, "the job could not be placed again")
                        return
                    placed = True
                    idle_placements += 1
                    queue.extend(placement.chosen)
                    queue.extend(placement.backups)
                candidate = queue.popleft()
                if (
                    self._skip(run, candidate)
                    or candidate.provider in run.used
                    or any(c.provider == candidate.provider for c in batch)
                ):
                    continue
                idle_placements = 0
                batch.append(candidate)
            if not batch:
                self._release_pool(run, pool, "no further provider could run a copy")
                code, message = run.last_error or ("no_attempt", "no attempt could be made")
                if pool:
                    code, message = (
                        "unconfirmed",
                        (
                            f"{len(pool)} of {copies} agreeing results; no further provider could run a copy"
                            + (f" (the last failure: {run.last_error[1]})" if run.last_error else "")
                        ),
                    )
                self._fail(run, code, message)
                return
            run.used.update(c.provider for c in batch)
            outcomes = await asyncio.gather(*(self._attempt(run, c) for c in batch), return_exceptions=True)
            final: _Failure | None = None
            for candidate, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, _Delivered):
                    pool.append(outcome)
                    continue
                run.used.discard(candidate.provider)
                if isinstance(outcome, _Failure):
                    if outcome.final:
                        final = outcome
                    continue
                raise outcome  # a bug (or cancellation): not an attempt's failure
            if final is not None:
                self._release_pool(run, pool, "the job failed")
                self._fail(run, final.code, final.message)
                return
            tie_breakers = 0
            if len(pool) < copies:
                continue
            clusters, compared_s = await asyncio.to_thread(self._clusters, record, pool)
            if len(clusters) > 1 and self.verifiers is not None and self.evidence is not None:
                pool = await self._judge(run, pool, judged)
                clusters, more_s = await asyncio.to_thread(self._clusters, record, pool)
                compared_s += more_s
            if len(clusters) > 1:
                biggest = max(clusters, key=len)
                if len(biggest) >= 2 and 2 * len(biggest) > len(pool) and clusters.count(biggest) == 1:
                    for cluster in clusters:
                        if cluster is biggest:
                            continue
                        for outlier in cluster:
                            agree = await asyncio.to_thread(
                                results_agree,
                                record.workload,
                                record.input,
                                biggest[0].result.output,
                                outlier.result.output,
                                atol=self.policy.embed_tolerance,
                            )
                            check = CheckResult(
                                False,
                                "redundant",
                                f"disagrees with {len(biggest)} of {len(pool)} providers: {agree.detail}",
                            )
                            self._reject_pooled(run, outlier, check, None)
                    pool = list(biggest)
                    clusters = [pool]
                else:
                    tie_breakers = 1  # no majority yet: ask one more provider
                    run.log.info(
                        "redundant results disagree; asking another provider",
                        extra={"results": len(pool), "groups": len(clusters)},
                    )
                    continue
            if len(pool) < copies:
                continue
            agreeing = sorted(clusters[0], key=lambda d: d.n)
            primary, others = agreeing[0], agreeing[1:copies]
            for spare in agreeing[copies:]:
                self._release_pool(run, [spare], "more agreeing copies than needed")
            detail = f"{len(agreeing[:copies])} distinct providers' results agree"
            if record.workload == "embed":
                detail += f" within {self.policy.embed_tolerance:g}"
            elif primary.check is not None:
                detail += f"; each passed {primary.check.method} ({primary.check.rounds} rounds)"
            verify_s = max(d.verify_s for d in agreeing[:copies]) + compared_s
            check = CheckResult(True, "redundant", detail, primary.check.rounds if primary.check else 0)
            await self._succeed(run, primary, others, verification=check, verify_s=verify_s)
            return

    def _clusters(
        self, record: JobRecord, pool: Sequence[_Delivered]
    ) -> tuple[list[list[_Delivered]], float]:
        """Group results that agree (each with the first of its group), in attempt order (blocking)."""
        started = time.perf_counter()
        clusters: list[list[_Delivered]] = []
        for delivered in sorted(pool, key=lambda d: d.n):
            for cluster in clusters:
                agree = results_agree(
                    record.workload,
                    record.input,
                    cluster[0].result.output,
                    delivered.result.output,
                    atol=self.policy.embed_tolerance,
                )
                if agree.passed:
                    cluster.append(delivered)
                    break
            else:
                clusters.append([delivered])
        return clusters, time.perf_counter() - started

    async def _judge(self, run: _Run, pool: list[_Delivered], judged: set[int]) -> list[_Delivered]:
        """Ask the verifiers about each result not judged yet; reject those a quorum signs invalid."""
        assert self.evidence is not None
        record = run.record
        kept: list[_Delivered] = []
        for delivered in pool:
            if delivered.n in judged:
                kept.append(delivered)
                continue
            escrow = isinstance(delivered.request.payment, EscrowPayment)
            try:
                collection, quorum = await self.evidence.collect(
                    target="escrow" if escrow else "faults",
                    workload=record.workload,
                    inp=record.input,
                    result=delivered.result,
                )
            except MarketError as err:
                run.log.warning("verifiers unavailable", extra={"attempt": delivered.n, "error": str(err)})
                kept.append(delivered)
                continue
            judgement = collection.judgement(quorum)
            run.log.info(
                "verifiers judged a redundant result",
                extra={
                    "attempt": delivered.n,
                    "provider": delivered.provider,
                    "judgement": judgement,
                    "invalid_votes": len(collection.signatures),
                    "valid_votes": len(collection.valid),
                    "quorum": quorum,
                },
            )
            if judgement == "invalid":
                check = CheckResult(
                    False,
                    "redundant",
                    f"disagrees with another provider and {len(collection.signatures)} verifier(s) signed it "
                    "invalid",
                )
                self._reject_pooled(run, delivered, check, (collection, quorum))
                continue
            if judgement == "valid":
                judged.add(delivered.n)
            kept.append(delivered)
        return kept

    def _reject_pooled(
        self,
        run: _Run,
        delivered: _Delivered,
        check: CheckResult,
        collected: tuple[VerdictCollection, int] | None,
    ) -> None:
        """A delivered copy lost the comparison: rejected like a result that failed its own check."""
        if delivered.issued is not None:
            self.payer.settle_voucher(delivered.issued, VoucherOutcome.ACCEPTED)
        elif isinstance(delivered.request.payment, EscrowPayment):
            self.payer.escrow_rejected(
                _hex(delivered.request.job_id), delivered.result.receipt.result_hash, check.detail
            )
        rejection = _Rejection(check, 0.0, delivered.result, delivered.request, collected)
        failure = _Failure("verification_failed", f"{check.method}: {check.detail}", rejected=rejection)
        self._attempt_failed(run, delivered.n, delivered.provider, delivered.region, failure)

    def _release_pool(self, run: _Run, pool: Sequence[_Delivered], reason: str) -> None:
        """Delivered copies that will not be used (the job failed, or a spare): paid, not charged, not held
        against their providers."""
        for delivered in pool:
            if delivered.issued is not None:
                self.payer.settle_voucher(delivered.issued, VoucherOutcome.ACCEPTED)
            elif isinstance(delivered.request.payment, EscrowPayment):
                self.payer.escrow_delivered(
                    _hex(delivered.request.job_id), delivered.result.receipt.result_hash
                )
            run.used.discard(delivered.provider)
            with contextlib.suppress(JobStoreError):
                self.store.end_attempt(run.record.id, delivered.n, code="unused", message=reason)

    # --- canaries -------------------------------------------------------------------------------------

    async def _canary(self, source: JobRecord, provider: Address) -> None:
        """Send ``provider`` a canary of ``source``'s shape, as a job of the gateway's own; never raises."""
        assert self.verifiers is not None
        slog = _JobLog(log, {"job_id": source.id})
        try:
            parsed = parse_input("matmul", source.input)
            assert isinstance(parsed, MatmulInput)
            m, k, n = parsed.dims
            canary = await self.verifiers.canary("matmul", m, k, n, parsed.element_type)
        except MarketError as err:
            slog.warning("no canary issued", extra={"provider": provider, "error": str(err)[:300]})
            if self.metrics is not None:
                self.metrics.canary_done("unavailable")
            return
        job_id = "0x" + bytes(canary.job_id).hex() if isinstance(canary.job_id, bytes) else str(canary.job_id)
        job_id = job_id.lower()
        offer = self.market.offer(provider)
        try:
            record = self.store.create(
                self.payer.address,
                "matmul",
                dict(canary.input),
                {},
                "voucher",
                use_cache=False,
                job_id=job_id,
                kind="canary",
            )
            spec = build_spec(record.id, "matmul", record.input, {}, self.market.client_coordinate())
        except (InvalidJobError, JobStoreError) as err:
            slog.warning("canary not stored", extra={"provider": provider, "error": str(err)[:300]})
            if self.metrics is not None:
                self.metrics.canary_done("unavailable")
            return
        ticket = CanaryTicket(_bytes32(canary.spec_hash), _bytes32(canary.salt))
        run = _Run(record, _JobLog(log, {"job_id": record.id}), spec=spec, canary=ticket)
        run.expected = dict(canary.expected)
        run.max_attempts = 1
        slog.info("canary sent", extra={"canary": record.id, "provider": provider, "shape": [m, k, n]})
        terms = None if offer is None else offer.workload("matmul")
        price = spec.units * (terms.unit_price_wei if terms is not None else 0)
        try:
            delivered = await self._attempt_on(run, provider, "" if offer is None else offer.region, price)
        except _Failure as failure:
            outcome = "failed" if failure.rejected is not None else "undelivered"
            self._fail(run, failure.code, failure.message)
            if self.metrics is not None:
                self.metrics.canary_done(outcome)
            slog.warning(
                "canary " + ("answered wrongly" if outcome == "failed" else "not answered"),
                extra={"canary": record.id, "provider": provider, "code": failure.code},
            )
            return
        await self._succeed(run, delivered)
        if self.metrics is not None:
            self.metrics.canary_done("passed")
        slog.info("canary passed", extra={"canary": record.id, "provider": provider})

    # --- cache ----------------------------------------------------------------------------------------

    def _serve_cached(self, run: _Run) -> bool:
        assert self.cache is not None
        record = run.record
        try:
            entry = self.cache.get(record.workload, record.input)
        except WorkloadSpecError:
            return False
        if entry is None:
            return False
        total_ms = (time.monotonic() - run.started) * 1000
        timing = {"match": 0.0, "dispatch": 0.0, "queue": 0.0, "compute": 0.0, "verify": 0.0, "settle": 0.0}
        timing["total"] = round(total_ms, 3)
        self.store.succeed(
            record.id,
            None,
            result=entry.output,
            receipt=entry.receipt,
            provider=entry.provider,
            timing_ms=timing,
            price_wei=0,
            charged_wei=0,
            cached=True,
        )
        if self.store.ledger_of(record.id)[0] == "reserved":  # reserved when the job was accepted
            self._charge(run, 0)
        run.log.info(
            "served from the result cache", extra={"cache_key": entry.key, "provider": entry.provider}
        )
        return True

    # --- placement ------------------------------------------------------------------------------------

    def _skip(self, run: _Run, candidate: Candidate) -> bool:
        """Whether a backup is out now: it failed this job, its breaker is open, its region went dark, or it
        is quarantined after a rejected result."""
        now = time.monotonic()
        return (
            candidate.provider in run.failed
            or candidate.provider in self.health.excluded(now)
            or candidate.region in self.health.dark_regions(now)
            or candidate.provider in self.quarantined(now)
        )

    def quarantined(self, now: float | None = None) -> frozenset[Address]:
        """Providers that delivered a rejected result within ``quarantine_s``: no job is placed on them."""
        now = time.monotonic() if now is None else now
        for provider in [p for p, until in self._quarantine.items() if until <= now]:
            del self._quarantine[provider]
        return frozenset(self._quarantine)

    def _excluded(self, snapshot: MarketSnapshot | None) -> set[Address]:
        now = time.monotonic()
        out = set(self.health.excluded(now)) | self.quarantined(now)
        dark = self.health.dark_regions(now)
        if dark and snapshot is not None and len(snapshot):
            names = snapshot.region_names
            for row, code in enumerate(snapshot.region_codes.tolist()):
                if names[code] in dark:
                    out.add(snapshot.addresses[row])
        return out

    async def _place(self, run: _Run, *, replaced: bool, copies: int | None = None) -> Placement | None:
        """Place the job (``copies``: how many chosen providers this placement needs, default the spec's
        redundancy; the reservation always covers the spec's)."""
        spec = run.spec
        assert spec is not None
        full = spec
        if copies is not None and copies != spec.redundancy:
            spec = spec.model_copy(update={"redundancy": copies})
        loop = asyncio.get_running_loop()
        wait_until = loop.time() + self.settings.capacity_wait_s
        waiting = False
        while True:
            started = time.perf_counter()
            try:
                snapshot = self.market.snapshot()
            except MarketError as err:
                self._fail(run, "market_unavailable", f"no view of the market: {err}")
                return None
            breakers = self._excluded(snapshot)
            exclude = breakers | run.failed | run.used
            try:
                placement = self.engine.place(spec, snapshot, exclude=exclude)
            except NoCandidateError as err:
                run.match_s += time.perf_counter() - started
                remaining = wait_until - loop.time()
                busy = err.filtered.get("capacity", 0) > 0
                if (busy or len(snapshot) == 0) and remaining > 0:
                    # Every provider that qualifies is busy, or no offer is known yet (the gateway just
                    # started): wait for a slot or for offers (a job ending here, new offers).
                    if not waiting:
                        busy_count = err.filtered.get("capacity", 0)
                        run.log.info("waiting for a free slot or offers", extra={"busy": busy_count})
                        waiting = True
                    await self._slot_freed(min(remaining, _CAPACITY_POLL_S))
                    continue
                self._no_candidate(run, spec, snapshot, err, breakers)
                return None
            run.match_s += time.perf_counter() - started
            break
        price = placement.chosen[0].price_wei
        if run.reserved == 0:
            candidates = (*placement.chosen, *placement.backups)
            most = max(c.price_wei for c in candidates) * full.redundancy
            try:
                self.spend.reserve(run.record.client, run.record.id, most)
            except MarketError as err:
                self._fail(run, "budget", str(err))
                return None
            self.store.set_ledger(run.record.id, "reserved", reserved_wei=most)
            self._hold(run, most)
        if run.reservation is not None:
            self.engine.unreserve(run.reservation)
        run.reservation = self.engine.reserve(placement)
        self.store.mark_placed(run.record.id, placement.explain(), price, replaced=replaced)
        run.log.info(
            "job placed",
            extra={
                "provider": placement.chosen[0].provider,
                "region": placement.chosen[0].region,
                "backups": [c.provider for c in placement.backups],
                "price": price,
                "replaced": replaced,
            },
        )
        return placement

    async def _market_warm(self, providers: set[Address], timeout: float) -> None:
        """Until the market holds a live offer of each of ``providers``, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        missing = set(providers)
        while missing and time.monotonic() < deadline:
            missing = {p for p in missing if self.market.offer(p) is None}
            if missing:
                await asyncio.sleep(_CAPACITY_POLL_S)
        if missing:
            log.warning(
                "resuming jobs without the offers of some of their providers",
                extra={"missing": sorted(missing), "waited_s": timeout},
            )

    async def _slot_freed(self, timeout: float) -> None:
        """Until a job releases its slot hold here, at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), timeout)

    def _hold(self, run: _Run, reserved: int) -> None:
        """The reservation is made: later placements (re-placements after failures) must fit in it."""
        run.reserved = reserved
        spec = run.spec
        assert spec is not None
        cap = reserved // spec.redundancy
        if spec.max_price_wei is None or spec.max_price_wei > cap:
            run.spec = spec.model_copy(update={"max_price_wei": cap})

    def _no_candidate(
        self,
        run: _Run,
        spec: JobSpec,
        snapshot: MarketSnapshot,
        err: NoCandidateError,
        breakers: set[Address],
    ) -> None:
        dark = sorted(self.health.dark_regions(time.monotonic()))
        if breakers:
            try:
                self.engine.place(spec, snapshot, exclude=run.failed)
            except NoCandidateError:
                pass
            else:
                allowed = spec.residency.regions or spec.residency.countries
                where = f" (the job may run only in {', '.join(allowed)})" if allowed else ""
                message = (
                    f"every provider that could run this job is unavailable now: dark regions "
                    f"{', '.join(dark) or 'none'}, {len(breakers)} provider(s) with an open circuit breaker"
                    f"{where}; residency is never relaxed"
                )
                self._fail(run, "region_unavailable" if dark else "providers_unavailable", message)
                return
        if run.last_error is not None:
            code, message = run.last_error
            self._fail(
                run,
                code,
                f"{run.attempts} attempt(s) failed and no other provider qualifies ({err}); the last: "
                f"{message}",
            )
            return
        self._fail(run, "no_candidate", str(err))

    # --- attempts -------------------------------------------------------------------------------------

    def _attempt_timeout(self, run: _Run) -> float:
        left = self.settings.job_timeout_s - (time.monotonic() - run.started)
        return max(min(self.settings.attempt_timeout_s, left), 0.001)

    def _request(
        self, run: _Run, job_id: bytes, provider: Address, payment: EscrowPayment | VoucherPayment
    ) -> JobRequest:
        request = JobRequest(
            job_id=job_id,
            client=self.payer.address,
            provider=provider,
            workload=run.record.workload,
            input=run.record.input,
            payment=payment,
            issued_at=_now_s(),
        )
        return sign_request(request, self.payer.signer)

    async def _attempt(self, run: _Run, candidate: Candidate) -> _Delivered:
        delivered = await self._attempt_on(run, candidate.provider, candidate.region, candidate.price_wei)
        delivered.region = candidate.region
        return delivered

    async def _attempt_on(self, run: _Run, provider: str, region: str, price_wei: int) -> _Delivered:
        """One attempt on ``provider``: start it in the store, pay, send, verify; failures recorded."""
        record = run.record
        provider = to_checksum_address(provider)
        offer = self.market.offer(provider)
        run.attempts += 1
        first = run.attempts == 1
        job_id = bytes.fromhex(record.id[2:]) if first else secrets.token_bytes(32)
        n = self.store.start_attempt(
            record.id,
            provider=provider,
            region=region,
            attempt_job_id=_hex(job_id),
            payment=record.payment_mode,
            price_wei=price_wei,
        )
        run.log.info("attempt started", extra={"attempt": n, "provider": provider, "region": region})
        self.health.begin(provider, region)
        if run.reservation is not None:
            with contextlib.suppress(ReservationError):  # lapsed: the hold no longer matters
                self.engine.bind(run.reservation, provider)
        try:
            if offer is None:
                raise _Failure("offer_gone", f"{provider} has no live offer any more")
            if record.payment_mode == "escrow":
                return await self._attempt_escrow(run, n, offer)
            return await self._attempt_voucher(run, n, offer, job_id)
        except _Failure as failure:
            self._attempt_failed(run, n, provider, region, failure)
            raise

    async def _attempt_voucher(self, run: _Run, n: int, offer: Offer, job_id: bytes) -> _Delivered:
        record = run.record
        provider = offer.provider
        terms = offer.workload(record.workload)
        if terms is None:
            raise _Failure("unknown_workload", f"{provider}'s offer does not serve {record.workload}")
        price = (run.spec.units if run.spec is not None else 1) * terms.unit_price_wei
        retries = self.settings.stale_voucher_retries
        while True:
            issued = self.payer.issue_voucher(provider, price, f"{record.id}#{n}")
            request = self._request(run, job_id, provider, issued.payment)
            self.store.set_attempt_request(record.id, n, request.model_dump(mode="json"), price_wei=price)
            try:
                return await self._send(run, n, offer, request, price, issued)
            except _StaleVoucher as stale:
                if retries <= 0:
                    raise _Failure("unpaid", stale.message, provider_fault=False) from None
                retries -= 1
                run.log.info("voucher stale; resynchronising", extra={"attempt": n, "provider": provider})
                await self.payer.resync(issued, stale.message, timeout=self._attempt_timeout(run))

    async def _attempt_escrow(self, run: _Run, n: int, offer: Offer) -> _Delivered:
        record = run.record
        provider = offer.provider
        spec = run.spec
        assert spec is not None
        cap = run.reserved if spec.max_price_wei is None else min(spec.max_price_wei, run.reserved)
        quote_request = QuoteRequest(client=self.payer.address, workload=record.workload, input=record.input)
        try:
            quote = await self.runner.request_quote(
                offer, quote_request, timeout=min(self.settings.quote_timeout_s, self._attempt_timeout(run))
            )
        except JobClientError as err:
            raise self._classify(err, "quote") from err
        except Exception as err:
            raise _Failure("runner_error", f"{type(err).__name__}: {err}", provider_fault=False) from err
        parsed = parse_input(record.workload, record.input)
        try:
            self.payer.check_quote(
                quote,
                provider,
                spec_hash=spec_hash(record.workload, parsed),
                max_price_wei=cap,
                max_duration_s=self.settings.escrow_max_duration_s,
            )
        except QuoteRejectedError as err:
            raise _Failure("bad_quote", str(err)) from err
        escrow_id = quote.terms.job_id
        price = quote.terms.price
        try:
            await asyncio.to_thread(self.payer.open_escrow, quote, record.id, n)
        except EscrowOpenError as err:
            raise _Failure("escrow_not_opened", str(err), provider_fault=False) from err
        request = self._request(run, escrow_id, provider, EscrowPayment())
        self.store.set_attempt_request(
            record.id, n, request.model_dump(mode="json"), attempt_job_id=_hex(escrow_id), price_wei=price
        )
        try:
            return await self._send(run, n, offer, request, price, None)
        except _Failure as failure:
            if failure.rejected is not None:
                self.payer.escrow_rejected(
                    _hex(escrow_id), failure.rejected.result.receipt.result_hash, failure.message
                )
            else:
                self.payer.escrow_failed(_hex(escrow_id), f"{failure.code}: {failure.message}")
            raise
        except asyncio.CancelledError:
            self.payer.escrow_failed(_hex(escrow_id), "cancelled")
            raise

    async def _send(
        self, run: _Run, n: int, offer: Offer, request: JobRequest, price: int, issued: IssuedVoucher | None
    ) -> _Delivered:
        """Send one request and verify its result; settles the voucher's fate either way."""
        provider = offer.provider
        try:
            result = await self.runner.run_job(offer, request, timeout=self._attempt_timeout(run))
        except JobRejectedError as err:
            if issued is not None:
                if is_stale_voucher(err.code, err.message):
                    self.payer.settle_voucher(issued, VoucherOutcome.REFUSED)
                    raise _StaleVoucher(err.message) from err
                outcome = VoucherOutcome.UNCERTAIN if err.code in _MAYBE_ACCEPTED else VoucherOutcome.REFUSED
                self.payer.settle_voucher(issued, outcome)
            raise self._classify(err, "run") from err
        except JobClientError as err:
            if issued is not None:
                self.payer.settle_voucher(issued, VoucherOutcome.UNCERTAIN)
            raise self._classify(err, "run") from err
        except asyncio.CancelledError:
            if issued is not None:
                self.payer.settle_voucher(issued, VoucherOutcome.UNCERTAIN)
            raise
        except Exception as err:
            if issued is not None:
                self.payer.settle_voucher(issued, VoucherOutcome.UNCERTAIN)
            raise _Failure("runner_error", f"{type(err).__name__}: {err}", provider_fault=False) from err
        started = time.perf_counter()
        try:
            check = await asyncio.to_thread(self._check, result, request, run.expected)
        except InvalidResponseError as err:
            if issued is not None:
                self.payer.settle_voucher(issued, VoucherOutcome.ACCEPTED)
            raise _Failure("invalid_result", str(err)) from err
        verify_s = time.perf_counter() - started
        if check is not None and not check.passed:
            # The node delivered (and kept its voucher): the operator's loss, recovered from the slash.
            if issued is not None:
                self.payer.settle_voucher(issued, VoucherOutcome.ACCEPTED)
            raise _Failure(
                "verification_failed",
                f"{check.method}: {check.detail}",
                rejected=_Rejection(check, verify_s, result, request),
            )
        return _Delivered(result, request, provider, price, n, verify_s, issued, check)

    def _check(
        self, result: JobResult, request: JobRequest, expected: Mapping[str, Any] | None
    ) -> CheckResult | None:
        """The result's signature and fit (``check_result``), then the workload's own check, or for a canary
        the comparison with the committed answer and Freivalds (blocking)."""
        check_result(result, request, self.payer.domains)
        if expected is not None:
            return check_canary(request.input, result.output, expected, rounds=self.policy.freivalds_rounds)
        return check_result_json(
            request.workload, request.input, result.output, rounds=self.policy.freivalds_rounds
        )

    def _classify(self, err: JobClientError, what: str) -> _Failure:
        if isinstance(err, JobRejectedError):
            if err.code is ErrorCode.UNPAID:
                # A payment refusal is about the gateway's account (its deposit, or what it owes the node
                # unredeemed), not the provider's reliability; an exposure limit still rests the provider.
                return _Failure(
                    err.code.value,
                    err.message,
                    provider_fault="insufficient_deposit" not in err.message,
                    reliability=False,
                )
            return _Failure(err.code.value, err.message, provider_fault=err.code not in _GATEWAY_FAULTS)
        if isinstance(err, JobTimeoutError):
            return _Failure("timeout", f"no {what} answer within {err.timeout} s")
        if isinstance(err, JobTransportError):
            return _Failure("transport", err.problem)
        if isinstance(err, InvalidResponseError):
            return _Failure("invalid_result", err.problem)
        return _Failure("transport", str(err))

    def _attempt_failed(self, run: _Run, n: int, provider: Address, region: str, failure: _Failure) -> None:
        run.failed.add(provider)
        run.used.discard(provider)
        run.last_error = (failure.code, failure.message)
        if failure.provider_fault:
            self.health.record(provider, region, False)
        if failure.reliability and self.observations is not None:
            try:
                self.observations.record_observation(provider, False)
            except Exception as err:  # noqa: BLE001 - the record is advisory
                run.log.warning("cannot record an observation", extra={"error": str(err)})
        dark = region in self.health.dark_regions()
        failover = None
        if not failure.final and run.attempts < self._max_attempts(run):
            failover = {"from": provider, "region": region, "code": failure.code, "region_dark": dark}
        rejected = failure.rejected
        if rejected is not None:
            self._rejected(run, n, provider, failure.message, rejected, failover)
            return
        self.store.end_attempt(
            run.record.id, n, code=failure.code, message=failure.message, failover=failover
        )
        run.log.warning(
            "attempt failed",
            extra={
                "attempt": n,
                "provider": provider,
                "region": region,
                "code": failure.code,
                "error": failure.message[:300],
                "region_dark": dark,
            },
        )

    def _max_attempts(self, run: _Run) -> int:
        return run.max_attempts or self.settings.max_attempts

    def _rejected(
        self,
        run: _Run,
        n: int,
        provider: Address,
        message: str,
        rejected: _Rejection,
        failover: Mapping[str, Any] | None,
    ) -> None:
        """Record a rejected result (attempt ``rejected``, metrics); file the evidence in the background."""
        record = run.record
        check = rejected.check
        if self.policy.quarantine_s > 0:
            # A wrong answer is deliberate or a broken machine, not bad luck: no new work for a while.
            self._quarantine[provider] = time.monotonic() + self.policy.quarantine_s
        self.store.reject_attempt(
            record.id,
            n,
            code="verification_failed",
            message=message,
            verification=check_json(check, rejected.verify_s),
            failover=None if failover is None else {**failover, "code": "verification_failed"},
        )
        if self.metrics is not None:
            self.metrics.verified(record.workload, check.method, "failed")
        run.log.warning(
            "result rejected",
            extra={
                "attempt": n,
                "provider": provider,
                "method": check.method,
                "detail": check.detail[:300],
            },
        )
        kind: EvidenceKind = "invalid_result"
        escrow_id = None
        if run.canary is not None and rejected.canary is None:
            rejected = dataclasses.replace(rejected, canary=run.canary)
        if rejected.canary is not None:
            kind = "canary"
        elif isinstance(rejected.request.payment, EscrowPayment):
            kind = "escrow"
            escrow_id = _hex(rejected.request.job_id)
        self._spawn(
            self._file_evidence(record.id, n, kind, record.workload, record.input, rejected, escrow_id),
            f"evidence-{record.id[:10]}-{n}",
        )

    async def _file_evidence(
        self,
        job_id: str,
        n: int,
        kind: EvidenceKind,
        workload: str,
        inp: Mapping[str, Any],
        rejected: _Rejection,
        escrow_id: str | None,
    ) -> None:
        jlog = _JobLog(log, {"job_id": job_id})
        if self.evidence is None:
            outcome = EvidenceOutcome(kind, "skipped", "no verifier configured (verification.verifier_urls)")
        else:
            outcome = await self.evidence.file(
                kind,
                workload=workload,
                inp=inp,
                result=rejected.result,
                canary=rejected.canary,
                escrow_id=escrow_id,
                collected=rejected.collected,
            )
        with contextlib.suppress(JobStoreError):
            self.store.set_evidence(job_id, n, outcome.as_json())
        if self.metrics is not None:
            self.metrics.evidence_filed(kind, outcome.outcome)
        extra = {
            "attempt": n,
            "provider": rejected.result.receipt.provider,
            "kind": kind,
            "outcome": outcome.outcome,
            "detail": outcome.detail[:300],
            "tx": outcome.tx,
            "slashed": outcome.slashed_wei,
        }
        if outcome.outcome in ("proven", "pending", "already_proven"):
            jlog.info("evidence filed", extra=extra)
        elif outcome.outcome == "skipped":
            jlog.info("evidence not filed", extra=extra)
        else:
            jlog.warning("evidence not proven", extra=extra)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run background work (evidence, canaries) in the dispatcher's task group; it must not raise."""
        group = self._group
        if group is None:
            work.close()
            log.warning("background work dropped: the dispatcher is not running", extra={"task": name})
            return

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background work failed", extra={"task": name})

        task = group.create_task(guarded(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_background(self, timeout: float) -> bool:
        """Wait until the background work started so far (evidence, canaries) is done.

        Returns:
            Whether it all finished within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self._background:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._background), timeout=remaining)
        return True

    # --- restart ---------------------------------------------------------------------------------------

    async def _resume_attempt(self, run: _Run) -> _Delivered | None:
        """Re-send the interrupted last attempt's signed request to the same provider."""
        record = run.record
        last = record.attempts[-1]
        n = last.n
        provider = last.provider
        stored = self.store.attempt_request(record.id, n)
        try:
            if stored is None:
                raise _Failure(
                    "interrupted", "the gateway stopped before the request was signed", provider_fault=False
                )
            try:
                request = JobRequest.model_validate(stored)
            except ValidationError as err:
                raise _Failure(
                    "interrupted", f"the stored request is unreadable: {err}", provider_fault=False
                ) from err
            offer = self.market.offer(provider)
            deadline = self._started_at + self.settings.capacity_wait_s
            while offer is None and time.monotonic() < deadline:
                # Just restarted: the provider's offer may not have reached the rebuilt offer book yet.
                await asyncio.sleep(_CAPACITY_POLL_S)
                offer = self.market.offer(provider)
            if offer is None:
                raise _Failure("offer_gone", f"{provider} has no live offer any more")
            issued: IssuedVoucher | None = None
            if isinstance(request.payment, VoucherPayment):
                issued = self.payer.find_voucher(request.payment)
            else:
                escrow_id = _hex(request.job_id)
                state = await asyncio.to_thread(self.payer.reconcile_opening, escrow_id)
                if state != "open":
                    raise _Failure(
                        "escrow_not_opened", f"escrow {escrow_id} is {state}", provider_fault=False
                    )
            if time.time() - request.issued_at > self.settings.resend_max_age_s:
                request = sign_request(request.model_copy(update={"issued_at": _now_s()}), self.payer.signer)
                self.store.set_attempt_request(record.id, n, request.model_dump(mode="json"))
            run.log.info("resending the interrupted attempt", extra={"attempt": n, "provider": provider})
            self.health.begin(provider, last.region)
            try:
                return await self._resend(run, n, offer, request, last.price_wei, issued)
            except _Failure as failure:
                if isinstance(request.payment, EscrowPayment):
                    if failure.rejected is not None:
                        self.payer.escrow_rejected(
                            _hex(request.job_id), failure.rejected.result.receipt.result_hash, failure.message
                        )
                    else:
                        self.payer.escrow_failed(_hex(request.job_id), "failed after a restart")
                raise
        except _Failure as failure:
            self._attempt_failed(run, n, provider, last.region, failure)
            return None

    async def _resend(
        self, run: _Run, n: int, offer: Offer, request: JobRequest, price: int, issued: IssuedVoucher | None
    ) -> _Delivered:
        for _ in range(2):
            try:
                return await self._send(run, n, offer, request, price, issued)
            except _StaleVoucher as stale:
                raise _Failure("unpaid", stale.message, provider_fault=False) from None
            except _Failure as failure:
                if failure.code == ErrorCode.DUPLICATE.value and issued is not None:
                    # The node knows this job id: it accepted it (and its voucher) before.
                    self.payer.settle_voucher(issued, VoucherOutcome.ACCEPTED)
                if failure.code != ErrorCode.EXPIRED.value:
                    raise
                request = sign_request(request.model_copy(update={"issued_at": _now_s()}), self.payer.signer)
                self.store.set_attempt_request(run.record.id, n, request.model_dump(mode="json"))
                run.log.info("the node refused the old request as expired; re-signed", extra={"attempt": n})
                if issued is not None:
                    # EXPIRED is checked before the payment: the voucher's fate is unchanged.
                    self.payer.settle_voucher(issued, VoucherOutcome.UNCERTAIN)
        raise _Failure(
            "expired", "the provider refused the re-signed request as expired", provider_fault=False
        )

    # --- endings ---------------------------------------------------------------------------------------

    def _settle_delivered(self, run: _Run, delivered: _Delivered) -> None:
        """A delivered, verified result is kept: its payment is final, the provider did well."""
        if delivered.issued is not None:
            self.payer.settle_voucher(delivered.issued, VoucherOutcome.ACCEPTED)
        elif isinstance(delivered.request.payment, EscrowPayment):
            self.payer.escrow_delivered(_hex(delivered.request.job_id), delivered.result.receipt.result_hash)
        region = delivered.region or self._region_of(run.record, delivered.n)
        self.health.record(delivered.provider, region, True)
        if self.observations is not None:
            try:
                self.observations.record_observation(delivered.provider, True)
            except Exception as err:  # noqa: BLE001 - the record is advisory
                run.log.warning("cannot record an observation", extra={"error": str(err)})

    async def _succeed(
        self,
        run: _Run,
        delivered: _Delivered,
        agreeing: Sequence[_Delivered] = (),
        verification: CheckResult | None = None,
        verify_s: float | None = None,
    ) -> None:
        """The job succeeds with ``delivered``'s result (``agreeing``: the other copies of a redundant run,
        paid and charged too; ``verification``: the check that decided, default ``delivered.check``)."""
        record = run.record
        result = delivered.result
        settle_started = time.perf_counter()
        for copy in (delivered, *agreeing):
            self._settle_delivered(run, copy)
        price = delivered.price + sum(copy.price for copy in agreeing)
        check = verification if verification is not None else delivered.check
        spent_verifying = delivered.verify_s if verify_s is None else verify_s
        if check is None:
            check = CheckResult(
                True,
                "redundant",
                f"no cheap check for {record.workload}; redundancy 1: the signed receipt and the result's "
                "fit were checked (raise verification.embed_redundancy or the job's redundancy to compare)",
            )
            method = "none"
        else:
            method = check.method
        verification_json = check_json(check, spent_verifying)
        if method == "none":
            verification_json["method"] = "none"
        for copy in (delivered, *agreeing):
            with contextlib.suppress(JobStoreError):
                self.store.set_verification(
                    record.id,
                    copy.n,
                    verification_json if copy.check is None else check_json(copy.check, copy.verify_s),
                )
        if self.metrics is not None:
            self.metrics.verified(record.workload, method, "unchecked" if method == "none" else "passed")
        if record.id in self._cancelled:
            run.log.info(
                "result arrived after the job was cancelled; not charged",
                extra={"provider": delivered.provider},
            )
            return
        queue_ms = result.queue_ms
        compute_ms = result.compute_ms
        run.settle_s += time.perf_counter() - settle_started
        total_ms = (time.monotonic() - run.started) * 1000
        timing = {
            "match": run.match_s * 1000,
            "queue": queue_ms,
            "compute": compute_ms,
            "verify": spent_verifying * 1000,
            "settle": run.settle_s * 1000,
        }
        timing["dispatch"] = max(total_ms - sum(timing.values()), 0.0)
        timing["total"] = total_ms
        timing = {k: round(v, 3) for k, v in timing.items()}
        internal = record.kind != "client"
        try:
            self.store.succeed(
                record.id,
                delivered.n,
                result=result.output,
                receipt=receipt_json(result, self.payer.domains),
                provider=delivered.provider,
                timing_ms=timing,
                price_wei=price,
                charged_wei=0 if internal else price,
                verification=verification_json,
                agreeing=tuple(copy.n for copy in agreeing),
            )
        except JobStoreError:
            run.log.info("the job finished elsewhere (cancelled) before its result was stored; not charged")
            return
        if not internal:
            self._charge(run, price)
        run.log.info(
            "job succeeded",
            extra={
                "provider": delivered.provider,
                "attempt": delivered.n,
                "copies": 1 + len(agreeing),
                "price": price,
                "verification": method,
                "timing_ms": json.dumps(timing),
            },
        )
        if internal:
            return
        if record.use_cache and self.cache is not None:
            try:
                self.cache.put(record.input, result, delivered.provider)
            except (UnverifiedResultError, WorkloadSpecError) as err:
                run.log.warning("result not cached", extra={"error": str(err)})
        if (
            record.workload == "matmul"
            and self.verifiers is not None
            and canary_due(record.id, self.policy.canary_rate)
        ):
            self._spawn(
                self._canary(record, delivered.provider), f"canary-{record.id[:10]}-{delivered.provider[:8]}"
            )

    def _charge(self, run: _Run, amount: int) -> None:
        try:
            self.spend.charge(run.record.id, amount)
            self.store.set_ledger(run.record.id, "charged")
        except Exception as err:  # noqa: BLE001 - finished at the next start (the ledger stays reserved)
            run.log.error("cannot charge the client", extra={"error": str(err), "amount": amount})

    def _region_of(self, record: JobRecord, n: int) -> str:
        rows = self.store.read("SELECT region FROM attempts WHERE job_id = ? AND n = ?", (record.id, n))
        return str(rows[0]["region"]) if rows else ""

    def _fail(self, run: _Run, code: str, message: str) -> None:
        total_ms = round((time.monotonic() - run.started) * 1000, 3)
        try:
            self.store.fail(
                run.record.id,
                code=code,
                message=message,
                timing_ms={"match": round(run.match_s * 1000, 3), "total": total_ms},
            )
        except JobStoreError:
            return  # cancelled meanwhile
        self._release(run.record.id)
        run.log.warning("job failed", extra={"code": code, "error": message[:300]})


class _StaleVoucher(Exception):  # noqa: N818 - internal signal
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)
