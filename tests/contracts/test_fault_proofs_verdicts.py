"""FaultProofs: a wrong canary answer or an invalid result, judged by a quorum of verifiers, slashes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _support import ETH, PROVIDER_STAKE, VERIFIER_STAKE, gas_cost, reverts
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.crypto import keccak
from pydantic import ValidationError
from web3.types import TxParams, TxReceipt

from proxima.contracts import load_artifact
from proxima.sdk.bindings import FaultKind, ProximaContracts, canary_commitment, decode_revert
from proxima.sdk.chain import InProcessChain, TransactionReverted
from proxima.sdk.deploy import DeployParameters, _deploy, deploy_all
from proxima.sdk.eip712 import JobReceipt, LocalSigner, SignedMessage, Verdict
from proxima.sdk.errors import ContractRevertError, DeploymentError, SdkError
from proxima.sdk.ledger import read_ledger
from proxima.sdk.peerid import peer_id_from_key

if TYPE_CHECKING:
    from conftest import System  # tests/contracts/conftest.py

JOB = b"\x31" * 32
SPEC = b"\x5e" * 32
SALT = b"\x5a" * 32
WRONG = b"\xee" * 32
REASON_CANARY = b"CANARY".ljust(32, b"\x00")
REASON_INVALID_RESULT = b"INVALID_RESULT".ljust(32, b"\x00")


def signed_receipt(
    px: System,
    provider: LocalAccount,
    result: bytes = WRONG,
    *,
    job_id: bytes = JOB,
    signer: LocalAccount | None = None,
) -> SignedMessage[JobReceipt]:
    message = JobReceipt(
        job_id=job_id,
        provider=provider.address,
        client=px.clients[0].address,
        result_hash=result,
        queue_micros=2_000,
        compute_micros=750_000,
    )
    return message.sign(LocalSigner(signer or provider), px.c.fault_proofs.domain)


def verdicts(
    px: System,
    signers: list[LocalAccount] | None = None,
    *,
    job_id: bytes = JOB,
    result: bytes = WRONG,
    valid: bool = False,
) -> list[bytes]:
    """Verdict signatures of ``signers`` (default: a quorum of verifiers), sorted by signer address."""
    chosen = signers if signers is not None else px.verifiers[: px.c.fault_proofs.verdict_quorum()]
    ordered = sorted(chosen, key=lambda a: int(a.address, 16))
    fp = px.c.fault_proofs
    return [fp.verdict_signature(LocalSigner(v), job_id, result, valid) for v in ordered]


def commit(px: System, verifier: LocalAccount | None = None, job_id: bytes = JOB) -> bytes:
    commitment = canary_commitment(job_id, SPEC, SALT)
    px.c.fault_proofs.commit_canary(verifier or px.verifiers[0], commitment)
    return commitment


def expected_slash(px: System, slashable: int = PROVIDER_STAKE) -> tuple[int, int]:
    """(slashed, finder reward) for a provider with ``slashable`` stake."""
    slashed = slashable * px.params.fault_slash_bps // 10_000
    return slashed, slashed * px.params.finder_share_bps // 10_000


# --- parameters and hashing --------------------------------------------------------------------------


def test_parameters_match_deployment(px: System) -> None:
    fp = px.c.fault_proofs
    assert fp.verdict_quorum() == px.params.verdict_quorum
    assert fp.parameter("faultSlashBps") == px.params.fault_slash_bps
    assert bytes(fp._call("REASON_CANARY")) == REASON_CANARY
    assert bytes(fp._call("REASON_INVALID_RESULT")) == REASON_INVALID_RESULT
    assert bytes(fp._call("VERDICT_TYPEHASH")) == Verdict.type_hash()
    assert px.c.faults is fp


def test_hash_verdict_equals_python_digest_in_faults_domain(px: System) -> None:
    fp = px.c.fault_proofs
    for valid in (False, True):
        verdict = Verdict(job_id=JOB, result_hash=WRONG, result_valid=valid)
        assert fp.hash_verdict(verdict) == verdict.digest(fp.domain)
        # the same verdict in the escrow's domain is a different message: it cannot be replayed here
        assert fp.hash_verdict(verdict) != verdict.digest(px.c.escrow.domain)


def test_canary_commitment_is_keccak_of_abi_encoding() -> None:
    assert canary_commitment(JOB, SPEC, SALT) == keccak(JOB + SPEC + SALT)
    assert canary_commitment(JOB, SPEC, SALT) != canary_commitment(JOB, SPEC, b"\x00" * 32)


@pytest.mark.parametrize("field", ["job_id", "spec_hash", "salt"])
def test_canary_commitment_rejects_wrong_length(field: str) -> None:
    args = {"job_id": JOB, "spec_hash": SPEC, "salt": SALT, field: b"\x01" * 31}
    with pytest.raises(SdkError, match=field):
        canary_commitment(**args)


# --- commitCanary ------------------------------------------------------------------------------------


def test_commit_canary_records_verifier_and_time(px: System) -> None:
    verifier = px.verifiers[1]
    commitment = canary_commitment(JOB, SPEC, SALT)
    assert px.c.fault_proofs.canary_of(commitment) == (None, 0)
    receipt = px.c.fault_proofs.commit_canary(verifier, commitment)
    at = int(px.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
    assert px.c.fault_proofs.canary_of(commitment) == (verifier.address, at)
    [event] = px.c.fault_proofs.events(receipt, "CanaryCommitted")
    assert event.args == {"commitment": commitment, "verifier": verifier.address}


@pytest.mark.parametrize("who", ["provider", "client", "outsider"])
def test_commit_canary_rejects_non_verifier(px: System, who: str) -> None:
    account = {"provider": px.providers[0], "client": px.clients[0], "outsider": px.outsider}[who]
    commitment = canary_commitment(JOB, SPEC, SALT)
    with reverts("CanaryCommitterNotVerifier", {"account": account.address}):
        px.c.fault_proofs.commit_canary(account, commitment)
    assert px.c.fault_proofs.canary_of(commitment) == (None, 0)


def test_commit_canary_rejects_verifier_that_unbonded_below_minimum(px: System) -> None:
    verifier = px.verifiers[0]
    px.c.registry.request_unbond(verifier, 4 * ETH)  # 1 ETH left, minimum 2
    with reverts("CanaryCommitterNotVerifier", {"account": verifier.address}):
        commit(px, verifier)


def test_commit_canary_rejects_second_commitment(px: System) -> None:
    commitment = commit(px, px.verifiers[0])
    for verifier in (px.verifiers[0], px.verifiers[1]):
        with reverts(
            "CanaryAlreadyCommitted", {"commitment": commitment, "verifier": px.verifiers[0].address}
        ):
            px.c.fault_proofs.commit_canary(verifier, commitment)


def test_commit_canary_rejects_zero(px: System) -> None:
    with reverts("CanaryZeroCommitment", {}):
        px.c.fault_proofs.commit_canary(px.verifiers[0], b"\x00" * 32)


# --- proveCanaryFault --------------------------------------------------------------------------------


def test_prove_canary_fault_slashes_provider_and_pays_finder(px: System) -> None:
    provider, finder = px.providers[0], px.outsider
    commit(px)
    slashed, reward = expected_slash(px)
    finder_before = px.chain.balance(finder.address)
    pool_before = px.c.rewards.pool_balance() + px.c.rewards.treasury_balance()
    assert not px.c.fault_proofs.is_fault_proven(provider.address, JOB)

    tx = px.c.fault_proofs.prove_canary_fault_tx(
        finder, signed_receipt(px, provider), SPEC, SALT, verdicts(px)
    )

    assert px.c.fault_proofs.is_fault_proven(provider.address, JOB)
    assert px.c.fault_proofs.fault_of(provider.address, JOB) is FaultKind.CANARY
    assert not px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)
    account = px.c.registry.account_of(provider.address)
    assert (account.stake, account.total_slashed) == (PROVIDER_STAKE - slashed, slashed)
    assert px.chain.balance(finder.address) == finder_before + reward - gas_cost(tx)
    assert px.c.rewards.pool_balance() + px.c.rewards.treasury_balance() == pool_before + slashed - reward
    [proven] = px.c.fault_proofs.events(tx, "CanaryFaultProven")
    assert proven.args == {
        "provider": provider.address,
        "jobId": JOB,
        "finder": finder.address,
        "resultHash": WRONG,
        "slashed": slashed,
    }
    [slash] = px.c.registry.events(tx, "Slashed")
    assert slash.args == {
        "account": provider.address,
        "amount": slashed,
        "finder": finder.address,
        "finderReward": reward,
        "reason": REASON_CANARY,
        "ref": JOB,
    }
    px.assert_conserved()


def test_prove_canary_fault_returns_slashed_amount_and_sorts_signatures(px: System) -> None:
    provider = px.providers[1]
    commit(px)
    unsorted = list(reversed(verdicts(px, px.verifiers)))  # all three, descending
    slashed = px.c.fault_proofs.prove_canary_fault(
        px.clients[0], signed_receipt(px, provider), SPEC, SALT, unsorted
    )
    assert slashed == expected_slash(px)[0]


def test_prove_canary_fault_rejects_missing_commitment(px: System) -> None:
    commit(px)
    receipt = signed_receipt(px, px.providers[0])
    other_salt = b"\x01" * 32
    with reverts(
        "CanaryNotCommitted", {"commitment": canary_commitment(JOB, SPEC, other_salt), "jobId": JOB}
    ):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, other_salt, verdicts(px))
    other_job = b"\x32" * 32  # the committed spec and salt, but the receipt is for another job
    receipt = signed_receipt(px, px.providers[0], job_id=other_job)
    with reverts("CanaryNotCommitted", jobId=other_job):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, verdicts(px, job_id=other_job))


def test_prove_canary_fault_rejects_commitment_attempt_by_non_verifier(px: System) -> None:
    with reverts("CanaryCommitterNotVerifier"):
        commit(px, px.outsider)
    with reverts("CanaryNotCommitted", jobId=JOB):
        px.c.fault_proofs.prove_canary_fault(
            px.outsider, signed_receipt(px, px.providers[0]), SPEC, SALT, verdicts(px)
        )


def test_prove_canary_fault_rejects_quorum_not_reached(px: System) -> None:
    commit(px)
    quorum = px.params.verdict_quorum
    short = verdicts(px, px.verifiers[: quorum - 1])
    with reverts("FaultQuorumNotReached", {"jobId": JOB, "signers": quorum - 1, "quorum": quorum}):
        px.c.fault_proofs.prove_canary_fault(
            px.outsider, signed_receipt(px, px.providers[0]), SPEC, SALT, short
        )


def test_prove_canary_fault_rejects_unsorted_signers(px: System) -> None:
    commit(px)
    ordered = sorted(px.verifiers[:2], key=lambda a: int(a.address, 16))
    backwards = list(reversed(verdicts(px, ordered)))
    receipt = signed_receipt(px, px.providers[0])
    with reverts("FaultVerifiersNotSorted", {"previous": ordered[1].address, "next": ordered[0].address}):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, backwards, sort=False)


def test_prove_canary_fault_rejects_duplicate_signer(px: System) -> None:
    commit(px)
    verifier = px.verifiers[0]
    twice = verdicts(px, [verifier]) * 2
    receipt = signed_receipt(px, px.providers[0])
    with reverts("FaultVerifiersNotSorted", {"previous": verifier.address, "next": verifier.address}):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, twice)


@pytest.mark.parametrize("who", ["outsider", "provider", "client"])
def test_prove_canary_fault_rejects_signer_that_is_not_verifier(px: System, who: str) -> None:
    commit(px)
    stranger = {"outsider": px.outsider, "provider": px.providers[1], "client": px.clients[1]}[who]
    signatures = verdicts(px, [px.verifiers[0], stranger])
    receipt = signed_receipt(px, px.providers[0])
    with reverts("FaultVerifierNotActive", {"verifier": stranger.address}):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, signatures)


def test_prove_canary_fault_rejects_malformed_verdict_signature(px: System) -> None:
    commit(px)
    signatures = [b"\x00" * 65, *verdicts(px)]
    receipt = signed_receipt(px, px.providers[0])
    with reverts("FaultInvalidVerdictSignature", {"index": 0}):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, signatures)


@pytest.mark.parametrize("wrong", ["valid", "result hash", "job id"])
def test_prove_canary_fault_rejects_verdict_over_another_statement(px: System, wrong: str) -> None:
    """Signatures over ``valid=True``, another result or another job recover to unrelated addresses."""
    commit(px)
    kwargs: dict[str, dict[str, Any]] = {
        "valid": {"valid": True},
        "result hash": {"result": b"\xaa" * 32},
        "job id": {"job_id": b"\x01" * 32},
    }
    signatures = verdicts(px, **kwargs[wrong])
    receipt = signed_receipt(px, px.providers[0])
    with reverts("FaultVerifierNotActive") as err:
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, signatures, sort=False)
    assert err["verifier"] not in {v.address for v in px.verifiers}
    assert px.c.registry.account_of(px.providers[0].address).stake == PROVIDER_STAKE


def test_prove_canary_fault_rejects_receipt_not_signed_by_provider(px: System) -> None:
    commit(px)
    provider, forger = px.providers[0], px.providers[1]
    forged = signed_receipt(px, provider, signer=forger)
    with reverts("FaultInvalidReceiptSignature", {"provider": provider.address, "recovered": forger.address}):
        px.c.fault_proofs.prove_canary_fault(px.outsider, forged, SPEC, SALT, verdicts(px))
    assert not px.c.fault_proofs.is_fault_proven(provider.address, JOB)


def test_prove_canary_fault_rejects_already_proven(px: System) -> None:
    provider = px.providers[0]
    commit(px)
    receipt = signed_receipt(px, provider)
    px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, verdicts(px))
    stake = px.c.registry.account_of(provider.address).stake
    args = {"provider": provider.address, "jobId": JOB, "kind": int(FaultKind.CANARY)}
    with reverts("FaultAlreadyProven", args):
        px.c.fault_proofs.prove_canary_fault(px.clients[0], receipt, SPEC, SALT, verdicts(px))
    with reverts("FaultAlreadyProven", args):
        px.c.fault_proofs.prove_invalid_result(px.clients[0], receipt, verdicts(px))
    other = signed_receipt(px, provider, b"\xcc" * 32)
    with reverts("EquivocationAlreadyProven", {"provider": provider.address, "jobId": JOB}):
        px.c.fault_proofs.prove_equivocation(px.clients[0], receipt, other)
    assert px.c.registry.account_of(provider.address).stake == stake


def test_prove_canary_fault_rejects_job_already_proven_as_equivocation(px: System) -> None:
    provider = px.providers[0]
    commit(px)
    receipt = signed_receipt(px, provider)
    px.c.fault_proofs.prove_equivocation(px.outsider, receipt, signed_receipt(px, provider, b"\xcc" * 32))
    assert px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)
    args = {"provider": provider.address, "jobId": JOB, "kind": int(FaultKind.EQUIVOCATION)}
    with reverts("FaultAlreadyProven", args):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, verdicts(px))


def test_prove_canary_fault_for_another_provider_of_same_job_is_separate(px: System) -> None:
    """One proof per (provider, job): the same canary answered wrongly by two providers slashes both."""
    commit(px)
    for provider in px.providers[:2]:
        px.c.fault_proofs.prove_canary_fault(
            px.outsider, signed_receipt(px, provider), SPEC, SALT, verdicts(px)
        )
        assert px.c.fault_proofs.is_fault_proven(provider.address, JOB)
    assert not px.c.fault_proofs.is_fault_proven(px.providers[2].address, JOB)


def test_prove_canary_fault_rejects_provider_with_nothing_to_slash(px: System) -> None:
    signer = px.clients[0]  # never staked
    commit(px)
    with reverts("FaultNothingToSlash", {"provider": signer.address}):
        px.c.fault_proofs.prove_canary_fault(
            px.outsider, signed_receipt(px, signer), SPEC, SALT, verdicts(px)
        )
    assert not px.c.fault_proofs.is_fault_proven(signer.address, JOB)


# --- proveInvalidResult ------------------------------------------------------------------------------


def test_prove_invalid_result_slashes_provider_and_pays_finder(px: System) -> None:
    provider, finder = px.providers[2], px.clients[1]
    px.c.registry.request_unbond(provider, 6 * ETH)  # unbonding stake is slashable too
    slashed, reward = expected_slash(px)
    finder_before = px.chain.balance(finder.address)

    tx = px.c.fault_proofs.prove_invalid_result_tx(finder, signed_receipt(px, provider), verdicts(px))

    assert px.c.fault_proofs.fault_of(provider.address, JOB) is FaultKind.INVALID_RESULT
    assert px.c.fault_proofs.is_fault_proven(provider.address, JOB)
    assert px.chain.balance(finder.address) == finder_before + reward - gas_cost(tx)
    [proven] = px.c.fault_proofs.events(tx, "InvalidResultProven")
    assert proven.args == {
        "provider": provider.address,
        "jobId": JOB,
        "finder": finder.address,
        "resultHash": WRONG,
        "slashed": slashed,
    }
    [slash] = px.c.registry.events(tx, "Slashed")
    assert (slash.args["reason"], slash.args["amount"], slash.args["finderReward"]) == (
        REASON_INVALID_RESULT,
        slashed,
        reward,
    )
    account = px.c.registry.account_of(provider.address)
    assert account.stake + account.unbonding == PROVIDER_STAKE - slashed
    px.assert_conserved()


def test_prove_invalid_result_rejects_bad_evidence(px: System) -> None:
    provider = px.providers[0]
    receipt = signed_receipt(px, provider)
    fp = px.c.fault_proofs
    with reverts("FaultQuorumNotReached", signers=0):
        fp.prove_invalid_result(px.outsider, receipt, [])
    with reverts("FaultInvalidReceiptSignature", recovered=px.outsider.address):
        fp.prove_invalid_result(px.outsider, signed_receipt(px, provider, signer=px.outsider), verdicts(px))
    with reverts("FaultVerifierNotActive"):
        fp.prove_invalid_result(px.outsider, receipt, verdicts(px, result=b"\x01" * 32))
    assert not fp.is_fault_proven(provider.address, JOB)


def test_prove_invalid_result_then_canary_and_equivocation_are_refused(px: System) -> None:
    provider = px.providers[0]
    receipt = signed_receipt(px, provider)
    px.c.fault_proofs.prove_invalid_result(px.outsider, receipt, verdicts(px))
    commit(px)
    with reverts("FaultAlreadyProven", kind=int(FaultKind.INVALID_RESULT)):
        px.c.fault_proofs.prove_canary_fault(px.outsider, receipt, SPEC, SALT, verdicts(px))
    with reverts("EquivocationAlreadyProven"):
        px.c.fault_proofs.prove_equivocation(px.outsider, receipt, signed_receipt(px, provider, b"\xcc" * 32))
    assert not px.c.fault_proofs.is_equivocation_proven(provider.address, JOB)


def test_ledger_conserved_and_lists_new_slash_reasons(px_inprocess: System) -> None:
    px = px_inprocess
    commit(px)
    px.c.fault_proofs.prove_canary_fault(
        px.outsider, signed_receipt(px, px.providers[0]), SPEC, SALT, verdicts(px)
    )
    second = b"\x77" * 32
    px.c.fault_proofs.prove_invalid_result(
        px.outsider, signed_receipt(px, px.providers[1], job_id=second), verdicts(px, job_id=second)
    )
    ledger = read_ledger(px.c)
    reasons = {(s.account, s.reason, s.ref) for s in ledger.slashes}
    assert (px.providers[0].address, "CANARY", JOB) in reasons
    assert (px.providers[1].address, "INVALID_RESULT", second) in reasons
    assert ledger.money.conserved
    px.assert_conserved()


# --- deployment parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("bps", [0, 10_001])
def test_deploy_parameters_reject_fault_slash_out_of_range(bps: int) -> None:
    with pytest.raises(ValidationError, match="fault_slash_bps"):
        DeployParameters(fault_slash_bps=bps)


@pytest.mark.parametrize(
    ("args", "name", "value"),
    [
        ((5_000, 0, 5_000, 2), "faultSlashBps", 0),
        ((5_000, 10_001, 5_000, 2), "faultSlashBps", 10_001),
        ((5_000, 5_000, 5_000, 0), "verdictQuorum", 0),
    ],
)
def test_constructor_rejects_invalid_parameter(
    px_inprocess: System, args: tuple[int, ...], name: str, value: int
) -> None:
    px = px_inprocess
    with pytest.raises(DeploymentError) as info:
        _deploy(px.chain, px.admin, "FaultProofs", px.c.registry.address, *args)
    reverted = info.value.__cause__
    assert isinstance(reverted, TransactionReverted)
    decoded = decode_revert("FaultProofs", "constructor", reverted)
    assert isinstance(decoded, ContractRevertError)
    assert decoded.error_name == "FaultProofsInvalidParameter"
    assert decoded.error_args == {"name": name.encode().ljust(32, b"\x00"), "value": value}


def test_deploy_all_passes_quorum_and_fault_slash_to_fault_proofs() -> None:
    """The demo deploys with a quorum of one: one verifier's verdict then slashes the configured share."""
    params = DeployParameters(verdict_quorum=1, fault_slash_bps=10_000)
    with InProcessChain() as chain:
        admin, provider, verifier, finder = (
            chain.accounts[0],
            chain.accounts[1],
            chain.accounts[6],
            chain.accounts[9],
        )
        c = ProximaContracts.from_deployment(chain, deploy_all(chain, admin, params))
        assert c.fault_proofs.verdict_quorum() == 1 == c.escrow.parameter("verdictQuorum")
        assert c.fault_proofs.parameter("faultSlashBps") == 10_000
        c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
        c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
        receipt = JobReceipt(
            job_id=JOB,
            provider=provider.address,
            client=finder.address,
            result_hash=WRONG,
            queue_micros=0,
            compute_micros=1,
        ).sign(LocalSigner(provider), c.fault_proofs.domain)
        signature = c.fault_proofs.verdict_signature(LocalSigner(verifier), JOB, WRONG)
        assert c.fault_proofs.prove_invalid_result(finder, receipt, [signature]) == PROVIDER_STAKE
        assert c.registry.slashable_of(provider.address) == 0
        assert c.held_eth() == c.liabilities()


# --- reentrancy ----------------------------------------------------------------------------------------


def test_prove_canary_fault_contract_finder_reentering_is_blocked(px: System) -> None:
    """A contract finder, paid its share, tries to prove another fault from receive(): the guard stops it."""
    artifact = load_artifact("ReentrantReceiver")
    deployed = px.chain.send_transaction(px.admin, {"data": HexStr("0x" + artifact.bytecode.hex())})
    finder = px.chain.w3.eth.contract(address=deployed["contractAddress"], abi=artifact.abi)
    fp = px.c.fault_proofs
    fp_contract = px.chain.w3.eth.contract(address=fp.address, abi=fp.abi)
    commit(px)
    first, second = signed_receipt(px, px.providers[0]), signed_receipt(px, px.providers[1])

    def proof_data(receipt: SignedMessage[JobReceipt], function: str) -> str:
        args: list[Any] = [receipt.message.to_abi(), receipt.signature.to_bytes()]
        if function == "proveCanaryFault":
            args += [SPEC, SALT]
        return str(fp_contract.encode_abi(function, args=[*args, verdicts(px)]))

    def as_finder(data: str) -> TxReceipt:
        tx: TxParams = {"to": finder.address, "data": HexStr(data), "gas": 3_000_000}
        return px.chain.send_transaction(px.outsider, tx)

    as_finder(finder.encode_abi("arm", args=[fp.address, proof_data(second, "proveInvalidResult")]))
    slashed, reward = expected_slash(px)

    as_finder(finder.encode_abi("execute", args=[fp.address, 0, proof_data(first, "proveCanaryFault")]))

    assert finder.functions.reentryAttempts().call() == 1
    assert finder.functions.reentrySuccesses().call() == 0
    assert (
        bytes(finder.functions.lastReentryData().call())[:4]
        == keccak(text="ReentrancyGuardReentrantCall()")[:4]
    )
    assert px.chain.balance(finder.address) == reward
    assert fp.fault_of(px.providers[0].address, JOB) is FaultKind.CANARY
    assert not fp.is_fault_proven(px.providers[1].address, JOB)
    assert px.c.registry.account_of(px.providers[0].address).total_slashed == slashed
    px.assert_conserved()
