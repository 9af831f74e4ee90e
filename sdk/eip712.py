"""EIP-712 typed messages of the Proxima contracts, each defined once.

Every signed message type is a pydantic model whose fields carry their Solidity type
(``Annotated[int, Sol("uint64")]``); the EIP-712 type string, the JSON typed data and the digest are derived
from that one definition. ``tests/contracts/test_eip712.py`` proves each digest equals the contract's.

The signing pipeline follows eth-account's shape: a message is *encoded* into typed data, turned into a
*signable* digest, *signed* by a :class:`Signer` (a local key here; a hardware or remote signer can implement
the same two members), and returned as a :class:`SignedMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    Protocol,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from proxima.sdk.errors import SignatureError
from proxima.sdk.types import Address

__all__ = [
    "Attestation",
    "AttestationBatch",
    "Domain",
    "Eip712Message",
    "JobReceipt",
    "JobTerms",
    "LocalSigner",
    "Measurement",
    "Signature",
    "SignedMessage",
    "Signer",
    "Sol",
    "Verdict",
    "VerifierReport",
    "Voucher",
    "recover_signer",
]

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class Sol:
    """The Solidity type of a message field, for example ``Sol("uint64")``."""

    type: str


@dataclass(frozen=True)
class Domain:
    """An EIP-712 domain: one per contract and chain.

    Attributes:
        name: The contract's EIP-712 name, for example ``"Proxima Escrow"``.
        version: Its version string.
        chain_id: The chain the signature is valid on.
        verifying_contract: The contract that checks it.
    """

    name: str
    version: str
    chain_id: int
    verifying_contract: Address

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


@dataclass(frozen=True)
class Signature:
    """A secp256k1 signature.

    Attributes:
        r: First half.
        s: Second half (low-s form).
        v: Recovery id, 27 or 28.
    """

    r: int
    s: int
    v: int

    def to_bytes(self) -> bytes:
        """The 65-byte ``r || s || v`` encoding the contracts accept as ``bytes``."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([self.v])

    def to_compact(self) -> tuple[bytes, bytes]:
        """The EIP-2098 ``(r, vs)`` pair used in batch calls."""
        vs = self.s | ((self.v - 27) << 255)
        return self.r.to_bytes(32, "big"), vs.to_bytes(32, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        """Parse a 65-byte signature.

        Raises:
            SignatureError: If the length, ``v`` or ``s`` is invalid.
        """
        if len(data) != 65:
            raise SignatureError(f"a signature is 65 bytes, got {len(data)}")
        r, s, v = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:64], "big"), data[64]
        if v in (0, 1):
            v += 27
        if v not in (27, 28):
            raise SignatureError(f"signature v must be 27 or 28, got {v}")
        if not 0 < s <= _SECP256K1_N // 2:
            raise SignatureError("signature s is not in the lower half of the curve order")
        return cls(r=r, s=s, v=v)


class Signer(Protocol):
    """Something that signs digests for one address (a local key, a hardware wallet, a remote signer)."""

    @property
    def address(self) -> Address: ...

    def sign_digest(self, digest: bytes) -> Signature: ...


class LocalSigner:
    """A :class:`Signer` holding a private key in memory.

    Args:
        account: An eth-account ``LocalAccount`` (from a keystore or a dev mnemonic).
    """

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @classmethod
    def from_key(cls, key: bytes | str) -> LocalSigner:
        return cls(Account.from_key(key))

    @property
    def address(self) -> Address:
        return to_checksum_address(self._account.address)

    def sign_digest(self, digest: bytes) -> Signature:
        signed = self._account.unsafe_sign_hash(Hash32(digest))
        return Signature(r=int(signed.r), s=int(signed.s), v=int(signed.v))

    def __repr__(self) -> str:
        return f"LocalSigner({self.address})"


class Eip712Message(BaseModel):
    """Base of every typed message. Subclasses set ``type_name`` and annotate fields with :class:`Sol`."""

    # Strict: a bool is not a uint and text is not bytes32; what is signed is exactly what was given.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    type_name: ClassVar[str]
    nested: ClassVar[tuple[type[Eip712Message], ...]] = ()
    """Struct types this one refers to (as ``Name[]`` fields), in EIP-712 ``encodeType`` order."""

    @field_validator("*", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
            return to_checksum_address(value)
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> Eip712Message:
        for (camel, sol_type), name in zip(self.eip712_fields(), type(self).model_fields, strict=True):
            _check_value(f"{self.type_name}.{camel}", sol_type, getattr(self, name))
        return self

    @classmethod
    def eip712_fields(cls) -> list[tuple[str, str]]:
        """``(camelCase name, Solidity type)`` of each field, in declaration order."""
        hints = get_type_hints(cls, include_extras=True)
        fields: list[tuple[str, str]] = []
        for name in cls.model_fields:
            hint = hints[name]
            sol = next((a for a in get_args(hint) if isinstance(a, Sol)), None)
            if get_origin(hint) is not Annotated or sol is None:
                raise TypeError(f"{cls.__name__}.{name} has no Sol(...) annotation")
            fields.append((_camel(name), sol.type))
        return fields

    @classmethod
    def encode_type(cls) -> str:
        """The EIP-712 ``encodeType`` string, as the contract's TYPEHASH is built from."""
        own = f"{cls.type_name}({','.join(f'{t} {n}' for n, t in cls.eip712_fields())})"
        return own + "".join(n.encode_type() for n in sorted(cls.nested, key=lambda n: n.type_name))

    @classmethod
    def type_hash(cls) -> bytes:
        return keccak(text=cls.encode_type())

    def to_message(self) -> dict[str, Any]:
        """The message as EIP-712 JSON (camelCase keys)."""
        return {_camel(name): _message_value(getattr(self, name)) for name in type(self).model_fields}

    def to_abi(self) -> tuple[Any, ...]:
        """The field values as the ABI tuple the contract functions take."""
        return tuple(_abi_value(getattr(self, name)) for name in type(self).model_fields)

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The full EIP-712 typed data (as ``eth_signTypedData_v4`` takes it)."""
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                self.type_name: [{"name": n, "type": t} for n, t in self.eip712_fields()],
                **{n.type_name: [{"name": f, "type": t} for f, t in n.eip712_fields()] for n in self.nested},
            },
            "primaryType": self.type_name,
            "domain": domain.as_dict(),
            "message": self.to_message(),
        }

    def digest(self, domain: Domain) -> bytes:
        """The 32-byte hash that is signed: ``keccak(0x1901 || domainSeparator || structHash)``."""
        signable = encode_typed_data(full_message=self.typed_data(domain))
        return keccak(b"\x19" + signable.version + signable.header + signable.body)

    def sign(self: M, signer: Signer, domain: Domain) -> SignedMessage[M]:
        """Sign this message for ``domain``."""
        return SignedMessage(message=self, signature=signer.sign_digest(self.digest(domain)))


M = TypeVar("M", bound="Eip712Message")


@dataclass(frozen=True)
class SignedMessage(Generic[M]):
    """A message with its signature."""

    message: M
    signature: Signature


def recover_signer(message: Eip712Message, domain: Domain, signature: Signature | bytes) -> Address:
    """The address that signed ``message`` for ``domain``.

    Raises:
        SignatureError: If the signature is malformed.
    """
    sig = Signature.from_bytes(signature) if isinstance(signature, bytes) else signature
    try:
        recovered = Account._recover_hash(message.digest(domain), vrs=(sig.v, sig.r, sig.s))
    except Exception as err:  # eth-keys raises several types for invalid points
        raise SignatureError(f"cannot recover a signer: {err}") from err
    return to_checksum_address(recovered)


def _message_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [v.to_message() for v in value]
    return value


def _abi_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [v.to_abi() for v in value]
    return value


def _check_value(where: str, sol_type: str, value: Any) -> None:
    if sol_type.startswith("uint"):
        bits = int(sol_type[4:])
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
            raise ValueError(f"{where} must be an integer in [0, 2**{bits}), got {value!r}")
    elif sol_type == "bytes32" and (not isinstance(value, bytes) or len(value) != 32):
        raise ValueError(f"{where} must be exactly 32 bytes, got {value!r}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


Uint32 = Annotated[int, Sol("uint32")]
Uint64 = Annotated[int, Sol("uint64")]
Uint256 = Annotated[int, Sol("uint256")]
B32 = Annotated[bytes, Sol("bytes32")]
Addr = Annotated[Address, Sol("address")]
Bool = Annotated[bool, Sol("bool")]


class Attestation(Eip712Message):
    """A provider's own benchmark measurement (FLOP/s, bytes/s), signed by the provider."""

    type_name: ClassVar[str] = "Attestation"
    provider: Addr
    benchmark_id: B32
    gemm_flops: Uint64
    mem_bandwidth: Uint64
    epoch: Uint32
    nonce: Uint256
    deadline: Uint256


class Measurement(Eip712Message):
    """One benchmark result inside an :class:`AttestationBatch` (FLOP/s, bytes/s)."""

    type_name: ClassVar[str] = "Measurement"
    benchmark_id: B32
    gemm_flops: Uint64
    mem_bandwidth: Uint64


class AttestationBatch(Eip712Message):
    """Many measurements of one epoch, signed once by the provider: one nonce, one signature."""

    type_name: ClassVar[str] = "AttestationBatch"
    nested: ClassVar[tuple[type[Eip712Message], ...]] = (Measurement,)
    provider: Addr
    epoch: Uint32
    nonce: Uint256
    deadline: Uint256
    measurements: Annotated[tuple[Measurement, ...], Sol("Measurement[]")]


class VerifierReport(Eip712Message):
    """A staked verifier's measurement of a provider, answering a challenge."""

    type_name: ClassVar[str] = "VerifierReport"
    verifier: Addr
    provider: Addr
    challenge_id: B32
    measured_flops: Uint64
    passed: Bool
    nonce: Uint256
    deadline: Uint256


class JobTerms(Eip712Message):
    """The exact terms of an escrow job; the provider's signature over them is its acceptance."""

    type_name: ClassVar[str] = "JobTerms"
    job_id: B32
    client: Addr
    provider: Addr
    price: Uint256
    slash_amount: Uint256
    spec_hash: B32
    accept_by: Uint64
    delivery_deadline: Uint64
    challenge_window: Uint64


class Verdict(Eip712Message):
    """A verifier's decision on a disputed escrow result."""

    type_name: ClassVar[str] = "Verdict"
    job_id: B32
    result_hash: B32
    result_valid: Bool


class Voucher(Eip712Message):
    """A client's cumulative promise to pay a provider for all jobs so far."""

    type_name: ClassVar[str] = "Voucher"
    client: Addr
    provider: Addr
    cumulative_amount: Uint256
    cumulative_jobs: Uint64


class JobReceipt(Eip712Message):
    """What a provider signs when it returns a result; two with different results prove equivocation."""

    type_name: ClassVar[str] = "JobReceipt"
    job_id: B32
    provider: Addr
    client: Addr
    result_hash: B32
    queue_micros: Uint64
    compute_micros: Uint64
