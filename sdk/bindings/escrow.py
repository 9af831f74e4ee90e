"""Binding of ``JobEscrow``: one-off jobs paid through escrow."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding, ProximaModel
from proxima.sdk.eip712 import JobTerms, Signature, SignedMessage, Verdict
from proxima.sdk.types import Address

__all__ = ["EscrowJob", "JobEscrow", "JobStatus"]


class JobStatus(IntEnum):
    NONE = 0
    ACCEPTED = 1
    DELIVERED = 2
    DISPUTED = 3
    SETTLED = 4
    REFUNDED = 5


class EscrowJob(ProximaModel):
    """An escrow job as stored on chain."""

    client: Address
    status: JobStatus
    delivery_deadline: int
    provider: Address
    challenge_window: int
    price: int
    slash_amount: int
    result_hash: bytes
    challenge_ends_at: int
    dispute_ends_at: int
    dispute_bond: int


class JobEscrow(ContractBinding):
    """Per-job escrow: open with the provider's signed acceptance, deliver, challenge, settle."""

    contract_name = "JobEscrow"
    eip712_name = "Proxima Escrow"

    def open_job(self, client: LocalAccount, accepted: SignedMessage[JobTerms]) -> TxReceipt:
        """Fund and open a job; ``accepted`` is the provider's signature over the terms."""
        terms = accepted.message
        return self._transact(
            client, "openJob", terms.to_abi(), accepted.signature.to_bytes(), value=terms.price
        )

    def commit_result(self, provider: LocalAccount, job_id: bytes, result_hash: bytes) -> TxReceipt:
        return self._transact(provider, "commitResult", job_id, result_hash)

    def confirm_result(self, client: LocalAccount, job_id: bytes) -> TxReceipt:
        return self._transact(client, "confirmResult", job_id)

    def release_payment(self, account: LocalAccount, job_id: bytes) -> TxReceipt:
        return self._transact(account, "releasePayment", job_id)

    def claim_timeout(self, account: LocalAccount, job_id: bytes) -> TxReceipt:
        return self._transact(account, "claimTimeout", job_id)

    def dispute_result(self, client: LocalAccount, job_id: bytes) -> TxReceipt:
        """Dispute a delivered result, posting the bond the contract asks for."""
        return self._transact(client, "disputeResult", job_id, value=self.dispute_bond_of(job_id))

    def resolve_dispute(
        self,
        account: LocalAccount,
        verdict: Verdict,
        signatures: Sequence[tuple[Address, Signature]],
    ) -> TxReceipt:
        """Submit verifier signatures over ``verdict``; they are sorted by signer address here."""
        ordered = sorted(signatures, key=lambda item: int(item[0], 16))
        return self._transact(
            account, "resolveDispute", verdict.to_abi(), [sig.to_bytes() for _, sig in ordered]
        )

    def expire_dispute(self, account: LocalAccount, job_id: bytes) -> TxReceipt:
        return self._transact(account, "expireDispute", job_id)

    def withdraw_credit(self, account: LocalAccount) -> TxReceipt:
        """Collect a payout that was credited because it could not be delivered."""
        return self._transact(account, "withdrawCredit")

    def credit_of(self, account: str) -> int:
        return int(self._call("creditOf", account))

    def job_of(self, job_id: bytes) -> EscrowJob:
        return self._call_model(EscrowJob, "jobOf", job_id)

    def dispute_bond_of(self, job_id: bytes) -> int:
        return int(self._call("disputeBondOf", job_id))

    def total_escrowed(self) -> int:
        return int(self._call("totalEscrowed"))

    def hash_terms(self, terms: JobTerms) -> bytes:
        return bytes(self._call("hashTerms", terms.to_abi()))

    def hash_verdict(self, verdict: Verdict) -> bytes:
        return bytes(self._call("hashVerdict", verdict.to_abi()))

    def parameter(self, name: str) -> int:
        """A deployment parameter, for example ``"feeBps"`` or ``"verdictQuorum"``."""
        return int(self._call(name))
