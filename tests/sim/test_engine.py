"""The simulator core on small worlds built by hand: determinism, verification and slashing, churn and
outages with failover, settlement bookkeeping, and the time series.

``tiny_world`` / ``tiny_arrivals`` build real :class:`proxima.sim.world.World` and
:class:`proxima.sim.arrivals.Arrivals` objects from a few explicit providers and clients (the other sim
test files import them); the data part is a small real :class:`proxima.sim.data.WorldData` with a given
RTT matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from proxima.marketplace.matching import ProviderStats, reliability_arrays
from proxima.sdk.deploy import DeployParameters
from proxima.sim.arrivals import Arrivals
from proxima.sim.data import GpuModel, PriceTable, RttModel, Trace, WorldData
from proxima.sim.economics import BPS, Redemption, SlashEvent
from proxima.sim.engine import (
    DROPPED,
    FAILED,
    OK,
    REJECTED,
    WRONG,
    ProviderRecords,
    SimConfig,
    SimConfigError,
    SimResult,
    reliability_from_counts,
    simulate,
)
from proxima.sim.metrics import summarize, time_series
from proxima.sim.world import EU_COUNTRIES, FLOPS_PER_TOKEN, Providers, RegionOutage, World, WorldConfig

ETH = 10**18


@dataclass(frozen=True)
class P:
    """One hand-made provider."""

    country: str
    slots: int = 8
    prefill: float = 10_000.0  # prompt tokens/s per slot
    decode: float = 100.0  # output tokens/s per slot
    price: int = 1_000  # wei per token
    stake: int = 2 * ETH
    cheat_rate: float = 0.0
    failure_rate: float = 0.0
    mtbf_s: float = math.inf
    mttr_s: float = 60.0


@dataclass(frozen=True)
class C:
    """One hand-made client."""

    country: str
    target_ms: float = 10_000.0
    eu_only: bool = False


def _providers(items: Sequence[P], countries: tuple[str, ...], salt: bytes) -> Providers:
    index = {c: i for i, c in enumerate(countries)}
    n = len(items)
    prefill = np.array([p.prefill for p in items])
    decode = np.array([p.decode for p in items])
    stakes = np.empty(n, dtype=object)
    stakes[:] = [p.stake for p in items]
    cheat = np.array([p.cheat_rate for p in items])
    return Providers(
        country=np.array([index[p.country] for p in items], dtype=np.int32),
        gpu=np.zeros(n, dtype=np.int32),
        gpus=np.ones(n, dtype=np.int32),
        slots=np.array([p.slots for p in items], dtype=np.int32),
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        flops_per_s=prefill * FLOPS_PER_TOKEN,
        tokens_per_s=1.0 / (0.5 / prefill + 0.5 / decode),
        price_usd_h=np.ones(n),
        price_wei_per_unit=np.array([p.price for p in items], dtype=np.int64),
        stake_wei=stakes,
        honest=cheat == 0,
        cheat_rate=cheat,
        failure_rate=np.array([p.failure_rate for p in items]),
        mtbf_s=np.array([p.mtbf_s for p in items]),
        mttr_s=np.array([p.mttr_s for p in items]),
        address_salt=salt,
    )


def tiny_world(
    providers: Sequence[P],
    clients: Sequence[C],
    *,
    rtt_ms: dict[tuple[str, str], float] | None = None,
    hyperscale: Sequence[P] = (P("US", price=5_000),),
    outage: RegionOutage | None = None,
) -> World:
    """A world of the given providers and clients in the countries they name.

    RTTs: ``rtt_ms[(a, b)]`` where given (symmetric), 5 ms inside a country, else 100 ms.
    """
    names = {p.country for p in (*providers, *hyperscale)} | {c.country for c in clients} | {"DE", "FR", "US"}
    countries = tuple(sorted(names))
    k = len(countries)
    rtt = np.full((k, k), 100.0)
    np.fill_diagonal(rtt, 5.0)
    for (a, b), value in (rtt_ms or {}).items():
        i, j = countries.index(a), countries.index(b)
        rtt[i, j] = rtt[j, i] = value
    gpu = GpuModel("TEST-GPU", 100.0, 50.0, 80.0, 2_000.0, "test")
    data = WorldData(
        data_dir=Path("."),
        countries=countries,
        names=countries,
        lat=np.zeros(k),
        lon=np.zeros(k),
        pings=np.ones(k),
        rtt_ms=rtt,
        rtt_measured=np.ones((k, k), dtype=bool),
        rtt_model=RttModel(0.01, np.zeros(k), 0.0),
        intra_asn_rtt_ms=5.0,
        gpus=(gpu,),
        prices=PriceTable(
            models=("TEST-GPU",),
            quantile_probs=np.array([0.0, 1.0]),
            quantiles_usd_h=np.array([[1.0, 1.0]]),
            from_series=np.zeros(1, dtype=bool),
            offers=np.zeros(1),
            times=np.zeros(0),
            median_series_usd_h=np.zeros((0, 1)),
        ),
        trace=Trace(
            t=np.array([0.0, 1.0]),
            prompt_tokens=np.array([100, 100], dtype=np.int32),
            output_tokens=np.array([10, 10], dtype=np.int32),
            kind=np.zeros(2, dtype=np.int8),
        ),
    )
    eu = tuple(sorted(EU_COUNTRIES & set(countries)))
    return World(
        data=data,
        config=WorldConfig(providers=max(1, len(providers)), clients=max(1, len(clients)), outage=outage),
        providers=_providers(providers, countries, b"market"),
        hyperscale=_providers(hyperscale, countries, b"hyperscale"),
        country_region=tuple("europe" if c in EU_COUNTRIES else c.lower() for c in countries),
        client_country=np.array([countries.index(c.country) for c in clients], dtype=np.int32),
        client_weight=np.full(len(clients), 1.0 / len(clients)),
        client_interactive=np.ones(len(clients), dtype=bool),
        client_latency_target_ms=np.array([c.target_ms for c in clients]),
        client_residency=np.array([0 if c.eu_only else -1 for c in clients], dtype=np.int16),
        residency_sets=(eu,),
        residency_allowed=np.array([[c in EU_COUNTRIES for c in countries]]),
    )


def tiny_arrivals(
    times: Sequence[float] | np.ndarray,
    clients: Sequence[int] | np.ndarray | int = 0,
    *,
    prompt: int = 100,
    output: int = 10,
    target_ms: float = 10_000.0,
) -> Arrivals:
    """Jobs at ``times`` from ``clients`` (one client index for all, or one per job)."""
    t = np.asarray(times, dtype=np.float64)
    n = len(t)
    client = np.broadcast_to(np.asarray(clients, dtype=np.int32), (n,)).copy()
    units = np.full(n, prompt + output, dtype=np.int64)
    return Arrivals(
        t=t,
        client=client,
        prompt_tokens=np.full(n, prompt, dtype=np.int32),
        output_tokens=np.full(n, output, dtype=np.int32),
        kind=np.zeros(n, dtype=np.int8),
        units=units,
        flops=units * FLOPS_PER_TOKEN,
        prefill_flops=np.full(n, prompt * FLOPS_PER_TOKEN),
        ttft_target_ms=np.full(n, target_ms),
        latency_target_ms=np.full(n, target_ms),
        injected=np.zeros(n, dtype=bool),
        time_scale=1.0,
    )


def run(world: World, arrivals: Arrivals, policy: str = "proxima", **kwargs: object) -> SimResult:
    """``simulate`` with a test-friendly config (no churn unless asked, no canaries unless asked)."""
    settings: dict[str, object] = {"churn": False, "canary_rate": 0.0, "check_share": 0.0}
    settings.update(kwargs)
    return simulate(world, arrivals, SimConfig(policy=policy, **settings))  # type: ignore[arg-type]


def slashes_of(result: SimResult) -> list[SlashEvent]:
    return [s for s in result.settlements if isinstance(s, SlashEvent)]


def redemptions_of(result: SimResult) -> list[Redemption]:
    return [s for s in result.settlements if isinstance(s, Redemption)]


# --- determinism ---------------------------------------------------------------------------------------


def _mixed_world() -> World:
    providers = [P("DE", price=900 + 10 * i, failure_rate=0.02) for i in range(6)]
    providers += [P("FR", price=1_000, cheat_rate=0.5), P("US", price=800, mtbf_s=20.0, mttr_s=5.0)]
    providers += [P("DE", price=950, mtbf_s=15.0, mttr_s=3.0)]
    clients = [C("DE"), C("FR", eu_only=True), C("US", target_ms=500.0)]
    return tiny_world(providers, clients)


@pytest.mark.parametrize("policy", ["proxima", "random", "stake_weighted"])
def test_same_seed_same_result(policy: str) -> None:
    world = _mixed_world()
    rng = np.random.default_rng(3)
    arrivals = tiny_arrivals(np.sort(rng.uniform(0, 30, 600)), rng.integers(0, 3, 600))
    config = {"churn": True, "check_share": 0.3, "canary_rate": 0.1, "seed": 11}
    a = run(world, arrivals, policy, **config)
    b = run(world, arrivals, policy, **config)
    for name in ("provider", "outcome", "latency_ms", "ttft_ms", "cost_wei", "attempts", "settled_s"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.settlements == b.settlements
    assert list(a.provider_stake_wei) == list(b.provider_stake_wei)
    assert a.events == b.events
    other = run(world, arrivals, policy, **{**config, "seed": 12})
    assert not np.array_equal(a.latency_ms, other.latency_ms, equal_nan=True)


# --- verification, slashing, economics of a run -------------------------------------------------------------


def test_cheater_is_caught_slashed_by_the_rules_and_leaves_the_market() -> None:
    params = DeployParameters(epoch_length=10)
    honest = [P("DE", price=1_000, failure_rate=0.05) for _ in range(3)]
    cheater = P("DE", price=500, cheat_rate=1.0, stake=3 * ETH // 2)  # cheapest: everyone wants it
    world = tiny_world([cheater, *honest], [C("DE")])
    arrivals = tiny_arrivals(np.arange(0, 40, 0.05), 0)
    # no circuit breakers: in this one-region market the cheater's rejected results and an honest provider's
    # unlucky failure darken the whole region for a while (the gateway's rule), which is not what this checks
    result = run(
        world, arrivals, "cheapest", check_share=1.0, quarantine_s=0.0, params=params, circuit_breakers=False
    )

    slashes = slashes_of(result)
    assert result.honest_slashed == 0
    assert result.cheaters == 1
    assert result.cheaters_caught == 1
    assert {s.provider for s in slashes} == {0}
    first = slashes[0]
    assert first.fault == "invalid_result"
    assert first.slashable_wei == 3 * ETH // 2
    assert first.slashed_wei == first.slashable_wei * params.fault_slash_bps // BPS
    assert first.finder_reward_wei == first.slashed_wei * params.finder_share_bps // BPS
    assert first.funded_wei == first.slashed_wei - first.finder_reward_wei
    assert first.to_treasury_wei == first.funded_wei * params.treasury_bps // BPS
    assert first.stake_after_wei == first.slashable_wei - first.slashed_wei < params.min_provider_stake
    assert result.provider_stake_wei[0] == slashes[-1].stake_after_wei
    # below the minimum stake it leaves the market at the next snapshot: no job after that is dispatched there
    next_snapshot = math.ceil(first.t / 5.0) * 5.0
    late = result.arrival_s >= next_snapshot
    assert not (result.provider[late] == 0).any()
    # every checked result is right: nothing wrong was delivered, every job was (re)done by the honest
    assert result.wrong_results == 0
    assert set(result.outcome.tolist()) <= {OK}
    assert (result.provider[result.outcome == OK] != 0).all()


def test_honest_providers_are_never_slashed_even_with_every_result_checked() -> None:
    providers = [P("DE", failure_rate=0.1, mtbf_s=10.0, mttr_s=2.0) for _ in range(5)]
    providers += [P("FR", cheat_rate=0.3), P("FR", cheat_rate=0.05)]
    world = tiny_world(providers, [C("DE"), C("FR")])
    arrivals = tiny_arrivals(np.arange(0, 30, 0.02), np.arange(1500) % 2)
    for policy in ("proxima", "random", "nearest"):
        result = run(world, arrivals, policy, churn=True, check_share=1.0, canary_rate=0.5, seed=5)
        slashes = slashes_of(result)
        assert result.honest_slashed == 0
        assert all(not s.honest for s in slashes)
        assert {s.provider for s in slashes} <= {5, 6}
        assert all(result.provider_slashed_wei[p] == 0 for p in range(5))
        assert result.cheaters_caught == len({s.provider for s in slashes})
        assert {s.fault for s in slashes} <= {"invalid_result", "canary"}


def test_unchecked_wrong_results_are_delivered_paid_and_counted() -> None:
    world = tiny_world([P("DE", cheat_rate=1.0)], [C("DE")])
    result = run(world, tiny_arrivals(np.arange(0, 5, 0.1), 0), "random", check_share=0.0)
    assert result.wrong_results == len(result.outcome) == int((result.outcome == WRONG).sum())
    assert result.slashes == 0
    assert (result.cost_wei > 0).all()


def test_money_adds_up() -> None:
    params = DeployParameters(epoch_length=7)
    world = _mixed_world()
    rng = np.random.default_rng(8)
    arrivals = tiny_arrivals(np.sort(rng.uniform(0, 40, 800)), rng.integers(0, 3, 800))
    result = run(world, arrivals, "proxima", churn=True, check_share=0.5, canary_rate=0.2, params=params)
    redemptions = redemptions_of(result)
    slashes = slashes_of(result)
    paid = result.cost_wei[result.delivered]
    # every delivered job is paid once, by a voucher redeemed in the epoch of its result
    assert sum(r.amount_wei for r in redemptions) == int(paid.sum())
    assert sum(r.jobs for r in redemptions) == len(paid)
    assert (result.cost_wei[~result.delivered] == 0).all()
    assert len({(r.provider, r.epoch) for r in redemptions}) == len(redemptions)
    for r in redemptions:
        assert r.fee_wei == r.amount_wei * params.fee_bps // BPS
        assert r.payout_wei + r.fee_wei == r.amount_wei
        assert r.to_pot_wei + r.to_treasury_wei == r.fee_wei
        assert sum(a for a, _ in r.per_client.values()) == r.amount_wei
        mine = result.delivered & (result.provider == r.provider)
        in_epoch = mine & (np.floor(result.settled_s / params.epoch_length) == r.epoch)
        assert r.jobs == int(in_epoch.sum())
    for p in range(result.providers):
        mine = result.delivered & (result.provider == p)
        assert result.provider_payout_wei[p] + result.provider_fees_wei[p] == int(result.cost_wei[mine].sum())
    # the pool: fees and slashes' remainders, less the treasury, are the pots; rewards never exceed them
    pots = sum(result.pots_wei.values())
    assert pots == sum(r.to_pot_wei for r in redemptions) + sum(s.to_pot_wei for s in slashes)
    assert result.treasury_wei == sum(r.to_treasury_wei for r in redemptions) + sum(
        s.to_treasury_wei for s in slashes
    )
    assert sum(result.provider_rewards_wei) <= pots
    assert pots - sum(result.provider_rewards_wei) < len(result.pots_wei) * result.providers  # rounding only
    assert result.finder_rewards_wei == sum(s.finder_reward_wei for s in slashes)
    stakes = [*world.providers.stake_wei, *world.hyperscale.stake_wei]
    for p in range(result.providers):
        start = int(stakes[p])
        assert result.provider_stake_wei[p] + result.provider_slashed_wei[p] == start
    # cumulative vouchers only grow, per client and provider
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for r in sorted(redemptions, key=lambda r: r.epoch):
        for client, (amount, jobs) in r.cumulative.items():
            before = seen.get((client, r.provider), (0, 0))
            assert amount - before[0] == r.per_client[client][0]
            assert jobs - before[1] == r.per_client[client][1]
            seen[(client, r.provider)] = (amount, jobs)


# --- churn, outages, failover -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["proxima", "nearest", "random"])
def test_region_outage_fails_over_to_another_region(policy: str) -> None:
    de = [P("DE", slots=4, decode=20.0) for _ in range(3)]  # 0.5 s jobs: some are running at the outage
    fr = [P("FR", slots=4, decode=20.0) for _ in range(3)]
    outage = RegionOutage(countries=("DE",), start_s=5.0, duration_s=10.0)
    world = tiny_world([*de, *fr], [C("DE")], rtt_ms={("DE", "FR"): 15.0})
    arrivals = tiny_arrivals(np.arange(0, 50, 0.05), 0)
    result = run(world, arrivals, policy, outage=outage, failure_detect_s=0.5)

    assert (result.outcome == OK).all()  # every job delivered, through failover where needed
    hit = result.attempts > 1
    assert hit.any()
    assert result.failovers == int((result.attempts - 1).sum())
    # a job that failed over was running on a DE provider at 5 s and ended on FR
    assert (np.isin(result.provider[hit], [3, 4, 5])).all()
    assert (result.arrival_s[hit] < 5.0).all()
    # nothing is delivered from DE while it is down; jobs arriving then run in FR (or wait for capacity)
    from_de = np.isin(result.provider, [0, 1, 2])
    assert not ((result.settled_s[from_de] > 5.0) & (result.settled_s[from_de] < 15.0)).any()
    during = (result.arrival_s >= 5.0) & (result.arrival_s < 14.0)
    assert np.isin(result.provider[during], [3, 4, 5]).mean() > 0.8
    assert result.series.providers_up.min() == 3
    # DE serves again once it is back, listed, and the circuit breakers its failures opened (30 s) let a trial
    # job through
    assert (from_de & (result.arrival_s >= 15.0)).any()


def test_churn_takes_providers_down_and_brings_them_back() -> None:
    providers = [P("DE", mtbf_s=3.0, mttr_s=1.0) for _ in range(6)]
    world = tiny_world(providers, [C("DE")])
    result = run(world, tiny_arrivals(np.arange(0, 30, 0.05), 0), "random", churn=True, seed=2)
    assert result.series.providers_up.min() < 6
    assert (result.provider_up_s[:6] < result.horizon_s).all()
    assert (result.provider_up_s[:6] > 0).all()
    assert result.delivered.mean() > 0.95
    assert result.failovers > 0


def test_a_provider_that_never_delivers_is_timed_out_and_failed_over() -> None:
    world = tiny_world([P("DE", price=10, failure_rate=1.0), P("DE", price=20)], [C("DE")])
    result = run(world, tiny_arrivals([0.0], 0), "cheapest", deliver_timeout_s=3.0)
    assert result.outcome[0] == OK
    assert result.provider[0] == 1
    assert result.attempts[0] == 2
    assert result.latency_ms[0] > 3_000.0


def test_jobs_wait_for_capacity_and_are_dropped_after_max_wait() -> None:
    from proxima.marketplace.matching import MatchingConfig

    world = tiny_world([P("DE", slots=1, decode=1.0)], [C("DE")])  # a 10 s job holds the only slot
    arrivals = tiny_arrivals([0.0, 0.1, 0.2], 0)
    result = run(world, arrivals, "proxima", matching=MatchingConfig(queue_allowance=0), max_wait_s=4.0)
    assert result.outcome[0] == OK
    assert (result.outcome[1:] == DROPPED).all()
    assert (result.provider[1:] == -1).all()


def test_residency_that_no_provider_satisfies_is_rejected() -> None:
    world = tiny_world([P("US")], [C("DE", eu_only=True), C("US")])
    result = run(world, tiny_arrivals([0.0, 0.1], [0, 1]), "proxima")
    assert result.outcome.tolist() == [REJECTED, OK]


def test_all_attempts_failing_gives_failed() -> None:
    world = tiny_world([P("DE", failure_rate=1.0) for _ in range(3)], [C("DE")])
    result = run(
        world,
        tiny_arrivals([0.0], 0),
        "random",
        deliver_timeout_s=1.0,
        max_attempts=3,
        circuit_breakers=False,
    )
    assert result.outcome[0] == FAILED
    assert result.attempts[0] == 3
    # with the gateway's circuit breakers, two providers of the region failing darkens it: the job waits for
    # a provider the gateway will use, and fails after max_wait_s having tried two
    result = run(
        world, tiny_arrivals([0.0], 0), "random", deliver_timeout_s=1.0, max_attempts=3, circuit_breakers=True
    )
    assert result.outcome[0] == FAILED
    assert result.attempts[0] == 2


# --- timeline -----------------------------------------------------------------------------------------------


def test_latency_is_rtt_plus_queue_plus_service() -> None:
    world = tiny_world(
        [P("FR", slots=1, prefill=1_000.0, decode=50.0)], [C("DE")], rtt_ms={("DE", "FR"): 40.0}
    )
    result = run(world, tiny_arrivals([1.0, 1.0], 0, prompt=500, output=100), "nearest")
    link = 100e6
    transfer = 8 * (500 + 100) * 4 / link
    service = 500 / 1_000.0 + 100 / 50.0
    first = 0.040 + transfer + service
    assert result.latency_ms[0] == pytest.approx(first * 1000, rel=1e-9)
    # the second waits for the only slot
    assert result.latency_ms[1] == pytest.approx((first + service) * 1000, rel=1e-9)
    assert result.ttft_ms[0] == pytest.approx((0.040 + transfer + 0.5 + 1 / 50.0) * 1000, rel=1e-9)
    assert result.provider_busy_s[0] == pytest.approx(2 * service)


def test_time_series_and_summary() -> None:
    world = _mixed_world()
    arrivals = tiny_arrivals(np.arange(0, 20, 0.05), np.arange(400) % 3)
    result = run(world, arrivals, "proxima", series_bucket_s=2.0)
    series = time_series(result)
    assert len(series.t) == 10
    assert int(series.arrivals.sum()) == result.jobs
    assert int(series.delivered.sum()) == int(result.delivered.sum())
    assert len(series.snapshot_t) == len(result.series.t) >= 4
    summary = summarize(result, eth_usd=3_000.0)
    assert summary.delivered + summary.dropped + summary.rejected + summary.failed == result.jobs
    assert summary.p50_ms <= summary.p95_ms <= summary.p99_ms
    assert 0 <= summary.met_target <= 1
    assert 0 < summary.utilisation < 1
    assert summary.honest_slashed == 0


# --- settings and helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("policy", "fastest"),
        ("seed", -1),
        ("window_s", 0.0),
        ("snapshot_interval_s", 2.5),
        ("snapshot_interval_s", 0.07),
        ("check_share", 1.5),
        ("max_attempts", 0),
        ("max_wait_s", math.inf),
    ],
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    base = {"policy": "proxima"}
    base[field] = value  # type: ignore[assignment]
    with pytest.raises(SimConfigError, match=field):
        SimConfig(**base)  # type: ignore[arg-type]


def test_records_are_checked_and_feed_the_start() -> None:
    world = tiny_world([P("DE"), P("DE")], [C("DE")])
    arrivals = tiny_arrivals([0.0], 0)
    n = 3  # two market providers and the hyperscale one
    with pytest.raises(SimConfigError, match=r"records\.completed"):
        simulate(
            world,
            arrivals,
            SimConfig(policy="proxima"),
            records=ProviderRecords(np.zeros(2, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)),
        )


def test_reliability_matches_the_matching_engine_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    n = 200
    completed = rng.integers(0, 5_000, n)
    successes = rng.integers(0, 50, n)
    failures = rng.integers(0, 50, n)
    stake = rng.integers(0, 5, n) * ETH
    slashed = np.where(rng.random(n) < 0.3, rng.integers(1, 3, n) * ETH // 2, 0)
    stats = [
        ProviderStats(
            address="0x" + f"{i + 1:040x}",  # type: ignore[arg-type]
            stake_wei=int(stake[i]),
            jobs_completed=int(completed[i]),
            total_slashed_wei=int(slashed[i]),
            observed_successes=int(successes[i]),
            observed_failures=int(failures[i]),
        )
        for i in range(n)
    ]
    mine = reliability_from_counts(
        completed, successes, failures, stake.astype(np.float64), slashed.astype(np.float64)
    )
    np.testing.assert_array_equal(mine, reliability_arrays(stats))


def test_arrivals_out_of_range_are_refused() -> None:
    world = tiny_world([P("DE")], [C("DE")])
    with pytest.raises(SimConfigError, match=r"arrivals\.client"):
        run(world, tiny_arrivals([0.0], 3))
    with pytest.raises(SimConfigError, match=r"arrivals\.t"):
        run(world, replace(tiny_arrivals([1.0, 0.0], 0)))


def test_vectorized_draws_equal_the_scalar_draws() -> None:
    from proxima.sim.engine import _draw, _draws

    jobs = np.array([0, 1, 2, 12345, 2**40 + 7], dtype=np.int64)
    for seed, stream, attempt in ((0, 1, 0), (2**63 + 5, 3, 0), (7, 2, 3)):
        fast = _draws(seed, stream, jobs, attempt)
        assert fast.tolist() == [_draw(seed, stream, int(j), attempt) for j in jobs]
        assert ((fast >= 0) & (fast < 1)).all()


def test_the_gateway_plans_queue_waits_with_the_traffic_mean_job_time() -> None:
    from proxima.marketplace.matching import MatchingConfig
    from proxima.sim.engine import DEFAULT_QUEUE_ALLOWANCE, gateway_matching

    world = tiny_world([P("DE", slots=2, decode=10.0), P("FR", slots=6, decode=30.0)], [C("DE")])
    arrivals = tiny_arrivals([0.0, 1.0], 0, prompt=1_000, output=20)
    config = gateway_matching(world, arrivals)
    per_prefill = (2 / 8) / 10_000.0 + (6 / 8) / 10_000.0
    per_decode = (2 / 8) / 10.0 + (6 / 8) / 30.0
    assert config.queue_job_s == pytest.approx(1_000 * per_prefill + 20 * per_decode)
    assert config.queue_allowance == DEFAULT_QUEUE_ALLOWANCE
    assert run(world, arrivals).matching == config
    mine = MatchingConfig(queue_allowance=1)
    assert run(world, arrivals, matching=mine).matching == mine


def test_a_run_is_the_same_in_another_process_with_another_hash_seed() -> None:
    import hashlib
    import os
    import subprocess
    import sys

    script = (
        f"import hashlib, sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import numpy as np\n"
        "from test_engine import _mixed_world, run, tiny_arrivals\n"
        "rng = np.random.default_rng(3)\n"
        "a = tiny_arrivals(np.sort(rng.uniform(0, 20, 300)), rng.integers(0, 3, 300))\n"
        "r = run(_mixed_world(), a, 'proxima', churn=True, check_share=0.3, canary_rate=0.1, seed=4)\n"
        "h = hashlib.sha256(r.provider.tobytes() + r.latency_ms.tobytes() + repr(r.settlements).encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True, timeout=120
        )
        digests.add(done.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
    assert len(hashlib.sha256(b"").hexdigest()) == len(digests.pop())
