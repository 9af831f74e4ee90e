"""The dispatcher against real provider nodes on anvil, through the real MarketNetwork: the success path, a
refusing provider, a provider that never answers, the result cache, cancellation, budget refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
from proxima.marketplace.errors import MarketConfigError
from proxima.marketplace.gateway.dispatch import DispatchSettings
from proxima.marketplace.gateway.jobstore import EventType, JobStatus
from proxima.marketplace.gateway.payer import VoucherOutcome
from proxima.node.store import NodeStore
from proxima.sdk.eip712 import JobReceipt, recover_signer
from proxima.sdk.workloads import MatmulInput, MatmulOutput, matmul_operands

pytestmark = pytest.mark.anvil


def gateway(net: Net, world: ProviderWorld, tmp_path: Path, **settings: float) -> Gateway:
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    return Gateway(net, market, tmp_path, DispatchSettings(**{"attempt_timeout_s": 5.0, **settings}))  # type: ignore[arg-type]


def test_a_job_runs_on_the_nearest_provider_and_is_charged_once(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    near = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    far = world.add(net.providers[1], region="us-east", country="US", coordinate_ms=(80, 0))
    gw = gateway(net, world, tmp_path)
    inp = seeded(1)

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(inp))
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert job.provider == near.address
            assert [a.provider for a in job.attempts] == [near.address]
            assert job.attempts[0].job_id == job.id  # the first attempt sends the job's own id
            price = price_of(inp)
            assert job.price_wei == price
            assert job.charged_wei == price
            assert gw.spent() == price
            assert gw.reserved() == 0
            # The result is the product, with the provider's receipt for this job.
            c = MatmulOutput.model_validate(job.result).c.to_array()
            a, b = matmul_operands(MatmulInput.model_validate(inp))
            np.testing.assert_allclose(c, a @ b)
            assert job.receipt is not None
            receipt = JobReceipt.model_validate(
                {
                    "job_id": bytes.fromhex(job.receipt["message"]["jobId"][2:]),
                    "provider": job.receipt["message"]["provider"],
                    "client": job.receipt["message"]["client"],
                    "result_hash": bytes.fromhex(job.receipt["message"]["resultHash"][2:]),
                    "queue_micros": job.receipt["message"]["queueMicros"],
                    "compute_micros": job.receipt["message"]["computeMicros"],
                }
            )
            assert recover_signer(
                receipt, net.domains.faults_domain, bytes.fromhex(job.receipt["signature"][2:])
            ) == (near.address)
            assert set(job.timing_ms) == {
                "match",
                "dispatch",
                "queue",
                "compute",
                "verify",
                "settle",
                "total",
            }
            assert job.timing_ms["total"] >= job.timing_ms["compute"] > 0
            assert job.placement is not None
            assert job.placement["chosen"][0]["provider"] == near.address
            assert far.address in [c["provider"] for c in job.placement["backups"]]
            types = [e.type for e in gw.store.events(job.id)]
            assert types == [
                EventType.QUEUED,
                EventType.PLACED,
                EventType.ATTEMPT_STARTED,
                EventType.SUCCEEDED,
            ]

    asyncio.run(main())
    # The voucher the node accepted is the gateway's first to it, for exactly the price.
    position = gw.payer.position(near.address)
    assert (position.accepted_jobs, position.accepted_amount) == (1, price_of(inp))
    assert world.jobs_of(near) == 1
    assert world.jobs_of(far) == 0
    assert gw.market.chainstate.stats(near.address).observed_successes == 1
    gw.close()


def test_a_refusing_provider_fails_over_to_the_backup_and_the_client_pays_once(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    # The near node refuses every voucher (its exposure limit is 0): a real "unpaid" refusal.
    refuser = world.add(
        net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), max_unredeemed=0
    )
    backup = world.add(net.providers[1], region="eu-west", country="FR", coordinate_ms=(20, 0))
    gw = gateway(net, world, tmp_path)
    inp = seeded(2)

    async def main() -> None:
        async with gw.running():
            # Reserved when accepted, as the HTTP layer does: the dispatcher keeps to that reservation.
            job = await gw.finish(gw.submit(inp, reserve=5 * price_of(inp)))
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert [(a.provider, a.outcome, a.error_code) for a in job.attempts] == [
                (refuser.address, "failed", "unpaid"),
                (backup.address, "succeeded", None),
            ]
            assert job.attempts[1].job_id != job.id  # a later attempt gets a fresh job id
            assert job.provider == backup.address
            assert gw.spent() == price_of(inp) == job.charged_wei
            assert gw.reserved() == 0
            types = [e.type for e in gw.store.events(job.id)]
            assert EventType.FAILOVER in types
            failed = next(e for e in gw.store.events(job.id) if e.type is EventType.ATTEMPT_FAILED)
            assert failed.data["code"] == "unpaid"
            assert "exposure_limit" in failed.data["message"]

    asyncio.run(main())
    # The refused voucher was not kept by the node: the next voucher to it reuses the count.
    assert gw.payer.position(refuser.address).next_jobs == 1
    assert gw.payer.position(backup.address).accepted_jobs == 1
    assert world.jobs_of(refuser) == 0
    # A payment refusal is about the gateway's account: it rests the provider but is not held against its
    # reliability.
    assert gw.market.chainstate.stats(refuser.address).observed_failures == 0
    assert gw.market.chainstate.stats(backup.address).observed_successes == 1
    gw.close()


def test_a_provider_that_never_answers_times_out_and_the_backup_delivers(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    hanging = HangingMatmul()
    silent = world.add(
        net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), workload=hanging
    )
    backup = world.add(net.providers[1], region="eu-west", country="DE", coordinate_ms=(30, 0))
    gw = gateway(net, world, tmp_path, attempt_timeout_s=1.5)
    inp = seeded(3)

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(inp))
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert [(a.provider, a.error_code) for a in job.attempts] == [
                (silent.address, "timeout"),
                (backup.address, None),
            ]
            assert gw.spent() == price_of(inp)

    asyncio.run(main())
    assert hanging.entered.is_set()  # the silent node took the job (and its voucher) and never answered
    assert gw.market.chainstate.stats(silent.address).observed_failures == 1
    position = gw.payer.position(silent.address)
    assert position.uncertain == 1
    assert position.next_jobs == 2  # the next voucher assumes the node recorded it
    gw.close()


def test_the_result_cache_serves_a_repeated_job_without_dispatch(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    provider = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    gw = gateway(net, world, tmp_path)
    inp = seeded(4)

    async def main() -> None:
        async with gw.running():
            first = await gw.finish(gw.submit(inp))
            second = await gw.finish(gw.submit(dict(inp), reserve=10 * price_of(inp)))
            assert second.status is JobStatus.SUCCEEDED
            assert second.cached
            assert second.attempts == ()
            assert second.result == first.result
            assert second.receipt == first.receipt  # the original provider's signed receipt
            assert second.charged_wei == 0
            assert gw.reserved() == 0  # the reservation made when it was accepted is freed
            assert EventType.CACHED in [e.type for e in gw.store.events(second.id)]
            # Opting out runs it again.
            third = await gw.finish(gw.submit(inp, use_cache=False))
            assert not third.cached
            assert len(third.attempts) == 1
            assert gw.spent() == 2 * price_of(inp)

    asyncio.run(main())
    assert world.jobs_of(provider) == 2
    gw.close()


def test_cancel_stops_a_running_job_and_charges_nothing(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    hanging = HangingMatmul()
    world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), workload=hanging)
    gw = gateway(net, world, tmp_path, attempt_timeout_s=30)

    async def main() -> None:
        async with gw.running() as dispatcher:
            job_id = gw.submit(seeded(5))
            await asyncio.to_thread(hanging.entered.wait, 10)
            assert gw.reserved() > 0
            assert dispatcher.cancel(job_id) is True
            job = await gw.finish(job_id, timeout=5)
            assert job.status is JobStatus.CANCELLED
            assert job.attempts[0].outcome == "cancelled"
            assert dispatcher.cancel(job_id) is False
            for _ in range(50):
                if gw.reserved() == 0:
                    break
                await asyncio.sleep(0.02)
            assert gw.reserved() == 0
            assert gw.spent() == 0
            assert job.charged_wei is None

    asyncio.run(main())
    rows = gw.store.read("SELECT state FROM vouchers")
    assert [r["state"] for r in rows] == [VoucherOutcome.UNCERTAIN.value]
    gw.close()


def test_a_job_over_the_budget_fails_before_anything_is_paid(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    provider = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    gw = gateway(net, world, tmp_path)
    gw.accounts.set_budget(net.client.address, 1)

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(seeded(6)))
            assert job.status is JobStatus.FAILED
            assert job.error is not None
            assert job.error["code"] == "budget"
            assert job.attempts == ()

    asyncio.run(main())
    assert world.jobs_of(provider) == 0
    assert gw.store.read("SELECT COUNT(*) AS n FROM vouchers")[0]["n"] == 0
    assert gw.spent() == 0
    gw.close()


def test_a_job_no_provider_can_run_fails_with_the_engines_reason(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    gw = gateway(net, world, tmp_path)

    async def main() -> None:
        async with gw.running():
            job = await gw.finish(gw.submit(seeded(7), spec={"residency": {"countries": ["JP"]}}))
            assert job.status is JobStatus.FAILED
            assert job.error is not None
            assert job.error["code"] == "no_candidate"
            assert "residency" in job.error["message"]
            bad = await gw.finish(gw.submit(seeded(8), spec={"redundancy": 9}))
            assert bad.error is not None
            assert bad.error["code"] == "invalid_spec"

    asyncio.run(main())
    assert gw.reserved() == 0
    gw.close()


def test_concurrent_jobs_wait_for_slots_and_keep_voucher_chains_in_step_with_the_nodes(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    nodes = [
        world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0)),
        world.add(net.providers[1], region="eu-west", country="DE", coordinate_ms=(9, 0)),
    ]
    gw = gateway(net, world, tmp_path)
    inputs = [seeded(100 + i, size=16 + 8 * (i % 3)) for i in range(12)]

    async def main() -> None:
        async with gw.running():
            ids = [gw.submit(inp, use_cache=False) for inp in inputs]
            jobs = [await gw.finish(job_id) for job_id in ids]
            assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * len(jobs), [j.error for j in jobs]
            assert gw.engine.reservations == ()

    asyncio.run(main())
    assert gw.spent() == sum(price_of(i) for i in inputs)
    for node in nodes:
        position = gw.payer.position(node.address)
        assert position.inflight == position.uncertain == 0
        assert node_voucher(node.store_path, net.payer.address) == (
            position.accepted_jobs,
            position.accepted_amount,
        )
    assert sum(gw.payer.position(n.address).accepted_jobs for n in nodes) == len(inputs)
    gw.close()


def node_voucher(path: Path, client: str) -> tuple[int, int]:
    with NodeStore(path) as store:
        account = store.voucher_account(client)
    assert account is not None
    assert account.latest is not None
    return account.latest.message.cumulative_jobs, account.latest.message.cumulative_amount


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"attempt_timeout_s": 0},
        {"job_timeout_s": float("nan")},
        {"capacity_wait_s": -1},
        {"deposit_headroom_wei": -1},
        {"max_concurrent_jobs": True},
    ],
)
def test_dispatch_settings_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(MarketConfigError, match=next(iter(bad))):
        DispatchSettings(**bad)  # type: ignore[arg-type]
