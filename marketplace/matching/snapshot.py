"""A columnar view of the market at one instant: what the matching engine filters and scores.

:meth:`MarketSnapshot.build` turns live offers, the providers' records and measured RTTs into numpy columns,
one row per provider, rows sorted by address (so that the order in which offers arrived never matters and ties
break by address). Build once, place many: a snapshot is immutable, and the engine keeps its reservations
beside it rather than in it.

Unit prices are wei and may in principle reach 2**256: the int64 column holds every price below
:data:`PRICE_SATURATED` exactly and the saturated value for larger ones, whose exact value is kept in
:attr:`WorkloadColumn.big_prices`; the price filters consult it, so a cap is never crossed by rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching.reliability import (
    ProviderStats,
    ReliabilityPrior,
    reliability_arrays,
    verified_throughput,
)
from proxima.sdk.offers import Offer, SignedOffer
from proxima.sdk.types import Address

__all__ = [
    "PRICE_SATURATED",
    "MarketSnapshot",
    "SnapshotError",
    "WorkloadColumn",
]

PRICE_SATURATED: Final = 2**63 - 1
"""Unit prices at or above this are stored as this value in the int64 price column (exact value aside)."""

_MICROS: Final = 1_000_000
_JOBS_CAP: Final = 2**62


class SnapshotError(MarketError, ValueError):
    """The inputs of a snapshot are inconsistent (lengths, order, values); the message says which."""


@dataclass(frozen=True, slots=True)
class WorkloadColumn:
    """One workload across the market.

    Attributes:
        served: Whether each row serves the workload.
        unit_price: Unit price in wei (int64; :data:`PRICE_SATURATED` where not served or too large).
        unit_price_f: The same as float64 (``inf`` where not served).
        models: Model name -> whether each row serves the workload with that model.
        big_prices: Row -> exact unit price, for served rows whose price is at least :data:`PRICE_SATURATED`.
    """

    served: NDArray[np.bool_]
    unit_price: NDArray[np.int64]
    unit_price_f: NDArray[np.float64]
    models: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)
    big_prices: Mapping[int, int] = field(default_factory=dict)

    def exact_price(self, row: int) -> int:
        """The exact unit price of ``row`` (which must serve the workload)."""
        big = self.big_prices.get(row)
        return int(self.unit_price[row]) if big is None else big


@dataclass(frozen=True, slots=True, eq=False)
class MarketSnapshot:
    """The live market as columns, one row per provider, rows sorted by address.

    Build it with :meth:`build` (from offers) or :meth:`from_arrays` (from columns, for simulations and
    benchmarks). Every array has one entry per row.

    Attributes:
        now: Unix seconds the snapshot describes; offers expired by then are left out.
        addresses: Provider addresses, sorted.
        peer_ids: libp2p peer ids (base58).
        addrs: Multiaddrs to dial, per row.
        country_names: Distinct countries (sorted); ``country_codes`` indexes it.
        country_codes: Per row, the index of its country in ``country_names``.
        region_names: Distinct regions (sorted); ``region_codes`` indexes it.
        region_codes: Per row, the index of its region in ``region_names``.
        workloads: Workload name -> its prices and models.
        gpu_names: Distinct GPU models, case-folded with single spaces (sorted; "" = no GPU).
        gpu_codes: Per row, the index of its GPU model in ``gpu_names``.
        gpu_count: GPUs per row.
        gpu_memory: Memory of each GPU, bytes.
        cpu_cores: Logical CPU cores.
        memory: System memory, bytes.
        vectors: Vivaldi vectors, seconds, shape ``(n, 3)`` (2-D coordinates padded with 0).
        dims: Dimensions of each row's coordinate (2 or 3).
        heights: Vivaldi heights, seconds.
        free_slots: Free slots when the offer was issued.
        queue_depth: Jobs waiting when the offer was issued.
        max_concurrency: Jobs the provider runs at once.
        claimed_flops: The offer's measured GEMM FLOP/s (its claim).
        mem_bandwidth: The offer's measured memory bandwidth, bytes/s.
        reliability: Reliability estimate (:func:`~proxima.marketplace.matching.reliability.reliability`).
        throughput: FLOP/s to plan with (:func:`~.reliability.verified_throughput`: never above the claim).
        jobs_completed: Completed jobs on chain (newcomers have few).
        measured_rtt: Measured RTT to the provider, seconds (``nan`` if none).
        issued_at: Unix seconds each offer was signed.
        expires_at: Unix seconds each offer expires.
    """

    now: float
    addresses: tuple[Address, ...]
    peer_ids: tuple[str, ...]
    addrs: tuple[tuple[str, ...], ...]
    country_names: tuple[str, ...]
    country_codes: NDArray[np.int32]
    region_names: tuple[str, ...]
    region_codes: NDArray[np.int32]
    workloads: Mapping[str, WorkloadColumn]
    gpu_names: tuple[str, ...]
    gpu_codes: NDArray[np.int32]
    gpu_count: NDArray[np.int32]
    gpu_memory: NDArray[np.uint64]
    cpu_cores: NDArray[np.int32]
    memory: NDArray[np.uint64]
    vectors: NDArray[np.float64]
    dims: NDArray[np.int8]
    heights: NDArray[np.float64]
    free_slots: NDArray[np.int32]
    queue_depth: NDArray[np.int32]
    max_concurrency: NDArray[np.int32]
    claimed_flops: NDArray[np.float64]
    mem_bandwidth: NDArray[np.float64]
    reliability: NDArray[np.float64]
    throughput: NDArray[np.float64]
    jobs_completed: NDArray[np.int64]
    measured_rtt: NDArray[np.float64]
    issued_at: NDArray[np.int64]
    expires_at: NDArray[np.int64]
    index: Mapping[Address, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.addresses)
        object.__setattr__(self, "index", {a: i for i, a in enumerate(self.addresses)})
        if len(self.index) != n or any(
            a >= b for a, b in zip(self.addresses, self.addresses[1:], strict=False)
        ):
            raise SnapshotError("addresses must be unique and sorted")
        if len(self.peer_ids) != n or len(self.addrs) != n:
            raise SnapshotError(
                f"peer_ids ({len(self.peer_ids)}) and addrs ({len(self.addrs)}) need {n} rows"
            )
        if not math.isfinite(self.now):
            raise SnapshotError(f"now must be finite, got {self.now!r}")
        for name in [
            "country_codes",
            "region_codes",
            "gpu_codes",
            "gpu_count",
            "gpu_memory",
            "cpu_cores",
            "memory",
            "dims",
            "heights",
            "free_slots",
            "queue_depth",
            "max_concurrency",
            "claimed_flops",
            "mem_bandwidth",
            "reliability",
            "throughput",
            "jobs_completed",
            "measured_rtt",
            "issued_at",
            "expires_at",
        ]:
            column = getattr(self, name)
            if column.shape != (n,):
                raise SnapshotError(f"{name} has shape {column.shape}, expected ({n},)")
            column.setflags(write=False)
        if self.vectors.shape != (n, 3):
            raise SnapshotError(f"vectors has shape {self.vectors.shape}, expected ({n}, 3)")
        self.vectors.setflags(write=False)
        for wname, column in self.workloads.items():
            arrays = [column.served, column.unit_price, column.unit_price_f, *column.models.values()]
            if any(a.shape != (n,) for a in arrays):
                raise SnapshotError(f"workload {wname!r} columns need shape ({n},)")
            for a in arrays:
                a.setflags(write=False)
        for names, codes, label in (
            (self.country_names, self.country_codes, "country"),
            (self.region_names, self.region_codes, "region"),
            (self.gpu_names, self.gpu_codes, "gpu"),
        ):
            if n and (codes.min() < 0 or codes.max() >= len(names)):
                raise SnapshotError(f"{label}_codes must index {label}_names")
        if n and ((self.dims != 2) & (self.dims != 3)).any():
            raise SnapshotError("dims must be 2 or 3")
        if n and (self.max_concurrency < 1).any():
            raise SnapshotError("max_concurrency must be >= 1")
        if n and ((self.reliability <= 0) | (self.reliability >= 1)).any():
            raise SnapshotError("reliability must be inside (0, 1)")
        if n and ((self.throughput < 0) | ~np.isfinite(self.throughput)).any():
            raise SnapshotError("throughput must be finite and >= 0")
        if n and not (np.isfinite(self.vectors).all() and np.isfinite(self.heights).all()):
            raise SnapshotError("vectors and heights must be finite")
        if n and (self.heights < 0).any():
            raise SnapshotError("heights must be >= 0")
        if n and (~np.isnan(self.measured_rtt) & ~(self.measured_rtt > 0)).any():
            raise SnapshotError("measured_rtt must be > 0 or nan")

    def __len__(self) -> int:
        return len(self.addresses)

    def row(self, provider: Address) -> int | None:
        """The row of ``provider``, None if it has no live offer here."""
        return self.index.get(provider)

    # --- construction --------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        offers: Iterable[SignedOffer | Offer],
        stats: Mapping[Address, ProviderStats],
        *,
        measured_rtts: Mapping[Address, float] | None = None,
        now: float,
        prior: ReliabilityPrior | None = None,
    ) -> MarketSnapshot:
        """Columns from live offers.

        Offers expired at ``now`` are left out; when a provider has several offers the one with the highest
        ``seq`` counts. A provider without an entry in ``stats`` is a newcomer (an empty record).

        Args:
            offers: Validated offers (signed or not: signatures are the offer book's business).
            stats: Each provider's record (from the chain and the gateway's own observations).
            measured_rtts: Measured RTT per provider, seconds; they override predictions.
            now: Unix seconds.
            prior: The reliability prior (the default ``Beta(2, 1)`` if None).

        Returns:
            The snapshot.

        Raises:
            SnapshotError: If ``now`` is not finite or a measured RTT is not a positive number.
        """
        if not math.isfinite(now):
            raise SnapshotError(f"now must be finite, got {now!r}")
        latest: dict[Address, Offer] = {}
        for item in offers:
            offer = item.offer if isinstance(item, SignedOffer) else item
            if offer.expires_at <= now:
                continue
            held = latest.get(offer.provider)
            if held is None or offer.seq > held.seq:
                latest[offer.provider] = offer
        addresses = tuple(sorted(latest))
        live = [latest[a] for a in addresses]
        n = len(live)
        records = [stats.get(a) or ProviderStats(address=a) for a in addresses]
        rtts = measured_rtts or {}
        measured = np.full(n, np.nan)
        for i, a in enumerate(addresses):
            rtt = rtts.get(a)
            if rtt is not None:
                if isinstance(rtt, bool) or not isinstance(rtt, int | float) or not (0 < rtt < math.inf):
                    raise SnapshotError(f"measured RTT of {a} must be a positive number, got {rtt!r}")
                measured[i] = float(rtt)

        country_names, country_codes = _codes([o.country for o in live])
        region_names, region_codes = _codes([o.region for o in live])
        gpu_names, gpu_codes = _codes([_gpu_name(o.hardware.gpu_model) for o in live])
        vectors = np.zeros((n, 3))
        dims = np.zeros(n, dtype=np.int8)
        for i, o in enumerate(live):
            v = o.coordinates.vector_us
            vectors[i, : len(v)] = v
            dims[i] = len(v)
        vectors /= _MICROS

        workloads: dict[str, WorkloadColumn] = {}
        for name in sorted({w.name for o in live for w in o.workloads}):
            served = np.zeros(n, dtype=bool)
            price = np.full(n, PRICE_SATURATED, dtype=np.int64)
            price_f = np.full(n, np.inf)
            big: dict[int, int] = {}
            model_rows: dict[str, list[int]] = {}
            for i, o in enumerate(live):
                w = o.workload(name)
                if w is None:
                    continue
                served[i] = True
                price_f[i] = float(w.unit_price_wei)
                if w.unit_price_wei >= PRICE_SATURATED:
                    big[i] = w.unit_price_wei
                else:
                    price[i] = w.unit_price_wei
                for m in w.models:
                    model_rows.setdefault(m, []).append(i)
            models = {}
            for m in sorted(model_rows):
                mask = np.zeros(n, dtype=bool)
                mask[model_rows[m]] = True
                models[m] = mask
            workloads[name] = WorkloadColumn(served, price, price_f, models, big)

        return cls(
            now=float(now),
            addresses=addresses,
            peer_ids=tuple(o.peer_id for o in live),
            addrs=tuple(o.addrs for o in live),
            country_names=country_names,
            country_codes=country_codes,
            region_names=region_names,
            region_codes=region_codes,
            workloads=workloads,
            gpu_names=gpu_names,
            gpu_codes=gpu_codes,
            gpu_count=np.fromiter((o.hardware.gpu_count for o in live), np.int32, n),
            gpu_memory=np.fromiter((o.hardware.gpu_memory_bytes for o in live), np.uint64, n),
            cpu_cores=np.fromiter((o.hardware.cpu_cores for o in live), np.int32, n),
            memory=np.fromiter((o.hardware.memory_bytes for o in live), np.uint64, n),
            vectors=vectors,
            dims=dims,
            heights=np.fromiter((o.coordinates.height_us for o in live), np.float64, n) / _MICROS,
            free_slots=np.fromiter((o.capacity.free_slots for o in live), np.int32, n),
            queue_depth=np.fromiter((o.capacity.queue_depth for o in live), np.int32, n),
            max_concurrency=np.fromiter((o.capacity.max_concurrency for o in live), np.int32, n),
            claimed_flops=np.fromiter((float(o.measured.gemm_flops) for o in live), np.float64, n),
            mem_bandwidth=np.fromiter((float(o.measured.mem_bandwidth) for o in live), np.float64, n),
            reliability=(
                reliability_arrays(records) if prior is None else reliability_arrays(records, prior)
            ),
            throughput=np.fromiter(
                (verified_throughput(o.measured.gemm_flops, r) for o, r in zip(live, records, strict=True)),
                np.float64,
                n,
            ),
            jobs_completed=np.fromiter((min(r.jobs_completed, _JOBS_CAP) for r in records), np.int64, n),
            measured_rtt=measured,
            issued_at=np.fromiter((o.issued_at for o in live), np.int64, n),
            expires_at=np.fromiter((o.expires_at for o in live), np.int64, n),
        )

    @classmethod
    def from_arrays(
        cls,
        *,
        now: float,
        addresses: Sequence[Address],
        countries: Sequence[str],
        regions: Sequence[str],
        workloads: Mapping[str, tuple[NDArray[np.bool_], NDArray[np.int64], Mapping[str, NDArray[np.bool_]]]],
        gpu_models: Sequence[str],
        gpu_count: NDArray[np.integer],
        gpu_memory: NDArray[np.integer],
        cpu_cores: NDArray[np.integer],
        memory: NDArray[np.integer],
        vectors: NDArray[np.floating],
        heights: NDArray[np.floating],
        free_slots: NDArray[np.integer],
        queue_depth: NDArray[np.integer],
        max_concurrency: NDArray[np.integer],
        claimed_flops: NDArray[np.floating],
        reliability: NDArray[np.floating],
        throughput: NDArray[np.floating],
        jobs_completed: NDArray[np.integer],
        expires_at: NDArray[np.integer],
        peer_ids: Sequence[str] | None = None,
        addrs: Sequence[tuple[str, ...]] | None = None,
        mem_bandwidth: NDArray[np.floating] | None = None,
        measured_rtt: NDArray[np.floating] | None = None,
        issued_at: NDArray[np.integer] | None = None,
    ) -> MarketSnapshot:
        """A snapshot straight from columns, for simulations and benchmarks (signing many offers is slow).

        Rows may come in any order; they are sorted by address. Rows expired at ``now`` are dropped. The
        values are trusted as given (no signature, stake or chain check: that is what :meth:`build` relies on
        the offer book and the chain for), but shapes, ranges and order are checked.

        Args:
            now: Unix seconds.
            addresses: Provider addresses (unique).
            countries: ISO alpha-2 country per row.
            regions: Region label per row.
            workloads: Name -> ``(served mask, unit prices in wei (int64, < 2**63 - 1), {model: mask})``.
            gpu_models: GPU model per row ("" without one).
            gpu_count: GPUs per row.
            gpu_memory: Bytes per GPU.
            cpu_cores: Logical cores.
            memory: System memory, bytes.
            vectors: Vivaldi vectors in seconds, shape ``(n, 2)`` or ``(n, 3)``.
            heights: Vivaldi heights in seconds.
            free_slots: Free slots.
            queue_depth: Jobs waiting.
            max_concurrency: Concurrent jobs (>= 1).
            claimed_flops: Claimed FLOP/s.
            reliability: Reliability estimates inside (0, 1).
            throughput: FLOP/s to plan with (>= 0).
            jobs_completed: Completed jobs on chain.
            expires_at: Unix seconds.
            peer_ids: Peer ids (default: empty strings).
            addrs: Multiaddrs (default: none).
            mem_bandwidth: Bytes/s (default: 0).
            measured_rtt: Seconds, ``nan`` for none (default: none measured).
            issued_at: Unix seconds (default: ``now``).

        Returns:
            The snapshot.

        Raises:
            SnapshotError: If a column has the wrong length or a value is out of range.
        """
        n = len(addresses)
        if not math.isfinite(now):
            raise SnapshotError(f"now must be finite, got {now!r}")

        def col(values: object, dtype: Any, name: str) -> NDArray[Any]:
            array = np.asarray(values, dtype=dtype)
            if array.shape != (n,):
                raise SnapshotError(f"{name} has shape {array.shape}, expected ({n},)")
            return array

        expires = col(expires_at, np.int64, "expires_at")
        keep = expires > now
        order = np.array(sorted(np.flatnonzero(keep).tolist(), key=lambda i: addresses[i]), dtype=np.int64)
        m = len(order)

        def take(values: object, dtype: Any, name: str) -> NDArray[Any]:
            return col(values, dtype, name)[order].copy()

        vec = np.asarray(vectors, dtype=np.float64)
        if vec.ndim != 2 or vec.shape[0] != n or vec.shape[1] not in (2, 3):
            raise SnapshotError(f"vectors has shape {vec.shape}, expected ({n}, 2) or ({n}, 3)")
        padded = np.zeros((m, 3))
        padded[:, : vec.shape[1]] = vec[order]
        for name, seq in (("countries", countries), ("regions", regions), ("gpu_models", gpu_models)):
            if len(seq) != n:
                raise SnapshotError(f"{name} has {len(seq)} entries, expected {n}")
        country_names, country_codes = _codes([countries[i] for i in order])
        region_names, region_codes = _codes([regions[i] for i in order])
        gpu_names, gpu_codes = _codes([_gpu_name(gpu_models[i]) for i in order])

        columns: dict[str, WorkloadColumn] = {}
        for wname in sorted(workloads):
            served_in, price_in, models_in = workloads[wname]
            served = take(served_in, np.bool_, f"{wname} served")
            price = take(price_in, np.int64, f"{wname} prices")
            if (price[served] < 0).any() or (price[served] >= PRICE_SATURATED).any():
                raise SnapshotError(f"{wname} prices must be in [0, 2**63 - 1)")
            price = np.where(served, price, PRICE_SATURATED)
            price_f = np.where(served, price.astype(np.float64), np.inf)
            models = {
                k: take(models_in[k], np.bool_, f"{wname} model {k}") & served for k in sorted(models_in)
            }
            columns[wname] = WorkloadColumn(served, price, price_f, models, {})

        rtt = np.full(m, np.nan) if measured_rtt is None else take(measured_rtt, np.float64, "measured_rtt")
        return cls(
            now=float(now),
            addresses=tuple(addresses[i] for i in order),
            peer_ids=tuple(peer_ids[i] for i in order) if peer_ids is not None else ("",) * m,
            addrs=tuple(addrs[i] for i in order) if addrs is not None else ((),) * m,
            country_names=country_names,
            country_codes=country_codes,
            region_names=region_names,
            region_codes=region_codes,
            workloads=columns,
            gpu_names=gpu_names,
            gpu_codes=gpu_codes,
            gpu_count=take(gpu_count, np.int32, "gpu_count"),
            gpu_memory=take(gpu_memory, np.uint64, "gpu_memory"),
            cpu_cores=take(cpu_cores, np.int32, "cpu_cores"),
            memory=take(memory, np.uint64, "memory"),
            vectors=padded,
            dims=np.full(m, vec.shape[1], dtype=np.int8),
            heights=take(heights, np.float64, "heights"),
            free_slots=take(free_slots, np.int32, "free_slots"),
            queue_depth=take(queue_depth, np.int32, "queue_depth"),
            max_concurrency=take(max_concurrency, np.int32, "max_concurrency"),
            claimed_flops=take(claimed_flops, np.float64, "claimed_flops"),
            mem_bandwidth=(
                np.zeros(m) if mem_bandwidth is None else take(mem_bandwidth, np.float64, "mem_bandwidth")
            ),
            reliability=take(reliability, np.float64, "reliability"),
            throughput=take(throughput, np.float64, "throughput"),
            jobs_completed=take(jobs_completed, np.int64, "jobs_completed"),
            measured_rtt=rtt,
            issued_at=(
                np.full(m, int(now), dtype=np.int64)
                if issued_at is None
                else take(issued_at, np.int64, "issued_at")
            ),
            expires_at=expires[order].copy(),
        )


def _gpu_name(model: str) -> str:
    return " ".join(model.split()).casefold()


def _codes(values: Sequence[str]) -> tuple[tuple[str, ...], NDArray[np.int32]]:
    names = tuple(sorted(set(values)))
    lookup = {name: i for i, name in enumerate(names)}
    return names, np.fromiter((lookup[v] for v in values), np.int32, len(values))
