"""The explorer's pages over a real indexed chain (the ``audited`` py-evm world), via httpx on the ASGI app.

Numbers are checked against contract state read from the chain (``ProximaContracts``), and job ids, slashes
and transactions against what the world's script did (``audited.facts``), so a page that showed the wrong
ledger, or nothing, fails.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient

from proxima.audit.explorer import charts, formats, geo
from proxima.audit.explorer.pages import explorer_router
from proxima.audit.service import LOCATION_SOURCE, AuditService
from proxima.audit.store import AuditStore
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.offers import (
    Offer,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferWorkload,
    SignedOffer,
    sign_offer,
)
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58

COUNTRIES = {0: ("DE", "eu-central"), 1: ("US", "us-east"), 2: ("NG", "af-west")}
"""Claimed locations of providers 0-2 (provider 3 publishes none)."""


def signed_offer(provider: LocalAccount, country: str, region: str, seq: int = 1) -> SignedOffer:
    """An offer claiming ``country``/``region``, signed by the provider's key."""
    issued = int(time.time())
    peer_id = peer_id_to_base58(peer_id_from_key(bytes(provider.key)))
    offer = Offer(
        provider=provider.address,
        peer_id=peer_id,
        addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{peer_id}",),
        region=region,
        country=country,
        hardware=OfferHardware(cpu_model="test cpu", cpu_cores=8, memory_bytes=16 * 2**30),
        measured=OfferMeasurement(
            benchmark_id="0x" + "ab" * 32, device="cpu", gemm_flops=10**11, mem_bandwidth=10**10
        ),
        workloads=(OfferWorkload(name="matmul", unit_price_wei=10**12),),
        coordinates=OfferCoordinates(vector_us=(1000, 2000), height_us=100, error_ppm=200_000),
        capacity=OfferCapacity(max_concurrency=4, free_slots=4, queue_depth=0),
        issued_at=issued,
        expires_at=issued + 3600,
        seq=seq,
    )
    return sign_offer(offer, LocalSigner(provider))


def provider_accounts(audited: Any) -> list[LocalAccount]:
    """The world's provider keys, in the order of ``facts.providers``."""
    by_address = {a.address: a for a in audited.chain.accounts}
    return [by_address[p] for p in audited.facts.providers]


def explorer_service(audited: Any) -> AuditService:
    """A service over the shared index, with signed offers for providers 0-2."""
    service = AuditService(audited.store, audited.w3, audited.deployment)
    keys = provider_accounts(audited)
    service.set_offers(signed_offer(keys[i], c, r) for i, (c, r) in COUNTRIES.items())
    return service


@pytest.fixture(scope="module")
def service(audited: Any) -> AuditService:
    return explorer_service(audited)


@pytest.fixture(scope="module")
def client(service: AuditService) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(explorer_router(service))
    with TestClient(app) as http:
        yield http


def page(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def exact(wei: int) -> str:
    """The hover text the pages put on an amount: exact ETH and wei."""
    return f'title="{formats.eth_exact(wei)} ETH = {wei:,} wei"'


def hrefs(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="([^"]+)"', html)]


def stake_of(audited: Any, address: str) -> int:
    return int(audited.contracts.registry.account_of(address).stake)


# --- overview ------------------------------------------------------------------------------------------


def test_overview_showsTotalsFromChainAndCharts(client: TestClient, audited: Any) -> None:
    html = page(client, "/")
    facts = audited.facts
    total = sum(stake_of(audited, a) for a in facts.providers + facts.verifiers)
    assert total > 0
    assert exact(total) in html  # total stake equals what the registry holds
    totals = html[html.index('id="totals"') :]
    assert re.search(r'Providers</div><div class="v">4<', totals)
    assert re.search(r'Verifiers</div><div class="v">3<', totals)
    assert re.search(rf'Escrow jobs</div><div class="v">{len(facts.jobs)}<', totals)
    assert re.search(rf'Slashes</div><div class="v">{len(facts.slashes)} ', totals)
    svgs = re.findall(r'<svg class="chart".*?</svg>', html, re.S)
    assert len(svgs) == 4
    assert all("no data yet" not in svg for svg in svgs)
    jobs_chart = svgs[0]
    bars = [int(v.replace(",", "")) for v in re.findall(r"<title>[^<]*UTC: ([\d,]+)</title>", jobs_chart)]
    assert sum(bars) == len(facts.jobs)  # every escrow job is counted in some bucket
    slash_bars = [int(v) for v in re.findall(r"<title>[^<]*UTC: (\d+)</title>", svgs[3])]
    assert sum(slash_bars) == len(facts.slashes)


def test_overview_bucketParameter_isValidated(client: TestClient) -> None:
    assert "Buckets of 2 hours" in page(client, "/?bucket=7200")
    for bad in ("5", "abc", "-1", str(10**12)):
        html = page(client, f"/?bucket={bad}", 400)
        assert "bucket" in html


# --- providers -----------------------------------------------------------------------------------------


def test_providers_tableAndMap_showEveryProviderWithItsStake(client: TestClient, audited: Any) -> None:
    html = page(client, "/providers")
    facts = audited.facts
    for address in facts.providers + facts.verifiers:
        assert address in html
        assert exact(stake_of(audited, address)) in html
    map_svg = re.search(r'<svg class="map".*?</svg>', html, re.S)
    assert map_svg is not None
    spots = re.findall(r'<a class="spot" href="([^"]+)" data-country="([A-Z]{2})">', map_svg.group(0))
    assert sorted(c for _, c in spots) == ["DE", "NG", "US"]
    for href, country in spots:
        index = next(i for i, (c, _) in COUNTRIES.items() if c == country)
        assert unescape(href) == f"/providers/{facts.providers[index]}"  # one provider there: its page
    unpublished = html[html.index("location not published") :]
    assert facts.providers[3] in unpublished[:2000]
    assert LOCATION_SOURCE in unescape(html)


def test_providers_sortLinks_orderTheTable(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, "/providers?role=provider&sort=stake&order=asc")
    table = html[html.index('id="providers"') :]
    shown = [a for a in re.findall(r'href="/providers/(0x[0-9a-fA-F]{40})"', table) if a in facts.providers]
    by_stake = sorted(facts.providers, key=lambda a: (stake_of(audited, a), a.lower()))
    assert shown == by_stake
    # the header link of the sorted column flips the order
    assert "/providers?offset" not in html
    assert any("order=desc" in h and "sort=stake" in h for h in hrefs(table))


def test_providers_countryFilter(client: TestClient, audited: Any) -> None:
    html = page(client, "/providers?country=NG")
    table = html[html.index('id="providers"') :]
    assert audited.facts.providers[2] in table
    assert audited.facts.providers[0] not in table


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("sort=bogus", "sort"),
        ("order=sideways", "order"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("offset=-3", "offset"),
        ("role=client", "role"),
        ("country=de", "country"),
    ],
)
def test_providers_badParameters_are400NamingThem(client: TestClient, query: str, param: str) -> None:
    html = page(client, f"/providers?{query}", 400)
    assert f"parameter {param}=" in unescape(html)


# --- one account ---------------------------------------------------------------------------------------


def test_provider_page_showsItsSlashesWithEvidenceAndLinks(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    slashed = facts.slashes[0][1]
    html = page(client, f"/providers/{slashed}")
    assert exact(stake_of(audited, slashed)) in html
    kinds = [kind for kind, account in facts.slashes if account == slashed]
    shown = re.findall(r'<span class="badge bad">([a-z ]+)</span> <a class="hex" href="/providers/', html)
    assert sorted(k.replace(" ", "_") for k in shown) == sorted(kinds)
    links = hrefs(html)
    assert any(h.startswith("/tx/0x") for h in links)
    assert any(h.startswith("/jobs/0x") for h in links)


def test_provider_page_location(client: TestClient, audited: Any) -> None:
    html = page(client, f"/providers/{audited.facts.providers[1]}")
    assert "US" in html
    assert "us-east" in html
    assert LOCATION_SOURCE in unescape(html)
    html = page(client, f"/providers/{audited.facts.providers[3]}")
    assert "location not published" in html


def test_clientAndFinder_pages_listTheirJobsAndProofs(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, f"/providers/{facts.clients[0]}")
    assert "Not a registered provider or verifier" in html
    client_jobs = [j for n, j in facts.jobs.items() if f"/jobs/0x{j.hex()}" in html]
    assert client_jobs, "the client's jobs are listed"
    html = page(client, f"/providers/{facts.finder}")
    assert "Faults this account proved" in html


def test_unknownAccount_is404_andMalformed400(client: TestClient) -> None:
    html = page(client, "/providers/0x00000000000000000000000000000000000000aa", 404)
    assert "no account 0x00000000000000000000000000000000000000AA" in html
    page(client, "/providers/0x1234", 400)
    page(client, "/providers/nothex", 400)
    bad_checksum = "0x52908400098527886E0F7030069857D2E4169EE7".replace("E", "e", 1)
    assert "EIP-55" in page(client, f"/providers/{bad_checksum}", 400)


# --- jobs ----------------------------------------------------------------------------------------------


def test_jobs_listsEveryJob_andPages(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, "/jobs")
    for job_id in facts.jobs.values():
        assert f'href="/jobs/0x{job_id.hex()}"' in html
    first = page(client, "/jobs?limit=4")
    assert len(re.findall(r'<td><a class="hex" href="/jobs/', first)) == 4
    assert f"1&ndash;4 of {len(facts.jobs)}" in first
    next_link = next(h for h in hrefs(first) if "offset=4" in h)
    second = page(client, next_link)
    assert len(re.findall(r'<td><a class="hex" href="/jobs/', second)) == 4
    ids_first = set(re.findall(r'<td><a class="hex" href="/jobs/(0x[0-9a-f]+)"', first))
    ids_second = set(re.findall(r'<td><a class="hex" href="/jobs/(0x[0-9a-f]+)"', second))
    assert not ids_first & ids_second


def test_jobs_statusFilter(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, "/jobs?status=settled")
    for name, job_id in facts.jobs.items():
        listed = f'href="/jobs/0x{job_id.hex()}"' in html
        assert listed == (facts.job_status[name] == "Settled"), name
    assert "status" in page(client, "/jobs?status=bogus", 400)
    assert "provider" in page(client, "/jobs?provider=0x12", 400)


def test_job_page_showsItsPartiesStatusAndOpeningTransaction(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    for name in ("confirmed", "timed_out", "open"):
        job_id = facts.jobs[name]
        html = page(client, f"/jobs/0x{job_id.hex()}")
        assert '<span class="badge' in html
        assert facts.job_status[name].lower() in html.lower()
        assert f'href="/providers/{facts.job_provider[name]}"' in html
        assert f'href="/tx/0x{facts.tx[f"open:{name}"].hex()}"' in html
    timed_out = page(client, f"/jobs/0x{facts.jobs['timed_out'].hex()}")
    assert "Slashes about this job (1)" in timed_out
    assert ">timeout</span>" in timed_out


def test_job_unknown404_malformed400(client: TestClient) -> None:
    page(client, "/jobs/0x" + "ab" * 32, 404)
    assert "job_id" in page(client, "/jobs/0x12", 400)


# --- slashes, rewards, verify, transactions -------------------------------------------------------------


def test_slashes_showEachWithEvidence(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, "/slashes?order=asc")
    blocks = re.findall(r'<div class="evidence".*?</dl>\s*</div>', html, re.S)
    assert len(blocks) == len(facts.slashes)
    shown = []
    for block in blocks:
        kind = re.search(r'badge bad">([a-z ]+)<', block)
        account = re.search(r"/providers/(0x\w{40})", block)
        assert kind is not None
        assert account is not None
        shown.append((kind.group(1).replace(" ", "_"), account.group(1)))
    assert shown == facts.slashes  # chain order, right kind, right account
    for step in ("prove:canary", "prove:invalid", "prove:equivocation"):
        assert f'href="/tx/0x{facts.tx[step].hex()}"' in html
    assert f'href="/providers/{facts.finder}"' in html
    canary = next(b for b in blocks if 'badge bad">canary<' in b)
    verifier_links = [v for v in facts.verifiers if f"/providers/{v}" in canary]
    assert len(verifier_links) >= 2, "the canary proof names its verdict signers"


def test_slashes_kindFilter(client: TestClient, audited: Any) -> None:
    html = page(client, "/slashes?kind=equivocation")
    assert html.count('<div class="evidence"') == sum(
        1 for k, _ in audited.facts.slashes if k == "equivocation"
    )
    page(client, "/slashes?kind=theft", 400)


def test_rewards_showEpochsAndShares(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, "/rewards")
    for epoch in range(facts.epochs):
        assert f'id="epoch-{epoch}"' in html
    for provider in facts.claimed:
        assert f'href="/providers/{provider}"' in html


def test_verify_page_withoutReport_saysSo(client: TestClient) -> None:
    html = page(client, "/verify")
    assert "No verification has run" in html


def test_tx_page_showsEventsWithLinks(client: TestClient, audited: Any) -> None:
    facts = audited.facts
    html = page(client, f"/tx/0x{facts.tx['open:confirmed'].hex()}")
    assert "JobEscrow.JobOpened" in html
    assert f'href="/jobs/0x{facts.jobs["confirmed"].hex()}"' in html
    page(client, "/tx/0x" + "00" * 32, 404)
    page(client, "/tx/0xzz", 400)


def test_static_stylesheet(client: TestClient) -> None:
    response = client.get("/static/explorer.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert client.get("/static/secrets.txt").status_code == 404


def test_everyInternalLink_resolves(client: TestClient, audited: Any) -> None:
    seen: set[str] = set()
    todo = ["/", "/providers", "/jobs", "/slashes", "/rewards", f"/providers/{audited.facts.providers[0]}"]
    while todo and len(seen) < 80:
        url = todo.pop(0)
        if url in seen:
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, url
        if response.headers["content-type"].startswith("text/html"):
            assert "<script" not in response.text  # plain pages: no JavaScript
            assert not re.search(r'(?:src|href)="(?:https?:)?//', response.text), url  # all local
            todo.extend(
                h for h in hrefs(response.text) if h.startswith("/") and "#" not in h and h not in seen
            )
    assert len(seen) >= 30


# --- mounting ------------------------------------------------------------------------------------------


def test_mountedUnderPrefix_linksKeepThePrefix(service: AuditService, audited: Any) -> None:
    app = FastAPI()
    app.include_router(explorer_router(lambda: service), prefix="/explorer")
    with TestClient(app) as http:
        html = page(http, "/explorer/providers")
        links = [h for h in hrefs(html) if h.startswith("/")]
        assert links
        assert all(h.startswith("/explorer/") for h in links), links
        assert "/explorer/static/explorer.css" in links
        assert page(http, f"/explorer/providers/{audited.facts.providers[0]}")


def test_serviceNotReady_is503(audited: Any) -> None:
    app = FastAPI()
    app.include_router(explorer_router(lambda: None))

    def broken() -> AuditService:
        raise RuntimeError("gateway still starting")

    app.include_router(explorer_router(broken), prefix="/broken")
    with TestClient(app) as http:
        assert "starting" in page(http, "/providers", 503)
        assert "gateway still starting" in page(http, "/broken/", 503)


def test_emptyIndex_is503(audited: Any) -> None:
    store = AuditStore.memory()
    try:
        app = FastAPI()
        app.include_router(explorer_router(AuditService(store, audited.w3, audited.deployment)))
        with TestClient(app) as http:
            assert "empty" in page(http, "/", 503)
    finally:
        store.close()


# --- the drawing parts ---------------------------------------------------------------------------------


def test_charts_escapeTextAndCarryExactValues() -> None:
    svg = str(charts.bar_chart("<script>x</script>", [0, 3600], [1, 10**18], full=lambda v: f"{v} wei"))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "1000000000000000000 wei" in svg
    assert "no data yet" in str(charts.line_chart("empty", [], []))
    with pytest.raises(ValueError, match="values"):
        charts.bar_chart("bad", [0], [1, 2])


def test_niceTicks_coverTheRange() -> None:
    assert charts.nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(0, 0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = charts.nice_ticks(0, 3.2e19)
    assert ticks[0] == 0
    assert ticks[-1] >= 3.2e19
    assert len(ticks) <= 8


def test_map_projectionAndEscaping() -> None:
    assert geo.project(0.0, -180.0) == (0.0, geo.NORTH * geo.WIDTH / 360)
    de = geo.centroid("de")
    assert de is not None
    assert de.name == "Germany"
    assert geo.centroid("QQ") is None
    svg = str(geo.world_map([geo.MapSpot("DE", 5, '<b onload="x">', "/p?a=1&b=2")]))
    assert "<b onload" not in svg
    assert "&amp;b=2" in svg
    with pytest.raises(ValueError, match="centroid"):
        geo.world_map([geo.MapSpot("QQ", 1, "", "/")])


def test_ethFormats_keepFullPrecision() -> None:
    assert formats.eth_exact(1) == "0.000000000000000001"
    assert formats.eth_exact(1_500_000_000_000_000_000) == "1.5"
    assert formats.eth_exact(12 * 10**21) == "12,000"
    assert formats.eth_short(10**13) == "<0.0001"
    assert formats.eth_short(123_456_789_000_000_000) == "0.1235"
    assert 'title="0.000000000000000001 ETH = 1 wei"' in str(formats.eth_html(1))


def test_verify_page_showsTheLastReport(audited: Any) -> None:
    service = explorer_service(audited)
    report = service.verify()
    app = FastAPI()
    app.include_router(explorer_router(service))
    with TestClient(app) as http:
        html = page(http, "/verify")
    assert f"At block {report.block_number}" in html
    for name, count in report.checked.items():
        assert re.search(rf"<td>{re.escape(name.replace('_', ' '))}</td><td class=\"num\">{count}</td>", html)
    rows = html[html.index('id="discrepancies"') :]
    assert rows.count("<tr><td>") == len(report.discrepancies)
    assert ("no discrepancy" in html) == report.ok
