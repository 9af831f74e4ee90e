"""MatchingEngine.place_batch: capacity, hard constraints, redundancy, errors in position, agreement with
single placement, closeness to the exact optimum."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from _matching_support import GWEI, NOW, TFLOPS, address, job, signed_offer, veteran
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from proxima.marketplace.matching import (
    JobSpec,
    MarketSnapshot,
    MatchingConfig,
    MatchingEngine,
    NoCandidateError,
    Placement,
    Residency,
)
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate

ORIGIN = VivaldiCoordinate((0.0, 0.0, 0.0), 0.001)


def market(n: int, **kwargs: object) -> MarketSnapshot:
    rng = np.random.default_rng(3)
    offers = [
        signed_offer(
            i,
            coordinate=(float(rng.uniform(0, 0.1)), float(rng.uniform(-0.05, 0.05)), 0.0),
            prices={"matmul": int(rng.integers(1, 20)) * GWEI, "embed": int(rng.integers(1, 9)) * GWEI},
            flops=int(rng.integers(5, 500)) * TFLOPS,
            free_slots=int(rng.integers(0, 4)),
            max_concurrency=4,
            country=("DE", "FR", "NG", "US")[i % 4],
            region=("eu-west", "eu-west", "af-west", "us-east")[i % 4],
        )
        for i in range(n)
    ]
    records = {address(i): veteran(i, completed=5 + 10 * i) for i in range(n)}
    return MarketSnapshot.build(offers, records, now=NOW, **kwargs)  # type: ignore[arg-type]


def placed(results: list[Placement | NoCandidateError]) -> list[Placement]:
    return [r for r in results if isinstance(r, Placement)]


def test_batchOfOne_equalsSinglePlacement() -> None:
    snapshot = market(30)
    engine = MatchingEngine(MatchingConfig(backups=4))
    specs = [
        job(1, client_coordinate=ORIGIN, flops=10**12),
        job(2, client_coordinate=ORIGIN, flops=10**15, redundancy=3, max_price_wei=12 * GWEI),
        job(3, workload="embed", units=5, latency_target_s=0.06, client_coordinate=ORIGIN),
        job(4, residency=Residency(countries=("FR", "NG")), budget_wei=2 * 10 * GWEI, redundancy=2),
    ]
    for spec in specs:
        single = engine.place(spec, snapshot)
        (batch,) = engine.place_batch([spec], snapshot)
        assert isinstance(batch, Placement)
        assert batch.explain() == single.explain()


def test_batch_neverExceedsCapacity_andReportsWhatDidNotFit() -> None:
    snapshot = market(20)
    capacity = {a: int(snapshot.free_slots[r]) for a, r in snapshot.index.items()}
    total = sum(capacity.values())
    specs = [job(n, client_coordinate=ORIGIN, flops=10**12 * (n % 7 + 1)) for n in range(total + 5)]
    results = MatchingEngine().place_batch(specs, snapshot)
    assert len(results) == len(specs)
    used = Counter(p for r in placed(results) for p in r.providers)
    assert all(used[a] <= capacity[a] for a in used)
    assert len(placed(results)) == total  # every slot used: the batch fills the market
    errors = [r for r in results if isinstance(r, NoCandidateError)]
    assert len(errors) == 5
    for error in errors:
        assert error.filtered["capacity"] == 20  # full from the start, or filled by the batch
        assert error.feasible == 0
        assert "capacity removed 20 (has no free capacity)" in str(error)
    assert [r.spec for r in results] == specs  # in position


def test_batch_redundantCopiesOnDistinctProviders_withinCapacity() -> None:
    snapshot = market(40)
    capacity = {a: int(snapshot.free_slots[r]) for a, r in snapshot.index.items()}
    specs = [job(n, redundancy=1 + n % 3, client_coordinate=ORIGIN) for n in range(20)]
    results = MatchingEngine().place_batch(specs, snapshot)
    quick = [r.providers for r in placed(results)]  # before the candidates are built
    used: Counter[Address] = Counter()
    for r, providers in zip(placed(results), quick, strict=True):
        assert providers == tuple(c.provider for c in r.chosen)
        assert len(set(r.providers)) == r.spec.redundancy
        assert not set(r.providers) & {c.provider for c in r.backups}
        used.update(r.providers)
    assert all(used[a] <= capacity[a] for a in used)
    assert sum(s.redundancy for s in specs) <= sum(capacity.values())
    assert len(placed(results)) == len(specs)


def test_batch_respectsHardConstraintsPerJob() -> None:
    snapshot = market(40)
    specs = []
    for n in range(60):
        specs.append(
            job(
                n,
                workload=("matmul", "embed")[n % 2],
                units=1 + n % 4,
                residency=Residency(countries=(("DE",), ("FR", "NG"), ())[n % 3]),
                max_price_wei=(None, 8 * GWEI * (1 + n % 4))[n % 2],
                budget_wei=None if n % 5 else 3 * 15 * GWEI * (1 + n % 4),
                redundancy=1 + n % 2,
                min_reliability=0.9 if n % 7 == 0 else 0.0,
                client_coordinate=ORIGIN,
            )
        )
    results = MatchingEngine().place_batch(specs, snapshot, exclude={address(0), address(1)})
    assert len(placed(results)) > 30
    for r in placed(results):
        spec = r.spec
        for c in r.chosen:
            row = snapshot.row(c.provider)
            assert row is not None
            assert c.provider not in {address(0), address(1)}
            assert snapshot.workloads[spec.workload].served[row]
            if spec.residency.countries:
                assert c.country in spec.residency.countries
            if spec.max_price_wei is not None:
                assert c.price_wei <= spec.max_price_wei
            assert c.reliability >= spec.min_reliability
            assert c.price_wei == spec.units * snapshot.workloads[spec.workload].exact_price(row)
        if spec.budget_wei is not None:
            assert sum(c.price_wei for c in r.chosen) <= spec.budget_wei
            assert all(spec.redundancy * c.price_wei <= spec.budget_wei for c in r.chosen)


def test_batch_explain_countsAndContributions() -> None:
    snapshot = market(15)
    results = MatchingEngine().place_batch(
        [job(n, client_coordinate=ORIGIN, max_price_wei=10 * GWEI) for n in range(10)], snapshot
    )
    for r in placed(results):
        explanation = r.explain()
        assert sum(explanation["filtered"].values()) + explanation["feasible"] == 15
        for entry in explanation["chosen"] + explanation["backups"]:
            assert sum(entry["contributions"].values()) == pytest.approx(entry["utility"], abs=1e-12)


def test_batch_exploresNewcomers() -> None:
    offers = [signed_offer(i, coordinate=(0.01 * i, 0.0, 0.0), free_slots=3) for i in range(8)]
    snapshot = MarketSnapshot.build(offers, {address(i): veteran(i) for i in range(4)}, now=NOW)
    engine = MatchingEngine(MatchingConfig(exploration_share=0.2))
    specs = [job(n, client_coordinate=ORIGIN) for n in range(20)]
    results = placed(engine.place_batch(specs, snapshot))
    assert len(results) == 20
    explored = [r for r in results if r.exploration.applied]
    assert explored == [r for r in results if r.spec.exploration_draw() < 0.2]
    assert explored
    for r in explored:
        assert r.chosen[0].explored
        assert r.chosen[0].provider in {address(i) for i in range(4, 8)}


def test_batch_seesTheEnginesReservations() -> None:
    snapshot = market(10)
    engine = MatchingEngine(MatchingConfig(exploration_share=0.0))
    first = engine.place(job(0, client_coordinate=ORIGIN), snapshot)
    engine.reserve(first)
    row = snapshot.row(first.providers[0])
    assert row is not None
    free = int(snapshot.free_slots[row]) - 1
    results = engine.place_batch([job(n, client_coordinate=ORIGIN) for n in range(1, 40)], snapshot)
    on_first = sum(1 for r in placed(results) if first.providers[0] in r.providers)
    assert on_first <= free


def _exact_optimum(engine: MatchingEngine, specs: list[JobSpec], snapshot: MarketSnapshot) -> float:
    """The best total utility for jobs of redundancy 1: one assignment problem over every job and slot."""
    slots = [a for a, r in sorted(snapshot.index.items()) for _ in range(int(snapshot.free_slots[r]))]
    utility = np.full((len(specs), len(slots)), -1e9)
    wide = MatchingEngine(engine.config.model_copy(update={"backups": 32, "exploration_share": 0.0}))
    for j, spec in enumerate(specs):
        by_provider: dict[Address, float] = {}
        while True:  # every feasible provider's utility, 33 at a time (exclusions leave the references alone)
            try:
                p = wide.place(spec, snapshot, exclude=set(by_provider))
            except NoCandidateError:
                break
            by_provider.update((c.provider, c.utility) for c in p.chosen + p.backups)
        for k, a in enumerate(slots):
            if a in by_provider:
                utility[j, k] = by_provider[a]
    rows, cols = linear_sum_assignment(-utility)
    return float(utility[rows, cols].sum())


def test_batch_isCloseToTheExactOptimum() -> None:
    snapshot = market(50)
    rng = np.random.default_rng(11)
    specs = [job(n, client_coordinate=ORIGIN, flops=int(10 ** rng.uniform(10, 15.5))) for n in range(80)]
    engine = MatchingEngine(MatchingConfig(exploration_share=0.0))  # windows of 32 jobs
    results = engine.place_batch(specs, snapshot)
    assert len(placed(results)) == min(80, int(snapshot.free_slots.sum()))
    total = sum(r.chosen[0].utility for r in placed(results))
    best = _exact_optimum(engine, specs, snapshot)
    assert total <= best + 1e-9
    assert total >= 0.99 * best


def test_batch_inOneWindow_isTheExactOptimum() -> None:
    snapshot = market(30)
    rng = np.random.default_rng(5)
    specs = [job(n, client_coordinate=ORIGIN, flops=int(10 ** rng.uniform(10, 15.5))) for n in range(40)]
    engine = MatchingEngine(MatchingConfig(exploration_share=0.0, batch_window=64, batch_candidates=32))
    results = engine.place_batch(specs, snapshot)
    total = sum(r.chosen[0].utility for r in placed(results))
    assert total == pytest.approx(_exact_optimum(engine, specs, snapshot), abs=1e-9)
