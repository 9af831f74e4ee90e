"""The audit HTTP API over a real indexed chain (the ``audited`` py-evm world): httpx against the ASGI app,
and one real uvicorn server on 127.0.0.1. Numbers are checked against contract state and the world's facts;
bad input must be a 4xx naming the parameter."""

from __future__ import annotations

import contextlib
import csv
import io
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from proxima.audit.api import audit_router, create_app
from proxima.audit.ledger import LedgerParameters, read_parameters
from proxima.audit.service import LOCATION_SOURCE, AuditService, OffersFetchError, fetch_offers
from proxima.audit.store import AuditStore, decode_args, encode_args
from proxima.marketplace.gateway.schemas import OfferList, offer_public
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


def make_offer(provider: LocalAccount, country: str, region: str, seq: int = 1) -> Offer:
    issued = int(time.time())
    peer_id = peer_id_to_base58(peer_id_from_key(bytes(provider.key)))
    return Offer(
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


@pytest.fixture(scope="module")
def parameters(audited: Any) -> LedgerParameters:
    return read_parameters(audited.w3, audited.deployment)


@pytest.fixture(scope="module")
def service(audited: Any, parameters: LedgerParameters) -> AuditService:
    svc = AuditService(audited.store, audited.w3, audited.deployment, parameters=parameters)
    accounts = {a.address: a for a in audited.chain.accounts}
    p0, p1, p2 = (accounts[a] for a in audited.facts.providers[:3])
    genuine = sign_offer(make_offer(p0, "DE", "eu-central"), LocalSigner(p0))
    older = sign_offer(make_offer(p0, "FR", "eu-west", seq=0), LocalSigner(p0))
    valid = sign_offer(make_offer(p1, "NG", "af-west"), LocalSigner(p1))
    forged = SignedOffer(  # provider 2's location, signed by provider 1's key
        offer=make_offer(p2, "US", "us-east"), signature=valid.signature
    )
    assert svc.set_offers([genuine, older, valid, forged]) == 2
    return svc


@pytest.fixture(scope="module")
def http(service: AuditService) -> Iterator[TestClient]:
    with TestClient(create_app(service, start_follow=False), raise_server_exceptions=False) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_summary_describesTheCheckpoint(http: TestClient, audited: Any) -> None:
    body = http.get("/v1/audit/summary").json()
    facts = audited.facts
    assert body["block_number"] == facts.end_block
    assert (body["jobs"], body["slashes"], body["providers"], body["verifiers"]) == (9, 5, 4, 3)
    assert body["chain_id"] == audited.chain.chain_id
    assert body["locations_known"] == 2
    for money in body["money"]:
        assert isinstance(money["owed_wei"], str)
        assert int(money["owed_wei"]) == audited.chain.balance(audited.deployment.address(money["contract"]))


def test_providers_listFilterSortPage(http: TestClient, audited: Any) -> None:
    body = http.get("/v1/audit/providers", params={"limit": 100}).json()
    assert body["total"] == 7
    assert len(body["data"]) == 7
    for row in body["data"]:
        assert int(row["stake_wei"]) == audited.contracts.registry.account_of(row["address"]).stake
    located = http.get("/v1/audit/providers", params={"country": "DE"}).json()["data"]
    assert [r["address"] for r in located] == [audited.facts.providers[0]]
    assert located[0]["region"] == "eu-central"
    assert located[0]["location_source"] == LOCATION_SOURCE
    assert http.get("/v1/audit/providers", params={"country": "US"}).json()["total"] == 0  # forged offer
    verifiers = http.get("/v1/audit/providers", params={"role": "verifier"}).json()["data"]
    assert {r["address"] for r in verifiers} == set(audited.facts.verifiers)
    ranked = http.get("/v1/audit/providers", params={"sort": "reliability", "order": "asc", "limit": 100})
    scores = [r["reliability"] for r in ranked.json()["data"]]
    unscored = [s for s in scores if s is None]  # verifiers, first in ascending order
    assert scores[: len(unscored)] == unscored
    assert len(unscored) == len(audited.facts.verifiers)
    assert scores[len(unscored) :] == sorted(scores[len(unscored) :])
    page = http.get("/v1/audit/providers", params={"limit": 3, "offset": 3}).json()
    assert [r["address"] for r in page["data"]] == [r["address"] for r in body["data"][3:6]]


def test_provider_detailAcceptsAnyCaseRefusesBadChecksum(http: TestClient, audited: Any) -> None:
    address = audited.facts.slashes[0][1]
    detail = http.get(f"/v1/audit/providers/{address}").json()
    assert detail["account"]["address"] == address
    assert detail["slashes"]
    assert http.get(f"/v1/audit/providers/{address.lower()}").json() == detail
    mangled = address[:2] + address[2:].swapcase()
    error = error_of(http.get(f"/v1/audit/providers/{mangled}"), 422)
    assert error["param"] == "address"
    assert "checksum" in error["message"]
    error = error_of(http.get("/v1/audit/providers/0x1234"), 422)
    assert error["param"] == "address"
    error = error_of(http.get(f"/v1/audit/providers/{audited.facts.finder}"), 404)
    assert error["code"] == "not_found"
    assert error["param"] == "address"


def test_jobs_listAndDetail(http: TestClient, audited: Any) -> None:
    facts = audited.facts
    refunded = http.get("/v1/audit/jobs", params={"status": "refunded"}).json()["data"]
    assert {j["job_id"] for j in refunded} == {
        "0x" + facts.jobs[n].hex() for n, s in facts.job_status.items() if s == "Refunded"
    }
    provider = facts.job_provider["confirmed"]
    mine = http.get("/v1/audit/jobs", params={"provider": provider.lower(), "limit": 100}).json()
    assert mine["total"] == sum(1 for p in facts.job_provider.values() if p == provider)
    job_id = "0x" + facts.jobs["dispute_valid"].hex()
    job = http.get(f"/v1/audit/jobs/{job_id.upper().replace('0X', '0x')}").json()
    assert job["job_id"] == job_id
    assert job["disputed"]
    assert job["outcome"] == "dispute_valid"
    assert int(job["price_wei"]) == audited.contracts.escrow.job_of(facts.jobs["dispute_valid"]).price
    assert error_of(http.get("/v1/audit/jobs/0x" + "00" * 32), 404)["param"] == "job_id"
    assert error_of(http.get("/v1/audit/jobs/0x" + "zz" * 32), 422)["param"] == "job_id"
    assert error_of(http.get("/v1/audit/jobs/1234"), 422)["param"] == "job_id"
    assert error_of(http.get("/v1/audit/jobs", params={"status": "lost"}), 422)["param"] == "status"


def test_slashesAttestationsRewardsSeries(http: TestClient, audited: Any) -> None:
    facts = audited.facts
    slashes = http.get("/v1/audit/slashes", params={"order": "asc"}).json()["data"]
    assert [(s["kind"], s["account"]) for s in slashes] == facts.slashes
    assert all(s["evidence"] and s["tx_hash"].startswith("0x") for s in slashes)
    canary = http.get("/v1/audit/slashes", params={"kind": "canary"}).json()["data"]
    assert [s["tx_hash"] for s in canary] == ["0x" + facts.tx["prove:canary"].hex()]
    reports = http.get("/v1/audit/attestations", params={"kind": "report", "limit": 1000}).json()["data"]
    assert reports
    assert {r["signer"] for r in reports} <= set(facts.verifiers)
    epochs = http.get("/v1/audit/rewards", params={"order": "asc"}).json()["data"]
    assert [e["epoch"] for e in epochs] == list(range(facts.epochs + 1))
    series = http.get("/v1/audit/series", params={"bucket_s": 1800}).json()
    assert series["bucket_s"] == 1800
    assert sum(p["slashes"] for p in series["points"]) == 5
    assert error_of(http.get("/v1/audit/series", params={"bucket_s": 10}), 422)["param"] == "bucket_s"


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/audit/providers", {"limit": 0}, "limit"),
        ("/v1/audit/providers", {"limit": 1001}, "limit"),
        ("/v1/audit/jobs", {"offset": -1}, "offset"),
        ("/v1/audit/providers", {"sort": "bogus"}, "sort"),
        ("/v1/audit/providers", {"country": "de"}, "country"),
        ("/v1/audit/slashes", {"provider": "0xnothex"}, "provider"),
        ("/v1/audit/slashes", {"kind": "theft"}, "kind"),
        ("/v1/audit/attestations", {"order": "up"}, "order"),
        ("/v1/audit/export", {"format": "xml"}, "format"),
    ],
)
def test_badQueryParameters_are422NamingTheField(
    http: TestClient, path: str, params: dict[str, Any], param: str
) -> None:
    error = error_of(http.get(path, params=params), 422)
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert param in error["message"]


def test_badChecksumInAFilter_is422(http: TestClient, audited: Any) -> None:
    address = audited.facts.providers[0]
    mangled = address[:2] + address[2:].swapcase()
    error = error_of(http.get("/v1/audit/jobs", params={"client": mangled}), 422)
    assert error["param"] == "client"
    assert "checksum" in error["message"]


def test_export_csvAndJson(http: TestClient, audited: Any) -> None:
    response = http.get("/v1/audit/export", params={"what": "slashes", "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["kind"], r["account"]) for r in rows] == audited.facts.slashes
    assert all(r["amount_wei"].isdigit() for r in rows)
    as_json = http.get("/v1/audit/export", params={"what": "jobs", "format": "json"}).json()
    assert len(as_json) == len(audited.facts.jobs)
    assert isinstance(as_json[0]["price_wei"], str)


def test_verify_runsAndKeepsItsReport(audited: Any, parameters: LedgerParameters) -> None:
    service = AuditService(audited.store, audited.w3, audited.deployment, parameters=parameters)
    with TestClient(create_app(service, start_follow=False)) as http:
        assert error_of(http.get("/v1/audit/verify"), 404)["code"] == "not_found"
        ran = http.post("/v1/audit/verify")
        assert ran.status_code == 200, ran.text
        report = ran.json()
        assert report["block_number"] == audited.facts.end_block
        assert report["ok"] is True
        assert report["discrepancies"] == []
        assert report["checked"]
        assert http.get("/v1/audit/verify").json() == report
        assert http.get("/v1/audit/summary").json()["verified_ok"] is True


def test_verify_reportsATamperedIndex(audited: Any, parameters: LedgerParameters, tmp_path: Path) -> None:
    store = audited.copy_store(tmp_path / "forged.sqlite")
    with sqlite3.connect(
        tmp_path / "forged.sqlite"
    ) as conn:  # forge a slash amount, as a lying indexer would
        block, index, args = conn.execute(
            "SELECT block_number, log_index, args FROM events WHERE name = 'Slashed' LIMIT 1"
        ).fetchone()
        forged = decode_args(args)
        forged["amount"] += 1
        conn.execute(
            "UPDATE events SET args = ? WHERE block_number = ? AND log_index = ?",
            (encode_args(forged), block, index),
        )
    service = AuditService(store, audited.w3, audited.deployment, parameters=parameters)
    with TestClient(create_app(service, start_follow=False)) as http:
        report = http.post("/v1/audit/verify").json()
    assert report["ok"] is False
    assert report["discrepancies"]


def test_withoutRpc_verifyIs503_andQueriesStillWork(audited: Any, parameters: LedgerParameters) -> None:
    offline = AuditService(audited.store, None, None, parameters=parameters)
    assert offline.deployment == audited.deployment  # from the store
    with TestClient(create_app(offline, start_follow=False)) as http:
        assert http.get("/v1/audit/summary").status_code == 200
        assert error_of(http.post("/v1/audit/verify"), 503)["code"] == "rpc_required"


def test_emptyIndex_is503SayingToSync(audited: Any, parameters: LedgerParameters) -> None:
    empty = AuditService(AuditStore.memory(), None, audited.deployment, parameters=parameters)
    with TestClient(create_app(empty, start_follow=False)) as http:
        error = error_of(http.get("/v1/audit/providers"), 503)
        assert error["code"] == "index_empty"
        assert "proxima-audit sync" in error["message"]
        assert http.get("/healthz").json()["status"] == "empty"


def test_routerFromACallable_is503UntilTheServiceIsReady(service: AuditService) -> None:
    ready: list[AuditService] = []
    app = FastAPI()
    app.include_router(audit_router(lambda: ready[0] if ready else None))
    with TestClient(app) as http:
        assert http.get("/v1/audit/summary").status_code == 503
        ready.append(service)
        assert http.get("/v1/audit/summary").json()["jobs"] == 9


def test_createApp_servesTheExplorerAtTheRoot(http: TestClient, audited: Any) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    providers = http.get("/providers")
    assert providers.status_code == 200
    assert audited.facts.providers[0] in providers.text


def test_service_syncsFollowsAndRefreshesItsCachedLedger(audited: Any) -> None:
    store = AuditStore.memory()
    service = AuditService(store, audited.w3, audited.deployment, follow=True, follow_interval_s=0.1)
    try:
        service.sync(audited.facts.end_block - 20)
        first = service.ledger()
        assert first is service.ledger(), "cached while the checkpoint stays"
        assert first.block_number == audited.facts.end_block - 20
        assert store.get_meta("ledger_parameters") is not None, "saved for offline use"
        service.start()
        deadline = time.monotonic() + 20
        while service.ledger().block_number < audited.facts.end_block:
            assert time.monotonic() < deadline, "the follower did not catch up"
            time.sleep(0.05)
        assert service.following
        assert service.follow_error is None
        assert len(service.ledger().slashes) == len(audited.facts.slashes) > len(first.slashes)
    finally:
        service.stop()
        store.close()
    assert not service.following


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_realServer_onLoopback(service: AuditService, http: TestClient, audited: Any) -> None:
    with (
        serve(create_app(service, start_follow=False)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        providers = client.get("/v1/audit/providers", params={"limit": 100})
        assert providers.status_code == 200
        assert providers.json() == http.get("/v1/audit/providers", params={"limit": 100}).json()
        assert client.get("/healthz").json()["checkpoint"] == audited.facts.end_block
        bad = client.get("/v1/audit/providers", params={"limit": "many"})
        assert bad.status_code == 422
        assert bad.json()["error"]["param"] == "limit"
        assert client.get("/openapi.json").json()["paths"]["/v1/audit/providers/{address}"]


def test_fetchOffers_fromAGatewaysOfferList(audited: Any, parameters: LedgerParameters) -> None:
    """Locations from a gateway's /v1/offers answer (its own response model); signatures checked."""
    accounts = {a.address: a for a in audited.chain.accounts}
    p0, p1 = (accounts[a] for a in audited.facts.providers[:2])
    genuine = sign_offer(make_offer(p0, "JP", "ap-northeast"), LocalSigner(p0))
    relabelled = sign_offer(make_offer(p1, "BR", "sa-east"), LocalSigner(p1))
    lying = relabelled.model_copy(update={"offer": make_offer(p1, "CH", "eu-central")})  # gateway changed it
    gateway = FastAPI()

    @gateway.get("/v1/offers")
    def offers(request: Request) -> OfferList:
        if request.headers.get("authorization") != "Bearer pxk_test":
            raise HTTPException(401, "no credentials")
        return OfferList(data=[offer_public(genuine), offer_public(lying)])

    service = AuditService(audited.store, None, audited.deployment, parameters=parameters)
    with serve(gateway) as url:
        fetched = fetch_offers(url, "pxk_test")
        assert [s.offer.provider for s in fetched] == [p0.address, p1.address]
        assert service.set_offers(fetched) == 1
        with pytest.raises(OffersFetchError, match="HTTP 401"):
            fetch_offers(url, None)
    where = service.locations()
    assert list(where) == [p0.address]
    assert (where[p0.address].country, where[p0.address].source) == ("JP", LOCATION_SOURCE)
    with pytest.raises(OffersFetchError, match="cannot read offers"):
        fetch_offers("http://127.0.0.1:9", None, timeout_s=2)


def test_offerSource_isReadWhenLocationsAreAsked(audited: Any, parameters: LedgerParameters) -> None:
    accounts = {a.address: a for a in audited.chain.accounts}
    p0 = accounts[audited.facts.providers[0]]
    book = [sign_offer(make_offer(p0, "KE", "af-east", seq=5), LocalSigner(p0))]
    service = AuditService(
        audited.store,
        None,
        audited.deployment,
        parameters=parameters,
        offer_source=lambda: book,
        offer_refresh_s=0,
    )
    with TestClient(create_app(service, start_follow=False)) as http:
        rows = http.get("/v1/audit/providers", params={"country": "KE"}).json()["data"]
        assert [r["address"] for r in rows] == [p0.address]
        book[0] = sign_offer(make_offer(p0, "TZ", "af-east", seq=6), LocalSigner(p0))  # the provider moved
        assert http.get("/v1/audit/providers", params={"country": "TZ"}).json()["total"] == 1
        book[0] = sign_offer(make_offer(p0, "UG", "af-east", seq=4), LocalSigner(p0))  # a replayed older one
        assert http.get("/v1/audit/providers", params={"country": "TZ"}).json()["total"] == 1
