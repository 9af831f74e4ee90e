"""Each plugin of the placement pipeline beside itself: filters, score, normalize, weigh."""

from __future__ import annotations

import numpy as np
import pytest
from _matching_support import GWEI, NOW, address, job, make_offer, stats

from proxima.marketplace.matching import (
    HardwareConstraints,
    JobSpec,
    MarketSnapshot,
    MatchingConfig,
    Residency,
    Weights,
)
from proxima.marketplace.matching import plugins as pl
from proxima.sdk.vivaldi import VivaldiCoordinate, predict_rtt

CONFIG = MatchingConfig()


@pytest.fixture(scope="module")
def market() -> MarketSnapshot:
    offers = [
        # 0: H100 in Germany, serves matmul + embed(all-MiniLM-L6-v2)
        make_offer(0, free_slots=2, queue_depth=0),
        # 1: CPU-only in Nigeria, matmul only, cheap
        make_offer(
            1,
            gpu="",
            country="NG",
            region="af-west",
            prices={"matmul": 2 * GWEI},
            free_slots=0,
            queue_depth=3,
        ),
        # 2: A100 40GB in France, embed with another model, no throughput measured
        make_offer(
            2,
            gpu="NVIDIA A100-SXM4-40GB",
            gpu_memory=40 << 30,
            country="FR",
            region="eu-west",
            prices={"embed": 7 * GWEI},
            models={"embed": ("bge-small",)},
            flops=0,
            coordinate=(0.03, 0.01),
        ),
        # 3: undisclosed country, 2 GPUs, expensive
        make_offer(
            3, country="ZZ", region="us-east", gpu_count=2, prices={"matmul": 40 * GWEI}, free_slots=4
        ),
    ]
    records = {address(0): stats(0, jobs_completed=50), address(1): stats(1, jobs_failed=30)}
    return MarketSnapshot.build(offers, records, measured_rtts={address(1): 0.25}, now=NOW)


def ctx(
    spec: JobSpec,
    market: MarketSnapshot,
    *,
    held: list[int] | None = None,
    exclude: list[int] | None = None,
    config: MatchingConfig = CONFIG,
) -> pl.JobContext:
    return pl.JobContext(
        spec=spec,
        config=config,
        held=np.zeros(len(market), dtype=np.int32) if held is None else np.asarray(held, dtype=np.int32),
        exclude=np.asarray(exclude or [], dtype=np.intp),
    )


def kept(mask: np.ndarray | None, market: MarketSnapshot) -> set[int] | None:
    if mask is None:
        return None
    index = {a: i for i, a in enumerate(address(k) for k in range(4))}
    return {index[market.addresses[r]] for r in np.flatnonzero(mask)}


# --- filters -----------------------------------------------------------------------------------------------


def test_workloadFilter_servesWorkloadAndModel(market: MarketSnapshot) -> None:
    assert kept(pl.workload_filter(ctx(job(1, workload="matmul"), market), market), market) == {0, 1, 3}
    assert kept(pl.workload_filter(ctx(job(1, workload="embed"), market), market), market) == {0, 2}
    spec = job(1, workload="embed", model="all-MiniLM-L6-v2")
    assert kept(pl.workload_filter(ctx(spec, market), market), market) == {0}
    assert (
        kept(pl.workload_filter(ctx(job(1, workload="embed", model="nope"), market), market), market) == set()
    )
    assert kept(pl.workload_filter(ctx(job(1, workload="render"), market), market), market) == set()


def test_hardwareFilter(market: MarketSnapshot) -> None:
    def keep(**hw: object) -> set[int] | None:
        spec = job(1, hardware=HardwareConstraints.model_validate(hw))
        return kept(pl.hardware_filter(ctx(spec, market), market), market)

    assert keep() is None
    assert keep(require_gpu=True) == {0, 2, 3}
    assert keep(gpu_models=("nvidia a100-sxm4-40gb", "TPU")) == {2}  # case-insensitive, exact model
    assert keep(gpu_models=("A100",)) == set()  # not a substring match
    assert keep(min_gpu_memory_bytes=41 << 30) == {0, 3}
    assert keep(min_gpu_count=2) == {3}
    assert keep(min_cpu_cores=17) == set()
    assert keep(min_memory_bytes=64 << 30) == {0, 1, 2, 3}


def test_throughputFilter_onlyForJobsWithWork(market: MarketSnapshot) -> None:
    assert pl.throughput_filter(ctx(job(1, flops=0), market), market) is None
    assert kept(pl.throughput_filter(ctx(job(1, flops=10), market), market), market) == {0, 1, 3}


def test_residencyFilter_isHard_andUndisclosedNeverMatches(market: MarketSnapshot) -> None:
    def keep(**res: object) -> set[int] | None:
        spec = job(1, residency=Residency.model_validate(res))
        return kept(pl.residency_filter(ctx(spec, market), market), market)

    assert keep() is None
    assert keep(countries=("DE", "FR")) == {0, 2}
    assert keep(countries=("US",)) == set()  # offer 3 is in us-east but did not disclose its country
    assert keep(regions=("us-east",)) == {3}
    assert keep(countries=("DE", "NG"), regions=("eu-west",)) == {0}  # both lists apply


def test_priceAndBudgetFilters_areExactAtTheBoundary(market: MarketSnapshot) -> None:
    units = 3
    at = job(1, units=units, max_price_wei=units * 10 * GWEI)  # offer 0's matmul price exactly
    assert kept(pl.price_filter(ctx(at, market), market), market) == {0, 1}
    below = job(1, units=units, max_price_wei=units * 10 * GWEI - 1)
    assert kept(pl.price_filter(ctx(below, market), market), market) == {1}
    assert pl.price_filter(ctx(job(1), market), market) is None
    budget = job(1, units=units, redundancy=2, budget_wei=2 * units * 10 * GWEI)
    assert kept(pl.budget_filter(ctx(budget, market), market), market) == {0, 1}
    short = job(1, units=units, redundancy=2, budget_wei=2 * units * 10 * GWEI - 1)
    assert kept(pl.budget_filter(ctx(short, market), market), market) == {1}
    assert pl.budget_filter(ctx(job(1), market), market) is None


def test_priceFilter_comparesPricesBeyondInt64Exactly() -> None:
    huge = 2**70
    snapshot = MarketSnapshot.build(
        [make_offer(0, prices={"matmul": huge}), make_offer(1, prices={"matmul": huge + 1})], {}, now=NOW
    )
    spec = job(1, max_price_wei=huge)
    keep = pl.price_filter(ctx(spec, snapshot), snapshot)
    assert keep is not None
    assert [snapshot.addresses[r] for r in np.flatnonzero(keep)] == [address(0)]


def test_reliabilityFilter(market: MarketSnapshot) -> None:
    assert pl.reliability_filter(ctx(job(1), market), market) is None
    assert kept(pl.reliability_filter(ctx(job(1, min_reliability=0.6), market), market), market) == {0, 2, 3}
    assert kept(pl.reliability_filter(ctx(job(1, min_reliability=0.9), market), market), market) == {0}


def test_capacity_countsFreeSlotsHoldsAndQueueAllowance(market: MarketSnapshot) -> None:
    order = [market.row(address(i)) for i in range(4)]
    base = pl.capacity(market, CONFIG, np.zeros(4, dtype=np.int32))
    assert [int(base[r]) for r in order] == [2, 0, 2, 4]
    held = np.zeros(4, dtype=np.int32)
    held[order[0]] = 2
    assert kept(pl.capacity_filter(ctx(job(1), market, held=held.tolist()), market), market) == {2, 3}
    queueing = MatchingConfig(queue_allowance=4)
    room = pl.capacity(market, queueing, np.zeros(4, dtype=np.int32))
    assert [int(room[r]) for r in order] == [6, 1, 6, 8]  # offer 1 has 3 queued of the 4 allowed


def test_excludedFilter(market: MarketSnapshot) -> None:
    assert pl.excluded_filter(ctx(job(1), market), market) is None
    row = market.row(address(2))
    assert row is not None
    assert kept(pl.excluded_filter(ctx(job(1), market, exclude=[row]), market), market) == {0, 1, 3}


def test_filters_runInTheDocumentedOrder() -> None:
    assert [f.name for f in pl.FILTERS] == [
        "workload",
        "hardware",
        "throughput",
        "residency",
        "price",
        "budget",
        "reliability",
        "capacity",
        "excluded",
    ]
    assert {f.name for f in pl.FILTERS if f.per_job} == {"price", "budget"}


# --- score -------------------------------------------------------------------------------------------------


def test_rtt_measuredOverridesPredicted_elseDefault(market: MarketSnapshot) -> None:
    client = VivaldiCoordinate((0.0, 0.0, 0.0), 0.001)
    rtt, measured = pl.rtt_seconds(market, client, default_s=0.123)
    r = {i: market.row(address(i)) for i in range(4)}
    assert rtt[r[1]] == 0.25
    assert measured[r[1]]
    offer0 = make_offer(0)
    assert rtt[r[0]] == pytest.approx(predict_rtt(client, offer0.coordinate()))
    assert rtt[r[2]] == 0.123  # a 2-D coordinate cannot be compared with a 3-D client
    assert not measured[r[0]]
    rtt2, _ = pl.rtt_seconds(market, VivaldiCoordinate((0.0, 0.0), 0.001), default_s=0.123)
    assert rtt2[r[2]] == pytest.approx(
        predict_rtt(VivaldiCoordinate((0.0, 0.0), 0.001), make_offer(2, coordinate=(0.03, 0.01)).coordinate())
    )
    assert rtt2[r[0]] == 0.123
    none, _ = pl.rtt_seconds(market, None, default_s=0.2)
    assert none.tolist() == [0.25 if i == r[1] else 0.2 for i in range(4)]


def test_transferQueueAndCompute(market: MarketSnapshot) -> None:
    spec = job(1, input_bytes=10**6, output_bytes=2 * 10**6)
    assert pl.transfer_seconds(spec, MatchingConfig(link_bandwidth_bps=8e6)) == pytest.approx(3.0)
    rows = np.arange(4)
    held = np.zeros(4, dtype=np.int32)
    waits = pl.queue_seconds(market, CONFIG, held, rows)
    r1 = market.row(address(1))
    assert r1 is not None
    # offer 1: 0 free of 4, 3 queued: (3 + 1 - 0) / 4 * queue_job_s
    assert waits[r1] == pytest.approx(4 / 4 * CONFIG.queue_job_s)
    r0 = market.row(address(0))
    assert r0 is not None
    assert waits[r0] == 0.0
    held[r0] = 3  # 2 free, 3 held: (0 + 3 + 1 - 2) / 4
    assert pl.queue_seconds(market, CONFIG, held, rows)[r0] == pytest.approx(2 / 4 * CONFIG.queue_job_s)
    thr = np.array([1e12, 0.0])
    assert pl.compute_seconds(0, thr).tolist() == [0.0, 0.0]
    assert pl.compute_seconds(2e12, thr).tolist() == [2.0, np.inf]
    assert pl.expected_seconds(np.array([0.1]), 0.2, np.array([0.3]), np.array([0.4]))[0] == pytest.approx(
        1.0
    )


# --- normalize and weigh -----------------------------------------------------------------------------------


def test_scores_areMonotoneAndHalfAtTheReference() -> None:
    t = np.array([0.0, 0.5, 1.0, 2.0, np.inf])
    scores = pl.time_score(t, 1.0)
    assert scores.tolist() == [1.0, pytest.approx(2 / 3), 0.5, pytest.approx(1 / 3), 0.0]
    prices = np.array([0.0, 5.0, 10.0, 20.0])
    assert pl.price_score(prices, 10.0).tolist() == [1.0, pytest.approx(2 / 3), 0.5, pytest.approx(1 / 3)]
    assert pl.price_score(np.array([0.0, 3.0]), 0.0).tolist() == [1.0, 0.0]  # a free market


def test_medians_andTimeReference() -> None:
    m = pl.medians(
        rtt=np.array([0.1, 0.3, 0.2]),
        queue=np.array([0.0, 0.0, 1.0]),
        throughput=np.array([1e12, 4e12, 2e12]),
        unit_price=np.array([5.0, 1.0, 3.0]),
    )
    assert (m.rtt_s, m.queue_s, m.unit_price_wei, m.rows) == (0.2, 0.0, 3.0, 3)
    assert m.seconds_per_flop == pytest.approx(0.5e-12)
    refs = m.for_job(2e12, 0.05)
    assert refs.time_s == pytest.approx(0.2 + 0.05 + 0.0 + 1.0)
    assert m.for_job(0, 0.0).time_s == pytest.approx(0.2)
    empty = pl.medians(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty.rows == 0
    assert empty.for_job(1e12, 0.0).time_s == pytest.approx(1.0)


def test_weigh_isTheWeightedSum() -> None:
    scores = pl.Scores(
        time=np.array([0.5, 1.0]), price=np.array([0.25, 0.0]), reliability=np.array([0.9, 0.1])
    )
    w = Weights(time=2.0, price=1.0, reliability=0.5)
    assert pl.weigh(scores, w).tolist() == pytest.approx([2 * 0.5 + 0.25 + 0.45, 2.0 + 0.0 + 0.05])


def test_factors_areInWeightsOrder() -> None:
    assert tuple(Weights().as_dict()) == pl.FACTORS
