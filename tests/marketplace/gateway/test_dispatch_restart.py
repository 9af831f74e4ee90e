"""Gateway restarts and voucher bookkeeping against real provider nodes on anvil.

* a job interrupted by a gateway stop is resumed by a new dispatcher over the same database: the same signed
  request goes to the same node, which answers with the stored result; the client is charged once;
* a node refuses a resent request whose ``issued_at`` is too old *before* it looks up the finished job, so the
  dispatcher re-signs it (same job id and payment) and gets the stored result;
* voucher state survives a restart, and an uncertain voucher the node never recorded is resynchronised from
  the node's own "stale voucher" answer;
* an uncertain voucher the node did record is built on directly (the provider keeps that job's payment).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

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
from proxima.marketplace.gateway.jobstore import JobStatus
from proxima.node.jobserver import JobLimits
from proxima.node.store import JobState, NodeStore
from proxima.sdk.jobclient import JobRejectedError
from proxima.sdk.jobs import ErrorCode, JobRequest, sign_request

pytestmark = pytest.mark.anvil


def wait_completed(path: Path, job_id: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with NodeStore(path) as store:
            stored = store.job(bytes.fromhex(job_id[2:]))
        if stored is not None and stored.state is JobState.COMPLETED:
            return
        time.sleep(0.05)
    raise AssertionError(f"the node did not complete {job_id}")


def node_voucher(path: Path, client: str) -> tuple[int, int]:
    with NodeStore(path) as store:
        account = store.voucher_account(client)
    assert account is not None
    assert account.latest is not None
    return account.latest.message.cumulative_jobs, account.latest.message.cumulative_amount


def test_restart_resends_the_same_request_and_charges_once(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    hanging = HangingMatmul()
    node = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), workload=hanging)
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    settings = DispatchSettings(attempt_timeout_s=10.0)
    inp = seeded(31)
    first = Gateway(net, market, tmp_path, settings)

    async def before() -> str:
        async with first.running():
            job_id = first.submit(inp)
            await asyncio.to_thread(hanging.entered.wait, 10)
            return job_id

    job_id = asyncio.run(before())  # the gateway stops while the node computes
    interrupted = first.store.get(job_id)
    assert interrupted is not None
    assert interrupted.status is JobStatus.RUNNING
    sent = first.store.attempt_request(job_id, 1)
    assert first.spent() == 0
    assert first.reserved() > 0
    first.close()
    hanging.release.set()
    wait_completed(node.store_path, job_id)

    second = Gateway(net, market, tmp_path, settings)

    async def after() -> None:
        async with second.running():
            job = await second.finish(job_id)
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert len(job.attempts) == 1
            assert job.attempts[0].job_id == job_id
            assert second.store.attempt_request(job_id, 1) == sent  # the very same signed request
            assert job.charged_wei == price_of(inp)

    asyncio.run(after())
    assert second.spent() == price_of(inp)
    assert second.reserved() == 0
    assert world.jobs_of(node) == 1
    assert second.payer.position(node.address).accepted_jobs == 1
    second.close()


def test_an_old_resent_request_is_refused_by_the_node_and_re_signed(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    hanging = HangingMatmul()
    limits = JobLimits(max_concurrency=2, max_queue=4, read_timeout=5, job_timeout=20, max_request_age=1)
    node = world.add(
        net.providers[0],
        region="eu-west",
        country="DE",
        coordinate_ms=(5, 0),
        workload=hanging,
        limits=limits,
    )
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    settings = DispatchSettings(attempt_timeout_s=10.0, resend_max_age_s=600)
    first = Gateway(net, market, tmp_path, settings)

    async def before() -> str:
        async with first.running():
            job_id = first.submit(seeded(32))
            assert await asyncio.to_thread(hanging.entered.wait, 30), "the node never started the job"
            return job_id

    job_id = asyncio.run(before())
    old = JobRequest.model_validate(first.store.attempt_request(job_id, 1))
    first.close()
    hanging.release.set()
    wait_completed(node.store_path, job_id)
    time.sleep(max(0.0, old.issued_at + 2.2 - time.time()))  # older than the node's max_request_age

    second = Gateway(net, market, tmp_path, settings)

    async def after() -> None:
        async with second.running():
            job = await second.finish(job_id)
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert len(job.attempts) == 1
            resent = JobRequest.model_validate(second.store.attempt_request(job_id, 1))
            assert resent.issued_at > old.issued_at
            assert (resent.job_id, resent.payment) == (old.job_id, old.payment)

            # What the node does: the finished job's stored result is not served to the old request ...
            offer = market.offer(node.address)
            assert offer is not None
            with pytest.raises(JobRejectedError) as info:
                await second.network.run_job(offer, old, timeout=5)
            assert info.value.code is ErrorCode.EXPIRED
            # ... but to the same request signed again now.
            fresh = sign_request(old.model_copy(update={"issued_at": int(time.time())}), second.payer.signer)
            again = await second.network.run_job(offer, fresh, timeout=5)
            assert json.dumps(again.output, sort_keys=True) == json.dumps(job.result, sort_keys=True)

    asyncio.run(after())
    assert world.jobs_of(node) == 1
    assert second.spent() == price_of(seeded(32))
    second.close()


def test_voucher_state_survives_restart_and_an_unrecorded_voucher_is_resynchronised(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    node = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0))
    backup = world.add(net.providers[1], region="eu-west", country="DE", coordinate_ms=(30, 0))
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    settings = DispatchSettings(attempt_timeout_s=5.0)
    first = Gateway(net, market, tmp_path, settings)
    inputs = [seeded(41), seeded(42, size=1100), seeded(43, size=900)]  # 1, 3 and 2 billing units

    async def before() -> None:
        async with first.running():
            one = await first.finish(first.submit(inputs[0]))
            assert one.provider == node.address
            world.kill(node)  # its offer is still advertised: the next voucher to it is never delivered
            two = await first.finish(first.submit(inputs[1]))
            assert [(a.provider, a.error_code) for a in two.attempts] == [
                (node.address, "transport"),
                (backup.address, None),
            ]

    asyncio.run(before())
    position = first.payer.position(node.address)
    assert (position.accepted_jobs, position.uncertain, position.next_jobs) == (1, 1, 3)
    first.close()

    world.restart(node)
    market.hidden.add(backup.address)
    market.refresh()
    second = Gateway(net, market, tmp_path, settings)
    # The state survived the restart: the next voucher still assumes the uncertain one was recorded.
    assert second.payer.position(node.address).next_jobs == 3

    async def after() -> None:
        async with second.running():
            three = await second.finish(second.submit(inputs[2]))
            assert three.status is JobStatus.SUCCEEDED, three.error
            assert [a.provider for a in three.attempts] == [node.address]  # resynchronised within the attempt

    asyncio.run(after())
    position = second.payer.position(node.address)
    expected = price_of(inputs[0]) + price_of(inputs[2])
    assert (position.accepted_jobs, position.accepted_amount, position.uncertain) == (2, expected, 0)
    assert node_voucher(node.store_path, net.payer.address) == (2, expected)
    assert second.spent() == sum(price_of(i) for i in inputs)
    second.close()


def test_an_uncertain_voucher_the_node_recorded_is_built_on(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    hanging = HangingMatmul()
    node = world.add(net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), workload=hanging)
    backup = world.add(net.providers[1], region="eu-west", country="DE", coordinate_ms=(30, 0))
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    gw = Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=1.5))
    inputs = [seeded(51), seeded(52, size=1100)]

    async def main() -> None:
        async with gw.running():
            one = await gw.finish(gw.submit(inputs[0]))
            assert [(a.provider, a.error_code) for a in one.attempts] == [
                (node.address, "timeout"),
                (backup.address, None),
            ]
            assert gw.payer.position(node.address).uncertain == 1
            hanging.release.set()
            market.hidden.add(backup.address)
            market.refresh()
            two = await gw.finish(gw.submit(inputs[1]))
            assert [a.provider for a in two.attempts] == [node.address]

    asyncio.run(main())
    position = gw.payer.position(node.address)
    paid = price_of(inputs[0]) + price_of(inputs[1])
    assert (position.accepted_jobs, position.accepted_amount, position.uncertain) == (2, paid, 0)
    # The node holds both vouchers: it is paid for the job it accepted but answered too late (the operator's
    # cost); the client paid for what it received: the first job on the backup, the second on the node.
    assert node_voucher(node.store_path, net.payer.address) == (2, paid)
    assert gw.spent() == price_of(inputs[0]) + price_of(inputs[1])
    gw.close()
