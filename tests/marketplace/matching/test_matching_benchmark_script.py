"""benchmarks/matching.py --quick runs end to end and writes consistent figures.

No timing is asserted (speed belongs to the benchmark): the test checks that the script succeeds, prints its
table, measures everything it plans to, and places every job of its quick batches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_quickRun_printsTheTable_andWritesEveryFigure(tmp_path: Path) -> None:
    out = tmp_path / "matching.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/matching.py", "--quick", "--repeats", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Matching engine" in done.stdout
    report = json.loads(out.read_text())
    names = [f["name"] for f in report["figures"]]
    for n in ("1,000", "10,000"):
        assert f"single p99 at {n} offers" in names
        assert f"batch 200 mixed jobs at {n} offers" in names
        assert f"batch 200 uniform jobs at {n} offers" in names
    assert "build from 1,000 Offer objects" in names
    for figure in report["figures"]:
        assert figure["runs"] == 2
        assert 0 < figure["min"] <= figure["median"] <= figure["max"]
    for label, outcome in report["notes"].items():
        assert outcome == {"placed": 200, "refused": 0}, label
    assert report["machine"]["cpus"] >= 1


def test_badArguments_areRefused() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/matching.py", "--repeats", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--repeats must be >= 1" in done.stderr
