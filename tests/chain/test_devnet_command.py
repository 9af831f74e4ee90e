"""``proxima-devnet`` starts anvil, deploys every contract and writes a deployment others can use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Deployment, RpcChain, dev_accounts


@pytest.mark.anvil
def test_devnet_writes_a_usable_deployment_and_stops_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "deployment.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxima.sdk.chain.devnet", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert out.exists(), proc.stdout.read() if proc.stdout else ""
        deployment = Deployment.load(out)
        assert set(deployment.contracts) == {
            "AttestationRegistry",
            "FaultProofs",
            "JobEscrow",
            "PaymentVouchers",
            "ProviderRegistry",
            "RewardPool",
        }
        assert deployment.rpc_url is not None
        with RpcChain(deployment.rpc_url, accounts=dev_accounts(2)) as chain:
            contracts = ProximaContracts.from_deployment(chain, deployment)
            assert contracts.registry.min_provider_stake() == deployment.parameters["min_provider_stake"]
            assert contracts.held_eth() == contracts.liabilities() == 0
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
