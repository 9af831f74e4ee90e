"""The client's own checks: a wrong product with a valid receipt (Freivalds), a result altered after the
provider signed it (receipt), request signing as the gateway checks it, spec validation, and the SDK's
import boundary.

The gateway here is the real app and SQLite stores served by uvicorn, with the HTTP tests' stand-in
dispatcher (tests/marketplace/gateway/_gateway_support.py): its "provider" signs a receipt for whatever its
compute function returns, which is how a dishonest provider behaves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).parents[1] / "marketplace" / "gateway"))
from _gateway_support import (
    RECEIPT_DOMAIN,
    Gateway,
    make_gateway,
    numpy_compute,
    serve,
)

from proxima.sdk import (
    Client,
    InvalidSpecError,
    JobFailedError,
    JobSpec,
    VerificationFailedError,
)
from proxima.sdk._client_errors import BudgetExceededError, error_from_api
from proxima.sdk._client_transport import sign_request_headers
from proxima.sdk.workloads import MatmulOutput, Tensor


def wrong_product(workload: str, inp: BaseModel) -> BaseModel:
    """The right product with one element off: what a cheating provider returns (and signs)."""
    out = numpy_compute(workload, inp)
    assert isinstance(out, MatmulOutput)
    c = out.c.to_array().copy()
    c[3, 5] += 1.0
    return MatmulOutput(c=Tensor.from_array(c))


def with_domain(gw: Gateway) -> Gateway:
    """Store receipts with their signing domain, as the real gateway does (the stand-in leaves it out)."""
    succeed = gw.store.succeed

    def succeed_with_domain(job_id: str, n: int, *, receipt: dict[str, Any], **rest: Any) -> Any:
        return succeed(job_id, n, receipt={**receipt, "domain": RECEIPT_DOMAIN.as_dict()}, **rest)

    gw.store.succeed = succeed_with_domain  # type: ignore[method-assign]
    return gw


@pytest.fixture
def honest(tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    gw = with_domain(make_gateway(tmp_path))
    with serve(gw.app) as url:
        yield gw, url
    gw.close()


@pytest.fixture
def cheating(tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    gw = with_domain(make_gateway(tmp_path, compute=wrong_product))
    with serve(gw.app) as url:
        yield gw, url
    gw.close()


def test_a_wrong_product_with_a_valid_receipt_fails_freivalds(cheating: tuple[Gateway, str]) -> None:
    gw, url = cheating
    with Client.connect(url, api_key=gw.api_key) as client:
        job = client.submit(JobSpec.matmul(32, seed=1))
        with pytest.raises(VerificationFailedError) as failed:
            job.result(timeout=30)
        assert failed.value.method == "freivalds"
        assert failed.value.provider == gw.provider.address
        assert failed.value.job_id == job.id
        outcome = client.map([JobSpec.matmul(32, seed=2)], progress=False)[0]
        assert isinstance(outcome.error, VerificationFailedError)
        with Client.connect(url, api_key=gw.api_key, verify=False) as trusting:
            assert isinstance(trusting.submit(JobSpec.matmul(32, seed=3)).result(timeout=30), MatmulOutput)


def test_a_result_altered_after_it_was_signed_fails_the_receipt_check(honest: tuple[Gateway, str]) -> None:
    gw, url = honest
    with Client.connect(url, api_key=gw.api_key) as client:
        job = client.submit(JobSpec.matmul(16, seed=4))
        job.wait(30)
        record = gw.store.get(job.id)
        assert record is not None
        assert record.result is not None
        altered = MatmulOutput.model_validate(record.result).c.to_array().copy()
        altered[0, 0] = 0.0
        with gw.store.transaction() as conn:  # a gateway (or anyone on the way) changing the result
            conn.execute(
                "UPDATE jobs SET result = ? WHERE id = ?",
                (json.dumps(MatmulOutput(c=Tensor.from_array(altered)).model_dump(mode="json")), job.id),
            )
        job.refresh()  # what the client now reads
        with pytest.raises(VerificationFailedError) as failed:
            job.result(timeout=30)
        assert failed.value.method == "receipt"
        assert "result hash" in failed.value.detail

        other = client.submit(JobSpec.matmul(16, seed=5))
        other.wait(30)
        with gw.store.transaction() as conn:  # a receipt signed by someone else
            conn.execute(
                "UPDATE jobs SET receipt = json_set(receipt, '$.signature', ?) WHERE id = ?",
                ("0x" + "11" * 64 + "1b", other.id),
            )
        with pytest.raises(VerificationFailedError) as unsigned:
            client.job(other.id, other.spec).result(timeout=30)
        assert unsigned.value.method == "receipt"


def test_a_failed_job_raises_the_gateways_code_and_message(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, fail=("no_candidate", "every provider refused"))
    try:
        with serve(gw.app) as url, Client.connect(url, api_key=gw.api_key) as client:
            job = client.submit(JobSpec.matmul(8, seed=6))
            with pytest.raises(JobFailedError) as failed:
                job.result(timeout=30)
            assert failed.value.code == "no_candidate"
            assert failed.value.message == "every provider refused"
            assert job.charged_wei is None
    finally:
        gw.close()


def test_signed_headers_are_what_the_gateway_checks() -> None:
    from eth_account import Account

    from proxima.marketplace.gateway.auth import sign_request_headers as gateway_headers

    account = Account.from_key(b"\x07" * 32)
    body = b'{"workload":"matmul"}'
    ours = sign_request_headers(account, "POST", "/v1/jobs?x=1", body, timestamp=1700000000.5)
    theirs = gateway_headers(account, "POST", "/v1/jobs?x=1", body, timestamp=1700000000.5)
    assert ours == theirs


def test_specs_are_validated_before_anything_is_sent() -> None:
    with pytest.raises(InvalidSpecError) as bad_workload:
        JobSpec.of({"workload": "sort", "input": {}})
    assert bad_workload.value.field == "workload"
    with pytest.raises(InvalidSpecError) as bad_country:
        JobSpec.matmul(8, constraints={"countries": ["Germany"]})
    assert bad_country.value.field == "constraints.countries"
    with pytest.raises(InvalidSpecError):
        JobSpec.embed([])
    spec = JobSpec.of(
        {
            "workload": "matmul",
            "input": {"seed": 1, "m": 2, "k": 3, "n": 4, "dtype": "float32"},
            "budget_wei": "7",
        }
    )
    assert spec.budget_wei == 7
    assert spec.body(budget_wei=5)["budget_wei"] == "5"


def test_api_errors_map_to_typed_client_errors() -> None:
    refused = error_from_api(
        402, "budget_exceeded", "this job may cost up to 10 wei but client 0x1 has 3 wei left"
    )
    assert isinstance(refused, BudgetExceededError)
    assert (refused.scope, refused.needed_wei, refused.available_wei) == ("gateway", 10, 3)
    invalid = error_from_api(422, "invalid_input", "m must be >= 1", "input.m")
    assert isinstance(invalid, InvalidSpecError)
    assert isinstance(invalid, ValueError)


def test_importing_the_sdk_does_not_import_the_marketplace() -> None:
    code = (
        "import sys; from proxima.sdk import Client, AsyncClient, JobSpec; "
        "assert not [m for m in sys.modules if m.startswith('proxima.marketplace')], 'marketplace imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
