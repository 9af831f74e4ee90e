"""The demo's command line: ``python -m proxima.marketplace.demo [--workdir DIR] [--seed N] [-v]``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from proxima.marketplace.demo.scenario import DemoSettings, run_demo
from proxima.marketplace.demo.world import DemoSetupError
from proxima.sdk.logs import configure_logging

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when every outcome happened, 1 when one did not, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="proxima-demo",
        description="The whole Proxima marketplace on this machine: five provider nodes in five emulated "
        "countries (one dishonest), a verifier, the gateway and a client; every outcome checked.",
    )
    parser.add_argument("--workdir", type=Path, help="keep every process's files and logs here")
    parser.add_argument("--ripe-csv", type=Path, help="RIPE Atlas country RTT statistics (CSV)")
    parser.add_argument("--seed", type=int, default=7, help="fault injection seed of the dishonest node")
    parser.add_argument("--no-kill", action="store_true", help="do not kill a node mid-run")
    parser.add_argument("-v", "--verbose", action="store_true", help="show structured logs on stderr")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed must be in 0..2**63-1, got {args.seed}")
    configure_logging("INFO" if args.verbose else "WARNING")
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    started = time.monotonic()
    console.print("[bold]Proxima[/] — the marketplace on this machine, end to end")
    settings = DemoSettings(
        workdir=args.workdir, ripe_csv=args.ripe_csv, fault_seed=args.seed, kill=not args.no_kill
    )
    try:
        report = run_demo(settings, console)
    except DemoSetupError as err:
        console.print(f"[bold red]demo failed to start:[/] {err}")
        return 1
    failed = [o.name for o in report.outcomes if not o.ok]
    elapsed = time.monotonic() - started
    if failed:
        console.print(f"[bold red]{len(failed)} outcome(s) failed[/] ({', '.join(failed)}) in {elapsed:.1f}s")
        return 1
    console.print(f"[bold green]every outcome happened[/] in {elapsed:.1f}s")
    return 0
