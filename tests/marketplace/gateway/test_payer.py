"""The payer on anvil with the deployed contracts: voucher chains and their bookkeeping, resynchronisation
without a count, overtaking vouchers, quote checks on real signed quotes, the deposit, the escrow records."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from _dispatch_support import GATEWAY_DEPOSIT, Net

from proxima.marketplace.gateway.jobstore import JobStore
from proxima.marketplace.gateway.payer import (
    EscrowOpenError,
    Payer,
    PayerError,
    QuoteRejectedError,
    VoucherOutcome,
    is_stale_voucher,
)
from proxima.sdk.eip712 import JobTerms, LocalSigner, recover_signer
from proxima.sdk.jobs import ErrorCode, sign_quote
from proxima.sdk.workloads import parse_input, spec_hash

pytestmark = pytest.mark.anvil

PRICE = 10**12
SPEC = spec_hash("matmul", parse_input("matmul", {"seed": 1, "m": 4, "k": 4, "n": 4, "dtype": "float64"}))


@pytest.fixture
def payer(net: Net, tmp_path: Path) -> Iterator[Payer]:
    store = JobStore(tmp_path / "jobs.db")
    yield Payer(net.payer, net.c, store)
    store.close()


def test_vouchers_are_cumulative_per_provider_and_a_refusal_reuses_the_count(net: Net, payer: Payer) -> None:
    a, b = net.providers[0].address, net.providers[1].address
    first = payer.issue_voucher(a, PRICE, "job#1")
    voucher = first.payment.voucher
    assert (voucher.client, voucher.provider, voucher.cumulative_jobs, voucher.cumulative_amount) == (
        net.payer.address,
        a,
        1,
        PRICE,
    )
    assert recover_signer(voucher, net.c.vouchers.domain, first.payment.signature) == net.payer.address
    payer.settle_voucher(first, VoucherOutcome.ACCEPTED)
    second = payer.issue_voucher(a, 3 * PRICE, "job#2")
    assert (second.cumulative_jobs, second.cumulative_amount) == (2, 4 * PRICE)
    payer.settle_voucher(second, VoucherOutcome.REFUSED)
    third = payer.issue_voucher(a, 2 * PRICE, "job#3")
    assert (third.cumulative_jobs, third.cumulative_amount) == (2, 3 * PRICE)  # the refused one never counted
    other = payer.issue_voucher(b, PRICE, "job#4")
    assert (other.cumulative_jobs, other.cumulative_amount) == (1, PRICE)  # chains are per provider
    position = payer.position(a)
    assert (position.accepted_jobs, position.accepted_amount, position.inflight, position.next_jobs) == (
        1,
        PRICE,
        1,
        3,
    )
    assert payer.find_voucher(third.payment) == third
    with pytest.raises(PayerError, match="positive"):
        payer.issue_voucher(a, 0, "job#5")


def test_a_restart_turns_inflight_vouchers_uncertain(net: Net, tmp_path: Path) -> None:
    a = net.providers[0].address
    with JobStore(tmp_path / "jobs.db") as store:
        payer = Payer(net.payer, net.c, store)
        payer.settle_voucher(payer.issue_voucher(a, PRICE, "1"), VoucherOutcome.ACCEPTED)
        payer.issue_voucher(a, PRICE, "2")  # sent, then the gateway stopped
    with JobStore(tmp_path / "jobs.db") as store:
        position = Payer(net.payer, net.c, store).position(a)
        assert (position.accepted_jobs, position.inflight, position.uncertain, position.next_jobs) == (
            1,
            0,
            1,
            3,
        )


def test_a_stale_refusal_without_a_count_takes_the_other_assumption(net: Net, payer: Payer) -> None:
    a = net.providers[0].address
    payer.settle_voucher(payer.issue_voucher(a, PRICE, "1"), VoucherOutcome.ACCEPTED)
    payer.settle_voucher(payer.issue_voucher(a, PRICE, "2"), VoucherOutcome.UNCERTAIN)
    built_on_it = payer.issue_voucher(a, PRICE, "3")
    assert built_on_it.cumulative_jobs == 3
    message = "payment refused (stale_voucher): voucher of x is stale: another request was accepted"
    assert is_stale_voucher(ErrorCode.UNPAID, message)
    assert not is_stale_voucher(ErrorCode.UNPAID, "payment refused (exposure_limit): ...")
    payer.settle_voucher(built_on_it, VoucherOutcome.REFUSED)
    asyncio.run(payer.resync(built_on_it, message, timeout=1))
    retry = payer.issue_voucher(a, PRICE, "3b")
    assert (retry.cumulative_jobs, retry.cumulative_amount) == (2, 2 * PRICE)


def test_the_count_a_node_names_marks_uncertain_vouchers(net: Net, payer: Payer) -> None:
    a = net.providers[0].address
    payer.settle_voucher(payer.issue_voucher(a, PRICE, "1"), VoucherOutcome.ACCEPTED)
    payer.settle_voucher(payer.issue_voucher(a, PRICE, "2"), VoucherOutcome.UNCERTAIN)
    payer.settle_voucher(payer.issue_voucher(a, PRICE, "3"), VoucherOutcome.UNCERTAIN)
    stale = payer.issue_voucher(a, PRICE, "4")
    payer.settle_voucher(stale, VoucherOutcome.REFUSED)
    # The node recorded the second voucher, not the third.
    message = "the voucher counts 4 jobs; the next one from x must count 3"
    asyncio.run(payer.resync(stale, "payment refused (stale_voucher): " + message, timeout=1))
    position = payer.position(a)
    assert (position.accepted_jobs, position.accepted_amount, position.uncertain) == (2, 2 * PRICE, 0)
    assert payer.issue_voucher(a, PRICE, "4b").cumulative_jobs == 3


def test_a_voucher_that_overtook_an_earlier_one_waits_for_it(net: Net, payer: Payer) -> None:
    a = net.providers[0].address
    earlier = payer.issue_voucher(a, PRICE, "1")  # still in flight
    later = payer.issue_voucher(a, PRICE, "2")  # built on it, and refused: it arrived first
    payer.settle_voucher(later, VoucherOutcome.REFUSED)

    async def main() -> None:
        async def answer() -> None:
            await asyncio.sleep(0.05)
            payer.settle_voucher(earlier, VoucherOutcome.ACCEPTED)

        task = asyncio.create_task(answer())
        # The node's count predates the earlier voucher's acceptance: it must not be believed.
        await payer.resync(later, "(stale_voucher) the next one from x must count 1", timeout=5)
        await task

    asyncio.run(main())
    retry = payer.issue_voucher(a, PRICE, "2b")
    assert (retry.cumulative_jobs, retry.cumulative_amount) == (2, 2 * PRICE)


def test_a_lost_database_resynchronises_from_the_nodes_count_and_amount(net: Net, payer: Payer) -> None:
    a = net.providers[0].address
    first = payer.issue_voucher(a, PRICE, "1")
    payer.settle_voucher(first, VoucherOutcome.REFUSED)
    asyncio.run(
        payer.resync(first, "(stale_voucher) counts 1 jobs; the next one from x must count 6", timeout=1)
    )
    second = payer.issue_voucher(a, PRICE, "1b")
    assert second.cumulative_jobs == 6
    payer.settle_voucher(second, VoucherOutcome.REFUSED)
    held = 9 * PRICE
    message = (
        f"(stale_voucher) the voucher's {2 * PRICE} wei is not more than the {held} wei already accepted"
    )
    asyncio.run(payer.resync(second, message, timeout=1))
    third = payer.issue_voucher(a, PRICE, "1c")
    assert (third.cumulative_jobs, third.cumulative_amount) == (6, 10 * PRICE)


def quote(net: Net, payer: Payer, **changes: object) -> object:
    now = net.chain.now()
    provider = net.providers[0]
    fields: dict[str, object] = {
        "job_id": secrets.token_bytes(32),
        "client": payer.address,
        "provider": provider.address,
        "price": PRICE,
        "slash_amount": PRICE,
        "spec_hash": SPEC,
        "accept_by": now + 120,
        "delivery_deadline": now + 600,
        "challenge_window": 60,
    }
    fields.update(changes)
    return sign_quote(JobTerms(**fields), 1, LocalSigner(provider), net.domains.escrow_domain)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "cap", "problem"),
    [
        ({"price": 5 * PRICE}, 4 * PRICE, "above the job's cap"),
        ({"client": "0x0000000000000000000000000000000000000001"}, None, "not this gateway"),
        ({"spec_hash": b"\x01" * 32}, None, "spec hash"),
        ({"delivery_deadline_offset": 10_000}, None, "delivery deadline"),
        ({"accept_by_offset": 5}, None, "too soon"),
    ],
)
def test_bad_quotes_are_refused(
    net: Net, payer: Payer, changes: dict[str, object], cap: int | None, problem: str
) -> None:
    now = net.chain.now()
    changes = dict(changes)
    if "delivery_deadline_offset" in changes:
        changes["delivery_deadline"] = now + int(changes.pop("delivery_deadline_offset"))  # type: ignore[call-overload]
    if "accept_by_offset" in changes:
        changes["accept_by"] = now + int(changes.pop("accept_by_offset"))  # type: ignore[call-overload]
    bad = quote(net, payer, **changes)
    with pytest.raises(QuoteRejectedError, match=problem):
        payer.check_quote(
            bad, net.providers[0].address, spec_hash=SPEC, max_price_wei=cap, max_duration_s=3_600
        )  # type: ignore[arg-type]


def test_a_quote_signed_by_someone_else_or_for_another_provider_is_refused(net: Net, payer: Payer) -> None:
    good = quote(net, payer)
    payer.check_quote(
        good, net.providers[0].address, spec_hash=SPEC, max_price_wei=PRICE, max_duration_s=3_600
    )  # type: ignore[arg-type]
    with pytest.raises(QuoteRejectedError, match="placed on"):
        payer.check_quote(
            good, net.providers[1].address, spec_hash=SPEC, max_price_wei=None, max_duration_s=3_600
        )  # type: ignore[arg-type]
    forged = good.model_copy(  # type: ignore[attr-defined]
        update={"signature": quote(net, payer).signature}  # type: ignore[attr-defined]
    )
    with pytest.raises(QuoteRejectedError, match="signed by"):
        payer.check_quote(
            forged, net.providers[0].address, spec_hash=SPEC, max_price_wei=None, max_duration_s=3_600
        )


def test_escrow_opening_is_recorded_and_a_revert_leaves_it_not_opened(net: Net, payer: Payer) -> None:
    good = quote(net, payer)
    payer.open_escrow(good, "0x" + "aa" * 32, 1)  # type: ignore[arg-type]
    escrow_id = "0x" + good.terms.job_id.hex()  # type: ignore[attr-defined]
    assert payer.escrow_state(escrow_id) == "open"
    assert net.c.escrow.job_of(good.terms.job_id).price == PRICE  # type: ignore[attr-defined]
    # Seen before: a second quote with the same id is refused before anything is paid.
    with pytest.raises(QuoteRejectedError, match="seen before"):
        payer.check_quote(
            good, net.providers[0].address, spec_hash=SPEC, max_price_wei=None, max_duration_s=3_600
        )  # type: ignore[arg-type]
    late = quote(net, payer)
    net.chain.advance_time(200)  # past its accept_by
    with pytest.raises(EscrowOpenError, match="EscrowQuoteExpired"):
        payer.open_escrow(late, "0x" + "bb" * 32, 1)  # type: ignore[arg-type]
    assert payer.escrow_state("0x" + late.terms.job_id.hex()) == "not_opened"  # type: ignore[attr-defined]
    assert [e["state"] for e in payer.escrows("0x" + "bb" * 32)] == ["not_opened"]


def test_ensure_deposit_tops_up_and_outstanding_follows_redemptions(net: Net, payer: Payer) -> None:
    assert payer.deposit_available() == GATEWAY_DEPOSIT
    assert payer.ensure_deposit(GATEWAY_DEPOSIT // 2) == GATEWAY_DEPOSIT  # enough: no transaction
    assert payer.ensure_deposit(3 * GATEWAY_DEPOSIT) == 3 * GATEWAY_DEPOSIT
    assert net.c.vouchers.deposit_of(net.payer.address).balance == 3 * GATEWAY_DEPOSIT
    provider = net.providers[0]
    one = payer.issue_voucher(provider.address, PRICE, "1")
    payer.settle_voucher(one, VoucherOutcome.ACCEPTED)
    two = payer.issue_voucher(provider.address, 2 * PRICE, "2")
    payer.settle_voucher(two, VoucherOutcome.UNCERTAIN)
    assert payer.outstanding() == 3 * PRICE  # the uncertain one may be redeemed too
    net.c.vouchers.redeem(provider, two.payment.signed())
    assert payer.outstanding() == 0
