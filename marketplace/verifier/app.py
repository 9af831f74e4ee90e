"""The verifier's FastAPI application: :func:`create_app`, and :func:`build_service` from the settings.

Routes (every error is ``{"error": {"code", "message", "param", "type"}}``):

* ``POST /v1/canaries`` (:class:`CanaryRequest` -> :class:`Canary`): committed on chain before the answer;
  422 for a shape out of bounds or above ``canaries.max_flops``, 429 above ``canaries.max_per_minute``;
* ``POST /v1/verdicts`` (:class:`Evidence` -> :class:`SignedVerdict`): 422 naming the inconsistent field,
  503 when the workload cannot be judged here (no embedding model);
* ``GET /v1/info``, ``GET /v1/health``, ``GET /metrics`` (Prometheus).

The POST routes need ``Authorization: Bearer <key>`` when ``api_key_sha256`` lists any key. Bodies above
``max_request_bytes`` get 413. Chain failures (the verifier is not staked, the node is down) are 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxima.marketplace.errors import MarketConfigError
from proxima.marketplace.network import MarketNetwork
from proxima.marketplace.verifier.client import VerifierClient
from proxima.marketplace.verifier.protocol import (
    Canary,
    CanaryRequest,
    Evidence,
    Health,
    SignedVerdict,
    VerifierInfo,
)
from proxima.marketplace.verifier.service import (
    CanaryRefusedError,
    EvidenceError,
    JudgementUnavailableError,
    RateLimitedError,
    SentenceEmbedder,
    VerifierService,
)
from proxima.marketplace.verifier.settings import VerifierSettings
from proxima.marketplace.verifier.store import VerifierStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import ChainError, Deployment, RpcChain, dev_accounts
from proxima.sdk.errors import ContractRevertError
from proxima.sdk.jobs import Domains

__all__ = ["KeyLoadError", "build_service", "create_app", "load_key"]

log = logging.getLogger(__name__)


class KeyLoadError(MarketConfigError):
    """The verifier's key cannot be loaded (missing keystore or passphrase, wrong passphrase)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"verifier key: {problem}")


def load_key(settings: VerifierSettings) -> LocalAccount:
    """The verifier's key, from its keystore (passphrase from the environment) or the development accounts.

    Raises:
        KeyLoadError: No key configured, keystore missing or unreadable, passphrase missing or wrong.
    """
    key = settings.key
    if key is None:
        raise KeyLoadError(
            "no key configured: set key.keystore (passphrase in $PROXIMA_VERIFY_PASSPHRASE), or "
            "key.dev_account_index with dev_mode = true on a development chain"
        )
    if key.dev_account_index is not None:
        if not settings.dev_mode:
            raise KeyLoadError("key.dev_account_index needs dev_mode = true (its key is public)")
        return dev_accounts(key.dev_account_index + 1)[key.dev_account_index]
    assert key.keystore is not None
    path = Path(key.keystore)
    try:
        if path.stat().st_mode & 0o077:
            raise KeyLoadError(f"keystore {path} is readable by others; chmod 600 it")
        keystore = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise KeyLoadError(
            f"keystore {path} not found; run `proxima-verify init` or fix key.keystore"
        ) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KeyLoadError(f"keystore {path} cannot be read as JSON ({type(err).__name__})") from err
    passphrase = os.environ.get(key.passphrase_env)
    if not passphrase:
        raise KeyLoadError(f"${key.passphrase_env} is not set; put the keystore's passphrase there")
    try:
        secret = Account.decrypt(keystore, passphrase)
    except ValueError as err:
        raise KeyLoadError(f"cannot decrypt {path}: wrong passphrase in ${key.passphrase_env}") from err
    except (KeyError, TypeError) as err:
        raise KeyLoadError(f"{path} is not an Ethereum keystore (missing {err})") from err
    account: LocalAccount = Account.from_key(secret)
    return account


def connect(settings: VerifierSettings, account: LocalAccount) -> tuple[RpcChain, ProximaContracts]:
    """The chain and the deployment's contracts, checked to belong together.

    Raises:
        DeploymentFileError: If the deployment file is missing or malformed.
        ChainConnectionError: If nothing answers at the chain URL.
        MarketConfigError: If the chain is not the deployment's.
    """
    deployment = Deployment.load(settings.chain.deployment)
    chain = RpcChain(
        settings.chain.url, accounts=[account], request_timeout=settings.chain.request_timeout_seconds
    )
    if chain.chain_id != deployment.chain_id:
        chain.close()
        raise MarketConfigError(
            f"the chain at {settings.chain.url} has id {chain.chain_id} but {settings.chain.deployment} was "
            f"deployed on chain {deployment.chain_id}; fix chain.url or chain.deployment"
        )
    return chain, ProximaContracts.from_deployment(chain, deployment)


def build_service(settings: VerifierSettings) -> tuple[VerifierService, Callable[[], None]]:
    """The real service from the settings: key, chain, store, libp2p network (not started), peers.

    Returns:
        The service and a function closing what it opened (store, chain).

    Raises:
        KeyLoadError: If the key cannot be loaded.
        MarketConfigError: If the chain does not fit the deployment.
        VerifierStoreError: If the database cannot be opened.
    """
    account = load_key(settings)
    chain, contracts = connect(settings, account)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = VerifierStore(settings.db_path)
    except BaseException:
        chain.close()
        raise
    network = None
    if settings.duties.enabled:
        network = MarketNetwork(
            bytes(account.key),
            listen=tuple(settings.p2p.listen),
            bootstrap=tuple(settings.p2p.bootstrap),
            is_staked=contracts.registry.is_active_provider,
            domains=Domains.from_deployment(contracts.deployment),
            ping_interval=settings.p2p.ping_interval_seconds,
        )
    service = VerifierService(
        settings=settings,
        account=account,
        contracts=contracts,
        store=store,
        network=network,
        embedder=SentenceEmbedder() if settings.embed_recompute else None,
        peers=[
            VerifierClient(url, timeout=settings.duties.peer_timeout_seconds) for url in settings.duties.peers
        ],
    )

    def close() -> None:
        store.close()
        chain.close()

    log.info("verifier built", extra={"address": service.address, "chain_id": contracts.deployment.chain_id})
    return service, close


class _UnauthorizedError(Exception):
    """Raised by the auth dependency; answered 401."""


# --- the app ----------------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "service_unavailable"
    return JSONResponse(
        {"error": {"code": code, "message": message, "param": param, "type": kind}}, status_code=status
    )


def create_app(
    service: VerifierService, *, start_duties: bool = False, on_close: Callable[[], None] | None = None
) -> FastAPI:
    """The HTTP API over ``service``.

    Args:
        service: The verifier.
        start_duties: Start the libp2p network and the duty loop with the app (``serve`` does; tests call
            :meth:`VerifierService.duty_round` themselves).
        on_close: Called when the app stops (closes the store and the chain).
    """
    settings = service.settings
    keys = {bytes.fromhex(h) for h in settings.api_key_sha256}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        network = service.network
        try:
            if start_duties and isinstance(network, MarketNetwork):
                await asyncio.to_thread(network.start)
                task = asyncio.create_task(service.run_duties(), name="verifier-duties")
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if start_duties and isinstance(network, MarketNetwork):
                await asyncio.to_thread(network.stop)
            for peer in service.peers:
                await peer.aclose()
            if on_close is not None:
                on_close()

    app = FastAPI(
        title="Proxima verifier",
        version="1.0.0",
        description="A staked verifier: canaries committed on chain, signed verdicts on evidence.",
        lifespan=lifespan,
    )

    async def authorized(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        digest = hashlib.sha256(token.strip().encode()).digest()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(digest, k) for k in keys):
            raise _UnauthorizedError

    @app.middleware("http")
    async def limit_and_count(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_request_bytes):
            response: Response = _error(
                413, "too_large", f"request body above {settings.max_request_bytes} bytes", None
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        service.metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    @app.exception_handler(_UnauthorizedError)
    async def unauthorized(request: Request, exc: _UnauthorizedError) -> JSONResponse:
        response = _error(401, "unauthorized", "missing or unknown API key (Authorization: Bearer <key>)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            param = param or (".".join(loc) or None)
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{'.'.join(loc)}: {message}" if loc else message)
        return _error(422, "invalid_request", "; ".join(problems)[:2000], param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(EvidenceError)
    async def bad_evidence(request: Request, exc: EvidenceError) -> JSONResponse:
        return _error(422, "invalid_evidence", str(exc), exc.param)

    @app.exception_handler(CanaryRefusedError)
    async def canary_refused(request: Request, exc: CanaryRefusedError) -> JSONResponse:
        return _error(422, "canary_too_large", str(exc), exc.param)

    @app.exception_handler(RateLimitedError)
    async def rate_limited(request: Request, exc: RateLimitedError) -> JSONResponse:
        response = _error(429, "rate_limited", str(exc))
        response.headers["Retry-After"] = str(int(exc.retry_after))
        return response

    @app.exception_handler(JudgementUnavailableError)
    async def unavailable(request: Request, exc: JudgementUnavailableError) -> JSONResponse:
        return _error(503, "judgement_unavailable", str(exc))

    @app.exception_handler(ContractRevertError)
    async def reverted(request: Request, exc: ContractRevertError) -> JSONResponse:
        log.warning("chain refused a verifier transaction", extra={"error": str(exc)})
        return _error(503, "chain_refused", f"the chain refused: {exc} (is this verifier staked and active?)")

    @app.exception_handler(ChainError)
    async def chain_down(request: Request, exc: ChainError) -> JSONResponse:
        log.warning("chain unavailable", extra={"error": str(exc)})
        return _error(503, "chain_unavailable", f"the chain is unavailable: {exc}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"path": request.url.path})
        return _error(500, "internal", "internal error (logged by the verifier)")

    @app.post("/v1/canaries", response_model=Canary, dependencies=[Depends(authorized)])
    async def post_canary(body: CanaryRequest) -> Canary:
        """Issue a canary: committed on chain before this answers."""
        return await run_in_threadpool(service.issue_canary, body)

    @app.post("/v1/verdicts", response_model=SignedVerdict, dependencies=[Depends(authorized)])
    async def post_verdict(body: Evidence) -> SignedVerdict:
        """Re-check a result and sign the verdict."""
        return await run_in_threadpool(service.judge, body)

    @app.get("/v1/info", response_model=VerifierInfo)
    async def get_info() -> VerifierInfo:
        """Address, quorums, stake and limits."""
        return await run_in_threadpool(service.info)

    @app.get("/v1/health", response_model=Health)
    async def get_health() -> Health:
        """Liveness and counters."""
        return Health(
            address=service.address,
            canaries_issued=await run_in_threadpool(service.store.count_canaries),
            verdicts_signed=await run_in_threadpool(service.store.count_verdicts),
            duty_rounds=service.duty_rounds,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
