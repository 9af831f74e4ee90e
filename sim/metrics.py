"""What the report compares between policies, computed from a :class:`~proxima.sim.engine.SimResult`.

* **Latency**: p50/p95/p99 of end-to-end latency (arrival to result, across failovers) over delivered jobs,
  and of time to first token; the share of *all* jobs that were delivered within their latency target (a
  job rejected, dropped or failed misses its target).
* **Cost per job**: the mean gross price paid per delivered job (wei; ``usd`` at the world's ETH price).
* **Utilisation**: slot-seconds of service over slot-seconds online, over the providers the policy may use
  (the hyperscale pool for ``centralized``, the market for the others), in aggregate.
* **Gini of earnings** (voucher payouts plus rewards) over the same providers: 0 when all earn the same,
  close to 1 when one earns everything.
* **Trust**: cheaters caught (slashed at least once) out of all cheaters, honest providers slashed (must be
  0), undetected wrong results delivered, slashes.
* **Time series**: per bucket of arrival time, arrivals, delivered, p50/p95 latency, share meeting the
  target, failures; plus the market state sampled at each snapshot (providers up, listed, busy slots,
  queued, waiting at the gateway), for the outage and burst plots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from proxima.sim.engine import DROPPED, FAILED, OK, REJECTED, WRONG, SimResult
from proxima.sim.errors import SimError

__all__ = [
    "MetricsError",
    "Summary",
    "TimeSeries",
    "gini",
    "pool_of",
    "summarize",
    "time_series",
    "utilisation",
]


class MetricsError(SimError, ValueError):
    """A metric's argument is out of range; the message names it."""


def gini(values: NDArray[Any] | list[int] | list[float]) -> float:
    """Gini coefficient of non-negative values (0: all equal; 0 for an empty or all-zero population).

    ``G = sum_i (2i - n - 1) x_(i) / (n * sum x)`` over the values sorted ascending (1-based ``i``).

    Raises:
        MetricsError: If a value is negative or not finite.
    """
    x = np.sort(np.asarray([float(v) for v in values], dtype=np.float64))
    if len(x) == 0:
        return 0.0
    if not np.isfinite(x).all() or (x < 0).any():
        raise MetricsError("gini needs finite non-negative values")
    total = float(x.sum())
    if total <= 0:
        return 0.0
    n = len(x)
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def pool_of(result: SimResult) -> NDArray[np.bool_]:
    """The providers the run's policy may use: the hyperscale pool for ``centralized``, else the market."""
    pool: NDArray[np.bool_] = (
        result.provider_hyperscale.copy() if result.policy == "centralized" else ~result.provider_hyperscale
    )
    return pool


def utilisation(result: SimResult, *, per_provider: bool = False) -> float | NDArray[np.float64]:
    """Slot-seconds of service over slot-seconds online, over the policy's pool.

    Args:
        result: The run.
        per_provider: Return each provider's utilisation (0 where never online) instead of the aggregate.
    """
    capacity = result.provider_slots.astype(np.float64) * result.provider_up_s
    if per_provider:
        with np.errstate(divide="ignore", invalid="ignore"):
            each: NDArray[np.float64] = np.where(capacity > 0, result.provider_busy_s / capacity, 0.0)
        return each
    pool = pool_of(result)
    total = float(capacity[pool].sum())
    return float(result.provider_busy_s[pool].sum()) / total if total > 0 else 0.0


@dataclass(frozen=True)
class Summary:
    """One run in numbers (see the module docstring).

    Attributes:
        policy: The policy.
        seed: The run's seed.
        jobs: Arrivals.
        delivered: Jobs whose result reached the client.
        ok: Delivered with a right result.
        wrong: Delivered with an undetected wrong result.
        dropped: Given up waiting for capacity.
        rejected: Impossible under their hard constraints.
        failed: Every attempt failed.
        p50_ms: Median end-to-end latency of delivered jobs.
        p95_ms: 95th percentile.
        p99_ms: 99th percentile.
        ttft_p50_ms: Median time to first token.
        ttft_p95_ms: 95th percentile.
        met_target: Share of all jobs delivered within their target.
        cost_per_job_wei: Mean gross price per delivered job, wei.
        cost_per_job_usd: The same in USD at ``eth_usd`` (None when not given).
        utilisation: Aggregate utilisation of the policy's pool.
        gini_earnings: Gini of earnings over the policy's pool.
        providers_used: Providers of the pool that delivered at least one job.
        cheaters: Cheating providers in the world.
        cheaters_caught: Cheaters slashed at least once.
        honest_slashed: Honest providers slashed (must be 0).
        slashes: Slashes.
        failovers: Attempts after a failure or a rejected result.
        treasury_wei: Treasury credits.
        wall_s: Wall-clock seconds of the run.
    """

    policy: str
    seed: int
    jobs: int
    delivered: int
    ok: int
    wrong: int
    dropped: int
    rejected: int
    failed: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    met_target: float
    cost_per_job_wei: float
    cost_per_job_usd: float | None
    utilisation: float
    gini_earnings: float
    providers_used: int
    cheaters: int
    cheaters_caught: int
    honest_slashed: int
    slashes: int
    failovers: int
    treasury_wei: int
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _percentiles(values: NDArray[np.float64], qs: tuple[float, ...]) -> list[float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(finite, qs)]


def summarize(result: SimResult, *, eth_usd: float | None = None) -> Summary:
    """The run's :class:`Summary`.

    Args:
        result: The run.
        eth_usd: USD per ETH for ``cost_per_job_usd`` (e.g. ``world.config.eth_usd``).
    """
    outcome = result.outcome
    delivered = result.delivered
    p50, p95, p99 = _percentiles(result.latency_ms[delivered], (50, 95, 99))
    t50, t95 = _percentiles(result.ttft_ms[delivered], (50, 95))
    n_delivered = int(np.count_nonzero(delivered))
    cost = float(result.cost_wei[delivered].astype(np.float64).mean()) if n_delivered else 0.0
    pool = pool_of(result)
    earnings = result.provider_earnings_wei[pool]
    return Summary(
        policy=result.policy,
        seed=result.seed,
        jobs=result.jobs,
        delivered=n_delivered,
        ok=int(np.count_nonzero(outcome == OK)),
        wrong=int(np.count_nonzero(outcome == WRONG)),
        dropped=int(np.count_nonzero(outcome == DROPPED)),
        rejected=int(np.count_nonzero(outcome == REJECTED)),
        failed=int(np.count_nonzero(outcome == FAILED)),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        ttft_p50_ms=t50,
        ttft_p95_ms=t95,
        met_target=float(np.count_nonzero(result.met_target)) / result.jobs if result.jobs else 0.0,
        cost_per_job_wei=cost,
        cost_per_job_usd=None if eth_usd is None else cost / 1e18 * eth_usd,
        utilisation=float(utilisation(result)),
        gini_earnings=gini(list(earnings)),
        providers_used=int(np.count_nonzero(result.provider_jobs[pool] > 0)),
        cheaters=result.cheaters,
        cheaters_caught=result.cheaters_caught,
        honest_slashed=result.honest_slashed,
        slashes=result.slashes,
        failovers=result.failovers,
        treasury_wei=result.treasury_wei,
        wall_s=result.wall_s,
    )


@dataclass(frozen=True)
class TimeSeries:
    """Per bucket of arrival time (bucket ``i`` covers ``[t[i], t[i] + bucket_s)``).

    Attributes:
        t: Bucket starts, seconds.
        arrivals: Jobs arriving.
        delivered: Of those, delivered.
        p50_ms: Median latency of the delivered ones (``nan`` if none).
        p95_ms: 95th percentile.
        met_target: Share of the bucket's jobs delivered within target (``nan`` if none arrived).
        not_delivered: Of those, rejected, dropped or failed.
        failovers: Jobs with more than one attempt.
        snapshot_t: Snapshot times (market state below).
        providers_up: Market providers online at each snapshot.
        listed: Providers in each snapshot.
        busy_slots: Slots computing.
        queued: Jobs in providers' queues.
        pending: Jobs waiting at the gateway.
    """

    t: NDArray[np.float64]
    arrivals: NDArray[np.int64]
    delivered: NDArray[np.int64]
    p50_ms: NDArray[np.float64]
    p95_ms: NDArray[np.float64]
    met_target: NDArray[np.float64]
    not_delivered: NDArray[np.int64]
    failovers: NDArray[np.int64]
    snapshot_t: NDArray[np.float64]
    providers_up: NDArray[np.int64]
    listed: NDArray[np.int64]
    busy_slots: NDArray[np.int64]
    queued: NDArray[np.int64]
    pending: NDArray[np.int64]


def time_series(result: SimResult, bucket_s: float | None = None) -> TimeSeries:
    """The run's :class:`TimeSeries` (buckets of ``bucket_s``, default the config's ``series_bucket_s``).

    Raises:
        MetricsError: If ``bucket_s`` is not positive.
    """
    width = result.config.series_bucket_s if bucket_s is None else bucket_s
    if not width > 0:
        raise MetricsError(f"bucket_s must be > 0, got {width!r}")
    count = int(np.floor(result.arrival_s[-1] / width)) + 1 if result.jobs else 0
    bucket = np.floor(result.arrival_s / width).astype(np.int64)
    delivered = result.delivered
    arrivals = np.bincount(bucket, minlength=count)
    done = np.bincount(bucket, weights=delivered, minlength=count).astype(np.int64)
    met = np.bincount(bucket, weights=result.met_target, minlength=count)
    failovers = np.bincount(bucket, weights=result.attempts > 1, minlength=count).astype(np.int64)
    p50 = np.full(count, np.nan)
    p95 = np.full(count, np.nan)
    order = np.argsort(bucket, kind="stable")
    starts = np.searchsorted(bucket[order], np.arange(count + 1))
    for b in range(count):
        rows = order[starts[b] : starts[b + 1]]
        lat = result.latency_ms[rows]
        lat = lat[np.isfinite(lat)]
        if len(lat):
            p50[b], p95[b] = np.percentile(lat, (50, 95))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(arrivals > 0, met / np.maximum(arrivals, 1), np.nan)
    series = result.series
    return TimeSeries(
        t=np.arange(count, dtype=np.float64) * width,
        arrivals=arrivals.astype(np.int64),
        delivered=done,
        p50_ms=p50,
        p95_ms=p95,
        met_target=share,
        not_delivered=(arrivals - done).astype(np.int64),
        failovers=failovers,
        snapshot_t=series.t,
        providers_up=series.providers_up,
        listed=series.listed,
        busy_slots=series.busy_slots,
        queued=series.queued,
        pending=series.pending,
    )
