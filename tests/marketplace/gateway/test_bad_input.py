"""Bad input to every endpoint gets a clear 4xx JSON error naming what is wrong, never a 500, changes nothing.

Hand-written cases for what a client gets wrong most, then schemathesis against the OpenAPI document (every
operation, generated valid and invalid requests; no 5xx, and every response conforms to the document).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from _gateway_support import (
    ETH,
    Gateway,
    anyio_backend,  # noqa: F401 - the fixture
    make_gateway,
    matmul_job,
    numpy_compute,
)
from hypothesis import HealthCheck, settings
from pydantic import BaseModel
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from proxima.audit.service import AuditService
from proxima.audit.store import AuditStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import InProcessChain
from proxima.sdk.deploy import deploy_all
from proxima.sdk.peerid import peer_id_from_key
from proxima.sdk.workloads import EmbedInput, EmbedOutput, Tensor

pytestmark = pytest.mark.anyio

JOB_ID = "0x" + "ab" * 32


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = make_gateway(tmp_path, max_request_bytes=64 * 1024)
    yield gw
    await gw.dispatcher.drain()
    gw.close()


def client_for(gw: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gw")


def matmul(**input_fields: Any) -> dict[str, Any]:
    body = matmul_job()
    body["input"] = {**body["input"], **input_fields}
    return body


def tensor(shape: tuple[int, ...], data: str | None = None) -> dict[str, Any]:
    nbytes = 4
    for d in shape:
        nbytes *= d
    return {
        "dtype": "float32",
        "shape": list(shape),
        "data": data or base64.b64encode(bytes(nbytes)).decode(),
    }


BAD_JOBS: list[tuple[Any, int, str | None, str]] = [
    # (body, status, param the error names, words in the message)
    ([], 422, None, "JSON object"),
    ({}, 422, "workload", "Field required"),
    ({"workload": "render", "input": {}}, 422, "workload", "Input should be"),
    ({"workload": "matmul"}, 422, "input", "Field required"),
    ({**matmul_job(), "colour": "red"}, 422, "colour", "unknown field"),
    ({**matmul_job(), "redundancy": "1"}, 422, "redundancy", "valid integer"),
    ({**matmul_job(), "redundancy": 9}, 422, "redundancy", "less than or equal to 5"),
    ({**matmul_job(), "redundancy": 0}, 422, "redundancy", "greater than or equal to 1"),
    ({**matmul_job(), "cache": "yes"}, 422, "cache", "valid boolean"),
    ({**matmul_job(), "payment": "cash"}, 422, "payment", "'voucher' or 'escrow'"),
    ({**matmul_job(), "max_price_wei": 100}, 422, "max_price_wei", "valid string"),
    ({**matmul_job(), "max_price_wei": "-1"}, 422, "max_price_wei", "pattern"),
    ({**matmul_job(), "max_price_wei": "1.5"}, 422, "max_price_wei", "pattern"),
    ({**matmul_job(), "budget_wei": str(2**256)}, 422, "budget_wei", "2**256"),
    ({**matmul_job(), "latency_target_ms": 0}, 422, "latency_target_ms", "greater than 0"),
    ({**matmul_job(), "min_reliability": 1.5}, 422, "min_reliability", "less than or equal to 1"),
    ({**matmul_job(), "constraints": {"countries": ["de"]}}, 422, "constraints.countries.0", "pattern"),
    ({**matmul_job(), "constraints": {"regions": ["EU West"]}}, 422, "constraints.regions.0", "pattern"),
    ({**matmul_job(), "constraints": {"gpu": "H100"}}, 422, "constraints.gpu", "unknown field"),
    ({**matmul_job(), "model": "all-MiniLM-L6-v2"}, 422, "model", "takes no model"),
    ({**matmul_job(), "idempotency_key": "has spaces"}, 422, "idempotency_key", "pattern"),
    (matmul(m=5000), 422, "input.m", "less than or equal to 4096"),
    (matmul(m=0), 422, "input.m", "greater than or equal to 1"),
    (matmul(m=4096, k=4096, n=4096), 422, "input", "MATMUL_MAX_ELEMENTS"),
    (matmul(dtype="int8"), 422, "input.dtype", "float32"),
    (matmul(seed=-1), 422, "input.seed", "greater than or equal to 0"),
    (matmul(seed="7"), 422, "input.seed", "valid integer"),
    ({"workload": "matmul", "input": {"m": 4}}, 422, "input", "missing"),
    (
        {"workload": "matmul", "input": {"a": tensor((2, 3)), "b": tensor((2, 3))}},
        422,
        "input",
        "do not agree",
    ),
    (
        {"workload": "matmul", "input": {"a": tensor((2, 2), "!!!!"), "b": tensor((2, 2))}},
        422,
        "input.a",
        "base64",
    ),
    (
        {"workload": "embed", "input": {"model": "all-MiniLM-L6-v2", "texts": []}},
        422,
        "input.texts",
        "at least 1",
    ),
    (
        {"workload": "embed", "input": {"model": "gpt", "texts": ["x"]}},
        422,
        "input.model",
        "all-MiniLM-L6-v2",
    ),
    (
        {"workload": "embed", "model": "other", "input": {"model": "all-MiniLM-L6-v2", "texts": ["x"]}},
        422,
        "model",
        "does not match",
    ),
]


@pytest.mark.parametrize(("body", "status", "param", "words"), BAD_JOBS)
async def test_bad_jobs_are_refused_with_the_field_named(
    gateway: Gateway, body: Any, status: int, param: str | None, words: str
) -> None:
    async with client_for(gateway) as http:
        response = await http.post("/v1/jobs", json=body, headers=gateway.headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_request", "invalid_input")
    assert error["param"] == param
    assert words in error["message"]
    assert gateway.store.list(gateway.client.address) == []  # nothing half-written
    acct = gateway.accounts.get(gateway.client.address)
    assert acct is not None
    assert (acct.reserved_wei, acct.spent_wei) == (0, 0)


async def test_bodies_that_are_not_json_or_too_large(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        broken = await http.post(
            "/v1/jobs",
            content=b'{"workload": ',
            headers={**gateway.headers, "Content-Type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "invalid_json"
        plain = await http.post("/v1/jobs", content=b"workload=matmul", headers=gateway.headers)
        assert plain.status_code == 422
        assert "Content-Type: application/json" in plain.json()["error"]["message"]
        huge = matmul_job()
        huge["input"]["pad"] = "x" * 100_000
        too_large = await http.post("/v1/jobs", json=huge, headers=gateway.headers)
        assert too_large.status_code == 413
        assert too_large.json()["error"]["code"] == "request_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in (b'{"workload": "matmul", "input": {"pad": "', b"x" * 70_000, b'"}}'):
                yield chunk

        streamed = await http.post(
            "/v1/jobs", content=chunks(), headers={**gateway.headers, "Content-Type": "application/json"}
        )
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "request_too_large"
    assert gateway.store.list(gateway.client.address) == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/jobs/123", 422),
        ("GET", f"/v1/jobs/{JOB_ID.upper()}", 422),
        ("DELETE", "/v1/jobs/not-a-job", 422),
        ("GET", "/v1/jobs/0x12/events", 422),
        ("GET", f"/v1/jobs/{JOB_ID}/events?after=-1", 422),
        ("GET", "/v1/jobs?limit=1000", 422),
        ("GET", "/v1/jobs?before=abc", 422),
        ("GET", "/v1/providers/0xzz", 422),
        ("GET", "/v1/offers?country=Germany", 422),
        ("GET", "/v1/nothing", 404),
        ("PUT", "/v1/jobs", 405),
        ("POST", "/v1/offers", 405),
    ],
)
async def test_bad_paths_and_parameters(gateway: Gateway, method: str, path: str, status: int) -> None:
    async with client_for(gateway) as http:
        response = await http.request(method, path, headers=gateway.headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    assert error["code"]


async def test_a_bad_last_event_id_is_refused(gateway: Gateway) -> None:
    async with client_for(gateway) as http:
        job = (await http.post("/v1/jobs", json=matmul_job(), headers=gateway.headers)).json()
        response = await http.get(
            f"/v1/jobs/{job['id']}/events", headers={**gateway.headers, "Last-Event-ID": "-5"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "Last-Event-ID"


# --- schemathesis ---------------------------------------------------------------------------------------


def _hashed_embeddings(workload: str, inp: BaseModel) -> BaseModel:
    """Unit vectors derived from each text's SHA-256 (the schemathesis app's stand-in for the model, so that
    hundreds of generated requests stay fast; the real model's answers are checked in test_embeddings)."""
    if workload == "matmul":
        return numpy_compute(workload, inp)
    assert isinstance(inp, EmbedInput)
    rows = []
    for text in inp.texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        row = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
        rows.append(row / np.linalg.norm(row))
    return EmbedOutput(model=inp.model, embeddings=Tensor.from_array(np.stack(rows).astype(np.float32)))


# The schema is loaded when the module is collected, so its app lives in a folder of its own for the session.
_FOLDER = Path(tempfile.mkdtemp(prefix="proxima-gateway-openapi-"))
_GATEWAY = make_gateway(_FOLDER, budget_wei=ETH, compute=_hashed_embeddings)
schema = schemathesis.openapi.from_asgi("/openapi.json", _GATEWAY.app)


@pytest.fixture(scope="module", autouse=True)
def _close_schema_gateway() -> Iterator[None]:
    # The /v1/audit operations are fuzzed against a real index of a chain with one provider on it.
    with InProcessChain() as chain:
        deployment = deploy_all(chain, chain.accounts[0])
        provider = chain.accounts[1]
        contracts = ProximaContracts.from_deployment(chain, deployment)
        contracts.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, ETH)
        store = AuditStore(_FOLDER / "audit.sqlite")
        _GATEWAY.services.audit = AuditService(store, chain.w3, deployment)
        _GATEWAY.services.audit.sync()
        yield
        store.close()
    _GATEWAY.close()
    shutil.rmtree(_FOLDER, ignore_errors=True)


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except 503 ``no_provider``: a valid job that no live offer can serve now (constraints such as
    ``countries: ["AQ"]``) is a fact about the market, not an error of the gateway or of the request."""
    if response.status_code >= 500:
        content_type = response.headers.get("content-type", "")
        if isinstance(content_type, list):  # schemathesis keeps every value of a header
            content_type = content_type[0] if content_type else ""
        body = response.json() if content_type.startswith("application/json") else {}
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        assert (response.status_code, code) == (503, "no_provider"), (
            f"{response.status_code}: {response.text}"
        )
    return None


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_openapi_operations_never_answer_5xx_and_conform(case: Any) -> None:
    excluded = [not_a_server_error]
    if case.operation.label == "POST /v1/jobs":
        # `input` is an open object in the document (each workload has its own schema, checked by the
        # workload's validators), so schema-valid bodies can still be invalid jobs: 422 is right for them.
        excluded.append(positive_data_acceptance)
    if case.operation.path.startswith("/v1/audit/"):
        # The auditor refuses a mixed-case address whose EIP-55 checksum is wrong (a typo) with 422, which
        # a pattern in the document cannot express.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        headers=_GATEWAY.headers, excluded_checks=excluded, additional_checks=[no_server_error]
    )
