"""``proxima-sim``: run the simulator, write the report, replay a sample onto the contracts.

    proxima-sim run     [--providers N] [--clients N] [--jobs N] [--policy NAME|all] [--seed S]
                        [--outage WHERE:START:DURATION] [--json]
    proxima-sim report  [--out docs/SIMULATION.md] [--quick] [--providers N] [--clients N] [--jobs N]
                        [--seed S] [--replay-sample N]
    proxima-sim replay  [--providers N] [--clients N] [--jobs N] [--seed S] [--sample N] [--json]

``WHERE`` is an ISO-2 country code (``DE``) or a region (``europe``, ``asia``, ``eu``...); ``START`` and
``DURATION`` are simulated seconds. The data comes from ``$PROXIMA_DATA_DIR`` or
``<repository>/../shared/data`` (``--data-dir`` overrides). Exit status: 0 on success, 1 on an error
(one line saying what to do) or, for ``replay``, when the model and the contracts disagree; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from proxima.contracts import ProximaError
from proxima.sdk.logs import configure_logging
from proxima.sim.policies import POLICIES

__all__ = ["main"]

_QUICK = {"providers": 30, "clients": 50, "jobs": 2_000, "replay_sample": 3}
_FULL = {"providers": 300, "clients": 600, "jobs": 30_000, "replay_sample": 6}


def _positive(name: str, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be in 1..{high:,}, got {value}")
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"--seed must be in 0..2**63-1, got {value}")
    return value


def _outage(text: str) -> tuple[str, float, float]:
    from proxima.sim.report import ReportError, parse_outage

    try:
        return parse_outage(text)
    except ReportError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _policy(text: str) -> str:
    if text != "all" and text not in POLICIES:
        raise argparse.ArgumentTypeError(
            f"--policy must be 'all' or one of {', '.join(POLICIES)}, got {text!r}"
        )
    return text


def _world_arguments(parser: argparse.ArgumentParser, defaults: dict[str, int] | None) -> None:
    d = defaults or {}
    parser.add_argument(
        "--providers",
        type=_positive("--providers", 1_000_000),
        default=d.get("providers"),
        help="market providers",
    )
    parser.add_argument(
        "--clients", type=_positive("--clients", 10_000_000), default=d.get("clients"), help="clients"
    )
    parser.add_argument(
        "--jobs", type=_positive("--jobs", 100_000_000), default=d.get("jobs"), help="jobs (arrivals)"
    )
    parser.add_argument(
        "--seed", type=_seed, default=7, help="seed of the world, arrivals and runs (default 7)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the shared data folder (default: $PROXIMA_DATA_DIR or <repository>/../shared/data)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxima-sim",
        description="Internet-scale simulation of the Proxima marketplace on real data (RIPE Atlas RTTs, GPU "
        "specs and prices, the Azure LLM trace) with the real matching engine.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="structured logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,report,replay}")

    run = sub.add_parser("run", help="simulate one policy (or all) and print the figures")
    _world_arguments(run, {"providers": 200, "clients": 400, "jobs": 20_000})
    run.add_argument("--policy", type=_policy, default="all", help=f"one of {', '.join(POLICIES)}, or all")
    run.add_argument(
        "--outage", type=_outage, help="a region outage WHERE:START:DURATION (e.g. europe:60:120)"
    )
    run.add_argument("--json", action="store_true", help="print JSON instead of a table")

    report = sub.add_parser("report", help="run every scenario and policy and write the Markdown report")
    _world_arguments(report, None)
    report.add_argument(
        "--out",
        type=Path,
        default=Path("docs/SIMULATION.md"),
        help="the report's path (plots go to simulation/ beside it)",
    )
    report.add_argument("--quick", action="store_true", help="a small run (30 providers, 2,000 jobs)")
    report.add_argument("--replay-sample", type=int, help="providers replayed onto the contracts (0: none)")

    replay = sub.add_parser(
        "replay", help="simulate Proxima, replay a sample onto the real contracts, compare"
    )
    _world_arguments(replay, {"providers": 40, "clients": 80, "jobs": 4_000})
    replay.add_argument("--sample", type=_positive("--sample", 1_000), default=5, help="providers to replay")
    replay.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxima-sim``; returns the exit status (0 ok, 1 error or disagreement, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging("INFO" if args.verbose else "WARNING")
    console = Console(highlight=False, stderr=False, width=None if sys.stdout.isatty() else 160)
    errors = Console(stderr=True, highlight=False)
    try:
        if args.command == "run":
            return _run(args, console)
        if args.command == "report":
            if args.replay_sample is not None and args.replay_sample < 0:
                parser.error(f"--replay-sample must be >= 0, got {args.replay_sample}")
            return _report(args, list(argv) if argv is not None else sys.argv[1:], console)
        return _replay(args, console)
    except ProximaError as err:
        errors.print(f"[bold red]proxima-sim {args.command}:[/] {err}")
        return 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _world(args: argparse.Namespace) -> tuple[Any, Any]:
    from proxima.sim.arrivals import replay_trace
    from proxima.sim.data import default_data_dir, load_world_data
    from proxima.sim.world import WorldConfig, build_world

    data = load_world_data(args.data_dir or default_data_dir())
    world = build_world(data, WorldConfig(providers=args.providers, clients=args.clients, seed=args.seed))
    return world, replay_trace(world, args.jobs, seed=args.seed)


def _run(args: argparse.Namespace, console: Console) -> int:
    from proxima.sim.engine import SimConfig, simulate
    from proxima.sim.metrics import summarize
    from proxima.sim.report import outage_spec

    world, arrivals = _world(args)
    outage = outage_spec(*args.outage) if args.outage else None
    policies = POLICIES if args.policy == "all" else (args.policy,)
    summaries = []
    with _progress(console) as bar:
        task = bar.add_task("simulating", total=len(policies))
        for policy in policies:
            bar.update(task, description=f"simulating {policy}")
            result = simulate(world, arrivals, SimConfig(policy=policy, seed=args.seed, outage=outage))
            summaries.append(summarize(result, eth_usd=world.config.eth_usd))
            bar.advance(task)
    if args.json:
        console.print_json(json.dumps([_jsonable(s.as_dict()) for s in summaries]))
        return 0
    table = Table(
        title=f"{args.providers:,} providers, {args.jobs:,} jobs, seed {args.seed}"
        + (f", outage {args.outage[0]} {args.outage[1]:g}s+{args.outage[2]:g}s" if outage else "")
    )
    for column in (
        "policy",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "met target",
        "cost/job ¢",
        "utilisation",
        "Gini",
        "caught",
        "honest slashed",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for s in summaries:
        cost = (
            "n/a"
            if s.cost_per_job_usd is None or math.isnan(s.cost_per_job_usd)
            else f"{100 * s.cost_per_job_usd:.4f}"
        )
        table.add_row(
            s.policy,
            f"{s.p50_ms:,.0f}",
            f"{s.p95_ms:,.0f}",
            f"{s.p99_ms:,.0f}",
            f"{100 * s.met_target:.1f} %",
            cost,
            f"{100 * s.utilisation:.1f} %",
            f"{s.gini_earnings:.3f}",
            f"{s.cheaters_caught}/{s.cheaters}",
            str(s.honest_slashed),
        )
    console.print(table)
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _report(args: argparse.Namespace, argv: list[str], console: Console) -> int:
    from proxima.sim.report import ReportSettings, command_line, generate_report

    scale = _QUICK if args.quick else _FULL
    settings = ReportSettings(
        providers=args.providers or scale["providers"],
        clients=args.clients or scale["clients"],
        jobs=args.jobs or scale["jobs"],
        seed=args.seed,
        replay_sample=scale["replay_sample"] if args.replay_sample is None else args.replay_sample,
        command=command_line([a for a in argv if a not in ("-v", "--verbose")]),
        data_dir=args.data_dir,
    )
    with _progress(console) as bar:
        task = bar.add_task("report", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"report: {stage}", completed=done, total=total)

        files = generate_report(settings, args.out, progress=progress)
    console.print(f"wrote {files.markdown} and {len(files.plots)} plots in {files.plots[0].parent}")
    return 0


def _replay(args: argparse.Namespace, console: Console) -> int:
    from proxima.sim.engine import SimConfig, simulate
    from proxima.sim.replay import replay_sample

    world, arrivals = _world(args)
    result = simulate(world, arrivals, SimConfig(policy="proxima", seed=args.seed))
    with _progress(console) as bar:
        task = bar.add_task("replay", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"replay: {stage}", completed=done, total=total)

        report = replay_sample(result, world, sample=args.sample, seed=args.seed, progress=progress)
    if args.json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(report.summary())
        for c in report.mismatches:
            console.print(f"[red]MISMATCH[/] {c.subject} {c.quantity}: model {c.model}, chain {c.chain}")
    return 0 if report.ok else 1
