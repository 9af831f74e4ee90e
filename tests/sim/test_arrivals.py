"""Arrivals replayed from the Azure LLM trace: sizes, determinism, scaling, burstiness, burst injection."""

from __future__ import annotations

import numpy as np
import pytest

from proxima.sim.arrivals import (
    DEFAULT_LOAD,
    WORKLOAD,
    Arrivals,
    ArrivalsError,
    inject_burst,
    peak_to_mean,
    replay_trace,
)
from proxima.sim.data import load_world_data
from proxima.sim.world import FLOPS_PER_TOKEN, World, WorldConfig, build_world


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(load_world_data(), WorldConfig(providers=2_000, clients=1_000, seed=5))


def _offered_load(world: World, arrivals: Arrivals) -> float:
    p = world.providers
    share = p.slots / p.slots.sum()
    busy = arrivals.prompt_tokens.sum() * np.dot(
        share, 1 / p.prefill_tokens_per_s
    ) + arrivals.output_tokens.sum() * np.dot(share, 1 / p.decode_tokens_per_s)
    return float(busy / (p.slots.sum() * arrivals.horizon_s))


def test_arrivals_carry_the_trace_sizes_in_time_order(world: World) -> None:
    trace = world.data.trace
    a = replay_trace(world, 5_000, seed=1)
    assert len(a) == 5_000
    assert a.workload == WORKLOAD
    assert a.t[0] == 0.0
    assert (np.diff(a.t) >= 0).all()
    pairs = set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist(), strict=True))
    assert set(zip(a.prompt_tokens.tolist(), a.output_tokens.tolist(), strict=True)) <= pairs
    assert np.array_equal(a.units, np.maximum(a.prompt_tokens.astype(np.int64) + a.output_tokens, 1))
    assert (a.units >= 1).all()
    assert np.array_equal(a.flops, a.units * FLOPS_PER_TOKEN)
    assert np.array_equal(a.prefill_flops, a.prompt_tokens * FLOPS_PER_TOKEN)
    assert not a.injected.any()
    assert ((a.client >= 0) & (a.client < world.clients)).all()
    assert np.array_equal(a.ttft_target_ms, world.client_latency_target_ms[a.client])
    assert np.allclose(a.latency_target_ms, a.ttft_target_ms + a.output_tokens * world.config.token_budget_ms)


def test_same_seed_same_arrivals(world: World) -> None:
    first, second = replay_trace(world, 3_000, seed=9), replay_trace(world, 3_000, seed=9)
    for name in ("t", "client", "prompt_tokens", "output_tokens", "units"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    other = replay_trace(world, 3_000, seed=10)
    assert not np.array_equal(first.client, other.client)
    assert not np.array_equal(first.prompt_tokens, other.prompt_tokens)


def test_speedup_one_replays_the_trace_gaps(world: World) -> None:
    trace = world.data.trace
    a = replay_trace(world, 50_000, seed=2, speedup=1.0)
    assert a.time_scale == 1.0
    gaps = np.diff(a.t)
    trace_gaps = np.diff(trace.t)
    # Inside a tile every gap is one of the trace's; one gap per tile boundary is the mean gap.
    assert np.isin(np.round(gaps, 6), np.round(trace_gaps, 6)).mean() > 0.999
    assert a.horizon_s == pytest.approx(50_000 / len(trace) * trace.duration_s, rel=0.05)
    faster = replay_trace(world, 50_000, seed=2, speedup=4.0)
    assert np.allclose(faster.t, a.t / 4)


def test_horizon_and_load_scale_time(world: World) -> None:
    a = replay_trace(world, 20_000, seed=3, horizon_s=3_600.0)
    assert a.horizon_s == pytest.approx(3_600.0)
    default = replay_trace(world, 20_000, seed=3)
    assert _offered_load(world, default) == pytest.approx(DEFAULT_LOAD, rel=1e-6)
    heavy = replay_trace(world, 20_000, seed=3, load=0.9)
    assert _offered_load(world, heavy) == pytest.approx(0.9, rel=1e-6)
    assert heavy.horizon_s < default.horizon_s


def test_scaling_keeps_the_trace_burstiness(world: World) -> None:
    trace = world.data.trace
    reference = peak_to_mean(trace.t, 1.0)
    assert reference > 5  # the trace is bursty
    for jobs, kwargs in ((100_000, {}), (200_000, {"horizon_s": 600.0}), (60_000, {"speedup": 10.0})):
        a = replay_trace(world, jobs, seed=4, **kwargs)
        ratio = peak_to_mean(a.t, a.time_scale)
        assert reference * 0.7 <= ratio <= reference * 1.5, (jobs, kwargs, ratio, reference)
    # Uniformly spread arrivals of the same count are nowhere near as bursty.
    rng = np.random.default_rng(0)
    flat = np.sort(rng.uniform(0, trace.duration_s, len(trace)))
    assert peak_to_mean(flat, 1.0) < reference / 2


def test_a_million_arrivals(world: World) -> None:
    a = replay_trace(world, 1_000_000, seed=6)
    assert len(a) == 1_000_000
    assert (np.diff(a.t) >= 0).all()
    # Every trace request appears about equally often (tiling), sizes keep the trace's mean.
    trace = world.data.trace
    assert a.prompt_tokens.mean() == pytest.approx(trace.prompt_tokens.mean(), rel=0.02)


def test_heavy_clients_send_more(world: World) -> None:
    a = replay_trace(world, 200_000, seed=7)
    counts = np.bincount(a.client, minlength=world.clients)
    expected = world.client_weight * len(a)
    assert np.corrcoef(counts, expected)[0, 1] > 0.95


def test_take_selects_rows(world: World) -> None:
    a = replay_trace(world, 100, seed=1)
    part = a.take(np.arange(10, 20))
    assert len(part) == 10
    assert np.array_equal(part.t, a.t[10:20])
    assert part.time_scale == a.time_scale
    assert np.array_equal(a.take(a.kind == 0).kind, a.kind[a.kind == 0])


def test_inject_burst_multiplies_the_window(world: World) -> None:
    a = replay_trace(world, 20_000, seed=8, horizon_s=1_000.0)
    window = (a.t >= 400) & (a.t < 450)
    before = int(window.sum())
    b = inject_burst(world, a, start_s=400.0, duration_s=50.0, factor=5.0, seed=1)
    after = int(((b.t >= 400) & (b.t < 450)).sum())
    assert after == before + round(4 * before)
    assert len(b) == len(a) + round(4 * before)
    assert (np.diff(b.t) >= 0).all()
    assert b.injected.sum() == len(b) - len(a)
    assert ((b.t[b.injected] >= 400) & (b.t[b.injected] < 450)).all()
    assert np.array_equal(b.t[~b.injected], a.t)
    assert np.array_equal(b.client[~b.injected], a.client)
    # The burst shows in per-second counts.
    assert peak_to_mean(b.t, 10.0) > 2 * peak_to_mean(a.t, 10.0)
    # Deterministic.
    again = inject_burst(world, a, start_s=400.0, duration_s=50.0, factor=5.0, seed=1)
    assert np.array_equal(again.t, b.t)
    assert np.array_equal(again.client, b.client)
    assert inject_burst(world, a, start_s=400.0, duration_s=50.0, factor=1.0, seed=1) is a


def test_regional_burst_draws_clients_there(world: World) -> None:
    a = replay_trace(world, 5_000, seed=8, horizon_s=500.0)
    b = inject_burst(world, a, start_s=100.0, duration_s=20.0, factor=3.0, seed=2, countries=["DE", "FR"])
    codes = np.array(world.data.countries)[world.client_country[b.client[b.injected]]]
    assert b.injected.any()
    assert set(codes) <= {"DE", "FR"}
    with pytest.raises(ArrivalsError, match="countries must be ISO-2 codes"):
        inject_burst(world, a, start_s=1.0, duration_s=1.0, factor=2.0, seed=1, countries=["XX"])


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"jobs": 0}, "jobs"),
        ({"jobs": True}, "jobs"),
        ({"speedup": 2.0, "load": 0.5}, "speedup/horizon_s/load"),
        ({"speedup": 0.0}, "speedup"),
        ({"horizon_s": -1.0}, "horizon_s"),
        ({"load": 11.0}, "load"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_named(world: World, kwargs: dict[str, object], argument: str) -> None:
    call: dict[str, object] = {"jobs": 10, "seed": 1} | kwargs
    with pytest.raises(ArrivalsError, match=f"^{argument.replace('/', '/')} must be"):
        replay_trace(world, **call)  # type: ignore[arg-type]


def test_bad_burst_arguments_are_named(world: World) -> None:
    a = replay_trace(world, 100, seed=1)
    with pytest.raises(ArrivalsError, match="factor must be"):
        inject_burst(world, a, start_s=0.0, duration_s=1.0, factor=0.5, seed=1)
    with pytest.raises(ArrivalsError, match="duration_s must be"):
        inject_burst(world, a, start_s=0.0, duration_s=0.0, factor=2.0, seed=1)
    with pytest.raises(ArrivalsError, match="bin_s must be"):
        peak_to_mean(a.t, 0.0)
