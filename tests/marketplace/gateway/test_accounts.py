"""Client accounts on a real SQLite file: budgets, two-phase spend, API keys, used signatures."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from proxima.marketplace.gateway.accounts import (
    API_KEY_PREFIX,
    Accounts,
    AccountsStoreError,
    BudgetExceededError,
    ClientExistsError,
    InvalidAmountError,
    ReservationError,
    UnknownClientError,
    checksum_address,
)

ALICE = "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1"
BOB = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    with Accounts(tmp_path / "accounts.sqlite") as acc:
        yield acc


def test_add_client_starts_with_its_budget_and_nothing_spent(accounts: Accounts) -> None:
    account = accounts.add_client(ALICE.lower(), 1000)
    assert account.address == ALICE  # stored checksummed whatever the case given
    assert (account.budget_wei, account.spent_wei, account.reserved_wei, account.available_wei) == (
        1000,
        0,
        0,
        1000,
    )
    assert accounts.get(ALICE) == account
    assert accounts.get("not an address") is None
    with pytest.raises(ClientExistsError, match="set-budget"):
        accounts.add_client(ALICE, 5)


def test_add_client_refuses_bad_addresses_and_amounts(accounts: Accounts) -> None:
    with pytest.raises(ValueError, match="not an address"):
        accounts.add_client("0x1234", 10)
    with pytest.raises(ValueError, match="checksum"):
        accounts.add_client(ALICE[:-1] + ("f" if ALICE[-1] == "F" else "F"), 10)
    for bad in (-1, 2**256, True, 1.5):
        with pytest.raises(InvalidAmountError):
            accounts.add_client(BOB, bad)  # type: ignore[arg-type]
    assert accounts.clients() == []


def test_reserve_charge_release_keep_the_books(accounts: Accounts) -> None:
    accounts.add_client(ALICE, 1000)
    accounts.reserve(ALICE, "job-1", 600)
    accounts.reserve(ALICE, "job-2", 300)
    account = accounts.get(ALICE)
    assert account is not None
    assert (account.reserved_wei, account.available_wei) == (900, 100)

    accounts.charge("job-1", 450)  # the rest of the reservation is freed
    accounts.release("job-2")
    account = accounts.get(ALICE)
    assert account is not None
    assert (account.spent_wei, account.reserved_wei, account.available_wei) == (450, 0, 550)
    one, two = accounts.reservation("job-1"), accounts.reservation("job-2")
    assert one is not None
    assert two is not None
    assert (one.state, one.amount_wei, one.charged_wei) == ("charged", 600, 450)
    assert two.state == "released"


def test_a_job_over_budget_is_refused_and_nothing_is_reserved(accounts: Accounts) -> None:
    accounts.add_client(ALICE, 1000)
    accounts.reserve(ALICE, "job-1", 700)
    with pytest.raises(BudgetExceededError) as refused:
        accounts.reserve(ALICE, "job-2", 301)
    err = refused.value
    assert (err.needed_wei, err.available_wei, err.budget_wei, err.reserved_wei) == (301, 300, 1000, 700)
    assert "300 wei left" in str(err)
    assert accounts.reservation("job-2") is None
    account = accounts.get(ALICE)
    assert account is not None
    assert account.reserved_wei == 700
    accounts.reserve(ALICE, "job-2", 300)  # exactly what is left fits


def test_unknown_client_cannot_reserve(accounts: Accounts) -> None:
    with pytest.raises(UnknownClientError, match="add-client"):
        accounts.reserve(checksum_address(BOB), "job", 1)


def test_charges_are_never_doubled_nor_above_the_reservation(accounts: Accounts) -> None:
    accounts.add_client(ALICE, 1000)
    accounts.reserve(ALICE, "job", 100)
    with pytest.raises(ReservationError, match="exceeds"):
        accounts.charge("job", 101)
    accounts.charge("job", 100)
    accounts.charge("job", 100)  # a retried charge of the same job is a no-op
    with pytest.raises(ReservationError, match="already"):
        accounts.charge("job", 50)
    accounts.release("job")  # a charged job stays charged
    account = accounts.get(ALICE)
    assert account is not None
    assert account.spent_wei == 100
    with pytest.raises(ReservationError, match="no reservation"):
        accounts.charge("unknown", 1)
    accounts.reserve(ALICE, "gone", 10)
    accounts.release("gone")
    with pytest.raises(ReservationError, match="released"):
        accounts.charge("gone", 10)


def test_reserving_again_keeps_or_tops_up_the_reservation(accounts: Accounts) -> None:
    accounts.add_client(ALICE, 1000)
    accounts.add_client(BOB, 1000)
    accounts.reserve(ALICE, "job", 100)
    accounts.reserve(ALICE, "job", 100)  # a resumed job reserving again
    accounts.reserve(ALICE, "job", 60)  # the dispatcher confirming less than the door reserved
    account = accounts.get(ALICE)
    assert account is not None
    assert account.reserved_wei == 100
    accounts.reserve(ALICE, "job", 250)  # re-placed on pricier providers: topped up by 150
    account = accounts.get(ALICE)
    assert account is not None
    assert account.reserved_wei == 250
    with pytest.raises(BudgetExceededError) as refused:
        accounts.reserve(ALICE, "job", 1001)
    assert refused.value.needed_wei == 751
    reservation = accounts.reservation("job")
    assert reservation is not None
    assert reservation.amount_wei == 250
    with pytest.raises(ReservationError):
        accounts.reserve(checksum_address(BOB), "job", 100)
    accounts.release("job")
    with pytest.raises(ReservationError, match="released"):
        accounts.reserve(ALICE, "job", 10)


def test_budget_changes_keep_what_was_spent(accounts: Accounts) -> None:
    accounts.add_client(ALICE, 1000)
    accounts.reserve(ALICE, "job", 400)
    accounts.charge("job", 400)
    account = accounts.set_budget(ALICE, 300)
    assert (account.spent_wei, account.available_wei) == (400, 0)
    with pytest.raises(BudgetExceededError):
        accounts.reserve(ALICE, "job-2", 1)
    with pytest.raises(UnknownClientError):
        accounts.set_budget(BOB, 5)


def test_concurrent_reservations_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite"
    with Accounts(path) as setup:
        setup.add_client(ALICE, 100)
    # Two connections (as two processes would have) and many threads race for 100 wei in 7-wei jobs.
    stores = [Accounts(path), Accounts(path)]
    granted: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            job = f"job-{n}-{i}"
            try:
                stores[n % 2].reserve(checksum_address(ALICE), job, 7)
            except BudgetExceededError:
                continue
            with lock:
                granted.append(job)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    account = stores[0].get(ALICE)
    assert account is not None
    assert len(granted) == 100 // 7
    assert account.reserved_wei == 7 * len(granted) <= 100
    for store in stores:
        store.close()


def test_api_keys_are_shown_once_and_stored_hashed(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite"
    with Accounts(path) as accounts:
        accounts.add_client(ALICE, 10)
        key = accounts.issue_api_key(ALICE)
        assert key.startswith(API_KEY_PREFIX)
        assert accounts.client_for_key(key) == ALICE
        assert accounts.client_for_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert accounts.client_for_key("pxk_short") is None
        account = accounts.get(ALICE)
        assert account is not None
        assert account.api_keys == 1
        with pytest.raises(UnknownClientError):
            accounts.issue_api_key(BOB)
    raw = path.read_bytes() + (
        path.with_name(path.name + "-wal").read_bytes()
        if path.with_name(path.name + "-wal").exists()
        else b""
    )
    assert key.encode() not in raw
    with Accounts(path) as accounts:
        assert accounts.client_for_key(key) == ALICE  # survives a restart
        assert accounts.revoke_api_keys(ALICE) == 1
        assert accounts.client_for_key(key) is None


def test_a_signature_is_accepted_once(accounts: Accounts) -> None:
    assert accounts.use_signature(b"sig-1", expires_at=1e12)
    assert not accounts.use_signature(b"sig-1", expires_at=1e12)
    assert accounts.use_signature(b"sig-2", expires_at=1e12)


def test_a_file_that_is_not_an_accounts_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AccountsStoreError, match=r"junk\.sqlite"):
        Accounts(path)
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(AccountsStoreError, match="newer"):
        Accounts(newer)
