"""The job store on real SQLite files: creation and validation, idempotency, transitions and their events,
waiting for events across threads, restart (a second store on the same file), file mode and schema version."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from proxima.marketplace.gateway.jobstore import (
    SCHEMA_VERSION,
    EventType,
    IdempotencyConflictError,
    InvalidJobError,
    JobStatus,
    JobStore,
    JobStoreError,
    SchemaVersionError,
    UnknownJobError,
)

CLIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
PROVIDER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
SEEDED = {"seed": 1, "m": 4, "k": 4, "n": 4, "dtype": "float64"}
SPEC = {"residency": {"countries": ["DE"]}, "max_price_wei": 10**15}


def test_create_stores_a_queued_job_with_its_first_event(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        job = store.create(CLIENT.lower(), "matmul", SEEDED, SPEC, "escrow")
        assert job.status is JobStatus.QUEUED
        assert job.client == CLIENT  # checksummed
        assert job.id.startswith("0x")
        assert len(job.id) == 66
        assert job.input == SEEDED
        assert job.spec == SPEC
        assert job.payment_mode == "escrow"
        assert job.attempts == ()
        assert job.result is None
        assert not job.cached
        assert job.use_cache
        assert store.get(job.id) == job
        events = store.events(job.id)
        assert [(e.seq, e.type) for e in events] == [(1, EventType.QUEUED)]


@pytest.mark.parametrize(
    ("workload", "payload", "mode", "field"),
    [
        ("nope", SEEDED, "voucher", "workload"),
        ("matmul", {"seed": 1, "m": 0, "k": 4, "n": 4, "dtype": "float64"}, "voucher", "input"),
        ("matmul", {"seed": 1}, "voucher", "input"),
        ("matmul", SEEDED, "cash", "payment_mode"),
    ],
)
def test_create_refuses_invalid_jobs_and_stores_nothing(
    tmp_path: Path, workload: str, payload: dict[str, object], mode: str, field: str
) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        with pytest.raises(InvalidJobError) as info:
            store.create(CLIENT, workload, payload, {}, mode)
        assert info.value.field == field
        assert field in str(info.value)
        assert store.list(CLIENT) == []
        assert store.read("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0


def test_create_refuses_a_bad_client_spec_and_key(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        with pytest.raises(InvalidJobError, match="client"):
            store.create("0x1234", "matmul", SEEDED, {})
        with pytest.raises(InvalidJobError, match="spec"):
            store.create(CLIENT, "matmul", SEEDED, {"x": float("nan")})
        with pytest.raises(InvalidJobError, match="idempotency_key"):
            store.create(CLIENT, "matmul", SEEDED, {}, idempotency_key="has space")
        assert store.list(CLIENT) == []


def test_idempotency_key_returns_the_first_job_per_client(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        first = store.create(CLIENT, "matmul", SEEDED, SPEC, idempotency_key="k-1")
        again = store.create(CLIENT, "matmul", dict(SEEDED), dict(SPEC), idempotency_key="k-1")
        assert again.id == first.id
        assert len(store.list(CLIENT)) == 1
        # Another client may use the same key for its own job.
        other = store.create(OTHER, "matmul", SEEDED, SPEC, idempotency_key="k-1")
        assert other.id != first.id
        with pytest.raises(IdempotencyConflictError) as info:
            store.create(CLIENT, "matmul", {**SEEDED, "seed": 2}, SPEC, idempotency_key="k-1")
        assert info.value.job_id == first.id
        assert len(store.list(CLIENT)) == 1


def test_a_job_runs_through_its_transitions_with_gapless_events(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        job = store.create(CLIENT, "matmul", SEEDED, SPEC)
        store.mark_placed(job.id, {"chosen": [{"provider": PROVIDER}], "backups": []}, 123)
        n1 = store.start_attempt(
            job.id, provider=PROVIDER, region="eu", attempt_job_id=job.id, payment="voucher", price_wei=123
        )
        store.end_attempt(job.id, n1, code="busy", message="queue full", failover={"from": PROVIDER})
        n2 = store.start_attempt(
            job.id,
            provider=OTHER,
            region="us",
            attempt_job_id="0x" + "ab" * 32,
            payment="voucher",
            price_wei=99,
        )
        store.set_attempt_request(job.id, n2, {"kind": "run"})
        assert store.attempt_request(job.id, n2) == {"kind": "run"}
        assert store.get(job.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        store.succeed(
            job.id,
            n2,
            result={"c": 1},
            receipt={"message": {}, "signature": "0x"},
            provider=OTHER,
            timing_ms={"total": 5.0},
            price_wei=99,
            charged_wei=99,
        )
        done = store.get(job.id)
        assert done is not None
        assert done.status is JobStatus.SUCCEEDED
        assert done.finished
        assert done.charged_wei == 99
        assert done.provider == OTHER
        assert done.result == {"c": 1}
        assert [(a.n, a.outcome, a.error_code) for a in done.attempts] == [
            (1, "failed", "busy"),
            (2, "succeeded", None),
        ]
        types = [e.type for e in store.events(job.id)]
        assert types == [
            EventType.QUEUED,
            EventType.PLACED,
            EventType.ATTEMPT_STARTED,
            EventType.ATTEMPT_FAILED,
            EventType.FAILOVER,
            EventType.ATTEMPT_STARTED,
            EventType.SUCCEEDED,
        ]
        assert [e.seq for e in store.events(job.id)] == list(range(1, 8))
        assert [e.seq for e in store.events(job.id, after=5)] == [6, 7]
        # Finished is final.
        with pytest.raises(JobStoreError, match="succeeded"):
            store.fail(job.id, code="x", message="y")
        assert store.cancel(job.id) is False


def test_cancel_and_fail_are_terminal_and_listed_by_status(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        a = store.create(CLIENT, "matmul", SEEDED, {})
        b = store.create(CLIENT, "matmul", {**SEEDED, "seed": 5}, {})
        store.start_attempt(
            a.id, provider=PROVIDER, region="eu", attempt_job_id=a.id, payment="voucher", price_wei=1
        )
        assert store.cancel(a.id) is True
        store.fail(b.id, code="no_candidate", message="nothing matches")
        cancelled = store.get(a.id)
        assert cancelled is not None
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.attempts[0].outcome == "cancelled"
        assert cancelled.charged_wei is None
        assert [j.id for j in store.list(CLIENT, status=JobStatus.FAILED)] == [b.id]
        assert store.unfinished() == []
        with pytest.raises(UnknownJobError):
            store.cancel("0x" + "00" * 32)
        assert store.get("not-an-id") is None


def test_restart_keeps_unfinished_jobs_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    done = store.create(CLIENT, "matmul", SEEDED, {})
    store.fail(done.id, code="x", message="y")
    waiting = store.create(CLIENT, "matmul", {**SEEDED, "seed": 9}, {})
    running = store.create(CLIENT, "matmul", {**SEEDED, "seed": 8}, {})
    store.start_attempt(
        running.id, provider=PROVIDER, region="eu", attempt_job_id=running.id, payment="voucher", price_wei=1
    )
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with JobStore(path) as again:
        assert [j.id for j in again.unfinished()] == [waiting.id, running.id]
        assert again.schema_version == SCHEMA_VERSION
        assert again.read("PRAGMA journal_mode")[0][0] == "wal"
        assert again.read("PRAGMA synchronous")[0][0] == 2  # FULL


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match="newer"):
        JobStore(path)


def test_wait_event_wakes_on_an_event_written_from_another_thread(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs.db") as store:
        job = store.create(CLIENT, "matmul", SEEDED, {})

        async def main() -> None:
            assert await store.wait_event(job.id, after=1, timeout=0.05) == []
            writer = threading.Timer(
                0.05, lambda: store.mark_placed(job.id, {"chosen": [], "backups": []}, 7)
            )
            writer.start()
            try:
                events = await store.wait_event(job.id, after=1, timeout=10)
            finally:
                writer.join()
            assert [(e.seq, e.type) for e in events] == [(2, EventType.PLACED)]
            assert events[0].data["price_wei"] == "7"
            # Events already there are returned at once.
            assert [e.seq for e in await store.wait_event(job.id, after=0, timeout=10)] == [1, 2]

        asyncio.run(main())
