"""The matching engine: filter -> score -> normalize -> weigh -> reserve / unreserve -> bind.

:meth:`MatchingEngine.place` runs the plugins of :mod:`proxima.marketplace.matching.plugins` over a
:class:`~proxima.marketplace.matching.snapshot.MarketSnapshot` and returns a :class:`Placement`: the chosen
providers (``redundancy`` distinct ones), ranked backups, how many offers each filter removed, and an
explanation with every factor's contribution. Ranking: candidates expected to meet the job's latency target
first, then by utility, then by expected time, price, reliability, and last by address, so the same inputs
always give the same placement.

A share of jobs (``exploration_share``, decided by a hash of the job id, so anyone can recompute it) is
*explored*: its primary copy goes to the best feasible newcomer (a provider with fewer than ``newcomer_jobs``
completed jobs), so that new providers build a record and earnings don't concentrate on incumbents.

Reservations: :meth:`MatchingEngine.reserve` holds a slot on each chosen provider, so later placements on the
same engine see less free capacity (and a longer queue) there; :meth:`MatchingEngine.bind` records where the
job was actually sent; :meth:`MatchingEngine.unreserve` releases the hold (idempotent). A bound hold stops
counting once the provider publishes an offer signed after the bind (its own free slots then include the job);
any hold lapses after ``reservation_ttl_s``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching import plugins as pl
from proxima.marketplace.matching.snapshot import MarketSnapshot
from proxima.marketplace.matching.spec import JobSpec, MatchingConfig
from proxima.sdk.types import Address

__all__ = [
    "Candidate",
    "MatchingEngine",
    "NoCandidateError",
    "Placement",
    "Reservation",
    "ReservationError",
]

log = logging.getLogger(__name__)

_RTT_CACHE_SIZE: Final = 8
_VIEW_CACHE_SIZE: Final = 256
_SNAPSHOTS_KEPT: Final = 2
_NO_ROWS: Final = np.zeros(0, dtype=np.intp)
Rows = NDArray[np.intp]
Floats = NDArray[np.float64]
_Values = Any  # float arrays (single placement) or lists of floats (a batch placement's few candidates)


class NoCandidateError(MarketError):
    """No placement satisfies the job's hard constraints.

    Attributes:
        spec: The job.
        filtered: Filter name -> offers it removed (in pipeline order).
        feasible: Offers that passed every filter.
        needed: Distinct providers the job needs (its redundancy).
        considered: Offers in the snapshot.
    """

    def __init__(
        self, spec: JobSpec, filtered: Mapping[str, int], feasible: int, needed: int, considered: int
    ) -> None:
        self.spec = spec
        self.filtered = dict(filtered)
        self.feasible = feasible
        self.needed = needed
        self.considered = considered
        reasons = {f.name: f.reason for f in pl.FILTERS}
        removed = [
            f"{name} removed {count} ({reasons.get(name, name)})"
            for name, count in self.filtered.items()
            if count > 0
        ]
        if considered == 0:
            why = "the market has no live offers"
        elif removed:
            why = "; ".join(removed)
        else:
            why = "fewer offers than the redundancy asks for"
        super().__init__(
            f"no placement for job 0x{spec.job_id.hex()} ({spec.workload}"
            f"{'/' + spec.model if spec.model else ''}): {feasible} of {considered} offers feasible, "
            f"{needed} distinct provider(s) needed; {why}"
        )


class ReservationError(MarketError, ValueError):
    """A reservation was used after it was released or lapsed, or with a provider it cannot hold."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A provider ranked for a job, with everything its rank came from.

    Attributes:
        provider: The provider's address.
        peer_id: Its libp2p peer id.
        addrs: Where to dial it.
        region: Its region.
        country: Its country.
        price_wei: What one copy costs there (``units * unit price``, exact).
        utility: Weighted sum of the normalized scores (the sum of ``contributions``).
        expected_s: Expected completion time, ``rtt_s + transfer_s + queue_s + compute_s``.
        rtt_s: Round trip time (measured, predicted, or the configured default).
        transfer_s: Payload transfer time.
        queue_s: Expected wait for a slot.
        compute_s: ``flops / throughput_flops``.
        rtt_measured: Whether ``rtt_s`` was measured.
        reliability: Reliability estimate.
        throughput_flops: FLOP/s planned with (verified, never above the claim).
        scores: Normalized score per factor, in [0, 1].
        contributions: Each factor's weighted score (sums to ``utility``).
        meets_target: Whether ``expected_s`` meets the latency target (None: the job has none).
        explored: Chosen by the exploration share (a newcomer).
    """

    provider: Address
    peer_id: str
    addrs: tuple[str, ...]
    region: str
    country: str
    price_wei: int
    utility: float
    expected_s: float
    rtt_s: float
    transfer_s: float
    queue_s: float
    compute_s: float
    rtt_measured: bool
    reliability: float
    throughput_flops: float
    scores: Mapping[str, float]
    contributions: Mapping[str, float]
    meets_target: bool | None = None
    explored: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``price_wei`` as a decimal string)."""
        return {
            "provider": self.provider,
            "peer_id": self.peer_id,
            "region": self.region,
            "country": self.country,
            "price_wei": str(self.price_wei),
            "utility": self.utility,
            "meets_target": self.meets_target,
            "explored": self.explored,
            "factors": {
                "expected_s": self.expected_s,
                "rtt_s": self.rtt_s,
                "rtt_measured": self.rtt_measured,
                "transfer_s": self.transfer_s,
                "queue_s": self.queue_s,
                "compute_s": self.compute_s,
                "reliability": self.reliability,
                "throughput_flops": self.throughput_flops,
            },
            "scores": dict(self.scores),
            "contributions": dict(self.contributions),
        }


@dataclass(frozen=True, slots=True)
class Exploration:
    """Whether a job was explored.

    Attributes:
        share: The configured exploration share.
        draw: The job's draw in [0, 1) (from its id); the job is selected when ``draw < share``.
        selected: ``draw < share``.
        newcomers: Feasible newcomers.
        applied: Selected and a feasible newcomer was put first.
    """

    share: float
    draw: float
    selected: bool
    newcomers: int
    applied: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "share": self.share,
            "draw": self.draw,
            "selected": self.selected,
            "feasible_newcomers": self.newcomers,
            "applied": self.applied,
        }


class _Details(NamedTuple):
    chosen: tuple[Candidate, ...]
    backups: tuple[Candidate, ...]
    feasible: int
    filtered: Mapping[str, int]
    references: pl.References
    exploration: Exploration


class Placement:
    """Where a job goes, with ranked backups and why (read-only).

    Attributes:
        spec: The job.
        chosen: ``redundancy`` distinct providers, best first (an explored newcomer first of all).
        backups: Ranked backups, distinct from ``chosen``.
        considered: Offers in the snapshot.
        feasible: Offers that passed every filter.
        filtered: Filter name -> offers it removed (of those the filters before it left), in pipeline order.
        weights: The factor weights used.
        references: The typical offer the scores are relative to.
        exploration: The exploration decision.
        snapshot_now: The snapshot's time (Unix seconds).
    """

    __slots__ = ("_build", "_details", "considered", "snapshot_now", "spec", "weights")

    spec: JobSpec
    considered: int
    weights: Mapping[str, float]
    snapshot_now: float
    _details: _Details | None
    _build: Callable[[], _Details] | None

    def __init__(
        self,
        spec: JobSpec,
        chosen: tuple[Candidate, ...],
        backups: tuple[Candidate, ...],
        *,
        considered: int,
        feasible: int,
        filtered: Mapping[str, int],
        weights: Mapping[str, float],
        references: pl.References,
        exploration: Exploration,
        snapshot_now: float,
    ) -> None:
        details = _Details(chosen, backups, feasible, filtered, references, exploration)
        _init_placement(self, spec, considered, weights, snapshot_now, details, None)

    @classmethod
    def _deferred(
        cls,
        spec: JobSpec,
        considered: int,
        weights: Mapping[str, float],
        snapshot_now: float,
        build: Callable[[], _Details],
    ) -> Placement:
        """A placement whose candidates and counts are computed when first read (batch placement)."""
        placement = cls.__new__(cls)
        _init_placement(placement, spec, considered, weights, snapshot_now, None, build)
        return placement

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Placement is read-only (tried to set {name})")

    def __repr__(self) -> str:
        return (
            f"Placement(job=0x{self.spec.job_id.hex()[:12]}…, chosen={list(self.providers)}, "
            f"backups={[c.provider for c in self.backups]}, feasible={self.feasible})"
        )

    def _get(self) -> _Details:
        details: _Details | None = self._details
        if details is None:
            build = self._build
            assert build is not None
            details = build()
            object.__setattr__(self, "_details", details)
            object.__setattr__(self, "_build", None)
        return details

    @property
    def chosen(self) -> tuple[Candidate, ...]:
        """``redundancy`` distinct providers, best first."""
        return self._get().chosen

    @property
    def backups(self) -> tuple[Candidate, ...]:
        """Ranked backups, distinct from ``chosen``."""
        return self._get().backups

    @property
    def feasible(self) -> int:
        """Offers that passed every filter."""
        return self._get().feasible

    @property
    def filtered(self) -> Mapping[str, int]:
        """Filter name -> offers it removed."""
        return self._get().filtered

    @property
    def references(self) -> pl.References:
        """The typical offer the scores are relative to."""
        return self._get().references

    @property
    def exploration(self) -> Exploration:
        """The exploration decision."""
        return self._get().exploration

    @property
    def providers(self) -> tuple[Address, ...]:
        """Addresses of the chosen providers, best first (without building the candidates when they were not
        read yet)."""
        quick = getattr(self._build, "providers", None) if self._details is None else None
        if quick is not None:
            addresses: tuple[Address, ...] = quick()
            return addresses
        return tuple(c.provider for c in self.chosen)

    def explain(self) -> dict[str, Any]:
        """Everything the placement came from, JSON-able: weights, references, filter counts, the exploration
        decision, and each chosen and backup candidate's factors, scores and contributions."""
        spec = self.spec
        return {
            "job_id": "0x" + spec.job_id.hex(),
            "workload": spec.workload,
            "model": spec.model,
            "redundancy": spec.redundancy,
            "latency_target_s": spec.latency_target_s,
            "snapshot": {"now": self.snapshot_now, "offers": self.considered},
            "pipeline": {
                "filters": [f.name for f in pl.FILTERS],
                "score": ["rtt", "transfer", "queue", "compute", "price", "reliability"],
                "normalize": {
                    "time": "tau / (tau + expected_s)",
                    "price": "ref_unit_price / (ref_unit_price + unit_price)",
                    "reliability": "reliability",
                },
                "rank": "meets latency target, utility, expected_s, price, reliability, address",
            },
            "weights": dict(self.weights),
            "references": self.references.as_dict(),
            "filtered": dict(self.filtered),
            "considered": self.considered,
            "feasible": self.feasible,
            "exploration": self.exploration.as_dict(),
            "chosen": [c.as_dict() for c in self.chosen],
            "backups": [c.as_dict() for c in self.backups],
        }


def _init_placement(
    placement: Placement,
    spec: JobSpec,
    considered: int,
    weights: Mapping[str, float],
    snapshot_now: float,
    details: _Details | None,
    build: Callable[[], _Details] | None,
) -> None:
    setattr_ = object.__setattr__
    setattr_(placement, "spec", spec)
    setattr_(placement, "considered", considered)
    setattr_(placement, "weights", weights)
    setattr_(placement, "snapshot_now", snapshot_now)
    setattr_(placement, "_details", details)
    setattr_(placement, "_build", build)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Slots held for a placed job.

    Attributes:
        id: Unique id of the reservation.
        job_id: The job.
        providers: The providers holding a slot when reserved.
        expires_at: Unix seconds when the hold lapses if never released.
    """

    id: str
    job_id: bytes
    providers: tuple[Address, ...]
    expires_at: float


@dataclass(slots=True)
class _Hold:
    provider: Address
    bound_at: float | None = None


@dataclass(slots=True)
class _Held:
    reservation: Reservation
    holds: list[_Hold] = field(default_factory=list)


@dataclass(slots=True)
class _SnapshotState:
    market: MarketSnapshot
    held: NDArray[np.int32]


class MatchingEngine:
    """Places jobs on offers; deterministic for the same snapshot, reservations and arguments.

    Args:
        config: Weights and behaviour (see :class:`~proxima.marketplace.matching.spec.MatchingConfig`).
        clock: Unix seconds (reservation times and lapses).
    """

    def __init__(
        self, config: MatchingConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config if config is not None else MatchingConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._reservations: dict[str, _Held] = {}
        self._expiries: list[tuple[float, str]] = []
        self._counter = itertools.count(1)
        self._state: _SnapshotState | None = None
        self._rtt_cache: dict[tuple[int, Any], tuple[MarketSnapshot, Floats, NDArray[np.bool_]]] = {}
        self._views: dict[tuple[int, tuple[Any, ...]], _ClassView] = {}
        self._orders: dict[tuple[int, tuple[str, str]], tuple[MarketSnapshot, Rows]] = {}
        self._recent: list[MarketSnapshot] = []

    # --- placement -----------------------------------------------------------------------------------------

    def place(
        self, spec: JobSpec, snapshot: MarketSnapshot, *, exclude: Collection[Address] = ()
    ) -> Placement:
        """Place one job.

        Args:
            spec: The job.
            snapshot: The market.
            exclude: Providers not to use (failed attempts, open circuit breakers).

        Returns:
            The placement: ``spec.redundancy`` distinct chosen providers and up to ``config.backups`` backups.

        Raises:
            NoCandidateError: If fewer than ``spec.redundancy`` offers pass every filter; it names the filters
                that removed them.
        """
        job = self._context(spec, snapshot, exclude)
        view = self._class_view(spec, snapshot)
        alive, filtered = _run_filters(job, snapshot, view)
        feasible = int(np.count_nonzero(alive))
        if feasible < spec.redundancy:
            raise NoCandidateError(spec, filtered, feasible, spec.redundancy, len(snapshot))
        rows = np.flatnonzero(alive)
        refs = view.medians.for_job(float(spec.flops), pl.transfer_seconds(spec, self.config))
        ev = _evaluate(view, job, snapshot, rows, refs)

        k = spec.redundancy + self.config.backups
        order = _top(ev, np.arange(len(rows)), k)
        draw = spec.exploration_draw()
        share = self.config.exploration_share
        selected = draw < share
        newcomers_pos = np.flatnonzero(snapshot.jobs_completed[rows] < self.config.newcomer_jobs)
        explored_pos: int | None = None
        if selected and len(newcomers_pos):
            explored_pos = int(_top(ev, newcomers_pos, 1)[0])
            order = [explored_pos] + [p for p in order if p != explored_pos]
        exploration = Exploration(share, draw, selected, len(newcomers_pos), explored_pos is not None)
        picks = order[:k]
        candidates = [_candidate(snapshot, spec, rows[p], ev, p, explored=(p == explored_pos)) for p in picks]
        chosen = tuple(candidates[: spec.redundancy])
        backups = tuple(candidates[spec.redundancy :])
        return Placement(
            spec,
            chosen,
            backups,
            considered=len(snapshot),
            feasible=feasible,
            filtered=filtered,
            weights=self.config.weights.as_dict(),
            references=refs,
            exploration=exploration,
            snapshot_now=snapshot.now,
        )

    def place_batch(
        self, specs: Sequence[JobSpec], snapshot: MarketSnapshot, *, exclude: Collection[Address] = ()
    ) -> list[Placement | NoCandidateError]:
        """Place many jobs at once, sharing the providers' finite capacity (an assignment problem).

        See :mod:`proxima.marketplace.matching.batch` for the method. The placements do not reserve anything:
        call :meth:`reserve` for those that will be dispatched.

        Args:
            specs: The jobs (their job ids should be distinct).
            snapshot: The market.
            exclude: Providers not to use for any of them.

        Returns:
            One entry per job, in order: its placement, or a :class:`NoCandidateError` saying why it could not
            be placed (its hard constraints, or every feasible provider's capacity taken by other jobs).
        """
        from proxima.marketplace.matching.batch import place_batch

        return place_batch(self, specs, snapshot, exclude=exclude)

    # --- reservations --------------------------------------------------------------------------------------

    def reserve(self, placement: Placement) -> Reservation:
        """Hold one slot on each chosen provider until :meth:`unreserve` (or ``reservation_ttl_s``).

        Returns:
            The reservation.
        """
        now = self._clock()
        with self._lock:
            rid = f"{placement.spec.job_id.hex()}-{next(self._counter)}"
            reservation = Reservation(
                id=rid,
                job_id=placement.spec.job_id,
                providers=placement.providers,
                expires_at=now + self.config.reservation_ttl_s,
            )
            held = _Held(reservation, [_Hold(p) for p in placement.providers])
            self._reservations[rid] = held
            heapq.heappush(self._expiries, (reservation.expires_at, rid))
            for hold in held.holds:
                self._apply(hold, +1)
        log.debug("slots reserved", extra={"reservation": rid, "providers": list(placement.providers)})
        return reservation

    def unreserve(self, reservation: Reservation) -> None:
        """Release a reservation's holds. Releasing twice, or after it lapsed, does nothing."""
        with self._lock:
            held = self._reservations.pop(reservation.id, None)
            if held is None:
                return
            for hold in held.holds:
                self._apply(hold, -1)
        log.debug("slots released", extra={"reservation": reservation.id})

    def bind(self, reservation: Reservation, provider: Address) -> None:
        """Record that the job was sent to ``provider``.

        If ``provider`` holds an unbound slot of the reservation, that hold is bound; otherwise (a failover to
        a backup) the first unbound hold moves to ``provider``, or a new hold is added. A bound hold keeps
        counting until the provider publishes an offer signed after the bind.

        Raises:
            ReservationError: If the reservation was released or lapsed.
        """
        now = self._clock()
        with self._lock:
            self._expire(now)
            held = self._reservations.get(reservation.id)
            if held is None:
                raise ReservationError(f"reservation {reservation.id} was released or lapsed")
            target = next((h for h in held.holds if h.provider == provider and h.bound_at is None), None)
            if target is None:
                target = next((h for h in held.holds if h.bound_at is None), None)
                if target is not None:
                    self._apply(target, -1)
                    target.provider = provider
                else:
                    target = _Hold(provider)
                    held.holds.append(target)
                target.bound_at = now
                self._apply(target, +1)
            else:
                self._apply(target, -1)
                target.bound_at = now
                self._apply(target, +1)

    def held(self, snapshot: MarketSnapshot) -> NDArray[np.int32]:
        """Slots this engine holds on each row of ``snapshot`` (read-only)."""
        with self._lock:
            self._expire(self._clock())
            return self._held_for(snapshot)

    @property
    def reservations(self) -> tuple[Reservation, ...]:
        """Active reservations."""
        with self._lock:
            return tuple(h.reservation for h in self._reservations.values())

    # --- internals -----------------------------------------------------------------------------------------

    def _context(
        self, spec: JobSpec, snapshot: MarketSnapshot, exclude: Collection[Address]
    ) -> pl.JobContext:
        with self._lock:
            self._expire(self._clock())
            held = self._held_for(snapshot)
        if exclude:
            index = snapshot.index
            rows = sorted({r for a in exclude if (r := index.get(a)) is not None})
            excluded = np.asarray(rows, dtype=np.intp)
        else:
            excluded = np.zeros(0, dtype=np.intp)
        return pl.JobContext(spec=spec, config=self.config, held=held, exclude=excluded)

    def _held_for(self, snapshot: MarketSnapshot) -> NDArray[np.int32]:
        state = self._state
        if state is None or state.market is not snapshot:
            held = np.zeros(len(snapshot), dtype=np.int32)
            for h in self._reservations.values():
                for hold in h.holds:
                    row = snapshot.index.get(hold.provider)
                    if row is not None and _counts(hold, snapshot, row):
                        held[row] += 1
            held.setflags(write=False)
            state = _SnapshotState(snapshot, held)
            self._state = state
        return state.held

    def _apply(self, hold: _Hold, delta: int) -> None:
        state = self._state
        if state is None:
            return
        row = state.market.index.get(hold.provider)
        if row is None or not _counts(hold, state.market, row):
            return
        held = state.held.copy()  # placements running elsewhere may still read the old array
        held[row] = max(int(held[row]) + delta, 0)
        held.setflags(write=False)
        state.held = held

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, rid = heapq.heappop(self._expiries)
            held = self._reservations.pop(rid, None)
            if held is not None:
                for hold in held.holds:
                    self._apply(hold, -1)
                log.info("reservation lapsed", extra={"reservation": rid})

    def _class_view(self, spec: JobSpec, snapshot: MarketSnapshot) -> _ClassView:
        """The class filters' masks, RTTs and reference medians of ``spec``'s class (cached per snapshot)."""
        key = (id(snapshot), spec.class_key())
        with self._lock:
            view = self._views.get(key)
        if view is not None and view.market is snapshot:
            return view
        config = self.config
        job = pl.JobContext(
            spec=spec, config=config, held=np.zeros(len(snapshot), dtype=np.int32), exclude=_NO_ROWS
        )
        static = {f.name: f.keep(job, snapshot) for f in pl.FILTERS if f.reference}
        reference = np.ones(len(snapshot), dtype=bool)
        for keep in static.values():
            if keep is not None:
                reference &= keep
        rtt, measured = self._rtts(snapshot, spec)
        column = snapshot.workloads.get(spec.workload)
        unit_price = column.unit_price_f if column is not None else np.full(len(snapshot), np.inf)
        ref_rows = np.flatnonzero(reference)
        # References describe the offers as published (without this engine's holds), so they stay put for
        # the snapshot's lifetime.
        queue = pl.queue_seconds(snapshot, config, job.held, ref_rows)
        medians = pl.medians(rtt[ref_rows], queue, snapshot.throughput[ref_rows], unit_price[ref_rows])
        view = _ClassView(
            market=snapshot,
            static=static,
            rtt=rtt,
            measured=measured,
            medians=medians,
            unit_price=unit_price,
            price_score=pl.price_score(unit_price, medians.unit_price_wei),
        )
        with self._lock:
            self._remember(snapshot)
            if len(self._views) >= _VIEW_CACHE_SIZE:
                self._views.pop(next(iter(self._views)))
            self._views[key] = view
        return view

    def _price_order(self, workload: str, snapshot: MarketSnapshot) -> Rows:
        """Every row by the workload's exact unit price, then address (cached per snapshot)."""
        key = (id(snapshot), ("price order", workload))
        with self._lock:
            hit = self._orders.get(key)
        if hit is not None and hit[0] is snapshot:
            return hit[1]
        column = snapshot.workloads[workload]
        if column.big_prices:  # prices beyond int64 (absurd offers): sort their exact values in Python
            exact = [column.exact_price(r) for r in range(len(snapshot))]
            order = np.asarray(sorted(range(len(snapshot)), key=lambda r: (exact[r], r)), dtype=np.intp)
        else:
            order = np.argsort(column.unit_price, kind="stable")
        order.setflags(write=False)
        with self._lock:
            self._remember(snapshot)
            if len(self._orders) >= _RTT_CACHE_SIZE:
                self._orders.pop(next(iter(self._orders)))
            self._orders[key] = (snapshot, order)
        return order

    def _remember(self, snapshot: MarketSnapshot) -> None:
        """Keep derived data of the last :data:`_SNAPSHOTS_KEPT` snapshots only (call with the lock held),
        so that a gateway rebuilding its snapshot every few seconds does not keep old ones alive."""
        if any(s is snapshot for s in self._recent):
            return
        self._recent.append(snapshot)
        if len(self._recent) <= _SNAPSHOTS_KEPT:
            return
        old = id(self._recent.pop(0))
        for cache in (self._views, self._orders, self._rtt_cache):
            for key in [k for k in cache if k[0] == old]:
                del cache[key]

    def _rtts(self, snapshot: MarketSnapshot, spec: JobSpec) -> tuple[Floats, NDArray[np.bool_]]:
        coordinate = spec.client_coordinate
        key = (id(snapshot), None if coordinate is None else (coordinate.vector, coordinate.height))
        with self._lock:
            hit = self._rtt_cache.get(key)
        if hit is not None and hit[0] is snapshot:
            return hit[1], hit[2]
        rtt, measured = pl.rtt_seconds(snapshot, coordinate, self.config.default_rtt_s)
        rtt.setflags(write=False)
        with self._lock:
            self._remember(snapshot)
            if len(self._rtt_cache) >= _RTT_CACHE_SIZE:
                self._rtt_cache.pop(next(iter(self._rtt_cache)))
            self._rtt_cache[key] = (snapshot, rtt, measured)
        return rtt, measured


def _counts(hold: _Hold, snapshot: MarketSnapshot, row: int) -> bool:
    # An unbound hold always counts; a bound one until the provider's offer was signed after the bind.
    return hold.bound_at is None or int(snapshot.issued_at[row]) <= hold.bound_at


@dataclass(frozen=True, slots=True)
class _ClassView:
    """What one job class needs from a snapshot, computed once: the class filters' masks (None: keeps all),
    RTTs, reference medians and price scores (full length)."""

    market: MarketSnapshot
    static: Mapping[str, NDArray[np.bool_] | None]
    rtt: Floats
    measured: NDArray[np.bool_]
    medians: pl.Medians
    unit_price: Floats
    price_score: Floats


def _run_filters(
    job: pl.JobContext, snapshot: MarketSnapshot, view: _ClassView
) -> tuple[NDArray[np.bool_], dict[str, int]]:
    alive = np.ones(len(snapshot), dtype=bool)
    left = len(snapshot)
    filtered: dict[str, int] = {}
    for plugin in pl.FILTERS:
        keep = view.static[plugin.name] if plugin.reference else plugin.keep(job, snapshot)
        if keep is None:
            filtered[plugin.name] = 0
            continue
        alive &= keep
        now_left = int(np.count_nonzero(alive))
        filtered[plugin.name] = left - now_left
        left = now_left
    return alive, filtered


@dataclass(frozen=True, slots=True)
class _Evaluated:
    """Per-candidate values of the feasible rows (positions index these arrays, or lists)."""

    utility: _Values
    expected: _Values
    price: _Values
    reliability: _Values
    meets: _Values | None
    rtt: _Values
    measured: _Values
    transfer: float
    queue: _Values
    compute: _Values
    throughput: _Values
    time_score: _Values
    price_score: _Values
    weights: tuple[float, float, float]


def _evaluate(
    view: _ClassView, job: pl.JobContext, snapshot: MarketSnapshot, rows: Rows, refs: pl.References
) -> _Evaluated:
    spec, config = job.spec, job.config
    rtt = view.rtt[rows]
    queue = pl.queue_seconds(snapshot, config, job.held, rows)
    throughput = snapshot.throughput[rows]
    compute = pl.compute_seconds(float(spec.flops), throughput)
    transfer = pl.transfer_seconds(spec, config)
    expected = pl.expected_seconds(rtt, transfer, queue, compute)
    reliability = pl.reliability(snapshot, rows)
    scores = pl.Scores(
        time=pl.time_score(expected, refs.time_s), price=view.price_score[rows], reliability=reliability
    )
    w = config.weights
    utility = pl.weigh(scores, w)
    meets = None if spec.latency_target_s is None else expected <= spec.latency_target_s
    return _Evaluated(
        utility=utility,
        expected=expected,
        price=view.unit_price[rows],
        reliability=reliability,
        meets=meets,
        rtt=rtt,
        measured=view.measured[rows],
        transfer=transfer,
        queue=queue,
        compute=compute,
        throughput=throughput,
        time_score=scores.time,
        price_score=scores.price,
        weights=(w.time, w.price, w.reliability),
    )


def _top(ev: _Evaluated, pool: Rows, k: int) -> list[int]:
    """The best ``k`` positions of ``pool``: meeting the target first, then utility, expected time, price,
    reliability, and position (= address order)."""
    if ev.meets is not None:
        meet = pool[ev.meets[pool]]
        best = _top_by_utility(ev, meet, k)
        if len(best) < k:
            best += _top_by_utility(ev, pool[~ev.meets[pool]], k - len(best))
        return best
    return _top_by_utility(ev, pool, k)


def _top_by_utility(ev: _Evaluated, pool: Rows, k: int) -> list[int]:
    if k <= 0 or len(pool) == 0:
        return []
    utility = ev.utility[pool]
    if len(pool) > k:
        kth = np.partition(utility, len(pool) - k)[len(pool) - k]
        pool = pool[utility >= kth]  # every row tied with the k-th stays, so ties break below
        utility = ev.utility[pool]
    order = np.lexsort((pool, -ev.reliability[pool], ev.price[pool], ev.expected[pool], -utility))
    return [int(p) for p in pool[order[:k]]]


def _candidate(
    snapshot: MarketSnapshot, spec: JobSpec, row: int, ev: _Evaluated, p: int, *, explored: bool
) -> Candidate:
    wt, wp, wr = ev.weights
    time_s, price_s, rel = float(ev.time_score[p]), float(ev.price_score[p]), float(ev.reliability[p])
    column = snapshot.workloads[spec.workload]
    return Candidate(
        provider=snapshot.addresses[row],
        peer_id=snapshot.peer_ids[row],
        addrs=snapshot.addrs[row],
        region=snapshot.region_names[snapshot.region_codes[row]],
        country=snapshot.country_names[snapshot.country_codes[row]],
        price_wei=spec.units * column.exact_price(row),
        utility=float(ev.utility[p]),
        expected_s=float(ev.expected[p]),
        rtt_s=float(ev.rtt[p]),
        transfer_s=ev.transfer,
        queue_s=float(ev.queue[p]),
        compute_s=float(ev.compute[p]),
        rtt_measured=bool(ev.measured[p]),
        reliability=rel,
        throughput_flops=float(ev.throughput[p]),
        scores={"time": time_s, "price": price_s, "reliability": rel},
        contributions={"time": wt * time_s, "price": wp * price_s, "reliability": wr * rel},
        meets_target=None if ev.meets is None else bool(ev.meets[p]),
        explored=explored,
    )
