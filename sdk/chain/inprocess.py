"""A chain inside this Python process: py-evm through eth-tester (fast to start, no node)."""

from __future__ import annotations

import ast
import logging
from typing import Any, cast

from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.types import TxParams

from ._backend import (
    _REJECTIONS,
    DEV_HD_PATH,
    DEV_MNEMONIC,
    Chain,
    SnapshotError,
    SnapshotId,
    TransactionRejected,
    _message_of,
    dev_accounts,
)

__all__ = ["InProcessChain"]

log = logging.getLogger(__name__)

_ETHER = 10**18
_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
_REVERT_PREFIX = "execution reverted: "


class InProcessChain(Chain):
    """A fresh py-evm chain (Prague rules, so Cancun opcodes work) in this process.

    The accounts are those of :data:`~proxima.sdk.chain.DEV_MNEMONIC` (the same
    addresses and keys as anvil's defaults), each funded in the genesis block.
    Transactions are mined one per block, immediately.

    py-evm's gas estimation is a binary search that runs a transaction about 25
    times, which halves throughput. With ``fast_gas`` (the default) a transaction
    without ``gas`` is instead run once as a call (so reverts still raise
    :class:`~proxima.sdk.chain.TransactionReverted` before sending) and sent with a
    gas limit of :attr:`FAST_GAS_LIMIT`. Unused gas is refunded and receipts report
    the real ``gasUsed``; the sender needs a balance covering the higher limit
    (about 0.03 ETH), and ``gasleft()`` reads higher than on other backends.

    Args:
        accounts: How many funded accounts to create.
        balance_eth: Each account's starting balance, in ether.
        fast_gas: Skip gas estimation as described above.
    """

    FAST_GAS_LIMIT = 10_000_000

    def __init__(self, accounts: int = 10, balance_eth: int = 1_000_000, *, fast_gas: bool = True) -> None:
        self.fast_gas = fast_gas
        genesis_state = PyEVMBackend.generate_genesis_state(
            overrides={"balance": balance_eth * _ETHER},
            num_accounts=accounts,
            mnemonic=DEV_MNEMONIC,
            hd_path=DEV_HD_PATH,
        )
        backend = PyEVMBackend(genesis_state=genesis_state, mnemonic=DEV_MNEMONIC, hd_path=DEV_HD_PATH)
        self.tester: Any = EthereumTester(backend)
        self._snapshots: set[str] = set()
        super().__init__(Web3(EthereumTesterProvider(self.tester)), dev_accounts(accounts))

    def mine(self) -> None:
        """Mine one empty block."""
        self.tester.mine_blocks(1)

    def _mine_at(self, timestamp: int) -> None:
        # EthereumTester.time_travel mines at ``to_timestamp - 1`` and skips mining when
        # the pending block already has that timestamp; set the header directly instead.
        backend = self.tester.backend
        backend.chain.header = backend.chain.header.copy(timestamp=timestamp)
        self.tester.mine_blocks(1)

    def snapshot(self) -> SnapshotId:
        """Record the chain state (the latest block); see :meth:`Chain.snapshot`."""
        snapshot_id = SnapshotId(str(self.tester.take_snapshot()))
        self._snapshots.add(snapshot_id)
        return snapshot_id

    def revert(self, snapshot_id: SnapshotId) -> None:
        """Return to a snapshot; see :meth:`Chain.revert`.

        Raises:
            SnapshotError: If the id is unknown or was already used.
        """
        if snapshot_id not in self._snapshots:
            raise SnapshotError(f"unknown or already used snapshot id {snapshot_id}")
        self._snapshots.discard(snapshot_id)
        self.tester.revert_to_snapshot(int(snapshot_id))

    def _estimate_gas(self, params: TxParams) -> int:
        if not self.fast_gas:
            return super()._estimate_gas(params)
        limit = self.FAST_GAS_LIMIT
        try:
            self.call(cast(TxParams, {**params, "gas": limit}), "pending")
        except _REJECTIONS as err:  # e.g. the sender cannot afford the gas
            raise TransactionRejected(_message_of(err), params) from err
        return limit

    def _revert_data(self, err: Exception) -> bytes | None:
        # web3's eth-tester provider turns revert data into text: custom errors come as
        # the repr of the bytes, Error(string) as the decoded reason. Undo that.
        if not isinstance(err, TransactionFailed):
            return super()._revert_data(err)
        message = str(err.args[0]) if err.args else ""
        message = message.removeprefix(_REVERT_PREFIX)
        if message.startswith(("b'", 'b"')):
            try:
                value = ast.literal_eval(message)
            except (ValueError, SyntaxError):
                value = None
            if isinstance(value, bytes):
                return value
        if not message:
            return b""
        from eth_abi.abi import encode as abi_encode

        return _ERROR_STRING_SELECTOR + abi_encode(["string"], [message])
