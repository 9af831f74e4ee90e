"""MarketSnapshot: columns from real signed offers (and from arrays), expiry, order independence, exact
prices."""

from __future__ import annotations

import random

import numpy as np
import pytest
from _matching_support import GWEI, NOW, TFLOPS, address, make_offer, signed_offer, stats, veteran

from proxima.marketplace.matching import (
    PRICE_SATURATED,
    MarketSnapshot,
    ProviderStats,
    SnapshotError,
    reliability,
    verified_throughput,
)


def _columns(snapshot: MarketSnapshot) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in [
        "country_codes",
        "region_codes",
        "gpu_codes",
        "gpu_count",
        "gpu_memory",
        "cpu_cores",
        "memory",
        "vectors",
        "dims",
        "heights",
        "free_slots",
        "queue_depth",
        "max_concurrency",
        "claimed_flops",
        "mem_bandwidth",
        "reliability",
        "throughput",
        "jobs_completed",
        "measured_rtt",
        "issued_at",
        "expires_at",
    ]:
        out[name] = np.nan_to_num(getattr(snapshot, name), nan=-1.0).tolist()
    for wname, column in snapshot.workloads.items():
        out[wname] = (column.served.tolist(), column.unit_price.tolist(), sorted(column.models))
    out["addresses"] = snapshot.addresses
    out["names"] = (snapshot.country_names, snapshot.region_names, snapshot.gpu_names)
    return out


def test_build_fromSignedOffers_sortsByAddressAndFillsEveryColumn() -> None:
    offers = [
        signed_offer(0, country="FR", region="eu-west", flops=200 * TFLOPS, free_slots=1, queue_depth=0),
        signed_offer(
            1, country="NG", region="af-west", gpu="", flops=2 * TFLOPS, prices={"matmul": 3 * GWEI}
        ),
        signed_offer(
            2, coordinate=(0.02, -0.01), height=0.004, max_concurrency=8, free_slots=0, queue_depth=5
        ),
    ]
    records = {address(0): veteran(0, verified_flops=150 * TFLOPS), address(2): stats(2, jobs_failed=4)}
    snapshot = MarketSnapshot.build(offers, records, measured_rtts={address(1): 0.042}, now=NOW)

    assert len(snapshot) == 3
    assert list(snapshot.addresses) == sorted(address(i) for i in range(3))
    row = {i: snapshot.row(address(i)) for i in range(3)}
    assert snapshot.country_names[snapshot.country_codes[row[1]]] == "NG"
    assert snapshot.region_names[snapshot.region_codes[row[0]]] == "eu-west"
    assert snapshot.gpu_names[snapshot.gpu_codes[row[1]]] == ""
    assert snapshot.gpu_names[snapshot.gpu_codes[row[0]]] == "nvidia h100 80gb hbm3"
    assert snapshot.gpu_count[row[1]] == 0
    assert snapshot.claimed_flops[row[0]] == 200 * TFLOPS
    # planning throughput: the verified figure (below the claim); unverified claims are discounted
    assert snapshot.throughput[row[0]] == verified_throughput(200 * TFLOPS, records[address(0)])
    assert snapshot.throughput[row[0]] == 150 * TFLOPS
    assert snapshot.throughput[row[1]] == verified_throughput(2 * TFLOPS, ProviderStats(address=address(1)))
    assert snapshot.reliability[row[2]] == pytest.approx(reliability(records[address(2)]))
    assert snapshot.reliability[row[1]] == pytest.approx(2 / 3)  # the prior for a newcomer
    assert snapshot.jobs_completed[row[0]] == 200
    assert snapshot.measured_rtt[row[1]] == 0.042
    assert np.isnan(snapshot.measured_rtt[row[0]])
    assert snapshot.dims[row[2]] == 2
    assert snapshot.vectors[row[2]].tolist() == pytest.approx([0.02, -0.01, 0.0])
    assert snapshot.heights[row[2]] == pytest.approx(0.004)
    capacity = (snapshot.free_slots[row[2]], snapshot.queue_depth[row[2]], snapshot.max_concurrency[row[2]])
    assert tuple(int(x) for x in capacity) == (0, 5, 8)
    matmul, embed = snapshot.workloads["matmul"], snapshot.workloads["embed"]
    assert matmul.unit_price[row[1]] == 3 * GWEI
    assert not embed.served[row[1]]
    assert embed.unit_price[row[1]] == PRICE_SATURATED
    assert embed.unit_price_f[row[1]] == np.inf
    assert embed.models["all-MiniLM-L6-v2"].tolist() == [r != row[1] for r in range(3)]
    with pytest.raises(ValueError, match="read-only"):
        snapshot.free_slots[0] = 9


def test_build_dropsExpiredOffers_andKeepsTheHighestSeq() -> None:
    offers = [
        make_offer(0, now=NOW - 200, ttl=100),  # expired
        make_offer(1, seq=1, free_slots=1),
        make_offer(1, seq=3, free_slots=3),
        make_offer(1, seq=2, free_slots=2),
        make_offer(2, now=NOW - 10, ttl=10),  # expires exactly now: gone
    ]
    snapshot = MarketSnapshot.build(offers, {}, now=NOW)
    assert snapshot.addresses == (address(1),)
    assert snapshot.free_slots.tolist() == [3]


def test_build_isIndependentOfOfferOrder() -> None:
    offers = [
        make_offer(i, free_slots=i % 3, flops=(i + 1) * TFLOPS, country=("DE", "FR", "US")[i % 3])
        for i in range(12)
    ]
    records = {address(i): stats(i, jobs_completed=i) for i in range(0, 12, 2)}
    rtts = {address(3): 0.05, address(8): 0.2}
    first = MarketSnapshot.build(offers, records, measured_rtts=rtts, now=NOW)
    shuffled = offers[:]
    random.Random(7).shuffle(shuffled)
    second = MarketSnapshot.build(
        shuffled,
        dict(reversed(list(records.items()))),
        measured_rtts=dict(reversed(list(rtts.items()))),
        now=NOW,
    )
    assert _columns(first) == _columns(second)


def test_build_keepsPricesBeyondInt64Exact() -> None:
    huge = 2**200 + 12345
    snapshot = MarketSnapshot.build([make_offer(0, prices={"matmul": huge})], {}, now=NOW)
    column = snapshot.workloads["matmul"]
    assert column.unit_price[0] == PRICE_SATURATED
    assert column.exact_price(0) == huge
    assert column.unit_price_f[0] == float(huge)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True, "0.1"])
def test_build_rejectsBadMeasuredRtt(bad: object) -> None:
    with pytest.raises(SnapshotError, match="measured RTT"):
        MarketSnapshot.build([make_offer(0)], {}, measured_rtts={address(0): bad}, now=NOW)  # type: ignore[dict-item]


def test_build_rejectsNonFiniteNow() -> None:
    with pytest.raises(SnapshotError, match="now must be finite"):
        MarketSnapshot.build([], {}, now=float("nan"))


def _arrays(n: int, **changes: object) -> dict[str, object]:
    served = np.ones(n, dtype=bool)
    fields: dict[str, object] = {
        "now": 100.0,
        "addresses": [address(i) for i in range(n)],
        "countries": ["DE"] * n,
        "regions": ["eu"] * n,
        "workloads": {"embed": (served, np.arange(n, dtype=np.int64) + 1, {"m": served})},
        "gpu_models": ["A100"] * n,
        "gpu_count": np.ones(n),
        "gpu_memory": np.full(n, 40 << 30),
        "cpu_cores": np.full(n, 8),
        "memory": np.full(n, 32 << 30),
        "vectors": np.zeros((n, 2)),
        "heights": np.full(n, 0.001),
        "free_slots": np.ones(n),
        "queue_depth": np.zeros(n),
        "max_concurrency": np.full(n, 2),
        "claimed_flops": np.full(n, 1e12),
        "reliability": np.full(n, 0.9),
        "throughput": np.full(n, 5e11),
        "jobs_completed": np.zeros(n),
        "expires_at": np.full(n, 200),
    }
    fields.update(changes)
    return fields


def test_fromArrays_sortsRows_andDropsExpired() -> None:
    expires = np.array([200, 50, 200, 200])
    snapshot = MarketSnapshot.from_arrays(**_arrays(4, expires_at=expires))  # type: ignore[arg-type]
    kept = sorted([address(0), address(2), address(3)])
    assert snapshot.addresses == tuple(kept)
    prices = {address(i): i + 1 for i in range(4)}
    assert snapshot.workloads["embed"].unit_price.tolist() == [prices[a] for a in kept]
    assert snapshot.dims.tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heights": np.zeros(3)}, "heights has shape"),
        ({"vectors": np.zeros((4, 4))}, "vectors has shape"),
        ({"countries": ["DE"]}, "countries has 1 entries"),
        ({"reliability": np.ones(4)}, "reliability must be inside"),
        ({"max_concurrency": np.zeros(4)}, "max_concurrency must be >= 1"),
        ({"throughput": np.full(4, -1.0)}, "throughput must be finite"),
        ({"addresses": [address(0)] * 4}, "unique and sorted"),
        ({"now": float("inf")}, "now must be finite"),
        ({"vectors": np.full((4, 2), np.nan)}, "vectors and heights must be finite"),
        ({"heights": np.full(4, -0.1)}, "heights must be >= 0"),
    ],
)
def test_fromArrays_rejectsInconsistentColumns(change: dict[str, object], message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        MarketSnapshot.from_arrays(**_arrays(4, **change))  # type: ignore[arg-type]
