"""``proxima-audit`` called through ``main([...])``: the query and export commands on an indexed database
(offline), and sync, verify and serve against a real anvil node running the exercised world."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _ledger_world import ACCOUNTS, World, build_world

from proxima.audit.cli import main
from proxima.audit.ledger import read_parameters
from proxima.audit.store import AuditStore, decode_args, encode_args
from proxima.sdk.chain import AnvilProcess, Deployment


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# --- offline: an indexed database, no RPC ----------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed_db(audited: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the exercised world's index with the ledger parameters saved (as ``sync`` leaves it)."""
    path = tmp_path_factory.mktemp("cli") / "audit.sqlite"
    store = audited.copy_store(path)
    store.set_meta("ledger_parameters", read_parameters(audited.w3, audited.deployment).model_dump_json())
    store.close()
    return path


def test_providers_tableAndJson(capsys: pytest.CaptureFixture[str], audited: Any, indexed_db: Path) -> None:
    status, out, _ = run(capsys, "--db", str(indexed_db), "providers")
    assert status == 0
    for address in audited.facts.providers + audited.facts.verifiers:
        assert address in out
    assert f"7 accounts at block {audited.facts.end_block}" in out

    status, out, _ = run(
        capsys, "providers", "--db", str(indexed_db), "--json", "--role", "provider", "--limit", "2"
    )
    assert status == 0
    page = json.loads(out)
    assert page["total"] == 4
    assert len(page["data"]) == 2
    for row in page["data"]:
        assert int(row["stake_wei"]) == audited.contracts.registry.account_of(row["address"]).stake


def test_provider_detail(capsys: pytest.CaptureFixture[str], audited: Any, indexed_db: Path) -> None:
    kind, slashed = audited.facts.slashes[0]
    status, out, _ = run(capsys, "--db", str(indexed_db), "provider", slashed.lower())
    assert status == 0
    assert slashed in out
    assert kind in out
    status, out, _ = run(capsys, "--db", str(indexed_db), "provider", slashed, "--json")
    assert json.loads(out)["account"]["address"] == slashed

    mangled = slashed[:2] + slashed[2:].swapcase()
    status, _, err = run(capsys, "--db", str(indexed_db), "provider", mangled)
    assert status == 1
    assert "checksum" in err
    status, _, err = run(capsys, "--db", str(indexed_db), "provider", audited.facts.finder)
    assert status == 1
    assert f"no registered account {audited.facts.finder}" in err


def test_jobsSlashesAttestationsRewards(
    capsys: pytest.CaptureFixture[str], audited: Any, indexed_db: Path
) -> None:
    facts = audited.facts
    db = ("--db", str(indexed_db))
    status, out, _ = run(capsys, *db, "jobs", "--status", "refunded", "--json")
    assert status == 0
    assert {j["job_id"] for j in json.loads(out)["data"]} == {
        "0x" + facts.jobs[n].hex() for n, s in facts.job_status.items() if s == "Refunded"
    }
    status, out, _ = run(capsys, *db, "slashes", "--ascending", "--json")
    assert [(s["kind"], s["account"]) for s in json.loads(out)["data"]] == facts.slashes
    status, out, _ = run(capsys, *db, "slashes")
    assert status == 0
    assert "equivocation" in out
    assert "5 slashes" in out
    status, out, _ = run(capsys, *db, "attestations", "--kind", "report", "--json")
    assert {r["signer"] for r in json.loads(out)["data"]} <= set(facts.verifiers)
    status, out, _ = run(capsys, *db, "rewards")
    assert status == 0
    assert "no (current)" in out
    assert f"{facts.epochs + 1} epochs" in out
    status, out, _ = run(capsys, *db, "jobs", "--limit", "2")
    assert f"2 of {len(facts.jobs)} jobs" in out


def test_export_toFileAndStdout(
    capsys: pytest.CaptureFixture[str], audited: Any, indexed_db: Path, tmp_path: Path
) -> None:
    target = tmp_path / "slashes.csv"
    status, out, _ = run(capsys, "--db", str(indexed_db), "export", "--what", "slashes", "--out", str(target))
    assert status == 0
    assert str(target) in out
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["kind"], r["account"]) for r in rows] == audited.facts.slashes
    assert all(r["amount_wei"].isdigit() for r in rows)
    status, out, _ = run(capsys, "--db", str(indexed_db), "export", "--what", "rewards", "--format", "json")
    assert status == 0
    epochs = json.loads(out)
    assert [e["epoch"] for e in epochs] == list(range(audited.facts.epochs + 1))
    assert all(isinstance(e["pot_wei"], str) for e in epochs)


def test_errors_areOneLineSayingWhatToDo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "--db", str(tmp_path / "none.sqlite"), "providers")
    assert status == 1
    assert err.startswith("proxima-audit: error:")
    assert "run `proxima-audit sync` first" in err

    AuditStore(tmp_path / "empty.sqlite").close()
    status, _, err = run(capsys, "--db", str(tmp_path / "empty.sqlite"), "jobs")
    assert status == 1
    assert "is empty; run `proxima-audit sync` first" in err

    status, _, err = run(
        capsys, "--db", str(tmp_path / "x.sqlite"), "--deployment", str(tmp_path / "missing.json"), "sync"
    )
    assert status == 1
    assert "missing.json" in err
    assert "file not found" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["providers", "--limit", "0"],
        ["providers", "--sort", "bogus"],
        ["jobs", "--status", "lost"],
        ["export", "--format", "xml"],
        ["sync", "--to-block", "-1"],
        ["frobnicate"],
    ],
)
def test_badUsage_exits2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "proxima-audit" in capsys.readouterr().err


# --- online: anvil ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anvil_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AnvilProcess, World, Path]]:
    """The exercised world on its own anvil node (14 funded accounts), and its deployment file."""
    with AnvilProcess(accounts=ACCOUNTS) as anvil, anvil.connect() as chain:
        world = build_world(chain)
        path = tmp_path_factory.mktemp("anvil") / "deployment.json"
        world.deployment.model_copy(update={"rpc_url": anvil.url}).save(path)
        yield anvil, world, path


@pytest.mark.anvil
def test_syncThenVerify_onAnvil(
    capsys: pytest.CaptureFixture[str], anvil_world: tuple[AnvilProcess, World, Path], tmp_path: Path
) -> None:
    anvil, world, deployment = anvil_world
    db = tmp_path / "audit.sqlite"
    common = ("--db", str(db), "--deployment", str(deployment))  # the RPC URL from the deployment file
    status, out, _ = run(capsys, *common, "sync", "--to-block", str(world.facts.end_block - 10))
    assert status == 0
    assert f"index at block {world.facts.end_block - 10}" in out
    status, out, _ = run(capsys, *common, "sync")
    assert status == 0
    assert f"indexed blocks {world.facts.end_block - 9}-" in out
    status, out, _ = run(capsys, *common, "sync")
    assert "up to date" in out

    status, out, _ = run(capsys, "--db", str(db), "slashes", "--json", "--ascending")  # offline after sync
    assert status == 0
    assert [(s["kind"], s["account"]) for s in json.loads(out)["data"]] == world.facts.slashes

    status, out, _ = run(capsys, *common, "--rpc", anvil.url, "verify")
    assert status == 0, out
    assert "OK at block" in out
    assert "no discrepancy" in out

    with sqlite3.connect(db) as conn:  # forge a slash amount in the index, as a lying indexer would
        block, index, args = conn.execute(
            "SELECT block_number, log_index, args FROM events WHERE name = 'Slashed' LIMIT 1"
        ).fetchone()
        forged = decode_args(args)
        forged["amount"] += 1
        conn.execute(
            "UPDATE events SET args = ? WHERE block_number = ? AND log_index = ?",
            (encode_args(forged), block, index),
        )
    status, out, _ = run(capsys, *common, "verify")
    assert status == 1
    assert "FAILED at block" in out
    assert "discrepancies" in out
    status, out, _ = run(capsys, *common, "verify", "--json")
    assert status == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["discrepancies"]


@pytest.mark.anvil
def test_wrongChainOrUnreachableRpc_areClearErrors(
    capsys: pytest.CaptureFixture[str], anvil_world: tuple[AnvilProcess, World, Path], tmp_path: Path
) -> None:
    _anvil, _world, deployment = anvil_world
    other = tmp_path / "other-chain.json"
    Deployment.load(deployment).model_copy(update={"chain_id": 1}).save(other)
    status, _, err = run(capsys, "--db", str(tmp_path / "a.sqlite"), "--deployment", str(other), "sync")
    assert status == 1
    assert "serves chain id 31337, the deployment is on chain 1" in err

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    status, _, err = run(
        capsys, "--db", str(tmp_path / "a.sqlite"), "--deployment", str(deployment), "--rpc", dead, "sync"
    )
    assert status == 1
    assert f"cannot reach the JSON-RPC endpoint {dead}" in err
    assert "proxima-devnet" in err


@contextlib.contextmanager
def serving(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``proxima-audit`` in its own process (uvicorn stops on SIGINT there, as after Ctrl-C)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "proxima.audit.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.mark.anvil
def test_serve_followsAndAnswersOnLoopback(
    anvil_world: tuple[AnvilProcess, World, Path], tmp_path: Path
) -> None:
    _, world, deployment = anvil_world
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "served.sqlite"
    argv = ["--db", str(db), "--deployment", str(deployment), "serve", "--port", str(port), "--follow"]
    url = f"http://127.0.0.1:{port}"
    with serving(argv) as process:
        deadline = time.monotonic() + 60
        summary: dict[str, Any] = {}
        while summary.get("block_number", -1) < world.facts.end_block:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, f"the served index did not catch up: {summary}"
            time.sleep(0.2)
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{url}/v1/audit/summary", timeout=5)
                summary = response.json() if response.status_code == 200 else {}
        assert summary["slashes"] == len(world.facts.slashes)
        report = httpx.post(f"{url}/v1/audit/verify", timeout=60).json()
        assert report["ok"] is True
        assert httpx.get(f"{url}/", timeout=5).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 130  # stopped as by Ctrl-C, after a graceful shutdown
