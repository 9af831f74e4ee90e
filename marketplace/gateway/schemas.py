"""Request and response models of the gateway's HTTP API, and its error type.

Requests are strict (a string is not a number, unknown fields are refused) so that what the OpenAPI document
says is exactly what is accepted. Amounts in wei travel as decimal strings (JSON numbers lose precision above
2**53). Every error answer is ``{"error": {"code", "message", "param", "type"}}``: that is also OpenAI's error
shape, so the OpenAI client libraries read the errors of ``/v1/embeddings`` as their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from proxima.marketplace.errors import MarketError
from proxima.sdk.offers import OfferCapacity, OfferCoordinates, OfferHardware, OfferMeasurement, SignedOffer
from proxima.sdk.workloads import EMBED_DIM, EMBED_MAX_CHARS, EMBED_MAX_TEXTS, EMBED_MODEL

__all__ = [
    "MAX_JOB_LIST",
    "AccountPublic",
    "ApiError",
    "AttemptPublic",
    "ChainRecordPublic",
    "Constraints",
    "EmbeddingCreate",
    "EmbeddingData",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "ErrorDetail",
    "ErrorResponse",
    "EvidencePublic",
    "GatewayRecordPublic",
    "HealthPublic",
    "JobCreate",
    "JobLinks",
    "JobList",
    "JobPublic",
    "OfferList",
    "OfferPublic",
    "OfferWorkloadPublic",
    "PlacementPublic",
    "ProviderPublic",
    "TimingPublic",
    "VerificationPublic",
    "WeiText",
    "error_body",
    "error_type",
    "offer_public",
]

MAX_JOB_LIST: Final = 200
"""Most jobs one ``GET /v1/jobs`` returns."""

_UINT256_MAX: Final = 2**256 - 1


class ApiError(MarketError):
    """An error answered to an HTTP client: status, a stable code and a message saying what to do.

    Args:
        status: HTTP status code.
        code: Machine-readable code (``"budget_exceeded"``).
        message: Human-readable explanation.
        param: The request field at fault, dotted (``"input.m"``), if any.
        headers: Extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        super().__init__(f"{status} {code}: {message}")


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 402:
        return "insufficient_quota"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The JSON of an error answer: ``{"error": {"code", "message", "param", "type"}}``."""
    detail = ErrorDetail(code=code, message=message, param=param, type=error_type(status))
    return {"error": detail.model_dump()}


def _wei_text(value: str) -> int:
    number = int(value)
    if number > _UINT256_MAX:
        raise ValueError("must be at most 2**256 - 1")
    return number


WeiText = Annotated[
    str,
    StringConstraints(pattern=r"^(0|[1-9][0-9]{0,77})$"),
    AfterValidator(_wei_text),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(0|[1-9][0-9]{0,77})$", "examples": ["1000000000000"]}),
]
"""An amount in wei written as a decimal string (read as an int)."""

WeiOut = Annotated[int, PlainSerializer(str, return_type=str), WithJsonSchema({"type": "string"})]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
GpuModel = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x20-\x7e]+$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9._/-]{0,127})?$")]
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- errors -----------------------------------------------------------------------------------------------


class ErrorDetail(_Response):
    """What went wrong (also OpenAI's error object: ``message``, ``type``, ``param``, ``code``).

    Attributes:
        code: Stable machine-readable code (``invalid_request``, ``unauthenticated``, ``budget_exceeded``,
            ``rate_limited``, ``not_found``, ...).
        message: What is wrong and what to do.
        param: The field at fault, dotted, when one is.
        type: The error's class in OpenAI's terms (``invalid_request_error``, ``authentication_error``,
            ``insufficient_quota``, ``rate_limit_error``, ``api_error``).
    """

    code: str
    message: str
    param: str | None = None
    type: str = "invalid_request_error"


class ErrorResponse(_Response):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorDetail


# --- jobs -------------------------------------------------------------------------------------------------


class Constraints(_Request):
    """Hard constraints on where a job may run.

    Attributes:
        gpu_models: Any of these GPU models (empty: any machine, CPU-only included).
        min_gpu_memory_bytes: Memory of each GPU at least.
        require_gpu: Only machines with a GPU.
        countries: ISO 3166-1 alpha-2 codes the job may run in (empty: anywhere). Data residency: never
            violated; providers that do not disclose their country never match a non-empty list.
        regions: Market regions the job may run in (empty: any).
    """

    gpu_models: Annotated[list[GpuModel], Field(max_length=16)] = Field(default_factory=list)
    min_gpu_memory_bytes: Annotated[int, Field(ge=0, le=2**50)] = 0
    require_gpu: bool = False
    countries: Annotated[list[Country], Field(max_length=64)] = Field(default_factory=list)
    regions: Annotated[list[Region], Field(max_length=64)] = Field(default_factory=list)


class JobCreate(_Request):
    """A job to run.

    Attributes:
        workload: ``matmul`` or ``embed``.
        input: The workload's input (``sdk.workloads``): matmul ``{seed, m, k, n, dtype}`` or ``{a, b}``
            tensors; embed ``{model, texts}``.
        model: Model to run (embed: must equal ``input.model`` when given).
        constraints: Hardware and residency constraints.
        max_price_wei: Most to pay one provider for this job (decimal string).
        budget_wei: Most to pay for this job in total, all redundant copies together (decimal string).
        latency_target_ms: Preferred completion time; providers expected to miss it rank after the others.
        redundancy: Distinct providers that each run the job (1 to 5).
        min_reliability: Lowest acceptable provider reliability (0 to 1).
        cache: Serve an identical earlier result from the gateway's cache (deterministic workloads).
        payment: ``voucher`` (cumulative vouchers, cheap) or ``escrow`` (an on-chain escrow per job).
        idempotency_key: Submitting again with the same key returns the first job instead of a new one.
    """

    workload: Literal["matmul", "embed"]
    input: dict[str, Any] = Field(
        description="The workload input; see the matmul and embed schemas in the documentation.",
        examples=[{"seed": 1, "m": 64, "k": 64, "n": 64, "dtype": "float32"}],
    )
    model: ModelName = ""
    constraints: Constraints = Field(default_factory=Constraints)
    max_price_wei: WeiText | None = None
    budget_wei: WeiText | None = None
    latency_target_ms: Annotated[float, Field(gt=0, le=3_600_000)] | None = None
    redundancy: Annotated[int, Field(ge=1, le=5)] = 1
    min_reliability: Annotated[float, Field(ge=0, le=1)] = 0.0
    cache: bool = True
    payment: Literal["voucher", "escrow"] = "voucher"
    idempotency_key: IdempotencyKey | None = None


class TimingPublic(_Response):
    """Where a job's time went, in milliseconds (null: that phase did not happen)."""

    match: float | None = None
    dispatch: float | None = None
    queue: float | None = None
    compute: float | None = None
    verify: float | None = None
    settle: float | None = None
    total: float | None = None


class VerificationPublic(_Response):
    """How a result was checked before the job succeeded (or why it was rejected).

    Attributes:
        method: ``freivalds`` (matmul), ``redundant`` (results of distinct providers compared), ``canary``
            (compared with an answer committed in advance), ``none`` (no check exists for this workload at
            redundancy 1: signature and shape only).
        passed: Whether the result passed.
        detail: What was checked, or what failed and by how much.
        rounds: Freivalds rounds run.
        verify_ms: Time the check took here.
    """

    method: str
    passed: bool
    detail: str
    rounds: int = 0
    verify_ms: float = 0.0


class EvidencePublic(_Response):
    """Evidence filed on chain against a rejected result.

    Attributes:
        kind: ``invalid_result`` (voucher job), ``canary`` or ``escrow`` (dispute).
        outcome: ``proven`` (the provider was slashed), ``pending``, ``already_proven``, ``no_quorum``,
            ``rejected_by_verifiers``, ``skipped`` (no verifier configured) or ``error``.
        detail: Human-readable.
        tx: The proof's transaction hash.
        slashed_wei: Stake the provider lost.
    """

    kind: str
    outcome: str
    detail: str = ""
    tx: str | None = None
    slashed_wei: WeiOut | None = None


class AttemptPublic(_Response):
    """One provider's try at a job.

    Attributes:
        n: 1 for the first attempt, then 2, 3...
        provider: The provider.
        region: Its region.
        job_id: The job id sent to it.
        payment: ``voucher`` or ``escrow``.
        price_wei: What it would be paid for a delivered result.
        started_at: Unix seconds.
        ended_at: Unix seconds (null while running).
        outcome: ``running``, ``succeeded``, ``failed``, ``rejected`` (its result failed verification; the
            client is not charged for it) or ``cancelled``.
        error: The error, for a failed or rejected attempt (``verification_failed`` with the check's detail).
        verification: The check of its result.
        evidence: What was filed on chain against a rejected result.
    """

    n: int
    provider: str
    region: str
    job_id: str
    payment: str
    price_wei: WeiOut
    started_at: float
    ended_at: float | None = None
    outcome: str
    error: ErrorDetail | None = None
    verification: VerificationPublic | None = None
    evidence: EvidencePublic | None = None


class PlacementPublic(_Response):
    """Where the matching engine put the job and why.

    Attributes:
        providers: The chosen providers (one per redundant copy).
        backups: Ranked backups, tried in this order when a chosen provider fails.
        explanation: The engine's explanation: weights, each factor's contribution, filters.
    """

    providers: list[str]
    backups: list[str]
    explanation: dict[str, Any]


class JobLinks(_Response):
    """Where to follow a job."""

    self: str
    events: str
    websocket: str


class JobPublic(_Response):
    """A job as the client sees it.

    Attributes:
        id: The job id.
        client: Who submitted it.
        status: ``queued``, ``placed``, ``running``, ``succeeded``, ``failed`` or ``cancelled``.
        workload: The workload.
        payment: ``voucher`` or ``escrow``.
        created_at: Unix seconds.
        updated_at: Unix seconds.
        placement: Where it runs and why (null until placed).
        attempts: Every provider tried, in order.
        provider: The provider that delivered the result.
        result: The workload output (null until succeeded; left out of job lists).
        receipt: The provider's signed receipt.
        timing_ms: Time per phase.
        verification: How the returned result was checked.
        price_wei: The agreed price.
        charged_wei: What the client was charged (only for a delivered result).
        error: Why it failed.
        cached: Served from the result cache.
        links: URLs of the job, its SSE events and its websocket.
    """

    id: str
    client: str
    status: str
    workload: str
    payment: str
    created_at: float
    updated_at: float
    placement: PlacementPublic | None = None
    attempts: list[AttemptPublic] = Field(default_factory=list)
    provider: str | None = None
    result: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None
    timing_ms: TimingPublic = Field(default_factory=TimingPublic)
    verification: VerificationPublic | None = None
    price_wei: WeiOut | None = None
    charged_wei: WeiOut | None = None
    error: ErrorDetail | None = None
    cached: bool = False
    links: JobLinks


class JobList(_Response):
    """The client's jobs, newest first (results left out: fetch a job for its result)."""

    data: list[JobPublic]


# --- market -----------------------------------------------------------------------------------------------


class OfferWorkloadPublic(_Response):
    """A workload an offer serves."""

    name: str
    models: list[str]
    unit_price_wei: WeiOut


class OfferPublic(_Response):
    """A provider's live signed offer."""

    provider: str
    peer_id: str
    addrs: list[str]
    region: str
    country: str
    hardware: OfferHardware
    measured: OfferMeasurement
    workloads: list[OfferWorkloadPublic]
    coordinates: OfferCoordinates
    capacity: OfferCapacity
    issued_at: int
    expires_at: int
    seq: int
    signature: str


class OfferList(_Response):
    """Live offers, by provider address."""

    data: list[OfferPublic]


class ChainRecordPublic(_Response):
    """What the chain says about a provider."""

    stake_wei: WeiOut
    jobs_completed: int
    jobs_failed: int
    disputes_lost: int
    total_slashed_wei: WeiOut
    attested_flops: int
    verified_flops: int
    report_passes: int
    report_failures: int


class GatewayRecordPublic(_Response):
    """This gateway's own experience of a provider."""

    observed_successes: int
    observed_failures: int
    excluded: bool = Field(description="Its circuit breaker is open: no new jobs go to it for now.")
    measured_rtt_ms: float | None = None


class ProviderPublic(_Response):
    """Everything public about a provider, with the estimates the matching engine plans with.

    Attributes:
        address: The provider.
        offer: Its live offer (null when it has none).
        chain: Its on-chain record (null when never read).
        reliability: Posterior probability that its next job succeeds.
        verified_throughput_flops: FLOP/s the engine plans with (never above claim or attestation).
        gateway: This gateway's own record.
    """

    address: str
    offer: OfferPublic | None = None
    chain: ChainRecordPublic | None = None
    reliability: float | None = None
    verified_throughput_flops: float | None = None
    gateway: GatewayRecordPublic


# --- accounts and health ----------------------------------------------------------------------------------


class AccountPublic(_Response):
    """The calling client's budget and spend (wei, decimal strings)."""

    address: str
    budget_wei: WeiOut
    spent_wei: WeiOut
    reserved_wei: WeiOut
    available_wei: WeiOut
    api_keys: int


class HealthPublic(_Response):
    """Liveness and what the gateway sees of the market."""

    status: Literal["ok", "degraded"]
    offers: int
    unfinished_jobs: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


# --- embeddings (OpenAI-compatible) -----------------------------------------------------------------------

_EmbedText = Annotated[str, StringConstraints(min_length=1, max_length=EMBED_MAX_CHARS)]


class EmbeddingCreate(BaseModel):
    """OpenAI's embeddings request.

    Attributes:
        input: One text or a list of 1 to 256 texts (each 1 to 4096 characters). Token arrays are not
            accepted.
        model: ``all-MiniLM-L6-v2``.
        encoding_format: ``float`` (lists of numbers) or ``base64`` (little-endian float32 bytes).
        dimensions: 384 when given (the model's size; others are refused).
        user: An end-user id (accepted, not used).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    input: _EmbedText | Annotated[list[_EmbedText], Field(min_length=1, max_length=EMBED_MAX_TEXTS)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(examples=[EMBED_MODEL])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=EMBED_DIM, le=EMBED_DIM)] | None = None
    user: Annotated[str, StringConstraints(max_length=256)] | None = None


class EmbeddingData(_Response):
    """One embedding."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Response):
    """Tokens read."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(_Response):
    """OpenAI's embeddings response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


def offer_public(signed: SignedOffer) -> OfferPublic:
    """The API view of a signed offer."""
    offer = signed.offer
    return OfferPublic(
        provider=offer.provider,
        peer_id=offer.peer_id,
        addrs=list(offer.addrs),
        region=offer.region,
        country=offer.country,
        hardware=offer.hardware,
        measured=offer.measured,
        workloads=[
            OfferWorkloadPublic(name=w.name, models=list(w.models), unit_price_wei=w.unit_price_wei)
            for w in offer.workloads
        ],
        coordinates=offer.coordinates,
        capacity=offer.capacity,
        issued_at=offer.issued_at,
        expires_at=offer.expires_at,
        seq=offer.seq,
        signature=signed.signature,
    )
