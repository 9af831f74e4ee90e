"""AttestationRegistry: signed provider attestations and verifier reports, single and batched."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest
from _support import block_time, reverts
from eth_account.signers.local import LocalAccount

from proxima.sdk.bindings import decode_events
from proxima.sdk.eip712 import (
    Attestation,
    AttestationBatch,
    LocalSigner,
    Measurement,
    Signature,
    SignedMessage,
    VerifierReport,
    recover_signer,
)

if TYPE_CHECKING:
    from conftest import System  # tests/contracts/conftest.py

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
BENCH = b"\xbe" * 32
CHALLENGE = b"\xc4" * 32


def attestation(
    px: System,
    provider: LocalAccount,
    *,
    nonce: int | None = None,
    epoch: int = 1,
    flops: int = 10**14,
    bandwidth: int = 2 * 10**12,
    deadline: int | None = None,
) -> Attestation:
    return Attestation(
        provider=provider.address,
        benchmark_id=BENCH,
        gemm_flops=flops,
        mem_bandwidth=bandwidth,
        epoch=epoch,
        nonce=px.c.attestations.nonce_of(provider.address) if nonce is None else nonce,
        deadline=px.chain.now() + 3_600 if deadline is None else deadline,
    )


def report(
    px: System,
    verifier: LocalAccount,
    provider: LocalAccount,
    *,
    nonce: int | None = None,
    flops: int = 9 * 10**13,
    passed: bool = True,
    deadline: int | None = None,
) -> VerifierReport:
    return VerifierReport(
        verifier=verifier.address,
        provider=provider.address,
        challenge_id=CHALLENGE,
        measured_flops=flops,
        passed=passed,
        nonce=px.c.attestations.nonce_of(verifier.address) if nonce is None else nonce,
        deadline=px.chain.now() + 3_600 if deadline is None else deadline,
    )


def sign(px: System, message: Any, signer: LocalAccount) -> SignedMessage[Any]:
    return message.sign(LocalSigner(signer), px.c.attestations.domain)


def sign_attestation(px: System, provider: LocalAccount, **kwargs: Any) -> SignedMessage[Attestation]:
    return sign(px, attestation(px, provider, **kwargs), provider)


def sign_report(
    px: System, verifier: LocalAccount, provider: LocalAccount, **kwargs: Any
) -> SignedMessage[VerifierReport]:
    return sign(px, report(px, verifier, provider, **kwargs), verifier)


def figures(px: System, provider: LocalAccount) -> dict[str, int]:
    return px.c.attestations.latest_figures(provider.address).model_dump()


def all_events(px: System, name: str) -> list[dict[str, Any]]:
    """Every event ``name`` the attestation registry emitted since deployment (the full history)."""
    logs = px.chain.w3.eth.get_logs(
        {"address": px.c.attestations.address, "fromBlock": px.c.deployment.block_number}
    )
    found = decode_events({"logs": logs}, {px.c.attestations.address: "AttestationRegistry"})  # type: ignore[typeddict-item]
    return [e.args for e in found if e.name == name]


# --- single attestation -----------------------------------------------------------------------


def test_submit_attestation_stores_latest_figures_and_emits_event(px: System) -> None:
    provider = px.providers[0]
    signed = sign_attestation(px, provider, epoch=3, flops=123_456, bandwidth=789)
    receipt = px.c.attestations.submit_attestation(px.outsider, signed)  # anyone may submit

    assert figures(px, provider) == {
        "gemm_flops": 123_456,
        "mem_bandwidth": 789,
        "epoch": 3,
        "updated_at": block_time(px, receipt),
    }
    assert px.c.attestations.nonce_of(provider.address) == 1
    [event] = px.c.attestations.events(receipt, "AttestationSubmitted")
    assert event.args == {
        "provider": provider.address,
        "benchmarkId": BENCH,
        "gemmFlops": 123_456,
        "memBandwidth": 789,
        "epoch": 3,
        "nonce": 0,
    }


def test_submit_attestation_keeps_latest_and_events_keep_history(px: System) -> None:
    provider = px.providers[0]
    for epoch, flops in ((1, 100), (2, 200), (2, 150)):  # the same epoch may be re-attested
        px.c.attestations.submit_attestation(
            provider, sign_attestation(px, provider, epoch=epoch, flops=flops)
        )
    assert figures(px, provider)["gemm_flops"] == 150
    assert figures(px, provider)["epoch"] == 2
    history = [(e["epoch"], e["gemmFlops"], e["nonce"]) for e in all_events(px, "AttestationSubmitted")]
    assert history == [(1, 100, 0), (2, 200, 1), (2, 150, 2)]


def test_submit_attestation_accepts_max_field_values(px: System) -> None:
    provider = px.providers[0]
    signed = sign_attestation(
        px, provider, epoch=2**32 - 1, flops=2**64 - 1, bandwidth=2**64 - 1, deadline=2**256 - 1
    )
    px.c.attestations.submit_attestation(provider, signed)
    got = figures(px, provider)
    assert (got["gemm_flops"], got["mem_bandwidth"], got["epoch"]) == (
        2**64 - 1,
        2**64 - 1,
        2**32 - 1,
    )


def test_submit_attestation_rejects_replay(px: System) -> None:
    provider = px.providers[0]
    signed = sign_attestation(px, provider)
    px.c.attestations.submit_attestation(provider, signed)
    with reverts("InvalidAccountNonce", {"account": provider.address, "currentNonce": 1}):
        px.c.attestations.submit_attestation(px.outsider, signed)


def test_submit_attestation_rejects_future_nonce(px: System) -> None:
    provider = px.providers[0]
    with reverts("InvalidAccountNonce", {"account": provider.address, "currentNonce": 0}):
        px.c.attestations.submit_attestation(provider, sign_attestation(px, provider, nonce=1))


@pytest.mark.parametrize("mismatch", ["chain_id", "verifying_contract", "name"])
def test_submit_attestation_rejects_signature_for_other_domain(px: System, mismatch: str) -> None:
    provider = px.providers[0]
    domain = px.c.attestations.domain
    other = {
        "chain_id": dataclasses.replace(domain, chain_id=domain.chain_id + 1),
        "verifying_contract": dataclasses.replace(domain, verifying_contract=px.c.escrow.address),
        "name": dataclasses.replace(domain, name="Proxima Receipts"),
    }[mismatch]
    message = attestation(px, provider)
    signed = message.sign(LocalSigner(provider), other)
    recovered = recover_signer(message, domain, signed.signature)
    assert recovered != provider.address
    with reverts("AttestationInvalidSigner", {"expected": provider.address, "recovered": recovered}):
        px.c.attestations.submit_attestation(provider, signed)
    assert figures(px, provider)["epoch"] == 0


def test_submit_attestation_rejects_wrong_signer_key(px: System) -> None:
    provider, impostor = px.providers[0], px.providers[1]
    signed = sign(px, attestation(px, provider), impostor)
    with reverts("AttestationInvalidSigner", {"expected": provider.address, "recovered": impostor.address}):
        px.c.attestations.submit_attestation(impostor, signed)


def test_submit_attestation_rejects_garbage_signature(px: System) -> None:
    provider = px.providers[0]
    signed = SignedMessage(attestation(px, provider), Signature(r=0, s=0, v=27))
    with reverts("AttestationInvalidSigner", {"expected": provider.address, "recovered": ZERO_ADDRESS}):
        px.c.attestations.submit_attestation(provider, signed)


def test_submit_attestation_rejects_tampered_message(px: System) -> None:
    provider = px.providers[0]
    signed = sign_attestation(px, provider, flops=100)
    tampered = SignedMessage(signed.message.model_copy(update={"gemm_flops": 10**18}), signed.signature)
    with reverts("AttestationInvalidSigner") as info:
        px.c.attestations.submit_attestation(provider, tampered)
    assert info["expected"] == provider.address
    assert info["recovered"] != provider.address


def test_submit_attestation_rejects_expired_deadline(px: System) -> None:
    provider = px.providers[0]
    deadline = px.chain.now() + 60
    signed = sign_attestation(px, provider, deadline=deadline)
    px.chain.advance_time(61)
    with reverts("AttestationExpired") as info:
        px.c.attestations.submit_attestation(provider, signed)
    args = info
    assert (args["signer"], args["deadline"]) == (provider.address, deadline)
    assert args["timestamp"] > deadline
    assert px.c.attestations.nonce_of(provider.address) == 0


def test_submit_attestation_accepts_deadline_not_yet_passed(px: System) -> None:
    provider = px.providers[0]
    deadline = px.chain.now() + 60
    signed = sign_attestation(px, provider, deadline=deadline)
    px.chain.advance_time(30)
    receipt = px.c.attestations.submit_attestation(provider, signed)
    assert block_time(px, receipt) <= deadline


@pytest.mark.parametrize("who", ["client", "verifier"])
def test_submit_attestation_rejects_unknown_provider(px: System, who: str) -> None:
    signer = px.clients[0] if who == "client" else px.verifiers[0]
    with reverts("AttestationUnknownProvider", {"provider": signer.address}):
        px.c.attestations.submit_attestation(signer, sign_attestation(px, signer))


def test_submit_attestation_rejects_provider_unstaked_below_minimum(px: System) -> None:
    provider = px.providers[0]
    stake = px.c.registry.account_of(provider.address).stake
    px.c.registry.request_unbond(provider, stake - px.params.min_provider_stake + 1)
    with reverts("AttestationUnknownProvider", {"provider": provider.address}):
        px.c.attestations.submit_attestation(provider, sign_attestation(px, provider))


def test_submit_attestation_rejects_stale_epoch(px: System) -> None:
    provider = px.providers[0]
    px.c.attestations.submit_attestation(provider, sign_attestation(px, provider, epoch=5))
    with reverts("AttestationStaleEpoch", {"provider": provider.address, "epoch": 4, "latestEpoch": 5}):
        px.c.attestations.submit_attestation(provider, sign_attestation(px, provider, epoch=4))
    assert figures(px, provider)["epoch"] == 5


# --- single report ----------------------------------------------------------------------------


def test_submit_report_counts_passes_and_failures(px: System) -> None:
    provider = px.providers[0]
    v1, v2 = px.verifiers[0], px.verifiers[1]
    r1 = px.c.attestations.submit_report(px.outsider, sign_report(px, v1, provider, flops=500))
    r2 = px.c.attestations.submit_report(px.outsider, sign_report(px, v2, provider, flops=400, passed=False))
    assert px.c.attestations.latest_report(provider.address).model_dump() == {
        "measured_flops": 400,
        "passes": 1,
        "failures": 1,
        "updated_at": block_time(px, r2),
    }
    [e1] = px.c.attestations.events(r1, "VerifierReportSubmitted")
    assert e1.args == {
        "verifier": v1.address,
        "provider": provider.address,
        "challengeId": CHALLENGE,
        "measuredFlops": 500,
        "passed": True,
        "nonce": 0,
    }
    history = [(e["verifier"], e["passed"]) for e in all_events(px, "VerifierReportSubmitted")]
    assert history == [(v1.address, True), (v2.address, False)]
    assert px.c.attestations.nonce_of(v1.address) == 1
    assert px.c.attestations.nonce_of(provider.address) == 0


def test_submit_report_rejects_replay(px: System) -> None:
    verifier, provider = px.verifiers[0], px.providers[0]
    signed = sign_report(px, verifier, provider)
    px.c.attestations.submit_report(verifier, signed)
    with reverts("InvalidAccountNonce", {"account": verifier.address, "currentNonce": 1}):
        px.c.attestations.submit_report(verifier, signed)
    assert px.c.attestations.latest_report(provider.address).passes == 1


def test_submit_report_rejects_wrong_chain(px: System) -> None:
    verifier, provider = px.verifiers[0], px.providers[0]
    domain = px.c.attestations.domain
    message = report(px, verifier, provider)
    signed = message.sign(LocalSigner(verifier), dataclasses.replace(domain, chain_id=1))
    recovered = recover_signer(message, domain, signed.signature)
    with reverts("AttestationInvalidSigner", {"expected": verifier.address, "recovered": recovered}):
        px.c.attestations.submit_report(verifier, signed)


def test_submit_report_rejects_wrong_signer_key(px: System) -> None:
    verifier, other, provider = px.verifiers[0], px.verifiers[1], px.providers[0]
    signed = sign(px, report(px, verifier, provider), other)
    with reverts("AttestationInvalidSigner", {"expected": verifier.address, "recovered": other.address}):
        px.c.attestations.submit_report(other, signed)


def test_submit_report_rejects_expired_deadline(px: System) -> None:
    verifier, provider = px.verifiers[0], px.providers[0]
    deadline = px.chain.now() + 10
    signed = sign_report(px, verifier, provider, deadline=deadline)
    px.chain.advance_time(100)
    with reverts("AttestationExpired") as info:
        px.c.attestations.submit_report(verifier, signed)
    assert info["signer"] == verifier.address
    assert info["deadline"] == deadline


@pytest.mark.parametrize("who", ["outsider", "provider"])
def test_submit_report_rejects_unregistered_verifier(px: System, who: str) -> None:
    signer = px.outsider if who == "outsider" else px.providers[1]
    with reverts("AttestationUnknownVerifier", {"verifier": signer.address}):
        px.c.attestations.submit_report(signer, sign_report(px, signer, px.providers[0]))


def test_submit_report_rejects_verifier_unstaked_below_minimum(px: System) -> None:
    verifier = px.verifiers[0]
    stake = px.c.registry.account_of(verifier.address).stake
    px.c.registry.request_unbond(verifier, stake - px.params.min_verifier_stake + 1)
    with reverts("AttestationUnknownVerifier", {"verifier": verifier.address}):
        px.c.attestations.submit_report(verifier, sign_report(px, verifier, px.providers[0]))


def test_submit_report_rejects_self_report(px: System) -> None:
    verifier = px.verifiers[0]
    with reverts("AttestationSelfReport", {"account": verifier.address}):
        px.c.attestations.submit_report(verifier, sign_report(px, verifier, verifier))


@pytest.mark.parametrize("who", ["client", "verifier"])
def test_submit_report_rejects_unknown_provider(px: System, who: str) -> None:
    verifier = px.verifiers[0]
    subject = px.clients[0] if who == "client" else px.verifiers[1]
    with reverts("AttestationUnknownProvider", {"provider": subject.address}):
        px.c.attestations.submit_report(verifier, sign_report(px, verifier, subject))


# --- batches ----------------------------------------------------------------------------------


def test_submit_attestations_stores_every_item(px: System) -> None:
    batch = [sign_attestation(px, p, epoch=i + 1, flops=1_000 * (i + 1)) for i, p in enumerate(px.providers)]
    receipt = px.c.attestations.submit_attestations(px.outsider, batch)
    for i, provider in enumerate(px.providers):
        got = figures(px, provider)
        assert (got["gemm_flops"], got["epoch"]) == (1_000 * (i + 1), i + 1)
        assert got["updated_at"] == block_time(px, receipt)
        assert px.c.attestations.nonce_of(provider.address) == 1
    events = px.c.attestations.events(receipt, "AttestationSubmitted")
    assert [e.args["provider"] for e in events] == [p.address for p in px.providers]


def test_submit_attestations_from_one_provider_keeps_last_and_logs_all(px: System) -> None:
    provider = px.providers[0]
    batch = [sign_attestation(px, provider, nonce=n, epoch=n + 1, flops=10 + n) for n in range(5)]
    receipt = px.c.attestations.submit_attestations(provider, batch)
    assert figures(px, provider)["gemm_flops"] == 14
    assert px.c.attestations.nonce_of(provider.address) == 5
    events = px.c.attestations.events(receipt, "AttestationSubmitted")
    assert [(e.args["nonce"], e.args["gemmFlops"]) for e in events] == [(n, 10 + n) for n in range(5)]


def test_submit_attestations_accepts_both_signature_parities(px: System) -> None:
    provider = px.providers[0]
    by_parity: dict[int, SignedMessage[Attestation]] = {}
    flops = 0
    while len(by_parity) < 2:  # v = 27 and v = 28 encode differently in EIP-2098's vs
        flops += 1
        signed = sign_attestation(px, provider, nonce=len(by_parity), flops=flops)
        by_parity.setdefault(signed.signature.v, signed)
    batch = sorted(by_parity.values(), key=lambda s: s.message.nonce)
    px.c.attestations.submit_attestations(provider, batch)
    assert px.c.attestations.nonce_of(provider.address) == len(batch)
    assert figures(px, provider)["gemm_flops"] == batch[-1].message.gemm_flops


def _raw_attestations(px: System, items: list[SignedMessage[Attestation]], sigs: int) -> Any:
    compact = [s.signature.to_compact() for s in items][:sigs]
    while len(compact) < sigs:
        compact.append(compact[0])
    return px.c.attestations._transact(
        px.outsider, "submitAttestations", [s.message.to_abi() for s in items], compact
    )


@pytest.mark.parametrize(("items", "sigs"), [(2, 1), (1, 2), (3, 2)])
def test_submit_attestations_rejects_length_mismatch(px: System, items: int, sigs: int) -> None:
    batch = [sign_attestation(px, p) for p in px.providers[:items]]
    with reverts("AttestationLengthMismatch", {"items": items, "signatures": sigs}):
        _raw_attestations(px, batch, sigs)


def test_submit_attestations_rejects_empty_batch(px: System) -> None:
    with reverts("AttestationEmptyBatch", {}):
        px.c.attestations.submit_attestations(px.outsider, [])


def test_submit_attestations_rejects_empty_items_with_signatures(px: System) -> None:
    sig = sign_attestation(px, px.providers[0]).signature.to_compact()
    with reverts("AttestationEmptyBatch", {}):
        px.c.attestations._transact(px.outsider, "submitAttestations", [], [sig])


def _bad_attestation(px: System, kind: str) -> tuple[SignedMessage[Attestation], str, dict[str, Any]]:
    p1, p2 = px.providers[1], px.providers[2]
    if kind == "wrong-signer":
        return (
            sign(px, attestation(px, p1), p2),
            "AttestationInvalidSigner",
            {"expected": p1.address, "recovered": p2.address},
        )
    if kind == "unknown-provider":
        client = px.clients[0]
        return (
            sign_attestation(px, client),
            "AttestationUnknownProvider",
            {"provider": client.address},
        )
    if kind == "replayed-nonce":
        # the first item of the batch is providers[0]'s nonce 0; this one reuses it
        p0 = px.providers[0]
        return (
            sign_attestation(px, p0, nonce=0, flops=1),
            "InvalidAccountNonce",
            {"account": p0.address, "currentNonce": 1},
        )
    assert kind == "expired"
    deadline = px.chain.now() + 1
    return (sign_attestation(px, p1, deadline=deadline), "AttestationExpired", None)  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["wrong-signer", "unknown-provider", "replayed-nonce", "expired"])
def test_submit_attestations_is_all_or_nothing(px: System, kind: str) -> None:
    p0, p2 = px.providers[0], px.providers[2]
    good_first = sign_attestation(px, p0, epoch=7)
    bad, error, args = _bad_attestation(px, kind)
    good_last = sign_attestation(px, p2, epoch=8)
    if kind == "expired":
        px.chain.advance_time(10)
    with reverts(error, args):
        px.c.attestations.submit_attestations(px.outsider, [good_first, bad, good_last])
    for provider in px.providers:
        assert figures(px, provider) == {
            "gemm_flops": 0,
            "mem_bandwidth": 0,
            "epoch": 0,
            "updated_at": 0,
        }
        assert px.c.attestations.nonce_of(provider.address) == 0
    assert all_events(px, "AttestationSubmitted") == []


def test_submit_reports_stores_every_item(px: System) -> None:
    provider = px.providers[0]
    batch = [
        sign_report(px, v, provider, flops=100 * (i + 1), passed=i != 1) for i, v in enumerate(px.verifiers)
    ]
    receipt = px.c.attestations.submit_reports(px.outsider, batch)
    summary = px.c.attestations.latest_report(provider.address)
    assert (summary.measured_flops, summary.passes, summary.failures) == (300, 2, 1)
    events = px.c.attestations.events(receipt, "VerifierReportSubmitted")
    assert [e.args["verifier"] for e in events] == [v.address for v in px.verifiers]
    for verifier in px.verifiers:
        assert px.c.attestations.nonce_of(verifier.address) == 1


def test_submit_reports_rejects_empty_batch(px: System) -> None:
    with reverts("AttestationEmptyBatch", {}):
        px.c.attestations.submit_reports(px.outsider, [])


def test_submit_reports_rejects_length_mismatch(px: System) -> None:
    batch = [sign_report(px, v, px.providers[0]) for v in px.verifiers[:2]]
    with reverts("AttestationLengthMismatch", {"items": 2, "signatures": 1}):
        px.c.attestations._transact(
            px.outsider,
            "submitReports",
            [s.message.to_abi() for s in batch],
            [batch[0].signature.to_compact()],
        )


def test_submit_reports_is_all_or_nothing(px: System) -> None:
    provider = px.providers[0]
    v0, v1 = px.verifiers[0], px.verifiers[1]
    good = sign_report(px, v0, provider)
    self_report = sign_report(px, v1, v1)
    with reverts("AttestationSelfReport", {"account": v1.address}):
        px.c.attestations.submit_reports(px.outsider, [good, self_report])
    summary = px.c.attestations.latest_report(provider.address)
    assert (summary.passes, summary.failures, summary.updated_at) == (0, 0, 0)
    assert px.c.attestations.nonce_of(v0.address) == 0
    assert all_events(px, "VerifierReportSubmitted") == []


def test_submit_reports_rejects_wrong_signer_in_batch(px: System) -> None:
    provider = px.providers[0]
    v0, v1 = px.verifiers[0], px.verifiers[1]
    forged = sign(px, report(px, v0, provider), v1)
    with reverts("AttestationInvalidSigner", {"expected": v0.address, "recovered": v1.address}):
        px.c.attestations.submit_reports(px.outsider, [sign_report(px, v1, provider), forged])
    assert px.c.attestations.nonce_of(v1.address) == 0


# --- provider-signed batches (one signature, one nonce for many measurements) -----------------


def signed_batch(
    px: System,
    provider: LocalAccount,
    count: int = 3,
    epoch: int = 4,
    signer: LocalAccount | None = None,
    **kw: Any,
) -> SignedMessage[AttestationBatch]:
    batch = AttestationBatch(
        provider=kw.pop("provider_address", provider.address),
        epoch=epoch,
        nonce=kw.pop("nonce", px.c.attestations.nonce_of(provider.address)),
        deadline=kw.pop("deadline", px.chain.now() + 600),
        measurements=tuple(
            Measurement(benchmark_id=bytes([i + 1]) * 32, gemm_flops=10**12 + i, mem_bandwidth=10**11 + i)
            for i in range(count)
        ),
    )
    return batch.sign(LocalSigner(signer or provider), px.c.attestations.domain)


def test_submit_attestation_batch_records_every_measurement_and_keeps_the_last(px: System) -> None:
    provider = px.providers[0]
    receipt = px.c.attestations.submit_attestation_batch(px.outsider, signed_batch(px, provider, count=3))
    events = [e.args for e in px.c.attestations.events(receipt, "AttestationSubmitted")]
    assert [(e["benchmarkId"], e["gemmFlops"], e["epoch"], e["nonce"]) for e in events] == [
        (bytes([i + 1]) * 32, 10**12 + i, 4, 0) for i in range(3)
    ]
    latest = figures(px, provider)
    assert (latest["gemm_flops"], latest["mem_bandwidth"], latest["epoch"]) == (10**12 + 2, 10**11 + 2, 4)
    assert px.c.attestations.nonce_of(provider.address) == 1


def test_submit_attestation_batch_rejects_replay(px: System) -> None:
    provider = px.providers[0]
    signed = signed_batch(px, provider)
    px.c.attestations.submit_attestation_batch(px.outsider, signed)
    with reverts("InvalidAccountNonce", {"account": provider.address, "currentNonce": 1}):
        px.c.attestations.submit_attestation_batch(px.outsider, signed)


def test_submit_attestation_batch_rejects_other_signer_and_tampering(px: System) -> None:
    provider, other = px.providers[0], px.providers[1]
    with reverts("AttestationInvalidSigner") as info:
        px.c.attestations.submit_attestation_batch(px.outsider, signed_batch(px, provider, signer=other))
    assert info["expected"] == provider.address
    signed = signed_batch(px, provider)
    inflated = signed.message.model_copy(
        update={
            "measurements": (
                *signed.message.measurements[:-1],
                Measurement(benchmark_id=b"\x01" * 32, gemm_flops=10**15, mem_bandwidth=1),
            )
        }
    )
    with reverts("AttestationInvalidSigner"):
        px.c.attestations.submit_attestation_batch(px.outsider, SignedMessage(inflated, signed.signature))
    assert figures(px, provider)["epoch"] == 0


def test_submit_attestation_batch_rejects_empty_expired_stale_and_unstaked(px: System) -> None:
    provider = px.providers[0]
    with reverts("AttestationEmptyBatch"):
        px.c.attestations.submit_attestation_batch(px.outsider, signed_batch(px, provider, count=0))
    with reverts("AttestationExpired"):
        px.c.attestations.submit_attestation_batch(
            px.outsider, signed_batch(px, provider, deadline=px.chain.now() - 1)
        )
    px.c.attestations.submit_attestation_batch(px.outsider, signed_batch(px, provider, epoch=9))
    with reverts("AttestationStaleEpoch", {"provider": provider.address, "epoch": 8, "latestEpoch": 9}):
        px.c.attestations.submit_attestation_batch(px.outsider, signed_batch(px, provider, epoch=8))
    with reverts("AttestationUnknownProvider", {"provider": px.outsider.address}):
        px.c.attestations.submit_attestation_batch(px.outsider, signed_batch(px, px.outsider))
