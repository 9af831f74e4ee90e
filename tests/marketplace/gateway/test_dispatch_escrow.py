"""Escrow-paid jobs against real provider nodes on anvil: quote, open on chain, run, confirm once the provider
committed its result; a provider that fails after the escrow was opened is claimed back after its deadline
(refund, slash, ``jobs_failed`` on chain) while the job completes on a backup, paid once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _dispatch_support import CrashingMatmul, Gateway, Net, ProviderWorld, StaticMarket, seeded

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.dispatch import DispatchSettings
from proxima.marketplace.gateway.jobstore import EventType, JobStatus
from proxima.node.duties import ChainDuties
from proxima.node.jobserver import JobLimits, QuotePolicy
from proxima.node.store import NodeStore
from proxima.sdk.bindings import JobStatus as ChainJobStatus

pytestmark = pytest.mark.anvil

# Quotes due 60 + 20 + 1 + 60 = 141 s after they are made.
QUOTES = QuotePolicy(quote_ttl=60, delivery_margin=60, challenge_window=60)
LIMITS = JobLimits(max_concurrency=2, max_queue=4, read_timeout=5, job_timeout=20)


def gateway(net: Net, world: ProviderWorld, tmp_path: Path) -> Gateway:
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    return Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=10.0, escrow_max_duration_s=600))


def commit_results(net: Net, world: ProviderWorld, address: str) -> list[bytes]:
    """The provider's own duty: commit its completed escrow results on chain."""
    provider = world.providers[address]  # type: ignore[index]
    with NodeStore(provider.store_path) as store:
        return ChainDuties(net.c, provider.account, store).commit_pending()


def test_escrow_job_opens_runs_and_is_confirmed(net: Net, world: ProviderWorld, tmp_path: Path) -> None:
    provider = world.add(
        net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), quotes=QUOTES, limits=LIMITS
    )
    gw = gateway(net, world, tmp_path)
    paid_before = net.chain.balance(net.payer.address)

    async def main() -> None:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(seeded(11), mode="escrow"))
            assert job.status is JobStatus.SUCCEEDED, job.error
            attempt = job.attempts[0]
            assert attempt.payment == "escrow"
            assert attempt.job_id != job.id  # escrow attempts carry the quote's job id
            escrow_id = bytes.fromhex(attempt.job_id[2:])
            onchain = net.c.escrow.job_of(escrow_id)
            assert onchain.status is ChainJobStatus.ACCEPTED
            assert onchain.client == net.payer.address
            assert onchain.provider == provider.address
            assert onchain.price == job.charged_wei == attempt.price_wei
            assert gw.spent() == job.charged_wei
            assert gw.payer.escrow_state(attempt.job_id) == "delivered"

            # Nothing to confirm before the provider committed; then the duty confirms it at once.
            await dispatcher.run_duties_once()
            assert net.c.escrow.job_of(escrow_id).status is ChainJobStatus.ACCEPTED
            assert len(await asyncio.to_thread(commit_results, net, world, provider.address)) == 1
            assert net.c.escrow.job_of(escrow_id).status is ChainJobStatus.DELIVERED
            await dispatcher.run_duties_once()
            assert net.c.escrow.job_of(escrow_id).status is ChainJobStatus.SETTLED
            assert gw.payer.escrow_state(attempt.job_id) == "confirmed"
            settled = [e for e in gw.store.events(job.id) if e.type is EventType.SETTLED]
            assert [e.data["action"] for e in settled] == ["confirmed"]

    asyncio.run(main())
    # The payer paid the price (plus gas) and nothing else: no voucher was used.
    assert net.chain.balance(net.payer.address) < paid_before
    assert gw.store.read("SELECT COUNT(*) AS n FROM vouchers")[0]["n"] == 0
    gw.close()


def test_failed_escrow_attempt_is_claimed_back_after_its_deadline(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    crashing = CrashingMatmul()
    broken = world.add(
        net.providers[0],
        region="eu-west",
        country="DE",
        coordinate_ms=(5, 0),
        workload=crashing,
        quotes=QUOTES,
        limits=LIMITS,
    )
    backup = world.add(
        net.providers[1], region="eu-west", country="DE", coordinate_ms=(30, 0), quotes=QUOTES, limits=LIMITS
    )
    gw = gateway(net, world, tmp_path)
    stake_before = net.c.registry.account_of(broken.address).stake

    async def main() -> None:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(seeded(12), mode="escrow"))
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert [(a.provider, a.error_code) for a in job.attempts] == [
                (broken.address, "internal"),
                (backup.address, None),
            ]
            assert crashing.calls == 1  # the broken node accepted the escrow job and failed it
            failed_id, good_id = job.attempts[0].job_id, job.attempts[1].job_id
            assert gw.payer.escrow_state(failed_id) == "failed"
            assert gw.spent() == job.charged_wei == job.attempts[1].price_wei  # the client pays once

            # The backup commits and is confirmed; the failed escrow cannot be claimed before its deadline.
            await asyncio.to_thread(commit_results, net, world, backup.address)
            await dispatcher.run_duties_once()
            assert gw.payer.escrow_state(good_id) == "confirmed"
            assert gw.payer.escrow_state(failed_id) == "failed"
            failed_raw = bytes.fromhex(failed_id[2:])
            assert net.c.escrow.job_of(failed_raw).status is ChainJobStatus.ACCEPTED

            deadline = net.c.escrow.job_of(failed_raw).delivery_deadline
            net.chain.advance_time(deadline - net.chain.now() + 1)
            await dispatcher.run_duties_once()
            onchain = net.c.escrow.job_of(failed_raw)
            assert onchain.status is ChainJobStatus.REFUNDED
            assert gw.payer.escrow_state(failed_id) == "claimed"
            # Nothing is left in escrow: the backup was paid, the failed job refunded to the gateway.
            assert net.c.escrow.total_escrowed() == 0
            settled = [e.data["action"] for e in gw.store.events(job.id) if e.type is EventType.SETTLED]
            assert settled == ["confirmed", "claimed"]

    asyncio.run(main())
    record = net.c.registry.account_of(broken.address)
    assert record.jobs_failed == 1
    assert record.stake < stake_before  # slashed for accepting and not delivering
    assert net.c.registry.account_of(backup.address).jobs_failed == 0
    gw.close()
