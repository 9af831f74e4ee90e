"""The matching engine: where each job runs, for what price, on whom, and why.

Importable on its own (pure Python, numpy and scipy; no I/O), so the SDK can embed it and anyone can
recompute a gateway's choices from public inputs. See docs/MATCHING.md.

Typical use::

    snapshot = MarketSnapshot.build(offers, stats, measured_rtts=rtts, now=time.time())
    engine = MatchingEngine(MatchingConfig())
    placement = engine.place(JobSpec(job_id=..., workload="embed", units=3), snapshot)
    reservation = engine.reserve(placement)
    ...
    engine.unreserve(reservation)
"""

from proxima.marketplace.matching.engine import (
    Candidate,
    Exploration,
    MatchingEngine,
    NoCandidateError,
    Placement,
    Reservation,
    ReservationError,
)
from proxima.marketplace.matching.latency import RttTable, predict_rtts
from proxima.marketplace.matching.plugins import FACTORS, FILTERS, FilterPlugin, References
from proxima.marketplace.matching.reliability import (
    InvalidStatsError,
    ProviderStats,
    ReliabilityPrior,
    reliability,
    reliability_arrays,
    verified_throughput,
    verified_throughput_arrays,
)
from proxima.marketplace.matching.snapshot import (
    PRICE_SATURATED,
    MarketSnapshot,
    SnapshotError,
    WorkloadColumn,
)
from proxima.marketplace.matching.spec import (
    MAX_REDUNDANCY,
    UNDISCLOSED_COUNTRY,
    HardwareConstraints,
    JobSpec,
    MatchingConfig,
    Residency,
    Weights,
    exploration_draw,
    exploration_draws,
)

__all__ = [
    "FACTORS",
    "FILTERS",
    "MAX_REDUNDANCY",
    "PRICE_SATURATED",
    "UNDISCLOSED_COUNTRY",
    "Candidate",
    "Exploration",
    "FilterPlugin",
    "HardwareConstraints",
    "InvalidStatsError",
    "JobSpec",
    "MarketSnapshot",
    "MatchingConfig",
    "MatchingEngine",
    "NoCandidateError",
    "Placement",
    "ProviderStats",
    "References",
    "ReliabilityPrior",
    "Reservation",
    "ReservationError",
    "Residency",
    "RttTable",
    "SnapshotError",
    "Weights",
    "WorkloadColumn",
    "exploration_draw",
    "exploration_draws",
    "predict_rtts",
    "reliability",
    "reliability_arrays",
    "verified_throughput",
    "verified_throughput_arrays",
]
