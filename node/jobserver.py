"""The provider's side of the job protocol ``/proxima/job/1.0.0``: quotes, admission, execution, receipts.

One request and one answer per stream. The server reads one frame under a time and size limit, decodes and
validates it (schema, client signature, freshness, workload, input), and answers:

* a :class:`~proxima.sdk.jobs.QuoteRequest` with signed escrow terms (:class:`~proxima.sdk.jobs.Quote`);
* a :class:`~proxima.sdk.jobs.JobRequest` with the result and a signed receipt, once the payment is checked
  (a funded escrow job, or a voucher that the client's deposit covers), the job recorded in the store, run
  in a worker thread under the concurrency limit and its result stored.

Admission is bounded: at most ``max_concurrency`` jobs run and ``max_queue`` wait; a request beyond that is
answered ``busy`` at once, with a ``retry_after`` estimate. Every refusal or failure is a typed
:class:`~proxima.sdk.jobs.JobFailure`; unexpected errors are logged with their traceback and answered
``internal`` without internals. The stream is always closed (reset when the exchange broke), and the server
keeps serving.

Jobs run in tasks of the server's own nursery (:meth:`JobServer.run`), not of the stream's: a client that
disconnects or times out does not stop a paid job, whose result is stored and served again to a retry with
the same job id (:attr:`~proxima.sdk.jobs.JobRequest.job_id`). A job id runs once, ever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio
from eth_utils.crypto import keccak
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from pydantic import BaseModel

from proxima.node.errors import NodeError
from proxima.node.faults import FaultInjector
from proxima.node.metrics import NodeMetrics
from proxima.node.payments import PaymentChecker, PaymentError
from proxima.node.store import AcceptedJob, DuplicateJobError, JobState, NodeStore
from proxima.node.workloads.base import (
    InvalidInputError,
    Workload,
    WorkloadExecutionError,
    WorkloadUnavailableError,
)
from proxima.sdk.bindings import JobEscrow
from proxima.sdk.eip712 import JobReceipt, JobTerms, Signer
from proxima.sdk.errors import SignatureError
from proxima.sdk.jobs import (
    DEFAULT_MAX_REQUEST_BYTES,
    Domains,
    ErrorCode,
    EscrowPayment,
    JobFailure,
    JobRequest,
    JobResult,
    MalformedMessageError,
    QuoteRequest,
    decode_request,
    encode,
    sign_quote,
    verify_request,
)
from proxima.sdk.p2p import JOB_PROTOCOL, Peer
from proxima.sdk.peerid import peer_id_to_base58
from proxima.sdk.wire import FrameIncompleteError, FrameTooLargeError, read_frame, write_frame
from proxima.sdk.workloads import WorkloadSpecError, canonical_json

if TYPE_CHECKING:  # trio's own annotations are shadowed by the trio-typing stubs that libp2p installs
    from trio_typing import TaskStatus

__all__ = [
    "JobLimits",
    "JobLoad",
    "JobServer",
    "JobServerError",
    "QuotePolicy",
    "RequestRefusedError",
]

log = logging.getLogger(__name__)

_BPS: Final = 10_000
_CLOSE_TIMEOUT: Final = 2.0
_STREAM_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_MIN_RETRY_AFTER: Final = 0.05
_MAX_RETRY_AFTER: Final = 60.0


class JobServerError(NodeError):
    """Root of the job server's own errors (configuration)."""


class RequestRefusedError(NodeError):
    """A request is refused with a typed failure (the server answers it; it never escapes the handler).

    Args:
        code: Why.
        message: What is wrong, for the client.
        job_id: The job, when known.
        retry_after: For ``busy`` and ``unavailable``: seconds after which a retry may succeed.
    """

    def __init__(
        self, code: ErrorCode, message: str, job_id: bytes | None = None, retry_after: float | None = None
    ) -> None:
        self.failure = JobFailure.of(code, message, job_id, retry_after)
        super().__init__(f"{code.value}: {message}")


@dataclass(frozen=True)
class JobLimits:
    """How much the server takes on.

    Attributes:
        max_request_bytes: Longest request frame read; a longer one is answered ``too_large`` unread.
        max_concurrency: Jobs running at once (worker threads).
        max_queue: Jobs admitted and waiting for a slot; beyond running + queued, requests get ``busy``.
        max_streams: Streams handled at once (reading, validating, waiting for their job); beyond it a new
            stream is answered ``busy`` without being read.
        read_timeout: Seconds a client has to send its whole request.
        write_timeout: Seconds a client has to take the answer.
        job_timeout: Seconds a client waits for its job (queue and compute). When it passes, the client is
            answered ``unavailable``; the job goes on and a retry with the same id gets its result.
        max_request_age: Seconds a request's ``issued_at`` may be in the past.
        max_clock_skew: Seconds it may be in the future.
        chain_concurrency: Payment checks (chain reads) at once.
        voucher_reorder_wait: Seconds a voucher that skips ahead of the client's latest accepted one waits
            for the missing ones. A client with several jobs in flight signs its cumulative vouchers in
            order, but their requests travel on separate streams and can arrive out of order; without this
            wait the later voucher would be refused as stale. After the wait the voucher is checked as is.
    """

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrency: int = 1
    max_queue: int = 8
    max_streams: int = 256
    read_timeout: float = 10.0
    write_timeout: float = 60.0
    job_timeout: float = 300.0
    max_request_age: int = 300
    max_clock_skew: int = 60
    chain_concurrency: int = 4
    voucher_reorder_wait: float = 2.0

    def __post_init__(self) -> None:
        positive = {
            "max_request_bytes": self.max_request_bytes,
            "max_concurrency": self.max_concurrency,
            "max_streams": self.max_streams,
            "read_timeout": self.read_timeout,
            "write_timeout": self.write_timeout,
            "job_timeout": self.job_timeout,
            "max_request_age": self.max_request_age,
            "chain_concurrency": self.chain_concurrency,
        }
        for name, value in positive.items():
            if not value > 0:
                raise JobServerError(f"JobLimits.{name} must be > 0, got {value!r}")
        for name, value in {
            "max_queue": self.max_queue,
            "max_clock_skew": self.max_clock_skew,
            "voucher_reorder_wait": self.voucher_reorder_wait,
        }.items():
            if value < 0:
                raise JobServerError(f"JobLimits.{name} must be >= 0, got {value!r}")
        if self.max_streams <= self.max_concurrency + self.max_queue:
            raise JobServerError(
                f"JobLimits.max_streams ({self.max_streams}) must exceed max_concurrency + max_queue "
                f"({self.max_concurrency + self.max_queue}): every admitted job holds a stream"
            )


@dataclass(frozen=True)
class QuotePolicy:
    """The escrow terms a node offers.

    A quote is valid for ``quote_ttl`` seconds (``accept_by``); the job must then be delivered within
    ``job_timeout + delivery_margin`` after the last moment it can be opened (``delivery_deadline``), which
    leaves time to run it and commit its result on chain.

    Attributes:
        quote_ttl: Seconds the client has to open the job on chain.
        delivery_margin: Seconds beyond the job timeout for committing the result.
        challenge_window: Seconds the client has to dispute a committed result.
        slash_bps: Stake the node puts at risk if it does not deliver, in basis points of the price.
    """

    quote_ttl: int = 120
    delivery_margin: int = 300
    challenge_window: int = 600
    slash_bps: int = _BPS

    def __post_init__(self) -> None:
        for name in ("quote_ttl", "delivery_margin", "challenge_window"):
            if getattr(self, name) <= 0:
                raise JobServerError(f"QuotePolicy.{name} must be > 0, got {getattr(self, name)!r}")
        if self.slash_bps < 0:
            raise JobServerError(f"QuotePolicy.slash_bps must be >= 0, got {self.slash_bps}")

    def check(self, escrow: JobEscrow, job_timeout: float) -> None:
        """Check these terms against the escrow contract's limits, so that clients can open every quote.

        Raises:
            JobServerError: If the challenge window is outside the contract's range or the delivery
                deadline would be further than ``maxJobDuration``.
        """
        low, high = escrow.parameter("minChallengeWindow"), escrow.parameter("maxChallengeWindow")
        if not low <= self.challenge_window <= high:
            raise JobServerError(
                f"QuotePolicy.challenge_window ({self.challenge_window}s) is outside the escrow's range "
                f"[{low}, {high}]"
            )
        longest = escrow.parameter("maxJobDuration")
        duration = self.duration(job_timeout)
        if duration > longest:
            raise JobServerError(
                f"quotes would be due {duration}s after they are made (quote_ttl + job_timeout + "
                f"delivery_margin), more than the escrow's maxJobDuration ({longest}s)"
            )

    def duration(self, job_timeout: float) -> int:
        """Seconds from a quote to its delivery deadline."""
        return self.quote_ttl + int(job_timeout) + 1 + self.delivery_margin


@dataclass(frozen=True)
class JobLoad:
    """What the server is doing now (for offers' free capacity, status displays and tests).

    Attributes:
        running: Jobs computing.
        queued: Jobs admitted and waiting for a slot.
        streams: Streams being handled.
        free: Jobs that can be admitted before requests get ``busy``.
        draining: Whether the server stopped admitting jobs.
    """

    running: int
    queued: int
    streams: int
    free: int
    draining: bool


@dataclass
class _Job:
    """An admitted job between acceptance and its stored result."""

    job: AcceptedJob
    workload: Workload
    inp: BaseModel
    admitted_at: float = field(default_factory=time.perf_counter)
    done: trio.Event = field(default_factory=trio.Event)
    payload: bytes | None = None
    failure: JobFailure | None = None


@dataclass(frozen=True)
class _Validated:
    request: JobRequest
    workload: Workload
    inp: BaseModel
    spec_hash: bytes
    price: int


class JobServer:
    """Serves ``/proxima/job/1.0.0`` on a peer.

    Args:
        peer: The node's running libp2p peer.
        workloads: The workloads served, by name (loaded or loading lazily).
        payments: Checks escrow jobs and vouchers (and records vouchers with their job).
        store: The node's store: accepted jobs, their inputs, results and receipts.
        signer: The provider's key (quotes and receipts); its address is the provider's.
        domains: The deployment's signing domains.
        limits: Admission and time limits.
        metrics: Optional metrics sink.
        prices: Wei per billing unit, by workload; every workload served needs a positive price.
        quotes: Escrow terms policy.
        clock: Wall-clock time (unix seconds).
        faults: Fault injection (demos and tests): falsifies a share of matmul results, receipts signed for
            the falsified output, as a dishonest node would.

    Raises:
        JobServerError: If a workload has no positive price, or the quote policy does not fit the escrow
            contract's limits (read from the chain).
    """

    def __init__(
        self,
        peer: Peer,
        workloads: Mapping[str, Workload],
        payments: PaymentChecker,
        store: NodeStore,
        signer: Signer,
        domains: Domains,
        limits: JobLimits | None = None,
        metrics: NodeMetrics | None = None,
        prices: Mapping[str, int] | None = None,
        *,
        quotes: QuotePolicy | None = None,
        clock: Callable[[], float] = time.time,
        faults: FaultInjector | None = None,
    ) -> None:
        prices = dict(prices or {})
        for name in workloads:
            price = prices.get(name)
            if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
                raise JobServerError(f"workload {name!r} has no positive price per unit (got {price!r})")
        self.peer = peer
        self.workloads = dict(workloads)
        self.payments = payments
        self.store = store
        self.signer = signer
        self.provider = signer.address
        self.domains = domains
        self.limits = limits or JobLimits()
        self.metrics = metrics
        self.prices = prices
        self.quotes = quotes or QuotePolicy()
        self._clock = clock
        self.faults = faults if faults is not None and faults.active else None
        self.quotes.check(payments.contracts.escrow, self.limits.job_timeout)
        self._compute = trio.CapacityLimiter(self.limits.max_concurrency)
        self._chain = trio.CapacityLimiter(self.limits.chain_concurrency)
        self._nursery: trio.Nursery | None = None
        self._jobs: dict[bytes, _Job] = {}
        self._voucher_turns: dict[str, trio.Event] = {}
        self._voucher_jobs: dict[str, int] = {}  # per client: the highest voucher count accepted or redeemed
        self._admitted = 0
        self._running = 0
        self._streams = 0
        self._draining = False
        self._idle = trio.Event()
        self._idle.set()
        self._mean_compute = 1.0

    def __repr__(self) -> str:
        return f"JobServer({self.provider}, workloads={sorted(self.workloads)})"

    def load(self) -> JobLoad:
        """Jobs running and waiting, streams open, room left."""
        capacity = self.limits.max_concurrency + self.limits.max_queue
        return JobLoad(
            running=self._running,
            queued=self._admitted - self._running,
            streams=self._streams,
            free=max(capacity - self._admitted, 0),
            draining=self._draining,
        )

    # --- life cycle ----------------------------------------------------------------------------------

    def register(self) -> None:
        """Set the stream handler of ``/proxima/job/1.0.0`` on the peer's host.

        Requests are answered ``unavailable`` until :meth:`run` is running.
        """
        self.peer.host.set_stream_handler(JOB_PROTOCOL, self._handle)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled: register the handler, re-run unfinished jobs, own the jobs' tasks.

        Use with ``await nursery.start(server.run)``; it is ready when that returns. On cancellation the
        running jobs' worker threads are waited for (they cannot be interrupted) and their results stored.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.register()
            try:
                resumed = await self.resume_unfinished()
                log.info(
                    "job server ready",
                    extra={
                        "provider": self.provider,
                        "workloads": sorted(self.workloads),
                        "resumed": resumed,
                    },
                )
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._draining = True

    async def drain(self, timeout: float) -> bool:
        """Stop admitting jobs (new requests get ``unavailable``) and wait for admitted ones to finish.

        Args:
            timeout: Seconds to wait.

        Returns:
            Whether every admitted job finished in time.
        """
        self._draining = True
        log.info("job server draining", extra={"admitted": self._admitted, "timeout_s": timeout})
        with trio.move_on_after(timeout):
            await self._idle.wait()
        drained = self._admitted == 0
        log.info(
            "job server drained" if drained else "job server drain timed out", extra={"left": self._admitted}
        )
        return drained

    async def resume_unfinished(self) -> int:
        """Run again the jobs the store holds as accepted or running (a crash interrupted them).

        Their results are stored for retrieval and, for escrow jobs, for the commit on chain. Jobs of a
        workload no longer served, or whose stored input no longer parses, are marked failed.

        Returns:
            How many jobs were started.

        Raises:
            JobServerError: If the server is not running (:meth:`run`).
        """
        if self._nursery is None:
            raise JobServerError("resume_unfinished needs the server running (JobServer.run)")
        started = 0
        for job in await trio.to_thread.run_sync(self.store.unfinished_jobs):
            if job.job_id in self._jobs:
                continue
            workload = self.workloads.get(job.workload)
            try:
                if workload is None:
                    raise InvalidInputError(job.workload, f"workload {job.workload!r} is no longer served")
                inp = workload.parse(json.loads(job.input))
            except (InvalidInputError, ValueError) as err:
                await trio.to_thread.run_sync(self.store.fail_job, job.job_id, f"cannot resume: {err}")
                continue
            self._admit()
            self._start(_Job(job, workload, inp))
            started += 1
            log.info("job resumed", extra={"job_id": _hex(job.job_id), "workload": job.workload})
        return started

    # --- stream handling -----------------------------------------------------------------------------

    async def _handle(self, stream: INetStream) -> None:
        started = time.perf_counter()
        remote = _remote(stream)
        kind = "unknown"
        workload = ""
        reset = False
        try:
            if self._streams >= self.limits.max_streams:
                kind = "stream"
                raise RequestRefusedError(
                    ErrorCode.BUSY,
                    f"this node handles {self.limits.max_streams} streams at once",
                    retry_after=self._retry_after(),
                )
            self._streams += 1
            try:
                data = await self._read(stream)
                request = await self._decode(data)
                kind, workload = request.kind, request.workload
                payload = await (
                    self._quote(request) if isinstance(request, QuoteRequest) else self._run(request)
                )
            finally:
                self._streams -= 1
            outcome = "ok"
        except RequestRefusedError as err:
            payload = encode(err.failure)
            outcome = err.failure.code.value
            log.info(
                "request refused",
                extra={
                    "peer": remote,
                    "kind": kind,
                    "code": outcome,
                    "reason": err.failure.message,
                    "job_id": _hex(err.failure.job_id),
                },
            )
        except _STREAM_ERRORS as err:
            log.info("job stream broke", extra={"peer": remote, "kind": kind, "error": repr(err)})
            await _finish(stream, reset=True)
            return
        except Exception:
            log.exception("job request failed", extra={"peer": remote, "kind": kind})
            payload = encode(JobFailure.of(ErrorCode.INTERNAL, "the node failed to handle the request"))
            outcome = ErrorCode.INTERNAL.value
        except BaseException:
            await _finish(stream, reset=True)
            raise
        if self.metrics is not None and outcome != "ok":
            self.metrics.job_rejected(workload, outcome)
        try:
            with trio.fail_after(self.limits.write_timeout):
                await write_frame(stream, payload)
        except (trio.TooSlowError, *_STREAM_ERRORS) as err:
            log.info("answer not delivered", extra={"peer": remote, "kind": kind, "error": repr(err)})
            reset = True
        except BaseException:
            await _finish(stream, reset=True)
            raise
        await _finish(stream, reset=reset)
        log.debug(
            "request answered",
            extra={
                "peer": remote,
                "kind": kind,
                "outcome": outcome,
                "bytes": len(payload),
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )

    async def _read(self, stream: INetStream) -> bytes:
        limits = self.limits
        try:
            with trio.fail_after(limits.read_timeout):
                return await read_frame(stream, limits.max_request_bytes)
        except FrameTooLargeError as err:
            raise RequestRefusedError(
                ErrorCode.TOO_LARGE,
                f"the request is {err.length} bytes; this node accepts at most {err.limit} bytes",
            ) from err
        except FrameIncompleteError as err:
            raise RequestRefusedError(ErrorCode.MALFORMED, f"incomplete request: {err}") from err
        except trio.TooSlowError as err:
            raise RequestRefusedError(
                ErrorCode.MALFORMED, f"no complete request within {limits.read_timeout} s"
            ) from err

    async def _decode(self, data: bytes) -> QuoteRequest | JobRequest:
        try:
            return await trio.to_thread.run_sync(decode_request, data)
        except MalformedMessageError as err:
            raise RequestRefusedError(ErrorCode.MALFORMED, err.problem) from err

    # --- quotes --------------------------------------------------------------------------------------

    async def _quote(self, request: QuoteRequest) -> bytes:
        if self._draining or self._nursery is None:
            raise RequestRefusedError(ErrorCode.UNAVAILABLE, "this node is not taking jobs now")
        workload = self._workload(request.workload, None)
        return await trio.to_thread.run_sync(self._sign_quote, request, workload)

    def _sign_quote(self, request: QuoteRequest, workload: Workload) -> bytes:
        _, spec, units = _prepare(workload, request.input, None)
        price = units * self.prices[workload.name]
        now = int(self._clock())
        nonce = secrets.token_bytes(32)
        terms = JobTerms(
            job_id=keccak(_address_bytes(self.provider) + _address_bytes(request.client) + spec + nonce),
            client=request.client,
            provider=self.provider,
            price=price,
            slash_amount=price * self.quotes.slash_bps // _BPS,
            spec_hash=spec,
            accept_by=now + self.quotes.quote_ttl,
            delivery_deadline=now + self.quotes.duration(self.limits.job_timeout),
            challenge_window=self.quotes.challenge_window,
        )
        quote = sign_quote(terms, units, self.signer, self.domains.escrow_domain)
        log.info(
            "quote signed",
            extra={
                "job_id": _hex(terms.job_id),
                "client": request.client,
                "workload": workload.name,
                "units": units,
                "price": price,
            },
        )
        return encode(quote)

    # --- jobs ----------------------------------------------------------------------------------------

    async def _run(self, request: JobRequest) -> bytes:
        job_id = request.job_id
        if self._draining or self._nursery is None:
            raise RequestRefusedError(
                ErrorCode.UNAVAILABLE, "this node is not taking jobs now", job_id, self._retry_after()
            )
        if request.provider != self.provider:
            raise RequestRefusedError(
                ErrorCode.MALFORMED,
                f"the request is for provider {request.provider}, this is {self.provider}",
                job_id,
            )
        workload = self._workload(request.workload, job_id)
        checked = await trio.to_thread.run_sync(self._validate, request, workload)
        existing = self._jobs.get(job_id)
        if existing is not None:
            return await self._retry(existing, request)
        stored = await trio.to_thread.run_sync(self.store.job, job_id)
        if stored is not None:
            return self._stored_result(stored.job, stored.state, stored.output, stored.error, request)
        if self._admitted >= self.limits.max_concurrency + self.limits.max_queue:
            raise RequestRefusedError(
                ErrorCode.BUSY,
                f"{self._admitted - self._running} jobs waiting (queue full), {self._running} running",
                job_id,
                self._retry_after(),
            )
        self._admit()
        try:
            job = await self._accept(checked)
        except BaseException:
            self._release()
            raise
        entry = _Job(job, workload, checked.inp)
        self._start(entry)
        return await self._wait(entry)

    def _workload(self, name: str, job_id: bytes | None) -> Workload:
        workload = self.workloads.get(name)
        if workload is None:
            raise RequestRefusedError(
                ErrorCode.UNKNOWN_WORKLOAD,
                f"this node does not serve {name!r}; it serves {', '.join(sorted(self.workloads))}",
                job_id,
            )
        return workload

    def _validate(self, request: JobRequest, workload: Workload) -> _Validated:
        """Signature, freshness, input and price (in a worker thread: hashing and parsing take CPU)."""
        job_id = request.job_id
        try:
            verify_request(request)
        except SignatureError as err:
            raise RequestRefusedError(ErrorCode.BAD_SIGNATURE, str(err), job_id) from err
        now = self._clock()
        age = now - request.issued_at
        if age > self.limits.max_request_age:
            raise RequestRefusedError(
                ErrorCode.EXPIRED,
                f"the request was issued {age:.0f}s ago; this node accepts requests up to "
                f"{self.limits.max_request_age}s old",
                job_id,
            )
        if -age > self.limits.max_clock_skew:
            raise RequestRefusedError(
                ErrorCode.EXPIRED,
                f"the request is issued {-age:.0f}s in the future "
                f"(skew allowed: {self.limits.max_clock_skew}s)",
                job_id,
            )
        inp, spec, units = _prepare(workload, request.input, job_id)
        return _Validated(request, workload, inp, spec, units * self.prices[workload.name])

    async def _accept(self, checked: _Validated) -> AcceptedJob:
        """Check the payment and record the job (a voucher together with its job, atomically)."""
        request = checked.request
        job_id = request.job_id
        job_input = canonical_json(request.input)
        try:
            if isinstance(request.payment, EscrowPayment):
                deadline = await trio.to_thread.run_sync(self._check_escrow, checked, limiter=self._chain)
                job = AcceptedJob(
                    job_id=job_id,
                    client=request.client,
                    workload=checked.workload.name,
                    payment="escrow",
                    price=checked.price,
                    spec_hash=checked.spec_hash,
                    input=job_input,
                    delivery_deadline=deadline,
                )
                await trio.to_thread.run_sync(self.store.accept_job, job)
            else:
                try:
                    signed = request.payment.signed()
                except SignatureError as err:
                    raise RequestRefusedError(
                        ErrorCode.UNPAID, f"the voucher signature is invalid: {err}", job_id
                    ) from err
                job = AcceptedJob(
                    job_id=job_id,
                    client=request.client,
                    workload=checked.workload.name,
                    payment="voucher",
                    price=checked.price,
                    spec_hash=checked.spec_hash,
                    input=job_input,
                    voucher_jobs=signed.message.cumulative_jobs,
                )
                await self._voucher_turn(request.client, signed.message.cumulative_jobs)
                try:
                    await trio.to_thread.run_sync(
                        self.payments.accept_voucher,
                        signed,
                        request.client,
                        checked.price,
                        job,
                        limiter=self._chain,
                    )
                    jobs = signed.message.cumulative_jobs
                    self._voucher_jobs[request.client] = max(self._voucher_jobs.get(request.client, 0), jobs)
                finally:
                    turn = self._voucher_turns.pop(request.client, None)
                    if turn is not None:
                        turn.set()  # wake the client's later vouchers waiting for this one
        except PaymentError as err:
            raise RequestRefusedError(ErrorCode.UNPAID, str(err), job_id) from err
        except DuplicateJobError as err:
            raise RequestRefusedError(ErrorCode.DUPLICATE, str(err), job_id) from err
        return job

    async def _voucher_turn(self, client: str, cumulative_jobs: int) -> None:
        """Wait (at most ``limits.voucher_reorder_wait``) until the client's voucher before this one is in.

        Returns at once when the voucher is the next one (or older: the payment check then refuses it).
        """
        latest = self._voucher_jobs.get(client)
        if latest is None:  # first voucher of this client since the server started: its store record
            latest = await trio.to_thread.run_sync(self._stored_voucher_jobs, client)
            self._voucher_jobs[client] = max(self._voucher_jobs.get(client, 0), latest)
        if cumulative_jobs <= latest + 1:
            return
        with trio.move_on_after(self.limits.voucher_reorder_wait):
            while cumulative_jobs > self._voucher_jobs.get(client, 0) + 1:
                turn = self._voucher_turns.setdefault(client, trio.Event())
                await turn.wait()

    def _stored_voucher_jobs(self, client: str) -> int:
        account = self.store.voucher_account(client)
        if account is None:
            return 0
        latest = account.redeemed_jobs
        if account.latest is not None:
            latest = max(latest, account.latest.message.cumulative_jobs)
        return latest

    def _check_escrow(self, checked: _Validated) -> int:
        request = checked.request
        job = self.payments.check_escrow(request.job_id, request.client, checked.spec_hash, checked.price)
        return job.delivery_deadline

    def _admit(self) -> None:
        self._admitted += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._report_load()

    def _release(self) -> None:
        self._admitted -= 1
        if self._admitted == 0:
            self._idle.set()
        self._report_load()

    def _set_running(self, change: int) -> None:
        self._running += change
        self._report_load()

    def _report_load(self) -> None:
        if self.metrics is not None:
            self.metrics.in_flight.set(self._running)
            self.metrics.queue_depth.set(self._admitted - self._running)

    def _retry_after(self) -> float:
        waiting = max(self._admitted - self.limits.max_concurrency + 1, 1)
        estimate = self._mean_compute * waiting / self.limits.max_concurrency
        return round(min(max(estimate, _MIN_RETRY_AFTER), _MAX_RETRY_AFTER), 3)

    def _start(self, entry: _Job) -> None:
        assert self._nursery is not None  # callers check that the server runs
        self._jobs[entry.job.job_id] = entry
        self._nursery.start_soon(self._execute, entry)

    async def _wait(self, entry: _Job) -> bytes:
        remaining = self.limits.job_timeout - (time.perf_counter() - entry.admitted_at)
        with trio.move_on_after(max(remaining, 0)):
            await entry.done.wait()
        if entry.payload is not None:
            return entry.payload
        if entry.failure is not None:
            raise RequestRefusedError(
                entry.failure.code, entry.failure.message, entry.job.job_id, entry.failure.retry_after
            )
        raise RequestRefusedError(
            ErrorCode.UNAVAILABLE,
            f"the job did not finish within {self.limits.job_timeout} s; it goes on: ask again with the same "
            "job id for its result",
            entry.job.job_id,
            self._retry_after(),
        )

    async def _retry(self, entry: _Job, request: JobRequest) -> bytes:
        """A request for a job that is running here: if it is the same job, wait for it as the first did."""
        if not _same_job(entry.job, request):
            raise RequestRefusedError(
                ErrorCode.DUPLICATE, "a different job with this id is already running", request.job_id
            )
        return await self._wait(entry)

    def _stored_result(
        self, job: AcceptedJob, state: JobState, output: bytes | None, error: str | None, request: JobRequest
    ) -> bytes:
        """A request for a job this node accepted before: its stored result, if it is the same job."""
        job_id = request.job_id
        if not _same_job(job, request):
            raise RequestRefusedError(
                ErrorCode.DUPLICATE, "a different job with this id was accepted before", job_id
            )
        if state is JobState.FAILED:
            raise RequestRefusedError(
                ErrorCode.DUPLICATE, f"this job failed before: {error or 'no reason'}", job_id
            )
        if output is None:
            raise RequestRefusedError(
                ErrorCode.DUPLICATE,
                f"this job was accepted before and is {state.value}; its result is not available here",
                job_id,
                self._retry_after() if state in (JobState.ACCEPTED, JobState.RUNNING) else None,
            )
        log.info("stored result served again", extra={"job_id": _hex(job_id), "state": state.value})
        return output

    async def _execute(self, entry: _Job) -> None:
        job = entry.job
        try:
            entry.payload = await trio.to_thread.run_sync(
                self._compute_and_store, entry, limiter=self._compute
            )
        except (InvalidInputError, WorkloadExecutionError, WorkloadUnavailableError) as err:
            code = ErrorCode.INVALID_INPUT if isinstance(err, InvalidInputError) else ErrorCode.INTERNAL
            message = str(err) if code is ErrorCode.INVALID_INPUT else f"the {job.workload} workload failed"
            entry.failure = JobFailure.of(code, message, job.job_id)
            log.warning("job failed", extra={"job_id": _hex(job.job_id), "error": str(err)})
            await self._fail(job, str(err))
        except Exception:
            log.exception("job crashed", extra={"job_id": _hex(job.job_id), "workload": job.workload})
            entry.failure = JobFailure.of(ErrorCode.INTERNAL, "the job failed on the node", job.job_id)
            await self._fail(job, "internal error (see the node log)")
        finally:
            self._jobs.pop(job.job_id, None)
            entry.done.set()
            self._release()

    async def _fail(self, job: AcceptedJob, reason: str) -> None:
        try:
            await trio.to_thread.run_sync(self.store.fail_job, job.job_id, reason)
        except Exception:
            log.exception("cannot record a failed job", extra={"job_id": _hex(job.job_id)})

    def _compute_and_store(self, entry: _Job) -> bytes:
        """In a worker thread, once a slot is free: execute, hash, sign, store; returns the encoded result."""
        job = entry.job
        trio.from_thread.run_sync(self._set_running, 1)
        try:
            started = time.perf_counter()
            self.store.mark_running(job.job_id)
            output = entry.workload.execute(entry.inp)
            finished = time.perf_counter()
        finally:
            trio.from_thread.run_sync(self._set_running, -1)
        if self.faults is not None:
            output = self.faults.apply(job.workload, job.job_id, output)
        queue_s, compute_s = started - entry.admitted_at, finished - started
        self._mean_compute = 0.8 * self._mean_compute + 0.2 * compute_s
        receipt = JobReceipt(
            job_id=job.job_id,
            provider=self.provider,
            client=job.client,
            result_hash=entry.workload.result_hash(output),
            queue_micros=int(queue_s * 1e6),
            compute_micros=int(compute_s * 1e6),
        )
        signed = receipt.sign(self.signer, self.domains.faults_domain)
        result = JobResult(
            job_id=job.job_id,
            workload=job.workload,
            output=output.model_dump(mode="json", exclude_none=True),
            receipt=receipt,
            signature=signed.signature.to_bytes(),
        )
        payload = encode(result)
        self.store.complete_job(job.job_id, receipt.result_hash, signed.signature.to_bytes(), output=payload)
        if self.metrics is not None:
            self.metrics.job_finished(job.workload, "ok", queue_seconds=queue_s, compute_seconds=compute_s)
            self.metrics.earned(job.payment, job.price)
        log.info(
            "job done",
            extra={
                "job_id": _hex(job.job_id),
                "workload": job.workload,
                "client": job.client,
                "queue_ms": round(queue_s * 1000, 3),
                "compute_ms": round(compute_s * 1000, 3),
                "result_hash": _hex(receipt.result_hash),
            },
        )
        return payload


def _same_job(job: AcceptedJob, request: JobRequest) -> bool:
    return (
        job.client == request.client
        and job.workload == request.workload
        and job.input == canonical_json(request.input)
    )


def _prepare(
    workload: Workload, payload: dict[str, Any], job_id: bytes | None
) -> tuple[BaseModel, bytes, int]:
    """Parse a job's input; returns it with its spec hash and billing units."""
    try:
        inp = workload.parse(payload)
        units = workload.estimate(inp).units
        spec = workload.spec_hash(inp)
    except (InvalidInputError, WorkloadSpecError) as err:
        raise RequestRefusedError(ErrorCode.INVALID_INPUT, str(err), job_id) from err
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise JobServerError(
            f"workload {workload.name!r} estimated {units!r} billing units; at least 1 is needed"
        )
    return inp, spec, units


async def _finish(stream: INetStream, *, reset: bool) -> None:
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(_CLOSE_TIMEOUT),
        contextlib.suppress(*_STREAM_ERRORS),
    ):
        await (stream.reset() if reset else stream.close())


def _address_bytes(address: str) -> bytes:
    return bytes.fromhex(address[2:])


def _remote(stream: INetStream) -> str:
    try:
        return peer_id_to_base58(stream.muxed_conn.peer_id.to_bytes())
    except Exception:  # noqa: BLE001 - only for logs
        return "unknown"


def _hex(data: bytes | None) -> str | None:
    return None if data is None else "0x" + data.hex()
