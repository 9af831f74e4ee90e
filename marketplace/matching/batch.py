"""Batch placement: many jobs at once onto providers with finite capacity, as an assignment problem.

The objective is the one a single placement maximizes, summed over the batch: every copy of every job goes to
a distinct provider among those that pass the job's filters, no provider gets more copies than its capacity
(free slots, plus the configured queue allowance, minus the engine's holds), and the total utility is as high
as the method below finds. Candidates expected to meet a job's latency target carry a bonus larger than any
utility, so a job misses its target only when its window cannot give it a provider that meets it.

Method (vectorized numpy and scipy's ``linear_sum_assignment``; no loop that places one job at a time):

1. **Classes.** Jobs are grouped by :meth:`~proxima.marketplace.matching.spec.JobSpec.class_key` (everything
   but size and price limits). Each class uses the engine's cached class view: filter masks over all offers,
   RTTs, reference medians and price scores, computed once per snapshot. Its offers that pass the class
   filters are sorted by unit price, so each job's price and budget limits select a prefix (``searchsorted``)
   and prefix sums give every job its exact per-filter counts and feasible count without visiting all offers
   per job.
2. **Types and shortlists.** Within a class, jobs with and without a latency target are kept apart, split
   into at most two groups of neighbouring price limits and then into size groups (sorted by FLOP and
   transfer bytes, one group per 256 jobs, at most 8). Each group is a *type*: it ranks its feasible offers
   once, with the exact utility of its median-sized job (and that job's target), and keeps a shortlist of
   twice its copies plus ``batch_candidates`` plus the backups. *Approximation:* which offers a job may get
   comes from its type's ranking; the utilities the assignment maximizes are each job's own, and every job
   may take any candidate of its class in its window that fits its own price limits.
3. **Windows.** Types are taken in order of scarcity (fewest feasible offers first), each type's jobs
   together in input order, in windows of ``batch_window`` jobs. A window's columns are, per type in it,
   the first shortlisted offers that still have capacity (its copies in the window plus
   ``batch_candidates``, and newcomers for jobs that explore), each expanded into as many slots as it has
   capacity left (at most the window's copies); rows are the window's job copies; the cost is minus the
   job's utility (plus the target bonus). ``linear_sum_assignment`` solves it exactly (skipped when every
   copy's best column has room: that is already optimal). The copies of a redundant job get disjoint shares
   of the columns (copy ``c`` of ``r`` the job's ``c``-th, ``c + r``-th... best), so they land on distinct
   providers. *Approximation:* each window is optimal given the windows before it, not the whole batch
   jointly. A shortlist that runs out of offers with capacity is ranked again, longer, from all feasible
   offers that still have some.
4. **Retry and errors.** A job that got fewer copies than its redundancy takes nothing and is tried once
   more after all windows (explored jobs then without the newcomer restriction, types then ranked within
   their tightest price limit). Jobs that still cannot be placed, and jobs that no offer could serve, get a
   :class:`~proxima.marketplace.matching.engine.NoCandidateError` in their position; its ``capacity`` count
   includes the capacity the batch itself used up.

An explored job's first copy is restricted to newcomers when it has feasible ones, as in
:meth:`~proxima.marketplace.matching.engine.MatchingEngine.place`. Backups are the best of the head of the
job's type shortlist that were not chosen for it, ranked with the job's own utility. Exact ties are broken
as a single placement breaks them (rank order), so a batch of one job gets the same chosen providers and
backups as :meth:`~proxima.marketplace.matching.engine.MatchingEngine.place`. Candidates, counts and
explanations are built when a placement is first read.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from proxima.marketplace.matching import plugins as pl
from proxima.marketplace.matching.engine import (
    Exploration,
    MatchingEngine,
    NoCandidateError,
    Placement,
    _candidate,
    _Details,
    _Evaluated,
)
from proxima.marketplace.matching.snapshot import PRICE_SATURATED, MarketSnapshot
from proxima.marketplace.matching.spec import JobSpec, exploration_draws
from proxima.sdk.types import Address

__all__ = ["place_batch"]

_BIG: Final = 1e12
"""Cost of an infeasible pair (finite, as the solver needs)."""

_TIE: Final = 1e-12
"""Cost per rank position among a type's candidates: exact ties resolve in rank order (as a single placement
breaks them: expected time, price, reliability, address), not in solver order."""

_NEWCOMER_MARGIN: Final = 4
"""Newcomer candidates per window beyond one per exploring job."""

_REBUILD_MARGIN: Final = 4
"""A type's shortlist is ranked again when fewer than its window's copies plus this many have capacity."""

_PRICE_GROUPS: Final = 2
"""Most groups of neighbouring price limits per class and latency target."""

_SIZE_GROUPS: Final = 8
"""Most size groups per price group."""

_JOBS_PER_SIZE_GROUP: Final = 256
"""A size group per this many jobs (so small batches rank once per price group)."""

_CLASS_FILTERS: Final = ("workload", "hardware", "throughput", "residency")
_FILTER_NAMES: Final = tuple(f.name for f in pl.FILTERS)

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Rows = NDArray[np.intp]
Mask = NDArray[np.bool_]


def _cumsum(mask: Mask) -> Ints:
    out = np.zeros(len(mask) + 1, dtype=np.int64)
    np.cumsum(mask, out=out[1:])
    return out


@dataclass(slots=True)
class _Class:
    """One job class: its filter results and factors over the whole market."""

    head_counts: tuple[int, int, int, int]  # removed by workload, hardware, throughput, residency
    sorted_rows: Rows  # rows passing those filters, by unit price (exact) then address
    sorted_prices: Ints
    has_big: bool
    rel_ok: Mask  # per sorted row
    exc_ok: Mask
    cum_rel_fail: Ints
    cum_cap_fail: Ints
    cum_exc_fail: Ints
    cum_alive: Ints
    cum_newcomers: Ints
    alive_rows: Rows  # feasible rows in price order: a job's feasible rows are a prefix
    medians: pl.Medians
    rtt: Floats  # full length
    measured: Mask
    price_score: Floats
    unit_price: Floats
    alive_pos: Ints  # row -> index in alive_rows (n: not feasible)
    alive_newcomer: Mask  # per alive row
    a_rtt: Floats  # factors per alive row (price order), for ranking
    a_queue: Floats
    a_throughput: Floats
    a_price_score: Floats
    a_reliability: Floats
    a_unit_price: Floats


@dataclass(slots=True)
class _Type:
    """Jobs of one class with the same price prefix, target and size bucket."""

    cls: int
    prefix: int  # feasible rows: alive_rows[:prefix]
    newcomer_prefix: int
    has_target: bool
    jobs: Ints
    rep: int
    copies: int
    explores: bool
    length: int = 0
    ranked_once: bool = False
    shortlist: Rows = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    ptr: int = 0
    complete: bool = False
    newcomers: Rows = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    nptr: int = 0
    ncomplete: bool = False


class _Batch:
    def __init__(
        self,
        engine: MatchingEngine,
        specs: list[JobSpec],
        snapshot: MarketSnapshot,
        exclude: Collection[Address],
    ) -> None:
        self.engine = engine
        self.config = config = engine.config
        self.specs = specs
        self.market = snapshot
        context = engine._context(specs[0], snapshot, exclude)
        self.held = context.held
        self.exclude = context.exclude
        n = self.n = len(snapshot)
        self.start_capacity = pl.capacity(snapshot, config, self.held)
        self.remaining = self.start_capacity.copy()
        self.consumed = False  # some capacity was assigned
        self.queue = pl.queue_seconds(snapshot, config, self.held, np.arange(n))
        self.newcomer = snapshot.jobs_completed < config.newcomer_jobs
        self.not_excluded = np.ones(n, dtype=bool)
        self.not_excluded[self.exclude] = False
        self.bonus = config.weight_sum + 1.0
        self.weights = config.weights.as_dict()
        self.classes: list[_Class] = []
        self.types: list[_Type] = []
        count = len(specs)
        self.type_of = np.full(count, -1, dtype=np.int64)
        self.type_pos = np.full(count, -1, dtype=np.int64)  # index of each job within its type's jobs
        self.chosen = np.full((count, max(s.redundancy for s in specs)), -1, dtype=np.intp)
        self.failed: dict[int, bool] = {}  # job -> final (capacity as left by the batch) or not
        self.details: dict[int, tuple[Rows, _Eval, _Eval]] = {}

    # --- classes and jobs ----------------------------------------------------------------------------------

    def build(self) -> None:
        specs, config = self.specs, self.config
        count = len(specs)
        keys: dict[tuple[object, ...], int] = {}
        classes: list[int] = []
        top = PRICE_SATURATED - 1
        cap_exact: list[int | None] = []
        all_exact: list[int | None] = []
        for s in specs:
            key = s.class_key()
            c = keys.get(key)
            if c is None:
                c = keys[key] = len(self.classes)
                self.classes.append(self._class(s))
            classes.append(c)
            units = s.units
            by_cap = None if s.max_price_wei is None else s.max_price_wei // units
            if s.budget_wei is not None:
                by_budget = s.budget_wei // (s.redundancy * units)
                cap_exact.append(by_cap)
                all_exact.append(by_budget if by_cap is None else min(by_cap, by_budget))
            else:
                cap_exact.append(by_cap)
                all_exact.append(by_cap)
        cls = np.array(classes, dtype=np.int64)
        flops = np.array([float(s.flops) for s in specs])
        transfer_bytes = np.array([float(s.input_bytes + s.output_bytes) for s in specs])
        target = np.array([math.nan if s.latency_target_s is None else s.latency_target_s for s in specs])
        redundancy = np.array([s.redundancy for s in specs], dtype=np.int64)
        cap_limit = np.array([top if x is None or x > top else x for x in cap_exact], dtype=np.int64)
        all_limit = np.array([top if x is None or x > top else x for x in all_exact], dtype=np.int64)
        self.cls = cls
        self.flops = flops
        self.transfer = 8.0 * transfer_bytes / config.link_bandwidth_bps
        self.transfer_bytes = transfer_bytes
        self.target = target
        self.redundancy = redundancy
        self.draw = draw = exploration_draws([s.job_id for s in specs])
        self.explore = draw < config.exploration_share
        price_ok = np.empty(count, dtype=np.int64)
        prefix = np.empty(count, dtype=np.int64)
        tau = np.empty(count)
        feasible = np.empty(count, dtype=np.int64)
        newcomers = np.empty(count, dtype=np.int64)
        for c, klass in enumerate(self.classes):
            members = np.flatnonzero(cls == c)
            price_ok[members] = np.searchsorted(klass.sorted_prices, cap_limit[members], side="right")
            prefix[members] = np.searchsorted(klass.sorted_prices, all_limit[members], side="right")
            if klass.has_big:  # prices beyond int64 in this class: exact integers (absurd offers only)
                exact = [
                    self.market.workloads[specs[int(members[0])].workload].exact_price(int(r))
                    for r in klass.sorted_rows
                ]
                for j in members.tolist():
                    price_ok[j] = _count_at_most(exact, cap_exact[j])
                    prefix[j] = _count_at_most(exact, all_exact[j])
            tau[members] = pl.time_reference(klass.medians, flops[members], self.transfer[members])
            feasible[members] = klass.cum_alive[prefix[members]]
            newcomers[members] = klass.cum_newcomers[prefix[members]]
        self.price_ok, self.prefix, self.tau = price_ok, prefix, tau
        self.feasible, self.newcomers = feasible, newcomers

    def _class(self, rep: JobSpec) -> _Class:
        market, n = self.market, self.n
        view = self.engine._class_view(rep, market)
        head = np.ones(n, dtype=bool)
        left = n
        counts = []
        for name in _CLASS_FILTERS:
            keep = view.static[name]
            if keep is not None:
                head &= keep
            now_left = int(np.count_nonzero(head))
            counts.append(left - now_left)
            left = now_left
        rel = view.static["reliability"]
        column = market.workloads.get(rep.workload)
        if column is None:
            rows = np.zeros(0, dtype=np.intp)
            prices = np.zeros(0, dtype=np.int64)
            has_big = False
        else:
            by_price = self.engine._price_order(rep.workload, market)  # every row, by exact unit price
            rows = by_price[head[by_price]]
            prices = column.unit_price[rows]
            has_big = bool(column.big_prices) and bool((prices >= PRICE_SATURATED).any())
        rel_ok = np.ones(len(rows), dtype=bool) if rel is None else rel[rows]
        cap_ok = self.start_capacity[rows] > 0
        exc_ok = self.not_excluded[rows]
        alive = rel_ok & cap_ok & exc_ok
        newcomer = alive & self.newcomer[rows]
        alive_rows = rows[alive]
        alive_pos = np.full(n, n, dtype=np.int64)
        alive_pos[alive_rows] = np.arange(len(alive_rows))
        return _Class(
            head_counts=(counts[0], counts[1], counts[2], counts[3]),
            sorted_rows=rows,
            sorted_prices=prices,
            has_big=has_big,
            rel_ok=rel_ok,
            exc_ok=exc_ok,
            cum_rel_fail=_cumsum(~rel_ok),
            cum_cap_fail=_cumsum(rel_ok & ~cap_ok),
            cum_exc_fail=_cumsum(rel_ok & cap_ok & ~exc_ok),
            cum_alive=_cumsum(alive),
            cum_newcomers=_cumsum(newcomer),
            alive_rows=alive_rows,
            medians=view.medians,
            rtt=view.rtt,
            measured=view.measured,
            price_score=view.price_score,
            unit_price=view.unit_price,
            alive_pos=alive_pos,
            alive_newcomer=self.newcomer[alive_rows],
            a_rtt=view.rtt[alive_rows],
            a_queue=self.queue[alive_rows],
            a_throughput=market.throughput[alive_rows],
            a_price_score=view.price_score[alive_rows],
            a_reliability=market.reliability[alive_rows],
            a_unit_price=view.unit_price[alive_rows],
        )

    def filtered(self, j: int, *, final: bool) -> tuple[dict[str, int], int]:
        """Per-filter removal counts of job ``j`` and its feasible count (``final``: capacity as the batch
        it)."""
        klass = self.classes[int(self.cls[j])]
        w, h, t, r = klass.head_counts
        n4 = len(klass.sorted_rows)
        a, b = int(self.price_ok[j]), int(self.prefix[j])
        if final:
            rows = klass.sorted_rows[:b]
            rel_ok, exc_ok = klass.rel_ok[:b], klass.exc_ok[:b]
            cap_ok = self.remaining[rows] > 0
            rel_f = int(np.count_nonzero(~rel_ok))
            cap_f = int(np.count_nonzero(rel_ok & ~cap_ok))
            exc_f = int(np.count_nonzero(rel_ok & cap_ok & ~exc_ok))
            feasible = int(np.count_nonzero(rel_ok & cap_ok & exc_ok))
        else:
            rel_f, cap_f = int(klass.cum_rel_fail[b]), int(klass.cum_cap_fail[b])
            exc_f, feasible = int(klass.cum_exc_fail[b]), int(klass.cum_alive[b])
        values = (w, h, t, r, n4 - a, a - b, rel_f, cap_f, exc_f)
        return dict(zip(_FILTER_NAMES, values, strict=True)), feasible

    # --- types and shortlists ------------------------------------------------------------------------------

    def build_types(self, jobs: Ints, *, conservative: bool = False) -> None:
        """Group ``jobs`` into types and rank each type's shortlist.

        Within a class, jobs with and without a latency target are apart; each part is split into at most
        :data:`_PRICE_GROUPS` groups of neighbouring price limits, and each of those into size groups (sorted
        by FLOP then transfer bytes; one per :data:`_JOBS_PER_SIZE_GROUP` jobs, at most :data:`_SIZE_GROUPS`).
        A type ranks the offers its loosest price limit allows (``conservative``: its tightest, so that every
        member can use every candidate) for its median-sized job, with that job's latency target.
        """
        if len(jobs) == 0:
            return
        # jobs with and without a latency target apart (a type ranks with its median job's target)
        outer_of = 2 * self.cls[jobs] + np.isnan(self.target[jobs])
        # one sort puts each (class, has target) group's jobs by price limit, then size, then input order
        order = np.lexsort((jobs, self.transfer_bytes[jobs], self.flops[jobs], self.feasible[jobs], outer_of))
        jobs, outer_of = jobs[order], outer_of[order]
        bounds = np.flatnonzero(np.diff(outer_of)) + 1
        for group in np.split(jobs, bounds):
            feasible = self.feasible[group]
            limits = np.unique(feasible)
            for chunk in np.array_split(limits, min(len(limits), _PRICE_GROUPS)):
                members = group[(feasible >= chunk[0]) & (feasible <= chunk[-1])]
                by_size = members[np.lexsort((members, self.transfer_bytes[members], self.flops[members]))]
                count = min(_SIZE_GROUPS, max(1, len(by_size) // _JOBS_PER_SIZE_GROUP))
                for part in np.array_split(by_size, count):
                    self.add_type(np.sort(part), conservative=conservative)

    def add_type(self, jobs: Ints, *, conservative: bool) -> None:
        t = len(self.types)
        self.type_of[jobs] = t
        self.type_pos[jobs] = np.arange(len(jobs))
        j0 = int(jobs[0])
        by_size = jobs[np.lexsort((jobs, self.transfer_bytes[jobs], self.flops[jobs]))]
        klass = self.classes[int(self.cls[j0])]
        prefix = int(self.prefix[jobs].min() if conservative else self.prefix[jobs].max())
        copies = int(self.redundancy[jobs].sum())
        kind = _Type(
            cls=int(self.cls[j0]),
            prefix=int(klass.cum_alive[prefix]),
            newcomer_prefix=int(klass.cum_newcomers[prefix]),
            has_target=not math.isnan(self.target[j0]),
            jobs=jobs,
            rep=int(by_size[len(by_size) // 2]),
            copies=copies,
            explores=bool((self.explore[jobs] & (self.newcomers[jobs] > 0)).any()),
            length=2 * copies + self.config.batch_candidates + self.config.backups,
        )
        self.types.append(kind)
        self.rank_shortlist(kind)

    def rank_shortlist(self, kind: _Type) -> None:
        """(Re)build the type's shortlist from its feasible rows that still have capacity."""
        klass = self.classes[kind.cls]
        feasible = klass.alive_rows[: kind.prefix]
        fresh = not self.consumed and not kind.ranked_once  # every feasible row still has capacity
        select: slice | Rows = (
            slice(0, kind.prefix) if fresh else np.flatnonzero(self.remaining[feasible] > 0)
        )
        count = kind.prefix if fresh else len(select)  # type: ignore[arg-type]
        kind.ranked_once = True
        kind.shortlist = self.ranked(kind.rep, kind.cls, select, kind.length)
        kind.ptr = 0
        kind.complete = count <= kind.length
        if kind.explores:
            newcomer = klass.alive_newcomer[: kind.prefix]
            nselect = np.flatnonzero(newcomer & (self.remaining[feasible] > 0))
            nlength = kind.copies + self.config.batch_candidates
            kind.newcomers = self.ranked(kind.rep, kind.cls, nselect, nlength)
            kind.nptr = 0
            kind.ncomplete = len(nselect) <= nlength

    def ranked(self, rep: int, c: int, select: slice | Rows, length: int) -> Rows:
        """The best ``length`` of a class's feasible rows (``select`` indexes them, in price order) for job
        ``rep``, in rank order. Same arithmetic as :meth:`values`, on the class's precomputed columns."""
        klass = self.classes[c]
        rows = klass.alive_rows[select]
        if len(rows) == 0:
            return rows
        throughput = klass.a_throughput[select]
        flops = self.flops[rep]
        compute = flops / throughput if flops > 0 else np.zeros(len(rows))
        expected = klass.a_rtt[select] + self.transfer[rep] + klass.a_queue[select] + compute
        time_score = pl.time_score(expected, float(self.tau[rep]))
        reliability = klass.a_reliability[select]
        scores = pl.Scores(time_score, klass.a_price_score[select], reliability)
        utility = pl.weigh(scores, self.config.weights)
        target = self.target[rep]
        meets = expected <= target if target == target else np.zeros(len(rows), dtype=bool)
        keyed = utility + self.bonus * meets if target == target else utility
        price = klass.a_unit_price[select]
        if len(rows) > length:
            kth = np.partition(keyed, len(rows) - length)[len(rows) - length]
            keep = keyed >= kth  # ties with the cut stay; the sort below decides
            rows, utility, expected = rows[keep], utility[keep], expected[keep]
            meets, price, reliability = meets[keep], price[keep], reliability[keep]
        order = np.lexsort((rows, -reliability, price, expected, -utility, ~meets))
        ranked: Rows = rows[order[:length]]
        return ranked

    def live(self, kind: _Type, need: int, minimum: int, *, newcomers: bool = False) -> Rows:
        """Up to ``need`` of the first shortlisted rows that still have capacity; the shortlist is ranked
        again (longer) once if fewer than ``minimum`` are left and it did not hold every feasible row."""
        for attempt in range(2):
            rows = kind.newcomers if newcomers else kind.shortlist
            start = kind.nptr if newcomers else kind.ptr
            ok = np.flatnonzero(self.remaining[rows[start:]] > 0)
            if len(ok):  # rows before the first with capacity never get capacity back
                start += int(ok[0])
                ok -= ok[0]
                if newcomers:
                    kind.nptr = start
                else:
                    kind.ptr = start
            picked: Rows = rows[start:][ok[:need]]
            complete = kind.ncomplete if newcomers else kind.complete
            if len(picked) >= minimum or complete or attempt == 1:
                return picked
            kind.length *= 2
            self.rank_shortlist(kind)
        raise AssertionError("unreachable")

    # --- evaluation ----------------------------------------------------------------------------------------

    def values(self, jobs: Ints, rows: Rows) -> tuple[Floats, Floats, Floats]:
        """``(utility + target bonus, utility, expected_s)`` of jobs (shape (J,), one class) on rows (shape
        (J, L) or (1, L)); the same arithmetic as a single placement."""
        klass = self.classes[int(self.cls[jobs[0]])]
        market = self.market
        flops = self.flops[jobs][:, None]
        throughput = market.throughput[rows]
        compute = _compute(flops, throughput)
        expected = klass.rtt[rows] + self.transfer[jobs][:, None] + self.queue[rows] + compute
        time_score = pl.time_score(expected, self.tau[jobs][:, None])
        utility = pl.weigh(
            pl.Scores(time_score, klass.price_score[rows], market.reliability[rows]), self.config.weights
        )
        target = self.target[jobs][:, None]
        if np.isnan(target).all():
            return utility, utility, expected
        return utility + self.bonus * (expected <= target), utility, expected

    def evaluate(self, jobs: Ints, rows: Rows) -> _Eval:
        """Every factor of jobs on rows (for the placements' candidates)."""
        klass = self.classes[int(self.cls[jobs[0]])]
        market = self.market
        flops = self.flops[jobs][:, None]
        throughput = market.throughput[rows]
        compute = _compute(flops, throughput)
        rtt = klass.rtt[rows]
        queue = self.queue[rows]
        transfer = self.transfer[jobs][:, None]
        expected = rtt + transfer + queue + compute
        time_score = pl.time_score(expected, self.tau[jobs][:, None])
        price_score = klass.price_score[rows]
        rel = market.reliability[rows]
        utility = pl.weigh(pl.Scores(time_score, price_score, rel), self.config.weights)
        target = self.target[jobs][:, None]
        meets = None if np.isnan(target).all() else expected <= target
        return _Eval(
            utility,
            meets,
            expected,
            klass.unit_price[rows],
            rel,
            rtt,
            klass.measured[rows],
            transfer[:, 0],
            queue,
            compute,
            throughput,
            time_score,
            price_score,
        )

    # --- assignment ----------------------------------------------------------------------------------------

    def solve(self, window: Ints) -> Ints:
        """Assign the window's jobs; returns those that did not get all their copies."""
        red = self.redundancy[window]
        types = self.type_of[window]
        if types[0] == types[-1] and (types == types[0]).all() and red.max() == 1:
            return self.solve_simple(window, self.types[int(types[0])])
        copy_job = np.repeat(window, red)
        copy_first = np.ones(len(copy_job), dtype=bool)
        copy_first[1:] = copy_job[1:] != copy_job[:-1]
        type_w = self.type_of[window]
        candidate = self.config.batch_candidates
        by_class: dict[int, list[Rows]] = {}
        for t in np.unique(type_w).tolist():
            kind = self.types[t]
            members = window[type_w == t]
            copies = int(self.redundancy[members].sum())
            parts = by_class.setdefault(kind.cls, [])
            parts.append(self.live(kind, copies + candidate, copies + min(candidate, _REBUILD_MARGIN)))
            explorers = int(np.count_nonzero(self.explore[members] & (self.newcomers[members] > 0)))
            if kind.explores and explorers:
                parts.append(self.live(kind, explorers + _NEWCOMER_MARGIN, explorers, newcomers=True))
        blocks: list[tuple[Rows, Rows, Floats]] = []
        copy_cls = self.cls[copy_job]
        for c, parts in by_class.items():
            joined = np.concatenate(parts)
            _, first = np.unique(joined, return_index=True)
            rows = joined[np.sort(first)]  # rank order of the types' lists, without repeats
            if len(rows) == 0:
                continue
            members = window[self.cls[window] == c]
            value = self.values(members, np.broadcast_to(rows, (len(members), len(rows))))[0]
            # every job may take any of its class's window candidates that fits its price limits
            fits = self.classes[c].alive_pos[rows][None, :] < self.feasible[members][:, None]
            value = np.where(fits, value - _TIE * np.arange(len(rows)), -np.inf)
            local = np.repeat(np.arange(len(members)), self.redundancy[members])
            blocks.append((np.flatnonzero(copy_cls == c), rows, value[local]))
        if not blocks:
            return window
        cols = np.unique(np.concatenate([rows for _, rows, _ in blocks]))
        gain = np.full((len(copy_job), len(cols)), -np.inf)
        for copy_rows, rows, value in blocks:
            gain[np.ix_(copy_rows, np.searchsorted(cols, rows))] = value
        restrict = copy_first & self.explore[copy_job] & (self.newcomers[copy_job] > 0)
        if (red > 1).any():
            _separate_copies(gain, copy_job, copy_first, restrict, self.newcomer[cols])
        if restrict.any():
            gain[np.ix_(np.flatnonzero(restrict), np.flatnonzero(~self.newcomer[cols]))] = -np.inf
        slots = np.minimum(self.remaining[cols], len(copy_job))
        assigned = _assign(gain, np.repeat(np.arange(len(cols)), slots), copy_job)
        # a job keeps its copies only if it got all of them
        missing = np.bincount(
            np.repeat(np.arange(len(window)), red), weights=assigned < 0, minlength=len(window)
        )
        ok_job = missing == 0
        ok_copy = np.repeat(ok_job, red)
        nodes = cols[assigned[ok_copy]]
        np.subtract.at(self.remaining, nodes, 1)
        self.consumed = True
        copy_index = np.arange(len(copy_job)) - np.repeat(np.cumsum(red) - red, red)
        self.chosen[copy_job[ok_copy], copy_index[ok_copy]] = nodes
        failed: Ints = window[~ok_job]
        return failed

    def solve_simple(self, window: Ints, kind: _Type) -> Ints:
        """:meth:`solve` for the common window: one type, one copy per job."""
        candidate = self.config.batch_candidates
        count = len(window)
        rows = self.live(kind, count + candidate, count + min(candidate, _REBUILD_MARGIN))
        explorers = self.explore[window] & (self.newcomers[window] > 0)
        exploring = int(np.count_nonzero(explorers))
        if exploring:
            extra = self.live(kind, exploring + _NEWCOMER_MARGIN, exploring, newcomers=True)
            rows = np.concatenate((rows, extra[~np.isin(extra, rows)]))
        if len(rows) == 0:
            return window
        value = self.values(window, np.broadcast_to(rows, (count, len(rows))))[0]
        fits = self.classes[kind.cls].alive_pos[rows][None, :] < self.feasible[window][:, None]
        gain = np.where(fits, value - _TIE * np.arange(len(rows)), -np.inf)
        if exploring:
            gain[np.ix_(np.flatnonzero(explorers), np.flatnonzero(~self.newcomer[rows]))] = -np.inf
        slots = np.minimum(self.remaining[rows], count)
        assigned = _assign(gain, np.repeat(np.arange(len(rows)), slots), window)
        ok = assigned >= 0
        nodes = rows[assigned[ok]]
        np.subtract.at(self.remaining, nodes, 1)
        self.consumed = True
        self.chosen[window[ok], 0] = nodes
        failed: Ints = window[~ok]
        return failed

    # --- placements ----------------------------------------------------------------------------------------

    def placements(self) -> list[Placement | NoCandidateError]:
        out: list[Placement | NoCandidateError] = []
        considered, weights, now = self.n, self.weights, self.market.now
        deferred = Placement._deferred
        for j, spec in enumerate(self.specs):
            final = self.failed.get(j)
            if final is not None:
                counts, feasible = self.filtered(j, final=final)
                out.append(NoCandidateError(spec, counts, feasible, spec.redundancy, considered))
            else:
                out.append(deferred(spec, considered, weights, now, _Builder(self, j)))
        return out

    def type_details(self, t: int) -> tuple[Rows, _Eval, _Eval]:
        """For a type: the head of its shortlist, and the factors of its jobs on that head and on their chosen
        rows (computed once, when a placement of the type is first read)."""
        found = self.details.get(t)
        if found is None:
            kind = self.types[t]
            most = int(self.redundancy[kind.jobs].max())
            head = kind.shortlist[: self.config.backups + most]
            chosen = self.chosen[kind.jobs, :most]
            chosen = np.where(chosen >= 0, chosen, chosen[:, :1])
            found = (
                head,
                self.evaluate(kind.jobs, np.broadcast_to(head, (len(kind.jobs), len(head)))),
                self.evaluate(kind.jobs, chosen),
            )
            self.details[t] = found
        return found


@dataclass(frozen=True, slots=True)
class _Eval:
    utility: Floats
    meets: Mask | None
    expected: Floats
    unit_price: Floats
    reliability: Floats
    rtt: Floats
    measured: Mask
    transfer: Floats  # per job
    queue: Floats
    compute: Floats
    throughput: Floats
    time_score: Floats
    price_score: Floats

    def row(self, k: int, weights: tuple[float, float, float]) -> _Evaluated:
        """Job ``k``'s values in the engine's per-candidate form (as lists: a few candidates are read)."""

        def at(a: NDArray[Any]) -> list[Any]:
            values: list[Any] = (a[k] if a.shape[0] > 1 else a[0]).tolist()
            return values

        return _Evaluated(
            utility=self.utility[k].tolist(),
            expected=self.expected[k].tolist(),
            price=at(self.unit_price),
            reliability=at(self.reliability),
            meets=None if self.meets is None else self.meets[k].tolist(),
            rtt=at(self.rtt),
            measured=at(self.measured),
            transfer=float(self.transfer[k]),
            queue=at(self.queue),
            compute=self.compute[k].tolist(),
            throughput=at(self.throughput),
            time_score=self.time_score[k].tolist(),
            price_score=at(self.price_score),
            weights=weights,
        )


class _Builder:
    """Builds one batch placement's details when they are first read."""

    __slots__ = ("batch", "j")

    def __init__(self, batch: _Batch, j: int) -> None:
        self.batch, self.j = batch, j

    def _order(self) -> tuple[list[int], list[int], int, _Evaluated]:
        """The chosen rows, their order (explored newcomer first, then rank), the explored row, their view."""
        batch, j = self.batch, self.j
        w = batch.config.weights
        _, _, chosen_ev = batch.type_details(int(batch.type_of[j]))
        chosen_rows = [int(r) for r in batch.chosen[j, : batch.specs[j].redundancy]]
        explored = bool(batch.explore[j] and batch.newcomers[j] > 0)
        explored_row = next((r for r in chosen_rows if batch.newcomer[r]), -1) if explored else -1
        view = chosen_ev.row(int(batch.type_pos[j]), (w.time, w.price, w.reliability))
        keyed = _keyed(view, batch.bonus)
        order = sorted(
            range(len(chosen_rows)),
            key=lambda i: (chosen_rows[i] != explored_row, -keyed[i], chosen_rows[i]),
        )
        return chosen_rows, order, explored_row, view

    def providers(self) -> tuple[Address, ...]:
        """The chosen providers in order, without building candidates."""
        batch, j = self.batch, self.j
        if batch.redundancy[j] == 1:
            return (batch.market.addresses[int(batch.chosen[j, 0])],)
        rows, order, _, _ = self._order()
        return tuple(batch.market.addresses[rows[i]] for i in order)

    def __call__(self) -> _Details:
        batch, j = self.batch, self.j
        spec = batch.specs[j]
        w = batch.config.weights
        weights = (w.time, w.price, w.reliability)
        t = int(batch.type_of[j])
        kind = batch.types[t]
        k = int(batch.type_pos[j])
        head, head_ev, _ = batch.type_details(t)
        chosen_rows, order, explored_row, view = self._order()
        explored = explored_row >= 0
        chosen = tuple(
            _candidate(batch.market, spec, chosen_rows[i], view, i, explored=chosen_rows[i] == explored_row)
            for i in order
        )
        head_view = head_ev.row(k, weights)
        head_keyed = _keyed(head_view, batch.bonus)
        taken = set(chosen_rows)
        ranking = sorted(range(len(head_keyed)), key=lambda i: -head_keyed[i])  # stable: head order on ties
        picks = [i for i in ranking if int(head[i]) not in taken]
        backups = tuple(
            _candidate(batch.market, spec, int(head[i]), head_view, i, explored=False)
            for i in picks[: batch.config.backups]
        )
        counts, feasible = batch.filtered(j, final=False)
        klass = batch.classes[kind.cls]
        references = pl.References(
            time_s=float(batch.tau[j]), unit_price_wei=klass.medians.unit_price_wei, rows=klass.medians.rows
        )
        exploration = Exploration(
            share=batch.config.exploration_share,
            draw=float(batch.draw[j]),
            selected=bool(batch.draw[j] < batch.config.exploration_share),
            newcomers=int(batch.newcomers[j]),
            applied=explored,
        )
        return _Details(chosen, backups, feasible, counts, references, exploration)


def _keyed(view: _Evaluated, bonus: float) -> list[float]:
    """Utilities plus the target bonus where met (the batch's ranking key) of a row view."""
    utility: list[float] = view.utility
    if view.meets is None:
        return utility
    return [u + bonus * m for u, m in zip(utility, view.meets, strict=True)]


def _compute(flops: Floats, throughput: Floats) -> Floats:
    """``flops / throughput`` broadcast, 0 for jobs without work (their rows may have no throughput)."""
    shape = np.broadcast_shapes(flops.shape, throughput.shape)
    out = np.zeros(shape)
    np.divide(flops, throughput, out=out, where=flops > 0)
    return out


def _separate_copies(gain: Floats, copy_job: Ints, copy_first: Mask, restrict: Mask, newcomer: Mask) -> None:
    """Give each copy of a redundant job its own share of the columns, so that no two land on one provider:
    copy ``c`` of ``r`` may use the columns the job ranks ``c``, ``c + r``, ``c + 2r``... (so its best is the
    job's ``c``-th best). An exploring job's first copy keeps the newcomers, the others share the rest."""
    starts = np.flatnonzero(copy_first)
    counts = np.diff(np.append(starts, len(copy_job)))
    for start, r in zip(starts[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True):
        value = gain[start]
        order = np.argsort(-value, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        if restrict[start]:
            rest = order[~newcomer[order]]
            rank[order] = -1
            rank[rest] = np.arange(len(rest)) % (r - 1) + 1  # copies 1..r-1 share the others
            rank[newcomer] = 0  # the first copy: newcomers only
        else:
            rank[order] = np.arange(len(order)) % r
        for c in range(r):
            row = gain[start + c]
            row[rank != c] = -np.inf


def _assign(gain: Floats, slot_col: Rows, copy_job: Ints) -> Rows:
    """Column of each copy (-1: unassigned), maximizing the total gain; copies of a job must already have
    disjoint columns (:func:`_separate_copies`)."""
    result = np.full(len(copy_job), -1, dtype=np.intp)
    if len(slot_col) == 0:
        return result
    ncols = gain.shape[1]
    # When no column is the best of more copies than it has slots, every copy taking its best is optimal.
    best = np.argmax(gain, axis=1)
    if np.isfinite(gain[np.arange(len(copy_job)), best]).all():
        wanted = np.bincount(best, minlength=ncols)
        if (wanted <= np.bincount(slot_col, minlength=ncols)).all():
            result[:] = best
            return result
    cost = gain[:, slot_col]
    np.negative(cost, out=cost)
    cost[~np.isfinite(cost)] = _BIG
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < _BIG / 2
    result[r[ok]] = slot_col[c[ok]]
    return result


def _count_at_most(prices: list[int], limit: int | None) -> int:
    return len(prices) if limit is None else sum(1 for p in prices if p <= limit)


def place_batch(
    engine: MatchingEngine,
    specs: Sequence[JobSpec],
    snapshot: MarketSnapshot,
    *,
    exclude: Collection[Address] = (),
) -> list[Placement | NoCandidateError]:
    """Place many jobs at once (see the module docstring); :meth:`MatchingEngine.place_batch` calls it.

    Args:
        engine: The engine (its configuration and reservations).
        specs: The jobs.
        snapshot: The market.
        exclude: Providers not to use for any job.

    Returns:
        One entry per job, in order: its placement or why it could not be placed.
    """
    specs = list(specs)
    if not specs:
        return []
    batch = _Batch(engine, specs, snapshot, exclude)
    batch.build()
    short = batch.feasible < batch.redundancy
    for j in np.flatnonzero(short).tolist():
        batch.failed[j] = False
    placeable = np.flatnonzero(~short)
    batch.build_types(placeable)
    # scarce types first (fewest feasible offers), each type's jobs together (fewer types per window)
    scarcity = np.array([int(batch.feasible[kind.jobs].min()) for kind in batch.types], dtype=np.int64)
    types = batch.type_of[placeable]
    order = placeable[np.lexsort((placeable, types, scarcity[types]))] if len(placeable) else placeable
    window = batch.config.batch_window
    retry = [batch.solve(order[i : i + window]) for i in range(0, len(order), window)]
    again = np.concatenate(retry) if retry else np.zeros(0, dtype=np.int64)
    if len(again):
        batch.explore[again] = False  # an explored job whose newcomers were all taken is placed normally
        batch.build_types(again, conservative=True)
        still = [batch.solve(again[i : i + window]) for i in range(0, len(again), window)]
        for j in np.concatenate(still).tolist():
            batch.failed[j] = True
    return batch.placements()
