"""``verify``: a clean world adds up; forged index rows and tampered signatures are reported."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _audited import Audited

from proxima.audit.store import AuditStore, decode_args, encode_args
from proxima.audit.verify import Discrepancy, VerifyError, VerifyReport, verify

ETH = 10**18


@pytest.fixture
def copy(audited: Audited, tmp_path: Path) -> tuple[AuditStore, Path]:
    """A copy of the world's index, to tamper with through plain SQL."""
    path = tmp_path / "index.sqlite"
    return audited.copy_store(path), path


@pytest.fixture
def sql(copy: tuple[AuditStore, Path]) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(copy[1], isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def _kinds(report: VerifyReport) -> set[str]:
    return {d.kind for d in report.discrepancies}


def _about(report: VerifyReport, kind: str, subject: str) -> list[Discrepancy]:
    return [d for d in report.discrepancies if d.kind == kind and d.subject == subject]


def test_a_clean_world_verifies_with_no_discrepancy(audited: Audited) -> None:
    stages: list[str] = []
    report = verify(audited.store, audited.w3, progress=lambda stage, done, total: stages.append(stage))
    assert report.discrepancies == []
    assert report.ok
    assert report.block_number == audited.facts.end_block
    checked = report.checked
    assert checked["events"] == audited.store.event_count()
    assert checked["signatures"] == 34
    assert checked["accounts"] == 7
    assert checked["jobs"] == len(audited.facts.jobs)
    assert checked["balances"] == 6
    assert checked["state_calls"] > 50
    order = ["index", "parameters", "events", "ledger", "signatures", "state", "money"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == order


def test_a_forged_settlement_payout_is_reported(
    audited: Audited, copy: tuple[AuditStore, Path], sql: sqlite3.Connection
) -> None:
    job_id = audited.facts.jobs["confirmed"]
    rows = sql.execute(
        "SELECT block_number, log_index, args FROM events WHERE name = 'JobSettled'"
    ).fetchall()
    block, index, text = next(r for r in rows if decode_args(r[2])["jobId"] == job_id)
    args = decode_args(text)
    args["payout"] += ETH // 100
    sql.execute(
        "UPDATE events SET args = ? WHERE block_number = ? AND log_index = ?",
        (encode_args(args), block, index),
    )

    report = verify(copy[0], audited.w3)

    assert not report.ok
    [rule] = _about(report, "rule", "0x" + job_id.hex())
    assert "payout" in rule.detail
    assert rule.actual == str(args["payout"])
    [balance] = _about(report, "balance", "JobEscrow")
    assert int(balance.expected) == int(balance.actual) - ETH // 100
    assert _kinds(report) == {"rule", "balance"}


def test_an_extra_slash_in_the_index_is_reported(
    audited: Audited, copy: tuple[AuditStore, Path], sql: sqlite3.Connection
) -> None:
    provider = audited.facts.providers[0]
    [(block, tx_hash, tx_index, address, timestamp)] = sql.execute(
        "SELECT block_number, tx_hash, tx_index, address, timestamp FROM events "
        "WHERE name = 'Slashed' ORDER BY block_number LIMIT 1"
    ).fetchall()
    forged = {
        "account": provider,
        "amount": ETH,
        "finder": "0x0000000000000000000000000000000000000000",
        "finderReward": 0,
        "reason": b"LOST_DISPUTE".ljust(32, b"\0"),
        "ref": b"\x42" * 32,
    }
    sql.execute(
        "INSERT INTO events VALUES (?, 999, ?, ?, 'ProviderRegistry', ?, 'Slashed', ?, ?)",
        (block, tx_hash, tx_index, address, encode_args(forged), timestamp),
    )

    report = verify(copy[0], audited.w3)

    stake = [d for d in _about(report, "account", provider) if d.detail.startswith("stake")]
    assert [(int(d.expected), int(d.actual)) for d in stake] == [(9 * ETH, 10 * ETH)]
    assert _about(report, "total", "total_staked")
    assert _about(report, "balance", "ProviderRegistry")
    assert _about(report, "reliability", provider)  # a slash weighs on reliability: the chain knows none
    assert "solvency" not in _kinds(report)  # the contracts themselves still hold what they owe


def test_a_tampered_signature_is_reported(
    audited: Audited, copy: tuple[AuditStore, Path], sql: sqlite3.Connection
) -> None:
    tx_hash = audited.facts.tx["redeem:single"]
    [(data,)] = sql.execute("SELECT input FROM transactions WHERE hash = ?", (tx_hash,)).fetchall()
    # redeem((client, provider, amount, jobs), bytes signature): the signature's r is at offset 4 + 6 * 32
    at = 4 + 6 * 32 + 5
    tampered = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    sql.execute("UPDATE transactions SET input = ? WHERE hash = ?", (tampered, tx_hash))

    report = verify(copy[0], audited.w3)

    [bad] = [d for d in report.discrepancies if d.kind == "signature"]
    assert bad.subject == bad.expected == audited.facts.clients[0]
    assert bad.actual != audited.facts.clients[0]
    assert "0x" + tx_hash.hex() in bad.detail
    assert _kinds(report) == {"signature"}


def test_a_deleted_event_is_reported(
    audited: Audited, copy: tuple[AuditStore, Path], sql: sqlite3.Connection
) -> None:
    sql.execute("DELETE FROM events WHERE name = 'StakeIncreased'")
    report = verify(copy[0], audited.w3)
    provider = audited.facts.providers[1]
    assert [d.detail.split(":")[0] for d in _about(report, "account", provider)] == ["stake"]
    assert {"account", "total", "balance", "reliability"} <= _kinds(report)


def test_a_checkpoint_off_the_chain_is_reported(
    audited: Audited, copy: tuple[AuditStore, Path], sql: sqlite3.Connection
) -> None:
    sql.execute("UPDATE blocks SET hash = ? WHERE number = ?", (b"\x99" * 32, audited.facts.end_block))
    report = verify(copy[0], audited.w3)
    assert [d.kind for d in report.discrepancies] == ["index"]
    assert "reorganised" in report.discrepancies[0].detail


def test_an_empty_index_cannot_be_verified(audited: Audited) -> None:
    with AuditStore.memory() as store, pytest.raises(VerifyError, match="sync"):
        verify(store, audited.w3)
