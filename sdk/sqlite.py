"""A SQLite file private to its owner, with a versioned schema: plumbing the node and gateway stores share.

:class:`SqliteStore` creates the file with mode 0600 (SQLite's ``-wal``/``-shm`` files copy its mode),
opens it in WAL mode with ``synchronous = FULL`` and foreign keys on, and brings the schema up to date with
append-only migrations recorded in a ``schema_version`` table. A subclass names itself and its errors; every
change goes through :meth:`SqliteStore.transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if the
block raises), every read through :meth:`SqliteStore.read`, both under one lock shared by all threads.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = ["Migration", "SqliteStore"]

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]
"""Takes the schema from one version to the next."""


class SqliteStore:
    """Base of a store kept in one private SQLite file.

    Subclasses set :attr:`label` and :attr:`migrations` and say which errors to raise.

    Args:
        path: The database file (created with mode 0600 when missing; its folder must exist).

    Raises:
        Exception: What :meth:`_open_error` or :meth:`_newer_error` return, when the file cannot be created
            or opened, or holds a newer schema.
    """

    label: ClassVar[str] = "store"
    """What the file is, in messages and logs (``"node database"``)."""
    migrations: ClassVar[Sequence[Migration]] = ()
    """``migrations[i]`` takes the schema from version ``i`` to ``i + 1``; append, never edit."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as err:
            raise self._open_error(f"{self.path}: cannot create the {self.label}: {err}") from err
        try:
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise self._open_error(f"{self.path}: cannot open the {self.label}: {err}") from err
        log.debug(f"{self.label} opened", extra={"path": str(self.path), "journal_mode": mode})

    def _open_error(self, message: str) -> Exception:
        """The error for a file that cannot be created or opened."""
        return OSError(message)

    def _newer_error(self, found: int, supported: int) -> Exception:
        """The error for a file whose schema is newer than this code knows."""
        return RuntimeError(f"{self.path}: schema version {found} is newer than the supported {supported}")

    # --- plumbing ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (every change was already committed)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block exits, rolled back if it raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Rows of one read query."""
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self.read("SELECT version FROM schema_version")[0]["version"])

    def _migrate(self) -> None:
        supported = len(self.migrations)
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                current = 0
            else:
                current = int(row["version"])
            if current > supported:
                raise self._newer_error(current, supported)
            for version in range(current, supported):
                self.migrations[version](conn)
                log.info(
                    f"{self.label} schema migrated", extra={"path": str(self.path), "version": version + 1}
                )
            conn.execute("UPDATE schema_version SET version = ?", (supported,))
