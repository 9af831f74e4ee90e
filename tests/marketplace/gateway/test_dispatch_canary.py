"""Canaries: after a matmul job succeeds on a provider, a drawn share of jobs sends that provider a canary of
the same shape (committed on chain by a verifier first) as a job of the gateway's own; an honest answer
passes, a wrong one is proven on chain with proveCanaryFault and the provider slashed. Clients are never
charged for canaries."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from _dispatch_support import (
    Gateway,
    Net,
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
from proxima.marketplace.gateway.jobstore import JobRecord, JobStatus
from proxima.marketplace.gateway.verify import VerificationPolicy, canary_due
from proxima.node.faults import FaultInjector
from proxima.node.store import NodeStore

pytestmark = pytest.mark.anvil


def gateway(net: Net, world: ProviderWorld, tmp_path: Path, **kwargs: object) -> Gateway:
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    return Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=10.0), **kwargs)  # type: ignore[arg-type]


def canaries(gw: Gateway) -> list[JobRecord]:
    rows = gw.store.read("SELECT id FROM jobs WHERE kind = 'canary' ORDER BY created_at")
    return [r for r in (gw.store.get(row["id"]) for row in rows) if r is not None]


def test_the_canary_draw_is_a_deterministic_share_of_job_ids() -> None:
    ids = ["0x" + secrets.token_bytes(32).hex() for _ in range(2_000)]
    drawn = [canary_due(job_id, 0.25) for job_id in ids]
    assert 400 < sum(drawn) < 600
    assert drawn == [canary_due(job_id, 0.25) for job_id in ids]  # same id, same answer
    assert not any(canary_due(job_id, 0.0) for job_id in ids)
    assert all(canary_due(job_id, 1.0) for job_id in ids)
    # A smaller rate draws a subset of the larger rate's jobs (one threshold on one hash).
    assert all(canary_due(job_id, 0.25) for job_id in ids if canary_due(job_id, 0.1))


def test_an_honest_provider_answers_its_canary_and_the_client_pays_only_its_job(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    provider = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    register_verifiers(net, [net.chain.accounts[7]])
    verifier = SigningVerifier(net, net.chain.accounts[7])
    gw = gateway(net, world, tmp_path, verifiers=[verifier], policy=VerificationPolicy(canary_rate=1.0))
    stake = net.c.registry.account_of(provider.address).stake
    inp = seeded(31, 20)

    async def main() -> JobRecord:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(inp))
            assert await dispatcher.wait_background(30)
            return fresh(gw, job)

    job = asyncio.run(main())
    assert job.status is JobStatus.SUCCEEDED, job.error
    [canary] = canaries(gw)
    issued = verifier.canaries[0]
    assert canary.id == issued.job_id  # the job id the verifier committed on chain
    assert (issued.input["m"], issued.input["k"], issued.input["n"]) == (20, 20, 20)  # the job's shape
    assert canary.kind == "canary"
    assert canary.status is JobStatus.SUCCEEDED, canary.error
    assert canary.client == gw.payer.address  # the gateway's own job
    assert [a.provider for a in canary.attempts] == [provider.address]
    assert canary.verification is not None
    assert canary.verification["method"] == "canary"
    assert canary.verification["passed"] is True
    assert canary.charged_wei == 0
    # The provider got two paid jobs (vouchers), the client was charged for its own only.
    assert gw.payer.position(provider.address).accepted_jobs == 2
    assert gw.spent() == job.charged_wei == price_of(inp)
    assert gw.reserved() == 0
    with NodeStore(provider.store_path) as store:
        assert len(store.jobs()) == 2
    assert net.c.registry.account_of(provider.address).stake == stake
    text = gw.metrics.render().decode()
    assert 'proxima_gateway_canaries_total{outcome="passed"} 1.0' in text
    # Canary jobs are not client jobs: not in the client's list nor in the job counters.
    assert [j.id for j in gw.store.list(net.client.address)] == [job.id]
    gw.metrics.sync_jobs(gw.store)
    assert (
        'proxima_gateway_jobs_total{outcome="succeeded",workload="matmul"} 1.0'
        in gw.metrics.render().decode()
    )
    gw.close()


def test_a_wrong_canary_answer_is_proven_on_chain_and_slashes_the_provider(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    # A node that falsifies half of its matmul products (deterministically by job id): the client's job is one
    # it answers honestly, the canary one it falsifies.
    faults = FaultInjector(wrong_matmul_rate=0.5, seed=11)

    def pick(falsified: bool) -> bytes:
        while True:
            job_id = secrets.token_bytes(32)
            if faults.falsifies("matmul", job_id) == falsified:
                return job_id

    sly = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), faults=faults)
    verifier_accounts = [net.chain.accounts[7], net.chain.accounts[0]]
    register_verifiers(net, verifier_accounts)
    verifiers = [SigningVerifier(net, a, canary_ids=lambda: pick(True)) for a in verifier_accounts]
    gw = gateway(net, world, tmp_path, verifiers=verifiers, policy=VerificationPolicy(canary_rate=1.0))
    stake = net.c.registry.account_of(sly.address).stake
    inp = seeded(32, 16)

    async def main() -> JobRecord:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(inp, job_id="0x" + pick(False).hex()))
            assert await dispatcher.wait_background(30)
            return fresh(gw, job)

    job = asyncio.run(main())
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.provider == sly.address
    [canary] = canaries(gw)
    assert canary.status is JobStatus.FAILED
    assert canary.error is not None
    assert canary.error["code"] == "verification_failed"
    [attempt] = canary.attempts
    assert attempt.outcome == "rejected"
    assert attempt.verification is not None
    assert attempt.verification["method"] == "canary"
    assert attempt.evidence is not None
    assert attempt.evidence["kind"] == "canary"
    assert attempt.evidence["outcome"] == "proven", attempt.evidence
    slashed = int(attempt.evidence["slashed_wei"])
    assert slashed > 0
    assert net.c.faults.is_fault_proven(sly.address, bytes.fromhex(canary.id[2:]))
    assert net.c.registry.account_of(sly.address).stake == stake - slashed
    # The client paid for its (honest) job only.
    assert gw.spent() == job.charged_wei == price_of(inp)
    text = gw.metrics.render().decode()
    assert 'proxima_gateway_canaries_total{outcome="failed"} 1.0' in text
    assert 'proxima_gateway_evidence_total{kind="canary",outcome="proven"} 1.0' in text
    gw.close()
