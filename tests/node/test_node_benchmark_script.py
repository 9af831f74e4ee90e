"""benchmarks/node.py --quick runs end to end (real libp2p hosts, py-evm, SQLite, matmul) and reports figures.

No timing is asserted: the test checks that the script succeeds, prints its tables, and that the figures it
writes are consistent (every planned sample taken, every offer delivered, compute inside the round trip).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HEADERS = (
    "Hardware benchmark: run_benchmark('cpu')",
    "Job round trip over /proxima/job/1.0.0, voucher-paid",
    "Pieces of the overhead",
    "Offer gossip: publish -> delivery to subscribers",
    "Offer validation: µs per offer",
    "Start-up pieces",
)


def _consistent(summary: dict[str, Any], n: int) -> None:
    assert summary["n"] == len(summary["samples"]) == n
    assert summary["min"] <= summary["p10"] <= summary["median"] <= summary["p90"] <= summary["max"]


def test_quick_run_prints_every_table_and_consistent_figures(tmp_path: Path) -> None:
    out = tmp_path / "node.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/node.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for header in HEADERS:
        assert header in done.stdout, f"{header!r} missing from:\n{done.stdout}"
    assert "nproc" in done.stdout

    figures = json.loads(out.read_text(encoding="utf-8"))
    assert [row["plan"] for row in figures["hardware"]] == ["quick"]
    assert figures["hardware"][0]["gflops"]["median"] > 0

    jobs = {row["label"]: row for row in figures["jobs"]}
    assert set(jobs) == {
        "matmul 64x64x64 float32 (seeded)",
        "matmul 256x256x256 float32 (seeded)",
        "refused: unknown_workload",
    }
    for label, runs in (("matmul 64x64x64 float32 (seeded)", 5), ("matmul 256x256x256 float32 (seeded)", 3)):
        row = jobs[label]
        _consistent(row["round_trip"], runs)
        for rtt, compute, overhead in zip(
            row["round_trip"]["samples"], row["compute"]["samples"], row["overhead"]["samples"], strict=True
        ):
            assert 0 < compute < rtt
            assert abs(overhead - (rtt - compute)) < 1e-9
    assert jobs["matmul 256x256x256 float32 (seeded)"]["response_bytes"] > 256 * 256 * 4  # base64 of C
    assert jobs["refused: unknown_workload"]["compute"] is None

    (gossip,) = figures["gossip"]
    assert (gossip["topology"], gossip["peers"], gossip["publications"]) == ("star", 5, 5)
    _consistent(gossip["delivery"], 5 * 4)  # every publication reached the 4 other peers
    assert set(gossip["by_hops"]) == {"1", "2"}

    checks = [row for row in figures["offers"] if row["label"].startswith("OfferValidator.check")]
    assert len(checks) == 1
    _consistent(checks[0]["micros"], 100)
