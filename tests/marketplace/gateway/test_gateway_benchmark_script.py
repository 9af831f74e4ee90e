"""benchmarks/gateway.py --quick runs end to end (uvicorn, the real dispatcher and payer, SQLite) and reports.

No timing is asserted: the test checks that the script succeeds (it exits 1 when any request gets an
unexpected status), prints its table, and that the figures it writes are complete and consistent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = {
    "GET /healthz",
    "GET /v1/account (API key)",
    "POST /v1/jobs (API key) -> 202",
    "POST /v1/jobs (signed) -> 202",
    "POST /v1/embeddings (whole job)",
}


def test_quick_run_prints_the_table_and_consistent_figures(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gateway.py", "--quick", "--concurrency", "4", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Gateway overhead per request" in done.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["offers"] == 20
    rows = figures["results"]
    assert {r["scenario"] for r in rows} == SCENARIOS
    assert sorted({r["concurrency"] for r in rows}) == [1, 4]
    for row in rows:
        assert row["requests"] == 30
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["requests_per_s"] > 0
