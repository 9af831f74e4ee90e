"""MatchingEngine.place with real signed offers: who wins and why, errors, explanations, exploration,
reservations, determinism."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence

import pytest
from _matching_support import GWEI, NOW, TFLOPS, address, job, signed_offer, stats, veteran

from proxima.marketplace.matching import (
    MarketSnapshot,
    MatchingConfig,
    MatchingEngine,
    NoCandidateError,
    Placement,
    ProviderStats,
    ReservationError,
    Residency,
    Weights,
)
from proxima.sdk.offers import SignedOffer
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate

ORIGIN = VivaldiCoordinate((0.0, 0.0, 0.0), 0.001)
NO_EXPLORATION = MatchingConfig(exploration_share=0.0)


def veterans(n: int) -> dict[Address, ProviderStats]:
    return {address(i): veteran(i) for i in range(n)}


def market(
    offers: Sequence[SignedOffer],
    records: Mapping[Address, ProviderStats] | None = None,
    *,
    measured_rtts: Mapping[Address, float] | None = None,
) -> MarketSnapshot:
    return MarketSnapshot.build(
        offers, records if records is not None else veterans(40), measured_rtts=measured_rtts, now=NOW
    )


def test_nearestAdequateProviderWins_andBackupsAreRankedByDistance() -> None:
    offers = [signed_offer(i, coordinate=(0.01 * (i + 1), 0.0, 0.0)) for i in range(6)]
    engine = MatchingEngine(MatchingConfig(exploration_share=0.0, backups=4))
    placement = engine.place(job(1, flops=10**9, client_coordinate=ORIGIN), market(offers))
    assert placement.providers == (address(0),)
    assert [c.provider for c in placement.backups] == [address(i) for i in range(1, 5)]
    assert [c.rtt_s for c in placement.backups] == sorted(c.rtt_s for c in placement.backups)
    assert not placement.chosen[0].rtt_measured


def test_measuredRttOverridesTheCoordinates() -> None:
    offers = [signed_offer(0, coordinate=(0.01, 0.0, 0.0)), signed_offer(1, coordinate=(0.2, 0.0, 0.0))]
    snapshot = market(offers, measured_rtts={address(1): 0.002})
    placement = MatchingEngine(NO_EXPLORATION).place(job(1, client_coordinate=ORIGIN), snapshot)
    assert placement.providers == (address(1),)
    assert placement.chosen[0].rtt_measured
    assert placement.chosen[0].rtt_s == 0.002


def test_bigJobPrefersThroughput_smallJobPrefersProximity() -> None:
    near_slow = signed_offer(0, coordinate=(0.005, 0.0, 0.0), flops=10 * TFLOPS)
    far_fast = signed_offer(1, coordinate=(0.08, 0.0, 0.0), flops=800 * TFLOPS)
    snapshot = market([near_slow, far_fast])
    engine = MatchingEngine(NO_EXPLORATION)
    assert engine.place(job(1, flops=10**9, client_coordinate=ORIGIN), snapshot).providers == (address(0),)
    big = engine.place(job(2, flops=10**15, client_coordinate=ORIGIN), snapshot)
    assert big.providers == (address(1),)
    assert big.chosen[0].compute_s == pytest.approx(10**15 / big.chosen[0].throughput_flops)


def test_noCandidate_namesTheFiltersThatRemovedEverything() -> None:
    snapshot = market([signed_offer(i, country="DE") for i in range(3)] + [signed_offer(3, country="FR")])
    engine = MatchingEngine()
    with pytest.raises(NoCandidateError) as info:
        engine.place(job(1, residency=Residency(countries=("US",))), snapshot)
    error = info.value
    assert error.filtered["residency"] == 4
    assert error.feasible == 0
    assert "residency removed 4 (is outside the allowed countries/regions)" in str(error)
    assert "0x" + error.spec.job_id.hex() in str(error)
    with pytest.raises(NoCandidateError, match="workload removed 4"):
        engine.place(job(1, workload="render"), snapshot)
    with pytest.raises(NoCandidateError, match="1 of 4 offers feasible, 2 distinct provider"):
        engine.place(job(1, redundancy=2, residency=Residency(countries=("FR",))), snapshot)
    with pytest.raises(NoCandidateError, match="fewer offers than the redundancy asks for"):
        engine.place(job(1, redundancy=5), snapshot)
    with pytest.raises(NoCandidateError, match="no live offers"):
        engine.place(job(1), market([]))


def test_redundancy_choosesDistinctProviders_andBackupsAreOthers() -> None:
    snapshot = market([signed_offer(i, coordinate=(0.01 * i, 0.0, 0.0)) for i in range(8)])
    placement = MatchingEngine(NO_EXPLORATION).place(job(1, redundancy=3, client_coordinate=ORIGIN), snapshot)
    chosen = placement.providers
    assert len(chosen) == len(set(chosen)) == 3
    backups = [c.provider for c in placement.backups]
    assert len(backups) == 3
    assert not set(backups) & set(chosen)
    utilities = [c.utility for c in placement.chosen + placement.backups]
    assert utilities == sorted(utilities, reverse=True)


def test_explain_isJsonAble_andContributionsSumToUtility() -> None:
    offers = [
        signed_offer(
            i,
            coordinate=(0.01 * i, 0.0, 0.0),
            prices={"matmul": (i + 1) * GWEI},
            queue_depth=i % 2,
            free_slots=1 + i % 3,
        )
        for i in range(6)
    ]
    snapshot = market(offers, measured_rtts={address(2): 0.03})
    config = MatchingConfig(weights=Weights(time=0.6, price=0.25, reliability=0.15), exploration_share=0.0)
    spec = job(
        1,
        units=4,
        flops=5 * 10**12,
        input_bytes=10**5,
        redundancy=2,
        client_coordinate=ORIGIN,
        max_price_wei=4 * 5 * GWEI,
    )
    placement = MatchingEngine(config).place(spec, snapshot)
    explanation = json.loads(json.dumps(placement.explain()))
    assert explanation["weights"] == {"time": 0.6, "price": 0.25, "reliability": 0.15}
    assert explanation["filtered"]["price"] == 1  # the 6 GWEI offer
    assert explanation["feasible"] == 5
    assert explanation["considered"] == 6
    assert len(explanation["chosen"]) == 2
    for entry in explanation["chosen"] + explanation["backups"]:
        assert sum(entry["contributions"].values()) == pytest.approx(entry["utility"], abs=1e-12)
        for factor, weight in explanation["weights"].items():
            assert entry["contributions"][factor] == pytest.approx(weight * entry["scores"][factor])
        f = entry["factors"]
        assert f["expected_s"] == pytest.approx(f["rtt_s"] + f["transfer_s"] + f["queue_s"] + f["compute_s"])
        assert int(entry["price_wei"]) <= spec.max_price_wei  # type: ignore[operator]
    for c in placement.chosen:
        assert c.price_wei == 4 * snapshot.workloads["matmul"].exact_price(snapshot.row(c.provider))  # type: ignore[arg-type]
    assert explanation["references"]["time_s"] > 0
    assert explanation["exploration"]["applied"] is False


def test_exclude_removesProviders() -> None:
    snapshot = market([signed_offer(i, coordinate=(0.01 * i, 0.0, 0.0)) for i in range(4)])
    engine = MatchingEngine(NO_EXPLORATION)
    placement = engine.place(job(1, client_coordinate=ORIGIN), snapshot, exclude={address(0), address(9)})
    assert placement.providers == (address(1),)
    assert placement.filtered["excluded"] == 1


def test_latencyTarget_ranksThoseThatMeetItFirst() -> None:
    near_pricey = signed_offer(0, coordinate=(0.004, 0.0, 0.0), prices={"matmul": 60 * GWEI})
    far_cheap = signed_offer(1, coordinate=(0.15, 0.0, 0.0), prices={"matmul": GWEI})
    snapshot = market([near_pricey, far_cheap])
    engine = MatchingEngine(
        MatchingConfig(weights=Weights(time=0.2, price=0.8, reliability=0.0), exploration_share=0)
    )
    free = engine.place(job(1, client_coordinate=ORIGIN), snapshot)
    assert free.providers == (address(1),)  # price weighs most
    targeted = engine.place(job(1, client_coordinate=ORIGIN, latency_target_s=0.05), snapshot)
    assert targeted.providers == (address(0),)
    assert targeted.chosen[0].meets_target is True
    assert targeted.backups[0].meets_target is False
    assert targeted.backups[0].utility > targeted.chosen[0].utility
    nobody = engine.place(job(1, client_coordinate=ORIGIN, latency_target_s=0.001), snapshot)
    assert nobody.providers == (address(1),)  # nobody meets it: utility decides


def test_exploration_sendsTheConfiguredShareToNewcomers_deterministically() -> None:
    offers = [signed_offer(i, coordinate=(0.01 * i, 0.0, 0.0)) for i in range(10)]
    records = {address(i): veteran(i) for i in range(5)}  # 5..9 are newcomers
    snapshot = market(offers, records)
    engine = MatchingEngine(MatchingConfig(exploration_share=0.05, newcomer_jobs=10))
    newcomers = {address(i) for i in range(5, 10)}
    explored = 0
    jobs = 1500
    for n in range(jobs):
        spec = job(n, client_coordinate=ORIGIN)
        placement = engine.place(spec, snapshot)
        if placement.exploration.applied:
            explored += 1
            assert placement.chosen[0].explored
            assert placement.chosen[0].provider in newcomers
            assert placement.explain()["chosen"][0]["explored"] is True
            assert placement.exploration.draw < 0.05
        else:
            assert placement.chosen[0].provider == address(0)
            assert not placement.chosen[0].explored
    assert 0.03 * jobs < explored < 0.07 * jobs
    # deterministic per job id
    spec = next(job(n, client_coordinate=ORIGIN) for n in range(jobs) if job(n).exploration_draw() < 0.05)
    first = engine.place(spec, snapshot).explain()
    assert MatchingEngine(MatchingConfig(exploration_share=0.05)).place(spec, snapshot).explain() == first
    # the best newcomer, not a random one
    assert first["chosen"][0]["provider"] == address(5)
    assert first["exploration"] == {
        "share": 0.05,
        "draw": spec.exploration_draw(),
        "selected": True,
        "feasible_newcomers": 5,
        "applied": True,
    }


def test_exploration_withoutFeasibleNewcomers_placesNormally() -> None:
    snapshot = market([signed_offer(i) for i in range(3)])  # all veterans
    engine = MatchingEngine(MatchingConfig(exploration_share=0.5))
    spec = next(job(n) for n in range(100) if job(n).exploration_draw() < 0.5)
    placement = engine.place(spec, snapshot)
    assert placement.exploration.selected
    assert not placement.exploration.applied
    assert not placement.chosen[0].explored


def test_reservations_reduceCapacity_untilReleased() -> None:
    offers = [
        signed_offer(0, coordinate=(0.01, 0.0, 0.0), free_slots=1),
        signed_offer(1, coordinate=(0.05, 0.0, 0.0)),
    ]
    snapshot = market(offers)
    engine = MatchingEngine(NO_EXPLORATION)
    first = engine.place(job(1, client_coordinate=ORIGIN), snapshot)
    assert first.providers == (address(0),)
    reservation = engine.reserve(first)
    assert reservation.providers == (address(0),)
    assert engine.held(snapshot)[snapshot.index[address(0)]] == 1
    second = engine.place(job(2, client_coordinate=ORIGIN), snapshot)
    assert second.providers == (address(1),)
    assert second.filtered["capacity"] == 1
    engine.unreserve(reservation)
    engine.unreserve(reservation)  # idempotent
    assert engine.place(job(3, client_coordinate=ORIGIN), snapshot).providers == (address(0),)
    assert engine.reservations == ()


def test_reservations_addQueueWait_whenQueueingIsAllowed() -> None:
    offers = [signed_offer(0, coordinate=(0.01, 0.0, 0.0), free_slots=1, max_concurrency=1)]
    snapshot = market(offers)
    engine = MatchingEngine(MatchingConfig(exploration_share=0.0, queue_allowance=2, queue_job_s=0.5))
    first = engine.place(job(1, client_coordinate=ORIGIN), snapshot)
    assert first.chosen[0].queue_s == 0.0
    engine.reserve(first)
    second = engine.place(job(2, client_coordinate=ORIGIN), snapshot)
    assert second.chosen[0].queue_s == pytest.approx(0.5)  # one job ahead on the only slot
    engine.reserve(second)
    engine.reserve(engine.place(job(3, client_coordinate=ORIGIN), snapshot))
    with pytest.raises(NoCandidateError, match="capacity removed 1"):
        engine.place(job(4, client_coordinate=ORIGIN), snapshot)


def test_bind_movesTheHold_andStopsCountingOnceTheProviderReportsIt() -> None:
    clock = [float(NOW)]
    engine = MatchingEngine(NO_EXPLORATION, clock=lambda: clock[0])
    offers = [signed_offer(i, coordinate=(0.01 * (i + 1), 0.0, 0.0), free_slots=1) for i in range(3)]
    snapshot = market(offers)
    placement = engine.place(job(1, client_coordinate=ORIGIN), snapshot)
    reservation = engine.reserve(placement)
    row = {i: snapshot.row(address(i)) for i in range(3)}
    engine.bind(reservation, address(1))  # failover to the first backup
    held = engine.held(snapshot)
    assert (int(held[row[0]]), int(held[row[1]])) == (0, 1)
    # the provider's next offer, signed after the bind, already counts the job in its free slots
    clock[0] += 5
    fresher = market([offers[0], signed_offer(1, seq=2, now=NOW + 10, free_slots=0), offers[2]])
    assert engine.held(fresher).tolist() == [0, 0, 0]
    engine.unreserve(reservation)
    with pytest.raises(ReservationError, match="released or lapsed"):
        engine.bind(reservation, address(1))


def test_reservations_lapseAfterTheirTtl() -> None:
    clock = [float(NOW)]
    engine = MatchingEngine(
        MatchingConfig(exploration_share=0.0, reservation_ttl_s=30), clock=lambda: clock[0]
    )
    snapshot = market([signed_offer(0, free_slots=1), signed_offer(1, coordinate=(0.3, 0.0, 0.0))])
    engine.reserve(engine.place(job(1, client_coordinate=ORIGIN), snapshot))
    assert engine.place(job(2, client_coordinate=ORIGIN), snapshot).providers == (address(1),)
    clock[0] += 31
    assert engine.place(job(3, client_coordinate=ORIGIN), snapshot).providers == (address(0),)
    assert engine.reservations == ()


def test_sameInputs_sameAnswer_evenFromShuffledOffers() -> None:
    offers = [
        signed_offer(
            i,
            coordinate=(0.01 * (i % 5), 0.002 * i, 0.0),
            prices={"matmul": (1 + i % 4) * GWEI},
            free_slots=i % 3,
            flops=(1 + i % 7) * 50 * TFLOPS,
        )
        for i in range(16)
    ]
    records = {address(i): stats(i, jobs_completed=i * 3, jobs_failed=i % 4) for i in range(16)}
    spec = job(7, flops=10**13, redundancy=2, client_coordinate=ORIGIN)
    first = MatchingEngine().place(spec, MarketSnapshot.build(offers, records, now=NOW)).explain()
    for seed in range(3):
        shuffled = offers[:]
        random.Random(seed).shuffle(shuffled)
        again = MatchingEngine().place(spec, MarketSnapshot.build(shuffled, records, now=NOW)).explain()
        assert again == first


def test_identicalOffers_tieBreakByAddress() -> None:
    snapshot = market([signed_offer(i) for i in range(5)])
    placement = MatchingEngine(MatchingConfig(exploration_share=0.0, backups=4)).place(job(1), snapshot)
    order = [c.provider for c in placement.chosen + placement.backups]
    assert order == sorted(address(i) for i in range(5))


def test_placement_isReadOnly() -> None:
    placement = MatchingEngine().place(job(1), market([signed_offer(0)]))
    assert isinstance(placement, Placement)
    with pytest.raises(AttributeError, match="read-only"):
        placement.spec = job(2)
    assert "Placement(job=0x" in repr(placement)


def test_engine_keepsDerivedDataOfTheLastTwoSnapshotsOnly() -> None:
    engine = MatchingEngine()
    offers = [signed_offer(i) for i in range(3)]
    snapshots = [market(offers) for _ in range(4)]
    for snapshot in snapshots:
        engine.place(job(1, client_coordinate=ORIGIN), snapshot)
        engine.place_batch([job(2, workload="embed")], snapshot)
    kept = {id(v.market) for v in engine._views.values()}
    kept |= {id(entry[0]) for entry in engine._orders.values()}
    kept |= {id(entry[0]) for entry in engine._rtt_cache.values()}
    assert kept == {id(snapshots[2]), id(snapshots[3])}
