"""Latency prediction: how well Vivaldi coordinates predict RIPE Atlas country RTTs, and how fast we predict.

Run ``.venv/bin/python benchmarks/latency.py [--data CSV] [--rounds N] [--seeds K] [--json]``.

Each seed splits the country pairs (pairs with >= 1,000 pings) into 80% measured and 20% held out, embeds
the countries with :func:`proxima.sdk.vivaldi.update` from the measured pairs only, and reports the error on
the held-out pairs (see :func:`proxima.marketplace.matching.latency.evaluate_on_ripe_atlas`). It also times
:func:`proxima.marketplace.matching.latency.predict_rtts` for 1k, 10k and 100k offers.

Data: RIPE NCC, RIPE Atlas (https://atlas.ripe.net), country-to-country statistics processed by IOG for
Ouroboros Leios (github.com/input-output-hk/ouroboros-leios, data/internet/country_rtt_stat.csv.gz). Read from
../shared/data when it is beside the checkout, else from the committed extract in tests/data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from proxima.marketplace.matching.latency import (
    LatencyError,
    PredictionReport,
    evaluate_on_ripe_atlas,
    predict_rtts,
)
from proxima.sdk.vivaldi import VivaldiCoordinate

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PROXIMA_DATA_DIR", ROOT.parent / "shared" / "data"))
RAW = DATA / "latency_ripe_atlas_country" / "country_rtt_stat.csv"
EXTRACT = ROOT / "tests" / "data" / "ripe_atlas_country_rtt.csv"
OFFER_COUNTS = (1_000, 10_000, 100_000)


def default_data() -> Path:
    return RAW if RAW.is_file() else EXTRACT


def time_predictions(repeats: int) -> dict[str, float]:
    """Median microseconds of one predict_rtts call, by number of offers."""
    rng = np.random.default_rng(0)
    client = VivaldiCoordinate(vector=(0.01, -0.02, 0.005), height=0.003, error=0.2)
    timings: dict[str, float] = {}
    for n in OFFER_COUNTS:
        vectors = rng.uniform(-0.15, 0.15, size=(n, 3))
        heights = rng.uniform(0.0001, 0.02, size=n)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict_rtts(client, vectors, heights)
            samples.append(time.perf_counter() - start)
        timings[str(n)] = statistics.median(samples) * 1e6
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=None, help="RIPE Atlas country_rtt_stat.csv")
    parser.add_argument("--rounds", type=int, default=400, help="update rounds per seed (default 400)")
    parser.add_argument("--seeds", type=int, default=5, help="random splits to average over (default 5)")
    parser.add_argument("--repeats", type=int, default=50, help="timing repeats of predict_rtts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.repeats < 1:
        parser.error("--seeds and --repeats must be >= 1")
    path: Path = args.data or default_data()

    try:
        reports = [evaluate_on_ripe_atlas(path, rounds=args.rounds, seed=s) for s in range(args.seeds)]
    except LatencyError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - a command-line script
        return 2
    timings = time_predictions(args.repeats)
    summary: dict[str, Any] = {
        "data": str(path),
        "rounds": args.rounds,
        "seeds": args.seeds,
        "mean": _mean(reports),
        "reports": [r.to_dict() for r in reports],
        "predict_rtts_us": timings,
    }
    if args.json:
        print(json.dumps(summary, indent=2))  # noqa: T201
        return 0

    console = Console() if sys.stdout.isatty() else Console(width=140)
    table = Table(title=f"Vivaldi prediction error on held-out RIPE Atlas country pairs ({path.name})")
    for column in (
        "seed",
        "held-out pairs",
        "countries",
        "median |err| ms",
        "p90 |err| ms",
        "median rel",
        "p90 rel",
        "constant guess rel",
        "training fit rel",
    ):
        table.add_column(column, justify="right")
    for r in reports:
        table.add_row(*_row(str(r.seed), r.to_dict()))
    table.add_row(*_row("mean", summary["mean"]), style="bold")
    console.print(table)
    speed = Table(title="predict_rtts (one client to n offers), median of repeats")
    speed.add_column("offers", justify="right")
    speed.add_column("µs per call", justify="right")
    speed.add_column("ns per offer", justify="right")
    for n, us in timings.items():
        speed.add_row(f"{int(n):,}", f"{us:,.1f}", f"{us * 1e3 / int(n):.1f}")
    console.print(speed)
    return 0


def _mean(reports: list[PredictionReport]) -> dict[str, float]:
    keys = (
        "pairs",
        "countries",
        "median_abs_error_ms",
        "p90_abs_error_ms",
        "median_rel_error",
        "p90_rel_error",
        "baseline_median_rel_error",
        "train_median_rel_error",
    )
    return {k: statistics.fmean(float(getattr(r, k)) for r in reports) for k in keys}


def _row(label: str, values: dict[str, Any]) -> list[str]:
    return [
        label,
        f"{values['pairs']:,.0f}",
        f"{values['countries']:.0f}",
        f"{values['median_abs_error_ms']:.1f}",
        f"{values['p90_abs_error_ms']:.1f}",
        f"{values['median_rel_error']:.1%}",
        f"{values['p90_rel_error']:.1%}",
        f"{values['baseline_median_rel_error']:.1%}",
        f"{values['train_median_rel_error']:.1%}",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
