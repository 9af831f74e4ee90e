"""Audit indexer speed: events indexed per second from anvil, and the time of ``verify`` on the same index.

Run ``.venv/bin/python benchmarks/audit.py [--quick] [--events 10000,100000] [--repeats 3] [--per-tx 500]
[--json [FILE]]``.

One anvil chain (started here, Prague) gets the Proxima contracts and two staked providers, then
provider-signed attestation batches of ``--per-tx`` measurements each (``submitAttestationBatch``: one
transaction, one ``AttestationSubmitted`` event per measurement) until it holds the largest ``--events``
count. For each count
``N``, a fresh SQLite index file is synced from the deployment block up to the block where the chain reached
``N`` events, ``--repeats`` times, with the indexer's defaults (adaptive ``eth_getLogs`` ranges, batched
transaction and receipt fetches, one SQL transaction per range); the table shows the median sync time, its
spread (min-max) and events per second at the median. Then ``proxima.audit.verify.verify`` runs once on the
last of those indexes (signatures re-checked from calldata, the ledger recomputed from events and compared
with contract state at the checkpoint); if that module is not installed yet, the ledger fold alone
(``ledger_of``) is timed and the row says so.

Exits 1 if an index does not hold exactly the chain's events.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

from proxima.audit.indexer import Indexer, connect
from proxima.audit.store import AuditStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, Chain, Deployment
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import AttestationBatch, LocalSigner, Measurement
from proxima.sdk.peerid import peer_id_from_key

log = logging.getLogger("benchmarks.audit")


@dataclass(frozen=True)
class Row:
    """Figures for one event count."""

    events: int
    blocks: int
    transactions: int
    sync_median_s: float
    sync_min_s: float
    sync_max_s: float
    events_per_s: float
    check: str  # "verify" or "ledger_of (verify not available)"
    check_s: float | None
    check_detail: str


def generate(chain: Chain, per_tx: int, targets: list[int]) -> tuple[Deployment, dict[int, int]]:
    """Deploy, then attest until the chain holds ``max(targets)`` events; the block reaching each target."""
    deployment = deploy_all(chain, chain.accounts[0])
    contracts = ProximaContracts.from_deployment(chain, deployment)
    providers = chain.accounts[1:3]
    for account in providers:
        contracts.registry.register(account, peer_id_from_key(bytes(account.key)), b"\x11" * 32, 10 * 10**18)
    events = len(contracts.logs())
    reached: dict[int, int] = {}
    batch_no = 0
    nonces = {p.address: 0 for p in providers}
    domain = contracts.attestations.domain
    started = time.perf_counter()
    for target in sorted(targets):
        while events < target:
            provider = providers[batch_no % 2]
            count = min(per_tx, target - events)
            batch = AttestationBatch(
                provider=provider.address,
                epoch=1,
                nonce=nonces[provider.address],
                deadline=chain.now() + 86_400,
                measurements=tuple(
                    Measurement(
                        benchmark_id=keccak(text=f"{batch_no}/{i}"),
                        gemm_flops=10**12 + i,
                        mem_bandwidth=10**11 + batch_no,
                    )
                    for i in range(count)
                ),
            )
            contracts.attestations.submit_attestation_batch(
                chain.accounts[9], batch.sign(LocalSigner(provider), domain)
            )
            nonces[provider.address] += 1
            events += count
            batch_no += 1
        reached[target] = chain.block_number()
    log.warning(
        "generated %d events in %d transactions in %.1fs", events, batch_no, time.perf_counter() - started
    )
    return deployment, reached


def sync_once(
    url: str, deployment: Deployment, to_block: int, folder: Path, name: str
) -> tuple[float, AuditStore]:
    store = AuditStore(folder / f"{name}.db")
    indexer = Indexer(connect(url), store, deployment)
    started = time.perf_counter()
    indexer.sync(to_block=to_block)
    return time.perf_counter() - started, store


def check(store: AuditStore, url: str) -> tuple[str, float | None, str]:
    """Time ``verify`` on the index (or the ledger fold, if verify is not there yet)."""
    w3 = connect(url)
    try:
        from proxima.audit.verify import verify
    except ImportError:
        verify = None
    if verify is not None:
        started = time.perf_counter()
        report = verify(store, w3)
        elapsed = time.perf_counter() - started
        detail = f"ok={report.ok}, discrepancies={len(report.discrepancies)}, checked={dict(report.checked)}"
        return "verify", elapsed, detail
    try:
        from proxima.audit.ledger import ledger_of, read_parameters
    except ImportError:
        return "nothing (neither verify nor the ledger exists yet)", None, ""
    deployment = store.deployment
    assert deployment is not None
    parameters = read_parameters(w3, deployment)
    started = time.perf_counter()
    ledger = ledger_of(store, parameters)
    elapsed = time.perf_counter() - started
    return "ledger_of (verify not available)", elapsed, f"attestations={len(ledger.attestations)}"


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with AnvilProcess(extra_args=("--gas-limit", "60000000")) as anvil, anvil.connect() as chain:
        deployment, reached = generate(chain, args.per_tx, args.events)
        expected = ProximaContracts.from_deployment(chain, deployment)
        with tempfile.TemporaryDirectory(prefix="proxima-audit-bench-") as tmp:
            folder = Path(tmp)
            for target in args.events:
                to_block = reached[target]
                times: list[float] = []
                store: AuditStore | None = None
                for repeat in range(args.repeats):
                    if store is not None:
                        store.close()
                    elapsed, store = sync_once(anvil.url, deployment, to_block, folder, f"{target}-{repeat}")
                    times.append(elapsed)
                    log.warning("%d events: sync %d took %.2fs", target, repeat + 1, elapsed)
                assert store is not None
                indexed = [(e.block_number, e.log_index) for e in store.events()]
                on_chain = [(e.block_number, e.log_index) for e in expected.logs(to_block=to_block)]
                if indexed != on_chain:
                    raise SystemExit(
                        f"index of {target} events differs from the chain ({len(indexed)} vs {len(on_chain)})"
                    )
                what, check_s, detail = check(store, anvil.url)
                median = statistics.median(times)
                rows.append(
                    Row(
                        events=len(indexed),
                        blocks=to_block - deployment.block_number + 1,
                        transactions=sum(1 for _ in store.transactions()),
                        sync_median_s=median,
                        sync_min_s=min(times),
                        sync_max_s=max(times),
                        events_per_s=len(indexed) / median,
                        check=what,
                        check_s=check_s,
                        check_detail=detail,
                    )
                )
                store.close()
    return rows


def markdown(rows: list[Row], repeats: int) -> str:
    lines = [
        "| events | blocks | txs | sync median (s) | spread min-max (s) | events/s | check | check (s) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        check_s = "-" if r.check_s is None else f"{r.check_s:.2f}"
        lines.append(
            f"| {r.events:,} | {r.blocks} | {r.transactions} | {r.sync_median_s:.2f} | "
            f"{r.sync_min_s:.2f}-{r.sync_max_s:.2f} | {r.events_per_s:,.0f} | {r.check} | {check_s} |"
        )
    lines.append(f"\n{repeats} syncs per row into a fresh SQLite file each; anvil on 127.0.0.1.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", default="10000,100000", help="comma-separated event counts")
    parser.add_argument("--repeats", type=int, default=3, help="syncs per event count")
    parser.add_argument("--per-tx", type=int, default=500, help="measurements per attestation batch")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 events, one sync (checks the benchmark works)"
    )
    parser.add_argument("--json", nargs="?", const="-", help="print JSON (or write it to this file)")
    args = parser.parse_args(argv)
    try:
        args.events = [int(x) for x in str(args.events).split(",") if x.strip()]
    except ValueError:
        parser.error("--events takes comma-separated integers")
    if args.quick:
        args.events, args.repeats = [1_000], 1
    if not args.events or min(args.events) < 100 or args.repeats < 1 or not 1 <= args.per_tx <= 2_000:
        parser.error("--events must be >= 100 each, --repeats >= 1, --per-tx in 1..2000")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = run(args)
    if args.json is not None:
        payload: dict[str, Any] = {
            "repeats": args.repeats,
            "per_tx": args.per_tx,
            "rows": [asdict(r) for r in rows],
        }
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if args.json != "-":
        sys.stdout.write(markdown(rows, args.repeats) + "\n")
        for r in rows:
            if r.check_detail:
                sys.stdout.write(f"{r.events:,} events, {r.check}: {r.check_detail}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
