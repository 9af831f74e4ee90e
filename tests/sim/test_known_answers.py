"""Small worlds whose right answer is known, placed by Proxima's policy (the real MatchingEngine): the nearest
node must win when only distance differs, the cheapest when only price differs, the most reliable when only
the record differs, and the fast one when the slow one would miss the latency target."""

from __future__ import annotations

import numpy as np
from test_engine import C, P, run, tiny_arrivals, tiny_world

from proxima.sim.engine import OK, ProviderRecords, SimConfig, simulate
from proxima.sim.world import World


def _records(world: World, completed: list[int], failures: list[int]) -> ProviderRecords:
    n = len(world.providers) + len(world.hyperscale)
    pad = n - len(completed)
    return ProviderRecords(
        completed=np.array(completed + [0] * pad, dtype=np.int64),
        successes=np.zeros(n, dtype=np.int64),
        failures=np.array(failures + [0] * pad, dtype=np.int64),
    )


def _spaced(count: int, gap: float = 0.5) -> np.ndarray:
    # jobs far enough apart that capacity never decides
    return np.arange(count) * gap


def test_nearest_node_wins_when_only_distance_differs() -> None:
    providers = [P("US"), P("JP"), P("DE"), P("BR")]
    rtt = {("DE", "US"): 90.0, ("DE", "JP"): 230.0, ("DE", "BR"): 200.0, ("FR", "DE"): 12.0}
    world = tiny_world(providers, [C("DE"), C("FR")], rtt_ms=rtt)
    result = run(world, tiny_arrivals(_spaced(40), np.arange(40) % 2), "proxima")
    assert (result.outcome == OK).all()
    assert (result.provider == 2).all()
    # and the latency is what the DE node gives: 5 ms inside DE, 12 ms from FR
    service = 100 / 10_000 + 10 / 100
    de = result.client == 0
    assert np.allclose(result.latency_ms[de], (0.005 + service) * 1000, rtol=1e-3)


def test_cheapest_node_wins_when_only_price_differs() -> None:
    prices = [1_300, 1_100, 700, 1_000, 900]
    world = tiny_world([P("DE", price=p) for p in prices], [C("DE")])
    result = run(world, tiny_arrivals(_spaced(40), 0), "proxima")
    assert (result.outcome == OK).all()
    assert (result.provider == 2).all()
    assert (result.cost_wei == 110 * 700).all()


def test_most_reliable_node_wins_when_only_the_record_differs() -> None:
    world = tiny_world([P("DE"), P("DE"), P("DE")], [C("DE")])
    # equal prices, places and hardware; records: 60 of 100 delivered, 100 of 100, 80 of 100
    records = _records(world, completed=[60, 100, 80], failures=[40, 0, 20])
    result = simulate(
        world,
        tiny_arrivals(_spaced(40), 0),
        SimConfig(policy="proxima", churn=False, canary_rate=0.0, check_share=0.0),
        records=records,
    )
    assert (result.outcome == OK).all()
    assert (result.provider == 1).all()


def test_the_fast_node_wins_when_the_slow_one_would_miss_the_target() -> None:
    # a cheap slow GPU next door, a dearer fast one in a neighbouring country; the target only the fast meets
    slow = P("DE", price=500, decode=20.0)  # 10 tokens: 0.5 s of decode
    fast = P("FR", price=1_500, decode=400.0)  # 0.025 s
    world = tiny_world([slow, fast], [C("DE", target_ms=200.0)], rtt_ms={("DE", "FR"): 20.0})
    result = run(world, tiny_arrivals(_spaced(30), 0, target_ms=200.0), "proxima")
    assert (result.provider == 1).all()
    assert result.met_target.all()


def test_price_beats_a_small_speed_edge_when_every_node_meets_the_target() -> None:
    cheap = P("DE", price=500, decode=90.0)
    dear = P("FR", price=1_500, decode=100.0)
    world = tiny_world([cheap, dear], [C("DE")], rtt_ms={("DE", "FR"): 20.0})
    result = run(world, tiny_arrivals(_spaced(30), 0, target_ms=5_000.0), "proxima")
    assert (result.provider == 0).all()
    assert result.met_target.all()


def test_residency_is_never_crossed_even_when_the_outside_node_is_nearer_and_cheaper() -> None:
    providers = [P("CH", price=100), P("FR", price=2_000)]  # CH is outside the EU
    world = tiny_world(providers, [C("DE", eu_only=True)], rtt_ms={("CH", "DE"): 6.0, ("DE", "FR"): 30.0})
    result = run(world, tiny_arrivals(_spaced(20), 0), "proxima")
    assert (result.provider == 1).all()


def test_a_slashed_cheater_loses_its_jobs_to_an_honest_node() -> None:
    # the cheater is cheaper; once caught (every result checked) it is slashed: with 4 ETH of stake it stays
    # above the minimum, but its reliability collapses, so after quarantine the engine still ranks it last
    cheater = P("DE", price=500, cheat_rate=1.0, stake=4 * 10**18)
    world = tiny_world([cheater, P("DE", price=1_000)], [C("DE")])
    result = run(world, tiny_arrivals(_spaced(100, 0.25), 0), "proxima", check_share=1.0, quarantine_s=5.0)
    assert result.cheaters_caught == 1
    assert result.provider_stake_wei[0] >= 10**18  # still staked: it left for its record, not its stake
    first = min(s.t for s in result.settlements if s.kind == "slash")
    later = result.arrival_s > first + 6.0
    assert later.sum() > 50
    assert (result.provider[later] == 1).all()
