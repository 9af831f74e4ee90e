"""Vivaldi coordinates: the update rule, determinism, and accuracy on synthetic and real (RIPE Atlas) RTTs."""

from __future__ import annotations

import csv
import math
import os
import random
import statistics
from pathlib import Path

import pytest

from proxima.sdk.vivaldi import (
    MAX_ERROR,
    MIN_ERROR,
    MIN_HEIGHT,
    InvalidCoordinateError,
    VivaldiCoordinate,
    predict_rtt,
    update,
)

DATA = Path(
    os.environ.get("PROXIMA_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data")
)
# The shared raw file when it is beside the checkout; otherwise the committed extract of the same rows
# (pairs with >= 1000 pings; see tests/data/ripe_atlas_country_rtt.SOURCE.txt).
RIPE_RAW = DATA / "latency_ripe_atlas_country" / "country_rtt_stat.csv"
RIPE = (
    RIPE_RAW
    if RIPE_RAW.is_file()
    else Path(__file__).resolve().parents[1] / "data" / "ripe_atlas_country_rtt.csv"
)


def coord(*vector: float, height: float = MIN_HEIGHT, error: float = 0.5) -> VivaldiCoordinate:
    return VivaldiCoordinate(vector=tuple(vector), height=height, error=error)


# --- the model -------------------------------------------------------------------------------------------


def test_predict_rtt_isDistancePlusBothHeights() -> None:
    a = coord(0.0, 0.0, height=0.002)
    b = coord(0.03, 0.04, height=0.005)
    assert predict_rtt(a, b) == pytest.approx(0.05 + 0.002 + 0.005)
    assert predict_rtt(a, b) == predict_rtt(b, a)


def test_origin_startsWithMaximalErrorAndMinimalHeight() -> None:
    origin = VivaldiCoordinate.origin()
    assert origin.vector == (0.0, 0.0, 0.0)
    assert origin.height == MIN_HEIGHT
    assert origin.error == MAX_ERROR
    assert VivaldiCoordinate.origin(2).dimensions == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vector": (0.0,)}, "vector"),
        ({"vector": (0.0, 0.0, 0.0, 0.0)}, "vector"),
        ({"vector": [0.0, 0.0]}, "vector"),
        ({"vector": (math.nan, 0.0)}, "vector[0]"),
        ({"vector": (0.0, math.inf)}, "vector[1]"),
        ({"vector": (0.0, 61.0)}, "vector[1]"),
        ({"vector": (True, 0.0)}, "vector[0]"),
        ({"vector": ("0", 0.0)}, "vector[0]"),
        ({"vector": (0.0, 0.0), "height": -0.001}, "height"),
        ({"vector": (0.0, 0.0), "error": 0.0}, "error"),
        ({"vector": (0.0, 0.0), "error": 1.5}, "error"),
    ],
)
def test_coordinate_rejectsOutOfRangeFields(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidCoordinateError, match=field.replace("[", r"\[").replace("]", r"\]")):
        VivaldiCoordinate(**kwargs)  # type: ignore[arg-type]


def test_coordinates_ofDifferentDimensions_doNotMix() -> None:
    with pytest.raises(InvalidCoordinateError, match="dimensions"):
        predict_rtt(coord(0.0, 0.0), coord(0.0, 0.0, 0.0))
    with pytest.raises(InvalidCoordinateError, match="dimensions"):
        update(coord(0.0, 0.0), coord(0.0, 0.0, 0.0), 0.01)


@pytest.mark.parametrize("rtt", [0.0, -0.01, math.nan, math.inf, True])
def test_update_rejectsBadRtt(rtt: float) -> None:
    with pytest.raises(InvalidCoordinateError, match="rtt"):
        update(coord(0.0, 0.0), coord(0.01, 0.0), rtt)


# --- the update rule -------------------------------------------------------------------------------------


def test_update_pushesApartWhenMeasuredRttIsLonger() -> None:
    local, remote = coord(0.01, 0.0), coord(0.0, 0.0)
    moved = update(local, remote, 0.1)
    assert predict_rtt(moved, remote) > predict_rtt(local, remote)
    assert moved.vector[0] > 0.01
    assert moved.vector[1] == 0.0
    assert moved.height > local.height  # part of the push raises the height


def test_update_pullsTogetherWhenMeasuredRttIsShorter() -> None:
    local, remote = coord(0.1, 0.0, height=0.01), coord(0.0, 0.0)
    moved = update(local, remote, 0.02)
    assert predict_rtt(moved, remote) < predict_rtt(local, remote)
    assert moved.height < local.height


def test_update_movesByCcTimesErrorWeightOfTheSpringStretch() -> None:
    local = coord(0.03, 0.04, height=0.0, error=0.6)
    remote = coord(0.0, 0.0, height=0.0, error=0.2)
    moved = update(local, remote, 0.1)
    weight = 0.6 / (0.6 + 0.2)
    expected_distance = 0.05 + 0.25 * weight * (0.1 - 0.05)
    assert math.dist(moved.vector, remote.vector) == pytest.approx(expected_distance)
    # error: moving average of the sample's relative error, weighted by ce * w
    sample_error = abs(0.05 - 0.1) / 0.1
    assert moved.error == pytest.approx(0.25 * weight * sample_error + 0.6 * (1 - 0.25 * weight))


def test_update_exactPrediction_shrinksErrorAndDoesNotMove() -> None:
    local, remote = coord(0.03, 0.04, height=0.0), coord(0.0, 0.0, height=0.0)
    moved = update(local, remote, 0.05)
    assert moved.vector == pytest.approx(local.vector)
    assert moved.error < local.error


def test_update_neverDropsHeightBelowMinimum() -> None:
    local, remote = coord(0.05, 0.0, height=MIN_HEIGHT, error=1.0), coord(0.0, 0.0, error=MIN_ERROR)
    moved = update(local, remote, 0.000_01)
    assert moved.height == MIN_HEIGHT


def test_update_coincidentPoints_separateDeterministicallyByTiebreak() -> None:
    a, b = VivaldiCoordinate.origin(), VivaldiCoordinate.origin()
    first = update(a, b, 0.05, tiebreak=b"a" + b"b")
    again = update(a, b, 0.05, tiebreak=b"a" + b"b")
    other = update(a, b, 0.05, tiebreak=b"b" + b"a")
    assert first == again
    assert first.vector != other.vector
    assert math.dist(first.vector, a.vector) > 0
    assert first.height == a.height  # the push goes into the plane, not the heights


# --- accuracy --------------------------------------------------------------------------------------------


def _simulate(
    rtt: dict[tuple[int, int], float], n: int, neighbours: int, rounds: int, dimensions: int, seed: int
) -> list[VivaldiCoordinate]:
    """Each node keeps a fixed set of neighbours (the peers it is connected to) and, every round, folds one
    RTT to a random neighbour into its coordinate, as CoordinateService does."""
    rng = random.Random(seed)
    peers = {i: [j for j in range(n) if (i, j) in rtt] for i in range(n)}
    chosen = {i: rng.sample(peers[i], min(neighbours, len(peers[i]))) for i in range(n)}
    coords = [VivaldiCoordinate.origin(dimensions) for _ in range(n)]
    for _ in range(rounds):
        for i in range(n):
            j = rng.choice(chosen[i])
            coords[i] = update(coords[i], coords[j], rtt[(i, j)], tiebreak=bytes([i, j]))
    return coords


def _median_relative_error(coords: list[VivaldiCoordinate], rtt: dict[tuple[int, int], float]) -> float:
    return statistics.median(
        abs(predict_rtt(coords[i], coords[j]) - value) / value for (i, j), value in rtt.items() if i < j
    )


@pytest.mark.parametrize("dimensions", [2, 3])
def test_converges_onSyntheticPlane(dimensions: int) -> None:
    """Points in a 100 ms square, RTT = distance; each node only measures 8 neighbours, yet predicts all."""
    rng = random.Random(7)
    n = 40
    points = [(rng.uniform(0, 0.1), rng.uniform(0, 0.1)) for _ in range(n)]
    rtt = {(i, j): math.dist(points[i], points[j]) for i in range(n) for j in range(n) if i != j}
    before = _median_relative_error([VivaldiCoordinate.origin(dimensions)] * n, rtt)
    coords = _simulate(rtt, n, neighbours=8, rounds=300, dimensions=dimensions, seed=dimensions)
    after = _median_relative_error(coords, rtt)
    assert before > 0.9
    assert after < 0.10
    assert statistics.median(c.error for c in coords) < 0.15  # the nodes know they are accurate


def _ripe_rtts(min_pings: int) -> tuple[list[str], dict[tuple[int, int], float]]:
    if not RIPE.is_file():
        pytest.fail(f"RIPE Atlas data missing at {RIPE}: restore tests/data or set PROXIMA_DATA_DIR")
    pairs: dict[tuple[str, str], float] = {}
    with RIPE.open(newline="") as file:
        for row in csv.DictReader(file):
            a, b = row["cty1"], row["cty2"]
            if a != b and int(row["rtt_cnt"]) >= min_pings and float(row["rtt_avg"]) > 0:
                pairs[(a, b)] = float(row["rtt_avg"]) / 1000
    countries = sorted({c for pair in pairs for c in pair})
    index = {c: i for i, c in enumerate(countries)}
    rtt: dict[tuple[int, int], float] = {}
    for (a, b), value in pairs.items():
        rtt[(index[a], index[b])] = rtt[(index[b], index[a])] = value
    return countries, rtt


def test_predicts_realRipeAtlasRtts() -> None:
    """Country-to-country mean RTTs from 2.48 billion RIPE Atlas pings (2025; pairs with >= 1000 pings).

    148 countries; each measures 16 others only, and the coordinates then predict all 5,473 pairs. Measured:
    median relative error 10.3% after 400 rounds (p90 43%; 9.7-11.8% over neighbour draws 1-6), against 35%
    for the best constant guess. Mean RTTs between countries often break the triangle inequality, which
    bounds what any embedding can reach.
    """
    countries, rtt = _ripe_rtts(min_pings=1000)
    assert len(countries) == 148
    assert len(rtt) // 2 == 5473
    coords = _simulate(rtt, len(countries), neighbours=16, rounds=400, dimensions=3, seed=1)
    error = _median_relative_error(coords, rtt)
    constant = statistics.median(rtt.values())
    baseline = statistics.median(abs(constant - v) / v for v in rtt.values())
    assert error < 0.12
    assert error < baseline / 3
