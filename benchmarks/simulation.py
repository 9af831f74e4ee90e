"""Speed and memory of the simulator: jobs per second and peak RSS, per policy, on a world from the real data.

Run ``.venv/bin/python benchmarks/simulation.py [--providers 10000] [--jobs 1000000] [--policies proxima,...]
[--seed 1] [--json out.json]`` (``--quick``: 1,000 providers and 20,000 jobs).

Each policy runs in its own child process (so that its peak resident memory, ``ru_maxrss``, is its own),
on the same world (:func:`proxima.sim.world.build_world` from ../shared/data) and the same arrivals
(:func:`proxima.sim.arrivals.replay_trace`, the Azure LLM trace at the default offered load of 0.5). The
world and arrivals are built in the child too and timed apart from the simulation. Figures: wall seconds of
:func:`proxima.sim.engine.simulate`, jobs per second, simulated seconds, events, peak RSS of the child, and a
few outcome figures (p50/p95 latency, share meeting the target) as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

POLICIES = ("centralized", "random", "cheapest", "nearest", "stake_weighted", "proxima")


def _one(policy: str, providers: int, jobs: int, seed: int, window_s: float) -> dict[str, Any]:
    from proxima.sim.arrivals import replay_trace
    from proxima.sim.data import load_world_data
    from proxima.sim.engine import SimConfig, simulate
    from proxima.sim.metrics import summarize
    from proxima.sim.world import WorldConfig, build_world

    t0 = time.perf_counter()
    data = load_world_data()
    world = build_world(data, WorldConfig(providers=providers, clients=max(100, providers // 2), seed=seed))
    arrivals = replay_trace(world, jobs, seed=seed)
    world.providers.addresses()
    world.hyperscale.addresses()
    setup_s = time.perf_counter() - t0
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = simulate(world, arrivals, SimConfig(policy=policy, seed=seed, window_s=window_s))
    summary = summarize(result, eth_usd=world.config.eth_usd)
    return {
        "policy": policy,
        "providers": providers,
        "jobs": jobs,
        "setup_s": setup_s,
        "wall_s": result.wall_s,
        "jobs_per_s": jobs / result.wall_s,
        "sim_s": result.horizon_s,
        "events": result.events,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "setup_rss_mb": rss_setup / 1024,
        "p50_ms": summary.p50_ms,
        "p95_ms": summary.p95_ms,
        "met_target": summary.met_target,
        "delivered": summary.delivered,
        "honest_slashed": summary.honest_slashed,
        "cheaters_caught": summary.cheaters_caught,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, default=0.05, help="gateway window, s (SimConfig.window_s)")
    parser.add_argument("--quick", action="store_true", help="1,000 providers and 20,000 jobs")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.providers, args.jobs = 1_000, 20_000
    if args.one:
        print(json.dumps(_one(args.one, args.providers, args.jobs, args.seed, args.window)))  # noqa: T201
        return 0
    policies = [p for p in args.policies.split(",") if p]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        parser.error(f"unknown policies {unknown}; expected some of {', '.join(POLICIES)}")
    console = Console(width=160)
    console.print(
        f"simulation benchmark: {args.providers:,} providers, {args.jobs:,} jobs, seed {args.seed}, window "
        f"{args.window} s; {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    rows = []
    for policy in policies:
        command = [
            sys.executable,
            __file__,
            "--one",
            policy,
            "--providers",
            str(args.providers),
            "--jobs",
            str(args.jobs),
            "--seed",
            str(args.seed),
            "--window",
            str(args.window),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            console.print(f"[red]{policy} failed[/red]\n{done.stderr[-3000:]}")
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        console.print(
            f"{policy}: {row['wall_s']:.1f} s, {row['jobs_per_s']:,.0f} jobs/s, "
            f"peak RSS {row['peak_rss_mb']:,.0f} MB"
        )
    table = Table(title="simulator speed and memory")
    for column in ("policy", "wall s", "jobs/s", "sim s", "events", "peak RSS MB", "p50 ms", "p95 ms", "met"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["policy"],
            f"{r['wall_s']:.1f}",
            f"{r['jobs_per_s']:,.0f}",
            f"{r['sim_s']:.1f}",
            f"{r['events']:,}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            f"{r['met_target']:.3f}",
        )
    console.print(table)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(args), "runs": rows, "load": os.getloadavg()}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
