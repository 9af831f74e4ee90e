"""Seeded runs of a smaller market: every cheater is caught within a bounded number of jobs, no honest
provider is ever slashed, the funds are conserved and no client pays for a rejected or undelivered result.

Each run is a world of its own (anvil, three ``proxima-node`` processes behind RIPE Atlas delaying proxies,
a staked verifier, ``proxima-gateway serve``, the SDK client): the nearest node (FR) cheats, with a rate and a
``[faults] seed`` that depend on the run's seed; the two others (GB, US) are honest. The client sends matmul
jobs in batches of three until the cheater is caught, then a few more.

The bound, and why: the cheater is the nearest node, so while its results pass it is the first choice of
every batch (two slots, the third job queues there or goes to the next node), and at least
``MAX_CHEATER_JOBS * 2 / 3 = 20`` of the first ``MAX_CHEATER_JOBS = 30`` jobs are placed on it. Each is
falsified independently with probability ``rate >= 0.5`` (keccak of the seed and the gateway's random job
id), and the gateway's 16-round Freivalds check misses a falsified product (one wrong element in each of
four columns) with probability ``2**-64``. So a run fails to catch the cheater within the bound with
probability at most ``0.5**20``, about one in a million.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from proxima.marketplace.demo import DemoReport, DemoSettings, Site, run_demo
from proxima.marketplace.demo.scenario import MAX_CHEATER_JOBS

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

SEEDS = (11, 23, 37, 58)


def _sites(seed: int) -> tuple[Site, ...]:
    rate = 0.5 + 0.1 * (seed % 4)  # 0.5 .. 0.8, from the seed
    return (
        Site("paris", "FR", "eu-west", ("matmul",), wrong_matmul_rate=rate),
        Site("london", "GB", "eu-west", ("matmul",)),
        Site("virginia", "US", "us-east", ("matmul",)),
    )


def _run(seed: int, workdir: Path) -> tuple[DemoReport, str]:
    out = io.StringIO()
    settings = DemoSettings(
        sites=_sites(seed),
        workdir=workdir,
        fault_seed=seed,
        kill=False,
        stream_jobs=0,
        after_jobs=3,
        embed_share=0.0,
    )
    report = run_demo(settings, Console(file=out, width=160))
    return report, out.getvalue()


@pytest.mark.parametrize("seed", SEEDS)
def test_the_cheater_is_caught_and_nobody_honest_pays(seed: int, tmp_path: Path) -> None:
    report, output = _run(seed, tmp_path)
    failed = [f"{o.name}: {o.detail}" for o in report.outcomes if not o.ok]
    assert not failed, f"{failed}\n{output}"
    cheater = report.cheater
    assert cheater is not None

    # Caught within the bound: a wrong result rejected (or a wrong canary proven) within MAX_CHEATER_JOBS.
    canary = any(e["event"] == "CanaryFaultProven" for e in report.evidence)
    assert canary or (report.caught_after is not None and report.caught_after <= MAX_CHEATER_JOBS), output
    assert report.evidence
    assert report.cheater_stake_after < report.min_provider_stake <= report.cheater_stake_before

    # No honest provider slashed: every slash on chain is the cheater's.
    audit = report.audit
    assert audit is not None
    assert {s.account for s in audit.ledger.slashes} == {cheater}
    honest = [a for a in audit.ledger.accounts if a.address != cheater and a.role.name == "PROVIDER"]
    assert len(honest) == 2
    assert all(a.total_slashed == 0 for a in honest)

    # Funds conserved, every receipt and offer signature valid.
    assert audit.conserved
    assert audit.signatures_valid, audit.problems

    # No client charged for a rejected or undelivered result: the gateway's charges are the prices of the
    # verified, delivered jobs, and a job's rejected attempts cost nothing.
    delivered = [job for job in report.jobs if job.status == "succeeded" and job.correct]
    assert len(delivered) == len(report.jobs)
    assert report.spent_wei == report.charged_wei == sum(int(job.record["price_wei"]) for job in delivered)
    for job in report.jobs:
        if cheater in job.rejected_on():
            assert job.provider != cheater
            assert int(job.record["charged_wei"]) == int(job.record["price_wei"])
