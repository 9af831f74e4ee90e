"""Network latency for matching: Vivaldi predictions, measured RTTs, and the prediction error on real data.

The matching engine predicts the RTT from a client to every offer at once with :func:`predict_rtts` (the
same model as :func:`proxima.sdk.vivaldi.predict_rtt`: distance plus both heights). Measured RTTs override
predictions; :class:`RttTable` keeps them as a moving average per provider and forgets stale ones.

:func:`evaluate_on_ripe_atlas` measures how well the coordinates predict real round trips: it embeds the
countries of the RIPE Atlas country-to-country RTT statistics with :func:`proxima.sdk.vivaldi.update`, using
only a training share of the pairs as measurements, and reports the error on the pairs it never measured.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from eth_utils.address import is_checksum_address
from numpy.typing import NDArray

from proxima.marketplace.errors import MarketError
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import (
    DIMENSIONS,
    InvalidCoordinateError,
    VivaldiCoordinate,
    predict_rtt,
    update,
)

__all__ = [
    "MAX_RTT",
    "InvalidRttError",
    "LatencyDataError",
    "LatencyError",
    "PredictionReport",
    "RttTable",
    "evaluate_on_ripe_atlas",
    "load_ripe_atlas_pairs",
    "predict_rtts",
]

MAX_RTT: Final = 60.0
"""Largest RTT (seconds) accepted as a measurement; anything at or above it is an error, not a network."""

_REQUIRED_COLUMNS: Final = ("cty1", "cty2", "rtt_cnt", "rtt_avg")


class LatencyError(MarketError, ValueError):
    """Bad input to a latency computation (shapes, values); the message says what is wrong."""


class InvalidRttError(LatencyError):
    """An RTT measurement or an RttTable setting is out of range."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} must be {expected}, got {value!r}")


class LatencyDataError(LatencyError):
    """An RTT data file is missing, unreadable or malformed; the message names the file and the row."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# --- prediction ------------------------------------------------------------------------------------------


def predict_rtts(
    client: VivaldiCoordinate, vectors: NDArray[np.float64], heights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Predicted RTTs (seconds) from one client to many coordinates: ``||client.v - v_i|| + client.h + h_i``.

    Equal to :func:`proxima.sdk.vivaldi.predict_rtt` for each row, up to float rounding of the norm (within
    1e-12 relative).

    Args:
        client: The client's coordinate.
        vectors: Shape ``(n, client.dimensions)``, the Euclidean parts in seconds.
        heights: Shape ``(n,)``, the heights in seconds (>= 0).

    Returns:
        A float64 array of ``n`` predicted RTTs.

    Raises:
        LatencyError: If the shapes do not match or a value is not finite or a height is negative.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    heights = np.asarray(heights, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[1] != client.dimensions:
        raise LatencyError(
            f"vectors must have shape (n, {client.dimensions}) for a {client.dimensions}-D client, "
            f"got {vectors.shape}"
        )
    if heights.shape != (vectors.shape[0],):
        raise LatencyError(f"heights must have shape ({vectors.shape[0]},), got {heights.shape}")
    if not (np.isfinite(vectors).all() and np.isfinite(heights).all()):
        raise LatencyError("vectors and heights must be finite")
    if (heights < 0).any():
        raise LatencyError("heights must be >= 0")
    diff = vectors - np.asarray(client.vector, dtype=np.float64)
    distances = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    result: NDArray[np.float64] = distances + client.height + heights
    return result


# --- measurements ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    rtt: float
    at: float
    samples: int


class RttTable:
    """Measured RTTs by provider: an exponentially weighted moving average that expires.

    Safe to use from several threads (the libp2p thread writes, the gateway reads).

    Args:
        alpha: Weight of a new sample in the average, in (0, 1].
        max_age: Seconds after the last sample when an entry no longer counts.
        max_entries: Most providers kept; the stalest entry makes room for a new one.
        clock: Monotonic time source (seconds).

    Raises:
        InvalidRttError: If a setting is out of range.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        max_age: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha <= 1.0:
            raise InvalidRttError("alpha", alpha, "a number in (0, 1]")
        if isinstance(max_age, bool) or not isinstance(max_age, int | float) or not 0.0 < max_age < math.inf:
            raise InvalidRttError("max_age", max_age, "a positive finite number of seconds")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise InvalidRttError("max_entries", max_entries, "a positive int")
        self._alpha = float(alpha)
        self._max_age = float(max_age)
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[Address, _Entry] = {}
        self._lock = threading.Lock()

    def observe(self, provider: Address, rtt: float) -> None:
        """Fold one measured RTT into the provider's average.

        Args:
            provider: The provider's checksummed address.
            rtt: The measured round trip in seconds, ``0 < rtt < 60``.

        Raises:
            InvalidRttError: If the address is not checksummed or the RTT is out of range.
        """
        if not isinstance(provider, str) or not is_checksum_address(provider):
            raise InvalidRttError("provider", provider, "a checksummed address")
        if (
            isinstance(rtt, bool)
            or not isinstance(rtt, int | float)
            or not math.isfinite(rtt)
            or not 0.0 < rtt < MAX_RTT
        ):
            raise InvalidRttError("rtt", rtt, f"a number of seconds in (0, {MAX_RTT})")
        now = self._clock()
        with self._lock:
            entry = self._entries.get(provider)
            if entry is None or now - entry.at > self._max_age:
                if entry is None and len(self._entries) >= self._max_entries:
                    self._evict_locked(now)
                self._entries[provider] = _Entry(rtt=float(rtt), at=now, samples=1)
            else:
                entry.rtt = self._alpha * float(rtt) + (1.0 - self._alpha) * entry.rtt
                entry.at = now
                entry.samples += 1

    def get(self, provider: Address) -> float | None:
        """The provider's average RTT in seconds, or None if never measured or expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(provider)
            if entry is None:
                return None
            if now - entry.at > self._max_age:
                del self._entries[provider]
                return None
            return entry.rtt

    def snapshot(self) -> dict[Address, float]:
        """Every live average, by provider address in numeric order; expired entries are dropped."""
        now = self._clock()
        with self._lock:
            expired = [a for a, e in self._entries.items() if now - e.at > self._max_age]
            for address in expired:
                del self._entries[address]
            return {a: self._entries[a].rtt for a in sorted(self._entries, key=str.lower)}

    def forget(self, provider: Address) -> None:
        """Drop the provider's measurements (no error if there are none)."""
        with self._lock:
            self._entries.pop(provider, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _evict_locked(self, now: float) -> None:
        expired = [a for a, e in self._entries.items() if now - e.at > self._max_age]
        for address in expired:
            del self._entries[address]
        if len(self._entries) >= self._max_entries:
            stalest = min(self._entries, key=lambda a: (self._entries[a].at, a))
            del self._entries[stalest]


# --- prediction error on RIPE Atlas ----------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionReport:
    """How well Vivaldi coordinates predict RTTs they were not trained on.

    Attributes:
        pairs: Held-out country pairs the error is measured on.
        train_pairs: Pairs whose RTTs were fed to the coordinates.
        countries: Countries embedded.
        rounds: Update rounds (each country folds one sample per round).
        dimensions: Dimensions of the Euclidean part.
        median_abs_error_ms: Median of ``|predicted - measured|`` over the held-out pairs, in ms.
        p90_abs_error_ms: Its 90th percentile, in ms.
        median_rel_error: Median of ``|predicted - measured| / measured``.
        p90_rel_error: Its 90th percentile.
        baseline_median_rel_error: The same median for the best constant guess (the training median RTT),
            to show what the coordinates add.
        train_median_rel_error: Median relative error on the training pairs (fit, not prediction).
        median_rtt_ms: Median measured RTT of the held-out pairs, in ms.
        seed: Seed of the split and of the neighbour draws.
        min_pings: Pairs with fewer pings were left out.
        source: The data file.
    """

    pairs: int
    train_pairs: int
    countries: int
    rounds: int
    dimensions: int
    median_abs_error_ms: float
    p90_abs_error_ms: float
    median_rel_error: float
    p90_rel_error: float
    baseline_median_rel_error: float
    train_median_rel_error: float
    median_rtt_ms: float
    seed: int
    min_pings: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return asdict(self)


def load_ripe_atlas_pairs(csv_path: Path, *, min_pings: int = 1000) -> dict[tuple[str, str], float]:
    """RTTs between country pairs from a RIPE Atlas country statistics CSV.

    The file has columns ``cty1, cty2, rtt_cnt, rtt_avg`` (ms; more columns are ignored), one row per
    unordered pair. Rows of one country with itself, with a side that is not an ISO alpha-2 code (the data
    has ``None`` and ``Unknown`` for addresses it could not place), with fewer than ``min_pings`` pings or
    without a positive RTT below a minute are skipped.

    Args:
        csv_path: The CSV file.
        min_pings: Fewest pings for a pair to count.

    Returns:
        RTT in seconds by ``(a, b)`` with ``a < b``, in sorted order.

    Raises:
        LatencyDataError: If the file cannot be read, lacks a column or has a malformed row.
    """
    pairs: dict[tuple[str, str], float] = {}
    try:
        with csv_path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise LatencyDataError(csv_path, f"missing column(s) {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                a, b = (row["cty1"] or "").strip(), (row["cty2"] or "").strip()
                if not (_is_country(a) and _is_country(b)):
                    continue  # "None"/"Unknown": the address was not geolocated
                try:
                    count = int(row["rtt_cnt"])
                    rtt_ms = float(row["rtt_avg"])
                except (TypeError, ValueError) as err:
                    raise LatencyDataError(csv_path, f"row {line}: rtt_cnt/rtt_avg not numbers") from err
                if (
                    a == b
                    or count < min_pings
                    or not (math.isfinite(rtt_ms) and 0.0 < rtt_ms < MAX_RTT * 1e3)
                ):
                    continue
                pairs[(min(a, b), max(a, b))] = rtt_ms / 1000.0
    except OSError as err:
        raise LatencyDataError(csv_path, f"cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise LatencyDataError(csv_path, "not UTF-8 text") from err
    return dict(sorted(pairs.items()))


def evaluate_on_ripe_atlas(
    csv_path: Path,
    *,
    seed: int = 0,
    rounds: int = 400,
    train_share: float = 0.8,
    min_pings: int = 1000,
    dimensions: int = DIMENSIONS,
) -> PredictionReport:
    """The prediction error of Vivaldi coordinates on RIPE Atlas country-to-country RTTs.

    The pairs are split at random (``seed``) into a training share and held-out pairs. Every round, each
    country (in sorted order) measures one of its training neighbours, drawn at random, and folds that RTT
    into its coordinate with :func:`proxima.sdk.vivaldi.update`, as a node's coordinate service does. The
    error is then measured on the held-out pairs, which no country ever measured.

    Args:
        csv_path: The RIPE Atlas ``country_rtt_stat.csv`` (or the committed extract of it).
        seed: Seed of the split and the neighbour draws (same seed, same report).
        rounds: Update rounds.
        train_share: Share of the pairs used as measurements, in (0, 1).
        min_pings: Pairs with fewer pings are left out (their means are noise).
        dimensions: 2 or 3.

    Returns:
        The report.

    Raises:
        LatencyDataError: If the file is unreadable or too small to split.
        LatencyError: If an argument is out of range.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LatencyError(f"rounds must be a positive int, got {rounds!r}")
    if not isinstance(train_share, int | float) or not 0.0 < train_share < 1.0:
        raise LatencyError(f"train_share must be in (0, 1), got {train_share!r}")
    if dimensions not in (2, 3):
        raise LatencyError(f"dimensions must be 2 or 3, got {dimensions!r}")
    pairs = load_ripe_atlas_pairs(csv_path, min_pings=min_pings)
    keys = list(pairs)
    rng = random.Random(seed)
    rng.shuffle(keys)
    cut = round(len(keys) * train_share)
    train, held_out = sorted(keys[:cut]), sorted(keys[cut:])
    if not train or not held_out:
        raise LatencyDataError(csv_path, f"{len(keys)} usable pairs cannot be split into training and test")

    countries = sorted({c for pair in keys for c in pair})
    neighbours: dict[str, list[str]] = {c: [] for c in countries}
    for a, b in train:
        neighbours[a].append(b)
        neighbours[b].append(a)
    coords = {c: VivaldiCoordinate.origin(dimensions) for c in countries}
    active = [c for c in countries if neighbours[c]]
    for _ in range(rounds):
        for country in active:
            other = rng.choice(neighbours[country])
            rtt = pairs[(min(country, other), max(country, other))]
            try:
                coords[country] = update(
                    coords[country], coords[other], rtt, tiebreak=(country + other).encode()
                )
            except InvalidCoordinateError as err:  # pragma: no cover - pairs are validated above
                raise LatencyDataError(csv_path, f"pair {country}-{other}: {err}") from err

    def errors(subset: list[tuple[str, str]]) -> tuple[list[float], list[float]]:
        absolute = [abs(predict_rtt(coords[a], coords[b]) - pairs[(a, b)]) for a, b in subset]
        relative = [e / pairs[p] for e, p in zip(absolute, subset, strict=True)]
        return absolute, relative

    absolute, relative = errors(held_out)
    _, train_relative = errors(train)
    constant = statistics.median(pairs[p] for p in train)
    baseline = [abs(constant - pairs[p]) / pairs[p] for p in held_out]
    return PredictionReport(
        pairs=len(held_out),
        train_pairs=len(train),
        countries=len(countries),
        rounds=rounds,
        dimensions=dimensions,
        median_abs_error_ms=statistics.median(absolute) * 1e3,
        p90_abs_error_ms=_quantile(absolute, 0.9) * 1e3,
        median_rel_error=statistics.median(relative),
        p90_rel_error=_quantile(relative, 0.9),
        baseline_median_rel_error=statistics.median(baseline),
        train_median_rel_error=statistics.median(train_relative),
        median_rtt_ms=statistics.median(pairs[p] for p in held_out) * 1e3,
        seed=seed,
        min_pings=min_pings,
        source=str(csv_path),
    )


def _is_country(code: str) -> bool:
    return len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=np.float64), q))
