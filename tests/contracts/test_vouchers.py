"""PaymentVouchers: deposits, delayed withdrawals, cumulative vouchers and batches, on py-evm and anvil."""

from __future__ import annotations

from typing import TYPE_CHECKING

from _support import ETH, block_time, fee_of, gas_cost, reverts, to_pool
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from proxima.sdk.eip712 import Domain, LocalSigner, SignedMessage, Voucher

if TYPE_CHECKING:
    from conftest import System

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1


def voucher(
    px: System,
    client: LocalAccount,
    provider: LocalAccount,
    amount: int,
    jobs: int,
    signer: LocalAccount | None = None,
    domain: Domain | None = None,
) -> SignedMessage[Voucher]:
    """A voucher from ``client`` to ``provider``, signed by ``signer`` (the client unless given)."""
    message = Voucher(
        client=client.address, provider=provider.address, cumulative_amount=amount, cumulative_jobs=jobs
    )
    return message.sign(LocalSigner(signer or client), domain or px.c.vouchers.domain)


def funded_clients(px: System, count: int, deposit: int) -> list[LocalAccount]:
    """``count`` fresh accounts, each funded by the admin and holding ``deposit`` in the vouchers contract."""
    clients = [Account.from_key(keccak(text=f"voucher client {i}")) for i in range(count)]
    for client in clients:
        px.chain.send_transaction(px.admin, {"to": client.address, "value": deposit + ETH})
        px.c.vouchers.deposit(client, deposit)
    return clients


def jobs_completed(px: System, provider: LocalAccount) -> int:
    return px.c.registry.account_of(provider.address).jobs_completed


def current_pot(px: System) -> int:
    return px.c.rewards.epoch_of(px.c.rewards.current_epoch()).pot


# --- deposit ---------------------------------------------------------------------------------------


def test_deposit_adds_to_balance_and_total(px: System) -> None:
    client = px.clients[0]
    before = px.chain.balance(client.address)

    first = px.c.vouchers.deposit(client, 2 * ETH)
    second = px.c.vouchers.deposit(client, 3 * ETH + 1)

    assert px.chain.balance(client.address) == before - 5 * ETH - 1 - gas_cost(first) - gas_cost(second)
    assert px.c.vouchers.deposit_of(client.address).balance == 5 * ETH + 1
    assert px.c.vouchers.total_deposits() == 5 * ETH + 1
    assert px.chain.balance(px.c.vouchers.address) == 5 * ETH + 1
    [event] = px.c.vouchers.events(second, "Deposited")
    assert event.args == {"client": client.address, "amount": 3 * ETH + 1, "balance": 5 * ETH + 1}
    px.assert_conserved()


def test_deposit_rejects_zero(px: System) -> None:
    with reverts("VouchersZeroAmount"):
        px.c.vouchers.deposit(px.clients[0], 0)


# --- requestWithdrawal / cancelWithdrawal ------------------------------------------------------------


def test_request_withdrawal_starts_delay(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, 3 * ETH)

    receipt = px.c.vouchers.request_withdrawal(client, 2 * ETH)

    ready_at = block_time(px, receipt) + px.params.withdrawal_delay
    deposit = px.c.vouchers.deposit_of(client.address)
    assert (deposit.balance, deposit.pending_withdrawal, deposit.withdrawable_at) == (
        3 * ETH,
        2 * ETH,
        ready_at,
    )
    [event] = px.c.vouchers.events(receipt, "WithdrawalRequested")
    assert event.args == {"client": client.address, "amount": 2 * ETH, "withdrawableAt": ready_at}


def test_request_withdrawal_replaces_pending_request(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, 3 * ETH)
    px.c.vouchers.request_withdrawal(client, 2 * ETH)
    px.chain.advance_time(100)

    receipt = px.c.vouchers.request_withdrawal(client, ETH)

    deposit = px.c.vouchers.deposit_of(client.address)
    assert deposit.pending_withdrawal == ETH
    assert deposit.withdrawable_at == block_time(px, receipt) + px.params.withdrawal_delay


def test_request_withdrawal_rejects_zero(px: System) -> None:
    px.c.vouchers.deposit(px.clients[0], ETH)

    with reverts("VouchersZeroAmount"):
        px.c.vouchers.request_withdrawal(px.clients[0], 0)


def test_request_withdrawal_rejects_amount_above_balance(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, ETH)

    with reverts("VouchersWithdrawalExceedsBalance", client=client.address, requested=ETH + 1, balance=ETH):
        px.c.vouchers.request_withdrawal(client, ETH + 1)


def test_cancel_withdrawal_clears_pending_request(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, ETH)
    px.c.vouchers.request_withdrawal(client, ETH)

    receipt = px.c.vouchers.cancel_withdrawal(client)

    deposit = px.c.vouchers.deposit_of(client.address)
    assert (deposit.balance, deposit.pending_withdrawal, deposit.withdrawable_at) == (ETH, 0, 0)
    [event] = px.c.vouchers.events(receipt, "WithdrawalCancelled")
    assert event.args == {"client": client.address}
    px.chain.advance_time(px.params.withdrawal_delay + 1)
    with reverts("VouchersNoWithdrawalPending", client=client.address):
        px.c.vouchers.withdraw(client)


def test_cancel_withdrawal_rejects_nothing_pending(px: System) -> None:
    px.c.vouchers.deposit(px.clients[0], ETH)

    with reverts("VouchersNoWithdrawalPending", client=px.clients[0].address):
        px.c.vouchers.cancel_withdrawal(px.clients[0])


# --- withdraw --------------------------------------------------------------------------------------


def test_withdraw_rejects_before_delay(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, ETH)
    px.c.vouchers.request_withdrawal(client, ETH)
    ready_at = px.c.vouchers.deposit_of(client.address).withdrawable_at

    with reverts("VouchersWithdrawalNotReady", client=client.address, withdrawableAt=ready_at) as args:
        px.c.vouchers.withdraw(client)
    assert args["timestamp"] < ready_at


def test_withdraw_rejects_nothing_pending(px: System) -> None:
    px.c.vouchers.deposit(px.clients[0], ETH)

    with reverts("VouchersNoWithdrawalPending", client=px.clients[0].address):
        px.c.vouchers.withdraw(px.clients[0])


def test_withdraw_pays_pending_amount_after_delay(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, 3 * ETH)
    px.c.vouchers.request_withdrawal(client, 2 * ETH)
    px.chain.advance_time(px.params.withdrawal_delay)
    before = px.chain.balance(client.address)

    receipt = px.c.vouchers.withdraw(client)

    assert px.chain.balance(client.address) == before + 2 * ETH - gas_cost(receipt)
    deposit = px.c.vouchers.deposit_of(client.address)
    assert (deposit.balance, deposit.pending_withdrawal, deposit.withdrawable_at) == (ETH, 0, 0)
    assert px.c.vouchers.total_deposits() == ETH
    [event] = px.c.vouchers.events(receipt, "Withdrawn")
    assert event.args == {"client": client.address, "amount": 2 * ETH, "balance": ETH}
    px.assert_conserved()


def test_withdraw_rejects_second_withdrawal(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, 3 * ETH)
    px.c.vouchers.request_withdrawal(client, ETH)
    px.chain.advance_time(px.params.withdrawal_delay)
    px.c.vouchers.withdraw(client)

    with reverts("VouchersNoWithdrawalPending", client=client.address):
        px.c.vouchers.withdraw(client)
    assert px.c.vouchers.deposit_of(client.address).balance == 2 * ETH


def test_withdraw_pays_only_what_is_left_after_redemption(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, 5 * ETH)
    px.c.vouchers.request_withdrawal(client, 5 * ETH)
    px.c.vouchers.redeem(provider, voucher(px, client, provider, 2 * ETH, 1))
    px.chain.advance_time(px.params.withdrawal_delay)
    before = px.chain.balance(client.address)

    receipt = px.c.vouchers.withdraw(client)

    assert px.chain.balance(client.address) == before + 3 * ETH - gas_cost(receipt)
    [event] = px.c.vouchers.events(receipt, "Withdrawn")
    assert (event.args["amount"], event.args["balance"]) == (3 * ETH, 0)
    assert px.c.vouchers.deposit_of(client.address).balance == 0
    assert px.c.vouchers.total_deposits() == 0
    px.assert_conserved()


# --- redeem ----------------------------------------------------------------------------------------


def test_redeem_pays_provider_amount_minus_fee(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, 10 * ETH)
    amount = 3 * ETH + 7
    fee = fee_of(px, amount)
    provider_before, pot_before = px.chain.balance(provider.address), current_pot(px)
    completed_before = jobs_completed(px, provider)

    receipt = px.c.vouchers.redeem(px.outsider, voucher(px, client, provider, amount, 7))

    assert px.chain.balance(provider.address) == provider_before + amount - fee
    assert current_pot(px) - pot_before == to_pool(px, fee)
    assert jobs_completed(px, provider) == completed_before + 7
    assert px.c.vouchers.deposit_of(client.address).balance == 10 * ETH - amount
    redeemed = px.c.vouchers.redeemed_of(client.address, provider.address)
    assert (redeemed.amount, redeemed.jobs) == (amount, 7)
    [redeemed_event] = px.c.vouchers.events(receipt, "VoucherRedeemed")
    assert redeemed_event.args == {
        "client": client.address,
        "provider": provider.address,
        "cumulativeAmount": amount,
        "cumulativeJobs": 7,
        "amount": amount,
        "jobs": 7,
    }
    assert px.c.vouchers.events(receipt, "ProviderPaid") == []  # single redemptions: VoucherRedeemed says it
    [work] = px.c.rewards.events(receipt, "FeesDeposited")
    assert (work.args["provider"], work.args["work"]) == (provider.address, amount)
    assert work.args["toPool"] + work.args["toTreasury"] == fee
    px.assert_conserved()


def test_redeem_second_voucher_pays_only_increment(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, 10 * ETH)
    px.c.vouchers.redeem(provider, voucher(px, client, provider, ETH, 2))
    provider_before = px.chain.balance(provider.address)
    increment = ETH * 3 // 2

    receipt = px.c.vouchers.redeem(px.outsider, voucher(px, client, provider, ETH + increment, 5))

    assert px.chain.balance(provider.address) == provider_before + increment - fee_of(px, increment)
    assert jobs_completed(px, provider) == 5
    assert px.c.vouchers.deposit_of(client.address).balance == 10 * ETH - ETH - increment
    [event] = px.c.vouchers.events(receipt, "VoucherRedeemed")
    assert (event.args["amount"], event.args["jobs"]) == (increment, 3)
    px.assert_conserved()


def test_redeem_rejects_replayed_voucher(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, 10 * ETH)
    signed = voucher(px, client, provider, ETH, 1)
    px.c.vouchers.redeem(provider, signed)

    with reverts(
        "VouchersNotIncreasing",
        client=client.address,
        provider=provider.address,
        cumulativeAmount=ETH,
        redeemed=ETH,
    ):
        px.c.vouchers.redeem(provider, signed)
    assert px.c.vouchers.deposit_of(client.address).balance == 9 * ETH


def test_redeem_rejects_lower_cumulative_amount(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, 10 * ETH)
    older = voucher(px, client, provider, ETH, 1)
    px.c.vouchers.redeem(provider, voucher(px, client, provider, 2 * ETH, 2))

    with reverts(
        "VouchersNotIncreasing",
        client=client.address,
        provider=provider.address,
        cumulativeAmount=ETH,
        redeemed=2 * ETH,
    ):
        px.c.vouchers.redeem(provider, older)


def test_redeem_rejects_lower_job_count(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, 10 * ETH)
    px.c.vouchers.redeem(provider, voucher(px, client, provider, ETH, 5))

    with reverts(
        "VouchersJobsDecreased",
        client=client.address,
        provider=provider.address,
        cumulativeJobs=4,
        redeemedJobs=5,
    ):
        px.c.vouchers.redeem(provider, voucher(px, client, provider, 2 * ETH, 4))


def test_redeem_rejects_amount_above_deposit(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, ETH)
    px.c.vouchers.redeem(provider, voucher(px, client, provider, ETH // 2, 1))

    with reverts("VouchersInsufficientDeposit", client=client.address, balance=ETH // 2, needed=ETH // 2 + 1):
        px.c.vouchers.redeem(provider, voucher(px, client, provider, ETH + 1, 2))


def test_redeem_rejects_signature_by_wrong_key(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, ETH)

    with reverts("VouchersInvalidSignature", expected=client.address, recovered=px.clients[1].address):
        px.c.vouchers.redeem(provider, voucher(px, client, provider, ETH, 1, signer=px.clients[1]))


def test_redeem_rejects_signature_for_other_chain(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, ETH)
    own = px.c.vouchers.domain
    other = Domain(own.name, own.version, own.chain_id + 1, own.verifying_contract)

    with reverts("VouchersInvalidSignature", expected=client.address) as args:
        px.c.vouchers.redeem(provider, voucher(px, client, provider, ETH, 1, domain=other))
    assert args["recovered"] != client.address


def test_redeem_rejects_voucher_redirected_to_other_provider(px: System) -> None:
    client = px.clients[0]
    px.c.vouchers.deposit(client, ETH)
    signed = voucher(px, client, px.providers[0], ETH, 1)
    redirected = SignedMessage(
        signed.message.model_copy(update={"provider": px.providers[1].address}), signed.signature
    )

    with reverts("VouchersInvalidSignature", expected=client.address) as args:
        px.c.vouchers.redeem(px.providers[1], redirected)
    assert args["recovered"] != client.address


def test_redeem_rejects_zero_cumulative_amount(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, ETH)

    with reverts(
        "VouchersNotIncreasing",
        client=client.address,
        provider=provider.address,
        cumulativeAmount=0,
        redeemed=0,
    ):
        px.c.vouchers.redeem(provider, voucher(px, client, provider, 0, 0))


def test_redeem_rejects_max_cumulative_amount_as_insufficient_deposit(px: System) -> None:
    client, provider = px.clients[0], px.providers[0]
    px.c.vouchers.deposit(client, ETH)

    with reverts("VouchersInsufficientDeposit", client=client.address, balance=ETH, needed=UINT256_MAX):
        px.c.vouchers.redeem(provider, voucher(px, client, provider, UINT256_MAX, UINT64_MAX))
    assert px.c.vouchers.redeemed_of(client.address, provider.address).amount == 0


def test_redeem_max_job_count_does_not_block_provider_payments(px: System) -> None:
    # Any client can sign a 1-wei voucher claiming 2**64-1 jobs; the provider must still be paid for
    # its other work (escrow settlements and later vouchers record completed jobs too).
    griefer, provider = px.clients[1], px.providers[0]
    px.c.vouchers.deposit(griefer, ETH)
    px.c.vouchers.redeem(griefer, voucher(px, griefer, provider, 1, UINT64_MAX))
    terms = px.open_job(px.terms(client=px.clients[0], provider=provider))
    px.c.escrow.commit_result(provider, terms.job_id, b"\xab" * 32)
    before = px.chain.balance(provider.address)

    px.c.escrow.confirm_result(px.clients[0], terms.job_id)

    assert px.chain.balance(provider.address) == before + terms.price - fee_of(px, terms.price)


def test_hash_voucher_matches_signed_digest(px: System) -> None:
    signed = voucher(px, px.clients[0], px.providers[0], ETH, 3)

    assert px.c.vouchers.hash_voucher(signed.message) == signed.message.digest(px.c.vouchers.domain)


# --- redeemBatch -----------------------------------------------------------------------------------


def test_redeem_batch_pays_one_provider_for_many_clients(px: System) -> None:
    provider = px.providers[0]
    clients = funded_clients(px, 5, 10 * ETH)
    amounts = [(i + 1) * ETH + 3 * i + 1 for i in range(5)]
    jobs = [i + 2 for i in range(5)]
    batch = [voucher(px, c, provider, a, j) for c, a, j in zip(clients, amounts, jobs, strict=True)]
    total = sum(amounts)
    fee = fee_of(px, total)
    provider_before, pot_before = px.chain.balance(provider.address), current_pot(px)

    receipt = px.c.vouchers.redeem_batch(px.outsider, provider.address, batch)

    assert px.chain.balance(provider.address) == provider_before + total - fee
    assert current_pot(px) - pot_before == to_pool(px, fee)
    assert jobs_completed(px, provider) == sum(jobs)
    [paid] = px.c.vouchers.events(receipt, "ProviderPaid")
    assert paid.args == {"provider": provider.address, "payout": total - fee, "fee": fee, "jobs": sum(jobs)}
    redeemed = px.c.vouchers.events(receipt, "VoucherRedeemed")
    assert [(e.args["client"], e.args["amount"], e.args["jobs"]) for e in redeemed] == [
        (c.address, a, j) for c, a, j in zip(clients, amounts, jobs, strict=True)
    ]
    for client, amount, count in zip(clients, amounts, jobs, strict=True):
        assert px.c.vouchers.deposit_of(client.address).balance == 10 * ETH - amount
        totals = px.c.vouchers.redeemed_of(client.address, provider.address)
        assert (totals.amount, totals.jobs) == (amount, count)
    [work] = px.c.rewards.events(receipt, "FeesDeposited")
    assert work.args["work"] == total
    px.assert_conserved()


def test_redeem_batch_rejects_voucher_for_other_provider(px: System) -> None:
    clients = funded_clients(px, 2, ETH)
    batch = [
        voucher(px, clients[0], px.providers[0], ETH, 1),
        voucher(px, clients[1], px.providers[1], ETH, 1),
    ]

    with reverts(
        "VouchersWrongProvider", voucherProvider=px.providers[1].address, provider=px.providers[0].address
    ):
        px.c.vouchers.redeem_batch(px.outsider, px.providers[0].address, batch)


def test_redeem_batch_rejects_length_mismatch(px: System) -> None:
    clients = funded_clients(px, 2, ETH)
    batch = [voucher(px, c, px.providers[0], ETH, 1) for c in clients]

    with reverts("VouchersLengthMismatch", vouchers=2, signatures=1):
        px.c.vouchers._transact(
            px.outsider,
            "redeemBatch",
            px.providers[0].address,
            [s.message.to_abi() for s in batch],
            [batch[0].signature.to_compact()],
        )


def test_redeem_batch_rejects_empty_batch(px: System) -> None:
    with reverts("VouchersEmptyBatch"):
        px.c.vouchers.redeem_batch(px.outsider, px.providers[0].address, [])


def test_redeem_batch_rejects_signature_by_wrong_key(px: System) -> None:
    clients = funded_clients(px, 2, ETH)
    batch = [
        voucher(px, clients[0], px.providers[0], ETH, 1),
        voucher(px, clients[1], px.providers[0], ETH, 1, signer=clients[0]),
    ]

    with reverts("VouchersInvalidSignature", expected=clients[1].address, recovered=clients[0].address):
        px.c.vouchers.redeem_batch(px.outsider, px.providers[0].address, batch)


def test_redeem_batch_rejects_same_voucher_twice(px: System) -> None:
    [client] = funded_clients(px, 1, 3 * ETH)
    signed = voucher(px, client, px.providers[0], ETH, 1)

    with reverts("VouchersNotIncreasing", cumulativeAmount=ETH, redeemed=ETH):
        px.c.vouchers.redeem_batch(px.outsider, px.providers[0].address, [signed, signed])
    assert px.c.vouchers.deposit_of(client.address).balance == 3 * ETH


def test_redeem_batch_redeems_nothing_when_one_voucher_fails(px: System) -> None:
    clients = funded_clients(px, 3, ETH)
    provider = px.providers[0]
    batch = [voucher(px, c, provider, ETH // 2, 1) for c in clients[:2]]
    batch.append(voucher(px, clients[2], provider, ETH + 1, 1))
    provider_before = px.chain.balance(provider.address)

    with reverts("VouchersInsufficientDeposit", client=clients[2].address, balance=ETH, needed=ETH + 1):
        px.c.vouchers.redeem_batch(px.outsider, provider.address, batch)
    assert px.chain.balance(provider.address) == provider_before
    assert all(px.c.vouchers.deposit_of(c.address).balance == ETH for c in clients)
    assert px.c.vouchers.redeemed_of(clients[0].address, provider.address).amount == 0
