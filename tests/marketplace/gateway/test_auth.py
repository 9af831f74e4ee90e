"""Authentication of HTTP requests (API keys and signed requests) against the real app and SQLite accounts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from _gateway_support import (
    Gateway,
    account,
    anyio_backend,  # noqa: F401 - the fixture
    make_gateway,
    matmul_job,
)

from proxima.marketplace.gateway.auth import (
    ADDRESS_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    request_message,
    sign_request_headers,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = make_gateway(tmp_path)
    yield gw
    await gw.dispatcher.drain()
    gw.close()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw") as c:
        yield c


def _error(response: httpx.Response) -> dict[str, str]:
    body: dict[str, dict[str, str]] = response.json()
    return body["error"]


async def test_api_key_identifies_its_client(gateway: Gateway, http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/account", headers=gateway.headers)
    assert response.status_code == 200
    assert response.json()["address"] == gateway.client.address
    other = await http.get("/v1/account", headers={"Authorization": f"Bearer {gateway.other_key}"})
    assert other.json()["address"] == gateway.other.address


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "no credentials"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
        ({"Authorization": "Bearer pxk_" + "A" * 43}, "unknown or revoked"),
        ({"Authorization": "Bearer not-a-key"}, "unknown or revoked"),
    ],
)
async def test_bad_api_keys_are_refused(http: httpx.AsyncClient, headers: dict[str, str], says: str) -> None:
    response = await http.get("/v1/account", headers=headers)
    assert response.status_code == 401
    assert says in _error(response)["message"]
    assert _error(response)["type"] == "authentication_error"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_signed_get_and_post_are_accepted(gateway: Gateway, http: httpx.AsyncClient) -> None:
    headers = sign_request_headers(gateway.client, "GET", "/v1/account")
    response = await http.get("/v1/account", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["address"] == gateway.client.address

    body = json.dumps(matmul_job()).encode()
    headers = sign_request_headers(gateway.client, "POST", "/v1/jobs", body)
    response = await http.post(
        "/v1/jobs", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["client"] == gateway.client.address

    path = "/v1/jobs?limit=5&status=queued"
    headers = sign_request_headers(gateway.client, "GET", path)
    response = await http.get(path, headers=headers)
    assert response.status_code == 200, response.text


async def test_a_replayed_signature_is_refused(gateway: Gateway, http: httpx.AsyncClient) -> None:
    headers = sign_request_headers(gateway.client, "GET", "/v1/account")
    assert (await http.get("/v1/account", headers=headers)).status_code == 200
    again = await http.get("/v1/account", headers=headers)
    assert again.status_code == 401
    assert "replay" in _error(again)["message"]


@pytest.mark.parametrize("offset", [-61.0, 61.0])
async def test_a_timestamp_outside_the_window_is_refused(
    gateway: Gateway, http: httpx.AsyncClient, offset: float
) -> None:
    headers = sign_request_headers(gateway.client, "GET", "/v1/account", timestamp=time.time() + offset)
    response = await http.get("/v1/account", headers=headers)
    assert response.status_code == 401
    assert "clock" in _error(response)["message"]


async def test_a_timestamp_inside_the_window_is_accepted(gateway: Gateway, http: httpx.AsyncClient) -> None:
    headers = sign_request_headers(gateway.client, "GET", "/v1/account", timestamp=time.time() - 50)
    assert (await http.get("/v1/account", headers=headers)).status_code == 200


async def test_a_signature_over_something_else_is_refused(gateway: Gateway, http: httpx.AsyncClient) -> None:
    body = json.dumps(matmul_job()).encode()
    headers = {
        **sign_request_headers(gateway.client, "POST", "/v1/jobs", body),
        "Content-Type": "application/json",
    }
    tampered = body.replace(b'"m": 8', b'"m": 9')
    response = await http.post("/v1/jobs", content=tampered, headers=headers)
    assert response.status_code == 401
    assert "not 0x" in _error(response)["message"]
    assert "over this request" in _error(response)["message"]
    # Signed for another path, method or query.
    for method, path in (("GET", "/v1/offers"), ("POST", "/v1/account"), ("GET", "/v1/account?x=1")):
        headers = sign_request_headers(gateway.client, method, path)
        assert (await http.get("/v1/account", headers=headers)).status_code == 401
    assert gateway.store.list(gateway.client.address) == []  # nothing was stored


async def test_someone_signing_for_another_address_is_refused(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    headers = sign_request_headers(gateway.other, "GET", "/v1/account")
    headers[ADDRESS_HEADER] = gateway.client.address
    response = await http.get("/v1/account", headers=headers)
    assert response.status_code == 401


async def test_an_address_without_an_account_is_refused(http: httpx.AsyncClient) -> None:
    stranger = account(99)
    response = await http.get("/v1/account", headers=sign_request_headers(stranger, "GET", "/v1/account"))
    assert response.status_code == 401
    assert "no client account" in _error(response)["message"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({ADDRESS_HEADER: "0x1234"}, ADDRESS_HEADER),
        ({TIMESTAMP_HEADER: "yesterday"}, TIMESTAMP_HEADER),
        ({TIMESTAMP_HEADER: "1e9"}, TIMESTAMP_HEADER),
        ({SIGNATURE_HEADER: "0x1234"}, "130 hex"),
        ({SIGNATURE_HEADER: "0x" + "00" * 65}, "not a valid signature"),
    ],
)
async def test_malformed_signature_headers_are_refused(
    gateway: Gateway, http: httpx.AsyncClient, change: dict[str, str], says: str
) -> None:
    headers = {**sign_request_headers(gateway.client, "GET", "/v1/account"), **change}
    response = await http.get("/v1/account", headers=headers)
    assert response.status_code == 401
    assert says in _error(response)["message"]


async def test_incomplete_or_mixed_credentials_are_refused(gateway: Gateway, http: httpx.AsyncClient) -> None:
    headers = sign_request_headers(gateway.client, "GET", "/v1/account")
    del headers[SIGNATURE_HEADER]
    response = await http.get("/v1/account", headers=headers)
    assert response.status_code == 401
    assert SIGNATURE_HEADER in _error(response)["message"]
    mixed = {**sign_request_headers(gateway.client, "GET", "/v1/account"), **gateway.headers}
    response = await http.get("/v1/account", headers=mixed)
    assert response.status_code == 401
    assert "either" in _error(response)["message"]


async def test_auth_failures_are_counted(gateway: Gateway, http: httpx.AsyncClient) -> None:
    await http.get("/v1/account")
    await http.get("/v1/account", headers={"Authorization": "Bearer nope"})
    metrics = (await http.get("/metrics")).text
    assert "proxima_gateway_auth_failures_total 2.0" in metrics


def test_the_signed_text_is_the_documented_one() -> None:
    text = request_message("POST", "/v1/jobs?x=1", "1700000000.250", b"{}")
    assert text == (
        "PROXIMA-REQUEST-V1\nPOST\n/v1/jobs?x=1\n1700000000.250\n"
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
