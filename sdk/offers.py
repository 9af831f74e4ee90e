"""Signed provider offers: what a node sells, at what price, where, and how to reach it.

A provider publishes its :class:`Offer` on the gossipsub topic :data:`proxima.sdk.p2p.OFFER_TOPIC` when it
starts, when its capacity or prices change, and as a heartbeat. The offer is signed with the provider's key
(EIP-191 ``personal_sign`` over the keccak hash of the offer's canonical JSON), the same key as its libp2p
identity, so a receiver ties the offer to the gossip message's authenticated sender.

Wire form: the canonical JSON (:func:`proxima.sdk.workloads.canonical_json`: sorted keys, no whitespace) of
``{"offer": {...}, "signature": "0x.."}``. Every string in an offer is printable ASCII and every number an
integer (coordinates in microseconds, errors in parts per million), so the canonical bytes are the same in
every language; receivers accept only the canonical encoding, so one offer has exactly one valid byte string.

Receivers run :class:`OfferValidator` as the topic validator, so that unsigned, expired, replayed, oversized
or unstaked offers are dropped before any subscriber sees or relays them, and keep the survivors in an
:class:`OfferBook`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Final, Literal

from eth_account import Account
from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak
from libp2p.abc import ISubscriptionAPI
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from proxima.sdk.eip712 import Signature, Signer
from proxima.sdk.errors import SdkError, SignatureError
from proxima.sdk.p2p import OFFER_TOPIC, InvalidMultiaddrError, P2PError, Peer, parse_bootstrap
from proxima.sdk.peerid import InvalidPeerIdError, address_of_peer_id, peer_id_to_base58
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import MAX_COMPONENT, MAX_ERROR, MIN_ERROR, VivaldiCoordinate
from proxima.sdk.workloads import canonical_json

__all__ = [
    "MAX_OFFER_BYTES",
    "OFFER_VERSION",
    "Offer",
    "OfferBook",
    "OfferCapacity",
    "OfferCoordinates",
    "OfferHardware",
    "OfferMeasurement",
    "OfferRejected",
    "OfferValidator",
    "OfferWorkload",
    "RejectReason",
    "SignedOffer",
    "StakeCache",
    "StakeLookupError",
    "offer_digest",
    "sign_offer",
    "subscribe_offers",
]

log = logging.getLogger(__name__)

OFFER_VERSION: Final = 1
MAX_OFFER_BYTES: Final = 16_384
"""Largest signed offer on the wire (a typical one is about 1.5 kB)."""

MAX_ADDRS: Final = 8
MAX_WORKLOADS: Final = 16
MAX_MODELS: Final = 16
_MICROS: Final = 1_000_000
_UINT64: Final = 2**64
_EIP191_PREFIX: Final = b"\x19Ethereum Signed Message:\n32"


class RejectReason(StrEnum):
    """Why a gossiped offer was dropped."""

    OVERSIZED = "oversized"
    """Longer than the validator's ``max_bytes``."""
    MALFORMED = "malformed"
    """Not the canonical JSON of a valid signed offer."""
    BAD_SIGNATURE = "bad_signature"
    """The signature does not recover to the offer's provider."""
    WRONG_PEER = "wrong_peer"
    """The offer's provider is not the key that published the gossip message."""
    EXPIRED = "expired"
    """``expires_at`` has passed."""
    TOO_FAR_IN_FUTURE = "too_far_in_future"
    """Issued in the future, or valid for longer than the validator's ``max_ttl``."""
    REPLAYED = "replayed"
    """``seq`` is not above the last accepted offer's of that provider."""
    UNSTAKED = "unstaked"
    """The provider is not an active, staked provider in the registry."""
    STAKE_UNKNOWN = "stake_unknown"
    """The registry could not be asked, and there is no earlier answer for the provider."""


class OfferRejected(SdkError, ValueError):  # noqa: N818 (the name says what happened to the offer)
    """An offer failed validation.

    Attributes:
        reason: The rule it broke.
        detail: What exactly was wrong.
    """

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"offer rejected ({reason.value}): {detail}")


class StakeLookupError(SdkError):
    """The registry could not tell whether an address is a staked provider."""

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        super().__init__(f"cannot look up the stake of {address}: {problem}")


# ---------------------------------------------------------------------------------------------------------
# The offer


def _checksum(value: Address) -> Address:
    if not is_checksum_address(value):
        raise ValueError(f"{value!r} is not an EIP-55 checksummed address")
    return value


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"entries must be unique, got {list(values)}")
    return values


_ChecksumAddress = Annotated[Address, AfterValidator(_checksum)]
_Printable = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x20-\x7e]+$")]
_WorkloadName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$")]
_ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")]
_Hex32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
_Uint64 = Annotated[int, Field(ge=0, lt=_UINT64)]
_Micros = Annotated[int, Field(ge=-int(MAX_COMPONENT * _MICROS), le=int(MAX_COMPONENT * _MICROS))]
_Timestamp = Annotated[int, Field(ge=0, lt=2**40)]


class _Strict(BaseModel):
    # Strict: a float is not an int and text is not a number; what is signed is exactly what was given.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class OfferHardware(_Strict):
    """The machine behind the offer (from the node's hardware probe).

    Attributes:
        cpu_model: CPU model name.
        cpu_cores: Logical CPU cores.
        memory_bytes: System memory.
        gpu_model: GPU model name, empty without a GPU.
        gpu_count: Number of such GPUs.
        gpu_memory_bytes: Memory of each GPU.
    """

    cpu_model: _Printable
    cpu_cores: Annotated[int, Field(ge=1, le=4096)]
    memory_bytes: _Uint64
    gpu_model: Annotated[str, StringConstraints(max_length=128, pattern=r"^[\x20-\x7e]*$")] = ""
    gpu_count: Annotated[int, Field(ge=0, le=64)] = 0
    gpu_memory_bytes: _Uint64 = 0

    @model_validator(mode="after")
    def _gpus_consistent(self) -> OfferHardware:
        has_gpu = (bool(self.gpu_model), self.gpu_count > 0, self.gpu_memory_bytes > 0)
        if any(has_gpu) and not all(has_gpu):
            raise ValueError("gpu_model, gpu_count and gpu_memory_bytes must all be set, or none")
        return self


class OfferMeasurement(_Strict):
    """The node's own benchmark (the figures its on-chain attestation carries).

    Attributes:
        benchmark_id: The benchmark's 32-byte id, ``0x`` + 64 lowercase hex digits.
        device: Where it ran.
        gemm_flops: Median matrix-multiply throughput, FLOP/s.
        mem_bandwidth: Median memory bandwidth, bytes/s.
    """

    benchmark_id: _Hex32
    device: Literal["cpu", "cuda"]
    gemm_flops: _Uint64
    mem_bandwidth: _Uint64


class OfferWorkload(_Strict):
    """One workload the node serves.

    Attributes:
        name: Workload name (``"matmul"``, ``"embed"``).
        models: Models served for it (empty when it has none).
        unit_price_wei: Price of one billing unit of it, in wei.
    """

    name: _WorkloadName
    models: Annotated[tuple[_ModelName, ...], Field(max_length=MAX_MODELS), AfterValidator(_unique)] = ()
    unit_price_wei: Annotated[int, Field(ge=0, lt=2**256)]


class OfferCoordinates(_Strict):
    """A Vivaldi coordinate in integers: microseconds and parts per million.

    Attributes:
        vector_us: The Euclidean part, microseconds (2 or 3 components).
        height_us: The height, microseconds.
        error_ppm: The error estimate, parts per million.
    """

    vector_us: Annotated[tuple[_Micros, ...], Field(min_length=2, max_length=3)]
    height_us: Annotated[int, Field(ge=0, le=int(MAX_COMPONENT * _MICROS))]
    error_ppm: Annotated[int, Field(ge=round(MIN_ERROR * _MICROS), le=round(MAX_ERROR * _MICROS))]

    @classmethod
    def from_vivaldi(cls, coordinate: VivaldiCoordinate) -> OfferCoordinates:
        """Round a coordinate to the wire's resolution (1 microsecond, 1 ppm)."""
        return cls(
            vector_us=tuple(round(x * _MICROS) for x in coordinate.vector),
            height_us=round(coordinate.height * _MICROS),
            error_ppm=round(coordinate.error * _MICROS),
        )

    def to_vivaldi(self) -> VivaldiCoordinate:
        """The coordinate in seconds, for :func:`proxima.sdk.vivaldi.predict_rtt`."""
        return VivaldiCoordinate(
            vector=tuple(x / _MICROS for x in self.vector_us),
            height=self.height_us / _MICROS,
            error=self.error_ppm / _MICROS,
        )


class OfferCapacity(_Strict):
    """How much work the node takes now.

    Attributes:
        max_concurrency: Jobs it runs at once.
        free_slots: Of those, how many are free.
        queue_depth: Jobs waiting.
    """

    max_concurrency: Annotated[int, Field(ge=1, le=1024)]
    free_slots: Annotated[int, Field(ge=0, le=1024)]
    queue_depth: Annotated[int, Field(ge=0, le=1_000_000)]

    @model_validator(mode="after")
    def _slots_fit(self) -> OfferCapacity:
        if self.free_slots > self.max_concurrency:
            raise ValueError(f"free_slots {self.free_slots} exceeds max_concurrency {self.max_concurrency}")
        return self


class Offer(_Strict):
    """A provider's offer, as signed.

    Attributes:
        version: Wire format version (1).
        provider: The provider's checksummed address.
        peer_id: Its libp2p peer id in base58; the key inside must be the provider's.
        addrs: Where to dial it, each ending with ``/p2p/<peer_id>``.
        region: A free-form region label (``"eu-west"``).
        country: ISO 3166-1 alpha-2 code of where the machine is (data residency).
        hardware: The machine.
        measured: Its benchmark.
        workloads: What it serves and at what unit price.
        coordinates: Its Vivaldi network coordinate.
        capacity: Free capacity when issued.
        issued_at: Unix seconds when signed.
        expires_at: Unix seconds after which nobody should use it.
        seq: Strictly increasing per provider; a receiver keeps only the highest.
    """

    version: Literal[1] = OFFER_VERSION
    provider: _ChecksumAddress
    peer_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[1-9A-HJ-NP-Za-km-z]+$")
    ]
    addrs: Annotated[tuple[Annotated[str, StringConstraints(max_length=256)], ...], Field(min_length=1)]
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    hardware: OfferHardware
    measured: OfferMeasurement
    workloads: Annotated[tuple[OfferWorkload, ...], Field(min_length=1, max_length=MAX_WORKLOADS)]
    coordinates: OfferCoordinates
    capacity: OfferCapacity
    issued_at: _Timestamp
    expires_at: _Timestamp
    seq: Annotated[int, Field(ge=0, lt=2**63)]

    @model_validator(mode="after")
    def _consistent(self) -> Offer:
        peer_id = self.peer_id_bytes
        if address_of_peer_id(peer_id) != self.provider:
            raise ValueError(f"peer_id {self.peer_id} holds the key of another address than {self.provider}")
        if len(self.addrs) > MAX_ADDRS:
            raise ValueError(f"at most {MAX_ADDRS} addrs, got {len(self.addrs)}")
        for addr in self.addrs:
            try:
                addr_peer, _ = parse_bootstrap(addr)
            except InvalidMultiaddrError as err:
                raise ValueError(str(err)) from err
            if addr_peer != peer_id:
                raise ValueError(f"addr {addr} names another peer than {self.peer_id}")
        if len(self.addrs) != len(set(self.addrs)):
            raise ValueError("addrs must be unique")
        names = [w.name for w in self.workloads]
        if len(names) != len(set(names)):
            raise ValueError(f"workload names must be unique, got {names}")
        if self.expires_at <= self.issued_at:
            raise ValueError(f"expires_at {self.expires_at} must be after issued_at {self.issued_at}")
        return self

    @property
    def peer_id_bytes(self) -> bytes:
        """The binary peer id.

        Raises:
            ValueError: If ``peer_id`` is not the base58 form of a secp256k1 peer id.
        """
        try:
            raw = ID.from_base58(self.peer_id).to_bytes()
        except Exception as err:  # base58 and multihash raise several types
            raise ValueError(f"peer_id {self.peer_id!r} is not base58 of a peer id") from err
        try:
            address_of_peer_id(raw)
        except InvalidPeerIdError as err:
            raise ValueError(f"peer_id {self.peer_id}: {err}") from err
        if peer_id_to_base58(raw) != self.peer_id:
            raise ValueError(f"peer_id {self.peer_id!r} is not in canonical base58")
        return raw

    def workload(self, name: str) -> OfferWorkload | None:
        """The terms for workload ``name``, if served."""
        return next((w for w in self.workloads if w.name == name), None)

    def coordinate(self) -> VivaldiCoordinate:
        """The network coordinate, in seconds."""
        return self.coordinates.to_vivaldi()


def offer_digest(offer: Offer) -> bytes:
    """The 32-byte hash the provider signs: EIP-191 ``personal_sign`` of ``keccak(canonical JSON of offer)``.

    A wallet that signs the 32 bytes ``keccak(canonical JSON)`` as a personal message produces the same
    signature.
    """
    return keccak(_EIP191_PREFIX + keccak(canonical_json(offer.model_dump(mode="json"))))


class SignedOffer(_Strict):
    """An offer with the provider's signature (``0x`` + 130 hex digits, ``r || s || v``)."""

    offer: Offer
    signature: Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{130}$")]

    def to_wire(self) -> bytes:
        """The canonical JSON bytes that are published."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_wire(cls, data: bytes, max_bytes: int = MAX_OFFER_BYTES) -> SignedOffer:
        """Parse a published offer (structure only: no signature, time or stake checks).

        Raises:
            OfferRejected: ``oversized`` if longer than ``max_bytes``; ``malformed`` if it is not the
                canonical JSON of a valid signed offer.
        """
        if len(data) > max_bytes:
            raise OfferRejected(RejectReason.OVERSIZED, f"{len(data)} bytes, the limit is {max_bytes}")
        try:
            signed = cls.model_validate_json(data)
        except ValidationError as err:
            raise OfferRejected(RejectReason.MALFORMED, _summarize(err)) from err
        if signed.to_wire() != data:
            raise OfferRejected(RejectReason.MALFORMED, "not in canonical form (sorted keys, no whitespace)")
        return signed

    @property
    def signature_bytes(self) -> bytes:
        """The 65-byte signature."""
        return bytes.fromhex(self.signature[2:])

    def signer(self) -> Address:
        """The address whose key made the signature.

        Raises:
            SignatureError: If the signature is malformed or recovers no key.
        """
        sig = Signature.from_bytes(self.signature_bytes)
        try:
            recovered = Account._recover_hash(offer_digest(self.offer), vrs=(sig.v, sig.r, sig.s))
        except Exception as err:  # eth-keys raises several types for invalid points
            raise SignatureError(f"cannot recover the offer's signer: {err}") from err
        return to_checksum_address(recovered)


def sign_offer(offer: Offer, signer: Signer) -> SignedOffer:
    """Sign an offer with the provider's key.

    Raises:
        SignatureError: If ``signer`` is not the offer's provider.
    """
    if signer.address != offer.provider:
        raise SignatureError(f"offer of {offer.provider} cannot be signed by {signer.address}")
    signature = signer.sign_digest(offer_digest(offer))
    return SignedOffer(offer=offer, signature="0x" + signature.to_bytes().hex())


def _summarize(err: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in err.errors()[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "offer"
        parts.append(f"{where}: {item['msg']}")
    more = len(err.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


# ---------------------------------------------------------------------------------------------------------
# Validation


class StakeCache:
    """Caches "is this address an active staked provider?" answers for a while.

    The node wraps ``contracts.registry.is_active_provider`` in one so that the gossip validator asks the
    chain about each provider at most once per ``ttl``. When the chain cannot be reached the last answer is
    used, however old; without one the lookup fails.

    Args:
        lookup: The registry query.
        ttl: Seconds an answer is trusted.
        clock: Monotonic seconds.
        max_entries: Addresses remembered (least recently used are forgotten first).
    """

    def __init__(
        self,
        lookup: Callable[[Address], bool],
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        if not ttl >= 0:
            raise ValueError(f"ttl must be >= 0, got {ttl}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._answers: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    def __call__(self, address: Address) -> bool:
        """Whether ``address`` is a staked provider.

        Raises:
            StakeLookupError: If the lookup fails and there is no earlier answer.
        """
        now = self._clock()
        cached = self._answers.get(address)
        if cached is not None and now - cached[1] < self._ttl:
            self._answers.move_to_end(address)
            return cached[0]
        try:
            staked = bool(self._lookup(address))
        except Exception as err:  # any failure of the caller's lookup (RPC down, timeout, bad answer)
            if cached is not None:
                log.warning(
                    "stake lookup failed, using the last answer",
                    extra={"address": address, "error": str(err)},
                )
                return cached[0]
            raise StakeLookupError(address, str(err) or type(err).__name__) from err
        self._answers[address] = (staked, now)
        self._answers.move_to_end(address)
        while len(self._answers) > self._max_entries:
            self._answers.popitem(last=False)
        return staked

    def invalidate(self, address: Address | None = None) -> None:
        """Forget the answer for ``address`` (all answers if None)."""
        if address is None:
            self._answers.clear()
        else:
            self._answers.pop(address, None)


class OfferValidator:
    """Checks offers before gossipsub delivers or relays them.

    Install it with ``pubsub.set_topic_validator(OFFER_TOPIC, validator, is_async_validator=False)``; a
    rejected message is neither delivered to local subscribers nor forwarded. The checks run in this order:
    size, structure (canonical JSON of a valid offer), signature, publisher, times, replay, and last the
    stake (the only one that may ask the chain). The replay state (the highest ``seq`` accepted per provider)
    changes only when an offer passes every check.

    Args:
        is_staked: Whether an address is an active staked provider (the node passes a :class:`StakeCache`
            over the registry). It is called last, only for offers that passed every other check.
        clock: Unix seconds.
        max_bytes: Largest accepted message.
        max_ttl: Longest accepted validity (``expires_at - issued_at``), seconds.
        max_skew: Clock difference tolerated between publisher and receiver, seconds.
        on_reject: Called with the reason of each rejection (for metrics).
    """

    def __init__(
        self,
        is_staked: Callable[[Address], bool],
        *,
        clock: Callable[[], float] = time.time,
        max_bytes: int = MAX_OFFER_BYTES,
        max_ttl: int = 300,
        max_skew: int = 30,
        on_reject: Callable[[RejectReason], None] | None = None,
    ) -> None:
        if max_bytes < 1 or max_ttl < 1 or max_skew < 0:
            raise ValueError(f"bad limits: max_bytes={max_bytes}, max_ttl={max_ttl}, max_skew={max_skew}")
        self._is_staked = is_staked
        self._clock = clock
        self.max_bytes = max_bytes
        self.max_ttl = max_ttl
        self.max_skew = max_skew
        self._on_reject = on_reject
        # provider -> (highest accepted seq, when the entry may be forgotten)
        self._accepted: dict[str, tuple[int, float]] = {}
        self._last_prune = -math.inf
        self.rejections: Counter[RejectReason] = Counter()
        self.accepted = 0

    def last_seq(self, provider: Address) -> int | None:
        """The highest ``seq`` accepted from ``provider`` (None if none is remembered)."""
        entry = self._accepted.get(provider)
        return None if entry is None else entry[0]

    def check(self, data: bytes, from_peer: bytes) -> SignedOffer:
        """Validate one published offer and, if it passes, remember its ``seq``.

        Args:
            data: The message payload.
            from_peer: The binary peer id of the message's publisher (``msg.from_id``; gossipsub has checked
                the libp2p signature of the message against it).

        Returns:
            The parsed offer.

        Raises:
            OfferRejected: With the first rule the offer breaks.
        """
        signed = SignedOffer.from_wire(data, self.max_bytes)
        offer = signed.offer
        try:
            signer = signed.signer()
        except SignatureError as err:
            raise OfferRejected(RejectReason.BAD_SIGNATURE, str(err)) from err
        if signer != offer.provider:
            raise OfferRejected(RejectReason.BAD_SIGNATURE, f"signed by {signer}, not by {offer.provider}")
        if from_peer != offer.peer_id_bytes:
            raise OfferRejected(
                RejectReason.WRONG_PEER,
                f"offer of {offer.peer_id} published by {peer_id_to_base58(from_peer)}",
            )
        now = self._clock()
        if offer.expires_at <= now:
            raise OfferRejected(RejectReason.EXPIRED, f"expired at {offer.expires_at}, now {now:.0f}")
        if offer.issued_at > now + self.max_skew:
            raise OfferRejected(RejectReason.TOO_FAR_IN_FUTURE, f"issued at {offer.issued_at}, now {now:.0f}")
        if (
            offer.expires_at - offer.issued_at > self.max_ttl
            or offer.expires_at > now + self.max_ttl + self.max_skew
        ):
            raise OfferRejected(
                RejectReason.TOO_FAR_IN_FUTURE,
                f"valid until {offer.expires_at}, now {now:.0f}, the longest validity is {self.max_ttl} s",
            )
        last = self.last_seq(offer.provider)
        if last is not None and offer.seq <= last:
            raise OfferRejected(RejectReason.REPLAYED, f"seq {offer.seq} is not above {last}")
        try:
            staked = self._is_staked(offer.provider)
        except Exception as err:  # any failure of the caller's lookup
            raise OfferRejected(RejectReason.STAKE_UNKNOWN, str(err) or type(err).__name__) from err
        if not staked:
            raise OfferRejected(RejectReason.UNSTAKED, f"{offer.provider} is not an active staked provider")
        self._remember(offer, now)
        self.accepted += 1
        return signed

    def __call__(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Gossipsub's synchronous topic validator: True lets the message through.

        Never raises (an exception would break the pubsub service); rejections are logged at debug level,
        counted in :attr:`rejections` and passed to ``on_reject``.
        """
        try:
            self.check(msg.data, msg.from_id)
        except OfferRejected as err:
            self.rejections[err.reason] += 1
            log.debug(
                "offer rejected",
                extra={"reason": err.reason.value, "detail": err.detail, "forwarder": forwarder.to_base58()},
            )
            if self._on_reject is not None:
                self._on_reject(err.reason)
            return False
        except Exception:  # a bug here must not stop gossip: drop the message and say so
            log.exception("offer validator failed", extra={"forwarder": forwarder.to_base58()})
            return False
        return True

    def _remember(self, offer: Offer, now: float) -> None:
        # An older offer of this provider that was signed before this one expires by then, so its seq need not
        # be remembered longer (the provider's seq grows with its clock).
        forget_at = offer.expires_at + self.max_ttl + self.max_skew
        self._accepted[offer.provider] = (offer.seq, forget_at)
        if now - self._last_prune > 60:
            self._last_prune = now
            stale = [p for p, (_, until) in self._accepted.items() if until < now]
            for provider in stale:
                del self._accepted[provider]


# ---------------------------------------------------------------------------------------------------------
# The book


class OfferBook:
    """The latest valid offer of each provider.

    Feed it offers that passed an :class:`OfferValidator` (``follow`` a subscription on a pubsub that runs
    one). Expired offers are not returned and are dropped by :meth:`prune`.

    Args:
        max_offers: Providers remembered; when full, expired offers are pruned first and then new
            providers are turned away.
    """

    def __init__(self, *, max_offers: int = 100_000) -> None:
        if max_offers < 1:
            raise ValueError(f"max_offers must be >= 1, got {max_offers}")
        self._max_offers = max_offers
        self._offers: dict[str, SignedOffer] = {}

    def __len__(self) -> int:
        return len(self._offers)

    def add(self, signed: SignedOffer, now: float | None = None) -> bool:
        """Keep ``signed`` if it is newer than what is held for its provider.

        Returns:
            True if it was stored.
        """
        provider = signed.offer.provider
        held = self._offers.get(provider)
        if held is not None and held.offer.seq >= signed.offer.seq:
            return False
        if held is None and len(self._offers) >= self._max_offers:
            self.prune(time.time() if now is None else now)
            if len(self._offers) >= self._max_offers:
                log.warning("offer book full", extra={"max_offers": self._max_offers, "provider": provider})
                return False
        self._offers[provider] = signed
        return True

    def get(self, provider: Address) -> SignedOffer | None:
        """The latest offer of ``provider``, expired or not."""
        return self._offers.get(provider)

    def by_peer_id(self, peer_id: bytes) -> SignedOffer | None:
        """The latest offer of the provider whose libp2p peer id is ``peer_id``."""
        try:
            return self._offers.get(address_of_peer_id(peer_id))
        except InvalidPeerIdError:
            return None

    def offers(self, now: float) -> list[SignedOffer]:
        """Offers not expired at ``now``, by provider address."""
        return [self._offers[p] for p in sorted(self._offers) if self._offers[p].offer.expires_at > now]

    def prune(self, now: float) -> int:
        """Drop offers expired at ``now``; returns how many."""
        expired = [p for p, s in self._offers.items() if s.offer.expires_at <= now]
        for provider in expired:
            del self._offers[provider]
        return len(expired)

    async def follow(
        self,
        subscription: ISubscriptionAPI,
        *,
        on_offer: Callable[[SignedOffer], None] | None = None,
    ) -> None:
        """Add every offer delivered on ``subscription`` until cancelled.

        The pubsub must run an :class:`OfferValidator` on the topic: here offers are only parsed, and
        ones whose signer is not the message's publisher are skipped.
        """
        while True:
            msg = await subscription.get()
            try:
                signed = SignedOffer.from_wire(msg.data)
            except OfferRejected as err:
                log.warning("unparsable offer delivered", extra={"error": str(err)})
                continue
            if msg.from_id != signed.offer.peer_id_bytes:
                log.warning("offer delivered from another peer", extra={"provider": signed.offer.provider})
                continue
            if self.add(signed) and on_offer is not None:
                on_offer(signed)


async def subscribe_offers(
    peer: Peer, validator: OfferValidator, topic: str = OFFER_TOPIC
) -> ISubscriptionAPI:
    """Install ``validator`` on the offer topic, then subscribe (in that order, so nothing slips through).

    The validator also checks this peer's own offers before they are published.

    Raises:
        P2PError: If the peer runs without pubsub.
    """
    if peer.pubsub is None:
        raise P2PError(f"peer {peer.peer_id_b58} was opened without pubsub")
    peer.pubsub.set_topic_validator(topic, validator, is_async_validator=False)
    return await peer.subscribe(topic)
