"""Shared fixtures: chain backends.

``chain`` runs a test once per backend (py-evm in process, then anvil). Tests that
need one backend take ``inprocess_chain`` or ``anvil_chain`` directly. Every test
sees a chain in the state it was created in: ``inprocess_chain`` is a fresh chain
per test (about 12 ms), ``anvil_chain`` shares one session-wide anvil and reverts
to a snapshot after each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxima.sdk.chain import AnvilProcess, Chain, InProcessChain, RpcChain


@pytest.fixture
def inprocess_chain() -> Iterator[InProcessChain]:
    """A fresh py-evm chain with 10 funded dev accounts."""
    with InProcessChain() as chain:
        yield chain


@pytest.fixture(scope="session")
def anvil_process() -> Iterator[AnvilProcess]:
    """One anvil node for the whole session (fails with instructions if anvil is missing)."""
    with AnvilProcess() as anvil:
        yield anvil


@pytest.fixture(scope="session")
def _anvil_session_chain(anvil_process: AnvilProcess) -> Iterator[RpcChain]:
    with anvil_process.connect() as chain:
        yield chain


@pytest.fixture
def anvil_chain(_anvil_session_chain: RpcChain) -> Iterator[RpcChain]:
    """The session's anvil chain, reverted to its previous state after the test."""
    snapshot = _anvil_session_chain.snapshot()
    try:
        yield _anvil_session_chain
    finally:
        _anvil_session_chain.revert(snapshot)


@pytest.fixture(params=["inprocess", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest) -> Chain:
    """Each chain backend in turn: the same test runs against py-evm and anvil."""
    backend: Chain = request.getfixturevalue(f"{request.param}_chain")
    return backend
