"""The simulated world: providers and clients as numpy arrays, drawn from the real data and a seed.

:func:`build_world` turns a :class:`~proxima.sim.data.WorldData` and a :class:`WorldConfig` into a
:class:`World`: one row per provider (:class:`Providers`) and per client, plus the centralized baseline's
hyperscale pool (another :class:`Providers`, all in one country). Everything is a pure function of the data
and ``config.seed``; 10,000 providers build in milliseconds.

Modelling choices (each a :class:`WorldConfig` field, defaults documented there):

- **Where.** Providers sit in a country drawn with probability proportional to ``pings ** 1.0`` (RIPE Atlas
  pings per country, a proxy for connected infrastructure); clients with ``pings ** 0.5``, which spreads
  them further around the world (the users far from the clouds are the point of the product).
- **Workload.** Every job is LLM inference of one reference model, an 8B-parameter transformer in FP16
  (:data:`MODEL_PARAMS`, 16 GB of weights: fits every simulated GPU). A token costs ``2 * params`` FLOP
  (:data:`FLOPS_PER_TOKEN`). Prefill is compute-bound: a GPU prefills ``fp16_tflops * 1e12 *
  prefill_efficiency / FLOPS_PER_TOKEN`` tokens/s (efficiency 0.4, a typical model FLOPs utilisation),
  shared by its ``streams_per_gpu`` slots. Decode is memory-bound: each step reads the weights once for
  all batched streams, so each slot decodes ``bandwidth * decode_efficiency / weight bytes`` tokens/s
  (efficiency 0.6). A job's service time on a slot is ``prompt / prefill_rate + output / decode_rate``
  (:meth:`Providers.service_time_s`); ``flops_per_s`` is the prefill rate in FLOP/s (what the matching
  engine plans with), ``tokens_per_s`` the slot's rate on the trace's mean job.
- **Price.** Each provider draws its $/GPU-hour at a uniform market quantile of its model's price
  distribution (:class:`~proxima.sim.data.PriceTable`), and quotes per billing unit (one token, prompt or
  output) so that a GPU earns that hourly price when busy ``price_utilisation`` (0.5) of the time:
  ``usd_per_token = usd_h / (3600 * tokens_per_s * streams_per_gpu * price_utilisation)``, converted at
  ``eth_usd`` (3,000 $/ETH, about ETH's price over the price series' weeks, Oct-Nov 2025) to wei.
- **Centralized baseline.** One hyperscale pool in ``hyperscale_region`` (US) of 8-GPU H100 SXM instances,
  as many slots as the decentralized market has (same capacity), at ``hyperscale_price_usd_h`` = $3.90 per
  GPU-hour: AWS EC2 P5 (8x H100) on-demand after AWS's June 2025 price cut of ~44 % (costnimbus.com, "GPU
  cost management for ML teams", 2026; the shared price data has no hyperscaler rows). No churn, no cheaters.
- **Trust and churn.** ``cheater_share`` of providers cheat; each cheater's per-job cheat probability is
  uniform in ``cheat_rate``. Honest providers fail (accept and not deliver) with ``failure_rate`` per job.
  Churn: each provider alternates up and down periods, exponential with its own means, drawn log-normal
  (sigma 0.5) around ``mean_up_s`` (4 h) and ``mean_down_s`` (10 min). Stake: log-normal around
  ``stake_median_eth`` (2 ETH), never below ``min_stake_wei`` (the registry's default 1 ETH).
- **Clients.** ``interactive_share`` (0.7) of clients want their first token within 150-300 ms (uniform),
  the rest within 1-5 s; :mod:`proxima.sim.arrivals` adds ``token_budget_ms`` per output token for a
  completion target. ``residency_share`` (0.3) of clients in EU member states may only use providers in EU
  member states (:data:`EU_COUNTRIES`). Clients send requests in proportion to a log-normal activity weight
  (sigma 1: a few heavy users).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from numpy.typing import NDArray

from proxima.sim.data import WorldData
from proxima.sim.errors import SimError

__all__ = [
    "BYTES_PER_PARAM",
    "CONTINENTS",
    "EU_COUNTRIES",
    "FLOPS_PER_TOKEN",
    "MODEL_PARAMS",
    "WEI_PER_ETH",
    "Providers",
    "RegionOutage",
    "World",
    "WorldConfig",
    "WorldConfigError",
    "build_world",
    "region_of",
]

MODEL_PARAMS: Final = 8e9
"""Parameters of the reference model every job runs (an 8B Llama-class transformer)."""
BYTES_PER_PARAM: Final = 2
"""FP16 weights."""
FLOPS_PER_TOKEN: Final = 2 * MODEL_PARAMS
"""FLOP per token processed (prefill or decode), ``2 * params``."""
WEI_PER_ETH: Final = 10**18


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


EU_COUNTRIES: Final = _codes(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"
)
"""The 27 EU member states (ISO-2), the residency set of EU-restricted clients."""

CONTINENTS: Final[Mapping[str, frozenset[str]]] = {
    "africa": _codes(
        "DZ AO BJ BW BF BI CM CV CF TD KM CG CD CI DJ EG GQ ER ET GA GM GH GN GW KE LS LR LY MG MW ML MR MU "
        "YT MA MZ NA NE NG RE RW SH ST SN SC SL SO ZA SS SD SZ TZ TG TN UG EH ZM ZW"
    ),
    "asia": _codes(
        "AF AM AZ BH BD BT BN KH CN GE HK IN ID IR IQ IL JP JO KZ KW KG LA LB MO MY MV MN MM NP KP OM PK PS "
        "PH QA SA SG KR LK SY TW TJ TH TL TR AE UZ VN YE GZ IO"
    ),
    "europe": _codes(
        "AD AL AT BY BE BA BG HR CY CZ DK EE FO FI FR DE GI GR GG HU IS IE IM IT JE XK LV LI LT LU MK MT MD "
        "MC ME NL NO PL PT RO RU SM RS SK SI ES SJ SE CH UA GB VA AX"
    ),
    "north-america": _codes(
        "AI AG AW BS BB BZ BM VG CA KY CR CU DM DO SV GL GD GP GT HT HN JM MQ MX MS AN PR KN LC PM VC TT TC "
        "US VI NI PA BL MF SX CW BQ"
    ),
    "south-america": _codes("AR BO BR CL CO EC FK GF GY PY PE SR UY VE"),
    "oceania": _codes("AS AU CK FJ PF GU KI MH FM NR NC NZ NU NF MP PW PG PN WS SB TK TO TV UM VU WF"),
    "antarctica": _codes("AQ GS TF BV HM"),
}
"""Market region label (continent) -> ISO-2 codes."""

_REGION_OF: Final = {c: region for region, codes in CONTINENTS.items() for c in codes}
_DEFAULT_GPU_COUNTS: Final = ((1, 0.45), (2, 0.20), (4, 0.15), (8, 0.20))
_COMMUNITY_MIX: Final = {"RTX-4090": 0.4, "RTX-3090": 0.3, "A6000": 0.15, "L40S": 0.15}


def region_of(country: str) -> str:
    """Market region (continent label) of an ISO-2 code; ``"other"`` if unknown."""
    return _REGION_OF.get(country, "other")


class WorldConfigError(SimError, ValueError):
    """A world setting is out of range; the message names the field."""

    def __init__(self, field_name: str, value: object, expected: str) -> None:
        self.field = field_name
        super().__init__(f"world config {field_name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class RegionOutage:
    """Every provider in ``countries`` is down from ``start_s`` for ``duration_s`` (simulation seconds).

    Build one from a market region with :meth:`of_region`.
    """

    countries: tuple[str, ...]
    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if not self.countries:
            raise WorldConfigError("outage.countries", self.countries, "a non-empty tuple of ISO-2 codes")
        if not (self.start_s >= 0 and math.isfinite(self.start_s)):
            raise WorldConfigError("outage.start_s", self.start_s, "a finite number >= 0")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise WorldConfigError("outage.duration_s", self.duration_s, "a finite number > 0")

    @classmethod
    def of_region(cls, region: str, start_s: float, duration_s: float) -> RegionOutage:
        """An outage of every country in a market region (a key of :data:`CONTINENTS`, or ``"eu"``)."""
        codes = EU_COUNTRIES if region == "eu" else CONTINENTS.get(region)
        if codes is None:
            raise WorldConfigError("outage region", region, f"one of eu, {', '.join(CONTINENTS)}")
        return cls(tuple(sorted(codes)), start_s, duration_s)

    def ends_s(self) -> float:
        """When the outage ends."""
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class WorldConfig:
    """How to draw a world (all amounts documented in the module docstring).

    Attributes:
        providers: Decentralized providers.
        clients: Clients.
        seed: Seed of every draw.
        cheater_share: Share of providers that cheat.
        cheat_rate: (low, high) of a cheater's per-job cheat probability (uniform).
        failure_rate: Per-job probability that an honest provider accepts and does not deliver.
        mean_up_s: Mean time a provider stays up (churn), seconds; ``inf``: no churn.
        mean_down_s: Mean time a provider stays down, seconds.
        outage: A region outage, or None.
        hyperscale_region: Country (ISO-2) of the centralized baseline's pool.
        hyperscale_gpu: Its GPU model.
        hyperscale_price_usd_h: Its on-demand $/GPU-hour.
        hyperscale_slots: Its slots (None: as many as the decentralized market).
        gpu_mix: GPU model -> relative weight (None: half datacenter models by the price data's offer counts,
            half community cards 4090/3090/A6000/L40S at 0.4/0.3/0.15/0.15).
        gpu_counts: (GPUs per provider, probability) pairs.
        streams_per_gpu: Concurrent jobs (batched streams) per GPU: a provider's slots are GPUs times this.
        prefill_efficiency: Share of peak FP16 FLOPS reached in prefill.
        decode_efficiency: Share of peak memory bandwidth reached in decode.
        provider_country_exponent: Providers per country ~ pings ** this.
        client_country_exponent: Clients per country ~ pings ** this.
        interactive_share: Share of clients with an interactive first-token target.
        interactive_target_ms: (low, high) of interactive first-token targets (uniform).
        batch_target_ms: (low, high) of the other clients' first-token targets (uniform).
        token_budget_ms: Completion-target allowance per output token, ms.
        residency_share: Share of clients in EU member states restricted to EU providers.
        stake_median_eth: Median provider stake, ETH.
        stake_sigma: Log-normal sigma of stakes.
        min_stake_wei: Floor of every stake (the registry's minimum).
        eth_usd: $ per ETH for price conversion.
        price_utilisation: Busy share at which a provider's per-token price earns its hourly price.
        client_activity_sigma: Log-normal sigma of clients' request-rate weights.
    """

    providers: int = 1_000
    clients: int = 1_000
    seed: int = 0
    cheater_share: float = 0.05
    cheat_rate: tuple[float, float] = (0.1, 0.5)
    failure_rate: float = 0.002
    mean_up_s: float = 4 * 3600.0
    mean_down_s: float = 600.0
    outage: RegionOutage | None = None
    hyperscale_region: str = "US"
    hyperscale_gpu: str = "H100-SXM5-80GB"
    hyperscale_price_usd_h: float = 3.90
    hyperscale_slots: int | None = None
    gpu_mix: Mapping[str, float] | None = None
    gpu_counts: tuple[tuple[int, float], ...] = _DEFAULT_GPU_COUNTS
    streams_per_gpu: int = 8
    prefill_efficiency: float = 0.4
    decode_efficiency: float = 0.6
    provider_country_exponent: float = 1.0
    client_country_exponent: float = 0.5
    interactive_share: float = 0.7
    interactive_target_ms: tuple[float, float] = (150.0, 300.0)
    batch_target_ms: tuple[float, float] = (1_000.0, 5_000.0)
    token_budget_ms: float = 50.0
    residency_share: float = 0.3
    stake_median_eth: float = 2.0
    stake_sigma: float = 0.75
    min_stake_wei: int = WEI_PER_ETH
    eth_usd: float = 3_000.0
    price_utilisation: float = 0.5
    client_activity_sigma: float = 1.0

    def __post_init__(self) -> None:
        counts = {
            "providers": self.providers,
            "clients": self.clients,
            "streams_per_gpu": self.streams_per_gpu,
        }
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                raise WorldConfigError(name, value, "an integer in [1, 10,000,000]")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise WorldConfigError("seed", self.seed, "an integer >= 0")
        for name in ("cheater_share", "failure_rate", "interactive_share", "residency_share"):
            _unit(name, getattr(self, name))
        _unit("price_utilisation", self.price_utilisation, low_open=True)
        _unit("prefill_efficiency", self.prefill_efficiency, low_open=True)
        _unit("decode_efficiency", self.decode_efficiency, low_open=True)
        _range("cheat_rate", self.cheat_rate, 0.0, 1.0)
        _range("interactive_target_ms", self.interactive_target_ms, 1e-3, 1e7)
        _range("batch_target_ms", self.batch_target_ms, 1e-3, 1e7)
        for name in (
            "mean_up_s",
            "mean_down_s",
            "hyperscale_price_usd_h",
            "stake_median_eth",
            "eth_usd",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and not math.isnan(value)):
                raise WorldConfigError(name, value, "a number > 0")
        if not math.isfinite(self.mean_down_s):
            raise WorldConfigError("mean_down_s", self.mean_down_s, "finite")
        for name in ("token_budget_ms", "stake_sigma", "client_activity_sigma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < 1e6):
                raise WorldConfigError(name, value, "a number in [0, 1e6)")
        for name in ("provider_country_exponent", "client_country_exponent"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 4):
                raise WorldConfigError(name, value, "a number in [0, 4]")
        if not isinstance(self.min_stake_wei, int) or self.min_stake_wei <= 0:
            raise WorldConfigError("min_stake_wei", self.min_stake_wei, "an integer > 0")
        if self.hyperscale_slots is not None and (
            not isinstance(self.hyperscale_slots, int) or self.hyperscale_slots < 1
        ):
            raise WorldConfigError("hyperscale_slots", self.hyperscale_slots, "None or an integer >= 1")
        if not self.gpu_counts or any(
            not isinstance(n, int) or not 1 <= n <= 64 or not p >= 0 for n, p in self.gpu_counts
        ):
            raise WorldConfigError(
                "gpu_counts", self.gpu_counts, "(count in [1, 64], probability >= 0) pairs"
            )
        if sum(p for _, p in self.gpu_counts) <= 0:
            raise WorldConfigError("gpu_counts", self.gpu_counts, "probabilities with a positive sum")
        if self.gpu_mix is not None and (
            not self.gpu_mix
            or any(not w >= 0 for w in self.gpu_mix.values())
            or sum(self.gpu_mix.values()) <= 0
        ):
            raise WorldConfigError("gpu_mix", self.gpu_mix, "GPU model -> weight >= 0 with a positive sum")


def _unit(name: str, value: object, *, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and (0 < value <= 1 if low_open else 0 <= value <= 1)
    if not ok:
        raise WorldConfigError(name, value, "a number in (0, 1]" if low_open else "a number in [0, 1]")


def _range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) for v in value)
        and low <= value[0] <= value[1] <= high
    ):
        raise WorldConfigError(name, value, f"a (low, high) pair with {low} <= low <= high <= {high}")


@dataclass(frozen=True)
class Providers:
    """Providers as columns (row ``i`` is provider ``i``); per-slot rates.

    Attributes:
        country: Index into :attr:`WorldData.countries`.
        gpu: Index into :attr:`WorldData.gpus`.
        gpus: GPUs per provider.
        slots: Concurrent jobs (``gpus * streams_per_gpu``).
        prefill_tokens_per_s: Prompt tokens per second per slot.
        decode_tokens_per_s: Output tokens per second per slot (one stream).
        flops_per_s: Effective FLOP/s per slot in prefill (``prefill_tokens_per_s * FLOPS_PER_TOKEN``).
        tokens_per_s: Tokens (prompt + output) per second per slot on the trace's mean job.
        price_usd_h: $ per GPU-hour.
        price_wei_per_unit: Wei per billing unit (one token), int64.
        stake_wei: Stake, Python ints (object array).
        honest: Whether the provider never cheats.
        cheat_rate: Per-job cheat probability (0 for the honest).
        failure_rate: Per-job probability of accepting and not delivering.
        mtbf_s: Mean up time (churn), seconds (``inf``: never churns).
        mttr_s: Mean down time, seconds.
        address_salt: Salt of :meth:`addresses` (distinct pools get distinct addresses).
    """

    country: NDArray[np.int32]
    gpu: NDArray[np.int32]
    gpus: NDArray[np.int32]
    slots: NDArray[np.int32]
    prefill_tokens_per_s: NDArray[np.float64]
    decode_tokens_per_s: NDArray[np.float64]
    flops_per_s: NDArray[np.float64]
    tokens_per_s: NDArray[np.float64]
    price_usd_h: NDArray[np.float64]
    price_wei_per_unit: NDArray[np.int64]
    stake_wei: NDArray[np.object_]
    honest: NDArray[np.bool_]
    cheat_rate: NDArray[np.float64]
    failure_rate: NDArray[np.float64]
    mtbf_s: NDArray[np.float64]
    mttr_s: NDArray[np.float64]
    address_salt: bytes = b""
    _addresses: list[tuple[str, ...]] = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.country.shape[0])

    def addresses(self) -> tuple[str, ...]:
        """Checksummed addresses, deterministic (``keccak(salt || index)[12:]``); computed once."""
        if not self._addresses:
            self._addresses.append(
                tuple(
                    to_checksum_address(keccak(self.address_salt + i.to_bytes(8, "big"))[12:])
                    for i in range(len(self))
                )
            )
        return self._addresses[0]

    def service_time_s(
        self,
        provider: NDArray[np.integer],
        prompt_tokens: NDArray[np.integer],
        output_tokens: NDArray[np.integer],
    ) -> NDArray[np.float64]:
        """Seconds a slot of each ``provider`` is busy with a job of these sizes (vectorised)."""
        result: NDArray[np.float64] = (
            prompt_tokens / self.prefill_tokens_per_s[provider]
            + output_tokens / self.decode_tokens_per_s[provider]
        )
        return result

    def first_token_s(
        self, provider: NDArray[np.integer], prompt_tokens: NDArray[np.integer]
    ) -> NDArray[np.float64]:
        """Compute part of the time to first token: prefill plus one decode step."""
        result: NDArray[np.float64] = (
            prompt_tokens / self.prefill_tokens_per_s[provider] + 1.0 / self.decode_tokens_per_s[provider]
        )
        return result


@dataclass(frozen=True)
class World:
    """A drawn world. Client row ``j`` is client ``j``.

    Attributes:
        data: The data it was drawn from.
        config: The settings it was drawn with.
        providers: The decentralized providers.
        hyperscale: The centralized baseline's pool (one country).
        country_region: Market region label per country of ``data``.
        client_country: Index into ``data.countries``.
        client_weight: Relative request rate per client (sums to 1).
        client_interactive: Whether the client's target is interactive.
        client_latency_target_ms: First-token target, ms.
        client_residency: Index into ``residency_sets`` or -1 (anywhere).
        residency_sets: Allowed country codes per residency group (``("AT", "BE", ...)`` for the EU).
        residency_allowed: Shape ``(R, C)``: which countries each residency group allows.
    """

    data: WorldData
    config: WorldConfig
    providers: Providers
    hyperscale: Providers
    country_region: tuple[str, ...]
    client_country: NDArray[np.int32]
    client_weight: NDArray[np.float64]
    client_interactive: NDArray[np.bool_]
    client_latency_target_ms: NDArray[np.float64]
    client_residency: NDArray[np.int16]
    residency_sets: tuple[tuple[str, ...], ...]
    residency_allowed: NDArray[np.bool_]

    @property
    def clients(self) -> int:
        """Number of clients."""
        return int(self.client_country.shape[0])

    def rtt_ms(
        self, client: NDArray[np.integer], provider_country: NDArray[np.integer]
    ) -> NDArray[np.float64]:
        """RTT (ms) between clients and provider countries (broadcasting)."""
        result: NDArray[np.float64] = self.data.rtt_ms[self.client_country[client], provider_country]
        return result

    def allowed(
        self, client: NDArray[np.integer], provider_country: NDArray[np.integer]
    ) -> NDArray[np.bool_]:
        """Whether each client's residency allows each provider country (broadcasting)."""
        group = self.client_residency[client]
        restricted = self.residency_allowed[np.maximum(group, 0), provider_country]
        result: NDArray[np.bool_] = np.where(group < 0, True, restricted)
        return result

    def outage_mask(self, pool: Providers) -> NDArray[np.bool_]:
        """Which rows of ``pool`` the configured outage takes down (all False without one)."""
        outage = self.config.outage
        if outage is None:
            return np.zeros(len(pool), dtype=bool)
        codes = {c: i for i, c in enumerate(self.data.countries)}
        hit = np.zeros(len(self.data.countries), dtype=bool)
        hit[[codes[c] for c in outage.countries if c in codes]] = True
        result: NDArray[np.bool_] = hit[pool.country]
        return result

    def summary(self) -> dict[str, Any]:
        """Key figures of the world for reports (JSON-friendly): counts, slots, regions, GPU mix, prices."""
        p = self.providers
        names = [g.name for g in self.data.gpus]
        regions = np.array(self.country_region)
        by_region = {
            str(r): int(n) for r, n in zip(*np.unique(regions[p.country], return_counts=True), strict=True)
        }
        clients_by_region = {
            str(r): int(n)
            for r, n in zip(*np.unique(regions[self.client_country], return_counts=True), strict=True)
        }
        gpu_counts = np.bincount(p.gpu, minlength=len(names))
        return {
            "seed": self.config.seed,
            "providers": len(p),
            "provider_slots": int(p.slots.sum()),
            "provider_countries": int(np.unique(p.country).size),
            "providers_by_region": by_region,
            "clients": self.clients,
            "client_countries": int(np.unique(self.client_country).size),
            "clients_by_region": clients_by_region,
            "clients_with_residency": int((self.client_residency >= 0).sum()),
            "interactive_clients": int(self.client_interactive.sum()),
            "cheaters": int((~p.honest).sum()),
            "gpu_mix": {names[g]: int(n) for g, n in enumerate(gpu_counts) if n},
            "median_price_usd_h": {
                names[g]: float(np.median(p.price_usd_h[p.gpu == g]))
                for g in range(len(names))
                if gpu_counts[g]
            },
            "median_price_wei_per_token": float(np.median(p.price_wei_per_unit)),
            "hyperscale": {
                "country": self.data.countries[int(self.hyperscale.country[0])],
                "instances": len(self.hyperscale),
                "slots": int(self.hyperscale.slots.sum()),
                "price_usd_h": float(self.hyperscale.price_usd_h[0]),
                "price_wei_per_token": int(self.hyperscale.price_wei_per_unit[0]),
            },
        }


def _gpu_weights(data: WorldData, config: WorldConfig) -> NDArray[np.float64]:
    names = [g.name for g in data.gpus]
    if config.gpu_mix is not None:
        unknown = sorted(set(config.gpu_mix) - set(names))
        if unknown:
            raise WorldConfigError("gpu_mix", unknown, f"GPU models among {', '.join(names)}")
        weights = np.array([float(config.gpu_mix.get(n, 0.0)) for n in names])
    else:
        offers = data.prices.offers * data.prices.from_series
        community = np.array([_COMMUNITY_MIX.get(n, 0.0) for n in names])
        weights = 0.5 * offers / offers.sum() + 0.5 * community / community.sum()
    result: NDArray[np.float64] = weights / weights.sum()
    return result


def _country_weights(data: WorldData, exponent: float) -> NDArray[np.float64]:
    weights = np.power(np.maximum(data.pings, 1.0), exponent)
    result: NDArray[np.float64] = weights / weights.sum()
    return result


def _rates(
    data: WorldData, config: WorldConfig, gpu: NDArray[np.int32]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    fp16 = np.array([g.fp16_tflops for g in data.gpus]) * 1e12
    bandwidth = np.array([g.bandwidth_gbps for g in data.gpus]) * 1e9
    prefill = fp16[gpu] * config.prefill_efficiency / FLOPS_PER_TOKEN / config.streams_per_gpu
    decode = bandwidth[gpu] * config.decode_efficiency / (MODEL_PARAMS * BYTES_PER_PARAM)
    trace = data.trace
    mean_prompt = float(trace.prompt_tokens.mean())
    mean_output = float(trace.output_tokens.mean())
    per_job = mean_prompt / prefill + mean_output / decode
    return prefill, decode, (mean_prompt + mean_output) / per_job


def _price_wei(
    config: WorldConfig, usd_h: NDArray[np.float64], tokens_per_s: NDArray[np.float64]
) -> NDArray[np.int64]:
    usd_per_token = usd_h / (3600.0 * tokens_per_s * config.streams_per_gpu * config.price_utilisation)
    wei = np.rint(usd_per_token / config.eth_usd * WEI_PER_ETH)
    result: NDArray[np.int64] = np.clip(wei, 1, 2**62).astype(np.int64)
    return result


def _stakes(config: WorldConfig, rng: np.random.Generator, n: int) -> NDArray[np.object_]:
    gwei = config.stake_median_eth * 1e9 * np.exp(rng.normal(0.0, config.stake_sigma, n))
    floor_gwei = -(-config.min_stake_wei // 10**9)
    gwei_int = np.maximum(np.rint(gwei).astype(np.int64), floor_gwei)
    stakes = np.empty(n, dtype=object)
    stakes[:] = [max(int(g) * 10**9, config.min_stake_wei) for g in gwei_int]
    return stakes


def _providers(data: WorldData, config: WorldConfig, rng: np.random.Generator) -> Providers:
    n = config.providers
    country = rng.choice(
        len(data.countries), size=n, p=_country_weights(data, config.provider_country_exponent)
    )
    gpu = rng.choice(len(data.gpus), size=n, p=_gpu_weights(data, config))
    counts = np.array([c for c, _ in config.gpu_counts])
    probs = np.array([p for _, p in config.gpu_counts], dtype=np.float64)
    gpus = counts[rng.choice(len(counts), size=n, p=probs / probs.sum())]
    prefill, decode, tokens = _rates(data, config, gpu.astype(np.int32))
    usd_h = data.prices.sample(gpu, rng.random(n))
    honest = rng.random(n) >= config.cheater_share
    low, high = config.cheat_rate
    cheat = np.where(honest, 0.0, rng.uniform(low, high, n))
    spread = np.exp(rng.normal(0.0, 0.5, (2, n)))
    return Providers(
        country=country.astype(np.int32),
        gpu=gpu.astype(np.int32),
        gpus=gpus.astype(np.int32),
        slots=(gpus * config.streams_per_gpu).astype(np.int32),
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        flops_per_s=prefill * FLOPS_PER_TOKEN,
        tokens_per_s=tokens,
        price_usd_h=usd_h,
        price_wei_per_unit=_price_wei(config, usd_h, tokens),
        stake_wei=_stakes(config, rng, n),
        honest=honest,
        cheat_rate=cheat,
        failure_rate=np.where(honest, config.failure_rate, 0.0),
        mtbf_s=config.mean_up_s * spread[0],
        mttr_s=config.mean_down_s * spread[1],
        address_salt=config.seed.to_bytes(8, "big") + b"provider",
    )


def _hyperscale(data: WorldData, config: WorldConfig, market_slots: int) -> Providers:
    country = data.country_index(config.hyperscale_region)
    gpu_index = data.gpu_index(config.hyperscale_gpu)
    per_instance = 8 * config.streams_per_gpu
    slots_total = config.hyperscale_slots if config.hyperscale_slots is not None else market_slots
    n = max(1, -(-slots_total // per_instance))
    gpu = np.full(n, gpu_index, dtype=np.int32)
    prefill, decode, tokens = _rates(data, config, gpu)
    usd_h = np.full(n, float(config.hyperscale_price_usd_h))
    return Providers(
        country=np.full(n, country, dtype=np.int32),
        gpu=gpu,
        gpus=np.full(n, 8, dtype=np.int32),
        slots=np.full(n, per_instance, dtype=np.int32),
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        flops_per_s=prefill * FLOPS_PER_TOKEN,
        tokens_per_s=tokens,
        price_usd_h=usd_h,
        price_wei_per_unit=_price_wei(config, usd_h, tokens),
        stake_wei=np.array([config.min_stake_wei] * n, dtype=object),
        honest=np.ones(n, dtype=bool),
        cheat_rate=np.zeros(n),
        failure_rate=np.zeros(n),
        mtbf_s=np.full(n, math.inf),
        mttr_s=np.full(n, config.mean_down_s),
        address_salt=config.seed.to_bytes(8, "big") + b"hyperscale",
    )


def build_world(data: WorldData, config: WorldConfig) -> World:
    """Draw a world from the data (pure function of ``data`` and ``config``; the seed fixes every draw).

    Raises:
        WorldConfigError: If ``config`` names a country or GPU model the data lacks.
    """
    rng = np.random.default_rng([config.seed, 0x5EED])
    providers = _providers(data, config, rng)
    try:
        hyperscale = _hyperscale(data, config, int(providers.slots.sum()))
    except SimError as err:
        raise WorldConfigError(
            "hyperscale_region/hyperscale_gpu", config.hyperscale_region, str(err)
        ) from err
    regions = tuple(region_of(c) for c in data.countries)
    n = config.clients
    client_country = rng.choice(
        len(data.countries), size=n, p=_country_weights(data, config.client_country_exponent)
    )
    activity = np.exp(rng.normal(0.0, config.client_activity_sigma, n))
    interactive = rng.random(n) < config.interactive_share
    target = np.where(
        interactive,
        rng.uniform(*config.interactive_target_ms, n),
        rng.uniform(*config.batch_target_ms, n),
    )
    eu_countries = tuple(sorted(EU_COUNTRIES & set(data.countries)))
    is_eu = np.array([c in EU_COUNTRIES for c in data.countries])
    restricted = is_eu[client_country] & (rng.random(n) < config.residency_share)
    residency = np.where(restricted, 0, -1).astype(np.int16)
    return World(
        data=data,
        config=config,
        providers=providers,
        hyperscale=hyperscale,
        country_region=regions,
        client_country=client_country.astype(np.int32),
        client_weight=activity / activity.sum(),
        client_interactive=interactive,
        client_latency_target_ms=target,
        client_residency=residency,
        residency_sets=(eu_countries,),
        residency_allowed=is_eu[None, :].copy(),
    )
