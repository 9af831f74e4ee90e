"""Starting and stopping the pinned anvil binary."""

from __future__ import annotations

import socket
import time

import pytest

from proxima.sdk.chain import (
    AnvilProcess,
    ChainConnectionError,
    ChainError,
    RpcChain,
    find_anvil,
)

pytestmark = pytest.mark.anvil


def test_findAnvil_returnsPinnedExecutable() -> None:
    assert find_anvil().is_file()


def test_anvilProcess_startsServesAndStops() -> None:
    started = time.monotonic()
    with AnvilProcess(chain_id=4242) as anvil:
        assert time.monotonic() - started < 5
        assert anvil.running
        with anvil.connect() as chain:
            assert chain.chain_id == 4242
            assert chain.balance(chain.accounts[0].address) == 1_000_000 * 10**18
        url = anvil.url
    assert not anvil.running
    with pytest.raises(ChainError, match="not running"):
        _ = anvil.url
    with pytest.raises(ChainConnectionError, match="no JSON-RPC node answers"):
        RpcChain(url)
    anvil.stop()  # stopping twice is harmless


def test_anvilProcess_failsIfPortTaken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        anvil = AnvilProcess(busy.getsockname()[1], startup_timeout=5)
        with pytest.raises(ChainConnectionError, match="anvil"):
            anvil.start()
        assert not anvil.running
