"""What a job asks of the market (:class:`JobSpec`) and how the engine weighs offers
(:class:`MatchingConfig`).

Every model here is frozen and forbids unknown fields; integers are strict (``True`` or ``1.5`` is not a
count), so a spec built from JSON means exactly what it says. Hard constraints (workload and model, hardware,
residency, price cap, budget, minimum reliability) are never traded against anything: an offer that breaks one
is not a candidate. The latency target is soft: candidates expected to miss it rank after those that meet it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Final

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    field_validator,
    model_validator,
)

from proxima.sdk.vivaldi import VivaldiCoordinate

__all__ = [
    "MAX_REDUNDANCY",
    "UNDISCLOSED_COUNTRY",
    "HardwareConstraints",
    "JobSpec",
    "MatchingConfig",
    "Residency",
    "Weights",
    "exploration_draw",
    "exploration_draws",
]

MAX_REDUNDANCY: Final = 5
"""Most distinct providers one job may ask to run it."""

UNDISCLOSED_COUNTRY: Final = "ZZ"
"""The country of an offer whose provider did not disclose one; it never matches a residency list."""

_MASK64: Final = 2**64 - 1
_DRAW_SEED: Final = 0x9E3779B97F4A7C15
_MIX1: Final = 0xBF58476D1CE4E5B9
_MIX2: Final = 0x94D049BB133111EB
_UINT256: Final = 2**256
_UINT64: Final = 2**64
_JOB_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")


def exploration_draw(job_id: bytes) -> float:
    """The job's exploration draw in [0, 1): a SplitMix64 hash of the job id's four little-endian words.

    ``h = 0x9E3779B97F4A7C15``; for each word ``w``: ``h = mix(h ^ w)`` with SplitMix64's finalizer
    ``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31`` (mod
    2**64); the draw is ``(h >> 11) / 2**53``. Anyone can recompute it; :func:`exploration_draws` gives the
    same values for many ids at once.
    """
    h = _DRAW_SEED
    for i in range(0, 32, 8):
        z = h ^ int.from_bytes(job_id[i : i + 8], "little")
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
        h = z ^ (z >> 31)
    return (h >> 11) / 2**53


def exploration_draws(job_ids: Sequence[bytes]) -> NDArray[np.float64]:
    """:func:`exploration_draw` of many 32-byte job ids, vectorized (identical values)."""
    words = np.frombuffer(b"".join(job_ids), dtype="<u8").reshape(len(job_ids), 4)
    h = np.full(len(job_ids), _DRAW_SEED, dtype=np.uint64)
    for i in range(4):
        z = h ^ words[:, i]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        h = z ^ (z >> np.uint64(31))
    draws: NDArray[np.float64] = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    return draws


def _parse_job_id(value: Any) -> Any:
    if isinstance(value, str):
        if not _JOB_ID.match(value):
            raise ValueError(f"job_id must be 0x followed by 64 hex digits, got {value!r}")
        return bytes.fromhex(value[2:])
    if isinstance(value, bytes | bytearray) and len(value) != 32:
        raise ValueError(f"job_id must be 32 bytes, got {len(value)}")
    return value


def _sorted_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


_Count = Annotated[int, Strict(), Field(ge=0, lt=_UINT64)]
_Wei = Annotated[int, Strict(), Field(ge=0, lt=_UINT256)]
_JobId = Annotated[
    bytes,
    BeforeValidator(_parse_job_id),
    Field(min_length=32, max_length=32),
    PlainSerializer(lambda b: "0x" + b.hex(), return_type=str, when_used="json"),
]
_Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
_Region = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
_GpuModel = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x20-\x7e]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class HardwareConstraints(_Frozen):
    """The machine a job needs (hard: never violated).

    Attributes:
        gpu_models: Any of these GPU models, compared without regard to case and surrounding spaces (empty:
            any machine, CPU-only included, unless another field asks for a GPU).
        require_gpu: Only machines with at least one GPU.
        min_gpu_memory_bytes: Memory of each GPU, at least.
        min_gpu_count: GPUs, at least.
        min_cpu_cores: Logical CPU cores, at least.
        min_memory_bytes: System memory, at least.
    """

    gpu_models: Annotated[tuple[_GpuModel, ...], Field(max_length=32)] = ()
    require_gpu: Annotated[bool, Strict()] = False
    min_gpu_memory_bytes: _Count = 0
    min_gpu_count: Annotated[int, Strict(), Field(ge=0, le=64)] = 0
    min_cpu_cores: Annotated[int, Strict(), Field(ge=0, le=4096)] = 0
    min_memory_bytes: _Count = 0

    @field_validator("gpu_models")
    @classmethod
    def _canonical_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(tuple(" ".join(m.split()).casefold() for m in value))

    @property
    def needs_gpu(self) -> bool:
        """Whether only machines with a GPU qualify."""
        return (
            self.require_gpu
            or bool(self.gpu_models)
            or self.min_gpu_memory_bytes > 0
            or self.min_gpu_count > 0
        )

    @property
    def unconstrained(self) -> bool:
        """Whether every machine qualifies."""
        return not self.needs_gpu and self.min_cpu_cores == 0 and self.min_memory_bytes == 0


class Residency(_Frozen):
    """Where a job's data may go (hard: never violated). Empty lists mean anywhere.

    Both lists apply when both are given: the offer's country must be in ``countries`` and its region in
    ``regions``.

    Attributes:
        countries: ISO 3166-1 alpha-2 codes. :data:`UNDISCLOSED_COUNTRY` (``ZZ``) cannot be listed, so an
            offer that does not disclose its country never matches a non-empty list.
        regions: Market region labels (``eu-west``).
    """

    countries: Annotated[tuple[_Country, ...], Field(max_length=256)] = ()
    regions: Annotated[tuple[_Region, ...], Field(max_length=256)] = ()

    @field_validator("countries")
    @classmethod
    def _no_undisclosed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if UNDISCLOSED_COUNTRY in value:
            raise ValueError(
                f"{UNDISCLOSED_COUNTRY} marks an undisclosed country and cannot be required; "
                "list the countries the data may go to"
            )
        return _sorted_unique(value)

    @field_validator("regions")
    @classmethod
    def _canonical_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value)

    @property
    def anywhere(self) -> bool:
        """Whether the job may run anywhere."""
        return not self.countries and not self.regions


class JobSpec(_Frozen):
    """One job as the matching engine sees it.

    Attributes:
        job_id: The job's 32 bytes (JSON: ``0x`` + 64 hex digits). It decides, deterministically, whether the
            job is one of the exploration share that goes to a newcomer.
        workload: Workload name (``matmul``, ``embed``).
        model: Model the workload must serve (empty: any).
        units: Billing units; one copy costs ``units * unit_price_wei`` of the offer.
        flops: Work to compute, FLOP (0: nothing to plan with; compute time counts as 0).
        input_bytes: Request payload sent to the provider.
        output_bytes: Expected result payload.
        hardware: Machine constraints (hard).
        residency: Country and region constraints (hard).
        max_price_wei: Most to pay one provider for one copy (hard).
        budget_wei: Most to pay for all copies together (hard): every candidate must satisfy
            ``redundancy * price <= budget_wei``, so any ``redundancy`` of them fit.
        latency_target_s: Preferred completion time, seconds (soft).
        redundancy: Distinct providers that each run the job (1 to :data:`MAX_REDUNDANCY`).
        min_reliability: Lowest acceptable reliability estimate (hard), in [0, 1].
        client_coordinate: The client's Vivaldi coordinate (usually the gateway's own); None: RTTs come only
            from measurements, else a configured default.
    """

    job_id: _JobId
    workload: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")]
    model: Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9._/-]{0,127})?$")] = ""
    units: Annotated[int, Strict(), Field(ge=1, lt=_UINT64)] = 1
    flops: Annotated[int, Strict(), Field(ge=0, lt=2**96)] = 0
    input_bytes: _Count = 0
    output_bytes: _Count = 0
    hardware: HardwareConstraints = HardwareConstraints()
    residency: Residency = Residency()
    max_price_wei: _Wei | None = None
    budget_wei: _Wei | None = None
    latency_target_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    redundancy: Annotated[int, Strict(), Field(ge=1, le=MAX_REDUNDANCY)] = 1
    min_reliability: Annotated[float, Field(ge=0, le=1)] = 0.0
    client_coordinate: VivaldiCoordinate | None = None

    def price_limit_wei(self) -> int | None:
        """The highest offer unit price this job accepts (price cap and budget together), None if unlimited.

        ``units * unit_price <= max_price_wei`` and ``redundancy * units * unit_price <= budget_wei`` both
        hold exactly (integer arithmetic) for every unit price up to the returned value.
        """
        limit: int | None = None
        if self.max_price_wei is not None:
            limit = self.max_price_wei // self.units
        if self.budget_wei is not None:
            by_budget = self.budget_wei // (self.redundancy * self.units)
            limit = by_budget if limit is None else min(limit, by_budget)
        return limit

    def exploration_draw(self) -> float:
        """A number in [0, 1) fixed by the job id (:func:`exploration_draw`): the job explores when it is
        below the exploration share."""
        return exploration_draw(self.job_id)

    def class_key(self) -> tuple[Any, ...]:
        """Everything that decides which offers qualify and how they score, except the size, the price limits
        and the redundancy (which only change how many offers a job takes and its price limit).

        Jobs with equal keys share filter masks and per-offer factors (the engine caches them per snapshot).
        """
        coordinate = self.client_coordinate
        hardware = self.hardware
        residency = self.residency
        return (
            self.workload,
            self.model,
            self.flops > 0,
            None if hardware.unconstrained else hardware,
            None if residency.anywhere else residency,
            self.min_reliability,
            None if coordinate is None else (coordinate.vector, coordinate.height),
        )

    def transfer_bytes(self) -> int:
        """Bytes moved over the network: request plus result."""
        return self.input_bytes + self.output_bytes


class Weights(_Frozen):
    """Weights of the normalized factors in a candidate's utility (any non-negative numbers, not all 0).

    Attributes:
        time: Expected completion time (RTT, transfer, queue wait, compute).
        price: Price of one copy.
        reliability: Estimated probability that the provider delivers.
    """

    time: Annotated[float, Field(ge=0, le=1e6)] = 0.5
    price: Annotated[float, Field(ge=0, le=1e6)] = 0.3
    reliability: Annotated[float, Field(ge=0, le=1e6)] = 0.2

    @model_validator(mode="after")
    def _some_weight(self) -> Weights:
        if self.time + self.price + self.reliability <= 0:
            raise ValueError("at least one weight must be positive")
        return self

    def as_dict(self) -> dict[str, float]:
        """``{"time": ..., "price": ..., "reliability": ...}``."""
        return {"time": self.time, "price": self.price, "reliability": self.reliability}


class MatchingConfig(_Frozen):
    """How the matching engine weighs offers (documented in docs/MATCHING.md).

    Attributes:
        weights: Weights of the time, price and reliability scores.
        exploration_share: Share of jobs (decided by each job id's hash) whose primary copy goes to the best
            feasible newcomer instead of the best candidate, in [0, 0.5].
        newcomer_jobs: A provider with fewer completed jobs (on chain) than this is a newcomer.
        backups: Ranked backups returned with each placement.
        link_bandwidth_bps: Bits per second assumed between client and provider for payload transfer.
        default_rtt_s: RTT assumed when a provider was neither measured nor can be predicted (the job has no
            client coordinate, or the coordinate dimensions differ).
        queue_job_s: Seconds each job waiting ahead is assumed to occupy a slot (queue wait estimate).
        queue_allowance: Jobs the engine may send to a provider beyond its free slots, to wait in its queue
            (0: a provider's capacity is its free slots).
        reservation_ttl_s: Seconds after which a reservation that was never released lapses.
        batch_window: Jobs solved together in one assignment problem during batch placement.
        batch_candidates: Providers kept per job (beyond what its copies need) in batch placement.
    """

    weights: Weights = Weights()
    exploration_share: Annotated[float, Field(ge=0, le=0.5)] = 0.05
    newcomer_jobs: Annotated[int, Strict(), Field(ge=0, le=10**9)] = 10
    backups: Annotated[int, Strict(), Field(ge=0, le=32)] = 3
    link_bandwidth_bps: Annotated[float, Field(gt=0, le=1e15)] = 100e6
    default_rtt_s: Annotated[float, Field(gt=0, le=60)] = 0.1
    queue_job_s: Annotated[float, Field(gt=0, le=86_400)] = 0.5
    queue_allowance: Annotated[int, Strict(), Field(ge=0, le=1_000_000)] = 0
    reservation_ttl_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    batch_window: Annotated[int, Strict(), Field(ge=1, le=4096)] = 32
    batch_candidates: Annotated[int, Strict(), Field(ge=1, le=1024)] = 16

    @property
    def weight_sum(self) -> float:
        """Sum of the weights (the highest possible utility)."""
        w = self.weights
        return w.time + w.price + w.reliability
