"""A whole region going down: the gateway's circuit breakers (the real
:class:`~proxima.marketplace.gateway.health.HealthTracker`) take the dark region out of placement, so jobs
arriving during the outage are delivered elsewhere instead of failing over from one dead provider of the
region to the next (the snapshot still lists them until it is rebuilt). The breakers are off by default
(``SimConfig.circuit_breakers``; see :mod:`proxima.sim.engine` for why): these tests turn them on."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import C, P, run, tiny_arrivals, tiny_world

from proxima.marketplace.gateway.health import HealthSettings
from proxima.sim.arrivals import Arrivals, replay_trace
from proxima.sim.data import load_world_data
from proxima.sim.engine import FAILED, OK, SimConfig, SimResult, simulate
from proxima.sim.world import RegionOutage, World, WorldConfig, build_world

_EUROPE = 12  # providers in Europe (DE, FR), rows 0..11; then the US ones
_START, _LENGTH = 6.0, 6.0


def _world() -> World:
    europe = [P("DE" if i % 2 else "FR", slots=4, decode=50.0) for i in range(_EUROPE)]
    us = [P("US", slots=8, decode=50.0) for _ in range(6)]
    clients = [C("DE"), C("FR"), C("DE", eu_only=True)]
    return tiny_world(
        [*europe, *us], clients, rtt_ms={("DE", "FR"): 12.0, ("DE", "US"): 90.0, ("FR", "US"): 85.0}
    )


def _run(**kwargs: object) -> tuple[SimResult, np.ndarray]:
    world = _world()
    times = np.arange(0.0, 50.0, 0.02)
    clients = np.arange(len(times)) % 3  # the third client may only use Europe
    outage = RegionOutage(countries=("DE", "FR"), start_s=_START, duration_s=_LENGTH)
    settings: dict[str, object] = {"circuit_breakers": True, **kwargs}
    result = run(world, tiny_arrivals(times, clients), "proxima", outage=outage, **settings)
    return result, clients


def test_jobs_arriving_during_a_region_outage_are_delivered_by_failover() -> None:
    result, clients = _run()
    free = clients != 2
    during = (result.arrival_s >= _START) & (result.arrival_s < _START + _LENGTH)

    # every job that may run outside Europe is delivered, the ones arriving during the outage included
    assert (result.outcome[free] == OK).all()
    assert (result.outcome[free & during] == OK).all()
    # the jobs running in Europe when it went down failed over to the US
    moved = free & (result.attempts > 1)
    assert moved.any()
    assert (result.provider[moved] >= _EUROPE).all()
    # while Europe is down, nothing is delivered from there (but results computed before, still in transit)
    from_europe = (result.provider >= 0) & (result.provider < _EUROPE)
    assert not (from_europe & (result.settled_s > _START + 0.5) & (result.settled_s < _START + _LENGTH)).any()
    # Europe-only jobs cannot run while all of Europe is down: they wait; none of them runs outside Europe
    eu_only_delivered = (clients == 2) & result.delivered
    assert ((result.provider[eu_only_delivered] >= 0) & (result.provider[eu_only_delivered] < _EUROPE)).all()
    # after the region's cool-down a trial job succeeds and Europe serves again
    assert (from_europe & (result.arrival_s > _START + _LENGTH + 30.0)).any()


@pytest.fixture(scope="module")
def market() -> tuple[World, Arrivals, RegionOutage, np.ndarray]:
    """A market from the real data (300 providers), Europe down through the middle of the run, and which
    jobs may run outside Europe (their residency allows a country with providers outside it)."""
    world = build_world(load_world_data(), WorldConfig(providers=300, clients=300, seed=7))
    arrivals = replay_trace(world, 15_000, seed=7)
    horizon = float(arrivals.t[-1])
    outage = RegionOutage.of_region("europe", 0.35 * horizon, 0.3 * horizon)
    countries = world.data.countries
    outside = np.zeros(len(countries), dtype=bool)
    for c in np.unique(world.providers.country).tolist():
        outside[c] = countries[c] not in outage.countries
    residency = world.client_residency[arrivals.client].astype(np.int64)
    anywhere = residency < 0
    allowed = world.residency_allowed[np.maximum(residency, 0)] & outside
    return world, arrivals, outage, anywhere | allowed.any(axis=1)


def test_with_breakers_a_region_outage_in_a_300_provider_market_fails_no_job_that_can_run_elsewhere(
    market: tuple[World, Arrivals, RegionOutage, np.ndarray],
) -> None:
    world, arrivals, outage, elsewhere = market
    config = SimConfig(policy="proxima", seed=7, outage=outage, circuit_breakers=True)
    result = simulate(world, arrivals, config)
    during = (result.arrival_s >= outage.start_s) & (result.arrival_s < outage.ends_s())
    assert (result.delivered[elsewhere]).all()
    assert result.failovers > 0
    assert (result.attempts[elsewhere & during] > 1).any()
    assert result.honest_slashed == 0


def test_without_circuit_breakers_failover_keeps_landing_on_the_dead_region(
    market: tuple[World, Arrivals, RegionOutage, np.ndarray],
) -> None:
    """The failure the breakers prevent: until the next snapshot, each failover of a job from a European
    client goes to the next nearby (listed, dead) provider, and all its attempts fail."""
    world, arrivals, outage, elsewhere = market
    config = SimConfig(policy="proxima", seed=7, outage=outage, circuit_breakers=False)
    result = simulate(world, arrivals, config)
    failed = (result.outcome == FAILED) & elsewhere
    assert failed.any()
    assert (result.attempts[failed] == config.max_attempts).all()


def test_health_settings_are_the_gateways_own() -> None:
    result, _ = _run(health=HealthSettings(cooldown_s=5.0, region_min_failed=10**6))
    assert result.config.health is not None
    assert result.config.health.cooldown_s == 5.0
    # a shorter cool-down brings Europe back sooner (its trial follows the outage's end)
    from_europe = (result.provider >= 0) & (result.provider < _EUROPE)
    assert (
        from_europe & (result.arrival_s > _START + _LENGTH) & (result.arrival_s < _START + _LENGTH + 25)
    ).any()
