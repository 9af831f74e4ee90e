"""Speed of the matching engine: snapshot builds, single placements and batch placements at 1k-100k offers.

Run ``.venv/bin/python benchmarks/matching.py [--quick] [--repeats 5] [--json out.json]``.

The market is synthetic but drawn from real public data (../shared/data, see its SOURCE.txt files):

* providers sit in the 173 countries of the RIPE Atlas country-to-country RTT statistics, as many per country
  as the country has RIPE Atlas pings (a proxy for infrastructure), at the country's centroid (Google DSPL
  canonical countries), with Vivaldi coordinates on a sphere scaled so that antipodes are 254 ms apart plus a
  per-provider height of a few milliseconds; the gateway measured the RTT of 30% of them;
* 75% have a GPU from the iguane table of 33 GPU models (claimed FLOP/s from its FP16 or FP32 peak, memory
  from the table), the others are CPUs of 0.3-3 TFLOP/s; prices grow with throughput, with noise;
* capacity, queues and on-chain records (completed, failed jobs, verifier reports) are random, 10% newcomers;
  reliability and planning throughput come from ``reliability_arrays`` / ``verified_throughput_arrays``.

Jobs: 70% embeddings whose sizes are the prompt token counts of the Azure LLM inference trace (2023,
conversation), 30% matmuls of 256-4096; 30% with a residency list, 30% with a price cap, 40% with a latency
target, 5% redundant; all from one gateway (its coordinate is the client coordinate).

Offers at 1k/10k/100k are built with :meth:`MarketSnapshot.from_arrays` (building 100k validated offers would
take minutes); the build time from real ``Offer`` objects is measured separately at 10k. Every figure is the
median of ``--repeats`` runs with the spread (min-max) beside it; the machine's cores and load are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import gc
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eth_utils.address import to_checksum_address
from rich.console import Console
from rich.table import Table
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from proxima.marketplace.matching import (
    HardwareConstraints,
    JobSpec,
    MarketSnapshot,
    MatchingConfig,
    MatchingEngine,
    NoCandidateError,
    Placement,
    ProviderStats,
    Residency,
    reliability_arrays,
    verified_throughput_arrays,
)
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.offers import (
    Offer,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferWorkload,
)
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NOW = 1_750_000_000
EARTH_RTT_S = 0.127  # seconds of RTT per Earth radius of straight-line distance (2x the fibre speed of light)
EU = ("AT", "BE", "CH", "CZ", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "NL", "NO", "PL", "PT", "SE")
MODELS = ("all-MiniLM-L6-v2", "bge-small")
EMBED_PARAMS = 22_700_000  # all-MiniLM-L6-v2


# --- real public data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    countries: list[str]
    weights: np.ndarray
    latlon: np.ndarray  # degrees, per country
    gpus: list[tuple[str, float, int]]  # name, FLOP/s, bytes
    tokens: np.ndarray
    sources: dict[str, str]


def load_data(shared: Path) -> Data:
    """Countries (RIPE Atlas) with centroids, GPU models (iguane), prompt sizes (Azure trace)."""
    rtt = shared / "latency_ripe_atlas_country" / "country_rtt_stat.csv"
    fallback = ROOT / "tests" / "data" / "ripe_atlas_country_rtt.csv"
    rtt_path = rtt if rtt.exists() else fallback
    pings: dict[str, float] = {}
    with rtt_path.open() as f:
        for row in csv.DictReader(f):
            for c in (row["cty1"], row["cty2"]):
                if len(c) == 2 and c.isascii() and c.isupper():  # skip "None"/"Unknown" (probes not located)
                    pings[c] = pings.get(c, 0.0) + float(row["rtt_cnt"])
    centroids: dict[str, tuple[float, float]] = {}
    centroid_path = shared / "country_centroids" / "country_centroids.csv"
    if centroid_path.exists():
        with centroid_path.open() as f:
            for row in csv.DictReader(f):
                if row["lat"] and row["lon"]:
                    centroids[row["iso2"]] = (float(row["lat"]), float(row["lon"]))
    countries = sorted(c for c in pings if c in centroids) or sorted(pings)
    rng = np.random.default_rng(0)
    latlon = np.array(
        [centroids.get(c, (float(rng.uniform(-60, 70)), float(rng.uniform(-180, 180)))) for c in countries]
    )
    weights = np.array([pings[c] for c in countries])
    gpus: list[tuple[str, float, int]] = []
    gpu_path = shared / "gpu_specs_iguane" / "iguane_gpu_specs.csv"
    if gpu_path.exists():
        with gpu_path.open() as f:
            for row in csv.DictReader(f):
                tflops = float(row["fp16_tflops"] or row["fp32_tflops"])
                gpus.append((row["gpu"], tflops * 1e12, int(float(row["mem_gb"]) * 2**30)))
    else:
        gpus = [
            ("H100-SXM5-80GB", 989e12, 80 << 30),
            ("A100-SXM4-80GB", 312e12, 80 << 30),
            ("RTX-4090", 330e12, 24 << 30),
        ]
    tokens: list[int] = []
    trace = shared / "trace_azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
    if trace.exists():
        with trace.open() as f:
            tokens = [int(row["ContextTokens"]) for row in csv.DictReader(f)]
    if not tokens:
        tokens = [int(x) for x in np.random.default_rng(1).lognormal(6.5, 1.2, 5000)]
    return Data(
        countries=countries,
        weights=weights / weights.sum(),
        latlon=latlon,
        gpus=gpus,
        tokens=np.maximum(np.asarray(tokens), 1),
        sources={
            "rtt": str(rtt_path),
            "centroids": str(centroid_path) if centroid_path.exists() else "random",
            "gpus": str(gpu_path) if gpu_path.exists() else "built-in three",
            "trace": str(trace) if trace.exists() else "lognormal",
        },
    )


def _region(lat: float, lon: float) -> str:
    if lat < -10 and lon > 100:
        return "oc"
    if lon < -30:
        return "na" if lat > 12 else "sa"
    if lon < 60:
        if lat > 35:
            return "eu"
        return "af" if lat < 15 or lon < 35 else "me"
    return "as"


def _unit(latlon: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlon[:, 0]), np.radians(latlon[:, 1])
    return np.stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)), axis=1)


# --- a synthetic market ------------------------------------------------------------------------------------


@dataclass
class MarketColumns:
    """The columns of a market, before it becomes a snapshot."""

    n: int
    country: np.ndarray  # index into data.countries
    vectors: np.ndarray
    heights: np.ndarray
    gpu: np.ndarray  # index into data.gpus, -1 for CPU-only
    claimed: np.ndarray
    price: np.ndarray  # wei per unit (int64)
    serves_embed: np.ndarray
    serves_matmul: np.ndarray
    model_mask: dict[str, np.ndarray]
    max_concurrency: np.ndarray
    free: np.ndarray
    queue: np.ndarray
    stats: list[ProviderStats]
    measured: np.ndarray
    addresses: list[Address] = field(default_factory=list)


def market_columns(data: Data, n: int, seed: int) -> MarketColumns:
    rng = np.random.default_rng(seed)
    country = rng.choice(len(data.countries), size=n, p=data.weights)
    vectors = _unit(data.latlon[country]) * EARTH_RTT_S + rng.normal(0, 0.002, (n, 3))
    heights = rng.lognormal(math.log(0.004), 0.6, n)
    gpu = np.where(rng.random(n) < 0.75, rng.integers(0, len(data.gpus), n), -1)
    peak = np.array([g[1] for g in data.gpus])
    claimed = np.where(
        gpu >= 0, peak[np.maximum(gpu, 0)] * rng.uniform(0.3, 0.7, n), rng.uniform(0.3e12, 3e12, n)
    )
    price = (claimed / 1e12) ** 0.8 * rng.lognormal(0, 0.35, n) * 2e7
    serves_embed = rng.random(n) < 0.8
    serves_matmul = rng.random(n) < 0.7
    serves_embed |= ~serves_matmul  # every offer serves something
    model_mask = {
        MODELS[0]: serves_embed & (rng.random(n) < 0.9),
        MODELS[1]: serves_embed & (rng.random(n) < 0.3),
    }
    max_concurrency = rng.choice(np.array([1, 2, 4, 8]), n, p=[0.2, 0.3, 0.3, 0.2])
    free = rng.binomial(max_concurrency, 0.6)
    queue = np.where(free == 0, rng.poisson(2, n), 0)
    completed = np.where(
        rng.random(n) < 0.1, rng.integers(0, 10, n), rng.lognormal(5, 1.5, n).astype(np.int64)
    )
    fail_rate = rng.beta(1, 30, n)
    verified = rng.random(n) < 0.6
    stats = [
        ProviderStats(
            address=to_checksum_address(hashlib.sha256(b"bench" + i.to_bytes(4, "big")).digest()[:20]),
            jobs_completed=int(completed[i]),
            jobs_failed=int(completed[i] * fail_rate[i]),
            verified_flops=int(claimed[i] * rng.uniform(0.7, 1.0)) if verified[i] else 0,
        )
        for i in range(n)
    ]
    measured = np.where(rng.random(n) < 0.3, 1.0, np.nan)  # filled in relative to the gateway below
    return MarketColumns(
        n=n,
        country=country,
        vectors=vectors,
        heights=heights,
        gpu=gpu,
        claimed=claimed,
        price=price.astype(np.int64),
        serves_embed=serves_embed,
        serves_matmul=serves_matmul,
        model_mask=model_mask,
        max_concurrency=max_concurrency,
        free=free,
        queue=queue,
        stats=stats,
        measured=measured,
        addresses=[s.address for s in stats],
    )


def gateway_coordinate(data: Data, country: str = "DE") -> VivaldiCoordinate:
    index = data.countries.index(country) if country in data.countries else 0
    v = _unit(data.latlon[index : index + 1])[0] * EARTH_RTT_S
    return VivaldiCoordinate(tuple(float(x) for x in v), 0.003, 0.1)


def measured_rtts(columns: MarketColumns, gateway: VivaldiCoordinate, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    predicted = (
        np.linalg.norm(columns.vectors - np.asarray(gateway.vector), axis=1)
        + columns.heights
        + gateway.height
    )
    return np.where(np.isnan(columns.measured), np.nan, predicted * rng.lognormal(0, 0.2, columns.n))


def snapshot_from_columns(
    data: Data, columns: MarketColumns, gateway: VivaldiCoordinate, seed: int
) -> MarketSnapshot:
    n = columns.n
    gpu_names = [data.gpus[g][0] if g >= 0 else "" for g in columns.gpu]
    gpu_memory = np.array([data.gpus[g][2] if g >= 0 else 0 for g in columns.gpu], dtype=np.int64)
    regions = [_region(*data.latlon[c]) for c in columns.country]
    return MarketSnapshot.from_arrays(
        now=NOW,
        addresses=columns.addresses,
        countries=[data.countries[c] for c in columns.country],
        regions=regions,
        workloads={
            "embed": (columns.serves_embed, columns.price // 2, columns.model_mask),
            "matmul": (columns.serves_matmul, columns.price, {}),
        },
        gpu_models=gpu_names,
        gpu_count=(columns.gpu >= 0).astype(np.int64),
        gpu_memory=gpu_memory,
        cpu_cores=np.full(n, 16),
        memory=np.full(n, 64 << 30),
        vectors=columns.vectors,
        heights=columns.heights,
        free_slots=columns.free,
        queue_depth=columns.queue,
        max_concurrency=columns.max_concurrency,
        claimed_flops=columns.claimed,
        reliability=reliability_arrays(columns.stats),
        throughput=verified_throughput_arrays([int(c) for c in columns.claimed], columns.stats),
        jobs_completed=np.array([s.jobs_completed for s in columns.stats]),
        expires_at=np.full(n, NOW + 120),
        measured_rtt=measured_rtts(columns, gateway, seed),
    )


def real_offers(data: Data, columns: MarketColumns) -> list[Offer]:
    """Validated ``Offer`` objects for the same market (real keys, peer ids and addresses)."""
    offers = []
    for i in range(columns.n):
        key = hashlib.sha256(b"bench-key" + i.to_bytes(4, "big")).digest()
        provider = LocalSigner.from_key(key).address
        peer_id = peer_id_to_base58(peer_id_from_key(key))
        g = int(columns.gpu[i])
        hardware = (
            OfferHardware(
                cpu_model="EPYC",
                cpu_cores=16,
                memory_bytes=64 << 30,
                gpu_model=data.gpus[g][0],
                gpu_count=1,
                gpu_memory_bytes=data.gpus[g][2],
            )
            if g >= 0
            else OfferHardware(cpu_model="EPYC", cpu_cores=16, memory_bytes=64 << 30)
        )
        workloads = []
        if columns.serves_embed[i]:
            models = tuple(m for m in MODELS if columns.model_mask[m][i])
            workloads.append(
                OfferWorkload(name="embed", models=models, unit_price_wei=int(columns.price[i] // 2))
            )
        if columns.serves_matmul[i]:
            workloads.append(OfferWorkload(name="matmul", unit_price_wei=int(columns.price[i])))
        c = int(columns.country[i])
        offers.append(
            Offer(
                provider=provider,
                peer_id=peer_id,
                addrs=(f"/ip4/10.0.{i // 250 % 250}.{i % 250}/tcp/4001/p2p/{peer_id}",),
                region=_region(*data.latlon[c]),
                country=data.countries[c],
                hardware=hardware,
                measured=OfferMeasurement(
                    benchmark_id="0x" + "ab" * 32,
                    device="cuda" if g >= 0 else "cpu",
                    gemm_flops=int(columns.claimed[i]),
                    mem_bandwidth=10**12,
                ),
                workloads=tuple(workloads),
                coordinates=OfferCoordinates.from_vivaldi(
                    VivaldiCoordinate(
                        tuple(float(x) for x in columns.vectors[i]), float(columns.heights[i]), 0.2
                    )
                ),
                capacity=OfferCapacity(
                    max_concurrency=int(columns.max_concurrency[i]),
                    free_slots=int(columns.free[i]),
                    queue_depth=int(columns.queue[i]),
                ),
                issued_at=NOW - 10,
                expires_at=NOW + 120,
                seq=1,
            )
        )
    return offers


# --- jobs --------------------------------------------------------------------------------------------------


def synthetic_jobs(
    data: Data, count: int, seed: int, gateway: VivaldiCoordinate, price_ref: float
) -> list[JobSpec]:
    rng = np.random.default_rng(seed)
    specs = []
    for n in range(count):
        job_id = hashlib.sha256(b"bench-job" + seed.to_bytes(4, "big") + n.to_bytes(8, "big")).digest()
        fields: dict[str, Any] = {"job_id": job_id, "client_coordinate": gateway}
        if rng.random() < 0.7:
            tokens = int(rng.choice(data.tokens))
            units = max(1, -(-tokens * 4 // 1000))
            fields.update(
                workload="embed",
                model=MODELS[0] if rng.random() < 0.8 else "",
                units=units,
                flops=2 * EMBED_PARAMS * tokens,
                input_bytes=4 * tokens,
                output_bytes=4 * 384 * max(1, tokens // 256),
            )
            unit_ref = price_ref / 2
        else:
            size = int(rng.choice([256, 512, 1024, 2048, 4096]))
            flops = 2 * size**3
            fields.update(
                workload="matmul",
                units=max(1, -(-flops // 10**9)),
                flops=flops,
                input_bytes=8 * size * size,
                output_bytes=4 * size * size,
            )
            unit_ref = price_ref
        draw = rng.random()
        if draw < 0.15:
            fields["residency"] = Residency(countries=EU)
        elif draw < 0.25:
            fields["residency"] = Residency(countries=(str(rng.choice(["US", "DE", "JP", "BR", "IN"])),))
        elif draw < 0.30:
            fields["residency"] = Residency(regions=(str(rng.choice(["eu", "na", "as"])),))
        if rng.random() < 0.3:
            fields["max_price_wei"] = int(fields["units"] * unit_ref * rng.uniform(1.0, 3.0))
        if rng.random() < 0.4:
            fields["latency_target_s"] = float(rng.uniform(0.1, 1.0))
        if rng.random() < 0.05:
            fields["redundancy"] = int(rng.integers(2, 4))
        if rng.random() < 0.1:
            fields["hardware"] = HardwareConstraints(require_gpu=True, min_gpu_memory_bytes=24 << 30)
        specs.append(JobSpec(**fields))
    return specs


# --- measurements ------------------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    unit: str
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "runs": len(self.values),
        }


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and thread-CPU seconds of ``fn()``."""
    gc.collect()
    start, start_cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - start, time.thread_time() - start_cpu


def single_latencies(
    engine: MatchingEngine, snapshot: MarketSnapshot, specs: Sequence[JobSpec]
) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and thread-CPU seconds per ``place`` call (including its candidates and counts). The CPU
    time leaves out the time the thread waited for a core (other processes on a shared machine)."""
    wall = np.empty(len(specs))
    cpu = np.empty(len(specs))
    for i, spec in enumerate(specs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        with contextlib.suppress(NoCandidateError):
            engine.place(spec, snapshot)
        wall[i] = time.perf_counter() - start
        cpu[i] = time.thread_time() - start_cpu
    return wall, cpu


def batch_quality(data: Data, seed: int) -> dict[str, float]:
    """Total utility of place_batch against the exact optimum (one assignment problem over every job and
    slot) on a small market, for redundancy-1 jobs without exploration."""
    gateway = gateway_coordinate(data)
    columns = market_columns(data, 400, seed)
    snapshot = snapshot_from_columns(data, columns, gateway, seed)
    config = MatchingConfig(exploration_share=0.0)
    specs = [
        s.model_copy(update={"redundancy": 1})
        for s in synthetic_jobs(data, 300, seed, gateway, float(np.median(columns.price)))
    ]
    results = MatchingEngine(config).place_batch(specs, snapshot)
    placed = [r for r in results if isinstance(r, Placement)]
    total = sum(
        r.chosen[0].utility + (config.weight_sum + 1.0) * bool(r.chosen[0].meets_target) for r in placed
    )
    slots = [r for r in range(len(snapshot)) for _ in range(int(snapshot.free_slots[r]))]
    gain = np.full((len(specs), len(slots)), -1e6)
    wide = MatchingEngine(config.model_copy(update={"backups": 32}))
    for j, spec in enumerate(specs):
        seen: dict[int, float] = {}
        while True:
            try:
                p = wide.place(spec, snapshot, exclude=[snapshot.addresses[r] for r in seen])
            except NoCandidateError:
                break
            for c in p.chosen + p.backups:
                seen[snapshot.index[c.provider]] = c.utility + (config.weight_sum + 1.0) * bool(
                    c.meets_target
                )
        for k, r in enumerate(slots):
            if r in seen:
                gain[j, k] = seen[r]
    rows, cols = linear_sum_assignment(-gain)
    ok = gain[rows, cols] > -1e5
    best = float(gain[rows, cols][ok].sum())
    return {
        "jobs": len(specs),
        "placed": len(placed),
        "exact_placed": int(ok.sum()),
        "utility": total,
        "optimum": best,
        "ratio": total / best if best else 1.0,
    }


def uniform_jobs(data: Data, count: int, seed: int, gateway: VivaldiCoordinate) -> list[JobSpec]:
    """One gateway's steady embedding stream: one model, no constraints (one job class)."""
    rng = np.random.default_rng(seed)
    specs = []
    for n in range(count):
        tokens = int(rng.choice(data.tokens))
        specs.append(
            JobSpec(
                job_id=hashlib.sha256(
                    b"bench-uniform" + seed.to_bytes(4, "big") + n.to_bytes(8, "big")
                ).digest(),
                workload="embed",
                model=MODELS[0],
                units=max(1, -(-tokens * 4 // 1000)),
                flops=2 * EMBED_PARAMS * tokens,
                input_bytes=4 * tokens,
                output_bytes=4 * 384 * max(1, tokens // 256),
                client_coordinate=gateway,
            )
        )
    return specs


def bench_build_from_offers(data: Data, gateway: VivaldiCoordinate, n: int, repeats: int) -> Figure:
    columns = market_columns(data, n, seed=1)
    offers = real_offers(data, columns)
    records = {
        o.provider: dataclasses.replace(s, address=o.provider)
        for o, s in zip(offers, columns.stats, strict=True)
    }
    measured = measured_rtts(columns, gateway, 1)
    rtts = {o.provider: float(r) for o, r in zip(offers, measured, strict=True) if r == r}
    times = [
        1e3 * timed(lambda: MarketSnapshot.build(offers, records, measured_rtts=rtts, now=NOW))
        for _ in range(repeats)
    ]
    return Figure(f"build from {n:,} Offer objects", "ms", times)


def bench_single(snapshot: MarketSnapshot, specs: list[JobSpec], n: int, repeats: int) -> list[Figure]:
    engine = MatchingEngine()
    single_latencies(engine, snapshot, specs[:50])  # warm the engine's per-snapshot caches
    p50s, p99s, cpu50s, cpu99s, rates = [], [], [], [], []
    for _ in range(repeats):
        gc.collect()
        wall, cpu = single_latencies(engine, snapshot, specs)
        p50s.append(1e3 * float(np.percentile(wall, 50)))
        p99s.append(1e3 * float(np.percentile(wall, 99)))
        cpu50s.append(1e3 * float(np.percentile(cpu, 50)))
        cpu99s.append(1e3 * float(np.percentile(cpu, 99)))
        rates.append(len(wall) / float(wall.sum()))
    cold = [1e3 * timed(lambda: MatchingEngine().place(specs[0], snapshot)) for _ in range(repeats)]
    return [
        Figure(f"single p50 at {n:,} offers", "ms", p50s),
        Figure(f"single p99 at {n:,} offers", "ms", p99s),
        Figure(f"single p50 at {n:,} offers, thread CPU", "ms", cpu50s),
        Figure(f"single p99 at {n:,} offers, thread CPU", "ms", cpu99s),
        Figure(f"single placements/s at {n:,} offers", "/s", rates),
        Figure(f"single, first of its class at {n:,} offers", "ms", cold),
    ]


def _read_candidates(placed: list[Placement]) -> None:
    for p in placed:
        _ = p.chosen


def bench_batch(
    snapshot: MarketSnapshot, specs: list[JobSpec], label: str, repeats: int
) -> tuple[list[Figure], dict[str, int]]:
    engine = MatchingEngine()
    engine.place_batch(specs[:10], snapshot)  # warm the per-snapshot caches (class views, price orders)
    walls, cpus, reads = [], [], []
    placed: list[Placement] = []
    for _ in range(repeats):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.thread_time()
        results = engine.place_batch(specs, snapshot)
        walls.append(time.perf_counter() - start)
        cpus.append(time.thread_time() - start_cpu)
        placed = [r for r in results if isinstance(r, Placement)]
        reads.append(1e6 * timed(functools.partial(_read_candidates, placed)) / max(len(placed), 1))
    count = len(specs)
    figures = [
        Figure(f"batch {label}", "placements/s", [count / w for w in walls]),
        Figure(f"batch {label}, thread CPU", "placements/s", [count / c for c in cpus]),
        Figure(f"batch {label}, then reading candidates", "µs per placement", reads),
    ]
    return figures, {"placed": len(placed), "refused": count - len(placed)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = load_data(Path(args.data))
    gateway = gateway_coordinate(data)
    repeats = args.repeats
    sizes = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
    batch_sizes = [200] if args.quick else [1000, 10_000]
    singles = 300 if args.quick else 3000
    figures: list[Figure] = [bench_build_from_offers(data, gateway, 1000 if args.quick else 10_000, repeats)]
    notes: dict[str, Any] = {}
    for n in sizes:
        columns = market_columns(data, n, seed=n)
        price_ref = float(np.median(columns.price))
        figures.append(
            Figure(
                f"from_arrays {n:,} offers",
                "ms",
                [
                    1e3 * timed(functools.partial(snapshot_from_columns, data, columns, gateway, n))
                    for _ in range(repeats)
                ],
            )
        )
        snapshot = snapshot_from_columns(data, columns, gateway, n)
        figures += bench_single(snapshot, synthetic_jobs(data, singles, 7, gateway, price_ref), n, repeats)
        for count in batch_sizes:
            mixed = synthetic_jobs(data, count, 11, gateway, price_ref)
            label = f"{count:,} mixed jobs at {n:,} offers"
            more, notes[label] = bench_batch(snapshot, mixed, label, repeats)
            figures += more
            label = f"{count:,} uniform jobs at {n:,} offers"
            more, notes[label] = bench_batch(snapshot, uniform_jobs(data, count, 13, gateway), label, repeats)
            figures += more
    if not args.quick:
        notes["quality"] = batch_quality(data, seed=3)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_1min": os.getloadavg()[0],
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "data": data.sources,
        "repeats": repeats,
        "figures": [f.as_dict() for f in figures],
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the benchmark works")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (median and spread reported)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--data", default=str(SHARED), help="the shared data folder (default ../shared/data)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    report = run(args)
    console = Console()
    machine = report["machine"]
    table = Table(title=f"Matching engine ({machine['affinity']} cores, load {machine['load_1min']:.1f})")
    table.add_column("measurement")
    table.add_column("median", justify="right")
    table.add_column("min - max", justify="right")
    table.add_column("unit")
    for f in report["figures"]:
        fmt = "{:,.0f}" if f["median"] >= 100 else "{:.3f}"
        table.add_row(
            f["name"], fmt.format(f["median"]), f"{fmt.format(f['min'])} - {fmt.format(f['max'])}", f["unit"]
        )
    console.print(table)
    for key, value in report["notes"].items():
        console.print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
