"""Helpers shared by the contract tests (importable because pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from proxima.sdk.errors import ContractRevertError

if TYPE_CHECKING:
    from conftest import System  # tests/contracts/conftest.py

ETH = 10**18
BPS = 10_000
PROVIDER_STAKE = 10 * ETH  # what the fixture registers each provider with
VERIFIER_STAKE = 5 * ETH  # and each verifier


@contextmanager
def reverts(name: str, args: dict[str, Any] | None = None, **expected: Any) -> Iterator[dict[str, Any]]:
    """Expect the decoded custom error ``name``.

    With ``args``, its arguments must be exactly those; with keywords, they must include them. Yields a dict
    that holds all of the error's arguments once the block has exited.
    """
    decoded: dict[str, Any] = {}
    with pytest.raises(ContractRevertError) as info:
        yield decoded
    err = info.value
    assert err.error_name == name, str(err)
    if args is not None:
        assert err.error_args == args, str(err)
    for key, value in expected.items():
        assert err.error_args[key] == value, f"{key}: {err}"
    decoded.update(err.error_args)


def gas_cost(receipt: Any) -> int:
    """Wei the sender paid for gas."""
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def block_time(px: System, receipt: Any) -> int:
    return int(px.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def fee_of(px: System, amount: int) -> int:
    """The protocol fee on a payment of ``amount``."""
    return amount * px.params.fee_bps // BPS


def to_pool(px: System, amount: int) -> int:
    """What reaches the reward pot of ``amount`` paid into the pool (the rest is the treasury's)."""
    return amount - amount * px.params.treasury_bps // BPS
