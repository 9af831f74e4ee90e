"""The placement pipeline's plugins: filter, score, normalize, weigh (the Kubernetes scheduler's framing).

Each plugin is small, pure and named, and works on whole columns of a :class:`MarketSnapshot` at once (boolean
masks and arrays; never a Python loop over offers):

* **filters** (:data:`FILTERS`, in pipeline order) return the rows they keep. ``workload``, ``hardware``,
  ``throughput``, ``residency`` and ``reliability`` depend only on the job's *class* (everything but its size
  and price limits) and also decide the *reference* rows that normalization compares against; ``price`` and
  ``budget`` depend on the job's size; ``capacity`` and ``excluded`` on the engine's state.
* **score** plugins turn rows into raw factors: :func:`rtt_seconds`, :func:`transfer_seconds`,
  :func:`queue_seconds`, :func:`compute_seconds` (their sum is the expected completion time,
  :func:`expected_seconds`), :func:`price_wei` and :func:`reliability`.
* **normalize** maps each factor to a score in [0, 1], higher is better, independent of the other candidates
  but scaled by the market's *typical* offer (:class:`References`, medians over the reference rows):
  ``time = tau / (tau + expected_s)``, ``price = ref / (ref + price)``, ``reliability = reliability``.
  A typical offer scores 0.5 on time and price; one twice as fast scores 0.67.
* **weigh** sums the weighted scores into one utility; each weighted score is that factor's contribution.

Every score is non-increasing in a cost factor and non-decreasing in a benefit factor, so an offer better on
every factor never gets a lower utility than one worse on every factor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from proxima.marketplace.matching.latency import predict_rtts
from proxima.marketplace.matching.snapshot import PRICE_SATURATED, MarketSnapshot
from proxima.marketplace.matching.spec import JobSpec, MatchingConfig, Weights
from proxima.sdk.vivaldi import VivaldiCoordinate

__all__ = [
    "FACTORS",
    "FILTERS",
    "FilterPlugin",
    "JobContext",
    "Medians",
    "References",
    "Scores",
    "budget_filter",
    "capacity",
    "capacity_filter",
    "compute_seconds",
    "excluded_filter",
    "expected_seconds",
    "hardware_filter",
    "medians",
    "normalize",
    "price_filter",
    "price_score",
    "price_wei",
    "queue_seconds",
    "reliability",
    "reliability_filter",
    "residency_filter",
    "rtt_seconds",
    "throughput_filter",
    "time_reference",
    "time_score",
    "transfer_seconds",
    "weigh",
    "workload_filter",
]

FACTORS: Final = ("time", "price", "reliability")
"""The weighed factors, in the order of :class:`~proxima.marketplace.matching.spec.Weights`."""

Mask = NDArray[np.bool_]
Floats = NDArray[np.float64]
Rows = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What the plugins know about one placement besides the market.

    Attributes:
        spec: The job.
        config: The engine's configuration.
        held: Slots the engine has reserved on each row (by earlier placements), one int per row.
        exclude: Rows the caller excluded (failed providers, open circuit breakers).
    """

    spec: JobSpec
    config: MatchingConfig
    held: NDArray[np.int32]
    exclude: Rows


# --- filters ---------------------------------------------------------------------------------------------


def workload_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows serving the job's workload (and its model, when it names one)."""
    column = market.workloads.get(job.spec.workload)
    if column is None:
        return np.zeros(len(market), dtype=bool)
    if not job.spec.model:
        return column.served
    served = column.models.get(job.spec.model)
    return np.zeros(len(market), dtype=bool) if served is None else served


def hardware_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows whose machine meets the hardware constraints (None: the job has none)."""
    hw = job.spec.hardware
    if hw.unconstrained:
        return None
    keep = np.ones(len(market), dtype=bool)
    if hw.gpu_models:
        allowed = np.zeros(len(market.gpu_names), dtype=bool)
        lookup = {name: i for i, name in enumerate(market.gpu_names)}
        for name in hw.gpu_models:
            code = lookup.get(name)
            if code is not None:
                allowed[code] = True
        keep &= allowed[market.gpu_codes]
    if hw.needs_gpu:
        keep &= market.gpu_count >= max(hw.min_gpu_count, 1)
    if hw.min_gpu_memory_bytes:
        keep &= market.gpu_memory >= np.uint64(min(hw.min_gpu_memory_bytes, 2**64 - 1))
    if hw.min_cpu_cores:
        keep &= market.cpu_cores >= hw.min_cpu_cores
    if hw.min_memory_bytes:
        keep &= market.memory >= np.uint64(min(hw.min_memory_bytes, 2**64 - 1))
    return keep


def throughput_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows with a positive planning throughput, when the job has work to compute (None otherwise)."""
    if job.spec.flops <= 0:
        return None
    keep: Mask = market.throughput > 0
    return keep


def residency_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows in an allowed country and region (None: the job may run anywhere). Hard: never relaxed."""
    residency = job.spec.residency
    if residency.anywhere:
        return None
    keep = np.ones(len(market), dtype=bool)
    for wanted, names, codes in (
        (residency.countries, market.country_names, market.country_codes),
        (residency.regions, market.region_names, market.region_codes),
    ):
        if not wanted:
            continue
        allowed = np.zeros(len(names), dtype=bool)
        lookup = {name: i for i, name in enumerate(names)}
        for name in wanted:
            code = lookup.get(name)
            if code is not None:
                allowed[code] = True
        keep &= allowed[codes]
    return keep


def _unit_price_at_most(job: JobContext, market: MarketSnapshot, limit: int) -> Mask:
    column = market.workloads.get(job.spec.workload)
    if column is None:
        return np.zeros(len(market), dtype=bool)
    if limit < PRICE_SATURATED:
        keep: Mask = column.unit_price <= limit
        return keep
    # A limit beyond int64: every exactly stored price fits; saturated ones are checked exactly.
    keep = column.unit_price < PRICE_SATURATED
    for row, price in column.big_prices.items():
        keep[row] = price <= limit
    return keep & column.served


def price_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows where one copy costs at most ``max_price_wei`` (None: no cap). Hard, exact integers."""
    if job.spec.max_price_wei is None:
        return None
    return _unit_price_at_most(job, market, job.spec.max_price_wei // job.spec.units)


def budget_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows where ``redundancy`` copies at this row's price fit the budget (None: no budget). Hard."""
    spec = job.spec
    if spec.budget_wei is None:
        return None
    return _unit_price_at_most(job, market, spec.budget_wei // (spec.redundancy * spec.units))


def reliability_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows whose reliability estimate is at least ``min_reliability`` (None: no minimum)."""
    if job.spec.min_reliability <= 0:
        return None
    keep: Mask = market.reliability >= job.spec.min_reliability
    return keep


def capacity(market: MarketSnapshot, config: MatchingConfig, held: NDArray[np.int32]) -> NDArray[np.int64]:
    """Jobs each row can still take from this engine: free slots, plus the queue allowance not yet used by
    the row's own queue, minus slots the engine holds (never below 0)."""
    allowance = np.maximum(config.queue_allowance - market.queue_depth.astype(np.int64), 0)
    room: NDArray[np.int64] = np.maximum(market.free_slots + allowance - held, 0)
    return room


def capacity_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows with room for one more job (see :func:`capacity`)."""
    keep: Mask = capacity(market, job.config, job.held) > 0
    return keep


def excluded_filter(job: JobContext, market: MarketSnapshot) -> Mask | None:
    """Rows not excluded by the caller (None: nothing excluded)."""
    if len(job.exclude) == 0:
        return None
    keep = np.ones(len(market), dtype=bool)
    keep[job.exclude] = False
    return keep


@dataclass(frozen=True, slots=True)
class FilterPlugin:
    """A named filter.

    Attributes:
        name: Its name (keys of ``Placement.filtered``).
        keep: The rows it keeps (None: it keeps every row).
        reason: What a removed row lacked, for error messages.
        reference: Whether its rows also bound the reference rows of normalization (class filters).
        per_job: Whether it depends on the job's size or price limits (batch applies it per job).
    """

    name: str
    keep: Callable[[JobContext, MarketSnapshot], Mask | None]
    reason: str
    reference: bool = False
    per_job: bool = False


FILTERS: Final = (
    FilterPlugin("workload", workload_filter, "does not serve the workload/model", reference=True),
    FilterPlugin("hardware", hardware_filter, "lacks the hardware", reference=True),
    FilterPlugin("throughput", throughput_filter, "has no planning throughput", reference=True),
    FilterPlugin("residency", residency_filter, "is outside the allowed countries/regions", reference=True),
    FilterPlugin("price", price_filter, "costs more than max_price_wei", per_job=True),
    FilterPlugin("budget", budget_filter, "does not fit the budget for all copies", per_job=True),
    FilterPlugin("reliability", reliability_filter, "is below min_reliability", reference=True),
    FilterPlugin("capacity", capacity_filter, "has no free capacity"),
    FilterPlugin("excluded", excluded_filter, "is excluded"),
)
"""The filters, in the order they run (``filtered`` counts what each removed of what was left)."""


# --- score -----------------------------------------------------------------------------------------------


def rtt_seconds(
    market: MarketSnapshot, coordinate: VivaldiCoordinate | None, default_s: float
) -> tuple[Floats, Mask]:
    """RTT to every row: measured where known, else predicted from the client's Vivaldi coordinate (rows
    with the same dimensions), else ``default_s``.

    Returns:
        ``(rtt_s, measured)`` for all rows.
    """
    measured: Mask = ~np.isnan(market.measured_rtt)
    rtt = np.full(len(market), default_s)
    if coordinate is not None and len(market):
        d = coordinate.dimensions
        predicted = predict_rtts(coordinate, np.ascontiguousarray(market.vectors[:, :d]), market.heights)
        rtt = np.where(market.dims == d, predicted, rtt)
    rtt = np.where(measured, market.measured_rtt, rtt)
    return rtt, measured


def transfer_seconds(spec: JobSpec, config: MatchingConfig) -> float:
    """Payload transfer time ``8 * (input_bytes + output_bytes) / link_bandwidth_bps`` (same for all rows)."""
    return 8.0 * float(spec.transfer_bytes()) / config.link_bandwidth_bps


def queue_seconds(
    market: MarketSnapshot, config: MatchingConfig, held: NDArray[np.int32], rows: Rows
) -> Floats:
    """Expected wait for a slot: jobs ahead (queued, plus slots the engine holds, beyond the free slots) over
    the concurrency, times ``queue_job_s``:
    ``max(0, queue + held + 1 - free) / concurrency * queue_job_s``."""
    ahead = market.queue_depth[rows] + held[rows] + 1 - market.free_slots[rows]
    waits: Floats = np.maximum(ahead, 0) / market.max_concurrency[rows] * config.queue_job_s
    return waits


def compute_seconds(flops: float, throughput: Floats) -> Floats:
    """Compute time ``flops / throughput`` (0 for a job without work; ``inf`` where throughput is 0)."""
    if flops <= 0:
        return np.zeros(np.shape(throughput))
    with np.errstate(divide="ignore"):
        seconds: Floats = flops / throughput
    return seconds


def expected_seconds(rtt: Floats, transfer: float, queue: Floats, compute: Floats) -> Floats:
    """Expected completion time: ``rtt + transfer + queue + compute``."""
    total: Floats = rtt + transfer + queue + compute
    return total


def price_wei(units: int, unit_price: Floats) -> Floats:
    """Price of one copy as a float (``units * unit_price``; exact integers are used for every limit)."""
    price: Floats = float(units) * unit_price
    return price


def reliability(market: MarketSnapshot, rows: Rows) -> Floats:
    """Reliability estimates of the rows (a probability of delivering)."""
    values: Floats = market.reliability[rows]
    return values


# --- normalize -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class References:
    """The typical offer for a job: scores are relative to it.

    Attributes:
        time_s: Expected completion time of the typical offer (see :meth:`Medians.for_job`).
        unit_price_wei: Median unit price over the reference rows.
        rows: How many reference rows there were.
    """

    time_s: float
    unit_price_wei: float
    rows: int

    def as_dict(self) -> dict[str, float]:
        """JSON-able form."""
        return {"time_s": self.time_s, "unit_price_wei": self.unit_price_wei, "rows": self.rows}


@dataclass(frozen=True, slots=True)
class Medians:
    """Medians of the raw factors over a job class's reference rows (the offers that pass the class filters:
    workload, hardware, throughput, residency, reliability; not price, budget, capacity or exclusions).

    Attributes:
        rtt_s: Median RTT.
        queue_s: Median queue wait.
        seconds_per_flop: Median of ``1 / throughput``.
        unit_price_wei: Median unit price.
        rows: Reference rows.
    """

    rtt_s: float
    queue_s: float
    seconds_per_flop: float
    unit_price_wei: float
    rows: int

    def for_job(self, flops: float, transfer: float) -> References:
        """The typical offer for a job of ``flops`` work and ``transfer`` seconds of payload:
        ``time_s = median rtt + transfer + median queue + flops * median(1 / throughput)``."""
        tau = time_reference(self, np.float64(flops), np.float64(transfer))
        return References(time_s=float(tau), unit_price_wei=self.unit_price_wei, rows=self.rows)


def medians(rtt: Floats, queue: Floats, throughput: Floats, unit_price: Floats) -> Medians:
    """The :class:`Medians` of the reference rows' factors (neutral values when there are none)."""
    if len(rtt) == 0:
        return Medians(rtt_s=1.0, queue_s=0.0, seconds_per_flop=0.0, unit_price_wei=1.0, rows=0)
    with np.errstate(divide="ignore"):
        spf = float(np.median(1.0 / throughput))
    return Medians(
        rtt_s=float(np.median(rtt)),
        queue_s=float(np.median(queue)),
        seconds_per_flop=spf,
        unit_price_wei=float(np.median(unit_price)),
        rows=len(rtt),
    )


def time_reference(m: Medians, flops: Floats | np.float64, transfer: Floats | np.float64) -> Floats:
    """``max(rtt + transfer + queue + flops * seconds_per_flop, 1e-9)`` element-wise (compute 0 without
    work), the same arithmetic for one job or many."""
    with np.errstate(invalid="ignore"):
        compute = np.where(flops > 0, flops * m.seconds_per_flop, 0.0)
    tau: Floats = np.maximum(m.rtt_s + transfer + m.queue_s + compute, 1e-9)
    return tau


def time_score(expected: Floats, tau: float | Floats) -> Floats:
    """``tau / (tau + expected)``: 1 for an instant job, 0.5 for the typical offer, towards 0 when slower."""
    score: Floats = tau / (tau + expected)
    return score


def price_score(unit_price: Floats, reference: float | Floats) -> Floats:
    """``ref / (ref + unit_price)`` (1 for a free offer, 0.5 for the typical price); scale-free in units."""
    with np.errstate(invalid="ignore", divide="ignore"):
        score: Floats = np.where(unit_price <= 0, 1.0, reference / (reference + unit_price))
    return score


@dataclass(frozen=True, slots=True)
class Scores:
    """Normalized scores in [0, 1] of some rows (higher is better)."""

    time: Floats
    price: Floats
    reliability: Floats


def normalize(expected: Floats, unit_price: Floats, reliability_: Floats, refs: References) -> Scores:
    """Scores of the rows' factors relative to the reference offer."""
    return Scores(
        time=time_score(expected, refs.time_s),
        price=price_score(unit_price, refs.unit_price_wei),
        reliability=reliability_,
    )


# --- weigh -----------------------------------------------------------------------------------------------


def weigh(scores: Scores, weights: Weights) -> Floats:
    """Utility: ``w_time * time + w_price * price + w_reliability * reliability`` (each term is that factor's
    contribution)."""
    utility: Floats = weights.time * scores.time + weights.price * scores.price
    utility = utility + weights.reliability * scores.reliability
    return utility
