"""The dispatcher with real ``proxima-verify`` services (two staked verifiers, each its own app under uvicorn
on 127.0.0.1, reached through VerifierClient): a dishonest node's wrong product is rejected, the verifiers
re-check it and sign, the proof goes on chain; a canary they commit on chain is answered correctly by the
honest provider. And the gateway's services build one VerifierClient per ``verification.verifier_urls``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from _dispatch_support import (
    Gateway,
    Net,
    ProviderWorld,
    StaticMarket,
    fresh,
    price_of,
    register_verifiers,
    seeded,
)
from _gateway_support import serve
from eth_account.signers.local import LocalAccount

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.dispatch import Dispatcher, DispatchSettings
from proxima.marketplace.gateway.jobstore import JobRecord, JobStatus
from proxima.marketplace.gateway.services import GatewayServices
from proxima.marketplace.gateway.settings import load_settings
from proxima.marketplace.gateway.verify import EvidenceFiler, VerificationPolicy, VerifierPool
from proxima.marketplace.verifier.app import create_app
from proxima.marketplace.verifier.client import VerifierClient
from proxima.marketplace.verifier.protocol import CanaryRequest, Evidence
from proxima.marketplace.verifier.service import VerifierService
from proxima.marketplace.verifier.settings import DutySettings, VerifierSettings
from proxima.marketplace.verifier.store import VerifierStore
from proxima.node.faults import FaultInjector

pytestmark = pytest.mark.anvil


@contextlib.contextmanager
def verifier_app(net: Net, account: LocalAccount, data_dir: Path) -> Iterator[str]:
    data_dir.mkdir(parents=True)
    settings = VerifierSettings(
        data_dir=data_dir, dev_mode=True, embed_recompute=False, duties=DutySettings(enabled=False)
    )
    store = VerifierStore(settings.db_path)
    service = VerifierService(settings=settings, account=account, contracts=net.c, store=store)
    try:
        with serve(create_app(service)) as url:
            yield url
    finally:
        store.close()


def test_real_verifiers_sign_the_evidence_and_issue_a_canary(
    net: Net, world: ProviderWorld, tmp_path: Path
) -> None:
    cheater = world.add(
        net.providers[0],
        region="eu-west",
        country="DE",
        coordinate_ms=(5, 0),
        faults=FaultInjector(wrong_matmul_rate=1.0, seed=3),
    )
    honest = world.add(net.providers[1], region="eu-west", country="FR", coordinate_ms=(25, 0))
    accounts = [net.chain.accounts[7], net.chain.accounts[0]]
    register_verifiers(net, accounts)
    stakes = {p: net.c.registry.account_of(p).stake for p in (cheater.address, honest.address)}
    inp = seeded(41, 32)
    with (
        verifier_app(net, accounts[0], tmp_path / "verifier-a") as url_a,
        verifier_app(net, accounts[1], tmp_path / "verifier-b") as url_b,
    ):
        market = StaticMarket(world, ChainState(net.c))
        market.refresh()
        policy = VerificationPolicy(canary_rate=1.0)
        (tmp_path / "gateway").mkdir()
        gw = Gateway(
            net, market, tmp_path / "gateway", DispatchSettings(attempt_timeout_s=10.0), policy=policy
        )
        pool = VerifierPool(
            [VerifierClient(url, timeout=60) for url in (url_a, url_b)],
            timeout=60,
            canary_request_model=CanaryRequest,
        )
        gw.dispatcher.verifiers = pool
        gw.dispatcher.evidence = EvidenceFiler(
            net.c, net.payer, pool, Evidence, gw.payer, net.domains.faults_domain, net.domains.escrow_domain
        )

        async def main() -> JobRecord:
            async with gw.running() as dispatcher:
                job = await gw.finish(gw.submit(inp))
                assert await dispatcher.wait_background(60)
            await pool.aclose()
            return fresh(gw, job)

        job = asyncio.run(main())

    assert job.status is JobStatus.SUCCEEDED, job.error
    assert [(a.provider, a.outcome) for a in job.attempts] == [
        (cheater.address, "rejected"),
        (honest.address, "succeeded"),
    ]
    evidence = job.attempts[0].evidence
    assert evidence is not None
    assert evidence["outcome"] == "proven", evidence
    assert evidence["verdicts"] == 2
    slashed = int(evidence["slashed_wei"])
    assert net.c.registry.account_of(cheater.address).stake == stakes[cheater.address] - slashed
    assert net.c.registry.account_of(honest.address).stake == stakes[honest.address]
    assert gw.spent() == job.charged_wei == price_of(inp)
    # The honest provider's canary: committed on chain by a verifier, answered correctly.
    rows = gw.store.read("SELECT id FROM jobs WHERE kind = 'canary'")
    [canary] = [gw.store.get(r["id"]) for r in rows]
    assert canary is not None
    assert canary.status is JobStatus.SUCCEEDED, canary.error
    assert [a.provider for a in canary.attempts] == [honest.address]
    assert canary.verification is not None
    assert canary.verification["method"] == "canary"
    assert canary.charged_wei == 0
    gw.close()


def test_the_gateway_services_build_a_verifier_client_per_url(net: Net, tmp_path: Path) -> None:
    deployment = net.deployment.save(tmp_path / "deployment.json")
    settings = load_settings(
        dev_mode=True,
        data_dir=tmp_path / "data",
        chain={"url": net.chain.url, "deployment": deployment},
        payer={"dev_account_index": 8},
        verification={
            "verifier_urls": ["http://127.0.0.1:1", "http://127.0.0.1:2/"],
            "freivalds_rounds": 20,
            "embed_redundancy": 2,
            "canary_rate": 0.1,
            "evidence": False,
        },
    )
    services = GatewayServices.build(settings)
    try:
        dispatcher = services.dispatcher
        assert isinstance(dispatcher, Dispatcher)
        assert dispatcher.verifiers is not None
        assert [c.base_url for c in dispatcher.verifiers.verifiers] == [  # type: ignore[attr-defined]
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        ]
        policy = dispatcher.policy
        assert (policy.freivalds_rounds, policy.embed_redundancy, policy.canary_rate) == (20, 2, 0.1)
        assert dispatcher.evidence is not None
        assert dispatcher.evidence.enabled is False
        assert dispatcher.metrics is services.metrics
    finally:
        for close in services.closers:
            close()
