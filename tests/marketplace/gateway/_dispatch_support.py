"""Real parts for the dispatcher tests: anvil with the contracts, provider nodes, the gateway's pieces.

* :class:`ProviderWorld`: real provider nodes (``proxima.node`` JobServer on a libp2p peer, its SQLite store,
  its payment checker reading the chain) on one trio thread; a provider can be killed (its host closes) and
  started again on the same store. The only stand-ins are two workloads that are the *node's* collaborators:
  a matmul that hangs until released (a provider that never answers) and one that fails after the job was
  accepted (a provider that takes the payment and does not deliver).
* :class:`StaticMarket`: the dispatcher's market view over offers signed by the providers' keys (the real
  offer book is the network's business, tested beside it) and the real :class:`ChainState`.
* :class:`Gateway`: job store, payer, accounts (the gateway's real ``Accounts``), circuit breakers, matching
  engine, result cache and dispatcher, with the real ``MarketNetwork`` as the job runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.cache import ResultCache
from proxima.marketplace.gateway.dispatch import Dispatcher, DispatchSettings
from proxima.marketplace.gateway.health import HealthSettings, HealthTracker
from proxima.marketplace.gateway.jobstore import JobRecord, JobStore, new_job_id
from proxima.marketplace.gateway.metrics import GatewayMetrics
from proxima.marketplace.gateway.payer import Payer
from proxima.marketplace.gateway.verify import EvidenceFiler, VerificationPolicy, VerifierPool
from proxima.marketplace.matching.engine import MatchingEngine
from proxima.marketplace.matching.snapshot import MarketSnapshot
from proxima.marketplace.matching.spec import MatchingConfig
from proxima.marketplace.network import MarketNetwork
from proxima.node.faults import FaultInjector
from proxima.node.jobserver import JobLimits, JobServer, QuotePolicy
from proxima.node.payments import PaymentChecker
from proxima.node.store import NodeStore
from proxima.node.workloads.base import Workload, WorkloadExecutionError
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, Deployment, RpcChain, SnapshotId
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.jobs import Domains
from proxima.sdk.offers import (
    Offer,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferWorkload,
    SignedOffer,
    sign_offer,
)
from proxima.sdk.p2p import open_peer
from proxima.sdk.peerid import peer_id_from_key
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate
from proxima.sdk.workloads import EmbedInput, EmbedOutput

ETH = 10**18
UNIT_PRICE = 10**12
PROVIDER_STAKE = 10 * ETH
GATEWAY_DEPOSIT = ETH // 10
CLIENT_BUDGET = ETH


# --- chain --------------------------------------------------------------------------------------------------


@dataclass
class Net:
    """Anvil with the contracts; accounts 1-6 are staked providers, 8 is the gateway's payer (with a voucher
    deposit), 9 a client of the gateway."""

    chain: RpcChain
    c: ProximaContracts
    deployment: Deployment
    domains: Domains
    providers: list[LocalAccount]
    payer: LocalAccount
    client: LocalAccount


@contextlib.contextmanager
def anvil_net() -> Iterator[tuple[Net, list[SnapshotId]]]:
    """A module's network: anvil started, contracts deployed, providers staked, the payer's deposit made."""
    with AnvilProcess() as anvil, anvil.connect() as chain:
        deployment = deploy_all(chain, chain.accounts[0])
        c = ProximaContracts.from_deployment(chain, deployment)
        providers = chain.accounts[1:7]
        for provider in providers:
            c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
        payer, client = chain.accounts[8], chain.accounts[9]
        c.vouchers.deposit(payer, GATEWAY_DEPOSIT)
        net = Net(chain, c, deployment, Domains.from_deployment(deployment), providers, payer, client)
        yield net, [chain.snapshot()]


# --- provider nodes -----------------------------------------------------------------------------------------


class HangingMatmul(MatmulWorkload):
    """A matmul that waits until the test releases it (the node accepted the job: payment recorded)."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.release = threading.Event()
        self.entered = threading.Event()

    def execute(self, inp: BaseModel) -> BaseModel:
        self.entered.set()
        if not self.release.wait(timeout=60):
            raise WorkloadExecutionError(self.name, "never released")
        return super().execute(inp)


class CrashingMatmul(MatmulWorkload):
    """A matmul that fails after the node accepted (and was paid for) the job."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.calls = 0

    def execute(self, inp: BaseModel) -> BaseModel:
        self.calls += 1
        raise WorkloadExecutionError(self.name, "the GPU fell off the bus")


@dataclass
class Provider:
    account: LocalAccount
    region: str
    country: str
    coordinate_ms: tuple[float, float]
    workload: MatmulWorkload
    store_path: Path
    max_unredeemed: int
    quotes: QuotePolicy | None = None
    limits: JobLimits | None = None
    faults: FaultInjector | None = None
    """The node's own fault injection (``[faults]``): a dishonest provider."""
    extra: dict[str, Workload] = field(default_factory=dict)
    """Workloads served besides matmul (``embed``), offered at ``UNIT_PRICE``."""
    peer_id: str = ""
    addrs: tuple[str, ...] = ()
    store: NodeStore | None = None
    server: JobServer | None = None
    scope: trio.CancelScope | None = None
    seq: int = 0
    stopped: trio.Event | None = None

    @property
    def address(self) -> Address:
        return Address(self.account.address)

    def signed_offer(self) -> SignedOffer:
        now = int(time.time())
        offer = Offer(
            provider=self.address,
            peer_id=self.peer_id,
            addrs=self.addrs,
            region=self.region,
            country=self.country,
            hardware=OfferHardware(cpu_model="test cpu", cpu_cores=4, memory_bytes=8 * 2**30),
            measured=OfferMeasurement(
                benchmark_id="0x" + "11" * 32, device="cpu", gemm_flops=50 * 10**9, mem_bandwidth=10**10
            ),
            workloads=(
                OfferWorkload(name="matmul", unit_price_wei=UNIT_PRICE),
                *(
                    OfferWorkload(name=name, unit_price_wei=UNIT_PRICE, models=workload.models())
                    for name, workload in sorted(self.extra.items())
                ),
            ),
            coordinates=OfferCoordinates(
                vector_us=(round(self.coordinate_ms[0] * 1000), round(self.coordinate_ms[1] * 1000)),
                height_us=100,
                error_ppm=200_000,
            ),
            capacity=OfferCapacity(max_concurrency=2, free_slots=2, queue_depth=0),
            issued_at=now,
            expires_at=now + 3_600,
            seq=self.seq,
        )
        return sign_offer(offer, LocalSigner(self.account))


class ProviderWorld:
    """Real provider nodes on one trio thread."""

    def __init__(self, net: Net, data_dir: Path) -> None:
        self.net = net
        self.data_dir = data_dir
        self.providers: dict[Address, Provider] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProviderWorld:
        ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main, ready), daemon=True)
        self._thread.start()
        assert ready.wait(10), "the provider world did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        for provider in self.providers.values():
            if isinstance(provider.workload, HangingMatmul):
                provider.workload.release.set()
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._shutdown, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(30)

    def _shutdown(self) -> None:
        assert self._stop is not None
        self._stop.set()

    async def _main(self, ready: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def add(
        self,
        account: LocalAccount,
        *,
        region: str,
        country: str,
        coordinate_ms: tuple[float, float],
        workload: MatmulWorkload | None = None,
        max_unredeemed: int = ETH,
        quotes: QuotePolicy | None = None,
        limits: JobLimits | None = None,
        faults: FaultInjector | None = None,
        extra: dict[str, Workload] | None = None,
    ) -> Provider:
        """Start a provider node (its store under the data dir, kept across :meth:`kill` and
        :meth:`restart`)."""
        provider = Provider(
            account=account,
            region=region,
            country=country,
            coordinate_ms=coordinate_ms,
            workload=workload or MatmulWorkload("cpu"),
            store_path=self.data_dir / f"node-{account.address}.db",
            max_unredeemed=max_unredeemed,
            quotes=quotes,
            limits=limits,
            faults=faults,
            extra=dict(extra or {}),
        )
        self.providers[provider.address] = provider
        self._start(provider)
        return provider

    def _start(self, provider: Provider) -> None:
        assert self._token is not None
        trio.from_thread.run(self._serve_started, provider, trio_token=self._token)

    async def _serve_started(self, provider: Provider) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._serve, provider)

    async def _serve(self, provider: Provider, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        net = self.net
        provider.scope = trio.CancelScope()
        provider.stopped = trio.Event()
        store = NodeStore(provider.store_path)
        try:
            with provider.scope:
                async with open_peer(bytes(provider.account.key), pubsub=False) as peer:
                    payments = PaymentChecker(net.c, provider.address, store, provider.max_unredeemed)
                    server = JobServer(
                        peer,
                        {"matmul": provider.workload, **provider.extra},
                        payments,
                        store,
                        LocalSigner(provider.account),
                        net.domains,
                        provider.limits
                        or JobLimits(max_concurrency=2, max_queue=4, read_timeout=5, job_timeout=20),
                        None,
                        {"matmul": UNIT_PRICE, **{name: UNIT_PRICE for name in provider.extra}},
                        quotes=provider.quotes,
                        faults=provider.faults,
                    )
                    async with trio.open_nursery() as inner:
                        await inner.start(server.run)
                        provider.peer_id = peer.peer_id_b58
                        provider.addrs = tuple(peer.addrs())
                        provider.store = store
                        provider.server = server
                        provider.seq += 1
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            store.close()
            provider.stopped.set()

    def kill(self, provider: Provider) -> None:
        """Stop the node: its host closes, so requests to it fail at the transport."""
        assert self._token is not None
        trio.from_thread.run(self._kill, provider, trio_token=self._token)

    async def _kill(self, provider: Provider) -> None:
        assert provider.scope is not None
        assert provider.stopped is not None
        provider.scope.cancel()
        await provider.stopped.wait()

    def restart(self, provider: Provider) -> None:
        """Start a killed node again on its store (new port, so a new offer)."""
        self._start(provider)

    def jobs_of(self, provider: Provider) -> int:
        """Jobs the node accepted, read from its database file."""
        with NodeStore(provider.store_path) as store:
            return len(store.jobs())


# --- the market ------------------------------------------------------------------------------------------


class StaticMarket:
    """The dispatcher's market view: the providers' signed offers and their records from the chain."""

    def __init__(
        self, world: ProviderWorld, chainstate: ChainState, coordinate_ms: tuple[float, float] = (0, 0)
    ):
        self.world = world
        self.chainstate = chainstate
        self.coordinate = VivaldiCoordinate(
            vector=(coordinate_ms[0] / 1000, coordinate_ms[1] / 1000), height=0.0001
        )
        self.hidden: set[Address] = set()
        self._offers: dict[Address, SignedOffer] = {}

    def refresh(self) -> None:
        """Re-sign every live provider's offer (after a restart changed its address) and read the chain."""
        self._offers = {
            a: p.signed_offer() for a, p in self.world.providers.items() if a not in self.hidden and p.addrs
        }
        self.chainstate.refresh(list(self._offers))

    def snapshot(self) -> MarketSnapshot:
        return MarketSnapshot.build(list(self._offers.values()), self.chainstate.known(), now=time.time())

    def offer(self, provider: Address) -> Offer | None:
        signed = self._offers.get(provider)
        return None if signed is None else signed.offer

    def client_coordinate(self) -> VivaldiCoordinate | None:
        return self.coordinate


# --- the gateway --------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """The gateway's job execution parts over one data directory."""

    net: Net
    market: StaticMarket
    data_dir: Path
    settings: DispatchSettings = field(default_factory=lambda: DispatchSettings(attempt_timeout_s=5.0))
    health_settings: HealthSettings = field(default_factory=HealthSettings)
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    verifiers: list[Any] = field(default_factory=list)
    """Verifier clients (real ``VerifierClient`` or :class:`SigningVerifier`); none: evidence is skipped."""
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    store: JobStore = field(init=False)
    accounts: Accounts = field(init=False)
    payer: Payer = field(init=False)
    health: HealthTracker = field(init=False)
    engine: MatchingEngine = field(init=False)
    cache: ResultCache = field(init=False)
    network: MarketNetwork = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    pool: VerifierPool | None = field(init=False)

    def __post_init__(self) -> None:
        self.store = JobStore(self.data_dir / "jobs.db")
        self.accounts = Accounts(self.data_dir / "accounts.db")
        if self.accounts.get(self.net.client.address) is None:
            self.accounts.add_client(self.net.client.address, CLIENT_BUDGET)
        self.payer = Payer(self.net.payer, self.net.c, self.store)
        self.health = HealthTracker(self.health_settings)
        self.engine = MatchingEngine(MatchingConfig(exploration_share=0.0, backups=3))
        self.cache = ResultCache(self.store, self.net.domains)
        self.network = MarketNetwork(
            secrets.token_bytes(32),
            is_staked=self.net.c.registry.is_active_provider,
            domains=self.net.domains,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.engine,
            self.market,
            self.network,
            self.payer,
            self.accounts,
            self.health,
            self.settings,
            cache=self.cache,
            observations=self.market.chainstate,
            verification=self.policy,
            evidence=None,
            verifiers=None,
            metrics=self.metrics,
        )
        self.pool = VerifierPool(self.verifiers, timeout=20.0) if self.verifiers else None
        if self.pool is not None:
            self.dispatcher.verifiers = self.pool
            self.dispatcher.evidence = EvidenceFiler(
                self.net.c,
                self.net.payer,
                self.pool,
                None,
                self.payer,
                self.net.domains.faults_domain,
                self.net.domains.escrow_domain,
                enabled=self.policy.evidence,
            )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dispatcher]:
        """The network started and the dispatcher running; both stopped after the block."""
        self.network.start()
        task = asyncio.create_task(self.dispatcher.run())
        try:
            yield self.dispatcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.network.stop()

    def close(self) -> None:
        self.store.close()
        self.accounts.close()

    def submit(
        self,
        inp: dict[str, Any],
        *,
        spec: dict[str, Any] | None = None,
        mode: str = "voucher",
        use_cache: bool = True,
        reserve: int | None = None,
        workload: str = "matmul",
        job_id: str | None = None,
    ) -> str:
        """Store and submit a job; ``reserve`` reserves its budget first, as the HTTP layer does."""
        job_id = job_id or new_job_id()
        if reserve is not None:
            self.accounts.reserve(self.net.client.address, job_id, reserve)
        job = self.store.create(
            self.net.client.address, workload, inp, spec or {}, mode, use_cache=use_cache, job_id=job_id
        )
        if reserve is not None:
            self.store.set_ledger(job.id, "reserved", reserved_wei=reserve)
        self.dispatcher.submit(job.id)
        return job.id

    async def finish(self, job_id: str, timeout: float = 30.0) -> JobRecord:
        record = await self.dispatcher.wait(job_id, timeout)
        assert record.finished, f"job still {record.status} after {timeout}s: {record.attempts}"
        return record

    def spent(self) -> int:
        account = self.accounts.get(self.net.client.address)
        assert account is not None
        return account.spent_wei

    def reserved(self) -> int:
        account = self.accounts.get(self.net.client.address)
        assert account is not None
        return account.reserved_wei


def seeded(seed: int, size: int = 16) -> dict[str, Any]:
    return {"seed": seed, "m": size, "k": size, "n": size, "dtype": "float64"}


def price_of(inp: dict[str, Any]) -> int:
    from proxima.sdk.workloads import billing_units, parse_input

    return billing_units("matmul", parse_input("matmul", inp)) * UNIT_PRICE


# --- verifiers ---------------------------------------------------------------------------------------------

VERIFIER_STAKE = 2 * ETH


def register_verifiers(net: Net, accounts: list[LocalAccount]) -> None:
    """Stake ``accounts`` as verifiers (reverted with the test's snapshot)."""
    for account in accounts:
        net.c.registry.register_verifier(account, b"\x22" * 32, VERIFIER_STAKE)


@dataclass
class CanaryIssued:
    """A canary as the verifier protocol describes it (``job_id, input, spec_hash, salt, commitment,
    verifier, expected``)."""

    job_id: str
    workload: str
    input: dict[str, Any]
    spec_hash: str
    salt: str
    commitment: str
    verifier: str
    expected: dict[str, Any]


@dataclass
class SignedVerdictAnswer:
    job_id: str
    result_hash: str
    result_valid: bool
    verifier: str
    signature: str
    detail: str


class SigningVerifier:
    """A staked verifier (the gateway's collaborator, standing in for the ``proxima-verify`` service): it
    re-checks the evidence itself with :mod:`proxima.sdk.verification` (a recomputation for embeddings) and
    signs the verdict in the domain the evidence targets; it commits canaries on chain before issuing them."""

    def __init__(
        self,
        net: Net,
        account: LocalAccount,
        *,
        embed: Any = None,
        canary_ids: Callable[[], bytes] | None = None,
    ) -> None:
        self.net = net
        self.account = account
        self.embed = embed
        self.canary_ids = canary_ids or (lambda: secrets.token_bytes(32))
        self.asked: list[dict[str, Any]] = []
        self.canaries: list[CanaryIssued] = []

    async def verdict(self, evidence: dict[str, Any]) -> SignedVerdictAnswer:
        return await asyncio.to_thread(self._verdict, evidence)

    def _verdict(self, evidence: dict[str, Any]) -> SignedVerdictAnswer:
        from proxima.sdk.eip712 import Verdict
        from proxima.sdk.verification import compare_embeddings, verify_output
        from proxima.sdk.workloads import parse_input, parse_output, result_hash

        self.asked.append(evidence)
        workload = evidence["workload"]
        inp = parse_input(workload, evidence["input"])
        out = parse_output(workload, evidence["output"])
        receipt = evidence["receipt"]
        job_id = bytes.fromhex(receipt["jobId"][2:])
        claimed = bytes.fromhex(receipt["resultHash"][2:])
        valid = result_hash(workload, out) == claimed
        detail = "result hash differs from the receipt's"
        if valid:
            if workload == "embed":
                recomputed = self.embed.execute(inp)
                check = compare_embeddings(out, recomputed)  # type: ignore[arg-type]
            else:
                check = verify_output(workload, inp, out, rounds=32)
            assert check is not None
            valid, detail = check.passed, check.detail
        domain = (
            self.net.domains.escrow_domain
            if evidence["target"] == "escrow"
            else self.net.domains.faults_domain
        )
        verdict = Verdict(job_id=job_id, result_hash=claimed, result_valid=valid)
        signature = verdict.sign(LocalSigner(self.account), domain).signature.to_bytes()
        return SignedVerdictAnswer(
            "0x" + job_id.hex(),
            "0x" + claimed.hex(),
            valid,
            self.account.address,
            "0x" + signature.hex(),
            detail,
        )

    async def canary(self, request: dict[str, Any]) -> CanaryIssued:
        return await asyncio.to_thread(self._canary, request)

    def _canary(self, request: dict[str, Any]) -> CanaryIssued:
        from proxima.sdk.bindings import canary_commitment
        from proxima.sdk.workloads import MatmulOutput, Tensor, matmul_operands, parse_input, spec_hash

        payload = {
            "seed": secrets.randbelow(2**31),
            "m": request["m"],
            "k": request["k"],
            "n": request["n"],
            "dtype": request["dtype"],
        }
        inp = parse_input("matmul", payload)
        a, b = matmul_operands(inp)  # type: ignore[arg-type]
        expected = MatmulOutput(c=Tensor.from_array(a @ b)).model_dump(mode="json")
        job_id, salt = self.canary_ids(), secrets.token_bytes(32)
        spec = spec_hash("matmul", inp)
        commitment = canary_commitment(job_id, spec, salt)
        self.net.c.faults.commit_canary(self.account, commitment)
        issued = CanaryIssued(
            "0x" + job_id.hex(),
            "matmul",
            payload,
            "0x" + spec.hex(),
            "0x" + salt.hex(),
            "0x" + commitment.hex(),
            self.account.address,
            expected,
        )
        self.canaries.append(issued)
        return issued

    async def aclose(self) -> None:
        return None


# --- embed workloads ------------------------------------------------------------------------------------


class SharedEmbed(Workload):
    """The real embed workload (all-MiniLM-L6-v2) of one process, loaded once and shared by several nodes."""

    name = "embed"
    input_model = EmbedInput
    output_model = EmbedOutput

    def __init__(self, model: Any) -> None:
        super().__init__("cpu")
        self.model = model
        self.calls = 0

    def models(self) -> tuple[str, ...]:
        return tuple(self.model.models())

    def estimate(self, inp: BaseModel) -> Any:
        return self.model.estimate(inp)

    def load(self) -> None:
        self.model.load()

    def execute(self, inp: BaseModel) -> BaseModel:
        self.calls += 1
        return self.model.execute(inp)  # type: ignore[no-any-return]

    def result_hash(self, out: BaseModel) -> bytes:
        return self.model.result_hash(out)  # type: ignore[no-any-return]


class LyingEmbed(SharedEmbed):
    """A dishonest embed provider: it returns another unit vector for every text (what a node that skips the
    model, or runs a cheaper one, would return) and signs its receipt for it."""

    def execute(self, inp: BaseModel) -> BaseModel:
        import numpy as np

        from proxima.sdk.workloads import Tensor

        self.calls += 1
        honest = self.model.execute(inp)
        vectors = honest.embeddings.to_array().astype(np.float64)
        rng = np.random.default_rng(self.calls)
        vectors = vectors + 0.2 * rng.standard_normal(vectors.shape)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return EmbedOutput(model=honest.model, embeddings=Tensor.from_array(vectors.astype(np.float32)))


def fresh(gw: Gateway, job: JobRecord) -> JobRecord:
    """The job as stored now (after background work, such as evidence, updated it)."""
    record = gw.store.get(job.id)
    assert record is not None
    return record
