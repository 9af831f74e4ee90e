"""Placement policies compared on the same world and the same arrivals.

==================  ==================================================================================
policy              picks, among the providers that pass the job's hard constraints and have capacity
==================  ==================================================================================
``centralized``     the world's hyperscale pool (``World.hyperscale``, one country): the pool member with
                    the most free capacity (a load balancer), ties by index; a job whose residency excludes
                    the country cannot run. The other policies use the market (``World.providers``) only
``random``          uniformly at random
``cheapest``        the lowest unit price, ties by index
``nearest``         the lowest RTT from the client's country (the world's measured RTT matrix: the strongest
                    form of this baseline, it knows the true RTTs), ties by index
``stake_weighted``  at random with probability proportional to stake (Livepeer's default selection)
``proxima``         the real :class:`~proxima.marketplace.matching.MatchingEngine`: batch placement
                    (``place_batch``) on a :class:`~proxima.marketplace.matching.MarketSnapshot`, with
                    reservations (``reserve`` / ``bind`` / ``unreserve``); on failover the engine ranks the
                    remaining offers again (``place`` with the tried and blocked excluded) and a failover
                    placement's ranked backups serve the next failover
==================  ==================================================================================

Fairness: every policy sees the same :class:`Market` (the gateway's view, rebuilt every
``snapshot_interval_s``: who is listed, free slots and queue at that time, prices, stakes, reliability), the
same ``blocked`` set (providers this gateway saw fail since the last snapshot, and quarantined cheaters), the
same hard constraints (residency; every provider serves the one workload) and the same capacity rule as the
engine: a provider takes a job while ``free_slots + max(0, queue_allowance - queue_depth) - held > 0``, where
``held`` counts the jobs this gateway sent there since the snapshot and that have not ended yet.

A policy answers each job with a provider index, :data:`UNPLACED` (every feasible provider is full, down or
blocked now: the gateway retries later) or :data:`INFEASIBLE` (no provider of the policy's pool, online or
not, satisfies the job's hard constraints: rejected). Proxima's RTT estimates come from Vivaldi coordinates
(:func:`fit_coordinates`, fitted to the same RTT matrix, as a gateway would learn them), not from the true
matrix.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from proxima.marketplace.matching import (
    JobSpec,
    MarketSnapshot,
    MatchingConfig,
    MatchingEngine,
    NoCandidateError,
    Placement,
    Reservation,
    ReservationError,
    Residency,
)
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate
from proxima.sim.errors import SimError

__all__ = [
    "INFEASIBLE",
    "POLICIES",
    "UNPLACED",
    "WORKLOAD",
    "CentralizedPolicy",
    "CheapestPolicy",
    "JobTable",
    "Market",
    "NearestPolicy",
    "Policy",
    "PolicyContext",
    "ProximaPolicy",
    "RandomPolicy",
    "StakeWeightedPolicy",
    "UnknownPolicyError",
    "fit_coordinates",
    "make_policy",
]

POLICIES: Final = ("centralized", "random", "cheapest", "nearest", "stake_weighted", "proxima")
"""Names of the policies, in report order."""

UNPLACED: Final = -1
"""No feasible provider has capacity now (retry later)."""

INFEASIBLE: Final = -2
"""No listed provider satisfies the job's hard constraints (rejected)."""

WORKLOAD: Final = "llm"
"""The one workload every simulated provider serves."""

Ints = NDArray[np.int64]
Mask = NDArray[np.bool_]
Floats = NDArray[np.float64]


class UnknownPolicyError(SimError, ValueError):
    """The policy name is not one of :data:`POLICIES`."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")


def fit_coordinates(
    rtt_s: NDArray[np.float64], *, dimensions: int = 3, iterations: int = 600, seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vivaldi-style coordinates (vector + height, seconds) for each country, fitted to an RTT matrix.

    Minimizes the squared relative error of ``||x_i - x_j|| + h_i + h_j`` against ``rtt_s[i, j]`` over all
    pairs (the diagonal too: two hosts in one country) by gradient descent with momentum; deterministic
    for a seed. This is what a gateway's coordinates converge to, up to the embedding's own error.

    Args:
        rtt_s: Symmetric ``(C, C)`` RTTs in seconds, positive.
        dimensions: 2 or 3.
        iterations: Gradient steps.
        seed: Seed of the initial positions.

    Returns:
        ``(vectors (C, dimensions), heights (C,))``.
    """
    rtt = np.asarray(rtt_s, dtype=np.float64)
    c = rtt.shape[0]
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=float(np.median(rtt)) / 2, size=(c, dimensions))
    h = np.maximum(np.diag(rtt) / 2, 1e-4)
    weight = 1.0 / np.maximum(rtt, 1e-4) ** 2
    vx = np.zeros_like(x)
    vh = np.zeros_like(h)
    step = 0.05 * float(np.median(rtt))
    for it in range(iterations):
        diff = x[:, None, :] - x[None, :, :]
        dist = np.sqrt((diff**2).sum(axis=2)) + 1e-12
        pred = dist + h[:, None] + h[None, :]
        err = (pred - rtt) * weight  # d(0.5 * w * (pred - rtt)^2) / d pred
        gx = ((err / dist)[:, :, None] * diff).sum(axis=1) * 2
        gh = err.sum(axis=1) * 2
        scale = step / (np.abs(err).sum(axis=1).max() + 1e-12) * (0.998**it)
        vx = 0.8 * vx - scale * gx
        vh = 0.8 * vh - scale * gh
        x += vx
        h = np.maximum(h + vh, 1e-4)
    return x, h


@dataclass(frozen=True)
class JobTable:
    """The jobs of a run as arrays (one entry per arrival) with their clients' constraints.

    Attributes:
        client: Client index of each job.
        units: Billing units (>= 1).
        flops: Work, FLOP.
        input_bytes: Request bytes.
        output_bytes: Result bytes.
        target_s: Latency target, seconds (``nan``: none).
        client_country: Country index of each client.
        client_class: Residency class of each client (0: anywhere).
        allowed: ``(classes, countries)``: which countries each residency class allows.
        residency: Per class, the allowed country codes (None for anywhere).
    """

    client: NDArray[np.int32]
    units: Ints
    flops: Floats
    input_bytes: Ints
    output_bytes: Ints
    target_s: Floats
    client_country: NDArray[np.int32]
    client_class: NDArray[np.int32]
    allowed: Mask
    residency: tuple[tuple[str, ...] | None, ...]

    def __len__(self) -> int:
        return len(self.client)


@dataclass(frozen=True)
class PolicyContext:
    """What does not change during a run: the world as the gateway can know it.

    Attributes:
        countries: Country codes (ISO-2).
        rtt_s: True RTT between countries, seconds (``(C, C)``).
        provider_country: Country index per provider.
        provider_region: Region label per provider.
        provider_hyperscale: The centralized baseline's pool (the others use every other provider).
        addresses: Address per provider (the matching engine's rows).
        jobs: The run's jobs.
        vectors: Vivaldi vectors per country (Proxima's RTT estimates).
        heights: Vivaldi heights per country.
        matching: The matching engine's configuration.
        seed: Seed of the randomized policies.
        clock: Simulated time now (the matching engine's clock).
    """

    countries: tuple[str, ...]
    rtt_s: Floats
    provider_country: NDArray[np.int32]
    provider_region: tuple[str, ...]
    provider_hyperscale: Mask
    addresses: tuple[Address, ...]
    jobs: JobTable
    vectors: Floats
    heights: Floats
    matching: MatchingConfig
    seed: int
    clock: Callable[[], float]

    @property
    def providers(self) -> int:
        """Number of providers in the world."""
        return len(self.provider_country)


@dataclass(frozen=True)
class Market:
    """The gateway's view of the market at one snapshot (what every policy sees).

    Attributes:
        now: Simulated seconds of the snapshot.
        listed: Per provider: in the snapshot (online when it was taken, active stake, not quarantined).
        free_slots: Free slots per provider at snapshot time.
        queue_depth: Jobs waiting per provider at snapshot time.
        slots: Concurrent jobs per provider.
        price_wei: Unit price per provider.
        stake_wei: Stake per provider (float, for weighting).
        reliability: Reliability estimate per provider.
        jobs_completed: Completed jobs on chain per provider.
        queue_allowance: Jobs a provider may take beyond its free slots (to wait in its queue).
        snapshot: The matching engine's snapshot of the listed providers (built only for ``proxima``).
    """

    now: float
    listed: Mask
    free_slots: NDArray[np.int32]
    queue_depth: NDArray[np.int32]
    slots: NDArray[np.int32]
    price_wei: Ints
    stake_wei: Floats
    reliability: Floats
    jobs_completed: Ints
    queue_allowance: int
    snapshot: MarketSnapshot | None = None
    capacity: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        cap = self.free_slots.astype(np.int64) + np.maximum(
            0, self.queue_allowance - self.queue_depth.astype(np.int64)
        )
        object.__setattr__(self, "capacity", np.where(self.listed, cap, 0))


class Policy(ABC):
    """A placement policy. The engine calls :meth:`refresh` at every snapshot, :meth:`place` for new jobs,
    :meth:`failover` when an attempt failed, and :meth:`release` when a job's last attempt ended.

    Args:
        ctx: The run's static context.
    """

    name: ClassVar[str]
    needs_snapshot: ClassVar[bool] = False

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.market: Market | None = None
        n = ctx.providers
        self.held = np.zeros(n, dtype=np.int64)
        self._generation = 0
        self._inflight: dict[int, list[tuple[int, int]]] = {}
        self._masks: dict[int, Mask] = {}
        self._static: dict[int, bool] = {}
        self.rng = np.random.default_rng(
            [ctx.seed, POLICIES.index(self.name) if self.name in POLICIES else 99]
        )

    # --- engine-facing -------------------------------------------------------------------------------------

    def refresh(self, market: Market) -> None:
        """A new snapshot: capacity counts restart from it (jobs sent before are in its free slots)."""
        self.market = market
        self.held[:] = 0
        self._generation += 1
        self._masks.clear()

    def place(self, jobs: Ints, blocked: Mask) -> Ints:
        """Place new jobs (in arrival order).

        Args:
            jobs: Job indices.
            blocked: Providers the gateway will not use now.

        Returns:
            Per job: a provider index, :data:`UNPLACED` or :data:`INFEASIBLE`.
        """
        out = np.empty(len(jobs), dtype=np.int64)
        for i, job in enumerate(jobs.tolist()):
            out[i] = self._pick_and_take(job, blocked, ())
        return out

    def failover(self, job: int, exclude: Collection[int], blocked: Mask) -> int:
        """Another provider for a job whose attempt failed (or whose result was rejected).

        Args:
            job: The job.
            exclude: Providers already tried for it.
            blocked: Providers the gateway will not use now.

        Returns:
            A provider index, :data:`UNPLACED` or :data:`INFEASIBLE`.
        """
        return self._pick_and_take(job, blocked, exclude)

    def release(self, job: int) -> None:
        """The job ended (delivered, or given up): its slots count no more."""
        for provider, generation in self._inflight.pop(job, ()):
            if generation == self._generation:
                self.held[provider] -= 1

    # --- baselines' common machinery -----------------------------------------------------------------------

    def _pick_and_take(self, job: int, blocked: Mask, exclude: Collection[int]) -> int:
        assert self.market is not None
        jobs = self.ctx.jobs
        klass = int(jobs.client_class[jobs.client[job]])
        if not self.feasible(klass):
            return INFEASIBLE
        mask = self._class_mask(klass)
        candidates = mask & ~blocked & (self.market.capacity > self.held)
        if exclude:
            candidates[list(exclude)] = False
        rows = np.flatnonzero(candidates)
        if len(rows) == 0:
            return UNPLACED
        provider = self._choose(job, rows)
        self._take(job, provider)
        return provider

    def feasible(self, klass: int) -> bool:
        """Whether any provider of this policy's pool, listed or not, satisfies residency class ``klass``."""
        ok = self._static.get(klass)
        if ok is None:
            allowed = self.ctx.jobs.allowed[klass][self.ctx.provider_country]
            ok = self._static[klass] = bool((allowed & self._pool()).any())
        return ok

    def _class_mask(self, klass: int) -> Mask:
        """Listed providers that satisfy residency class ``klass`` (and this policy's own pool)."""
        mask = self._masks.get(klass)
        if mask is None:
            assert self.market is not None
            allowed = self.ctx.jobs.allowed[klass][self.ctx.provider_country]
            mask = self.market.listed & allowed & self._pool()
            self._masks[klass] = mask
        return mask

    def _pool(self) -> Mask:
        """The providers this policy may use: the market (not the hyperscale pool)."""
        return ~self.ctx.provider_hyperscale

    def _take(self, job: int, provider: int) -> None:
        self.held[provider] += 1
        self._inflight.setdefault(job, []).append((provider, self._generation))

    @abstractmethod
    def _choose(self, job: int, rows: Ints) -> int:
        """One of ``rows`` (feasible, with capacity, not blocked or excluded; ascending)."""


class CentralizedPolicy(Policy):
    """Every job to one hyperscale region's pool; inside it, the member with the most capacity left."""

    name = "centralized"

    def _pool(self) -> Mask:
        return self.ctx.provider_hyperscale

    def _choose(self, job: int, rows: Ints) -> int:
        assert self.market is not None
        left = self.market.capacity[rows] - self.held[rows]
        return int(rows[int(np.argmax(left))])


class RandomPolicy(Policy):
    """A feasible provider uniformly at random."""

    name = "random"

    def _choose(self, job: int, rows: Ints) -> int:
        return int(rows[int(self.rng.integers(len(rows)))])


class CheapestPolicy(Policy):
    """The feasible provider with the lowest unit price."""

    name = "cheapest"

    def _choose(self, job: int, rows: Ints) -> int:
        assert self.market is not None
        return int(rows[int(np.argmin(self.market.price_wei[rows]))])


class NearestPolicy(Policy):
    """The feasible provider with the lowest true RTT from the client's country."""

    name = "nearest"

    def _choose(self, job: int, rows: Ints) -> int:
        jobs = self.ctx.jobs
        country = int(jobs.client_country[jobs.client[job]])
        rtt = self.ctx.rtt_s[country][self.ctx.provider_country[rows]]
        return int(rows[int(np.argmin(rtt))])


class StakeWeightedPolicy(Policy):
    """A feasible provider at random, with probability proportional to its stake (Livepeer's default)."""

    name = "stake_weighted"

    def _choose(self, job: int, rows: Ints) -> int:
        assert self.market is not None
        weights = np.cumsum(self.market.stake_wei[rows])
        total = float(weights[-1])
        if not total > 0:
            return int(rows[int(self.rng.integers(len(rows)))])
        pick = int(np.searchsorted(weights, self.rng.random() * total, side="right"))
        return int(rows[min(pick, len(rows) - 1)])


@dataclass(slots=True)
class _Dispatched:
    reservation: Reservation
    placement: Placement | None = None  # a failover's single placement (its backups serve the next failover)


class ProximaPolicy(Policy):
    """The real matching engine: batch placement, reservations, and its ranked backups on failover."""

    name = "proxima"
    needs_snapshot = True

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        self.engine = MatchingEngine(ctx.matching, clock=ctx.clock)
        jobs = ctx.jobs
        self._residency = [
            Residency() if countries is None else Residency(countries=countries)
            for countries in jobs.residency
        ]
        self._coordinates = [
            VivaldiCoordinate(vector=tuple(float(v) for v in ctx.vectors[c]), height=float(ctx.heights[c]))
            for c in range(len(ctx.countries))
        ]
        self._dispatched: dict[int, _Dispatched] = {}
        self._listed_rows: Ints = np.zeros(0, dtype=np.int64)
        self._index = {address: i for i, address in enumerate(ctx.addresses)}
        self._address = ctx.addresses

    def refresh(self, market: Market) -> None:
        """Use the new snapshot (the engine's holds bound before it stop counting by themselves)."""
        if market.snapshot is None:
            raise SimError("the proxima policy needs a market snapshot")
        self.market = market
        self._masks.clear()
        index = self._index
        self._listed_rows = np.asarray([index[a] for a in market.snapshot.addresses], dtype=np.int64)

    def spec(self, job: int) -> JobSpec:
        """The job as the matching engine sees it (its 32-byte id derives from the run seed and index)."""
        jobs = self.ctx.jobs
        client = int(jobs.client[job])
        target = float(jobs.target_s[job])
        return JobSpec(
            job_id=job.to_bytes(8, "little")
            + (self.ctx.seed & (2**64 - 1)).to_bytes(8, "little")
            + bytes(16),
            workload=WORKLOAD,
            units=int(jobs.units[job]),
            flops=int(jobs.flops[job]),
            input_bytes=int(jobs.input_bytes[job]),
            output_bytes=int(jobs.output_bytes[job]),
            residency=self._residency[int(jobs.client_class[client])],
            latency_target_s=None if math.isnan(target) else target,
            client_coordinate=self._coordinates[int(jobs.client_country[client])],
        )

    def _exclude(self, blocked: Mask, extra: Collection[int] = ()) -> list[Address]:
        rows = self._listed_rows
        address = self._address
        out = [address[int(p)] for p in rows[blocked[rows]]]
        out.extend(address[p] for p in extra if not blocked[p])
        return out

    def place(self, jobs: Ints, blocked: Mask) -> Ints:
        """Place the jobs with ``place_batch``; reserve and bind each placed one."""
        assert self.market is not None
        assert self.market.snapshot is not None
        snapshot = self.market.snapshot
        out = np.empty(len(jobs), dtype=np.int64)
        # a job every listed provider of whose residency is blocked has no candidate: it is not asked
        ask: list[int] = []
        for i, job in enumerate(jobs.tolist()):
            if self._open(job, blocked, ()):
                ask.append(i)
            else:
                out[i] = self._why(job)
        if not ask:
            return out
        specs = [self.spec(int(jobs[i])) for i in ask]
        results = self.engine.place_batch(specs, snapshot, exclude=self._exclude(blocked))
        for i, result in zip(ask, results, strict=True):
            job = int(jobs[i])
            if isinstance(result, NoCandidateError):
                out[i] = self._why(job)
                continue
            out[i] = self._dispatch(job, result, keep=False)
        return out

    def _open(self, job: int, blocked: Mask, exclude: Collection[int]) -> bool:
        """Whether a listed provider that satisfies the job's residency is neither blocked nor excluded (if
        none is, the engine has no candidate: it is not asked)."""
        jobs = self.ctx.jobs
        klass = int(jobs.client_class[jobs.client[job]])
        if not self.feasible(klass):
            return False
        rows = self._class_mask(klass) & ~blocked
        if exclude:
            rows[list(exclude)] = False
        return bool(rows.any())

    def _dispatch(self, job: int, placement: Placement, *, keep: bool) -> int:
        """Reserve and bind the placement's first choice. A batch placement is not kept: it holds on to its
        whole batch's arrays, and failovers are rare (they ask the engine again, see :meth:`failover`)."""
        address = placement.providers[0]
        reservation = self.engine.reserve(placement)
        self.engine.bind(reservation, address)
        self._dispatched[job] = _Dispatched(reservation, placement if keep else None)
        return self._index[address]

    def failover(self, job: int, exclude: Collection[int], blocked: Mask) -> int:
        """The next ranked provider for a job whose attempt failed.

        A job placed by a failover keeps that placement, and its next failover takes the placement's next
        ranked backup that is neither tried nor blocked. Otherwise (a batch-placed job, or no usable backup
        left) the engine places the job again on the current snapshot with the tried and blocked providers
        excluded, which ranks the remaining offers exactly as the backups are ranked. The reservation's
        hold moves to the new provider (``bind``).
        """
        assert self.market is not None
        assert self.market.snapshot is not None
        if not self._open(job, blocked, exclude):
            return self._why(job)
        held = self._dispatched.get(job)
        if held is not None and held.placement is not None:
            for candidate in held.placement.backups:
                p = self._index[candidate.provider]
                if p in exclude or blocked[p]:
                    continue
                try:
                    self.engine.bind(held.reservation, candidate.provider)
                except ReservationError:
                    break
                return p
        try:
            placement = self.engine.place(
                self.spec(job), self.market.snapshot, exclude=self._exclude(blocked, exclude)
            )
        except NoCandidateError:
            return self._why(job)
        if held is not None:
            self.engine.unreserve(held.reservation)
        return self._dispatch(job, placement, keep=True)

    def _pick_and_take(self, job: int, blocked: Mask, exclude: Collection[int]) -> int:  # pragma: no cover
        raise NotImplementedError

    def release(self, job: int) -> None:
        """Release the job's reservation."""
        held = self._dispatched.pop(job, None)
        if held is not None:
            self.engine.unreserve(held.reservation)

    def _why(self, job: int) -> int:
        """No candidate now: INFEASIBLE when no market provider could ever satisfy the job's residency,
        else UNPLACED (capacity, exclusions or churn: retry later)."""
        jobs = self.ctx.jobs
        return UNPLACED if self.feasible(int(jobs.client_class[jobs.client[job]])) else INFEASIBLE

    def _choose(self, job: int, rows: Ints) -> int:  # pragma: no cover - the engine chooses
        raise NotImplementedError


_CLASSES: Final[dict[str, type[Policy]]] = {
    cls.name: cls
    for cls in (
        CentralizedPolicy,
        RandomPolicy,
        CheapestPolicy,
        NearestPolicy,
        StakeWeightedPolicy,
        ProximaPolicy,
    )
}


def make_policy(name: str, ctx: PolicyContext) -> Policy:
    """The policy called ``name`` (one of :data:`POLICIES`).

    Raises:
        UnknownPolicyError: For any other name.
    """
    cls = _CLASSES.get(name)
    if cls is None:
        raise UnknownPolicyError(name)
    return cls(ctx)
