"""The backend-independent part of a chain connection: errors, dev accounts, ``Chain``."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cache
from types import TracebackType
from typing import Any, NewType, Self, cast

from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import BlockIdentifier, TxParams, TxReceipt, Wei

from proxima.contracts import ProximaError

__all__ = [
    "DEV_MNEMONIC",
    "Chain",
    "ChainConnectionError",
    "ChainError",
    "SnapshotError",
    "SnapshotId",
    "TransactionRejected",
    "TransactionReverted",
    "decode_revert_reason",
    "dev_accounts",
]

log = logging.getLogger(__name__)

DEV_MNEMONIC = "test test test test test test test test test test test junk"
"""The well-known development mnemonic (anvil and hardhat defaults); never use on a real chain."""

DEV_HD_PATH = "m/44'/60'/0'/0"

SnapshotId = NewType("SnapshotId", str)
"""Opaque handle returned by :meth:`Chain.snapshot`."""

_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
_DEFAULT_PRIORITY_FEE = Wei(10**9)
_GAS_MARGIN_NUM, _GAS_MARGIN_DEN = 6, 5  # send with estimate * 1.2 (unused gas is refunded)


_REJECTIONS = (Web3Exception, ValueError, EthValidationError)
"""What web3 (RPC errors) and eth-tester (validation errors) raise for refused transactions."""


def _message_of(err: Exception) -> str:
    response = getattr(err, "rpc_response", None)
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return str(err)


class ChainError(ProximaError):
    """Root of the errors raised while talking to a chain."""


class ChainConnectionError(ChainError, ConnectionError):
    """The chain node cannot be reached or started."""


class SnapshotError(ChainError):
    """A snapshot id is unknown or was already used."""


class TransactionRejected(ChainError):  # noqa: N818 - reads as an event, like TimeExhausted
    """The node refused a transaction before executing it (nonce, funds, fee, size...).

    Args:
        reason: The node's explanation.
        tx: The transaction that was refused.
    """

    def __init__(self, reason: str, tx: TxParams) -> None:
        self.reason = reason
        self.tx = tx
        super().__init__(f"transaction rejected by the node: {reason}")


class TransactionReverted(ChainError):  # noqa: N818 - reads as an event, like TimeExhausted
    """Execution reverted; ``data`` holds the raw revert data for decoding custom errors.

    Args:
        data: The raw revert data (selector + ABI-encoded arguments); empty when
            the contract reverted without data or ran out of gas.
        tx: The transaction or call that reverted.
        tx_hash: The mined transaction's hash, or ``None`` if it reverted during
            gas estimation or in a call and was never sent.
    """

    def __init__(self, data: bytes, tx: TxParams, tx_hash: HexBytes | None = None) -> None:
        self.data = bytes(data)
        self.tx = tx
        self.tx_hash = tx_hash
        self.reason = decode_revert_reason(self.data)
        where = f" in {tx_hash.to_0x_hex()}" if tx_hash is not None else ""
        if self.reason is not None:
            what = self.reason
        elif self.data:
            what = f"custom error 0x{self.data[:4].hex()} (decode with the contract's ABI)"
        else:
            what = "no revert data (require without message, out of gas or invalid opcode)"
        super().__init__(f"execution reverted{where}: {what}; data=0x{self.data.hex()}")

    @property
    def selector(self) -> bytes:
        """The first four bytes of the revert data (empty if there are fewer)."""
        return self.data[:4] if len(self.data) >= 4 else b""


def decode_revert_reason(data: bytes) -> str | None:
    """Decode Solidity's built-in ``Error(string)`` and ``Panic(uint256)`` revert data.

    Args:
        data: Raw revert data.

    Returns:
        ``"reason"`` for ``Error(string)``, ``"panic 0x11"`` for ``Panic(uint256)``,
        ``None`` for anything else (custom errors, empty data).
    """
    try:
        if data[:4] == _ERROR_STRING_SELECTOR:
            return str(abi_decode(["string"], data[4:])[0])
        if data[:4] == _PANIC_SELECTOR:
            return f"panic 0x{abi_decode(['uint256'], data[4:])[0]:02x}"
    except Exception:  # noqa: BLE001 - malformed data is simply not a built-in error
        return None
    return None


@cache
def _derive_dev_key(index: int) -> bytes:
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"{DEV_HD_PATH}/{index}")
    return bytes(account.key)


def dev_accounts(count: int = 10) -> list[LocalAccount]:
    """Return the first ``count`` accounts of :data:`DEV_MNEMONIC`.

    They are the accounts anvil funds by default (``0xf39F...2266`` first) and the
    ones :class:`~proxima.sdk.chain.InProcessChain` funds. Their keys are public:
    use them on development chains only.

    Args:
        count: How many accounts to derive.
    """
    return [Account.from_key(_derive_dev_key(i)) for i in range(count)]


class Chain(ABC):
    """A connection to an EVM chain with funded accounts that sign locally.

    Subclasses supply the backend-specific parts (time travel, mining, snapshots);
    everything else goes through ``w3`` and works the same on every backend.
    Use as a context manager, or call :meth:`close`.

    Args:
        w3: A connected web3 instance.
        accounts: Accounts with keys that this chain object may sign for.
        receipt_timeout: Seconds to wait for a transaction to be mined.
    """

    def __init__(self, w3: Web3, accounts: Sequence[LocalAccount], *, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.accounts: list[LocalAccount] = list(accounts)
        self.receipt_timeout = receipt_timeout
        self._chain_id: int | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # --- backend-specific -------------------------------------------------------------

    @abstractmethod
    def mine(self) -> None:
        """Mine one (empty) block."""

    def advance_time(self, seconds: int) -> int:
        """Mine one block whose timestamp is exactly ``now() + seconds``.

        Args:
            seconds: How far to move the clock; must be at least 1.

        Returns:
            The new block's timestamp.

        Raises:
            ValueError: If ``seconds`` is less than 1.
        """
        if seconds < 1:
            raise ValueError(f"advance_time needs seconds >= 1, got {seconds}; use mine()")
        target = self.now() + seconds
        self._mine_at(target)
        return target

    @abstractmethod
    def _mine_at(self, timestamp: int) -> None:
        """Mine one block with exactly this timestamp (later than the latest block's)."""

    @abstractmethod
    def snapshot(self) -> SnapshotId:
        """Record the chain state; :meth:`revert` goes back to it.

        A snapshot id can be reverted to once: take a new snapshot after reverting.
        """

    @abstractmethod
    def revert(self, snapshot_id: SnapshotId) -> None:
        """Return the chain to the state recorded by :meth:`snapshot`.

        Args:
            snapshot_id: A value returned by :meth:`snapshot` and not reverted to yet.

        Raises:
            SnapshotError: If the id is unknown or was already used.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the connection (and anything the chain object started)."""

    def _revert_data(self, err: Exception) -> bytes | None:
        """Return the revert data carried by ``err``, or ``None`` if it is not a revert."""
        if isinstance(err, ContractLogicError):
            data = err.data
            if isinstance(data, str) and data.startswith("0x"):
                return bytes.fromhex(data[2:])
            return b""
        return None

    # --- common -----------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        """The chain id (read once from the node)."""
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def now(self) -> int:
        """Return the latest block's timestamp (seconds since the epoch)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def block_number(self) -> int:
        """Return the latest block's number."""
        return int(self.w3.eth.block_number)

    def balance(self, address: str) -> int:
        """Return the balance of ``address`` in wei at the latest block.

        Args:
            address: A hex address (any case).
        """
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def call(self, tx: TxParams, block: BlockIdentifier = "latest") -> bytes:
        """Execute a call without sending a transaction.

        Args:
            tx: Call parameters (``to``, ``data``, optionally ``from`` and ``value``).
            block: Block to execute against.

        Returns:
            The raw return data.

        Raises:
            TransactionReverted: If execution reverts (with the raw revert data).
        """
        try:
            return bytes(self.w3.eth.call(tx, block))
        except Exception as err:
            data = self._revert_data(err)
            if data is None:
                raise
            raise TransactionReverted(data, tx) from err

    def send_transaction(self, account: LocalAccount, tx: TxParams) -> TxReceipt:
        """Fill in, sign, send a transaction and wait until it is mined.

        Missing fields are filled: ``chainId``, ``nonce`` (pending count; sends from
        one account are serialized), EIP-1559 fees (2 x base fee + 1 gwei tip) and
        ``gas`` (the estimate plus 20%).

        Args:
            account: The sender; its key signs locally.
            tx: Transaction fields; omit ``to`` to deploy ``data`` as init code.

        Returns:
            The receipt of the successful transaction (``contractAddress`` is set
            for deployments).

        Raises:
            TransactionReverted: If gas estimation or execution reverts; ``data``
                holds the raw revert data.
            TransactionRejected: If the node refuses the signed transaction.
            ChainError: If the receipt does not arrive within ``receipt_timeout``.
        """
        params = cast(TxParams, {**tx, "from": account.address})
        with self._lock_for(account.address):
            params.setdefault("chainId", self.chain_id)
            if "nonce" not in params:
                params["nonce"] = self.w3.eth.get_transaction_count(account.address, "pending")
            if "gasPrice" not in params and "maxFeePerGas" not in params:
                base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))
                tip = int(params.get("maxPriorityFeePerGas", _DEFAULT_PRIORITY_FEE))
                params["maxPriorityFeePerGas"] = Wei(tip)
                params["maxFeePerGas"] = Wei(2 * base_fee + tip)
            if "gas" not in params:
                params["gas"] = self._estimate_gas(params)
            signed = account.sign_transaction(cast(dict[str, Any], params))
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except _REJECTIONS as err:
                data = self._revert_data(err)
                if data is not None:
                    raise TransactionReverted(data, params) from err
                raise TransactionRejected(_message_of(err), params) from err
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=0.05
            )
        except TimeExhausted as err:
            raise ChainError(
                f"transaction {tx_hash.to_0x_hex()} not mined after {self.receipt_timeout}s; "
                "is the node mining (automine) and the fee high enough?"
            ) from err
        if receipt["status"] != 1:
            raise TransactionReverted(self._replay_revert(params, receipt), params, tx_hash)
        return receipt

    def _estimate_gas(self, params: TxParams) -> int:
        try:
            estimate = int(self.w3.eth.estimate_gas(params))
        except Exception as err:
            data = self._revert_data(err)
            if data is not None:
                raise TransactionReverted(data, params) from err
            if isinstance(err, _REJECTIONS):
                raise TransactionRejected(_message_of(err), params) from err
            raise
        return estimate * _GAS_MARGIN_NUM // _GAS_MARGIN_DEN

    def _replay_revert(self, params: TxParams, receipt: TxReceipt) -> bytes:
        """Re-run a failed transaction as a call on its parent block to recover revert data."""
        call = cast(TxParams, {k: v for k, v in params.items() if k != "nonce"})
        try:
            self.w3.eth.call(call, max(int(receipt["blockNumber"]) - 1, 0))
        except Exception as err:  # noqa: BLE001 - any failure only means "no data"
            data = self._revert_data(err)
            return data if data is not None else b""
        return b""  # succeeds with this gas as a call: the transaction ran out of gas

    def _lock_for(self, address: ChecksumAddress) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(address, threading.Lock())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(chain_id={self._chain_id}, accounts={len(self.accounts)})"
