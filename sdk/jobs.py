"""Messages of the job protocol ``/proxima/job/1.0.0``, their signatures and their encoding.

One request and one response travel per stream, each as one length-prefixed frame (:mod:`proxima.sdk.wire`)
holding canonical JSON. Requests are a :class:`QuoteRequest` (kind ``"quote"``) or a :class:`JobRequest`
(kind ``"run"``); responses a :class:`Quote` (``"quote"``), a :class:`JobResult` (``"result"``) or a
:class:`JobFailure` (``"failure"``). Every model is strict (a bool is not an int, text is not a number) and
forbids unknown fields. Bytes travel as ``0x``-prefixed hex, addresses EIP-55 checksummed, EIP-712 messages
as their typed-data JSON (camelCase keys).

Signatures:

* a :class:`Quote` carries the provider's EIP-712 signature over :class:`~proxima.sdk.eip712.JobTerms` in the
  ``JobEscrow`` domain: the client opens the escrow job on chain with it;
* a :class:`JobRequest` is signed by the client: EIP-191 (``personal_sign``) over the keccak hash of the
  request's canonical JSON without its ``signature`` field (:func:`sign_request`, :func:`verify_request`);
* a :class:`JobResult` carries a :class:`~proxima.sdk.eip712.JobReceipt` signed by the provider in the
  ``FaultProofs`` domain: two receipts with different results for one job prove equivocation on chain.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

from eth_account import Account
from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address
from eth_utils.crypto import keccak
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from proxima.sdk.bindings import FaultProofs, JobEscrow, PaymentVouchers
from proxima.sdk.chain import Deployment
from proxima.sdk.eip712 import (
    Domain,
    Eip712Message,
    JobReceipt,
    JobTerms,
    Signature,
    SignedMessage,
    Signer,
    Voucher,
    recover_signer,
)
from proxima.sdk.errors import SdkError, SignatureError
from proxima.sdk.types import Address
from proxima.sdk.workloads import canonical_json

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_MESSAGE_CHARS",
    "Domains",
    "ErrorCode",
    "EscrowPayment",
    "JobFailure",
    "JobRequest",
    "JobResult",
    "MalformedMessageError",
    "Payment",
    "Quote",
    "QuoteRequest",
    "Request",
    "Response",
    "VoucherPayment",
    "WorkloadName",
    "decode_request",
    "decode_response",
    "encode",
    "request_digest",
    "sign_quote",
    "sign_request",
    "verify_receipt",
    "verify_request",
]

DEFAULT_MAX_REQUEST_BYTES: Final = 16 * 2**20
"""Largest request frame a node accepts unless configured otherwise (16 MiB)."""

DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 2**20
"""Largest response frame a client accepts unless told otherwise (256 MiB: a 4096² float64 product)."""

MAX_MESSAGE_CHARS: Final = 2_000
"""Longest error message a :class:`JobFailure` may carry."""

_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"


class MalformedMessageError(SdkError, ValueError):
    """Bytes that are not a valid protocol message.

    Args:
        what: What was being decoded, for example ``"request"``.
        problem: What is wrong, naming the field.
    """

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        self.problem = problem
        super().__init__(f"malformed {what}: {problem}")


class ErrorCode(StrEnum):
    """Why a node refused or failed a request."""

    MALFORMED = "malformed"
    """The request is not valid JSON or does not match the schema."""
    TOO_LARGE = "too_large"
    """The request frame is longer than the node accepts."""
    BAD_SIGNATURE = "bad_signature"
    """The request is unsigned, or not signed by its client."""
    UNPAID = "unpaid"
    """No funded escrow job or voucher covers the price."""
    UNKNOWN_WORKLOAD = "unknown_workload"
    """The node does not serve that workload."""
    INVALID_INPUT = "invalid_input"
    """The workload input is invalid (the message names the field) or above the node's limits."""
    BUSY = "busy"
    """The node is at capacity; retry after ``retry_after`` seconds or elsewhere."""
    EXPIRED = "expired"
    """The request's ``issued_at`` is too old or in the future."""
    DUPLICATE = "duplicate"
    """A job with that id was already accepted (and is not finished, or its result is gone)."""
    UNAVAILABLE = "unavailable"
    """The node is shutting down, not ready, or the job did not finish in time (retry for its result)."""
    INTERNAL = "internal"
    """An unexpected error on the node; details are in the node's log."""


# --- field types -----------------------------------------------------------------------------------------


def _hex_bytes(size: int) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            if not value.startswith("0x"):
                raise ValueError(f"expected 0x-prefixed hex of {size} bytes")
            try:
                data = bytes.fromhex(value[2:])
            except ValueError as err:
                raise ValueError(f"expected 0x-prefixed hex of {size} bytes, got non-hex text") from err
        else:
            raise ValueError(f"expected 0x-prefixed hex of {size} bytes, got {type(value).__name__}")
        if len(data) != size:
            raise ValueError(f"expected exactly {size} bytes, got {len(data)}")
        return data

    return parse


def _to_hex(data: bytes) -> str:
    return "0x" + data.hex()


def _address(value: Any) -> Any:
    if not isinstance(value, str) or not is_hex_address(value):
        raise ValueError("expected a 0x-prefixed 20-byte hex address")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise ValueError(f"{value} has an invalid EIP-55 checksum")
    return to_checksum_address(value)


Bytes32Hex = Annotated[bytes, BeforeValidator(_hex_bytes(32)), PlainSerializer(_to_hex, when_used="json")]
SignatureHex = Annotated[bytes, BeforeValidator(_hex_bytes(65)), PlainSerializer(_to_hex, when_used="json")]
WireAddress = Annotated[Address, BeforeValidator(_address)]
WorkloadName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
"""A workload's name as it travels: lower-case, 1-64 characters."""

M = TypeVar("M", bound=Eip712Message)


def _eip712_to_json(message: Eip712Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (camel, sol_type), name in zip(message.eip712_fields(), type(message).model_fields, strict=True):
        value = getattr(message, name)
        out[camel] = _to_hex(value) if sol_type.startswith("bytes") else value
    return out


def _eip712_from_json(cls: type[M]) -> Callable[[Any], Any]:
    fields = cls.eip712_fields()
    names = dict(zip((camel for camel, _ in fields), cls.model_fields, strict=True))
    types = dict(fields)

    def parse(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"expected a {cls.type_name} object")
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{cls.type_name} has no field {', '.join(unknown)}")
        missing = [camel for camel in names if camel not in value]
        if missing:
            raise ValueError(f"{cls.type_name} lacks {', '.join(missing)}")
        kwargs: dict[str, Any] = {}
        for camel, item in value.items():
            if types[camel] == "bytes32":
                try:
                    item = _hex_bytes(32)(item)
                except ValueError as err:
                    raise ValueError(f"{cls.type_name}.{camel}: {err}") from err
            elif types[camel] == "address":
                try:
                    item = _address(item)
                except ValueError as err:
                    raise ValueError(f"{cls.type_name}.{camel}: {err}") from err
            kwargs[names[camel]] = item
        try:
            return cls.model_validate(kwargs)
        except ValidationError as err:
            raise ValueError(_summarize(err)) from err

    return parse


WireJobTerms = Annotated[
    JobTerms, BeforeValidator(_eip712_from_json(JobTerms)), PlainSerializer(_eip712_to_json, when_used="json")
]
WireVoucher = Annotated[
    Voucher, BeforeValidator(_eip712_from_json(Voucher)), PlainSerializer(_eip712_to_json, when_used="json")
]
WireJobReceipt = Annotated[
    JobReceipt,
    BeforeValidator(_eip712_from_json(JobReceipt)),
    PlainSerializer(_eip712_to_json, when_used="json"),
]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- domains ---------------------------------------------------------------------------------------------


class Domains(_Wire):
    """Where the signatures of the job protocol are valid: the chain and the three contracts that check them.

    Client and node build it from the same deployment (:meth:`from_deployment`).
    """

    chain_id: int = Field(gt=0)
    escrow: WireAddress
    faults: WireAddress
    vouchers: WireAddress

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> Domains:
        """The domains of a deployment's ``JobEscrow``, ``FaultProofs`` and ``PaymentVouchers``.

        Raises:
            KeyError: If the deployment lacks one of them.
        """
        return cls(
            chain_id=deployment.chain_id,
            escrow=deployment.address("JobEscrow"),
            faults=deployment.address("FaultProofs"),
            vouchers=deployment.address("PaymentVouchers"),
        )

    @property
    def escrow_domain(self) -> Domain:
        """Where :class:`~proxima.sdk.eip712.JobTerms` are signed (quotes)."""
        return Domain(str(JobEscrow.eip712_name), "1", self.chain_id, self.escrow)

    @property
    def faults_domain(self) -> Domain:
        """Where :class:`~proxima.sdk.eip712.JobReceipt` are signed (results)."""
        return Domain(str(FaultProofs.eip712_name), "1", self.chain_id, self.faults)

    @property
    def vouchers_domain(self) -> Domain:
        """Where :class:`~proxima.sdk.eip712.Voucher` are signed (voucher payments)."""
        return Domain(str(PaymentVouchers.eip712_name), "1", self.chain_id, self.vouchers)


# --- requests --------------------------------------------------------------------------------------------


class QuoteRequest(_Wire):
    """Ask a provider for signed escrow terms for one job.

    Attributes:
        client: The address that will open (and pay) the escrow job.
        workload: The workload's name, for example ``"matmul"``.
        input: The workload input (its schema is the workload's).
    """

    kind: Literal["quote"] = "quote"
    client: WireAddress
    workload: WorkloadName
    input: dict[str, Any]


class EscrowPayment(_Wire):
    """Payment by an escrow job the client opened on chain with the provider's quote (same job id)."""

    kind: Literal["escrow"] = "escrow"


class VoucherPayment(_Wire):
    """Payment by a cumulative voucher covering everything paid to this provider so far plus this job.

    Attributes:
        voucher: The voucher (client, provider, cumulative amount and job count).
        signature: The client's EIP-712 signature over it in the ``PaymentVouchers`` domain.
    """

    kind: Literal["voucher"] = "voucher"
    voucher: WireVoucher
    signature: SignatureHex

    def signed(self) -> SignedMessage[Voucher]:
        """The voucher with its signature, as the contract redeems it.

        Raises:
            SignatureError: If the signature bytes are not a valid secp256k1 signature.
        """
        return SignedMessage(self.voucher, Signature.from_bytes(self.signature))


Payment = Annotated[EscrowPayment | VoucherPayment, Field(discriminator="kind")]


class JobRequest(_Wire):
    """Run one job. Signed by the client (:func:`sign_request`).

    Attributes:
        job_id: For an escrow job, its on-chain id (from the quote's terms); for a voucher job, 32 random
            bytes chosen by the client. A node runs each id once; a retry of a finished job gets the same
            result.
        client: The client's address (the signer).
        provider: The provider the request is for.
        workload: The workload's name.
        input: The workload input.
        payment: How the job is paid.
        issued_at: When the request was signed (unix seconds); nodes refuse stale ones.
        signature: The client's 65-byte signature; ``None`` until signed.
    """

    kind: Literal["run"] = "run"
    job_id: Bytes32Hex
    client: WireAddress
    provider: WireAddress
    workload: WorkloadName
    input: dict[str, Any]
    payment: Payment
    issued_at: int = Field(ge=0)
    signature: SignatureHex | None = None


Request = Annotated[QuoteRequest | JobRequest, Field(discriminator="kind")]
"""Anything a client sends."""


# --- responses -------------------------------------------------------------------------------------------


class Quote(_Wire):
    """A provider's offer for one escrow job: terms it signed, and how the price was computed.

    Attributes:
        terms: The job terms (id, client, provider, price, slash amount, spec hash, deadlines).
        signature: The provider's EIP-712 signature over ``terms`` in the ``JobEscrow`` domain.
        units: Billing units of the job; ``terms.price`` is ``units`` times the provider's unit price.
    """

    kind: Literal["quote"] = "quote"
    terms: WireJobTerms
    signature: SignatureHex
    units: int = Field(ge=1)

    def signed(self) -> SignedMessage[JobTerms]:
        """The terms with the provider's signature, as ``JobEscrow.openJob`` takes them.

        Raises:
            SignatureError: If the signature bytes are not a valid secp256k1 signature.
        """
        return SignedMessage(self.terms, Signature.from_bytes(self.signature))

    def signer(self, escrow_domain: Domain) -> Address:
        """The address that signed the terms.

        Raises:
            SignatureError: If the signature is malformed.
        """
        return recover_signer(self.terms, escrow_domain, self.signature)


class JobResult(_Wire):
    """A job's output and the provider's signed receipt for it.

    Attributes:
        job_id: The job.
        workload: The workload that ran.
        output: The workload output (its schema is the workload's).
        receipt: Job id, provider, client, result hash and timings (queue, compute; microseconds).
        signature: The provider's EIP-712 signature over ``receipt`` in the ``FaultProofs`` domain.
    """

    kind: Literal["result"] = "result"
    job_id: Bytes32Hex
    workload: WorkloadName
    output: dict[str, Any]
    receipt: WireJobReceipt
    signature: SignatureHex

    @property
    def queue_ms(self) -> float:
        """Time the job waited for a slot on the node, in milliseconds."""
        return self.receipt.queue_micros / 1000

    @property
    def compute_ms(self) -> float:
        """Time the workload ran, in milliseconds."""
        return self.receipt.compute_micros / 1000

    def signed_receipt(self) -> SignedMessage[JobReceipt]:
        """The receipt with its signature, as ``FaultProofs.proveEquivocation`` takes it.

        Raises:
            SignatureError: If the signature bytes are not a valid secp256k1 signature.
        """
        return SignedMessage(self.receipt, Signature.from_bytes(self.signature))


class JobFailure(_Wire):
    """A typed refusal or failure.

    Attributes:
        job_id: The job, when the request got far enough to name one.
        code: Why.
        message: A human-readable explanation naming what is wrong (never the node's internals).
        retry_after: For ``busy`` and ``unavailable``: seconds after which a retry may succeed.
    """

    kind: Literal["failure"] = "failure"
    job_id: Bytes32Hex | None = None
    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
    retry_after: float | None = Field(default=None, ge=0)

    @classmethod
    def of(
        cls, code: ErrorCode, message: str, job_id: bytes | None = None, retry_after: float | None = None
    ) -> JobFailure:
        """A failure whose message is cut to :data:`MAX_MESSAGE_CHARS` if it is longer."""
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        return cls(job_id=job_id, code=code, message=message, retry_after=retry_after)


Response = Annotated[Quote | JobResult | JobFailure, Field(discriminator="kind")]
"""Anything a node answers."""

_REQUEST: TypeAdapter[QuoteRequest | JobRequest] = TypeAdapter(Request)
_RESPONSE: TypeAdapter[Quote | JobResult | JobFailure] = TypeAdapter(Response)


# --- encoding --------------------------------------------------------------------------------------------


def encode(message: BaseModel) -> bytes:
    """The canonical JSON bytes of a message (what a frame carries)."""
    return canonical_json(message.model_dump(mode="json"))


def decode_request(data: bytes) -> QuoteRequest | JobRequest:
    """Parse a request frame.

    Raises:
        MalformedMessageError: If ``data`` is not JSON or not a valid request; the message names the field.
    """
    try:
        return _REQUEST.validate_json(data)
    except ValidationError as err:
        raise MalformedMessageError("request", _summarize(err)) from err


def decode_response(data: bytes) -> Quote | JobResult | JobFailure:
    """Parse a response frame.

    Raises:
        MalformedMessageError: If ``data`` is not JSON or not a valid response; the message names the field.
    """
    try:
        return _RESPONSE.validate_json(data)
    except ValidationError as err:
        raise MalformedMessageError("response", _summarize(err)) from err


def _summarize(err: ValidationError, limit: int = 3) -> str:
    parts: list[str] = []
    for item in err.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "json_invalid":
            parts.append(f"not valid JSON ({item['msg'].removeprefix('Invalid JSON: ')})")
        elif where:
            parts.append(f"{where}: {item['msg']}")
        else:
            parts.append(str(item["msg"]))
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


# --- signatures ------------------------------------------------------------------------------------------


def request_digest(request: JobRequest) -> bytes:
    """The digest a client signs: EIP-191 over keccak of the canonical JSON without ``signature``."""
    body = canonical_json(request.model_dump(mode="json", exclude={"signature"}))
    return keccak(_EIP191_PREFIX + keccak(body))


def sign_request(request: JobRequest, signer: Signer) -> JobRequest:
    """A copy of ``request`` signed by ``signer``.

    Raises:
        SignatureError: If ``signer`` is not the request's client.
    """
    if signer.address != request.client:
        raise SignatureError(f"the request's client is {request.client} but the signer is {signer.address}")
    signature = signer.sign_digest(request_digest(request))
    return request.model_copy(update={"signature": signature.to_bytes()})


def verify_request(request: JobRequest) -> Address:
    """Check the client's signature on a request.

    Returns:
        The client's address.

    Raises:
        SignatureError: If the request is unsigned, the signature is malformed, or it was made by another key.
    """
    if request.signature is None:
        raise SignatureError("the request is not signed")
    sig = Signature.from_bytes(request.signature)
    try:
        recovered = Account._recover_hash(request_digest(request), vrs=(sig.v, sig.r, sig.s))
    except Exception as err:  # eth-keys raises several types for invalid points
        raise SignatureError(f"cannot recover a signer: {err}") from err
    signer = to_checksum_address(recovered)
    if signer != request.client:
        raise SignatureError(f"the request is signed by {signer}, not by its client {request.client}")
    return signer


def sign_quote(terms: JobTerms, units: int, signer: Signer, escrow_domain: Domain) -> Quote:
    """A provider's quote: ``terms`` signed in the ``JobEscrow`` domain.

    Raises:
        SignatureError: If ``signer`` is not the terms' provider.
    """
    if signer.address != terms.provider:
        raise SignatureError(f"the terms' provider is {terms.provider} but the signer is {signer.address}")
    signed = terms.sign(signer, escrow_domain)
    return Quote(terms=terms, signature=signed.signature.to_bytes(), units=units)


def verify_receipt(result: JobResult, faults_domain: Domain, provider: Address) -> bool:
    """Whether ``result``'s receipt is for its job, names ``provider`` and is signed by it.

    Args:
        result: The result to check.
        faults_domain: The ``FaultProofs`` domain (:attr:`Domains.faults_domain`).
        provider: The provider the job was sent to.
    """
    receipt = result.receipt
    if receipt.job_id != result.job_id or receipt.provider != provider:
        return False
    try:
        return recover_signer(receipt, faults_domain, result.signature) == provider
    except SignatureError:
        return False
