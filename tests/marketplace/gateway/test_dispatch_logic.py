"""The dispatcher's own decisions, with real nodes on anvil and a job runner that misbehaves on purpose.

The runner is the dispatcher's collaborator: here it wraps the real ``MarketNetwork`` and alters one
provider's answers in transit (a wrong result under a valid receipt) or fails outright, to check what the
dispatcher does about it. Everything else is real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _dispatch_support import (
    Gateway,
    HangingMatmul,
    Net,
    ProviderWorld,
    StaticMarket,
    price_of,
    seeded,
)

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.dispatch import DispatchSettings
from proxima.marketplace.gateway.health import BreakerState
from proxima.marketplace.gateway.jobstore import JobStatus
from proxima.sdk.jobs import JobRequest, JobResult, Quote, QuoteRequest
from proxima.sdk.offers import Offer
from proxima.sdk.types import Address
from proxima.sdk.workloads import MatmulOutput, Tensor

pytestmark = pytest.mark.anvil


class TamperingRunner:
    """The real network, except that results from ``victim`` come back with a different product."""

    def __init__(self, inner: Any, victim: Address) -> None:
        self.inner = inner
        self.victim = victim

    async def run_job(self, offer: Offer, request: JobRequest, *, timeout: float) -> JobResult:
        result: JobResult = await self.inner.run_job(offer, request, timeout=timeout)
        if offer.provider != self.victim:
            return result
        c = MatmulOutput.model_validate(result.output).c.to_array()
        wrong = MatmulOutput(c=Tensor.from_array(c + 1.0)).model_dump(mode="json", exclude_none=True)
        return result.model_copy(update={"output": wrong})

    async def request_quote(self, offer: Offer, request: QuoteRequest, *, timeout: float) -> Quote:
        quote: Quote = await self.inner.request_quote(offer, request, timeout=timeout)
        return quote


class BrokenRunner:
    """A runner that fails without sending anything."""

    async def run_job(self, offer: Offer, request: JobRequest, *, timeout: float) -> JobResult:
        raise RuntimeError("the libp2p thread is gone")

    async def request_quote(self, offer: Offer, request: QuoteRequest, *, timeout: float) -> Quote:
        raise RuntimeError("the libp2p thread is gone")


def test_a_result_that_does_not_match_its_receipt_is_rejected_and_the_job_fails_over(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    liar = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    honest = world.add(net.providers[1], region="eu-west", country="DE", coordinate_ms=(30, 0))
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    gw = Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=5.0))
    gw.dispatcher.runner = TamperingRunner(gw.network, liar.address)
    inp = seeded(61)

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(inp))
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert [(a.provider, a.error_code) for a in job.attempts] == [
                (liar.address, "invalid_result"),
                (honest.address, None),
            ]
            assert "result hash" in (job.attempts[0].error_message or "")
            assert gw.spent() == price_of(inp)
            c = MatmulOutput.model_validate(job.result).c.to_array()
            rng = np.random.default_rng(61)
            a, b = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
            np.testing.assert_allclose(c, a @ b)

    asyncio.run(main())
    # The node did accept the job (it was paid by voucher); the wrong answer is held against it.
    assert gw.payer.position(liar.address).accepted_jobs == 1
    assert gw.market.chainstate.stats(liar.address).observed_failures == 1
    assert gw.cache.get("matmul", inp) is not None  # only the verified result was cached
    gw.close()


def test_a_job_that_outlives_its_deadline_fails_and_is_not_charged(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    hanging = HangingMatmul()
    world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), workload=hanging)
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    gw = Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=30.0, job_timeout_s=1.0))

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(seeded(62), reserve=10 * price_of(seeded(62))))
            assert job.status is JobStatus.FAILED
            assert job.error is not None
            assert job.error["code"] == "deadline"
            assert gw.reserved() == 0
            assert gw.spent() == 0

    asyncio.run(main())
    gw.close()


def test_a_broken_runner_fails_the_job_without_blaming_providers(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    provider = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    gw = Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=5.0, max_attempts=2))
    gw.dispatcher.runner = BrokenRunner()

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(seeded(63)))
            assert job.status is JobStatus.FAILED
            assert job.error is not None
            assert job.error["code"] == "runner_error"
            assert [a.error_code for a in job.attempts] == ["runner_error"]  # one provider, nobody else
            assert gw.reserved() == 0

    asyncio.run(main())
    assert gw.health.provider_state(provider.address) is BreakerState.CLOSED
    assert gw.market.chainstate.stats(provider.address).observed_failures == 0
    assert gw.payer.position(provider.address).uncertain == 1  # nothing known about what was sent
    gw.close()
