"""Real signed offers and job specs for the matching tests."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from proxima.marketplace.matching import JobSpec, ProviderStats
from proxima.sdk.eip712 import LocalSigner
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
from proxima.sdk.vivaldi import VivaldiCoordinate

NOW = 1_750_000_000
TFLOPS = 10**12
GWEI = 10**9


def provider_key(i: int) -> bytes:
    """A deterministic private key per provider index (any int >= 0)."""
    return hashlib.sha256(b"proxima-matching-test-provider" + i.to_bytes(4, "big")).digest()


@functools.cache
def identity(i: int) -> tuple[Address, str]:
    """(address, base58 peer id) of provider ``i``."""
    key = provider_key(i)
    return LocalSigner.from_key(key).address, peer_id_to_base58(peer_id_from_key(key))


def address(i: int) -> Address:
    return identity(i)[0]


def make_offer(
    i: int,
    *,
    seq: int = 1,
    now: int = NOW,
    ttl: int = 120,
    region: str = "eu-west",
    country: str = "DE",
    gpu: str = "NVIDIA H100 80GB HBM3",
    gpu_count: int = 1,
    gpu_memory: int = 80 << 30,
    cpu_cores: int = 16,
    memory: int = 64 << 30,
    flops: int = 100 * TFLOPS,
    prices: dict[str, int] | None = None,
    models: dict[str, tuple[str, ...]] | None = None,
    coordinate: tuple[float, ...] = (0.01, 0.0, 0.0),
    height: float = 0.001,
    free_slots: int = 2,
    max_concurrency: int = 4,
    queue_depth: int = 0,
    **changes: Any,
) -> Offer:
    """An offer of provider ``i`` (a GPU machine in Germany serving matmul and embed by default)."""
    provider, peer_id = identity(i)
    prices = {"matmul": 10 * GWEI, "embed": 5 * GWEI} if prices is None else prices
    models = {"embed": ("all-MiniLM-L6-v2",)} if models is None else models
    hardware = (
        OfferHardware(
            cpu_model="AMD EPYC 7763",
            cpu_cores=cpu_cores,
            memory_bytes=memory,
            gpu_model=gpu,
            gpu_count=gpu_count,
            gpu_memory_bytes=gpu_memory,
        )
        if gpu
        else OfferHardware(cpu_model="AMD EPYC 7763", cpu_cores=cpu_cores, memory_bytes=memory)
    )
    fields: dict[str, Any] = {
        "provider": provider,
        "peer_id": peer_id,
        "addrs": (f"/ip4/127.0.0.1/tcp/{4000 + i % 60000}/p2p/{peer_id}",),
        "region": region,
        "country": country,
        "hardware": hardware,
        "measured": OfferMeasurement(
            benchmark_id="0x" + "ab" * 32,
            device="cuda" if gpu else "cpu",
            gemm_flops=flops,
            mem_bandwidth=2 * 10**12,
        ),
        "workloads": tuple(
            OfferWorkload(name=name, models=models.get(name, ()), unit_price_wei=price)
            for name, price in sorted(prices.items())
        ),
        "coordinates": OfferCoordinates.from_vivaldi(VivaldiCoordinate(coordinate, height, 0.2)),
        "capacity": OfferCapacity(
            max_concurrency=max_concurrency, free_slots=free_slots, queue_depth=queue_depth
        ),
        "issued_at": now,
        "expires_at": now + ttl,
        "seq": seq,
    }
    fields.update(changes)
    return Offer(**fields)


def signed_offer(i: int, **kwargs: Any) -> SignedOffer:
    """``make_offer(i, ...)`` signed with provider ``i``'s key."""
    return sign_offer(make_offer(i, **kwargs), LocalSigner.from_key(provider_key(i)))


def stats(i: int, **counts: int) -> ProviderStats:
    """A record for provider ``i``."""
    return ProviderStats(address=address(i), **counts)


def veteran(i: int, completed: int = 200, **counts: int) -> ProviderStats:
    """A provider with a long clean record and a verifier report matching its claim."""
    counts.setdefault("verified_flops", 10**18)
    return ProviderStats(address=address(i), jobs_completed=completed, **counts)


def job(n: int = 0, **fields: Any) -> JobSpec:
    """A job spec with id derived from ``n``."""
    fields.setdefault("workload", "matmul")
    return JobSpec(job_id=hashlib.sha256(b"job" + n.to_bytes(8, "big")).digest(), **fields)
