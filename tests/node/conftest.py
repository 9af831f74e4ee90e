"""Contracts deployed once per test module on py-evm, providers 1-3 staked; every test starts from there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _node_support import Deployed

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import InProcessChain, SnapshotId
from proxima.sdk.deploy import deploy_all
from proxima.sdk.peerid import peer_id_from_key

PROVIDER_STAKE = 10 * 10**18


@pytest.fixture(scope="module")
def _deployed_module() -> Iterator[tuple[Deployed, list[SnapshotId]]]:
    with InProcessChain() as chain:
        deployment = deploy_all(chain, chain.accounts[0])
        c = ProximaContracts.from_deployment(chain, deployment)
        for provider in chain.accounts[1:4]:
            c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
        yield Deployed(chain, c, deployment), [chain.snapshot()]


@pytest.fixture
def deployed(_deployed_module: tuple[Deployed, list[SnapshotId]]) -> Iterator[Deployed]:
    """The module's deployment, reverted after the test (snapshots are single-use: take a new one)."""
    deployed, snapshot = _deployed_module
    try:
        yield deployed
    finally:
        deployed.chain.revert(snapshot[0])
        snapshot[0] = deployed.chain.snapshot()
