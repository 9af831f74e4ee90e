"""The gateway's job database: jobs, their attempts and events, the payer's vouchers and escrows, the cache.

One SQLite file holds everything the gateway must not lose: a job accepted by ``POST /v1/jobs`` is written
before the client hears about it, every state change is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``),
and the payer writes a voucher or an escrow job here *before* it sends it anywhere. The file is in WAL mode
with ``synchronous=FULL`` (a committed change survives the process being killed and a power loss) and is
readable by the gateway's user only (mode 0600: it holds clients' inputs and results). The schema is
versioned: :data:`SCHEMA_VERSION`, migrations append-only.

One connection serves all threads behind a lock: the dispatcher writes from the event loop and from worker
threads, the HTTP routes read from theirs. Waiters (:meth:`JobStore.wait_event`, for SSE and websockets) are
woken through their own event loop whichever thread appended the event.

Job life cycle::

    queued -> placed -> running -> succeeded
       \\         \\         \\ `--> placed (failover: re-placed)
        `---------`---------`----> failed | cancelled

A job served from the result cache goes ``queued -> succeeded`` (``cached`` set). Every transition appends
an event (:class:`JobEvent`) with a sequence number that grows by one per job.

Every delivered result is checked before the job succeeds (``proxima.marketplace.gateway.verify``): the check
is stored on the attempt (:meth:`JobStore.set_verification`) and, for the result that the job returns, on
the job. An attempt whose result failed its check ends ``rejected`` (:meth:`JobStore.reject_attempt`) and
the evidence filed against it on chain is stored on it too (:meth:`JobStore.set_evidence`). Canary jobs
(``kind = "canary"``) are the gateway's own: paid by it, charged to nobody, listed under its own address.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, get_args

from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

from proxima.marketplace.errors import MarketError
from proxima.sdk.sqlite import SqliteStore
from proxima.sdk.types import Address
from proxima.sdk.workloads import WorkloadSpecError, canonical_json, parse_input

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL",
    "AttemptOutcome",
    "AttemptRecord",
    "EventType",
    "IdempotencyConflictError",
    "InvalidJobError",
    "JobEvent",
    "JobKind",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "JobStoreError",
    "PaymentMode",
    "SchemaVersionError",
    "UnknownJobError",
    "new_job_id",
]

log = logging.getLogger(__name__)

PaymentMode = Literal["voucher", "escrow"]
JobKind = Literal["client", "canary"]
AttemptOutcome = Literal["running", "succeeded", "failed", "rejected", "cancelled"]
_JOB_ID = re.compile(r"^0x[0-9a-f]{64}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_MAX_ERROR_CHARS: Final = 2_000


class JobStatus(StrEnum):
    """Where a job is in its life cycle."""

    QUEUED = "queued"
    """Accepted and stored; not placed yet (or waiting for the dispatcher after a restart)."""
    PLACED = "placed"
    """The matching engine chose a provider (and backups); no request sent yet."""
    RUNNING = "running"
    """A request is with a provider."""
    SUCCEEDED = "succeeded"
    """A verified result is stored (from a provider, or from the result cache)."""
    FAILED = "failed"
    """Every attempt failed, or the job could not be placed or paid; ``error`` says why."""
    CANCELLED = "cancelled"
    """The client cancelled it before a result arrived."""


TERMINAL: Final = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
"""Statuses a job never leaves."""


class EventType(StrEnum):
    """What an event records."""

    QUEUED = "queued"
    PLACED = "placed"
    ATTEMPT_STARTED = "attempt_started"
    ATTEMPT_FAILED = "attempt_failed"
    FAILOVER = "failover"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CACHED = "cached"
    SETTLED = "settled"
    """An escrow payment was confirmed or claimed back on chain (after the job finished)."""
    REJECTED = "rejected"
    """An attempt delivered a result that failed verification; the job moves on (data: the check)."""
    EVIDENCE = "evidence"
    """Evidence against a rejected result was filed on chain, or could not be (data: its outcome)."""


# --- errors ----------------------------------------------------------------------------------------------


class JobStoreError(MarketError):
    """Root of the errors of the job store."""


class InvalidJobError(JobStoreError, ValueError):
    """A job cannot be accepted as given; the message names the field.

    Args:
        field: The field at fault (``"input"``, ``"workload"``, ``"spec.residency"``...).
        problem: What is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid job {field}: {problem}")


class IdempotencyConflictError(JobStoreError):
    """An idempotency key was used before by the same client for a different request.

    Args:
        key: The key.
        job_id: The job created with it first.
    """

    def __init__(self, key: str, job_id: str) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(
            f"idempotency key {key!r} was already used for job {job_id} with a different request; "
            "use a new key for a new request"
        )


class UnknownJobError(JobStoreError, KeyError):
    """No job with this id is in the store."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SchemaVersionError(JobStoreError):
    """The database was written by a newer gateway than this one."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: job database schema version {found} is newer than this gateway supports "
            f"({supported}); upgrade proxima"
        )


# --- records ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRecord:
    """One try of a job on one provider.

    Attributes:
        n: 1 for the first attempt, then 2, 3...
        provider: The provider's address.
        region: The provider's region (from its offer).
        job_id: The job id sent to the provider (``0x`` + 64 hex): the job's own id for the first attempt,
            a fresh one for later attempts, the escrow job id (from the quote) when paid by escrow.
        payment: ``"voucher"`` or ``"escrow"``.
        price_wei: What the attempt pays the provider if it delivers.
        started_at: Unix seconds.
        ended_at: Unix seconds, ``None`` while running.
        outcome: ``"running"``, ``"succeeded"``, ``"failed"``, ``"rejected"`` (it delivered a result that
            failed verification) or ``"cancelled"``.
        error_code: Why it failed (``busy``, ``timeout``, ``transport``, ``invalid_result``,
            ``verification_failed``...).
        error_message: The failure's explanation.
        verification: The check of its result: ``{method, passed, detail, rounds, verify_ms}`` (``None``
            when no result came or it was not checked).
        evidence: What was filed on chain against a rejected result: ``{kind, outcome, tx, slashed_wei,
            detail, ...}`` (``None`` when nothing was attempted yet).
    """

    n: int
    provider: Address
    region: str
    job_id: str
    payment: PaymentMode
    price_wei: int
    started_at: float
    ended_at: float | None
    outcome: AttemptOutcome
    error_code: str | None
    error_message: str | None
    verification: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job.

    Attributes:
        seq: 1, 2, 3... per job, without gaps.
        at: Unix seconds.
        type: What happened.
        data: Details (JSON-able).
    """

    seq: int
    at: float
    type: EventType
    data: dict[str, Any]


@dataclass(frozen=True)
class JobRecord:
    """A job as stored.

    Attributes:
        id: ``0x`` + 64 hex digits; the job id the first attempt sends to its provider.
        client: The paying client's address.
        workload: ``"matmul"`` or ``"embed"``.
        input: The workload input (validated against the workload's schema when created).
        spec: The constraints the client chose (JobSpec fields: hardware, residency, max_price_wei,
            budget_wei, latency_target_s, redundancy, min_reliability); the dispatcher adds the rest.
        payment_mode: ``"voucher"`` (default) or ``"escrow"``.
        use_cache: Whether the result cache may serve this job and keep its result.
        status: Where it is.
        created_at: Unix seconds.
        updated_at: Unix seconds of the latest change.
        placement: The explanation of the current placement (``Placement.explain()``).
        attempts: Every attempt, in order.
        result: The workload output once succeeded.
        receipt: The provider's signed receipt of the result: ``{"message": ..., "signature": "0x..",
            "domain": ...}`` (the typed data a verifier needs).
        provider: The provider that delivered the result.
        timing_ms: match, dispatch, queue, compute, verify, settle and total, in milliseconds.
        price_wei: The price of the current placement's chosen provider (then of the delivered result).
        charged_wei: What the client was charged (set once, only for a delivered result).
        error: ``{"code", "message"}`` once failed or cancelled.
        cached: Whether the result came from the result cache.
        verification: The check of the returned result: ``{method, passed, detail, rounds, verify_ms}``
            (``None`` until a result passed, and for cached results, whose check was made when they were
            first delivered).
        kind: ``"client"`` (a client's job) or ``"canary"`` (the gateway's own test of a provider).
    """

    id: str
    client: Address
    workload: str
    input: dict[str, Any]
    spec: dict[str, Any]
    payment_mode: PaymentMode
    use_cache: bool
    status: JobStatus
    created_at: float
    updated_at: float
    placement: dict[str, Any] | None
    attempts: tuple[AttemptRecord, ...]
    result: dict[str, Any] | None
    receipt: dict[str, Any] | None
    provider: Address | None
    timing_ms: dict[str, float]
    price_wei: int | None
    charged_wei: int | None
    error: dict[str, str] | None
    cached: bool
    verification: dict[str, Any] | None = None
    kind: JobKind = "client"

    @property
    def finished(self) -> bool:
        """Whether the job reached a terminal status."""
        return self.status in TERMINAL


def new_job_id() -> str:
    """A fresh random job id: ``0x`` + 64 lowercase hex digits."""
    return "0x" + secrets.token_bytes(32).hex()


# --- schema ----------------------------------------------------------------------------------------------

_SCHEMA_V1 = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    workload TEXT NOT NULL,
    input TEXT NOT NULL,
    spec TEXT NOT NULL,
    payment_mode TEXT NOT NULL CHECK (payment_mode IN ('voucher', 'escrow')),
    use_cache INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    placement TEXT,
    result TEXT,
    receipt TEXT,
    provider TEXT,
    timing TEXT NOT NULL DEFAULT '{}',
    price_wei TEXT,
    charged_wei TEXT,
    error TEXT,
    cached INTEGER NOT NULL DEFAULT 0,
    ledger TEXT CHECK (ledger IN ('reserved', 'charged', 'released')),
    reserved_wei TEXT,
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    UNIQUE (client, idempotency_key)
) STRICT;
CREATE INDEX jobs_by_client ON jobs (client, created_at);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE TABLE attempts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    n INTEGER NOT NULL,
    provider TEXT NOT NULL,
    region TEXT NOT NULL,
    attempt_job_id TEXT NOT NULL,
    payment TEXT NOT NULL,
    price_wei TEXT NOT NULL,
    request TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    PRIMARY KEY (job_id, n)
) STRICT;
CREATE INDEX attempts_by_attempt_job ON attempts (attempt_job_id);
CREATE TABLE events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT;
CREATE TABLE vouchers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    cumulative_jobs INTEGER NOT NULL,
    cumulative_amount TEXT NOT NULL,
    price_wei TEXT NOT NULL,
    signature BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('inflight', 'accepted', 'refused', 'uncertain')),
    attempt TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;
CREATE INDEX vouchers_by_provider ON vouchers (provider, cumulative_jobs);
CREATE TABLE escrows (
    escrow_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    provider TEXT NOT NULL,
    price_wei TEXT NOT NULL,
    accept_by INTEGER NOT NULL,
    delivery_deadline INTEGER NOT NULL,
    terms TEXT NOT NULL,
    state TEXT NOT NULL,
    result_hash TEXT,
    tx TEXT,
    note TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;
CREATE INDEX escrows_by_state ON escrows (state);
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    workload TEXT NOT NULL,
    model TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    provider TEXT NOT NULL,
    job_id TEXT NOT NULL,
    result TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    used_at REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX cache_by_use ON cache (used_at);
"""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction; run statement by statement inside it instead.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


_SCHEMA_V2 = """
ALTER TABLE jobs ADD COLUMN verification TEXT;
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'client' CHECK (kind IN ('client', 'canary'));
ALTER TABLE attempts ADD COLUMN verification TEXT;
ALTER TABLE attempts ADD COLUMN evidence TEXT;
ALTER TABLE escrows ADD COLUMN verdicts TEXT;
CREATE INDEX jobs_by_kind ON jobs (kind, created_at)
"""
"""Verification: the check of each delivered result (attempt and job), evidence filed against rejected
results, canary jobs, verifier signatures kept for an escrow dispute."""

_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    lambda conn: _run_script(conn, _SCHEMA_V1),  # 0 -> 1
    lambda conn: _run_script(conn, _SCHEMA_V2),  # 1 -> 2
)
"""``_MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; append, never edit."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)


# --- helpers ---------------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _int_or_none(text: str | None) -> int | None:
    return None if text is None else int(text)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


# --- the store -------------------------------------------------------------------------------------------


class JobStore(SqliteStore):
    """The gateway's SQLite job database.

    Args:
        path: The database file; created (mode 0600) if missing.
        clock: Wall-clock time (unix seconds).

    Raises:
        JobStoreError: If the file cannot be created or opened.
        SchemaVersionError: If it was written by a newer gateway.
    """

    label = "job database"
    migrations = _MIGRATIONS

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._waiters_lock = threading.Lock()
        super().__init__(path)

    def _open_error(self, message: str) -> JobStoreError:
        return JobStoreError(message)

    def _newer_error(self, found: int, supported: int) -> SchemaVersionError:
        return SchemaVersionError(self.path, found, supported)

    # --- events --------------------------------------------------------------------------------------

    def _append(
        self, conn: sqlite3.Connection, job_id: str, type_: EventType, data: Mapping[str, Any] | None = None
    ) -> int:
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) AS seq FROM events WHERE job_id = ?", (job_id,))
        seq = int(row.fetchone()["seq"]) + 1
        conn.execute(
            "INSERT INTO events (job_id, seq, at, type, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, seq, self._clock(), type_.value, _json(dict(data or {}))),
        )
        return seq

    def _notify(self, job_id: str) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def events(self, job_id: str, after: int = 0) -> builtins.list[JobEvent]:
        """The job's events with ``seq > after``, in order (empty for an unknown job)."""
        rows = self.read(
            "SELECT seq, at, type, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, int(after)),
        )
        return [
            JobEvent(int(r["seq"]), float(r["at"]), EventType(r["type"]), json.loads(r["data"])) for r in rows
        ]

    async def wait_event(self, job_id: str, after: int, timeout: float) -> builtins.list[JobEvent]:
        """The job's events after ``after``; if there are none yet, wait up to ``timeout`` seconds for one.

        Returns:
            The new events (empty if none came in time).
        """
        found = self.events(job_id, after)
        if found or timeout <= 0:
            return found
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._waiters_lock:
            self._waiters.setdefault(job_id, set()).add(entry)
        try:
            found = self.events(job_id, after)  # an event appended while registering is not missed
            if found:
                return found
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return []
            return self.events(job_id, after)
        finally:
            with self._waiters_lock:
                waiting = self._waiters.get(job_id)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._waiters[job_id]

    def add_event(self, job_id: str, type_: EventType, data: Mapping[str, Any] | None = None) -> int:
        """Append an event to a job (one transaction); returns its sequence number.

        Raises:
            UnknownJobError: If there is no such job.
        """
        with self.transaction() as conn:
            self._require(conn, job_id)
            seq = self._append(conn, job_id, type_, data)
        self._notify(job_id)
        return seq

    # --- jobs ----------------------------------------------------------------------------------------

    def create(
        self,
        client: str,
        workload: str,
        input: Mapping[str, Any],
        spec: Mapping[str, Any],
        payment_mode: str = "voucher",
        *,
        idempotency_key: str | None = None,
        use_cache: bool = True,
        job_id: str | None = None,
        kind: JobKind = "client",
    ) -> JobRecord:
        """Store a new job (status ``queued``), or return the one created before with the same key.

        Args:
            client: The paying client's address.
            workload: ``"matmul"`` or ``"embed"``.
            input: The workload input; validated against the workload's schema.
            spec: The client's constraints (JSON-able; checked when the job is placed).
            payment_mode: ``"voucher"`` or ``"escrow"``.
            idempotency_key: Per client: a second create with the same key returns the first job.
            use_cache: Whether the result cache may serve (and keep) this job's result.
            job_id: The id to use (default: a fresh random one).
            kind: ``"client"``, or ``"canary"`` for the gateway's own canary jobs.

        Returns:
            The stored job: new, or the one first created with ``idempotency_key``.

        Raises:
            InvalidJobError: If a field is invalid (the message names it); nothing is stored.
            IdempotencyConflictError: If the key was used by this client for a different request.
        """
        if not isinstance(client, str) or not is_address(client):
            raise InvalidJobError("client", f"not an Ethereum address: {str(client)[:60]!r}")
        client = to_checksum_address(client)
        if payment_mode not in get_args(PaymentMode):
            raise InvalidJobError("payment_mode", f"must be 'voucher' or 'escrow', got {payment_mode!r}")
        if kind not in get_args(JobKind):
            raise InvalidJobError("kind", f"must be 'client' or 'canary', got {kind!r}")
        try:
            parse_input(workload, input)
        except WorkloadSpecError as err:
            field = "workload" if str(err).startswith("unknown workload") else "input"
            raise InvalidJobError(field, str(err)) from err
        if not isinstance(spec, Mapping):
            raise InvalidJobError("spec", f"expected an object, got {type(spec).__name__}")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not _IDEMPOTENCY_KEY.match(idempotency_key)
        ):
            raise InvalidJobError("idempotency_key", "must be 1 to 255 printable ASCII characters, no spaces")
        job_id = new_job_id() if job_id is None else job_id
        if not _JOB_ID.match(job_id):
            raise InvalidJobError("id", "must be 0x followed by 64 lowercase hex digits")
        try:
            input_json, spec_json = _json(dict(input)), _json(dict(spec))
        except (TypeError, ValueError) as err:
            raise InvalidJobError("spec", f"not JSON-able: {err}") from err
        request_hash = keccak(
            canonical_json(
                {
                    "input": json.loads(input_json),
                    "mode": payment_mode,
                    "spec": json.loads(spec_json),
                    "cache": use_cache,
                    "workload": workload,
                }
            )
        ).hex()
        now = self._clock()
        with self.transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT id, request_hash FROM jobs WHERE client = ? AND idempotency_key = ?",
                    (client, idempotency_key),
                ).fetchone()
                if row is not None:
                    if row["request_hash"] != request_hash:
                        raise IdempotencyConflictError(idempotency_key, row["id"])
                    existing = self._get(conn, row["id"])
                    assert existing is not None
                    return existing
            try:
                conn.execute(
                    "INSERT INTO jobs (id, client, workload, input, spec, payment_mode, use_cache, status, "
                    "created_at, updated_at, idempotency_key, request_hash, kind) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        client,
                        workload,
                        input_json,
                        spec_json,
                        payment_mode,
                        int(use_cache),
                        now,
                        now,
                        idempotency_key,
                        request_hash,
                        kind,
                    ),
                )
            except sqlite3.IntegrityError as err:
                raise InvalidJobError("id", f"a job {job_id} exists already") from err
            queued: dict[str, Any] = {"workload": workload, "payment_mode": payment_mode}
            if kind != "client":
                queued["kind"] = kind
            self._append(conn, job_id, EventType.QUEUED, queued)
            record = self._get(conn, job_id)
        assert record is not None
        log.info(
            "job stored",
            extra={"job_id": job_id, "client": client, "workload": workload, "payment_mode": payment_mode},
        )
        return record

    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or ``None`` (also for a malformed id)."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            return None
        with self._lock:
            return self._get(self._conn, job_id)

    def list(
        self, client: str, *, limit: int = 50, status: JobStatus | None = None, before: float | None = None
    ) -> builtins.list[JobRecord]:
        """A client's jobs, newest first.

        Args:
            client: The client's address.
            limit: At most this many (1..1000).
            status: Only jobs in this status.
            before: Only jobs created before this unix time (for paging).
        """
        if not 1 <= limit <= 1000:
            raise InvalidJobError("limit", f"must be between 1 and 1000, got {limit}")
        sql = "SELECT id FROM jobs WHERE client = ?"
        params: builtins.list[object] = [to_checksum_address(client) if is_address(client) else client]
        if status is not None:
            sql += " AND status = ?"
            params.append(JobStatus(status).value)
        if before is not None:
            sql += " AND created_at < ?"
            params.append(float(before))
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(int(limit))
        with self._lock:
            ids = [r["id"] for r in self._conn.execute(sql, params).fetchall()]
            return [r for r in (self._get(self._conn, i) for i in ids) if r is not None]

    def unfinished(self) -> builtins.list[JobRecord]:
        """Jobs not in a terminal status, oldest first: the dispatcher resumes them when it starts."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled') "
                "ORDER BY created_at, rowid"
            ).fetchall()
            return [r for r in (self._get(self._conn, row["id"]) for row in rows) if r is not None]

    def _require(self, conn: sqlite3.Connection, job_id: str) -> JobStatus:
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        return JobStatus(row["status"])

    def _get(self, conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        attempts = conn.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY n", (job_id,)).fetchall()
        return JobRecord(
            id=row["id"],
            client=row["client"],
            workload=row["workload"],
            input=json.loads(row["input"]),
            spec=json.loads(row["spec"]),
            payment_mode=row["payment_mode"],
            use_cache=bool(row["use_cache"]),
            status=JobStatus(row["status"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            placement=_loads(row["placement"]),
            attempts=tuple(_attempt(a) for a in attempts),
            result=_loads(row["result"]),
            receipt=_loads(row["receipt"]),
            provider=row["provider"],
            timing_ms=json.loads(row["timing"]),
            price_wei=_int_or_none(row["price_wei"]),
            charged_wei=_int_or_none(row["charged_wei"]),
            error=_loads(row["error"]),
            cached=bool(row["cached"]),
            verification=_loads(row["verification"]),
            kind=row["kind"],
        )

    def _update(self, conn: sqlite3.Connection, job_id: str, **columns: object) -> None:
        assignments = "".join(f"{name} = ?, " for name in columns)
        conn.execute(
            f"UPDATE jobs SET {assignments}updated_at = ? WHERE id = ?",  # noqa: S608 - names are ours
            (*columns.values(), self._clock(), job_id),
        )

    def _live(self, conn: sqlite3.Connection, job_id: str) -> JobStatus:
        status = self._require(conn, job_id)
        if status in TERMINAL:
            raise JobStoreError(f"job {job_id} is {status.value}; it cannot change any more")
        return status

    # --- transitions (the dispatcher's) --------------------------------------------------------------

    def mark_placed(
        self, job_id: str, placement: Mapping[str, Any], price_wei: int, *, replaced: bool = False
    ) -> None:
        """The job was placed (or re-placed after its candidates ran out): status ``placed``.

        Raises:
            UnknownJobError: If there is no such job.
            JobStoreError: If it is finished.
        """
        with self.transaction() as conn:
            self._live(conn, job_id)
            self._update(
                conn,
                job_id,
                status=JobStatus.PLACED.value,
                placement=_json(dict(placement)),
                price_wei=str(price_wei),
            )
            chosen = (
                [c.get("provider") for c in placement.get("chosen", [])]
                if isinstance(placement.get("chosen"), list)
                else []
            )
            backups = (
                [c.get("provider") for c in placement.get("backups", [])]
                if isinstance(placement.get("backups"), list)
                else []
            )
            self._append(
                conn,
                job_id,
                EventType.PLACED,
                {"chosen": chosen, "backups": backups, "price_wei": str(price_wei), "replaced": replaced},
            )
        self._notify(job_id)

    def start_attempt(
        self,
        job_id: str,
        *,
        provider: str,
        region: str,
        attempt_job_id: str,
        payment: PaymentMode,
        price_wei: int,
        request: Mapping[str, Any] | None = None,
    ) -> int:
        """A new attempt begins (status ``running``); returns its number.

        Raises:
            UnknownJobError: If there is no such job.
            JobStoreError: If it is finished.
        """
        with self.transaction() as conn:
            self._live(conn, job_id)
            row = conn.execute("SELECT COALESCE(MAX(n), 0) AS n FROM attempts WHERE job_id = ?", (job_id,))
            n = int(row.fetchone()["n"]) + 1
            conn.execute(
                "INSERT INTO attempts (job_id, n, provider, region, attempt_job_id, payment, price_wei, "
                "request, started_at, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                (
                    job_id,
                    n,
                    provider,
                    region,
                    attempt_job_id,
                    payment,
                    str(price_wei),
                    None if request is None else _json(dict(request)),
                    self._clock(),
                ),
            )
            self._update(conn, job_id, status=JobStatus.RUNNING.value)
            self._append(
                conn,
                job_id,
                EventType.ATTEMPT_STARTED,
                {
                    "attempt": n,
                    "provider": provider,
                    "region": region,
                    "payment": payment,
                    "price_wei": str(price_wei),
                },
            )
        self._notify(job_id)
        return n

    def set_attempt_request(
        self,
        job_id: str,
        n: int,
        request: Mapping[str, Any],
        *,
        attempt_job_id: str | None = None,
        price_wei: int | None = None,
    ) -> None:
        """Record the signed request of a running attempt before it is sent (and its job id, for escrow)."""
        with self.transaction() as conn:
            columns: dict[str, object] = {"request": _json(dict(request))}
            if attempt_job_id is not None:
                columns["attempt_job_id"] = attempt_job_id
            if price_wei is not None:
                columns["price_wei"] = str(price_wei)
            assignments = ", ".join(f"{name} = ?" for name in columns)
            cursor = conn.execute(
                f"UPDATE attempts SET {assignments} WHERE job_id = ? AND n = ?",  # noqa: S608 - names are ours
                (*columns.values(), job_id, n),
            )
            if cursor.rowcount != 1:
                raise UnknownJobError(f"{job_id} attempt {n}")

    def attempt_request(self, job_id: str, n: int) -> dict[str, Any] | None:
        """The signed request an attempt sent (or was about to send), as JSON; ``None`` if not recorded."""
        rows = self.read("SELECT request FROM attempts WHERE job_id = ? AND n = ?", (job_id, n))
        return None if not rows else _loads(rows[0]["request"])

    def end_attempt(
        self, job_id: str, n: int, *, code: str, message: str, failover: Mapping[str, Any] | None = None
    ) -> None:
        """An attempt failed (``attempt_failed`` event with its code; plus a ``failover`` event if given)."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT provider FROM attempts WHERE job_id = ? AND n = ?", (job_id, n)
            ).fetchone()
            if row is None:
                raise UnknownJobError(f"{job_id} attempt {n}")
            conn.execute(
                "UPDATE attempts SET ended_at = ?, outcome = 'failed', error_code = ?, error_message = ? "
                "WHERE job_id = ? AND n = ?",
                (self._clock(), code, _clip(message), job_id, n),
            )
            self._update(conn, job_id)
            self._append(
                conn,
                job_id,
                EventType.ATTEMPT_FAILED,
                {"attempt": n, "provider": row["provider"], "code": code, "message": _clip(message)},
            )
            if failover is not None:
                self._append(conn, job_id, EventType.FAILOVER, dict(failover))
        self._notify(job_id)

    def set_verification(self, job_id: str, n: int, verification: Mapping[str, Any]) -> None:
        """Record the check of attempt ``n``'s result (``{method, passed, detail, rounds, verify_ms}``).

        Raises:
            UnknownJobError: If there is no such attempt.
        """
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE attempts SET verification = ? WHERE job_id = ? AND n = ?",
                (_json(dict(verification)), job_id, n),
            )
            if cursor.rowcount != 1:
                raise UnknownJobError(f"{job_id} attempt {n}")

    def reject_attempt(
        self,
        job_id: str,
        n: int,
        *,
        code: str,
        message: str,
        verification: Mapping[str, Any] | None = None,
        failover: Mapping[str, Any] | None = None,
    ) -> None:
        """Attempt ``n`` delivered a result that failed verification: outcome ``rejected`` (a ``rejected``
        event with the check; plus a ``failover`` event if given). The job itself goes on.

        Raises:
            UnknownJobError: If there is no such attempt.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT provider FROM attempts WHERE job_id = ? AND n = ?", (job_id, n)
            ).fetchone()
            if row is None:
                raise UnknownJobError(f"{job_id} attempt {n}")
            columns: dict[str, object] = {
                "ended_at": self._clock(),
                "outcome": "rejected",
                "error_code": code,
                "error_message": _clip(message),
            }
            if verification is not None:
                columns["verification"] = _json(dict(verification))
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(
                f"UPDATE attempts SET {assignments} WHERE job_id = ? AND n = ?",  # noqa: S608 - names are ours
                (*columns.values(), job_id, n),
            )
            self._update(conn, job_id)
            data: dict[str, Any] = {
                "attempt": n,
                "provider": row["provider"],
                "code": code,
                "message": _clip(message),
            }
            if verification is not None:
                data["verification"] = dict(verification)
            self._append(conn, job_id, EventType.REJECTED, data)
            if failover is not None:
                self._append(conn, job_id, EventType.FAILOVER, dict(failover))
        self._notify(job_id)

    def set_evidence(self, job_id: str, n: int, evidence: Mapping[str, Any]) -> None:
        """Record what was filed on chain against attempt ``n``'s result (an ``evidence`` event too; the job
        may have finished already).

        Raises:
            UnknownJobError: If there is no such attempt.
        """
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE attempts SET evidence = ? WHERE job_id = ? AND n = ?",
                (_json(dict(evidence)), job_id, n),
            )
            if cursor.rowcount != 1:
                raise UnknownJobError(f"{job_id} attempt {n}")
            self._append(conn, job_id, EventType.EVIDENCE, {"attempt": n, **dict(evidence)})
        self._notify(job_id)

    def succeed(
        self,
        job_id: str,
        n: int | None,
        *,
        result: Mapping[str, Any],
        receipt: Mapping[str, Any],
        provider: str,
        timing_ms: Mapping[str, float],
        price_wei: int,
        charged_wei: int,
        cached: bool = False,
        verification: Mapping[str, Any] | None = None,
        agreeing: tuple[int, ...] = (),
    ) -> None:
        """The job has its verified result: status ``succeeded`` (attempt ``n`` succeeded, unless cached).

        ``verification`` (the check the result passed) is stored on the job; ``agreeing`` are the other
        attempts of a redundant run whose results agreed with it (they end ``succeeded`` too).

        Raises:
            UnknownJobError: If there is no such job.
            JobStoreError: If it is finished.
        """
        with self.transaction() as conn:
            self._live(conn, job_id)
            for done in (*(() if n is None else (n,)), *agreeing):
                conn.execute(
                    "UPDATE attempts SET ended_at = COALESCE(ended_at, ?), outcome = 'succeeded' "
                    "WHERE job_id = ? AND n = ?",
                    (self._clock(), job_id, done),
                )
            self._update(
                conn,
                job_id,
                status=JobStatus.SUCCEEDED.value,
                result=_json(dict(result)),
                receipt=_json(dict(receipt)),
                provider=provider,
                timing=_json(dict(timing_ms)),
                price_wei=str(price_wei),
                charged_wei=str(charged_wei),
                cached=int(cached),
                error=None,
                verification=None if verification is None else _json(dict(verification)),
            )
            if cached:
                self._append(conn, job_id, EventType.CACHED, {"provider": provider})
            self._append(
                conn,
                job_id,
                EventType.SUCCEEDED,
                {
                    "provider": provider,
                    "charged_wei": str(charged_wei),
                    "cached": cached,
                    "timing_ms": dict(timing_ms),
                },
            )
        self._notify(job_id)

    def fail(
        self, job_id: str, *, code: str, message: str, timing_ms: Mapping[str, float] | None = None
    ) -> None:
        """The job failed for good: status ``failed`` with ``{code, message}``; nothing is charged.

        Raises:
            UnknownJobError: If there is no such job.
            JobStoreError: If it is finished.
        """
        error = {"code": code, "message": _clip(message)}
        with self.transaction() as conn:
            self._live(conn, job_id)
            columns: dict[str, object] = {"status": JobStatus.FAILED.value, "error": _json(error)}
            if timing_ms is not None:
                columns["timing"] = _json(dict(timing_ms))
            self._update(conn, job_id, **columns)
            self._append(conn, job_id, EventType.FAILED, error)
        self._notify(job_id)

    def set_ledger(
        self,
        job_id: str,
        state: Literal["reserved", "charged", "released"],
        *,
        reserved_wei: int | None = None,
    ) -> None:
        """Record where the client's spend for this job stands (so a restart finishes a charge or release,
        and resumes with the same reservation).

        Raises:
            UnknownJobError: If there is no such job.
        """
        with self.transaction() as conn:
            self._require(conn, job_id)
            if reserved_wei is None:
                conn.execute("UPDATE jobs SET ledger = ? WHERE id = ?", (state, job_id))
            else:
                conn.execute(
                    "UPDATE jobs SET ledger = ?, reserved_wei = ? WHERE id = ?",
                    (state, str(reserved_wei), job_id),
                )

    def ledger_of(self, job_id: str) -> tuple[str | None, int | None]:
        """``(ledger state, reserved wei)`` of a job (``(None, None)`` before anything was reserved)."""
        rows = self.read("SELECT ledger, reserved_wei FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None, None
        return rows[0]["ledger"], _int_or_none(rows[0]["reserved_wei"])

    def ledger_pending(self) -> builtins.list[tuple[str, JobStatus, int | None]]:
        """Finished jobs whose reservation was neither charged nor released: ``(id, status, charged_wei)``."""
        rows = self.read(
            "SELECT id, status, charged_wei FROM jobs WHERE ledger = 'reserved' "
            "AND status IN ('succeeded', 'failed', 'cancelled') ORDER BY updated_at"
        )
        return [(r["id"], JobStatus(r["status"]), _int_or_none(r["charged_wei"])) for r in rows]

    def cancel(self, job_id: str, *, message: str = "cancelled by the client") -> bool:
        """Cancel a job that is not finished: status ``cancelled``, a running attempt marked cancelled.

        Returns:
            Whether it was cancelled now (``False`` if it had already finished).

        Raises:
            UnknownJobError: If there is no such job.
        """
        with self.transaction() as conn:
            if self._require(conn, job_id) in TERMINAL:
                return False
            conn.execute(
                "UPDATE attempts SET ended_at = ?, outcome = 'cancelled' "
                "WHERE job_id = ? AND outcome = 'running'",
                (self._clock(), job_id),
            )
            error = {"code": "cancelled", "message": _clip(message)}
            self._update(conn, job_id, status=JobStatus.CANCELLED.value, error=_json(error))
            self._append(conn, job_id, EventType.CANCELLED, error)
        self._notify(job_id)
        log.info("job cancelled", extra={"job_id": job_id})
        return True


def _attempt(row: sqlite3.Row) -> AttemptRecord:
    return AttemptRecord(
        n=int(row["n"]),
        provider=row["provider"],
        region=row["region"],
        job_id=row["attempt_job_id"],
        payment=row["payment"],
        price_wei=int(row["price_wei"]),
        started_at=float(row["started_at"]),
        ended_at=None if row["ended_at"] is None else float(row["ended_at"]),
        outcome=row["outcome"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        verification=_loads(row["verification"]),
        evidence=_loads(row["evidence"]),
    )
