"""The ledger recomputed from events alone equals contract state on a world where everything happened."""

from __future__ import annotations

import dataclasses
import json

import pytest
from _audited import Audited
from _ledger_world import PARAMS, WorldFacts

from proxima.audit.ledger import (
    BPS,
    AuditLedger,
    LedgerError,
    LedgerParameters,
    build_ledger,
    ledger_of,
    read_parameters,
)
from proxima.audit.store import IndexedEvent
from proxima.marketplace.matching.reliability import ProviderStats, reliability, verified_throughput
from proxima.sdk.bindings import JobStatus, Role


@pytest.fixture(scope="module")
def params(audited: Audited) -> LedgerParameters:
    return read_parameters(audited.w3, audited.deployment, audited.facts.end_block)


@pytest.fixture(scope="module")
def ledger(audited: Audited, params: LedgerParameters) -> AuditLedger:
    return ledger_of(audited.store, params)


def test_parameters_come_from_the_contracts_not_the_deployment_file(audited: Audited) -> None:
    forged = audited.deployment.model_copy(update={"parameters": {"fee_bps": 9_999, "epoch_length": 1}})
    p = read_parameters(audited.w3, forged, audited.facts.end_block)
    assert (p.fee_bps, p.voucher_fee_bps, p.epoch_length) == (
        PARAMS.fee_bps,
        PARAMS.fee_bps,
        PARAMS.epoch_length,
    )
    assert (p.dispute_window, p.unbonding_delay, p.withdrawal_delay) == (
        PARAMS.dispute_window,
        PARAMS.unbonding_delay,
        PARAMS.withdrawal_delay,
    )
    assert p.verdict_quorum == p.fault_verdict_quorum == PARAMS.verdict_quorum
    assert p.genesis == audited.contracts.rewards._call("genesis")
    assert p.chain_id == audited.chain.chain_id
    assert p.block_number == audited.facts.end_block


def test_ledger_is_clean_and_at_the_checkpoint(audited: Audited, ledger: AuditLedger) -> None:
    assert ledger.anomalies == []
    assert ledger.block_number == audited.facts.end_block
    assert ledger.events == audited.store.event_count()
    assert ledger.current_epoch == audited.facts.epochs == audited.contracts.rewards.current_epoch()


def test_accounts_equal_registry_attestations_and_rewards(audited: Audited, ledger: AuditLedger) -> None:
    c, facts = audited.contracts, audited.facts
    assert set(ledger.accounts) == set(facts.providers) | set(facts.verifiers)
    for address, record in ledger.accounts.items():
        chain = c.registry.account_of(address)
        assert record.role == ("provider" if chain.role is Role.PROVIDER else "verifier")
        assert (record.stake, record.unbonding, record.total_slashed) == (
            chain.stake,
            chain.unbonding,
            chain.total_slashed,
        ), address
        assert (record.jobs_completed, record.jobs_failed, record.disputes_lost) == (
            chain.jobs_completed,
            chain.jobs_failed,
            chain.disputes_lost,
        ), address
        assert (record.registered_at, record.unbond_ready_at) == (chain.registered_at, chain.unbond_ready_at)
        assert record.attestation_nonce == c.attestations.nonce_of(address)
        if record.role == "verifier":
            continue
        figures, report = c.attestations.latest_figures(address), c.attestations.latest_report(address)
        assert (record.gemm_flops, record.mem_bandwidth, record.attested_epoch) == (
            figures.gemm_flops,
            figures.mem_bandwidth,
            figures.epoch,
        )
        assert (record.measured_flops, record.reports_passed, record.reports_failed) == (
            report.measured_flops,
            report.passes,
            report.failures,
        )
        assert record.rewards_claimable == c.rewards.claimable(address), address
        stats = ProviderStats(
            address=address,
            stake_wei=chain.stake,
            jobs_completed=chain.jobs_completed,
            jobs_failed=chain.jobs_failed,
            disputes_lost=chain.disputes_lost,
            total_slashed_wei=chain.total_slashed,
            attested_flops=figures.gemm_flops,
            verified_flops=report.measured_flops,
            report_passes=report.passes,
            report_failures=report.failures,
        )
        assert record.reliability == reliability(stats)
        assert record.verified_throughput == verified_throughput(figures.gemm_flops, stats)
    # the script's shape: provider 3 unbonded and withdrew, provider 1 topped up and was slashed twice
    p1, p3 = ledger.accounts[facts.providers[1]], ledger.accounts[facts.providers[3]]
    assert (p1.slashes, p3.slashes, p3.unbonding) == (2, 1, 0)
    assert ledger.accounts[facts.providers[0]].peer_id is not None
    assert ledger.accounts[facts.verifiers[0]].reports_made == 2


def test_earnings_and_fees_follow_settlements(audited: Audited, ledger: AuditLedger) -> None:
    p0 = ledger.accounts[audited.facts.providers[0]]
    settled = [j for j in ledger.jobs.values() if j.provider == p0.address and j.status == "Settled"]
    vouchers = [v for v in ledger.vouchers.values() if v.provider == p0.address]
    assert p0.earned == sum(j.payout for j in settled) + sum(v.payout for v in vouchers)
    assert p0.fees_paid == sum(j.fee for j in settled) + sum(v.fees for v in vouchers)
    for voucher in vouchers:
        assert voucher.fees == voucher.amount * PARAMS.fee_bps // BPS  # one redemption at a time here
    assert p0.rewards_claimed > 0
    assert audited.facts.claimed == [p0.address]


def test_jobs_equal_escrow_state_and_the_script(audited: Audited, ledger: AuditLedger) -> None:
    facts: WorldFacts = audited.facts
    assert len(ledger.jobs) == len(facts.jobs)
    outcomes = {
        "confirmed": "confirmed",
        "released": "released",
        "timed_out": "timed_out",
        "dispute_valid": "dispute_valid",
        "dispute_invalid": "dispute_invalid",
        "dispute_expired": "dispute_expired",
        "late_confirmed": "confirmed",
        "delivered": None,
        "open": None,
    }
    for name, job_id in facts.jobs.items():
        record, chain = ledger.jobs[job_id], audited.contracts.escrow.job_of(job_id)
        assert record.status == facts.job_status[name] == JobStatus(chain.status).name.title(), name
        assert record.outcome == outcomes[name], name
        assert (record.client, record.provider, record.price, record.dispute_bond) == (
            chain.client,
            chain.provider,
            chain.price,
            chain.dispute_bond,
        )
        assert record.result_hash == chain.result_hash
        assert record.open_tx == facts.tx[f"open:{name}"]
    valid = ledger.jobs[facts.jobs["dispute_valid"]]
    assert valid.payout == valid.price - valid.fee + valid.dispute_bond
    assert valid.verdict_signers == 2
    invalid = ledger.jobs[facts.jobs["dispute_invalid"]]
    assert invalid.refund == invalid.price + invalid.dispute_bond
    assert invalid.slashed == invalid.slash_amount


def test_vouchers_and_deposits_equal_contract_state(audited: Audited, ledger: AuditLedger) -> None:
    c = audited.contracts
    assert len(ledger.vouchers) == 3
    for (client, provider), record in ledger.vouchers.items():
        chain = c.vouchers.redeemed_of(client, provider)
        assert (record.amount, record.jobs) == (chain.amount, chain.jobs)
    assert ledger.vouchers[(audited.facts.clients[0], audited.facts.providers[0])].redemptions == 2
    assert set(ledger.deposits) == set(audited.facts.clients)
    for client, deposit in ledger.deposits.items():
        chain = c.vouchers.deposit_of(client)
        assert (deposit.balance, deposit.pending_withdrawal, deposit.withdrawable_at) == (
            chain.balance,
            chain.pending_withdrawal,
            chain.withdrawable_at,
        )
        assert deposit.balance == deposit.deposited - deposit.withdrawn - deposit.redeemed
    assert ledger.deposits[audited.facts.clients[2]].withdrawn > 0


def test_slashes_carry_kind_evidence_and_finder(audited: Audited, ledger: AuditLedger) -> None:
    facts = audited.facts
    assert [(s.kind, s.account) for s in ledger.slashes] == facts.slashes
    by_kind = {s.kind: s for s in ledger.slashes}
    assert set(by_kind["equivocation"].evidence) == {"result_hash_a", "result_hash_b"}
    assert by_kind["canary"].evidence["result_hash"] == b"\xee" * 32
    assert by_kind["invalid_result"].tx_hash == facts.tx["prove:invalid"]
    assert by_kind["dispute"].finder == facts.clients[0]  # the client takes the finder's share
    assert by_kind["dispute"].evidence["verdict_signers"] == 2
    assert by_kind["timeout"].evidence["refund"] == ledger.jobs[facts.jobs["timed_out"]].price
    for slash in ledger.slashes:
        share = PARAMS.finder_share_bps
        assert slash.finder_reward == slash.amount * share // BPS
        assert slash.from_stake + slash.from_unbonding == slash.amount == slash.to_pool + slash.finder_reward
    kinds = {int(v) for v in ledger.faults.values()}
    assert kinds == {1, 2, 3}
    assert len(ledger.canaries) == 1


def test_reward_epochs_pots_work_claims_and_rollover(audited: Audited, ledger: AuditLedger) -> None:
    c, facts = audited.contracts, audited.facts
    assert sorted(ledger.epochs) == [0, 1, 2, 3]
    for number, epoch in ledger.epochs.items():
        chain = c.rewards.epoch_of(number)
        assert (epoch.pot, epoch.total_work) == (chain.pot, chain.total_work), number
        assert epoch.ended == (number < facts.epochs)
        assert sum(epoch.work.values()) == epoch.total_work
        for provider, work in epoch.work.items():
            assert epoch.rewards[provider] == epoch.pot * work // epoch.total_work
    rolled = ledger.epochs[facts.rollover_epoch]
    assert rolled.pot == 0
    assert rolled.total_work == 0
    assert rolled.rolled_out > 0
    assert ledger.epochs[facts.epochs].rolled_in == rolled.rolled_out
    p0 = facts.providers[0]
    assert ledger.epochs[0].claimed == ledger.epochs[0].rewards[p0] == ledger.accounts[p0].rewards_claimed
    for address, account in ledger.accounts.items():
        ended = [e for e in ledger.epochs.values() if e.ended]
        earned = sum(e.rewards.get(address, 0) for e in ended)
        assert account.rewards_claimable == earned - account.rewards_claimed


def test_money_flows_equal_balances_and_contract_totals(audited: Audited, ledger: AuditLedger) -> None:
    c = audited.contracts
    for name, address in audited.deployment.contracts.items():
        assert ledger.money.expected[name] == ledger.money.owed[name] == audited.chain.balance(address), name
    totals = ledger.money.totals
    assert totals["total_staked"] == c.registry.total_staked()
    assert totals["total_unbonding"] == c.registry.total_unbonding()
    assert totals["total_escrowed"] == c.escrow.total_escrowed()
    assert totals["total_deposits"] == c.vouchers.total_deposits()
    assert totals["pool_balance"] == c.rewards.pool_balance()
    assert totals["treasury_balance"] == c.rewards.treasury_balance()


def test_series_sums_to_the_totals(ledger: AuditLedger, audited: Audited) -> None:
    points = ledger.series(600)
    assert [p.start for p in points] == sorted(p.start for p in points)
    assert all(p.end - p.start == 600 for p in points)
    assert sum(p.jobs_opened for p in points) == len(ledger.jobs)
    assert sum(p.slashes for p in points) == len(ledger.slashes)
    assert sum(p.slashed for p in points) == sum(s.amount for s in ledger.slashes)
    assert sum(p.attestations for p in points) == len(ledger.attestations) == 6
    assert sum(p.reports for p in points) == len(ledger.reports) == 4
    assert points[-1].total_stake == ledger.money.totals["total_staked"]
    assert len(ledger.series(10**6)) in (1, 2)
    for bad in (0, -5, True, 1.5):
        with pytest.raises(LedgerError, match="bucket_s"):
            ledger.series(bad)  # type: ignore[arg-type]
    assert sum(p.volume for p in ledger.series(1)) == sum(p.volume for p in points)


def test_ledger_serialises_to_json(ledger: AuditLedger) -> None:
    data = json.loads(ledger.model_dump_json())
    assert set(data["jobs"]) == {"0x" + k.hex() for k in ledger.jobs}
    assert all("/" in key for key in data["vouchers"])
    assert data["parameters"]["fee_bps"] == PARAMS.fee_bps


def test_stake_and_activity_before_a_transaction(audited: Audited, ledger: AuditLedger) -> None:
    provider = audited.facts.providers[3]
    registered = ledger.accounts[provider].registered_block
    assert ledger.stake_at(provider, registered, 0) is None
    assert ledger.is_active_at(provider, "provider", registered + 1, 0)
    assert not ledger.is_active_at(provider, "verifier", registered + 1, 0)
    assert not ledger.is_active_at(audited.facts.clients[0], "provider", audited.facts.end_block, 0)


def _events(audited: Audited) -> list[IndexedEvent]:
    return list(audited.store.events())


def test_a_settlement_paying_more_than_the_rules_is_an_anomaly(
    audited: Audited, params: LedgerParameters
) -> None:
    events = _events(audited)
    at = next(i for i, e in enumerate(events) if e.name == "JobSettled")
    events[at] = dataclasses.replace(
        events[at], args={**events[at].args, "payout": events[at].args["payout"] + 1}
    )
    ledger = build_ledger(
        events, params, block_number=audited.facts.end_block, block_timestamp=events[-1].timestamp
    )
    [anomaly] = ledger.anomalies
    assert anomaly.kind == "rule"
    assert "payout" in anomaly.detail
    assert anomaly.tx_hash == events[at].tx_hash
    assert (
        ledger.money.expected["JobEscrow"]
        == audited.chain.balance(audited.deployment.address("JobEscrow")) - 1
    )


def test_a_malformed_event_is_an_anomaly_not_a_crash(audited: Audited, params: LedgerParameters) -> None:
    events = _events(audited)
    at = next(i for i, e in enumerate(events) if e.name == "StakeIncreased")
    events[at] = dataclasses.replace(events[at], args={"account": events[at].args["account"]})
    ledger = build_ledger(
        events, params, block_number=audited.facts.end_block, block_timestamp=events[-1].timestamp
    )
    assert [a.kind for a in ledger.anomalies] == ["malformed_event"]
    assert "StakeIncreased" in ledger.anomalies[0].subject


def test_empty_index_has_no_ledger(params: LedgerParameters) -> None:
    from proxima.audit.store import AuditStore

    with AuditStore.memory() as store, pytest.raises(LedgerError, match="sync"):
        ledger_of(store, params)
