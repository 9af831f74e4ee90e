"""Each policy's defining behaviour, on the same hand-built worlds, and the rules they all share: hard
constraints (residency), capacity and the gateway's blocked set."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import C, P, run, tiny_arrivals, tiny_world

from proxima.marketplace.matching import MatchingConfig
from proxima.sim.engine import OK, REJECTED
from proxima.sim.policies import POLICIES, UnknownPolicyError, fit_coordinates, make_policy
from proxima.sim.world import World

ETH = 10**18


def _market() -> World:
    # 0: DE, dear; 1: FR, cheapest; 2: US, mid, big stake; 3: DE, mid; hyperscale (row 4): US
    providers = [
        P("DE", price=2_000, stake=ETH),
        P("FR", price=500, stake=ETH),
        P("US", price=1_000, stake=9 * ETH),
        P("DE", price=1_500, stake=ETH),
    ]
    rtt = {("DE", "FR"): 15.0, ("DE", "US"): 90.0, ("FR", "US"): 85.0}
    return tiny_world(providers, [C("DE"), C("DE", eu_only=True)], rtt_ms=rtt)


def _jobs(count: int, gap: float = 0.5, clients: int | np.ndarray = 0) -> object:
    return tiny_arrivals(np.arange(count) * gap, clients)


def test_centralized_sends_everything_to_the_hyperscale_pool() -> None:
    result = run(_market(), _jobs(30), "centralized")  # type: ignore[arg-type]
    assert (result.outcome == OK).all()
    assert (result.provider == 4).all()
    assert result.provider_hyperscale[4]


def test_centralized_cannot_serve_a_client_whose_data_must_stay_in_the_eu() -> None:
    result = run(_market(), _jobs(10, clients=1), "centralized")  # type: ignore[arg-type]
    assert (result.outcome == REJECTED).all()
    # a market policy serves the same jobs inside the EU
    other = run(_market(), _jobs(10, clients=1), "random")  # type: ignore[arg-type]
    assert (other.outcome == OK).all()
    assert np.isin(other.provider, [0, 1, 3]).all()


def test_cheapest_takes_the_lowest_price() -> None:
    result = run(_market(), _jobs(30), "cheapest")  # type: ignore[arg-type]
    assert (result.provider == 1).all()


def test_nearest_takes_the_lowest_rtt() -> None:
    result = run(_market(), _jobs(30), "nearest")  # type: ignore[arg-type]
    # two DE providers at equal RTT: the lower index
    assert (result.provider == 0).all()


def test_random_spreads_over_every_market_provider_and_never_the_pool() -> None:
    result = run(_market(), _jobs(400, gap=0.05), "random", seed=4)  # type: ignore[arg-type]
    counts = np.bincount(result.provider, minlength=5)
    assert counts[4] == 0
    assert (counts[:4] > 60).all()


def test_stake_weighted_picks_in_proportion_to_stake() -> None:
    result = run(_market(), _jobs(600, gap=0.05), "stake_weighted", seed=4)  # type: ignore[arg-type]
    share = np.bincount(result.provider, minlength=5)[2] / len(result.provider)
    assert 0.6 < share < 0.9  # 9 of 12 ETH: 0.75


def test_randomized_policies_depend_on_the_seed_only() -> None:
    a = run(_market(), _jobs(200, gap=0.05), "random", seed=1)  # type: ignore[arg-type]
    b = run(_market(), _jobs(200, gap=0.05), "random", seed=1)  # type: ignore[arg-type]
    c = run(_market(), _jobs(200, gap=0.05), "random", seed=2)  # type: ignore[arg-type]
    assert np.array_equal(a.provider, b.provider)
    assert not np.array_equal(a.provider, c.provider)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_respects_residency(policy: str) -> None:
    world = _market()
    result = run(world, _jobs(40, gap=0.1, clients=np.arange(40) % 2), policy)  # type: ignore[arg-type]
    eu_client = result.client == 1
    served = result.provider[eu_client]
    assert np.isin(served[served >= 0], [0, 1, 3]).all()


@pytest.mark.parametrize("policy", ["cheapest", "nearest", "proxima", "centralized"])
def test_every_policy_respects_capacity(policy: str) -> None:
    # one slot each, no queueing allowed, jobs of 10 s arriving together: one job per provider per snapshot
    providers = [P("DE", slots=1, decode=1.0, price=100 * (i + 1)) for i in range(3)]
    hyperscale = [P("US", slots=1, decode=1.0), P("US", slots=1, decode=1.0)]
    world = tiny_world(providers, [C("DE")], hyperscale=hyperscale)
    arrivals = tiny_arrivals(np.zeros(3), 0)
    result = run(world, arrivals, policy, matching=MatchingConfig(queue_allowance=0))
    assert (result.outcome == OK).all()
    service = 100 / 10_000 + 10 / 1.0
    for p in set(result.provider.tolist()):
        done = np.sort(result.settled_s[result.provider == p])
        assert (np.diff(done) >= service - 1e-9).all()  # one job at a time on a one-slot provider
    # and no job queued behind another: each started when it arrived or after a snapshot showed a free slot
    assert len(set(result.provider.tolist())) == (2 if policy == "centralized" else 3)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_avoids_a_provider_that_just_failed(policy: str) -> None:
    # the cheapest/nearest/first provider never delivers; after the first failure the gateway blocks it
    providers = [P("DE", price=100, failure_rate=1.0), P("DE", price=200), P("DE", price=300)]
    hyperscale = [P("US", failure_rate=1.0), P("US")]
    world = tiny_world(providers, [C("DE")], hyperscale=hyperscale)
    result = run(world, _jobs(20, gap=0.2), policy, deliver_timeout_s=1.0)  # type: ignore[arg-type]
    assert (result.outcome == OK).all()
    assert result.attempts.max() <= 3


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(UnknownPolicyError, match="fastest"):
        make_policy("fastest", None)  # type: ignore[arg-type]


def test_fitted_coordinates_predict_the_rtt_matrix() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 0.1, size=(12, 2))
    heights = rng.uniform(0.001, 0.01, 12)
    rtt = np.linalg.norm(points[:, None] - points[None], axis=2) + heights[:, None] + heights[None]
    vectors, fitted_heights = fit_coordinates(rtt, seed=1)
    predicted = (
        np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
        + fitted_heights[:, None]
        + fitted_heights[None]
    )
    relative = np.abs(predicted - rtt) / rtt
    assert np.median(relative) < 0.1
    again = fit_coordinates(rtt, seed=1)
    assert np.array_equal(vectors, again[0])
