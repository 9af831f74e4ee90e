"""The verifier's duty rounds against real provider nodes (JobServer on libp2p, on anvil).

An honest node passes its canary and gets a verifier report with its measured throughput; a dishonest
node (the DEMO fault injector's perturbation of every product) fails, and the verifier proves the canary
fault on chain with its own verdict and a peer verifier's (quorum 2), so the node is slashed. Jobs are
voucher-paid from the verifier's deposit."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from _dispatch_support import ProviderWorld
from conftest import VerifierNet, make_service
from pydantic import BaseModel

from proxima.marketplace.network import MarketNetwork
from proxima.marketplace.verifier.app import create_app
from proxima.marketplace.verifier.client import VerifierClient
from proxima.marketplace.verifier.service import ChallengeOutcome, VerifierService
from proxima.node.faults import FaultInjector
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.jobs import JobRequest, JobResult
from proxima.sdk.offers import Offer, SignedOffer
from proxima.sdk.workloads import MatmulOutput

pytestmark = pytest.mark.anvil


class CheatingMatmul(MatmulWorkload):
    """The node's matmul, every product falsified as ``[faults] wrong_matmul_rate = 1`` does."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.injector = FaultInjector(1.0, seed=9)

    def execute(self, inp: BaseModel) -> BaseModel:
        honest = super().execute(inp)
        assert isinstance(honest, MatmulOutput)
        return self.injector.perturb(secrets.token_bytes(32), honest)


class WorldBook:
    """The duties' job runner: the running providers' signed offers, jobs through a real MarketNetwork."""

    def __init__(self, world: ProviderWorld, network: MarketNetwork) -> None:
        self.world = world
        self.network = network

    def offers(self, now: float | None = None) -> list[SignedOffer]:
        return [p.signed_offer() for p in self.world.providers.values() if p.addrs]

    async def run_job(self, offer: Offer, request: JobRequest, *, timeout: float) -> JobResult:
        return await self.network.run_job(offer, request, timeout=timeout)


def _by_provider(outcomes: tuple[ChallengeOutcome, ...]) -> dict[str, ChallengeOutcome]:
    return {o.provider: o for o in outcomes}


def test_dutyRound_reportsHonestThroughput_andSlashesACheater(
    vnet: VerifierNet, verifier: VerifierService, peer: VerifierService, tmp_path: Path
) -> None:
    net = vnet.net
    honest_account, cheat_account = net.providers[0], net.providers[1]
    network = MarketNetwork(
        secrets.token_bytes(32), is_staked=net.c.registry.is_active_provider, domains=net.domains
    )
    stake_before = net.c.registry.account_of(cheat_account.address).stake
    with ProviderWorld(net, tmp_path) as world:
        world.add(honest_account, region="eu-west", country="DE", coordinate_ms=(10, 0))
        world.add(
            cheat_account, region="eu-west", country="FR", coordinate_ms=(12, 0), workload=CheatingMatmul()
        )
        verifier.network = WorldBook(world, network)
        peer_client = VerifierClient("http://peer.test", transport=httpx.ASGITransport(app=create_app(peer)))
        verifier.peers = [peer_client]
        network.start()
        try:

            async def two_rounds() -> list[Any]:
                rounds = [await verifier.duty_round(), await verifier.duty_round()]
                await peer_client.aclose()
                return rounds

            first, second = asyncio.run(two_rounds())
        finally:
            network.stop()

    for duty_round in (first, second):
        outcomes = _by_provider(duty_round.challenges)
        assert set(outcomes) == {honest_account.address, cheat_account.address}
        honest, cheat = outcomes[honest_account.address], outcomes[cheat_account.address]
        assert honest.outcome == "passed", honest.detail
        assert honest.measured_flops > 0
        assert cheat.outcome == "failed", cheat.detail
        assert cheat.slashed_wei is not None
        assert cheat.slashed_wei > 0
        assert net.c.faults.is_fault_proven(cheat_account.address, cheat.job_id)
        assert not net.c.faults.is_fault_proven(honest_account.address, honest.job_id)
        assert duty_round.reports_submitted == 2

    slashed = sum(_by_provider(r.challenges)[cheat_account.address].slashed_wei or 0 for r in (first, second))
    assert net.c.registry.account_of(cheat_account.address).stake == stake_before - slashed
    honest_report = net.c.attestations.latest_report(honest_account.address)
    assert (honest_report.passes, honest_report.failures) == (2, 0)
    assert (
        honest_report.measured_flops == _by_provider(second.challenges)[honest_account.address].measured_flops
    )
    cheat_report = net.c.attestations.latest_report(cheat_account.address)
    assert (cheat_report.passes, cheat_report.failures) == (0, 2)
    # The second round's vouchers built on the first's: each node accepted two jobs from one voucher chain.
    assert verifier.store.voucher_base(honest_account.address)[0] == 2
    deposit = net.c.vouchers.deposit_of(verifier.address).balance
    assert deposit >= verifier.settings.duties.deposit_headroom_wei
    assert verifier.store.pending_reports(10) == []


def test_dutyRound_withoutAPeer_keepsTheEvidenceUnproven(vnet: VerifierNet, tmp_path: Path) -> None:
    net = vnet.net
    service = make_service(vnet, 0, tmp_path / "lonely")
    network = MarketNetwork(
        secrets.token_bytes(32), is_staked=net.c.registry.is_active_provider, domains=net.domains
    )
    try:
        with ProviderWorld(net, tmp_path) as world:
            world.add(
                net.providers[2], region="eu", country="DE", coordinate_ms=(1, 0), workload=CheatingMatmul()
            )
            service.network = WorldBook(world, network)
            network.start()
            try:
                result = asyncio.run(service.duty_round())
            finally:
                network.stop()
    finally:
        service.store.close()
    [outcome] = result.challenges
    assert outcome.outcome == "failed"
    assert outcome.slashed_wei is None
    assert "1 verdict(s) of the 2" in outcome.detail
    assert not net.c.faults.is_fault_proven(net.providers[2].address, outcome.job_id)
    assert net.c.attestations.latest_report(net.providers[2].address).failures == 1
