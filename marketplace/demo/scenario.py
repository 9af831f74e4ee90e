"""The demo's scenario: a client's mixed stream of jobs through the gateway, every promised outcome checked.

Phases, in order (each prints what happens and records :class:`Outcome` s):

1. **Network**: the RTT table (RIPE Atlas figure, emulated, measured by the gateway through the proxy).
2. **Placement**: a lone matmul job and a lone embed job go to the nearest node serving each.
3. **Cheater**: a stream of matmul jobs (and a few embed jobs) until the dishonest node's wrong product is
   rejected, the job rerun elsewhere, the evidence put on chain and the node slashed below the minimum stake
   (bounded: at most :data:`MAX_CHEATER_JOBS` jobs).
4. **Node killed**: heavier embed jobs; the node running them is SIGKILLed mid-job; they finish elsewhere.
5. **After the slash**: more mixed jobs, none of which may touch the cheater.
6. **Vouchers**: every live honest node that delivered voucher-paid work redeems its vouchers on chain.
7. **Audit**: the ledger read back (funds conserved), every receipt and offer signature re-verified, and the
   client charged exactly for the verified results it received.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
from eth_utils.address import to_checksum_address
from rich.console import Console
from rich.table import Table

from proxima.marketplace.demo.audit import AuditReport, audit
from proxima.marketplace.demo.sites import CLIENT_COUNTRY, SITES, Site, load_rtts
from proxima.marketplace.demo.world import ETH, NodeHandle, World, WorldSettings, open_world
from proxima.marketplace.errors import MarketError
from proxima.sdk import Client, ClientError, Job, JobSpec
from proxima.sdk.jobs import Domains
from proxima.sdk.workloads import MatmulInput, matmul_operands

__all__ = [
    "MAX_CHEATER_JOBS",
    "OUTCOMES",
    "DemoFailedError",
    "DemoReport",
    "DemoSettings",
    "JobLine",
    "Outcome",
    "run_demo",
]

log = logging.getLogger(__name__)

EMBED_MODEL: Final = "all-MiniLM-L6-v2"
MAX_CHEATER_JOBS: Final = 30
"""Jobs the cheater phase submits at most before it gives up on catching the dishonest node."""
SLASH_WAIT_S: Final = 45.0
"""Longest wait from a rejected result to the slash on chain (verdict, fault proof transaction)."""
MIN_RELIABILITY: Final = 0.5
"""The client's floor on provider reliability. A new provider starts at 2/3; a slash (recorded on chain) takes
a provider to about 0.15, so its work stops at once, whatever its offers still say."""
SNAPSHOT_MAX_AGE_S: Final = 1.0
"""How old the gateway's market snapshot can be (``NetworkMarket(max_age=1.0)``)."""
REDEEM_WAIT_S: Final = 40.0
"""Longest wait for the nodes' voucher redemptions."""

OUTCOMES: Final = (
    "regions emulated",
    "placed by latency",
    "cheater caught",
    "cheater slashed",
    "killed node's jobs finished elsewhere",
    "cheater no longer routed",
    "results verified",
    "no honest provider slashed",
    "vouchers redeemed",
    "charged only for verified results",
    "funds conserved",
    "signatures valid",
    "independent audit",
)
"""Every outcome the demo checks, in the order of the final table."""

_WORDS: Final = (
    *("latency", "proof", "stake", "gpu", "region", "voucher", "matrix", "embedding", "audit", "node"),
    *("verifier", "canary", "freivalds", "provider", "client", "gateway", "escrow", "slash", "receipt"),
)


class DemoFailedError(MarketError):
    """An outcome the demo promises did not happen (raised by :func:`main`'s callers that want it)."""


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    Attributes:
        sites: The provider nodes (one of them dishonest).
        workdir: Folder for every process's files; a fresh temporary one (removed after) when None.
        ripe_csv: RIPE Atlas country statistics; found automatically when None.
        fault_seed: ``[faults] seed`` of the dishonest node.
        canary_rate: Gateway canary rate.
        kill: Kill an honest node mid-run.
        cheater_jobs: Bound on the jobs submitted until the cheater is caught.
        stream_jobs: Jobs submitted before the node is killed, even when the cheater is caught sooner.
        after_jobs: Jobs submitted after the slash.
        embed_share: Share of embed jobs in the mixed stream.
        batch: Jobs submitted at once.
    """

    sites: tuple[Site, ...] = SITES
    workdir: Path | None = None
    ripe_csv: Path | None = None
    fault_seed: int = 7
    canary_rate: float = 0.25
    kill: bool = True
    cheater_jobs: int = MAX_CHEATER_JOBS
    stream_jobs: int = 9
    after_jobs: int = 8
    embed_share: float = 0.25
    batch: int = 3


@dataclass
class Outcome:
    """One promised outcome and whether it happened."""

    name: str
    ok: bool
    detail: str


@dataclass
class JobLine:
    """A job the client submitted and what became of it."""

    n: int
    phase: str
    workload: str
    input: dict[str, Any]
    id: str
    submitted_at: float
    handle: Job | None = None
    record: dict[str, Any] = field(default_factory=dict)
    correct: bool | None = None
    sdk_verified: bool | None = None

    @property
    def status(self) -> str:
        return str(self.record.get("status", "unknown"))

    @property
    def provider(self) -> str | None:
        provider = self.record.get("provider")
        return None if provider is None else str(provider)

    @property
    def attempts(self) -> list[dict[str, Any]]:
        return list(self.record.get("attempts") or [])

    def tried(self) -> list[str]:
        """Providers of every attempt, in order."""
        return [str(a.get("provider")) for a in self.attempts]

    def rejected_on(self) -> list[str]:
        """Providers whose result for this job failed verification."""
        return [
            str(a.get("provider"))
            for a in self.attempts
            if a.get("outcome") == "rejected" or (a.get("error") or {}).get("code") == "verification_failed"
        ]


@dataclass
class DemoReport:
    """Everything the demo saw; :attr:`ok` when every outcome happened."""

    outcomes: list[Outcome] = field(default_factory=list)
    jobs: list[JobLine] = field(default_factory=list)
    rtt_rows: list[dict[str, Any]] = field(default_factory=list)
    rtt_source: str = ""
    cheater: str | None = None
    cheater_stake_before: int = 0
    cheater_stake_after: int = 0
    min_provider_stake: int = 0
    slashed_at: float | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    caught_after: int | None = None
    killed: str | None = None
    killed_jobs: list[str] = field(default_factory=list)
    redeemed: dict[str, tuple[int, int]] = field(default_factory=dict)
    charged_wei: int = 0
    spent_wei: int = 0
    audit: AuditReport | None = None
    names: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    def outcome(self, name: str) -> Outcome | None:
        return next((o for o in self.outcomes if o.name == name), None)


# --- the client ------------------------------------------------------------------------------------------


class _Client:
    """The demo's client: the SDK (``proxima.sdk.Client``) against the gateway, which verifies every result
    on the client too; the gateway's REST API for the account."""

    def __init__(self, sdk: Client, http: httpx.Client) -> None:
        self.sdk = sdk
        self.http = http

    def submit(self, workload: str, inp: dict[str, Any]) -> Job:
        spec = JobSpec(workload=workload, input=inp, cache=False, min_reliability=MIN_RELIABILITY)
        return self.sdk.submit(spec)

    def finish(self, job: Job, deadline: float) -> tuple[dict[str, Any], bool]:
        """Wait for the job; its final JSON and whether the SDK's own verification passed."""
        job.wait(max(deadline - time.monotonic(), 0.1))
        try:
            job.result(timeout=0.1)
        except ClientError as err:
            log.info("job not verified by the client", extra={"job": job.id, "error": str(err)})
            return dict(job.data), False
        return dict(job.data), True

    def account(self) -> dict[str, Any]:
        return dict(self.http.get("/v1/account").json())


# --- helpers ---------------------------------------------------------------------------------------------


def _matmul(seed: int, n: int) -> dict[str, Any]:
    return {"seed": seed, "m": n, "k": n, "n": n, "dtype": "float64"}


def _texts(count: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=words)) for _ in range(count)]


def _embed(seed: int, count: int = 4, words: int = 24) -> dict[str, Any]:
    return {"model": EMBED_MODEL, "texts": _texts(count, words, seed)}


def _check_result(workload: str, inp: dict[str, Any], record: dict[str, Any]) -> bool:
    """The client's own check of a delivered result: the exact product, or unit-norm embeddings."""
    result = record.get("result")
    if record.get("status") != "succeeded" or not isinstance(result, dict):
        return False
    from proxima.sdk.workloads import parse_output

    try:
        output = parse_output(workload, result)
    except Exception:  # noqa: BLE001 - an unreadable result is a wrong one
        return False
    if workload == "matmul":
        a, b = matmul_operands(MatmulInput.model_validate(inp))
        product = output.c.to_array()  # type: ignore[attr-defined]
        return bool(product.shape == (a.shape[0], b.shape[1]) and np.allclose(product, a @ b, rtol=1e-9))
    vectors = output.embeddings.to_array()  # type: ignore[attr-defined]
    norms = np.linalg.norm(vectors, axis=1)
    return bool(vectors.shape == (len(inp["texts"]), 384) and np.allclose(norms, 1.0, atol=1e-3))


def _eth(wei: int) -> str:
    return f"{wei / ETH:,.4f}"


class _Run:
    """The running scenario: the world, the client, the console and the report."""

    def __init__(self, world: World, client: _Client, console: Console, settings: DemoSettings) -> None:
        self.world = world
        self.client = client
        self.console = console
        self.settings = settings
        self.report = DemoReport()
        self.report.names = {n.address: n.name for n in world.nodes.values()}
        self.step_no = 0
        self.cheater = next((n for n in world.nodes.values() if n.site.dishonest), None)
        self.report.cheater = None if self.cheater is None else self.cheater.address
        self._seed = 1_000

    # --- output ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.step_no += 1
        started = time.monotonic()
        self.console.print(f"\n[bold cyan][{self.step_no}/7][/] [bold]{title}[/]")
        yield
        self.report.timings[title] = time.monotonic() - started
        self.console.print(f"      [dim]{time.monotonic() - started:.1f}s[/]")

    def expect(self, name: str, ok: bool, detail: str) -> None:
        self.report.outcomes.append(Outcome(name, ok, detail))
        mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
        self.console.print(f"      {mark} [bold]{name}[/]: {detail}")

    def name(self, address: str | None) -> str:
        return self.world.name_of(address)

    def _print_job(self, job: JobLine) -> None:
        record = job.record
        size = f"{job.input['m']}³" if job.workload == "matmul" else f"{len(job.input['texts'])} texts"
        placement = record.get("placement") or {}
        chosen = ((placement.get("explanation") or {}).get("chosen") or [{}])[0]
        factors = chosen.get("factors") or {}
        first = chosen.get("provider")
        why = ""
        if first:
            node = self.world.node_by_address(str(first))
            rtt = factors.get("rtt_s")
            why = (
                f"[dim]placed on {self.name(first)} ({node.site.country if node else '?'}, "
                f"{chosen.get('region', '?')}): rtt {(rtt or 0.0) * 1000:.0f} ms, "
                f"price {int(chosen.get('price_wei', 0)) / 1e9:,.0f} gwei, "
                f"reliability {factors.get('reliability', float('nan')):.2f}[/]"
            )
        path = []
        for attempt in job.attempts:
            who = self.name(attempt.get("provider"))
            outcome = str(attempt.get("outcome"))
            code = (attempt.get("error") or {}).get("code")
            if outcome == "succeeded":
                path.append(f"[green]{who}[/]")
            elif outcome == "rejected" or code == "verification_failed":
                path.append(f"[bold red]{who} REJECTED (wrong result)[/]")
            else:
                path.append(f"[yellow]{who} {code or outcome}[/]")
        status = job.status
        mark = "[green]✓[/]" if status == "succeeded" and job.correct else "[red]✗[/]"
        verification = record.get("verification") or {}
        checked = f" [dim]{verification.get('method')}[/]" if verification.get("method") else ""
        self.console.print(
            f"      {mark} #{job.n:<3} {job.workload:<6} {size:<9} → "
            f"{' → '.join(path) or status}{checked}  {why}"
        )

    # --- jobs -----------------------------------------------------------------------------------------

    def _next_seed(self) -> int:
        self._seed += 1
        return self._seed

    def submit(self, phase: str, specs: Sequence[tuple[str, dict[str, Any]]]) -> list[JobLine]:
        lines = []
        for workload, inp in specs:
            job = self.client.submit(workload, inp)
            line = JobLine(len(self.report.jobs) + 1, phase, workload, inp, job.id, time.time(), job)
            self.report.jobs.append(line)
            lines.append(line)
        return lines

    def finish(self, lines: Sequence[JobLine], timeout: float = 150.0) -> None:
        deadline = time.monotonic() + timeout
        for line in lines:
            assert line.handle is not None
            line.record, line.sdk_verified = self.client.finish(line.handle, deadline)
            line.correct = line.sdk_verified and _check_result(line.workload, line.input, line.record)
            self._print_job(line)

    def mixed(self, count: int, embed_every: int) -> list[tuple[str, dict[str, Any]]]:
        """``count`` jobs of the stream: matmul of varying sizes, every ``embed_every``-th an embed job."""
        specs: list[tuple[str, dict[str, Any]]] = []
        for _ in range(count):
            seed = self._next_seed()
            if embed_every and seed % embed_every == 0:
                specs.append(("embed", _embed(seed)))
            else:
                specs.append(("matmul", _matmul(seed, (128, 160, 192, 256)[seed % 4])))
        return specs

    # --- phases ---------------------------------------------------------------------------------------

    def network(self, rtt_source: str) -> None:
        with self.step(f"Five providers in five countries, the client in {CLIENT_COUNTRY}"):
            table = Table(title=f"RTT from {CLIENT_COUNTRY} (RIPE Atlas: {rtt_source})", title_justify="left")
            for column in ("node", "country", "region", "workloads", "RIPE RTT ms", "measured ms", "role"):
                table.add_column(column, justify="right" if "ms" in column else "left")
            measured: dict[str, float] = {}
            with self.world.http() as http:
                for node in self.world.nodes.values():
                    view = self.world.provider_view(http, node.address)
                    measured[node.name] = float((view.get("gateway") or {}).get("measured_rtt_ms") or 0.0)
            for node in self.world.nodes.values():
                role = "[bold red]dishonest[/]" if node.site.dishonest else "honest"
                table.add_row(
                    node.name,
                    node.site.country,
                    node.site.region,
                    ",".join(node.site.workloads),
                    f"{node.rtt_s * 1000:.1f}",
                    f"{measured[node.name]:.1f}",
                    role,
                )
                self.report.rtt_rows.append(
                    {
                        "node": node.name,
                        "country": node.site.country,
                        "ripe_rtt_ms": node.rtt_s * 1000,
                        "measured_rtt_ms": measured[node.name],
                    }
                )
            self.console.print(table)
            nodes = list(self.world.nodes.values())
            if self.cheater is not None:
                self.report.cheater_stake_before = self.world.c.registry.account_of(
                    self.cheater.address
                ).stake
            close = all(measured[n.name] >= 0.9 * n.rtt_s * 1000 for n in nodes)
            by_ripe = [n.name for n in sorted(nodes, key=lambda n: n.rtt_s)]
            by_measured = sorted(measured, key=lambda name: measured[name])
            self.expect(
                "regions emulated",
                close and by_ripe == by_measured and len(nodes) == len(self.settings.sites),
                f"{len(nodes)} nodes up; the gateway measured each node's RTT at or above its RIPE figure, "
                f"in the same order ({' < '.join(by_measured)})",
            )

    def placement(self) -> None:
        with self.step("Where jobs go and why: one matmul and one embed job, alone"):
            nodes = [n for n in self.world.nodes.values() if n.alive()]
            served = [w for w in ("matmul", "embed") if any(w in n.site.workloads for n in nodes)]
            expected = {
                w: min((n for n in nodes if w in n.site.workloads), key=lambda n: n.rtt_s).name
                for w in served
            }
            got = {}
            specs = {"matmul": _matmul(self._next_seed(), 128), "embed": _embed(1)}
            for workload in served:
                inp = specs[workload]
                [line] = self.submit("placement", [(workload, inp)])
                self.finish([line])
                placement = line.record.get("placement") or {}
                got[workload] = self.name((placement.get("providers") or [None])[0])
            self.expect(
                "placed by latency",
                got == expected,
                ", ".join(f"{w} placed on {got.get(w)} (nearest {w} node: {expected[w]})" for w in served),
            )

    def catch_cheater(self) -> None:
        cheater = self.cheater
        with self.step("A dishonest node among them: wrong products are rejected, rerun and proven on chain"):
            if cheater is None:
                self.expect("cheater caught", False, "no dishonest node in this run")
                return
            c = self.world.c
            self.report.min_provider_stake = c.registry.min_provider_stake()
            self.console.print(
                f"      {cheater.name} answers {cheater.site.wrong_matmul_rate:.0%} of its matmul jobs "
                f"wrongly and signs them; stake {_eth(self.report.cheater_stake_before)} ETH, minimum "
                f"{_eth(self.report.min_provider_stake)} ETH"
            )
            embed_every = max(0, round(1 / self.settings.embed_share)) if self.settings.embed_share else 0
            submitted = len(self.report.jobs)

            def caught() -> bool:
                return any(cheater.address in line.rejected_on() for line in self.report.jobs)

            # A stream of at least stream_jobs jobs, on until the cheater is caught (at most cheater_jobs).
            while submitted < self.settings.stream_jobs or not (
                caught() or self._canary_proven(cheater.address)
            ):
                if submitted >= self.settings.cheater_jobs:
                    break
                lines = self.submit("cheater", self.mixed(self.settings.batch, embed_every))
                submitted += len(lines)
                self.finish(lines)
            rejected = [line for line in self.report.jobs if cheater.address in line.rejected_on()]
            first_caught = rejected[0].n if rejected else "-"
            self.report.caught_after = rejected[0].n if rejected else None
            rerun_ok = [line for line in rejected if line.status == "succeeded" and line.correct]
            canary = self._canary_proven(cheater.address)
            self.expect(
                "cheater caught",
                bool(rejected or canary) and len(rerun_ok) == len(rejected),
                f"{len(rejected)} wrong result(s) of {cheater.name} rejected by the gateway's Freivalds "
                f"check (the first at job #{first_caught} of {submitted}, bound "
                f"{self.settings.cheater_jobs}), each rerun on another node with a correct result"
                + ("; a wrong canary answer proven too" if canary else ""),
            )
            self._wait_slash(cheater)

    def _fault_events(self) -> list[dict[str, Any]]:
        """Fault proofs on chain (invalid result, canary, equivocation), with their transactions."""
        c = self.world.c
        address = c.deployment.contracts.get("FaultProofs")
        if address is None:
            return []
        raw = c.chain.w3.eth.get_logs(
            {"address": to_checksum_address(address), "fromBlock": c.deployment.block_number}
        )
        txs = {
            (int(e["blockNumber"]), int(e["logIndex"])): "0x" + bytes(e["transactionHash"]).hex() for e in raw
        }
        events = []
        for event in c.logs():
            if event.contract != "FaultProofs" or not event.name.endswith("Proven"):
                continue
            events.append(
                {
                    "event": event.name,
                    "provider": event.args.get("provider"),
                    "job_id": "0x" + bytes(event.args.get("jobId", b"")).hex(),
                    "slashed_wei": int(event.args.get("slashed", 0)),
                    "tx": txs.get((event.block_number, event.log_index), "?"),
                    "block": event.block_number,
                }
            )
        return events

    def _canary_proven(self, provider: str) -> bool:
        return any(
            e["event"] == "CanaryFaultProven" and e["provider"] == provider for e in self._fault_events()
        )

    def _wait_slash(self, cheater: NodeHandle) -> None:
        c = self.world.c
        deadline = time.monotonic() + SLASH_WAIT_S
        record = c.registry.account_of(cheater.address)
        while record.total_slashed == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            record = c.registry.account_of(cheater.address)
        if record.total_slashed > 0:
            self.report.slashed_at = time.time()
        self.report.cheater_stake_after = record.stake
        self.report.evidence = [e for e in self._fault_events() if e["provider"] == cheater.address]
        active = c.registry.is_active_provider(cheater.address)
        for e in self.report.evidence:
            self.console.print(
                f"      evidence: {e['event']} for job {e['job_id'][:12]}… in tx {e['tx'][:14]}… "
                f"(block {e['block']}), {_eth(e['slashed_wei'])} ETH slashed"
            )
        # The gateway reads the slash from the chain (chainstate_ttl_seconds): wait until its view has it.
        reliability = None
        with self.world.http() as http:
            deadline = time.monotonic() + 15
            while record.total_slashed > 0 and time.monotonic() < deadline:
                reliability = self.world.provider_view(http, cheater.address).get("reliability")
                if reliability is not None and float(reliability) < MIN_RELIABILITY:
                    break
                time.sleep(0.25)
        if reliability is not None and float(reliability) < MIN_RELIABILITY:
            # The dispatcher's market snapshot is rebuilt at least every second (NetworkMarket.max_age):
            # from then on every placement sees the slash.
            time.sleep(SNAPSHOT_MAX_AGE_S)
            self.report.slashed_at = time.time()
        if reliability is not None:
            self.console.print(
                f"      the gateway now rates {cheater.name} {float(reliability):.2f} (its on-chain record); "
                f"the client asks for at least {MIN_RELIABILITY}"
            )
        self.expect(
            "cheater slashed",
            record.total_slashed > 0
            and bool(self.report.evidence)
            and record.stake < self.report.min_provider_stake
            and not active,
            f"registry: {cheater.name} stake {_eth(self.report.cheater_stake_before)} → "
            f"{_eth(record.stake)} ETH (slashed {_eth(record.total_slashed)}), below the minimum "
            f"{_eth(self.report.min_provider_stake)}: {'still active' if active else 'inactive'}",
        )

    def kill_node(self) -> None:
        with self.step("An honest node killed mid-run: its jobs finish elsewhere"):
            alive = [n for n in self.world.nodes.values() if n.alive() and not n.site.dishonest]
            embedders = sorted((n for n in alive if "embed" in n.site.workloads), key=lambda n: n.rtt_s)
            if len(embedders) < 2:
                self.expect(
                    "killed node's jobs finished elsewhere", False, "fewer than two embed nodes alive"
                )
                return
            by_address = {n.address: n for n in embedders}
            # Two jobs of a few seconds each; whichever honest embed node runs one of them is killed as soon
            # as its own database shows the job running. The other embed node has room for both.
            before = {n.address: set(n.jobs()) for n in embedders}
            lines = self.submit(
                "kill", [("embed", _embed(self._next_seed(), count=24, words=100)) for _ in range(2)]
            )
            deadline = time.monotonic() + 60
            target: NodeHandle | None = None
            while time.monotonic() < deadline and target is None:
                target = self._running_one_of(lines, by_address, before)
                if target is None:
                    time.sleep(0.02)
            running = target is not None
            if target is not None:
                target.kill()
                self.report.killed = target.address
                self.report.killed_jobs = sorted(j for j in target.jobs() if j not in before[target.address])
                self.console.print(
                    f"      [bold yellow]SIGKILL[/] {target.name} while it runs "
                    f"{len(self.report.killed_jobs)} job(s)"
                )
            else:
                target = embedders[0]
            self.finish(lines)
            moved = [line for line in lines if target.address in line.tried()]
            finished_elsewhere = [
                line
                for line in moved
                if line.status == "succeeded" and line.correct and line.provider != target.address
            ]
            self.expect(
                "killed node's jobs finished elsewhere",
                running
                and bool(moved)
                and len(finished_elsewhere) == len(moved)
                and all(line.status == "succeeded" for line in lines),
                f"{target.name} killed holding {len(self.report.killed_jobs)} job(s); {len(moved)} of the "
                f"client's jobs had been sent there, {len(finished_elsewhere)} finished on "
                f"{', '.join(sorted({self.name(line.provider) for line in finished_elsewhere})) or 'none'}"
                if running
                else f"{target.name} never started one of the jobs within 60 s",
            )

    def _running_one_of(
        self, lines: Sequence[JobLine], nodes: dict[str, NodeHandle], before: dict[str, set[str]]
    ) -> NodeHandle | None:
        """The node (of ``nodes``) that one of ``lines`` was sent to and that now runs a new job, if any."""
        for line in lines:
            try:
                record = self.client.http.get(f"/v1/jobs/{line.id}").json()
            except (httpx.HTTPError, ValueError):
                continue
            for attempt in record.get("attempts") or []:
                node = nodes.get(str(attempt.get("provider")))
                if node is None or attempt.get("outcome") != "running":
                    continue
                if any(s == "running" for j, s in node.jobs().items() if j not in before[node.address]):
                    return node
        return None

    def after_slash(self) -> None:
        with self.step("After the slash: the cheater gets no more work"):
            embed_every = max(0, round(1 / self.settings.embed_share)) if self.settings.embed_share else 0
            lines: list[JobLine] = []
            for start in range(0, self.settings.after_jobs, self.settings.batch):
                count = min(self.settings.batch, self.settings.after_jobs - start)
                batch = self.submit("after", self.mixed(count, embed_every))
                self.finish(batch)
                lines += batch
            cheater = self.cheater
            if cheater is None or self.report.slashed_at is None:
                self.expect("cheater no longer routed", False, "the cheater was never slashed")
                return
            after = [line for line in self.report.jobs if line.submitted_at > self.report.slashed_at]
            touched = [line for line in after if cheater.address in line.tried()]
            self.expect(
                "cheater no longer routed",
                bool(after) and not touched,
                f"{len(after)} jobs submitted after the slash, {len(touched)} of them tried on "
                f"{cheater.name}",
            )

    def results(self) -> None:
        jobs = self.report.jobs
        wrong = [line for line in jobs if not line.correct]
        self.expect(
            "results verified",
            bool(jobs) and not wrong,
            f"{len(jobs) - len(wrong)}/{len(jobs)} jobs delivered a result the client checked itself "
            "(exact product, unit-norm embeddings)"
            + (
                f"; wrong or missing: {', '.join(f'#{line.n} {line.status}' for line in wrong)}"
                if wrong
                else ""
            ),
        )
        c = self.world.c
        honest = [n for n in self.world.nodes.values() if not n.site.dishonest]
        slashed = [n.name for n in honest if c.registry.account_of(n.address).total_slashed > 0]
        self.expect(
            "no honest provider slashed",
            not slashed,
            f"{len(honest) - len(slashed)}/{len(honest)} honest providers kept their whole stake"
            + (f"; slashed: {', '.join(slashed)}" if slashed else ""),
        )

    def vouchers(self) -> None:
        with self.step("Payment vouchers redeemed by the nodes on chain"):
            c = self.world.c
            payer = self.world.payer
            assert payer is not None
            delivered: dict[str, int] = {}
            for line in self.report.jobs:
                if line.status == "succeeded" and line.provider is not None:
                    delivered[line.provider] = delivered.get(line.provider, 0) + 1
            due = {
                n.address: delivered[n.address]
                for n in self.world.nodes.values()
                if n.alive() and not n.site.dishonest and delivered.get(n.address)
            }
            deadline = time.monotonic() + REDEEM_WAIT_S
            while True:
                redeemed = {a: c.vouchers.redeemed_of(payer.address, a) for a in due}
                if all(redeemed[a].jobs >= due[a] for a in due) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            table = Table(title="Vouchers (payer → provider)", title_justify="left")
            for column in ("provider", "jobs delivered", "jobs redeemed", "gwei redeemed"):
                table.add_column(column, justify="left" if column == "provider" else "right")
            for node in self.world.nodes.values():
                totals = c.vouchers.redeemed_of(payer.address, node.address)
                self.report.redeemed[node.address] = (totals.jobs, totals.amount)
                table.add_row(
                    node.name + ("" if node.alive() else " (killed)"),
                    str(delivered.get(node.address, 0)),
                    str(totals.jobs),
                    f"{totals.amount / 10**9:,.0f}",
                )
            self.console.print(table)
            late = [self.name(a) for a in due if self.report.redeemed[a][0] < due[a]]
            self.expect(
                "vouchers redeemed",
                bool(due) and not late,
                f"{len(due)} live honest providers redeemed vouchers covering every job they delivered"
                + (f"; not yet: {', '.join(late)}" if late else ""),
            )

    def audit(self) -> None:
        with self.step("The ledger audit"):
            c = self.world.c
            payer = self.world.payer
            assert payer is not None
            assert self.world.deployment is not None
            domain = Domains.from_deployment(self.world.deployment).faults_domain
            with self.world.http() as http:
                offers = list(http.get("/v1/offers").json().get("data") or [])
                account = self.client.account()
            payers = [payer.address] + ([v.address] if (v := self.world.verifier) is not None else [])
            report = audit(c, domain, [line.record for line in self.report.jobs], offers, payers)
            self.report.audit = report
            _print_ledger(self.console, report, self.name)
            delivered = [line for line in self.report.jobs if line.status == "succeeded"]
            charged = sum(int(line.record.get("charged_wei") or 0) for line in self.report.jobs)
            priced = sum(int(line.record.get("price_wei") or 0) for line in delivered)
            uncharged_failures = all(
                int(line.record.get("charged_wei") or 0) == 0
                for line in self.report.jobs
                if line.status != "succeeded"
            )
            self.report.charged_wei = charged
            self.report.spent_wei = int(account.get("spent_wei") or 0)
            rejected = sum(len(line.rejected_on()) for line in self.report.jobs)
            self.expect(
                "charged only for verified results",
                self.report.spent_wei == charged == priced and uncharged_failures,
                f"the gateway charged the client {self.report.spent_wei} wei = the prices of the "
                f"{len(delivered)} verified results delivered; {rejected} rejected result(s) and failed "
                "attempts cost it nothing",
            )
            money = report.ledger.money
            self.expect(
                "funds conserved",
                report.conserved,
                f"contracts hold {_eth(money.total_held)} ETH and owe {_eth(money.total_owed)} ETH "
                "(stakes, deposits, escrows, reward pool, treasury)",
            )
            self.expect(
                "signatures valid",
                report.signatures_valid and report.receipts_checked > 0 and report.offers_checked > 0,
                f"{report.receipts_checked} receipts (signer, domain, result hash), {report.offers_checked} "
                f"offers and {report.vouchers_checked} voucher totals re-verified"
                + (f"; problems: {'; '.join(report.problems[:3])}" if report.problems else ""),
            )
            self._independent_audit()

    def _independent_audit(self) -> None:
        """What a community auditor does: ``proxima-audit`` indexes the chain's events on its own, recomputes
        every stake, counter, reward and balance from them, re-checks every signature the contracts accepted
        and compares all of it with contract state."""
        world = self.world
        assert world.anvil is not None
        common = ["--db", str(world.root / "audit.sqlite"), "--rpc", world.anvil.url]
        common += ["--deployment", str(world.root / "deployment.json")]
        sync = _audit_cli(*common, "sync")
        verify = _audit_cli(*common, "verify", "--json") if sync.returncode == 0 else sync
        try:
            report = json.loads(verify.stdout)
            checked, found = report["checked"], report["discrepancies"]
        except (json.JSONDecodeError, KeyError, TypeError):
            self.expect("independent audit", False, f"proxima-audit failed: {verify.stderr.strip()[-500:]}")
            return
        self.expect(
            "independent audit",
            verify.returncode == 0 and report["ok"] and not found and checked.get("signatures", 0) > 0,
            f"proxima-audit indexed {checked.get('events', 0)} events, re-checked "
            f"{checked.get('signatures', 0)} signatures and compared "
            f"{checked.get('state_calls', 0)} contract "
            f"reads: {len(found)} discrepancies"
            + (f" ({'; '.join(d['kind'] + ' ' + d['subject'] for d in found[:3])})" if found else "")
            + f"; explorer at {world.gateway_url}/explorer/ while the demo runs",
        )


def _audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxima.audit.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _print_ledger(console: Console, report: AuditReport, name: Callable[[str], str]) -> None:
    ledger = report.ledger
    accounts = Table(title=f"Ledger at block {ledger.block_number}", title_justify="left")
    for column in ("account", "role", "stake ETH", "completed", "failed", "slashed ETH"):
        accounts.add_column(column, justify="left" if column in ("account", "role") else "right")
    for a in ledger.accounts:
        accounts.add_row(
            name(a.address),
            a.role.name.lower(),
            _eth(a.stake),
            str(a.jobs_completed),
            str(a.jobs_failed),
            _eth(a.total_slashed),
        )
    console.print(accounts)
    if ledger.slashes:
        slashes = Table(title="Slashes", title_justify="left")
        for column in ("provider", "amount ETH", "reason", "job", "finder", "finder reward ETH"):
            slashes.add_column(column)
        for s in ledger.slashes:
            slashes.add_row(
                name(s.account), _eth(s.amount), s.reason, "0x" + s.ref.hex()[:10], name(s.finder),
                _eth(s.finder_reward),
            )  # fmt: skip
        console.print(slashes)
    m = ledger.money
    money = Table(title="Money held by the contracts", title_justify="left")
    money.add_column("owed to")
    money.add_column("ETH", justify="right")
    for label, value in (
        ("stakes", m.staked),
        ("unbonding stakes", m.unbonding),
        ("open escrows", m.escrowed),
        ("voucher deposits", m.deposits),
        ("reward pool", m.reward_pool),
        ("treasury", m.treasury),
        ("[bold]total owed[/]", m.total_owed),
        ("[bold]total held[/]", m.total_held),
    ):
        money.add_row(label, _eth(value))
    console.print(money)


def _print_outcomes(console: Console, report: DemoReport, expected: Sequence[str]) -> None:
    table = Table(title="Outcomes", title_justify="left")
    table.add_column("outcome")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    seen = {o.name: o for o in report.outcomes}
    for name in expected:
        outcome = seen.get(name)
        if outcome is None:
            table.add_row(name, "[bold red]FAIL[/]", "not reached")
        else:
            table.add_row(name, "[green]PASS[/]" if outcome.ok else "[bold red]FAIL[/]", outcome.detail)
    console.print(table)


def run_demo(settings: DemoSettings | None = None, console: Console | None = None) -> DemoReport:
    """Build the world, run every phase, check every outcome; the report says what happened.

    Outcomes that could not be reached (a part failed to start) are recorded as failed; the report is
    returned either way.

    Raises:
        DemoSetupError: If a process of the world failed to start (the message ends with its log).
    """
    settings = settings or DemoSettings()
    console = console or Console(highlight=False)
    started = time.monotonic()
    rtts, source = load_rtts(CLIENT_COUNTRY, [s.country for s in settings.sites], settings.ripe_csv)
    world_settings = WorldSettings(
        sites=settings.sites,
        rtts=rtts,
        fault_seed=settings.fault_seed,
        canary_rate=settings.canary_rate,
    )
    root = settings.workdir or Path(tempfile.mkdtemp(prefix="proxima-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold cyan][0/7][/] [bold]Starting the world[/] in {root}")

    def progress(message: str) -> None:
        console.print(f"      {message} [dim]({time.monotonic() - started:.1f}s)[/]")

    report = DemoReport()
    keep = settings.workdir is not None
    try:
        with (
            open_world(world_settings, root, progress) as world,
            world.http() as http,
            Client.connect(world.gateway_url, api_key=world.api_key) as sdk,
        ):
            run = _Run(world, _Client(sdk, http), console, settings)
            report = run.report
            report.rtt_source = source
            report.timings.update({f"world {k}": v for k, v in world.timings.items()})
            run.network(source)
            run.placement()
            run.catch_cheater()
            if settings.kill:
                run.kill_node()
            run.after_slash()
            run.results()
            run.vouchers()
            run.audit()
    except BaseException:
        keep = True
        console.print(f"[bold red]the demo stopped[/]; every process's log is kept in {root}")
        raise
    finally:
        report.elapsed_s = time.monotonic() - started
        if not keep and not report.ok:
            keep = True
            console.print(f"      logs of every process kept in {root}")
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    expected = [name for name in OUTCOMES if settings.kill or name != "killed node's jobs finished elsewhere"]
    for name in expected:
        if report.outcome(name) is None:
            report.outcomes.append(Outcome(name, False, "not reached"))
    _print_outcomes(console, report, expected)
    return report
