"""Binding of ``FaultProofs``: equivocation evidence."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding
from proxima.sdk.eip712 import JobReceipt, SignedMessage

__all__ = ["FaultProofs"]


class FaultProofs(ContractBinding):
    """Slashing on self-contained evidence: two signed receipts with different results for one job."""

    contract_name = "FaultProofs"
    eip712_name = "Proxima Receipts"

    def prove_equivocation(
        self, finder: LocalAccount, a: SignedMessage[JobReceipt], b: SignedMessage[JobReceipt]
    ) -> TxReceipt:
        return self._transact(
            finder,
            "proveEquivocation",
            a.message.to_abi(),
            a.signature.to_bytes(),
            b.message.to_abi(),
            b.signature.to_bytes(),
        )

    def is_equivocation_proven(self, provider: str, job_id: bytes) -> bool:
        return bool(self._call("isEquivocationProven", provider, job_id))

    def hash_receipt(self, receipt: JobReceipt) -> bytes:
        return bytes(self._call("hashReceipt", receipt.to_abi()))

    def parameter(self, name: str) -> int:
        return int(self._call(name))
