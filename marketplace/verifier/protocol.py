"""Wire models of the verifier's HTTP API (``proxima-verify``): canaries, evidence, verdicts, info.

Bytes travel as ``0x``-prefixed hex, addresses EIP-55 checksummed, wei amounts as decimal strings, a job
receipt as its EIP-712 typed-data JSON (camelCase keys, as in :class:`proxima.sdk.jobs.JobResult`). Every
model forbids unknown fields and is strict about types.

* ``POST /v1/canaries``: :class:`CanaryRequest` -> :class:`Canary` (committed on chain before the answer);
* ``POST /v1/verdicts``: :class:`Evidence` -> :class:`SignedVerdict` (the verifier re-checks and signs);
* ``GET /v1/info``: :class:`VerifierInfo`; ``GET /v1/health``: :class:`Health`.

Errors are ``{"error": {"code", "message", "param", "type"}}`` with a 4xx status naming what is wrong, 503
when the verifier cannot decide now (chain unreachable, embedding model unavailable).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from proxima.sdk.jobs import Bytes32Hex, SignatureHex, WireAddress, WireJobReceipt
from proxima.sdk.units import UINT256_MAX
from proxima.sdk.workloads import MATMUL_MAX_DIM, MatmulInput, TensorDtype, validate_payload

__all__ = [
    "Canary",
    "CanaryRequest",
    "CanaryReveal",
    "ErrorBody",
    "ErrorDetail",
    "Evidence",
    "Health",
    "SignedVerdict",
    "VerdictTarget",
    "VerifierInfo",
    "WeiText",
]

VerdictTarget = Literal["faults", "escrow"]
"""The contract a verdict is signed for: ``FaultProofs`` (canary and invalid-result proofs) or ``JobEscrow``
(escrow disputes)."""


def _wei(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an amount in wei as a decimal string")
    return value


WeiText = Annotated[
    int,
    BeforeValidator(_wei),
    Field(ge=0, le=UINT256_MAX),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
]
"""An amount in wei; a decimal string in JSON."""

_Dim = Annotated[int, Field(ge=1, le=MATMUL_MAX_DIM)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class CanaryRequest(_Model):
    """Ask for a canary: a matmul job of this shape whose answer the verifier commits on chain first.

    Attributes:
        workload: Only ``"matmul"`` has canaries.
        m: Rows of ``A``.
        k: Columns of ``A`` and rows of ``B``.
        n: Columns of ``B``.
        dtype: Element type.
    """

    workload: Literal["matmul"] = "matmul"
    m: _Dim
    k: _Dim
    n: _Dim
    dtype: TensorDtype = "float32"

    @model_validator(mode="after")
    def _fits_a_job(self) -> CanaryRequest:
        # The same element and output bounds a real matmul job has (the message says which is exceeded).
        shape = {"seed": 0, "m": self.m, "k": self.k, "n": self.n, "dtype": self.dtype}
        validate_payload(MatmulInput, shape, "canary shape")
        return self

    @property
    def flops(self) -> int:
        """``2 m k n``."""
        return 2 * self.m * self.k * self.n


class Canary(_Model):
    """A canary the verifier issued and committed on chain.

    Send ``input`` as an ordinary matmul job with id ``job_id`` to the provider; compare its answer with
    ``expected`` (:func:`proxima.sdk.verification.compare_to_expected`). If it is wrong, ``spec_hash`` and
    ``salt`` open ``commitment`` in ``FaultProofs.proveCanaryFault``.

    Attributes:
        job_id: The job id to use (32 random bytes).
        workload: ``"matmul"``.
        input: The seeded matmul input (``seed``, ``m``, ``k``, ``n``, ``dtype``): like any client's job.
        spec_hash: :func:`proxima.sdk.workloads.spec_hash` of the input.
        salt: 32 random bytes.
        commitment: ``keccak256(abi.encode(job_id, spec_hash, salt))``, committed by ``verifier``.
        verifier: The verifier's address.
        expected: The answer (``MatmulOutput`` JSON).
        tx: The commitment's transaction hash.
        committed_at: The commitment's block time (unix seconds).
    """

    job_id: Bytes32Hex
    workload: Literal["matmul"] = "matmul"
    input: dict[str, Any]
    spec_hash: Bytes32Hex
    salt: Bytes32Hex
    commitment: Bytes32Hex
    verifier: WireAddress
    expected: dict[str, Any]
    tx: str
    committed_at: int = Field(ge=0)


class CanaryReveal(_Model):
    """The opening of a canary's commitment, sent with evidence about a canary job."""

    spec_hash: Bytes32Hex
    salt: Bytes32Hex


class Evidence(_Model):
    """A provider's result and signed receipt, for the verifier to judge.

    Attributes:
        target: ``"faults"``: the verdict is for ``FaultProofs`` (canary or invalid-result proof; the
            receipt's job id is the job id); ``"escrow"``: for ``JobEscrow.resolveDispute`` (the receipt's
            job id is the escrow id).
        workload: ``"matmul"`` or ``"embed"``.
        input: The job's input.
        output: The provider's output.
        receipt: The provider's receipt (typed-data JSON, camelCase keys).
        receipt_signature: The provider's signature over it in the ``FaultProofs`` domain.
        canary: For a canary job: the commitment's opening (the verifier compares with the answer it stored).
    """

    target: VerdictTarget
    workload: Annotated[str, Field(min_length=1, max_length=64)]
    input: dict[str, Any]
    output: dict[str, Any]
    receipt: WireJobReceipt
    receipt_signature: SignatureHex
    canary: CanaryReveal | None = None


class SignedVerdict(_Model):
    """The verifier's decision on one result, signed.

    Attributes:
        job_id: The receipt's job id.
        result_hash: The receipt's result hash.
        result_valid: Whether the result is correct.
        verifier: The signer.
        signature: EIP-712 signature over ``Verdict(job_id, result_hash, result_valid)`` in the target's
            domain (``FaultProofs`` "Proxima Receipts" or ``JobEscrow``).
        target: The domain's contract.
        method: How it was decided (``freivalds``, ``canary``, ``recompute``).
        detail: What was checked, or what is wrong and by how much.
    """

    job_id: Bytes32Hex
    result_hash: Bytes32Hex
    result_valid: bool
    verifier: WireAddress
    signature: SignatureHex
    target: VerdictTarget
    method: str
    detail: str


class VerifierInfo(_Model):
    """Who the verifier is and what it can do.

    Attributes:
        address: Its address (the signer of its verdicts and the committer of its canaries).
        chain_id: The chain.
        fault_proofs: The ``FaultProofs`` contract (verdict domain ``"faults"``).
        escrow: The ``JobEscrow`` contract (verdict domain ``"escrow"``).
        quorum: Verdicts ``FaultProofs`` needs for a proof.
        escrow_quorum: Verdicts ``JobEscrow`` needs to resolve a dispute.
        stake: Its stake in wei.
        active: Whether it is an active staked verifier (its verdicts count on chain).
        max_canary_flops: Largest canary it issues (``2 m k n``).
        freivalds_rounds: Rounds of its Freivalds checks.
        embed_recompute: Whether it can recompute embeddings (judge embed results).
    """

    address: WireAddress
    chain_id: int
    fault_proofs: WireAddress
    escrow: WireAddress
    quorum: int
    escrow_quorum: int
    stake: WeiText
    active: bool
    max_canary_flops: int
    freivalds_rounds: int
    embed_recompute: bool


class Health(_Model):
    """Liveness: ``ok`` and what the verifier is doing."""

    status: Literal["ok"] = "ok"
    address: WireAddress
    canaries_issued: int
    verdicts_signed: int
    duty_rounds: int


class ErrorDetail(_Model):
    """One error: ``code`` (machine), ``message`` (names what is wrong), ``param`` (the field), ``type``."""

    code: str
    message: str
    param: str | None = None
    type: str


class ErrorBody(_Model):
    """Every error answer."""

    error: ErrorDetail
