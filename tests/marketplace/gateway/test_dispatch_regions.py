"""Regional failover with real provider nodes on anvil: when every node of a region fails, the region goes
dark, jobs in flight and new jobs move to the next-best region, and a job whose residency allows only the dark
region fails with a clear error instead of moving; after the cool-down one trial job may go back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _dispatch_support import Gateway, Net, ProviderWorld, StaticMarket, seeded

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.dispatch import DispatchSettings
from proxima.marketplace.gateway.health import BreakerState, HealthSettings
from proxima.marketplace.gateway.jobstore import EventType, JobStatus

pytestmark = pytest.mark.anvil


def test_a_dark_region_shifts_jobs_to_the_next_region_and_never_breaks_residency(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    eu1 = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    eu2 = world.add(net.providers[1], region="eu-west", country="DE", coordinate_ms=(8, 0))
    eu3 = world.add(net.providers[2], region="eu-west", country="DE", coordinate_ms=(12, 0))
    us1 = world.add(net.providers[3], region="us-east", country="US", coordinate_ms=(80, 0))
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    cooldown = 1.5
    gw = Gateway(
        net,
        market,
        tmp_path,
        DispatchSettings(attempt_timeout_s=5.0, max_attempts=4),
        HealthSettings(failure_threshold=5, region_min_tried=2, region_min_failed=3, cooldown_s=cooldown),
    )
    # The region's two nearest nodes go down; their offers are still in the book.
    world.kill(eu1)
    world.kill(eu2)
    eu = {eu1.address, eu2.address, eu3.address}

    async def main() -> None:
        async with gw.running():
            # In flight: the job tries the region's nodes until the region is dark, then moves.
            first = await gw.finish(gw.submit(seeded(21)))
            assert first.status is JobStatus.SUCCEEDED, first.error
            assert [(a.provider, a.error_code) for a in first.attempts] == [
                (eu1.address, "transport"),
                (eu2.address, "transport"),
                (us1.address, None),
            ]
            failovers = [e.data for e in gw.store.events(first.id) if e.type is EventType.FAILOVER]
            assert [f["region_dark"] for f in failovers] == [False, True]
            assert gw.health.region_state("eu-west") is BreakerState.OPEN
            assert gw.spent() == first.charged_wei

            # New jobs go straight to the next region (eu3 is excluded with its region).
            second = await gw.finish(gw.submit(seeded(22)))
            assert second.status is JobStatus.SUCCEEDED, second.error
            assert [a.provider for a in second.attempts] == [us1.address]
            assert second.placement is not None
            assert second.placement["chosen"][0]["region"] == "us-east"

            # A job allowed only in Germany fails rather than leaving it.
            german = await gw.finish(gw.submit(seeded(23), spec={"residency": {"countries": ["DE"]}}))
            assert german.status is JobStatus.FAILED
            assert german.error is not None
            assert german.error["code"] == "region_unavailable"
            assert "eu-west" in german.error["message"]
            assert "DE" in german.error["message"]
            assert german.attempts == ()

            # After the cool-down the region is half-open: one trial job may go there. The dead nodes' offers
            # have expired meanwhile; the trial lands on the live node and clears the region.
            market.hidden.update({eu1.address, eu2.address})
            market.refresh()
            await asyncio.sleep(cooldown + 0.1)
            assert gw.health.region_state("eu-west") is BreakerState.HALF_OPEN
            trial = await gw.finish(gw.submit(seeded(24), spec={"residency": {"countries": ["DE"]}}))
            assert trial.status is JobStatus.SUCCEEDED, trial.error
            assert [a.provider for a in trial.attempts] == [eu3.address]
            assert gw.health.region_state("eu-west") is BreakerState.CLOSED

            # Residency held throughout: no German-only job ever touched another country.
            for job in (german, trial):
                assert all(a.provider in eu for a in job.attempts)

    asyncio.run(main())
    gw.close()
