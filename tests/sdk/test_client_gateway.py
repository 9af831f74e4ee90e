"""The client against a real gateway (uvicorn on 127.0.0.1, its real services) in front of real provider nodes
behind delaying proxies on anvil (see _sdk_support)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _sdk_support import UNIT_PRICE, Gateway, Market, running_gateway, running_market

from proxima.sdk import (
    AsyncClient,
    AuthenticationError,
    BudgetExceededError,
    Client,
    ClientClosedError,
    InvalidSpecError,
    JobCancelledError,
    JobSpec,
    JobTimeoutError,
    NoProviderError,
)
from proxima.sdk.workloads import MatmulInput, MatmulOutput, matmul_operands

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    with running_market(tmp_path_factory.mktemp("market")) as market:
        yield market


@pytest.fixture(scope="module")
def gateway(market: Market, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(market, tmp_path_factory.mktemp("gateway")) as gateway:
        with Client.connect(gateway.url, api_key=gateway.api_key) as client:
            client.wait_ready(len(market.nodes), measured=True, timeout=30)
        yield gateway


def expected_product(spec: JobSpec) -> np.ndarray:
    inp = spec.parsed_input()
    assert isinstance(inp, MatmulInput)
    a, b = matmul_operands(inp)
    return a @ b


def settled(gateway: Gateway, address: str) -> Any:
    """The client's account at the gateway once no job holds a reservation (freed just after a job)."""
    deadline = time.monotonic() + 10
    while True:
        account = gateway.account(address)
        if account.reserved_wei == 0 or time.monotonic() > deadline:
            return account
        time.sleep(0.05)


def gateway_jobs(gateway: Gateway) -> int:
    response = httpx.get(
        f"{gateway.url}/v1/jobs",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {gateway.api_key}"},
    )
    response.raise_for_status()
    return len(response.json()["data"])


async def test_a_job_comes_back_verified_from_the_nearest_provider_with_its_story(
    market: Market, gateway: Gateway
) -> None:
    before = gateway.account(gateway.client.address)
    async with await AsyncClient.connect(gateway.url, api_key=gateway.api_key) as client:
        spec = JobSpec.matmul(24, seed=101, cache=False)
        job = await client.submit(spec)
        assert job.state in ("queued", "placed", "running")
        out = await job.result(timeout=30)

        assert isinstance(out, MatmulOutput)
        np.testing.assert_allclose(out.c.to_array(), expected_product(spec), rtol=1e-5)
        assert job.state == "succeeded"
        # Placement: the nearest node (10 ms) wins a market where only the round trip differs.
        placement = job.placement
        assert placement is not None
        nearest, *others = market.nearest_first()
        assert placement.provider == nearest == job.provider
        assert placement.region == "eu-west"
        assert placement.providers == (nearest,)
        assert set(placement.backups) == set(others)
        assert placement.explanation["chosen"][0]["provider"] == nearest
        assert [a["outcome"] for a in placement.attempts] == ["succeeded"]
        # Timing: the gateway's phases and the client's own.
        timing = job.timing
        for phase in ("match", "dispatch", "queue", "compute", "verify", "settle", "total"):
            assert getattr(timing, phase) is not None, phase
        assert timing.submit is not None
        assert timing.submit > 0
        assert timing.end_to_end is not None
        assert timing.end_to_end >= timing.submit
        assert timing.client_verify is not None
        # The client's own verification: Freivalds on the product, and the provider's signed receipt.
        assert job.verification is not None
        assert job.verification.passed
        assert job.verification.method == "freivalds"
        assert job.receipt is not None
        assert job.receipt["message"]["provider"] == nearest
        # Money: charged once, the price of one unit at the node's price, in the session and at the gateway.
        assert job.charged_wei == UNIT_PRICE
        assert client.budget.spent_wei == UNIT_PRICE
        assert client.budget.reserved_wei == 0
        assert (await client.account()).deposit is None  # the gateway's operator pays providers
    account = settled(gateway, gateway.client.address)
    assert account.spent_wei == before.spent_wei + UNIT_PRICE
    assert account.reserved_wei == 0


async def test_signed_requests_need_no_api_key_and_many_in_a_row_are_not_replays(gateway: Gateway) -> None:
    async with await AsyncClient.connect(gateway.url, signer=gateway.signing_client) as client:
        job = await client.submit(JobSpec.matmul(8, seed=202, cache=False))
        statuses = [await job.status() for _ in range(5)]  # five signed GETs within milliseconds
        assert all(s in ("queued", "placed", "running", "succeeded") for s in statuses)
        await job.result(timeout=30)
        assert (await client.account()).address == gateway.signing_client.address


async def test_wrong_credentials_are_refused_at_connect(gateway: Gateway, market: Market) -> None:
    with pytest.raises(AuthenticationError) as refused:
        await AsyncClient.connect(gateway.url, api_key="pxk_" + "0" * 43)
    assert refused.value.status == 401
    with pytest.raises(AuthenticationError):  # a key with no account at this gateway
        await AsyncClient.connect(gateway.url, signer=market.account(5))


async def test_budgets_refuse_a_job_before_anything_is_sent(gateway: Gateway) -> None:
    before_jobs, before = gateway_jobs(gateway), gateway.account(gateway.client.address)
    async with await AsyncClient.connect(
        gateway.url, api_key=gateway.api_key, session_budget_wei=UNIT_PRICE * 3 // 2
    ) as client:
        with pytest.raises(BudgetExceededError) as job_cap:  # its own price cap is below every offer
            await client.submit(JobSpec.matmul(8, seed=1, max_price_wei=UNIT_PRICE - 1))
        assert job_cap.value.scope == "job"
        assert job_cap.value.needed_wei == UNIT_PRICE
        assert job_cap.value.available_wei == UNIT_PRICE - 1

        strict = client.session(max_job_wei=UNIT_PRICE // 2)
        with pytest.raises(BudgetExceededError) as client_cap:
            await strict.submit(JobSpec.matmul(8, seed=1))
        assert client_cap.value.scope == "job"
        await strict.aclose()
        assert not client._closed  # a session does not close its parent

        with pytest.raises(BudgetExceededError) as too_big:  # 2 units > 1.5 units of session budget
            await client.submit(JobSpec.matmul(1024, 512, 1024, seed=1))
        assert too_big.value.scope == "session"
        assert too_big.value.needed_wei == 2 * UNIT_PRICE

        first = await client.submit(JobSpec.matmul(8, seed=303, cache=False))
        await first.result(timeout=30)
        assert client.budget.spent_wei == UNIT_PRICE
        with pytest.raises(BudgetExceededError) as spent:  # 0.5 units left
            await client.submit(JobSpec.matmul(8, seed=304, cache=False))
        assert spent.value.scope == "session"
        assert spent.value.available_wei == UNIT_PRICE // 2

        with pytest.raises(NoProviderError):  # nobody serves Japan: refused here, not at the gateway
            await client.submit(JobSpec.matmul(8, seed=1, constraints={"countries": ["JP"]}))
        with pytest.raises(InvalidSpecError) as invalid:
            await client.submit({"workload": "matmul", "input": {"seed": 1, "m": 0, "k": 1, "n": 1}})
        assert invalid.value.field == "input"
    # Only the one job that fit reached the gateway; nothing else was stored, reserved or charged.
    after = settled(gateway, gateway.client.address)
    assert gateway_jobs(gateway) == before_jobs + 1
    assert after.spent_wei == before.spent_wei + UNIT_PRICE
    assert after.reserved_wei == 0


async def test_a_cancelled_job_is_not_charged_and_its_result_says_so(gateway: Gateway) -> None:
    before = gateway.account(gateway.client.address)
    async with await AsyncClient.connect(gateway.url, api_key=gateway.api_key) as client:
        job = await client.submit(JobSpec.matmul(1024, seed=404, cache=False))  # ~2 GFLOP: time to cancel
        assert await job.cancel() is True
        assert job.state == "cancelled"
        with pytest.raises(JobCancelledError):
            await job.result(timeout=10)
        assert await job.cancel() is False  # already final
        assert job.charged_wei is None
        assert client.budget.reserved_wei == 0
        assert client.budget.spent_wei == 0
    after = settled(gateway, gateway.client.address)
    assert after.spent_wei == before.spent_wei
    assert after.reserved_wei == 0


async def test_waiting_less_than_the_job_takes_raises_a_timeout_and_the_job_continues(
    gateway: Gateway,
) -> None:
    async with await AsyncClient.connect(gateway.url, api_key=gateway.api_key) as client:
        job = await client.submit(JobSpec.matmul(16, seed=505, cache=False))
        with pytest.raises(JobTimeoutError) as late:
            await job.result(timeout=0.001)
        assert late.value.job_id == job.id
        assert late.value.status in ("queued", "placed", "running")
        out = await job.result(timeout=30)
        assert isinstance(out, MatmulOutput)
    with pytest.raises(ClientClosedError):
        await client.submit(JobSpec.matmul(8))


def test_map_runs_jobs_concurrently_in_order_with_a_progress_bar_and_returns_errors(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [JobSpec.matmul(12, seed=600 + i, cache=False) for i in range(6)]
    specs.insert(3, JobSpec.matmul(12, seed=1, max_price_wei=1))  # refused by its own price cap
    with Client.connect(gateway.url, api_key=gateway.api_key) as client:
        outcomes = client.map(specs, progress=True, concurrency=4)
        assert [o.index for o in outcomes] == list(range(len(specs)))
        assert [o.ok for o in outcomes] == [True, True, True, False, True, True, True]
        refused = outcomes[3]
        assert isinstance(refused.error, BudgetExceededError)
        assert refused.job_id is None
        for spec, outcome in zip(specs, outcomes, strict=True):
            if outcome.ok:
                out = outcome.unwrap()
                assert isinstance(out, MatmulOutput)
                np.testing.assert_allclose(out.c.to_array(), expected_product(spec), rtol=1e-5)
                assert outcome.placement is not None
                assert outcome.placement.provider is not None
                assert outcome.charged_wei == UNIT_PRICE
                assert outcome.verification is not None
                assert outcome.verification.passed
        with pytest.raises(BudgetExceededError):
            refused.unwrap()
        assert client.budget.spent_wei == 6 * UNIT_PRICE
        with pytest.raises(BudgetExceededError):
            client.map(specs[3:4], progress=False, raise_errors=True)
    err = capsys.readouterr().err
    assert "proxima jobs" in err
    assert "7/7" in err


def test_the_sync_client_is_the_async_one_on_its_own_loop(gateway: Gateway) -> None:
    with Client.connect(gateway.url, api_key=gateway.api_key) as client:
        assert client.mode == "gateway"
        estimate = client.estimate(JobSpec.matmul(8))
        assert (estimate.units, estimate.offers) == (1, 3)
        assert estimate.cheapest_wei == estimate.highest_wei == UNIT_PRICE
        job = client.submit(JobSpec.matmul(8, seed=707, cache=False))
        out = job.result(timeout=30)
        assert isinstance(out, MatmulOutput)
        assert job.status() == "succeeded"
        assert job.placement is not None
        assert job.timing.total is not None

        async def inside_a_loop() -> None:
            # The sync face refuses to block an event loop thread's own loop only; from another loop it works.
            assert client.offers()

        asyncio.run(inside_a_loop())


def test_a_gateway_that_cannot_be_reached_is_a_connection_error(tmp_path: Path) -> None:
    from proxima.sdk import GatewayConnectionError

    with pytest.raises(GatewayConnectionError) as unreachable:
        Client.connect("http://127.0.0.1:9", api_key="pxk_x", timeout=2)
    assert isinstance(unreachable.value, ConnectionError)
