"""Binding of ``AttestationRegistry``: signed performance figures and verifier reports."""

from __future__ import annotations

from collections.abc import Sequence

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding, ProximaModel
from proxima.sdk.eip712 import Attestation, AttestationBatch, SignedMessage, VerifierReport

__all__ = ["AttestationRegistry", "Figures", "ReportSummary"]


class Figures(ProximaModel):
    """A provider's latest attested figures (FLOP/s, bytes/s)."""

    gemm_flops: int
    mem_bandwidth: int
    epoch: int
    updated_at: int


class ReportSummary(ProximaModel):
    """What verifiers reported about a provider so far."""

    measured_flops: int
    passes: int
    failures: int
    updated_at: int


class AttestationRegistry(ContractBinding):
    """Performance attestations (signed by providers) and verifier reports (signed by verifiers)."""

    contract_name = "AttestationRegistry"
    eip712_name = "Proxima Attestations"

    def submit_attestation(self, account: LocalAccount, signed: SignedMessage[Attestation]) -> TxReceipt:
        """Submit one attestation; ``account`` pays the gas and need not be the provider."""
        return self._transact(
            account, "submitAttestation", signed.message.to_abi(), signed.signature.to_bytes()
        )

    def submit_attestations(
        self, account: LocalAccount, batch: Sequence[SignedMessage[Attestation]]
    ) -> TxReceipt:
        """Submit many attestations in one transaction (compact signatures)."""
        return self._transact(
            account,
            "submitAttestations",
            [s.message.to_abi() for s in batch],
            [s.signature.to_compact() for s in batch],
        )

    def submit_attestation_batch(
        self, account: LocalAccount, signed: SignedMessage[AttestationBatch]
    ) -> TxReceipt:
        """Submit measurements the provider signed once as a batch (the cheapest way to attest)."""
        return self._transact(
            account, "submitAttestationBatch", signed.message.to_abi(), signed.signature.to_bytes()
        )

    def hash_attestation_batch(self, batch: AttestationBatch) -> bytes:
        return bytes(self._call("hashAttestationBatch", batch.to_abi()))

    def submit_report(self, account: LocalAccount, signed: SignedMessage[VerifierReport]) -> TxReceipt:
        return self._transact(account, "submitReport", signed.message.to_abi(), signed.signature.to_bytes())

    def submit_reports(
        self, account: LocalAccount, batch: Sequence[SignedMessage[VerifierReport]]
    ) -> TxReceipt:
        return self._transact(
            account,
            "submitReports",
            [s.message.to_abi() for s in batch],
            [s.signature.to_compact() for s in batch],
        )

    def nonce_of(self, signer: str) -> int:
        """The nonce the signer's next attestation or report must carry."""
        return int(self._call("nonces", signer))

    def latest_figures(self, provider: str) -> Figures:
        return self._call_model(Figures, "latestFigures", provider)

    def latest_report(self, provider: str) -> ReportSummary:
        return self._call_model(ReportSummary, "latestReport", provider)

    def hash_attestation(self, attestation: Attestation) -> bytes:
        return bytes(self._call("hashAttestation", attestation.to_abi()))

    def hash_report(self, report: VerifierReport) -> bytes:
        return bytes(self._call("hashReport", report.to_abi()))
