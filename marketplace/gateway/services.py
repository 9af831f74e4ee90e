"""The gateway's parts, built from its settings and started and stopped together.

:class:`GatewayServices` holds everything the HTTP routes use (accounts, job store, dispatcher, a view of the
market, metrics, rate limiter). :meth:`GatewayServices.build` makes the real ones from
:class:`~proxima.marketplace.gateway.settings.GatewaySettings`:

* the payer account (an encrypted keystore, or a public development key in dev mode);
* the chain (JSON-RPC) and the deployment's contracts;
* the client accounts and the job store (SQLite files in ``data_dir``);
* the chain state (provider records, cached), the gateway's libp2p host following offers, the matching
  engine, the circuit breakers, the payer and the dispatcher;
* the verification policy and, for ``verification.verifier_urls``, one
  :class:`~proxima.marketplace.verifier.client.VerifierClient` per verifier (verdicts for evidence on
  chain, canaries), closed when the services stop.

:meth:`GatewayServices.running` starts the background parts (the libp2p thread, the dispatcher task, the chain
state refresher) and stops them in reverse order. Tests build a :class:`GatewayServices` from their own
collaborators instead and pass it to ``create_app(settings, services=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.requests import HTTPConnection

from proxima.audit.indexer import connect
from proxima.audit.service import AuditService
from proxima.audit.store import AuditStore
from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.errors import MarketConfigError, MarketError
from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.cache import ResultCache
from proxima.marketplace.gateway.dispatch import Dispatcher, DispatchSettings
from proxima.marketplace.gateway.health import HealthSettings, HealthTracker
from proxima.marketplace.gateway.jobstore import JobRecord, JobStore
from proxima.marketplace.gateway.metrics import GatewayMetrics
from proxima.marketplace.gateway.payer import Payer
from proxima.marketplace.gateway.ratelimit import TokenBucketLimiter
from proxima.marketplace.gateway.settings import GatewaySettings
from proxima.marketplace.gateway.verify import EvidenceFiler, VerificationPolicy, VerifierPool
from proxima.marketplace.matching.engine import MatchingEngine
from proxima.marketplace.matching.reliability import ProviderStats
from proxima.marketplace.matching.snapshot import MarketSnapshot
from proxima.marketplace.network import MarketNetwork
from proxima.marketplace.verifier.client import VerifierClient
from proxima.marketplace.verifier.protocol import CanaryRequest, Evidence
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Deployment, RpcChain, dev_accounts
from proxima.sdk.jobs import Domains
from proxima.sdk.offers import Offer, SignedOffer
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate

__all__ = [
    "GatewayServices",
    "JobDispatcher",
    "MarketDirectory",
    "NetworkMarket",
    "PayerKeyError",
    "connect_chain",
    "get_accounts",
    "get_dispatcher",
    "get_limiter",
    "get_market",
    "get_metrics",
    "get_services",
    "get_settings",
    "get_store",
    "load_payer_account",
]

log = logging.getLogger(__name__)


class PayerKeyError(MarketConfigError):
    """The payer's key cannot be loaded (missing keystore, passphrase, wrong passphrase).

    Args:
        problem: What is wrong and what to do.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"payer key: {problem}")


class JobDispatcher(Protocol):
    """What the routes need from the dispatcher."""

    def submit(self, job_id: str) -> None:
        """Schedule a stored job."""

    async def wait(self, job_id: str, timeout: float) -> JobRecord:
        """The job once final (or as it is when ``timeout`` passes)."""

    def cancel(self, job_id: str) -> bool:
        """Cancel a job; whether it was cancelled now."""


class MarketDirectory(Protocol):
    """What the routes read about the market: live offers, providers' records, this gateway's experience."""

    def offers(self) -> list[SignedOffer]:
        """Live signed offers, by provider address."""

    def provider_stats(self, provider: Address) -> ProviderStats | None:
        """What the chain (and this gateway) says about a provider, None if never read."""

    def measured_rtt(self, provider: Address) -> float | None:
        """The measured round trip to a provider, seconds."""

    def excluded(self) -> frozenset[Address]:
        """Providers the circuit breakers exclude now."""


BackgroundPart = Callable[[], AbstractAsyncContextManager[None]]
"""A part that runs while the gateway serves: entering starts it, leaving stops it."""


@dataclass
class GatewayServices:
    """Everything the HTTP layer uses.

    Attributes:
        settings: The settings.
        accounts: Client accounts, API keys, budgets.
        store: The job store.
        dispatcher: Runs jobs.
        market: Offers and provider records.
        metrics: Prometheus metrics.
        limiter: Per-client rate limit (from ``settings.rate_limit`` when not given).
        background: Parts started by :meth:`running`, in order (stopped in reverse).
        closers: Called when :meth:`running` ends, after the background parts stopped (close files).
        extra: Other parts kept for inspection (network, chain state, engine, payer), by name.
        audit: The auditor beside the gateway (``/v1/audit``, ``/explorer``); None when disabled.
    """

    settings: GatewaySettings
    accounts: Accounts
    store: JobStore
    dispatcher: JobDispatcher
    market: MarketDirectory
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    limiter: TokenBucketLimiter | None = None
    background: Sequence[BackgroundPart] = ()
    closers: Sequence[Callable[[], None]] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    audit: AuditService | None = None

    def __post_init__(self) -> None:
        market = self.market
        self.metrics.offers.set_function(lambda: float(len(market.offers())))
        if self.limiter is None:
            self.limiter = TokenBucketLimiter(
                self.settings.rate_limit.requests_per_second, self.settings.rate_limit.burst
            )

    @property
    def rate_limiter(self) -> TokenBucketLimiter:
        """The rate limiter (always set after construction)."""
        assert self.limiter is not None
        return self.limiter

    @asynccontextmanager
    async def running(self) -> AsyncIterator[GatewayServices]:
        """Start the background parts; stop them (and close the files) when the block ends."""
        async with contextlib.AsyncExitStack() as stack:
            for close in reversed(self.closers):
                stack.callback(close)
            for part in self.background:
                await stack.enter_async_context(part())
            log.info("gateway services started", extra={"parts": len(self.background)})
            yield self
            log.info("gateway services stopping")

    @classmethod
    def build(cls, settings: GatewaySettings) -> GatewayServices:
        """Build the real services from the settings (nothing is started yet; see :meth:`running`).

        Raises:
            PayerKeyError: If the payer's key cannot be loaded.
            MarketConfigError: If the chain or deployment does not fit the settings.
            ChainConnectionError: If nothing answers at the chain URL.
            DeploymentFileError: If the deployment file is missing or malformed.
            AccountsStoreError: If the accounts database cannot be opened.
            JobStoreError: If the job database cannot be opened.
        """
        payer_account = load_payer_account(settings)
        chain, deployment = connect_chain(settings, payer_account)
        closers: list[Callable[[], None]] = [chain.close]
        try:
            contracts = ProximaContracts.from_deployment(chain, deployment)
            domains = Domains.from_deployment(deployment)
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            accounts = Accounts(settings.accounts_path)
            closers.append(accounts.close)
            store = JobStore(settings.jobs_path)
            closers.append(store.close)
            chainstate = ChainState(contracts, ttl=settings.chainstate_ttl_seconds)
            network = MarketNetwork(
                bytes(payer_account.key),
                listen=tuple(settings.p2p.listen),
                bootstrap=tuple(settings.p2p.bootstrap),
                is_staked=contracts.registry.is_active_provider,
                domains=domains,
                ping_interval=settings.p2p.ping_interval_seconds,
            )
            health = HealthTracker(HealthSettings())
            engine = MatchingEngine(settings.matching)
            market = NetworkMarket(network, chainstate, health)
            payer = Payer(payer_account, contracts, store)
            metrics = GatewayMetrics()
            checks = settings.verification
            pool = None
            if checks.verifier_urls:
                pool = VerifierPool(
                    [
                        VerifierClient(url, timeout=checks.verifier_timeout_seconds)
                        for url in checks.verifier_urls
                    ],
                    timeout=checks.verifier_timeout_seconds,
                    canary_request_model=CanaryRequest,
                )
            audit = None
            if settings.audit.enabled:
                audit_store = AuditStore(settings.audit_path)
                closers.append(audit_store.close)
                audit = AuditService(
                    audit_store,
                    connect(settings.chain.url),
                    deployment,
                    follow=True,
                    follow_interval_s=settings.audit.follow_interval_seconds,
                    confirmations=settings.audit.confirmations,
                    offer_source=network.offers,
                )
            evidence = EvidenceFiler(
                contracts,
                payer_account,
                pool,
                Evidence,
                payer,
                domains.faults_domain,
                domains.escrow_domain,
                enabled=checks.evidence,
            )
            dispatcher = Dispatcher(
                store,
                engine,
                market,
                network,
                payer,
                accounts,
                health,
                DispatchSettings(
                    max_attempts=settings.max_attempts,
                    attempt_timeout_s=settings.attempt_timeout_seconds,
                    job_timeout_s=settings.job_timeout_seconds,
                    capacity_wait_s=settings.capacity_wait_seconds,
                    max_concurrent_jobs=settings.max_concurrent_jobs,
                    deposit_headroom_wei=settings.deposit_headroom_wei,
                    duty_interval_s=settings.duty_interval_seconds,
                ),
                cache=ResultCache(store, domains) if settings.result_cache else None,
                observations=chainstate,
                verification=VerificationPolicy(
                    freivalds_rounds=checks.freivalds_rounds,
                    embed_redundancy=checks.embed_redundancy,
                    canary_rate=checks.canary_rate,
                    evidence=checks.evidence,
                    verifier_timeout_s=checks.verifier_timeout_seconds,
                    embed_tolerance=checks.embed_tolerance,
                    quarantine_s=checks.quarantine_seconds,
                ),
                evidence=evidence,
                verifiers=pool,
                metrics=metrics,
            )
        except BaseException:
            for close in reversed(closers):
                close()
            raise
        log.info(
            "gateway services built",
            extra={
                "payer": payer_account.address,
                "chain_id": deployment.chain_id,
                "data_dir": str(settings.data_dir),
                "verifiers": len(checks.verifier_urls),
                "canary_rate": checks.canary_rate,
                "embed_redundancy": checks.embed_redundancy,
            },
        )
        ttl = settings.chainstate_ttl_seconds
        return cls(
            settings=settings,
            accounts=accounts,
            store=store,
            dispatcher=dispatcher,
            market=market,
            metrics=metrics,
            background=(
                lambda: _closing(pool),  # first in, last out: closed after the dispatcher stopped
                lambda: _network_running(network),
                lambda: _deposited(payer, settings.deposit_headroom_wei),
                lambda: _task_running(_refresh_forever(chainstate, network, ttl), "chainstate-refresher"),
                lambda: _task_running(dispatcher.run(), "dispatcher"),
                lambda: _auditing(audit),
            ),
            closers=tuple(closers),
            audit=audit,
            extra={
                "network": network,
                "chainstate": chainstate,
                "engine": engine,
                "payer": payer,
                "health": health,
                "chain": chain,
                "deployment": deployment,
            },
        )


def load_payer_account(settings: GatewaySettings) -> LocalAccount:
    """The payer's key, from its keystore (passphrase from the environment) or the development accounts.

    Raises:
        PayerKeyError: No payer configured, keystore missing or unreadable, passphrase missing or wrong.
    """
    payer = settings.payer
    if payer is None:
        raise PayerKeyError(
            "no payer configured: set payer.keystore (and the passphrase in $PROXIMA_GATEWAY_PASSPHRASE), "
            "or payer.dev_account_index with dev_mode = true on a development chain"
        )
    if payer.dev_account_index is not None:
        if not settings.dev_mode:
            raise PayerKeyError("payer.dev_account_index needs dev_mode = true (its key is public)")
        return dev_accounts(payer.dev_account_index + 1)[payer.dev_account_index]
    assert payer.keystore is not None
    path = Path(payer.keystore)
    try:
        keystore = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PayerKeyError(f"keystore {path} not found; fix payer.keystore") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayerKeyError(f"keystore {path} cannot be read as JSON ({type(err).__name__})") from err
    passphrase = os.environ.get(payer.passphrase_env)
    if passphrase is None:
        raise PayerKeyError(f"${payer.passphrase_env} is not set; put the keystore's passphrase there")
    try:
        key = Account.decrypt(keystore, passphrase)
    except ValueError as err:
        raise PayerKeyError(
            f"cannot decrypt {path}: wrong passphrase in ${payer.passphrase_env}, or not a keystore"
        ) from err
    except (KeyError, TypeError) as err:
        raise PayerKeyError(f"{path} is not an Ethereum keystore (missing {err})") from err
    account: LocalAccount = Account.from_key(key)
    return account


def connect_chain(settings: GatewaySettings, payer: LocalAccount) -> tuple[RpcChain, Deployment]:
    """Open the chain named by the settings and check it is the deployment's.

    Raises:
        DeploymentFileError: If the deployment file is missing or malformed.
        ChainConnectionError: If nothing answers at the chain URL.
        MarketConfigError: If the chain is not the one the deployment was made on.
    """
    deployment = Deployment.load(settings.chain.deployment)
    chain = RpcChain(
        settings.chain.url, accounts=[payer], request_timeout=settings.chain.request_timeout_seconds
    )
    if chain.chain_id != deployment.chain_id:
        chain.close()
        raise MarketConfigError(
            f"the chain at {settings.chain.url} has id {chain.chain_id} but {settings.chain.deployment} was "
            f"deployed on chain {deployment.chain_id}; fix chain.url or chain.deployment"
        )
    return chain, deployment


# --- dependencies (FastAPI): every route reaches the services through these, tests override them ---------


def get_services(connection: HTTPConnection) -> GatewayServices:
    """The services of the app serving this request."""
    services: GatewayServices = connection.app.state.services
    return services


def get_settings(connection: HTTPConnection) -> GatewaySettings:
    """The gateway's settings."""
    return get_services(connection).settings


def get_accounts(connection: HTTPConnection) -> Accounts:
    """The client accounts."""
    return get_services(connection).accounts


def get_store(connection: HTTPConnection) -> JobStore:
    """The job store."""
    return get_services(connection).store


def get_dispatcher(connection: HTTPConnection) -> JobDispatcher:
    """The dispatcher."""
    return get_services(connection).dispatcher


def get_market(connection: HTTPConnection) -> MarketDirectory:
    """The market view."""
    return get_services(connection).market


def get_metrics(connection: HTTPConnection) -> GatewayMetrics:
    """The metrics."""
    return get_services(connection).metrics


def get_limiter(connection: HTTPConnection) -> TokenBucketLimiter:
    """The rate limiter."""
    return get_services(connection).rate_limiter


# --- the real market view and background parts ---------------------------------------------------------


class NetworkMarket:
    """The market as the gateway's libp2p host and the chain state see it.

    It is the dispatcher's :class:`MarketView` (snapshots for the matching engine) and the routes'
    :class:`MarketDirectory`. Snapshots are rebuilt when the offer book changes, and at most
    ``max_age`` seconds apart otherwise (chain records and measured RTTs change too).

    Args:
        network: The gateway's libp2p host.
        chainstate: Provider records from the chain.
        health: The circuit breakers.
        max_age: Longest a snapshot is reused, seconds.
    """

    def __init__(
        self, network: MarketNetwork, chainstate: ChainState, health: HealthTracker, *, max_age: float = 1.0
    ) -> None:
        self.network = network
        self.chainstate = chainstate
        self.health = health
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cached: tuple[int, float, MarketSnapshot] | None = None

    def offers(self) -> list[SignedOffer]:
        return self.network.offers()

    def snapshot(self) -> MarketSnapshot:
        """The market now, for the matching engine.

        Offers of providers whose stake the chain state shows below the registry's minimum (a slash can
        take it there) are left out at once, though the offer book keeps them until they expire.
        """
        version, now = self.network.book_version, time.monotonic()
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] == version and now - cached[1] < self.max_age:
                return cached[2]
        understaked = self.chainstate.understaked()
        snapshot = MarketSnapshot.build(
            [o for o in self.network.offers() if o.offer.provider not in understaked],
            self.chainstate.known(),
            measured_rtts=self.network.rtts.snapshot(),
            now=time.time(),
        )
        with self._lock:
            self._cached = (version, now, snapshot)
        return snapshot

    def offer(self, provider: Address) -> Offer | None:
        signed = self.network.offer_of(provider)
        return None if signed is None else signed.offer

    def client_coordinate(self) -> VivaldiCoordinate | None:
        return self.network.coordinate()

    def provider_stats(self, provider: Address) -> ProviderStats | None:
        return self.chainstate.known().get(provider)

    def measured_rtt(self, provider: Address) -> float | None:
        return self.network.rtts.get(provider)

    def excluded(self) -> frozenset[Address]:
        return self.health.excluded(time.monotonic())


@asynccontextmanager
async def _network_running(network: MarketNetwork) -> AsyncIterator[None]:
    await asyncio.to_thread(network.start)
    try:
        yield
    finally:
        await asyncio.to_thread(network.stop)


@asynccontextmanager
async def _deposited(payer: Payer, headroom_wei: int) -> AsyncIterator[None]:
    """Fund the voucher deposit before the first job (the duty loop keeps it funded afterwards)."""
    if headroom_wei > 0:

        def top_up() -> int:
            return payer.ensure_deposit(payer.outstanding() + headroom_wei)

        try:
            available = await asyncio.to_thread(top_up)
        except MarketError as err:  # the duty loop retries; voucher jobs are refused until it succeeds
            log.error("cannot fund the voucher deposit at start", extra={"error": str(err)})
        else:
            log.info("voucher deposit ready", extra={"available_wei": available})
    yield


@asynccontextmanager
async def _auditing(audit: AuditService | None) -> AsyncIterator[None]:
    """Follow the chain into the audit index while the gateway serves (the auditor reads the provider
    locations from the offers the gateway follows)."""
    if audit is None:
        yield
        return
    audit.start()
    try:
        yield
    finally:
        await asyncio.to_thread(audit.stop)


@asynccontextmanager
async def _closing(pool: VerifierPool | None) -> AsyncIterator[None]:
    """Close the verifier clients when the gateway stops (after the dispatcher)."""
    try:
        yield
    finally:
        if pool is not None:
            await pool.aclose()


@asynccontextmanager
async def _task_running(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _refresh_forever(chainstate: ChainState, network: MarketNetwork, ttl: float) -> None:
    while True:
        providers = sorted({signed.offer.provider for signed in network.offers()})
        stale = chainstate.stale(providers)
        if stale:
            try:
                await asyncio.to_thread(chainstate.refresh, stale)
            except MarketError as err:  # some reads failed: they keep their old entries, tried again later
                log.warning("chain state refresh incomplete", extra={"error": str(err)})
        await asyncio.sleep(max(0.5, min(ttl / 2, 10.0)))


def _refreshing(
    chainstate: ChainState, network: MarketNetwork, ttl: float
) -> AbstractAsyncContextManager[None]:
    return _task_running(_refresh_forever(chainstate, network, ttl), "chainstate-refresher")
