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

from collections.abc import Iterator

import pytest
from _audited import Audited, index_world
from _ledger_world import ACCOUNTS, World, build_world

from proxima.sdk.chain import InProcessChain


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
