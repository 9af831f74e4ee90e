"""``proxima-gateway``: client commands on a real accounts file, and ``serve`` as a process on anvil."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.cli import main
from proxima.marketplace.gateway.services import PayerKeyError, load_payer_account
from proxima.marketplace.gateway.settings import load_settings
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, RpcChain, dev_accounts
from proxima.sdk.deploy import deploy_all

ALICE = "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("PROXIMA_GATEWAY_"):
            monkeypatch.delenv(name)
    path = tmp_path / "gateway.toml"
    path.write_text('data_dir = "state"\ndefault_budget_wei = "0.25 ether"\n')
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_client_prints_a_working_key_once(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "add-client", "--config", str(config), "--address", ALICE.lower())
    assert code == 0
    assert f"client {ALICE}: budget {25 * 10**16} wei" in out
    key = out.split("API key (shown once; keep it secret): ")[1].strip()
    with Accounts(config.parent / "state" / "accounts.sqlite") as accounts:
        assert accounts.client_for_key(key) == ALICE
    code, out, _ = run(capsys, "new-key", "--config", str(config), "--address", ALICE)
    assert code == 0
    second = out.split(": ")[-1].strip()
    assert second != key
    assert second.startswith("pxk_")


def test_set_budget_and_list_clients(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "add-client", "--config", str(config), "--address", ALICE, "--budget-wei", "1000")
    code, out, _ = run(
        capsys, "set-budget", "--config", str(config), "--address", ALICE, "--budget-wei", "2 gwei"
    )
    assert code == 0
    assert "budget 2000000000 wei" in out
    code, out, _ = run(capsys, "list-clients", "--config", str(config), "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "address": ALICE,
            "budget_wei": "2000000000",
            "spent_wei": "0",
            "reserved_wei": "0",
            "available_wei": "2000000000",
            "api_keys": 1,
        }
    ]
    code, out, _ = run(capsys, "list-clients", "--config", str(config))
    assert ALICE in out
    assert "2000000000" in out


def test_errors_are_one_line_with_what_to_do(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "set-budget", "--config", str(config), "--address", ALICE, "--budget-wei", "5")
    assert code == 1
    assert err.startswith("proxima-gateway: error: no client account")
    assert "add-client" in err
    assert err.count("\n") == 1
    run(capsys, "add-client", "--config", str(config), "--address", ALICE)
    code, _, err = run(capsys, "add-client", "--config", str(config), "--address", ALICE)
    assert code == 1
    assert "exists already" in err
    code, _, err = run(capsys, "add-client", "--config", str(config), "--address", "0x1234")
    assert code == 1
    assert "not an address" in err
    code, _, err = run(capsys, "list-clients", "--config", str(config.parent / "missing.toml"))
    assert code == 1
    assert "file not found" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["add-client"],
        ["add-client", "--address", ALICE, "--budget-wei", "1.5"],
        ["add-client", "--address", ALICE, "--budget-wei", "lots"],
        ["serve", "--port", "http"],
        ["launch"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: proxima-gateway" in capsys.readouterr().err


def test_serve_refuses_without_a_payer_or_on_a_busy_port(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "serve", "--config", str(config), "--port", "0")
    assert code == 1
    assert "no payer configured" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "serve", "--config", str(config), "--port", str(port))
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_the_payer_key_comes_from_an_encrypted_keystore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Account.create()
    keystore = tmp_path / "payer.json"
    keystore.write_text(json.dumps(Account.encrypt(account.key, "correct horse", kdf="scrypt", iterations=2)))
    config = tmp_path / "gateway.toml"
    config.write_text('[payer]\nkeystore = "payer.json"\npassphrase_env = "TEST_PAYER_PASSPHRASE"\n')
    settings = load_settings(config)
    monkeypatch.delenv("TEST_PAYER_PASSPHRASE", raising=False)
    with pytest.raises(PayerKeyError, match=r"\$TEST_PAYER_PASSPHRASE is not set"):
        load_payer_account(settings)
    monkeypatch.setenv("TEST_PAYER_PASSPHRASE", "wrong")
    with pytest.raises(PayerKeyError, match="wrong passphrase") as refused:
        load_payer_account(settings)
    assert "wrong" not in str(refused.value).replace("wrong passphrase", "")  # the passphrase is never shown
    monkeypatch.setenv("TEST_PAYER_PASSPHRASE", "correct horse")
    assert load_payer_account(settings).address == account.address
    keystore.write_text("{}")
    with pytest.raises(PayerKeyError, match=r"not an Ethereum keystore|cannot decrypt"):
        load_payer_account(settings)


# --- serve, as a process, against anvil --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(
    tmp_path: Path, anvil_process: AnvilProcess, anvil_chain: RpcChain
) -> Iterator[tuple[str, Path, ProximaContracts]]:
    """``proxima-gateway serve`` in its own process, on a fresh deployment on anvil."""
    deployment = deploy_all(anvil_chain, anvil_chain.accounts[0])
    deployment.save(tmp_path / "deployment.json")
    port = _free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'dev_mode = true\ndata_dir = "state"\nport = {port}\nmax_attempts = 2\ncapacity_wait_seconds = 0.5\n'
        f'[chain]\nurl = "{anvil_process.url}"\ndeployment = "deployment.json"\n'
        "[payer]\ndev_account_index = 8\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxima.marketplace.gateway.cli", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited: {process.stderr.read() if process.stderr else ''}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield url, config, ProximaContracts.from_deployment(anvil_chain, deployment)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.anvil
def test_serve_builds_the_real_services_and_answers(
    served: tuple[str, Path, ProximaContracts], capsys: pytest.CaptureFixture[str]
) -> None:
    url, config, contracts = served
    payer = dev_accounts(9)[8].address
    assert contracts.vouchers.deposit_of(payer).balance == 5 * 10**17  # funded at start: deposit_headroom_wei
    code, out, _ = run(
        capsys, "add-client", "--config", str(config), "--address", ALICE, "--budget-wei", "1 ether"
    )
    assert code == 0
    key = out.split("keep it secret): ")[1].strip()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/healthz").json()["status"] == "degraded"  # no provider offers on this network
        assert http.get("/v1/account", headers=headers).json()["budget_wei"] == str(10**18)
        assert http.get("/v1/offers", headers=headers).json() == {"data": []}
        job = {"workload": "matmul", "input": {"seed": 1, "m": 8, "k": 8, "n": 8, "dtype": "float32"}}
        refused = http.post("/v1/jobs", json=job, headers=headers)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "no_provider"
        # With a price cap the job is accepted, and the real dispatcher fails it: nobody offers matmul.
        accepted = http.post("/v1/jobs", json={**job, "max_price_wei": "1000000000000"}, headers=headers)
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        deadline = time.monotonic() + 30
        while (record := http.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"] not in ("failed",):
            assert time.monotonic() < deadline, record
            time.sleep(0.1)
        assert record["error"]["code"] == "no_candidate"
        account = http.get("/v1/account", headers=headers).json()
        assert (account["reserved_wei"], account["spent_wei"]) == ("0", "0")  # the reservation was released
        assert "proxima_gateway_jobs_total" in http.get("/metrics").text
