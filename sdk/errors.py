"""Exception hierarchy of :mod:`proxima.sdk`.

Everything Proxima raises derives from :class:`ProximaError`. Contract reverts are decoded from the ABIs of
all Proxima contracts (their own custom errors and OpenZeppelin's), so callers can act on
``err.error_name`` and ``err.error_args`` instead of raw bytes.
"""

from __future__ import annotations

from typing import Any

from proxima.contracts import ContractError, ProximaError
from proxima.sdk.chain import ChainError, TransactionReverted

__all__ = [
    "ChainError",
    "ContractError",
    "ContractRevertError",
    "DeploymentError",
    "ProximaError",
    "SdkError",
    "SignatureError",
]


class SdkError(ProximaError):
    """Root of the errors raised by the SDK itself."""


class SignatureError(SdkError, ValueError):
    """A signature is malformed or does not come from the expected signer."""


class DeploymentError(SdkError):
    """Contracts could not be deployed or a deployment does not match the chain."""


class ContractRevertError(TransactionReverted, ContractError):
    """A contract call reverted with a custom error that was decoded.

    Args:
        contract: Name of the contract that was called.
        function: Function that was called.
        error_name: The custom error's name, for example ``"EscrowWrongDeposit"``.
        error_args: The error's arguments by name.
        reverted: The original revert (raw data, transaction).
    """

    def __init__(
        self,
        contract: str,
        function: str,
        error_name: str,
        error_args: dict[str, Any],
        reverted: TransactionReverted,
    ) -> None:
        self.contract = contract
        self.function = function
        self.error_name = error_name
        self.error_args = error_args
        super().__init__(reverted.data, reverted.tx, reverted.tx_hash)
        shown = ", ".join(f"{k}={_show(v)}" for k, v in error_args.items())
        self.args = (f"{contract}.{function} reverted: {error_name}({shown})",)

    def __str__(self) -> str:
        return str(self.args[0])


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
