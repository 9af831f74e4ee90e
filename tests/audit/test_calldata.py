"""Signature re-checks from calldata: digests, recovery, decoding, and what a changed input is reported as."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import pytest
from _audited import Audited
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak

from proxima.audit.calldata import (
    CalldataReport,
    Domains,
    check_calldata,
    decode_call,
    recover,
    recover_compact,
    typed_digest,
)
from proxima.audit.ledger import AuditLedger, ledger_of, read_parameters
from proxima.audit.store import IndexedEvent, IndexedTransaction
from proxima.contracts import load_artifact
from proxima.sdk.bindings._base import abi_type
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
)

A = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
B = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
MESSAGES: list[tuple[str, Eip712Message]] = [
    ("JobEscrow", JobTerms(job_id=b"\x01" * 32, client=A, provider=B, price=10**18, slash_amount=5,
                           spec_hash=b"\x02" * 32, accept_by=7, delivery_deadline=8, challenge_window=60)),
    ("JobEscrow", Verdict(job_id=b"\x01" * 32, result_hash=b"\x03" * 32, result_valid=True)),
    ("FaultProofs", Verdict(job_id=b"\x01" * 32, result_hash=b"\x03" * 32, result_valid=False)),
    ("PaymentVouchers", Voucher(client=A, provider=B, cumulative_amount=123, cumulative_jobs=4)),
    ("AttestationRegistry", Attestation(provider=B, benchmark_id=b"\x04" * 32, gemm_flops=9, mem_bandwidth=8,
                                        epoch=2, nonce=0, deadline=99)),
    ("AttestationRegistry", AttestationBatch(provider=B, epoch=3, nonce=1, deadline=99, measurements=(
        Measurement(benchmark_id=b"\x05" * 32, gemm_flops=1, mem_bandwidth=2),
        Measurement(benchmark_id=b"\x06" * 32, gemm_flops=3, mem_bandwidth=4)))),
    ("AttestationRegistry", VerifierReport(verifier=A, provider=B, challenge_id=b"\x07" * 32,
                                           measured_flops=5, passed=False, nonce=3, deadline=99)),
    ("FaultProofs", JobReceipt(job_id=b"\x01" * 32, provider=B, client=A, result_hash=b"\x03" * 32,
                               queue_micros=1, compute_micros=2)),
]  # fmt: skip


@pytest.fixture(scope="module")
def ledger(audited: Audited) -> AuditLedger:
    return ledger_of(audited.store, read_parameters(audited.w3, audited.deployment, audited.facts.end_block))


@pytest.fixture(scope="module")
def by_tx(audited: Audited) -> dict[bytes, list[IndexedEvent]]:
    grouped: dict[bytes, list[IndexedEvent]] = defaultdict(list)
    for event in audited.store.events():
        grouped[event.tx_hash].append(event)
    return grouped


def _check(audited: Audited, ledger: AuditLedger, by_tx: dict[bytes, list[IndexedEvent]],
           replace: dict[bytes, IndexedTransaction | None] | None = None) -> CalldataReport:  # fmt: skip
    replace = replace or {}
    txs = [replace.get(tx.hash, tx) for tx in audited.store.transactions()]
    return check_calldata([tx for tx in txs if tx is not None], by_tx, ledger, audited.deployment)


def _encode(contract: str, function: str, args: dict[str, Any]) -> bytes:
    item = next(
        i for i in load_artifact(contract).abi if i.get("name") == function and i["type"] == "function"
    )
    types = [abi_type(i) for i in item["inputs"]]
    selector = keccak(text=f"{function}({','.join(types)})")[:4]
    return selector + abi_encode(types, [args[i["name"]] for i in item["inputs"]])


def _with_input(audited: Audited, step: str, change: Any) -> tuple[bytes, IndexedTransaction]:
    tx = audited.store.transaction(audited.facts.tx[step])
    assert tx is not None
    assert tx.to is not None
    contract = next(n for n, a in audited.deployment.contracts.items() if a == tx.to)
    call = decode_call(contract, tx.input)
    assert call is not None
    args = change(dict(call.args))
    return tx.hash, dataclasses.replace(tx, input=_encode(contract, call.function, args))


@pytest.mark.parametrize(("contract", "message"), MESSAGES, ids=[f"{c}-{m.type_name}" for c, m in MESSAGES])
def test_typed_digest_equals_the_sdk_digest(audited: Audited, contract: str, message: Eip712Message) -> None:
    domains = Domains.of(audited.deployment, audited.chain.chain_id)
    assert typed_digest(domains.separators[contract], type(message), message.to_abi()) == message.digest(
        domains.domains[contract]
    )


def test_recover_matches_openzeppelin_rules() -> None:
    account = Account.create()
    digest = keccak(b"proxima")
    sig = LocalSigner(account).sign_digest(digest)
    assert recover(digest, sig.to_bytes()) == account.address
    assert recover_compact(digest, *sig.to_compact()) == account.address
    # the same signature with s -> n - s (and v flipped) is valid ECDSA, but OpenZeppelin refuses high s
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = sig.r.to_bytes(32, "big") + (n - sig.s).to_bytes(32, "big") + bytes([55 - sig.v])
    assert recover(digest, high_s) is None
    assert recover(digest, sig.to_bytes()[:64] + b"\x01") is None  # v must be 27 or 28, as ecrecover wants
    assert recover(digest, sig.to_bytes()[:64]) is None


def test_decode_call_reads_the_terms_of_open_job(audited: Audited) -> None:
    tx = audited.store.transaction(audited.facts.tx["open:confirmed"])
    assert tx is not None
    call = decode_call("JobEscrow", tx.input)
    assert call is not None
    assert call.function == "openJob"
    assert call.args["terms"][0] == audited.facts.jobs["confirmed"]
    assert call.args["terms"][2] == audited.facts.providers[0]
    assert decode_call("PaymentVouchers", tx.input) is None  # not a function of that contract
    assert decode_call("JobEscrow", tx.input[:40]) is None


def test_every_signature_of_the_world_checks_out(audited: Audited, ledger: AuditLedger, by_tx: Any) -> None:
    report = _check(audited, ledger, by_tx)
    assert report.issues == []
    # 9 openJob + 2x2 dispute verdicts + 2 single vouchers + 2 batched + 1 + 2 attestations + 1 signed batch
    # + 1 + 3 reports + 2 equivocation receipts + (1 + 2) canary + (1 + 3) invalid result
    assert report.signatures == 34
    # every indexed transaction but the deployments (whose constructors emitted RoleGranted)
    assert report.transactions == len([t for t in audited.store.transactions() if t.to is not None])


def test_a_verdict_signed_by_a_non_verifier_is_reported(
    audited: Audited, ledger: AuditLedger, by_tx: Any
) -> None:
    client = audited.chain.accounts[8]
    job_id = audited.facts.jobs["dispute_valid"]

    def forge(args: dict[str, Any]) -> dict[str, Any]:
        verdict = Verdict(job_id=job_id, result_hash=args["verdict"][1], result_valid=True)
        domain = Domains.of(audited.deployment, audited.chain.chain_id).domains["JobEscrow"]
        own = verdict.sign(LocalSigner(client), domain).signature.to_bytes()
        return {**args, "signatures": [args["signatures"][0], own]}

    tx_hash, forged = _with_input(audited, "resolve:valid", forge)
    report = _check(audited, ledger, by_tx, {tx_hash: forged})
    assert {i.kind for i in report.issues} >= {"signer_inactive"}
    assert any(i.subject == client.address for i in report.issues)


def test_unsorted_and_too_few_verdicts_are_reported(
    audited: Audited, ledger: AuditLedger, by_tx: Any
) -> None:
    tx_hash, swapped = _with_input(
        audited, "prove:invalid", lambda a: {**a, "verdictSignatures": a["verdictSignatures"][::-1]}
    )
    assert "verdict_order" in {i.kind for i in _check(audited, ledger, by_tx, {tx_hash: swapped}).issues}
    tx_hash, short = _with_input(audited, "resolve:valid", lambda a: {**a, "signatures": a["signatures"][:1]})
    kinds = {i.kind for i in _check(audited, ledger, by_tx, {tx_hash: short}).issues}
    assert {"quorum", "calldata"} <= kinds  # DisputeResolved says 2 signers


def test_a_voucher_changed_after_signing_is_reported(
    audited: Audited, ledger: AuditLedger, by_tx: Any
) -> None:
    def more(args: dict[str, Any]) -> dict[str, Any]:
        client, provider, amount, jobs = args["voucher"]
        return {**args, "voucher": (client, provider, amount + 1, jobs)}

    tx_hash, forged = _with_input(audited, "redeem:single", more)
    issues = _check(audited, ledger, by_tx, {tx_hash: forged}).issues
    assert {i.kind for i in issues} == {"signature", "calldata"}
    [bad] = [i for i in issues if i.kind == "signature"]
    assert bad.expected == audited.facts.clients[0]
    assert bad.tx_hash == tx_hash


def test_an_event_without_its_transaction_is_reported(
    audited: Audited, ledger: AuditLedger, by_tx: Any
) -> None:
    tx_hash = audited.facts.tx["open:released"]
    issues = _check(audited, ledger, by_tx, {tx_hash: None}).issues
    assert [(i.kind, i.subject) for i in issues] == [("unverified_event", "JobEscrow.JobOpened")]
    assert "not in the index" in issues[0].actual


def test_registering_someone_elses_peer_id_is_reported(
    audited: Audited, ledger: AuditLedger, by_tx: Any
) -> None:
    tx = next(
        t for t in audited.store.transactions() if t.sender == audited.facts.providers[1] and t.value > 0
    )
    other = next(
        t for t in audited.store.transactions() if t.sender == audited.facts.providers[2] and t.value > 0
    )
    forged = dataclasses.replace(tx, input=other.input)
    kinds = [i.kind for i in _check(audited, ledger, by_tx, {tx.hash: forged}).issues]
    assert "signature" in kinds
