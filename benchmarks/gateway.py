"""Gateway overhead per request: what the HTTP layer and the dispatcher's bookkeeping cost (nodes instant).

Run ``.venv/bin/python benchmarks/gateway.py [--quick] [--requests N] [--concurrency C] [--json [FILE]]``.

The gateway is the real one, served by uvicorn on 127.0.0.1 in a child process: ``create_app`` with the
client accounts and the job store on SQLite (WAL, ``synchronous=FULL``) in a temporary folder, the matching
engine over 20 signed offers, the real ``Dispatcher`` running in the app's lifespan with the real ``Payer``
(vouchers signed and recorded per attempt; contracts deployed on py-evm in the child for the signing
domains) and ``HealthTracker``. Only the network is replaced, by a runner that answers at once: it computes
the result (numpy matmul, or unit vectors for embeddings) and signs the receipt with the provider's key, so
the dispatcher still verifies every result as it would a node's. The load generator (httpx, in this
process) measures:

* ``GET /healthz``: HTTP and FastAPI alone;
* ``GET /v1/account``: plus API-key authentication, the rate limit and an SQLite read;
* ``POST /v1/jobs`` (API key, then signed requests): parse, authenticate, validate the input, price, reserve
  the budget and store the job (two SQLite commits), schedule it; answered 202 while the dispatcher
  places, pays, verifies and charges in the background of the same process;
* ``POST /v1/embeddings``: a whole synchronous job through the dispatcher (place, sign a voucher, run,
  verify, settle, charge) and back, in OpenAI's shape.

``--http-only`` leaves the dispatcher stopped (accepted jobs stay queued), which separates the HTTP layer's
own cost from the dispatcher's work that shares its process.

Each is run at concurrency 1 (latency p50/p99) and at ``--concurrency`` (throughput). Client and server share
the machine's cores. See docs/GATEWAY.md ("Overhead") for figures. ``--quick`` is a short run that checks the
benchmark works; it exits 1 when a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

OFFERS = 20
UNIT_PRICE = 10**12


# --- the server (child process) ----------------------------------------------------------------------------


class InstantRunner:
    """Stands in for the libp2p network: every provider answers at once with a correct, signed result."""

    def __init__(self, keys: dict[str, LocalAccount], domains: Any) -> None:
        from proxima.sdk.eip712 import LocalSigner

        self.signers = {address: LocalSigner(account) for address, account in keys.items()}
        self.domains = domains

    async def run_job(self, offer: Any, request: Any, *, timeout: float) -> Any:
        from proxima.sdk.eip712 import JobReceipt
        from proxima.sdk.jobs import JobResult
        from proxima.sdk.workloads import (
            EmbedInput,
            EmbedOutput,
            MatmulInput,
            MatmulOutput,
            Tensor,
            matmul_operands,
            parse_input,
            result_hash,
        )

        started = time.perf_counter()
        inp = parse_input(request.workload, request.input)
        if isinstance(inp, MatmulInput):
            a, b = matmul_operands(inp)
            output: Any = MatmulOutput(c=Tensor.from_array(a @ b))
        else:
            assert isinstance(inp, EmbedInput)
            rows = []
            for text in inp.texts:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
                row = np.random.default_rng(seed).standard_normal(384)
                rows.append(row / np.linalg.norm(row))
            vectors = Tensor.from_array(np.array(rows, dtype=np.float32))
            output = EmbedOutput(model=inp.model, embeddings=vectors)
        receipt = JobReceipt(
            job_id=request.job_id,
            provider=request.provider,
            client=request.client,
            result_hash=result_hash(request.workload, output),
            queue_micros=0,
            compute_micros=int((time.perf_counter() - started) * 1e6),
        )
        signed = receipt.sign(self.signers[request.provider], self.domains.faults_domain)
        return JobResult(
            job_id=request.job_id,
            workload=request.workload,
            output=output.model_dump(mode="json", exclude_none=True),
            receipt=receipt,
            signature=signed.signature.to_bytes(),
        )

    async def request_quote(self, offer: Any, request: Any, *, timeout: float) -> Any:
        raise RuntimeError("this benchmark pays with vouchers only")


class StaticMarket:
    """Fixed signed offers: the dispatcher's market view and the routes' directory."""

    def __init__(self, offers: list[Any]) -> None:
        from proxima.marketplace.matching.snapshot import MarketSnapshot

        self.signed = offers
        self.snap = MarketSnapshot.build(offers, {}, now=time.time())

    def snapshot(self) -> Any:
        return self.snap

    def offer(self, provider: str) -> Any:
        return next((s.offer for s in self.signed if s.offer.provider == provider), None)

    def client_coordinate(self) -> Any:
        return None

    def offers(self) -> list[Any]:
        return list(self.signed)

    def provider_stats(self, provider: str) -> Any:
        return None

    def measured_rtt(self, provider: str) -> float | None:
        return None

    def excluded(self) -> frozenset[Any]:
        return frozenset()


def _offer(key: LocalAccount, i: int) -> Any:
    from proxima.sdk.eip712 import LocalSigner
    from proxima.sdk.offers import (
        Offer,
        OfferCapacity,
        OfferCoordinates,
        OfferHardware,
        OfferMeasurement,
        OfferWorkload,
        sign_offer,
    )
    from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
    from proxima.sdk.workloads import EMBED_MODEL

    peer = peer_id_to_base58(peer_id_from_key(bytes(key.key)))
    now = int(time.time())
    offer = Offer(
        provider=key.address,
        peer_id=peer,
        addrs=(f"/ip4/127.0.0.1/tcp/{4000 + i}/p2p/{peer}",),
        region=("eu-west", "us-east", "ap-south", "af-west")[i % 4],
        country=("DE", "US", "IN", "NG")[i % 4],
        hardware=OfferHardware(cpu_model="bench", cpu_cores=16, memory_bytes=64 * 2**30),
        measured=OfferMeasurement(
            benchmark_id="0x" + "cd" * 32, device="cpu", gemm_flops=10**11, mem_bandwidth=10**10
        ),
        workloads=(
            OfferWorkload(name="matmul", unit_price_wei=UNIT_PRICE * (1 + i % 3)),
            OfferWorkload(name="embed", models=(EMBED_MODEL,), unit_price_wei=UNIT_PRICE),
        ),
        coordinates=OfferCoordinates(vector_us=(1000 * i, -500 * i), height_us=200, error_ppm=200_000),
        capacity=OfferCapacity(max_concurrency=64, free_slots=64, queue_depth=0),
        issued_at=now,
        expires_at=now + 24 * 3600,
        seq=1,
    )
    return sign_offer(offer, LocalSigner(key))


@contextlib.asynccontextmanager
async def _dispatching(dispatcher: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def serve(folder: str, ready: Any, dispatch: bool) -> None:
    """Child process: build the gateway and serve it until terminated (without running jobs: HTTP only)."""
    import uvicorn

    from proxima.marketplace.gateway.accounts import Accounts
    from proxima.marketplace.gateway.app import create_app
    from proxima.marketplace.gateway.dispatch import Dispatcher, DispatchSettings
    from proxima.marketplace.gateway.health import HealthTracker
    from proxima.marketplace.gateway.jobstore import JobStore
    from proxima.marketplace.gateway.payer import Payer
    from proxima.marketplace.gateway.services import GatewayServices
    from proxima.marketplace.gateway.settings import GatewaySettings, RateLimitSettings
    from proxima.marketplace.matching.engine import MatchingEngine
    from proxima.sdk.bindings import ProximaContracts
    from proxima.sdk.chain import InProcessChain
    from proxima.sdk.deploy import deploy_all
    from proxima.sdk.jobs import Domains
    from proxima.sdk.logs import configure_logging

    configure_logging("WARNING")
    chain = InProcessChain()
    deployment = deploy_all(chain, chain.accounts[0])
    contracts = ProximaContracts.from_deployment(chain, deployment)
    domains = Domains.from_deployment(deployment)
    keys = {a.address: a for a in (Account.from_key(bytes([i + 1]) * 32) for i in range(OFFERS))}
    market = StaticMarket([_offer(key, i) for i, key in enumerate(keys.values())])
    settings = GatewaySettings(
        data_dir=Path(folder),
        rate_limit=RateLimitSettings(requests_per_second=1e6, burst=1_000_000),
        result_cache=False,
        log_level="WARNING",
    )
    accounts = Accounts(settings.accounts_path)
    store = JobStore(settings.jobs_path)
    dispatcher = Dispatcher(
        store,
        MatchingEngine(settings.matching),
        market,
        InstantRunner(keys, domains),
        Payer(chain.accounts[9], contracts, store),
        accounts,
        HealthTracker(),
        DispatchSettings(max_attempts=2, attempt_timeout_s=10.0),
    )
    services = GatewayServices(
        settings=settings,
        accounts=accounts,
        store=store,
        dispatcher=dispatcher,
        market=market,
        background=(lambda: _dispatching(dispatcher),) if dispatch else (),
    )
    app = create_app(settings, services=services, start_services=True)
    client = Account.from_key(b"\x77" * 32)
    signer = Account.from_key(b"\x78" * 32)
    for who in (client, signer):
        accounts.add_client(who.address, 10**24)
    api_key = accounts.issue_api_key(client.address)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: see cli._bind
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    ready.put(
        {"port": sock.getsockname()[1], "api_key": api_key, "signer_key": "0x" + bytes(signer.key).hex()}
    )
    uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")).run(sockets=[sock])


# --- the load generator ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One scenario at one concurrency."""

    scenario: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float


RequestMaker = Callable[[int], tuple[str, str, bytes | None, dict[str, str]]]


async def measure(
    base: str, name: str, make: RequestMaker, expect: int, requests: int, concurrency: int, warmup: int
) -> Result:
    """Send ``requests`` requests ``concurrency`` at a time; latency per request and overall rate."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        counter = iter(range(10**9))

        async def one() -> float:
            method, path, body, headers = make(next(counter))
            started = time.perf_counter()
            response = await http.request(method, path, content=body, headers=headers)
            elapsed = time.perf_counter() - started
            if response.status_code != expect:
                raise RuntimeError(
                    f"{name}: {method} {path} answered {response.status_code}: {response.text[:300]}"
                )
            return elapsed

        for _ in range(warmup):
            await one()
        latencies: list[float] = []
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await one())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Result(
        scenario=name,
        concurrency=concurrency,
        requests=len(latencies),
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=p99 * 1000,
        requests_per_s=len(latencies) / wall,
    )


def scenarios(api_key: str, signer: LocalAccount, dispatch: bool) -> list[tuple[str, RequestMaker, int]]:
    from proxima.marketplace.gateway.auth import sign_request_headers

    bearer = {"Authorization": f"Bearer {api_key}"}
    json_type = {"Content-Type": "application/json"}

    def job_body(i: int) -> bytes:
        return json.dumps(
            {"workload": "matmul", "input": {"seed": i, "m": 16, "k": 16, "n": 16, "dtype": "float32"}}
        ).encode()

    def healthz(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "GET", "/healthz", None, {}

    def account(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "GET", "/v1/account", None, bearer

    def job(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "POST", "/v1/jobs", job_body(i), {**bearer, **json_type}

    def signed_job(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        body = job_body(10**6 + i)
        return (
            "POST",
            "/v1/jobs",
            body,
            {**sign_request_headers(signer, "POST", "/v1/jobs", body), **json_type},
        )

    def embeddings(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        body = json.dumps({"model": "all-MiniLM-L6-v2", "input": [f"text number {i}", "another"]}).encode()
        return "POST", "/v1/embeddings", body, {**bearer, **json_type}

    listed: list[tuple[str, RequestMaker, int]] = [
        ("GET /healthz", healthz, 200),
        ("GET /v1/account (API key)", account, 200),
        ("POST /v1/jobs (API key) -> 202", job, 202),
        ("POST /v1/jobs (signed) -> 202", signed_job, 202),
    ]
    if dispatch:
        listed.append(("POST /v1/embeddings (whole job)", embeddings, 200))
    return listed


async def run_all(
    base: str,
    api_key: str,
    signer: LocalAccount,
    requests: int,
    concurrency: int,
    warmup: int,
    dispatch: bool,
) -> list[Result]:
    results = []
    for name, make, expect in scenarios(api_key, signer, dispatch):
        for c in sorted({1, concurrency}):
            results.append(await measure(base, name, make, expect, requests, c, warmup))
    return results


def print_table(results: Sequence[Result], console: Console) -> None:
    table = Table(
        title=f"Gateway overhead per request ({os.cpu_count()} cores; client and server share them)"
    )
    for column in ("request", "concurrency", "requests", "p50 ms", "p99 ms", "requests/s"):
        table.add_column(column, justify="left" if column == "request" else "right")
    for r in results:
        table.add_row(
            r.scenario,
            str(r.concurrency),
            str(r.requests),
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.requests_per_s:.0f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per scenario and concurrency")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent requests for throughput")
    parser.add_argument("--warmup", type=int, default=50, help="requests sent before measuring")
    parser.add_argument("--quick", action="store_true", help="30 requests each (checks the benchmark works)")
    parser.add_argument("--json", nargs="?", const="-", help="print JSON (or write it to this file)")
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="do not run the dispatcher: accepted jobs stay queued (the HTTP layer alone; no embeddings)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup = 30, 5
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be >= 1, --warmup >= 0")
    logging.basicConfig(level=logging.WARNING)
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    with tempfile.TemporaryDirectory(prefix="proxima-gateway-bench-") as folder:
        dispatch = not args.http_only
        server = context.Process(target=serve, args=(folder, ready, dispatch), daemon=True)
        server.start()
        try:
            info = ready.get(timeout=120)
            base = f"http://127.0.0.1:{info['port']}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or not server.is_alive():
                    sys.stderr.write("the gateway did not start\n")
                    return 1
                time.sleep(0.1)
            signer = Account.from_key(info["signer_key"])
            try:
                results = asyncio.run(
                    run_all(
                        base, info["api_key"], signer, args.requests, args.concurrency, args.warmup, dispatch
                    )
                )
            except (RuntimeError, httpx.HTTPError) as err:
                sys.stderr.write(f"benchmark failed: {err}\n")
                return 1
        finally:
            server.terminate()
            server.join(10)
    payload = {
        "cores": os.cpu_count(),
        "offers": OFFERS,
        "dispatcher": dispatch,
        "results": [asdict(r) for r in results],
    }
    if args.json == "-":
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        print_table(results, Console())
        if args.json:
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
