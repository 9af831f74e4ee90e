"""The verifier's SQLite file (mode 0600): issued canaries, voucher chains, pending reports, verdicts.

* ``canaries``: every canary this verifier committed (HTTP or duty), with the expected answer's raw bytes, so
  ``/v1/verdicts`` can recognise one and compare with the stored answer;
* ``vouchers``: per provider, the latest cumulative voucher this verifier assumes the provider recorded;
* ``reports``: measurements waiting to be submitted to ``AttestationRegistry`` (then their transaction);
* ``verdicts``: every verdict signed (an audit trail).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_utils.address import to_checksum_address

from proxima.marketplace.errors import MarketError
from proxima.sdk.sqlite import SqliteStore
from proxima.sdk.types import Address
from proxima.sdk.workloads import MatmulOutput, Tensor

__all__ = ["PendingReport", "StoredCanary", "VerifierStore", "VerifierStoreError"]


class VerifierStoreError(MarketError):
    """The verifier's database cannot be opened or holds a newer schema."""


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE canaries (
            job_id BLOB PRIMARY KEY,
            commitment BLOB NOT NULL UNIQUE,
            spec_hash BLOB NOT NULL,
            salt BLOB NOT NULL,
            workload TEXT NOT NULL,
            input_json TEXT NOT NULL,
            dtype TEXT NOT NULL,
            rows INTEGER NOT NULL,
            cols INTEGER NOT NULL,
            expected BLOB NOT NULL,
            purpose TEXT NOT NULL,
            provider TEXT,
            tx TEXT NOT NULL,
            committed_at INTEGER NOT NULL,
            created_at REAL NOT NULL,
            outcome TEXT
        ) STRICT"""
    )
    conn.execute(
        """CREATE TABLE vouchers (
            provider TEXT PRIMARY KEY,
            cumulative_jobs INTEGER NOT NULL,
            cumulative_amount TEXT NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT"""
    )
    conn.execute(
        """CREATE TABLE reports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            provider TEXT NOT NULL,
            challenge_id BLOB NOT NULL UNIQUE,
            measured_flops INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            created_at REAL NOT NULL,
            tx TEXT
        ) STRICT"""
    )
    conn.execute(
        """CREATE TABLE verdicts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id BLOB NOT NULL,
            result_hash BLOB NOT NULL,
            result_valid INTEGER NOT NULL,
            target TEXT NOT NULL,
            provider TEXT NOT NULL,
            method TEXT NOT NULL,
            detail TEXT NOT NULL,
            created_at REAL NOT NULL
        ) STRICT"""
    )


@dataclass(frozen=True)
class StoredCanary:
    """A canary as kept."""

    job_id: bytes
    commitment: bytes
    spec_hash: bytes
    salt: bytes
    workload: str
    input: dict[str, Any]
    expected: MatmulOutput
    purpose: str
    provider: str | None
    tx: str
    committed_at: int


@dataclass(frozen=True)
class PendingReport:
    """A measurement not yet on chain."""

    id: int
    provider: Address
    challenge_id: bytes
    measured_flops: int
    passed: bool


class VerifierStore(SqliteStore):
    """The verifier's database file."""

    label = "verifier database"
    migrations = (_v1,)

    def _open_error(self, message: str) -> Exception:
        return VerifierStoreError(message)

    def _newer_error(self, found: int, supported: int) -> Exception:
        return VerifierStoreError(
            f"{self.path}: schema version {found} is newer than this verifier supports ({supported})"
        )

    # --- canaries ---------------------------------------------------------------------------------------

    def add_canary(self, canary: StoredCanary) -> None:
        """Keep an issued (committed) canary."""
        c = canary.expected.c
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO canaries (job_id, commitment, spec_hash, salt, workload, input_json, dtype,"
                " rows, cols, expected, purpose, provider, tx, committed_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    canary.job_id,
                    canary.commitment,
                    canary.spec_hash,
                    canary.salt,
                    canary.workload,
                    json.dumps(canary.input, sort_keys=True),
                    c.dtype,
                    c.shape[0],
                    c.shape[1],
                    c.raw_bytes(),
                    canary.purpose,
                    canary.provider,
                    canary.tx,
                    canary.committed_at,
                    time.time(),
                ),
            )

    def canary(self, job_id: bytes) -> StoredCanary | None:
        """The canary with this job id, if this verifier issued it."""
        rows = self.read("SELECT * FROM canaries WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        row = rows[0]
        dtype = np.dtype(str(row["dtype"])).newbyteorder("<")
        array = np.frombuffer(row["expected"], dtype=dtype).reshape(int(row["rows"]), int(row["cols"]))
        return StoredCanary(
            job_id=bytes(row["job_id"]),
            commitment=bytes(row["commitment"]),
            spec_hash=bytes(row["spec_hash"]),
            salt=bytes(row["salt"]),
            workload=str(row["workload"]),
            input=json.loads(row["input_json"]),
            expected=MatmulOutput(c=Tensor.from_array(array)),
            purpose=str(row["purpose"]),
            provider=row["provider"],
            tx=str(row["tx"]),
            committed_at=int(row["committed_at"]),
        )

    def set_canary_outcome(self, job_id: bytes, outcome: str) -> None:
        """Record what became of a canary (``passed``, ``failed``, ``proven``, ``undelivered``...)."""
        with self.transaction() as conn:
            conn.execute("UPDATE canaries SET outcome = ? WHERE job_id = ?", (outcome, job_id))

    def count_canaries(self, since: float = 0.0, purpose: str | None = None) -> int:
        """Canaries issued since ``since`` (unix seconds), optionally of one purpose."""
        if purpose is None:
            rows = self.read("SELECT COUNT(*) AS n FROM canaries WHERE created_at >= ?", (since,))
        else:
            rows = self.read(
                "SELECT COUNT(*) AS n FROM canaries WHERE created_at >= ? AND purpose = ?", (since, purpose)
            )
        return int(rows[0]["n"])

    # --- vouchers ---------------------------------------------------------------------------------------

    def voucher_base(self, provider: Address) -> tuple[int, int]:
        """``(cumulative_jobs, cumulative_amount)`` of the latest voucher assumed recorded by ``provider``."""
        rows = self.read(
            "SELECT cumulative_jobs, cumulative_amount FROM vouchers WHERE provider = ?", (provider,)
        )
        if not rows:
            return 0, 0
        return int(rows[0]["cumulative_jobs"]), int(rows[0]["cumulative_amount"])

    def set_voucher_base(self, provider: Address, jobs: int, amount: int) -> None:
        """Move the provider's voucher chain to ``(jobs, amount)``."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO vouchers (provider, cumulative_jobs, cumulative_amount, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET cumulative_jobs = excluded"
                ".cumulative_jobs, cumulative_amount = excluded.cumulative_amount, updated_at = excluded"
                ".updated_at",
                (provider, jobs, str(amount), time.time()),
            )

    def voucher_totals(self) -> dict[Address, int]:
        """Cumulative amount promised to each provider."""
        return {
            Address(to_checksum_address(str(r["provider"]))): int(r["cumulative_amount"])
            for r in self.read("SELECT provider, cumulative_amount FROM vouchers ORDER BY provider")
        }

    # --- reports ----------------------------------------------------------------------------------------

    def add_report(self, provider: Address, challenge_id: bytes, measured_flops: int, passed: bool) -> None:
        """Queue a measurement for submission."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO reports (provider, challenge_id, measured_flops, passed, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (provider, challenge_id, measured_flops, int(passed), time.time()),
            )

    def pending_reports(self, limit: int) -> list[PendingReport]:
        """Reports not yet submitted, oldest first."""
        rows = self.read(
            "SELECT id, provider, challenge_id, measured_flops, passed FROM reports WHERE tx IS NULL"
            " ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            PendingReport(
                id=int(r["id"]),
                provider=Address(to_checksum_address(str(r["provider"]))),
                challenge_id=bytes(r["challenge_id"]),
                measured_flops=int(r["measured_flops"]),
                passed=bool(r["passed"]),
            )
            for r in rows
        ]

    def mark_reports(self, ids: list[int], tx: str) -> None:
        """Record the transaction that submitted these reports."""
        with self.transaction() as conn:
            conn.executemany("UPDATE reports SET tx = ? WHERE id = ?", [(tx, i) for i in ids])

    # --- verdicts ---------------------------------------------------------------------------------------

    def add_verdict(
        self,
        job_id: bytes,
        result_hash: bytes,
        valid: bool,
        target: str,
        provider: str,
        method: str,
        detail: str,
    ) -> None:
        """Keep a signed verdict (audit trail)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO verdicts (job_id, result_hash, result_valid, target, provider, method, detail,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, result_hash, int(valid), target, provider, method, detail, time.time()),
            )

    def count_verdicts(self) -> int:
        """Verdicts signed so far."""
        return int(self.read("SELECT COUNT(*) AS n FROM verdicts")[0]["n"])
