"""The node's persistent store: accepted jobs, vouchers, chain transactions and attestations in SQLite.

Everything the node promised survives a crash: a job is written (with its input) before the node answers
that it accepted it, and every state change is one transaction. After a restart
:meth:`NodeStore.unfinished_jobs` lists the jobs to run again, :meth:`NodeStore.pending_commits` the results
still to commit on chain.

One connection serves all threads behind a lock (the job server calls the store from trio and from worker
threads); writes take SQLite's write lock at once (``BEGIN IMMEDIATE``), so a compare-and-set such as
:meth:`NodeStore.record_voucher` also holds against another process on the same file. The file is in WAL
mode with ``synchronous=FULL``: a committed change survives the process being killed and a power loss.

Job life cycle (``committed`` and ``settled`` are for escrow jobs only)::

    accepted -> running -> completed -> committed -> settled
         \\          \\          \\            \\
          `----------`----------`------------`--> failed

``running -> running`` is allowed: a job interrupted by a restart is started again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal, get_args

from eth_utils.address import is_address, to_checksum_address

from proxima.node.errors import NodeError
from proxima.sdk.eip712 import Signature, SignedMessage, Voucher
from proxima.sdk.sqlite import SqliteStore
from proxima.sdk.types import Address

__all__ = [
    "SCHEMA_VERSION",
    "AcceptedJob",
    "AttestationRecord",
    "ChainTx",
    "DuplicateJobError",
    "EarningsSummary",
    "InvalidRecordError",
    "InvalidTransitionError",
    "JobState",
    "NodeStore",
    "PaymentKind",
    "SchemaVersionError",
    "StaleVoucherError",
    "StoreError",
    "StoredJob",
    "UnknownJobError",
    "VoucherAccount",
]

log = logging.getLogger(__name__)

PaymentKind = Literal["escrow", "voucher"]
ChainTxKind = Literal["commit", "release", "redeem", "attest"]


class JobState(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    COMMITTED = "committed"
    SETTLED = "settled"


_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.ACCEPTED: frozenset({JobState.RUNNING, JobState.COMPLETED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.RUNNING, JobState.COMPLETED, JobState.FAILED}),
    JobState.COMPLETED: frozenset({JobState.COMMITTED, JobState.FAILED}),
    JobState.COMMITTED: frozenset({JobState.SETTLED, JobState.FAILED}),
    JobState.SETTLED: frozenset(),
    JobState.FAILED: frozenset(),
}
_UNFINISHED = (JobState.ACCEPTED, JobState.RUNNING)


# --- errors ----------------------------------------------------------------------------------------------


class StoreError(NodeError):
    """Root of the errors raised by :class:`NodeStore`."""


class InvalidRecordError(StoreError, ValueError):
    """A value given to the store is malformed (wrong length, negative amount, bad address...)."""

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        super().__init__(f"invalid {what}: {problem}")


class DuplicateJobError(StoreError):
    """A job with this id was already accepted (whatever its state now)."""

    def __init__(self, job_id: bytes) -> None:
        self.job_id = job_id
        super().__init__(f"job 0x{job_id.hex()} was already accepted")


class UnknownJobError(StoreError, KeyError):
    """No job with this id is in the store."""

    def __init__(self, job_id: bytes) -> None:
        self.job_id = job_id
        super().__init__(f"no job 0x{job_id.hex()} in the store")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidTransitionError(StoreError):
    """A job cannot move from its current state to the requested one."""

    def __init__(self, job_id: bytes, current: JobState, target: JobState) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        super().__init__(f"job 0x{job_id.hex()} is {current.value} and cannot become {target.value}")


class StaleVoucherError(StoreError):
    """A voucher does not follow the client's latest one (another request got there first)."""

    def __init__(self, client: str, problem: str) -> None:
        self.client = client
        super().__init__(f"voucher of {client} is stale: {problem}")


class SchemaVersionError(StoreError):
    """The database was written by a newer node than this one."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: database schema version {found} is newer than this node supports ({supported}); "
            "upgrade proxima"
        )


# --- records ---------------------------------------------------------------------------------------------


def _check_bytes(what: str, value: object, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidRecordError(what, f"must be exactly {length} bytes, got {shown}")


def _checked_address(what: str, value: str) -> Address:
    if not isinstance(value, str) or not is_address(value):
        raise InvalidRecordError(what, f"not an Ethereum address: {value!r}")
    return to_checksum_address(value)


def _check_amount(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
        raise InvalidRecordError(what, f"must be an integer in [0, 2**256), got {value!r}")


@dataclass(frozen=True)
class AcceptedJob:
    """A job the node has agreed to run: everything needed to run it again after a restart.

    Attributes:
        job_id: The 32-byte job id (the escrow job id for escrow jobs).
        client: The client's address.
        workload: The workload name, for example ``"matmul"``.
        payment: ``"escrow"`` or ``"voucher"``.
        price: The price in wei.
        spec_hash: The 32-byte hash of workload and input (``JobTerms.spec_hash``).
        input: The job's input as received (canonical JSON), kept to re-run the job.
        delivery_deadline: Unix time by which an escrow result must be committed; ``None`` for vouchers.
        voucher_jobs: For voucher jobs, the ``cumulative_jobs`` of the voucher that paid for it.
    """

    job_id: bytes
    client: Address
    workload: str
    payment: PaymentKind
    price: int
    spec_hash: bytes
    input: bytes
    delivery_deadline: int | None = None
    voucher_jobs: int | None = None

    def __post_init__(self) -> None:
        _check_bytes("job_id", self.job_id, 32)
        _check_bytes("spec_hash", self.spec_hash, 32)
        object.__setattr__(self, "client", _checked_address("client", self.client))
        if not isinstance(self.workload, str) or not self.workload:
            raise InvalidRecordError("workload", "must be a non-empty name")
        if self.payment not in get_args(PaymentKind):
            raise InvalidRecordError("payment", f"must be 'escrow' or 'voucher', got {self.payment!r}")
        _check_amount("price", self.price)
        if not isinstance(self.input, bytes):
            raise InvalidRecordError("input", f"must be bytes, got {type(self.input).__name__}")
        if self.payment == "escrow" and self.delivery_deadline is None:
            raise InvalidRecordError("delivery_deadline", "an escrow job needs its delivery deadline")
        if self.delivery_deadline is not None and not 0 < self.delivery_deadline < 2**63:
            raise InvalidRecordError("delivery_deadline", f"not a unix time: {self.delivery_deadline!r}")
        if self.voucher_jobs is not None and not 0 < self.voucher_jobs < 2**63:
            raise InvalidRecordError("voucher_jobs", f"must be a positive count, got {self.voucher_jobs!r}")


@dataclass(frozen=True)
class StoredJob:
    """A job as the store holds it now.

    Attributes:
        job: What was accepted.
        state: Where it is in its life cycle.
        result_hash: The 32-byte result hash once completed.
        receipt_signature: The provider's 65-byte receipt signature once completed.
        output: The result as returned to the client (canonical JSON), kept so it can be fetched again.
        error: Why it failed, if it did.
        commit_tx: The hash of the ``commitResult`` transaction (``None`` if unknown, e.g. lost receipt).
        challenge_ends_at: When the challenge window of a committed escrow job ends.
        settle_tx: The hash of the ``releasePayment`` transaction, if this node sent it.
        created_at: When it was accepted (unix time).
        updated_at: When it last changed.
    """

    job: AcceptedJob
    state: JobState
    result_hash: bytes | None
    receipt_signature: bytes | None
    output: bytes | None
    error: str | None
    commit_tx: bytes | None
    challenge_ends_at: int | None
    settle_tx: bytes | None
    created_at: float
    updated_at: float

    @property
    def job_id(self) -> bytes:
        return self.job.job_id


@dataclass(frozen=True)
class VoucherAccount:
    """What a client owes this node through vouchers.

    Attributes:
        client: The client's address.
        latest: The latest voucher accepted from it (``None`` if only redeemed totals are known).
        redeemed_amount: Cumulative wei redeemed on chain for this client and provider.
        redeemed_jobs: Cumulative jobs redeemed on chain.
    """

    client: Address
    latest: SignedMessage[Voucher] | None
    redeemed_amount: int
    redeemed_jobs: int

    @property
    def outstanding(self) -> int:
        """Wei accepted but not redeemed yet."""
        if self.latest is None:
            return 0
        return max(self.latest.message.cumulative_amount - self.redeemed_amount, 0)


@dataclass(frozen=True)
class ChainTx:
    """A transaction the node sent (or found already done on chain, then ``tx_hash`` is ``None``)."""

    kind: ChainTxKind
    job_id: bytes | None
    tx_hash: bytes | None
    gas_used: int | None
    detail: str | None
    created_at: float


@dataclass(frozen=True)
class AttestationRecord:
    """An attestation batch the node submitted."""

    epoch: int
    nonce: int
    measurements: int
    tx_hash: bytes
    created_at: float


@dataclass(frozen=True)
class EarningsSummary:
    """What the node earned and is owed, in wei (gross: before the protocol fee).

    Attributes:
        jobs_by_state: Number of jobs in each state (every state present, zero when none).
        escrow_pending: Price of escrow jobs accepted but not committed yet.
        escrow_committed: Price of escrow jobs committed on chain and not settled yet.
        escrow_settled: Price of escrow jobs paid out.
        voucher_accepted: Sum over clients of their latest accepted cumulative voucher amount.
        voucher_redeemed: Sum over clients of what was redeemed on chain.
        voucher_outstanding: Accepted through vouchers and not redeemed yet.
    """

    jobs_by_state: dict[JobState, int]
    escrow_pending: int
    escrow_committed: int
    escrow_settled: int
    voucher_accepted: int
    voucher_redeemed: int
    voucher_outstanding: int

    @property
    def total_paid(self) -> int:
        """Settled escrow plus redeemed vouchers."""
        return self.escrow_settled + self.voucher_redeemed


# --- schema ----------------------------------------------------------------------------------------------

_SCHEMA_V1 = """
CREATE TABLE jobs (
    job_id BLOB PRIMARY KEY CHECK (length(job_id) = 32),
    client TEXT NOT NULL,
    workload TEXT NOT NULL,
    payment TEXT NOT NULL CHECK (payment IN ('escrow', 'voucher')),
    price TEXT NOT NULL,
    spec_hash BLOB NOT NULL CHECK (length(spec_hash) = 32),
    input BLOB NOT NULL,
    delivery_deadline INTEGER,
    voucher_jobs INTEGER,
    state TEXT NOT NULL
        CHECK (state IN ('accepted', 'running', 'completed', 'failed', 'committed', 'settled')),
    result_hash BLOB CHECK (result_hash IS NULL OR length(result_hash) = 32),
    receipt_signature BLOB,
    output BLOB,
    error TEXT,
    commit_tx BLOB,
    challenge_ends_at INTEGER,
    settle_tx BLOB,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;
CREATE INDEX jobs_state ON jobs (state, delivery_deadline);

CREATE TABLE voucher_accounts (
    client TEXT PRIMARY KEY,
    redeemed_amount TEXT NOT NULL,
    redeemed_jobs INTEGER NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

CREATE TABLE vouchers (
    client TEXT NOT NULL REFERENCES voucher_accounts (client),
    cumulative_jobs INTEGER NOT NULL,
    provider TEXT NOT NULL,
    cumulative_amount TEXT NOT NULL,
    signature BLOB NOT NULL CHECK (length(signature) = 65),
    accepted_at REAL NOT NULL,
    PRIMARY KEY (client, cumulative_jobs)
) STRICT;

CREATE TABLE chain_txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('commit', 'release', 'redeem', 'attest')),
    job_id BLOB REFERENCES jobs (job_id),
    tx_hash BLOB,
    gas_used INTEGER,
    detail TEXT,
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE attestations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL,
    nonce TEXT NOT NULL,
    measurements INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    created_at REAL NOT NULL
) STRICT;
"""

_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    lambda conn: _run_script(conn, _SCHEMA_V1),  # 0 -> 1
)
"""``_MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; append, never edit."""

SCHEMA_VERSION = len(_MIGRATIONS)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction; run statement by statement inside it instead.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


_JOB_COLUMNS = (
    "job_id, client, workload, payment, price, spec_hash, input, delivery_deadline, voucher_jobs, state, "
    "result_hash, receipt_signature, output, error, commit_tx, challenge_ends_at, settle_tx, created_at, "
    "updated_at"
)


def _job_from_row(row: sqlite3.Row) -> StoredJob:
    return StoredJob(
        job=AcceptedJob(
            job_id=row["job_id"],
            client=row["client"],
            workload=row["workload"],
            payment=row["payment"],
            price=int(row["price"]),
            spec_hash=row["spec_hash"],
            input=row["input"],
            delivery_deadline=row["delivery_deadline"],
            voucher_jobs=row["voucher_jobs"],
        ),
        state=JobState(row["state"]),
        result_hash=row["result_hash"],
        receipt_signature=row["receipt_signature"],
        output=row["output"],
        error=row["error"],
        commit_tx=row["commit_tx"],
        challenge_ends_at=row["challenge_ends_at"],
        settle_tx=row["settle_tx"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _voucher_from_row(row: sqlite3.Row) -> SignedMessage[Voucher]:
    return SignedMessage(
        message=Voucher(
            client=row["client"],
            provider=row["provider"],
            cumulative_amount=int(row["cumulative_amount"]),
            cumulative_jobs=row["cumulative_jobs"],
        ),
        signature=Signature.from_bytes(row["signature"]),
    )


@dataclass
class _Client:
    """A client's voucher position as read inside a transaction."""

    latest_amount: int = 0
    latest_jobs: int = 0
    redeemed_amount: int = 0
    redeemed_jobs: int = 0
    exists: bool = field(default=False)


class NodeStore(SqliteStore):
    """The node's SQLite database.

    Args:
        path: The database file (created with its schema and mode 0600 when missing; its folder must
            exist).
        clock: Source of the ``created_at``/``updated_at`` times.

    Raises:
        SchemaVersionError: If the file was written by a newer node.
        StoreError: If the file is not a usable SQLite database.
    """

    label = "node database"
    migrations = _MIGRATIONS

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Job inputs and outputs are the clients' data: the file is readable by the node's user only.
        super().__init__(path)

    def _open_error(self, message: str) -> StoreError:
        return StoreError(message)

    def _newer_error(self, found: int, supported: int) -> SchemaVersionError:
        return SchemaVersionError(self.path, found, supported)

    # --- jobs ----------------------------------------------------------------------------------------

    def accept_job(self, job: AcceptedJob) -> None:
        """Record a newly accepted job (state ``accepted``).

        Raises:
            DuplicateJobError: If a job with this id was ever accepted.
        """
        with self.transaction() as conn:
            self._insert_job(conn, job)
        log.info(
            "job accepted",
            extra={
                "job_id": job.job_id.hex(),
                "client": job.client,
                "workload": job.workload,
                "payment": job.payment,
                "price": job.price,
            },
        )

    def _insert_job(self, conn: sqlite3.Connection, job: AcceptedJob) -> None:
        now = self._clock()
        try:
            conn.execute(
                "INSERT INTO jobs (job_id, client, workload, payment, price, spec_hash, input, "
                "delivery_deadline, voucher_jobs, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?)",
                (
                    job.job_id,
                    job.client,
                    job.workload,
                    job.payment,
                    str(job.price),
                    job.spec_hash,
                    job.input,
                    job.delivery_deadline,
                    job.voucher_jobs,
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError as err:
            if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone():
                raise DuplicateJobError(job.job_id) from err
            raise

    def _transition(
        self,
        conn: sqlite3.Connection,
        job_id: bytes,
        target: JobState,
        allowed_payment: PaymentKind | None = None,
        **columns: object,
    ) -> None:
        row = conn.execute("SELECT state, payment FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        current = JobState(row["state"])
        if target not in _TRANSITIONS[current]:
            raise InvalidTransitionError(job_id, current, target)
        if allowed_payment is not None and row["payment"] != allowed_payment:
            raise InvalidTransitionError(job_id, current, target)
        assignments = "".join(f", {name} = ?" for name in columns)
        conn.execute(
            f"UPDATE jobs SET state = ?, updated_at = ?{assignments} WHERE job_id = ?",  # noqa: S608 - names are ours
            (target.value, self._clock(), *columns.values(), job_id),
        )

    def mark_running(self, job_id: bytes) -> None:
        """A worker started the job (again, after a restart, if it was already running).

        Raises:
            UnknownJobError: If there is no such job.
            InvalidTransitionError: If it is not accepted or running.
        """
        with self.transaction() as conn:
            self._transition(conn, job_id, JobState.RUNNING)

    def complete_job(
        self, job_id: bytes, result_hash: bytes, receipt_signature: bytes, output: bytes | None = None
    ) -> None:
        """The job produced its result; kept with the signed receipt (and the output, to serve it again).

        Raises:
            UnknownJobError: If there is no such job.
            InvalidTransitionError: If it is not accepted or running.
            InvalidRecordError: If the hash is not 32 bytes or the signature not 65.
        """
        _check_bytes("result_hash", result_hash, 32)
        _check_bytes("receipt_signature", receipt_signature, 65)
        if output is not None and not isinstance(output, bytes):
            raise InvalidRecordError("output", f"must be bytes, got {type(output).__name__}")
        with self.transaction() as conn:
            self._transition(
                conn,
                job_id,
                JobState.COMPLETED,
                result_hash=result_hash,
                receipt_signature=receipt_signature,
                output=output,
            )
        log.info("job completed", extra={"job_id": job_id.hex(), "result_hash": result_hash.hex()})

    def fail_job(self, job_id: bytes, reason: str) -> None:
        """The job cannot be honoured; ``reason`` is kept.

        Raises:
            UnknownJobError: If there is no such job.
            InvalidTransitionError: If it already failed or was settled.
        """
        with self.transaction() as conn:
            self._transition(conn, job_id, JobState.FAILED, error=reason)
        log.warning("job failed", extra={"job_id": job_id.hex(), "reason": reason})

    def job(self, job_id: bytes) -> StoredJob | None:
        """The job with this id, or ``None``."""
        rows = self.read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))  # noqa: S608
        return _job_from_row(rows[0]) if rows else None

    def jobs(self, states: Iterable[JobState] | None = None, *, limit: int | None = None) -> list[StoredJob]:
        """Jobs (optionally only those in ``states``), newest first."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"  # noqa: S608 - constant column list
        params: list[object] = []
        if states is not None:
            wanted = [JobState(s).value for s in states]
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_job_from_row(r) for r in self.read(sql, params)]

    def unfinished_jobs(self) -> list[AcceptedJob]:
        """Jobs accepted but not finished (``accepted`` or ``running``), oldest first: run them again."""
        rows = self.read(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created_at, rowid",  # noqa: S608
            [s.value for s in _UNFINISHED],
        )
        return [_job_from_row(r).job for r in rows]

    def pending_commits(self) -> list[StoredJob]:
        """Completed escrow jobs whose result is not committed on chain yet, earliest deadline first."""
        rows = self.read(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'completed' AND payment = 'escrow' "  # noqa: S608
            "ORDER BY delivery_deadline, created_at"
        )
        return [_job_from_row(r) for r in rows]

    def pending_settlements(self, now: int | None = None) -> list[StoredJob]:
        """Committed escrow jobs not settled yet; with ``now``, only those whose challenge window ended
        (or whose end is unknown)."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'committed'"  # noqa: S608
        params: list[object] = []
        if now is not None:
            sql += " AND (challenge_ends_at IS NULL OR challenge_ends_at < ?)"
            params.append(int(now))
        return [_job_from_row(r) for r in self.read(sql + " ORDER BY challenge_ends_at", params)]

    def mark_committed(
        self,
        job_id: bytes,
        tx_hash: bytes | None,
        *,
        challenge_ends_at: int | None = None,
        gas_used: int | None = None,
    ) -> None:
        """The job's result hash is on chain; ``tx_hash`` is ``None`` when it was found there already.

        Raises:
            UnknownJobError: If there is no such job.
            InvalidTransitionError: If it is not a completed escrow job.
        """
        with self.transaction() as conn:
            self._transition(
                conn,
                job_id,
                JobState.COMMITTED,
                allowed_payment="escrow",
                commit_tx=tx_hash,
                challenge_ends_at=challenge_ends_at,
            )
            self._insert_tx(conn, "commit", tx_hash, job_id=job_id, gas_used=gas_used)

    def mark_settled(self, job_id: bytes, tx_hash: bytes | None, *, gas_used: int | None = None) -> None:
        """The escrow job was paid out (by this node's ``releasePayment`` or otherwise when ``None``)."""
        with self.transaction() as conn:
            self._transition(conn, job_id, JobState.SETTLED, allowed_payment="escrow", settle_tx=tx_hash)
            self._insert_tx(conn, "release", tx_hash, job_id=job_id, gas_used=gas_used)

    # --- vouchers ------------------------------------------------------------------------------------

    def _client(self, conn: sqlite3.Connection, client: str) -> _Client:
        state = _Client()
        account = conn.execute(
            "SELECT redeemed_amount, redeemed_jobs FROM voucher_accounts WHERE client = ?", (client,)
        ).fetchone()
        if account is None:
            return state
        state.exists = True
        state.redeemed_amount = int(account["redeemed_amount"])
        state.redeemed_jobs = int(account["redeemed_jobs"])
        latest = conn.execute(
            "SELECT cumulative_amount, cumulative_jobs FROM vouchers WHERE client = ? "
            "ORDER BY cumulative_jobs DESC LIMIT 1",
            (client,),
        ).fetchone()
        if latest is not None:
            state.latest_amount = int(latest["cumulative_amount"])
            state.latest_jobs = int(latest["cumulative_jobs"])
        return state

    def _raise_redeemed(self, conn: sqlite3.Connection, client: str, amount: int, jobs: int) -> _Client:
        """Raise the client's redeemed totals to at least ``(amount, jobs)``; returns its position."""
        state = self._client(conn, client)
        new_amount, new_jobs = max(state.redeemed_amount, amount), max(state.redeemed_jobs, jobs)
        if not state.exists:
            conn.execute(
                "INSERT INTO voucher_accounts (client, redeemed_amount, redeemed_jobs, updated_at) "
                "VALUES (?, ?, ?, ?)",
                (client, str(new_amount), new_jobs, self._clock()),
            )
        elif (new_amount, new_jobs) != (state.redeemed_amount, state.redeemed_jobs):
            conn.execute(
                "UPDATE voucher_accounts SET redeemed_amount = ?, redeemed_jobs = ?, updated_at = ? "
                "WHERE client = ?",
                (str(new_amount), new_jobs, self._clock(), client),
            )
        state.exists = True
        state.redeemed_amount, state.redeemed_jobs = new_amount, new_jobs
        return state

    def record_voucher(
        self,
        signed: SignedMessage[Voucher],
        *,
        previous_jobs: int | None = None,
        redeemed: tuple[int, int] = (0, 0),
        job: AcceptedJob | None = None,
    ) -> None:
        """Keep a client's new voucher (and, in the same transaction, the job it pays for).

        The store does not check the signature (the payment checker does); it checks that the voucher
        follows the client's latest known position: more jobs and more wei than the latest voucher and
        than what was redeemed.

        Args:
            signed: The voucher with the client's signature.
            previous_jobs: If given, the ``cumulative_jobs`` the caller validated against (the larger of
                the latest voucher and the redeemed total); a different value means another request was
                accepted in between, and this one is refused.
            redeemed: ``(amount, jobs)`` redeemed on chain as the caller read it; the stored totals are
                raised to it.
            job: A job to accept atomically with the voucher.

        Raises:
            StaleVoucherError: If the voucher does not follow the latest one, or ``previous_jobs`` differs.
            DuplicateJobError: If ``job`` was already accepted (the voucher is then not kept either).
        """
        v = signed.message
        client = _checked_address("voucher client", v.client)
        if job is not None and job.client != client:
            raise InvalidRecordError("job", f"its client {job.client} did not sign this voucher ({client})")
        with self.transaction() as conn:
            state = self._raise_redeemed(conn, client, *redeemed)
            latest_jobs = max(state.latest_jobs, state.redeemed_jobs)
            latest_amount = max(state.latest_amount, state.redeemed_amount)
            if previous_jobs is not None and previous_jobs != latest_jobs:
                raise StaleVoucherError(
                    client, f"it was checked against job {previous_jobs} but the latest is job {latest_jobs}"
                )
            if v.cumulative_jobs <= latest_jobs or v.cumulative_amount <= latest_amount:
                raise StaleVoucherError(
                    client,
                    f"it covers {v.cumulative_jobs} jobs / {v.cumulative_amount} wei, not more than the "
                    f"latest {latest_jobs} jobs / {latest_amount} wei",
                )
            conn.execute(
                "INSERT INTO vouchers (client, cumulative_jobs, provider, cumulative_amount, signature, "
                "accepted_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    client,
                    v.cumulative_jobs,
                    v.provider,
                    str(v.cumulative_amount),
                    signed.signature.to_bytes(),
                    self._clock(),
                ),
            )
            if job is not None:
                self._insert_job(conn, job)
        log.info(
            "voucher accepted",
            extra={
                "client": client,
                "cumulative_jobs": v.cumulative_jobs,
                "cumulative_amount": v.cumulative_amount,
            },
        )

    def latest_voucher(self, client: str) -> SignedMessage[Voucher] | None:
        """The latest voucher accepted from ``client``, or ``None``."""
        account = self.voucher_account(client)
        return account.latest if account is not None else None

    def voucher_account(self, client: str) -> VoucherAccount | None:
        """The client's latest voucher and redeemed totals, or ``None`` if it never paid by voucher."""
        client = _checked_address("client", client)
        with self._lock:
            rows = self.read(
                "SELECT redeemed_amount, redeemed_jobs FROM voucher_accounts WHERE client = ?", (client,)
            )
            if not rows:
                return None
            latest = self.read(
                "SELECT * FROM vouchers WHERE client = ? ORDER BY cumulative_jobs DESC LIMIT 1", (client,)
            )
        return VoucherAccount(
            client=client,
            latest=_voucher_from_row(latest[0]) if latest else None,
            redeemed_amount=int(rows[0]["redeemed_amount"]),
            redeemed_jobs=int(rows[0]["redeemed_jobs"]),
        )

    def voucher_accounts(self) -> list[VoucherAccount]:
        """Every client's voucher account."""
        clients = [r["client"] for r in self.read("SELECT client FROM voucher_accounts ORDER BY client")]
        return [a for a in (self.voucher_account(c) for c in clients) if a is not None]

    def vouchers_of(self, client: str) -> list[SignedMessage[Voucher]]:
        """Every voucher accepted from ``client``, oldest first (older ones can still be redeemed when the
        client's deposit no longer covers the latest)."""
        client = _checked_address("client", client)
        rows = self.read("SELECT * FROM vouchers WHERE client = ? ORDER BY cumulative_jobs", (client,))
        return [_voucher_from_row(r) for r in rows]

    def unredeemed_vouchers(self) -> list[SignedMessage[Voucher]]:
        """Each client's latest voucher where it is worth more than what was redeemed."""
        return [a.latest for a in self.voucher_accounts() if a.latest is not None and a.outstanding > 0]

    def mark_redeemed(
        self, vouchers: Iterable[Voucher], tx_hash: bytes | None, *, gas_used: int | None = None
    ) -> None:
        """These vouchers are redeemed on chain (by ``tx_hash``, or found so when ``None``)."""
        items = list(vouchers)
        with self.transaction() as conn:
            for v in items:
                self._raise_redeemed(
                    conn, _checked_address("voucher client", v.client), v.cumulative_amount, v.cumulative_jobs
                )
            if items and tx_hash is not None:
                total = ", ".join(f"{v.client}:{v.cumulative_amount}" for v in items)
                self._insert_tx(conn, "redeem", tx_hash, gas_used=gas_used, detail=total)

    # --- chain transactions and attestations ---------------------------------------------------------

    def _insert_tx(
        self,
        conn: sqlite3.Connection,
        kind: ChainTxKind,
        tx_hash: bytes | None,
        *,
        job_id: bytes | None = None,
        gas_used: int | None = None,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO chain_txs (kind, job_id, tx_hash, gas_used, detail, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (kind, job_id, tx_hash, gas_used, detail, self._clock()),
        )

    def chain_txs(self, kind: ChainTxKind | None = None) -> list[ChainTx]:
        """The chain transactions recorded, oldest first."""
        sql, params = "SELECT * FROM chain_txs", []
        if kind is not None:
            sql, params = sql + " WHERE kind = ?", [kind]
        return [
            ChainTx(
                kind=r["kind"],
                job_id=r["job_id"],
                tx_hash=r["tx_hash"],
                gas_used=r["gas_used"],
                detail=r["detail"],
                created_at=r["created_at"],
            )
            for r in self.read(sql + " ORDER BY id", params)
        ]

    def record_attestation(
        self, epoch: int, nonce: int, measurements: int, tx_hash: bytes, *, gas_used: int | None = None
    ) -> None:
        """An attestation batch was submitted."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO attestations (epoch, nonce, measurements, tx_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (epoch, str(nonce), measurements, tx_hash, self._clock()),
            )
            self._insert_tx(conn, "attest", tx_hash, gas_used=gas_used, detail=f"epoch={epoch} nonce={nonce}")

    def attestations(self) -> list[AttestationRecord]:
        """Attestation batches submitted, oldest first."""
        return [
            AttestationRecord(
                epoch=r["epoch"],
                nonce=int(r["nonce"]),
                measurements=r["measurements"],
                tx_hash=r["tx_hash"],
                created_at=r["created_at"],
            )
            for r in self.read("SELECT * FROM attestations ORDER BY id")
        ]

    # --- summary -------------------------------------------------------------------------------------

    def earnings(self) -> EarningsSummary:
        """Job counts and amounts earned and owed, from the store's records."""
        counts = dict.fromkeys(JobState, 0)
        escrow: dict[JobState, int] = dict.fromkeys(JobState, 0)
        with self._lock:
            for row in self.read("SELECT state, payment, price FROM jobs"):
                state = JobState(row["state"])
                counts[state] += 1
                if row["payment"] == "escrow":
                    escrow[state] += int(row["price"])
            accounts = self.voucher_accounts()
        accepted = sum(a.latest.message.cumulative_amount for a in accounts if a.latest is not None)
        return EarningsSummary(
            jobs_by_state=counts,
            escrow_pending=escrow[JobState.ACCEPTED] + escrow[JobState.RUNNING] + escrow[JobState.COMPLETED],
            escrow_committed=escrow[JobState.COMMITTED],
            escrow_settled=escrow[JobState.SETTLED],
            voucher_accepted=accepted,
            voucher_redeemed=sum(a.redeemed_amount for a in accounts),
            voucher_outstanding=sum(a.outstanding for a in accounts),
        )
