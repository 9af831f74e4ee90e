"""NodeStore: job life cycle, vouchers, durability across a killed process, schema versions, earnings."""

from __future__ import annotations

import secrets
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from proxima.node.store import (
    SCHEMA_VERSION,
    AcceptedJob,
    DuplicateJobError,
    InvalidRecordError,
    InvalidTransitionError,
    JobState,
    NodeStore,
    SchemaVersionError,
    StaleVoucherError,
    StoreError,
    UnknownJobError,
)
from proxima.sdk.eip712 import Domain, LocalSigner, SignedMessage, Voucher

CLIENT = Account.from_key(b"\x01" * 32)
OTHER_CLIENT = Account.from_key(b"\x02" * 32)
PROVIDER = Account.from_key(b"\x03" * 32).address
DOMAIN = Domain("Proxima Vouchers", "1", 31337, "0x" + "ab" * 20)  # type: ignore[arg-type]


def escrow_job(
    deadline: int = 2_000_000_000, price: int = 10**15, job_id: bytes | None = None
) -> AcceptedJob:
    return AcceptedJob(
        job_id=job_id or secrets.token_bytes(32),
        client=CLIENT.address,
        workload="matmul",
        payment="escrow",
        price=price,
        spec_hash=b"\x5e" * 32,
        input=b'{"seed":1,"m":2,"k":2,"n":2,"dtype":"float32"}',
        delivery_deadline=deadline,
    )


def voucher_job(jobs: int, client: str = CLIENT.address) -> AcceptedJob:
    return AcceptedJob(
        job_id=secrets.token_bytes(32),
        client=client,  # type: ignore[arg-type]
        workload="embed",
        payment="voucher",
        price=10**14,
        spec_hash=b"\x11" * 32,
        input=b'{"model":"all-MiniLM-L6-v2","texts":["hi"]}',
        voucher_jobs=jobs,
    )


def voucher(amount: int, jobs: int, client: LocalAccount = CLIENT) -> SignedMessage[Voucher]:
    return Voucher(
        client=client.address, provider=PROVIDER, cumulative_amount=amount, cumulative_jobs=jobs
    ).sign(LocalSigner(client), DOMAIN)


RESULT = b"\x77" * 32
RECEIPT_SIG = b"\x01" * 64 + b"\x1b"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.db") as s:
        yield s


def test_job_lifecycle_keepsEverythingTheClientNeeds(store: NodeStore) -> None:
    job = escrow_job()
    store.accept_job(job)
    assert store.job(job.job_id).state is JobState.ACCEPTED  # type: ignore[union-attr]
    store.mark_running(job.job_id)
    store.complete_job(job.job_id, RESULT, RECEIPT_SIG, output=b'{"c":1}')
    stored = store.job(job.job_id)
    assert stored is not None
    assert stored.state is JobState.COMPLETED
    assert stored.job == job
    assert (stored.result_hash, stored.receipt_signature, stored.output) == (RESULT, RECEIPT_SIG, b'{"c":1}')
    store.mark_committed(job.job_id, b"\xaa" * 32, challenge_ends_at=123, gas_used=50_000)
    store.mark_settled(job.job_id, b"\xbb" * 32, gas_used=60_000)
    stored = store.job(job.job_id)
    assert stored is not None
    assert stored.state is JobState.SETTLED
    assert (stored.commit_tx, stored.challenge_ends_at, stored.settle_tx) == (b"\xaa" * 32, 123, b"\xbb" * 32)
    assert [(t.kind, t.job_id, t.gas_used) for t in store.chain_txs()] == [
        ("commit", job.job_id, 50_000),
        ("release", job.job_id, 60_000),
    ]


def test_acceptJob_rejectsDuplicateIds_evenAfterTheJobFailed(store: NodeStore) -> None:
    job = escrow_job()
    store.accept_job(job)
    with pytest.raises(DuplicateJobError, match=job.job_id.hex()):
        store.accept_job(job)
    store.fail_job(job.job_id, "worker crashed")
    with pytest.raises(DuplicateJobError):
        store.accept_job(escrow_job(job_id=job.job_id))
    assert store.job(job.job_id).error == "worker crashed"  # type: ignore[union-attr]


def test_transitions_areValidated(store: NodeStore) -> None:
    unknown = secrets.token_bytes(32)
    with pytest.raises(UnknownJobError, match=unknown.hex()):
        store.complete_job(unknown, RESULT, RECEIPT_SIG)

    failed = escrow_job()
    store.accept_job(failed)
    store.fail_job(failed.job_id, "bad input")
    with pytest.raises(InvalidTransitionError, match="is failed and cannot become completed"):
        store.complete_job(failed.job_id, RESULT, RECEIPT_SIG)
    with pytest.raises(InvalidTransitionError):
        store.mark_running(failed.job_id)

    accepted = escrow_job()
    store.accept_job(accepted)
    with pytest.raises(InvalidTransitionError, match="is accepted and cannot become committed"):
        store.mark_committed(accepted.job_id, None)

    paid_by_voucher = voucher_job(1)
    store.accept_job(paid_by_voucher)
    store.complete_job(paid_by_voucher.job_id, RESULT, RECEIPT_SIG)
    with pytest.raises(InvalidTransitionError):  # only escrow jobs are committed on chain
        store.mark_committed(paid_by_voucher.job_id, None)

    # A job interrupted by a restart may be started again.
    store.mark_running(accepted.job_id)
    store.mark_running(accepted.job_id)
    assert store.job(accepted.job_id).state is JobState.RUNNING  # type: ignore[union-attr]


def test_completeJob_validatesItsValues_andChangesNothingWhenInvalid(store: NodeStore) -> None:
    job = escrow_job()
    store.accept_job(job)
    with pytest.raises(InvalidRecordError, match="result_hash: must be exactly 32 bytes, got 31 bytes"):
        store.complete_job(job.job_id, b"\x00" * 31, RECEIPT_SIG)
    with pytest.raises(InvalidRecordError, match="receipt_signature"):
        store.complete_job(job.job_id, RESULT, b"\x00" * 64)
    assert store.job(job.job_id).state is JobState.ACCEPTED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"job_id": b"\x00" * 31}, "job_id: must be exactly 32 bytes"),
        ({"spec_hash": "00" * 32}, "spec_hash: must be exactly 32 bytes, got str"),
        ({"client": "0x1234"}, "client: not an Ethereum address"),
        ({"price": -1}, "price: must be an integer"),
        ({"payment": "cash"}, "payment: must be 'escrow' or 'voucher'"),
        ({"delivery_deadline": None}, "an escrow job needs its delivery deadline"),
        ({"workload": ""}, "workload: must be a non-empty name"),
        ({"input": "text"}, "input: must be bytes"),
    ],
)
def test_acceptedJob_rejectsMalformedFields(changes: dict[str, object], message: str) -> None:
    fields = {**escrow_job().__dict__, **changes}
    with pytest.raises(InvalidRecordError, match=message):
        AcceptedJob(**fields)


def test_acceptedJob_checksumsTheClient() -> None:
    job = AcceptedJob(**{**escrow_job().__dict__, "client": CLIENT.address.lower()})
    assert job.client == CLIENT.address


def test_unfinishedAndPendingCommits_listTheRightJobsInOrder(store: NodeStore) -> None:
    late, early, running, done_voucher, failed = (
        escrow_job(deadline=3_000),
        escrow_job(deadline=1_000),
        escrow_job(deadline=2_000),
        voucher_job(1),
        escrow_job(),
    )
    for job in (late, early, running, done_voucher, failed):
        store.accept_job(job)
    store.mark_running(running.job_id)
    store.fail_job(failed.job_id, "nope")
    assert [j.job_id for j in store.unfinished_jobs()] == [
        late.job_id,
        early.job_id,
        running.job_id,
        done_voucher.job_id,
    ]
    for job in (late, early, done_voucher):
        store.complete_job(job.job_id, RESULT, RECEIPT_SIG)
    assert [j.job_id for j in store.unfinished_jobs()] == [running.job_id]
    # Escrow only, earliest deadline first.
    assert [j.job_id for j in store.pending_commits()] == [early.job_id, late.job_id]
    store.mark_committed(early.job_id, None, challenge_ends_at=500)
    store.mark_committed(late.job_id, None, challenge_ends_at=900)
    assert [j.job_id for j in store.pending_settlements(now=600)] == [early.job_id]
    assert len(store.pending_settlements()) == 2
    assert [j.job_id for j in store.jobs([JobState.FAILED])] == [failed.job_id]


def test_recordVoucher_keepsTheLatest_andRefusesOnesThatDoNotFollow(store: NodeStore) -> None:
    assert store.latest_voucher(CLIENT.address) is None
    first = voucher(100, 1)
    store.record_voucher(first, previous_jobs=0)
    assert store.latest_voucher(CLIENT.address) == first
    with pytest.raises(StaleVoucherError, match="not more than the latest 1 jobs / 100 wei"):
        store.record_voucher(first)  # replay
    with pytest.raises(StaleVoucherError):
        store.record_voucher(voucher(100, 2))  # more jobs, no more money
    with pytest.raises(StaleVoucherError, match="checked against job 0 but the latest is job 1"):
        store.record_voucher(voucher(200, 2), previous_jobs=0)
    second = voucher(250, 2)
    store.record_voucher(second, previous_jobs=1)
    assert store.latest_voucher(CLIENT.address) == second
    assert store.vouchers_of(CLIENT.address) == [first, second]
    assert store.latest_voucher(OTHER_CLIENT.address) is None


def test_recordVoucher_withAJob_isAtomic(store: NodeStore) -> None:
    job = voucher_job(1)
    store.record_voucher(voucher(100, 1), job=job)
    assert store.job(job.job_id) is not None
    # The job id is taken: the new voucher is not kept either, so the client is not charged for nothing.
    with pytest.raises(DuplicateJobError):
        store.record_voucher(voucher(200, 2), job=job)
    assert store.latest_voucher(CLIENT.address).message.cumulative_jobs == 1  # type: ignore[union-attr]
    with pytest.raises(InvalidRecordError, match="did not sign this voucher"):
        store.record_voucher(voucher(200, 2), job=voucher_job(2, client=OTHER_CLIENT.address))


def test_recordVoucher_concurrentRequests_onlyOneWins(store: NodeStore) -> None:
    store.record_voucher(voucher(100, 1))
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(amount: int) -> None:
        barrier.wait()
        try:
            store.record_voucher(voucher(amount, 2), previous_jobs=1)
            outcomes.append("won")
        except StaleVoucherError:
            outcomes.append("stale")

    threads = [threading.Thread(target=attempt, args=(200 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale"] * 7 + ["won"]


def test_vouchers_redeemedAndOutstanding(store: NodeStore) -> None:
    store.record_voucher(voucher(100, 1))
    store.record_voucher(voucher(300, 3), previous_jobs=1)
    store.record_voucher(voucher(50, 1, OTHER_CLIENT))
    assert {v.message.client for v in store.unredeemed_vouchers()} == {CLIENT.address, OTHER_CLIENT.address}
    store.mark_redeemed([voucher(300, 3).message], b"\xcc" * 32, gas_used=90_000)
    account = store.voucher_account(CLIENT.address)
    assert account is not None
    assert (account.redeemed_amount, account.redeemed_jobs, account.outstanding) == (300, 3, 0)
    assert [v.message.client for v in store.unredeemed_vouchers()] == [OTHER_CLIENT.address]
    # Marking an older voucher never lowers what is known to be redeemed.
    store.mark_redeemed([voucher(100, 1).message], None)
    assert store.voucher_account(CLIENT.address).redeemed_amount == 300  # type: ignore[union-attr]
    # A voucher must follow what was redeemed on chain, even one the store never saw.
    with pytest.raises(StaleVoucherError):
        store.record_voucher(voucher(60, 2, OTHER_CLIENT), redeemed=(70, 2))
    assert [t.kind for t in store.chain_txs("redeem")] == ["redeem"]


def test_earnings_summarisesJobsAndMoney(store: NodeStore) -> None:
    settled, committed, pending, failed = (escrow_job(price=p) for p in (10, 20, 40, 80))
    for job in (settled, committed, pending, failed):
        store.accept_job(job)
    for job in (settled, committed):
        store.complete_job(job.job_id, RESULT, RECEIPT_SIG)
        store.mark_committed(job.job_id, None)
    store.mark_settled(settled.job_id, None)
    store.fail_job(failed.job_id, "x")
    store.record_voucher(voucher(500, 5), job=voucher_job(5))
    store.record_voucher(voucher(70, 1, OTHER_CLIENT))
    store.mark_redeemed([voucher(300, 3).message], None)
    e = store.earnings()
    assert e.jobs_by_state == {
        JobState.ACCEPTED: 2,
        JobState.RUNNING: 0,
        JobState.COMPLETED: 0,
        JobState.FAILED: 1,
        JobState.COMMITTED: 1,
        JobState.SETTLED: 1,
    }
    assert (e.escrow_pending, e.escrow_committed, e.escrow_settled) == (40, 20, 10)
    assert (e.voucher_accepted, e.voucher_redeemed, e.voucher_outstanding) == (570, 300, 270)
    assert e.total_paid == 310


def test_schema_isVersioned_andANewerDatabaseIsRefused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with NodeStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        NodeStore(path)


def test_open_refusesAFileThatIsNotADatabase(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the node database"):
        NodeStore(path)


def test_bigAmounts_roundTrip(store: NodeStore) -> None:
    job = escrow_job(price=2**256 - 1)
    store.accept_job(job)
    assert store.job(job.job_id).job.price == 2**256 - 1  # type: ignore[union-attr]
    store.record_voucher(voucher(2**255, 1))
    assert store.latest_voucher(CLIENT.address).message.cumulative_amount == 2**255  # type: ignore[union-attr]


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from proxima.node.store import AcceptedJob, NodeStore

    def job(n, payment="escrow"):
        return AcceptedJob(job_id=bytes([n]) * 32, client="0x" + "11" * 20, workload="matmul",
                           payment=payment, price=n, spec_hash=b"\\x5e" * 32, input=b"input-%d" % n,
                           delivery_deadline=2_000_000_000 if payment == "escrow" else None)

    store = NodeStore(Path(sys.argv[1]))
    for n in (1, 2, 3):
        store.accept_job(job(n))
    store.mark_running(job(2).job_id)
    store.complete_job(job(3).job_id, b"\\x77" * 32, b"\\x01" * 64 + b"\\x1b", output=b"out-3")
    # A write in flight when the process dies: it must leave no trace.
    store._conn.execute("BEGIN IMMEDIATE")
    store._conn.execute("UPDATE jobs SET state = 'failed' WHERE job_id = ?", (job(1).job_id,))
    store._insert_job(store._conn, job(4))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_killedProcess_keepsEveryCommittedChange_andNoHalfWrite(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with NodeStore(path) as store:
        assert [j.job_id for j in store.unfinished_jobs()] == [bytes([1]) * 32, bytes([2]) * 32]
        assert store.job(bytes([2]) * 32).state is JobState.RUNNING  # type: ignore[union-attr]
        assert store.unfinished_jobs()[0].input == b"input-1"
        done = store.job(bytes([3]) * 32)
        assert done is not None
        assert (done.state, done.output) == (JobState.COMPLETED, b"out-3")
        assert [j.job_id for j in store.pending_commits()] == [bytes([3]) * 32]
        assert store.job(bytes([4]) * 32) is None
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_storeFile_isWal_withForeignKeys_andReadableByItsOwnerOnly(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    with NodeStore(path) as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        store.accept_job(escrow_job())
        for file in (path, Path(f"{path}-wal")):
            assert file.stat().st_mode & 0o777 == 0o600, file
