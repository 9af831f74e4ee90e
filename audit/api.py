"""The audit HTTP API: :func:`audit_router` (JSON under ``/v1/audit``), :func:`create_app` (API + explorer).

Every route reads the :class:`~proxima.audit.service.AuditService`'s ledger at its checkpoint; each answer
carries ``block_number`` so a reader knows which block it describes. No account is needed: everything here
is public chain data, recomputed from events.

* ``GET /v1/audit/summary``: totals (accounts, stake, jobs, volume, fees, slashes, rewards, what each
  contract owes) and the last verification's outcome;
* ``GET /v1/audit/providers``: providers and verifiers (``role``, ``country``, ``region``, ``sort``,
  ``order``, ``limit``, ``offset``);
* ``GET /v1/audit/providers/{address}``: one account with its attestations, reports, slashes, jobs, epochs;
* ``GET /v1/audit/jobs``: escrow jobs (``provider``, ``client``, ``status``, paging);
* ``GET /v1/audit/jobs/{job_id}``: one job (``0x`` + 64 hex digits);
* ``GET /v1/audit/slashes``: slashes with their evidence (``provider``, ``kind``, paging);
* ``GET /v1/audit/attestations``: attestations and verifier reports (``provider``, ``kind``, paging);
* ``GET /v1/audit/rewards``: reward epochs (pot, treasury, work, claimed, rolled over);
* ``GET /v1/audit/series``: per time bucket (``bucket_s``): jobs, volume, slashes, stake;
* ``GET /v1/audit/export``: a whole table as CSV or JSON (``what``, ``format``);
* ``GET /v1/audit/verify``: the last verification report (404 before the first);
* ``POST /v1/audit/verify``: run a verification now (needs the RPC endpoint; 409 while one runs).

Amounts in wei are decimal strings. Errors are ``{"error": {"code", "message", "param", "type"}}`` (the
gateway's shape): a bad query or path parameter is 422 naming it (a wrong EIP-55 checksum, a job id that is
not 32 bytes of hex, a limit out of range), an unknown provider or job 404, an empty index or a missing RPC
endpoint 503, a verification already running 409.

Mounting: ``app.include_router(audit_router(service))``, or with a zero-argument callable returning the
service (or None while it is not ready: 503) when the service is built later, as in the gateway's lifespan.
The routes raise :class:`fastapi.HTTPException` only, so any app's error handlers format them.

(No ``from __future__ import annotations`` here: FastAPI resolves the routes' annotations, and the service
dependency is local to :func:`audit_router`.)
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final, Literal

from eth_utils.address import is_checksum_address, to_checksum_address
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxima.audit import queries
from proxima.audit.errors import AuditError
from proxima.audit.service import AuditService, EmptyIndexError, NoRpcError, VerifyBusyError

__all__ = ["MAX_LIMIT", "AuditHTTPError", "ServiceSource", "audit_router", "create_app"]

log = logging.getLogger(__name__)

MAX_LIMIT: Final = 1_000
"""Most rows one list request returns."""

ServiceSource = AuditService | Callable[[], AuditService | None]
"""A service, or a zero-argument callable returning it (None: not ready yet, 503)."""

_ADDRESS: Final = r"^0x[0-9a-fA-F]{40}$"
_JOB_ID: Final = r"^0x[0-9a-fA-F]{64}$"


class AuditHTTPError(HTTPException):
    """An HTTP error with a stable code and the request field at fault.

    Args:
        status: HTTP status.
        code: Machine-readable code (``not_found``, ``invalid_request``, ``index_empty``...).
        message: What is wrong and what to do.
        param: The parameter at fault, if any.
    """

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(status, message)
        self.code = code
        self.message = message
        self.param = param


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    param: str | None = None
    type: str = "invalid_request_error"


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorDetail


class VerifyDiscrepancy(BaseModel):
    """One thing the index and the chain disagree on."""

    model_config = ConfigDict(frozen=True)

    kind: str
    subject: str
    expected: str
    actual: str
    detail: str


class VerifyReportPublic(BaseModel):
    """A verification's outcome at one block."""

    model_config = ConfigDict(frozen=True)

    block_number: int
    ok: bool
    checked: dict[str, int]
    discrepancies: list[VerifyDiscrepancy]


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows to return.")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Rows to skip.")]
Order = Annotated[Literal["asc", "desc"], Query(description="Sort direction.")]
AddressFilter = Annotated[
    str | None, Query(pattern=_ADDRESS, description="An address (EIP-55 checksummed or one case).")
]


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        404: "Not found",
        409: "A verification is already running",
        422: "Invalid parameter: the message and param name it",
        503: "The index is empty, or the RPC endpoint is needed and absent",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}


def _checksummed(value: str, param: str) -> str:
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise AuditHTTPError(
            422, "invalid_request", f"{param}: {value} has an invalid EIP-55 checksum (typo?)", param
        )
    return to_checksum_address(value)


def _optional_address(value: str | None, param: str) -> str | None:
    return None if value is None else _checksummed(value, param)


def report_public(report: Any) -> VerifyReportPublic:
    """The API view of a :class:`~proxima.audit.verify.VerifyReport`."""
    return VerifyReportPublic(
        block_number=report.block_number,
        ok=report.ok,
        checked=dict(sorted(report.checked.items())),
        discrepancies=[
            VerifyDiscrepancy(
                kind=d.kind, subject=d.subject, expected=d.expected, actual=d.actual, detail=d.detail
            )
            for d in report.discrepancies
        ],
    )


def audit_router(service: ServiceSource) -> APIRouter:
    """The audit API's routes, under ``/v1/audit``.

    Args:
        service: The service, or a callable returning it per request (None: not ready, 503).

    Returns:
        A router to include in any FastAPI app.
    """

    def current_service() -> AuditService:
        resolved = service if isinstance(service, AuditService) else service()
        if resolved is None:
            raise AuditHTTPError(503, "audit_unavailable", "the auditor is starting; retry in a moment")
        return resolved

    Service = Annotated[AuditService, Depends(current_service)]  # noqa: N806 - a type alias

    def ledger_of(svc: AuditService) -> Any:
        try:
            return svc.ledger()
        except EmptyIndexError as err:
            raise AuditHTTPError(503, "index_empty", str(err)) from err
        except NoRpcError as err:
            raise AuditHTTPError(503, "rpc_required", str(err)) from err
        except AuditError as err:
            raise AuditHTTPError(503, "audit_unavailable", str(err)) from err

    router = APIRouter(prefix="/v1/audit", tags=["audit"])

    @router.get("/summary", response_model=queries.Summary, responses=_responses(503), summary="Totals")
    def get_summary(svc: Service) -> queries.Summary:
        """Totals over the whole ledger at the index's checkpoint, and the last verification's outcome."""
        ledger = ledger_of(svc)
        report = svc.last_report
        return queries.summary(
            ledger,
            svc.locations(),
            verified_block=None if report is None else report.block_number,
            verified_ok=None if report is None else report.ok,
        )

    @router.get(
        "/providers",
        response_model=queries.ProviderPage,
        responses=_responses(422, 503),
        summary="Providers and verifiers",
    )
    def list_providers(
        svc: Service,
        role: Annotated[Literal["provider", "verifier"] | None, Query()] = None,
        country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="Claimed country.")] = None,
        region: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = None,
        sort: Annotated[queries.ProviderSort, Query()] = "stake",
        order: Order = "desc",
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> queries.ProviderPage:
        """Every registered account with stake, reliability, verified throughput, earnings, jobs and slashes.
        ``country`` and ``region`` filter on the location as claimed in the provider's signed offer."""
        return queries.providers(
            ledger_of(svc),
            svc.locations(),
            role=role,
            country=country,
            region=region,
            sort=sort,
            descending=order == "desc",
            limit=limit,
            offset=offset,
        )

    @router.get(
        "/providers/{address}",
        response_model=queries.ProviderDetail,
        responses=_responses(404, 422, 503),
        summary="One provider or verifier",
    )
    def get_provider(
        svc: Service,
        address: Annotated[str, Path(pattern=_ADDRESS, description="The account's address.")],
    ) -> queries.ProviderDetail:
        """The account's row plus its attestations, verifier reports, slashes, jobs and reward epochs."""
        checked = _checksummed(address, "address")
        detail = queries.provider_detail(ledger_of(svc), checked, svc.locations())
        if detail is None:
            raise AuditHTTPError(404, "not_found", f"no registered account {checked} in the index", "address")
        return detail

    @router.get(
        "/jobs", response_model=queries.JobPage, responses=_responses(422, 503), summary="Escrow jobs"
    )
    def list_jobs(
        svc: Service,
        provider: AddressFilter = None,
        client: AddressFilter = None,
        status: Annotated[queries.JobStatusName | None, Query()] = None,
        order: Order = "desc",
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> queries.JobPage:
        """Escrow jobs, newest first by default, filtered by provider, client and status."""
        return queries.jobs(
            ledger_of(svc),
            provider=_optional_address(provider, "provider"),
            client=_optional_address(client, "client"),
            status=status,
            descending=order == "desc",
            limit=limit,
            offset=offset,
        )

    @router.get(
        "/jobs/{job_id}",
        response_model=queries.JobRow,
        responses=_responses(404, 422, 503),
        summary="One escrow job",
    )
    def get_job(
        svc: Service,
        job_id: Annotated[str, Path(pattern=_JOB_ID, description="The job id: 0x + 64 hex digits.")],
    ) -> queries.JobRow:
        """The job's parties, price, status, result and settlement."""
        row = queries.job_detail(ledger_of(svc), bytes.fromhex(job_id[2:]))
        if row is None:
            raise AuditHTTPError(404, "not_found", f"no escrow job {job_id.lower()} in the index", "job_id")
        return row

    @router.get(
        "/slashes", response_model=queries.SlashPage, responses=_responses(422, 503), summary="Slashes"
    )
    def list_slashes(
        svc: Service,
        provider: AddressFilter = None,
        kind: Annotated[queries.SlashKind | None, Query()] = None,
        order: Order = "desc",
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> queries.SlashPage:
        """Every slash with its evidence: kind, transaction, job, finder, amounts."""
        return queries.slashes(
            ledger_of(svc),
            provider=_optional_address(provider, "provider"),
            kind=kind,
            descending=order == "desc",
            limit=limit,
            offset=offset,
        )

    @router.get(
        "/attestations",
        response_model=queries.AttestationPage,
        responses=_responses(422, 503),
        summary="Attestations and verifier reports",
    )
    def list_attestations(
        svc: Service,
        provider: AddressFilter = None,
        kind: Annotated[Literal["attestation", "report"] | None, Query()] = None,
        order: Order = "desc",
        limit: Limit = 50,
        offset: Offset = 0,
    ) -> queries.AttestationPage:
        """Providers' signed performance attestations and verifiers' measurement reports."""
        return queries.attestations(
            ledger_of(svc),
            provider=_optional_address(provider, "provider"),
            kind=kind,
            descending=order == "desc",
            limit=limit,
            offset=offset,
        )

    @router.get(
        "/rewards", response_model=queries.RewardPage, responses=_responses(422, 503), summary="Reward epochs"
    )
    def list_rewards(
        svc: Service, order: Order = "desc", limit: Limit = 50, offset: Offset = 0
    ) -> queries.RewardPage:
        """Reward epochs: pot, total work, claimed, rolled over, providers."""
        return queries.reward_epochs(ledger_of(svc), descending=order == "desc", limit=limit, offset=offset)

    @router.get(
        "/series", response_model=queries.SeriesPage, responses=_responses(422, 503), summary="Over time"
    )
    def get_series(
        svc: Service,
        bucket_s: Annotated[int, Query(ge=60, le=366 * 86_400, description="Bucket width, seconds.")] = 3_600,
    ) -> queries.SeriesPage:
        """Per time bucket: jobs, volume, slashes, stake (for charts)."""
        return queries.series(ledger_of(svc), bucket_s)

    @router.get(
        "/export",
        response_class=Response,
        responses={
            200: {"content": {"text/csv": {}, "application/json": {}}, "description": "The table"},
            **_responses(422, 503),
        },
        summary="Export a table",
    )
    def export(
        svc: Service,
        what: Annotated[queries.ExportName, Query(description="Which table.")] = "providers",
        format: Annotated[Literal["csv", "json"], Query(description="CSV or JSON.")] = "csv",
    ) -> Response:
        """A whole table in a stable column order; amounts in wei as integers (CSV) or strings (JSON)."""
        text = queries.export(ledger_of(svc), what, format, svc.locations())
        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        return Response(
            text,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="proxima-{what}.{format}"'},
        )

    @router.get(
        "/verify",
        response_model=VerifyReportPublic,
        responses=_responses(404),
        summary="The last verification",
    )
    def last_verification(svc: Service) -> VerifyReportPublic:
        """The last verification's report (404 before the first: POST to run one)."""
        report = svc.last_report
        if report is None:
            raise AuditHTTPError(
                404, "not_found", "no verification has run yet; POST /v1/audit/verify runs one"
            )
        return report_public(report)

    @router.post(
        "/verify",
        response_model=VerifyReportPublic,
        responses=_responses(409, 503),
        summary="Run a verification",
    )
    def run_verification(svc: Service) -> VerifyReportPublic:
        """Re-check every signature, stake, balance, counter, reward and reliability score against the chain
        at the checkpoint, and that each contract's ETH equals what it owes. Takes as long as it takes."""
        try:
            return report_public(svc.verify())
        except VerifyBusyError as err:
            raise AuditHTTPError(409, "verify_running", str(err)) from err
        except NoRpcError as err:
            raise AuditHTTPError(503, "rpc_required", str(err)) from err
        except EmptyIndexError as err:
            raise AuditHTTPError(503, "index_empty", str(err)) from err

    return router


# --- standalone app -------------------------------------------------------------------------------------


def _error_type(status: int) -> str:
    return "api_error" if status >= 500 else "invalid_request_error"


def _error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, param=param, type=_error_type(status)))
    return JSONResponse(body.model_dump(), status_code=status)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    problems: list[str] = []
    param: str | None = None
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("query", "path", "body", "header") else "body"
        dotted = ".".join(loc[1:] if loc and loc[0] == where else loc)
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where} parameter {dotted}: {message}")
        param = param or dotted or None
    return _error(422, "invalid_request", "; ".join(problems[:5]) or "invalid request", param)


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, AuditHTTPError):
            return _error(exc.status_code, exc.code, exc.message, exc.param)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no page {request.url.path}; see /docs"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return _error(exc.status_code, code, detail)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(exc)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return _error(500, "internal", "internal error; it was logged")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


class HealthPublic(BaseModel):
    """The auditor's state."""

    status: Literal["ok", "empty"]
    checkpoint: int | None
    following: bool
    follow_error: str | None = None


def create_app(service: AuditService, *, start_follow: bool = True) -> FastAPI:
    """A standalone auditor: the audit API, ``/healthz`` and the web explorer at ``/``.

    Args:
        service: The service to serve.
        start_follow: Run the service's background follower (when it has one) while the app runs.

    Returns:
        The FastAPI app (OpenAPI at ``/openapi.json``, docs at ``/docs``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_follow:
            service.start()
        try:
            yield
        finally:
            if start_follow:
                await run_in_threadpool(service.stop)

    app = FastAPI(
        title="Proxima auditor",
        description="The Proxima ledger, recomputed from contract events and checked against contract state.",
        version="1.0.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.audit = service
    _install_error_handlers(app)
    app.include_router(audit_router(service))

    @app.get("/healthz", response_model=HealthPublic, tags=["operations"], summary="Liveness")
    def healthz() -> HealthPublic:
        """``ok`` once something is indexed, ``empty`` before."""
        checkpoint = service.checkpoint()
        return HealthPublic(
            status="empty" if checkpoint is None else "ok",
            checkpoint=None if checkpoint is None else checkpoint.number,
            following=service.following,
            follow_error=service.follow_error,
        )

    _include_explorer(app, service)
    return app


def _include_explorer(app: FastAPI, service: AuditService) -> None:
    try:
        from proxima.audit.explorer.pages import explorer_router
    except ImportError as err:
        log.warning("explorer pages unavailable; serving the API only", extra={"error": str(err)})
        return
    app.include_router(explorer_router(service))
