"""Fault injection: a node configured to cheat returns wrong matmul products and signs receipts for them.

The injector's decisions are checked directly (deterministic, at the configured rate, clearly wrong), the
configuration section is validated, and a real job server (libp2p on 127.0.0.1, contracts on py-evm) serves
a falsified product whose receipt is validly signed for the falsified result, which is what makes the
node slashable.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

import numpy as np
import pytest
import trio
from _node_support import Deployed

from proxima.node.config import ConfigFileError, FaultsConfig, NodeConfig, load_config, save_config
from proxima.node.faults import PERTURBED_ELEMENTS, FaultInjectionError, FaultInjector
from proxima.node.identity import NodeIdentity
from proxima.node.jobserver import JobLimits, JobServer
from proxima.node.payments import PaymentChecker
from proxima.node.service import ProviderNode
from proxima.node.store import NodeStore
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.eip712 import LocalSigner, Voucher, recover_signer
from proxima.sdk.jobclient import run_job
from proxima.sdk.jobs import Domains, JobRequest, VoucherPayment, sign_request
from proxima.sdk.p2p import open_peer
from proxima.sdk.workloads import (
    MatmulInput,
    MatmulOutput,
    Tensor,
    billing_units,
    matmul_operands,
    parse_input,
    result_hash,
)

UNIT_PRICE = 10**12


def _product(seed: int, n: int = 16) -> tuple[MatmulInput, MatmulOutput]:
    inp = MatmulInput(seed=seed, m=n, k=n, n=n, dtype="float64")
    a, b = matmul_operands(inp)
    return inp, MatmulOutput(c=Tensor.from_array(a @ b))


# --- the injector ----------------------------------------------------------------------------------------


def test_decisions_are_deterministic_per_seed_and_job_and_follow_the_rate() -> None:
    job_ids = [i.to_bytes(32, "big") for i in range(2_000)]
    half = FaultInjector(0.5, seed=7)
    first = [half.falsifies("matmul", j) for j in job_ids]
    assert first == [FaultInjector(0.5, seed=7).falsifies("matmul", j) for j in job_ids]
    assert 0.45 < sum(first) / len(first) < 0.55
    other_seed = [FaultInjector(0.5, seed=8).falsifies("matmul", j) for j in job_ids]
    assert other_seed != first  # another seed cheats on other jobs
    assert all(FaultInjector(1.0, seed=1).falsifies("matmul", j) for j in job_ids)
    assert not any(FaultInjector(0.0, seed=1).falsifies("matmul", j) for j in job_ids)
    assert 0.15 < sum(FaultInjector(0.2, seed=3).falsifies("matmul", j) for j in job_ids) / 2_000 < 0.25
    # Only matmul results are falsified.
    assert not any(FaultInjector(1.0).falsifies("embed", j) for j in job_ids)


def test_a_falsified_product_is_clearly_wrong_in_distinct_columns() -> None:
    _, honest = _product(seed=5)
    injector = FaultInjector(1.0, seed=2)
    job_id = secrets.token_bytes(32)
    wrong = injector.perturb(job_id, honest)
    diff = wrong.c.to_array() - honest.c.to_array()
    rows, cols = np.nonzero(diff)
    assert len(rows) == PERTURBED_ELEMENTS
    assert len(set(cols.tolist())) == PERTURBED_ELEMENTS
    assert np.all(np.abs(diff[rows, cols]) >= 1.0 + np.max(np.abs(honest.c.to_array())))
    assert wrong.c.dtype == honest.c.dtype
    assert wrong.c.shape == honest.c.shape
    assert result_hash("matmul", wrong) != result_hash("matmul", honest)
    # The same job gets the same wrong answer (a retry is served the same falsified product).
    assert injector.perturb(job_id, honest) == wrong
    # A product narrower than PERTURBED_ELEMENTS columns gets one wrong element per column.
    narrow = MatmulOutput(c=Tensor.from_array(np.ones((3, 2), dtype=np.float32)))
    assert int(np.count_nonzero(injector.perturb(job_id, narrow).c.to_array() - 1.0)) == 2


def test_apply_leaves_honest_jobs_and_other_outputs_alone() -> None:
    _, honest = _product(seed=6)
    assert FaultInjector(0.0).apply("matmul", b"\x01" * 32, honest) is honest
    assert FaultInjector(1.0).apply("embed", b"\x01" * 32, honest) is honest
    assert FaultInjector(1.0).apply("matmul", b"\x01" * 32, honest) != honest
    assert not FaultInjector().active


@pytest.mark.parametrize(
    ("rate", "seed"), [(-0.1, 0), (1.01, 0), (float("nan"), 0), (True, 0), (0.5, -1), (0.5, 2**64)]
)
def test_the_injector_refuses_values_out_of_range(rate: float, seed: int) -> None:
    with pytest.raises(FaultInjectionError):
        FaultInjector(rate, seed)


# --- configuration ---------------------------------------------------------------------------------------


def test_faults_are_off_by_default_and_not_written_unless_set(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path)
    assert config.faults == FaultsConfig(wrong_matmul_rate=0.0, seed=0)
    save_config(config, tmp_path / "node.toml")
    assert "faults" not in (tmp_path / "node.toml").read_text()
    dishonest = config.model_copy(update={"faults": FaultsConfig(wrong_matmul_rate=0.25, seed=11)})
    save_config(dishonest, tmp_path / "node.toml")
    assert load_config(tmp_path / "node.toml").faults == FaultsConfig(wrong_matmul_rate=0.25, seed=11)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("wrong_matmul_rate = 1.5", "faults.wrong_matmul_rate"),
        ("wrong_matmul_rate = -0.5", "faults.wrong_matmul_rate"),
        ('wrong_matmul_rate = "half"', "faults.wrong_matmul_rate"),
        ("seed = -3", "faults.seed"),
        ("seed = 1.5", "faults.seed"),
        ("wrong_rate = 0.5", "faults.wrong_rate"),
    ],
)
def test_invalid_fault_settings_are_refused_naming_the_field(
    tmp_path: Path, section: str, field: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'data_dir = "."\n[faults]\n{section}\n')
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    assert f"{path}: {field}:" in str(info.value)


def test_a_dishonest_node_says_so_loudly_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    identity = NodeIdentity.from_private_key(b"\x07" * 32)
    honest = ProviderNode(NodeConfig(data_dir=tmp_path), identity)
    with caplog.at_level(logging.WARNING, logger="proxima.node.service"):
        assert honest._fault_injector() is None
    assert not caplog.records
    config = NodeConfig(data_dir=tmp_path, faults=FaultsConfig(wrong_matmul_rate=0.5, seed=9))
    with caplog.at_level(logging.WARNING, logger="proxima.node.service"):
        injector = ProviderNode(config, identity)._fault_injector()
    assert injector == FaultInjector(0.5, 9)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "FAULT INJECTION ON" in record.getMessage()
    assert record.__dict__["wrong_matmul_rate"] == 0.5
    assert record.__dict__["address"] == identity.address


# --- a real job server that cheats -------------------------------------------------------------------


def test_a_cheating_job_server_signs_its_wrong_product(deployed: Deployed, tmp_path: Path) -> None:
    chain, c = deployed.chain, deployed.c
    provider, client = chain.accounts[1], chain.accounts[4]
    c.vouchers.deposit(client, 10**17)
    domains = Domains.from_deployment(deployed.deployment)
    injector = FaultInjector(0.5, seed=3)
    job_ids = [secrets.token_bytes(32) for _ in range(8)]
    # With rate 0.5 a few of these are falsified and a few not; the test needs both kinds.
    assert 0 < sum(injector.falsifies("matmul", j) for j in job_ids) < len(job_ids)

    async def main() -> None:
        with NodeStore(tmp_path / "node.db") as store:
            payments = PaymentChecker(c, provider.address, store, max_unredeemed_per_client=10**17)
            async with (
                open_peer(bytes(provider.key), pubsub=False) as node,
                open_peer(secrets.token_bytes(32), pubsub=False) as peer,
            ):
                server = JobServer(
                    node,
                    {"matmul": MatmulWorkload()},
                    payments,
                    store,
                    LocalSigner(provider),
                    domains,
                    JobLimits(max_concurrency=2, max_queue=4, job_timeout=20),
                    None,
                    {"matmul": UNIT_PRICE},
                    faults=injector,
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(server.run)
                    await peer.connect(node.addrs()[0])
                    paid = 0
                    for seed, job_id in enumerate(job_ids):
                        inp, honest = _product(seed)
                        payload = inp.model_dump(mode="json", exclude_none=True)
                        paid += billing_units("matmul", parse_input("matmul", payload)) * UNIT_PRICE
                        voucher = Voucher(
                            client=client.address,
                            provider=provider.address,
                            cumulative_amount=paid,
                            cumulative_jobs=seed + 1,
                        )
                        signed = voucher.sign(LocalSigner(client), domains.vouchers_domain)
                        request = JobRequest(
                            job_id=job_id,
                            client=client.address,
                            provider=provider.address,
                            workload="matmul",
                            input=payload,
                            payment=VoucherPayment(voucher=voucher, signature=signed.signature.to_bytes()),
                            issued_at=int(time.time()),
                        )
                        # run_job checks the receipt's signature and that it hashes the returned output.
                        result = await run_job(
                            peer, node.peer_id, sign_request(request, LocalSigner(client)), domains=domains
                        )
                        output = MatmulOutput.model_validate(result.output)
                        correct = np.allclose(output.c.to_array(), honest.c.to_array())
                        assert correct is not injector.falsifies("matmul", job_id), seed
                        receipt = result.signed_receipt()
                        assert receipt.message.result_hash == result_hash("matmul", output)
                        signer = recover_signer(receipt.message, domains.faults_domain, receipt.signature)
                        assert signer == provider.address
                        stored = store.job(job_id)
                        assert stored is not None
                        assert stored.result_hash == receipt.message.result_hash
                    nursery.cancel_scope.cancel()

    trio.run(main)
