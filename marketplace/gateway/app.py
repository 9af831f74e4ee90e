"""The gateway's FastAPI application: :func:`create_app`.

``create_app(settings)`` returns an app whose lifespan builds the real services from the settings
(:meth:`GatewayServices.build`: chain, payer, libp2p host, matching engine, dispatcher, SQLite stores) and
runs their background parts while it serves. ``create_app(settings, services=...)`` serves given services
and starts nothing (tests build their own). Routes reach the services through FastAPI dependencies, so tests
can also swap any one of them with ``app.dependency_overrides``.

Every error answer is JSON ``{"error": {"code", "message", "param", "type"}}``: validation errors name the
field (422), the package's own errors map to their status (401, 402, 404, 409, 429, 503...), and a bug is the
only thing that answers 500 (logged with its traceback, never shown to the client).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import proxima.marketplace.gateway.routes.embeddings as embeddings_routes
import proxima.marketplace.gateway.routes.jobs as jobs_routes
import proxima.marketplace.gateway.routes.offers as offers_routes
import proxima.marketplace.gateway.routes.providers as providers_routes
from proxima.audit.api import AuditHTTPError, audit_router
from proxima.audit.explorer.pages import explorer_router
from proxima.audit.service import AuditService
from proxima.marketplace.gateway.accounts import AccountsStoreError, BudgetExceededError
from proxima.marketplace.gateway.jobstore import JobStoreError
from proxima.marketplace.gateway.metrics import CONTENT_TYPE
from proxima.marketplace.gateway.routes import CurrentClient, Services, error_responses
from proxima.marketplace.gateway.schemas import AccountPublic, ApiError, HealthPublic, error_body
from proxima.marketplace.gateway.services import GatewayServices
from proxima.marketplace.gateway.settings import GatewaySettings
from proxima.sdk.workloads import WorkloadSpecError

__all__ = ["API_VERSION", "create_app"]

log = logging.getLogger(__name__)

API_VERSION: Final = "1.0.0"
"""Version of the HTTP API (``/v1``), as the OpenAPI document states it."""

_DESCRIPTION: Final = """
Submit compute jobs to the Proxima network: the gateway places each job on the provider that will finish it
soonest for the price accepted, with reliability proven on chain, fails over to backups, and pays providers.

**Authentication**: `Authorization: Bearer <api key>` (from `proxima-gateway add-client`), or requests signed
with the client's key: `X-Proxima-Address`, `X-Proxima-Timestamp` (Unix seconds) and `X-Proxima-Signature`
(EIP-191 personal_sign of `PROXIMA-REQUEST-V1\\n{METHOD}\\n{path?query}\\n{timestamp}\\n{sha256(body) hex}`).

**Errors**: `{"error": {"code", "message", "param", "type"}}` (OpenAI's shape). Amounts in wei are decimal
strings.
"""


def _status_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        406: "not_acceptable",
        409: "conflict",
        413: "request_too_large",
        415: "unsupported_media_type",
        422: "invalid_request",
        429: "rate_limited",
    }.get(status, "error" if status < 500 else "internal")


def _error(
    status: int, code: str, message: str, param: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(status, code, message, param), status_code=status, headers=dict(headers or {})
    )


_LOCATIONS: Final = {"body", "query", "path", "header", "cookie"}


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    problems: list[str] = []
    param: str | None = None
    status = 422
    code = "invalid_request"
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            where, loc = loc[0], loc[1:]
        else:
            where = "body"
        dotted = ".".join(loc)
        kind = str(e.get("type", ""))
        if kind == "json_invalid":
            status, code = 400, "invalid_json"
            problems.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})")
            continue
        if kind == "missing" and not dotted and where == "body":
            problems.append("a JSON body is required (Content-Type: application/json)")
            continue
        if not dotted and where == "body" and kind in ("model_attributes_type", "dict_type", "model_type"):
            problems.append("the body must be a JSON object (send Content-Type: application/json)")
            continue
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown field (typo?)"
        label = dotted or where
        if where in ("query", "header", "path"):
            label = f"{where} parameter {dotted}"
        problems.append(f"{label}: {message}")
        if param is None and dotted:
            param = dotted
    return _error(status, code, "; ".join(problems[:5]) or "invalid request", param)


def _drop_null(parameter: dict[str, Any]) -> None:
    """An optional query or header parameter is left out, never ``null``: say so in the document."""
    schema = parameter.get("schema", {})
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(branches):
            del schema["anyOf"]
            schema.update(kept[0])


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods.update(route.methods or ())
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.code, exc.message, exc.param, exc.headers)

    async def budget_exceeded(request: Request, exc: Exception) -> Response:
        return _error(402, "budget_exceeded", str(exc), "budget_wei")

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, AuditHTTPError):  # the auditor's routes keep their code and field
            return _error(exc.status_code, exc.code, exc.message, exc.param)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            return _error(400, "invalid_json", "the body is not valid JSON (UTF-8)")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            detail = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
            return _error(405, "method_not_allowed", detail, headers={"Allow": ", ".join(allowed)})
        return _error(exc.status_code, _status_code(exc.status_code), detail, headers=exc.headers)

    async def workload_error(request: Request, exc: Exception) -> Response:
        return _error(422, "invalid_input", str(exc), "input")

    async def storage_error(request: Request, exc: Exception) -> Response:
        log.error("storage error", exc_info=exc)
        return _error(503, "storage_unavailable", "the gateway's database is unavailable; retry later")

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return _error(500, "internal", "internal error; it was logged")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(BudgetExceededError, budget_exceeded)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(WorkloadSpecError, workload_error)
    app.add_exception_handler(JobStoreError, storage_error)
    app.add_exception_handler(AccountsStoreError, storage_error)
    app.add_exception_handler(Exception, internal_error)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read; an HTTPException so that FastAPI's body parsing passes it on."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than the {max_bytes} bytes this gateway accepts")


class _BodyLimit:
    """Pure ASGI middleware: a request body above ``max_bytes`` is answered 413 (JSON), read or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(
            413,
            "request_too_large",
            f"the request body is larger than the {self.max_bytes} bytes this gateway accepts",
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await too_large(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await too_large(scope, receive, send)


class _RequestLog:
    """Pure ASGI middleware: count, time and log every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, services: Any) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", "GET"))
            services: GatewayServices | None = getattr(scope["app"].state, "services", None)
            if services is not None:
                services.metrics.observe_request(template, method, status, elapsed)
            state = scope.get("state") or {}
            log.info(
                "request",
                extra={
                    "method": method,
                    "route": template,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                    "client": state.get("client"),
                },
            )


def _include_audit(app: FastAPI) -> None:
    """The auditor's ``/v1/audit`` API and the web explorer at ``/explorer``, served from the gateway's
    :class:`~proxima.audit.service.AuditService` once the services are up (503 before, or when disabled)."""

    def audit_service() -> AuditService | None:
        services = getattr(app.state, "services", None)
        return None if services is None else services.audit

    app.include_router(audit_router(audit_service))
    app.include_router(explorer_router(audit_service), prefix="/explorer")


def create_app(
    settings: GatewaySettings, *, services: GatewayServices | None = None, start_services: bool | None = None
) -> FastAPI:
    """The gateway's ASGI app.

    Args:
        settings: The settings.
        services: Serve these; None: build the real ones from ``settings`` when the app starts.
        start_services: Run the services' background parts (network, chain state refresher, dispatcher)
            while the app runs. Default: yes for services the app builds, no for given ones (tests run
            their own); ``proxima-gateway serve`` builds them first (for one-line errors) and passes True.

    Returns:
        The FastAPI app (OpenAPI at ``/openapi.json``, docs at ``/docs``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            if start_services:
                async with services.running():
                    yield
            else:
                yield
            return
        built = await run_in_threadpool(GatewayServices.build, settings)
        app.state.services = built
        async with built.running():
            yield

    app = FastAPI(
        title="Proxima gateway",
        version=API_VERSION,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    if services is not None:
        app.state.services = services
    _install_error_handlers(app)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(_RequestLog, services=None)
    app.include_router(jobs_routes.router)
    app.include_router(offers_routes.router)
    app.include_router(providers_routes.router)
    app.include_router(embeddings_routes.router)
    _include_audit(app)

    @app.get(
        "/v1/account",
        response_model=AccountPublic,
        tags=["account"],
        responses=error_responses(401, 404, 429),
        summary="The caller's budget and spend",
    )
    async def get_account(client: CurrentClient, services: Services) -> AccountPublic:
        """Budget, spent, reserved (held by unfinished jobs) and available, in wei."""
        account = services.accounts.get(client.address)
        if account is None:  # removed between authentication and now
            raise ApiError(404, "not_found", f"no client account {client.address}")
        return AccountPublic(
            address=account.address,
            budget_wei=account.budget_wei,
            spent_wei=account.spent_wei,
            reserved_wei=account.reserved_wei,
            available_wei=account.available_wei,
            api_keys=account.api_keys,
        )

    @app.get("/healthz", response_model=HealthPublic, tags=["operations"], summary="Liveness")
    async def healthz(services: Services) -> HealthPublic:
        """``ok`` when the gateway serves and sees at least one offer, ``degraded`` when it sees none."""
        offers = len(services.market.offers())
        unfinished = await run_in_threadpool(
            lambda: int(
                services.store.read(
                    "SELECT count(*) AS n FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
                )[0]["n"]
            )
        )
        return HealthPublic(status="ok" if offers else "degraded", offers=offers, unfinished_jobs=unfinished)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Prometheus text format"}
        },
    )
    async def metrics(services: Services) -> Response:
        """The gateway's metrics in Prometheus' text format."""
        await run_in_threadpool(services.metrics.sync_jobs, services.store)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (pxk_...)."},
                "signedRequest": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Proxima-Signature",
                    "description": "With X-Proxima-Address and X-Proxima-Timestamp; see the description.",
                },
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if path.startswith("/v1/") and not path.startswith("/v1/audit/"):  # the audit is public
                        operation["security"] = [{"apiKey": []}, {"signedRequest": []}]
                    for parameter in operation.get("parameters", ()):
                        _drop_null(parameter)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
