"""A real market for the client tests: anvil with the contracts, provider nodes behind delaying proxies, a
gateway served by uvicorn, and embedded clients.

* anvil (its own process), contracts deployed, the deployment written to a file (the gateway's and the
  embedded client's settings read it);
* three provider nodes, each on its own trio thread: the node's real ``JobServer`` (matmul, vouchers checked
  on chain, SQLite store) and ``Advertiser`` (signed offers on the gossip topic), each behind a
  :class:`~proxima.marketplace.delayproxy.DelayProxy` that gives it a round trip of 10, 40 or 120 ms. Nodes
  announce the proxy's address, so pings, offers and jobs all go through it: the nearest node is unambiguous;
* a gateway: ``create_app(settings)`` (it builds its real services: libp2p host, chain state, engine,
  dispatcher, payer) served by uvicorn on 127.0.0.1, a client account with an API key added to its SQLite
  file as ``proxima-gateway add-client`` does;
* embedded settings for a client that pays from its own voucher deposit.

Accounts (anvil's dev accounts): 0 deploys, 1-3 are the providers, 7 a gateway client that signs its
requests, 8 the gateway's payer, 9 the embedded client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import uvicorn
from eth_account.signers.local import LocalAccount

from proxima.marketplace.delayproxy import DelayProxy
from proxima.marketplace.embedded import EmbeddedSettings
from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.app import create_app
from proxima.marketplace.gateway.settings import GatewaySettings
from proxima.marketplace.matching.spec import MatchingConfig
from proxima.node.advertiser import Advertiser
from proxima.node.jobserver import JobLimits, JobServer
from proxima.node.payments import PaymentChecker
from proxima.node.store import NodeStore
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, Deployment, RpcChain
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.jobs import Domains
from proxima.sdk.offers import (
    Offer,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferValidator,
    OfferWorkload,
    subscribe_offers,
)
from proxima.sdk.p2p import open_peer
from proxima.sdk.peerid import peer_id_from_key
from proxima.sdk.vivaldi import VivaldiCoordinate

ETH = 10**18
UNIT_PRICE = 10**12
PROVIDER_STAKE = 10 * ETH
CLIENT_BUDGET = ETH
NODES = (
    ("near", "eu-west", "DE", 0.010),
    ("mid", "eu-central", "PL", 0.040),
    ("far", "us-east", "US", 0.120),
)
"""name, region, country, round trip added by the node's proxy (seconds)."""
GATEWAY_PAYER = 8
EMBEDDED_PAYER = 9
SIGNING_CLIENT = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """A provider node on its own trio thread (job server and advertiser) behind a delaying proxy."""

    name: str
    account: LocalAccount
    region: str
    country: str
    rtt: float
    contracts: ProximaContracts
    domains: Domains
    db: Path
    bootstrap: list[str] = field(default_factory=list)
    announced: str = ""
    proxy: DelayProxy | None = None
    _token: trio.lowlevel.TrioToken | None = None
    _stop: trio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    def start(self) -> None:
        port = free_port()
        self.proxy = DelayProxy(("127.0.0.1", port), self.rtt / 2)
        _, proxy_port = self.proxy.start()
        self._listen = f"/ip4/127.0.0.1/tcp/{port}"
        self._announce = f"/ip4/127.0.0.1/tcp/{proxy_port}"
        self._thread = threading.Thread(target=self._run, name=f"node-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"node {self.name} did not start: {self._error!r}")

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self.proxy is not None:
            self.proxy.stop()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as err:  # noqa: BLE001 - reported by start()
            self._error = err
        finally:
            self._ready.set()

    def _offer(self, addrs: list[str], seq: int) -> Offer:
        now = int(time.time())
        return Offer(
            provider=self.account.address,
            peer_id=addrs[0].rsplit("/p2p/", 1)[1],
            addrs=tuple(addrs),
            region=self.region,
            country=self.country,
            hardware=OfferHardware(cpu_model="test cpu", cpu_cores=2, memory_bytes=8 << 30),
            measured=OfferMeasurement(
                benchmark_id="0x" + "00" * 32, device="cpu", gemm_flops=10**10, mem_bandwidth=10**10
            ),
            workloads=(OfferWorkload(name="matmul", unit_price_wei=UNIT_PRICE),),
            coordinates=OfferCoordinates.from_vivaldi(VivaldiCoordinate.origin()),
            capacity=OfferCapacity(max_concurrency=4, free_slots=4, queue_depth=0),
            issued_at=now,
            expires_at=now + 60,
            seq=seq,
        )

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        key = bytes(self.account.key)
        async with (
            open_peer(key, [self._listen], bootstrap=self.bootstrap, announce=[self._announce]) as peer,
            trio.open_nursery() as nursery,
        ):
            self.announced = peer.addrs()[0]
            subscription = await subscribe_offers(peer, OfferValidator(lambda address: True))

            async def drain() -> None:
                while True:
                    await subscription.get()

            nursery.start_soon(drain)
            store = NodeStore(self.db)
            server = JobServer(
                peer,
                {"matmul": MatmulWorkload()},
                PaymentChecker(self.contracts, self.account.address, store, max_unredeemed_per_client=ETH),
                store,
                LocalSigner(self.account),
                self.domains,
                JobLimits(max_concurrency=4, max_queue=64, read_timeout=10, job_timeout=30),
                None,
                {"matmul": UNIT_PRICE},
            )
            await nursery.start(server.run)
            advertiser = Advertiser(
                peer,
                LocalSigner(self.account),
                lambda seq: self._offer(peer.addrs(), seq),
                heartbeat=0.5,
                min_interval=0.05,
            )
            nursery.start_soon(advertiser.run)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                nursery.cancel_scope.cancel()
                store.close()


@dataclass
class Market:
    """anvil, the deployment (also as a file) and the provider nodes."""

    anvil: AnvilProcess
    chain: RpcChain
    contracts: ProximaContracts
    deployment: Deployment
    deployment_path: Path
    nodes: dict[str, Node]

    @property
    def bootstrap(self) -> list[str]:
        """The nodes' announced (proxied) addresses."""
        return [node.announced for node in self.nodes.values()]

    def account(self, index: int) -> LocalAccount:
        return self.chain.accounts[index]

    def nearest_first(self) -> list[str]:
        """Provider addresses, nearest first."""
        return [n.address for n in sorted(self.nodes.values(), key=lambda n: n.rtt)]

    def common_settings(self, data_dir: Path) -> dict[str, Any]:
        return {
            "dev_mode": True,
            "data_dir": data_dir,
            "chain": {"url": self.anvil.url, "deployment": self.deployment_path},
            "p2p": {"bootstrap": self.bootstrap, "ping_interval_seconds": 0.5},
            "matching": MatchingConfig(exploration_share=0.0),
            "attempt_timeout_seconds": 20,
            "capacity_wait_seconds": 5,
            "duty_interval_seconds": 1,
        }

    def embedded_settings(self, data_dir: Path, payer: int = EMBEDDED_PAYER) -> EmbeddedSettings:
        return EmbeddedSettings(**self.common_settings(data_dir), payer={"dev_account_index": payer})


@contextlib.contextmanager
def running_market(
    root: Path, nodes_spec: tuple[tuple[str, str, str, float], ...] = NODES
) -> Iterator[Market]:
    """anvil, contracts, staked providers (``NODES`` by default) running behind their proxies."""
    with AnvilProcess() as anvil, anvil.connect() as chain:
        deployment = deploy_all(chain, chain.accounts[0]).model_copy(update={"rpc_url": anvil.url})
        path = deployment.save(root / "deployment.json")
        contracts = ProximaContracts.from_deployment(chain, deployment)
        domains = Domains.from_deployment(deployment)
        nodes: dict[str, Node] = {}
        try:
            for i, (name, region, country, rtt) in enumerate(nodes_spec):
                account = chain.accounts[1 + i]
                contracts.registry.register(
                    account, peer_id_from_key(bytes(account.key)), b"\x11" * 32, PROVIDER_STAKE
                )
                node = Node(name, account, region, country, rtt, contracts, domains, root / f"{name}.db")
                node.bootstrap = [n.announced for n in nodes.values()]
                node.start()
                nodes[name] = node
            yield Market(anvil, chain, contracts, deployment, path, nodes)
        finally:
            for node in nodes.values():
                node.stop()


@dataclass
class Gateway:
    url: str
    api_key: str
    client: LocalAccount
    signing_client: LocalAccount
    accounts_path: Path

    def account(self, address: str) -> Any:
        with Accounts(self.accounts_path) as accounts:
            return accounts.get(address)


@contextlib.contextmanager
def running_gateway(
    market: Market, data_dir: Path, *, client_budget: int = CLIENT_BUDGET
) -> Iterator[Gateway]:
    """The gateway app (its real services) under uvicorn on 127.0.0.1, with two client accounts."""
    settings = GatewaySettings(
        **market.common_settings(data_dir), payer={"dev_account_index": GATEWAY_PAYER}, port=0
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    client, signing = market.account(3 + 3), market.account(SIGNING_CLIENT)
    with Accounts(settings.accounts_path) as accounts:
        accounts.add_client(client.address, client_budget)
        accounts.add_client(signing.address, client_budget)
        api_key = accounts.issue_api_key(client.address)
    with serve(create_app(settings)) as url:
        yield Gateway(url, api_key, client, signing, settings.accounts_path)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
