"""Client side of the job protocol: ask a provider for a quote, run a job, check what comes back.

Each call opens one new stream to the provider (about 4 ms on a live connection), sends one request frame,
reads one response frame and closes the stream. The caller connects to the provider first
(:meth:`proxima.sdk.p2p.Peer.connect`). Everything that comes back is checked before it is returned: a quote
must be signed by the provider for this client and this exact input; a result must carry a receipt signed by
the provider for this job and client, whose result hash is the hash of the output.

Example::

    request = sign_request(JobRequest(job_id=secrets.token_bytes(32), ...), client_signer)
    try:
        result = await run_job(peer, provider_peer_id, request, domains=domains, timeout=30)
    except JobRejectedError as err:
        if err.code is ErrorCode.BUSY: ...   # try a backup provider, or wait err.retry_after
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Final, NoReturn

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from pydantic import BaseModel, ValidationError

from proxima.sdk.errors import SdkError, SignatureError
from proxima.sdk.jobs import (
    DEFAULT_MAX_RESPONSE_BYTES,
    Domains,
    ErrorCode,
    JobFailure,
    JobRequest,
    JobResult,
    Quote,
    QuoteRequest,
    decode_response,
    encode,
    verify_receipt,
)
from proxima.sdk.p2p import JOB_PROTOCOL, Peer
from proxima.sdk.peerid import address_of_peer_id, peer_id_to_base58
from proxima.sdk.wire import WireError, read_frame, write_frame
from proxima.sdk.workloads import WORKLOAD_SCHEMAS, WorkloadSpecError, parse_input, result_hash, spec_hash

__all__ = [
    "InvalidQuoteError",
    "InvalidReceiptError",
    "InvalidResponseError",
    "JobClientError",
    "JobRejectedError",
    "JobTimeoutError",
    "JobTransportError",
    "check_result",
    "request_quote",
    "run_job",
    "send_request",
]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT: Final = 2.0
_TRANSPORT_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class JobClientError(SdkError):
    """Root of the errors of a job request."""


class JobRejectedError(JobClientError):
    """The provider answered with a typed failure.

    Args:
        code: Why (``busy``, ``unpaid``, ``invalid_input``...).
        message: The provider's explanation.
        retry_after: For ``busy``/``unavailable``: seconds after which a retry may succeed.
        job_id: The job, when the provider named it.
    """

    def __init__(
        self, code: ErrorCode, message: str, retry_after: float | None = None, job_id: bytes | None = None
    ) -> None:
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.job_id = job_id
        text = f"provider refused the request ({code.value}): {message}"
        if retry_after is not None:
            text += f" (retry after {retry_after:.3g} s)"
        super().__init__(text)


class JobTransportError(JobClientError):
    """The request could not be delivered or its answer could not be read (no connection, stream closed).

    Args:
        provider: The provider's base58 peer id.
        problem: What went wrong.
    """

    def __init__(self, provider: str, problem: str) -> None:
        self.provider = provider
        self.problem = problem
        super().__init__(f"job exchange with {provider} failed: {problem}")


class JobTimeoutError(JobTransportError, TimeoutError):
    """The provider did not answer in time."""

    def __init__(self, provider: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(provider, f"no answer within {timeout} s")


class InvalidResponseError(JobClientError):
    """The provider's answer is malformed, of the wrong kind, or does not match the request.

    Args:
        provider: The provider (base58 peer id or address).
        problem: What is wrong.
    """

    def __init__(self, provider: str, problem: str) -> None:
        self.provider = provider
        self.problem = problem
        super().__init__(f"invalid answer from {provider}: {problem}")


class InvalidQuoteError(InvalidResponseError):
    """A quote that is not signed by the provider or does not match the request."""


class InvalidReceiptError(InvalidResponseError):
    """A result whose receipt is not the provider's, not for this job, or does not hash the output."""


async def send_request(
    peer: Peer,
    provider_peer_id: bytes,
    request: QuoteRequest | JobRequest,
    *,
    timeout: float,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Quote | JobResult | JobFailure:
    """One exchange on a new stream, without checking the answer against the request.

    :func:`request_quote` and :func:`run_job` build on it and check what comes back; use it directly only
    for tools and tests (for example a workload this SDK has no schema for).

    The request is written while the answer is awaited, so that a provider refusing a request it did not
    read in full (``too_large``) is heard instead of blocking the write.

    Raises:
        InvalidResponseError: The answer is not a valid response frame.
        JobTimeoutError: No answer within ``timeout``.
        JobTransportError: The stream could not be opened or broke.
    """
    provider = peer_id_to_base58(provider_peer_id)
    payload = encode(request)
    try:
        with trio.fail_after(timeout):
            stream = await peer.host.new_stream(ID(provider_peer_id), [JOB_PROTOCOL])
            try:
                answer, sent = await _write_while_reading(stream, payload, max_response_bytes)
            except BaseException:
                await _finish(stream, reset=True)
                raise
            # A write cut short leaves the stream in the middle of a frame: reset it rather than close it.
            await _finish(stream, reset=not sent)
    except trio.TooSlowError as err:
        raise JobTimeoutError(provider, timeout) from err
    except WireError as err:
        raise JobTransportError(provider, str(err)) from err
    except _TRANSPORT_ERRORS as err:
        raise JobTransportError(provider, str(err) or type(err).__name__) from err
    try:
        return decode_response(answer)
    except ValueError as err:
        raise InvalidResponseError(provider, str(err)) from err


async def _write_while_reading(stream: INetStream, payload: bytes, max_bytes: int) -> tuple[bytes, bool]:
    sent = False

    async def send() -> None:
        nonlocal sent
        # A failed write is not reported here: the answer, or the read's own error, says what happened.
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            await write_frame(stream, payload)
            sent = True

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            answer = await read_frame(stream, max_bytes)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The read failed (the provider died, the stream was reset): report that error itself, not the group
        # trio wraps it in, so callers see a transport error.
        raise _lone_error(group) from None
    return answer, sent


def _lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        elif not isinstance(error, trio.Cancelled):
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 else group


async def _finish(stream: INetStream, *, reset: bool) -> None:
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(_CLOSE_TIMEOUT),
        contextlib.suppress(*_TRANSPORT_ERRORS),
    ):
        await (stream.reset() if reset else stream.close())


def _parse(workload: str, data: dict[str, Any], which: int, provider: str, what: str) -> BaseModel:
    schemas = WORKLOAD_SCHEMAS.get(workload)
    if schemas is None:
        raise InvalidResponseError(
            provider, f"workload {workload!r} is unknown to this SDK; cannot check {what}"
        )
    try:
        return schemas[which].model_validate(data)
    except ValidationError as err:
        raise InvalidResponseError(provider, f"{what} does not match the {workload} schema: {err}") from err


def _raise_failure(failure: JobFailure) -> NoReturn:
    raise JobRejectedError(failure.code, failure.message, failure.retry_after, failure.job_id)


async def request_quote(
    peer: Peer,
    provider_peer_id: bytes,
    request: QuoteRequest,
    *,
    domains: Domains,
    timeout: float = 10.0,
    max_response_bytes: int = 1 << 16,
) -> Quote:
    """Ask a provider for signed escrow terms.

    Args:
        peer: This client's running peer, connected to the provider.
        provider_peer_id: The provider's binary peer id (its address is derived from it).
        request: What to quote.
        domains: The deployment's signing domains.
        timeout: Seconds for the whole exchange.
        max_response_bytes: Longest answer accepted.

    Returns:
        The quote, its signature checked: open the job with ``escrow.open_job(client, quote.signed())``.

    Raises:
        WorkloadSpecError: If the workload is unknown to this SDK or the input is invalid; nothing is sent.
        JobRejectedError: The provider refused (for example ``unknown_workload``, ``invalid_input``).
        InvalidQuoteError: The quote is not signed by the provider, or is not for this client and input.
        InvalidResponseError: The answer is malformed or not a quote.
        JobTimeoutError: No answer within ``timeout``.
        JobTransportError: The stream could not be opened or broke.
    """
    provider_text = peer_id_to_base58(provider_peer_id)
    provider = address_of_peer_id(provider_peer_id)
    expected_spec = spec_hash(request.workload, parse_input(request.workload, request.input))
    started = time.perf_counter()
    answer = await send_request(
        peer, provider_peer_id, request, timeout=timeout, max_response_bytes=max_response_bytes
    )
    if isinstance(answer, JobFailure):
        _raise_failure(answer)
    if not isinstance(answer, Quote):
        raise InvalidResponseError(provider_text, f"expected a quote, got {answer.kind!r}")
    terms = answer.terms
    problems = []
    if terms.provider != provider:
        problems.append(f"terms name provider {terms.provider}, not {provider}")
    if terms.client != request.client:
        problems.append(f"terms name client {terms.client}, not {request.client}")
    if terms.spec_hash != expected_spec:
        problems.append("the spec hash is not that of the requested workload and input")
    if not problems:
        try:
            signer = answer.signer(domains.escrow_domain)
        except SignatureError as err:
            problems.append(str(err))
        else:
            if signer != provider:
                problems.append(f"signed by {signer}, not by the provider {provider}")
    if problems:
        raise InvalidQuoteError(provider_text, "; ".join(problems))
    log.debug(
        "quote received",
        extra={
            "provider": provider_text,
            "job_id": "0x" + terms.job_id.hex(),
            "price": terms.price,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )
    return answer


async def run_job(
    peer: Peer,
    provider_peer_id: bytes,
    request: JobRequest,
    *,
    domains: Domains,
    timeout: float = 60.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> JobResult:
    """Send a signed job request and return its verified result.

    A retry with the same request (same job id) after a timeout returns the same result once the job is done:
    the provider runs each job id once.

    Args:
        peer: This client's running peer, connected to the provider.
        provider_peer_id: The provider's binary peer id; ``request.provider`` must be its address.
        request: The request, signed with :func:`proxima.sdk.jobs.sign_request`.
        domains: The deployment's signing domains.
        timeout: Seconds for the whole exchange (queueing and compute included).
        max_response_bytes: Longest answer accepted.

    Returns:
        The result; its receipt is signed by the provider for this job and client, and its result hash is
        :func:`proxima.sdk.workloads.result_hash` of the output.

    Raises:
        ValueError: If ``request.provider`` is not the address of ``provider_peer_id``.
        WorkloadSpecError: If the workload is unknown to this SDK (its result could not be checked); nothing
            is sent.
        JobRejectedError: The provider refused or failed the job (``busy``, ``unpaid``, ...).
        InvalidReceiptError: The receipt is not valid for this job and output.
        InvalidResponseError: The answer is malformed or not a result.
        JobTimeoutError: No answer within ``timeout``.
        JobTransportError: The stream could not be opened or broke.
    """
    provider_text = peer_id_to_base58(provider_peer_id)
    provider = address_of_peer_id(provider_peer_id)
    if request.provider != provider:
        raise ValueError(f"the request is for provider {request.provider}, but {provider_text} is {provider}")
    if request.workload not in WORKLOAD_SCHEMAS:
        raise WorkloadSpecError(
            f"workload {request.workload!r} is unknown to this SDK, which could not check its result; "
            f"known: {', '.join(sorted(WORKLOAD_SCHEMAS))}"
        )
    answer = await send_request(
        peer, provider_peer_id, request, timeout=timeout, max_response_bytes=max_response_bytes
    )
    if isinstance(answer, JobFailure):
        _raise_failure(answer)
    if not isinstance(answer, JobResult):
        raise InvalidResponseError(provider_text, f"expected a result, got {answer.kind!r}")
    check_result(answer, request, domains)
    log.debug(
        "job result received",
        extra={
            "provider": provider_text,
            "job_id": "0x" + request.job_id.hex(),
            "queue_ms": answer.queue_ms,
            "compute_ms": answer.compute_ms,
        },
    )
    return answer


def check_result(result: JobResult, request: JobRequest, domains: Domains) -> BaseModel:
    """Check that ``result`` answers ``request``: what :func:`run_job` does before returning it.

    The result must be for the request's job and workload; its receipt must name the request's client and
    provider and be signed by the provider in the ``FaultProofs`` domain; the output must match the
    workload's schema and hash to the receipt's result hash.

    Args:
        result: A result, from the provider or from anyone who relays it.
        request: The request it answers.
        domains: The deployment's signing domains.

    Returns:
        The output, parsed into the workload's output model.

    Raises:
        InvalidReceiptError: If any of that does not hold.
        InvalidResponseError: If the workload is unknown to this SDK or the output does not match its schema.
    """
    provider = request.provider
    receipt = result.receipt
    problems = []
    if result.job_id != request.job_id:
        problems.append(f"result is for job 0x{result.job_id.hex()}, not 0x{request.job_id.hex()}")
    if result.workload != request.workload:
        problems.append(f"result is of workload {result.workload!r}, not {request.workload!r}")
    if receipt.client != request.client:
        problems.append(f"receipt names client {receipt.client}, not {request.client}")
    if not verify_receipt(result, domains.faults_domain, provider):
        problems.append(f"receipt is not signed by {provider} for this job")
    if problems:
        raise InvalidReceiptError(provider, "; ".join(problems))
    output = _parse(request.workload, result.output, 1, provider, "the output")
    if result_hash(request.workload, output) != receipt.result_hash:
        raise InvalidReceiptError(provider, "the receipt's result hash is not the hash of the output")
    return output
