"""``proxima-verify``: init writes a 0600 keystore, register stakes it on anvil, serve answers over real HTTP,
and errors are one line saying what to do."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxima.marketplace.verifier.cli import main
from proxima.marketplace.verifier.client import VerifierClient
from proxima.marketplace.verifier.protocol import CanaryRequest
from proxima.marketplace.verifier.settings import SettingsError, load_settings
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, RpcChain
from proxima.sdk.deploy import deploy_all

ETH = 10**18
PASSPHRASE = "correct horse battery staple"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    monkeypatch.setenv("PROXIMA_VERIFY_PASSPHRASE", PASSPHRASE)
    keystore = tmp_path / "keys" / "verifier.json"
    code, out, _ = _run(capsys, "init", "--keystore", str(keystore), "--scrypt-n", str(2**10))
    assert code == 0
    address = out.split("verifier key created: ")[1].split()[0]
    return keystore, address


def test_init_writesAPrivateKeystore_andRefusesToReplaceIt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore, address = _init(tmp_path, capsys, monkeypatch)
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    before = keystore.read_bytes()
    code, _, err = _run(capsys, "init", "--keystore", str(keystore), "--scrypt-n", str(2**10))
    assert code == 1
    assert "already exists" in err
    assert keystore.read_bytes() == before
    monkeypatch.setenv("PROXIMA_VERIFY_PASSPHRASE", "")
    code, _, err = _run(capsys, "init", "--keystore", str(tmp_path / "other.json"), "--scrypt-n", str(2**10))
    assert (code, "set but empty" in err) == (1, True)
    assert address.startswith("0x")


def test_settings_errors_nameTheField(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "verify.toml"
    config.write_text('port = "eighty"\n[duties]\ninterval_secs = 3\n')
    with pytest.raises(SettingsError) as err:
        load_settings(config)
    text = str(err.value)
    assert "port:" in text
    assert "PROXIMA_VERIFY_PORT" in text
    assert "duties.interval_secs: unknown field" in text
    config.write_text("[key]\ndev_account_index = 1\n")
    with pytest.raises(SettingsError, match="dev_mode = true"):
        load_settings(config)
    code, _, stderr = _run(capsys, "register", "--config", str(config))
    assert code == 1
    assert stderr.startswith("proxima-verify: error:")
    assert stderr.count("\n") == 1
    assert _run(capsys, "serve", "--config", str(tmp_path / "missing.toml"))[0] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anvil
def test_register_then_serve_answersOverHttp(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    anvil_process: AnvilProcess,
    anvil_chain: RpcChain,
) -> None:
    deployment = deploy_all(anvil_chain, anvil_chain.accounts[0])
    deployment.save(tmp_path / "deployment.json")
    contracts = ProximaContracts.from_deployment(anvil_chain, deployment)
    keystore, address = _init(tmp_path, capsys, monkeypatch)
    port = _free_port()
    config = tmp_path / "verify.toml"
    config.write_text(
        f'data_dir = "state"\nport = {port}\n[chain]\nurl = "{anvil_process.url}"\n'
        f'deployment = "deployment.json"\n[key]\nkeystore = "{keystore}"\n[duties]\ninterval_seconds = 3600\n'
    )
    # Unfunded, the registration fails with one line; funded, it stakes the minimum.
    code, _, err = _run(capsys, "register", "--config", str(config))
    assert code == 1
    assert "\n" not in err.rstrip("\n")
    anvil_chain.send_transaction(anvil_chain.accounts[0], {"to": address, "value": 10 * ETH})
    code, out, _ = _run(capsys, "register", "--config", str(config))
    assert code == 0, out
    assert contracts.registry.is_active_verifier(address)
    assert contracts.registry.account_of(address).stake == contracts.registry.min_verifier_stake()
    assert "already an active verifier" in _run(capsys, "register", "--config", str(config))[1]

    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXIMA_VERIFY_")}
    wrong = subprocess.run(
        [sys.executable, "-m", "proxima.marketplace.verifier.cli", "serve", "--config", str(config)],
        env={**env, "PROXIMA_VERIFY_PASSPHRASE": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1
    assert "wrong passphrase" in wrong.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "proxima.marketplace.verifier.cli", "serve", "--config", str(config)],
        env={**env, "PROXIMA_VERIFY_PASSPHRASE": PASSPHRASE},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not answer within 60 s"
            time.sleep(0.2)

        async def use() -> None:
            async with VerifierClient(url) as client:
                info = await client.info()
                assert (info.address, info.active) == (address, True)
                canary = await client.canary(CanaryRequest(m=16, k=16, n=16))
                assert contracts.faults.canary_of(canary.commitment)[0] == address

        asyncio.run(use())
        assert (tmp_path / "state" / "verifier.sqlite").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode in (0, 130)  # 130: stopped by Ctrl-C, as documented
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")
