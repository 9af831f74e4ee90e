"""InProcessChain's two ways of choosing a gas limit behave the same to callers."""

from __future__ import annotations

import pytest

from proxima.sdk.chain import InProcessChain, TransactionReverted


@pytest.mark.parametrize("fast_gas", [True, False], ids=["fast-gas", "estimated-gas"])
def test_sendTransaction_sameOutcomeWithEitherGasMode(fast_gas: bool) -> None:
    with InProcessChain(accounts=2, fast_gas=fast_gas) as chain:
        alice, bob = chain.accounts
        receipt = chain.send_transaction(alice, {"to": bob.address, "value": 1})
        assert receipt["gasUsed"] == 21_000
        # Runtime "PUSH1 0 PUSH1 0 REVERT" behind a 12-byte deployer.
        init = bytes.fromhex("6005600c60003960056000f360006000fd")
        target = chain.send_transaction(alice, {"data": init})["contractAddress"]
        assert target is not None
        with pytest.raises(TransactionReverted) as reverted:
            chain.send_transaction(alice, {"to": target})
        assert reverted.value.data == b""
        assert reverted.value.tx_hash is None
