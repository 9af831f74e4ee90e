"""ChainDuties on the deployed contracts (py-evm): commits, settlement, redemption, attestation, restart."""

from __future__ import annotations

import json
import logging
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from _node_support import Deployed
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from proxima.node.duties import ChainDuties, DutySettings
from proxima.node.payments import PaymentChecker
from proxima.node.store import AcceptedJob, JobState, NodeStore
from proxima.sdk.bindings import JobStatus, ProximaContracts
from proxima.sdk.chain import InProcessChain
from proxima.sdk.eip712 import JobTerms, LocalSigner, Measurement, SignedMessage, Voucher
from proxima.sdk.errors import ContractRevertError

ETH = 10**18
PRICE = 10**15
SPEC = b"\x5e" * 32
RECEIPT_SIG = b"\x01" * 64 + b"\x1b"


@dataclass
class Net:
    """Deployed contracts: accounts 0 admin, 1-3 providers (staked), 4-6 clients."""

    chain: InProcessChain
    c: ProximaContracts
    providers: list[LocalAccount]
    clients: list[LocalAccount]

    @property
    def provider(self) -> LocalAccount:
        return self.providers[0]

    def open_job(self, *, price: int = PRICE, duration: int = 3_600, challenge_window: int = 600) -> JobTerms:
        now = self.chain.now()
        terms = JobTerms(
            job_id=secrets.token_bytes(32),
            client=self.clients[0].address,
            provider=self.provider.address,
            price=price,
            slash_amount=ETH // 10,
            spec_hash=SPEC,
            accept_by=now + 600,
            delivery_deadline=now + duration,
            challenge_window=challenge_window,
        )
        self.c.escrow.open_job(self.clients[0], terms.sign(LocalSigner(self.provider), self.c.escrow.domain))
        return terms

    def voucher(
        self, amount: int, jobs: int, client: LocalAccount, provider: LocalAccount | None = None
    ) -> SignedMessage[Voucher]:
        return Voucher(
            client=client.address,
            provider=(provider or self.provider).address,
            cumulative_amount=amount,
            cumulative_jobs=jobs,
        ).sign(LocalSigner(client), self.c.vouchers.domain)

    def gas_cost(self, tx_hash: bytes) -> int:
        receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])

    def fee(self, amount: int, contract: str = "vouchers") -> int:
        binding = self.c.vouchers if contract == "vouchers" else self.c.escrow
        return amount * binding.parameter("feeBps") // 10_000


@pytest.fixture
def net(deployed: Deployed) -> Net:
    accounts = deployed.chain.accounts
    return Net(deployed.chain, deployed.c, accounts[1:4], accounts[4:7])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.db") as s:
        yield s


@pytest.fixture
def duties(net: Net, store: NodeStore) -> ChainDuties:
    return ChainDuties(net.c, net.provider, store, DutySettings(redeem_threshold=100 * PRICE))


def escrow_job(terms: JobTerms) -> AcceptedJob:
    return AcceptedJob(
        job_id=terms.job_id,
        client=terms.client,
        workload="matmul",
        payment="escrow",
        price=terms.price,
        spec_hash=terms.spec_hash,
        input=b'{"seed":1}',
        delivery_deadline=terms.delivery_deadline,
    )


def completed(store: NodeStore, terms: JobTerms, result: bytes | None = None) -> bytes:
    """Accept and complete the job in the store; returns its result hash."""
    result = result or secrets.token_bytes(32)
    store.accept_job(escrow_job(terms))
    store.complete_job(terms.job_id, result, RECEIPT_SIG, output=b"{}")
    return result


# --- escrow ----------------------------------------------------------------------------------------------


def test_commitPending_commitsEarliestDeadlineFirst(net: Net, store: NodeStore, duties: ChainDuties) -> None:
    late, early = net.open_job(duration=7_200), net.open_job(duration=1_800)
    results = {t.job_id: completed(store, t) for t in (late, early)}
    running = net.open_job()
    store.accept_job(escrow_job(running))
    store.mark_running(running.job_id)

    sent = duties.commit_pending()

    assert len(sent) == 2
    commits = store.chain_txs("commit")
    assert [t.job_id for t in commits] == [early.job_id, late.job_id]
    assert [t.tx_hash for t in commits] == sent
    assert all(t.gas_used and t.gas_used > 20_000 for t in commits)
    for terms in (late, early):
        onchain = net.c.escrow.job_of(terms.job_id)
        assert (onchain.status, onchain.result_hash) == (JobStatus.DELIVERED, results[terms.job_id])
        stored = store.job(terms.job_id)
        assert stored is not None
        assert (stored.state, stored.challenge_ends_at) == (JobState.COMMITTED, onchain.challenge_ends_at)
    assert net.c.escrow.job_of(running.job_id).status is JobStatus.ACCEPTED
    assert duties.commit_pending() == []


def test_escrowJob_committedBeforeDeadline_settlesAfterTheChallengeWindow(
    net: Net, store: NodeStore, duties: ChainDuties
) -> None:
    terms = net.open_job(price=20 * PRICE, challenge_window=600)
    completed(store, terms)
    duties.commit_pending()
    assert duties.release_payments() == []  # the window is still open
    net.chain.advance_time(601)
    client_before = net.chain.balance(net.clients[0].address)
    provider_before = net.chain.balance(net.provider.address)

    [tx] = duties.release_payments()

    fee = net.fee(terms.price, "escrow")
    assert net.chain.balance(net.provider.address) - provider_before == terms.price - fee - net.gas_cost(tx)
    assert net.chain.balance(net.clients[0].address) == client_before  # the client gets nothing back
    assert net.c.escrow.job_of(terms.job_id).status is JobStatus.SETTLED
    assert store.job(terms.job_id).state is JobState.SETTLED  # type: ignore[union-attr]
    earnings = store.earnings()
    assert (earnings.escrow_settled, earnings.escrow_committed) == (terms.price, 0)
    assert duties.release_payments() == []


def test_releasePayments_recordsJobsTheClientConfirmed_withoutATransaction(
    net: Net, store: NodeStore, duties: ChainDuties
) -> None:
    terms = net.open_job()
    completed(store, terms)
    duties.commit_pending()
    net.c.escrow.confirm_result(net.clients[0], terms.job_id)
    net.chain.advance_time(601)
    assert duties.release_payments() == []
    stored = store.job(terms.job_id)
    assert stored is not None
    assert (stored.state, stored.settle_tx) == (JobState.SETTLED, None)


def test_commitPending_afterALostReceipt_doesNotCommitTwice(
    net: Net, store: NodeStore, duties: ChainDuties
) -> None:
    terms = net.open_job()
    result = completed(store, terms)
    # The commit was mined but the node died before recording it.
    net.c.escrow.commit_result(net.provider, terms.job_id, result)
    nonce = net.chain.w3.eth.get_transaction_count(net.provider.address)

    assert duties.commit_pending() == []

    assert net.chain.w3.eth.get_transaction_count(net.provider.address) == nonce
    stored = store.job(terms.job_id)
    assert stored is not None
    assert (stored.state, stored.commit_tx) == (JobState.COMMITTED, None)
    assert stored.challenge_ends_at == net.c.escrow.job_of(terms.job_id).challenge_ends_at


def test_commitPending_jobsPastTheirDeadlineOrRefunded_areMarkedFailed(
    net: Net, store: NodeStore, duties: ChainDuties, caplog: pytest.LogCaptureFixture
) -> None:
    missed, refunded = net.open_job(duration=300), net.open_job(duration=300)
    for terms in (missed, refunded):
        completed(store, terms)
    net.chain.advance_time(301)
    net.c.escrow.claim_timeout(net.clients[0], refunded.job_id)

    with caplog.at_level(logging.ERROR, logger="proxima.node.duties"):
        assert duties.commit_pending() == []

    failed = {j.job_id: j.error for j in store.jobs([JobState.FAILED])}
    assert "deadline" in (failed[missed.job_id] or "")
    assert "refunded" in (failed[refunded.job_id] or "")
    assert any(
        r.message == "delivery deadline passed before the result was committed" for r in caplog.records
    )
    assert store.pending_commits() == []


_KILLED_NODE = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from proxima.node.store import AcceptedJob, NodeStore

    path, jobs = Path(sys.argv[1]), json.loads(sys.argv[2])
    store = NodeStore(path)
    accepted = [
        AcceptedJob(job_id=bytes.fromhex(j["job_id"]), client=j["client"], workload="matmul",
                    payment="escrow", price=j["price"], spec_hash=bytes.fromhex(j["spec_hash"]),
                    input=b'{"seed":1}', delivery_deadline=j["deadline"])
        for j in jobs
    ]
    for job in accepted:
        store.accept_job(job)
    store.mark_running(accepted[0].job_id)
    store.complete_job(accepted[1].job_id, b"\\x71" * 32, b"\\x01" * 64 + b"\\x1b")
    os.kill(os.getpid(), signal.SIGKILL)  # mid-job: no clean shutdown
    """
)


def test_nodeKilledMidJob_thenRestarted_stillHonoursWhatItAccepted(net: Net, tmp_path: Path) -> None:
    first, second = net.open_job(), net.open_job()
    jobs = [
        {
            "job_id": t.job_id.hex(),
            "client": t.client,
            "price": t.price,
            "spec_hash": t.spec_hash.hex(),
            "deadline": t.delivery_deadline,
        }
        for t in (first, second)
    ]
    path = tmp_path / "node.db"
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_NODE, str(path), json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    with NodeStore(path) as store:
        [unfinished] = store.unfinished_jobs()
        assert unfinished == escrow_job(first)  # everything needed to run it again, input included
        store.mark_running(unfinished.job_id)
        store.complete_job(unfinished.job_id, b"\x72" * 32, RECEIPT_SIG)

        sent = ChainDuties(net.c, net.provider, store).commit_pending()

        assert len(sent) == 2
        assert net.c.escrow.job_of(first.job_id).result_hash == b"\x72" * 32
        assert net.c.escrow.job_of(second.job_id).result_hash == b"\x71" * 32
        assert {j.job_id for j in store.jobs([JobState.COMMITTED])} == {first.job_id, second.job_id}


# --- vouchers --------------------------------------------------------------------------------------------


def _accept_vouchers(net: Net, store: NodeStore, counts: dict[int, int]) -> PaymentChecker:
    """Clients (by index) deposit and pay ``count`` jobs each through the payment checker."""
    checker = PaymentChecker(net.c, net.provider.address, store, max_unredeemed_per_client=ETH)
    for index, count in counts.items():
        client = net.clients[index]
        net.c.vouchers.deposit(client, ETH // 10)
        for jobs in range(1, count + 1):
            checker.accept_voucher(net.voucher(jobs * PRICE, jobs, client), client.address, PRICE)
    return checker


def test_redeemVouchers_inOneBatch_paysTheProviderTheSum(net: Net, store: NodeStore) -> None:
    now = [1_000.0]
    duties = ChainDuties(
        net.c,
        net.provider,
        store,
        DutySettings(redeem_threshold=10 * PRICE, redeem_interval=600),
        clock=lambda: now[0],
    )
    _accept_vouchers(net, store, {0: 3, 1: 2})
    assert duties.redeem_vouchers() is None  # 5 jobs' worth: below the threshold, interval not elapsed
    now[0] += 600
    before = net.chain.balance(net.provider.address)

    tx = duties.redeem_vouchers()

    assert tx is not None
    total = 5 * PRICE
    assert net.chain.balance(net.provider.address) - before == total - net.fee(total) - net.gas_cost(tx)
    assert net.c.vouchers.redeemed_of(net.clients[0].address, net.provider.address).amount == 3 * PRICE
    assert net.c.vouchers.redeemed_of(net.clients[1].address, net.provider.address).jobs == 2
    assert net.c.registry.account_of(net.provider.address).jobs_completed == 5
    earnings = store.earnings()
    assert (earnings.voucher_redeemed, earnings.voucher_outstanding) == (total, 0)
    assert [t.tx_hash for t in store.chain_txs("redeem")] == [tx]
    assert duties.redeem_vouchers(force=True) is None


def test_redeemVouchers_whenOutstandingReachesTheThreshold(net: Net, store: NodeStore) -> None:
    duties = ChainDuties(net.c, net.provider, store, DutySettings(redeem_threshold=4 * PRICE))
    checker = _accept_vouchers(net, store, {0: 3})
    assert duties.redeem_vouchers() is None
    client = net.clients[0]
    checker.accept_voucher(net.voucher(4 * PRICE, 4, client), client.address, PRICE)
    assert duties.redeem_vouchers() is not None
    assert net.c.vouchers.redeemed_of(client.address, net.provider.address).amount == 4 * PRICE


def test_doubleRedemption_isImpossible(
    net: Net, store: NodeStore, duties: ChainDuties, tmp_path: Path
) -> None:
    _accept_vouchers(net, store, {0: 2})
    latest = store.latest_voucher(net.clients[0].address)
    assert latest is not None
    assert duties.redeem_vouchers(force=True) is not None
    before = net.chain.balance(net.provider.address)

    with pytest.raises(ContractRevertError) as info:
        net.c.vouchers.redeem_batch(net.provider, net.provider.address, [latest])
    assert info.value.error_name == "VouchersNotIncreasing"
    # A node that lost track (a fresh store holding the same voucher) only records what the chain says.
    with NodeStore(tmp_path / "other.db") as fresh:
        fresh.record_voucher(latest)
        assert ChainDuties(net.c, net.provider, fresh).redeem_vouchers(force=True) is None
        assert fresh.voucher_account(net.clients[0].address).outstanding == 0  # type: ignore[union-attr]
    assert net.chain.balance(net.provider.address) == before


def test_redeemVouchers_depositDrainedByAnotherProvider_redeemsTheLargestCoveredVoucher(
    net: Net, store: NodeStore, duties: ChainDuties, caplog: pytest.LogCaptureFixture
) -> None:
    client, rival = net.clients[0], net.providers[1]
    net.c.vouchers.deposit(client, 10 * PRICE)
    checker = PaymentChecker(net.c, net.provider.address, store, max_unredeemed_per_client=ETH)
    checker.accept_voucher(net.voucher(3 * PRICE, 1, client), client.address, 3 * PRICE)
    checker.accept_voucher(net.voucher(6 * PRICE, 2, client), client.address, 3 * PRICE)
    # The client over-commits: it also pays a rival provider, who redeems first.
    net.c.vouchers.redeem(rival, net.voucher(7 * PRICE, 1, client, rival))
    before = net.chain.balance(net.provider.address)

    tx = duties.redeem_vouchers(force=True)

    assert tx is not None
    paid = net.chain.balance(net.provider.address) - before + net.gas_cost(tx)
    assert paid == 3 * PRICE - net.fee(3 * PRICE)
    account = store.voucher_account(client.address)
    assert account is not None
    assert (account.redeemed_amount, account.outstanding) == (3 * PRICE, 3 * PRICE)
    with caplog.at_level(logging.WARNING, logger="proxima.node.duties"):
        assert duties.redeem_vouchers(force=True) is None
    assert any("covers none" in r.message for r in caplog.records)


# --- attestations ----------------------------------------------------------------------------------------


def test_submitAttestation_batchSignedByTheProvider_withTheChainsNonce(
    net: Net, store: NodeStore, duties: ChainDuties
) -> None:
    cpu = Measurement(benchmark_id=b"\x01" * 32, gemm_flops=5 * 10**11, mem_bandwidth=2 * 10**10)
    gpu = Measurement(benchmark_id=b"\x02" * 32, gemm_flops=9 * 10**13, mem_bandwidth=3 * 10**12)
    first = duties.submit_attestation([cpu, gpu], epoch=1)
    second = duties.submit_attestation([cpu], epoch=2)

    figures = net.c.attestations.latest_figures(net.provider.address)
    assert (figures.gemm_flops, figures.epoch) == (cpu.gemm_flops, 2)
    assert net.c.attestations.nonce_of(net.provider.address) == 2
    assert [(a.epoch, a.nonce, a.measurements, a.tx_hash) for a in store.attestations()] == [
        (1, 0, 2, first),
        (2, 1, 1, second),
    ]
    with pytest.raises(ValueError, match="at least one measurement"):
        duties.submit_attestation([], epoch=3)


def test_requestedAttestation_withAStaleEpoch_isDroppedWithoutFailingThePass(
    net: Net, store: NodeStore, duties: ChainDuties, caplog: pytest.LogCaptureFixture
) -> None:
    m = Measurement(benchmark_id=b"\x01" * 32, gemm_flops=1, mem_bandwidth=1)
    duties.request_attestation([m], epoch=5)
    assert duties.run_once()
    duties.request_attestation([m], epoch=4)
    with caplog.at_level(logging.ERROR, logger="proxima.node.duties"):
        assert duties.run_once()
        assert duties.run_once()  # not retried
    assert [a.epoch for a in store.attestations()] == [5]
    assert sum(r.message == "attestation refused by the registry; dropped" for r in caplog.records) == 1


# --- the loop --------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_survivesAnUnreachableChain_commitsOnceItIsBack_andStopsWhenCancelled(
    net: Net, store: NodeStore, caplog: pytest.LogCaptureFixture
) -> None:
    duties = ChainDuties(net.c, net.provider, store, DutySettings(poll_interval=0.02, max_backoff=0.1))
    terms = net.open_job()
    completed(store, terms)
    working = net.chain.w3
    states: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            net.chain.w3 = Web3(HTTPProvider(f"http://127.0.0.1:{_closed_port()}"))
            nursery.start_soon(duties.run)
            await trio.sleep(0.5)
            states["while_down"] = store.job(terms.job_id).state  # type: ignore[union-attr]
            net.chain.w3 = working
            duties.wake()
            with trio.fail_after(20):
                while store.job(terms.job_id).state is not JobState.COMMITTED:  # type: ignore[union-attr]
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()

    try:
        with caplog.at_level(logging.INFO, logger="proxima.node.duties"):
            trio.run(main)
    finally:
        net.chain.w3 = working
    assert states["while_down"] is JobState.COMPLETED
    failures = [r for r in caplog.records if r.message == "chain duty failed"]
    assert failures
    assert all(r.__dict__["error"] for r in failures)
    assert net.c.escrow.job_of(terms.job_id).status is JobStatus.DELIVERED
    assert caplog.records[-1].message == "chain duties stopped"


@pytest.mark.parametrize(
    ("field", "value"),
    [("redeem_threshold", -1), ("poll_interval", 0), ("max_backoff", float("nan")), ("commit_margin", 1.5)],
)
def test_dutySettings_rejectBadValues(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"DutySettings.{field}"):
        DutySettings(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_backoff"):
        DutySettings(poll_interval=10, max_backoff=5)
