"""The client in embedded mode (the gateway's services in the client's process, paying from its own voucher
deposit) against real provider nodes behind delaying proxies on anvil, and the same job specs through a real
gateway and through embedded mode choosing the same providers (see _sdk_support)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _sdk_support import ETH, UNIT_PRICE, Gateway, Market, running_gateway, running_market

from proxima.sdk import (
    AsyncClient,
    BudgetExceededError,
    Client,
    InsufficientDepositError,
    JobSpec,
    UnsupportedOperationError,
)
from proxima.sdk.workloads import MatmulInput, MatmulOutput, matmul_operands

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]

EMPTY_PAYER = 5
"""A dev account with ether but no voucher deposit."""


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
        yield gateway


@pytest.fixture(scope="module")
def embedded(market: Market, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Client.embedded(market.embedded_settings(tmp_path_factory.mktemp("embedded"))) as client:
        client.fund(ETH // 10)
        client.wait_ready(len(market.nodes), measured=True, timeout=30)
        yield client


def expected_product(spec: JobSpec) -> np.ndarray:
    inp = spec.parsed_input()
    assert isinstance(inp, MatmulInput)
    a, b = matmul_operands(inp)
    return a @ b


def chain_deposit(market: Market, address: str) -> tuple[int, int]:
    """(balance, pending withdrawal) of an account's PaymentVouchers deposit, read from the chain."""
    deposit = market.contracts.vouchers.deposit_of(address)
    return deposit.balance, deposit.pending_withdrawal


def test_same_placements_for_the_same_inputs_through_a_gateway_and_embedded(
    market: Market, gateway: Gateway, embedded: Client
) -> None:
    near, mid, far = market.nearest_first()
    specs = [
        JobSpec.matmul(16, seed=1, cache=False),
        JobSpec.matmul(64, 32, 48, seed=2, dtype="float64", cache=False),
        JobSpec.matmul(16, seed=3, cache=False, constraints={"countries": ["PL", "US"]}),
        JobSpec.matmul(16, seed=4, cache=False, constraints={"regions": ["us-east"]}),
        JobSpec.matmul(16, seed=5, cache=False, constraints={"countries": ["US", "DE"]}),
        JobSpec.matmul(16, seed=6, cache=False, latency_target_ms=25),
        JobSpec.matmul(16, seed=7, cache=False, max_price_wei=UNIT_PRICE, payment="voucher"),
    ]
    with Client.connect(gateway.url, api_key=gateway.api_key) as remote:
        remote.wait_ready(len(market.nodes), measured=True, timeout=30)
        through_gateway = []
        for spec in specs:  # one at a time: no job's reservation weighs on the next one's placement
            job = remote.submit(spec)
            job.result(timeout=30)
            through_gateway.append(job.placement)
    through_embedded = []
    for spec in specs:
        job = embedded.submit(spec)
        job.result(timeout=30)
        through_embedded.append(job.placement)

    chosen = [(p.provider, p.backups) for p in through_gateway if p is not None]
    assert chosen == [(p.provider, p.backups) for p in through_embedded if p is not None]
    assert len(chosen) == len(specs)
    # The market is unambiguous (10 / 40 / 120 ms), and residency is obeyed by both.
    assert [provider for provider, _ in chosen] == [near, near, mid, far, near, near, near]
    assert chosen[2][1] == (far,)
    assert chosen[3][1] == ()


def test_an_embedded_job_is_placed_here_paid_from_the_own_deposit_and_verified(
    market: Market, embedded: Client
) -> None:
    before = embedded.deposit()
    assert before is not None
    account_before = embedded.account()
    spec = JobSpec.matmul(32, seed=11, cache=False)
    job = embedded.submit(spec)
    out = job.result(timeout=30)

    assert isinstance(out, MatmulOutput)
    np.testing.assert_allclose(out.c.to_array(), expected_product(spec), rtol=1e-5)
    assert embedded.mode == "embedded"
    assert job.placement is not None
    assert job.placement.provider == market.nearest_first()[0]
    assert job.verification is not None
    assert job.verification.method == "freivalds"
    assert job.verification.passed
    # The receipt is signed in this deployment's FaultProofs domain (checked by the client).
    assert job.receipt is not None
    assert job.receipt["domain"]["verifyingContract"] == market.deployment.contracts["FaultProofs"]
    for phase in ("match", "dispatch", "compute", "verify", "settle", "total", "submit", "end_to_end"):
        assert getattr(job.timing, phase) is not None, phase
    # Paid by a voucher from the client's own deposit: what it owes grew by the price.
    after = embedded.deposit()
    assert after is not None
    assert after.owed_wei == before.owed_wei + UNIT_PRICE
    assert after.balance_wei == before.balance_wei
    account = embedded.account()
    assert account.spent_wei == account_before.spent_wei + UNIT_PRICE
    assert account.deposit == after


def test_an_embedded_budget_refusal_moves_no_money(market: Market, embedded: Client) -> None:
    before = embedded.deposit()
    on_chain = chain_deposit(market, embedded.account().address)
    account = embedded.account()
    tight = embedded.session(session_budget_wei=UNIT_PRICE - 1)
    try:
        with pytest.raises(BudgetExceededError) as refused:
            tight.submit(JobSpec.matmul(16, seed=12, cache=False))
        assert refused.value.scope == "session"
        outcomes = tight.map([JobSpec.matmul(16, seed=13), JobSpec.matmul(16, seed=14)], progress=False)
        assert all(isinstance(o.error, BudgetExceededError) for o in outcomes)
    finally:
        tight.close()
    assert embedded.deposit() == before
    assert chain_deposit(market, embedded.account().address) == on_chain
    after = embedded.account()
    assert (after.spent_wei, after.reserved_wei) == (account.spent_wei, account.reserved_wei)


def test_map_in_embedded_mode(embedded: Client) -> None:
    specs = [JobSpec.matmul(8 + i, seed=20 + i, cache=False) for i in range(4)]
    outcomes = embedded.map(specs, progress=False)
    assert all(o.ok for o in outcomes)
    for spec, outcome in zip(specs, outcomes, strict=True):
        out = outcome.unwrap()
        assert isinstance(out, MatmulOutput)
        np.testing.assert_allclose(out.c.to_array(), expected_product(spec), rtol=1e-5)


async def test_the_deposit_is_checked_before_sending_warned_about_and_topped_up(
    market: Market, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payer = market.account(EMPTY_PAYER)
    settings = market.embedded_settings(tmp_path / "client", payer=EMPTY_PAYER)
    async with await AsyncClient.embedded(settings) as client:
        await client.wait_ready(len(market.nodes), timeout=30)
        # No deposit: a voucher job is refused before anything is stored or sent.
        with pytest.raises(InsufficientDepositError) as empty:
            await client.submit(JobSpec.matmul(8, seed=30))
        assert (empty.value.needed_wei, empty.value.available_wei) == (UNIT_PRICE, 0)
        assert chain_deposit(market, payer.address) == (0, 0)
        assert (await client.account()).reserved_wei == 0

        # A small deposit: the job runs, and the deposit left is below the threshold: a structured warning.
        await client.fund(2 * UNIT_PRICE)
        watched = client.session(low_deposit_wei=5 * UNIT_PRICE)
        with caplog.at_level(logging.WARNING, logger="proxima.sdk.client"):
            await (await watched.submit(JobSpec.matmul(8, seed=31, cache=False))).result(timeout=30)
            await _until(lambda: any(r.message == "low deposit" for r in caplog.records))
        warning = next(r for r in caplog.records if r.message == "low deposit")
        assert warning.available_wei == UNIT_PRICE  # type: ignore[attr-defined]
        assert warning.threshold_wei == 5 * UNIT_PRICE  # type: ignore[attr-defined]

        # Automatic top-up: below the threshold after a job, the session deposits more by itself.
        topped = client.session(low_deposit_wei=5 * UNIT_PRICE, auto_top_up_wei=10 * UNIT_PRICE)
        await (await topped.submit(JobSpec.matmul(8, seed=32, cache=False))).result(timeout=30)
        await _until(lambda: chain_deposit(market, payer.address)[0] == 12 * UNIT_PRICE)
        deposit = await client.deposit()
        assert deposit is not None
        assert deposit.owed_wei == 2 * UNIT_PRICE
        assert deposit.available_wei == 10 * UNIT_PRICE

    with pytest.raises(UnsupportedOperationError):  # a gateway client cannot top up anything
        AsyncClient(_GatewayLike(), auto_top_up_wei=1)  # type: ignore[arg-type]


class _GatewayLike:
    mode = "gateway"


async def _until(condition: object, timeout: float = 10.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
