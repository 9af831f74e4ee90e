"""Verification inside the gateway: the policy, the checks, verifier verdicts, evidence on chain, canaries.

The dispatcher (:mod:`proxima.marketplace.gateway.dispatch`) calls this module at three points:

* **every delivered result** is checked before its job succeeds (:func:`check_result_json`): ``matmul`` with
  Freivalds' test (:func:`proxima.sdk.verification.verify_output`, ``freivalds_rounds`` rounds); ``embed``
  has no cheap check and is verified by *redundant runs* on distinct providers whose embeddings must agree
  (:func:`results_agree`, ``embed_redundancy`` or the job's own ``redundancy``);
* **a rejected result** (wrong product, or the odd one out of redundant runs) is evidence against its
  provider: :class:`EvidenceFiler` asks the configured verifiers (``proxima-verify``, through
  :class:`VerifierPool`) to re-check it and sign ``Verdict(jobId, resultHash, false)`` until the chain's
  quorum is met, then files the proof: ``FaultProofs.proveInvalidResult`` for a voucher-paid job,
  ``proveCanaryFault`` for a canary, and for an escrow job ``JobEscrow.disputeResult`` +
  ``resolveDispute`` (verdicts in the escrow's domain; the payer does it once the provider has committed
  its result on chain). This runs in the background and never blocks or fails the job, which has already
  moved on to the next provider;
* **canaries**: after a real matmul job succeeds on provider P, with probability ``canary_rate`` (a
  deterministic draw from the job id, :func:`canary_due`) a verifier issues a canary of the same shape
  (it commits ``keccak256(jobId, specHash, salt)`` on chain first) and the gateway sends it to P like any
  job, paid by voucher and charged to no client. The answer must equal the committed one
  (:func:`proxima.sdk.verification.compare_to_expected`) and pass Freivalds; a wrong answer is proven with
  ``proveCanaryFault``.

Trust: the gateway's own check decides whether *its client* gets a result (it is never charged for a rejected
one); only a quorum of staked verifiers, each re-checking the evidence itself, can get a provider slashed.
Without verifiers a rejected result is still rejected and rerun, and the evidence outcome is ``skipped``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import BaseModel

from proxima.marketplace.errors import MarketConfigError, MarketError
from proxima.sdk.eip712 import Domain, Signature, Verdict, recover_signer
from proxima.sdk.errors import SdkError
from proxima.sdk.jobs import JobResult
from proxima.sdk.types import Address
from proxima.sdk.verification import (
    CheckResult,
    VerificationError,
    compare_embeddings,
    compare_to_expected,
    verify_output,
)
from proxima.sdk.workloads import EmbedOutput, WorkloadSpecError, parse_input, parse_output

__all__ = [
    "CanaryTicket",
    "EvidenceFiler",
    "EvidenceKind",
    "EvidenceOutcome",
    "Judgement",
    "VerdictCollection",
    "VerificationFailedError",
    "VerificationPolicy",
    "Verifier",
    "VerifierPool",
    "canary_due",
    "check_canary",
    "check_json",
    "check_result_json",
    "results_agree",
]

log = logging.getLogger(__name__)

EvidenceKind = Literal["invalid_result", "canary", "escrow"]
"""What a piece of evidence proves: an invalid result of a voucher job, a wrong canary answer, or a wrong
escrow result (dispute)."""

Judgement = Literal["invalid", "valid", "unknown"]
"""What the verifiers said about one result: a quorum signed it invalid, one of them found it valid, or
nothing conclusive came back."""

_DRAW_SCALE: Final = 2.0**64


class VerificationFailedError(MarketError):
    """A result failed its check (internal to the dispatcher; the job moves on).

    Args:
        check: The failed check.
    """

    def __init__(self, check: CheckResult) -> None:
        self.check = check
        super().__init__(f"{check.method} check failed: {check.detail}")


# --- policy -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationPolicy:
    """How results are checked (from ``[verification]`` in the gateway's settings).

    Attributes:
        freivalds_rounds: Freivalds rounds per matmul result.
        embed_redundancy: Providers that run every embed job (a job's own ``redundancy`` wins if higher).
        canary_rate: Share of successful matmul jobs followed by a canary to the same provider (0..1).
        evidence: Whether to file evidence on chain against rejected results.
        verifier_timeout_s: Longest wait for one verifier answer.
        embed_tolerance: Largest absolute difference between two embeddings' elements that still agrees.
        quarantine_s: Seconds a provider whose result was rejected gets no new jobs (0: only its circuit
            breaker and reliability record count the failure).
    """

    freivalds_rounds: int = 16
    embed_redundancy: int = 1
    canary_rate: float = 0.0
    evidence: bool = True
    verifier_timeout_s: float = 30.0
    embed_tolerance: float = 1e-3
    quarantine_s: float = 600.0

    def __post_init__(self) -> None:
        rounds = self.freivalds_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 256:
            raise MarketConfigError(f"VerificationPolicy.freivalds_rounds must be 1..256, got {rounds!r}")
        copies = self.embed_redundancy
        if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 5:
            raise MarketConfigError(f"VerificationPolicy.embed_redundancy must be 1..5, got {copies!r}")
        rate = self.canary_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise MarketConfigError(f"VerificationPolicy.canary_rate must be in 0..1, got {rate!r}")
        for name in ("verifier_timeout_s", "embed_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise MarketConfigError(f"VerificationPolicy.{name} must be a positive number, got {value!r}")
        wait = self.quarantine_s
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < float("inf"):
            raise MarketConfigError(f"VerificationPolicy.quarantine_s must be a number >= 0, got {wait!r}")

    def copies(self, workload: str, requested: int) -> int:
        """How many distinct providers run a job: the job's ``redundancy``, at least ``embed_redundancy``
        for ``embed``."""
        if workload == "embed":
            return max(requested, self.embed_redundancy)
        return requested


def canary_due(job_id: str, rate: float) -> bool:
    """Whether the job ``job_id`` is followed by a canary: ``keccak("proxima-canary:" + id) < rate``.

    Deterministic (anyone can predict it from the job id, as the matching engine's exploration draw), so
    tests and audits can tell which jobs drew one; providers cannot: they never see the gateway's job id
    before they have answered it.
    """
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    draw = keccak(b"proxima-canary:" + job_id.lower().encode("ascii"))
    return int.from_bytes(draw[:8], "big") / _DRAW_SCALE < rate


# --- checks -------------------------------------------------------------------------------------------------


def check_json(check: CheckResult, verify_s: float) -> dict[str, Any]:
    """A check as stored and shown in the job's JSON: ``{method, passed, detail, rounds, verify_ms}``."""
    return {
        "method": check.method,
        "passed": bool(check.passed),
        "detail": check.detail[:1_000],
        "rounds": int(check.rounds),
        "verify_ms": round(verify_s * 1000, 3),
    }


def _parsed(workload: str, inp: Mapping[str, Any], out: Mapping[str, Any]) -> tuple[BaseModel, BaseModel]:
    return parse_input(workload, inp), parse_output(workload, out)


def check_result_json(
    workload: str, inp: Mapping[str, Any], out: Mapping[str, Any], *, rounds: int
) -> CheckResult | None:
    """The workload's own check of a delivered result (blocking: call it from a worker thread).

    Returns:
        The check (``matmul``: Freivalds), or ``None`` when the workload has none (``embed``: redundancy).
        An output that does not fit the input is a failed check, not an error.
    """
    started = time.perf_counter()
    try:
        parsed_in, parsed_out = _parsed(workload, inp, out)
        check = verify_output(workload, parsed_in, parsed_out, rounds=rounds)
    except (VerificationError, WorkloadSpecError) as err:
        method: Any = "freivalds" if workload == "matmul" else "redundant"
        return CheckResult(False, method, f"the result does not fit the job: {err}", 0)
    if check is None:
        return None
    return CheckResult(check.passed, check.method, check.detail, check.rounds, time.perf_counter() - started)


def results_agree(
    workload: str, inp: Mapping[str, Any], x: Mapping[str, Any], y: Mapping[str, Any], *, atol: float
) -> CheckResult:
    """Whether two providers' results of one job agree (blocking).

    ``embed``: :func:`proxima.sdk.verification.compare_embeddings` within ``atol``. ``matmul``: each result
    passed Freivalds' test on its own, which already decides it; they agree.
    """
    if workload == "matmul":
        return CheckResult(True, "redundant", "each result passed Freivalds' test on its own")
    try:
        first = parse_output(workload, x)
        second = parse_output(workload, y)
        if workload == "embed":
            assert isinstance(first, EmbedOutput)
            assert isinstance(second, EmbedOutput)
            return compare_embeddings(first, second, atol=atol)
    except (VerificationError, WorkloadSpecError) as err:
        return CheckResult(False, "redundant", f"the results cannot be compared: {err}")
    return CheckResult(False, "redundant", f"no comparison for workload {workload!r}")


def check_canary(
    inp: Mapping[str, Any], out: Mapping[str, Any], expected: Mapping[str, Any], *, rounds: int
) -> CheckResult:
    """A canary answer against the committed one *and* Freivalds' test (blocking). Fails on either."""
    started = time.perf_counter()
    try:
        parsed_in, parsed_out = _parsed("matmul", inp, out)
        want = parse_output("matmul", expected)
        compared = compare_to_expected("matmul", parsed_out, want)
        freivalds = verify_output("matmul", parsed_in, parsed_out, rounds=rounds)
    except (VerificationError, WorkloadSpecError) as err:
        return CheckResult(False, "canary", f"the answer does not fit the canary: {err}")
    elapsed = time.perf_counter() - started
    if not compared.passed:
        return CheckResult(False, "canary", compared.detail, 0, elapsed)
    if freivalds is not None and not freivalds.passed:
        return CheckResult(False, "canary", f"Freivalds: {freivalds.detail}", freivalds.rounds, elapsed)
    rounds_run = 0 if freivalds is None else freivalds.rounds
    return CheckResult(True, "canary", f"{compared.detail}; Freivalds passed", rounds_run, elapsed)


# --- verifiers ----------------------------------------------------------------------------------------------


class Verifier(Protocol):
    """One ``proxima-verify`` service (:class:`proxima.marketplace.verifier.client.VerifierClient`)."""

    async def verdict(self, evidence: Any) -> Any:
        """The verifier re-checks the evidence and signs a verdict (``SignedVerdict``)."""
        ...

    async def canary(self, request: Any) -> Any:
        """A canary the verifier committed on chain (``Canary``)."""
        ...

    async def aclose(self) -> None:
        """Close its connections."""
        ...


@dataclass(frozen=True)
class VerdictCollection:
    """What the verifiers said about one result.

    Attributes:
        signatures: ``(verifier, signature)`` of each distinct verifier that signed it invalid (checked here:
            the signature recovers to that verifier over ``Verdict(jobId, resultHash, false)`` in the
            domain asked for), in ascending verifier order.
        valid: Verifiers that found the result valid.
        errors: One line per verifier that gave no usable answer.
    """

    signatures: tuple[tuple[Address, Signature], ...] = ()
    valid: tuple[Address, ...] = ()
    errors: tuple[str, ...] = ()

    def judgement(self, quorum: int) -> Judgement:
        """``invalid`` with a quorum of signatures, ``valid`` if any verifier found it valid (and there is no
        quorum against it), else ``unknown``."""
        if len(self.signatures) >= quorum:
            return "invalid"
        if self.valid:
            return "valid"
        return "unknown"


def _raw(value: object, size: int | None = None) -> bytes:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        data = bytes.fromhex(value.removeprefix("0x"))
    else:
        raise ValueError(f"expected bytes or hex, got {type(value).__name__}")
    if size is not None and len(data) != size:
        raise ValueError(f"expected {size} bytes, got {len(data)}")
    return data


class VerifierPool:
    """The gateway's verifiers: verdicts from all of them at once, canaries from the first that answers.

    Args:
        verifiers: Clients of ``proxima-verify`` services (settings ``verification.verifier_urls``).
        timeout: Longest wait for one answer, seconds.
        canary_request_model: The verifier protocol's ``CanaryRequest`` (its ``model_validate`` is called on
            ``{workload, m, k, n, dtype}``); ``None``: the dict itself is sent.
    """

    def __init__(
        self, verifiers: Sequence[Verifier], *, timeout: float = 30.0, canary_request_model: Any = None
    ) -> None:
        self.verifiers = tuple(verifiers)
        self.timeout = timeout
        self.canary_request_model = canary_request_model
        self._next = 0

    def __len__(self) -> int:
        return len(self.verifiers)

    async def aclose(self) -> None:
        """Close every client."""
        for verifier in self.verifiers:
            try:
                await verifier.aclose()
            except Exception as err:  # noqa: BLE001 - closing is best effort
                log.debug("verifier client close failed", extra={"error": str(err)})

    async def verdicts(
        self, evidence: Any, *, domain: Domain, job_id: bytes, result_hash: bytes
    ) -> VerdictCollection:
        """Ask every verifier about ``evidence`` at once; keep the signatures that check out.

        Args:
            evidence: The ``Evidence`` sent to each verifier.
            domain: The EIP-712 domain the verdicts must be signed in (``FaultProofs``, or ``JobEscrow``
                for an escrow dispute).
            job_id: The job id of the provider's receipt (the escrow id for an escrow job).
            result_hash: The receipt's result hash.
        """
        answers = await asyncio.gather(
            *(self._ask(v, evidence) for v in self.verifiers), return_exceptions=True
        )
        invalid = Verdict(job_id=job_id, result_hash=result_hash, result_valid=False)
        signatures: dict[Address, Signature] = {}
        valid: set[Address] = set()
        errors: list[str] = []
        for index, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                if isinstance(answer, asyncio.CancelledError):
                    raise answer
                errors.append(f"verifier {index}: {type(answer).__name__}: {str(answer)[:200]}")
                continue
            try:
                verifier = to_checksum_address(str(answer.verifier))
                if _raw(answer.job_id, 32) != job_id or _raw(answer.result_hash, 32) != result_hash:
                    errors.append(f"verifier {index} ({verifier}) answered about another job or result")
                    continue
                if answer.result_valid:
                    valid.add(verifier)
                    continue
                signature = Signature.from_bytes(_raw(answer.signature, 65))
                signer = recover_signer(invalid, domain, signature)
            except (AttributeError, ValueError, SdkError) as err:
                errors.append(f"verifier {index}: unusable verdict ({err})")
                continue
            if signer != verifier:
                errors.append(f"verifier {index}: the signature is {signer}'s, not {verifier}'s")
                continue
            signatures[verifier] = signature
        ordered = tuple(sorted(signatures.items(), key=lambda item: int(item[0], 16)))
        return VerdictCollection(ordered, tuple(sorted(valid)), tuple(errors))

    async def _ask(self, verifier: Verifier, evidence: Any) -> Any:
        async with asyncio.timeout(self.timeout):
            return await verifier.verdict(evidence)

    async def canary(self, workload: str, m: int, k: int, n: int, dtype: str) -> Any:
        """A canary of this shape from the verifiers, tried in turn (rotating) until one answers.

        Raises:
            MarketError: If none of them issued one (the message has each one's error).
        """
        payload = {"workload": workload, "m": m, "k": k, "n": n, "dtype": dtype}
        model = self.canary_request_model
        request = payload if model is None else model.model_validate(payload)
        errors: list[str] = []
        count = len(self.verifiers)
        start = self._next
        self._next = (self._next + 1) % max(count, 1)
        for offset in range(count):
            verifier = self.verifiers[(start + offset) % count]
            try:
                async with asyncio.timeout(self.timeout):
                    return await verifier.canary(request)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the next verifier may answer
                errors.append(f"{type(err).__name__}: {str(err)[:200]}")
        raise MarketError("no verifier issued a canary: " + ("; ".join(errors) or "no verifier configured"))


# --- evidence -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceOutcome:
    """What became of the evidence against one rejected result.

    Attributes:
        kind: ``invalid_result``, ``canary`` or ``escrow``.
        outcome: ``proven`` (the provider was slashed), ``pending`` (escrow: verdicts kept, the dispute is
            filed once the provider commits its result on chain), ``already_proven``, ``no_quorum`` (too few
            verifiers signed), ``rejected_by_verifiers`` (a verifier found the result valid),
            ``skipped`` (no verifier configured, or evidence turned off) or ``error``.
        detail: Human-readable.
        tx: The proof's transaction hash, when one was sent.
        slashed_wei: Stake the provider lost.
        verdicts: Verifier signatures collected.
        quorum: Signatures the chain needs.
    """

    kind: EvidenceKind
    outcome: str
    detail: str = ""
    tx: str | None = None
    slashed_wei: int | None = None
    verdicts: int = 0
    quorum: int = 0

    def as_json(self) -> dict[str, Any]:
        """As stored on the attempt (amounts as decimal strings)."""
        return {
            "kind": self.kind,
            "outcome": self.outcome,
            "detail": self.detail[:1_000],
            "tx": self.tx,
            "slashed_wei": None if self.slashed_wei is None else str(self.slashed_wei),
            "verdicts": self.verdicts,
            "quorum": self.quorum,
        }


@dataclass(frozen=True)
class CanaryTicket:
    """What a canary's proof needs besides the receipt: the committed spec hash and salt."""

    spec_hash: bytes
    salt: bytes


class EscrowDisputes(Protocol):
    """The payer's side of an escrow dispute (:class:`proxima.marketplace.gateway.payer.Payer`)."""

    def escrow_verdicts(self, escrow_id: str, signatures: Sequence[tuple[Address, Signature]]) -> None:
        """Keep the verdict signatures for the dispute."""
        ...

    def dispute_escrow(self, escrow_id: str) -> Any:
        """Dispute and resolve now if the provider committed its result (blocking); an ``EscrowAction``
        or ``None`` when it is not time yet."""
        ...


EvidenceBuilder = Callable[..., Any]
"""Builds the verifier protocol's ``Evidence`` from keyword arguments (its model's ``model_validate``)."""


@dataclass
class EvidenceFiler:
    """Puts evidence against rejected results on chain (from the dispatcher's background tasks).

    Args:
        contracts: The deployment's bindings (``faults``, ``escrow``).
        account: The gateway operator's key: it sends the proofs and receives the finder's share.
        verifiers: The verifier pool (``None``: no verifier configured, evidence is ``skipped``).
        evidence_model: The verifier protocol's ``Evidence`` model (``model_validate`` is called on a dict;
            ``None``: the dict itself is sent).
        escrow: The payer (escrow disputes).
        enabled: ``verification.evidence``.
        faults_domain: EIP-712 domain of ``FaultProofs`` verdicts.
        escrow_domain: EIP-712 domain of ``JobEscrow`` verdicts.
    """

    contracts: Any
    account: LocalAccount
    verifiers: VerifierPool | None
    evidence_model: Any
    escrow: EscrowDisputes | None
    faults_domain: Domain
    escrow_domain: Domain
    enabled: bool = True
    _quorums: dict[str, int] = field(default_factory=dict)

    def quorum(self, target: Literal["faults", "escrow"]) -> int:
        """The chain's verdict quorum (read once, blocking)."""
        if target not in self._quorums:
            if target == "faults":
                self._quorums[target] = int(self.contracts.faults.verdict_quorum())
            else:
                self._quorums[target] = int(self.contracts.escrow.parameter("verdictQuorum"))
        return self._quorums[target]

    def evidence(
        self,
        *,
        target: Literal["faults", "escrow"],
        workload: str,
        inp: Mapping[str, Any],
        result: JobResult,
        canary: CanaryTicket | None = None,
    ) -> Any:
        """The ``Evidence`` a verifier is asked to judge."""
        dumped = result.model_dump(mode="json")
        payload: dict[str, Any] = {
            "target": target,
            "workload": workload,
            "input": dict(inp),
            "output": dumped["output"],
            "receipt": dumped["receipt"],
            "receipt_signature": dumped["signature"],
        }
        if canary is not None:
            payload["canary"] = {"spec_hash": "0x" + canary.spec_hash.hex(), "salt": "0x" + canary.salt.hex()}
        if self.evidence_model is None:
            return payload
        return self.evidence_model.model_validate(payload)

    async def collect(
        self,
        *,
        target: Literal["faults", "escrow"],
        workload: str,
        inp: Mapping[str, Any],
        result: JobResult,
        canary: CanaryTicket | None = None,
    ) -> tuple[VerdictCollection, int]:
        """Ask the verifiers about a result: ``(what they said, the chain's quorum)``.

        Raises:
            MarketError: If no verifier is configured.
        """
        if self.verifiers is None or not len(self.verifiers):
            raise MarketError("no verifier configured")
        quorum = await asyncio.to_thread(self.quorum, target)
        domain = self.escrow_domain if target == "escrow" else self.faults_domain
        evidence = self.evidence(target=target, workload=workload, inp=inp, result=result, canary=canary)
        collection = await self.verifiers.verdicts(
            evidence,
            domain=domain,
            job_id=bytes(result.receipt.job_id),
            result_hash=result.receipt.result_hash,
        )
        return collection, quorum

    async def file(
        self,
        kind: EvidenceKind,
        *,
        workload: str,
        inp: Mapping[str, Any],
        result: JobResult,
        canary: CanaryTicket | None = None,
        escrow_id: str | None = None,
        collected: tuple[VerdictCollection, int] | None = None,
    ) -> EvidenceOutcome:
        """File the evidence against one rejected result; never raises (the outcome says what happened).

        Args:
            kind: What to prove.
            workload: The job's workload.
            inp: Its input.
            result: The provider's result with its signed receipt.
            canary: For a canary: the committed spec hash and salt.
            escrow_id: For an escrow job: the escrow (its id is the receipt's job id).
            collected: Verdicts already collected for this result (a redundant run's judgement).
        """
        if not self.enabled:
            return EvidenceOutcome(kind, "skipped", "evidence is turned off (verification.evidence)")
        if collected is None and (self.verifiers is None or not len(self.verifiers)):
            return EvidenceOutcome(kind, "skipped", "no verifier configured (verification.verifier_urls)")
        target: Literal["faults", "escrow"] = "escrow" if kind == "escrow" else "faults"
        try:
            if collected is None:
                collected = await self.collect(
                    target=target, workload=workload, inp=inp, result=result, canary=canary
                )
            collection, quorum = collected
            count = len(collection.signatures)
            if count < quorum:
                outcome = "rejected_by_verifiers" if collection.valid else "no_quorum"
                problems = "; ".join(collection.errors)
                detail = (
                    f"{count} of {quorum} verdict signature(s)"
                    + (f"; found valid by {', '.join(collection.valid)}" if collection.valid else "")
                    + (f"; {problems}" if problems else "")
                )
                return EvidenceOutcome(kind, outcome, detail, verdicts=count, quorum=quorum)
            return await asyncio.to_thread(self._prove, kind, result, collection, quorum, canary, escrow_id)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - evidence must never take the dispatcher down
            return EvidenceOutcome(kind, "error", f"{type(err).__name__}: {str(err)[:500]}")

    def _prove(
        self,
        kind: EvidenceKind,
        result: JobResult,
        collection: VerdictCollection,
        quorum: int,
        canary: CanaryTicket | None,
        escrow_id: str | None,
    ) -> EvidenceOutcome:
        count = len(collection.signatures)
        if kind == "escrow":
            if self.escrow is None or escrow_id is None:
                return EvidenceOutcome(kind, "error", "no escrow to dispute", verdicts=count, quorum=quorum)
            self.escrow.escrow_verdicts(escrow_id, collection.signatures)
            action = self.escrow.dispute_escrow(escrow_id)
            if action is None:
                return EvidenceOutcome(
                    kind,
                    "pending",
                    "verdicts kept; disputed once the provider commits its result on chain (duty loop)",
                    verdicts=count,
                    quorum=quorum,
                )
            slashed = _int_or_none(getattr(action, "detail", ""))
            outcome = "proven" if action.action == "disputed" else action.action
            return EvidenceOutcome(
                kind,
                outcome,
                f"escrow {escrow_id}: {action.action}",
                getattr(action, "tx", None),
                slashed,
                count,
                quorum,
            )
        faults = self.contracts.faults
        receipt = result.signed_receipt()
        provider = receipt.message.provider
        if faults.is_fault_proven(provider, bytes(receipt.message.job_id)):
            return EvidenceOutcome(
                kind, "already_proven", "a fault is proven for this job already", None, None, count, quorum
            )
        signatures = [sig for _, sig in collection.signatures]
        if kind == "canary":
            assert canary is not None
            tx = faults.prove_canary_fault_tx(
                self.account, receipt, canary.spec_hash, canary.salt, signatures
            )
            [event] = faults.events(tx, "CanaryFaultProven")
        else:
            tx = faults.prove_invalid_result_tx(self.account, receipt, signatures)
            [event] = faults.events(tx, "InvalidResultProven")
        slashed = int(event.args["slashed"])
        tx_hash = "0x" + bytes(tx["transactionHash"]).hex()
        return EvidenceOutcome(
            kind, "proven", f"{provider} slashed {slashed} wei", tx_hash, slashed, count, quorum
        )


def _int_or_none(text: object) -> int | None:
    if isinstance(text, str) and text.isdigit():
        return int(text)
    return None
