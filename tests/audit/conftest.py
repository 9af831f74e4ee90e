"""Fixtures of the auditor's tests: one exercised world on py-evm, indexed into an AuditStore.

``audited`` (session scope) is the world of ``_ledger_world.build_world`` — every kind of transaction the
contracts accept — indexed by the real :class:`~proxima.audit.indexer.Indexer` into an in-memory
:class:`~proxima.audit.store.AuditStore`. Treat it as read-only: a test that tampers with an index takes
``audited.fresh_store()`` (a new store indexed from the same chain) and changes that one.

Shape::

    audited.chain        # InProcessChain (py-evm), nothing happens on it after the script
    audited.w3           # its Web3
    audited.contracts    # ProximaContracts
    audited.deployment   # Deployment (addresses, deployment block)
    audited.params       # DeployParameters the world was deployed with (tests only; auditors read the chain)
    audited.facts        # _ledger_world.WorldFacts: actors, job ids by name, tx hashes by step, slashes...
    audited.store        # AuditStore (a file) indexed up to facts.end_block
    audited.fresh_store()  # another AuditStore (in memory) indexed the same way, yours to tamper with
    audited.copy_store(path)  # a copy of audited.store's file at ``path`` (fast): tamper with plain SQL
                              # (sqlite3.connect(path)) and read it through the returned AuditStore
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _ledger_world import ACCOUNTS, World, WorldFacts, build_world
from web3 import Web3

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Chain, Deployment, InProcessChain
from proxima.sdk.deploy import DeployParameters

if TYPE_CHECKING:
    from proxima.audit.store import AuditStore


@dataclass
class Audited:
    """An exercised world and its index (see the module docstring)."""

    world: World
    store: AuditStore
    path: Path
    _extra: list[AuditStore] = field(default_factory=list)

    @property
    def chain(self) -> Chain:
        return self.world.chain

    @property
    def w3(self) -> Web3:
        return self.world.chain.w3

    @property
    def contracts(self) -> ProximaContracts:
        return self.world.contracts

    @property
    def deployment(self) -> Deployment:
        return self.world.deployment

    @property
    def params(self) -> DeployParameters:
        return self.world.params

    @property
    def facts(self) -> WorldFacts:
        return self.world.facts

    def fresh_store(self) -> AuditStore:
        """A new in-memory store indexed from the chain up to the end of the script (closed at teardown)."""
        store = index_world(self.world)
        self._extra.append(store)
        return store

    def copy_store(self, path: Path) -> AuditStore:
        """A copy of :attr:`store`'s file at ``path``, opened as an AuditStore (closed at teardown)."""
        from proxima.audit.store import AuditStore

        source, target = sqlite3.connect(self.path), sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        store = AuditStore(path)
        self._extra.append(store)
        return store


def index_world(world: World, path: Path | None = None) -> AuditStore:
    """Index ``world`` into a new AuditStore (in memory, or the file ``path``) up to the end of its script."""
    from proxima.audit.indexer import Indexer
    from proxima.audit.store import AuditStore

    store = AuditStore.memory() if path is None else AuditStore(path)
    Indexer(world.chain.w3, store, world.deployment, confirmations=0).sync(world.facts.end_block)
    return store


@pytest.fixture(scope="session")
def audited_world() -> Iterator[World]:
    """The exercised world on py-evm, without an index."""
    with InProcessChain(accounts=ACCOUNTS) as chain:
        yield build_world(chain)


@pytest.fixture(scope="session")
def audited(audited_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    """The exercised world indexed into an AuditStore (read-only; see :meth:`Audited.copy_store`)."""
    path = tmp_path_factory.mktemp("audited") / "index.sqlite"
    result = Audited(audited_world, index_world(audited_world, path), path)
    try:
        yield result
    finally:
        for store in (result.store, *result._extra):
            store.close()
