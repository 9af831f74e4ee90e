"""Job protocol messages: encoding, strict decoding that names the field, signatures, receipts, domains."""

from __future__ import annotations

import json
import secrets

import pytest
from eth_account import Account

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import InProcessChain
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import Domain, JobReceipt, JobTerms, LocalSigner, Voucher
from proxima.sdk.errors import SignatureError
from proxima.sdk.jobs import (
    MAX_MESSAGE_CHARS,
    Domains,
    ErrorCode,
    EscrowPayment,
    JobFailure,
    JobRequest,
    JobResult,
    MalformedMessageError,
    Quote,
    QuoteRequest,
    VoucherPayment,
    decode_request,
    decode_response,
    encode,
    request_digest,
    sign_quote,
    sign_request,
    verify_receipt,
    verify_request,
)

CLIENT = LocalSigner.from_key(b"\x01" * 32)
PROVIDER = LocalSigner.from_key(b"\x02" * 32)
OTHER = LocalSigner.from_key(b"\x03" * 32)
DOMAINS = Domains(
    chain_id=31337,
    escrow="0x" + "11" * 20,
    faults="0x" + "22" * 20,
    vouchers="0x" + "33" * 20,
)
JOB_ID = bytes(range(32))


def voucher_payment(amount: int = 10**15, jobs: int = 1) -> VoucherPayment:
    voucher = Voucher(
        client=CLIENT.address, provider=PROVIDER.address, cumulative_amount=amount, cumulative_jobs=jobs
    )
    signed = voucher.sign(CLIENT, DOMAINS.vouchers_domain)
    return VoucherPayment(voucher=voucher, signature=signed.signature.to_bytes())


def job_request(**changes: object) -> JobRequest:
    fields: dict[str, object] = {
        "job_id": JOB_ID,
        "client": CLIENT.address,
        "provider": PROVIDER.address,
        "workload": "matmul",
        "input": {"seed": 7, "m": 4, "k": 3, "n": 2, "dtype": "float64", "note": "naïve ☃ 1.5e-7"},
        "payment": voucher_payment(),
        "issued_at": 1_700_000_000,
    }
    fields.update(changes)
    return JobRequest.model_validate(fields)


def receipt(**changes: object) -> JobReceipt:
    fields: dict[str, object] = {
        "job_id": JOB_ID,
        "provider": PROVIDER.address,
        "client": CLIENT.address,
        "result_hash": b"\x7e" * 32,
        "queue_micros": 1_500,
        "compute_micros": 42_000,
    }
    fields.update(changes)
    return JobReceipt.model_validate(fields)


def job_result(signer: LocalSigner = PROVIDER, **changes: object) -> JobResult:
    r = receipt(**changes)
    signature = r.sign(signer, DOMAINS.faults_domain).signature.to_bytes()
    return JobResult(job_id=JOB_ID, workload="matmul", output={"c": {"x": 1}}, receipt=r, signature=signature)


def terms() -> JobTerms:
    return JobTerms(
        job_id=JOB_ID,
        client=CLIENT.address,
        provider=PROVIDER.address,
        price=3 * 10**15,
        slash_amount=3 * 10**15,
        spec_hash=b"\x5e" * 32,
        accept_by=1_700_000_120,
        delivery_deadline=1_700_000_900,
        challenge_window=600,
    )


# --- encoding --------------------------------------------------------------------------------------------


def test_requests_round_trip_through_their_encoding() -> None:
    messages = [
        QuoteRequest(client=CLIENT.address, workload="embed", input={"texts": ["a"], "model": "m"}),
        sign_request(job_request(), CLIENT),
        sign_request(job_request(payment=EscrowPayment()), CLIENT),
    ]
    for message in messages:
        assert decode_request(encode(message)) == message


def test_responses_round_trip_through_their_encoding() -> None:
    messages = [
        sign_quote(terms(), 3, PROVIDER, DOMAINS.escrow_domain),
        job_result(),
        JobFailure.of(ErrorCode.BUSY, "queue full", JOB_ID, retry_after=0.25),
        JobFailure.of(ErrorCode.MALFORMED, "not JSON"),
    ]
    for message in messages:
        assert decode_response(encode(message)) == message


def test_encoding_is_canonical_json_with_hex_bytes_and_camel_case_eip712_fields() -> None:
    data = encode(job_result())
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    wire = json.loads(data)
    assert wire["job_id"] == "0x" + JOB_ID.hex()
    assert wire["receipt"]["resultHash"] == "0x" + "7e" * 32
    assert wire["receipt"]["queueMicros"] == 1_500
    assert wire["signature"] == "0x" + job_result().signature.hex()


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda w: w.update(issued_at=True), "issued_at"),
        (lambda w: w.update(issued_at=1.5), "issued_at"),
        (lambda w: w.update(issued_at="1700000000"), "issued_at"),
        (lambda w: w.update(job_id="0x" + "ab" * 31), "job_id"),
        (lambda w: w.update(job_id="ab" * 32), "job_id"),
        (lambda w: w.update(job_id="0x" + "zz" * 32), "job_id"),
        (lambda w: w.update(client="0x" + CLIENT.address[2:].swapcase()), "checksum"),
        (lambda w: w.update(workload="Mat Mul"), "workload"),
        (lambda w: w.update(extra=1), "extra"),
        (lambda w: w.pop("payment"), "payment"),
        (lambda w: w["payment"].update(kind="cash"), "payment"),
        (lambda w: w["payment"]["voucher"].update(cumulativeAmount=-1), "cumulativeAmount"),
        (lambda w: w["payment"]["voucher"].update(bonus=1), "bonus"),
        (lambda w: w["payment"].update(signature="0x00"), "signature"),
        (lambda w: w.update(kind="launch"), "kind"),
    ],
)
def test_decoding_a_bad_request_names_the_field(mutate: object, named: str) -> None:
    wire = json.loads(encode(sign_request(job_request(), CLIENT)))
    mutate(wire)  # type: ignore[operator]
    with pytest.raises(MalformedMessageError, match=named):
        decode_request(json.dumps(wire).encode())


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "object"),
        (b'{"kind": "run"}', "job_id"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (b'{"kind":"quote","client":"0x' + b"11" * 20 + b'","workload":"w","input":{"a":"\\ud800"}}', "JSON"),
    ],
)
def test_decoding_bytes_that_are_not_a_request_is_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedMessageError, match=problem) as info:
        decode_request(data)
    assert str(info.value).startswith("malformed request: ")
    assert len(str(info.value)) < 1000


def test_failure_messages_are_cut_to_the_limit() -> None:
    failure = JobFailure.of(ErrorCode.INVALID_INPUT, "x" * 5000)
    assert len(failure.message) == MAX_MESSAGE_CHARS
    assert decode_response(encode(failure)) == failure
    wire = json.loads(encode(failure))
    wire["message"] = "x" * (MAX_MESSAGE_CHARS + 1)
    with pytest.raises(MalformedMessageError, match="message"):
        decode_response(json.dumps(wire).encode())


# --- request signatures ----------------------------------------------------------------------------------


def test_signed_request_verifies_after_a_trip_over_the_wire() -> None:
    signed = sign_request(job_request(), CLIENT)
    assert verify_request(decode_request(encode(signed))) == CLIENT.address  # type: ignore[arg-type]


def test_unsigned_request_is_refused() -> None:
    with pytest.raises(SignatureError, match="not signed"):
        verify_request(job_request())


def test_request_signed_by_another_key_is_refused() -> None:
    request = job_request()
    forged = request.model_copy(update={"signature": OTHER.sign_digest(request_digest(request)).to_bytes()})
    with pytest.raises(SignatureError, match=f"signed by {OTHER.address}, not by its client"):
        verify_request(forged)


@pytest.mark.parametrize(
    "change",
    [
        {"input": {"seed": 8, "m": 4, "k": 3, "n": 2, "dtype": "float64"}},
        {"issued_at": 1_700_000_001},
        {"job_id": b"\x01" * 32},
        {"provider": OTHER.address},
        {"payment": EscrowPayment()},
    ],
)
def test_any_change_after_signing_breaks_the_signature(change: dict[str, object]) -> None:
    tampered = sign_request(job_request(), CLIENT).model_copy(update=change)
    with pytest.raises(SignatureError):
        verify_request(tampered)


def test_malformed_signature_bytes_are_refused() -> None:
    bad = job_request().model_copy(update={"signature": b"\x00" * 64 + b"\x1b"})
    with pytest.raises(SignatureError):
        verify_request(bad)


def test_signing_for_someone_else_is_refused() -> None:
    with pytest.raises(SignatureError, match="client is"):
        sign_request(job_request(), OTHER)


def test_request_digest_is_personal_sign_over_the_hash_of_the_unsigned_json() -> None:
    from eth_account.messages import encode_defunct
    from eth_utils.crypto import keccak

    signed = sign_request(job_request(), CLIENT)
    body = json.loads(encode(signed))
    del body["signature"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    message = encode_defunct(primitive=keccak(canonical))
    assert Account.recover_message(message, signature=signed.signature) == CLIENT.address


# --- quotes and receipts ---------------------------------------------------------------------------------


def test_quote_is_signed_by_the_provider_in_the_escrow_domain() -> None:
    quote = sign_quote(terms(), 3, PROVIDER, DOMAINS.escrow_domain)
    assert quote.signer(DOMAINS.escrow_domain) == PROVIDER.address
    assert quote.signer(DOMAINS.faults_domain) != PROVIDER.address
    assert quote.signed().message == quote.terms
    with pytest.raises(SignatureError, match="provider is"):
        sign_quote(terms(), 3, OTHER, DOMAINS.escrow_domain)


def test_receipt_verifies_only_for_its_provider_job_and_domain() -> None:
    result = job_result()
    assert verify_receipt(result, DOMAINS.faults_domain, PROVIDER.address)
    assert not verify_receipt(result, DOMAINS.faults_domain, OTHER.address)
    assert not verify_receipt(result, DOMAINS.escrow_domain, PROVIDER.address)
    assert not verify_receipt(job_result(signer=OTHER), DOMAINS.faults_domain, PROVIDER.address)
    assert not verify_receipt(job_result(job_id=b"\x09" * 32), DOMAINS.faults_domain, PROVIDER.address)
    broken = result.model_copy(update={"signature": b"\x00" * 65})
    assert not verify_receipt(broken, DOMAINS.faults_domain, PROVIDER.address)
    assert result.queue_ms == 1.5
    assert result.compute_ms == 42.0


def test_domains_of_a_deployment_match_the_contracts_digests() -> None:
    with InProcessChain() as chain:
        deployment = deploy_all(chain, chain.accounts[0])
        contracts = ProximaContracts.from_deployment(chain, deployment)
        domains = Domains.from_deployment(deployment)
        assert domains.chain_id == chain.chain_id
        assert contracts.escrow.hash_terms(terms()) == terms().digest(domains.escrow_domain)
        assert contracts.fault_proofs.hash_receipt(receipt()) == receipt().digest(domains.faults_domain)
        voucher = voucher_payment().voucher
        assert contracts.vouchers.hash_voucher(voucher) == voucher.digest(domains.vouchers_domain)
        assert {domains.escrow_domain, domains.faults_domain, domains.vouchers_domain} == {
            contracts.escrow.domain,
            contracts.fault_proofs.domain,
            contracts.vouchers.domain,
        }


def test_domains_reject_a_bad_address() -> None:
    with pytest.raises(ValueError, match="escrow"):
        Domains(chain_id=1, escrow="0x1234", faults="0x" + "22" * 20, vouchers="0x" + "33" * 20)
    assert isinstance(DOMAINS.escrow_domain, Domain)


def test_random_job_ids_travel_intact() -> None:
    job_id = secrets.token_bytes(32)
    request = sign_request(job_request(job_id=job_id), CLIENT)
    decoded = decode_request(encode(request))
    assert isinstance(decoded, JobRequest)
    assert decoded.job_id == job_id
    assert isinstance(decode_response(encode(sign_quote(terms(), 1, PROVIDER, DOMAINS.escrow_domain))), Quote)
