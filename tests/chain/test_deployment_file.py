"""The deployment file written by ``proxima-devnet`` and read by every other process."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proxima.sdk.chain import Deployment, DeploymentFileError

REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _valid() -> dict[str, Any]:
    return {
        "chain_id": 31337,
        "rpc_url": "http://127.0.0.1:8545",
        "deployer": DEPLOYER,
        "block_number": 1,
        "contracts": {"ProviderRegistry": REGISTRY},
        "parameters": {"minStake": 10**18, "challengeWindow": 3600},
        "created_at": "2026-01-02T03:04:05Z",
    }


def _write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "deployment.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_deployment_roundTripsThroughFile(tmp_path: Path) -> None:
    deployment = Deployment.model_validate(_valid())
    path = deployment.save(tmp_path / "nested" / "deployment.json")

    loaded = Deployment.load(path)

    assert loaded == deployment
    assert loaded.address("ProviderRegistry") == REGISTRY
    assert loaded.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temp file


def test_deployment_normalizesLowercaseAddresses(tmp_path: Path) -> None:
    raw = _valid() | {"deployer": DEPLOYER.lower()}
    assert Deployment.load(_write(tmp_path, raw)).deployer == DEPLOYER


def test_load_failsIfFileMissing(tmp_path: Path) -> None:
    with pytest.raises(DeploymentFileError, match="not found"):
        Deployment.load(tmp_path / "absent.json")


def test_load_failsIfNotJson(tmp_path: Path) -> None:
    with pytest.raises(DeploymentFileError, match="not valid JSON"):
        Deployment.load(_write(tmp_path, "{chain_id: 1"))


@pytest.mark.parametrize("key", ["chain_id", "deployer", "block_number", "contracts"])
def test_load_failsIfKeyMissing(tmp_path: Path, key: str) -> None:
    raw = _valid()
    del raw[key]
    with pytest.raises(DeploymentFileError, match=rf"{key}: Field required"):
        Deployment.load(_write(tmp_path, raw))


def test_load_failsIfChecksumWrong(tmp_path: Path) -> None:
    wrong = "0x5fbDB2315678afecb367f032d93F642f64180aa3"
    raw = _valid() | {"contracts": {"ProviderRegistry": wrong}}
    with pytest.raises(DeploymentFileError, match=r"contracts\.ProviderRegistry: .*checksum"):
        Deployment.load(_write(tmp_path, raw))


def test_load_failsIfAddressMalformed(tmp_path: Path) -> None:
    raw = _valid() | {"deployer": "0x1234"}
    with pytest.raises(DeploymentFileError, match=r"deployer: .*not a 20-byte hex address"):
        Deployment.load(_write(tmp_path, raw))


def test_load_failsOnUnknownKeys(tmp_path: Path) -> None:
    raw = _valid() | {"chainId": 1}
    with pytest.raises(DeploymentFileError, match="chainId"):
        Deployment.load(_write(tmp_path, raw))


def test_address_failsIfContractUnknown() -> None:
    deployment = Deployment.model_validate(_valid())
    with pytest.raises(KeyError, match="has: ProviderRegistry"):
        deployment.address("JobEscrow")
