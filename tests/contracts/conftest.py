"""Fixtures for contract tests: a deployed system per backend, reverted after each test.

``px`` runs a test once against py-evm in process and once against anvil. Each backend deploys once per
session; every test starts from that snapshot. Accounts (dev mnemonic): 0 admin/deployer, 1-3 providers
(registered with 10 ETH), 4-5 clients, 6-8 verifiers (registered with 5 ETH), 9 outsider.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from _support import ETH, PROVIDER_STAKE, VERIFIER_STAKE
from eth_account.signers.local import LocalAccount

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Chain, InProcessChain, RpcChain, SnapshotId
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import JobTerms, LocalSigner, SignedMessage
from proxima.sdk.peerid import peer_id_from_key

PARAMS = DeployParameters()


@dataclass
class System:
    """A deployed Proxima with named actors."""

    chain: Chain
    c: ProximaContracts
    admin: LocalAccount
    providers: list[LocalAccount]
    clients: list[LocalAccount]
    verifiers: list[LocalAccount]
    outsider: LocalAccount
    params: DeployParameters

    def signer(self, account: LocalAccount) -> LocalSigner:
        return LocalSigner(account)

    def terms(
        self,
        client: LocalAccount | None = None,
        provider: LocalAccount | None = None,
        price: int = ETH,
        slash_amount: int = ETH // 2,
        duration: int = 3_600,
        challenge_window: int = 600,
        job_id: bytes | None = None,
    ) -> JobTerms:
        """Escrow terms valid now, with a random job id unless one is given."""
        now = self.chain.now()
        return JobTerms(
            job_id=job_id or secrets.token_bytes(32),
            client=(client or self.clients[0]).address,
            provider=(provider or self.providers[0]).address,
            price=price,
            slash_amount=slash_amount,
            spec_hash=b"\x5e" * 32,
            accept_by=now + 600,
            delivery_deadline=now + duration,
            challenge_window=challenge_window,
        )

    def accept(self, terms: JobTerms, provider: LocalAccount | None = None) -> SignedMessage[JobTerms]:
        """The provider's signature over ``terms`` (its acceptance)."""
        signer = provider or next(p for p in self.providers if p.address == terms.provider)
        return terms.sign(LocalSigner(signer), self.c.escrow.domain)

    def open_job(self, terms: JobTerms | None = None) -> JobTerms:
        """Open a funded, accepted job; returns its terms."""
        terms = terms or self.terms()
        client = next(a for a in self.clients if a.address == terms.client)
        self.c.escrow.open_job(client, self.accept(terms))
        return terms

    def assert_conserved(self) -> None:
        """The contracts hold exactly what they owe."""
        assert self.c.held_eth() == self.c.liabilities()


def _build(chain: Chain) -> System:
    accounts = chain.accounts
    admin = accounts[0]
    deployment = deploy_all(chain, admin, PARAMS)
    c = ProximaContracts.from_deployment(chain, deployment)
    providers, clients, verifiers = accounts[1:4], accounts[4:6], accounts[6:9]
    for provider in providers:
        c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
    for verifier in verifiers:
        c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
    return System(chain, c, admin, providers, clients, verifiers, accounts[9], PARAMS)


@dataclass
class _Deployed:
    system: System
    snapshot: SnapshotId


@pytest.fixture(scope="session")
def _inprocess_system() -> Iterator[_Deployed]:
    with InProcessChain() as chain:
        system = _build(chain)
        yield _Deployed(system, chain.snapshot())


@pytest.fixture(scope="session")
def _anvil_system(_anvil_session_chain: RpcChain) -> _Deployed:
    system = _build(_anvil_session_chain)
    return _Deployed(system, _anvil_session_chain.snapshot())


def _fresh(request: pytest.FixtureRequest, name: str) -> Iterator[System]:
    deployed: _Deployed = request.getfixturevalue(name)
    try:
        yield deployed.system
    finally:
        # A snapshot is consumed by reverting to it: take the next one at once.
        deployed.system.chain.revert(deployed.snapshot)
        deployed.snapshot = deployed.system.chain.snapshot()


@pytest.fixture(params=["inprocess", pytest.param("anvil", marks=pytest.mark.anvil)])
def px(request: pytest.FixtureRequest) -> Iterator[System]:
    """The deployed system on each backend in turn, reverted after the test."""
    yield from _fresh(request, f"_{request.param}_system")


@pytest.fixture
def px_inprocess(request: pytest.FixtureRequest) -> Iterator[System]:
    """The deployed system on py-evm only (for slow, randomized tests)."""
    yield from _fresh(request, "_inprocess_system")
