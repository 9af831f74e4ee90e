"""``POST /v1/embeddings``: OpenAI's request and response shapes, both encodings, the real ``openai`` client.

What is real: the app, SQLite, the budget, and the embeddings themselves, computed by the provider node's own
all-MiniLM-L6-v2 workload (the model loads once per session, ~5 s). What stands in: the dispatcher runs the
embed job in this process instead of sending it to a node over libp2p (see _gateway_support).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from _gateway_support import (
    UNIT_PRICE,
    Gateway,
    anyio_backend,  # noqa: F401 - the fixture
    embedder,
    make_gateway,
    serve,
)

from proxima.sdk.workloads import EMBED_MODEL, parse_input

pytestmark = pytest.mark.anyio

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Proxima places jobs near their users."]


def reference(texts: list[str]) -> np.ndarray:
    """The model's own embeddings, computed directly."""
    out = embedder().execute(parse_input("embed", {"model": EMBED_MODEL, "texts": texts}))
    vectors: np.ndarray = out.embeddings.to_array()
    return vectors


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = make_gateway(tmp_path, wait_timeout_seconds=30.0)
    yield gw
    await gw.dispatcher.drain()
    gw.close()


def client_for(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gw")


async def test_float_embeddings_in_openais_shape(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        response = await http.post(
            "/v1/embeddings", json={"input": TEXTS, "model": EMBED_MODEL}, headers=gateway.headers
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == EMBED_MODEL
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, reference(TEXTS), rtol=1e-5, atol=1e-6)
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"]
    assert 2 * 4 < usage["prompt_tokens"] < 60  # word pieces of two short sentences, with [CLS] and [SEP]
    job = gateway.store.get(response.headers["X-Proxima-Job-Id"])
    assert job is not None
    assert job.workload == "embed"
    assert job.charged_wei == UNIT_PRICE  # 1 started 1000 characters
    acct = gateway.accounts.get(gateway.client.address)
    assert acct is not None
    assert acct.spent_wei == UNIT_PRICE


async def test_base64_embeddings_are_little_endian_float32(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        response = await http.post(
            "/v1/embeddings",
            json={"input": "a single text", "model": EMBED_MODEL, "encoding_format": "base64"},
            headers=gateway.headers,
        )
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, reference(["a single text"])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": TEXTS, "model": "text-embedding-3-small"}, 404, "model"),
        ({"input": TEXTS, "model": EMBED_MODEL, "dimensions": 128}, 422, "dimensions"),
        ({"input": [], "model": EMBED_MODEL}, 422, "input"),
        ({"input": [[1, 2, 3]], "model": EMBED_MODEL}, 422, "input"),
        ({"input": "", "model": EMBED_MODEL}, 422, "input"),
        ({"input": "x" * 4097, "model": EMBED_MODEL}, 422, "input"),
        ({"input": ["x"] * 257, "model": EMBED_MODEL}, 422, "input"),
        ({"input": "x", "model": EMBED_MODEL, "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": "x"}, 422, "model"),
        ({"input": "x", "model": EMBED_MODEL, "extra": 1}, 422, "extra"),
    ],
)
async def test_bad_requests_get_openai_errors_and_run_nothing(
    gateway: Gateway, body: dict[str, object], status: int, param: str
) -> None:
    async with client_for(gateway) as http:
        response = await http.post("/v1/embeddings", json=body, headers=gateway.headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None
    assert error["param"].startswith(param)
    assert gateway.dispatcher.submitted == []


async def test_a_failed_or_slow_job_is_an_upstream_error(tmp_path: Path) -> None:
    failing = make_gateway(tmp_path / "a", fail=("transport", "connection reset"))
    slow = make_gateway(tmp_path / "b", hold=True, wait_timeout_seconds=0.2)
    try:
        for gw, status, code in ((failing, 502, "providers_failed"), (slow, 504, "timeout")):
            async with client_for(gw) as http:
                response = await http.post(
                    "/v1/embeddings", json={"input": "x", "model": EMBED_MODEL}, headers=gw.headers
                )
            assert response.status_code == status
            error = response.json()["error"]
            assert error["code"] == code
            assert error["type"] == "api_error"
            assert response.headers["X-Proxima-Job-Id"] in error["message"]
        acct = failing.accounts.get(failing.client.address)
        assert acct is not None
        assert (acct.spent_wei, acct.reserved_wei) == (0, 0)
    finally:
        slow.dispatcher.gate.set()
        for gw in (failing, slow):
            await gw.dispatcher.drain()
            gw.close()


def test_the_openai_client_gets_embeddings_from_a_real_server(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, wait_timeout_seconds=30.0)
    try:
        with serve(gw.app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=gw.api_key, max_retries=0)
            default = client.embeddings.create(model=EMBED_MODEL, input=TEXTS)  # asks for base64
            floats = client.embeddings.create(model=EMBED_MODEL, input=TEXTS[0], encoding_format="float")
            expected = reference(TEXTS)
            assert default.model == EMBED_MODEL
            assert [d.index for d in default.data] == [0, 1]
            np.testing.assert_allclose(
                np.array([d.embedding for d in default.data]), expected, rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(floats.data[0].embedding, expected[0], rtol=1e-5, atol=1e-6)
            assert default.usage.prompt_tokens > 0

            wrong_key = openai.OpenAI(base_url=f"{url}/v1", api_key="pxk_" + "x" * 43, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as denied:
                wrong_key.embeddings.create(model=EMBED_MODEL, input="x")
            assert "unknown or revoked API key" in str(denied.value)
            with pytest.raises(openai.NotFoundError, match="does not exist"):
                client.embeddings.create(model="text-embedding-3-large", input="x")
    finally:
        gw.close()
