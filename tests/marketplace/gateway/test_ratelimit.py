"""Per-client token buckets, alone and through the app (429 with Retry-After)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from _gateway_support import (
    Gateway,
    anyio_backend,  # noqa: F401 - the fixture
    make_gateway,
)

from proxima.marketplace.gateway.ratelimit import RateLimitedError, TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.try_acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("a") == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.try_acquire("b") == 0.0  # clients do not share buckets
    clock.now += 0.5
    assert limiter.try_acquire("a") == 0.0
    assert limiter.try_acquire("a") > 0
    clock.now += 60  # refills up to the burst, not beyond
    assert [limiter.try_acquire("a") for _ in range(4)][-1] > 0


def test_check_raises_with_retry_after() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate=0.25, burst=1, clock=clock)
    limiter.check("a")
    with pytest.raises(RateLimitedError) as refused:
        limiter.check("a")
    assert refused.value.retry_after == pytest.approx(4.0)
    assert refused.value.headers == {"Retry-After": "4"}
    assert refused.value.status == 429


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucketLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucketLimiter(rate=1, burst=0)


def test_idle_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate=1.0, burst=2, clock=clock)
    for i in range(5000):
        limiter.try_acquire(f"client-{i}")
        clock.now += 0.01
    assert len(limiter._buckets) < 5000  # pruned: buckets idle long enough to be full again are dropped


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = make_gateway(tmp_path, rate=0.5, burst=3)
    yield gw
    gw.close()


@pytest.mark.anyio
async def test_the_app_answers_429_with_retry_after(gateway: Gateway) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    ) as http:
        codes = [(await http.get("/v1/account", headers=gateway.headers)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = await http.get("/v1/account", headers=gateway.headers)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        # Another client is not affected.
        other = await http.get("/v1/account", headers={"Authorization": f"Bearer {gateway.other_key}"})
        assert other.status_code == 200
        assert "proxima_gateway_rate_limited_total 2.0" in (await http.get("/metrics")).text
