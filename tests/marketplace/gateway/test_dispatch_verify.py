"""Every result is verified before its job succeeds: a dishonest provider node (the node's own fault
injection, receipts signed for wrong products) is rejected, the job finishes on an honest provider and the
client is charged once, for the honest result; with staked verifiers the evidence goes on chain and the
cheater is slashed (honest providers never); without verifiers the job still reruns, evidence skipped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from _dispatch_support import (
    Gateway,
    Net,
    Provider,
    ProviderWorld,
    SigningVerifier,
    StaticMarket,
    fresh,
    price_of,
    register_verifiers,
    seeded,
)

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.dispatch import DispatchSettings
from proxima.marketplace.gateway.jobstore import EventType, JobRecord, JobStatus
from proxima.marketplace.gateway.routes.jobs import job_public
from proxima.marketplace.gateway.verify import VerificationPolicy
from proxima.node.duties import ChainDuties
from proxima.node.faults import FaultInjector
from proxima.node.jobserver import JobLimits, QuotePolicy
from proxima.node.store import NodeStore
from proxima.sdk.bindings import JobStatus as ChainJobStatus
from proxima.sdk.workloads import MatmulInput, MatmulOutput, matmul_operands

pytestmark = pytest.mark.anvil

CHEAT = FaultInjector(wrong_matmul_rate=1.0, seed=7)


def gateway(net: Net, world: ProviderWorld, tmp_path: Path, **kwargs: object) -> Gateway:
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    return Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=10.0), **kwargs)  # type: ignore[arg-type]


def assert_product(job: JobRecord, inp: dict[str, object]) -> None:
    c = MatmulOutput.model_validate(job.result).c.to_array()
    a, b = matmul_operands(MatmulInput.model_validate(inp))
    np.testing.assert_allclose(c, a @ b)


def test_a_wrong_result_is_rejected_rerun_on_an_honest_provider_and_proven_on_chain(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    cheater = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), faults=CHEAT)
    honest = world.add(net.providers[1], region="eu-west", country="FR", coordinate_ms=(25, 0))
    verifier_accounts = [net.chain.accounts[7], net.chain.accounts[0]]
    register_verifiers(net, verifier_accounts)
    verifiers = [SigningVerifier(net, account) for account in verifier_accounts]
    gw = gateway(net, world, tmp_path, verifiers=verifiers)
    stakes = {p: net.c.registry.account_of(p).stake for p in (cheater.address, honest.address)}
    payer_before = net.chain.balance(net.payer.address)
    inp = seeded(21, 24)

    async def main() -> JobRecord:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(inp, reserve=5 * price_of(inp)))
            assert await dispatcher.wait_background(30)
            return fresh(gw, job)

    job = asyncio.run(main())
    assert job.status is JobStatus.SUCCEEDED, job.error
    # The cheater answered first and was rejected; the honest backup's product is what the client gets.
    assert [(a.provider, a.outcome, a.error_code) for a in job.attempts] == [
        (cheater.address, "rejected", "verification_failed"),
        (honest.address, "succeeded", None),
    ]
    assert job.provider == honest.address
    assert_product(job, inp)
    rejected = job.attempts[0]
    assert rejected.verification is not None
    assert rejected.verification["method"] == "freivalds"
    assert rejected.verification["passed"] is False
    assert rejected.verification["rounds"] == 16
    assert rejected.error_message is not None
    assert "freivalds" in rejected.error_message
    assert job.verification is not None
    assert job.verification["method"] == "freivalds"
    assert job.verification["passed"] is True
    assert job.timing_ms["verify"] > 0
    # Charged exactly once, the honest result's price; nothing reserved is left.
    assert job.charged_wei == price_of(inp) == gw.spent()
    assert gw.reserved() == 0
    # Evidence: two verifiers re-checked it and signed; the proof is on chain, the cheater slashed by it.
    assert rejected.evidence is not None
    assert rejected.evidence["kind"] == "invalid_result"
    assert rejected.evidence["outcome"] == "proven", rejected.evidence
    slashed = int(rejected.evidence["slashed_wei"])
    assert slashed > 0
    assert rejected.evidence["tx"].startswith("0x")
    assert rejected.evidence["verdicts"] == 2
    assert net.c.faults.is_fault_proven(cheater.address, bytes.fromhex(rejected.job_id[2:]))
    assert net.c.registry.account_of(cheater.address).stake == stakes[cheater.address] - slashed
    assert net.c.registry.account_of(honest.address).stake == stakes[honest.address]
    assert not net.c.faults.is_fault_proven(honest.address, bytes.fromhex(job.attempts[1].job_id[2:]))
    assert all(len(v.asked) == 1 for v in verifiers)  # only the rejected result went to the verifiers
    # The operator (payer, finder) got the finder's share, less gas: its balance went up overall.
    assert net.chain.balance(net.payer.address) > payer_before
    types = [e.type for e in gw.store.events(job.id)]
    assert (
        types.index(EventType.REJECTED) < types.index(EventType.FAILOVER) < types.index(EventType.SUCCEEDED)
    )
    assert EventType.EVIDENCE in types
    # The job's JSON shows the check, the rejected attempt and the evidence.
    public = job_public(job).model_dump(mode="json")
    assert public["verification"]["method"] == "freivalds"
    assert public["attempts"][0]["outcome"] == "rejected"
    assert public["attempts"][0]["error"]["code"] == "verification_failed"
    assert public["attempts"][0]["evidence"]["outcome"] == "proven"
    assert public["attempts"][0]["evidence"]["slashed_wei"] == str(slashed)
    # The rejected result went on the cheater's record (its reliability), the honest one on the other's.
    assert gw.market.chainstate.stats(cheater.address).observed_failures == 1
    assert gw.market.chainstate.stats(honest.address).observed_successes == 1
    text = gw.metrics.render().decode()
    assert (
        'proxima_gateway_verifications_total{method="freivalds",outcome="failed",workload="matmul"} 1.0'
        in text
    )
    assert (
        'proxima_gateway_verifications_total{method="freivalds",outcome="passed",workload="matmul"} 1.0'
        in text
    )
    assert 'proxima_gateway_evidence_total{kind="invalid_result",outcome="proven"} 1.0' in text
    # The node kept its voucher for the wrong result (the operator's loss, recovered from the slash).
    assert gw.payer.position(cheater.address).accepted_jobs == 1
    gw.close()


def test_without_verifiers_a_wrong_result_is_still_rejected_and_rerun_and_nobody_is_slashed(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    cheater = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), faults=CHEAT)
    honest = world.add(net.providers[1], region="eu-west", country="FR", coordinate_ms=(25, 0))
    gw = gateway(net, world, tmp_path, policy=VerificationPolicy(freivalds_rounds=8))
    stake = net.c.registry.account_of(cheater.address).stake
    inp = seeded(22, 16)

    async def main() -> tuple[JobRecord, JobRecord]:
        async with gw.running() as dispatcher:
            first = await gw.finish(gw.submit(inp))
            assert await dispatcher.wait_background(10)
            # The cheater is quarantined: the next job goes straight to the honest provider.
            assert dispatcher.quarantined() == {cheater.address}
            second = await gw.finish(gw.submit(seeded(23, 16)))
            return fresh(gw, first), second

    first, second = asyncio.run(main())
    assert first.status is JobStatus.SUCCEEDED, first.error
    assert [(a.provider, a.outcome) for a in first.attempts] == [
        (cheater.address, "rejected"),
        (honest.address, "succeeded"),
    ]
    assert first.attempts[0].verification is not None
    assert first.attempts[0].verification["rounds"] == 8
    assert first.attempts[0].evidence is not None
    assert first.attempts[0].evidence["outcome"] == "skipped"
    assert_product(first, inp)
    assert [a.provider for a in second.attempts] == [honest.address]
    assert gw.spent() == first.charged_wei + second.charged_wei == 2 * price_of(inp)
    assert net.c.registry.account_of(cheater.address).stake == stake
    assert 'proxima_gateway_evidence_total{kind="invalid_result",outcome="skipped"} 1.0' in (
        gw.metrics.render().decode()
    )
    gw.close()


def test_a_job_whose_every_provider_cheats_fails_and_charges_nothing(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), faults=CHEAT)
    world.add(net.providers[1], region="eu-west", country="FR", coordinate_ms=(25, 0), faults=CHEAT)
    gw = gateway(net, world, tmp_path)
    inp = seeded(24, 8)

    async def main() -> JobRecord:
        async with gw.running():
            return await gw.finish(gw.submit(inp, reserve=4 * price_of(inp)))

    job = asyncio.run(main())
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error["code"] == "verification_failed"
    assert {a.outcome for a in job.attempts} == {"rejected"}
    assert job.result is None
    assert job.charged_wei is None
    assert gw.spent() == 0
    assert gw.reserved() == 0
    gw.close()


def test_a_wrong_escrow_result_is_disputed_once_committed_and_refunded_with_verdicts(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    quotes = QuotePolicy(quote_ttl=60, delivery_margin=60, challenge_window=60)
    limits = JobLimits(max_concurrency=2, max_queue=4, read_timeout=5, job_timeout=20)
    cheater = world.add(
        net.providers[0],
        region="eu-west",
        country="DE",
        coordinate_ms=(5, 0),
        faults=CHEAT,
        quotes=quotes,
        limits=limits,
    )
    honest = world.add(
        net.providers[1], region="eu-west", country="FR", coordinate_ms=(25, 0), quotes=quotes, limits=limits
    )
    verifier_accounts = [net.chain.accounts[7], net.chain.accounts[0]]
    register_verifiers(net, verifier_accounts)
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    gw = Gateway(
        net,
        market,
        tmp_path,
        DispatchSettings(attempt_timeout_s=10.0, escrow_max_duration_s=600),
        verifiers=[SigningVerifier(net, a) for a in verifier_accounts],
    )
    stakes = {p: net.c.registry.account_of(p).stake for p in (cheater.address, honest.address)}
    inp = seeded(25, 12)

    async def main() -> JobRecord:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(inp, mode="escrow"))
            assert await dispatcher.wait_background(30)
            rejected = gw.store.get(job.id).attempts[0]  # type: ignore[union-attr]
            # The cheater has not committed its result on chain yet: verdicts kept, the dispute waits.
            assert rejected.evidence is not None
            assert rejected.evidence["outcome"] == "pending", rejected.evidence
            assert gw.payer.escrow_state(rejected.job_id) == "rejected"
            # Both providers commit their results (their own duty); the gateway's duty loop then disputes
            # the wrong one (verdicts in the escrow's domain) and confirms the honest one.
            for p in (cheater, honest):
                await asyncio.to_thread(commit_results, net, p)
            await dispatcher.run_duties_once()
            return gw.store.get(job.id)  # type: ignore[return-value]

    job = asyncio.run(main())
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert [(a.provider, a.outcome) for a in job.attempts] == [
        (cheater.address, "rejected"),
        (honest.address, "succeeded"),
    ]
    rejected, good = job.attempts
    assert gw.payer.escrow_state(rejected.job_id) == "disputed"
    assert gw.payer.escrow_state(good.job_id) == "confirmed"
    assert net.c.escrow.job_of(bytes.fromhex(rejected.job_id[2:])).status is ChainJobStatus.REFUNDED
    assert net.c.escrow.job_of(bytes.fromhex(good.job_id[2:])).status is ChainJobStatus.SETTLED
    assert net.c.escrow.total_escrowed() == 0  # price and bond of the dispute came back
    assert rejected.evidence is not None
    assert rejected.evidence["outcome"] == "proven"
    slashed = int(rejected.evidence["slashed_wei"])
    assert slashed > 0
    assert net.c.registry.account_of(cheater.address).stake == stakes[cheater.address] - slashed
    assert net.c.registry.account_of(cheater.address).disputes_lost == 1
    assert net.c.registry.account_of(honest.address).stake == stakes[honest.address]
    assert gw.spent() == job.charged_wei == good.price_wei
    gw.close()


def commit_results(net: Net, provider: Provider) -> list[bytes]:
    """The provider's own duty: commit its completed escrow results on chain."""
    with NodeStore(provider.store_path) as store:
        return ChainDuties(net.c, provider.account, store).commit_pending()
