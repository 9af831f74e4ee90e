"""Job arrivals replayed from the Azure LLM trace, tiled and scaled, plus traffic-burst injection.

:func:`replay_trace` keeps the trace's own inter-arrival pattern (its bursts: up to 67 requests in one second)
and its request sizes: arrival ``k`` is trace row ``(offset + k) % N`` of tile ``(offset + k) // N``, tiles
laid end to end (one tile = the trace's hour plus one mean gap), the offset drawn from the seed. Time is then
scaled by one factor (``time_scale``: simulation seconds per trace second), chosen by exactly one of:

- ``speedup``: ``time_scale = 1 / speedup`` (``speedup=1``: the trace's own rate, ~8 requests/s);
- ``horizon_s``: the arrivals span ``horizon_s`` seconds;
- ``load`` (default 0.5): the offered load — total busy slot-seconds on an average slot of the market
  (:meth:`proxima.sim.world.Providers.service_time_s`, slot-weighted) over the market's slots times the
  span — equals ``load``. The same number of jobs therefore loads a small and a large world alike.

Scaling every gap by one factor keeps the shape of the traffic: the peak-to-mean ratio of counts per
``time_scale`` seconds is the trace's per-second ratio (:func:`peak_to_mean`).

Each job is one LLM inference request (workload :data:`WORKLOAD` ``"llm"``, billed per token: ``units =
prompt + output tokens``, at least 1; ``flops = units * FLOPS_PER_TOKEN``; ``prefill_flops`` is the
prompt's share, what the first token waits for). A job's client is drawn by the clients' activity weights;
its first-token target is the client's, its completion target adds ``token_budget_ms`` per output token.
:func:`inject_burst` adds a burst for the report's burst scenario.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

from proxima.sim.errors import SimError
from proxima.sim.world import FLOPS_PER_TOKEN, World

__all__ = [
    "DEFAULT_LOAD",
    "WORKLOAD",
    "Arrivals",
    "ArrivalsError",
    "inject_burst",
    "peak_to_mean",
    "replay_trace",
]

WORKLOAD: Final = "llm"
"""Workload name of every simulated job (a valid :class:`proxima.marketplace.matching.JobSpec` workload)."""
DEFAULT_LOAD: Final = 0.5
"""Offered load :func:`replay_trace` aims at when neither a speedup nor a horizon is given."""
MAX_JOBS: Final = 100_000_000


class ArrivalsError(SimError, ValueError):
    """Bad arguments to the arrival generator; the message names the argument."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.argument = name
        super().__init__(f"{name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class Arrivals:
    """Jobs in arrival order (row ``k`` is job ``k``).

    Attributes:
        t: Arrival time, simulation seconds from 0, non-decreasing.
        client: Client row in the world.
        prompt_tokens: Prompt (context) tokens.
        output_tokens: Output (generated) tokens.
        kind: Trace kind (index into :data:`proxima.sim.data.TRACE_KINDS`).
        units: Billing units (tokens), >= 1.
        flops: Work of the whole job, FLOP (``units * FLOPS_PER_TOKEN``).
        prefill_flops: Work before the first token, FLOP.
        ttft_target_ms: First-token target (the client's), ms.
        latency_target_ms: Completion target, ms.
        injected: Whether the job was added by :func:`inject_burst`.
        time_scale: Simulation seconds per trace second.
        workload: Workload name (:data:`WORKLOAD`).
    """

    t: NDArray[np.float64]
    client: NDArray[np.int32]
    prompt_tokens: NDArray[np.int32]
    output_tokens: NDArray[np.int32]
    kind: NDArray[np.int8]
    units: NDArray[np.int64]
    flops: NDArray[np.float64]
    prefill_flops: NDArray[np.float64]
    ttft_target_ms: NDArray[np.float64]
    latency_target_ms: NDArray[np.float64]
    injected: NDArray[np.bool_]
    time_scale: float
    workload: str = WORKLOAD

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def horizon_s(self) -> float:
        """Time of the last arrival (0 when empty)."""
        return float(self.t[-1]) if len(self) else 0.0

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_] | slice) -> Arrivals:
        """The jobs at ``index`` (indices, mask or slice), in that order."""
        return Arrivals(
            t=self.t[index],
            client=self.client[index],
            prompt_tokens=self.prompt_tokens[index],
            output_tokens=self.output_tokens[index],
            kind=self.kind[index],
            units=self.units[index],
            flops=self.flops[index],
            prefill_flops=self.prefill_flops[index],
            ttft_target_ms=self.ttft_target_ms[index],
            latency_target_ms=self.latency_target_ms[index],
            injected=self.injected[index],
            time_scale=self.time_scale,
            workload=self.workload,
        )


def peak_to_mean(t: NDArray[np.float64], bin_s: float) -> float:
    """Largest count of arrivals in one ``bin_s`` bin over the mean count per bin (1.0 for even traffic).

    Raises:
        ArrivalsError: If ``bin_s`` is not positive or ``t`` is empty.
    """
    if not bin_s > 0:
        raise ArrivalsError("bin_s", bin_s, "> 0")
    if len(t) == 0:
        raise ArrivalsError("t", "empty", "at least one arrival")
    bins = np.floor((t - t[0]) / bin_s).astype(np.int64)
    counts = np.bincount(bins)
    return float(counts.max() / counts.mean())


def _check_jobs(jobs: int) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise ArrivalsError("jobs", jobs, f"an integer in [1, {MAX_JOBS:,}]")


def _targets(
    world: World, client: NDArray[np.int32], output: NDArray[np.int32]
) -> tuple[NDArray[np.float64], ...]:
    ttft = world.client_latency_target_ms[client]
    return ttft, ttft + output * world.config.token_budget_ms


def _mean_busy_s(world: World, prompt: NDArray[np.int32], output: NDArray[np.int32]) -> float:
    """Busy slot-seconds of these jobs on an average slot of the market (slot-weighted)."""
    providers = world.providers
    share = providers.slots / providers.slots.sum()
    inv_prefill = float(np.dot(share, 1.0 / providers.prefill_tokens_per_s))
    inv_decode = float(np.dot(share, 1.0 / providers.decode_tokens_per_s))
    return float(prompt.sum(dtype=np.float64) * inv_prefill + output.sum(dtype=np.float64) * inv_decode)


def replay_trace(
    world: World,
    jobs: int,
    *,
    seed: int,
    speedup: float | None = None,
    horizon_s: float | None = None,
    load: float | None = None,
) -> Arrivals:
    """``jobs`` arrivals with the Azure trace's pattern and sizes, scaled (see the module docstring).

    Args:
        world: The world (its clients, their weights and targets; its market for ``load``).
        jobs: Number of arrivals.
        seed: Seed of the tile offset and the client draws.
        speedup: Trace seconds per simulation second.
        horizon_s: Span of the arrivals, seconds.
        load: Offered load of the market in (0, 10]; the default when none of the three is given.

    Raises:
        ArrivalsError: If an argument is out of range or more than one of speedup/horizon_s/load is given.
    """
    _check_jobs(jobs)
    given = [
        name for name, v in (("speedup", speedup), ("horizon_s", horizon_s), ("load", load)) if v is not None
    ]
    if len(given) > 1:
        raise ArrivalsError("speedup/horizon_s/load", given, "at most one of them")
    for name, value, high in (
        ("speedup", speedup, 1e9),
        ("horizon_s", horizon_s, 1e12),
        ("load", load, 10.0),
    ):
        if value is not None and not (isinstance(value, int | float) and 0 < value <= high):
            raise ArrivalsError(name, value, f"a number in (0, {high:g}]")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArrivalsError("seed", seed, "an integer >= 0")
    trace = world.data.trace
    n = len(trace)
    rng = np.random.default_rng([seed, 0xA331])
    period = trace.duration_s + trace.duration_s / max(n - 1, 1)
    k = int(rng.integers(n)) + np.arange(jobs, dtype=np.int64)
    row = k % n
    t_trace = (k // n) * period + trace.t[row]
    t_trace -= t_trace[0]
    prompt = trace.prompt_tokens[row]
    output = trace.output_tokens[row]
    span = float(t_trace[-1])
    if speedup is not None:
        scale = 1.0 / float(speedup)
    elif horizon_s is not None:
        scale = float(horizon_s) / span if span > 0 else 1.0
    else:
        target = DEFAULT_LOAD if load is None else float(load)
        busy = _mean_busy_s(world, prompt, output)
        horizon = busy / (float(world.providers.slots.sum()) * target)
        scale = horizon / span if span > 0 else 1.0
    client = rng.choice(world.clients, size=jobs, p=world.client_weight).astype(np.int32)
    units = np.maximum(prompt.astype(np.int64) + output, 1)
    ttft, completion = _targets(world, client, output)
    return Arrivals(
        t=t_trace * scale,
        client=client,
        prompt_tokens=prompt,
        output_tokens=output,
        kind=trace.kind[row],
        units=units,
        flops=units * FLOPS_PER_TOKEN,
        prefill_flops=prompt.astype(np.float64) * FLOPS_PER_TOKEN,
        ttft_target_ms=ttft,
        latency_target_ms=completion,
        injected=np.zeros(jobs, dtype=bool),
        time_scale=scale,
    )


def inject_burst(
    world: World,
    arrivals: Arrivals,
    *,
    start_s: float,
    duration_s: float,
    factor: float,
    seed: int,
    countries: Sequence[str] | None = None,
) -> Arrivals:
    """Arrivals with a traffic burst: ``factor`` times the window's traffic between ``start_s`` and
    ``start_s + duration_s``.

    The extra ``round((factor - 1) * m)`` jobs (``m``: arrivals already in the window, or the series' mean
    rate times the window if none) arrive uniformly in the window, with sizes drawn from the trace and clients
    drawn by weight — among the clients in ``countries`` when given (a regional burst). They are flagged
    ``injected``; the result stays in time order (stable: original jobs first on ties).

    Raises:
        ArrivalsError: If an argument is out of range or no client is in ``countries``.
    """
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ArrivalsError("start_s", start_s, "a finite number >= 0")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ArrivalsError("duration_s", duration_s, "a finite number > 0")
    if not (math.isfinite(factor) and 1 <= factor <= 1000):
        raise ArrivalsError("factor", factor, "a number in [1, 1000]")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArrivalsError("seed", seed, "an integer >= 0")
    end = start_s + duration_s
    in_window = int(np.count_nonzero((arrivals.t >= start_s) & (arrivals.t < end)))
    if in_window == 0 and len(arrivals) > 1 and arrivals.horizon_s > 0:
        in_window = round(len(arrivals) / arrivals.horizon_s * duration_s)
    extra = round((factor - 1.0) * in_window)
    if extra == 0:
        return arrivals
    rng = np.random.default_rng([seed, 0xB0257])
    weights = world.client_weight
    if countries is not None:
        codes = {c: i for i, c in enumerate(world.data.countries)}
        unknown = sorted(c for c in countries if c not in codes)
        if unknown:
            raise ArrivalsError("countries", unknown, "ISO-2 codes of countries in the data")
        chosen = np.zeros(len(world.data.countries), dtype=bool)
        chosen[[codes[c] for c in countries]] = True
        weights = np.where(chosen[world.client_country], weights, 0.0)
        if weights.sum() <= 0:
            raise ArrivalsError("countries", list(countries), "countries where at least one client is")
        weights = weights / weights.sum()
    trace = world.data.trace
    row = rng.integers(len(trace), size=extra)
    prompt = trace.prompt_tokens[row]
    output = trace.output_tokens[row]
    client = rng.choice(world.clients, size=extra, p=weights).astype(np.int32)
    units = np.maximum(prompt.astype(np.int64) + output, 1)
    ttft, completion = _targets(world, client, output)
    burst = Arrivals(
        t=np.sort(rng.uniform(start_s, end, extra)),
        client=client,
        prompt_tokens=prompt,
        output_tokens=output,
        kind=trace.kind[row],
        units=units,
        flops=units * FLOPS_PER_TOKEN,
        prefill_flops=prompt.astype(np.float64) * FLOPS_PER_TOKEN,
        ttft_target_ms=ttft,
        latency_target_ms=completion,
        injected=np.ones(extra, dtype=bool),
        time_scale=arrivals.time_scale,
    )
    merged = _concat(arrivals, burst)
    return merged.take(np.argsort(merged.t, kind="stable"))


def _concat(a: Arrivals, b: Arrivals) -> Arrivals:
    return replace(
        a,
        t=np.concatenate([a.t, b.t]),
        client=np.concatenate([a.client, b.client]),
        prompt_tokens=np.concatenate([a.prompt_tokens, b.prompt_tokens]),
        output_tokens=np.concatenate([a.output_tokens, b.output_tokens]),
        kind=np.concatenate([a.kind, b.kind]),
        units=np.concatenate([a.units, b.units]),
        flops=np.concatenate([a.flops, b.flops]),
        prefill_flops=np.concatenate([a.prefill_flops, b.prefill_flops]),
        ttft_target_ms=np.concatenate([a.ttft_target_ms, b.ttft_target_ms]),
        latency_target_ms=np.concatenate([a.latency_target_ms, b.latency_target_ms]),
        injected=np.concatenate([a.injected, b.injected]),
    )
