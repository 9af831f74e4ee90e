"""EIP-712: the Python message definitions hash exactly as the contracts do; peer ids map to addresses."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from proxima.sdk import eip712
from proxima.sdk.eip712 import (
    Attestation,
    AttestationBatch,
    Eip712Message,
    JobReceipt,
    JobTerms,
    LocalSigner,
    Measurement,
    Verdict,
    VerifierReport,
    Voucher,
    recover_signer,
)
from proxima.sdk.peerid import (
    InvalidPeerIdError,
    address_of_peer_id,
    peer_id_from_key,
    peer_id_to_base58,
)

if TYPE_CHECKING:
    from conftest import System  # tests/contracts/conftest.py

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
PREFIX = bytes.fromhex("002508021221")
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# message type -> (binding attribute on ProximaContracts, hash view, TYPEHASH constant)
CONTRACT_OF: dict[type[Eip712Message], tuple[str, str, str]] = {
    Attestation: ("attestations", "hashAttestation", "ATTESTATION_TYPEHASH"),
    AttestationBatch: ("attestations", "hashAttestationBatch", "ATTESTATION_BATCH_TYPEHASH"),
    VerifierReport: ("attestations", "hashReport", "VERIFIER_REPORT_TYPEHASH"),
    JobTerms: ("escrow", "hashTerms", "JOB_TERMS_TYPEHASH"),
    Verdict: ("escrow", "hashVerdict", "VERDICT_TYPEHASH"),
    Voucher: ("vouchers", "hashVoucher", "VOUCHER_TYPEHASH"),
    JobReceipt: ("fault_proofs", "hashReceipt", "JOB_RECEIPT_TYPEHASH"),
}
MESSAGES = [pytest.param(m, id=m.__name__) for m in CONTRACT_OF]

HYPOTHESIS = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=25
)

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)


def _field_strategy(sol_type: str) -> st.SearchStrategy[Any]:
    if sol_type.startswith("uint"):
        bits = int(sol_type[4:])
        # edges are where encodings break; draw them often
        return st.one_of(st.sampled_from([0, 1, 2**bits - 1]), st.integers(0, 2**bits - 1))
    if sol_type == "bytes32":
        return st.binary(min_size=32, max_size=32)
    if sol_type == "address":
        return addresses
    if sol_type == "bool":
        return st.booleans()
    if sol_type == "Measurement[]":
        return st.lists(messages(Measurement), max_size=4).map(tuple)
    raise AssertionError(f"no strategy for {sol_type}")


def messages(kind: type[Eip712Message]) -> st.SearchStrategy[Eip712Message]:
    fields = {
        name: _field_strategy(sol)
        for name, (_, sol) in zip(kind.model_fields, kind.eip712_fields(), strict=True)
    }
    return st.fixed_dictionaries(fields).map(lambda values: kind(**values))


def contract_digest(px: System, message: Eip712Message) -> bytes:
    binding_name, view, _ = CONTRACT_OF[type(message)]
    binding = getattr(px.c, binding_name)
    return bytes(binding._call(view, message.to_abi()))


def domain_of(px: System, message: Eip712Message) -> Any:
    return getattr(px.c, CONTRACT_OF[type(message)][0]).domain


def fixed_example(kind: type[Eip712Message]) -> Eip712Message:
    values: dict[str, Any] = {}
    for i, (name, (_, sol)) in enumerate(zip(kind.model_fields, kind.eip712_fields(), strict=True)):
        if sol.startswith("uint"):
            values[name] = 10**6 + i
        elif sol == "bytes32":
            values[name] = bytes([i + 1]) * 32
        elif sol == "address":
            values[name] = to_checksum_address(bytes([0xA0 + i]) * 20)
        elif sol == "Measurement[]":
            values[name] = (fixed_example(Measurement), fixed_example(Measurement))
        else:
            values[name] = True
    return kind(**values)


# --- the table above covers every message type ------------------------------------------------


def test_every_message_type_is_checked_against_a_contract() -> None:
    defined = {
        obj
        for obj in vars(eip712).values()
        if inspect.isclass(obj) and issubclass(obj, Eip712Message) and obj is not Eip712Message
    }
    nested_only = {n for kind in defined for n in kind.nested}
    assert defined - nested_only == set(CONTRACT_OF)


def test_nested_type_hash_equals_contract(px: System) -> None:
    assert bytes(px.c.attestations._call("MEASUREMENT_TYPEHASH")) == Measurement.type_hash()


# --- digests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MESSAGES)
def test_digest_equals_contract_hash_fixed_example(px: System, kind: type[Eip712Message]) -> None:
    message = fixed_example(kind)
    assert message.digest(domain_of(px, message)) == contract_digest(px, message)


@pytest.mark.parametrize("kind", MESSAGES)
@HYPOTHESIS
@given(data=st.data())
def test_digest_equals_contract_hash_for_any_values(
    px_inprocess: System, kind: type[Eip712Message], data: st.DataObject
) -> None:
    message = data.draw(messages(kind))
    assert message.digest(domain_of(px_inprocess, message)) == contract_digest(px_inprocess, message)


@pytest.mark.parametrize("kind", MESSAGES)
def test_digest_depends_on_every_field(px_inprocess: System, kind: type[Eip712Message]) -> None:
    """Changing any one field changes both digests (no field is left out of the hash)."""
    base = fixed_example(kind)
    domain = domain_of(px_inprocess, base)
    for name, (camel, sol) in zip(kind.model_fields, kind.eip712_fields(), strict=True):
        value = getattr(base, name)
        if sol == "bool":
            changed: Any = not value
        elif sol == "address":
            changed = to_checksum_address(b"\x01" * 20)
        elif sol == "bytes32":
            changed = b"\xff" * 32
        elif sol == "Measurement[]":
            changed = (*value[:-1], value[-1].model_copy(update={"gemm_flops": value[-1].gemm_flops + 1}))
        else:
            changed = value + 1
        other = base.model_copy(update={name: changed})
        assert other.digest(domain) != base.digest(domain), camel
        assert contract_digest(px_inprocess, other) == other.digest(domain), camel


@pytest.mark.parametrize("kind", MESSAGES)
def test_type_hash_equals_contract_constant(px: System, kind: type[Eip712Message]) -> None:
    binding_name, _, constant = CONTRACT_OF[kind]
    on_chain = bytes(getattr(px.c, binding_name)._call(constant))
    assert kind.type_hash() == on_chain
    assert kind.type_hash() == keccak(text=kind.encode_type())


@pytest.mark.parametrize("binding_name", ["attestations", "escrow", "vouchers", "fault_proofs"])
def test_binding_domain_equals_contract_eip712_domain(px: System, binding_name: str) -> None:
    binding = getattr(px.c, binding_name)
    _, name, version, chain_id, verifying_contract, _, _ = binding._call("eip712Domain")
    domain = binding.domain
    assert (domain.name, domain.version, domain.chain_id) == (name, version, chain_id)
    assert domain.verifying_contract == to_checksum_address(verifying_contract)


@pytest.mark.parametrize("kind", MESSAGES)
def test_sign_then_recover_returns_signer(px_inprocess: System, kind: type[Eip712Message]) -> None:
    message = fixed_example(kind)
    domain = domain_of(px_inprocess, message)
    account = px_inprocess.providers[0]
    signed = message.sign(LocalSigner(account), domain)
    assert recover_signer(message, domain, signed.signature) == account.address
    assert recover_signer(message, domain, signed.signature.to_bytes()) == account.address


# --- validation -------------------------------------------------------------------------------


def _attestation(**overrides: Any) -> Attestation:
    values: dict[str, Any] = {
        "provider": to_checksum_address(b"\x01" * 20),
        "benchmark_id": b"\x02" * 32,
        "gemm_flops": 1,
        "mem_bandwidth": 1,
        "epoch": 1,
        "nonce": 0,
        "deadline": 1,
    }
    return Attestation(**{**values, **overrides})


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("gemm_flops", 2**64, "Attestation.gemmFlops must be an integer in [0, 2**64)"),
        ("gemm_flops", -1, "Attestation.gemmFlops must be an integer in [0, 2**64)"),
        ("epoch", 2**32, "Attestation.epoch must be an integer in [0, 2**32)"),
        ("nonce", 2**256, "Attestation.nonce must be an integer in [0, 2**256)"),
        ("benchmark_id", b"\x02" * 31, "Attestation.benchmarkId must be exactly 32 bytes"),
        ("benchmark_id", b"\x02" * 33, "Attestation.benchmarkId must be exactly 32 bytes"),
        ("benchmark_id", "0x" + "02" * 32, "Input should be a valid bytes"),
    ],
    ids=[
        "uint64-overflow",
        "uint64-negative",
        "uint32-overflow",
        "uint256-overflow",
        "31-bytes",
        "33-bytes",
        "hex-text",
    ],
)
def test_message_rejects_out_of_range_values(field: str, value: Any, expected: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(expected)):
        _attestation(**{field: value})


_CAMEL = {"epoch": "epoch", "gemm_flops": "gemmFlops", "benchmark_id": "benchmarkId"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("epoch", True, id="bool-as-uint32"),
        pytest.param("gemm_flops", False, id="bool-as-uint64"),
        pytest.param("benchmark_id", "a" * 32, id="text-as-bytes32"),
    ],
)
def test_message_rejects_values_of_the_wrong_python_type(field: str, value: Any) -> None:
    """A bool is not a uint and text is not bytes32: they must not be coerced into valid-looking values."""
    with pytest.raises(ValidationError, match=rf"{field}\n\s+Input should be a valid (integer|bytes)"):
        _attestation(**{field: value})


def test_message_accepts_range_limits() -> None:
    message = _attestation(gemm_flops=2**64 - 1, epoch=2**32 - 1, nonce=2**256 - 1, mem_bandwidth=0)
    assert message.to_abi()[2:5] == (2**64 - 1, 0, 2**32 - 1)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (JobTerms, "accept_by", 2**64),
        (JobTerms, "spec_hash", b"\x00" * 31),
        (Verdict, "result_hash", b"\x00" * 31),
        (Voucher, "cumulative_jobs", 2**64),
        (JobReceipt, "compute_micros", 2**64),
        (VerifierReport, "measured_flops", 2**64),
    ],
)
def test_every_message_type_validates_ranges(kind: type[Eip712Message], field: str, value: Any) -> None:
    values = {**fixed_example(kind).model_dump(), field: value}
    with pytest.raises(ValidationError, match=kind.__name__):
        kind(**values)


def test_message_rejects_unknown_field() -> None:
    with pytest.raises(ValidationError):
        _attestation(gas=1)


# --- peer ids ---------------------------------------------------------------------------------


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + BASE58.index(char)
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


@pytest.mark.parametrize(
    "key", [1, 2, SECP256K1_N - 1, 0xDEADBEEF, int.from_bytes(keccak(b"proxima"), "big")]
)
def test_peer_id_round_trip_equals_account_address(key: int) -> None:
    private = key.to_bytes(32, "big")
    pid = peer_id_from_key(private)
    assert len(pid) == 39
    assert pid.startswith(PREFIX)
    assert pid[6] in (2, 3)
    assert address_of_peer_id(pid) == Account.from_key(private).address
    text = peer_id_to_base58(pid)
    assert text.startswith("16Uiu2")
    assert _b58decode(text) == pid


@settings(max_examples=25, deadline=None)
@given(key=st.integers(1, SECP256K1_N - 1))
def test_peer_id_round_trip_for_any_key(key: int) -> None:
    private = key.to_bytes(32, "big")
    pid = peer_id_from_key(private)
    assert address_of_peer_id(pid) == Account.from_key(private).address
    assert peer_id_to_base58(pid).startswith("16Uiu2")


def test_peer_id_of_dev_accounts_matches_their_addresses(px_inprocess: System) -> None:
    for account in px_inprocess.chain.accounts:
        assert address_of_peer_id(peer_id_from_key(bytes(account.key))) == account.address


def _x_not_on_curve() -> int:
    x = 1
    while pow((x**3 + 7) % SECP256K1_P, (SECP256K1_P - 1) // 2, SECP256K1_P) == 1:
        x += 1
    return x


_GOOD = peer_id_from_key(b"\x01" * 32)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_GOOD[:38], id="38-bytes"),
        pytest.param(_GOOD + b"\x00", id="40-bytes"),
        pytest.param(b"\x01" + _GOOD[1:], id="wrong-multihash"),
        pytest.param(_GOOD[:3] + b"\x01" + _GOOD[4:], id="ed25519-key-type"),
        pytest.param(_GOOD[:6] + b"\x04" + _GOOD[7:], id="parity-byte-4"),
        pytest.param(PREFIX + b"\x02" + _x_not_on_curve().to_bytes(32, "big"), id="x-not-on-curve"),
        pytest.param(PREFIX + b"\x03" + b"\xff" * 32, id="x-above-p"),
    ],
)
def test_address_of_peer_id_rejects_malformed_input(bad: bytes) -> None:
    with pytest.raises(InvalidPeerIdError, match="invalid secp256k1 peer id"):
        address_of_peer_id(bad)
    assert issubclass(InvalidPeerIdError, ValueError)
