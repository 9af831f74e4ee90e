"""The gateway's HTTP routes, one router per resource, and the dependencies they share.

Every route reaches the gateway's parts through the ``Annotated`` aliases below (``Store``, ``Dispatch``,
``Market``, ...), which resolve through the ``get_*`` functions of
:mod:`~proxima.marketplace.gateway.services`; tests replace any of them with
``app.dependency_overrides[get_store] = ...``. :data:`CurrentClient` authenticates the request (API key or
signature) and takes a token from the client's rate limit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.auth import (
    SIGNATURE_HEADER,
    AuthenticatedClient,
    AuthenticationError,
    authenticate_connection,
)
from proxima.marketplace.gateway.jobstore import JobStore
from proxima.marketplace.gateway.metrics import GatewayMetrics
from proxima.marketplace.gateway.ratelimit import RateLimitedError, TokenBucketLimiter
from proxima.marketplace.gateway.schemas import ErrorResponse
from proxima.marketplace.gateway.services import (
    GatewayServices,
    JobDispatcher,
    MarketDirectory,
    get_accounts,
    get_dispatcher,
    get_limiter,
    get_market,
    get_metrics,
    get_services,
    get_settings,
    get_store,
)
from proxima.marketplace.gateway.settings import GatewaySettings

__all__ = [
    "AUTH_RESPONSES",
    "AccountsDep",
    "CurrentClient",
    "Dispatch",
    "Limiter",
    "Market",
    "Metrics",
    "Services",
    "Settings",
    "Store",
    "current_client",
    "error_responses",
]

Services = Annotated[GatewayServices, Depends(get_services)]
Settings = Annotated[GatewaySettings, Depends(get_settings)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
Store = Annotated[JobStore, Depends(get_store)]
Dispatch = Annotated[JobDispatcher, Depends(get_dispatcher)]
Market = Annotated[MarketDirectory, Depends(get_market)]
Metrics = Annotated[GatewayMetrics, Depends(get_metrics)]
Limiter = Annotated[TokenBucketLimiter, Depends(get_limiter)]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers (``{"error": {...}}``) with these statuses."""
    descriptions = {
        400: "Bad request",
        401: "Missing or invalid credentials",
        402: "The client's budget would be exceeded",
        404: "Not found",
        409: "Conflict",
        413: "Request body too large",
        422: "Invalid request: the message and param name the field",
        429: "Rate limited (see Retry-After)",
        502: "The providers failed",
        503: "No provider available",
        504: "Timed out",
    }
    return {s: {"model": ErrorResponse, "description": descriptions.get(s, "Error")} for s in statuses}


AUTH_RESPONSES = error_responses(401, 429)
"""Error answers every authenticated route may give."""


async def current_client(
    request: Request, accounts: AccountsDep, limiter: Limiter, metrics: Metrics
) -> AuthenticatedClient:
    """Authenticate the request and take one token of the client's rate limit.

    Raises:
        AuthenticationError: 401, credentials missing or invalid.
        RateLimitedError: 429, the client is over its rate.
    """
    body = await request.body()
    try:
        if SIGNATURE_HEADER in request.headers:
            # Signed requests write their signature (replay protection): keep the event loop free.
            client = await run_in_threadpool(authenticate_connection, request, body, accounts)
        else:
            client = authenticate_connection(request, body, accounts)
    except AuthenticationError:
        metrics.auth_failures.inc()
        raise
    try:
        limiter.check(client.address)
    except RateLimitedError:
        metrics.rate_limited.inc()
        raise
    request.state.client = client.address
    return client


CurrentClient = Annotated[AuthenticatedClient, Depends(current_client)]
"""The authenticated, rate-limited caller."""
