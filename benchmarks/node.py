"""Speed of the provider node: hardware benchmark, job round trips, offer gossip and validation, start-up.

Run ``.venv/bin/python benchmarks/node.py [--quick] [--backend inprocess|anvil] [--json out.json]``.

Every part is the real one, in this process: libp2p hosts on 127.0.0.1 (TCP + Noise + Yamux), the node's
``JobServer`` with its ``PaymentChecker`` over contracts deployed on py-evm (or anvil), a SQLite ``NodeStore``
in a temporary directory, the numpy matmul and the all-MiniLM-L6-v2 embedding workloads, gossipsub with an
``OfferValidator`` and a ``StakeCache`` over the registry on every peer. Jobs are paid with vouchers, and each
result is verified by the client (receipt signature, result hash) as ``run_job`` always does.

See docs/BENCHMARKS.md ("Provider node") for the figures and what they mean. ``--quick`` is a short run
(fewer samples, no 1024² matmul, no embedding model) that checks the benchmark works. Exits 1 when a
measurement fails: a job refused or wrong, an offer not delivered, a step raising.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from libp2p.abc import ISubscriptionAPI
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from proxima.node.benchmark import run_benchmark
from proxima.node.hardware import probe_hardware
from proxima.node.jobserver import JobLimits, JobServer
from proxima.node.metrics import NodeMetrics
from proxima.node.payments import PaymentChecker
from proxima.node.store import AcceptedJob, NodeStore
from proxima.node.workloads.base import Workload
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, Chain, InProcessChain, RpcChain
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import LocalSigner, SignedMessage, Voucher
from proxima.sdk.jobclient import check_result, run_job, send_request
from proxima.sdk.jobs import (
    Domains,
    ErrorCode,
    EscrowPayment,
    JobFailure,
    JobRequest,
    JobResult,
    VoucherPayment,
    decode_response,
    encode,
    sign_request,
)
from proxima.sdk.offers import (
    Offer,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferValidator,
    OfferWorkload,
    SignedOffer,
    StakeCache,
    sign_offer,
    subscribe_offers,
)
from proxima.sdk.p2p import OFFER_TOPIC, Peer, open_peer
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate
from proxima.sdk.workloads import (
    MatmulInput,
    MatmulOutput,
    Tensor,
    billing_units,
    canonical_json,
    matmul_operands,
    parse_input,
)

log = logging.getLogger("benchmarks.node")

ETH = 10**18
UNIT_PRICE = 10**12  # wei per billing unit, every workload
DEPOSIT = ETH // 10  # each client's voucher deposit; far above what the benchmark spends
EMBED_TEXTS = (
    "proximity is the product",
    "every 100 ms of round trip is paid dozens of times",
    "a provider advertises its hardware over libp2p",
    "payments settle in solidity contracts",
    "the matching engine places each job on the fastest node",
    "vouchers are redeemed in one transaction for many jobs",
    "canary jobs catch a node that returns wrong answers",
    "a user in Lagos or Jakarta pays for every round trip",
)
GOSSIP_TIMEOUT = 10.0  # seconds for one publication to reach every peer before the run fails


class MeasurementError(Exception):
    """A measurement could not be taken (a refused or wrong job, an offer that was not delivered)."""


# --- statistics -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Samples of one figure and their summary (median, 10th and 90th percentiles, extremes)."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise MeasurementError("a figure has no samples")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def _deciles(self) -> list[float]:
        if len(self.samples) == 1:
            return [self.samples[0]] * 9
        return statistics.quantiles(self.samples, n=10, method="inclusive")

    @property
    def p10(self) -> float:
        return self._deciles()[0]

    @property
    def p90(self) -> float:
        return self._deciles()[8]

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def med(self, digits: int = 2) -> str:
        return f"{self.median:,.{digits}f}"

    def deciles(self, digits: int = 2) -> str:
        return f"{self.p10:,.{digits}f}-{self.p90:,.{digits}f}"

    def range(self, digits: int = 2) -> str:
        return f"{self.low:,.{digits}f}-{self.high:,.{digits}f}"

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.samples),
            "median": self.median,
            "p10": self.p10,
            "p90": self.p90,
            "min": self.low,
            "max": self.high,
        }


def stat(samples: Sequence[float]) -> Stat:
    return Stat(tuple(float(s) for s in samples))


# --- 1. hardware benchmark ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardwareRow:
    """Several ``run_benchmark("cpu")`` runs of one plan: the figures each run attests, and its wall time."""

    plan: str
    gemm_n: int
    copy_mib: int
    gflops: Stat  # each run's median GEMM sample, GFLOP/s
    gbytes: Stat  # each run's median copy sample, GB/s (read + written)
    within_run_spread: Stat  # each run's (max - min) / median of its GEMM samples
    wall_s: Stat


def hardware(runs: int, plans: Sequence[bool]) -> list[HardwareRow]:
    rows = []
    for quick in plans:
        results = []
        for _ in range(runs):
            started = time.perf_counter()
            result = run_benchmark("cpu", quick=quick)
            results.append((result, time.perf_counter() - started))
        first = results[0][0]
        rows.append(
            HardwareRow(
                plan="quick" if quick else "full",
                gemm_n=first.gemm_n,
                copy_mib=first.copy_bytes >> 20,
                gflops=stat([r.gemm_flops / 1e9 for r, _ in results]),
                gbytes=stat([r.mem_bandwidth / 1e9 for r, _ in results]),
                within_run_spread=stat([r.gemm_spread for r, _ in results]),
                wall_s=stat([wall for _, wall in results]),
            )
        )
        log.info("hardware benchmark %s: %s GFLOP/s", rows[-1].plan, rows[-1].gflops.med(1))
    return rows


# --- chain and node --------------------------------------------------------------------------------------


@contextmanager
def open_chain(backend: str) -> Iterator[Chain]:
    if backend == "anvil":
        with AnvilProcess() as anvil, anvil.connect() as rpc:
            yield rpc
    else:
        with InProcessChain() as chain:
            yield chain


def describe(chain: Chain) -> str:
    if isinstance(chain, RpcChain):
        return str(chain.w3.client_version)
    return "py-evm (eth-tester)"


@dataclass
class Net:
    """Deployed contracts: the provider (account 1) is staked, the client (account 4) has a deposit."""

    chain: Chain
    c: ProximaContracts
    provider: LocalAccount
    client: LocalAccount
    domains: Domains

    @classmethod
    def deploy(cls, chain: Chain) -> Net:
        accounts = chain.accounts
        deployment = deploy_all(chain, accounts[0])
        c = ProximaContracts.from_deployment(chain, deployment)
        provider, client = accounts[1], accounts[4]
        c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, 10 * ETH)
        c.vouchers.deposit(client, DEPOSIT)
        return cls(chain, c, provider, client, Domains.from_deployment(deployment))


@dataclass
class Node:
    """A serving JobServer on one peer and a client peer connected to it."""

    net: Net
    server: JobServer
    node: Peer
    client: Peer
    payments: PaymentChecker
    paid: tuple[int, int] = (0, 0)  # the client's cumulative voucher: wei, jobs

    def next_voucher(self, price: int) -> SignedMessage[Voucher]:
        amount, jobs = self.paid
        voucher = Voucher(
            client=self.net.client.address,
            provider=self.net.provider.address,
            cumulative_amount=amount + price,
            cumulative_jobs=jobs + 1,
        )
        return voucher.sign(LocalSigner(self.net.client), self.net.domains.vouchers_domain)

    def request(self, workload: str, inp: dict[str, Any]) -> JobRequest:
        """A signed request paid with the client's next voucher (what a client does before each job)."""
        price = billing_units(workload, parse_input(workload, inp)) * UNIT_PRICE
        signed = self.next_voucher(price)
        self.paid = (signed.message.cumulative_amount, signed.message.cumulative_jobs)
        request = JobRequest(
            job_id=secrets.token_bytes(32),
            client=self.net.client.address,
            provider=self.net.provider.address,
            workload=workload,
            input=inp,
            payment=VoucherPayment(voucher=signed.message, signature=signed.signature.to_bytes()),
            issued_at=int(time.time()),
        )
        return sign_request(request, LocalSigner(self.net.client))


@asynccontextmanager
async def serving(net: Net, data_dir: Path, workloads: dict[str, Workload]) -> AsyncIterator[Node]:
    with NodeStore(data_dir / "node.db") as store:
        payments = PaymentChecker(net.c, net.provider.address, store, max_unredeemed_per_client=DEPOSIT)
        async with (
            open_peer(bytes(net.provider.key), pubsub=False) as node,
            open_peer(secrets.token_bytes(32), pubsub=False) as client,
        ):
            server = JobServer(
                node,
                workloads,
                payments,
                store,
                LocalSigner(net.provider),
                net.domains,
                JobLimits(max_concurrency=1, max_queue=8, job_timeout=120),
                NodeMetrics(tuple(workloads)),
                dict.fromkeys(workloads, UNIT_PRICE),
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                await client.connect(node.addrs()[0])
                yield Node(net, server, node, client, payments)
                nursery.cancel_scope.cancel()


# --- 2. job round trips ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    """Sequential jobs of one kind on one connection; times in milliseconds."""

    label: str
    round_trip: Stat  # run_job: request frame out, node work, answer in, receipt and result hash verified
    queue: Stat | None  # from the receipt
    compute: Stat | None  # from the receipt: the workload's execute()
    overhead: Stat | None  # round trip - compute, per job
    client_check: Stat | None  # check_result() alone: receipt signature, output schema, result hash
    client_prepare: Stat | None  # voucher + request signatures
    response_bytes: int


@dataclass(frozen=True)
class PartRow:
    """One piece of the overhead timed on its own, milliseconds."""

    label: str
    times: Stat


def seeded(n: int, seed: int) -> dict[str, Any]:
    return {"seed": seed, "m": n, "k": n, "n": n, "dtype": "float32"}


async def job_kind(
    env: Node, label: str, workload: str, make_input: Callable[[int], dict[str, Any]], runs: int, warmup: int
) -> tuple[JobRow, JobResult]:
    """``warmup + runs`` jobs one after the other; the first is also checked for the right answer."""
    rtts, queues, computes, overheads, checks, prepares = [], [], [], [], [], []
    size = 0
    for i in range(warmup + runs):
        inp = make_input(i)
        t0 = time.perf_counter()
        request = env.request(workload, inp)
        t1 = time.perf_counter()
        result = await run_job(env.client, env.node.peer_id, request, domains=env.net.domains, timeout=120)
        t2 = time.perf_counter()
        output = check_result(result, request, env.net.domains)
        t3 = time.perf_counter()
        if i == 0:
            verify_output(workload, inp, output)
            size = len(encode(result))
        if i < warmup:
            continue
        rtt = (t2 - t1) * 1000
        rtts.append(rtt)
        queues.append(result.queue_ms)
        computes.append(result.compute_ms)
        overheads.append(rtt - result.compute_ms)
        checks.append((t3 - t2) * 1000)
        prepares.append((t1 - t0) * 1000)
    row = JobRow(
        label,
        stat(rtts),
        stat(queues),
        stat(computes),
        stat(overheads),
        stat(checks),
        stat(prepares),
        size,
    )
    log.info("%s: round trip %s ms, compute %s ms", label, row.round_trip.med(), stat(computes).med())
    return row, result


def verify_output(workload: str, inp: dict[str, Any], output: Any) -> None:
    """The first job of each kind must also be right, not only signed (the client recomputes it)."""
    if workload == "matmul":
        a, b = matmul_operands(MatmulInput.model_validate(inp))
        c = MatmulOutput.model_validate(output).c.to_array()
        if not np.allclose(c, a @ b, rtol=1e-4, atol=1e-3):
            raise MeasurementError(f"the node's product for {inp} is wrong")
    else:
        vectors = output.embeddings.to_array()
        if vectors.shape != (len(inp["texts"]), 384) or not np.allclose(np.linalg.norm(vectors, axis=1), 1):
            raise MeasurementError(f"the node's embeddings have shape {vectors.shape} or are not normalised")


async def refused(env: Node, runs: int, warmup: int) -> JobRow:
    """A signed request for a workload the node does not serve: answered ``unknown_workload``."""
    rtts = []
    size = 0
    for i in range(warmup + runs):
        request = sign_request(
            JobRequest(
                job_id=secrets.token_bytes(32),
                client=env.net.client.address,
                provider=env.net.provider.address,
                workload="teleport",
                input={"x": i},
                payment=EscrowPayment(),
                issued_at=int(time.time()),
            ),
            LocalSigner(env.net.client),
        )
        t0 = time.perf_counter()
        answer = await send_request(env.client, env.node.peer_id, request, timeout=30)
        rtt = (time.perf_counter() - t0) * 1000
        if not isinstance(answer, JobFailure) or answer.code is not ErrorCode.UNKNOWN_WORKLOAD:
            raise MeasurementError(f"expected an unknown_workload failure, got {answer!r}")
        size = len(encode(answer))
        if i >= warmup:
            rtts.append(rtt)
    return JobRow("refused: unknown_workload", stat(rtts), None, None, None, None, None, size)


async def parts(env: Node, runs: int) -> list[PartRow]:
    pings = [await env.client.ping(env.node.peer_id) * 1000 for _ in range(runs + 2)][2:]
    checks = []
    signed = env.next_voucher(UNIT_PRICE)  # not sent: check_voucher records nothing, so it can repeat
    for _ in range(runs + 2):
        t0 = time.perf_counter()
        await trio.to_thread.run_sync(env.payments.check_voucher, signed, env.net.client.address, UNIT_PRICE)
        checks.append((time.perf_counter() - t0) * 1000)
    return [
        PartRow("libp2p ping on the open connection (/ipfs/ping/1.0.0)", stat(pings)),
        PartRow("voucher check on the node (signature + 2 chain reads), in a thread", stat(checks[2:])),
    ]


def answer_pieces(n: int, result: JobResult, runs: int) -> list[PartRow]:
    """What the node's compute and the answer's journey are made of, for the largest matmul, timed alone."""
    inp = MatmulInput.model_validate(seeded(n, 0))
    workload = MatmulWorkload()
    samples: tuple[list[float], ...] = ([], [], [], [], [])
    data = b""
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        a, b = matmul_operands(inp)
        t1 = time.perf_counter()
        c = np.matmul(a, b)
        t2 = time.perf_counter()
        out = MatmulOutput(c=Tensor.from_array(c))
        t3 = time.perf_counter()
        workload.result_hash(out)
        t4 = time.perf_counter()
        data = encode(result)
        if not isinstance(decode_response(data), JobResult):
            raise MeasurementError("the answer did not decode as a result")
        t5 = time.perf_counter()
        for into, took in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            into.append(took * 1000)
    operands, gemm, tensor, hashing, codec = samples
    return [
        PartRow(f"{n}x{n} seeded operands A and B (numpy default_rng, float32)", stat(operands[1:])),
        PartRow(f"np.matmul {n}x{n}x{n} float32 alone", stat(gemm[1:])),
        PartRow(f"Tensor.from_array(C), {n}x{n} float32 to base64", stat(tensor[1:])),
        PartRow("result_hash(C) (keccak over the raw bytes)", stat(hashing[1:])),
        PartRow(f"answer codec: encode(result) + decode_response(), {len(data):,} bytes", stat(codec[1:])),
    ]


def store_costs(data_dir: Path, runs: int, output_bytes: int) -> PartRow:
    """A job's life in a new SQLite store: accept, running, complete with its output (three commits)."""
    samples = []
    with NodeStore(data_dir / f"pieces-{output_bytes}.db") as store:
        for i in range(runs + 2):
            job = AcceptedJob(
                job_id=secrets.token_bytes(32),
                client=Address(LocalSigner.from_key(derived_key("store")).address),
                workload="matmul",
                payment="escrow",
                price=UNIT_PRICE,
                spec_hash=keccak(text=f"spec/{i}"),
                input=canonical_json(seeded(64, i)),
                delivery_deadline=int(time.time()) + 3600,
            )
            t0 = time.perf_counter()
            store.accept_job(job)
            store.mark_running(job.job_id)
            store.complete_job(job.job_id, b"\x01" * 32, b"\x02" * 65, output=b"7" * output_bytes)
            samples.append((time.perf_counter() - t0) * 1000)
    return PartRow(
        f"SQLite: accept + running + complete with a {output_bytes:,}-byte output "
        "(3 commits, synchronous=FULL)",
        stat(samples[2:]),
    )


async def jobs(net: Net, quick: bool, embed: Workload | None) -> tuple[list[JobRow], list[PartRow]]:
    workloads: dict[str, Workload] = {"matmul": MatmulWorkload()}
    if embed is not None:
        workloads["embed"] = embed
    plan = [(64, 5, 1), (256, 3, 1)] if quick else [(64, 30, 3), (256, 30, 3), (1024, 10, 2)]
    with tempfile.TemporaryDirectory(prefix="proxima-bench-") as tmp:
        async with serving(net, Path(tmp), workloads) as env:
            rows = []
            for n, runs, warmup in plan:
                label = f"matmul {n}x{n}x{n} float32 (seeded)"
                row, largest = await job_kind(
                    env, label, "matmul", functools.partial(seeded, n), runs, warmup
                )
                rows.append(row)
            if embed is not None:
                texts = {"model": "all-MiniLM-L6-v2", "texts": list(EMBED_TEXTS)}
                label = f"embed {len(EMBED_TEXTS)} short texts (all-MiniLM-L6-v2)"
                rows.append((await job_kind(env, label, "embed", lambda i: texts, 20, 2))[0])
            rows.append(await refused(env, 5 if quick else 30, 2))
            pieces = await parts(env, 5 if quick else 30)
        n, runs, _ = plan[-1]
        pieces.extend(answer_pieces(n, largest, runs))
        for size in (rows[0].response_bytes, len(encode(largest))):
            pieces.append(store_costs(Path(tmp), runs if size > 10**6 else 5 if quick else 30, size))
        return rows, pieces


# --- 3. offer gossip and validation ----------------------------------------------------------------------


@dataclass(frozen=True)
class GossipRow:
    """Publications of one provider's offer, timed from ``publish`` to each peer's subscription."""

    topology: str
    peers: int
    publications: int
    delivery: Stat  # every (publication, receiving peer) pair, ms
    to_all: Stat  # per publication: until the last peer had it, ms
    by_hops: dict[int, Stat] = field(default_factory=dict)


def derived_key(label: str) -> bytes:
    return keccak(text=f"proxima-benchmark/node/{label}")


@functools.cache
def offer_hardware() -> OfferHardware:
    """This machine, as ``ProviderNode`` puts it in its offers."""
    cpu = probe_hardware().cpu
    return OfferHardware(
        cpu_model=cpu.model[:128], cpu_cores=cpu.logical_threads, memory_bytes=cpu.memory_bytes
    )


def make_offer(key: bytes, addrs: Sequence[str], seq: int, measured: OfferMeasurement) -> Offer:
    """The offer a node publishes (the fields ``ProviderNode`` fills in, with this machine's hardware)."""
    signer = LocalSigner.from_key(key)
    now = int(time.time())
    return Offer(
        provider=signer.address,
        peer_id=_b58(key),
        addrs=tuple(addrs),
        region="eu-west",
        country="DE",
        hardware=offer_hardware(),
        measured=measured,
        workloads=(
            OfferWorkload(name="embed", models=("all-MiniLM-L6-v2",), unit_price_wei=UNIT_PRICE),
            OfferWorkload(name="matmul", unit_price_wei=UNIT_PRICE),
        ),
        coordinates=OfferCoordinates.from_vivaldi(VivaldiCoordinate((0.012, -0.004, 0.001), 0.002, 0.3)),
        capacity=OfferCapacity(max_concurrency=1, free_slots=1, queue_depth=0),
        issued_at=now,
        expires_at=now + 60,
        seq=seq,
    )


def _b58(key: bytes) -> str:
    return peer_id_to_base58(peer_id_from_key(key))


async def _receive(
    subscription: ISubscriptionAPI, index: int, arrivals: dict[tuple[int, int], float]
) -> None:
    while True:
        msg = await subscription.get()
        at = time.perf_counter()
        seq = SignedOffer.from_wire(msg.data).offer.seq
        arrivals.setdefault((seq, index), at)


async def gossip(
    net: Net, topology: str, size: int, publications: int, measured: OfferMeasurement
) -> GossipRow:
    """``size`` peers: the staked provider publishes, ``size - 1`` peers receive.

    Star: every peer bootstraps to a hub; the provider is a leaf, so the hub gets an offer in one hop and the
    other leaves in two. Chain: each peer bootstraps to the one before it; the provider is at one end.
    """
    key = bytes(net.provider.key)
    arrivals: dict[tuple[int, int], float] = {}
    async with AsyncExitStack() as stack:
        peers: list[Peer] = []
        hops: list[int] = []
        if topology == "star":
            hub = await stack.enter_async_context(open_peer(derived_key("hub")))
            peers.append(hub)
            hops.append(1)
            for i in range(size - 2):
                leaf = open_peer(derived_key(f"leaf/{i}"), bootstrap=hub.addrs())
                peers.append(await stack.enter_async_context(leaf))
                hops.append(2)
            provider = await stack.enter_async_context(open_peer(key, bootstrap=hub.addrs()))
        else:
            provider = await stack.enter_async_context(open_peer(key))
            previous = provider
            for i in range(size - 1):
                link = await stack.enter_async_context(
                    open_peer(derived_key(f"link/{i}"), bootstrap=previous.addrs())
                )
                peers.append(link)
                hops.append(i + 1)
                previous = link
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        await subscribe_offers(provider, OfferValidator(StakeCache(net.c.registry.is_active_provider)))
        for index, peer in enumerate(peers):
            validator = OfferValidator(StakeCache(net.c.registry.is_active_provider))
            nursery.start_soon(_receive, await subscribe_offers(peer, validator), index, arrivals)
        await trio.sleep(1.2)  # the mesh forms at the next gossipsub heartbeat (1 s)

        delivery: list[float] = []
        to_all: list[float] = []
        per_hop: dict[int, list[float]] = {}
        warmup = 2
        base_seq = time.time_ns() // 1_000_000
        for p in range(warmup + publications):
            seq = base_seq + p
            data = sign_offer(make_offer(key, provider.addrs(), seq, measured), LocalSigner(net.provider))
            wire = data.to_wire()
            t0 = time.perf_counter()
            await provider.publish(OFFER_TOPIC, wire)
            with trio.move_on_after(GOSSIP_TIMEOUT):
                while not all((seq, i) in arrivals for i in range(len(peers))):
                    await trio.sleep(0.001)
            missing = [i for i in range(len(peers)) if (seq, i) not in arrivals]
            if missing:
                raise MeasurementError(
                    f"{topology} of {size}: offer {p} reached {len(peers) - len(missing)} of {len(peers)} "
                    f"peers within {GOSSIP_TIMEOUT} s"
                )
            if p >= warmup:
                times = [(arrivals[(seq, i)] - t0) * 1000 for i in range(len(peers))]
                delivery.extend(times)
                to_all.append(max(times))
                for i, t in enumerate(times):
                    per_hop.setdefault(hops[i], []).append(t)
            await trio.sleep(0.05)
    row = GossipRow(
        topology,
        size,
        publications,
        stat(delivery),
        stat(to_all),
        {h: stat(v) for h, v in sorted(per_hop.items())},
    )
    log.info("gossip %s of %d: to all %s ms", topology, size, row.to_all.med())
    return row


@dataclass(frozen=True)
class OfferCostRow:
    label: str
    micros: Stat


def offer_costs(net: Net, count: int, measured: OfferMeasurement) -> list[OfferCostRow]:
    """Microseconds per offer: signing it, parsing it, and the whole topic-validator check."""
    key = bytes(net.provider.key)
    signer = LocalSigner(net.provider)
    addrs = [f"/ip4/127.0.0.1/tcp/4001/p2p/{_b58(key)}"]
    cache = StakeCache(net.c.registry.is_active_provider)
    cache(net.provider.address)  # the node asks the chain once per address and ttl
    validator = OfferValidator(cache)
    base = time.time_ns() // 1_000_000
    offers = [make_offer(key, addrs, base + i, measured) for i in range(count)]
    signs, parses, checks = [], [], []
    for offer in offers:
        t0 = time.perf_counter()
        signed = sign_offer(offer, signer)
        t1 = time.perf_counter()
        wire = signed.to_wire()
        t2 = time.perf_counter()
        SignedOffer.from_wire(wire)
        t3 = time.perf_counter()
        validator.check(wire, offer.peer_id_bytes)
        t4 = time.perf_counter()
        signs.append((t1 - t0) * 1e6)
        parses.append((t3 - t2) * 1e6)
        checks.append((t4 - t3) * 1e6)
    if validator.accepted != count:
        raise MeasurementError(f"the validator accepted {validator.accepted} of {count} valid offers")
    size = len(sign_offer(offers[0], signer).to_wire())
    return [
        OfferCostRow(f"sign_offer (canonical JSON + secp256k1), {size} bytes on the wire", stat(signs)),
        OfferCostRow("SignedOffer.from_wire (size, strict model, canonical form)", stat(parses)),
        OfferCostRow("OfferValidator.check (parse + signature recovery + rules, stake cached)", stat(checks)),
    ]


# --- 4. start-up ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartupRow:
    label: str
    millis: Stat


_EMBED_LOAD = """
import time
t0 = time.perf_counter()
from proxima.node.workloads.embed import EmbedWorkload
w = EmbedWorkload()
w.load()
print((time.perf_counter() - t0) * 1000)
"""


def embed_load_fresh(runs: int) -> Stat:
    """``EmbedWorkload().load()`` in fresh processes: torch, sentence-transformers and the weights."""
    samples = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _EMBED_LOAD],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise MeasurementError(f"loading the embedding model failed: {done.stderr.strip()[-500:]}")
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return stat(samples)


async def startup(quick: bool) -> list[StartupRow]:
    runs = 3 if quick else 5
    probes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        probe_hardware()
        probes.append((time.perf_counter() - t0) * 1000)
    stores = []
    with tempfile.TemporaryDirectory(prefix="proxima-bench-") as tmp:
        for i in range(runs):
            t0 = time.perf_counter()
            with NodeStore(Path(tmp) / f"store{i}.db"):
                stores.append((time.perf_counter() - t0) * 1000)
    hosts = []
    for i in range(runs):
        t0 = time.perf_counter()
        async with open_peer(derived_key(f"startup/{i}")):
            hosts.append((time.perf_counter() - t0) * 1000)
    rows = [
        StartupRow("probe_hardware() (CPU, memory, NVML)", stat(probes)),
        StartupRow("NodeStore(path) on a new file (SQLite WAL, schema)", stat(stores)),
        StartupRow("open_peer() until listening (TCP + Noise + Yamux + gossipsub)", stat(hosts)),
    ]
    return rows


# --- output ---------------------------------------------------------------------------------------------


def _table(title: str, columns: Sequence[str], left: int = 1) -> Table:
    table = Table(title=title)
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i < left else "right")
    return table


def hardware_table(rows: list[HardwareRow]) -> Table:
    table = _table(
        "Hardware benchmark: run_benchmark('cpu'), median over runs (min-max)",
        ("plan", "GEMM n", "copy MiB", "runs", "GEMM GFLOP/s", "copy GB/s", "in-run GEMM spread", "wall s"),
    )
    for r in rows:
        spread = r.within_run_spread
        table.add_row(
            r.plan,
            str(r.gemm_n),
            str(r.copy_mib),
            str(len(r.gflops.samples)),
            f"{r.gflops.med(1)} ({r.gflops.range(1)})",
            f"{r.gbytes.med(2)} ({r.gbytes.range(2)})",
            f"{spread.median:.1%} ({spread.low:.1%}-{spread.high:.1%})",
            f"{r.wall_s.med(2)} ({r.wall_s.range(2)})",
        )
    return table


def job_table(rows: list[JobRow], chain: str) -> Table:
    table = _table(
        f"Job round trip over /proxima/job/1.0.0, voucher-paid ({chain}): ms, median (p10-p90)",
        ("job", "runs", "round trip", "node queue", "node compute", "overhead = rtt - compute",
         "client check", "client sign", "answer bytes"),
    )  # fmt: skip
    for r in rows:

        def cell(s: Stat | None, digits: int = 2) -> str:
            return "" if s is None else f"{s.med(digits)} ({s.deciles(digits)})"

        table.add_row(
            r.label,
            str(len(r.round_trip.samples)),
            cell(r.round_trip),
            cell(r.queue, 3),
            cell(r.compute),
            cell(r.overhead),
            cell(r.client_check),
            cell(r.client_prepare),
            f"{r.response_bytes:,}",
        )
    return table


def parts_table(rows: list[PartRow]) -> Table:
    table = _table("Pieces of the overhead: ms, median (p10-p90)", ("what", "runs", "median", "p10-p90"))
    for r in rows:
        table.add_row(r.label, str(len(r.times.samples)), r.times.med(3), r.times.deciles(3))
    return table


def gossip_table(rows: list[GossipRow]) -> Table:
    table = _table(
        "Offer gossip: publish -> delivery to subscribers, one process, ms",
        ("topology", "peers", "publications", "delivery median (p10-p90)", "to all peers median (p10-p90)",
         "to all max", "median by hops"),
    )  # fmt: skip
    for r in rows:
        table.add_row(
            r.topology,
            str(r.peers),
            str(r.publications),
            f"{r.delivery.med()} ({r.delivery.deciles()})",
            f"{r.to_all.med()} ({r.to_all.deciles()})",
            f"{r.to_all.high:.2f}",
            ", ".join(f"{h}: {s.med()}" for h, s in r.by_hops.items()),
        )
    return table


def offer_cost_table(rows: list[OfferCostRow]) -> Table:
    table = _table("Offer validation: µs per offer", ("what", "offers", "median", "p10-p90"))
    for r in rows:
        table.add_row(r.label, str(len(r.micros.samples)), r.micros.med(0), r.micros.deciles(0))
    return table


def startup_table(rows: list[StartupRow]) -> Table:
    table = _table("Start-up pieces: ms, median (min-max)", ("what", "runs", "median", "min-max"))
    for r in rows:
        table.add_row(r.label, str(len(r.millis.samples)), r.millis.med(1), r.millis.range(1))
    return table


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"nproc {len(os.sched_getaffinity(0))}, {model}, Linux {os.uname().release}, "
        f"Python {sys.version.split()[0]}, load average at start {load}"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Stat):
        return {**value.summary(), "samples": list(value.samples)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- main -----------------------------------------------------------------------------------------------


@dataclass
class Results:
    machine: str
    chain: str = ""
    hardware: list[HardwareRow] = field(default_factory=list)
    jobs: list[JobRow] = field(default_factory=list)
    parts: list[PartRow] = field(default_factory=list)
    gossip: list[GossipRow] = field(default_factory=list)
    offers: list[OfferCostRow] = field(default_factory=list)
    startup: list[StartupRow] = field(default_factory=list)
    seconds: float = 0.0


def measure(args: argparse.Namespace) -> Results:
    quick: bool = args.quick
    results = Results(machine())
    started = time.perf_counter()
    results.hardware = hardware(1 if quick else 5, (True,) if quick else (True, False))
    bench = run_benchmark("cpu", quick=True)
    measured = OfferMeasurement(
        benchmark_id="0x" + bench.benchmark_id.hex(),
        device="cpu",
        gemm_flops=bench.gemm_flops,
        mem_bandwidth=bench.mem_bandwidth,
    )
    embed: Workload | None = None
    embed_load: Stat | None = None
    if not quick:
        embed_load = embed_load_fresh(3)
        from proxima.node.workloads.embed import EmbedWorkload

        embed = EmbedWorkload()
        embed.load()

    with open_chain(args.backend) as chain:
        results.chain = describe(chain)
        net = Net.deploy(chain)

        async def network() -> None:
            results.jobs, results.parts = await jobs(net, quick, embed)
            shapes = [("star", 5)] if quick else [("star", 5), ("star", 10), ("chain", 5), ("chain", 10)]
            for topology, size in shapes:
                results.gossip.append(await gossip(net, topology, size, 5 if quick else 20, measured))
            results.startup = await startup(quick)

        trio.run(network)
        results.offers = offer_costs(net, 100 if quick else 1000, measured)
    if embed_load is not None:
        results.startup.append(
            StartupRow("EmbedWorkload().load() in a fresh process (imports torch, reads weights)", embed_load)
        )
    results.seconds = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: fewer samples, no embed, no 1024²")
    parser.add_argument("--backend", choices=["inprocess", "anvil"], default="inprocess", help="chain")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=Console(stderr=True))],
    )
    log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        results = measure(args)
    except Exception:
        log.exception("benchmark failed")
        return 1

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(f"Machine: {results.machine}; chain: {results.chain}")
    console.print(hardware_table(results.hardware))
    console.print(job_table(results.jobs, results.chain))
    console.print(parts_table(results.parts))
    console.print(gossip_table(results.gossip))
    console.print(offer_cost_table(results.offers))
    console.print(startup_table(results.startup))
    console.print(f"Measured in {results.seconds:.1f} s ({'--quick' if args.quick else 'full run'}).")
    if args.json:
        args.json.write_text(json.dumps(_jsonable(results), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
