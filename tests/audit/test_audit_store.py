"""AuditStore on real SQLite files: ranges, idempotence, atomicity, rollback, binding, read-only access."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from proxima.audit.errors import AuditError
from proxima.audit.store import (
    AuditStore,
    AuditStoreCorruptError,
    AuditStoreError,
    AuditStoreMismatchError,
    AuditStoreReadOnlyError,
    BlockRef,
    IndexedEvent,
    IndexedTransaction,
    decode_args,
    encode_args,
)
from proxima.sdk.chain import Deployment

ADDRESSES = {
    "ProviderRegistry": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    "JobEscrow": "0xDc64a140Aa3E981100a9becA4E685f962f0cF6C9",
}
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def deployment(**changes: object) -> Deployment:
    base = Deployment(
        chain_id=31337,
        deployer="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        block_number=1,
        contracts=ADDRESSES,
    )
    return base.model_copy(update=changes)


def block(n: int) -> BlockRef:
    return BlockRef(n, n.to_bytes(32, "big"), (n - 1).to_bytes(32, "big"), 1_700_000_000 + 12 * n)


def tx(n: int, index: int = 0) -> IndexedTransaction:
    return IndexedTransaction(
        hash=n.to_bytes(16, "big") + index.to_bytes(16, "big"),
        block_number=n,
        tx_index=index,
        sender=ALICE,
        to=ADDRESSES["JobEscrow"],
        input=b"\xab\xcd" + n.to_bytes(4, "big"),
        value=2**200 + n,  # beyond SQLite's INTEGER
        status=1,
    )


def event(n: int, log_index: int = 0, name: str = "JobSettled", **args: object) -> IndexedEvent:
    return IndexedEvent(
        block_number=n,
        log_index=log_index,
        tx_hash=tx(n).hash,
        tx_index=0,
        contract="JobEscrow",
        address=ADDRESSES["JobEscrow"],
        name=name,
        args=args
        or {"jobId": n.to_bytes(32, "big"), "provider": ALICE, "payout": 10**30 + n, "confirmed": True},
        timestamp=block(n).timestamp,
    )


def write(store: AuditStore, blocks: range, per_block: int = 2) -> None:
    """One range: ``per_block`` events in each block of ``blocks``, checkpoint at its last block."""
    events = [event(n, i) for n in blocks for i in range(per_block)]
    store.write_range(events, [tx(n) for n in blocks], [block(n) for n in blocks], block(blocks[-1]))


def table(store: AuditStore, name: str) -> list[tuple[object, ...]]:
    return store._conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()  # noqa: S608


# --- args encoding ---------------------------------------------------------------------------------------


def test_args_round_trip_every_event_value_type() -> None:
    args = {
        "jobId": b"\x01" * 32,
        "peerId": b"\x00\x25",
        "empty": b"",
        "provider": ALICE.lower(),
        "amount": 2**256 - 1,
        "confirmed": False,
        "count": 0,
    }
    text = encode_args(args)
    assert decode_args(text) == {**args, "provider": ALICE}
    assert list(decode_args(text)) == list(args)  # argument order kept
    assert '"jobId":{"bytes":"0x0101' in text
    assert f'"provider":"{ALICE}"' in text


@pytest.mark.parametrize(
    "text",
    ['["not", "an object"]', '{"a": "hello"}', '{"a": {"bytes": "0xzz"}}', '{"a": 1.5}', "{", '{"a": null}'],
)
def test_decode_args_rejects_what_encode_args_never_writes(text: str) -> None:
    with pytest.raises(ValueError, match=r"not JSON|expected a JSON object|is not an int"):
        decode_args(text)


def test_encode_args_rejects_non_address_strings_and_other_types() -> None:
    with pytest.raises(ValueError, match="'name'"):
        encode_args({"name": "hello"})
    with pytest.raises(ValueError, match="float"):
        encode_args({"x": 1.5})


# --- writing and reading ---------------------------------------------------------------------------------


def test_write_range_then_read_events_transactions_blocks_in_chain_order(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "audit.db") as store:
        store.bind(deployment(), 31337)
        write(store, range(5, 8))
        assert store.checkpoint() == block(7)
        events = list(store.events())
        assert [(e.block_number, e.log_index) for e in events] == [(n, i) for n in (5, 6, 7) for i in (0, 1)]
        assert events[0] == event(5, 0)
        assert store.event_count() == 6
        assert store.transaction(tx(6).hash) == tx(6)
        assert store.transaction(b"\x00" * 32) is None
        assert list(store.transactions()) == [tx(5), tx(6), tx(7)]
        assert store.block(6) == block(6)
        assert store.block(4) is None
        assert store.block_numbers() == [5, 6, 7]
        assert store.block_numbers(above=5) == [6, 7]


def test_events_filters_by_name_contract_and_blocks() -> None:
    store = AuditStore.memory()
    events = [
        event(3, 0, "JobOpened", jobId=b"\x03" * 32),
        event(3, 1, "JobSettled", jobId=b"\x03" * 32),
        event(4, 0, "JobOpened", jobId=b"\x04" * 32),
    ]
    store.write_range(events, [tx(3), tx(4)], [block(3), block(4)], block(9))
    assert [e.name for e in store.events({"JobOpened"})] == ["JobOpened", "JobOpened"]
    assert list(store.events([])) == []
    assert list(store.events(contract="ProviderRegistry")) == []
    assert [(e.block_number, e.log_index) for e in store.events(from_block=4)] == [(4, 0)]
    assert [(e.block_number, e.log_index) for e in store.events(to_block=3)] == [(3, 0), (3, 1)]


def test_events_pages_through_many_rows_in_order() -> None:
    store = AuditStore.memory()
    write(store, range(1, 1_501), per_block=3)  # 4,500 events: more than one page
    keys = [(e.block_number, e.log_index) for e in store.events()]
    assert keys == [(n, i) for n in range(1, 1_501) for i in range(3)]
    assert sum(1 for _ in store.events({"JobSettled"}, from_block=1_000)) == 1_503


def test_rewriting_a_range_changes_nothing() -> None:
    store = AuditStore.memory()
    write(store, range(1, 4))
    write(store, range(4, 7))
    before = {name: table(store, name) for name in ("events", "transactions", "blocks", "meta")}
    write(store, range(1, 4))  # an older range again: rows identical, checkpoint stays at 6
    write(store, range(4, 7))
    assert {name: table(store, name) for name in ("events", "transactions", "blocks", "meta")} == before
    assert store.checkpoint() == block(6)


def test_write_range_is_atomic_when_a_row_fails(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.db")
    write(store, range(1, 3))
    bad = event(4, 0, "JobSettled", note=1.5)  # not encodable: fails halfway through the transaction
    with pytest.raises(ValueError, match="note"):
        store.write_range([event(3), bad], [tx(3), tx(4)], [block(3), block(4)], block(4))
    assert store.checkpoint() == block(2)
    assert store.block(3) is None
    assert store.transaction(tx(3).hash) is None
    assert store.event_count() == 4
    with pytest.raises(ValueError, match="after the checkpoint"):
        store.write_range([event(9)], [], [block(9)], block(8))
    assert store.checkpoint() == block(2)


def test_rollback_to_removes_everything_above_and_moves_the_checkpoint_down() -> None:
    store = AuditStore.memory()
    write(store, range(1, 4))  # blocks 1-3, checkpoint 3
    write(store, range(6, 9))  # blocks 6-8, checkpoint 8 (4-5 hold no events)
    assert store.rollback_to(5) == 6
    assert store.checkpoint() == block(3)  # the highest stored block <= 5: nothing lies in 4-5
    assert [e.block_number for e in store.events()] == [1, 1, 2, 2, 3, 3]
    assert [t.block_number for t in store.transactions()] == [1, 2, 3]
    assert store.block_numbers() == [1, 2, 3]
    assert store.rollback_to(0) == 6
    assert store.checkpoint() is None
    assert store.event_count() == 0


# --- binding ---------------------------------------------------------------------------------------------


def test_bind_records_the_deployment_and_refuses_another() -> None:
    store = AuditStore.memory()
    assert store.deployment is None
    assert store.chain_id is None
    store.bind(deployment(), 31337)
    assert store.deployment is not None
    assert store.deployment.contracts == ADDRESSES
    assert store.chain_id == 31337
    store.bind(
        deployment(rpc_url="http://127.0.0.1:8545", parameters={"fee_bps": 1}), 31337
    )  # same contracts
    other = {**ADDRESSES, "JobEscrow": "0x0000000000000000000000000000000000000001"}
    with pytest.raises(AuditStoreMismatchError, match="contracts") as info:
        store.bind(deployment(contracts=other), 31337)
    assert isinstance(info.value, AuditError)
    with pytest.raises(AuditStoreMismatchError, match="deployment block is 1, not 7"):
        store.bind(deployment(block_number=7), 31337)
    with pytest.raises(AuditStoreMismatchError, match="chain id"):
        store.bind(deployment(chain_id=5), 5)


def test_bind_refuses_a_deployment_for_another_chain_than_the_rpc() -> None:
    with pytest.raises(AuditStoreMismatchError, match="chain id is 31337, not the RPC's 1"):
        AuditStore.memory().bind(deployment(), 1)


# --- files, read-only access, meta, corruption -----------------------------------------------------------


def test_readonly_store_reads_what_another_connection_wrote_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    writer = AuditStore(path)
    writer.bind(deployment(), 31337)
    write(writer, range(1, 3))
    assert writer._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader = AuditStore(path, readonly=True)
    assert reader.checkpoint() == block(2)
    assert reader.event_count() == 4
    write(writer, range(3, 5))  # visible to the reader at once
    assert reader.checkpoint() == block(4)
    with pytest.raises(AuditStoreReadOnlyError, match="read-only"):
        write(reader, range(5, 6))
    with pytest.raises(AuditStoreReadOnlyError):
        reader.rollback_to(0)
    with pytest.raises(AuditStoreReadOnlyError):
        reader.set_meta("x", "y")
    reader.bind(deployment(), 31337)  # already bound: nothing to write
    with pytest.raises(AuditStoreMismatchError):
        reader.bind(deployment(block_number=2), 31337)
    reader.close()
    writer.close()


def test_readonly_store_needs_an_existing_index(tmp_path: Path) -> None:
    with pytest.raises(AuditStoreError, match="no audit index"):
        AuditStore(tmp_path / "missing.db", readonly=True)


def test_reopened_file_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.bind(deployment(), 31337)
        write(store, range(1, 3))
        store.set_meta("ledger_parameters", '{"fee_bps": 200}')
    with AuditStore(path) as store:
        assert store.checkpoint() == block(2)
        assert store.get_meta("ledger_parameters") == '{"fee_bps": 200}'
        assert store.get_meta("missing") is None
        assert store.deployment is not None
        assert store.deployment.block_number == 1
        with pytest.raises(ValueError, match="managed by the store"):
            store.set_meta("checkpoint", "9")


def test_other_schema_versions_and_non_sqlite_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    AuditStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(AuditStoreError, match="schema version 99"):
        AuditStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AuditStoreError, match="cannot open"):
        AuditStore(junk)


def test_rows_tampered_with_by_sql_read_back_tampered_or_raise_corrupt() -> None:
    store = AuditStore.memory()
    write(store, range(1, 2))
    forged = {"jobId": b"\x01" * 32, "provider": ALICE, "payout": 1, "confirmed": True}
    store._conn.execute(
        "UPDATE events SET args = ? WHERE block_number = 1 AND log_index = 0", (encode_args(forged),)
    )
    store._conn.execute("UPDATE transactions SET input = ?", (b"\x00",))
    assert next(iter(store.events())).args == forged
    assert store.transaction(tx(1).hash) == IndexedTransaction(**{**tx(1).__dict__, "input": b"\x00"})
    store._conn.execute('UPDATE events SET args = \'{"payout": "lots"}\'')
    with pytest.raises(AuditStoreCorruptError, match="event 1/0 args"):
        list(store.events())
