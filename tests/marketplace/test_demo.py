"""The README's main command runs every promised outcome, on anvil (as a user runs it) and on py-evm."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from proxima.marketplace.demo import main, run_demo
from proxima.sdk.bindings import JobStatus
from proxima.sdk.chain import InProcessChain

OUTCOMES = (
    "providers active",
    "attestations on chain",
    "escrow job settled",
    "vouchers redeemed",
    "missed deadline slashed",
    "funds conserved",
)


@pytest.mark.anvil
def test_demo_command_runs_every_outcome_on_anvil() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "proxima.marketplace.demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for outcome in OUTCOMES:
        assert f"✓ {outcome}" in proc.stdout
    assert "✗" not in proc.stdout
    assert "all outcomes happened" in proc.stdout


def test_demo_ledger_matches_the_scenario() -> None:
    with InProcessChain() as chain:
        ledger = run_demo(chain, Console(file=io.StringIO()))
    assert ledger.money.conserved
    by_address = {a.address: a for a in ledger.accounts}
    escrow_provider, voucher_provider, late_provider = (a.address for a in chain.accounts[1:4])
    assert by_address[escrow_provider].jobs_completed == 1
    assert by_address[voucher_provider].jobs_completed == 25
    assert by_address[late_provider].jobs_failed == 1
    assert by_address[late_provider].total_slashed == 10**18
    assert [j.status for j in ledger.jobs] == [JobStatus.SETTLED, JobStatus.REFUNDED]
    assert [(s.reason, s.account) for s in ledger.slashes] == [("MISSED_DEADLINE", late_provider)]
    assert ledger.vouchers[0].jobs == 25


def test_demo_main_exits_zero_inprocess(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", "inprocess"]) == 0
    assert "all outcomes happened" in capsys.readouterr().out


def test_demo_rejects_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--backend", "mainnet"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
