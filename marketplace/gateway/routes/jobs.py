"""``/v1/jobs``: submit jobs, read them, cancel them, follow their events (SSE and websocket).

Submitting a job (:func:`accept_job`) validates the input with the workload's schema, works out the most the
job may cost, reserves that much of the client's budget (refused with 402 before anything is stored), stores
the job and only then answers 202; the dispatcher runs it from the store. A client sees only its own jobs:
any other id is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Path, Query, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from proxima.marketplace.gateway.accounts import Accounts, BudgetExceededError
from proxima.marketplace.gateway.auth import authenticate_connection
from proxima.marketplace.gateway.dispatch import build_spec
from proxima.marketplace.gateway.events import TERMINAL_STATUSES, event_json, follow_job, job_log_context
from proxima.marketplace.gateway.jobstore import (
    IdempotencyConflictError,
    InvalidJobError,
    JobRecord,
    JobStatus,
    JobStore,
    new_job_id,
)
from proxima.marketplace.gateway.metrics import GatewayMetrics
from proxima.marketplace.gateway.routes import (
    AUTH_RESPONSES,
    AccountsDep,
    CurrentClient,
    Dispatch,
    Limiter,
    Market,
    Metrics,
    Store,
    error_responses,
)
from proxima.marketplace.gateway.schemas import (
    MAX_JOB_LIST,
    ApiError,
    AttemptPublic,
    ErrorDetail,
    EvidencePublic,
    JobCreate,
    JobLinks,
    JobList,
    JobPublic,
    PlacementPublic,
    TimingPublic,
    VerificationPublic,
    error_body,
)
from proxima.marketplace.gateway.services import MarketDirectory
from proxima.sdk.types import Address
from proxima.sdk.workloads import WORKLOAD_SCHEMAS, billing_units

__all__ = ["JOB_ID_PATTERN", "accept_job", "job_public", "router"]

log = logging.getLogger(__name__)

JOB_ID_PATTERN: Final = r"^0x[0-9a-f]{64}$"
"""A job id: ``0x`` + 64 lowercase hex digits."""

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="The job id (0x + 64 hex digits).")]


# --- views ------------------------------------------------------------------------------------------------


def job_public(record: JobRecord, *, include_result: bool = True) -> JobPublic:
    """The client's view of a stored job."""
    placement = None
    if record.placement is not None:
        placement = PlacementPublic(
            providers=_providers(record.placement.get("chosen")),
            backups=_providers(record.placement.get("backups")),
            explanation=record.placement,
        )
    attempts = [
        AttemptPublic(
            n=a.n,
            provider=a.provider,
            region=a.region,
            job_id=a.job_id,
            payment=a.payment,
            price_wei=a.price_wei,
            started_at=a.started_at,
            ended_at=a.ended_at,
            outcome=a.outcome,
            error=None
            if a.error_code is None
            else ErrorDetail(code=a.error_code, message=a.error_message or "", type="api_error"),
            verification=_verification(a.verification),
            evidence=_evidence(a.evidence),
        )
        for a in record.attempts
    ]
    timing = TimingPublic(
        **{k: float(v) for k, v in record.timing_ms.items() if k in TimingPublic.model_fields}
    )
    error = None
    if record.error is not None:
        error = ErrorDetail(
            code=str(record.error.get("code", "failed")),
            message=str(record.error.get("message", "")),
            type="api_error" if record.status is JobStatus.FAILED else "invalid_request_error",
        )
    base = f"/v1/jobs/{record.id}"
    return JobPublic(
        id=record.id,
        client=record.client,
        status=record.status.value,
        workload=record.workload,
        payment=record.payment_mode,
        created_at=record.created_at,
        updated_at=record.updated_at,
        placement=placement,
        attempts=attempts,
        provider=record.provider,
        result=record.result if include_result else None,
        receipt=record.receipt,
        timing_ms=timing,
        verification=_verification(record.verification),
        price_wei=record.price_wei,
        charged_wei=record.charged_wei,
        error=error,
        cached=record.cached,
        links=JobLinks(self=base, events=f"{base}/events", websocket=f"{base}/ws"),
    )


def _verification(stored: dict[str, Any] | None) -> VerificationPublic | None:
    if not stored:
        return None
    try:
        return VerificationPublic.model_validate(stored)
    except ValidationError:
        log.warning("unreadable stored verification", extra={"stored": str(stored)[:200]})
        return None


def _evidence(stored: dict[str, Any] | None) -> EvidencePublic | None:
    if not stored:
        return None
    data = dict(stored)
    slashed = data.get("slashed_wei")
    data["slashed_wei"] = int(slashed) if isinstance(slashed, str) and slashed.isdigit() else None
    try:
        return EvidencePublic.model_validate(
            {k: v for k, v in data.items() if k in EvidencePublic.model_fields}
        )
    except ValidationError:
        log.warning("unreadable stored evidence", extra={"stored": str(stored)[:200]})
        return None


def _providers(candidates: Any) -> list[str]:
    if not isinstance(candidates, list):
        return []
    return [str(c["provider"]) for c in candidates if isinstance(c, dict) and "provider" in c]


# --- accepting a job --------------------------------------------------------------------------------------


def _parse_input(workload: str, payload: dict[str, Any]) -> BaseModel:
    """Validate a job input with the workload's schema; 422 naming the first field at fault."""
    model = WORKLOAD_SCHEMAS[workload][0]
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems = []
        for e in errors:
            loc = ".".join(str(p) for p in ("input", *e["loc"]))
            problems.append(f"{loc}: {str(e['msg']).removeprefix('Value error, ')}")
        first = ".".join(str(p) for p in ("input", *errors[0]["loc"])) if errors else "input"
        raise ApiError(
            422, "invalid_input", f"invalid {workload} input: " + "; ".join(problems), param=first
        ) from err


def _serves(offer_workloads: Any, workload: str, model: str) -> int | None:
    for w in offer_workloads:
        if w.name == workload and (not model or model in w.models):
            return int(w.unit_price_wei)
    return None


def explicit_cap(body: JobCreate) -> int | None:
    """The most a job may cost when the client said: ``budget_wei`` (capped by ``redundancy *
    max_price_wei``) or ``redundancy * max_price_wei``; None when it gave neither."""
    per_copy_cap = None if body.max_price_wei is None else int(body.max_price_wei) * body.redundancy
    if body.budget_wei is not None:
        budget = int(body.budget_wei)
        return budget if per_copy_cap is None else min(budget, per_copy_cap)
    return per_copy_cap


def cost_cap(body: JobCreate, units: int, model: str, market: MarketDirectory) -> int:
    """The most a job may cost (what is reserved of the client's budget).

    ``budget_wei`` when given (capped by ``redundancy * max_price_wei``), else ``redundancy * max_price_wei``,
    else ``redundancy * units *`` the highest unit price among live offers that serve the workload (and model)
    within the job's residency.

    Raises:
        ApiError: 503 when no price is given and no live offer serves the job.
    """
    explicit = explicit_cap(body)
    if explicit is not None:
        return explicit
    countries, regions = set(body.constraints.countries), set(body.constraints.regions)
    prices = []
    for signed in market.offers():
        offer = signed.offer
        if countries and offer.country not in countries:
            continue
        if regions and offer.region not in regions:
            continue
        unit_price = _serves(offer.workloads, body.workload, model)
        if unit_price is not None:
            prices.append(unit_price * units)
    if len(prices) < body.redundancy:
        where = ""
        if countries or regions:
            where = f" in {', '.join(sorted(countries | regions))}"
        raise ApiError(
            503,
            "no_provider",
            f"{len(prices)} live offer(s) serve {body.workload}{f' ({model})' if model else ''}{where}, "
            f"{body.redundancy} needed; retry later, relax the constraints, or give max_price_wei",
        )
    return max(prices) * body.redundancy


def _spec(body: JobCreate, cap: int | None) -> dict[str, Any]:
    c = body.constraints
    return {
        "hardware": {
            "gpu_models": list(c.gpu_models),
            "require_gpu": c.require_gpu,
            "min_gpu_memory_bytes": c.min_gpu_memory_bytes,
        },
        "residency": {"countries": list(c.countries), "regions": list(c.regions)},
        "max_price_wei": None if body.max_price_wei is None else int(body.max_price_wei),
        "budget_wei": cap,
        "latency_target_s": None if body.latency_target_ms is None else body.latency_target_ms / 1000.0,
        "redundancy": body.redundancy,
        "min_reliability": body.min_reliability,
    }


def accept_job(
    body: JobCreate,
    client: Address,
    *,
    store: JobStore,
    accounts: Accounts,
    market: MarketDirectory,
    metrics: GatewayMetrics,
    idempotency_key: str | None = None,
) -> tuple[JobRecord, bool]:
    """Validate, price, reserve and store a job (blocking: SQLite writes).

    Args:
        body: The request.
        client: The authenticated client.
        store: The job store.
        accounts: The client accounts (budget reservation).
        market: Live offers (to price a job without a given price).
        metrics: Counts budget refusals.
        idempotency_key: From the ``Idempotency-Key`` header, if any (equal to the body's if both are given).

    Returns:
        The stored job, and whether it is new (False: the idempotency key's earlier job).

    Raises:
        ApiError: 422 invalid input or model, 503 nobody to price the job, 409 an idempotency key reused for
            another request.
        BudgetExceededError: 402; nothing was stored or reserved.
    """
    key = body.idempotency_key
    if idempotency_key is not None:
        if key is not None and key != idempotency_key:
            raise ApiError(
                422,
                "invalid_request",
                "the Idempotency-Key header and idempotency_key differ",
                param="idempotency_key",
            )
        key = idempotency_key
    parsed = _parse_input(body.workload, body.input)
    model = str(getattr(parsed, "model", ""))
    if body.model and body.model != model:
        raise ApiError(
            422,
            "invalid_request",
            f"model {body.model!r} does not match the input's model {model!r}"
            if model
            else f"workload {body.workload} takes no model (got {body.model!r})",
            param="model",
        )
    units = billing_units(body.workload, parsed)
    previous = None if key is None else _find_idempotent(store, client, key)
    if previous is not None:
        # A replay: the store compares it with the first request; a cap the gateway worked out from the
        # market then is part of that request, whatever the market says now.
        cap = explicit_cap(body)
        if cap is None:
            cap = int(previous[1].get("budget_wei") or 0)
        record = _create(store, client, body, _spec(body, cap), key, None)
        return record, False
    job_id = new_job_id()
    _check_spec(job_id, body, _spec(body, explicit_cap(body)))
    cap = cost_cap(body, units, model, market)
    spec = _spec(body, cap)
    try:
        accounts.reserve(client, job_id, cap)
    except BudgetExceededError:
        metrics.budget_refusals.inc()
        raise
    try:
        record = _create(store, client, body, spec, key, job_id)
        if record.id == job_id:
            store.set_ledger(job_id, "reserved", reserved_wei=cap)
    except BaseException:
        accounts.release(job_id)
        raise
    if record.id != job_id:  # another request with the same idempotency key won the race
        accounts.release(job_id)
        return record, False
    return record, True


_SPEC_PARAMS: Final = {
    "spec.hardware": "constraints",
    "spec.residency": "constraints",
    "spec.latency_target_s": "latency_target_ms",
    "spec.max_price_wei": "max_price_wei",
    "spec.budget_wei": "budget_wei",
    "spec.redundancy": "redundancy",
    "spec.min_reliability": "min_reliability",
}


def _check_spec(job_id: str, body: JobCreate, spec: dict[str, Any]) -> None:
    """The dispatcher's own check of the client's constraints, before anything is reserved or stored."""
    try:
        build_spec(job_id, body.workload, body.input, spec)
    except InvalidJobError as err:
        param = next((p for prefix, p in _SPEC_PARAMS.items() if err.field.startswith(prefix)), None)
        if param == "constraints":
            param = "constraints." + err.field.rsplit(".", 1)[-1]
        raise ApiError(422, "invalid_request", err.problem, param=param or err.field) from err


def _find_idempotent(store: JobStore, client: Address, key: str) -> tuple[str, dict[str, Any]] | None:
    rows = store.read("SELECT id, spec FROM jobs WHERE client = ? AND idempotency_key = ?", (client, key))
    if not rows:
        return None
    spec: dict[str, Any] = json.loads(rows[0]["spec"])
    return str(rows[0]["id"]), spec


def _create(
    store: JobStore,
    client: Address,
    body: JobCreate,
    spec: dict[str, Any],
    key: str | None,
    job_id: str | None,
) -> JobRecord:
    try:
        return store.create(
            client,
            body.workload,
            body.input,
            spec,
            body.payment,
            idempotency_key=key,
            use_cache=body.cache,
            job_id=job_id,
        )
    except IdempotencyConflictError as err:
        raise ApiError(409, "idempotency_conflict", str(err), param="idempotency_key") from err
    except InvalidJobError as err:
        raise ApiError(422, "invalid_request", str(err), param=err.field) from err


# --- routes -----------------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    responses={**AUTH_RESPONSES, **error_responses(400, 402, 409, 413, 422, 503)},
    summary="Submit a job",
)
async def create_job(
    body: JobCreate,
    client: CurrentClient,
    response: Response,
    store: Store,
    accounts: AccountsDep,
    dispatcher: Dispatch,
    market: Market,
    metrics: Metrics,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    ] = None,
) -> JobPublic:
    """Validate, price and store a job, reserve its cost, and schedule it. Answers 202 with the stored job.

    The same ``idempotency_key`` (body) or ``Idempotency-Key`` header returns the first job (200) instead of
    a new one.
    """
    record, created = await run_in_threadpool(
        accept_job,
        body,
        client.address,
        store=store,
        accounts=accounts,
        market=market,
        metrics=metrics,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    if created:
        with job_log_context(record.id):
            dispatcher.submit(record.id)
            metrics.job_submitted(record.workload)
            log.info("job accepted", extra={"client": client.address, "workload": record.workload})
    else:
        response.status_code = 200
    return job_public(record)


def _own_job(store: JobStore, job_id: str, client: Address) -> JobRecord:
    record = store.get(job_id)
    if record is None or record.client != client:
        raise ApiError(404, "not_found", f"no job {job_id} for {client}", param="job_id")
    return record


@router.get(
    "", response_model=JobList, responses={**AUTH_RESPONSES, **error_responses(422)}, summary="List own jobs"
)
async def list_jobs(
    client: CurrentClient,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=MAX_JOB_LIST)] = 50,
    status: JobStatus | None = None,
    before: Annotated[
        float | None, Query(ge=0, le=1e11, description="Only jobs created before (Unix s).")
    ] = None,
) -> JobList:
    """The caller's jobs, newest first, without results (fetch one job for its result)."""
    records = await run_in_threadpool(store.list, client.address, limit=limit, status=status, before=before)
    return JobList(data=[job_public(r, include_result=False) for r in records])


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses={**AUTH_RESPONSES, **error_responses(404, 422)},
    summary="Get a job",
)
async def get_job(job_id: JobIdPath, client: CurrentClient, store: Store) -> JobPublic:
    """Status, placement and why, attempts, result, receipt and timing of one of the caller's jobs."""
    return job_public(_own_job(store, job_id, client.address))


@router.delete(
    "/{job_id}",
    response_model=JobPublic,
    responses={**AUTH_RESPONSES, **error_responses(404, 409, 422)},
    summary="Cancel a job",
)
async def cancel_job(
    job_id: JobIdPath, client: CurrentClient, store: Store, dispatcher: Dispatch
) -> JobPublic:
    """Cancel a job that has not finished; nothing is charged for it. 409 if it already finished."""
    record = _own_job(store, job_id, client.address)
    if record.status in TERMINAL_STATUSES:
        raise ApiError(409, "job_finished", f"job {job_id} already {record.status.value}; nothing to cancel")
    with job_log_context(job_id):
        cancelled = dispatcher.cancel(job_id)
        log.info("job cancel requested", extra={"cancelled": cancelled})
    record = _own_job(store, job_id, client.address)
    if not cancelled and record.status is not JobStatus.CANCELLED:
        raise ApiError(409, "job_finished", f"job {job_id} already {record.status.value}; nothing to cancel")
    return job_public(record)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The job's events (SSE)"},
        **AUTH_RESPONSES,
        **error_responses(404, 422),
    },
    summary="Follow a job's events (SSE)",
)
async def job_events(
    job_id: JobIdPath,
    client: CurrentClient,
    store: Store,
    after: Annotated[int, Query(ge=0, le=2**31, description="Send events after this sequence number.")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,10}$")] = None,
) -> EventSourceResponse:
    """Server-sent events: every past event, then new ones until the job is final, then ``end``.

    Each event has ``id`` = its sequence number, ``event`` = its type and ``data`` = ``{"seq", "at", "type",
    "data"}``. A reconnecting client's ``Last-Event-ID`` resumes after that event.
    """
    _own_job(store, job_id, client.address)
    start = max(after, int(last_event_id) if last_event_id is not None else 0)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for item in follow_job(store, job_id, after=start):
            if item.event is None:
                yield ServerSentEvent(comment="keep-alive")
                continue
            yield ServerSentEvent(
                data=json.dumps(event_json(item.event), separators=(",", ":")),
                event=item.event.type.value,
                id=str(item.event.seq),
            )
        final = store.get(job_id)
        status = final.status.value if final is not None else "unknown"
        yield ServerSentEvent(data=json.dumps({"status": status}), event="end")

    return EventSourceResponse(stream(), ping=15)


@router.websocket("/{job_id}/ws")
async def job_websocket(
    websocket: WebSocket, job_id: str, accounts: AccountsDep, store: Store, limiter: Limiter, metrics: Metrics
) -> None:
    """The job's events over a websocket: JSON messages ``{"seq", "at", "type", "data"}``, then
    ``{"type": "end", "job": <JobPublic>}`` once final. Authenticate with the same headers as HTTP (signed
    requests sign ``GET`` and the websocket's path with an empty body). Refusals close the socket with
    4401 (credentials), 4404 (no such job) or 4429 (rate limited) and the reason.
    """
    try:
        client = await run_in_threadpool(authenticate_connection, websocket, b"", accounts, method="GET")
        limiter.check(client.address)
        if not re.match(JOB_ID_PATTERN, job_id):
            raise ApiError(404, "not_found", f"no job {job_id[:80]!r}")
        record = _own_job(store, job_id, client.address)
    except ApiError as err:
        if err.status == 401:
            metrics.auth_failures.inc()
        elif err.status == 429:
            metrics.rate_limited.inc()
        await _deny(websocket, err)
        return
    await websocket.accept()
    try:
        async for item in follow_job(store, record.id):
            if item.event is None:
                await websocket.send_json({"type": "keep-alive"})
            else:
                await websocket.send_json(event_json(item.event))
        final = store.get(record.id)
        assert final is not None
        await websocket.send_json({"type": "end", "job": job_public(final).model_dump(mode="json")})
        await websocket.close(code=1000)
    except WebSocketDisconnect:
        log.debug("websocket client left", extra={"job_id": record.id})


async def _deny(websocket: WebSocket, err: ApiError) -> None:
    """Refuse a websocket: an HTTP error answer where the server can send one, else close (4000 + status)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(error_body(err.status, err.code, err.message, err.param), err.status, err.headers)
        )
        return
    await websocket.accept()
    await websocket.close(code=4000 + err.status, reason=err.message[:120])
