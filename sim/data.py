"""The simulator's real-world inputs, read from the shared public data folder (see its SOURCE.txt files).

:func:`load_world_data` reads, once per folder (cached):

- **Countries and RTTs** — RIPE Atlas country-to-country ping statistics (``latency_ripe_atlas_country``,
  RIPE NCC, attribution) joined with country centroids (``country_centroids``, Google DSPL, BSD-3-Clause).
  The data carry only count, mean, standard deviation, min and max per country pair. The minimum is useless
  (mis-geolocated and anycast targets: GB-US 0.12 ms) and the mean is pulled up by heavy tails (timeouts up
  to 300 s), so the RTT of a pair is the **median of a log-normal with the pair's mean and standard
  deviation**: ``mean / sqrt(1 + (std / mean)**2)`` (DE-FR 25 ms, DE-US 69 ms, US-JP 109 ms). A pair counts
  as *measured* when it has at least :data:`MIN_PINGS` pings and its estimate is not below half the fibre
  bound (great-circle distance at 2/3 c, there and back: ``km / 100`` ms). Every other pair is filled by a
  model fitted on the measured pairs: ``rtt = slope * km + h_i + h_j`` with one non-negative access "height"
  per country (as Vivaldi's heights), fitted by Huber-weighted least squares with a small ridge on the
  heights; on held-out measured pairs it is off by ~13 % (median), half the error of a plain
  distance line. The matrix is symmetric, floored at the fibre bound, and its diagonal is the intra-country
  RTT: the same estimate on the country's own row of the statistics where there is one, else the median of
  the measured diagonals. (``intra_rtt_stat.csv.gz`` holds one global intra-ASN figure, kept as
  :attr:`WorldData.intra_asn_rtt_ms` for reference: intra-AS, not intra-country, so not used per country.)
- **Country weights** — pings per country (sum of ``rtt_cnt`` over its pairs): a proxy for how much
  connected infrastructure a country has (RIPE Atlas probes and anchors sit where networks are).
- **GPU models** — peak FP16 (dense tensor-core) and FP32 TFLOPS, memory and bandwidth from the IGUANE table
  (``gpu_specs_iguane``, MIT), and from Epoch AI's hardware table (``gpu_specs_epoch``, CC-BY 4.0) for the
  H200, GH200, B200 and RTX 3090 which IGUANE lacks.
- **Prices** — Prime Intellect marketplace snapshots (``gpu_prices_primeintellect_timeseries``, MIT), every
  30 minutes from 2025-10-19 to 2025-11-16, $/GPU-hour quantiles per snapshot: per model the series over time
  and the time-median of each quantile. Consumer and workstation GPUs (RTX 4090, RTX 3090, RTX A6000, L40S)
  have no series there; their price is a documented figure (:data:`COMMUNITY_PRICES_USD_H`, RunPod
  community-cloud list prices, 2025), with the priced models' median relative spread.
- **Trace** — Azure LLM inference trace 2023 (``trace_azure_llm_2023``, CC-BY 4.0, Patel et al.,
  "Splitwise", ISCA 2024): 8,819 code and 19,366 conversation requests over one hour, merged in time order,
  with prompt (context) and output (generated) token counts.

The folder is ``$PROXIMA_DATA_DIR`` or ``<repository>/../shared/data`` (:func:`default_data_dir`).
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from proxima.sim.errors import SimError

__all__ = [
    "COMMUNITY_PRICES_USD_H",
    "DATA_ENV",
    "GPU_CATALOGUE",
    "MIN_PINGS",
    "SOURCES",
    "TRACE_KINDS",
    "DataFileError",
    "DataFolderError",
    "GpuModel",
    "PriceTable",
    "RttModel",
    "Trace",
    "WorldData",
    "default_data_dir",
    "great_circle_km",
    "load_world_data",
]

log = logging.getLogger(__name__)

DATA_ENV: Final = "PROXIMA_DATA_DIR"
"""Environment variable naming the shared data folder."""
MIN_PINGS: Final = 100
"""Pings a country pair needs before its statistic counts as a measurement."""
TRACE_KINDS: Final = ("code", "conversation")
"""Values of :attr:`Trace.kind`: index 0 is the code trace, 1 the conversation trace."""

_EARTH_KM: Final = 6371.0
_FIBRE_KM_PER_MS: Final = 100.0
"""Round trip at 2/3 c: 200 km/ms one way, so ``km / 100`` ms there and back."""
_PLACEHOLDER_COUNTRIES: Final = frozenset({"EU", "None", "Unknown", ""})
_QUANTILE_PROBS: Final = (0.0, 0.10, 0.25, 0.50, 0.75, 0.90, 1.0)
_QUANTILE_KEYS: Final = ("min", "p10", "p25", "median", "p75", "p90", "max")

GPU_CATALOGUE: Final[Mapping[str, tuple[str, str, str | None]]] = {
    # name -> (spec source, row name in that table, Prime Intellect series file stem or None)
    "A100-PCIe-80GB": ("iguane", "A100-PCIe-80GB", "A100_80GB_PCIe"),
    "A100-SXM4-80GB": ("iguane", "A100-SXM4-80GB", "A100_80GB_SXM4"),
    "H100-PCIe-80GB": ("iguane", "H100-PCIe-80GB", "H100_80GB_PCIe"),
    "H100-SXM5-80GB": ("iguane", "H100-SXM5-80GB", "H100_80GB_SXM5"),
    "H200-141GB": ("epoch", "NVIDIA H200 SXM", "H200_141GB"),
    "GH200-96GB": ("epoch", "NVIDIA GH200", "GH200_96GB"),
    "B200-180GB": ("epoch", "NVIDIA B200", "B200_180GB"),
    "RTX-4090": ("iguane", "RTX-4090", None),
    "RTX-3090": ("epoch", "NVIDIA GeForce RTX 3090", None),
    "A6000": ("iguane", "A6000", None),
    "L40S": ("iguane", "L40S", None),
}
"""The simulated GPU models: every model with a Prime Intellect price series, plus the consumer and
workstation cards that community providers bring (all hold a 16 GB FP16 8B-parameter model)."""

_MEMORY_FROM_NAME_GB: Final[Mapping[str, float]] = {"H200-141GB": 141.0, "GH200-96GB": 96.0}
"""Epoch leaves these boards' memory empty; the size is in the model's name."""

COMMUNITY_PRICES_USD_H: Final[Mapping[str, float]] = {
    "RTX-4090": 0.34,
    "RTX-3090": 0.22,
    "A6000": 0.33,
    "L40S": 0.79,
}
"""$/GPU-hour for models without a series in the shared data: RunPod community-cloud on-demand list prices
(runpod.io/pricing, 2025). A documented figure, not measured here."""


SOURCES: Final[Mapping[str, str]] = {
    "latency_ripe_atlas_country": "RIPE Atlas country-to-country ping RTT statistics, 2025 (RIPE NCC; "
    "processed by IOG, github.com/input-output-hk/ouroboros-leios data/internet), attribution",
    "country_centroids": "Google DSPL canonical countries.csv (github.com/google/dspl), BSD-3-Clause",
    "gpu_specs_iguane": "IGUANE GPU spec table (github.com/mila-iqia/IGUANE), MIT",
    "gpu_specs_epoch": "Epoch AI, 'Data on Machine Learning Hardware' (epoch.ai), CC-BY 4.0",
    "gpu_prices_primeintellect_timeseries": "Compute Price Tracker, Prime Intellect marketplace snapshots "
    "2025-10-19..2025-11-16 (github.com/tugot17/gpu-price-tracker), MIT",
    "trace_azure_llm_2023": "Azure LLM inference trace 2023 (github.com/Azure/AzurePublicDataset; "
    "Patel et al., "
    "'Splitwise', ISCA 2024), CC-BY 4.0",
}
"""Citation per data folder read, for reports built on the simulator (each folder's SOURCE.txt has more)."""


class DataFolderError(SimError, FileNotFoundError):
    """The shared data folder, or one of its sub-folders, is missing."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        super().__init__(
            f"{what} not found at {path}: put the shared public data there (see ../shared/data/README.md) "
            f"or set {DATA_ENV} to the folder that holds it"
        )


class DataFileError(SimError, ValueError):
    """A data file is unreadable or malformed; the message names the file and what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class GpuModel:
    """One GPU model's peak figures.

    Attributes:
        name: The simulator's name (a key of :data:`GPU_CATALOGUE`).
        fp16_tflops: Dense tensor-core FP16 TFLOPS.
        fp32_tflops: FP32 TFLOPS.
        memory_gb: Memory per board, GB.
        bandwidth_gbps: Memory bandwidth, GB/s.
        source: ``"iguane"`` or ``"epoch"``.
    """

    name: str
    fp16_tflops: float
    fp32_tflops: float
    memory_gb: float
    bandwidth_gbps: float
    source: str


@dataclass(frozen=True)
class PriceTable:
    """$/GPU-hour by GPU model (row ``i`` is ``models[i]``, in the order of :attr:`WorldData.gpus`).

    Attributes:
        models: GPU model names.
        quantile_probs: Probabilities of the quantile columns (0, .1, .25, .5, .75, .9, 1).
        quantiles_usd_h: Shape ``(M, 7)``: per model, the median over snapshots of each snapshot quantile
            (min, p10, p25, median, p75, p90, max); sampling ``u ~ U(0, 1)`` through them draws from the
            market's spread.
        from_series: Whether the model's prices come from the Prime Intellect series (else
            :data:`COMMUNITY_PRICES_USD_H`).
        offers: Median number of offers per snapshot (0 without a series): the market's relative supply.
        times: Unix seconds of the snapshots (union over models, sorted).
        median_series_usd_h: Shape ``(T, M)``: each snapshot's median price, ``nan`` where a model had none.
    """

    models: tuple[str, ...]
    quantile_probs: NDArray[np.float64]
    quantiles_usd_h: NDArray[np.float64]
    from_series: NDArray[np.bool_]
    offers: NDArray[np.float64]
    times: NDArray[np.float64]
    median_series_usd_h: NDArray[np.float64]

    @property
    def median_usd_h(self) -> NDArray[np.float64]:
        """Median $/GPU-hour per model."""
        return self.quantiles_usd_h[:, 3]

    def sample(self, gpu: NDArray[np.integer], u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Prices ($/GPU-hour) at market quantile ``u`` (in [0, 1]) for GPU model indices ``gpu``.

        Linear interpolation between the quantile points of each model, vectorised.
        """
        probs = self.quantile_probs
        seg = np.clip(np.searchsorted(probs, u, side="right") - 1, 0, len(probs) - 2)
        lo = self.quantiles_usd_h[gpu, seg]
        hi = self.quantiles_usd_h[gpu, seg + 1]
        frac = (u - probs[seg]) / (probs[seg + 1] - probs[seg])
        result: NDArray[np.float64] = lo + frac * (hi - lo)
        return result


@dataclass(frozen=True)
class Trace:
    """The Azure LLM trace, code and conversation merged in time order.

    Attributes:
        t: Seconds since the first request.
        prompt_tokens: Context tokens per request.
        output_tokens: Generated tokens per request.
        kind: Index into :data:`TRACE_KINDS`.
    """

    t: NDArray[np.float64]
    prompt_tokens: NDArray[np.int32]
    output_tokens: NDArray[np.int32]
    kind: NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last request."""
        return float(self.t[-1] - self.t[0])


@dataclass(frozen=True)
class RttModel:
    """The fitted fill-in model: ``rtt_ms = slope_ms_per_km * km + height_ms[i] + height_ms[j]``.

    Attributes:
        slope_ms_per_km: Milliseconds per great-circle km.
        height_ms: Per-country access term (ms, >= 0), in the order of :attr:`WorldData.countries`.
        median_abs_error_ms: Median absolute error on the measured pairs it was fitted on.
    """

    slope_ms_per_km: float
    height_ms: NDArray[np.float64]
    median_abs_error_ms: float


@dataclass(frozen=True)
class WorldData:
    """Everything the world builder needs from the shared data (see the module docstring for sources).

    Attributes:
        data_dir: The folder read.
        countries: ISO-2 codes (sorted) with a centroid and at least one RIPE Atlas pair.
        names: Country names (from the centroid table).
        lat: Centroid latitude per country.
        lon: Centroid longitude per country.
        pings: RIPE Atlas pings per country (sum of ``rtt_cnt`` over its pairs): the infrastructure proxy
            used to weight where providers and clients are.
        rtt_ms: Shape ``(C, C)``, symmetric RTT in ms; measured where :attr:`rtt_measured`, else fitted;
            the diagonal is the intra-country RTT.
        rtt_measured: Shape ``(C, C)``, which entries come from measurements.
        rtt_model: The fitted fill-in model.
        intra_asn_rtt_ms: The global intra-ASN RTT (log-normal median of ``intra_rtt_stat``), for reference.
        gpus: GPU models (order of :data:`GPU_CATALOGUE`).
        prices: Prices per GPU model (same order).
        trace: The Azure LLM trace.
    """

    data_dir: Path
    countries: tuple[str, ...]
    names: tuple[str, ...]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    pings: NDArray[np.float64]
    rtt_ms: NDArray[np.float64]
    rtt_measured: NDArray[np.bool_]
    rtt_model: RttModel
    intra_asn_rtt_ms: float
    gpus: tuple[GpuModel, ...]
    prices: PriceTable
    trace: Trace
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({c: i for i, c in enumerate(self.countries)})

    def country_index(self, code: str) -> int:
        """Row of a country code.

        Raises:
            DataFileError: If the country is not in the data (the message lists how to find valid codes).
        """
        try:
            return self._index[code]
        except KeyError:
            raise DataFileError(
                self.data_dir / "latency_ripe_atlas_country",
                f"no country {code!r} in the RTT data ({len(self.countries)} countries, e.g. DE, US, JP)",
            ) from None

    def gpu_index(self, name: str) -> int:
        """Index of a GPU model by name.

        Raises:
            DataFileError: If the model is not simulated.
        """
        for i, gpu in enumerate(self.gpus):
            if gpu.name == name:
                return i
        raise DataFileError(
            self.data_dir, f"no GPU model {name!r}; known: {', '.join(g.name for g in self.gpus)}"
        )


def default_data_dir() -> Path:
    """``$PROXIMA_DATA_DIR`` if set, else ``<repository>/../shared/data``.

    Raises:
        DataFolderError: If the folder does not exist (naming it and how to provide it).
    """
    env = os.environ.get(DATA_ENV)
    path = Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if not path.is_dir():
        raise DataFolderError(path, "the shared data folder")
    return path


def great_circle_km(
    lat1: NDArray[np.float64], lon1: NDArray[np.float64], lat2: NDArray[np.float64], lon2: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Great-circle distance (haversine, km), broadcasting over its arguments."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(lon2 - lon1)
    h = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    km: NDArray[np.float64] = 2 * _EARTH_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return km


def load_world_data(data_dir: Path | None = None) -> WorldData:
    """Read the shared data folder into a :class:`WorldData` (cached per resolved folder).

    Args:
        data_dir: The folder; default :func:`default_data_dir`.

    Raises:
        DataFolderError: If the folder or one of the sub-folders used is missing.
        DataFileError: If a file is malformed.
    """
    path = default_data_dir() if data_dir is None else Path(data_dir)
    return _load_cached(path.resolve())


@functools.lru_cache(maxsize=4)
def _load_cached(path: Path) -> WorldData:
    if not path.is_dir():
        raise DataFolderError(path, "the shared data folder")
    for sub in (
        "latency_ripe_atlas_country",
        "country_centroids",
        "gpu_specs_iguane",
        "gpu_specs_epoch",
        "gpu_prices_primeintellect_timeseries",
        "trace_azure_llm_2023",
    ):
        if not (path / sub).is_dir():
            raise DataFolderError(path / sub, f"data sub-folder {sub}/")
    centroids, names = _read_centroids(path / "country_centroids" / "country_centroids.csv")
    pairs = _read_pairs(path / "latency_ripe_atlas_country" / "country_rtt_stat.csv")
    countries = tuple(sorted({c for a, b, *_ in pairs for c in (a, b) if c in centroids}))
    lat = np.array([centroids[c][0] for c in countries])
    lon = np.array([centroids[c][1] for c in countries])
    pings, rtt, measured, model = _rtt_matrix(countries, lat, lon, pairs)
    intra = _read_intra(path / "latency_ripe_atlas_country" / "intra_rtt_stat.csv.gz")
    gpus = _read_gpus(path)
    prices = _read_prices(path / "gpu_prices_primeintellect_timeseries", gpus)
    trace = _read_trace(path / "trace_azure_llm_2023")
    log.info(
        "world data loaded",
        extra={
            "data_dir": str(path),
            "countries": len(countries),
            "measured_pairs": int(np.triu(measured, 1).sum()),
            "gpus": len(gpus),
            "trace_requests": len(trace),
        },
    )
    return WorldData(
        data_dir=path,
        countries=countries,
        names=tuple(names[c] for c in countries),
        lat=lat,
        lon=lon,
        pings=pings,
        rtt_ms=rtt,
        rtt_measured=measured,
        rtt_model=model,
        intra_asn_rtt_ms=intra,
        gpus=gpus,
        prices=prices,
        trace=trace,
    )


# --- countries and RTTs ----------------------------------------------------------------------------------


def _open_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataFolderError(path, "data file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise DataFileError(path, f"missing column(s) {', '.join(missing)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataFileError(path, f"unreadable: {err}") from err


def _float(path: Path, row: Mapping[str, str], column: str, line: int) -> float:
    try:
        return float(row[column])
    except (TypeError, ValueError) as err:
        raise DataFileError(path, f"row {line}: {column} is not a number: {row[column]!r}") from err


def _read_centroids(path: Path) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    rows = _open_csv(path, ("iso2", "lat", "lon", "name"))
    centroids: dict[str, tuple[float, float]] = {}
    names: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        centroids[row["iso2"]] = (_float(path, row, "lat", line), _float(path, row, "lon", line))
        names[row["iso2"]] = row["name"]
    return centroids, names


def _lognormal_median(mean: float, std: float) -> float:
    if not mean > 0:
        return math.nan
    std = std if math.isfinite(std) and std > 0 else 0.0
    return mean / math.sqrt(1.0 + (std / mean) ** 2)


def _read_pairs(path: Path) -> list[tuple[str, str, float, float]]:
    """(cty1, cty2, pings, log-normal median ms) per row, placeholders dropped."""
    rows = _open_csv(path, ("cty1", "cty2", "rtt_cnt", "rtt_avg", "rtt_std"))
    pairs = []
    for line, row in enumerate(rows, start=2):
        a, b = row["cty1"], row["cty2"]
        if a in _PLACEHOLDER_COUNTRIES or b in _PLACEHOLDER_COUNTRIES:
            continue
        count = _float(path, row, "rtt_cnt", line)
        mean = _float(path, row, "rtt_avg", line)
        std = float(row["rtt_std"]) if row["rtt_std"] not in ("", "nan", "NaN") else 0.0
        pairs.append((a, b, count, _lognormal_median(mean, std)))
    if not pairs:
        raise DataFileError(path, "no country pairs")
    return pairs


def _rtt_matrix(
    countries: tuple[str, ...],
    lat: NDArray[np.float64],
    lon: NDArray[np.float64],
    pairs: list[tuple[str, str, float, float]],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], RttModel]:
    index = {c: i for i, c in enumerate(countries)}
    n = len(countries)
    km = great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    floor = km / _FIBRE_KM_PER_MS
    pings = np.zeros(n)
    est = np.full((n, n), np.nan)
    for a, b, count, pair_rtt in pairs:
        if a not in index or b not in index:
            continue
        i, j = index[a], index[b]
        if i != j:
            pings[i] += count
            pings[j] += count
        else:
            pings[i] += count
        if count >= MIN_PINGS and math.isfinite(pair_rtt) and pair_rtt >= 0.5 * floor[i, j]:
            est[i, j] = est[j, i] = pair_rtt
    measured = np.isfinite(est)
    model = _fit_model(km, est, measured)
    fitted = model.slope_ms_per_km * km + model.height_ms[:, None] + model.height_ms[None, :]
    rtt = np.where(measured, est, np.maximum(fitted, floor))
    diag = np.diag(est).copy()
    diag_fill = float(np.nanmedian(diag)) if np.isfinite(diag).any() else float(np.median(fitted))
    np.fill_diagonal(rtt, np.where(np.isfinite(diag), diag, diag_fill))
    rtt = (rtt + rtt.T) / 2
    return pings, rtt, measured, model


def _fit_model(km: NDArray[np.float64], est: NDArray[np.float64], measured: NDArray[np.bool_]) -> RttModel:
    """Huber-weighted least squares of ``y = slope * km + h_i + h_j`` over the measured pairs.

    The design is sparse (a distance and two country indicators per row), so the normal equations are built
    with ``bincount`` and solved as one ``(C + 1)``-square system per iteration; a 0.1 ms ridge keeps the
    heights of thinly measured countries near 0.
    """
    n = km.shape[0]
    i, j = np.nonzero(np.triu(measured, 1))
    y = est[i, j]
    x = km[i, j]
    weights = np.ones(len(y))
    beta = np.zeros(n + 1)
    for _ in range(20):
        normal = np.zeros((n + 1, n + 1))
        normal[0, 0] = np.dot(weights, x * x)
        cross = np.bincount(i, weights * x, minlength=n) + np.bincount(j, weights * x, minlength=n)
        normal[0, 1:] = normal[1:, 0] = cross
        block = normal[1:, 1:]
        np.add.at(block, (i, j), weights)
        np.add.at(block, (j, i), weights)
        block[np.diag_indices(n)] += np.bincount(i, weights, minlength=n) + np.bincount(
            j, weights, minlength=n
        )
        block[np.diag_indices(n)] += 0.01
        rhs = np.concatenate(
            [
                [np.dot(weights * x, y)],
                np.bincount(i, weights * y, minlength=n) + np.bincount(j, weights * y, minlength=n),
            ]
        )
        beta = np.linalg.solve(normal, rhs)
        resid = y - (beta[0] * x + beta[1 + i] + beta[1 + j])
        scale = max(1.4826 * float(np.median(np.abs(resid))), 1e-6)
        k = 1.345 * scale
        weights = np.where(np.abs(resid) <= k, 1.0, k / np.maximum(np.abs(resid), 1e-12))
    heights = np.maximum(beta[1:], 0.0)
    # A country with few measured pairs has an unreliable height: use the median country's.
    per_country = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    heights = np.where(per_country >= 3, heights, float(np.median(heights[per_country >= 3])))
    pred = beta[0] * x + heights[i] + heights[j]
    return RttModel(
        slope_ms_per_km=float(beta[0]),
        height_ms=heights,
        median_abs_error_ms=float(np.median(np.abs(pred - y))),
    )


def _read_intra(path: Path) -> float:
    rows = _open_csv(path, ("rtt_avg", "rtt_std"))
    if not rows:
        raise DataFileError(path, "no rows")
    return _lognormal_median(_float(path, rows[0], "rtt_avg", 2), _float(path, rows[0], "rtt_std", 2))


# --- GPUs and prices -------------------------------------------------------------------------------------


def _read_gpus(path: Path) -> tuple[GpuModel, ...]:
    iguane_path = path / "gpu_specs_iguane" / "iguane_gpu_specs.csv"
    epoch_path = path / "gpu_specs_epoch" / "ml_hardware.csv"
    iguane = {r["gpu"]: r for r in _open_csv(iguane_path, ("gpu", "fp16_tflops", "fp32_tflops", "mem_gb"))}
    epoch_cols = (
        "Hardware name",
        "Tensor-FP16/BF16 performance (FLOP/s)",
        "FP16 (half precision) performance (FLOP/s)",
        "FP32 (single precision) performance (FLOP/s)",
        "Memory size per board (Byte)",
        "Memory bandwidth (byte/s)",
    )
    epoch = {r["Hardware name"]: r for r in _open_csv(epoch_path, epoch_cols)}
    gpus = []
    for name, (source, row_name, _) in GPU_CATALOGUE.items():
        if source == "iguane":
            row = iguane.get(row_name)
            if row is None:
                raise DataFileError(iguane_path, f"no row for GPU {row_name!r}")
            gpus.append(
                GpuModel(
                    name=name,
                    fp16_tflops=_float(iguane_path, row, "fp16_tflops", 0),
                    fp32_tflops=_float(iguane_path, row, "fp32_tflops", 0),
                    memory_gb=_float(iguane_path, row, "mem_gb", 0),
                    bandwidth_gbps=_float(iguane_path, row, "membw_gbps", 0),
                    source=source,
                )
            )
            continue
        row = epoch.get(row_name)
        if row is None:
            raise DataFileError(epoch_path, f"no row for GPU {row_name!r}")
        tensor = row[epoch_cols[1]] or row[epoch_cols[2]]
        memory = row[epoch_cols[4]]
        gpus.append(
            GpuModel(
                name=name,
                fp16_tflops=float(tensor) / 1e12 if tensor else math.nan,
                fp32_tflops=_float(epoch_path, row, epoch_cols[3], 0) / 1e12,
                memory_gb=float(memory) / 1e9 if memory else _MEMORY_FROM_NAME_GB[name],
                bandwidth_gbps=_float(epoch_path, row, epoch_cols[5], 0) / 1e9,
                source=source,
            )
        )
    # RTX 3090: Epoch has no tensor-FP16 figure; its FP16 column is the shader rate (35.6 TF). Ampere's
    # dense tensor FP16 with FP16 accumulate is 4x that (142 TF, NVIDIA's GA102 whitepaper).
    fixed = []
    for gpu in gpus:
        if gpu.name == "RTX-3090" and gpu.fp16_tflops < 2 * gpu.fp32_tflops:
            gpu = GpuModel(
                gpu.name, 4 * gpu.fp16_tflops, gpu.fp32_tflops, gpu.memory_gb, gpu.bandwidth_gbps, "epoch"
            )
        if not all(math.isfinite(v) and v > 0 for v in (gpu.fp16_tflops, gpu.memory_gb, gpu.bandwidth_gbps)):
            raise DataFileError(path, f"incomplete figures for GPU {gpu.name}: {gpu}")
        fixed.append(gpu)
    return tuple(fixed)


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _read_prices(folder: Path, gpus: tuple[GpuModel, ...]) -> PriceTable:
    models = tuple(g.name for g in gpus)
    per_model: dict[str, tuple[NDArray[np.float64], NDArray[np.float64], float]] = {}
    for name in models:
        stem = GPU_CATALOGUE[name][2]
        if stem is None:
            continue
        path = folder / f"{stem}.jsonl"
        if not path.is_file():
            raise DataFolderError(path, "price series")
        times, quantiles, offers = [], [], []
        try:
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    stats = record["price_stats"]
                    times.append(_parse_time(record["timestamp"]))
                    quantiles.append([float(stats[k]) for k in _QUANTILE_KEYS])
                    offers.append(float(record.get("availability", {}).get("total", 0)))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataFileError(path, f"snapshot {len(times) + 1}: {err!r}") from err
        if not times:
            raise DataFileError(path, "no snapshots")
        per_model[name] = (np.array(times), np.array(quantiles), float(np.median(offers)))
    all_times = np.unique(np.concatenate([v[0] for v in per_model.values()]))
    quantiles_out = np.zeros((len(models), len(_QUANTILE_PROBS)))
    series = np.full((len(all_times), len(models)), np.nan)
    offers_out = np.zeros(len(models))
    from_series = np.zeros(len(models), dtype=bool)
    relative_spreads = []
    for m, name in enumerate(models):
        if name not in per_model:
            continue
        model_times, q, model_offers = per_model[name]
        quantiles_out[m] = np.sort(np.median(q, axis=0))
        series[np.searchsorted(all_times, model_times), m] = q[:, 3]
        offers_out[m] = model_offers
        from_series[m] = True
        relative_spreads.append(quantiles_out[m] / quantiles_out[m, 3])
    shape = np.median(np.array(relative_spreads), axis=0)
    for m, name in enumerate(models):
        if not from_series[m]:
            quantiles_out[m] = COMMUNITY_PRICES_USD_H[name] * shape
    return PriceTable(
        models=models,
        quantile_probs=np.array(_QUANTILE_PROBS),
        quantiles_usd_h=quantiles_out,
        from_series=from_series,
        offers=offers_out,
        times=all_times,
        median_series_usd_h=series,
    )


# --- trace -----------------------------------------------------------------------------------------------


def _read_trace(folder: Path) -> Trace:
    parts = []
    for kind, name in enumerate(("AzureLLMInferenceTrace_code.csv", "AzureLLMInferenceTrace_conv.csv")):
        path = folder / name
        rows = _open_csv(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
        try:
            stamps = np.array([r["TIMESTAMP"][:26].replace(" ", "T") for r in rows], dtype="datetime64[us]")
            prompt = np.array([int(r["ContextTokens"]) for r in rows], dtype=np.int32)
            output = np.array([int(r["GeneratedTokens"]) for r in rows], dtype=np.int32)
        except ValueError as err:
            raise DataFileError(path, f"bad row: {err}") from err
        if len(rows) == 0:
            raise DataFileError(path, "no requests")
        parts.append((stamps, prompt, output, np.full(len(rows), kind, dtype=np.int8)))
    stamps = np.concatenate([p[0] for p in parts])
    order = np.argsort(stamps, kind="stable")
    t = (stamps[order] - stamps[order][0]).astype("timedelta64[us]").astype(np.float64) / 1e6
    return Trace(
        t=t,
        prompt_tokens=np.concatenate([p[1] for p in parts])[order],
        output_tokens=np.concatenate([p[2] for p in parts])[order],
        kind=np.concatenate([p[3] for p in parts])[order],
    )
