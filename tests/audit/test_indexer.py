"""The indexer on py-evm in process: what it stores, idempotence, resumption, confirmations, binding."""

from __future__ import annotations

import pytest
from _indexer_support import Deployed, chain_events, deploy, dump, indexed_events

from proxima.audit.indexer import (
    DEFAULT_CONFIRMATIONS,
    Indexer,
    IndexerConnectionError,
    SyncProgress,
    connect,
    default_confirmations,
)
from proxima.audit.store import AuditStore, AuditStoreMismatchError
from proxima.sdk.chain import InProcessChain


@pytest.fixture
def world(inprocess_chain: InProcessChain) -> Deployed:
    """A deployment with two providers and three attestation batches (3 + 2 + 4 events)."""
    d = deploy(inprocess_chain)
    d.attest(0, 3, "a")
    d.attest(1, 2, "b")
    d.attest(0, 4, "c", epoch=2)
    return d


def test_sync_stores_every_event_with_its_transaction_and_block(world: Deployed) -> None:
    store = AuditStore.memory()
    result = Indexer(world.chain.w3, store, world.deployment).sync()
    head = world.chain.block_number()
    assert (result.from_block, result.to_block) == (world.deployment.block_number, head)
    assert indexed_events(store) == chain_events(world)
    assert result.events == store.event_count() == len(chain_events(world))
    names = {e.name for e in store.events()}
    assert {"ProviderRegistered", "AttestationSubmitted", "RoleGranted"} <= names
    assert store.checkpoint() is not None
    assert store.checkpoint().number == head  # type: ignore[union-attr]
    w3 = world.chain.w3
    for event in store.events():
        block = w3.eth.get_block(event.block_number)
        assert event.timestamp == block["timestamp"]
        assert store.block(event.block_number) is not None
        assert store.block(event.block_number).hash == bytes(block["hash"])  # type: ignore[union-attr]
        assert event.address == world.deployment.contracts[event.contract]
        tx = store.transaction(event.tx_hash)
        assert tx is not None
        assert tx.block_number == event.block_number
        assert tx.tx_index == event.tx_index
    assert result.transactions == len(list(store.transactions()))
    for tx in store.transactions():
        chain_tx = w3.eth.get_transaction(tx.hash)
        assert tx.input == bytes(chain_tx["input"])
        assert (tx.sender, tx.to, tx.value, tx.status) == (
            chain_tx["from"],
            chain_tx["to"],
            chain_tx["value"],
            1,
        )
    registrations = list(store.events({"ProviderRegistered"}))
    assert [e.args["account"] for e in registrations] == [p.address for p in world.providers]
    assert all(store.transaction(e.tx_hash).value == 10 * 10**18 for e in registrations)  # type: ignore[union-attr]


def test_sync_again_changes_nothing_and_rewriting_after_a_rollback_gives_the_same_rows(
    world: Deployed,
) -> None:
    store = AuditStore.memory()
    indexer = Indexer(world.chain.w3, store, world.deployment, initial_range=4, max_range=4)
    indexer.sync()
    before = dump(store)
    again = indexer.sync()
    assert (again.events, again.transactions, again.rolled_back) == (0, 0, 0)
    assert dump(store) == before
    middle = (world.deployment.block_number + world.chain.block_number()) // 2
    assert store.rollback_to(middle) > 0
    redo = Indexer(world.chain.w3, store, world.deployment, initial_range=3).sync()
    assert redo.from_block <= middle + 1
    assert dump(store) == before


def test_sync_resumes_where_it_stopped_and_reports_progress(world: Deployed) -> None:
    store = AuditStore.memory()
    first = Indexer(world.chain.w3, store, world.deployment).sync(to_block=world.deployment.block_number + 3)
    assert store.checkpoint().number == first.to_block == world.deployment.block_number + 3  # type: ignore[union-attr]
    world.attest(1, 5, "later")
    seen: list[SyncProgress] = []
    indexer = Indexer(world.chain.w3, store, world.deployment, initial_range=2, max_range=4)
    second = indexer.sync(progress=seen.append)
    assert second.from_block == first.to_block + 1
    assert indexed_events(store) == chain_events(world)
    assert first.events + second.events == store.event_count()
    assert len(seen) >= 3  # ranges of 2, then 4 blocks
    assert [p.current for p in seen] == sorted(p.current for p in seen)
    assert seen[-1].current == second.to_block
    assert seen[-1].fraction == 1.0
    assert seen[-1].events == second.events
    assert indexer.range == 4  # grew from 2 up to max_range


def test_confirmations_hold_back_the_newest_blocks(world: Deployed) -> None:
    store = AuditStore.memory()
    head = world.chain.block_number()
    result = Indexer(world.chain.w3, store, world.deployment, confirmations=3).sync()
    assert result.to_block == head - 3
    assert indexed_events(store) == chain_events(world, to_block=head - 3)
    assert store.event_count() < len(chain_events(world))
    for _ in range(3):
        world.chain.mine()
    Indexer(world.chain.w3, store, world.deployment, confirmations=3).sync()
    assert indexed_events(store) == chain_events(world)


def test_default_confirmations() -> None:
    assert default_confirmations(31337) == 0
    assert default_confirmations(1337) == 0
    assert default_confirmations(InProcessChain().chain_id) == 0
    assert default_confirmations(1) == DEFAULT_CONFIRMATIONS == 12
    assert default_confirmations(8453) == 12


def test_an_index_of_one_deployment_refuses_another(world: Deployed) -> None:
    store = AuditStore.memory()
    Indexer(world.chain.w3, store, world.deployment).sync()
    other = deploy(world.chain, providers=1)
    with pytest.raises(AuditStoreMismatchError, match="indexes another deployment"):
        Indexer(world.chain.w3, store, other.deployment).sync()
    assert indexed_events(store) == chain_events(world, to_block=other.deployment.block_number - 1)
    foreign = world.deployment.model_copy(update={"chain_id": 1})
    with pytest.raises(AuditStoreMismatchError, match="chain id is 1"):
        Indexer(world.chain.w3, AuditStore.memory(), foreign).sync()


def test_indexer_settings_are_checked() -> None:
    w3 = InProcessChain().w3
    store = AuditStore.memory()
    deployment = deploy(InProcessChain()).deployment
    with pytest.raises(ValueError, match="confirmations"):
        Indexer(w3, store, deployment, confirmations=-1)
    with pytest.raises(ValueError, match="initial_range"):
        Indexer(w3, store, deployment, initial_range=0)
    with pytest.raises(ValueError, match="initial_range"):
        Indexer(w3, store, deployment, initial_range=10, max_range=5)


def test_connect_refuses_other_schemes_and_silent_urls() -> None:
    with pytest.raises(IndexerConnectionError, match="only http"):
        connect("ws://127.0.0.1:8545")
    with pytest.raises(IndexerConnectionError, match=r"no JSON-RPC node answers at http://127\.0\.0\.1:9"):
        connect("http://127.0.0.1:9", timeout=2)
