"""PaymentChecker against the deployed contracts on py-evm: every refusal reason, races, exposure bounds."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _node_support import Deployed
from eth_account.signers.local import LocalAccount

from proxima.node.payments import PaymentChecker, PaymentError, PaymentErrorReason
from proxima.node.store import AcceptedJob, DuplicateJobError, NodeStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import InProcessChain
from proxima.sdk.eip712 import Domain, JobTerms, LocalSigner, SignedMessage, Voucher

ETH = 10**18
PRICE = 10**15
SPEC = b"\x5e" * 32


@dataclass
class Net:
    """Deployed contracts: accounts 0 admin, 1-3 providers (staked), 4-6 clients, 7 outsider."""

    chain: InProcessChain
    c: ProximaContracts
    providers: list[LocalAccount]
    clients: list[LocalAccount]
    outsider: LocalAccount

    def open_job(
        self,
        client: LocalAccount | None = None,
        provider: LocalAccount | None = None,
        *,
        price: int = PRICE,
        spec_hash: bytes = SPEC,
        duration: int = 3_600,
    ) -> JobTerms:
        client, provider = client or self.clients[0], provider or self.providers[0]
        now = self.chain.now()
        terms = JobTerms(
            job_id=secrets.token_bytes(32),
            client=client.address,
            provider=provider.address,
            price=price,
            slash_amount=ETH // 10,
            spec_hash=spec_hash,
            accept_by=now + 600,
            delivery_deadline=now + duration,
            challenge_window=600,
        )
        self.c.escrow.open_job(client, terms.sign(LocalSigner(provider), self.c.escrow.domain))
        return terms

    def voucher(
        self,
        amount: int,
        jobs: int,
        client: LocalAccount | None = None,
        provider: LocalAccount | None = None,
        *,
        signer: LocalAccount | None = None,
        domain: Domain | None = None,
    ) -> SignedMessage[Voucher]:
        client, provider = client or self.clients[0], provider or self.providers[0]
        return Voucher(
            client=client.address, provider=provider.address, cumulative_amount=amount, cumulative_jobs=jobs
        ).sign(LocalSigner(signer or client), domain or self.c.vouchers.domain)


@pytest.fixture
def net(deployed: Deployed) -> Net:
    accounts = deployed.chain.accounts
    return Net(deployed.chain, deployed.c, accounts[1:4], accounts[4:7], accounts[7])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.db") as s:
        yield s


@pytest.fixture
def checker(net: Net, store: NodeStore) -> PaymentChecker:
    return PaymentChecker(
        net.c, net.providers[0].address, store, max_unredeemed_per_client=ETH, deadline_margin=60
    )


def refused(reason: PaymentErrorReason) -> pytest.RaisesExc[PaymentError]:
    return pytest.raises(PaymentError, match=rf"^payment refused \({reason.value}\): ")


# --- escrow ----------------------------------------------------------------------------------------------


def test_checkEscrow_acceptsAFundedJobForThisNode(net: Net, checker: PaymentChecker) -> None:
    terms = net.open_job()
    onchain = checker.check_escrow(terms.job_id, net.clients[0].address, SPEC, PRICE)
    assert (onchain.delivery_deadline, onchain.price) == (terms.delivery_deadline, PRICE)
    checker.check_escrow(
        terms.job_id, net.clients[0].address.lower(), SPEC, PRICE - 1
    )  # paid more than asked


def test_checkEscrow_refusals(net: Net, checker: PaymentChecker) -> None:
    client = net.clients[0].address
    terms = net.open_job()
    cases: list[tuple[PaymentErrorReason, bytes, str, bytes, int]] = [
        (PaymentErrorReason.NOT_FOUND, secrets.token_bytes(32), client, SPEC, PRICE),
        (PaymentErrorReason.NOT_FOUND, b"\x01" * 31, client, SPEC, PRICE),
        (PaymentErrorReason.WRONG_CLIENT, terms.job_id, net.clients[1].address, SPEC, PRICE),
        (PaymentErrorReason.UNDERPAID, terms.job_id, client, SPEC, PRICE + 1),
        (PaymentErrorReason.WRONG_SPEC, terms.job_id, client, b"\x5f" * 32, PRICE),
    ]
    for reason, job_id, requester, spec, price in cases:
        with refused(reason) as info:
            checker.check_escrow(job_id, requester, spec, price)
        assert info.value.reason is reason

    other = net.open_job(provider=net.providers[1])
    with refused(PaymentErrorReason.WRONG_PROVIDER) as info:
        checker.check_escrow(other.job_id, client, SPEC, PRICE)
    assert net.providers[1].address in info.value.detail

    soon = net.open_job(duration=59)  # the node wants 60 s of margin
    with refused(PaymentErrorReason.EXPIRED):
        checker.check_escrow(soon.job_id, client, SPEC, PRICE)

    net.c.escrow.commit_result(net.providers[0], terms.job_id, b"\x77" * 32)
    with refused(PaymentErrorReason.NOT_OPEN) as info:
        checker.check_escrow(terms.job_id, client, SPEC, PRICE)
    assert "delivered" in info.value.detail


def test_checkEscrow_deadlinePassedWhileWaiting_isExpired(net: Net, checker: PaymentChecker) -> None:
    terms = net.open_job(duration=600)
    checker.check_escrow(terms.job_id, net.clients[0].address, SPEC, PRICE)
    net.chain.advance_time(600 - 30)
    with refused(PaymentErrorReason.EXPIRED):
        checker.check_escrow(terms.job_id, net.clients[0].address, SPEC, PRICE)


def test_checkEscrow_findsTheSpecOfAJobOpenedLongBefore(net: Net, checker: PaymentChecker) -> None:
    terms = net.open_job(spec_hash=b"\x42" * 32)
    net.chain.tester.mine_blocks(400)  # beyond the recent windows searched first
    checker.check_escrow(terms.job_id, net.clients[0].address, b"\x42" * 32, PRICE)
    with refused(PaymentErrorReason.WRONG_SPEC):
        checker.check_escrow(terms.job_id, net.clients[0].address, SPEC, PRICE)


# --- vouchers --------------------------------------------------------------------------------------------


def test_acceptVoucher_acceptsASequence_andRecordsIt(
    net: Net, checker: PaymentChecker, store: NodeStore
) -> None:
    client = net.clients[0]
    net.c.vouchers.deposit(client, ETH // 10)
    for jobs in (1, 2, 3):
        signed = net.voucher(jobs * PRICE, jobs)
        checker.check_voucher(signed, client.address, PRICE)
        checker.accept_voucher(signed, client.address, PRICE)
        assert store.latest_voucher(client.address) == signed
    with refused(PaymentErrorReason.STALE_VOUCHER):  # replaying the last one
        checker.check_voucher(net.voucher(3 * PRICE, 3), client.address, PRICE)


def test_checkVoucher_refusals(net: Net, checker: PaymentChecker) -> None:
    client, other = net.clients[0], net.clients[1]
    net.c.vouchers.deposit(client, ETH // 10)
    wrong_domain = Domain("Proxima Escrow", "1", net.chain.chain_id, net.c.escrow.address)
    cases = [
        (PaymentErrorReason.WRONG_CLIENT, net.voucher(PRICE, 1, other), client.address, PRICE),
        (PaymentErrorReason.BAD_SIGNATURE, net.voucher(PRICE, 1, signer=other), client.address, PRICE),
        (PaymentErrorReason.BAD_SIGNATURE, net.voucher(PRICE, 1, domain=wrong_domain), client.address, PRICE),
        (
            PaymentErrorReason.WRONG_PROVIDER,
            net.voucher(PRICE, 1, provider=net.providers[1]),
            client.address,
            PRICE,
        ),
        (PaymentErrorReason.STALE_VOUCHER, net.voucher(PRICE, 2), client.address, PRICE),  # skips job 1
        (PaymentErrorReason.STALE_VOUCHER, net.voucher(0, 1), client.address, 0),  # no money at all
        (PaymentErrorReason.UNDERPAID, net.voucher(PRICE - 1, 1), client.address, PRICE),
        (PaymentErrorReason.INSUFFICIENT_DEPOSIT, net.voucher(ETH, 1), client.address, PRICE),
    ]
    for reason, signed, requester, price in cases:
        with refused(reason) as info:
            checker.check_voucher(signed, requester, price)
        assert info.value.reason is reason, signed


def test_checkVoucher_noDeposit_isInsufficient(net: Net, checker: PaymentChecker) -> None:
    with refused(PaymentErrorReason.INSUFFICIENT_DEPOSIT) as info:
        checker.check_voucher(net.voucher(PRICE, 1), net.clients[0].address, PRICE)
    assert "covers 0 wei" in info.value.detail


def test_checkVoucher_pendingWithdrawal_isNotCounted(net: Net, checker: PaymentChecker) -> None:
    client = net.clients[0]
    net.c.vouchers.deposit(client, 10 * PRICE)
    checker.check_voucher(net.voucher(10 * PRICE, 1), client.address, PRICE)
    # Still redeemable until withdrawn, but the client can take it after the delay: do not count on it.
    net.c.vouchers.request_withdrawal(client, 8 * PRICE)
    with refused(PaymentErrorReason.INSUFFICIENT_DEPOSIT) as info:
        checker.check_voucher(net.voucher(3 * PRICE, 1), client.address, PRICE)
    assert f"{8 * PRICE} being withdrawn" in info.value.detail
    checker.check_voucher(net.voucher(2 * PRICE, 1), client.address, PRICE)


def test_exposure_isBoundedPerClient_andFreedByRedeeming(net: Net, store: NodeStore) -> None:
    client, provider = net.clients[0], net.providers[0]
    checker = PaymentChecker(net.c, provider.address, store, max_unredeemed_per_client=3 * PRICE)
    net.c.vouchers.deposit(client, ETH)
    for jobs in (1, 2, 3):
        checker.accept_voucher(net.voucher(jobs * PRICE, jobs), client.address, PRICE)
    with refused(PaymentErrorReason.EXPOSURE_LIMIT) as info:
        checker.accept_voucher(net.voucher(4 * PRICE, 4), client.address, PRICE)
    assert f"{4 * PRICE} wei" in info.value.detail
    # Another client has its own allowance.
    other = net.clients[1]
    net.c.vouchers.deposit(other, ETH)
    checker.accept_voucher(net.voucher(PRICE, 1, other), other.address, PRICE)
    # Once the provider redeems, the exposure is what was accepted since.
    net.c.vouchers.redeem(provider, store.latest_voucher(client.address))  # type: ignore[arg-type]
    checker.accept_voucher(net.voucher(4 * PRICE, 4), client.address, PRICE)
    checker.accept_voucher(net.voucher(6 * PRICE, 5), client.address, PRICE)
    with refused(PaymentErrorReason.EXPOSURE_LIMIT):
        checker.accept_voucher(net.voucher(7 * PRICE, 6), client.address, PRICE)


def test_acceptVoucher_race_onlyOneOfTwoWins(net: Net, checker: PaymentChecker, store: NodeStore) -> None:
    client = net.clients[0]
    net.c.vouchers.deposit(client, ETH)
    checker.accept_voucher(net.voucher(PRICE, 1), client.address, PRICE)
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def request(amount: int) -> None:
        signed = net.voucher(amount, 2)  # both built on voucher 1
        job = AcceptedJob(
            job_id=secrets.token_bytes(32),
            client=client.address,
            workload="matmul",
            payment="voucher",
            price=PRICE,
            spec_hash=SPEC,
            input=b"{}",
            voucher_jobs=2,
        )
        barrier.wait()
        try:
            checker.accept_voucher(signed, client.address, PRICE, job)
            outcomes[amount] = "accepted"
        except PaymentError as err:
            outcomes[amount] = err.reason.value

    threads = [threading.Thread(target=request, args=(amount,)) for amount in (2 * PRICE, 3 * PRICE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["accepted", "stale_voucher"]
    winner = next(a for a, o in outcomes.items() if o == "accepted")
    assert store.latest_voucher(client.address).message.cumulative_amount == winner  # type: ignore[union-attr]
    assert len(store.jobs()) == 1


def test_acceptVoucher_duplicateJob_keepsNeitherVoucherNorJob(
    net: Net, checker: PaymentChecker, store: NodeStore
) -> None:
    client = net.clients[0]
    net.c.vouchers.deposit(client, ETH)
    job = AcceptedJob(
        job_id=secrets.token_bytes(32),
        client=client.address,
        workload="matmul",
        payment="voucher",
        price=PRICE,
        spec_hash=SPEC,
        input=b"{}",
        voucher_jobs=1,
    )
    checker.accept_voucher(net.voucher(PRICE, 1), client.address, PRICE, job)
    with pytest.raises(DuplicateJobError):
        checker.accept_voucher(net.voucher(2 * PRICE, 2), client.address, PRICE, job)
    assert store.latest_voucher(client.address).message.cumulative_jobs == 1  # type: ignore[union-attr]


def test_checkVoucher_followsWhatWasRedeemedOnChain_evenWithAnEmptyStore(
    net: Net, checker: PaymentChecker
) -> None:
    client, provider = net.clients[0], net.providers[0]
    net.c.vouchers.deposit(client, ETH)
    net.c.vouchers.redeem(provider, net.voucher(5 * PRICE, 5))  # redeemed before this store existed
    with refused(PaymentErrorReason.STALE_VOUCHER):
        checker.check_voucher(net.voucher(PRICE, 1), client.address, PRICE)
    with refused(PaymentErrorReason.UNDERPAID):
        checker.check_voucher(net.voucher(5 * PRICE + 1, 6), client.address, PRICE)
    checker.accept_voucher(net.voucher(6 * PRICE, 6), client.address, PRICE)


def test_constructor_validatesLimits(net: Net, store: NodeStore) -> None:
    with pytest.raises(ValueError, match="max_unredeemed_per_client"):
        PaymentChecker(net.c, net.providers[0].address, store, max_unredeemed_per_client=-1)
    with pytest.raises(ValueError, match="deadline_margin"):
        PaymentChecker(net.c, net.providers[0].address, store, 1, deadline_margin=-5)
