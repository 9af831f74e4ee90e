"""RewardPool: fees and slashes fund the current epoch; providers claim by share of work after it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from _support import BPS, ETH, fee_of, gas_cost, reverts, to_pool
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.eip712 import LocalSigner, Voucher

if TYPE_CHECKING:
    from conftest import System

RESULT = b"\xab" * 32


def next_epoch(px: System) -> int:
    """Move the clock to the first second of the next epoch; returns that epoch."""
    rewards = px.c.rewards
    genesis, length = int(rewards._call("genesis")), rewards.epoch_length()
    now = px.chain.now()
    epoch = (now - genesis) // length + 1
    px.chain.advance_time(genesis + epoch * length - now)
    assert rewards.current_epoch() == epoch
    return epoch


def pay(px: System, provider: LocalAccount, amount: int, client: LocalAccount | None = None) -> TxReceipt:
    """Pay ``provider`` ``amount`` through a voucher (depositing it first), as settled work."""
    client = client or px.clients[0]
    px.c.vouchers.deposit(client, amount)
    done = px.c.vouchers.redeemed_of(client.address, provider.address)
    message = Voucher(
        client=client.address,
        provider=provider.address,
        cumulative_amount=done.amount + amount,
        cumulative_jobs=done.jobs + 1,
    )
    signed = message.sign(LocalSigner(client), px.c.vouchers.domain)
    return px.c.vouchers.redeem(provider, signed)


def settle_escrow_job(px: System, provider: LocalAccount, price: int) -> TxReceipt:
    terms = px.open_job(px.terms(provider=provider, price=price))
    px.c.escrow.commit_result(provider, terms.job_id, RESULT)
    return px.c.escrow.confirm_result(px.clients[0], terms.job_id)


def role(px: System, name: str) -> bytes:
    return px.c.rewards.role_id(name)


# --- depositFees -----------------------------------------------------------------------------------


def test_deposit_fees_fund_current_epoch_and_record_work(px: System) -> None:
    rewards, provider = px.c.rewards, px.providers[0]
    epoch = next_epoch(px)
    voucher_amount, price = 3 * ETH + 1, 2 * ETH + 3
    voucher_fee, escrow_fee = fee_of(px, voucher_amount), fee_of(px, price)
    treasury_before = rewards.treasury_balance()

    by_voucher = pay(px, provider, voucher_amount)
    by_escrow = settle_escrow_job(px, provider, price)

    totals = rewards.epoch_of(epoch)
    assert totals.pot == to_pool(px, voucher_fee) + to_pool(px, escrow_fee)
    assert totals.total_work == voucher_amount + price
    assert rewards.treasury_balance() - treasury_before == (voucher_fee - to_pool(px, voucher_fee)) + (
        escrow_fee - to_pool(px, escrow_fee)
    )
    mine = rewards.rewards_of(provider.address)
    assert (mine.epoch, mine.work, mine.credited) == (epoch, voucher_amount + price, 0)
    for receipt, source, fee, work in (
        (by_voucher, px.c.vouchers.address, voucher_fee, voucher_amount),
        (by_escrow, px.c.escrow.address, escrow_fee, price),
    ):
        [deposited] = rewards.events(receipt, "FeesDeposited")
        assert deposited.args == {
            "epoch": epoch,
            "provider": provider.address,
            "work": work,
            "toPool": to_pool(px, fee),
            "toTreasury": fee - to_pool(px, fee),
        }
        assert source in (px.c.vouchers.address, px.c.escrow.address)
    px.assert_conserved()


@pytest.mark.parametrize("caller", ["outsider", "admin"])
def test_deposit_fees_rejects_anyone_but_escrow_and_vouchers(px: System, caller: str) -> None:
    who = px.outsider if caller == "outsider" else px.admin
    with reverts("RewardPoolUnauthorizedSource", caller=who.address):
        px.c.rewards.deposit_fees(who, px.outsider.address, 10 * ETH, 1)
    assert px.c.rewards.rewards_of(px.outsider.address).work == 0


# --- claim -----------------------------------------------------------------------------------------


def test_claim_rejects_before_epoch_ends(px: System) -> None:
    provider = px.providers[0]
    next_epoch(px)
    pay(px, provider, ETH)

    assert px.c.rewards.claimable(provider.address) == 0
    with reverts("RewardPoolNothingToClaim", provider=provider.address):
        px.c.rewards.claim(provider)


def test_claim_rejects_provider_without_work(px: System) -> None:
    with reverts("RewardPoolNothingToClaim", provider=px.providers[2].address):
        px.c.rewards.claim(px.providers[2])


def test_claim_splits_pot_by_work_rounding_down(px: System) -> None:
    rewards = px.c.rewards
    small, large = px.providers[0], px.providers[1]
    epoch = next_epoch(px)
    unit = ETH + 200
    pay(px, small, unit)
    pay(px, large, 3 * unit)
    pot = rewards.epoch_of(epoch).pot
    assert pot % 4 != 0, "amounts chosen so the split has to round"
    next_epoch(px)
    expected = {small.address: pot * 1 // 4, large.address: pot * 3 // 4}
    assert {p: rewards.claimable(p) for p in expected} == expected
    pool_before = rewards.pool_balance()

    claimed = {}
    for provider in (small, large):
        before = px.chain.balance(provider.address)
        receipt = rewards.claim(provider)
        claimed[provider.address] = px.chain.balance(provider.address) - before + gas_cost(receipt)
        [event] = rewards.events(receipt, "RewardsClaimed")
        assert event.args == {"provider": provider.address, "amount": expected[provider.address]}

    assert claimed == expected
    assert sum(claimed.values()) <= pot
    assert rewards.pool_balance() == pool_before - sum(claimed.values())
    px.assert_conserved()


def test_claim_rejects_second_claim(px: System) -> None:
    provider = px.providers[0]
    next_epoch(px)
    pay(px, provider, ETH)
    next_epoch(px)
    px.c.rewards.claim(provider)

    assert px.c.rewards.claimable(provider.address) == 0
    with reverts("RewardPoolNothingToClaim", provider=provider.address):
        px.c.rewards.claim(provider)


def test_claim_pays_credited_rewards_carried_across_epochs(px: System) -> None:
    rewards, provider = px.c.rewards, px.providers[0]
    first = next_epoch(px)
    pay(px, provider, 2 * ETH)
    first_pot = rewards.epoch_of(first).pot
    second = next_epoch(px)

    pay(px, provider, 5 * ETH)

    mine = rewards.rewards_of(provider.address)
    assert (mine.epoch, mine.work, mine.credited) == (second, 5 * ETH, first_pot)
    assert rewards.claimable(provider.address) == first_pot
    second_pot = rewards.epoch_of(second).pot
    next_epoch(px)
    assert rewards.claimable(provider.address) == first_pot + second_pot
    before = px.chain.balance(provider.address)
    receipt = rewards.claim(provider)
    assert px.chain.balance(provider.address) == before + first_pot + second_pot - gas_cost(receipt)
    assert rewards.claimable(provider.address) == 0
    px.assert_conserved()


def test_claim_of_credited_rewards_leaves_current_work_claimable_later(px: System) -> None:
    rewards, provider = px.c.rewards, px.providers[0]
    first = next_epoch(px)
    pay(px, provider, ETH)
    first_pot = rewards.epoch_of(first).pot
    second = next_epoch(px)
    pay(px, provider, ETH)

    receipt = rewards.claim(provider)

    [event] = rewards.events(receipt, "RewardsClaimed")
    assert event.args["amount"] == first_pot
    second_pot = rewards.epoch_of(second).pot
    next_epoch(px)
    assert rewards.claimable(provider.address) == second_pot


# --- rollover --------------------------------------------------------------------------------------


def test_rollover_moves_pot_of_ended_epoch_without_work(px: System) -> None:
    rewards = px.c.rewards
    empty = next_epoch(px)
    rewards.fund(px.outsider, ETH)
    donated = to_pool(px, ETH)
    assert rewards.epoch_of(empty).pot == donated
    current = next_epoch(px)
    pay(px, px.providers[0], ETH)
    current_pot = rewards.epoch_of(current).pot

    receipt = rewards.rollover(px.outsider, empty)

    assert rewards.epoch_of(empty).pot == 0
    assert rewards.epoch_of(current).pot == current_pot + donated
    [event] = rewards.events(receipt, "EpochRolledOver")
    assert event.args == {"fromEpoch": empty, "toEpoch": current, "amount": donated}
    next_epoch(px)
    assert rewards.claimable(px.providers[0].address) == current_pot + donated
    px.assert_conserved()


@pytest.mark.parametrize("ahead", [0, 1], ids=["current", "future"])
def test_rollover_rejects_epoch_not_ended(px: System, ahead: int) -> None:
    current = next_epoch(px)
    px.c.rewards.fund(px.outsider, ETH)

    with reverts("RewardPoolEpochNotEnded", epoch=current + ahead, currentEpoch=current):
        px.c.rewards.rollover(px.outsider, current + ahead)
    assert px.c.rewards.epoch_of(current).pot == to_pool(px, ETH)


def test_rollover_rejects_epoch_with_work(px: System) -> None:
    epoch = next_epoch(px)
    pay(px, px.providers[0], 2 * ETH)
    pot = px.c.rewards.epoch_of(epoch).pot
    next_epoch(px)

    with reverts("RewardPoolEpochHasWork", epoch=epoch, totalWork=2 * ETH):
        px.c.rewards.rollover(px.outsider, epoch)
    assert px.c.rewards.epoch_of(epoch).pot == pot


# --- treasury --------------------------------------------------------------------------------------


def test_withdraw_treasury_pays_recipient(px: System) -> None:
    rewards = px.c.rewards
    pay(px, px.providers[0], 10 * ETH)
    available = rewards.treasury_balance()
    assert available > 0
    before = px.chain.balance(px.outsider.address)

    receipt = rewards.withdraw_treasury(px.admin, px.outsider.address, available - 1)

    assert px.chain.balance(px.outsider.address) == before + available - 1
    assert rewards.treasury_balance() == 1
    [event] = rewards.events(receipt, "TreasuryWithdrawn")
    assert event.args == {"to": px.outsider.address, "amount": available - 1}
    px.assert_conserved()


def test_withdraw_treasury_rejects_non_treasurer(px: System) -> None:
    pay(px, px.providers[0], 10 * ETH)

    with reverts(
        "AccessControlUnauthorizedAccount",
        account=px.outsider.address,
        neededRole=role(px, "TREASURER_ROLE"),
    ):
        px.c.rewards.withdraw_treasury(px.outsider, px.outsider.address, 1)


def test_withdraw_treasury_rejects_amount_above_treasury(px: System) -> None:
    pay(px, px.providers[0], 10 * ETH)
    available = px.c.rewards.treasury_balance()

    with reverts("RewardPoolTreasuryInsufficient", requested=available + 1, available=available):
        px.c.rewards.withdraw_treasury(px.admin, px.admin.address, available + 1)
    assert px.c.rewards.treasury_balance() == available


# --- slashes and determinism -----------------------------------------------------------------------


def test_slash_funds_pot_with_unshared_part(px: System) -> None:
    rewards = px.c.rewards
    epoch = next_epoch(px)
    slash = 2 * ETH
    terms = px.open_job(px.terms(provider=px.providers[1], slash_amount=slash))
    px.chain.advance_time(terms.delivery_deadline - px.chain.now() + 1)
    assert rewards.current_epoch() == epoch
    pool_before = rewards.pool_balance()

    px.c.escrow.claim_timeout(px.outsider, terms.job_id)

    unshared = slash - slash * px.params.finder_share_bps // BPS
    assert rewards.epoch_of(epoch).pot == to_pool(px, unshared)
    assert rewards.pool_balance() == pool_before + to_pool(px, unshared)
    pay(px, px.providers[0], ETH)
    pot = rewards.epoch_of(epoch).pot
    next_epoch(px)
    assert rewards.claimable(px.providers[0].address) == pot
    px.assert_conserved()


def _reward_sequence(px: System) -> dict[str, int]:
    """Three providers work unevenly over two epochs; returns what each could claim afterwards."""
    a, b, c = px.providers
    next_epoch(px)
    pay(px, a, ETH + 1)
    pay(px, b, 2 * ETH + 7, client=px.clients[1])
    settle_escrow_job(px, c, 3 * ETH + 5)
    next_epoch(px)
    pay(px, a, 4 * ETH + 3)
    pay(px, c, ETH + 9, client=px.clients[1])
    next_epoch(px)
    return {p.address: px.c.rewards.claimable(p.address) for p in px.providers}


def test_claimable_is_deterministic_for_same_sequence(px: System) -> None:
    snapshot = px.chain.snapshot()
    first = _reward_sequence(px)
    px.chain.revert(snapshot)
    second = _reward_sequence(px)

    assert first == second
    a, b, c = (p.address for p in px.providers)

    def pot(*amounts: int) -> int:
        return sum(to_pool(px, fee_of(px, x)) for x in amounts)

    pot1, work1 = pot(ETH + 1, 2 * ETH + 7, 3 * ETH + 5), 6 * ETH + 13
    pot2, work2 = pot(4 * ETH + 3, ETH + 9), 5 * ETH + 12
    assert first == {
        a: pot1 * (ETH + 1) // work1 + pot2 * (4 * ETH + 3) // work2,
        b: pot1 * (2 * ETH + 7) // work1,
        c: pot1 * (3 * ETH + 5) // work1 + pot2 * (ETH + 9) // work2,
    }
