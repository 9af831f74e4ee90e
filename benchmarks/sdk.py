"""End-to-end latency of a small job through the SDK, by phase, and the jobs/s one client sustains.

Run ``.venv/bin/python benchmarks/sdk.py [--quick] [--jobs N] [--throughput-jobs N] [--concurrency C]
[--rtt-ms MS] [--size N] [--json [FILE]]``.

The market is real and local: anvil with the contracts, three provider nodes (the node's ``JobServer`` with
numpy matmul, vouchers checked on chain, SQLite; its ``Advertiser`` gossiping signed offers), each behind a
delaying TCP proxy adding ``--rtt-ms`` of round trip (0 by default: the figures are then the software's own
cost), set up as the SDK's tests do (tests/sdk/_sdk_support.py). Two paths:

* **gateway**: ``Client.connect(url, api_key=...)`` against the gateway (``create_app`` with its real
  services) served by uvicorn on 127.0.0.1, in a thread of this process;
* **embedded**: ``Client.embedded(settings)``: the same services in the client, no HTTP.

Latency: ``--jobs`` small matmul jobs (``--size``, float32, result cache off) one after the other, after a
warm-up; for each phase the median and the 10th-90th percentile spread. Phases: ``submit`` (the client's
round trip to get the job accepted: validate, price, reserve, store), ``match``, ``dispatch`` (voucher,
signing, network, everything else of the market), ``queue`` and ``compute`` (the node's signed receipt),
``verify`` (the market's check), ``settle``, ``total`` (the market's whole job), ``client verify`` (the
client's own check: receipt signature and hash, Freivalds) and ``end to end`` (from ``submit()`` to the
verified result in the caller's hands).

Throughput: ``Client.map`` of ``--throughput-jobs`` jobs at ``--concurrency``. Everything shares the
machine's cores (the nodes too), so the figures are floors. ``--quick`` is a short run that checks the script
works; it exits 1 when a job fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sdk"))

from _sdk_support import Market, running_gateway, running_market  # noqa: E402

from proxima.sdk import Client, JobSpec  # noqa: E402
from proxima.sdk.logs import configure_logging  # noqa: E402

PHASES = (
    ("submit", "submit"),
    ("match", "match"),
    ("dispatch", "dispatch"),
    ("queue", "queue"),
    ("compute", "compute"),
    ("verify", "verify"),
    ("settle", "settle"),
    ("total", "market total"),
    ("client_verify", "client verify"),
    ("end_to_end", "end to end"),
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(client: Client, args: argparse.Namespace, seed0: int) -> dict[str, Any]:
    """Latency by phase over sequential jobs, then throughput with ``map``."""
    spec = {"cache": False}
    for i in range(args.warmup):
        client.submit(JobSpec.matmul(args.size, seed=seed0 + i, **spec)).result(timeout=60)
    samples: dict[str, list[float]] = {name: [] for name, _ in PHASES}
    providers: set[str] = set()
    for i in range(args.jobs):
        job = client.submit(JobSpec.matmul(args.size, seed=seed0 + 1000 + i, **spec))
        job.result(timeout=60)
        timing = job.timing.as_dict()
        for name, _ in PHASES:
            value = timing.get(name)
            if value is not None:
                samples[name].append(value)
        if job.provider is not None:
            providers.add(job.provider)
    phases = {
        name: {
            "median_ms": statistics.median(values),
            "p10_ms": percentile(values, 0.10),
            "p90_ms": percentile(values, 0.90),
            "n": len(values),
        }
        for name, values in samples.items()
        if values
    }
    specs = [JobSpec.matmul(args.size, seed=seed0 + 100_000 + i, **spec) for i in range(args.throughput_jobs)]
    started = time.perf_counter()
    outcomes = client.map(specs, progress=False, concurrency=args.concurrency, timeout=120)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    return {
        "phases": phases,
        "providers": sorted(providers),
        "throughput": {
            "jobs": len(specs),
            "concurrency": args.concurrency,
            "seconds": elapsed,
            "jobs_per_s": len(specs) / elapsed,
            "failed": len(failed),
            "first_error": None if not failed else str(failed[0].error),
        },
    }


@contextlib.contextmanager
def market_of(args: argparse.Namespace, root: Path) -> Iterator[Market]:
    rtt = args.rtt_ms / 1000
    nodes = (
        ("a", "eu-west", "DE", rtt),
        ("b", "eu-central", "PL", rtt + 0.001),
        ("c", "us-east", "US", rtt + 0.002),
    )
    with running_market(root, nodes) as market:
        yield market


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "size": args.size,
        "jobs": args.jobs,
        "rtt_ms": args.rtt_ms,
        "warmup": args.warmup,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with market_of(args, root) as market:
            with (
                running_gateway(market, root / "gateway", client_budget=10**20) as gateway,
                Client.connect(gateway.url, api_key=gateway.api_key) as client,
            ):
                client.wait_ready(len(market.nodes), measured=True, timeout=30)
                results["gateway"] = measure(client, args, seed0=1)
            with Client.embedded(market.embedded_settings(root / "embedded")) as client:
                client.fund(10**18)
                client.wait_ready(len(market.nodes), measured=True, timeout=30)
                results["embedded"] = measure(client, args, seed0=2)
    return results


def print_tables(results: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"End-to-end latency of a {results['size']}x{results['size']} matmul through the SDK "
        f"(ms; median [p10-p90] of {results['jobs']} jobs, +{results['rtt_ms']} ms RTT)"
    )
    table.add_column("phase")
    for mode in ("gateway", "embedded"):
        table.add_column(mode, justify="right")
    for name, label in PHASES:
        cells = []
        for mode in ("gateway", "embedded"):
            phase = results[mode]["phases"].get(name)
            cells.append(
                "-"
                if phase is None
                else f"{phase['median_ms']:.2f} [{phase['p10_ms']:.2f}-{phase['p90_ms']:.2f}]"
            )
        table.add_row(label, *cells)
    console.print(table)
    rate = Table(title="Jobs/s one client sustains (Client.map)")
    for column in ("path", "jobs", "concurrency", "seconds", "jobs/s", "failed"):
        rate.add_column(column, justify="right")
    for mode in ("gateway", "embedded"):
        t = results[mode]["throughput"]
        rate.add_row(
            mode,
            str(t["jobs"]),
            str(t["concurrency"]),
            f"{t['seconds']:.2f}",
            f"{t['jobs_per_s']:.1f}",
            str(t["failed"]),
        )
    console.print(rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=100, help="sequential jobs measured per path")
    parser.add_argument("--warmup", type=int, default=10, help="jobs run before measuring")
    parser.add_argument("--throughput-jobs", type=int, default=300, help="jobs in the map run")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs in flight in the map run")
    parser.add_argument("--size", type=int, default=64, help="matmul size (n x n x n, float32)")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round trip added to each node (ms)")
    parser.add_argument("--quick", action="store_true", help="a few jobs (checks the benchmark works)")
    parser.add_argument("--json", nargs="?", const="-", help="print JSON (or write it to this file)")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.warmup, args.throughput_jobs, args.concurrency = 5, 2, 12, 4
    configure_logging("WARNING")
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    results = run(args)
    print_tables(results, Console())
    if args.json == "-":
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    failed = sum(results[mode]["throughput"]["failed"] for mode in ("gateway", "embedded"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
