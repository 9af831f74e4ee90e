"""What every contract binding shares: ABI encoding, calls, transactions, error and event decoding."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, ClassVar, TypeVar

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.abi import get_abi_output_types
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict
from web3.types import LogReceipt, TxParams, TxReceipt, Wei

from proxima.contracts import available_artifacts, load_artifact
from proxima.sdk.chain import Chain, TransactionReverted
from proxima.sdk.eip712 import Domain
from proxima.sdk.errors import ContractRevertError
from proxima.sdk.types import Address

__all__ = [
    "ContractBinding",
    "DecodedEvent",
    "ProximaModel",
    "abi_type",
    "decode_events",
    "decode_logs",
    "decode_revert",
]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


class ProximaModel(BaseModel):
    """Base of the read models the bindings return."""

    model_config = ConfigDict(frozen=True)


@dataclass(frozen=True)
class DecodedEvent:
    """One log decoded with the ABI of the contract that emitted it.

    Attributes:
        contract: The emitting contract's name.
        address: Its address.
        name: The event name, for example ``"JobSettled"``.
        args: Its arguments by name.
        block_number: The block it is in.
        log_index: Its position in the block.
    """

    contract: str
    address: Address
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int


@cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """Selector -> (error name, argument names, argument types), over every Proxima ABI."""
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in available_artifacts():
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            types = [abi_type(i) for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def decode_revert(contract: str, function: str, err: TransactionReverted) -> TransactionReverted:
    """Turn a raw revert into a :class:`ContractRevertError` when its selector is a known custom error.

    Returns the original error when the data is not a known custom error (``Error(string)``, panics, empty).
    """
    entry = _error_table().get(err.selector)
    if entry is None:
        return err
    name, arg_names, arg_types = entry
    try:
        values = abi_decode(arg_types, err.data[4:])
    except Exception:  # noqa: BLE001 - undecodable data stays a raw revert
        return err
    args = {n: _plain(v) for n, v in zip(arg_names, values, strict=True)}
    return ContractRevertError(contract, function, name, args, err)


_checksum = lru_cache(maxsize=65_536)(to_checksum_address)
"""EIP-55 checksumming costs a keccak per address; logs repeat the same few addresses (the auditor's sync
decodes hundreds of thousands), so it is done once per address."""


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return _checksum(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


class ContractBinding:
    """A typed handle on one deployed Proxima contract.

    Args:
        chain: The chain it is deployed on.
        address: Its address.
    """

    contract_name: ClassVar[str]
    eip712_name: ClassVar[str | None] = None

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address: Address = to_checksum_address(address)
        artifact = load_artifact(self.contract_name)
        self.abi = artifact.abi
        self._contract = chain.w3.eth.contract(address=self.address, abi=artifact.abi)
        self._functions = {item["name"]: item for item in artifact.abi if item.get("type") == "function"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address})"

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain messages for this contract are signed in."""
        if self.eip712_name is None:
            raise TypeError(f"{self.contract_name} checks no EIP-712 signatures")
        return Domain(self.eip712_name, "1", self.chain.chain_id, self.address)

    def _encode(self, function: str, args: tuple[Any, ...]) -> HexStr:
        return HexStr(self._contract.encode_abi(function, args=list(args)))

    def _call(self, function: str, *args: Any) -> Any:
        """Run a view function; returns the single output, or a tuple for several."""
        tx: TxParams = {"to": self.address, "data": self._encode(function, args)}
        try:
            raw = self.chain.call(tx)
        except TransactionReverted as err:
            raise decode_revert(self.contract_name, function, err) from err
        types = get_abi_output_types(self._functions[function])  # type: ignore[arg-type]
        values = abi_decode(types, raw)
        return values[0] if len(values) == 1 else tuple(values)

    def _call_model(self, model: type[T], function: str, *args: Any) -> T:
        """Run a view function returning one struct, as ``model`` (fields in struct order)."""
        values = self._call(function, *args)
        return model(**dict(zip(model.model_fields, (_plain(v) for v in values), strict=True)))

    def _transact(self, account: LocalAccount, function: str, *args: Any, value: int = 0) -> TxReceipt:
        """Send a transaction calling ``function``; raises decoded custom errors."""
        tx: TxParams = {
            "to": self.address,
            "data": self._encode(function, args),
            "value": Wei(value),
        }
        try:
            receipt = self.chain.send_transaction(account, tx)
        except TransactionReverted as err:
            raise decode_revert(self.contract_name, function, err) from err
        log.debug(
            "transaction mined",
            extra={"contract": self.contract_name, "function": function, "gas": receipt["gasUsed"]},
        )
        return receipt

    def events(self, receipt: TxReceipt, name: str | None = None) -> list[DecodedEvent]:
        """This contract's events in ``receipt``, optionally only those called ``name``."""
        found = decode_events(receipt, {self.address: self.contract_name})
        return [e for e in found if name is None or e.name == name]


@cache
def _event_abis(contract: str) -> dict[bytes, dict[str, Any]]:
    """topic0 -> event ABI for one contract."""
    table: dict[bytes, dict[str, Any]] = {}
    for item in load_artifact(contract).abi:
        if item.get("type") == "event":
            types = ",".join(abi_type(i) for i in item["inputs"])
            table[keccak(text=f"{item['name']}({types})")] = item
    return table


def decode_events(receipt: TxReceipt, contracts: dict[Address, str]) -> list[DecodedEvent]:
    """Decode the logs in ``receipt`` emitted by the given contracts.

    Args:
        receipt: A mined transaction's receipt.
        contracts: Contract name by address; logs from other addresses are skipped.
    """
    return decode_logs(receipt["logs"], contracts)


def decode_logs(logs: Iterable[LogReceipt], contracts: dict[Address, str]) -> list[DecodedEvent]:
    """Decode logs (from a receipt or ``eth_getLogs``) emitted by the given contracts, in order."""
    decoded: list[DecodedEvent] = []
    for entry in logs:
        address = _checksum(entry["address"])
        contract = contracts.get(address)
        topics = [bytes(t) for t in entry["topics"]]
        if contract is None or not topics:
            continue
        abi = _event_abis(contract).get(topics[0])
        if abi is None:
            continue
        decoded.append(
            DecodedEvent(
                contract=contract,
                address=address,
                name=abi["name"],
                args=_decode_log(abi, topics, bytes(entry["data"])),
                block_number=int(entry["blockNumber"]),
                log_index=int(entry["logIndex"]),
            )
        )
    return decoded


def _decode_log(abi: dict[str, Any], topics: list[bytes], data: bytes) -> dict[str, Any]:
    indexed = [i for i in abi["inputs"] if i["indexed"]]
    plain = [i for i in abi["inputs"] if not i["indexed"]]
    values: dict[str, Any] = {}
    for param, topic in zip(indexed, topics[1:], strict=True):
        values[param["name"]] = _plain(abi_decode([abi_type(param)], topic)[0])
    for param, value in zip(plain, abi_decode([abi_type(p) for p in plain], data), strict=True):
        values[param["name"]] = _plain(value)
    return {i["name"]: values[i["name"]] for i in abi["inputs"]}
