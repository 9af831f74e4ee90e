"""Fixtures of the verifier tests: anvil with the contracts (one per module, reverted after each test), two
staked verifiers (the verdict quorum is 2), staked providers, and verifier services over real SQLite files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from _dispatch_support import Net

from proxima.marketplace.verifier.service import VerifierService
from proxima.marketplace.verifier.settings import DutySettings, VerifierSettings
from proxima.marketplace.verifier.store import VerifierStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, SnapshotId
from proxima.sdk.deploy import deploy_all
from proxima.sdk.jobs import Domains
from proxima.sdk.peerid import peer_id_from_key

ETH = 10**18
PROVIDER_STAKE = 10 * ETH
VERIFIER_STAKE = 3 * ETH


@dataclass
class VerifierNet:
    """Anvil with the contracts: ``net`` as the dispatcher tests have it (providers 1-6 staked, payer 8,
    client 9) plus verifiers 10 and 11 staked as verifiers."""

    net: Net
    verifiers: list


@pytest.fixture(scope="module")
def _module_vnet() -> Iterator[tuple[VerifierNet, list[SnapshotId]]]:
    with AnvilProcess(accounts=12) as anvil, anvil.connect() as chain:
        deployment = deploy_all(chain, chain.accounts[0])
        c = ProximaContracts.from_deployment(chain, deployment)
        providers = chain.accounts[1:7]
        for provider in providers:
            c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
        verifiers = chain.accounts[10:12]
        for verifier in verifiers:
            c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
        net = Net(
            chain,
            c,
            deployment,
            Domains.from_deployment(deployment),
            providers,
            chain.accounts[8],
            chain.accounts[9],
        )
        yield VerifierNet(net, verifiers), [chain.snapshot()]


@pytest.fixture
def vnet(_module_vnet: tuple[VerifierNet, list[SnapshotId]]) -> Iterator[VerifierNet]:
    vnet, snapshot = _module_vnet
    try:
        yield vnet
    finally:
        vnet.net.chain.revert(snapshot[0])
        snapshot[0] = vnet.net.chain.snapshot()


def make_service(vnet: VerifierNet, index: int, data_dir: Path, **settings: object) -> VerifierService:
    """A verifier service for verifier ``index`` (0 or 1) with its store under ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    duties = settings.pop("duties", DutySettings(m=64, k=64, n=64, job_timeout_seconds=20))
    config = VerifierSettings(data_dir=data_dir, dev_mode=True, duties=duties, **settings)  # type: ignore[arg-type]
    return VerifierService(
        settings=config,
        account=vnet.verifiers[index],
        contracts=vnet.net.c,
        store=VerifierStore(config.db_path),
    )


@pytest.fixture
def verifier(vnet: VerifierNet, tmp_path: Path) -> Iterator[VerifierService]:
    service = make_service(vnet, 0, tmp_path / "verifier-a")
    try:
        yield service
    finally:
        service.store.close()


@pytest.fixture
def peer(vnet: VerifierNet, tmp_path: Path) -> Iterator[VerifierService]:
    service = make_service(vnet, 1, tmp_path / "verifier-b")
    try:
        yield service
    finally:
        service.store.close()
