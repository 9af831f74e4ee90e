"""Chain connections: py-evm in process for tests, anvil locally, any EVM chain by JSON-RPC.

Every backend is a :class:`Chain` with the same interface::

    with InProcessChain() as chain:
        alice, bob = chain.accounts[:2]
        chain.send_transaction(alice, {"to": bob.address, "value": 10**18})
        chain.advance_time(3600)

    with AnvilProcess() as anvil, anvil.connect() as chain:
        ...
"""

from ._backend import (
    DEV_MNEMONIC,
    Chain,
    ChainConnectionError,
    ChainError,
    SnapshotError,
    SnapshotId,
    TransactionRejected,
    TransactionReverted,
    decode_revert_reason,
    dev_accounts,
)
from .anvil import AnvilNotFoundError, AnvilProcess, find_anvil
from .devnet import Deployment, DeploymentFileError
from .inprocess import InProcessChain
from .rpc import RpcChain

__all__ = [
    "DEV_MNEMONIC",
    "AnvilNotFoundError",
    "AnvilProcess",
    "Chain",
    "ChainConnectionError",
    "ChainError",
    "Deployment",
    "DeploymentFileError",
    "InProcessChain",
    "RpcChain",
    "SnapshotError",
    "SnapshotId",
    "TransactionRejected",
    "TransactionReverted",
    "decode_revert_reason",
    "dev_accounts",
    "find_anvil",
]
