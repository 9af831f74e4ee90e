"""FaultProofs: two receipts for one job with different results prove equivocation and slash the provider."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest
from _support import ETH, PROVIDER_STAKE, gas_cost, reverts
from eth_account.signers.local import LocalAccount

from proxima.sdk.eip712 import JobReceipt, LocalSigner, SignedMessage, recover_signer

if TYPE_CHECKING:
    from conftest import System  # tests/contracts/conftest.py

JOB = b"\x10" * 32
RESULT_A = b"\xaa" * 32
RESULT_B = b"\xbb" * 32
REASON_EQUIVOCATION = b"EQUIVOCATION".ljust(32, b"\x00")


def job_receipt(
    px: System,
    provider: LocalAccount,
    result: bytes,
    job_id: bytes = JOB,
    client: LocalAccount | None = None,
) -> JobReceipt:
    return JobReceipt(
        job_id=job_id,
        provider=provider.address,
        client=(client or px.clients[0]).address,
        result_hash=result,
        queue_micros=1_500,
        compute_micros=2_000_000,
    )


def signed_receipt(
    px: System,
    provider: LocalAccount,
    result: bytes,
    *,
    signer: LocalAccount | None = None,
    job_id: bytes = JOB,
) -> SignedMessage[JobReceipt]:
    message = job_receipt(px, provider, result, job_id)
    return message.sign(LocalSigner(signer or provider), px.c.fault_proofs.domain)


def evidence(px: System, provider: LocalAccount, job_id: bytes = JOB) -> tuple[Any, Any]:
    return (
        signed_receipt(px, provider, RESULT_A, job_id=job_id),
        signed_receipt(px, provider, RESULT_B, job_id=job_id),
    )


def expected_slash(px: System, slashable: int) -> tuple[int, int]:
    """(slashed, finder reward) for a provider with ``slashable`` stake."""
    slashed = slashable * px.params.equivocation_slash_bps // 10_000
    return slashed, slashed * px.params.finder_share_bps // 10_000


def test_parameters_match_deployment(px: System) -> None:
    fp = px.c.fault_proofs
    assert fp.parameter("equivocationSlashBps") == px.params.equivocation_slash_bps
    assert fp.parameter("finderShareBps") == px.params.finder_share_bps
    assert bytes(fp._call("REASON_EQUIVOCATION")) == REASON_EQUIVOCATION


def test_prove_equivocation_slashes_provider_and_pays_finder(px: System) -> None:
    provider, finder = px.providers[0], px.outsider
    a, b = evidence(px, provider)
    slashed, reward = expected_slash(px, PROVIDER_STAKE)
    finder_before = px.chain.balance(finder.address)
    pool_before = px.c.rewards.pool_balance() + px.c.rewards.treasury_balance()
    assert not px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)

    receipt = px.c.fault_proofs.prove_equivocation(finder, a, b)

    assert px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)
    account = px.c.registry.account_of(provider.address)
    assert account.stake == PROVIDER_STAKE - slashed
    assert account.total_slashed == slashed
    assert px.chain.balance(finder.address) == finder_before + reward - gas_cost(receipt)
    pool_after = px.c.rewards.pool_balance() + px.c.rewards.treasury_balance()
    assert pool_after == pool_before + slashed - reward
    [proven] = px.c.fault_proofs.events(receipt, "EquivocationProven")
    assert proven.args == {
        "provider": provider.address,
        "jobId": JOB,
        "finder": finder.address,
        "resultHashA": RESULT_A,
        "resultHashB": RESULT_B,
        "slashed": slashed,
    }
    [slash_event] = px.c.registry.events(receipt, "Slashed")
    assert slash_event.args == {
        "account": provider.address,
        "amount": slashed,
        "finder": finder.address,
        "finderReward": reward,
        "reason": REASON_EQUIVOCATION,
        "ref": JOB,
    }
    px.assert_conserved()


def test_prove_equivocation_accepts_receipts_in_either_order(px: System) -> None:
    provider = px.providers[0]
    a, b = evidence(px, provider)
    receipt = px.c.fault_proofs.prove_equivocation(px.outsider, b, a)
    [proven] = px.c.fault_proofs.events(receipt, "EquivocationProven")
    assert (proven.args["resultHashA"], proven.args["resultHashB"]) == (RESULT_B, RESULT_A)


@pytest.mark.parametrize("who", ["client", "other provider", "verifier", "admin"])
def test_prove_equivocation_can_be_submitted_by_anyone(px: System, who: str) -> None:
    finder = {
        "client": px.clients[1],
        "other provider": px.providers[1],
        "verifier": px.verifiers[0],
        "admin": px.admin,
    }[who]
    a, b = evidence(px, px.providers[0])
    receipt = px.c.fault_proofs.prove_equivocation(finder, a, b)
    [proven] = px.c.fault_proofs.events(receipt, "EquivocationProven")
    assert proven.args["finder"] == finder.address


def test_prove_equivocation_takes_share_of_unbonding_stake_too(px: System) -> None:
    provider = px.providers[0]
    px.c.registry.request_unbond(provider, 8 * ETH)  # stake 2, unbonding 8: slashable stays 10
    slashed, _ = expected_slash(px, PROVIDER_STAKE)
    a, b = evidence(px, provider)
    receipt = px.c.fault_proofs.prove_equivocation(px.outsider, a, b)
    [proven] = px.c.fault_proofs.events(receipt, "EquivocationProven")
    assert proven.args["slashed"] == slashed
    account = px.c.registry.account_of(provider.address)
    assert (account.stake, account.unbonding) == (0, PROVIDER_STAKE - slashed)
    px.assert_conserved()


def test_prove_equivocation_for_second_job_slashes_share_of_remainder(px: System) -> None:
    provider = px.providers[0]
    px.c.fault_proofs.prove_equivocation(px.outsider, *evidence(px, provider, JOB))
    remaining = px.c.registry.slashable_of(provider.address)
    other_job = b"\x20" * 32
    receipt = px.c.fault_proofs.prove_equivocation(px.outsider, *evidence(px, provider, other_job))
    [proven] = px.c.fault_proofs.events(receipt, "EquivocationProven")
    assert proven.args["slashed"] == expected_slash(px, remaining)[0]
    assert px.c.fault_proofs.is_equivocation_proven(provider.address, other_job)


def test_prove_equivocation_rejects_same_result(px: System) -> None:
    provider = px.providers[0]
    a = signed_receipt(px, provider, RESULT_A)
    with reverts("EquivocationSameResult", {"jobId": JOB, "resultHash": RESULT_A}):
        px.c.fault_proofs.prove_equivocation(px.outsider, a, a)


def test_prove_equivocation_rejects_same_result_with_other_fields_changed(px: System) -> None:
    """Different timings or client are not equivocation: only the result matters."""
    provider = px.providers[0]
    a = signed_receipt(px, provider, RESULT_A)
    other = job_receipt(px, provider, RESULT_A, client=px.clients[1]).model_copy(update={"compute_micros": 1})
    b = other.sign(LocalSigner(provider), px.c.fault_proofs.domain)
    with reverts("EquivocationSameResult", {"jobId": JOB, "resultHash": RESULT_A}):
        px.c.fault_proofs.prove_equivocation(px.outsider, a, b)


def test_prove_equivocation_rejects_different_jobs(px: System) -> None:
    provider = px.providers[0]
    other_job = b"\x20" * 32
    a = signed_receipt(px, provider, RESULT_A)
    b = signed_receipt(px, provider, RESULT_B, job_id=other_job)
    with reverts("EquivocationDifferentJobs", {"jobIdA": JOB, "jobIdB": other_job}):
        px.c.fault_proofs.prove_equivocation(px.outsider, a, b)


def test_prove_equivocation_rejects_different_providers(px: System) -> None:
    p0, p1 = px.providers[0], px.providers[1]
    a = signed_receipt(px, p0, RESULT_A)
    b = signed_receipt(px, p1, RESULT_B)
    with reverts("EquivocationDifferentProviders", {"providerA": p0.address, "providerB": p1.address}):
        px.c.fault_proofs.prove_equivocation(px.outsider, a, b)


@pytest.mark.parametrize("forged", ["a", "b"])
def test_prove_equivocation_rejects_signature_by_another_key(px: System, forged: str) -> None:
    provider, forger = px.providers[0], px.outsider
    good = signed_receipt(px, provider, RESULT_A)
    bad = signed_receipt(px, provider, RESULT_B, signer=forger)
    pair = (bad, good) if forged == "a" else (good, bad)
    with reverts("EquivocationInvalidSignature", {"expected": provider.address, "recovered": forger.address}):
        px.c.fault_proofs.prove_equivocation(forger, *pair)
    assert px.c.registry.account_of(provider.address).stake == PROVIDER_STAKE
    assert not px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)


def test_prove_equivocation_rejects_signature_for_other_domain(px: System) -> None:
    provider = px.providers[0]
    domain = px.c.fault_proofs.domain
    good = signed_receipt(px, provider, RESULT_A)
    message = job_receipt(px, provider, RESULT_B)
    wrong_chain = message.sign(LocalSigner(provider), dataclasses.replace(domain, chain_id=1))
    recovered = recover_signer(message, domain, wrong_chain.signature)
    with reverts("EquivocationInvalidSignature", {"expected": provider.address, "recovered": recovered}):
        px.c.fault_proofs.prove_equivocation(px.outsider, good, wrong_chain)


def test_prove_equivocation_rejects_already_proven(px: System) -> None:
    provider = px.providers[0]
    a, b = evidence(px, provider)
    px.c.fault_proofs.prove_equivocation(px.outsider, a, b)
    stake_after_first = px.c.registry.account_of(provider.address).stake
    args = {"provider": provider.address, "jobId": JOB}
    with reverts("EquivocationAlreadyProven", args):
        px.c.fault_proofs.prove_equivocation(px.clients[0], a, b)
    c = signed_receipt(px, provider, b"\xcc" * 32)  # a third result for the same job
    with reverts("EquivocationAlreadyProven", args):
        px.c.fault_proofs.prove_equivocation(px.clients[0], a, c)
    assert px.c.registry.account_of(provider.address).stake == stake_after_first


def test_prove_equivocation_rejects_provider_with_nothing_to_slash(px: System) -> None:
    provider = px.providers[0]
    px.c.registry.request_unbond(provider, PROVIDER_STAKE)
    px.chain.advance_time(px.params.unbonding_delay)
    px.c.registry.withdraw(provider)
    with reverts("EquivocationNothingToSlash", {"provider": provider.address}):
        px.c.fault_proofs.prove_equivocation(px.outsider, *evidence(px, provider))
    assert not px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)


def test_prove_equivocation_rejects_slash_that_rounds_to_zero(px: System) -> None:
    provider = px.providers[0]
    px.c.registry.request_unbond(provider, PROVIDER_STAKE - 1)  # 1 wei left bonded
    px.chain.advance_time(px.params.unbonding_delay)
    px.c.registry.withdraw(provider)
    assert px.c.registry.slashable_of(provider.address) == 1
    with reverts("EquivocationNothingToSlash", {"provider": provider.address}):
        px.c.fault_proofs.prove_equivocation(px.outsider, *evidence(px, provider))


def test_prove_equivocation_rejects_unregistered_signer(px: System) -> None:
    signer = px.clients[0]
    with reverts("EquivocationNothingToSlash", {"provider": signer.address}):
        px.c.fault_proofs.prove_equivocation(px.outsider, *evidence(px, signer))
