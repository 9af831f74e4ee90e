"""One behaviour suite for every chain backend (see the ``chain`` fixture)."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_typing import ChecksumAddress

from proxima.sdk.chain import (
    Chain,
    SnapshotError,
    TransactionRejected,
    TransactionReverted,
    dev_accounts,
)

ETHER = 10**18
CUSTOM_ERROR = bytes.fromhex("deadbeef") + (42).to_bytes(32, "big")
ERROR_STRING = bytes.fromhex("08c379a0") + encode(["string"], ["not allowed"])


def _deploy_code(runtime: bytes) -> bytes:
    """Init code that deploys ``runtime`` as is (CODECOPY + RETURN, 14-byte header)."""
    n = len(runtime).to_bytes(2, "big")
    header = b"\x61" + n + bytes.fromhex("600e600039") + b"\x61" + n + bytes.fromhex("6000f3")
    return header + runtime


def _reverter(data: bytes) -> bytes:
    """Init code of a contract whose every call reverts with exactly ``data``."""
    n = len(data).to_bytes(2, "big")
    runtime = b"\x61" + n + bytes.fromhex("600e600039") + b"\x61" + n + bytes.fromhex("6000fd")
    return _deploy_code(runtime + data)


def _deploy(chain: Chain, init_code: bytes) -> ChecksumAddress:
    receipt = chain.send_transaction(chain.accounts[0], {"data": init_code})
    address = receipt["contractAddress"]
    assert address is not None
    return address


def test_accounts_areFundedDevAccounts(chain: Chain) -> None:
    assert len(chain.accounts) == 10
    assert chain.accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert [a.address for a in chain.accounts] == [a.address for a in dev_accounts(10)]
    assert all(chain.balance(a.address) == 1_000_000 * ETHER for a in chain.accounts)


def test_sendTransaction_transfersValueAndChargesGas(chain: Chain) -> None:
    alice, bob = chain.accounts[:2]
    alice_before, bob_before = chain.balance(alice.address), chain.balance(bob.address)

    receipt = chain.send_transaction(alice, {"to": bob.address, "value": 3 * ETHER})

    assert receipt["status"] == 1
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(bob.address) == bob_before + 3 * ETHER
    assert chain.balance(alice.address) == alice_before - 3 * ETHER - fee


def test_sendTransaction_managesNoncesAcrossSends(chain: Chain) -> None:
    alice, bob = chain.accounts[:2]
    start = chain.w3.eth.get_transaction_count(alice.address)
    for _ in range(3):
        chain.send_transaction(alice, {"to": bob.address, "value": 1})
    assert chain.w3.eth.get_transaction_count(alice.address) == start + 3


def test_sendTransaction_deploysContracts(chain: Chain) -> None:
    runtime = bytes.fromhex("00")  # STOP
    address = _deploy(chain, _deploy_code(runtime))
    assert chain.w3.eth.get_code(address) == runtime


def test_cancunOpcodes_execute(chain: Chain) -> None:
    # TSTORE 1 at key 0, TLOAD it, MSTORE at 0, MCOPY to 32, return memory[32:64].
    code = ["600160005d", "60005c", "600052", "6020600060205e", "60206020f3"]
    runtime = bytes.fromhex("".join(code))
    address = _deploy(chain, _deploy_code(runtime))
    assert chain.call({"to": address}) == (1).to_bytes(32, "big")


def test_advanceTime_minesBlockAtExactTimestamp(chain: Chain) -> None:
    before, block = chain.now(), chain.block_number()
    assert chain.advance_time(3600) == before + 3600
    assert chain.now() == before + 3600
    assert chain.block_number() == block + 1


def test_advanceTime_failsIfNotForward(chain: Chain) -> None:
    with pytest.raises(ValueError, match="seconds >= 1"):
        chain.advance_time(0)


def test_mine_addsOneBlock(chain: Chain) -> None:
    block = chain.block_number()
    chain.mine()
    assert chain.block_number() == block + 1


def test_revert_restoresBalancesAndBlock(chain: Chain) -> None:
    alice, bob = chain.accounts[:2]
    snapshot = chain.snapshot()
    bob_before, block = chain.balance(bob.address), chain.block_number()

    chain.send_transaction(alice, {"to": bob.address, "value": 5 * ETHER})
    chain.advance_time(60)
    chain.revert(snapshot)

    assert chain.balance(bob.address) == bob_before
    assert chain.block_number() == block
    chain.send_transaction(alice, {"to": bob.address, "value": 1})  # nonces still right
    assert chain.balance(bob.address) == bob_before + 1


def test_revert_failsIfSnapshotAlreadyUsed(chain: Chain) -> None:
    snapshot = chain.snapshot()
    chain.revert(snapshot)
    with pytest.raises(SnapshotError):
        chain.revert(snapshot)


@pytest.mark.parametrize(
    "data", [CUSTOM_ERROR, ERROR_STRING, b""], ids=["custom-error", "error-string", "empty"]
)
def test_sendTransaction_raisesWithRawRevertData(chain: Chain, data: bytes) -> None:
    target = _deploy(chain, _reverter(data))
    nonce = chain.w3.eth.get_transaction_count(chain.accounts[1].address)

    with pytest.raises(TransactionReverted) as reverted:
        chain.send_transaction(chain.accounts[1], {"to": target, "data": b"\x01"})

    assert reverted.value.data == data
    assert reverted.value.tx_hash is None  # caught by gas estimation, never sent
    assert chain.w3.eth.get_transaction_count(chain.accounts[1].address) == nonce


@pytest.mark.parametrize("data", [CUSTOM_ERROR, ERROR_STRING], ids=["custom-error", "error-string"])
def test_call_raisesWithRawRevertData(chain: Chain, data: bytes) -> None:
    target = _deploy(chain, _reverter(data))
    with pytest.raises(TransactionReverted) as reverted:
        chain.call({"to": target})
    assert reverted.value.data == data


def test_sendTransaction_minedRevertCarriesHashAndData(chain: Chain) -> None:
    target = _deploy(chain, _reverter(CUSTOM_ERROR))
    with pytest.raises(TransactionReverted) as reverted:
        chain.send_transaction(chain.accounts[0], {"to": target, "gas": 60_000})
    assert reverted.value.tx_hash is not None
    assert reverted.value.data == CUSTOM_ERROR
    assert reverted.value.selector == bytes.fromhex("deadbeef")


def test_revertMessage_decodesErrorString(chain: Chain) -> None:
    target = _deploy(chain, _reverter(ERROR_STRING))
    with pytest.raises(TransactionReverted, match="not allowed") as reverted:
        chain.call({"to": target})
    assert reverted.value.reason == "not allowed"


def test_sendTransaction_failsIfNonceUsed(chain: Chain) -> None:
    alice, bob = chain.accounts[:2]
    chain.send_transaction(alice, {"to": bob.address, "value": 1})
    with pytest.raises(TransactionRejected, match=r"(?i)nonce"):
        chain.send_transaction(alice, {"to": bob.address, "value": 1, "nonce": 0, "gas": 21_000})


def test_sendTransaction_failsIfSenderUnfunded(chain: Chain) -> None:
    pauper = Account.create()
    with pytest.raises(TransactionRejected):
        chain.send_transaction(pauper, {"to": chain.accounts[0].address, "value": 1})
