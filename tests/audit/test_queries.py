"""The auditor's query views over the ledger of the exercised world (``audited``): what each row says is
checked against the script's facts and against contract state read from the chain; paging, sorting, export."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from proxima.audit import queries
from proxima.audit.ledger import AuditLedger, ledger_of, read_parameters
from proxima.audit.service import ProviderLocation


@pytest.fixture(scope="module")
def ledger(audited: Any) -> AuditLedger:
    return ledger_of(audited.store, read_parameters(audited.w3, audited.deployment))


def test_providers_matchContractStateForEveryAccount(audited: Any, ledger: AuditLedger) -> None:
    page = queries.providers(ledger, limit=100)
    facts = audited.facts
    assert page.total == len(facts.providers) + len(facts.verifiers)
    assert {r.address for r in page.data if r.role == "provider"} == set(facts.providers)
    assert {r.address for r in page.data if r.role == "verifier"} == set(facts.verifiers)
    for row in page.data:
        on_chain = audited.contracts.registry.account_of(row.address)
        assert (row.stake_wei, row.unbonding_wei) == (on_chain.stake, on_chain.unbonding)
        assert (row.jobs_completed, row.jobs_failed, row.disputes_lost) == (
            on_chain.jobs_completed,
            on_chain.jobs_failed,
            on_chain.disputes_lost,
        )
        assert row.total_slashed_wei == on_chain.total_slashed
        assert row.slashes == sum(1 for _, account in facts.slashes if account == row.address)
        if row.role == "provider":
            assert row.reliability is not None
            assert 0.0 <= row.reliability <= 1.0
        else:  # verifiers run no jobs: no score
            assert row.reliability is None
            assert row.verified_throughput_flops is None
        assert row.country is None
        assert row.location_source is None


def test_providers_filterSortAndPage(audited: Any, ledger: AuditLedger) -> None:
    verifiers = queries.providers(ledger, role="verifier")
    assert verifiers.total == 3
    assert all(r.role == "verifier" for r in verifiers.data)

    by_stake = queries.providers(ledger, sort="stake", limit=100).data
    keys = [(-r.stake_wei, r.address.lower()) for r in by_stake]
    assert keys == sorted(keys), "stake descending, ties by address"
    ascending = queries.providers(ledger, sort="stake", descending=False, limit=100).data
    assert [r.stake_wei for r in ascending] == sorted(r.stake_wei for r in by_stake)

    pages = [queries.providers(ledger, sort="earned", limit=2, offset=o) for o in range(0, 8, 2)]
    assert [r.address for p in pages for r in p.data] == [
        r.address for r in queries.providers(ledger, sort="earned", limit=100).data
    ]
    assert all(p.total == 7 and p.block_number == audited.facts.end_block for p in pages)
    beyond = queries.providers(ledger, offset=50)
    assert beyond.data == []
    assert beyond.total == 7

    with pytest.raises(ValueError, match="sort must be one of"):
        queries.providers(ledger, sort="bogus")
    with pytest.raises(ValueError, match="limit"):
        queries.providers(ledger, limit=0)


def test_providers_locationsAreTheClaimedOnes(audited: Any, ledger: AuditLedger) -> None:
    provider = audited.facts.providers[0]
    where = {provider: ProviderLocation(provider, "eu-west", "DE", 3, 100, 200)}
    page = queries.providers(ledger, where, country="DE")
    assert [r.address for r in page.data] == [provider]
    row = page.data[0]
    assert (row.country, row.region) == ("DE", "eu-west")
    assert row.location_source == "as claimed in the provider's signed offer"
    assert queries.providers(ledger, where, region="us-east").total == 0


def test_jobs_statusesAndPartiesAreTheScripts(audited: Any, ledger: AuditLedger) -> None:
    facts = audited.facts
    page = queries.jobs(ledger, limit=100)
    assert page.total == len(facts.jobs)
    by_id = {r.job_id: r for r in page.data}
    for name, job_id in facts.jobs.items():
        row = by_id["0x" + job_id.hex()]
        assert row.status == facts.job_status[name].lower(), name
        assert row.provider == facts.job_provider[name]
        on_chain = audited.contracts.escrow.job_of(job_id)
        assert row.price_wei == on_chain.price
        assert row.open_tx == "0x" + facts.tx[f"open:{name}"].hex()
    confirmed = by_id["0x" + facts.jobs["confirmed"].hex()]
    assert confirmed.outcome == "confirmed"
    assert confirmed.payout_wei + confirmed.fee_wei == confirmed.price_wei
    assert by_id["0x" + facts.jobs["open"].hex()].outcome is None

    newest_first = [r.opened_block for r in page.data]
    assert newest_first == sorted(newest_first, reverse=True)
    refunded = queries.jobs(ledger, status="refunded")
    assert {r.job_id for r in refunded.data} == {
        "0x" + facts.jobs[n].hex() for n, s in facts.job_status.items() if s == "Refunded"
    }
    provider = facts.job_provider["confirmed"]
    mine = queries.jobs(ledger, provider=provider, limit=100)
    assert mine.total == sum(1 for p in facts.job_provider.values() if p == provider)
    assert queries.job_detail(ledger, facts.jobs["timed_out"]) == by_id["0x" + facts.jobs["timed_out"].hex()]
    assert queries.job_detail(ledger, b"\x00" * 32) is None


def test_slashes_inChainOrderWithEvidence(audited: Any, ledger: AuditLedger) -> None:
    facts = audited.facts
    rows = queries.slashes(ledger, descending=False).data
    assert [(r.kind, r.account) for r in rows] == facts.slashes
    for row in rows:
        assert row.amount_wei > 0
        assert row.finder_reward_wei + row.to_pool_wei <= row.amount_wei
        assert row.evidence, f"{row.kind} slash without evidence"
    canary = next(r for r in rows if r.kind == "canary")
    assert canary.tx_hash == "0x" + facts.tx["prove:canary"].hex()
    assert canary.finder == facts.finder
    timeout = next(r for r in rows if r.kind == "timeout")
    assert timeout.job_id == "0x" + facts.jobs["timed_out"].hex()
    only = queries.slashes(ledger, kind="equivocation")
    assert [r.tx_hash for r in only.data] == ["0x" + facts.tx["prove:equivocation"].hex()]


def test_attestations_andReports(audited: Any, ledger: AuditLedger) -> None:
    facts = audited.facts
    rows = queries.attestations(ledger, descending=False, limit=1000).data
    assert [(r.block_number, r.log_index) for r in rows] == sorted(
        (r.block_number, r.log_index) for r in rows
    )
    single = [r for r in rows if r.tx_hash == "0x" + facts.tx["attest:single"].hex()]
    assert len(single) == 1
    assert single[0].kind == "attestation"
    assert single[0].signer == single[0].provider
    reports = queries.attestations(ledger, kind="report", limit=1000).data
    assert reports
    assert all(r.signer in facts.verifiers and r.passed is not None for r in reports)
    about = facts.providers[0]
    assert all(r.provider == about for r in queries.attestations(ledger, provider=about).data)


def test_rewardEpochs_matchThePool(audited: Any, ledger: AuditLedger) -> None:
    facts = audited.facts
    rows = queries.reward_epochs(ledger, descending=False).data
    assert [r.epoch for r in rows] == list(range(facts.epochs + 1))
    rolled = rows[facts.rollover_epoch]
    assert rolled.total_work == 0
    assert rolled.rolled_out_wei > 0
    assert rows[facts.rollover_epoch + 1].rolled_in_wei == rolled.rolled_out_wei
    for row in rows:
        assert sum(share.work for share in row.shares) == row.total_work
        assert sum(share.reward_wei for share in row.shares) <= row.pot_wei
        assert [share.provider for share in row.shares] == sorted(
            (share.provider for share in row.shares), key=str.lower
        )
    assert facts.claimed[0] in {share.provider for share in rows[0].shares}
    assert rows[0].claimed_wei > 0
    assert not rows[-1].ended


def test_providerDetail_gathersTheAccountsHistory(audited: Any, ledger: AuditLedger) -> None:
    facts = audited.facts
    slashed = facts.slashes[0][1]
    detail = queries.provider_detail(ledger, slashed)
    assert detail is not None
    assert detail.account.address == slashed
    assert [s.kind for s in detail.slashes] == [k for k, a in facts.slashes if a == slashed]
    assert all(slashed in (j.provider, j.client) for j in detail.jobs)
    assert detail.jobs
    claimer = facts.claimed[0]
    claimer_detail = queries.provider_detail(ledger, claimer)
    assert claimer_detail is not None
    assert claimer_detail.epochs
    assert queries.provider_detail(ledger, facts.finder) is None


def test_summary_moneyOwedIsWhatTheContractsHold(audited: Any, ledger: AuditLedger) -> None:
    summary = queries.summary(ledger)
    assert summary.jobs == len(audited.facts.jobs)
    assert summary.slashes == len(audited.facts.slashes)
    assert summary.providers == 4
    assert summary.verifiers == 3
    assert summary.anomalies == 0
    assert summary.chain_id == audited.chain.chain_id
    assert {m.contract for m in summary.money} >= {
        "JobEscrow",
        "PaymentVouchers",
        "ProviderRegistry",
        "RewardPool",
    }
    for money in summary.money:
        balance = audited.chain.balance(audited.deployment.address(money.contract))
        assert money.owed_wei == money.expected_wei == balance, money.contract


def test_series_bucketsAddUpToTheTotals(ledger: AuditLedger) -> None:
    page = queries.series(ledger, 3_600)
    assert page.points
    assert all(p.end - p.start == 3_600 for p in page.points)
    assert sum(p.slashes for p in page.points) == len(ledger.slashes)
    assert sum(p.jobs_opened for p in page.points) == len(ledger.jobs)
    with pytest.raises(ValueError, match="bucket"):
        queries.series(ledger, 0)


@pytest.mark.parametrize("what", queries.EXPORTS)
def test_export_csvAndJsonInAStableColumnOrder(ledger: AuditLedger, what: str) -> None:
    model, rows = queries.export_rows(ledger, what)
    text = queries.export(ledger, what, "csv")
    assert text == queries.export(ledger, what, "csv")
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == list(model.model_fields)
    assert len(parsed) == len(rows) + 1
    for line, row in zip(parsed[1:], rows, strict=True):
        for column, cell in zip(parsed[0], line, strict=True):
            value = getattr(row, column)
            if column.endswith("_wei"):
                assert int(cell) == value, column  # exact integers, never floats
    data = json.loads(queries.export(ledger, what, "json"))
    assert len(data) == len(rows)
    for item in data:
        assert list(item) == list(model.model_fields)
        assert all(isinstance(v, str) for k, v in item.items() if k.endswith("_wei"))
    with pytest.raises(ValueError, match="format"):
        queries.export(ledger, what, "xml")
