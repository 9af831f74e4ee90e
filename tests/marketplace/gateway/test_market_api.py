"""``GET /v1/offers`` and ``GET /v1/providers/{address}`` over signed offers and provider records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from _gateway_support import (
    UNIT_PRICE,
    Gateway,
    account,
    anyio_backend,  # noqa: F401 - the fixture
    make_gateway,
    make_offer,
)

from proxima.marketplace.matching.reliability import ProviderStats, reliability, verified_throughput

pytestmark = pytest.mark.anyio

BERLIN, PARIS, LAGOS = account(11), account(12), account(13)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    offers = [
        make_offer(PARIS, region="eu-west", country="FR", workloads=("matmul",)),
        make_offer(BERLIN, region="eu-central", country="DE", unit_price=2 * UNIT_PRICE),
        make_offer(LAGOS, region="af-west", country="NG", workloads=("embed",)),
    ]
    gw = make_gateway(tmp_path, offers=offers)
    yield gw
    gw.close()


def client_for(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gw")


async def providers(http: httpx.AsyncClient, gw: Gateway, query: str = "") -> list[str]:
    response = await http.get(f"/v1/offers{query}", headers=gw.headers)
    assert response.status_code == 200, response.text
    return [o["provider"] for o in response.json()["data"]]


async def test_offers_are_listed_by_provider_with_their_signature(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        response = await http.get("/v1/offers", headers=gateway.headers)
    data = response.json()["data"]
    assert [o["provider"] for o in data] == sorted([BERLIN.address, PARIS.address, LAGOS.address])
    berlin = next(o for o in data if o["provider"] == BERLIN.address)
    signed = next(s for s in gateway.market.offers() if s.offer.provider == BERLIN.address)
    assert berlin["signature"] == signed.signature
    assert berlin["country"] == "DE"
    assert berlin["region"] == "eu-central"
    assert berlin["workloads"][0] == {"name": "matmul", "models": [], "unit_price_wei": str(2 * UNIT_PRICE)}
    assert berlin["hardware"]["cpu_cores"] == 8


async def test_offers_filter_by_workload_model_region_and_country(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        assert await providers(http, gateway, "?workload=matmul") == sorted([BERLIN.address, PARIS.address])
        assert await providers(http, gateway, "?workload=embed&model=all-MiniLM-L6-v2") == sorted(
            [BERLIN.address, LAGOS.address]
        )
        assert await providers(http, gateway, "?region=af-west") == [LAGOS.address]
        assert await providers(http, gateway, "?country=FR&workload=matmul") == [PARIS.address]
        assert await providers(http, gateway, "?country=FR&workload=embed") == []
        assert len(await providers(http, gateway, "?limit=1")) == 1
        for bad in ("?country=fr", "?region=EU WEST", "?workload=", "?limit=0", "?model=a%20b"):
            response = await http.get(f"/v1/offers{bad}", headers=gateway.headers)
            assert response.status_code == 422, bad
            assert response.json()["error"]["code"] == "invalid_request"


async def test_a_provider_shows_offer_chain_record_and_estimates(gateway: Gateway) -> None:
    stats = ProviderStats(
        address=BERLIN.address,
        stake_wei=10**19,
        jobs_completed=40,
        jobs_failed=2,
        attested_flops=2 * 10**11,
        verified_flops=5 * 10**10,
        report_passes=3,
        observed_successes=5,
        observed_failures=1,
    )
    gateway.market.stats[BERLIN.address] = stats
    gateway.market.rtts[BERLIN.address] = 0.0123
    gateway.market.excluded_now = frozenset({BERLIN.address})
    async with client_for(gateway) as http:
        response = await http.get(f"/v1/providers/{BERLIN.address.lower()}", headers=gateway.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["address"] == BERLIN.address
    assert body["offer"]["region"] == "eu-central"
    assert body["chain"]["stake_wei"] == str(10**19)
    assert body["chain"]["jobs_completed"] == 40
    assert body["reliability"] == pytest.approx(reliability(stats))
    assert body["verified_throughput_flops"] == pytest.approx(verified_throughput(10**11, stats))
    assert body["verified_throughput_flops"] <= 5 * 10**10  # never above what the verifier measured
    assert body["gateway"] == {
        "observed_successes": 5,
        "observed_failures": 1,
        "excluded": True,
        "measured_rtt_ms": pytest.approx(12.3),
    }


async def test_unknown_or_malformed_providers(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        unknown = await http.get(f"/v1/providers/{account(99).address}", headers=gateway.headers)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        for bad in ("0x1234", "paris", "0x" + "g" * 40):
            assert (await http.get(f"/v1/providers/{bad}", headers=gateway.headers)).status_code == 422
        letter = next(i for i, ch in enumerate(BERLIN.address) if i > 1 and ch.isalpha())
        typo = BERLIN.address[:letter] + BERLIN.address[letter].swapcase() + BERLIN.address[letter + 1 :]
        response = await http.get(f"/v1/providers/{typo}", headers=gateway.headers)
        assert response.status_code == 200  # addresses are looked up in any case
        assert response.json()["address"] == BERLIN.address


async def test_a_provider_known_only_on_chain(gateway: Gateway) -> None:
    gone = account(14)
    gateway.market.stats[gone.address] = ProviderStats(address=gone.address, jobs_failed=3)
    async with client_for(gateway) as http:
        body = (await http.get(f"/v1/providers/{gone.address}", headers=gateway.headers)).json()
    assert body["offer"] is None
    assert body["verified_throughput_flops"] is None
    assert body["chain"]["jobs_failed"] == 3
    assert 0 < body["reliability"] < 2 / 3  # below a newcomer's prior
