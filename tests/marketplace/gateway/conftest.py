"""Fixtures of the dispatcher and payer tests: contracts on anvil (one per test module, reverted after each
test) and real provider nodes on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _dispatch_support import Net, ProviderWorld, anvil_net

from proxima.sdk.chain import SnapshotId


@pytest.fixture(scope="module")
def _module_net() -> Iterator[tuple[Net, list[SnapshotId]]]:
    with anvil_net() as pair:
        yield pair


@pytest.fixture
def net(_module_net: tuple[Net, list[SnapshotId]]) -> Iterator[Net]:
    net, snapshot = _module_net
    try:
        yield net
    finally:
        net.chain.revert(snapshot[0])
        snapshot[0] = net.chain.snapshot()


@pytest.fixture
def world(net: Net, tmp_path: Path) -> Iterator[ProviderWorld]:
    with ProviderWorld(net, tmp_path) as world:
        yield world
