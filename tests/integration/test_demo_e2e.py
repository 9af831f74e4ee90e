"""The README's first command, end to end: every outcome the demo promises, checked in its report.

``run_demo`` builds the real world (anvil, five ``proxima-node`` processes behind delaying proxies with RIPE
Atlas RTTs, one dishonest, a staked ``proxima-verify`` process, ``proxima-gateway serve``) and drives it with
the SDK's ``Client``. The test does not trust the PASS/FAIL table: it re-reads what each outcome claims from
the report (jobs, attempts, chain reads) and asserts it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from proxima.marketplace.demo import OUTCOMES, DemoReport, DemoSettings, run_demo

pytestmark = [pytest.mark.anvil, pytest.mark.slow]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> DemoReport:
    out = io.StringIO()
    result = run_demo(DemoSettings(workdir=tmp_path_factory.mktemp("demo")), Console(file=out, width=160))
    print(out.getvalue())  # noqa: T201 - shown by pytest when a test fails
    return result


def test_every_outcome_passes(report: DemoReport) -> None:
    assert [o.name for o in report.outcomes] == list(OUTCOMES)
    failed = [f"{o.name}: {o.detail}" for o in report.outcomes if not o.ok]
    assert not failed, failed
    assert report.ok


def test_five_regions_with_the_ripe_atlas_round_trip_times(report: DemoReport) -> None:
    assert len(report.rtt_rows) == 5
    assert len({row["country"] for row in report.rtt_rows}) == 5
    for row in report.rtt_rows:
        assert row["measured_rtt_ms"] >= 0.9 * row["ripe_rtt_ms"] > 0, row
    by_ripe = sorted(report.rtt_rows, key=lambda row: row["ripe_rtt_ms"])
    by_measured = sorted(report.rtt_rows, key=lambda row: row["measured_rtt_ms"])
    assert [r["node"] for r in by_ripe] == [r["node"] for r in by_measured]


def test_jobs_are_placed_with_an_explanation(report: DemoReport) -> None:
    assert {job.workload for job in report.jobs} == {"matmul", "embed"}
    for job in report.jobs:
        explanation = job.record["placement"]["explanation"]
        chosen = explanation["chosen"][0]
        assert chosen["provider"] == job.record["placement"]["providers"][0]
        assert {"rtt_s", "reliability", "expected_s"} <= set(chosen["factors"])
        assert int(chosen["price_wei"]) > 0


def test_the_cheater_was_caught_slashed_and_then_avoided(report: DemoReport) -> None:
    cheater = report.cheater
    assert cheater is not None
    rejected = [job for job in report.jobs if cheater in job.rejected_on()]
    assert rejected or any(e["event"] == "CanaryFaultProven" for e in report.evidence)
    for job in rejected:  # rerun elsewhere, and the client got the right answer
        assert job.status == "succeeded"
        assert job.provider != cheater
        assert job.correct
    assert report.evidence
    assert all(e["provider"] == cheater and e["tx"].startswith("0x") for e in report.evidence)
    assert report.cheater_stake_after < report.min_provider_stake <= report.cheater_stake_before
    assert report.slashed_at is not None
    after = [job for job in report.jobs if job.submitted_at > report.slashed_at]
    assert len(after) >= 5
    assert all(cheater not in job.tried() for job in after)


def test_the_killed_node_s_jobs_finished_elsewhere(report: DemoReport) -> None:
    assert report.killed is not None
    assert report.killed != report.cheater
    assert report.killed_jobs
    moved = [job for job in report.jobs if report.killed in job.tried()]
    killed_phase = [job for job in moved if job.phase == "kill"]
    assert killed_phase
    for job in killed_phase:
        assert job.status == "succeeded"
        assert job.provider not in (report.killed, report.cheater)
        assert job.correct


def test_results_are_correct_and_charged_exactly(report: DemoReport) -> None:
    assert all(job.status == "succeeded" and job.correct and job.sdk_verified for job in report.jobs)
    assert report.spent_wei == report.charged_wei
    assert report.charged_wei == sum(int(job.record["price_wei"]) for job in report.jobs)


def test_vouchers_redeemed_and_ledger_audited(report: DemoReport) -> None:
    redeemed = {address: totals for address, totals in report.redeemed.items() if totals[0] > 0}
    assert len(redeemed) >= 2
    assert all(amount > 0 for _, amount in redeemed.values())
    audit = report.audit
    assert audit is not None
    assert audit.conserved
    assert audit.ledger.money.total_held == audit.ledger.money.total_owed
    assert audit.signatures_valid, audit.problems
    assert audit.receipts_checked == len(report.jobs)
    assert audit.offers_checked >= 4
    slashed = {s.account for s in audit.ledger.slashes}
    assert slashed == {report.cheater}


def test_the_demo_is_quick(report: DemoReport) -> None:
    # The issue asks for < 3 minutes on 2 cores for the whole command; the world is built well within it.
    assert report.timings["world ready"] < 120, report.timings


def test_workdir_keeps_every_log(report: DemoReport, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = Path(str(tmp_path_factory.getbasetemp())) / "demo0"
    logs = {p.name for p in root.glob("*.log")}
    assert {"gateway.log", "verifier.log", "paris.log", "london.log"} <= logs, logs
