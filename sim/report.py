"""``proxima-sim report``: run every policy through three scenarios and write docs/SIMULATION.md with plots.

Scenarios, all on the same world and the same arrivals (the Azure LLM trace's pattern, scaled):

* **baseline**: the market as it is (churn, failures, cheaters);
* **outage**: every provider of one whole region goes down for a stretch of the run
  (:class:`proxima.sim.world.RegionOutage`);
* **burst**: ``burst_factor`` times the traffic for a stretch (:func:`proxima.sim.arrivals.inject_burst`).

For each scenario and each policy of :data:`proxima.sim.policies.POLICIES` it computes the latency
percentiles, the share of jobs meeting their target, cost per job, utilisation, Gini of earnings, cheaters
caught and honest providers wrongly slashed; it replays a sample of the baseline Proxima run onto the real
contracts (:func:`proxima.sim.replay.replay_sample`); and it writes the Markdown report with the command and
seed that reproduce every figure, plus PNG plots (matplotlib, Agg backend) next to it in ``simulation/``.
"""

from __future__ import annotations

import io
import logging
import math
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from proxima.sim.arrivals import Arrivals, inject_burst, replay_trace
from proxima.sim.data import WorldData, default_data_dir, load_world_data
from proxima.sim.engine import DROPPED, FAILED, REJECTED, SimConfig, SimResult, simulate
from proxima.sim.errors import SimError
from proxima.sim.metrics import summarize
from proxima.sim.policies import POLICIES
from proxima.sim.replay import ReplayReport, replay_sample
from proxima.sim.world import CONTINENTS, RegionOutage, World, WorldConfig, build_world

__all__ = [
    "PolicyMetrics",
    "ReportError",
    "ReportFiles",
    "ReportSettings",
    "ScenarioRuns",
    "generate_report",
    "metrics_of",
    "parse_outage",
    "run_scenarios",
    "write_report",
]

log = logging.getLogger(__name__)

SCENARIOS = ("baseline", "outage", "burst")
Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``."""

_WEI_PER_ETH = 10**18
_PLOT_DPI = 100


class ReportError(SimError, ValueError):
    """A report setting is out of range (the message names it), or the report could not be written."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name = name
        super().__init__(f"{name} must be {expected}, got {value!r}")


def parse_outage(text: str) -> tuple[str, float, float]:
    """``WHERE:START:DURATION`` (a country code like ``DE`` or a region like ``europe``; seconds) -> parts.

    Raises:
        ReportError: If the text does not have that form (naming ``--outage``).
    """
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise ReportError("--outage", text, "WHERE:START:DURATION (e.g. europe:60:120 or DE:30:60)")
    where = parts[0]
    try:
        start, duration = float(parts[1]), float(parts[2])
    except ValueError as err:
        raise ReportError("--outage", text, "START and DURATION in seconds (numbers)") from err
    if not (math.isfinite(start) and start >= 0 and math.isfinite(duration) and duration > 0):
        raise ReportError("--outage", text, "START >= 0 and DURATION > 0 seconds")
    if where.lower() in CONTINENTS or where.lower() == "eu":
        return where.lower(), start, duration
    if len(where) != 2 or not where.isalpha():
        raise ReportError("--outage", where, f"an ISO-2 country code or one of eu, {', '.join(CONTINENTS)}")
    return where.upper(), start, duration


def outage_spec(where: str, start_s: float, duration_s: float) -> RegionOutage:
    """The :class:`RegionOutage` for ``where`` (region name or country code)."""
    if where in CONTINENTS or where == "eu":
        return RegionOutage.of_region(where, start_s, duration_s)
    return RegionOutage((where,), start_s, duration_s)


@dataclass(frozen=True)
class ReportSettings:
    """What to simulate for the report (every figure is reproducible from these and the data).

    Attributes:
        providers: Market providers.
        clients: Clients.
        jobs: Arrivals per run.
        seed: Seed of the world, the arrivals and every run.
        policies: Policies compared.
        outage_region: Region (or country) that goes down in the outage scenario.
        outage_start: Start of the outage as a share of the run's span.
        outage_length: Its duration as a share of the run's span.
        burst_start: Start of the burst as a share of the run's span.
        burst_length: Its duration as a share of the run's span.
        burst_factor: Traffic multiplier during the burst.
        replay_sample: Providers replayed onto the contracts (0: no replay).
        command: The command line that produced the report (printed in it).
        data_dir: The shared data folder (None: the default).
    """

    providers: int = 300
    clients: int = 600
    jobs: int = 30_000
    seed: int = 7
    policies: tuple[str, ...] = POLICIES
    outage_region: str = "europe"
    outage_start: float = 0.35
    outage_length: float = 0.3
    burst_start: float = 0.5
    burst_length: float = 0.15
    burst_factor: float = 3.0
    replay_sample: int = 6
    command: str = "proxima-sim report"
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("providers", "clients", "jobs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ReportError(name, value, "an int >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ReportError("seed", self.seed, "an int >= 0")
        for name in ("outage_start", "outage_length", "burst_start", "burst_length"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ReportError(name, value, "a share of the run in [0, 1]")
        if not (isinstance(self.burst_factor, int | float) and 1 <= self.burst_factor <= 100):
            raise ReportError("burst_factor", self.burst_factor, "a number in [1, 100]")
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown or not self.policies:
            raise ReportError("policies", self.policies, f"a non-empty subset of {', '.join(POLICIES)}")
        if self.replay_sample < 0:
            raise ReportError("replay_sample", self.replay_sample, "an int >= 0")


@dataclass(frozen=True)
class PolicyMetrics:
    """The figures of one run (latencies in ms of delivered jobs; shares over all jobs)."""

    policy: str
    jobs: int
    delivered: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    met_target: float
    cost_per_job_usd: float
    utilisation: float
    gini: float
    dropped: int
    failed: int
    rejected: int
    failovers: int
    cheaters: int
    cheaters_caught: int
    honest_slashed: int
    wall_s: float


def metrics_of(
    result: SimResult, world: World, *, window: tuple[float, float] | None = None
) -> PolicyMetrics:
    """The report's figures for one run (:func:`proxima.sim.metrics.summarize`), optionally only for the
    jobs arriving in ``window`` (seconds): latencies, targets, cost and outcomes of those jobs; utilisation,
    Gini and slashing stay whole-run figures.

    Args:
        result: The run.
        world: Its world (for the ETH price used to show costs in USD).
        window: ``(start_s, end_s)`` of arrivals to count; None for all jobs.
    """
    summary = summarize(result, eth_usd=world.config.eth_usd)
    mask = np.ones(result.jobs, dtype=bool)
    if window is not None:
        mask = (result.arrival_s >= window[0]) & (result.arrival_s < window[1])
    delivered = result.delivered & mask
    latency = result.latency_ms[delivered]
    jobs = int(mask.sum())

    def pct(q: float) -> float:
        return float(np.percentile(latency, q)) if len(latency) else float("nan")

    paid = result.cost_wei[delivered].astype(np.float64)
    cost = float(paid.mean()) / _WEI_PER_ETH * world.config.eth_usd if len(paid) else float("nan")
    outcome = result.outcome[mask]
    return PolicyMetrics(
        policy=result.policy,
        jobs=jobs,
        delivered=int(delivered.sum()),
        p50_ms=summary.p50_ms if window is None else pct(50),
        p95_ms=summary.p95_ms if window is None else pct(95),
        p99_ms=summary.p99_ms if window is None else pct(99),
        met_target=summary.met_target
        if window is None
        else (float(result.met_target[mask].mean()) if jobs else float("nan")),
        cost_per_job_usd=summary.cost_per_job_usd
        if window is None and summary.cost_per_job_usd is not None
        else cost,
        utilisation=summary.utilisation,
        gini=summary.gini_earnings,
        dropped=int((outcome == DROPPED).sum()),
        failed=int((outcome == FAILED).sum()),
        rejected=int((outcome == REJECTED).sum()),
        failovers=int((result.attempts[mask] > 1).sum()),
        cheaters=summary.cheaters,
        cheaters_caught=summary.cheaters_caught,
        honest_slashed=summary.honest_slashed,
        wall_s=summary.wall_s,
    )


@dataclass
class ScenarioRuns:
    """Every run of the report: scenario -> policy -> result, with the world and the windows."""

    settings: ReportSettings
    world: World
    arrivals: dict[str, Arrivals]
    results: dict[str, dict[str, SimResult]]
    outage_window: tuple[float, float]
    burst_window: tuple[float, float]
    replay: ReplayReport | None
    wall_s: float
    horizon_s: float
    data_dir: Path = field(default_factory=Path)


def run_scenarios(settings: ReportSettings, *, progress: Progress | None = None) -> ScenarioRuns:
    """Build the world and arrivals, run every scenario for every policy, and replay a sample.

    Raises:
        ReportError: If a setting is out of range for this world (e.g. an unknown outage region).
        SimError: From the data loaders, the world, the engine or the replay.
    """
    started = time.monotonic()
    data_dir = settings.data_dir or default_data_dir()
    data: WorldData = load_world_data(data_dir)
    world = build_world(
        data, WorldConfig(providers=settings.providers, clients=settings.clients, seed=settings.seed)
    )
    base = replay_trace(world, settings.jobs, seed=settings.seed)
    horizon = float(base.t[-1]) if len(base.t) else 0.0
    outage_window = (
        settings.outage_start * horizon,
        (settings.outage_start + settings.outage_length) * horizon,
    )
    burst_window = (settings.burst_start * horizon, (settings.burst_start + settings.burst_length) * horizon)
    outage = outage_spec(
        settings.outage_region, outage_window[0], max(outage_window[1] - outage_window[0], 1.0)
    )
    burst = inject_burst(
        world,
        base,
        start_s=burst_window[0],
        duration_s=max(burst_window[1] - burst_window[0], 1.0),
        factor=settings.burst_factor,
        seed=settings.seed,
    )
    arrivals = {"baseline": base, "outage": base, "burst": burst}
    results: dict[str, dict[str, SimResult]] = {s: {} for s in SCENARIOS}
    total = len(SCENARIOS) * len(settings.policies)
    done = 0
    for scenario in SCENARIOS:
        for policy in settings.policies:
            config = SimConfig(
                policy=policy, seed=settings.seed, outage=outage if scenario == "outage" else None
            )
            results[scenario][policy] = simulate(world, arrivals[scenario], config)
            done += 1
            if progress is not None:
                progress(f"{scenario}/{policy}", done, total)
            log.info("scenario run", extra={"scenario": scenario, "policy": policy})
    replay = None
    if settings.replay_sample and "proxima" in results["baseline"]:
        replay = replay_sample(
            results["baseline"]["proxima"], world, sample=settings.replay_sample, seed=settings.seed
        )
        if progress is not None:
            progress("replay", 1, 1)
    return ScenarioRuns(
        settings=settings,
        world=world,
        arrivals=arrivals,
        results=results,
        outage_window=outage_window,
        burst_window=burst_window,
        replay=replay,
        wall_s=time.monotonic() - started,
        horizon_s=horizon,
        data_dir=data_dir,
    )


# --- plots ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    plots: tuple[Path, ...]


def _series(
    result: SimResult, bucket_s: float, horizon: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per arrival-time bucket: centres, median latency of delivered jobs, share meeting target."""
    edges = np.arange(0.0, horizon + bucket_s, bucket_s)
    index = np.clip(np.digitize(result.arrival_s, edges) - 1, 0, len(edges) - 2)
    centres = (edges[:-1] + edges[1:]) / 2
    median = np.full(len(centres), np.nan)
    met = np.full(len(centres), np.nan)
    for b in range(len(centres)):
        in_bucket = index == b
        if not in_bucket.any():
            continue
        met[b] = float(result.met_target[in_bucket].mean())
        delivered = in_bucket & result.delivered
        if delivered.any():
            median[b] = float(np.median(result.latency_ms[delivered]))
    return centres, median, met


def _plots(runs: ScenarioRuns, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    policies = runs.settings.policies
    colours = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(POLICIES)}

    def save(fig: Any, name: str) -> None:
        from PIL import Image  # matplotlib's own dependency

        path = folder / name
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=_PLOT_DPI, format="png")
        plt.close(fig)
        buffer.seek(0)
        # a 64-colour palette keeps the line plots a few tens of KB (antialiased RGBA is 3-4x larger)
        with Image.open(buffer) as image:
            image.convert("RGB").quantize(colors=64, dither=Image.Dither.NONE).save(path, optimize=True)
        written.append(path)

    # latency CDF, baseline
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for policy in policies:
        result = runs.results["baseline"][policy]
        latency = np.sort(result.latency_ms[result.delivered])
        if len(latency):
            ax.plot(
                latency, np.arange(1, len(latency) + 1) / len(latency), label=policy, color=colours[policy]
            )
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms, log scale)")
    ax.set_ylabel("share of delivered jobs")
    ax.set_title("Latency CDF per policy (baseline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "latency_cdf.png")

    bucket = max(runs.horizon_s / 40, 0.5)
    for scenario, window, title in (
        ("outage", runs.outage_window, f"Region outage ({runs.settings.outage_region})"),
        ("burst", runs.burst_window, f"Traffic burst (x{runs.settings.burst_factor:g})"),
    ):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
        for policy in policies:
            centres, median, met = _series(runs.results[scenario][policy], bucket, runs.horizon_s)
            top.plot(centres, median, label=policy, color=colours[policy], linewidth=1.0)
            bottom.plot(centres, met, label=policy, color=colours[policy], linewidth=1.0)
        for ax in (top, bottom):
            ax.axvspan(window[0], window[1], color="grey", alpha=0.2)
            ax.grid(alpha=0.3)
        top.set_yscale("log")
        top.set_ylabel("median latency (ms)")
        bottom.set_ylabel("share meeting target")
        bottom.set_xlabel("simulated time (s); shaded: the " + scenario)
        top.set_title(title + " — latency and targets over time")
        top.legend(fontsize=7, ncol=3)
        save(fig, f"{scenario}_over_time.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for policy in policies:
        m = metrics_of(runs.results["baseline"][policy], runs.world)
        ax.scatter([m.p95_ms], [m.cost_per_job_usd * 100], color=colours[policy], s=50, label=policy)
        ax.annotate(
            policy,
            (m.p95_ms, m.cost_per_job_usd * 100),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("p95 end-to-end latency (ms, log scale)")
    ax.set_ylabel("cost per delivered job (US cents)")
    ax.set_title("Cost vs latency (baseline)")
    ax.grid(alpha=0.3)
    save(fig, "cost_vs_latency.png")
    return written


# --- markdown -------------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"


def _table(rows: Sequence[PolicyMetrics], *, money: bool = True) -> list[str]:
    head = "| policy | jobs | delivered | p50 ms | p95 ms | p99 ms | meeting target |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if money:
        head += " cost / job (¢) | utilisation | Gini of earnings | dropped | failed | rejected |"
        rule += "---:|---:|---:|---:|---:|---:|"
    else:
        head += " dropped | failed | retried jobs |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    for m in rows:
        line = (
            f"| {m.policy} | {m.jobs:,} | {m.delivered:,} | {_ms(m.p50_ms)} | {_ms(m.p95_ms)} "
            f"| {_ms(m.p99_ms)} | {_pct(m.met_target)} |"
        )
        if money:
            line += (
                f" {100 * m.cost_per_job_usd:.4f} | {_pct(m.utilisation)} | {m.gini:.3f} | {m.dropped:,} "
                f"| {m.failed:,} | {m.rejected:,} |"
            )
        else:
            line += f" {m.dropped:,} | {m.failed:,} | {m.failovers:,} |"
        lines.append(line)
    return lines


def write_report(runs: ScenarioRuns, out: Path) -> ReportFiles:
    """Write the Markdown report at ``out`` and its plots in ``out.parent / "simulation"``.

    Raises:
        ReportError: If the files cannot be written (naming the path).
    """
    folder = out.parent / "simulation"
    try:
        plots = _plots(runs, folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_markdown(runs, [p.relative_to(out.parent) for p in plots]), encoding="utf-8")
    except OSError as err:
        raise ReportError("--out", str(out), f"a writable path ({err.strerror})") from err
    return ReportFiles(out, tuple(plots))


def _markdown(runs: ScenarioRuns, plots: Sequence[Path]) -> str:
    s = runs.settings
    world = runs.world
    baseline = [metrics_of(runs.results["baseline"][p], world) for p in s.policies]
    outage = [metrics_of(runs.results["outage"][p], world, window=runs.outage_window) for p in s.policies]
    burst = [metrics_of(runs.results["burst"][p], world, window=runs.burst_window) for p in s.policies]
    outage_all = [metrics_of(runs.results["outage"][p], world) for p in s.policies]
    burst_all = [metrics_of(runs.results["burst"][p], world) for p in s.policies]
    plot = {p.stem: p.as_posix() for p in plots}
    lines = [
        "# Simulation: Proxima's placement against centralized and peer policies",
        "",
        "Generated by `proxima-sim report` (sim/report.py); do not edit by hand. Every figure below comes "
        "from this command, with this seed, on the shared data folder described under *Data*:",
        "",
        "```",
        s.command,
        "```",
        "",
        f"World: {s.providers:,} market providers in {len(set(world.providers.country.tolist()))} countries "
        f"(plus a centralized pool of {len(world.hyperscale):,} in {world.config.hyperscale_region}), "
        f"{s.clients:,} clients, {s.jobs:,} jobs over {runs.horizon_s:,.0f} simulated seconds, "
        f"seed {s.seed}. Every policy runs on the same world and the same arrivals; the placement of "
        "`proxima` is the real `proxima.marketplace.matching.MatchingEngine`. Wall time of the whole "
        f"report: {runs.wall_s:,.0f} s.",
        "",
        "## Baseline",
        "",
        *_table(baseline),
        "",
        "Latency is end to end (arrival to result, across failovers) of delivered jobs; *meeting target* "
        "counts every job (an undelivered job misses). Cost is the mean price paid per delivered job at the "
        f"world's ETH price (${world.config.eth_usd:,.0f}). Utilisation is slot-seconds busy over "
        "slot-seconds in the run, over the pool the policy places on (the market, or the centralized pool); "
        "the Gini coefficient is of that pool's earnings (voucher payouts plus rewards).",
        "",
        f"![Latency CDF]({plot.get('latency_cdf', '')})",
        "",
        f"![Cost vs latency]({plot.get('cost_vs_latency', '')})",
        "",
        "## Cheaters and slashing",
        "",
        "| policy | cheaters in the world | cheaters caught (slashed) | honest providers slashed |",
        "|---|---:|---:|---:|",
        *[f"| {m.policy} | {m.cheaters} | {m.cheaters_caught} | {m.honest_slashed} |" for m in baseline],
        "",
        "Honest providers wrongly slashed must be zero: a slash needs a verifier quorum's verdict that the "
        "result is wrong, and checks never flag a right result.",
        "",
        f"## Region outage: {s.outage_region} down from {runs.outage_window[0]:,.0f} s to "
        f"{runs.outage_window[1]:,.0f} s",
        "",
        "Jobs arriving during the outage:",
        "",
        *_table(outage, money=False),
        "",
        "Whole run with the outage:",
        "",
        *_table(outage_all, money=False),
        "",
        f"![Outage]({plot.get('outage_over_time', '')})",
        "",
        f"## Traffic burst: x{s.burst_factor:g} from {runs.burst_window[0]:,.0f} s to "
        f"{runs.burst_window[1]:,.0f} s",
        "",
        "Jobs arriving during the burst:",
        "",
        *_table(burst, money=False),
        "",
        "Whole run with the burst:",
        "",
        *_table(burst_all, money=False),
        "",
        f"![Burst]({plot.get('burst_over_time', '')})",
        "",
        "## The model against the contracts",
        "",
        *_replay_lines(runs.replay, s),
        "",
        "## Reproducing",
        "",
        "Every table and plot above: `" + s.command + "` (seed " + str(s.seed) + "). One policy and scenario "
        "alone: `proxima-sim run --providers "
        + f"{s.providers} --clients {s.clients} --jobs {s.jobs} --seed {s.seed} --policy proxima` (add "
        "`--outage WHERE:START:DURATION` for an outage); the replay alone: `proxima-sim replay --providers "
        + f"{s.providers} --clients {s.clients} --jobs {s.jobs} --seed {s.seed} "
        + f"--sample {max(s.replay_sample, 1)}`.",
        "",
        "## Data",
        "",
        f"From the shared data folder (`{_shown(runs.data_dir)}`; each folder's SOURCE.txt has the details):",
        "",
        "- RTT between countries: RIPE Atlas country-to-country ping statistics, 2025 (RIPE NCC, attribution "
        "required), joined with country centroids (Google DSPL canonical table, BSD-3-Clause); unmeasured "
        "pairs from a fitted distance model.",
        "- GPU throughput: GPU spec tables (iguane, MIT; Epoch AI ML hardware, CC-BY 4.0).",
        "- Prices: Prime Intellect GPU rental price snapshots, Oct-Nov 2025 (MIT).",
        "- Arrivals and request sizes: Azure LLM inference trace 2023 (Splitwise, ISCA 2024; CC-BY 4.0), "
        "scaled and tiled, bursts kept.",
        "",
    ]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve().parent))
    except ValueError:
        return path.name


def _replay_lines(replay: ReplayReport | None, s: ReportSettings) -> list[str]:
    if replay is None:
        return ["No replay in this report (`--replay-sample 0`)."]
    verdict = "**agree**" if replay.ok else f"**disagree on {len(replay.mismatches)} numbers**"
    lines = [
        f"A sample of the baseline Proxima run was replayed onto the real contracts (py-evm, fresh "
        f"deployment with the model's parameters): {len(replay.providers)} providers "
        f"({len(replay.cheaters)} slashed cheater(s)) and their {replay.clients} clients, "
        f"{replay.jobs:,} jobs paid in {replay.redemptions} voucher batches signed by the clients, "
        f"{replay.slashes} slashes proven with the provider's signed receipt and a verifier quorum's "
        f"verdicts, {replay.epochs} reward epochs, "
        f"rewards claimed; {replay.transactions:,} transactions. The model and the contracts {verdict}: "
        f"{len(replay.agreements)} of {len(replay.comparisons)} numbers equal to the wei (payouts, fees, "
        "stakes after slashing, slashed amounts, finder rewards, job counters, epoch pots and work, rewards "
        "claimed, treasury, pool left); ETH conserved: " + ("yes" if replay.conserved else "NO") + ".",
    ]
    if replay.chain_epoch_s != replay.model_epoch_s:
        lines += [
            "",
            f"(The model's reward epoch is {replay.model_epoch_s} s; py-evm's clock moves one second per "
            f"block, so the chain's epochs were {replay.chain_epoch_s} s, each model epoch replayed in the "
            "chain epoch of the same number.)",
        ]
    for c in replay.mismatches[:20]:
        lines.append(f"- MISMATCH {c.subject} {c.quantity}: model {c.model}, chain {c.chain}")
    return lines


def generate_report(settings: ReportSettings, out: Path, *, progress: Progress | None = None) -> ReportFiles:
    """Run the scenarios and write the report (see the module docstring).

    Args:
        settings: What to simulate.
        out: The Markdown file to write (plots go to ``out.parent / "simulation"``).
        progress: Called with ``(stage, done, total)``.
    """
    runs = run_scenarios(settings, progress=progress)
    return write_report(runs, out)


def command_line(args: Sequence[str]) -> str:
    """A shell-quoted command line for the report."""
    return shlex.join(["proxima-sim", *args])
