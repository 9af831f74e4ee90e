"""Properties (hypothesis) over random markets of real offers and random jobs:

(a) a hard constraint (workload and model, hardware, residency, price cap, budget, reliability, capacity,
    exclusions) is never violated, in single and batch placement, and single placement refuses only when an
    independent check finds too few feasible offers;
(b) an offer better on every factor (RTT, price, reliability, throughput, queue) never ranks below a worse
    one;
(c) placements never exceed a budget or a provider's capacity;
(d) the same inputs give the same answer, also from a snapshot rebuilt from shuffled offers.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from _matching_support import GWEI, NOW, TFLOPS, address, identity, job, make_offer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    reliability,
)
from proxima.sdk.offers import Offer
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate

for _i in range(16):  # derive the test identities once, outside the examples
    identity(_i)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNTRIES = ("DE", "FR", "NG", "US", "ZZ")
REGIONS = ("eu-west", "af-west", "us-east")
GPUS = (("NVIDIA H100 80GB HBM3", 80 << 30), ("NVIDIA A100-SXM4-40GB", 40 << 30), ("", 0))
MODELS = ("all-MiniLM-L6-v2", "bge-small")


@dataclass
class Market:
    offers: list[Offer]
    stats: dict[Address, ProviderStats]
    rtts: dict[Address, float]

    def snapshot(self, *, shuffle: int | None = None) -> MarketSnapshot:
        offers = self.offers[:]
        if shuffle is not None:
            random.Random(shuffle).shuffle(offers)
        return MarketSnapshot.build(offers, self.stats, measured_rtts=self.rtts, now=NOW)


@st.composite
def offers_st(draw: st.DrawFn, i: int) -> tuple[Offer, ProviderStats, float | None]:
    gpu, memory = draw(st.sampled_from(GPUS))
    workloads = draw(st.sampled_from((("matmul", "embed"),) * 3 + (("matmul",), ("embed",))))
    prices = {w: draw(st.integers(0, 40)) * GWEI for w in workloads}
    free = draw(st.integers(0, 3))
    offer = make_offer(
        i,
        country=draw(st.sampled_from(COUNTRIES)),
        region=draw(st.sampled_from(REGIONS)),
        gpu=gpu,
        gpu_count=draw(st.integers(1, 4)) if gpu else 0,
        gpu_memory=memory,
        cpu_cores=draw(st.sampled_from((4, 16, 64))),
        flops=draw(st.integers(0, 1000)) * TFLOPS,
        prices=prices,
        models={"embed": tuple(sorted(draw(st.sets(st.sampled_from(MODELS)))))},
        coordinate=(draw(st.floats(-0.1, 0.1)), draw(st.floats(-0.1, 0.1)), 0.0),
        free_slots=free,
        max_concurrency=4,
        queue_depth=0 if free else draw(st.integers(0, 5)),
    )
    record = ProviderStats(
        address=address(i),
        jobs_completed=draw(st.integers(0, 300)),
        jobs_failed=draw(st.integers(0, 30)),
        verified_flops=draw(st.sampled_from((0, 50 * TFLOPS, 10**18))),
    )
    rtt = draw(st.one_of(st.none(), st.floats(0.001, 0.3)))
    return offer, record, rtt


@st.composite
def markets(draw: st.DrawFn, min_offers: int = 4, max_offers: int = 12) -> Market:
    n = draw(st.integers(min_offers, max_offers))
    drawn = [draw(offers_st(i)) for i in range(n)]
    return Market(
        offers=[o for o, _, _ in drawn],
        stats={r.address: r for _, r, _ in drawn},
        rtts={o.provider: rtt for o, _, rtt in drawn if rtt is not None},
    )


def _sometimes(draw: st.DrawFn, strategy: st.SearchStrategy[Any], default: Any, share: float = 0.35) -> Any:
    """The strategy's value in about ``share`` of the draws, else ``default`` (keeps most jobs feasible)."""
    return draw(strategy) if draw(st.integers(0, 99)) < share * 100 else default


@st.composite
def jobs(draw: st.DrawFn, n: int = 0) -> JobSpec:
    workload = draw(st.sampled_from(("matmul", "embed")))
    units = draw(st.integers(1, 5))
    hardware = st.builds(
        HardwareConstraints,
        gpu_models=st.sets(st.sampled_from([g for g, _ in GPUS if g]), max_size=1).map(tuple),
        require_gpu=st.booleans(),
        min_gpu_memory_bytes=st.sampled_from((0, 48 << 30)),
        min_cpu_cores=st.sampled_from((0, 8)),
    )
    residency = st.builds(
        Residency,
        countries=st.sets(st.sampled_from(COUNTRIES[:4]), max_size=3).map(tuple),
        regions=st.sets(st.sampled_from(REGIONS), max_size=2).map(tuple),
    )
    spec: JobSpec = job(
        n,
        workload=workload,
        model=_sometimes(draw, st.sampled_from(MODELS), "") if workload == "embed" else "",
        units=units,
        flops=draw(st.sampled_from((0, 10**9, 10**13, 10**15))),
        input_bytes=draw(st.integers(0, 10**6)),
        hardware=_sometimes(draw, hardware, HardwareConstraints()),
        residency=_sometimes(draw, residency, Residency()),
        max_price_wei=_sometimes(draw, st.integers(0, 40 * GWEI * units), None),
        budget_wei=_sometimes(draw, st.integers(0, 3 * 40 * GWEI * units), None),
        redundancy=draw(st.sampled_from((1, 1, 1, 2, 3))),
        min_reliability=_sometimes(draw, st.sampled_from((0.5, 0.9)), 0.0, share=0.2),
        latency_target_s=_sometimes(draw, st.floats(0.01, 2.0), None),
        client_coordinate=_sometimes(
            draw, st.just(VivaldiCoordinate((0.0, 0.0, 0.0), 0.001)), None, share=0.7
        ),
    )
    return spec


def feasible(market: Market, spec: JobSpec, exclude: set[Address]) -> set[Address]:
    """The providers that satisfy every hard constraint, checked offer by offer (not by the engine)."""
    out: set[Address] = set()
    for o in market.offers:
        w = o.workload(spec.workload)
        if w is None or (spec.model and spec.model not in w.models):
            continue
        hw, res = spec.hardware, spec.residency
        gpu = " ".join(o.hardware.gpu_model.split()).casefold()
        if hw.gpu_models and gpu not in hw.gpu_models:
            continue
        if hw.needs_gpu and o.hardware.gpu_count < max(1, hw.min_gpu_count):
            continue
        if o.hardware.gpu_memory_bytes < hw.min_gpu_memory_bytes or o.hardware.cpu_cores < hw.min_cpu_cores:
            continue
        if spec.flops > 0 and o.measured.gemm_flops == 0:
            continue
        if res.countries and o.country not in res.countries:
            continue
        if res.regions and o.region not in res.regions:
            continue
        price = spec.units * w.unit_price_wei
        if spec.max_price_wei is not None and price > spec.max_price_wei:
            continue
        if spec.budget_wei is not None and spec.redundancy * price > spec.budget_wei:
            continue
        if reliability(market.stats[o.provider]) < spec.min_reliability:
            continue
        if o.capacity.free_slots <= 0 or o.provider in exclude:
            continue
        out.add(o.provider)
    return out


def _check(placement: Placement, market: Market, allowed: set[Address]) -> None:
    spec = placement.spec
    offers = {o.provider: o for o in market.offers}
    chosen = placement.providers
    assert len(chosen) == len(set(chosen)) == spec.redundancy
    for c in placement.chosen + placement.backups:
        assert c.provider in allowed
        w = offers[c.provider].workload(spec.workload)
        assert w is not None
        assert c.price_wei == spec.units * w.unit_price_wei
    if spec.budget_wei is not None:
        assert sum(c.price_wei for c in placement.chosen) <= spec.budget_wei


@SETTINGS
@given(market=markets(), spec=jobs(), exclude_first=st.booleans())
def test_single_neverViolatesAHardConstraint_andRefusesOnlyWhenInfeasible(
    market: Market, spec: JobSpec, exclude_first: bool
) -> None:
    exclude: set[Address] = {market.offers[0].provider} if exclude_first else set()
    allowed = feasible(market, spec, exclude)
    engine = MatchingEngine(MatchingConfig(backups=32))
    if len(allowed) < spec.redundancy:
        with pytest.raises(NoCandidateError) as info:
            engine.place(spec, market.snapshot(), exclude=exclude)
        assert info.value.feasible == len(allowed)
        return
    placement = engine.place(spec, market.snapshot(), exclude=exclude)
    assert placement.feasible == len(allowed)
    _check(placement, market, allowed)
    assert {c.provider for c in placement.chosen + placement.backups} == allowed  # all listed: 32 backups


@SETTINGS
@given(market=markets(), specs=st.lists(jobs(), min_size=1, max_size=12))
def test_batch_neverViolatesAHardConstraint_budgetOrCapacity(market: Market, specs: list[JobSpec]) -> None:
    specs = [s.model_copy(update={"job_id": job(n).job_id}) for n, s in enumerate(specs)]
    snapshot = market.snapshot()
    results = MatchingEngine().place_batch(specs, snapshot)
    assert len(results) == len(specs)
    used: Counter[Address] = Counter()
    for spec, result in zip(specs, results, strict=True):
        assert result.spec == spec
        allowed = feasible(market, spec, set())
        if isinstance(result, NoCandidateError):
            continue
        _check(result, market, allowed)
        used.update(result.providers)
    capacity = {o.provider: o.capacity.free_slots for o in market.offers}
    assert all(count <= capacity[p] for p, count in used.items())


@SETTINGS
@given(market=markets(min_offers=0, max_offers=6), spec=jobs(), data=st.data())
def test_anOfferBetterOnEveryFactor_neverRanksBelowAWorseOne(
    market: Market, spec: JobSpec, data: Any
) -> None:
    # Make the job feasible on the worse offer; the better one is a strict improvement of it in every factor.
    spec = spec.model_copy(
        update={
            "hardware": HardwareConstraints(),
            "residency": Residency(),
            "min_reliability": 0.0,
            "max_price_wei": None,
            "budget_wei": None,
            "redundancy": 1,
            "model": "",
        }
    )
    worse_price = data.draw(st.integers(2, 40)) * GWEI
    worse_flops = data.draw(st.integers(1, 500)) * TFLOPS
    worse_rtt = data.draw(st.floats(0.01, 0.3))
    worse_free = data.draw(st.integers(1, 2))
    worse_queue = data.draw(st.integers(1, 4))
    worse_completed = data.draw(st.integers(0, 100))
    base: dict[str, Any] = {"region": "eu-west", "country": "DE", "max_concurrency": 4}
    worse = make_offer(
        14,
        prices={spec.workload: worse_price},
        flops=worse_flops,
        free_slots=worse_free,
        queue_depth=worse_queue,
        **base,
    )
    better = make_offer(
        15,
        prices={spec.workload: worse_price // 2},
        flops=2 * worse_flops,
        free_slots=worse_free + 1,
        queue_depth=worse_queue - 1,
        **base,
    )
    market.offers += [worse, better]
    market.stats[worse.provider] = ProviderStats(
        address=worse.provider, jobs_completed=worse_completed, verified_flops=10**18
    )
    market.stats[better.provider] = ProviderStats(
        address=better.provider, jobs_completed=2 * worse_completed + 10, verified_flops=10**18
    )
    market.rtts[worse.provider] = worse_rtt
    market.rtts[better.provider] = worse_rtt / 2
    placement = MatchingEngine(MatchingConfig(exploration_share=0.0, backups=32)).place(
        spec, market.snapshot()
    )
    ranking = [c.provider for c in placement.chosen + placement.backups]
    assert ranking.index(better.provider) < ranking.index(worse.provider)
    by = {c.provider: c for c in placement.chosen + placement.backups}
    assert by[better.provider].utility > by[worse.provider].utility


@SETTINGS
@given(market=markets(), specs=st.lists(jobs(), min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_sameInputs_sameAnswer(market: Market, specs: list[JobSpec], seed: int) -> None:
    specs = [s.model_copy(update={"job_id": job(n).job_id}) for n, s in enumerate(specs)]

    def answers(snapshot: MarketSnapshot) -> list[object]:
        engine = MatchingEngine()
        out: list[object] = []
        for spec in specs:
            try:
                out.append(engine.place(spec, snapshot).explain())
            except NoCandidateError as error:
                out.append(str(error))
        for r in engine.place_batch(specs, snapshot):
            out.append(r.explain() if isinstance(r, Placement) else str(r))
        return out

    first = answers(market.snapshot())
    assert answers(market.snapshot()) == first
    assert answers(market.snapshot(shuffle=seed)) == first
