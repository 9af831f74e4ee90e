"""The README's first command: the whole marketplace on this machine, and proof that it works together.

``scripts/demo`` (which bootstraps the environment) or ``python -m proxima.marketplace.demo`` starts anvil,
deploys the contracts (verdict quorum 1; one fault slash takes a provider below the minimum stake), launches
five ``proxima-node`` processes in five countries, each behind a delaying proxy with the RIPE Atlas RTT from
the client's country (one node dishonest: it answers half its matmul jobs wrongly), a staked verifier, the
gateway, and a client that submits a mixed stream of matmul and embed jobs. It prints where jobs went and
why, kills an honest node mid-run, catches and slashes the cheater, redeems vouchers, audits the ledger, and
ends with a PASS/FAIL table of every outcome; the exit status is 1 if any failed.

Modules: :mod:`~proxima.marketplace.demo.sites` (countries and RTTs), :mod:`~proxima.marketplace.demo.world`
(the processes), :mod:`~proxima.marketplace.demo.scenario` (the phases and checks),
:mod:`~proxima.marketplace.demo.audit` (ledger and signature audit), :mod:`~proxima.marketplace.demo.cli`.
"""

from __future__ import annotations

from proxima.marketplace.demo.audit import AuditReport, audit
from proxima.marketplace.demo.cli import main
from proxima.marketplace.demo.scenario import (
    OUTCOMES,
    DemoFailedError,
    DemoReport,
    DemoSettings,
    JobLine,
    Outcome,
    run_demo,
)
from proxima.marketplace.demo.sites import CLIENT_COUNTRY, SITES, Site, load_rtts
from proxima.marketplace.demo.world import DemoSetupError, World, WorldSettings, open_world

__all__ = [
    "CLIENT_COUNTRY",
    "OUTCOMES",
    "SITES",
    "AuditReport",
    "DemoFailedError",
    "DemoReport",
    "DemoSettings",
    "DemoSetupError",
    "JobLine",
    "Outcome",
    "Site",
    "World",
    "WorldSettings",
    "audit",
    "load_rtts",
    "main",
    "open_world",
    "run_demo",
]
