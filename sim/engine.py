"""The discrete-event simulator core: :func:`simulate` runs one policy on one world and one set of arrivals.

Time is simulated seconds from 0 (the arrivals' clock, the reward pool's genesis). A SimPy environment
drives four kinds of events:

* **gateway ticks** every ``window_s``: the gateway first settles what happened before the tick (results
  that reached their clients: verification, settlement, slashing, failover of rejected results; attempts
  found failed), rebuilds its market snapshot every ``snapshot_interval_s`` (a
  :class:`~proxima.marketplace.matching.MarketSnapshot` built with ``from_arrays``: only providers online
  when it is taken, with active stake and not quarantined; free slots and queue depth at that instant;
  reliability from the observed outcomes), redeems the ended reward epochs, and then places every job that
  arrives (or waits for a failover or a retry) in ``[t, t + window_s)`` in one batch (Proxima:
  ``MatchingEngine.place_batch``). Each job is dispatched at its own arrival time, so placement never delays
  a job; it only decides with the gateway's view as of the tick (as a real gateway's view lags the market);
* **provider churn** (each provider alternates up and down periods, exponential with the world's means;
  the same timeline for every policy with the same seed) and the **region outage** (every provider of the
  outage's countries down for its duration): a provider going down fails every attempt it has not finished
  computing; the gateway notices ``failure_detect_s`` later and fails the job over;
* nothing else: a job's own timeline is computed when it is dispatched, not event by event.

**A job's timeline** on provider ``p`` (client country ``c``): request transfer ``rtt(c, p) / 2 + 8 *
input_bytes / link``, wait for a slot in ``p``'s FIFO queue (``p`` has ``slots`` concurrent streams),
service ``prompt / prefill_rate + output / decode_rate`` (:meth:`proxima.sim.world.Providers.service_time_s`),
result transfer ``rtt / 2 + 8 * output_bytes / link``. The RTT is the world's country-pair RTT (RIPE Atlas,
with a distance model where unmeasured). End-to-end latency runs from the job's arrival to its result, across
failovers and retries; time to first token counts the prefill and one decode step instead of the whole
decode. An honest provider fails a job with its ``failure_rate`` (accepts and never delivers: noticed after
``deliver_timeout_s``). Failures are not slashed (voucher jobs have no escrow timeout to claim); the gateway
records them (``observed_failures``, which lowers the provider's reliability) and blocks the provider until
its next snapshot.

**Circuit breakers** (``SimConfig.circuit_breakers``, off by default): every attempt's outcome goes to the
gateway's real :class:`~proxima.marketplace.gateway.health.HealthTracker` (``begin`` at dispatch, ``record``
when the result arrives or the failure is noticed), and every policy alike places on none of the providers it
excludes: open (or on-trial) provider breakers and every provider of a dark region. This is what keeps
failover out of a region that went down as a whole: without it, until the next snapshot each failover of a
job goes to the next nearby provider the snapshot still lists, dead too, and a job can spend all its attempts
there. Settings: :func:`gateway_health`. They are off by default because the gateway's region rule does not
separate an outage from noise in a market of thousands: with its default ``region_min_failed`` (3 distinct
failed providers within 60 s) ordinary churn darkens whole regions with no outage; without it, the other rule
(every provider of the region tried within 60 s failed on its latest attempt) fires only once a policy has
tried nearly every provider of the region, which the spreading baselines do within a second or two and
Proxima's ranked failover does not, so it would change the comparison through a gateway defect.

**Verification** (as the gateway does it): a share ``check_share`` of results is checked (redundant
execution or Freivalds: a checked wrong result is detected with probability ``detection``), and after a
success a canary follows with probability ``canary_rate``. A cheater returns a wrong result with its
``cheat_rate``. A detected wrong result is proven on chain (``invalid_result`` for a client job, ``canary``
for a canary) and slashed by :mod:`proxima.sim.economics`; the provider is quarantined for
``quarantine_s`` and its reliability record gets the slash (so the engine ranks it down, and below the
minimum stake it leaves the market); the job fails over. Checks never flag a right result, so **honest
providers are never slashed** (the run counts ``honest_slashed`` from the slash records, and it must be 0).
An undetected wrong result is delivered and paid (counted as ``wrong``). Canaries are not client jobs and
do not take a slot (an approximation).

**Settlement**: see :mod:`proxima.sim.economics` (vouchers redeemed once per provider and epoch, fees,
treasury, reward pots, slashes with the finder's share).

**Determinism**: every draw comes from the seed (a SplitMix64 hash of ``(seed, stream, job, attempt)`` for
per-job draws, so every policy sees the same draws for the same job); no wall clock and no set order enters a
decision. The same world, arrivals and config give an identical :class:`SimResult`.

The providers are the world's market (rows ``0..N-1``) followed by its hyperscale pool (rows ``N..N+H-1``),
which only the ``centralized`` policy uses; ``SimResult.provider`` indexes that combined list.

**SimResult for the replay** (``sim/replay.py``): ``result.params`` (the model's ``DeployParameters``),
per job ``client``, ``provider`` (-1 when not delivered), ``cost_wei`` (gross price the client paid, int64;
0 when not paid), ``settled_s`` (time the result reached the client), ``outcome`` (``OK`` and ``WRONG``
are paid by voucher); ``settlements``: :class:`~proxima.sim.economics.Redemption` (one ``redeemBatch`` per
provider and epoch: amount, jobs, fee, payout, pot and treasury credits, per-client amounts and cumulative
vouchers) and :class:`~proxima.sim.economics.SlashEvent` (time, epoch, provider, job, fault kind,
slashable, slashed, finder reward, pot and treasury credits) in time order; per provider final
``provider_stake_wei``, ``provider_payout_wei``, ``provider_fees_wei``, ``provider_slashed_wei``,
``provider_rewards_wei`` (Python ints in object arrays); ``treasury_wei``, ``finder_rewards_wei``,
``pots_wei`` (epoch -> final pot after rollovers).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from array import array
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Final, cast

import numpy as np
import simpy
from numpy.typing import NDArray

from proxima.marketplace.gateway.health import HealthSettings, HealthTracker
from proxima.marketplace.matching import MarketSnapshot, MatchingConfig
from proxima.marketplace.matching.reliability import (
    DISPUTE_WEIGHT,
    MAX_COUNT,
    SLASH_BASE_PENALTY,
    SLASH_SCALE_PENALTY,
    ReliabilityPrior,
)
from proxima.sdk.deploy import DeployParameters
from proxima.sdk.types import Address
from proxima.sim.arrivals import Arrivals
from proxima.sim.economics import Ledger, Redemption, SlashEvent, epoch_of
from proxima.sim.errors import SimError
from proxima.sim.policies import (
    INFEASIBLE,
    POLICIES,
    UNPLACED,
    WORKLOAD,
    JobTable,
    Market,
    PolicyContext,
    fit_coordinates,
    make_policy,
)
from proxima.sim.world import FLOPS_PER_TOKEN, RegionOutage, World

__all__ = [
    "DEFAULT_QUEUE_ALLOWANCE",
    "DELIVERED",
    "DROPPED",
    "FAILED",
    "OK",
    "OUTCOMES",
    "REJECTED",
    "WRONG",
    "ProviderRecords",
    "SimConfig",
    "SimConfigError",
    "SimProgress",
    "SimResult",
    "SimSeries",
    "gateway_health",
    "gateway_matching",
    "reliability_from_counts",
    "simulate",
]

log = logging.getLogger(__name__)

OK: Final = 0
"""Delivered a right result (paid)."""
WRONG: Final = 1
"""Delivered a wrong result nobody detected (paid)."""
DROPPED: Final = 2
"""Waited ``max_wait_s`` for a provider with capacity and was given up."""
REJECTED: Final = 3
"""No provider can ever satisfy its hard constraints (residency)."""
FAILED: Final = 4
"""Every one of ``max_attempts`` attempts failed or was rejected."""
OUTCOMES: Final = ("ok", "wrong", "dropped", "rejected", "failed")
"""Outcome names by code."""
DELIVERED: Final = (OK, WRONG)

_RESULT: Final = 0
_FAIL: Final = 1
_MASK64: Final = 2**64 - 1
_BYTES_PER_TOKEN: Final = 4
_STREAM_FAIL: Final = 1
_STREAM_CHEAT: Final = 2
_STREAM_CHECK: Final = 3
_STREAM_CANARY: Final = 4
_STREAM_CANARY_WRONG: Final = 5
_STREAM_DETECT: Final = 6
_PRIOR: Final = ReliabilityPrior()


class SimConfigError(SimError, ValueError):
    """A simulation setting is out of range; the message names it."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name = name
        super().__init__(f"{name} must be {expected}, got {value!r}")


def _default_params() -> DeployParameters:
    return DeployParameters(epoch_length=10)


DEFAULT_QUEUE_ALLOWANCE: Final = 8
"""Jobs a provider may take beyond its free slots (to wait in its queue), every policy alike."""


def gateway_matching(world: World, arrivals: Arrivals) -> MatchingConfig:
    """The matching configuration a gateway operator would set for this traffic (``SimConfig.matching``'s
    default): ``queue_job_s`` = the mean service time of the arrivals on an average market slot (the
    engine's estimate of how long each job ahead holds a slot; its generic default of 0.5 s is far below
    an LLM request's seconds), ``queue_allowance`` = :data:`DEFAULT_QUEUE_ALLOWANCE`, and holds that lapse
    after 120 s (longer than any job lives in a run) so the engine's expiry heap drains."""
    providers = world.providers
    queue_job_s = 0.5
    if len(arrivals) and len(providers):
        share = providers.slots / providers.slots.sum()
        inv_prefill = float(np.dot(share, 1.0 / providers.prefill_tokens_per_s))
        inv_decode = float(np.dot(share, 1.0 / providers.decode_tokens_per_s))
        mean = float(
            np.mean(arrivals.prompt_tokens) * inv_prefill + np.mean(arrivals.output_tokens) * inv_decode
        )
        if math.isfinite(mean) and mean > 0:
            queue_job_s = min(mean, 86_400.0)
    return MatchingConfig(
        queue_allowance=DEFAULT_QUEUE_ALLOWANCE, reservation_ttl_s=120.0, queue_job_s=queue_job_s
    )


def gateway_health(world: World) -> HealthSettings:
    """The circuit-breaker settings a gateway operator would set for this market (``SimConfig.health``'s
    default): the gateway's defaults (a provider's breaker opens after 3 failures within 60 s for 30 s; a
    region goes dark for 30 s when every provider of it tried within 60 s failed on its latest attempt,
    at least 2 of them), except the rule that darkens a region after ``region_min_failed`` (default 3)
    distinct failed providers whatever the others did: with hundreds of providers in a region, ordinary
    churn and the odd failed job meet 3 within a minute all the time, and the whole region would go dark
    with no outage. It is raised to the number of market providers (so only a region where every provider
    failed meets it, which the first rule already covers)."""
    return HealthSettings(region_min_failed=max(HealthSettings().region_min_failed, len(world.providers)))


@dataclass(frozen=True)
class SimConfig:
    """How to run one simulation.

    Attributes:
        policy: One of :data:`proxima.sim.policies.POLICIES`.
        seed: Seed of every draw of the run (churn, cheats, checks, failures, random policies).
        params: The contracts' parameters (fees, treasury, epochs, slashing). The default epoch is 10 s of
            simulated time, so that a run of a few minutes spans several reward epochs.
        matching: The matching engine's configuration; its ``queue_allowance`` is also every baseline's
            capacity rule (jobs a provider may take beyond its free slots). None: :func:`gateway_matching`
            of the run's world and arrivals.
        snapshot_interval_s: Seconds between market snapshots (a whole number of ``window_s``).
        window_s: Seconds between gateway ticks (jobs arriving in one window are placed as one batch).
        check_share: Share of client results checked.
        canary_rate: Probability of a canary after a success.
        detection: Probability that a check of a wrong result detects it.
        quarantine_s: A provider caught cheating gets no job from the gateway this long.
        failure_detect_s: Time for the gateway to notice a provider that went down.
        deliver_timeout_s: Time after dispatch at which an accepted but undelivered job is given up on.
        max_attempts: Attempts per job (first dispatch and failovers).
        max_wait_s: Longest a job waits at the gateway for capacity before it is dropped.
        churn: Whether providers churn (up and down periods from the world's means).
        outage: A region outage (None: the world's ``config.outage``).
        series_bucket_s: Width of the time series' buckets.
        health: The settings of the gateway's circuit breakers (the real
            :class:`~proxima.marketplace.gateway.health.HealthTracker`: a provider's breaker, a dark region),
            every policy alike. None: :func:`gateway_health` of the run's world.
        circuit_breakers: Whether to model the gateway's circuit breakers (default False: only the
            per-attempt blocking; see the module docstring for why they are off by default).
    """

    policy: str
    seed: int = 0
    params: DeployParameters = field(default_factory=_default_params)
    matching: MatchingConfig | None = None
    snapshot_interval_s: float = 5.0
    window_s: float = 0.05
    check_share: float = 0.05
    canary_rate: float = 0.02
    detection: float = 1.0
    quarantine_s: float = 600.0
    failure_detect_s: float = 1.0
    deliver_timeout_s: float = 30.0
    max_attempts: int = 4
    max_wait_s: float = 30.0
    churn: bool = True
    outage: RegionOutage | None = None
    series_bucket_s: float = 1.0
    health: HealthSettings | None = None
    circuit_breakers: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SimConfigError("policy", self.policy, f"one of {', '.join(POLICIES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SimConfigError("seed", self.seed, "an int >= 0")
        for name in ("window_s", "snapshot_interval_s", "series_bucket_s", "failure_detect_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SimConfigError(name, value, "a finite number > 0")
        for name in ("quarantine_s", "deliver_timeout_s", "max_wait_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SimConfigError(name, value, "a finite number >= 0")
        for name in ("check_share", "canary_rate", "detection"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise SimConfigError(name, value, "a number in [0, 1]")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise SimConfigError("max_attempts", self.max_attempts, "an int in [1, 32]")
        if not 1 <= self.max_attempts <= 32:
            raise SimConfigError("max_attempts", self.max_attempts, "an int in [1, 32]")
        if self.snapshot_interval_s != int(self.snapshot_interval_s):
            # snapshots carry whole-second issue times (the engine's holds compare with them)
            raise SimConfigError("snapshot_interval_s", self.snapshot_interval_s, "a whole number of seconds")
        ratio = self.snapshot_interval_s / self.window_s
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise SimConfigError(
                "snapshot_interval_s",
                self.snapshot_interval_s,
                f"a whole multiple of window_s ({self.window_s})",
            )


@dataclass(frozen=True)
class ProviderRecords:
    """Providers' records when the run starts (default: a fresh market, everyone a newcomer).

    One entry per provider (market rows then the hyperscale pool). They feed the reliability estimate and
    the newcomer test exactly as the chain's counters and a gateway's own observations do.

    Attributes:
        completed: Completed jobs on chain (``jobs_completed``).
        successes: Jobs this gateway saw delivered (``observed_successes``).
        failures: Attempts this gateway saw fail (``observed_failures``).
    """

    completed: NDArray[np.int64]
    successes: NDArray[np.int64]
    failures: NDArray[np.int64]


@dataclass(frozen=True)
class SimProgress:
    """Where a run is (given to ``progress`` at each snapshot).

    Attributes:
        sim_s: Simulated seconds.
        jobs_done: Jobs with a final outcome.
        jobs: Jobs in the run.
        wall_s: Wall-clock seconds since the start.
    """

    sim_s: float
    jobs_done: int
    jobs: int
    wall_s: float


@dataclass(frozen=True)
class SimSeries:
    """Market state sampled at every snapshot.

    Attributes:
        t: Snapshot times.
        providers_up: Market providers online.
        listed: Providers in the snapshot.
        busy_slots: Slots computing, over all providers.
        queued: Jobs waiting in providers' queues.
        pending: Jobs waiting at the gateway (capacity or failover).
    """

    t: NDArray[np.float64]
    providers_up: NDArray[np.int64]
    listed: NDArray[np.int64]
    busy_slots: NDArray[np.int64]
    queued: NDArray[np.int64]
    pending: NDArray[np.int64]


@dataclass
class SimResult:
    """Everything one run produced (per-job and per-provider arrays, settlements, counters).

    Per job (row ``k`` is arrival ``k``): ``arrival_s``, ``client``, ``provider`` (delivering provider,
    -1 if none), ``outcome`` (:data:`OUTCOMES` codes), ``latency_ms`` (arrival to result; ``nan`` if not
    delivered), ``ttft_ms`` (to the first token), ``target_ms`` (completion target), ``met_target``,
    ``cost_wei`` (gross price paid, 0 if not paid), ``attempts``, ``settled_s`` (result time; ``nan`` if
    none), ``failovers`` (attempts after the first).

    Per provider (market rows then the hyperscale pool): ``provider_hyperscale``, ``provider_honest``,
    ``provider_country``, ``provider_slots``, ``provider_jobs`` (delivered), ``provider_busy_s`` (slot-seconds
    of service), ``provider_up_s`` (seconds online within the run), money as Python ints in object arrays:
    ``provider_payout_wei``, ``provider_fees_wei``, ``provider_rewards_wei``, ``provider_slashed_wei``,
    ``provider_stake_wei`` (final); ``provider_earnings_wei`` is payout plus rewards.

    ``matching`` is the matching configuration the run used (``config.matching`` or its default).
    """

    policy: str
    seed: int
    config: SimConfig
    params: DeployParameters
    jobs: int
    providers: int
    market_providers: int
    horizon_s: float
    arrival_s: NDArray[np.float64]
    client: NDArray[np.int32]
    provider: NDArray[np.int32]
    outcome: NDArray[np.int8]
    latency_ms: NDArray[np.float64]
    ttft_ms: NDArray[np.float64]
    target_ms: NDArray[np.float64]
    met_target: NDArray[np.bool_]
    cost_wei: NDArray[np.int64]
    attempts: NDArray[np.int8]
    settled_s: NDArray[np.float64]
    provider_hyperscale: NDArray[np.bool_]
    provider_honest: NDArray[np.bool_]
    provider_country: NDArray[np.int32]
    provider_slots: NDArray[np.int32]
    provider_jobs: NDArray[np.int64]
    provider_busy_s: NDArray[np.float64]
    provider_up_s: NDArray[np.float64]
    provider_payout_wei: NDArray[np.object_]
    provider_fees_wei: NDArray[np.object_]
    provider_rewards_wei: NDArray[np.object_]
    provider_slashed_wei: NDArray[np.object_]
    provider_stake_wei: NDArray[np.object_]
    treasury_wei: int
    finder_rewards_wei: int
    pots_wei: dict[int, int]
    settlements: list[Redemption | SlashEvent]
    cheaters: int
    cheaters_caught: int
    honest_slashed: int
    slashes: int
    wrong_results: int
    canaries: int
    failovers: int
    series: SimSeries
    wall_s: float
    events: int
    matching: MatchingConfig

    @property
    def provider_earnings_wei(self) -> NDArray[np.object_]:
        """Voucher payouts plus claimable rewards, per provider (Python ints)."""
        out: NDArray[np.object_] = self.provider_payout_wei + self.provider_rewards_wei
        return out

    @property
    def delivered(self) -> NDArray[np.bool_]:
        """Jobs whose result reached the client (right or wrong)."""
        out: NDArray[np.bool_] = (self.outcome == OK) | (self.outcome == WRONG)
        return out


def reliability_from_counts(
    completed: NDArray[np.int64],
    successes: NDArray[np.int64],
    failures: NDArray[np.int64],
    stake_wei: NDArray[np.float64],
    slashed_wei: NDArray[np.float64],
    prior: ReliabilityPrior = _PRIOR,
) -> NDArray[np.float64]:
    """:func:`proxima.marketplace.matching.reliability_arrays` of records with only these fields set
    (``jobs_completed``, ``observed_successes``, ``observed_failures``, ``stake_wei``, ``total_slashed_wei``),
    computed from arrays with the same operations in the same order (bit-identical values)."""
    was_slashed = slashed_wei > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(was_slashed, slashed_wei / (stake_wei + slashed_wei), 0.0)
    penalty = np.where(was_slashed, SLASH_BASE_PENALTY + SLASH_SCALE_PENALTY * share, 0.0)
    zeros = np.zeros(len(completed))

    def cap(a: NDArray[np.int64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = np.minimum(a, MAX_COUNT).astype(np.float64)
        return out

    alpha = float(prior.successes) + cap(completed)
    alpha = alpha + zeros
    alpha = alpha + cap(successes)
    beta = float(prior.failures) + zeros
    beta = beta + DISPUTE_WEIGHT * zeros
    beta = beta + zeros
    beta = beta + cap(failures)
    beta = beta + penalty
    result: NDArray[np.float64] = alpha / (alpha + beta)
    return result


def _draw(seed: int, stream: int, job: int, attempt: int) -> float:
    """A uniform number in [0, 1) from ``(seed, stream, job, attempt)`` (SplitMix64 finalizer chain)."""
    h = 0x9E3779B97F4A7C15
    for word in (seed, stream, job, attempt):
        z = (h ^ (word & _MASK64)) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return (h >> 11) / 2**53


def _draws(seed: int, stream: int, jobs: NDArray[np.int64], attempt: int) -> NDArray[np.float64]:
    """:func:`_draw` of many jobs at once (identical values)."""
    h = np.full(len(jobs), 0x9E3779B97F4A7C15, dtype=np.uint64)
    words = (
        np.full(len(jobs), seed & _MASK64, dtype=np.uint64),
        np.full(len(jobs), stream & _MASK64, dtype=np.uint64),
        jobs.astype(np.uint64),
        np.full(len(jobs), attempt & _MASK64, dtype=np.uint64),
    )
    for word in words:
        z = h ^ word
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = z ^ (z >> np.uint64(31))
    out: NDArray[np.float64] = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    return out


@dataclass
class _Fleet:
    """Market providers then the hyperscale pool, as flat arrays."""

    market: int
    country: NDArray[np.int32]
    region: tuple[str, ...]
    slots: NDArray[np.int32]
    prefill: NDArray[np.float64]
    decode: NDArray[np.float64]
    tokens_per_s: NDArray[np.float64]
    price: NDArray[np.int64]
    stake: list[int]
    honest: NDArray[np.bool_]
    cheat_rate: NDArray[np.float64]
    failure_rate: NDArray[np.float64]
    mtbf: NDArray[np.float64]
    mttr: NDArray[np.float64]
    hyperscale: NDArray[np.bool_]
    addresses: tuple[Address, ...]
    gpu_name: tuple[str, ...]
    gpu_memory: NDArray[np.uint64]
    gpus: NDArray[np.int32]

    @classmethod
    def of(cls, world: World) -> _Fleet:
        m, h = world.providers, world.hyperscale
        both = (m, h)

        def cat(name: str) -> NDArray[np.generic]:
            out: NDArray[np.generic] = np.concatenate([getattr(p, name) for p in both])
            return out

        country = cat("country").astype(np.int32)
        gpu = cat("gpu").astype(np.int64)
        gpus = world.data.gpus
        return cls(
            market=len(m),
            country=country,
            region=tuple(world.country_region[int(c)] for c in country),
            slots=cat("slots").astype(np.int32),
            prefill=cat("prefill_tokens_per_s").astype(np.float64),
            decode=cat("decode_tokens_per_s").astype(np.float64),
            tokens_per_s=cat("tokens_per_s").astype(np.float64),
            price=cat("price_wei_per_unit").astype(np.int64),
            stake=[int(s) for s in m.stake_wei] + [int(s) for s in h.stake_wei],
            honest=cat("honest").astype(bool),
            cheat_rate=cat("cheat_rate").astype(np.float64),
            failure_rate=cat("failure_rate").astype(np.float64),
            mtbf=cat("mtbf_s").astype(np.float64),
            mttr=cat("mttr_s").astype(np.float64),
            hyperscale=np.concatenate([np.zeros(len(m), dtype=bool), np.ones(len(h), dtype=bool)]),
            addresses=cast("tuple[Address, ...]", (*m.addresses(), *h.addresses())),
            gpu_name=tuple(gpus[int(g)].name for g in gpu),
            gpu_memory=np.array([int(gpus[int(g)].memory_gb * 1e9) for g in gpu], dtype=np.uint64),
            gpus=cat("gpus").astype(np.int32),
        )

    def __len__(self) -> int:
        return len(self.country)


def _job_table(world: World, arrivals: Arrivals) -> JobTable:
    countries = world.data.countries
    n_sets = len(world.residency_sets)
    allowed = np.ones((n_sets + 1, len(countries)), dtype=bool)
    allowed[1:] = world.residency_allowed
    residency: tuple[tuple[str, ...] | None, ...] = (None, *world.residency_sets)
    units = np.asarray(arrivals.units, dtype=np.int64)
    return JobTable(
        client=np.asarray(arrivals.client, dtype=np.int32),
        units=units,
        flops=np.asarray(units, dtype=np.float64) * FLOPS_PER_TOKEN,
        input_bytes=np.asarray(arrivals.prompt_tokens, dtype=np.int64) * _BYTES_PER_TOKEN,
        output_bytes=np.asarray(arrivals.output_tokens, dtype=np.int64) * _BYTES_PER_TOKEN,
        target_s=np.asarray(arrivals.latency_target_ms, dtype=np.float64) / 1000.0,
        client_country=np.asarray(world.client_country, dtype=np.int32),
        client_class=(np.asarray(world.client_residency, dtype=np.int32) + 1),
        allowed=allowed,
        residency=residency,
    )


def _churn_events(
    fleet: _Fleet, horizon: float, seed: int, enabled: bool
) -> tuple[list[tuple[float, int, bool]], NDArray[np.bool_]]:
    """Each provider's down/up switches within ``horizon`` (stationary start), and who starts down."""
    n = len(fleet)
    start_down = np.zeros(n, dtype=bool)
    events: list[tuple[float, int, bool]] = []
    if not enabled:
        return events, start_down
    rng = np.random.default_rng([seed, 0xC4A2])
    for p in np.flatnonzero(np.isfinite(fleet.mtbf)).tolist():
        up_mean, down_mean = float(fleet.mtbf[p]), float(fleet.mttr[p])
        down = rng.random() < down_mean / (up_mean + down_mean)
        start_down[p] = down
        t = 0.0
        while True:
            t += float(rng.exponential(down_mean if down else up_mean))
            if t >= horizon:
                break
            down = not down
            events.append((t, p, down))
    events.sort()
    return events, start_down


class _Run:
    """One simulation's mutable state (see the module docstring for the model)."""

    def __init__(
        self,
        world: World,
        arrivals: Arrivals,
        config: SimConfig,
        progress: Callable[[SimProgress], None] | None,
        records: ProviderRecords | None = None,
    ):
        self.world = world
        self.config = config
        self.progress = progress
        self.wall0 = time.perf_counter()
        self.fleet = fleet = _Fleet.of(world)
        self.n = n = len(fleet)
        self.jobs = jobs = _job_table(world, arrivals)
        self.total = total = len(jobs)
        self.arrival = np.asarray(arrivals.t, dtype=np.float64)
        if total and (np.diff(self.arrival) < 0).any():
            raise SimConfigError("arrivals.t", "unsorted", "non-decreasing arrival times")
        self.prompt = np.asarray(arrivals.prompt_tokens, dtype=np.int64)
        self.output = np.asarray(arrivals.output_tokens, dtype=np.int64)
        self.horizon = float(self.arrival[-1]) if total else 0.0
        self.seed = config.seed
        self.rtt_s = np.asarray(world.data.rtt_ms, dtype=np.float64) / 1000.0
        self.matching = matching = config.matching or gateway_matching(world, arrivals)
        self.link = float(matching.link_bandwidth_bps)
        self.ledger = Ledger(config.params, fleet.stake, fleet.honest.tolist())
        self.env = simpy.Environment()

        # per job
        self.provider = np.full(total, -1, dtype=np.int32)
        self.outcome = np.full(total, -1, dtype=np.int8)
        self.latency = np.full(total, np.nan)
        self.ttft = np.full(total, np.nan)
        self.cost = np.zeros(total, dtype=np.int64)
        self.attempts = np.zeros(total, dtype=np.int8)
        self.settled = np.full(total, np.nan)
        self.tried: dict[int, list[int]] = {}
        self.done = 0
        # first attempts' draws, vectorized (later attempts call _draw: the same function of the same inputs)
        every = np.arange(total, dtype=np.int64)
        self.first_draws = {
            stream: _draws(config.seed, stream, every, 0).tolist()
            for stream in (_STREAM_FAIL, _STREAM_CHEAT, _STREAM_CANARY)
        }

        # per provider
        self.up = np.ones(n, dtype=bool)
        self.outage_down = np.zeros(n, dtype=bool)
        self.churn_down = np.zeros(n, dtype=bool)
        self.quarantined_until = np.full(n, -np.inf)
        self.blocked_until = np.full(n, -np.inf)
        self.completed_chain = np.zeros(n, dtype=np.int64)
        self.successes = np.zeros(n, dtype=np.int64)
        self.failures = np.zeros(n, dtype=np.int64)
        self.jobs_done = np.zeros(n, dtype=np.int64)
        if records is not None:
            for name, values in (
                ("completed", records.completed),
                ("successes", records.successes),
                ("failures", records.failures),
            ):
                if np.shape(values) != (n,) or (np.asarray(values) < 0).any():
                    raise SimConfigError(f"records.{name}", np.shape(values), f"{n} non-negative counts")
            self.completed_chain += np.asarray(records.completed, dtype=np.int64)
            self.successes += np.asarray(records.successes, dtype=np.int64)
            self.failures += np.asarray(records.failures, dtype=np.int64)
        self.busy_s = np.zeros(n)
        self.up_s = np.zeros(n)
        self.up_since = np.zeros(n)
        self.slot_heap: list[list[float]] = [[] for _ in range(n)]
        self.inflight: list[list[int]] = [[] for _ in range(n)]
        self.coords = fit_coordinates(self.rtt_s, seed=config.seed)

        # attempts (parallel lists, index = attempt id)
        # compact typed arrays: a million attempts take ~60 MB, not the ~300 MB of lists of Python floats
        self.a_job = array("q")
        self.a_provider = array("q")
        self.a_dispatch = array("d")
        self.a_start = array("d")
        self.a_end = array("d")
        self.a_first = array("d")
        self.a_live = bytearray()
        self.heap: list[tuple[float, int, int]] = []  # (time, attempt, kind)

        # gateway queue: jobs waiting for a placement (job, ready time, failover?)
        self.pending: list[tuple[float, int, bool]] = []
        self.next_arrival = 0
        self.vouchers: dict[int, dict[int, dict[int, list[int]]]] = {}
        self.redeemed_through = -1
        self.cheaters_caught: set[int] = set()
        self.wrong = 0
        self.canaries = 0
        self.failovers = 0
        self.events = 0
        self.series: list[tuple[float, int, int, int, int, int]] = []

        outage = config.outage if config.outage is not None else world.config.outage
        self.outage = outage
        self.churn, start_down = _churn_events(fleet, self.horizon + 600.0, config.seed, config.churn)
        self.churn_down[:] = start_down
        self.up = ~self.churn_down

        self.ctx = PolicyContext(
            countries=world.data.countries,
            rtt_s=self.rtt_s,
            provider_country=fleet.country,
            provider_region=fleet.region,
            provider_hyperscale=fleet.hyperscale,
            addresses=fleet.addresses,
            jobs=jobs,
            vectors=self.coords[0],
            heights=self.coords[1],
            matching=matching,
            seed=config.seed,
            clock=lambda: float(self.env.now),
        )
        self.policy = make_policy(config.policy, self.ctx)
        self.market: Market | None = None
        # the gateway's circuit breakers (the real HealthTracker), fed with every attempt's outcome
        self.health = (
            HealthTracker(config.health or gateway_health(world), clock=lambda: float(self.env.now))
            if config.circuit_breakers
            else None
        )
        self.index = {address: i for i, address in enumerate(fleet.addresses)}
        regions = sorted(set(fleet.region))
        self.region_members = {r: np.asarray([x == r for x in fleet.region], dtype=bool) for r in regions}

    # --- provider state ------------------------------------------------------------------------------------

    def _set_down(self, p: int, t: float) -> None:
        if not self.up[p]:
            return
        self.up[p] = False
        self.up_s[p] += t - self.up_since[p]
        heap = self.slot_heap[p]
        for a in self.inflight[p]:
            if not self.a_live[a]:
                continue
            if self.a_end[a] > t:  # not finished computing: lost
                self.a_live[a] = 0
                self.busy_s[p] += max(0.0, t - self.a_start[a])
                detect = max(t, self.a_dispatch[a]) + self.config.failure_detect_s
                heapq.heappush(self.heap, (detect, a, _FAIL))
        self.inflight[p] = [a for a in self.inflight[p] if self.a_live[a]]
        heap.clear()

    def _set_up(self, p: int, t: float) -> None:
        if self.up[p] or self.churn_down[p] or self.outage_down[p]:
            return
        self.up[p] = True
        self.up_since[p] = t

    def _churn_process(self) -> Generator[simpy.Event, None, None]:
        env = self.env
        for t, p, down in self.churn:
            if t > env.now:
                yield env.timeout(t - env.now)
            self.events += 1
            self.churn_down[p] = down
            if down:
                self._set_down(p, float(env.now))
            else:
                self._set_up(p, float(env.now))

    def _outage_process(self) -> Generator[simpy.Event, None, None]:
        outage = self.outage
        assert outage is not None
        env = self.env
        codes = {c: i for i, c in enumerate(self.world.data.countries)}
        hit = np.zeros(len(codes), dtype=bool)
        hit[[codes[c] for c in outage.countries if c in codes]] = True
        members = np.flatnonzero(hit[self.fleet.country]).tolist()
        yield env.timeout(outage.start_s)
        self.events += 1
        for p in members:
            self.outage_down[p] = True
            self._set_down(p, float(env.now))
        yield env.timeout(outage.duration_s)
        self.events += 1
        for p in members:
            self.outage_down[p] = False
            self._set_up(p, float(env.now))

    # --- dispatch ------------------------------------------------------------------------------------------

    def _dispatch(self, job: int, p: int, t: float) -> None:
        """Start an attempt of ``job`` on provider ``p`` at ``t`` (its timeline, or its failure)."""
        k = int(self.attempts[job])
        self.attempts[job] = k + 1
        self.tried.setdefault(job, []).append(p)
        a = len(self.a_job)
        c = int(self.jobs.client_country[self.jobs.client[job]])
        rtt = float(self.rtt_s[c, self.fleet.country[p]])
        send = rtt / 2 + 8.0 * float(self.jobs.input_bytes[job]) / self.link
        back = rtt / 2 + 8.0 * float(self.jobs.output_bytes[job]) / self.link
        prefill = float(self.prompt[job]) / float(self.fleet.prefill[p])
        step = 1.0 / float(self.fleet.decode[p])
        service = prefill + float(self.output[job]) * step
        self.a_job.append(job)
        self.a_provider.append(p)
        self.a_dispatch.append(t)
        if self.health is not None:
            self.health.begin(self.fleet.addresses[p], self.fleet.region[p], now=t)
        if not self.up[p]:
            # the gateway's snapshot still lists it: the dial fails
            self.a_start.append(t)
            self.a_end.append(t)
            self.a_first.append(math.inf)
            self.a_live.append(0)
            heapq.heappush(self.heap, (t + self.config.failure_detect_s, a, _FAIL))
            return
        arrive = t + send
        heap = self.slot_heap[p]
        if len(heap) < int(self.fleet.slots[p]):
            start = arrive
            end = start + service
            heapq.heappush(heap, end)
        else:
            start = max(arrive, heap[0])
            end = start + service
            heapq.heapreplace(heap, end)
        result = end + back
        self.a_start.append(start)
        self.a_end.append(end)
        self.a_first.append(start + prefill + step + back)
        self.inflight[p].append(a)
        if self._draw(_STREAM_FAIL, job, k) < float(self.fleet.failure_rate[p]):
            # accepted, never delivered: the slot stays busy for the service time, the gateway waits longer
            self.busy_s[p] += service
            self.a_live.append(0)
            heapq.heappush(self.heap, (t + self.config.deliver_timeout_s, a, _FAIL))
            return
        self.a_live.append(1)
        heapq.heappush(self.heap, (result, a, _RESULT))

    def _draw(self, stream: int, job: int, attempt: int) -> float:
        if attempt == 0:
            value: float = self.first_draws[stream][job]
            return value
        return _draw(self.seed, stream, job, attempt)

    # --- settlement ----------------------------------------------------------------------------------------

    def _finish(self, job: int, outcome: int) -> None:
        self.outcome[job] = outcome
        self.done += 1
        self.policy.release(job)
        self.tried.pop(job, None)

    def _slash(self, t: float, p: int, job: int, fault: str) -> None:
        epoch = epoch_of(t, self.config.params)
        self._redeem_before(epoch)
        record = self.ledger.slash(t, epoch, p, job, fault)  # type: ignore[arg-type]
        if record is not None and not record.honest:
            self.cheaters_caught.add(p)
        self.quarantined_until[p] = t + self.config.quarantine_s
        self.blocked_until[p] = max(self.blocked_until[p], t + self.config.quarantine_s)

    def _settle_until(self, now: float) -> None:
        """Handle every result and failure notice up to ``now`` in time order."""
        heap = self.heap
        cfg = self.config
        while heap and heap[0][0] <= now:
            t, a, kind = heapq.heappop(heap)
            self.events += 1
            job = self.a_job[a]
            p = self.a_provider[a]
            if kind == _FAIL:
                self._record(p, False, t)
                self.failures[p] += 1
                self.blocked_until[p] = max(self.blocked_until[p], t + cfg.snapshot_interval_s)
                self._retry(job, t)
                continue
            if not self.a_live[a]:
                continue
            self.a_live[a] = 0
            k = int(self.attempts[job]) - 1
            self.busy_s[p] += self.a_end[a] - self.a_start[a]
            cheated = self._draw(_STREAM_CHEAT, job, k) < float(self.fleet.cheat_rate[p])
            if (
                cheated
                and _draw(self.seed, _STREAM_CHECK, job, k) < cfg.check_share
                and _draw(self.seed, _STREAM_DETECT, job, k) < cfg.detection
            ):
                self._record(p, False, t)
                self.failures[p] += 1
                self._slash(t, p, job, "invalid_result")
                self._retry(job, t)
                continue
            # delivered
            self._record(p, True, t)
            self.successes[p] += 1
            self.jobs_done[p] += 1
            self.provider[job] = p
            self.latency[job] = (t - float(self.arrival[job])) * 1000.0
            self.ttft[job] = (self.a_first[a] - float(self.arrival[job])) * 1000.0
            self.settled[job] = t
            price = int(self.jobs.units[job]) * int(self.fleet.price[p])
            self.cost[job] = price
            epoch = epoch_of(t, cfg.params)
            by_client = self.vouchers.setdefault(epoch, {}).setdefault(p, {})
            entry = by_client.get(int(self.jobs.client[job]))
            if entry is None:
                by_client[int(self.jobs.client[job])] = [price, 1]
            else:
                entry[0] += price
                entry[1] += 1
            if cheated:
                self.wrong += 1
            self._finish(job, WRONG if cheated else OK)
            if cfg.canary_rate > 0 and self._draw(_STREAM_CANARY, job, k) < cfg.canary_rate:
                self.canaries += 1
                rate = float(self.fleet.cheat_rate[p])
                if (
                    rate > 0
                    and _draw(self.seed, _STREAM_CANARY_WRONG, job, k) < rate
                    and _draw(self.seed, _STREAM_DETECT, job, k + 64) < cfg.detection
                ):
                    self.failures[p] += 1
                    self._slash(t, p, -1, "canary")

    def _record(self, p: int, ok: bool, t: float) -> None:
        """An attempt's outcome, as the gateway records it in its circuit breakers."""
        if self.health is not None:
            self.health.record(self.fleet.addresses[p], self.fleet.region[p], ok, now=t)

    def _health_blocked(self, now: float) -> NDArray[np.bool_]:
        """Providers the gateway's circuit breakers exclude now: open (or on trial) breakers, and every
        provider of a dark region (those the tracker has not seen too, as the dispatcher does)."""
        out = np.zeros(self.n, dtype=bool)
        if self.health is None:
            return out
        for region in sorted(self.health.dark_regions(now)):
            members = self.region_members.get(region)
            if members is not None:
                out |= members
        index = self.index
        for address in self.health.excluded(now):
            out[index[address]] = True
        return out

    def _retry(self, job: int, t: float) -> None:
        if self.attempts[job] >= self.config.max_attempts:
            self._finish(job, FAILED)
            return
        self.failovers += 1
        heapq.heappush(self.pending, (t, job, True))

    def _redeem_before(self, epoch: int) -> None:
        """Redeem every epoch below ``epoch`` not redeemed yet (once per provider and epoch)."""
        params = self.config.params
        for e in sorted(k for k in self.vouchers if k < epoch):
            batch = self.vouchers.pop(e)
            t = (e + 1) * params.epoch_length - 1e-3
            for p in sorted(batch):
                per_client = {c: (v[0], v[1]) for c, v in batch[p].items()}
                self.ledger.redeem(t, e, p, per_client)
                self.completed_chain[p] += sum(v[1] for v in batch[p].values())

    # --- snapshots -----------------------------------------------------------------------------------------

    def _snapshot(self, now: float) -> None:
        fleet = self.fleet
        n = self.n
        free = fleet.slots.astype(np.int64).copy()
        queued = np.zeros(n, dtype=np.int64)
        busy_total = 0
        queued_total = 0
        for p in range(n):
            live = [a for a in self.inflight[p] if self.a_end[a] > now]
            self.inflight[p] = live
            if live:
                running = sum(1 for a in live if self.a_start[a] <= now)
                free[p] -= running
                queued[p] = len(live) - running
                busy_total += running
                queued_total += len(live) - running
        stake = np.array([float(s) for s in self.ledger.stake])
        slashed = np.array([float(s) for s in self.ledger.slashed])
        active = np.array([self.ledger.active(p) for p in range(n)])
        listed = self.up & active & (self.quarantined_until <= now)
        reliability = reliability_from_counts(
            self.completed_chain, self.successes, self.failures, stake, slashed
        )
        snapshot = (
            self._market_snapshot(now, listed, free, queued, reliability)
            if self.policy.needs_snapshot
            else None
        )
        self.market = Market(
            now=now,
            listed=listed,
            free_slots=np.maximum(free, 0).astype(np.int32),
            queue_depth=queued.astype(np.int32),
            slots=fleet.slots,
            price_wei=fleet.price,
            stake_wei=stake,
            reliability=reliability,
            jobs_completed=self.completed_chain.copy(),
            queue_allowance=self.matching.queue_allowance,
            snapshot=snapshot,
        )
        self.policy.refresh(self.market)
        self.series.append(
            (
                now,
                int(np.count_nonzero(self.up[: fleet.market])),
                int(np.count_nonzero(listed)),
                busy_total,
                queued_total,
                len(self.pending),
            )
        )
        if self.progress is not None:
            self.progress(SimProgress(now, self.done, self.total, time.perf_counter() - self.wall0))

    def _market_snapshot(
        self,
        now: float,
        listed: NDArray[np.bool_],
        free: NDArray[np.int64],
        queued: NDArray[np.int64],
        reliability: NDArray[np.float64],
    ) -> MarketSnapshot:
        fleet = self.fleet
        rows = np.flatnonzero(listed & ~fleet.hyperscale)
        r = rows.tolist()
        country = fleet.country[rows]
        vectors, heights = self.coords
        flops = fleet.tokens_per_s[rows] * FLOPS_PER_TOKEN
        return MarketSnapshot.from_arrays(
            now=now,
            addresses=[fleet.addresses[i] for i in r],
            countries=[self.world.data.countries[int(c)] for c in country],
            regions=[fleet.region[i] for i in r],
            workloads={WORKLOAD: (np.ones(len(rows), dtype=bool), fleet.price[rows], {})},
            gpu_models=[fleet.gpu_name[i] for i in r],
            gpu_count=fleet.gpus[rows],
            gpu_memory=fleet.gpu_memory[rows],
            cpu_cores=np.full(len(rows), 16),
            memory=np.full(len(rows), 64 * 2**30, dtype=np.uint64),
            vectors=vectors[country],
            heights=heights[country],
            free_slots=np.maximum(free[rows], 0),
            queue_depth=queued[rows],
            max_concurrency=fleet.slots[rows],
            claimed_flops=flops,
            reliability=reliability[rows],
            throughput=flops,
            jobs_completed=self.completed_chain[rows],
            expires_at=np.full(len(rows), int(now) + 3600),
            issued_at=np.full(len(rows), math.floor(now), dtype=np.int64),
        )

    # --- the gateway ---------------------------------------------------------------------------------------

    def _tick(self, now: float, until: float) -> None:
        """Place every job that becomes ready in ``[now, until)``."""
        blocked = (self.blocked_until > now) | self._health_blocked(now)
        # failovers and retries first (they waited longest), then new arrivals, each at its own time
        ready: list[tuple[float, int, bool]] = []
        while self.pending and self.pending[0][0] < until:
            ready.append(heapq.heappop(self.pending))
        new_from = self.next_arrival
        new_to = int(np.searchsorted(self.arrival, until, side="left"))
        self.next_arrival = new_to
        fresh = [(t, j) for t, j, failover in ready if not failover]
        failovers = [(t, j) for t, j, failover in ready if failover]
        for t, job in failovers:
            p = self.policy.failover(job, self.tried.get(job, ()), blocked)
            self._placed(job, p, max(t, now), retry_new=False)
        jobs = [j for _, j in fresh] + list(range(new_from, new_to))
        if jobs:
            times = [max(t, now) for t, _ in fresh] + self.arrival[new_from:new_to].tolist()
            picks = self.policy.place(np.asarray(jobs, dtype=np.int64), blocked)
            for job, p, t in zip(jobs, picks.tolist(), times, strict=True):
                self._placed(job, p, t, retry_new=True)

    def _placed(self, job: int, p: int, t: float, *, retry_new: bool) -> None:
        if p >= 0:
            self._dispatch(job, p, t)
            return
        if p == INFEASIBLE:
            self._finish(job, REJECTED)
            return
        assert p == UNPLACED
        if t - float(self.arrival[job]) >= self.config.max_wait_s:
            self._finish(job, DROPPED if self.attempts[job] == 0 else FAILED)
            return
        next_try = t + self.config.window_s
        heapq.heappush(self.pending, (next_try, job, not retry_new))

    def _gateway_process(self) -> Generator[simpy.Event, None, None]:
        env = self.env
        cfg = self.config
        w = cfg.window_s
        per_snapshot = round(cfg.snapshot_interval_s / w)
        tick = 0
        while True:
            now = round(tick * w, 9)
            if now > env.now:
                yield env.timeout(now - env.now)
            self.events += 1
            self._settle_until(now)
            self._redeem_before(epoch_of(now, cfg.params))
            if tick % per_snapshot == 0:
                self._snapshot(now)
            self._tick(now, now + w)
            tick += 1
            if self.next_arrival >= self.total and not self.pending and not self.heap:
                break
            if self.done >= self.total and not self.heap:
                break

    # --- run -----------------------------------------------------------------------------------------------

    def run(self) -> SimResult:
        env = self.env
        if self.churn:
            env.process(self._churn_process())
        if self.outage is not None:
            env.process(self._outage_process())
        gateway = env.process(self._gateway_process())
        env.run(until=gateway)  # churn may go on; the run ends when every job has an outcome
        return self._result(float(env.now))

    def _result(self, end: float) -> SimResult:
        cfg = self.config
        fleet = self.fleet
        # close the books: redeem every epoch left (at the end of the run), treat every epoch as ended
        self._redeem_before(10**12)
        rewards, pots = self.ledger.rewards()
        for p in np.flatnonzero(self.up).tolist():
            self.up_s[p] += end - self.up_since[p]
        n = self.n

        def obj(values: list[int]) -> NDArray[np.object_]:
            out = np.empty(n, dtype=object)
            out[:] = values
            return out

        target_ms = self.jobs.target_s * 1000.0
        delivered = (self.outcome == OK) | (self.outcome == WRONG)
        settlements = sorted(self.ledger.settlements, key=lambda r: (r.t, 0 if r.kind == "slash" else 1))
        honest_slashed = len({r.provider for r in settlements if isinstance(r, SlashEvent) and r.honest})
        series = np.array(self.series, dtype=np.float64).reshape(-1, 6)
        return SimResult(
            policy=cfg.policy,
            seed=cfg.seed,
            config=cfg,
            params=cfg.params,
            jobs=self.total,
            providers=n,
            market_providers=fleet.market,
            horizon_s=end,
            arrival_s=self.arrival,
            client=self.jobs.client,
            provider=self.provider,
            outcome=self.outcome,
            latency_ms=self.latency,
            ttft_ms=self.ttft,
            target_ms=target_ms,
            met_target=delivered & (self.latency <= target_ms),
            cost_wei=self.cost,
            attempts=self.attempts,
            settled_s=self.settled,
            provider_hyperscale=fleet.hyperscale,
            provider_honest=fleet.honest,
            provider_country=fleet.country,
            provider_slots=fleet.slots,
            provider_jobs=self.jobs_done,
            provider_busy_s=self.busy_s,
            provider_up_s=self.up_s,
            provider_payout_wei=obj(self.ledger.payout),
            provider_fees_wei=obj(self.ledger.fees),
            provider_rewards_wei=obj([rewards.get(p, 0) for p in range(n)]),
            provider_slashed_wei=obj(self.ledger.slashed),
            provider_stake_wei=obj(self.ledger.stake),
            treasury_wei=self.ledger.treasury,
            finder_rewards_wei=self.ledger.finder_rewards,
            pots_wei=pots,
            settlements=settlements,
            cheaters=int(np.count_nonzero(~fleet.honest)),
            cheaters_caught=len(self.cheaters_caught),
            honest_slashed=honest_slashed,
            slashes=sum(1 for r in settlements if isinstance(r, SlashEvent)),
            wrong_results=self.wrong,
            canaries=self.canaries,
            failovers=self.failovers,
            series=SimSeries(
                t=series[:, 0],
                providers_up=series[:, 1].astype(np.int64),
                listed=series[:, 2].astype(np.int64),
                busy_slots=series[:, 3].astype(np.int64),
                queued=series[:, 4].astype(np.int64),
                pending=series[:, 5].astype(np.int64),
            ),
            wall_s=time.perf_counter() - self.wall0,
            events=self.events,
            matching=self.matching,
        )


def simulate(
    world: World,
    arrivals: Arrivals,
    config: SimConfig,
    *,
    progress: Callable[[SimProgress], None] | None = None,
    records: ProviderRecords | None = None,
) -> SimResult:
    """Run one policy on a world and its arrivals (see the module docstring).

    Args:
        world: The world (:func:`proxima.sim.world.build_world`).
        arrivals: The jobs (:func:`proxima.sim.arrivals.replay_trace`).
        config: Policy, seed and model settings.
        progress: Called at every snapshot with where the run is.
        records: The providers' records at the start (None: a fresh market).

    Returns:
        The result (deterministic for the same inputs).

    Raises:
        SimConfigError: If the arrivals are not in time order or name unknown clients.
    """
    if len(arrivals) and (int(np.max(arrivals.client)) >= world.clients or int(np.min(arrivals.client)) < 0):
        raise SimConfigError(
            "arrivals.client", "out of range", f"client rows of the world (< {world.clients})"
        )
    run = _Run(world, arrivals, config, progress, records)
    log.info(
        "simulation started",
        extra={"policy": config.policy, "seed": config.seed, "jobs": run.total, "providers": run.n},
    )
    result = run.run()
    log.info(
        "simulation finished",
        extra={
            "policy": config.policy,
            "jobs": run.total,
            "wall_s": round(result.wall_s, 3),
            "events": result.events,
        },
    )
    return result
