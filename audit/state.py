"""Contract state at one block, read with ``eth_call`` at that block (batched where the endpoint allows).

The auditor compares what it recomputed from events with what the contracts say at the index's checkpoint.
:class:`StateReader` encodes calls with the ABIs of the compiled artifacts (never the deployment file's
parameters) and sends them as JSON-RPC batches over HTTP (one round trip per ``batch_size`` calls; endpoints
that refuse batches get single calls), or one by one on other providers (py-evm in process).

Struct results come back as dicts keyed by the Solidity member names in snake_case (``accountOf`` ->
``{"role": 1, "registered_at": ..., "stake": ...}``); single results as plain values; addresses checksummed,
``bytes32`` as bytes.

Example::

    reader = StateReader(w3, deployment, block=1234)
    account, total = reader.call_many([
        ("ProviderRegistry", "accountOf", (provider,)),
        ("ProviderRegistry", "totalStaked", ()),
    ])
    state = read_state(w3, deployment, 1234, accounts=[provider], jobs=[job_id])
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import BlockIdentifier, RPCEndpoint

from proxima.audit.errors import AuditError
from proxima.contracts import load_artifact
from proxima.sdk.bindings._base import abi_type
from proxima.sdk.chain import Deployment

__all__ = [
    "CONTRACTS",
    "ChainState",
    "StateReadError",
    "StateReader",
    "read_state",
    "snake",
]

log = logging.getLogger(__name__)

CONTRACTS = (
    "ProviderRegistry",
    "AttestationRegistry",
    "JobEscrow",
    "PaymentVouchers",
    "FaultProofs",
    "RewardPool",
)
"""The Proxima contracts a deployment holds (names as in Solidity)."""

Call = tuple[str, str, tuple[Any, ...]]
"""``(contract name, view function, arguments)``."""


class StateReadError(AuditError):
    """A state read failed: the endpoint answered an error, or the contract reverted.

    Args:
        what: The call, for example ``"JobEscrow.jobOf(0x...) at block 12"``.
        problem: What went wrong.
    """

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        self.problem = problem
        super().__init__(f"reading {what} failed: {problem}")


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(name: str) -> str:
    """``"registeredAt"`` -> ``"registered_at"``."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True)
class _Function:
    selector: bytes
    input_types: list[str]
    output_types: list[str]
    outputs: list[dict[str, Any]]


@cache
def _functions(contract: str) -> dict[str, _Function]:
    table: dict[str, _Function] = {}
    for item in load_artifact(contract).abi:
        if item.get("type") != "function":
            continue
        inputs = [abi_type(i) for i in item["inputs"]]
        selector = keccak(text=f"{item['name']}({','.join(inputs)})")[:4]
        outputs = list(item.get("outputs", []))
        table[item["name"]] = _Function(selector, inputs, [abi_type(o) for o in outputs], outputs)
    return table


def _plain(value: Any, param: dict[str, Any] | None = None) -> Any:
    if param is not None and param["type"] == "tuple":
        return {snake(c["name"]): _plain(v, c) for c, v in zip(param["components"], value, strict=True)}
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _block_param(block: BlockIdentifier) -> str:
    return hex(block) if isinstance(block, int) else str(block)


class StateReader:
    """Reads Proxima view functions at one block.

    Args:
        w3: The JSON-RPC connection.
        deployment: Where the contracts are (addresses only).
        block: Block number (or tag) every call reads at.
        batch_size: Calls per JSON-RPC batch.
    """

    def __init__(
        self, w3: Web3, deployment: Deployment, block: BlockIdentifier, *, batch_size: int = 250
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.block = block
        self.batch_size = batch_size
        self._batching = isinstance(w3.provider, HTTPProvider)
        self.calls_made = 0

    def _encode(self, call: Call) -> tuple[str, bytes, _Function]:
        contract, function, args = call
        try:
            fn = _functions(contract)[function]
        except KeyError:
            raise StateReadError(f"{contract}.{function}", "no such view function in the artifacts") from None
        address = self.deployment.address(contract)
        return address, fn.selector + abi_encode(fn.input_types, list(args)), fn

    def _decode(self, call: Call, fn: _Function, raw: bytes) -> Any:
        try:
            values = abi_decode(fn.output_types, raw)
        except Exception as err:
            raise StateReadError(self._describe(call), f"cannot decode the answer ({err})") from err
        plain = [_plain(v, o) for v, o in zip(values, fn.outputs, strict=True)]
        return plain[0] if len(plain) == 1 else tuple(plain)

    def _describe(self, call: Call) -> str:
        contract, function, args = call
        shown = ", ".join(f"0x{a.hex()}" if isinstance(a, bytes) else str(a) for a in args)
        return f"{contract}.{function}({shown}) at block {self.block!s}"

    def call(self, contract: str, function: str, *args: Any) -> Any:
        """One view call; see :meth:`call_many`."""
        return self.call_many([(contract, function, tuple(args))])[0]

    def call_many(self, calls: Sequence[Call]) -> list[Any]:
        """Run view calls at this reader's block, in batches; results in the order of ``calls``.

        Raises:
            StateReadError: If a call reverts, the endpoint answers an error, or an answer does not decode.
        """
        encoded = [self._encode(c) for c in calls]
        results: list[Any] = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start : start + self.batch_size]
            raws = self._send(calls[start : start + self.batch_size], chunk)
            results.extend(
                self._decode(c, fn, raw)
                for c, (_, _, fn), raw in zip(calls[start : start + len(chunk)], chunk, raws, strict=True)
            )
        self.calls_made += len(calls)
        return results

    def balances(self, addresses: Iterable[str]) -> dict[str, int]:
        """ETH balance of each address at this block."""
        out: dict[str, int] = {}
        for address in addresses:
            out[address] = int(self.w3.eth.get_balance(to_checksum_address(address), self.block))
        return out

    def _send(self, calls: Sequence[Call], chunk: list[tuple[str, bytes, _Function]]) -> list[bytes]:
        block = _block_param(self.block)
        if self._batching and len(chunk) > 1:
            requests = [
                (RPCEndpoint("eth_call"), [{"to": address, "data": "0x" + data.hex()}, block])
                for address, data, _ in chunk
            ]
            try:
                responses = self.w3.provider.make_batch_request(requests)  # type: ignore[attr-defined]
            except Exception as err:  # noqa: BLE001 - some endpoints refuse batches: fall back to single calls
                log.info("batch eth_call refused, sending single calls", extra={"error": str(err)})
                self._batching = False
            else:
                if isinstance(responses, list) and len(responses) == len(chunk):
                    by_id = sorted(responses, key=lambda r: int(r.get("id", 0)))
                    return [self._result(c, r) for c, r in zip(calls, by_id, strict=True)]
                self._batching = False
        out: list[bytes] = []
        for call, (address, data, _) in zip(calls, chunk, strict=True):
            try:
                out.append(bytes(self.w3.eth.call({"to": address, "data": "0x" + data.hex()}, self.block)))  # type: ignore[typeddict-item]
            except Exception as err:
                raise StateReadError(self._describe(call), str(err)) from err
        return out

    def _result(self, call: Call, response: Any) -> bytes:
        if response.get("error"):
            raise StateReadError(self._describe(call), str(response["error"]))
        result = response.get("result")
        if not isinstance(result, str):
            raise StateReadError(self._describe(call), f"unexpected answer {response!r}")
        return bytes.fromhex(result.removeprefix("0x"))


@dataclass
class ChainState:
    """What the contracts say at one block (see :func:`read_state`); dicts keyed as the ledger's.

    Attributes:
        block_number: The block read at.
        balances: ETH held by each contract, by contract name.
        totals: ``total_staked``, ``total_unbonding``, ``total_escrowed``, ``total_deposits``,
            ``pool_balance``, ``treasury_balance``, ``current_epoch``.
        accounts: ``ProviderRegistry.accountOf`` by address.
        figures, reports: ``latestFigures`` / ``latestReport`` by provider.
        nonces: ``AttestationRegistry.nonces`` by signer.
        rewards: ``RewardPool.rewardsOf`` by provider. claimable: ``claimable`` by provider.
        credits: ``JobEscrow.creditOf`` by account.
        jobs: ``JobEscrow.jobOf`` by job id.
        deposits: ``PaymentVouchers.depositOf`` by client. redeemed: ``redeemedOf`` by (client, provider).
        epochs: ``RewardPool.epochOf`` by epoch.
        faults: ``FaultProofs.faultOf`` by (provider, job id). canaries: ``canaryOf`` by commitment.
        calls: How many view calls were made.
    """

    block_number: int
    balances: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)
    rewards: dict[str, dict[str, Any]] = field(default_factory=dict)
    claimable: dict[str, int] = field(default_factory=dict)
    credits: dict[str, int] = field(default_factory=dict)
    jobs: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    deposits: dict[str, dict[str, Any]] = field(default_factory=dict)
    redeemed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)
    faults: dict[tuple[str, bytes], int] = field(default_factory=dict)
    canaries: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    calls: int = 0


_TOTALS: tuple[tuple[str, str, str], ...] = (
    ("total_staked", "ProviderRegistry", "totalStaked"),
    ("total_unbonding", "ProviderRegistry", "totalUnbonding"),
    ("total_escrowed", "JobEscrow", "totalEscrowed"),
    ("total_deposits", "PaymentVouchers", "totalDeposits"),
    ("pool_balance", "RewardPool", "poolBalance"),
    ("treasury_balance", "RewardPool", "treasuryBalance"),
    ("current_epoch", "RewardPool", "currentEpoch"),
)


def read_state(
    w3: Web3,
    deployment: Deployment,
    block: int,
    *,
    accounts: Collection[str] = (),
    providers: Collection[str] = (),
    signers: Collection[str] = (),
    credit_accounts: Collection[str] = (),
    jobs: Collection[bytes] = (),
    clients: Collection[str] = (),
    pairs: Collection[tuple[str, str]] = (),
    epochs: Collection[int] = (),
    faults: Collection[tuple[str, bytes]] = (),
    canaries: Collection[bytes] = (),
    progress: Callable[[int, int], None] | None = None,
) -> ChainState:
    """Read everything the auditor compares, at ``block``.

    Args:
        w3: The JSON-RPC connection.
        deployment: Contract addresses.
        block: The block to read at.
        accounts: Registered accounts (``accountOf``).
        providers: Accounts whose figures, reports, rewards and claimable amount to read.
        signers: Accounts whose attestation nonce to read.
        credit_accounts: Accounts whose escrow credit to read.
        jobs: Escrow job ids. clients: Voucher clients. pairs: (client, provider) pairs redeemed.
        epochs: Reward epochs. faults: (provider, job id) proven. canaries: Canary commitments.
        progress: Called with (calls done, calls in all) after each group.

    Raises:
        StateReadError: If a read fails.
    """
    reader = StateReader(w3, deployment, block)
    state = ChainState(block_number=block)
    groups: list[tuple[Callable[[Any, Any], None], list[Any], list[Call]]] = []

    def group(keys: Iterable[Any], contract: str, function: str, store: Callable[[Any, Any], None]) -> None:
        keys = list(keys)
        args = [k if isinstance(k, tuple) else (k,) for k in keys]
        groups.append((store, keys, [(contract, function, a) for a in args]))

    groups.append(
        (
            lambda k, v: state.totals.__setitem__(k, int(v)),
            [t[0] for t in _TOTALS],
            [(contract, function, ()) for _, contract, function in _TOTALS],
        )
    )
    group(accounts, "ProviderRegistry", "accountOf", state.accounts.__setitem__)
    group(providers, "AttestationRegistry", "latestFigures", state.figures.__setitem__)
    group(providers, "AttestationRegistry", "latestReport", state.reports.__setitem__)
    group(providers, "RewardPool", "rewardsOf", state.rewards.__setitem__)
    group(providers, "RewardPool", "claimable", lambda k, v: state.claimable.__setitem__(k, int(v)))
    group(signers, "AttestationRegistry", "nonces", lambda k, v: state.nonces.__setitem__(k, int(v)))
    group(credit_accounts, "JobEscrow", "creditOf", lambda k, v: state.credits.__setitem__(k, int(v)))
    group(jobs, "JobEscrow", "jobOf", state.jobs.__setitem__)
    group(clients, "PaymentVouchers", "depositOf", state.deposits.__setitem__)
    group(pairs, "PaymentVouchers", "redeemedOf", state.redeemed.__setitem__)
    group(epochs, "RewardPool", "epochOf", state.epochs.__setitem__)
    group(faults, "FaultProofs", "faultOf", lambda k, v: state.faults.__setitem__(k, int(v)))
    group(canaries, "FaultProofs", "canaryOf", state.canaries.__setitem__)

    total = sum(len(calls) for _, _, calls in groups)
    done = 0
    for store, keys, calls in groups:
        if not calls:
            continue
        for key, value in zip(keys, reader.call_many(calls), strict=True):
            store(key, value)
        done += len(calls)
        if progress is not None:
            progress(done, total)
    held = reader.balances(deployment.address(name) for name in CONTRACTS)
    state.balances = {name: held[deployment.address(name)] for name in CONTRACTS}
    state.calls = reader.calls_made
    return state
