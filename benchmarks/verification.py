"""Verification overhead: Freivalds' test as a fraction of the matmul job it checks.

Run ``.venv/bin/python benchmarks/verification.py [--quick] [--rounds 16] [--repeats 5] [--json out.json]``.

For each square size ``n`` in 256, 512, 1024, 2048, 4096 (float32, seeded operands exactly as a node makes
them with :func:`proxima.sdk.workloads.matmul_operands`; 4096 square is above the job size limit, so its
operands come from the same generator directly): the *job time* is numpy's ``A @ B`` on this machine
(the work a provider does), the *check time* is :func:`proxima.sdk.verification.freivalds` on the honest
result with ``--rounds`` rounds (fresh randomness each repeat). Both are timed ``--repeats`` times after one
warm-up; the table shows medians, the spread (min-max) and the overhead (median check / median job). The
cost of a rejected result (one recomputed row batch) is shown too, on a result with one element off by 1%.

On a shared machine run it with ``OPENBLAS_NUM_THREADS=1``: both the job and the check then use one core
and the ratio is stable (with BLAS threads competing for busy cores both figures swing by 2-5x).

Exits 1 when a check gives the wrong answer (an honest result rejected or the corrupted one accepted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from proxima.sdk.verification import freivalds
from proxima.sdk.workloads import MATMUL_MAX_ELEMENTS, MatmulInput, matmul_operands

SIZES = (256, 512, 1024, 2048, 4096)
QUICK_SIZES = (256, 512)


@dataclass(frozen=True)
class Row:
    """Figures for one size (seconds)."""

    n: int
    job_median_s: float
    job_min_s: float
    job_max_s: float
    check_median_s: float
    check_min_s: float
    check_max_s: float
    reject_median_s: float
    overhead: float


def _times(repeats: int, fn: Callable[[], Any]) -> list[float]:
    fn()  # warm-up: page faults, BLAS threads
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _operands(n: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Seeded operands as :func:`matmul_operands` makes them. A square 4096 product (3 * 4096**2 elements) is
    above ``MATMUL_MAX_ELEMENTS``, so for it the same generator is called directly."""
    if 3 * n * n <= MATMUL_MAX_ELEMENTS:
        a, b = matmul_operands(MatmulInput(seed=n, m=n, k=n, n=n, dtype="float32"))
        return a, b
    rng = np.random.default_rng(n)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def measure_size(n: int, rounds: int, repeats: int) -> Row:
    """Time the job and its check at one size; raise ``AssertionError`` if a check answers wrongly."""
    a, b = _operands(n)
    c = a @ b
    job = _times(repeats, lambda: a @ b)

    def honest() -> None:
        result = freivalds(a, b, c, rounds=rounds)
        assert result.passed, result.detail

    wrong = c.copy()
    wrong[n // 3, n // 2] += 0.01 * float(np.abs(c[n // 3]).max())

    def corrupted() -> None:
        result = freivalds(a, b, wrong, rounds=rounds)
        assert not result.passed, result.detail

    check = _times(repeats, honest)
    reject = _times(max(1, repeats // 2), corrupted)
    return Row(
        n=n,
        job_median_s=statistics.median(job),
        job_min_s=min(job),
        job_max_s=max(job),
        check_median_s=statistics.median(check),
        check_min_s=min(check),
        check_max_s=max(check),
        reject_median_s=statistics.median(reject),
        overhead=statistics.median(check) / statistics.median(job),
    )


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def render(rows: list[Row], rounds: int, console: Console) -> None:
    """Print the table."""
    table = Table(title=f"Freivalds ({rounds} rounds) vs numpy matmul, float32, square n")
    for column in ("n", "job ms (min-max)", "check ms (min-max)", "overhead", "reject ms"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r.n),
            f"{_ms(r.job_median_s)} ({_ms(r.job_min_s)}-{_ms(r.job_max_s)})",
            f"{_ms(r.check_median_s)} ({_ms(r.check_min_s)}-{_ms(r.check_max_s)})",
            f"{100 * r.overhead:.1f}%",
            _ms(r.reject_median_s),
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every check answered correctly."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 256 and 512 only, 2 repeats")
    parser.add_argument("--rounds", type=int, default=16, help="Freivalds rounds (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per size (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be >= 1")
    console = Console()
    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = 2 if args.quick else args.repeats
    rows = []
    try:
        for n in sizes:
            rows.append(measure_size(n, args.rounds, repeats))
    except AssertionError as err:
        console.print(f"[red]a check answered wrongly: {err}")
        return 1
    render(rows, args.rounds, console)
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
