"""The values the client library takes and gives: job specs, placements, timings, outcomes, accounts.

A :class:`JobSpec` is the body of ``POST /v1/jobs`` (the gateway's ``JobCreate``) as a typed, validated
value; the views (:class:`Placement`, :class:`Timing`, :class:`OfferInfo`, :class:`AccountInfo`) are read from
the job and market JSON both modes produce (the gateway's ``JobPublic`` / ``OfferPublic``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxima.sdk._client_errors import ClientError, InvalidSpecError
from proxima.sdk.workloads import (
    EMBED_MODEL,
    WorkloadSpecError,
    billing_units,
    parse_input,
)

if TYPE_CHECKING:
    from proxima.sdk.verification import CheckResult

__all__ = [
    "AccountInfo",
    "Constraints",
    "DepositInfo",
    "JobOutcome",
    "JobSpec",
    "JobSpecInput",
    "OfferInfo",
    "Placement",
    "Timing",
]

_UINT256_MAX = 2**256 - 1
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Constraints(_Spec):
    """Hard constraints on where a job may run (never violated by a placement or a failover).

    Attributes:
        gpu_models: Any of these GPU models (empty: any machine, CPU-only included).
        min_gpu_memory_bytes: Memory of each GPU at least.
        require_gpu: Only machines with a GPU.
        countries: ISO 3166-1 alpha-2 codes the job may run in (empty: anywhere).
        regions: Market regions the job may run in (empty: any).
    """

    gpu_models: tuple[str, ...] = ()
    min_gpu_memory_bytes: int = Field(default=0, ge=0, le=2**50)
    require_gpu: bool = False
    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for country in value:
            if not _COUNTRY.match(country):
                raise ValueError(f"{country!r} is not an ISO 3166-1 alpha-2 code (two capital letters)")
        return value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            if not _REGION.match(region):
                raise ValueError(f"{region!r} is not a region name (lowercase letters, digits, dashes)")
        return value


class JobSpec(_Spec):
    """One job to run: the workload, its input, and the client's constraints and price limits.

    Build one with :meth:`matmul` or :meth:`embed`, or from a mapping with the same fields as the gateway's
    ``POST /v1/jobs`` body (amounts as ints or decimal strings).

    Attributes:
        workload: ``"matmul"`` or ``"embed"``.
        input: The workload's input (matmul ``{seed, m, k, n, dtype}`` or ``{a, b}``; embed
            ``{model, texts}``), checked against the workload's schema when the spec is made.
        model: The model (embed: must equal ``input.model`` when given).
        constraints: Hardware and residency constraints.
        max_price_wei: Most to pay one provider for this job.
        budget_wei: Most to pay for this job in total.
        latency_target_ms: Preferred completion time; providers expected to miss it rank after the others.
        redundancy: Distinct providers that each run the job.
        min_reliability: Lowest acceptable provider reliability (0 to 1).
        cache: Let the gateway answer from its verified result cache (charged nothing).
        payment: ``"voucher"`` (cumulative vouchers) or ``"escrow"`` (an on-chain escrow per job).
        idempotency_key: Submitting again with the same key returns the first job (one is generated per
            submission when not given, so that retries never run a job twice).
    """

    workload: Literal["matmul", "embed"]
    input: dict[str, Any]
    model: str = ""
    constraints: Constraints = Field(default_factory=Constraints)
    max_price_wei: int | None = Field(default=None, ge=0, le=_UINT256_MAX)
    budget_wei: int | None = Field(default=None, ge=0, le=_UINT256_MAX)
    latency_target_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    redundancy: int = Field(default=1, ge=1, le=5)
    min_reliability: float = Field(default=0.0, ge=0, le=1)
    cache: bool = True
    payment: Literal["voucher", "escrow"] = "voucher"
    idempotency_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")

    @field_validator("max_price_wei", "budget_wei", mode="before")
    @classmethod
    def _wei(cls, value: Any) -> Any:
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return value

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", exclude_none=True)
        return value

    @classmethod
    def matmul(
        cls, m: int, k: int | None = None, n: int | None = None, *, seed: int = 0, dtype: str = "float32",
        **options: Any,
    ) -> JobSpec:  # fmt: skip
        """A seeded matrix product ``A (m x k) @ B (k x n)`` (the node draws A and B from ``seed``).

        Args:
            m: Rows of A.
            k: Columns of A (default ``m``).
            n: Columns of B (default ``m``).
            seed: Seed of the operands.
            dtype: ``"float32"`` or ``"float64"``.
            options: Other :class:`JobSpec` fields (``max_price_wei=...``, ``constraints=...``).

        Raises:
            InvalidSpecError: If a value is invalid.
        """
        inp = {"seed": seed, "m": m, "k": m if k is None else k, "n": m if n is None else n, "dtype": dtype}
        return cls.of({"workload": "matmul", "input": inp, **options})

    @classmethod
    def embed(cls, texts: Sequence[str], *, model: str = EMBED_MODEL, **options: Any) -> JobSpec:
        """Sentence embeddings of ``texts``.

        Args:
            texts: 1 to 256 texts.
            model: The model (``all-MiniLM-L6-v2``).
            options: Other :class:`JobSpec` fields.

        Raises:
            InvalidSpecError: If a value is invalid.
        """
        return cls.of({"workload": "embed", "input": {"model": model, "texts": list(texts)}, **options})

    @classmethod
    def of(cls, spec: JobSpecInput) -> JobSpec:
        """A validated spec from a spec or a mapping (the ``POST /v1/jobs`` body's fields).

        Raises:
            InvalidSpecError: Naming the first field at fault.
        """
        if isinstance(spec, JobSpec):
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidSpecError("spec", f"expected a JobSpec or a mapping, got {type(spec).__name__}")
        try:
            made = cls.model_validate(dict(spec))
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise InvalidSpecError(where, str(first["msg"]).removeprefix("Value error, ")) from err
        made.parsed_input()  # the workload's own schema, before anything is sent
        return made

    def parsed_input(self) -> BaseModel:
        """The input as the workload's input model.

        Raises:
            InvalidSpecError: If it does not match the workload's schema.
        """
        try:
            return parse_input(self.workload, self.input)
        except WorkloadSpecError as err:
            raise InvalidSpecError("input", str(err)) from err

    @property
    def units(self) -> int:
        """Billing units (price = units x the offer's unit price)."""
        return billing_units(self.workload, self.parsed_input())

    @property
    def model_name(self) -> str:
        """The model the job needs ("" for workloads without one)."""
        if self.workload == "embed":
            return self.model or str(self.input.get("model", ""))
        return self.model

    def body(self, *, budget_wei: int | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """The JSON body of ``POST /v1/jobs`` (amounts as decimal strings).

        Args:
            budget_wei: Overrides the spec's ``budget_wei`` (the client's cap of this job).
            idempotency_key: Used when the spec has none.
        """
        body: dict[str, Any] = {"workload": self.workload, "input": self.input}
        if self.model:
            body["model"] = self.model
        constraints = self.constraints.model_dump(mode="json")
        if constraints != Constraints().model_dump(mode="json"):
            body["constraints"] = constraints
        if self.max_price_wei is not None:
            body["max_price_wei"] = str(self.max_price_wei)
        budget = self.budget_wei if budget_wei is None else budget_wei
        if budget is not None:
            body["budget_wei"] = str(budget)
        if self.latency_target_ms is not None:
            body["latency_target_ms"] = self.latency_target_ms
        if self.redundancy != 1:
            body["redundancy"] = self.redundancy
        if self.min_reliability:
            body["min_reliability"] = self.min_reliability
        if not self.cache:
            body["cache"] = False
        if self.payment != "voucher":
            body["payment"] = self.payment
        key = self.idempotency_key or idempotency_key
        if key is not None:
            body["idempotency_key"] = key
        return body


JobSpecInput = JobSpec | Mapping[str, Any]
"""What ``submit`` takes: a :class:`JobSpec` or a mapping of its fields."""


@dataclass(frozen=True)
class OfferInfo:
    """A provider's live offer, as far as pricing and placement go.

    Attributes:
        provider: Its address.
        region: Market region.
        country: ISO country code ("" if undisclosed).
        prices: Unit price in wei per workload it serves.
        models: Models per workload.
        free_slots: Free job slots it announced.
    """

    provider: str
    region: str
    country: str
    prices: Mapping[str, int]
    models: Mapping[str, tuple[str, ...]]
    free_slots: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OfferInfo:
        """From the gateway's ``OfferPublic`` JSON.

        Raises:
            ClientError: If it is not an offer.
        """
        try:
            workloads = data["workloads"]
            return cls(
                provider=str(data["provider"]),
                region=str(data["region"]),
                country=str(data.get("country", "")),
                prices={str(w["name"]): int(w["unit_price_wei"]) for w in workloads},
                models={str(w["name"]): tuple(str(m) for m in w.get("models", ())) for w in workloads},
                free_slots=int(data.get("capacity", {}).get("free_slots", 0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ClientError(f"the market sent an offer that cannot be read ({err!r})") from err

    def serves(self, spec: JobSpec) -> int | None:
        """The unit price for ``spec`` if this offer serves its workload, model and residency, else None."""
        price = self.prices.get(spec.workload)
        if price is None:
            return None
        model = spec.model_name
        if model and model not in self.models.get(spec.workload, ()):
            return None
        c = spec.constraints
        if c.countries and self.country not in c.countries:
            return None
        if c.regions and self.region not in c.regions:
            return None
        return price


@dataclass(frozen=True)
class AccountInfo:
    """What the client may spend.

    Attributes:
        address: The client's address.
        budget_wei: Its budget at the gateway (embedded mode: unlimited, bounded by the deposit).
        spent_wei: Charged for delivered results.
        reserved_wei: Held by unfinished jobs.
        available_wei: Budget less spent and reserved.
        deposit: The voucher deposit (embedded mode; None at a gateway, whose operator pays providers).
    """

    address: str
    budget_wei: int
    spent_wei: int
    reserved_wei: int
    available_wei: int
    deposit: DepositInfo | None = None


@dataclass(frozen=True)
class DepositInfo:
    """The paying account's ``PaymentVouchers`` deposit (embedded mode).

    Attributes:
        balance_wei: The deposit less any pending withdrawal.
        owed_wei: What unredeemed vouchers already promise to providers.
        available_wei: ``balance - owed``: what new voucher jobs can still be paid with.
    """

    balance_wei: int
    owed_wei: int
    available_wei: int


@dataclass(frozen=True)
class Placement:
    """Where the matching engine put a job, and why.

    Attributes:
        provider: The provider that delivered the result (or the chosen one while it runs).
        region: Its region.
        providers: The chosen providers (one per redundant copy).
        backups: Ranked backups, tried in this order on failure.
        explanation: The engine's explanation (weights, each factor's contribution, filters).
        attempts: Every provider tried, in order (``{"n", "provider", "region", "outcome", ...}``).
    """

    provider: str | None
    region: str | None
    providers: tuple[str, ...]
    backups: tuple[str, ...]
    explanation: Mapping[str, Any]
    attempts: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> Placement | None:
        """From a job's JSON; None before it is placed."""
        placement = job.get("placement")
        if not isinstance(placement, Mapping):
            return None
        providers = tuple(str(p) for p in placement.get("providers", ()))
        attempts = tuple(a for a in job.get("attempts", ()) if isinstance(a, Mapping))
        provider = job.get("provider") or (providers[0] if providers else None)
        region = None
        for attempt in attempts:
            if attempt.get("provider") == provider:
                region = attempt.get("region")
        if region is None:
            explanation = placement.get("explanation", {})
            for chosen in explanation.get("chosen", ()) if isinstance(explanation, Mapping) else ():
                if isinstance(chosen, Mapping) and chosen.get("provider") == provider:
                    region = chosen.get("region")
        return cls(
            provider=None if provider is None else str(provider),
            region=None if region is None else str(region),
            providers=providers,
            backups=tuple(str(p) for p in placement.get("backups", ())),
            explanation=dict(placement.get("explanation", {})),
            attempts=attempts,
        )


_PHASES = ("match", "dispatch", "queue", "compute", "verify", "settle", "total")


@dataclass(frozen=True)
class Timing:
    """Where a job's time went, in milliseconds (None: the phase did not happen or is not known yet).

    The first seven are the market's own figures (the gateway's or the embedded market's ``timing_ms``);
    the last three are measured by this client.

    Attributes:
        match: Snapshot and placement.
        dispatch: Paying, signing, network, failed attempts.
        queue: Waiting for a slot on the node (its signed receipt).
        compute: The workload on the node (its signed receipt).
        verify: The market's check of the result.
        settle: Payment bookkeeping and charge.
        total: The market's whole job.
        submit: This client: the submission's round trip (job accepted and stored).
        client_verify: This client's own verification of the result.
        end_to_end: This client: from submit to a verified result.
    """

    match: float | None = None
    dispatch: float | None = None
    queue: float | None = None
    compute: float | None = None
    verify: float | None = None
    settle: float | None = None
    total: float | None = None
    submit: float | None = None
    client_verify: float | None = None
    end_to_end: float | None = None

    @classmethod
    def from_job(cls, job: Mapping[str, Any], **client: float | None) -> Timing:
        """From a job's ``timing_ms`` and the client's own measurements."""
        raw = job.get("timing_ms") or {}
        values = {
            k: float(raw[k])
            for k in _PHASES
            if isinstance(raw, Mapping) and isinstance(raw.get(k), int | float)
        }
        return cls(**values, **client)

    def as_dict(self) -> dict[str, float | None]:
        """Every phase by name."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class JobOutcome:
    """One job of :meth:`AsyncClient.map`: its result, or the error that stopped it.

    Attributes:
        index: Its position in the specs given to ``map``.
        job_id: The job's id (None if it was refused before submission).
        result: The verified output (``MatmulOutput``, ``EmbedOutput``), None on error.
        error: What went wrong (a :class:`~proxima.sdk.client.ClientError`), None on success.
        placement: Where it ran.
        timing: Where its time went.
        charged_wei: What it cost.
        verification: The client's own check of the result.
    """

    index: int
    job_id: str | None = None
    result: BaseModel | None = None
    error: ClientError | None = None
    placement: Placement | None = None
    timing: Timing | None = None
    charged_wei: int | None = None
    verification: CheckResult | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether it delivered a verified result."""
        return self.error is None

    def unwrap(self) -> BaseModel:
        """The result, or raise the job's error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
