"""The demo's own parts, without starting the world: sites and RIPE Atlas RTTs, the receipt audit, the command
line. The whole scenario runs in tests/integration/test_demo_e2e.py."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from proxima.marketplace.demo import SITES, load_rtts, main
from proxima.marketplace.demo.audit import check_receipt
from proxima.marketplace.demo.sites import CLIENT_COUNTRY, FALLBACK_RTT_MS, SiteError
from proxima.marketplace.gateway.cache import receipt_json
from proxima.marketplace.matching.latency import load_ripe_atlas_pairs
from proxima.sdk.chain import dev_accounts
from proxima.sdk.eip712 import JobReceipt, LocalSigner
from proxima.sdk.jobs import Domains, JobResult
from proxima.sdk.workloads import MatmulInput, MatmulOutput, Tensor, matmul_operands, result_hash

COMMITTED_RIPE = Path(__file__).parents[1] / "data" / "ripe_atlas_country_rtt.csv"


def test_five_sites_in_five_countries_one_dishonest_two_serving_embed() -> None:
    assert len(SITES) == 5
    assert len({s.country for s in SITES}) == 5
    assert CLIENT_COUNTRY not in {s.country for s in SITES}
    assert [s.name for s in SITES if s.dishonest] == ["paris"]
    assert sum("embed" in s.workloads for s in SITES if not s.dishonest) >= 2  # one is killed mid-run
    assert all("matmul" in s.workloads for s in SITES)


def test_rtts_come_from_the_ripe_atlas_extract() -> None:
    rtts, source = load_rtts(CLIENT_COUNTRY, [s.country for s in SITES], COMMITTED_RIPE)
    assert source == str(COMMITTED_RIPE)
    pairs = load_ripe_atlas_pairs(COMMITTED_RIPE)
    for site in SITES:
        key = (min(CLIENT_COUNTRY, site.country), max(CLIENT_COUNTRY, site.country))
        assert rtts[site.country] == pairs[key]
    # Farther countries are slower, as the demo's RTT table shows.
    assert rtts["FR"] < rtts["GB"] < rtts["US"] < rtts["SG"] < rtts["BR"]


def test_built_in_figures_are_the_ripe_atlas_ones() -> None:
    pairs = load_ripe_atlas_pairs(COMMITTED_RIPE)
    for key, ms in FALLBACK_RTT_MS.items():
        assert ms == pytest.approx(pairs[key] * 1000, abs=0.001), key


def test_a_country_without_figures_is_refused_naming_it() -> None:
    with pytest.raises(SiteError, match="DE and AQ"):
        load_rtts("DE", ["FR", "AQ"], COMMITTED_RIPE)


# --- the receipt audit ----------------------------------------------------------------------------------


DOMAINS = Domains(
    chain_id=31337,
    escrow="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    faults="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    vouchers="0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
)
PROVIDER, CLIENT, STRANGER = dev_accounts(8)[5], dev_accounts(8)[3], dev_accounts(8)[7]


def _record(*, tamper: bool = False, signer: LocalAccount = PROVIDER) -> dict[str, Any]:
    """A finished job as the gateway returns it: the product, and the provider's receipt for it."""
    a, b = matmul_operands(MatmulInput(seed=3, m=8, k=8, n=8, dtype="float64"))
    output = MatmulOutput(c=Tensor.from_array(a @ b))
    job_id = secrets.token_bytes(32)
    receipt = JobReceipt(
        job_id=job_id,
        provider=PROVIDER.address,
        client=CLIENT.address,
        result_hash=result_hash("matmul", output),
        queue_micros=10,
        compute_micros=20,
    )
    signed = receipt.sign(LocalSigner(signer), DOMAINS.faults_domain)
    result = JobResult(
        job_id=job_id,
        workload="matmul",
        output=output.model_dump(mode="json"),
        receipt=receipt,
        signature=signed.signature.to_bytes(),
    )
    delivered = output
    if tamper:
        c = output.c.to_array().copy()
        c[0, 0] += 1.0
        delivered = MatmulOutput(c=Tensor.from_array(c))
    return {
        "id": "job-1",
        "status": "succeeded",
        "workload": "matmul",
        "provider": PROVIDER.address,
        "result": delivered.model_dump(mode="json"),
        "receipt": receipt_json(result, DOMAINS),
    }


def test_a_true_receipt_passes_the_audit() -> None:
    assert check_receipt(_record(), DOMAINS.faults_domain) is None


def test_a_result_that_is_not_the_receipt_s_fails_the_audit() -> None:
    problem = check_receipt(_record(tamper=True), DOMAINS.faults_domain)
    assert problem is not None
    assert "does not hash" in problem


def test_a_receipt_signed_by_another_key_fails_the_audit() -> None:
    problem = check_receipt(_record(signer=STRANGER), DOMAINS.faults_domain)
    assert problem is not None
    assert "signed by" in problem


def test_a_receipt_of_another_deployment_fails_the_audit() -> None:
    other = Domains(chain_id=1, escrow=DOMAINS.escrow, faults=DOMAINS.faults, vouchers=DOMAINS.vouchers)
    assert check_receipt(_record(), other.faults_domain) is not None


def test_a_missing_receipt_fails_the_audit() -> None:
    record = _record()
    record["receipt"] = None
    assert check_receipt(record, DOMAINS.faults_domain) == "job job-1: no receipt"


# --- command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--seed", "-1"], ["--seed", "x"], ["--unknown"]])
def test_bad_arguments_are_refused_before_anything_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "proxima-demo" in capsys.readouterr().err
