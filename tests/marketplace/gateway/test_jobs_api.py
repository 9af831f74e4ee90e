"""``/v1/jobs`` through the real app, job store and accounts (see _gateway_support for what stands in)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from _gateway_support import (
    ETH,
    UNIT_PRICE,
    Gateway,
    account,
    anyio_backend,  # noqa: F401 - the fixture
    make_gateway,
    make_offer,
    matmul_job,
    serve,
)
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from proxima.marketplace.gateway.auth import sign_request_headers
from proxima.sdk.logs import _Formatter
from proxima.sdk.workloads import Tensor, matmul_operands, parse_input

pytestmark = pytest.mark.anyio


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = make_gateway(tmp_path)
    yield gw
    await gw.dispatcher.drain()
    gw.close()


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Jobs stay ``running`` until ``dispatcher.gate`` is set."""
    gw = make_gateway(tmp_path, hold=True)
    yield gw
    gw.dispatcher.gate.set()
    await gw.dispatcher.drain()
    gw.close()


def client_for(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gw")


def reserved_and_spent(gw: Gateway) -> tuple[int, int]:
    acct = gw.accounts.get(gw.client.address)
    assert acct is not None
    return acct.reserved_wei, acct.spent_wei


async def test_a_job_is_stored_answered_202_and_runs_to_a_verified_result(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        response = await http.post("/v1/jobs", json=matmul_job(16), headers=gateway.headers)
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] == "queued"
        assert job["client"] == gateway.client.address
        assert job["links"] == {
            "self": f"/v1/jobs/{job['id']}",
            "events": f"/v1/jobs/{job['id']}/events",
            "websocket": f"/v1/jobs/{job['id']}/ws",
        }
        # Stored before the answer, and the budget held for it.
        assert gateway.store.get(job["id"]) is not None
        assert gateway.dispatcher.submitted == [job["id"]]
        reservation = gateway.accounts.reservation(job["id"])
        assert reservation is not None
        assert reservation.state == "reserved"
        assert reservation.amount_wei == UNIT_PRICE  # 2*16^3 FLOP = 1 started GFLOP at the only offer's price

        await gateway.dispatcher.drain()
        done = (await http.get(f"/v1/jobs/{job['id']}", headers=gateway.headers)).json()
    assert done["status"] == "succeeded"
    assert done["provider"] == gateway.provider.address
    assert done["placement"]["providers"] == [gateway.provider.address]
    assert done["placement"]["explanation"]["considered"] == 1
    assert [a["outcome"] for a in done["attempts"]] == ["succeeded"]
    assert done["price_wei"] == done["charged_wei"] == str(UNIT_PRICE)
    assert done["timing_ms"]["compute"] > 0
    assert done["timing_ms"]["total"] >= done["timing_ms"]["compute"]
    assert done["receipt"]["message"]["provider"] == gateway.provider.address
    a, b = matmul_operands(parse_input("matmul", matmul_job(16)["input"]))  # type: ignore[arg-type]
    c = Tensor.model_validate(done["result"]["c"]).to_array()
    np.testing.assert_allclose(c, a @ b, rtol=1e-5)
    assert reserved_and_spent(gateway) == (0, UNIT_PRICE)  # charged once, the rest freed


async def test_a_job_over_budget_is_refused_before_anything_happens(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, budget_wei=UNIT_PRICE - 1)
    try:
        async with client_for(gw) as http:
            response = await http.post("/v1/jobs", json=matmul_job(), headers=gw.headers)
            assert response.status_code == 402
            error = response.json()["error"]
            assert error["code"] == "budget_exceeded"
            assert error["type"] == "insufficient_quota"
            assert f"up to {UNIT_PRICE} wei" in error["message"]
            assert f"{UNIT_PRICE - 1} wei left" in error["message"]
            assert gw.store.list(gw.client.address) == []  # no job stored
            assert gw.dispatcher.submitted == []  # nothing dispatched
            assert reserved_and_spent(gw) == (0, 0)  # nothing reserved
            metrics = (await http.get("/metrics")).text
            assert "proxima_gateway_budget_refusals_total 1.0" in metrics
    finally:
        gw.close()


async def test_the_clients_own_limits_are_what_is_reserved(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        capped = await http.post(
            "/v1/jobs", json=matmul_job(max_price_wei=str(5 * UNIT_PRICE)), headers=gateway.headers
        )
        budgeted = await http.post(
            "/v1/jobs",
            json=matmul_job(max_price_wei=str(5 * UNIT_PRICE), budget_wei=str(3 * UNIT_PRICE)),
            headers=gateway.headers,
        )
        too_much = await http.post(
            "/v1/jobs", json=matmul_job(budget_wei=str(2 * ETH)), headers=gateway.headers
        )
    for response, held in ((capped, 5 * UNIT_PRICE), (budgeted, 3 * UNIT_PRICE)):
        assert response.status_code == 202
        reservation = gateway.accounts.reservation(response.json()["id"])
        assert reservation is not None
        assert reservation.amount_wei == held
        assert gateway.store.get(response.json()["id"]).spec["budget_wei"] == held  # type: ignore[union-attr]
    assert too_much.status_code == 402


async def test_no_live_offer_for_the_workload_is_503_and_nothing_is_held(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, offers=[make_offer(account(8), workloads=("embed",))])
    try:
        async with client_for(gw) as http:
            response = await http.post("/v1/jobs", json=matmul_job(), headers=gw.headers)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "no_provider"
            residency = await http.post(
                "/v1/jobs",
                json={
                    "workload": "embed",
                    "input": {"model": "all-MiniLM-L6-v2", "texts": ["x"]},
                    "constraints": {"countries": ["FR"]},
                },
                headers=gw.headers,
            )
            assert residency.status_code == 503
            assert "FR" in residency.json()["error"]["message"]
        assert gw.store.list(gw.client.address) == []
        assert reserved_and_spent(gw) == (0, 0)
    finally:
        gw.close()


async def test_clients_see_only_their_own_jobs(gateway: Gateway) -> None:
    other = {"Authorization": f"Bearer {gateway.other_key}"}
    async with client_for(gateway) as http:
        mine = (await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)).json()["id"]
        theirs = (await http.post("/v1/jobs", json=matmul_job(), headers=other)).json()["id"]
        assert (await http.get(f"/v1/jobs/{theirs}", headers=gateway.headers)).status_code == 404
        assert (await http.delete(f"/v1/jobs/{theirs}", headers=gateway.headers)).status_code == 404
        assert (await http.get(f"/v1/jobs/{theirs}/events", headers=gateway.headers)).status_code == 404
        missing = "0x" + "00" * 32
        response = await http.get(f"/v1/jobs/{missing}", headers=gateway.headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        listed = (await http.get("/v1/jobs", headers=gateway.headers)).json()["data"]
    assert [j["id"] for j in listed] == [mine]


async def test_listing_filters_and_leaves_results_out(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        ids = [
            (await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)).json()["id"]
            for _ in range(3)
        ]
        await gateway.dispatcher.drain()
        listed = (await http.get("/v1/jobs?limit=2", headers=gateway.headers)).json()["data"]
        assert [j["id"] for j in listed] == ids[::-1][:2]  # newest first
        assert all(j["status"] == "succeeded" and j["result"] is None for j in listed)
        assert (await http.get("/v1/jobs?status=queued", headers=gateway.headers)).json()["data"] == []
        assert (await http.get("/v1/jobs?status=done", headers=gateway.headers)).status_code == 422
        assert (await http.get("/v1/jobs?limit=0", headers=gateway.headers)).status_code == 422


async def test_cancelling_releases_the_budget_and_charges_nothing(held: Gateway) -> None:
    async with client_for(held) as http:
        job = (await http.post("/v1/jobs", json=matmul_job(), headers=held.headers)).json()
        await asyncio.sleep(0.05)  # let it start
        assert reserved_and_spent(held) == (UNIT_PRICE, 0)
        response = await http.delete(f"/v1/jobs/{job['id']}", headers=held.headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert response.json()["error"]["code"] == "cancelled"
        assert reserved_and_spent(held) == (0, 0)
        again = await http.delete(f"/v1/jobs/{job['id']}", headers=held.headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_finished"


async def test_a_failed_job_says_why_and_charges_nothing(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, fail=("busy", "the node is busy"))
    try:
        async with client_for(gw) as http:
            job = (await http.post("/v1/jobs", json=matmul_job(), headers=gw.headers)).json()
            await gw.dispatcher.drain()
            failed = (await http.get(f"/v1/jobs/{job['id']}", headers=gw.headers)).json()
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "busy"
        assert failed["error"]["type"] == "api_error"
        assert failed["attempts"][0]["error"] == {
            "code": "busy",
            "message": "the node is busy",
            "param": None,
            "type": "api_error",
        }
        assert failed["charged_wei"] is None
        assert reserved_and_spent(gw) == (0, 0)
    finally:
        gw.close()


async def test_an_idempotency_key_returns_the_first_job(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        first = await http.post(
            "/v1/jobs", json=matmul_job(idempotency_key="order-1"), headers=gateway.headers
        )
        again = await http.post(
            "/v1/jobs", json=matmul_job(idempotency_key="order-1"), headers=gateway.headers
        )
        by_header = await http.post(
            "/v1/jobs", json=matmul_job(), headers={**gateway.headers, "Idempotency-Key": "order-1"}
        )
        assert first.status_code == 202
        assert again.status_code == 200
        assert by_header.status_code == 200
        assert first.json()["id"] == again.json()["id"] == by_header.json()["id"]
        assert gateway.dispatcher.submitted == [first.json()["id"]]
        assert reserved_and_spent(gateway)[0] + reserved_and_spent(gateway)[1] == UNIT_PRICE  # held once

        conflict = await http.post(
            "/v1/jobs", json=matmul_job(12, idempotency_key="order-1"), headers=gateway.headers
        )
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "idempotency_conflict"
        mismatch = await http.post(
            "/v1/jobs",
            json=matmul_job(idempotency_key="order-1"),
            headers={**gateway.headers, "Idempotency-Key": "order-2"},
        )
        assert mismatch.status_code == 422
        assert mismatch.json()["error"]["param"] == "idempotency_key"
        # Keys are per client.
        other = await http.post(
            "/v1/jobs",
            json=matmul_job(idempotency_key="order-1"),
            headers={"Authorization": f"Bearer {gateway.other_key}"},
        )
        assert other.status_code == 202
        assert other.json()["id"] != first.json()["id"]


def _sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":") and ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


async def test_sse_replays_past_events_then_streams_until_the_job_ends(held: Gateway) -> None:
    async with client_for(held) as http:
        job = (await http.post("/v1/jobs", json=matmul_job(), headers=held.headers)).json()
        await asyncio.sleep(0.05)  # placed and running: those events are in the past when the stream opens
        stream = asyncio.create_task(http.get(f"/v1/jobs/{job['id']}/events", headers=held.headers))
        await asyncio.sleep(0.2)
        assert not stream.done()  # still open: the job has not ended
        held.dispatcher.gate.set()
        response = await asyncio.wait_for(stream, 10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse(response.text)
        assert [e["event"] for e in events] == ["queued", "placed", "attempt_started", "succeeded", "end"]
        assert [e.get("id") for e in events[:-1]] == ["1", "2", "3", "4"]
        assert json.loads(events[3]["data"])["data"]["charged_wei"] == str(UNIT_PRICE)
        assert json.loads(events[-1]["data"]) == {"status": "succeeded"}

        resumed = await http.get(
            f"/v1/jobs/{job['id']}/events", headers={**held.headers, "Last-Event-ID": "2"}
        )
        assert [e["event"] for e in _sse(resumed.text)] == ["attempt_started", "succeeded", "end"]
        after = await http.get(f"/v1/jobs/{job['id']}/events?after=3", headers=held.headers)
        assert [e["event"] for e in _sse(after.text)] == ["succeeded", "end"]


def test_sse_streams_live_through_a_real_server(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, hold=True)
    try:
        with serve(gw.app) as url, httpx.Client(base_url=url, headers=gw.headers, timeout=10) as http:
            job = http.post("/v1/jobs", json=matmul_job()).json()
            seen: list[str] = []
            with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        seen.append(line.removeprefix("event: "))
                        if seen[-1] == "attempt_started":
                            assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
                            gw.dispatcher.release()  # the job ends while the stream is open
            assert seen == ["queued", "placed", "attempt_started", "succeeded", "end"]
    finally:
        gw.close()


def test_websocket_streams_events_then_the_final_job(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, hold=True)
    try:
        with TestClient(gw.app) as client:
            job = client.post("/v1/jobs", json=matmul_job(), headers=gw.headers).json()
            with client.websocket_connect(f"/v1/jobs/{job['id']}/ws", headers=gw.headers) as ws:
                seen = [ws.receive_json() for _ in range(3)]
                assert [m["type"] for m in seen] == ["queued", "placed", "attempt_started"]
                assert client.portal is not None
                client.portal.call(gw.dispatcher.gate.set)  # the job finishes while we watch
                finished = ws.receive_json()
                end = ws.receive_json()
            assert finished["type"] == "succeeded"
            assert finished["seq"] == 4
            assert end["type"] == "end"
            assert end["job"]["status"] == "succeeded"
            assert end["job"]["charged_wei"] == str(UNIT_PRICE)

            path = f"/v1/jobs/{job['id']}/ws"
            signed = sign_request_headers(gw.client, "GET", path)  # signed websockets: GET, empty body
            with client.websocket_connect(path, headers=signed) as ws:
                assert ws.receive_json()["type"] == "queued"

            with (
                pytest.raises(WebSocketDenialResponse) as denied,
                client.websocket_connect(f"/v1/jobs/{job['id']}/ws"),
            ):
                pass
            assert denied.value.status_code == 401
            other = {"Authorization": f"Bearer {gw.other_key}"}
            with (
                pytest.raises(WebSocketDenialResponse) as denied,
                client.websocket_connect(f"/v1/jobs/{job['id']}/ws", headers=other),
            ):
                pass
            assert denied.value.status_code == 404
            assert denied.value.json()["error"]["code"] == "not_found"
    finally:
        gw.close()


async def test_every_log_line_of_a_job_carries_its_id(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with client_for(gateway) as http:
        job_id = (await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)).json()["id"]
    accepted = [r for r in caplog.records if r.getMessage() == "job accepted"]
    assert len(accepted) == 1
    line = json.loads(_Formatter(as_json=True).format(accepted[0]))  # what the gateway's log handler writes
    assert line["job_id"] == job_id
    requests = [r for r in caplog.records if r.getMessage() == "request"]
    assert requests
    assert getattr(requests[-1], "route", None) == "/v1/jobs"


async def test_metrics_count_requests_by_route_and_jobs_submitted(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        job_id = (await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)).json()["id"]
        await http.get(f"/v1/jobs/{job_id}", headers=gateway.headers)
        text = (await http.get("/metrics")).text
    assert 'proxima_gateway_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    assert 'proxima_gateway_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0' in text
    assert 'proxima_gateway_jobs_submitted_total{workload="matmul"} 1.0' in text
    assert "proxima_gateway_offers 1.0" in text


async def test_metrics_count_each_finished_job_once(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)
        await gateway.dispatcher.drain()
        gateway.dispatcher.flaky = 2  # two failovers, then delivered
        await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)
        await gateway.dispatcher.drain()
        gateway.dispatcher.flaky, gateway.dispatcher.fail = 0, ("busy", "no slot")
        await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)
        await gateway.dispatcher.drain()
        first = (await http.get("/metrics")).text
        again = (await http.get("/metrics")).text
    for text in (first, again):
        assert 'proxima_gateway_jobs_total{outcome="succeeded",workload="matmul"} 2.0' in text
        assert 'proxima_gateway_jobs_total{outcome="failed",workload="matmul"} 1.0' in text
        assert (
            'proxima_gateway_failovers_total{workload="matmul"} 2.0' in text
        )  # a failed job's last try is none
        assert "proxima_gateway_placement_seconds_count 2.0" in text


async def test_health_reports_offers_and_unfinished_jobs(held: Gateway) -> None:
    async with client_for(held) as http:
        await http.post("/v1/jobs", json=matmul_job(), headers=held.headers)
        health = (await http.get("/healthz")).json()
        assert health == {"status": "ok", "offers": 1, "unfinished_jobs": 1, "detail": {}}
        held.market.signed_offers.clear()
        assert (await http.get("/healthz")).json()["status"] == "degraded"
