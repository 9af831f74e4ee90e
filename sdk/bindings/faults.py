"""Binding of ``FaultProofs``: equivocation, wrong canary answers and invalid results.

Equivocation proves itself (two signed receipts, one job, two results). A wrong canary answer and an invalid
result are judged by staked verifiers: at least ``verdict_quorum()`` of them sign
``Verdict(job_id, result_hash, False)`` in this contract's EIP-712 domain
(:meth:`FaultProofs.verdict_signature`), and anyone submits the provider's signed receipt with them.

Example::

    faults = contracts.fault_proofs
    faults.commit_canary(verifier, canary_commitment(job_id, spec_hash, salt))  # before the job is sent
    ...  # the provider answers wrongly; each verifier of a quorum checks and signs
    sigs = [faults.verdict_signature(LocalSigner(v), job_id, receipt.message.result_hash) for v in quorum]
    slashed = faults.prove_canary_fault(finder, receipt, spec_hash, salt, sigs)
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding
from proxima.sdk.eip712 import JobReceipt, Signature, SignedMessage, Signer, Verdict, recover_signer
from proxima.sdk.errors import SdkError, SignatureError
from proxima.sdk.types import Address

__all__ = ["FaultKind", "FaultProofs", "canary_commitment"]


class FaultKind(IntEnum):
    """What was proven against a provider for one job (``IFaultProofs.FaultKind``)."""

    NONE = 0
    EQUIVOCATION = 1
    CANARY = 2
    INVALID_RESULT = 3


def _bytes32(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else repr(value)
        raise SdkError(f"{name} must be exactly 32 bytes, got {shown}")
    return value


def canary_commitment(job_id: bytes, spec_hash: bytes, salt: bytes) -> bytes:
    """The commitment a verifier puts on chain before sending a canary: ``keccak256(abi.encode(...))``.

    Args:
        job_id: The canary job's 32-byte id (the id the provider will sign in its receipt).
        spec_hash: 32-byte hash of the canary's job spec.
        salt: 32 random bytes, kept secret until the proof, so the commitment reveals nothing.

    Raises:
        SdkError: If an argument is not exactly 32 bytes.
    """
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32"],
            [_bytes32("job_id", job_id), _bytes32("spec_hash", spec_hash), _bytes32("salt", salt)],
        )
    )


class FaultProofs(ContractBinding):
    """Slashing on evidence: equivocation, a wrong answer to a committed canary, an invalid result."""

    contract_name = "FaultProofs"
    eip712_name = "Proxima Receipts"

    # --- equivocation -----------------------------------------------------------------------------------

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

    # --- canaries and verdicts ----------------------------------------------------------------------------

    def commit_canary(self, verifier: LocalAccount, commitment: bytes) -> TxReceipt:
        """Commit a canary (see :func:`canary_commitment`); ``verifier`` must be an active verifier."""
        return self._transact(verifier, "commitCanary", _bytes32("commitment", commitment))

    def canary_of(self, commitment: bytes) -> tuple[Address | None, int]:
        """Who committed ``commitment`` and when (block timestamp); ``(None, 0)`` if no one did."""
        verifier, committed_at = self._call("canaryOf", _bytes32("commitment", commitment))
        if int(verifier, 16) == 0:
            return None, 0
        return to_checksum_address(verifier), int(committed_at)

    def verdict_signature(
        self, signer: Signer, job_id: bytes, result_hash: bytes, result_valid: bool = False
    ) -> bytes:
        """A verifier's 65-byte signature over ``Verdict(job_id, result_hash, result_valid)`` in this domain.

        Proofs here need ``result_valid=False`` (the default) from at least :meth:`verdict_quorum` verifiers.
        """
        verdict = Verdict(job_id=job_id, result_hash=result_hash, result_valid=result_valid)
        return verdict.sign(signer, self.domain).signature.to_bytes()

    def prove_canary_fault(
        self,
        finder: LocalAccount,
        receipt: SignedMessage[JobReceipt],
        spec_hash: bytes,
        salt: bytes,
        verdict_signatures: Sequence[bytes | Signature],
        *,
        sort: bool = True,
    ) -> int:
        """Prove a wrong answer to a committed canary; returns the wei slashed from the provider.

        Args:
            finder: Sends the proof and receives the finder's share.
            receipt: The provider's signed receipt for the canary job.
            spec_hash: The committed spec hash (revealed here).
            salt: The committed salt (revealed here).
            verdict_signatures: Verifiers' signatures over ``Verdict(job_id, result_hash, False)``.
            sort: Order them by signer as the contract requires (malformed ones go first, and the contract
                names their index).

        Raises:
            ContractRevertError: ``CanaryNotCommitted``, ``FaultQuorumNotReached``,
                ``FaultVerifierNotActive``, ``FaultAlreadyProven``... with their arguments.
        """
        tx = self.prove_canary_fault_tx(finder, receipt, spec_hash, salt, verdict_signatures, sort=sort)
        return self._slashed(tx, "CanaryFaultProven")

    def prove_canary_fault_tx(
        self,
        finder: LocalAccount,
        receipt: SignedMessage[JobReceipt],
        spec_hash: bytes,
        salt: bytes,
        verdict_signatures: Sequence[bytes | Signature],
        *,
        sort: bool = True,
    ) -> TxReceipt:
        """As :meth:`prove_canary_fault`, returning the transaction receipt."""
        return self._transact(
            finder,
            "proveCanaryFault",
            receipt.message.to_abi(),
            receipt.signature.to_bytes(),
            _bytes32("spec_hash", spec_hash),
            _bytes32("salt", salt),
            self._ordered(receipt.message, verdict_signatures, sort),
        )

    def prove_invalid_result(
        self,
        finder: LocalAccount,
        receipt: SignedMessage[JobReceipt],
        verdict_signatures: Sequence[bytes | Signature],
        *,
        sort: bool = True,
    ) -> int:
        """Prove that a provider returned an invalid result; returns the wei slashed from it.

        Args:
            finder: Sends the proof and receives the finder's share.
            receipt: The provider's signed receipt for the job.
            verdict_signatures: Verifiers' signatures over ``Verdict(job_id, result_hash, False)``.
            sort: Order them by signer as the contract requires.

        Raises:
            ContractRevertError: ``FaultQuorumNotReached``, ``FaultVerifierNotActive``,
                ``FaultInvalidReceiptSignature``, ``FaultAlreadyProven``... with their arguments.
        """
        tx = self.prove_invalid_result_tx(finder, receipt, verdict_signatures, sort=sort)
        return self._slashed(tx, "InvalidResultProven")

    def prove_invalid_result_tx(
        self,
        finder: LocalAccount,
        receipt: SignedMessage[JobReceipt],
        verdict_signatures: Sequence[bytes | Signature],
        *,
        sort: bool = True,
    ) -> TxReceipt:
        """As :meth:`prove_invalid_result`, returning the transaction receipt."""
        return self._transact(
            finder,
            "proveInvalidResult",
            receipt.message.to_abi(),
            receipt.signature.to_bytes(),
            self._ordered(receipt.message, verdict_signatures, sort),
        )

    # --- reads --------------------------------------------------------------------------------------------

    def is_fault_proven(self, provider: str, job_id: bytes) -> bool:
        """Whether any kind of fault (equivocation, canary, invalid result) was proven for this job."""
        return bool(self._call("isFaultProven", provider, job_id))

    def fault_of(self, provider: str, job_id: bytes) -> FaultKind:
        return FaultKind(int(self._call("faultOf", provider, job_id)))

    def verdict_quorum(self) -> int:
        return int(self._call("verdictQuorum"))

    def hash_receipt(self, receipt: JobReceipt) -> bytes:
        return bytes(self._call("hashReceipt", receipt.to_abi()))

    def hash_verdict(self, verdict: Verdict) -> bytes:
        return bytes(self._call("hashVerdict", verdict.to_abi()))

    def parameter(self, name: str) -> int:
        """A deployment parameter, for example ``"faultSlashBps"`` or ``"verdictQuorum"``."""
        return int(self._call(name))

    # --- helpers ------------------------------------------------------------------------------------------

    def _ordered(
        self, receipt: JobReceipt, signatures: Sequence[bytes | Signature], sort: bool
    ) -> list[bytes]:
        raw = [s.to_bytes() if isinstance(s, Signature) else bytes(s) for s in signatures]
        if not sort:
            return raw
        verdict = Verdict(job_id=receipt.job_id, result_hash=receipt.result_hash, result_valid=False)

        def signer_of(signature: bytes) -> int:
            try:
                return int(recover_signer(verdict, self.domain, signature), 16)
            except SignatureError:
                return -1  # malformed: the contract names its index

        return sorted(raw, key=signer_of)

    def _slashed(self, tx: TxReceipt, event: str) -> int:
        [proven] = self.events(tx, event)
        return int(proven.args["slashed"])
