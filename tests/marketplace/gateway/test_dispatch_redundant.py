"""Redundant embed runs on real provider nodes running all-MiniLM-L6-v2: agreeing providers succeed and are
each paid and charged; a provider whose embeddings disagree is found out by verifier verdicts (evidence on
chain, slashed) or, without verifiers, by a further provider's majority, and the client is never charged for
its result."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _dispatch_support import (
    UNIT_PRICE,
    Gateway,
    LyingEmbed,
    Net,
    ProviderWorld,
    SharedEmbed,
    SigningVerifier,
    StaticMarket,
    fresh,
    register_verifiers,
)

from proxima.marketplace.chainstate import ChainState
from proxima.marketplace.gateway.dispatch import DispatchSettings
from proxima.marketplace.gateway.jobstore import JobRecord, JobStatus
from proxima.marketplace.gateway.verify import VerificationPolicy
from proxima.node.workloads.embed import EmbedWorkload
from proxima.sdk.workloads import EMBED_MODEL, EmbedOutput, billing_units, parse_input

pytestmark = pytest.mark.anvil

TEXTS = ["a provider near the user answers first", "verification catches the cheater"]


@pytest.fixture(scope="module")
def model() -> EmbedWorkload:
    workload = EmbedWorkload("cpu")
    workload.load()
    return workload


def embed_input() -> dict[str, Any]:
    return {"model": EMBED_MODEL, "texts": TEXTS}


def price() -> int:
    return billing_units("embed", parse_input("embed", embed_input())) * UNIT_PRICE


def gateway(net: Net, world: ProviderWorld, tmp_path: Path, **kwargs: object) -> Gateway:
    market = StaticMarket(world, ChainState(net.c))
    market.refresh()
    return Gateway(net, market, tmp_path, DispatchSettings(attempt_timeout_s=20.0), **kwargs)  # type: ignore[arg-type]


def run_job(gw: Gateway, spec: dict[str, Any] | None = None, reserve: int | None = None) -> JobRecord:
    async def main() -> JobRecord:
        async with gw.running() as dispatcher:
            job = await gw.finish(gw.submit(embed_input(), spec=spec, workload="embed", reserve=reserve), 60)
            assert await dispatcher.wait_background(30)
            return fresh(gw, job)

    return asyncio.run(main())


def assert_model_output(job: JobRecord, model: EmbedWorkload) -> None:
    got = EmbedOutput.model_validate(job.result).embeddings.to_array()
    want = model.execute(parse_input("embed", embed_input())).embeddings.to_array()  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_job_with_redundancy_two_runs_on_two_providers_that_agree(
    net: Net, world: ProviderWorld, tmp_path: Path, model: EmbedWorkload
) -> None:
    a = world.add(
        net.providers[0],
        region="eu-west",
        country="DE",
        coordinate_ms=(5, 0),
        extra={"embed": SharedEmbed(model)},
    )
    b = world.add(
        net.providers[1],
        region="eu-west",
        country="FR",
        coordinate_ms=(10, 0),
        extra={"embed": SharedEmbed(model)},
    )
    gw = gateway(net, world, tmp_path)
    job = run_job(gw, {"redundancy": 2}, reserve=2 * price())
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert sorted(a.provider for a in job.attempts) == sorted([a.address, b.address])
    assert {a.outcome for a in job.attempts} == {"succeeded"}
    assert job.verification is not None
    assert job.verification["method"] == "redundant"
    assert job.verification["passed"] is True
    assert "2 distinct providers" in job.verification["detail"]
    assert_model_output(job, model)
    # Each copy was paid and is charged: twice the price, within what was reserved for two copies.
    assert job.charged_wei == 2 * price() == gw.spent()
    assert gw.reserved() == 0
    assert gw.payer.position(a.address).accepted_jobs == 1
    assert gw.payer.position(b.address).accepted_jobs == 1
    gw.close()


def test_a_disagreeing_provider_is_judged_by_verifiers_rejected_and_slashed(
    net: Net, world: ProviderWorld, tmp_path: Path, model: EmbedWorkload
) -> None:
    liar_work = LyingEmbed(model)
    liar = world.add(
        net.providers[0], region="eu-west", country="DE", coordinate_ms=(5, 0), extra={"embed": liar_work}
    )
    honest = world.add(
        net.providers[1],
        region="eu-west",
        country="FR",
        coordinate_ms=(10, 0),
        extra={"embed": SharedEmbed(model)},
    )
    third = world.add(
        net.providers[2],
        region="eu-west",
        country="NL",
        coordinate_ms=(40, 0),
        extra={"embed": SharedEmbed(model)},
    )
    verifier_accounts = [net.chain.accounts[7], net.chain.accounts[0]]
    register_verifiers(net, verifier_accounts)
    verifiers = [SigningVerifier(net, account, embed=model) for account in verifier_accounts]
    stakes = {p.address: net.c.registry.account_of(p.address).stake for p in (liar, honest, third)}
    # The gateway's policy runs every embed job twice; the job itself asked for one copy.
    gw = gateway(net, world, tmp_path, verifiers=verifiers, policy=VerificationPolicy(embed_redundancy=2))
    job = run_job(gw, reserve=price())
    assert job.status is JobStatus.SUCCEEDED, job.error
    outcomes = {a.provider: (a.outcome, a.error_code) for a in job.attempts}
    assert outcomes == {
        liar.address: ("rejected", "verification_failed"),
        honest.address: ("succeeded", None),
        third.address: ("succeeded", None),
    }
    assert liar_work.calls == 1
    assert job.provider in (honest.address, third.address)
    assert_model_output(job, model)
    rejected = next(a for a in job.attempts if a.provider == liar.address)
    assert rejected.evidence is not None
    assert rejected.evidence["outcome"] == "proven", rejected.evidence
    slashed = int(rejected.evidence["slashed_wei"])
    assert net.c.registry.account_of(liar.address).stake == stakes[liar.address] - slashed
    for p in (honest, third):
        assert net.c.registry.account_of(p.address).stake == stakes[p.address]
    # The reservation grew to two copies; the client pays the two agreeing copies, not the rejected one.
    assert job.charged_wei == 2 * price() == gw.spent()
    assert gw.reserved() == 0
    gw.close()


def test_without_verifiers_a_third_provider_decides_by_majority(
    net: Net, world: ProviderWorld, tmp_path: Path, model: EmbedWorkload
) -> None:
    liar = world.add(
        net.providers[0],
        region="eu-west",
        country="DE",
        coordinate_ms=(5, 0),
        extra={"embed": LyingEmbed(model)},
    )
    honest = world.add(
        net.providers[1],
        region="eu-west",
        country="FR",
        coordinate_ms=(10, 0),
        extra={"embed": SharedEmbed(model)},
    )
    third = world.add(
        net.providers[2],
        region="eu-west",
        country="NL",
        coordinate_ms=(40, 0),
        extra={"embed": SharedEmbed(model)},
    )
    gw = gateway(net, world, tmp_path)
    job = run_job(gw, {"redundancy": 2}, reserve=2 * price())
    assert job.status is JobStatus.SUCCEEDED, job.error
    outcomes = {a.provider: a.outcome for a in job.attempts}
    assert outcomes == {liar.address: "rejected", honest.address: "succeeded", third.address: "succeeded"}
    rejected = next(a for a in job.attempts if a.provider == liar.address)
    assert rejected.verification is not None
    assert "disagrees with 2 of 3" in rejected.verification["detail"]
    assert rejected.evidence is not None
    assert rejected.evidence["outcome"] == "skipped"
    assert_model_output(job, model)
    assert job.charged_wei == 2 * price() == gw.spent()
    gw.close()
