"""The audit index: the Proxima contracts' events, their transactions and blocks, in one SQLite file.

The indexer (:mod:`proxima.audit.indexer`) writes it; the ledger, ``verify``, the API and the CLI read it.
Everything in it came from a JSON-RPC endpoint; nothing in it is trusted beyond that (``verify`` re-checks it
against the chain).

Schema (version 1; the ``meta`` row ``schema_version`` holds it):

``meta(key TEXT PRIMARY KEY, value TEXT)``
    ``schema_version`` (``"1"``), ``chain_id`` (decimal), ``deployment`` (the bound
    :class:`~proxima.sdk.chain.Deployment` as JSON), ``checkpoint`` (the number of the last fully indexed
    block, decimal; absent before the first range), and any key set with :meth:`AuditStore.set_meta`
    (``ledger_parameters``, ...).
``blocks(number INTEGER PRIMARY KEY, hash BLOB, parent_hash BLOB, timestamp INTEGER)``
    Headers of every block holding an indexed event, and of each range's last block (the checkpoints).
    Hashes are 32 raw bytes.
``transactions(hash BLOB PRIMARY KEY, block_number INTEGER, tx_index INTEGER, sender TEXT, "to" TEXT,
input BLOB, value TEXT, status INTEGER)``
    Every transaction that emitted an indexed event. ``sender``/``to`` are checksummed addresses (``to``
    is NULL for a contract creation), ``input`` the raw calldata, ``value`` the wei sent as a decimal
    string (uint256 does not fit SQLite's INTEGER), ``status`` the receipt's status (1 = success).
``events(block_number INTEGER, log_index INTEGER, tx_hash BLOB, tx_index INTEGER, contract TEXT,
address TEXT, name TEXT, args TEXT, timestamp INTEGER, PRIMARY KEY (block_number, log_index))``
    One row per decoded log: the emitting contract's name (``"JobEscrow"``) and checksummed address, the
    event name (``"JobSettled"``), its arguments as JSON (below) and the block's timestamp.

``args`` encoding (:func:`encode_args` / :func:`decode_args`): a JSON object from argument name to value,
in the event's argument order, where

* ``uint*``/``int*`` are JSON integers (of any size: Python's ``json`` keeps them exact),
* ``bool`` is ``true``/``false``,
* ``address`` is the checksummed ``"0x..."`` string,
* ``bytes32``/``bytes`` are objects ``{"bytes": "0x<lowercase hex>"}``,

so decoding needs no ABI and yields the same Python values as
:class:`proxima.sdk.bindings.DecodedEvent`'s ``args``. Example::

    {"jobId": {"bytes": "0x5e5e..."}, "provider": "0x7099...79C8", "payout": 980000000000000000,
     "fee": 20000000000000000, "confirmed": true}

Writes are atomic: :meth:`AuditStore.write_range` stores a range's events, transactions, blocks and the new
checkpoint in one SQL transaction, so a reader (or a process restarting after a kill) sees either all of a
range or none of it; rows are keyed (``(block_number, log_index)``, transaction hash, block number), so
writing the same range again changes nothing. The file is in WAL mode: other processes may read it (open it
with ``readonly=True``) while the indexer writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from eth_utils.address import is_hex_address, to_checksum_address
from pydantic import ValidationError

from proxima.audit.errors import AuditError
from proxima.sdk.chain import Deployment

__all__ = [
    "SCHEMA_VERSION",
    "AuditStore",
    "AuditStoreCorruptError",
    "AuditStoreError",
    "AuditStoreMismatchError",
    "AuditStoreReadOnlyError",
    "BlockRef",
    "IndexedEvent",
    "IndexedTransaction",
    "decode_args",
    "encode_args",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_PAGE = 2_000  # rows per query when iterating, so no cursor stays open between pages

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    parent_hash BLOB NOT NULL,
    timestamp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    hash BLOB PRIMARY KEY,
    block_number INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    sender TEXT NOT NULL,
    "to" TEXT,
    input BLOB NOT NULL,
    value TEXT NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_block ON transactions (block_number);
CREATE TABLE IF NOT EXISTS events (
    block_number INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    tx_index INTEGER NOT NULL,
    contract TEXT NOT NULL,
    address TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (name, block_number, log_index);
CREATE INDEX IF NOT EXISTS events_by_tx ON events (tx_hash);
"""


# --- errors ----------------------------------------------------------------------------------------------


class AuditStoreError(AuditError):
    """The audit index cannot be opened, read or written."""


class AuditStoreReadOnlyError(AuditStoreError):
    """A write was attempted on an index opened read-only.

    Args:
        path: The index file.
        operation: What was attempted.
    """

    def __init__(self, path: str, operation: str) -> None:
        self.path = path
        self.operation = operation
        super().__init__(f"{path}: cannot {operation}: the index is open read-only")


class AuditStoreMismatchError(AuditStoreError):
    """The index belongs to another deployment or chain than the one it is used with.

    Args:
        path: The index file.
        what: Which property differs (``"chain id"``, ``"contracts"``, ...).
        stored: The index's value.
        given: The value it was used with.
    """

    def __init__(self, path: str, what: str, stored: str, given: str) -> None:
        self.path = path
        self.what = what
        self.stored = stored
        self.given = given
        super().__init__(
            f"{path} indexes another deployment: its {what} is {stored}, not {given}; "
            "use another --db file (or delete this one to re-index from scratch)"
        )


class AuditStoreCorruptError(AuditStoreError):
    """A row of the index does not hold what the schema says (tampered with, or written by other code).

    Args:
        where: Which row or value.
        problem: What is wrong with it.
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"audit index: {where}: {problem}")


# --- records ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedEvent:
    """One decoded event of a Proxima contract, where it happened.

    ``args`` hold the same Python values as :class:`proxima.sdk.bindings.DecodedEvent`'s: ``int``, ``bool``,
    checksummed ``str`` addresses and ``bytes`` (``bytes32`` and ``bytes``).
    """

    block_number: int
    log_index: int
    tx_hash: bytes
    tx_index: int
    contract: str
    address: str
    name: str
    args: dict[str, Any]
    timestamp: int


@dataclass(frozen=True)
class IndexedTransaction:
    """A transaction that emitted at least one indexed event (its input is kept for signature checks)."""

    hash: bytes
    block_number: int
    tx_index: int
    sender: str
    to: str | None
    input: bytes
    value: int
    status: int


@dataclass(frozen=True)
class BlockRef:
    """A block header's identity: number, hash, parent hash and timestamp."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int


# --- args encoding ---------------------------------------------------------------------------------------


@lru_cache(maxsize=65_536)
def _checksummed(address: str) -> str:
    """EIP-55 form of ``address`` (cached: an index repeats a few addresses many times)."""
    return str(to_checksum_address(address))


def _encode_value(name: str, value: Any) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": "0x" + bytes(value).hex()}
    if isinstance(value, str):
        if not is_hex_address(value):
            raise ValueError(f"argument {name!r}: {value!r} is not an address (strings must be addresses)")
        return _checksummed(value)
    raise ValueError(f"argument {name!r}: cannot encode a {type(value).__name__} (int, bool, address, bytes)")


def encode_args(args: dict[str, Any]) -> str:
    """Encode event arguments as the ``events.args`` JSON text (see the module docstring).

    Args:
        args: Argument name to ``int``, ``bool``, address ``str`` or ``bytes``.

    Returns:
        Compact JSON, arguments in the given order.

    Raises:
        ValueError: If a value has another type, or a string is not an address.
    """
    return json.dumps({k: _encode_value(k, v) for k, v in args.items()}, separators=(",", ":"))


def _decode_value(name: str, value: Any) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str) and len(value) == 42 and is_hex_address(value):
        return _checksummed(value)
    if isinstance(value, dict) and set(value) == {"bytes"} and isinstance(value["bytes"], str):
        text = value["bytes"]
        if text.startswith("0x"):
            try:
                return bytes.fromhex(text[2:])
            except ValueError:
                pass
    raise ValueError(f"argument {name!r}: {value!r} is not an int, bool, address or {{'bytes': '0x..'}}")


def decode_args(text: str) -> dict[str, Any]:
    """Decode an ``events.args`` JSON text into the arguments :func:`encode_args` encoded.

    Args:
        text: The JSON text.

    Returns:
        Argument name to ``int``, ``bool``, checksummed address ``str`` or ``bytes``.

    Raises:
        ValueError: If the text is not such an object.
    """
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    return {str(k): _decode_value(str(k), v) for k, v in raw.items()}


def _deployment_identity(deployment: Deployment) -> dict[str, Any]:
    """What makes two deployments the same for an index: chain, contracts and first block."""
    return {
        "chain id": deployment.chain_id,
        "contracts": dict(sorted((k, to_checksum_address(v)) for k, v in deployment.contracts.items())),
        "deployment block": deployment.block_number,
    }


# --- the store -------------------------------------------------------------------------------------------


class AuditStore:
    """The audit index in one SQLite file (WAL mode), or in memory for tests.

    Safe to share between threads (one connection under a lock); other processes may open the same file
    read-only while one indexer writes it.

    Args:
        path: The database file; created (with its schema) unless ``readonly``.
        readonly: Open for reading only: writes raise :class:`AuditStoreReadOnlyError`; the file must exist.

    Raises:
        AuditStoreError: If the file cannot be opened, is not an audit index, or has another schema version.
    """

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        memory = self.path == ":memory:"
        try:
            if readonly:
                if not Path(self.path).is_file():
                    raise AuditStoreError(
                        f"{self.path}: no audit index there; run `proxima-audit sync` first"
                    )
                uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            else:
                self._conn = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None, timeout=30.0
                )
            self._conn.execute("PRAGMA busy_timeout = 30000")
            if not readonly and not memory:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
            if not readonly:
                with self._write():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
            version = self._meta("schema_version")
        except sqlite3.DatabaseError as err:
            raise AuditStoreError(f"{self.path}: cannot open the audit index: {err}") from err
        if version != str(SCHEMA_VERSION):
            self._conn.close()
            raise AuditStoreError(
                f"{self.path}: audit index schema version {version}, this code reads {SCHEMA_VERSION}; "
                "re-index into a new file"
            )
        log.debug("audit index opened", extra={"path": self.path, "readonly": readonly})

    @classmethod
    def memory(cls) -> AuditStore:
        """A fresh index in memory (for tests)."""
        return cls(":memory:")

    # --- plumbing ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (every write was already committed)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditStore({self.path!r}{', readonly' if self.readonly else ''})"

    def _write(self) -> _Transaction:
        return _Transaction(self)

    def _check_writable(self, operation: str) -> None:
        if self.readonly:
            raise AuditStoreReadOnlyError(self.path, operation)

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.DatabaseError as err:
                raise AuditStoreError(f"{self.path}: reading the audit index failed: {err}") from err

    def _meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    # --- meta --------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key`` in the ``meta`` table, or ``None``."""
        return self._meta(key)

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` in the ``meta`` table (for data derived from the chain, such as
        ``ledger_parameters``).

        Raises:
            ValueError: For the keys the store itself manages.
            AuditStoreReadOnlyError: If the index is open read-only.
        """
        if key in {"schema_version", "chain_id", "deployment", "checkpoint"}:
            raise ValueError(f"meta key {key!r} is managed by the store")
        self._check_writable(f"set meta {key!r}")
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def bind(self, deployment: Deployment, chain_id: int) -> None:
        """Tie the index to one deployment on one chain; the first call records it.

        Args:
            deployment: The deployment whose events the index holds.
            chain_id: The chain id the RPC endpoint reports.

        Raises:
            AuditStoreMismatchError: If ``chain_id`` differs from the deployment's, or the index was bound
                to another chain, other contract addresses or another deployment block.
            AuditStoreReadOnlyError: If the index is read-only and not bound yet.
        """
        if deployment.chain_id != chain_id:
            raise AuditStoreMismatchError(
                self.path, "deployment file's chain id", str(deployment.chain_id), f"the RPC's {chain_id}"
            )
        stored = self.deployment
        if stored is not None:
            old, new = _deployment_identity(stored), _deployment_identity(deployment)
            for what in old:
                if old[what] != new[what]:
                    raise AuditStoreMismatchError(self.path, what, str(old[what]), str(new[what]))
            stored_chain = self._meta("chain_id")
            if stored_chain is not None and int(stored_chain) != chain_id:
                raise AuditStoreMismatchError(self.path, "chain id", stored_chain, str(chain_id))
            return
        self._check_writable("bind a deployment")
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('chain_id', ?)", (str(chain_id),))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('deployment', ?)",
                (deployment.model_dump_json(),),
            )
        log.info(
            "audit index bound",
            extra={"path": self.path, "chain_id": chain_id, "deployment_block": deployment.block_number},
        )

    @property
    def deployment(self) -> Deployment | None:
        """The deployment the index is bound to, or ``None`` before :meth:`bind`."""
        text = self._meta("deployment")
        if text is None:
            return None
        try:
            return Deployment.model_validate_json(text)
        except ValidationError as err:
            raise AuditStoreCorruptError("meta 'deployment'", str(err)) from err

    @property
    def chain_id(self) -> int | None:
        """The chain id the index is bound to, or ``None`` before :meth:`bind`."""
        text = self._meta("chain_id")
        return None if text is None else int(text)

    # --- writing -----------------------------------------------------------------------------------------

    def checkpoint(self) -> BlockRef | None:
        """The last fully indexed block, or ``None`` before the first range."""
        text = self._meta("checkpoint")
        if text is None:
            return None
        block = self.block(int(text))
        if block is None:
            raise AuditStoreCorruptError(f"checkpoint block {text}", "its header is not in the blocks table")
        return block

    def write_range(
        self,
        events: Sequence[IndexedEvent],
        transactions: Sequence[IndexedTransaction],
        blocks: Sequence[BlockRef],
        checkpoint: BlockRef,
    ) -> None:
        """Store one indexed range and move the checkpoint to its last block, in one SQL transaction.

        Re-writing rows that are already there replaces them with the same values (nothing changes); the
        checkpoint never moves back (use :meth:`rollback_to` for that).

        Args:
            events: The range's events.
            transactions: The transactions that emitted them.
            blocks: Headers of the blocks holding them.
            checkpoint: The range's last block (every block up to it is indexed once this returns).

        Raises:
            ValueError: If an event lies after the checkpoint.
            AuditStoreReadOnlyError: If the index is read-only.
        """
        self._check_writable("write a range")
        beyond = [e for e in events if e.block_number > checkpoint.number]
        if beyond:
            raise ValueError(
                f"event at block {beyond[0].block_number} lies after the checkpoint {checkpoint.number}"
            )
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO blocks (number, hash, parent_hash, timestamp) VALUES (?, ?, ?, ?)",
                [(b.number, b.hash, b.parent_hash, b.timestamp) for b in [*blocks, checkpoint]],
            )
            conn.executemany(
                'INSERT OR REPLACE INTO transactions (hash, block_number, tx_index, sender, "to", input, '
                "value, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (t.hash, t.block_number, t.tx_index, t.sender, t.to, t.input, str(t.value), t.status)
                    for t in transactions
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO events (block_number, log_index, tx_hash, tx_index, contract, "
                "address, name, args, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.block_number,
                        e.log_index,
                        e.tx_hash,
                        e.tx_index,
                        e.contract,
                        e.address,
                        e.name,
                        encode_args(e.args),
                        e.timestamp,
                    )
                    for e in events
                ],
            )
            row = conn.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
            if row is None or int(row[0]) <= checkpoint.number:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('checkpoint', ?)",
                    (str(checkpoint.number),),
                )

    def rollback_to(self, block_number: int) -> int:
        """Delete every event, transaction and block above ``block_number`` (after a reorganisation).

        The checkpoint becomes the highest stored block at or below ``block_number`` (blocks in between hold
        no events, so indexing resumes correctly from there), or none.

        Args:
            block_number: The last block to keep.

        Returns:
            How many events were removed.

        Raises:
            AuditStoreReadOnlyError: If the index is read-only.
        """
        self._check_writable("roll back")
        with self._write() as conn:
            removed = int(conn.execute("DELETE FROM events WHERE block_number > ?", (block_number,)).rowcount)
            conn.execute("DELETE FROM transactions WHERE block_number > ?", (block_number,))
            conn.execute("DELETE FROM blocks WHERE number > ?", (block_number,))
            row = conn.execute("SELECT MAX(number) FROM blocks").fetchone()
            if row is None or row[0] is None:
                conn.execute("DELETE FROM meta WHERE key = 'checkpoint'")
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('checkpoint', ?)", (str(row[0]),)
                )
        log.info(
            "audit index rolled back", extra={"path": self.path, "to_block": block_number, "events": removed}
        )
        return removed

    # --- reading -----------------------------------------------------------------------------------------

    def events(
        self,
        names: Collection[str] | None = None,
        *,
        contract: str | None = None,
        from_block: int = 0,
        to_block: int | None = None,
    ) -> Iterator[IndexedEvent]:
        """Indexed events in chain order (block, then log index), read page by page.

        Args:
            names: Only events with these names (all when ``None``).
            contract: Only events of this contract (``"JobEscrow"``).
            from_block: First block (inclusive).
            to_block: Last block (inclusive); the checkpoint when ``None``.

        Raises:
            AuditStoreCorruptError: If a row's ``args`` do not decode.
        """
        where = ["(block_number, log_index) > (?, ?)", "block_number <= ?"]
        params: list[object] = []
        if names is not None:
            wanted = sorted(set(names))
            if not wanted:
                return
            where.append(f"name IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if contract is not None:
            where.append("contract = ?")
            params.append(contract)
        last = self._meta("checkpoint")
        end = to_block if to_block is not None else (int(last) if last is not None else -1)
        # The WHERE clauses are constants; every value is a parameter.
        clauses = " AND ".join(where)
        columns = "block_number, log_index, tx_hash, tx_index, contract, address, name, args, timestamp"
        sql = f"SELECT {columns} FROM events WHERE {clauses} ORDER BY block_number, log_index LIMIT ?"  # noqa: S608
        cursor = (from_block, -1)
        while True:
            rows = self._rows(sql, [*cursor, end, *params, _PAGE])
            for row in rows:
                yield self._event(row)
            if len(rows) < _PAGE:
                return
            cursor = (int(rows[-1][0]), int(rows[-1][1]))

    def _event(self, row: tuple[Any, ...]) -> IndexedEvent:
        block_number, log_index = int(row[0]), int(row[1])
        try:
            args = decode_args(row[7])
        except ValueError as err:
            raise AuditStoreCorruptError(f"event {block_number}/{log_index} args", str(err)) from err
        return IndexedEvent(
            block_number=block_number,
            log_index=log_index,
            tx_hash=bytes(row[2]),
            tx_index=int(row[3]),
            contract=str(row[4]),
            address=str(row[5]),
            name=str(row[6]),
            args=args,
            timestamp=int(row[8]),
        )

    def event_count(self) -> int:
        """How many events the index holds."""
        return int(self._rows("SELECT COUNT(*) FROM events")[0][0])

    def transaction(self, tx_hash: bytes) -> IndexedTransaction | None:
        """The indexed transaction with this hash, or ``None``."""
        rows = self._rows(
            'SELECT hash, block_number, tx_index, sender, "to", input, value, status FROM transactions '
            "WHERE hash = ?",
            (bytes(tx_hash),),
        )
        return self._transaction(rows[0]) if rows else None

    def transactions(self) -> Iterator[IndexedTransaction]:
        """Every indexed transaction in chain order (block, then position)."""
        sql = (
            'SELECT hash, block_number, tx_index, sender, "to", input, value, status FROM transactions '
            "WHERE (block_number, tx_index) > (?, ?) ORDER BY block_number, tx_index LIMIT ?"
        )
        cursor = (-1, -1)
        while True:
            rows = self._rows(sql, [*cursor, _PAGE])
            for row in rows:
                yield self._transaction(row)
            if len(rows) < _PAGE:
                return
            cursor = (int(rows[-1][1]), int(rows[-1][2]))

    def _transaction(self, row: tuple[Any, ...]) -> IndexedTransaction:
        try:
            value = int(row[6])
        except (TypeError, ValueError) as err:
            raise AuditStoreCorruptError(f"transaction 0x{bytes(row[0]).hex()} value", repr(row[6])) from err
        return IndexedTransaction(
            hash=bytes(row[0]),
            block_number=int(row[1]),
            tx_index=int(row[2]),
            sender=str(row[3]),
            to=None if row[4] is None else str(row[4]),
            input=bytes(row[5]),
            value=value,
            status=int(row[7]),
        )

    def block(self, number: int) -> BlockRef | None:
        """The stored header of block ``number``, or ``None``."""
        rows = self._rows(
            "SELECT number, hash, parent_hash, timestamp FROM blocks WHERE number = ?", (number,)
        )
        if not rows:
            return None
        n, h, p, t = rows[0]
        return BlockRef(int(n), bytes(h), bytes(p), int(t))

    def block_numbers(self, *, above: int = -1) -> list[int]:
        """Numbers of the stored blocks above ``above``, ascending (the indexer's reorg check walks them)."""
        return [
            int(r[0])
            for r in self._rows("SELECT number FROM blocks WHERE number > ? ORDER BY number", (above,))
        ]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's lock; rolled back if the block raises."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        try:
            self._store._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._store._lock.release()
            raise
        return self._store._conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._store._conn.execute("COMMIT")
            else:
                self._store._conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as err:
            raise AuditStoreError(f"{self._store.path}: writing the audit index failed: {err}") from err
        finally:
            self._store._lock.release()
        if isinstance(exc, sqlite3.DatabaseError):
            raise AuditStoreError(f"{self._store.path}: writing the audit index failed: {exc}") from exc
