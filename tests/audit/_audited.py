"""The exercised world and its index, as the ``audited`` fixture (conftest.py) hands them to tests.

Kept apart from conftest.py so that tests import it by a name no other test folder uses.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _ledger_world import World, WorldFacts
from web3 import Web3

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Chain, Deployment
from proxima.sdk.deploy import DeployParameters

if TYPE_CHECKING:
    from proxima.audit.store import AuditStore

__all__ = ["Audited", "index_world"]


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
