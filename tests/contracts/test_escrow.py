"""JobEscrow: every external function, its happy path and each rejection, on py-evm and anvil.

Amounts are checked to the wei: the provider gets ``price - fee``, the fee goes to the reward pool (less the
treasury share), refunds and bonds go back exactly, slashes split between the finder and the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from _support import BPS, ETH, block_time, fee_of, gas_cost, reverts, to_pool
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.bindings import JobStatus
from proxima.sdk.eip712 import Domain, JobTerms, LocalSigner, Signature, Verdict
from proxima.sdk.types import Address

if TYPE_CHECKING:
    from conftest import System

RESULT = b"\xab" * 32
OTHER_RESULT = b"\xcd" * 32


def finder_share(px: System, slashed: int) -> int:
    return slashed * px.params.finder_share_bps // BPS


def client_of(px: System, terms: JobTerms) -> LocalAccount:
    return next(a for a in px.clients if a.address == terms.client)


def provider_of(px: System, terms: JobTerms) -> LocalAccount:
    return next(a for a in px.providers if a.address == terms.provider)


def open_raw(px: System, client: LocalAccount, terms: JobTerms, signature: bytes, value: int) -> TxReceipt:
    """``openJob`` with any signature bytes and any value (the binding always sends the price)."""
    return px.c.escrow._transact(client, "openJob", terms.to_abi(), signature, value=value)


def delivered(px: System, terms: JobTerms | None = None) -> JobTerms:
    terms = px.open_job(terms)
    px.c.escrow.commit_result(provider_of(px, terms), terms.job_id, RESULT)
    return terms


def disputed(px: System, price: int = ETH) -> JobTerms:
    terms = delivered(px, px.terms(price=price))
    px.c.escrow.dispute_result(client_of(px, terms), terms.job_id)
    return terms


def verdict_signatures(
    px: System, verdict: Verdict, signers: list[LocalAccount]
) -> list[tuple[Address, Signature]]:
    domain = px.c.escrow.domain
    return [(s.address, verdict.sign(LocalSigner(s), domain).signature) for s in signers]


def sorted_by_address(accounts: list[LocalAccount]) -> list[LocalAccount]:
    return sorted(accounts, key=lambda a: int(a.address, 16))


def resolve_raw(px: System, verdict: Verdict, signatures: list[bytes]) -> TxReceipt:
    """``resolveDispute`` with signatures in exactly the given order (the binding sorts them)."""
    return px.c.escrow._transact(px.outsider, "resolveDispute", verdict.to_abi(), signatures)


def pool_state(px: System) -> tuple[int, int]:
    """(pot of the current epoch, treasury balance)."""
    return px.c.rewards.epoch_of(px.c.rewards.current_epoch()).pot, px.c.rewards.treasury_balance()


# --- openJob ---------------------------------------------------------------------------------------


def test_open_job_escrows_price_and_stores_terms(px: System) -> None:
    terms = px.terms(price=3 * ETH, slash_amount=ETH)
    client = px.clients[0]
    client_before, escrow_before = px.chain.balance(client.address), px.chain.balance(px.c.escrow.address)

    receipt = px.c.escrow.open_job(client, px.accept(terms))

    assert px.chain.balance(client.address) == client_before - 3 * ETH - gas_cost(receipt)
    assert px.chain.balance(px.c.escrow.address) == escrow_before + 3 * ETH
    assert px.c.escrow.total_escrowed() == 3 * ETH
    job = px.c.escrow.job_of(terms.job_id)
    assert job.status == JobStatus.ACCEPTED
    assert (job.client, job.provider) == (terms.client, terms.provider)
    assert (job.price, job.slash_amount) == (3 * ETH, ETH)
    assert (job.delivery_deadline, job.challenge_window) == (terms.delivery_deadline, 600)
    assert (job.result_hash, job.challenge_ends_at, job.dispute_bond) == (b"\x00" * 32, 0, 0)
    [event] = px.c.escrow.events(receipt, "JobOpened")
    assert event.args == {
        "jobId": terms.job_id,
        "client": terms.client,
        "provider": terms.provider,
        "price": 3 * ETH,
        "slashAmount": ETH,
        "specHash": terms.spec_hash,
        "deliveryDeadline": terms.delivery_deadline,
        "challengeWindow": 600,
    }
    px.assert_conserved()


def test_open_job_rejects_existing_job_id(px: System) -> None:
    terms = px.open_job()
    again = px.terms(job_id=terms.job_id, price=2 * ETH)

    with reverts("EscrowJobExists", jobId=terms.job_id):
        px.c.escrow.open_job(px.clients[0], px.accept(again))
    assert px.c.escrow.job_of(terms.job_id).price == ETH


def test_open_job_rejects_caller_other_than_client(px: System) -> None:
    terms = px.terms(client=px.clients[0])

    with reverts(
        "EscrowNotClient", jobId=terms.job_id, caller=px.clients[1].address, client=px.clients[0].address
    ):
        px.c.escrow.open_job(px.clients[1], px.accept(terms))


def test_open_job_rejects_zero_price(px: System) -> None:
    terms = px.terms(price=0)

    with reverts("EscrowZeroPrice", jobId=terms.job_id):
        px.c.escrow.open_job(px.clients[0], px.accept(terms))


@pytest.mark.parametrize("delta", [-1, 1])
def test_open_job_rejects_wrong_deposit(px: System, delta: int) -> None:
    terms = px.terms(price=ETH)
    signature = px.accept(terms).signature.to_bytes()

    with reverts("EscrowWrongDeposit", jobId=terms.job_id, sent=ETH + delta, required=ETH):
        open_raw(px, px.clients[0], terms, signature, ETH + delta)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.NONE


def test_open_job_rejects_expired_quote(px: System) -> None:
    terms = px.terms()
    px.chain.advance_time(terms.accept_by - px.chain.now() + 1)

    with reverts("EscrowQuoteExpired", jobId=terms.job_id, acceptBy=terms.accept_by) as args:
        px.c.escrow.open_job(px.clients[0], px.accept(terms))
    assert args["timestamp"] > terms.accept_by


def test_open_job_rejects_deadline_in_past(px: System) -> None:
    terms = px.terms().model_copy(update={"delivery_deadline": px.chain.now()})

    with reverts(
        "EscrowInvalidDeadline",
        jobId=terms.job_id,
        deliveryDeadline=terms.delivery_deadline,
        maxDuration=px.params.max_job_duration,
    ) as args:
        px.c.escrow.open_job(px.clients[0], px.accept(terms))
    assert args["timestamp"] >= terms.delivery_deadline


def test_open_job_rejects_deadline_beyond_max_duration(px: System) -> None:
    terms = px.terms(duration=px.params.max_job_duration + 600)

    with reverts(
        "EscrowInvalidDeadline",
        jobId=terms.job_id,
        deliveryDeadline=terms.delivery_deadline,
        maxDuration=px.params.max_job_duration,
    ) as args:
        px.c.escrow.open_job(px.clients[0], px.accept(terms))
    assert args["timestamp"] + px.params.max_job_duration < terms.delivery_deadline


@pytest.mark.parametrize("offset", [-1, 1], ids=["below_min", "above_max"])
def test_open_job_rejects_challenge_window_out_of_range(px: System, offset: int) -> None:
    lo, hi = px.params.min_challenge_window, px.params.max_challenge_window
    window = lo - 1 if offset < 0 else hi + 1
    terms = px.terms(challenge_window=window)

    with reverts("EscrowInvalidChallengeWindow", jobId=terms.job_id, window=window, min=lo, max=hi):
        px.c.escrow.open_job(px.clients[0], px.accept(terms))


def test_open_job_rejects_inactive_provider(px: System) -> None:
    terms = px.terms().model_copy(update={"provider": px.outsider.address})

    with reverts("EscrowProviderInactive", provider=px.outsider.address):
        px.c.escrow.open_job(px.clients[0], px.accept(terms, provider=px.outsider))


def test_open_job_rejects_signature_by_wrong_key(px: System) -> None:
    terms = px.terms(provider=px.providers[0])

    with reverts(
        "EscrowInvalidSignature", expected=px.providers[0].address, recovered=px.providers[1].address
    ):
        px.c.escrow.open_job(px.clients[0], px.accept(terms, provider=px.providers[1]))


def test_open_job_rejects_signature_for_other_chain(px: System) -> None:
    terms = px.terms()
    own = px.c.escrow.domain
    other = Domain(own.name, own.version, own.chain_id + 1, own.verifying_contract)
    signed = terms.sign(LocalSigner(px.providers[0]), other)

    with reverts("EscrowInvalidSignature", expected=terms.provider) as args:
        px.c.escrow.open_job(px.clients[0], signed)
    assert args["recovered"] != terms.provider


def test_open_job_rejects_terms_changed_after_signing(px: System) -> None:
    terms = px.terms(price=2 * ETH)
    signature = px.accept(terms).signature.to_bytes()
    cheaper = terms.model_copy(update={"price": ETH})

    with reverts("EscrowInvalidSignature", expected=terms.provider) as args:
        open_raw(px, px.clients[0], cheaper, signature, ETH)
    assert args["recovered"] != terms.provider


# --- commitResult ----------------------------------------------------------------------------------


def test_commit_result_delivers_and_starts_challenge_window(px: System) -> None:
    terms = px.open_job()

    receipt = px.c.escrow.commit_result(px.providers[0], terms.job_id, RESULT)

    ends_at = block_time(px, receipt) + terms.challenge_window
    job = px.c.escrow.job_of(terms.job_id)
    assert (job.status, job.result_hash, job.challenge_ends_at) == (JobStatus.DELIVERED, RESULT, ends_at)
    [event] = px.c.escrow.events(receipt, "ResultCommitted")
    assert event.args == {
        "jobId": terms.job_id,
        "provider": terms.provider,
        "resultHash": RESULT,
        "challengeEndsAt": ends_at,
    }


def test_commit_result_rejects_non_provider(px: System) -> None:
    terms = px.open_job()

    with reverts(
        "EscrowNotProvider", jobId=terms.job_id, caller=px.providers[1].address, provider=terms.provider
    ):
        px.c.escrow.commit_result(px.providers[1], terms.job_id, RESULT)


def test_commit_result_rejects_zero_hash(px: System) -> None:
    terms = px.open_job()

    with reverts("EscrowZeroResult", jobId=terms.job_id):
        px.c.escrow.commit_result(px.providers[0], terms.job_id, b"\x00" * 32)


def test_commit_result_rejects_after_deadline(px: System) -> None:
    terms = px.open_job()
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)

    with reverts("EscrowDeadlinePassed", jobId=terms.job_id, deadline=terms.delivery_deadline) as args:
        px.c.escrow.commit_result(px.providers[0], terms.job_id, RESULT)
    assert args["timestamp"] > terms.delivery_deadline


def test_commit_result_rejects_second_commit(px: System) -> None:
    terms = delivered(px)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.DELIVERED, expected=JobStatus.ACCEPTED
    ):
        px.c.escrow.commit_result(px.providers[0], terms.job_id, OTHER_RESULT)
    assert px.c.escrow.job_of(terms.job_id).result_hash == RESULT


def test_commit_result_rejects_unknown_job(px: System) -> None:
    with reverts("EscrowUnknownJob", jobId=b"\x01" * 32):
        px.c.escrow.commit_result(px.providers[0], b"\x01" * 32, RESULT)


def test_commit_result_rejects_after_timeout_refund(px: System) -> None:
    terms = px.open_job()
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)
    px.c.escrow.claim_timeout(px.outsider, terms.job_id)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.REFUNDED, expected=JobStatus.ACCEPTED
    ):
        px.c.escrow.commit_result(px.providers[0], terms.job_id, RESULT)


# --- confirmResult / releasePayment ------------------------------------------------------------------


def test_confirm_result_pays_provider_price_minus_fee(px: System) -> None:
    price = 5 * ETH
    terms = delivered(px, px.terms(price=price))
    provider = terms.provider
    provider_before = px.chain.balance(provider)
    pot_before, treasury_before = pool_state(px)
    completed_before = px.c.registry.account_of(provider).jobs_completed
    fee = fee_of(px, price)
    assert fee > 0

    receipt = px.c.escrow.confirm_result(px.clients[0], terms.job_id)

    assert px.chain.balance(provider) == provider_before + price - fee
    pot_after, treasury_after = pool_state(px)
    assert pot_after - pot_before == to_pool(px, fee)
    assert treasury_after - treasury_before == fee - to_pool(px, fee)
    assert px.c.registry.account_of(provider).jobs_completed == completed_before + 1
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.SETTLED
    assert px.c.escrow.total_escrowed() == 0
    [settled] = px.c.escrow.events(receipt, "JobSettled")
    assert settled.args == {
        "jobId": terms.job_id,
        "provider": provider,
        "payout": price - fee,
        "fee": fee,
        "confirmed": True,
    }
    [work] = px.c.rewards.events(receipt, "FeesDeposited")
    assert (work.args["provider"], work.args["work"]) == (provider, price)
    assert work.args["toPool"] + work.args["toTreasury"] == fee
    px.assert_conserved()


def test_confirm_result_rejects_provider(px: System) -> None:
    terms = delivered(px)

    with reverts("EscrowNotClient", jobId=terms.job_id, caller=terms.provider, client=terms.client):
        px.c.escrow.confirm_result(px.providers[0], terms.job_id)


def test_confirm_result_rejects_after_window(px: System) -> None:
    terms = delivered(px)
    ends_at = px.c.escrow.job_of(terms.job_id).challenge_ends_at
    px.chain.advance_time(ends_at - px.chain.now() + 1)

    with reverts("EscrowChallengeWindowClosed", jobId=terms.job_id, endedAt=ends_at) as args:
        px.c.escrow.confirm_result(px.clients[0], terms.job_id)
    assert args["timestamp"] > ends_at


def test_confirm_result_rejects_undelivered_job(px: System) -> None:
    terms = px.open_job()

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.ACCEPTED, expected=JobStatus.DELIVERED
    ):
        px.c.escrow.confirm_result(px.clients[0], terms.job_id)


def test_release_payment_pays_provider_after_window(px: System) -> None:
    price = 2 * ETH
    terms = delivered(px, px.terms(price=price))
    ends_at = px.c.escrow.job_of(terms.job_id).challenge_ends_at
    px.chain.advance_time(ends_at - px.chain.now() + 1)
    provider_before = px.chain.balance(terms.provider)
    pot_before, _ = pool_state(px)
    fee = fee_of(px, price)

    receipt = px.c.escrow.release_payment(px.outsider, terms.job_id)

    assert px.chain.balance(terms.provider) == provider_before + price - fee
    assert pool_state(px)[0] - pot_before == to_pool(px, fee)
    [settled] = px.c.escrow.events(receipt, "JobSettled")
    assert (settled.args["payout"], settled.args["fee"], settled.args["confirmed"]) == (
        price - fee,
        fee,
        False,
    )
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.SETTLED
    assert px.c.registry.account_of(terms.provider).jobs_completed == 1
    px.assert_conserved()


def test_release_payment_rejects_while_window_open(px: System) -> None:
    terms = delivered(px)
    ends_at = px.c.escrow.job_of(terms.job_id).challenge_ends_at

    with reverts("EscrowChallengeWindowOpen", jobId=terms.job_id, endsAt=ends_at) as args:
        px.c.escrow.release_payment(px.outsider, terms.job_id)
    assert args["timestamp"] <= ends_at


def test_release_payment_rejects_after_confirm(px: System) -> None:
    terms = delivered(px)
    px.c.escrow.confirm_result(px.clients[0], terms.job_id)
    px.chain.advance_time(terms.challenge_window + 1)
    provider_before = px.chain.balance(terms.provider)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.SETTLED, expected=JobStatus.DELIVERED
    ):
        px.c.escrow.release_payment(px.outsider, terms.job_id)
    assert px.chain.balance(terms.provider) == provider_before
    px.assert_conserved()


def test_release_payment_rejects_after_timeout_refund(px: System) -> None:
    terms = px.open_job()
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)
    px.c.escrow.claim_timeout(px.outsider, terms.job_id)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.REFUNDED, expected=JobStatus.DELIVERED
    ):
        px.c.escrow.release_payment(px.outsider, terms.job_id)


def test_confirm_result_rejects_after_release(px: System) -> None:
    terms = delivered(px)
    px.chain.advance_time(terms.challenge_window + 1)
    px.c.escrow.release_payment(px.outsider, terms.job_id)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.SETTLED, expected=JobStatus.DELIVERED
    ):
        px.c.escrow.confirm_result(px.clients[0], terms.job_id)


# --- claimTimeout ----------------------------------------------------------------------------------


def test_claim_timeout_rejects_before_deadline(px: System) -> None:
    terms = px.open_job()

    with reverts("EscrowDeadlineNotReached", jobId=terms.job_id, deadline=terms.delivery_deadline) as args:
        px.c.escrow.claim_timeout(px.outsider, terms.job_id)
    assert args["timestamp"] <= terms.delivery_deadline


def test_claim_timeout_refunds_client_and_slashes_provider(px: System) -> None:
    price, slash = 3 * ETH, 2 * ETH
    terms = px.open_job(px.terms(price=price, slash_amount=slash))
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)
    client, provider, finder = terms.client, terms.provider, px.outsider.address
    client_before, finder_before = px.chain.balance(client), px.chain.balance(finder)
    account_before = px.c.registry.account_of(provider)
    pot_before, treasury_before = pool_state(px)
    share = finder_share(px, slash)

    receipt = px.c.escrow.claim_timeout(px.outsider, terms.job_id)

    assert px.chain.balance(client) == client_before + price
    assert px.chain.balance(finder) == finder_before + share - gas_cost(receipt)
    account = px.c.registry.account_of(provider)
    assert account.stake == account_before.stake - slash
    assert account.total_slashed == account_before.total_slashed + slash
    assert account.jobs_failed == account_before.jobs_failed + 1
    assert (account.jobs_completed, account.disputes_lost) == (0, 0)
    pot_after, treasury_after = pool_state(px)
    assert pot_after - pot_before == to_pool(px, slash - share)
    assert treasury_after - treasury_before == (slash - share) - to_pool(px, slash - share)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    [event] = px.c.escrow.events(receipt, "JobTimedOut")
    assert event.args == {"jobId": terms.job_id, "provider": provider, "refund": price, "slashed": slash}
    [slashed] = px.c.registry.events(receipt, "Slashed")
    assert (slashed.args["finder"], slashed.args["finderReward"]) == (finder, share)
    px.assert_conserved()


def test_claim_timeout_slashes_no_more_than_stake(px: System) -> None:
    stake = px.c.registry.account_of(px.providers[0].address).stake
    terms = px.open_job(px.terms(slash_amount=stake + ETH))
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)
    client_before = px.chain.balance(terms.client)

    receipt = px.c.escrow.claim_timeout(px.outsider, terms.job_id)

    [event] = px.c.escrow.events(receipt, "JobTimedOut")
    assert (event.args["refund"], event.args["slashed"]) == (terms.price, stake)
    assert px.c.registry.account_of(terms.provider).stake == 0
    assert px.chain.balance(terms.client) == client_before + terms.price
    px.assert_conserved()


def test_claim_timeout_rejects_delivered_job(px: System) -> None:
    terms = delivered(px)
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.DELIVERED, expected=JobStatus.ACCEPTED
    ):
        px.c.escrow.claim_timeout(px.outsider, terms.job_id)


def test_claim_timeout_rejects_second_claim(px: System) -> None:
    terms = px.open_job()
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)
    px.c.escrow.claim_timeout(px.outsider, terms.job_id)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.REFUNDED, expected=JobStatus.ACCEPTED
    ):
        px.c.escrow.claim_timeout(px.clients[0], terms.job_id)
    assert px.c.registry.account_of(terms.provider).jobs_failed == 1
    px.assert_conserved()


# --- disputeResult ---------------------------------------------------------------------------------


def test_dispute_result_posts_bond_and_opens_dispute_window(px: System) -> None:
    price = 2 * ETH
    terms = delivered(px, px.terms(price=price))
    bond = price * px.params.dispute_bond_bps // BPS
    assert px.c.escrow.dispute_bond_of(terms.job_id) == bond
    client_before = px.chain.balance(terms.client)

    receipt = px.c.escrow.dispute_result(px.clients[0], terms.job_id)

    ends_at = block_time(px, receipt) + px.params.dispute_window
    assert px.chain.balance(terms.client) == client_before - bond - gas_cost(receipt)
    job = px.c.escrow.job_of(terms.job_id)
    assert (job.status, job.dispute_bond, job.dispute_ends_at) == (JobStatus.DISPUTED, bond, ends_at)
    assert px.c.escrow.total_escrowed() == price + bond
    [event] = px.c.escrow.events(receipt, "JobDisputed")
    assert event.args == {
        "jobId": terms.job_id,
        "client": terms.client,
        "bond": bond,
        "disputeEndsAt": ends_at,
    }
    px.assert_conserved()


@pytest.mark.parametrize("delta", [-1, 1])
def test_dispute_result_rejects_wrong_bond(px: System, delta: int) -> None:
    terms = delivered(px)
    bond = px.c.escrow.dispute_bond_of(terms.job_id)

    with reverts("EscrowWrongDeposit", jobId=terms.job_id, sent=bond + delta, required=bond):
        px.c.escrow._transact(px.clients[0], "disputeResult", terms.job_id, value=bond + delta)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.DELIVERED


def test_dispute_result_rejects_non_client(px: System) -> None:
    terms = delivered(px)

    with reverts("EscrowNotClient", jobId=terms.job_id, caller=px.outsider.address, client=terms.client):
        px.c.escrow.dispute_result(px.outsider, terms.job_id)


def test_dispute_result_rejects_after_window(px: System) -> None:
    terms = delivered(px)
    ends_at = px.c.escrow.job_of(terms.job_id).challenge_ends_at
    px.chain.advance_time(ends_at - px.chain.now() + 1)

    with reverts("EscrowChallengeWindowClosed", jobId=terms.job_id, endedAt=ends_at) as args:
        px.c.escrow.dispute_result(px.clients[0], terms.job_id)
    assert args["timestamp"] > ends_at


def test_dispute_result_rejects_second_dispute(px: System) -> None:
    terms = disputed(px)

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.DISPUTED, expected=JobStatus.DELIVERED
    ):
        px.c.escrow._transact(px.clients[0], "disputeResult", terms.job_id, value=terms.price // 2)


# --- resolveDispute --------------------------------------------------------------------------------


def test_resolve_dispute_valid_result_pays_provider_and_bond(px: System) -> None:
    price = 4 * ETH
    terms = disputed(px, price)
    bond = px.c.escrow.job_of(terms.job_id).dispute_bond
    fee = fee_of(px, price)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=True)
    quorum = px.params.verdict_quorum
    signatures = verdict_signatures(px, verdict, px.verifiers[:quorum])
    provider_before, client_before = px.chain.balance(terms.provider), px.chain.balance(terms.client)
    pot_before, _ = pool_state(px)

    receipt = px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)

    assert px.chain.balance(terms.provider) == provider_before + price - fee + bond
    assert px.chain.balance(terms.client) == client_before
    assert pool_state(px)[0] - pot_before == to_pool(px, fee)
    account = px.c.registry.account_of(terms.provider)
    assert (account.jobs_completed, account.jobs_failed, account.disputes_lost) == (1, 0, 0)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.SETTLED
    assert px.c.escrow.total_escrowed() == 0
    [resolved] = px.c.escrow.events(receipt, "DisputeResolved")
    assert resolved.args == {"jobId": terms.job_id, "resultValid": True, "signers": quorum}
    [settled] = px.c.escrow.events(receipt, "JobSettled")
    assert (settled.args["payout"], settled.args["fee"], settled.args["confirmed"]) == (
        price - fee + bond,
        fee,
        False,
    )
    px.assert_conserved()


def test_resolve_dispute_invalid_result_refunds_client_and_slashes_provider(px: System) -> None:
    price, slash = 2 * ETH, ETH
    terms = delivered(px, px.terms(price=price, slash_amount=slash))
    px.c.escrow.dispute_result(px.clients[0], terms.job_id)
    bond = px.c.escrow.job_of(terms.job_id).dispute_bond
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    signatures = verdict_signatures(px, verdict, px.verifiers[: px.params.verdict_quorum])
    provider_before, client_before = px.chain.balance(terms.provider), px.chain.balance(terms.client)
    stake_before = px.c.registry.account_of(terms.provider).stake
    pot_before, _ = pool_state(px)
    share = finder_share(px, slash)

    receipt = px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)

    assert px.chain.balance(terms.client) == client_before + price + bond + share
    assert px.chain.balance(terms.provider) == provider_before
    account = px.c.registry.account_of(terms.provider)
    assert account.stake == stake_before - slash
    assert (account.jobs_completed, account.jobs_failed, account.disputes_lost) == (0, 1, 1)
    assert pool_state(px)[0] - pot_before == to_pool(px, slash - share)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    assert px.c.escrow.total_escrowed() == 0
    [resolved] = px.c.escrow.events(receipt, "DisputeResolved")
    assert resolved.args["resultValid"] is False
    [slashed] = px.c.registry.events(receipt, "Slashed")
    assert (slashed.args["amount"], slashed.args["finder"]) == (slash, terms.client)
    px.assert_conserved()


def test_resolve_dispute_accepts_more_signers_than_quorum(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=True)
    assert len(px.verifiers) > px.params.verdict_quorum

    receipt = px.c.escrow.resolve_dispute(px.outsider, verdict, verdict_signatures(px, verdict, px.verifiers))

    [resolved] = px.c.escrow.events(receipt, "DisputeResolved")
    assert resolved.args["signers"] == len(px.verifiers)


def test_resolve_dispute_rejects_too_few_signatures(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    quorum = px.params.verdict_quorum
    signatures = verdict_signatures(px, verdict, px.verifiers[: quorum - 1])

    with reverts("EscrowQuorumNotReached", jobId=terms.job_id, signers=quorum - 1, quorum=quorum):
        px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.DISPUTED


def test_resolve_dispute_rejects_duplicate_signer(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    verifier = px.verifiers[0]
    [(_, signature)] = verdict_signatures(px, verdict, [verifier])

    with reverts("EscrowVerifiersNotSorted", previous=verifier.address, next=verifier.address):
        resolve_raw(px, verdict, [signature.to_bytes(), signature.to_bytes()])


def test_resolve_dispute_rejects_unsorted_signers(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    low, high = sorted_by_address(px.verifiers[:2])
    signatures = dict(verdict_signatures(px, verdict, [low, high]))

    with reverts("EscrowVerifiersNotSorted", previous=high.address, next=low.address):
        resolve_raw(px, verdict, [signatures[high.address].to_bytes(), signatures[low.address].to_bytes()])


def test_resolve_dispute_rejects_non_verifier_signer(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    signatures = verdict_signatures(px, verdict, [px.verifiers[0], px.providers[1]])

    with reverts("EscrowVerifierNotActive", verifier=px.providers[1].address):
        px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)


def test_resolve_dispute_rejects_garbage_signature(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    [(_, valid)] = verdict_signatures(px, verdict, [px.verifiers[0]])
    garbage = b"\x00" * 64 + b"\x1b"

    with reverts("EscrowInvalidVerdictSignature", index=1):
        resolve_raw(px, verdict, [valid.to_bytes(), garbage])


def test_resolve_dispute_rejects_verdict_for_other_result(px: System) -> None:
    terms = disputed(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=OTHER_RESULT, result_valid=False)
    signatures = verdict_signatures(px, verdict, px.verifiers[: px.params.verdict_quorum])

    with reverts("EscrowVerdictMismatch", jobId=terms.job_id, resultHash=OTHER_RESULT, committed=RESULT):
        px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)


def test_resolve_dispute_rejects_signatures_over_opposite_verdict(px: System) -> None:
    terms = disputed(px)
    signed = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=True)
    flipped = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    signatures = verdict_signatures(px, signed, px.verifiers[: px.params.verdict_quorum])

    with reverts("EscrowVerifierNotActive") as args:
        resolve_raw(
            px, flipped, [sig.to_bytes() for _, sig in sorted(signatures, key=lambda s: int(s[0], 16))]
        )
    assert args["verifier"] not in {v.address for v in px.verifiers}
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.DISPUTED


def test_resolve_dispute_rejects_undisputed_job(px: System) -> None:
    terms = delivered(px)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    signatures = verdict_signatures(px, verdict, px.verifiers[: px.params.verdict_quorum])

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.DELIVERED, expected=JobStatus.DISPUTED
    ):
        px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)


# --- expireDispute ---------------------------------------------------------------------------------


def test_expire_dispute_rejects_while_window_open(px: System) -> None:
    terms = disputed(px)
    ends_at = px.c.escrow.job_of(terms.job_id).dispute_ends_at

    with reverts("EscrowDisputeWindowOpen", jobId=terms.job_id, endsAt=ends_at) as args:
        px.c.escrow.expire_dispute(px.outsider, terms.job_id)
    assert args["timestamp"] <= ends_at


def test_expire_dispute_refunds_price_and_gives_bond_to_provider(px: System) -> None:
    price = 2 * ETH
    terms = disputed(px, price)
    job = px.c.escrow.job_of(terms.job_id)
    px.chain.advance_time(job.dispute_ends_at - px.chain.now() + 1)
    client_before, provider_before = px.chain.balance(terms.client), px.chain.balance(terms.provider)
    stake_before = px.c.registry.account_of(terms.provider).stake

    receipt = px.c.escrow.expire_dispute(px.outsider, terms.job_id)

    assert px.chain.balance(terms.client) == client_before + price
    assert px.chain.balance(terms.provider) == provider_before + job.dispute_bond
    assert px.c.registry.account_of(terms.provider).stake == stake_before
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    assert px.c.escrow.total_escrowed() == 0
    [event] = px.c.escrow.events(receipt, "DisputeExpired")
    assert event.args == {"jobId": terms.job_id, "refund": price, "bondToProvider": job.dispute_bond}
    px.assert_conserved()


def test_resolve_dispute_rejects_after_expiry(px: System) -> None:
    terms = disputed(px)
    px.chain.advance_time(px.params.dispute_window + 1)
    px.c.escrow.expire_dispute(px.outsider, terms.job_id)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=True)
    signatures = verdict_signatures(px, verdict, px.verifiers[: px.params.verdict_quorum])

    with reverts(
        "EscrowWrongStatus", jobId=terms.job_id, status=JobStatus.REFUNDED, expected=JobStatus.DISPUTED
    ):
        px.c.escrow.resolve_dispute(px.outsider, verdict, signatures)


# --- views and whole life cycles -------------------------------------------------------------------


def test_hash_terms_and_verdict_match_signed_digests(px: System) -> None:
    terms = px.terms()
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=True)
    domain = px.c.escrow.domain

    assert px.c.escrow.hash_terms(terms) == terms.digest(domain)
    assert px.c.escrow.hash_verdict(verdict) == verdict.digest(domain)


def test_full_life_cycles_conserve_eth(px: System) -> None:
    escrow = px.c.escrow
    quorum = px.verifiers[: px.params.verdict_quorum]
    confirmed = delivered(px, px.terms(price=ETH + 1))
    released = delivered(px, px.terms(price=2 * ETH + 3, provider=px.providers[1]))
    timed_out = px.open_job(px.terms(price=ETH, provider=px.providers[2], client=px.clients[1]))
    won = disputed(px, 3 * ETH + 7)
    lost = disputed(px, ETH + 11)
    expired = disputed(px, ETH + 13)
    px.assert_conserved()

    escrow.confirm_result(px.clients[0], confirmed.job_id)
    for job, valid in ((won, True), (lost, False)):
        verdict = Verdict(job_id=job.job_id, result_hash=RESULT, result_valid=valid)
        escrow.resolve_dispute(px.verifiers[0], verdict, verdict_signatures(px, verdict, quorum))
        px.assert_conserved()
    px.chain.advance_time(px.params.dispute_window + 1)
    escrow.release_payment(px.outsider, released.job_id)
    escrow.claim_timeout(px.outsider, timed_out.job_id)
    escrow.expire_dispute(px.outsider, expired.job_id)

    px.assert_conserved()
    assert escrow.total_escrowed() == 0
    assert px.chain.balance(escrow.address) == 0
    statuses = [escrow.job_of(t.job_id).status for t in (confirmed, released, timed_out, won, lost, expired)]
    assert statuses == [
        JobStatus.SETTLED,
        JobStatus.SETTLED,
        JobStatus.REFUNDED,
        JobStatus.SETTLED,
        JobStatus.REFUNDED,
        JobStatus.REFUNDED,
    ]
