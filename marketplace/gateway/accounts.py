"""Client accounts of the gateway: budgets, spend, reservations per job and API keys, in one SQLite file.

A client is an Ethereum address with a budget in wei. Spending is two-phase, so that a job that would exceed
the budget is refused *before* any work starts and a client is charged only for a delivered result:

* :meth:`Accounts.reserve` sets aside the most a job may cost (refused with :class:`BudgetExceededError` when
  ``budget - spent - reserved`` is smaller);
* :meth:`Accounts.charge` turns the reservation into spend (at most the reserved amount; the rest is freed);
* :meth:`Accounts.release` frees it when nothing is owed (the job failed or was cancelled).

These three are the dispatcher's :class:`SpendLedger`. Every change is one ``BEGIN IMMEDIATE`` transaction
(WAL, ``synchronous=FULL``), so concurrent requests, threads and processes (the CLI beside a running
gateway) never overspend, and a crash never leaves half a change. Amounts are stored as decimal text (wei
exceed SQLite's 64-bit integers).

API keys are 256-bit random tokens (``pxk_...``) shown once, when issued; only their SHA-256 is stored.
The table of used request signatures (replay protection for signed requests) lives here too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol, cast

from eth_utils.address import is_hex_address, to_checksum_address

from proxima.marketplace.errors import MarketError
from proxima.sdk.types import Address

__all__ = [
    "API_KEY_PREFIX",
    "Accounts",
    "AccountsError",
    "AccountsStoreError",
    "BudgetExceededError",
    "ClientAccount",
    "ClientExistsError",
    "InvalidAmountError",
    "Reservation",
    "ReservationError",
    "SpendLedger",
    "UnknownClientError",
    "checksum_address",
]

log = logging.getLogger(__name__)

API_KEY_PREFIX: Final = "pxk_"
"""Every API key starts with this (so that leaked keys are easy to recognise and scan for)."""

_API_KEY_CHARS: Final = len(API_KEY_PREFIX) + 43  # token_urlsafe(32) is 43 characters
_UINT256_MAX: Final = 2**256 - 1
_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS clients (
    address      TEXT PRIMARY KEY,
    budget_wei   TEXT NOT NULL,
    spent_wei    TEXT NOT NULL DEFAULT '0',
    reserved_wei TEXT NOT NULL DEFAULT '0',
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash   TEXT PRIMARY KEY,
    client     TEXT NOT NULL REFERENCES clients(address),
    hint       TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_client ON api_keys(client);
CREATE TABLE IF NOT EXISTS reservations (
    job_id      TEXT PRIMARY KEY,
    client      TEXT NOT NULL REFERENCES clients(address),
    amount_wei  TEXT NOT NULL,
    charged_wei TEXT NOT NULL DEFAULT '0',
    state       TEXT NOT NULL CHECK (state IN ('reserved', 'charged', 'released')),
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_client ON reservations(client, state);
CREATE TABLE IF NOT EXISTS used_signatures (
    digest     TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS used_signatures_expiry ON used_signatures(expires_at);
"""

ReservationState = Literal["reserved", "charged", "released"]


class AccountsError(MarketError):
    """Root of the errors of the client accounts."""


class AccountsStoreError(AccountsError):
    """The accounts database cannot be opened or written.

    Args:
        path: The SQLite file.
        problem: What went wrong.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"accounts database {path}: {problem}")


class InvalidAmountError(AccountsError, ValueError):
    """An amount is not a whole number of wei in 0 .. 2**256 - 1.

    Args:
        what: Which amount.
        value: What was given.
    """

    def __init__(self, what: str, value: object) -> None:
        super().__init__(f"{what} must be a whole number of wei from 0 to 2**256 - 1, got {value!r}")


class UnknownClientError(AccountsError, LookupError):
    """No client account has this address.

    Args:
        address: The address asked for.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"no client account for {address}; add it with `proxima-gateway add-client --address {address}`"
        )


class ClientExistsError(AccountsError):
    """A client account with this address exists already.

    Args:
        address: The address.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"client {address} exists already; change its budget with `proxima-gateway set-budget`"
        )


class BudgetExceededError(AccountsError):
    """A job would cost more than what is left of the client's budget; nothing was reserved.

    Args:
        client: The client.
        needed_wei: The most the job may cost.
        budget_wei: The client's budget.
        spent_wei: What it spent.
        reserved_wei: What its unfinished jobs hold.
    """

    def __init__(
        self, client: str, needed_wei: int, budget_wei: int, spent_wei: int, reserved_wei: int
    ) -> None:
        self.client = client
        self.needed_wei = needed_wei
        self.budget_wei = budget_wei
        self.spent_wei = spent_wei
        self.reserved_wei = reserved_wei
        self.available_wei = max(0, budget_wei - spent_wei - reserved_wei)
        super().__init__(
            f"this job may cost up to {needed_wei} wei but client {client} has {self.available_wei} wei left "
            f"of its budget of {budget_wei} wei ({spent_wei} spent, {reserved_wei} held by unfinished jobs); "
            "lower max_price_wei or budget_wei, wait for running jobs, or ask the operator to raise the "
            "budget"
        )


class ReservationError(AccountsError):
    """A reservation cannot change as asked (unknown job, charge above the reserved amount, ...).

    Args:
        job_id: The job.
        problem: What is wrong.
    """

    def __init__(self, job_id: str, problem: str) -> None:
        self.job_id = job_id
        super().__init__(f"reservation of job {job_id}: {problem}")


class SpendLedger(Protocol):
    """What the dispatcher needs from the accounts: two-phase spend per job."""

    def reserve(self, client: Address, job_id: str, amount_wei: int) -> None:
        """Set ``amount_wei`` of ``client``'s budget aside for ``job_id``; raises BudgetExceededError."""

    def charge(self, job_id: str, amount_wei: int) -> None:
        """Charge ``amount_wei`` (at most the reserved amount) for ``job_id``; the rest is freed."""

    def release(self, job_id: str) -> None:
        """Free ``job_id``'s reservation: nothing is owed."""


@dataclass(frozen=True, slots=True)
class ClientAccount:
    """A client's budget and spend.

    Attributes:
        address: The client's address.
        budget_wei: The most it may spend in total.
        spent_wei: What it was charged for delivered results.
        reserved_wei: What its unfinished jobs hold.
        api_keys: How many API keys are bound to it.
        created_at: Unix seconds.
        updated_at: Unix seconds of the last change.
    """

    address: Address
    budget_wei: int
    spent_wei: int
    reserved_wei: int
    api_keys: int
    created_at: float
    updated_at: float

    @property
    def available_wei(self) -> int:
        """What a new job may still reserve: ``budget - spent - reserved`` (never negative)."""
        return max(0, self.budget_wei - self.spent_wei - self.reserved_wei)


@dataclass(frozen=True, slots=True)
class Reservation:
    """The budget set aside for one job.

    Attributes:
        job_id: The job.
        client: Whose budget.
        amount_wei: Set aside.
        charged_wei: Charged (``state == "charged"``), else 0.
        state: ``reserved``, ``charged`` or ``released``.
        created_at: Unix seconds.
        updated_at: Unix seconds.
    """

    job_id: str
    client: Address
    amount_wei: int
    charged_wei: int
    state: ReservationState
    created_at: float
    updated_at: float


def checksum_address(value: str) -> Address:
    """The EIP-55 form of a 20-byte hex address.

    Raises:
        ValueError: If ``value`` is not ``0x`` + 40 hex digits, or has a wrong mixed-case checksum.
    """
    if not isinstance(value, str) or not is_hex_address(value):
        raise ValueError(f"{value!r} is not an address (0x followed by 40 hex digits)")
    checksummed = Address(to_checksum_address(value))
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise ValueError(f"{value!r} has an invalid EIP-55 checksum (typo?)")
    return checksummed


def _amount(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
        raise InvalidAmountError(what, value)
    return value


def _key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


class Accounts:
    """Client accounts, API keys and spend reservations in one SQLite file (thread- and process-safe).

    Args:
        path: The SQLite file (created with its folder if missing).
        clock: Unix time source (tests).

    Raises:
        AccountsStoreError: If the file cannot be opened or is not an accounts database.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._signatures_seen = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # key hashes and budgets: owner only
        except OSError as err:
            raise AccountsStoreError(self.path, f"cannot create it ({err})") from err
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except sqlite3.Error as err:
            raise AccountsStoreError(self.path, str(err)) from err
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, _SCHEMA_VERSION):
                self._db.close()
                raise AccountsStoreError(self.path, f"schema version {version} is newer than this gateway")
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.Error as err:
            self._db.close()
            raise AccountsStoreError(self.path, str(err)) from err

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise AccountsStoreError(self.path, str(err)) from err
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as err:
                    self._db.execute("ROLLBACK")
                    raise AccountsStoreError(self.path, str(err)) from err

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as err:
                raise AccountsStoreError(self.path, str(err)) from err

    # --- clients ----------------------------------------------------------------------------------------

    def add_client(self, address: str, budget_wei: int) -> ClientAccount:
        """Open an account for ``address`` with ``budget_wei``.

        Raises:
            ValueError: If ``address`` is not an address.
            InvalidAmountError: If the budget is not a wei amount.
            ClientExistsError: If the client exists already.
        """
        client = checksum_address(address)
        _amount("budget_wei", budget_wei)
        now = self._clock()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM clients WHERE address = ?", (client,)).fetchone():
                raise ClientExistsError(client)
            db.execute(
                "INSERT INTO clients (address, budget_wei, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (client, str(budget_wei), now, now),
            )
        log.info("client added", extra={"client": client, "budget_wei": budget_wei})
        return self._require(client)

    def set_budget(self, address: str, budget_wei: int) -> ClientAccount:
        """Change a client's budget (what it already spent stays spent).

        Raises:
            ValueError: If ``address`` is not an address.
            InvalidAmountError: If the budget is not a wei amount.
            UnknownClientError: If there is no such client.
        """
        client = checksum_address(address)
        _amount("budget_wei", budget_wei)
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE clients SET budget_wei = ?, updated_at = ? WHERE address = ?",
                (str(budget_wei), self._clock(), client),
            ).rowcount
            if not changed:
                raise UnknownClientError(client)
        log.info("budget set", extra={"client": client, "budget_wei": budget_wei})
        return self._require(client)

    def get(self, address: str) -> ClientAccount | None:
        """The account of ``address``, or None (also for text that is not an address)."""
        try:
            client = checksum_address(address)
        except ValueError:
            return None
        rows = self._read(
            "SELECT c.address, c.budget_wei, c.spent_wei, c.reserved_wei, c.created_at, c.updated_at, "
            "(SELECT count(*) FROM api_keys k WHERE k.client = c.address) FROM clients c WHERE c.address = ?",
            (client,),
        )
        return _client(rows[0]) if rows else None

    def clients(self) -> list[ClientAccount]:
        """Every client, by address."""
        rows = self._read(
            "SELECT c.address, c.budget_wei, c.spent_wei, c.reserved_wei, c.created_at, c.updated_at, "
            "(SELECT count(*) FROM api_keys k WHERE k.client = c.address) FROM clients c ORDER BY c.address"
        )
        return [_client(row) for row in rows]

    def _require(self, client: Address) -> ClientAccount:
        account = self.get(client)
        if account is None:
            raise UnknownClientError(client)
        return account

    # --- API keys ---------------------------------------------------------------------------------------

    def issue_api_key(self, address: str) -> str:
        """Create a new API key bound to a client. It is returned once and never stored in clear.

        Raises:
            ValueError: If ``address`` is not an address.
            UnknownClientError: If there is no such client.
        """
        client = checksum_address(address)
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM clients WHERE address = ?", (client,)).fetchone():
                raise UnknownClientError(client)
            db.execute(
                "INSERT INTO api_keys (key_hash, client, hint, created_at) VALUES (?, ?, ?, ?)",
                (_key_hash(api_key), client, api_key[:8], self._clock()),
            )
        log.info("API key issued", extra={"client": client, "key_hint": api_key[:8]})
        return api_key

    def revoke_api_keys(self, address: str) -> int:
        """Revoke every API key of a client; returns how many there were.

        Raises:
            ValueError: If ``address`` is not an address.
        """
        client = checksum_address(address)
        with self._transaction() as db:
            removed = db.execute("DELETE FROM api_keys WHERE client = ?", (client,)).rowcount
        log.info("API keys revoked", extra={"client": client, "count": removed})
        return int(removed)

    def client_for_key(self, api_key: str) -> Address | None:
        """The client an API key is bound to, or None for an unknown or malformed key."""
        if len(api_key) != _API_KEY_CHARS or not api_key.startswith(API_KEY_PREFIX):
            return None
        rows = self._read("SELECT client FROM api_keys WHERE key_hash = ?", (_key_hash(api_key),))
        return _addr(rows[0][0]) if rows else None

    # --- replay protection ------------------------------------------------------------------------------

    def use_signature(self, signature: bytes, expires_at: float) -> bool:
        """Record a request signature; False when it was seen before (a replay).

        Args:
            signature: The signature bytes.
            expires_at: When the request's timestamp leaves the accepted window (the record is dropped later).
        """
        digest = hashlib.sha256(signature).hexdigest()
        now = self._clock()
        with self._transaction() as db:
            self._signatures_seen += 1
            if self._signatures_seen % 256 == 1:
                db.execute("DELETE FROM used_signatures WHERE expires_at < ?", (now,))
            fresh = db.execute(
                "INSERT OR IGNORE INTO used_signatures (digest, expires_at) VALUES (?, ?)",
                (digest, expires_at),
            ).rowcount
        return bool(fresh)

    # --- spend (SpendLedger) ----------------------------------------------------------------------------

    def reserve(self, client: Address, job_id: str, amount_wei: int) -> None:
        """Make sure at least ``amount_wei`` of the client's budget is set aside for ``job_id``.

        A job reserved already keeps its reservation when it is as large (a resumed job, or the dispatcher
        confirming what the HTTP layer reserved at the door), and is topped up to ``amount_wei`` otherwise
        (the top-up is checked against the budget like a new reservation).

        Raises:
            BudgetExceededError: If what is left of the budget is smaller than what must be added; nothing
                changes.
            UnknownClientError: If there is no such client.
            ReservationError: If the job's reservation belongs to another client, or was charged or released.
            InvalidAmountError: If the amount is not a wei amount.
        """
        _amount("amount_wei", amount_wei)
        now = self._clock()
        with self._transaction() as db:
            existing = db.execute(
                "SELECT client, amount_wei, state FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            held = 0
            if existing is not None:
                if existing[0] != client or existing[2] != "reserved":
                    raise ReservationError(
                        job_id, f"it has a reservation of {existing[0]} that is {existing[2]}"
                    )
                held = int(existing[1])
                if held >= amount_wei:
                    return
            row = db.execute(
                "SELECT budget_wei, spent_wei, reserved_wei FROM clients WHERE address = ?", (client,)
            ).fetchone()
            if row is None:
                raise UnknownClientError(client)
            budget, spent, reserved = (int(v) for v in row)
            added = amount_wei - held
            if budget - spent - reserved < added:
                raise BudgetExceededError(client, added, budget, spent, reserved)
            db.execute(
                "UPDATE clients SET reserved_wei = ?, updated_at = ? WHERE address = ?",
                (str(reserved + added), now, client),
            )
            if existing is None:
                db.execute(
                    "INSERT INTO reservations (job_id, client, amount_wei, state, created_at, updated_at) "
                    "VALUES (?, ?, ?, 'reserved', ?, ?)",
                    (job_id, client, str(amount_wei), now, now),
                )
            else:
                db.execute(
                    "UPDATE reservations SET amount_wei = ?, updated_at = ? WHERE job_id = ?",
                    (str(amount_wei), now, job_id),
                )
        log.debug("budget reserved", extra={"job_id": job_id, "client": client, "amount_wei": amount_wei})

    def charge(self, job_id: str, amount_wei: int) -> None:
        """Charge the client for a delivered job: ``amount_wei`` becomes spend, the rest is freed.

        Charging a charged job again with the same amount does nothing (a client never pays twice).

        Raises:
            ReservationError: If the job has no reservation, it was released, it was charged another
                amount, or ``amount_wei`` exceeds the reservation.
            InvalidAmountError: If the amount is not a wei amount.
        """
        _amount("amount_wei", amount_wei)
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT client, amount_wei, charged_wei, state FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise ReservationError(job_id, "no reservation to charge")
            client, reserved_amount, charged, state = str(row[0]), int(row[1]), int(row[2]), str(row[3])
            if state == "charged":
                if charged == amount_wei:
                    return
                raise ReservationError(job_id, f"charged {charged} wei already; refusing to charge again")
            if state == "released":
                raise ReservationError(job_id, "it was released; nothing can be charged")
            if amount_wei > reserved_amount:
                raise ReservationError(
                    job_id, f"charge of {amount_wei} wei exceeds the {reserved_amount} reserved"
                )
            spent, reserved = (
                int(v)
                for v in db.execute(
                    "SELECT spent_wei, reserved_wei FROM clients WHERE address = ?", (client,)
                ).fetchone()
            )
            db.execute(
                "UPDATE clients SET spent_wei = ?, reserved_wei = ?, updated_at = ? WHERE address = ?",
                (str(spent + amount_wei), str(reserved - reserved_amount), now, client),
            )
            db.execute(
                "UPDATE reservations SET state = 'charged', charged_wei = ?, updated_at = ? WHERE job_id = ?",
                (str(amount_wei), now, job_id),
            )
        log.info("client charged", extra={"job_id": job_id, "client": client, "amount_wei": amount_wei})

    def release(self, job_id: str) -> None:
        """Free a job's reservation (it failed or was cancelled). Idempotent; unknown jobs are ignored."""
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT client, amount_wei, state FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None or row[2] != "reserved":
                return
            client, amount = str(row[0]), int(row[1])
            reserved = int(
                db.execute("SELECT reserved_wei FROM clients WHERE address = ?", (client,)).fetchone()[0]
            )
            db.execute(
                "UPDATE clients SET reserved_wei = ?, updated_at = ? WHERE address = ?",
                (str(reserved - amount), now, client),
            )
            db.execute(
                "UPDATE reservations SET state = 'released', updated_at = ? WHERE job_id = ?", (now, job_id)
            )
        log.debug("reservation released", extra={"job_id": job_id, "client": client, "amount_wei": amount})

    def reservation(self, job_id: str) -> Reservation | None:
        """The reservation of ``job_id``, or None."""
        rows = self._read(
            "SELECT job_id, client, amount_wei, charged_wei, state, created_at, updated_at FROM reservations "
            "WHERE job_id = ?",
            (job_id,),
        )
        if not rows:
            return None
        row = rows[0]
        state = str(row[4])
        assert state in ("reserved", "charged", "released")
        return Reservation(
            job_id=str(row[0]),
            client=_addr(row[1]),
            amount_wei=int(str(row[2])),
            charged_wei=int(str(row[3])),
            state=cast(ReservationState, state),
            created_at=float(str(row[5])),
            updated_at=float(str(row[6])),
        )


def _client(row: tuple[object, ...]) -> ClientAccount:
    return ClientAccount(
        address=_addr(row[0]),
        budget_wei=int(str(row[1])),
        spent_wei=int(str(row[2])),
        reserved_wei=int(str(row[3])),
        created_at=float(str(row[4])),
        updated_at=float(str(row[5])),
        api_keys=int(str(row[6])),
    )


def _addr(value: object) -> Address:
    return cast(Address, str(value))
