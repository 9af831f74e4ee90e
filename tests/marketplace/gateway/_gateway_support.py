"""Helpers for the gateway's HTTP-layer tests.

What is real here and what stands in:

* real: the FastAPI app, SQLite (the job store and the client accounts, files in ``tmp_path``), the
  authentication, rate limits, budgets, events, metrics; offers signed with real keys; job results computed by
  the provider node's own workload code (numpy matmul, all-MiniLM-L6-v2 embeddings) and receipts signed
  EIP-712 with the provider's key.
* stand-ins, for the parts the HTTP layer talks to: :class:`StaticMarket` (a fixed list of signed offers in
  place of the libp2p offer book and the chain) and :class:`LocalDispatcher` (runs each job in this process
  instead of placing it and sending it to a node over libp2p; it drives the real job store through the same
  transitions the gateway's dispatcher uses, and charges or releases the real budget reservation).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel

from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.app import create_app
from proxima.marketplace.gateway.jobstore import TERMINAL, JobRecord, JobStore
from proxima.marketplace.gateway.services import GatewayServices
from proxima.marketplace.gateway.settings import GatewaySettings, RateLimitSettings
from proxima.marketplace.matching.reliability import ProviderStats
from proxima.sdk.eip712 import Domain, JobReceipt, LocalSigner
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
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.types import Address
from proxima.sdk.workloads import EMBED_MODEL, billing_units, parse_input, result_hash


@pytest.fixture
def anyio_backend() -> str:
    """The gateway runs on asyncio (import this fixture into test modules that use ``pytest.mark.anyio``)."""
    return "asyncio"


ETH = 10**18
UNIT_PRICE = 10**12
"""Unit price of every workload in the test offers (wei)."""
RECEIPT_DOMAIN = Domain("FaultProofs", "1", 31337, "0x" + "11" * 20)


def account(i: int) -> LocalAccount:
    """A deterministic key (``i`` in 1..255)."""
    acct: LocalAccount = Account.from_key(bytes([i]) * 32)
    return acct


def make_offer(
    provider: LocalAccount,
    *,
    region: str = "eu-west",
    country: str = "DE",
    unit_price: int = UNIT_PRICE,
    workloads: Sequence[str] = ("matmul", "embed"),
    now: float | None = None,
) -> SignedOffer:
    """A provider's offer, signed with its key, valid for an hour."""
    issued = int(time.time() if now is None else now)
    peer_id = peer_id_to_base58(peer_id_from_key(bytes(provider.key)))
    offer = Offer(
        provider=provider.address,
        peer_id=peer_id,
        addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{peer_id}",),
        region=region,
        country=country,
        hardware=OfferHardware(cpu_model="test cpu", cpu_cores=8, memory_bytes=16 * 2**30),
        measured=OfferMeasurement(
            benchmark_id="0x" + "ab" * 32, device="cpu", gemm_flops=10**11, mem_bandwidth=10**10
        ),
        workloads=tuple(
            OfferWorkload(name=w, models=(EMBED_MODEL,) if w == "embed" else (), unit_price_wei=unit_price)
            for w in workloads
        ),
        coordinates=OfferCoordinates(vector_us=(1000, 2000), height_us=100, error_ppm=200_000),
        capacity=OfferCapacity(max_concurrency=4, free_slots=4, queue_depth=0),
        issued_at=issued,
        expires_at=issued + 3600,
        seq=1,
    )
    return sign_offer(offer, LocalSigner(provider))


@dataclass
class StaticMarket:
    """A fixed market: signed offers and provider records (stands in for the offer book and chain state)."""

    signed_offers: list[SignedOffer] = field(default_factory=list)
    stats: dict[Address, ProviderStats] = field(default_factory=dict)
    rtts: dict[Address, float] = field(default_factory=dict)
    excluded_now: frozenset[Address] = frozenset()

    def offers(self) -> list[SignedOffer]:
        return list(self.signed_offers)

    def provider_stats(self, provider: Address) -> ProviderStats | None:
        return self.stats.get(provider)

    def measured_rtt(self, provider: Address) -> float | None:
        return self.rtts.get(provider)

    def excluded(self) -> frozenset[Address]:
        return self.excluded_now


Compute = Callable[[str, BaseModel], BaseModel]


class LocalDispatcher:
    """Runs submitted jobs in this process on one provider's offer (see the module docstring).

    Args:
        store: The real job store.
        accounts: The real accounts (charged on success, released on failure or cancel).
        provider: The provider "running" the jobs (its key signs the receipts).
        offer: Its signed offer (region, prices).
        compute: Produces a workload's output (the node's own workload code).
        hold: Jobs wait in ``running`` until :attr:`gate` is set (to watch them live, or cancel them).
        fail: ``(code, message)``: every attempt fails with it and the job fails.
        flaky: Attempts that fail (and fail over) before the one that delivers.
    """

    def __init__(
        self,
        store: JobStore,
        accounts: Accounts,
        provider: LocalAccount,
        offer: SignedOffer,
        compute: Compute,
        *,
        hold: bool = False,
        fail: tuple[str, str] | None = None,
        flaky: int = 0,
    ) -> None:
        self.flaky = flaky
        self.store = store
        self.accounts = accounts
        self.provider = provider
        self.offer = offer
        self.compute = compute
        self.hold = hold
        self.fail = fail
        self.gate = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.submitted: list[str] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)
        self.loop = asyncio.get_running_loop()
        self._tasks[job_id] = self.loop.create_task(self._run(job_id))

    def release(self) -> None:
        """Let held jobs finish (from any thread)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.gate.set)

    async def _run(self, job_id: str) -> None:
        record = self.store.get(job_id)
        assert record is not None
        offer = self.offer.offer
        terms = offer.workload(record.workload)
        assert terms is not None
        inp = parse_input(record.workload, record.input)
        price = billing_units(record.workload, inp) * terms.unit_price_wei
        started = time.perf_counter()
        placement = {
            "chosen": [{"provider": offer.provider, "region": offer.region, "price_wei": str(price)}],
            "backups": [],
            "considered": 1,
            "filtered": {},
        }
        await asyncio.sleep(0)
        self.store.mark_placed(job_id, placement, price)
        for _ in range(self.flaky):  # attempts that fail before the one that delivers: failovers
            n = self.store.start_attempt(
                job_id,
                provider=offer.provider,
                region=offer.region,
                attempt_job_id=job_id,
                payment=record.payment_mode,
                price_wei=price,
            )
            self.store.end_attempt(
                job_id, n, code="timeout", message="no answer in time", failover={"to": "next"}
            )
        n = self.store.start_attempt(
            job_id,
            provider=offer.provider,
            region=offer.region,
            attempt_job_id=job_id,
            payment=record.payment_mode,
            price_wei=price,
        )
        if self.hold:
            await self.gate.wait()
        if self.fail is not None:
            code, message = self.fail
            self.store.end_attempt(job_id, n, code=code, message=message)
            self.store.fail(job_id, code=code, message=message)
            self.accounts.release(job_id)
            return
        computed = time.perf_counter()
        output = await asyncio.to_thread(self.compute, record.workload, inp)
        compute_ms = (time.perf_counter() - computed) * 1000
        receipt = JobReceipt(
            job_id=bytes.fromhex(job_id[2:]),
            provider=offer.provider,
            client=record.client,
            result_hash=result_hash(record.workload, output),
            queue_micros=0,
            compute_micros=int(compute_ms * 1000),
        )
        signed = receipt.sign(LocalSigner(self.provider), RECEIPT_DOMAIN)
        self.store.succeed(
            job_id,
            n,
            result=output.model_dump(mode="json"),
            receipt={
                "message": {
                    k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in receipt.to_message().items()
                },
                "signature": "0x" + signed.signature.to_bytes().hex(),
            },
            provider=offer.provider,
            timing_ms={
                "match": 0.2,
                "compute": compute_ms,
                "total": (time.perf_counter() - started) * 1000,
            },
            price_wei=price,
            charged_wei=price,
        )
        self.accounts.charge(job_id, price)

    async def wait(self, job_id: str, timeout: float) -> JobRecord:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            record = self.store.get(job_id)
            assert record is not None
            if record.status in TERMINAL:
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return record
            events = await self.store.wait_event(job_id, seen, remaining)
            if events:
                seen = events[-1].seq

    def cancel(self, job_id: str) -> bool:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        cancelled = self.store.cancel(job_id)
        self.accounts.release(job_id)
        return cancelled

    async def drain(self) -> None:
        """Wait for every started job task to end."""
        for task in list(self._tasks.values()):
            if not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def numpy_compute(workload: str, inp: BaseModel) -> BaseModel:
    """Outputs from the node's own workload code (matmul with numpy; embed with all-MiniLM-L6-v2)."""
    from proxima.node.workloads.matmul import MatmulWorkload

    if workload == "matmul":
        return MatmulWorkload("cpu").execute(inp)
    return embedder().execute(inp)


_EMBEDDER: Any = None


def embedder() -> Any:
    """The node's embed workload with its model loaded (once per test session: ~5 s)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        from proxima.node.workloads.embed import EmbedWorkload

        workload = EmbedWorkload("cpu")
        workload.load()
        _EMBEDDER = workload
    return _EMBEDDER


@dataclass
class Gateway:
    """An app over real SQLite files with stand-ins for market and dispatcher; keys for two clients."""

    settings: GatewaySettings
    services: GatewayServices
    accounts: Accounts
    store: JobStore
    market: StaticMarket
    dispatcher: LocalDispatcher
    provider: LocalAccount
    app: Any
    client: LocalAccount
    api_key: str
    other: LocalAccount
    other_key: str

    def close(self) -> None:
        self.accounts.close()
        self.store.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def make_gateway(
    tmp_path: Path,
    *,
    budget_wei: int = ETH,
    rate: float = 1000.0,
    burst: int = 1000,
    hold: bool = False,
    fail: tuple[str, str] | None = None,
    offers: Iterable[SignedOffer] | None = None,
    compute: Compute = numpy_compute,
    **settings: Any,
) -> Gateway:
    """A gateway app for HTTP tests (see the module docstring for what is real)."""
    config = GatewaySettings(
        data_dir=tmp_path, rate_limit=RateLimitSettings(requests_per_second=rate, burst=burst), **settings
    )
    accounts = Accounts(config.accounts_path)
    store = JobStore(config.jobs_path)
    provider = account(7)
    offer = make_offer(provider)
    market = StaticMarket(signed_offers=[offer] if offers is None else list(offers))
    dispatcher = LocalDispatcher(store, accounts, provider, offer, compute, hold=hold, fail=fail)
    services = GatewayServices(
        settings=config, accounts=accounts, store=store, dispatcher=dispatcher, market=market
    )
    client, other = account(1), account(2)
    accounts.add_client(client.address, budget_wei)
    accounts.add_client(other.address, budget_wei)
    return Gateway(
        settings=config,
        services=services,
        accounts=accounts,
        store=store,
        market=market,
        dispatcher=dispatcher,
        provider=provider,
        app=create_app(config, services=services),
        client=client,
        api_key=accounts.issue_api_key(client.address),
        other=other,
        other_key=accounts.issue_api_key(other.address),
    )


def matmul_job(m: int = 8, **extra: Any) -> dict[str, Any]:
    """A small seeded matmul job request body."""
    return {"workload": "matmul", "input": {"seed": 7, "m": m, "k": m, "n": m, "dtype": "float32"}, **extra}


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn server on 127.0.0.1 (a free port) in a thread; yields its URL."""
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # asyncio then sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
