"""``proxima-audit``: index the Proxima contracts' events, query the ledger, verify it, serve it.

    proxima-audit sync           index new blocks into the database (progress bar; --follow keeps going)
    proxima-audit providers      providers and verifiers: stake, reliability, throughput, earnings, slashes
    proxima-audit provider ADDR  one account in detail (attestations, reports, slashes, jobs, epochs)
    proxima-audit jobs           escrow jobs
    proxima-audit slashes        slashes with their evidence
    proxima-audit attestations   attestations and verifier reports
    proxima-audit rewards        reward epochs
    proxima-audit export         a table as CSV or JSON (--what, --format, --out)
    proxima-audit verify         re-check the index against the chain; exit 1 on any discrepancy
    proxima-audit serve          the HTTP API and web explorer

Global options (before or after the command): ``--db PATH`` (default ``$PROXIMA_AUDIT_DB`` or
``./proxima-audit.sqlite``), ``--rpc URL`` (default ``$PROXIMA_AUDIT_RPC``, else the deployment file's
``rpc_url``, else ``http://127.0.0.1:8545``, where ``proxima-devnet`` listens) and ``--deployment FILE``
(default ``.devnet/deployment.json``, the file ``proxima-devnet`` writes). The query and export commands read
the database only (no RPC needed once ``sync`` has run); ``sync``, ``verify`` and ``serve`` talk to the RPC
endpoint, whose chain id must be the deployment's.

Exit status: 0 on success, 1 on an error (one line on stderr that says what to do) or when ``verify`` finds
a discrepancy, 2 on bad usage, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

import requests
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from web3 import Web3
from web3.exceptions import Web3Exception

from proxima.audit import queries
from proxima.audit.errors import AuditError
from proxima.audit.indexer import IndexerConnectionError, SyncProgress, SyncResult, connect
from proxima.audit.service import AuditService, fetch_offers
from proxima.audit.store import AuditStore
from proxima.contracts import ProximaError
from proxima.sdk.chain.devnet import DEFAULT_DEPLOYMENT_PATH, Deployment
from proxima.sdk.logs import configure_logging

__all__ = ["DEFAULT_DB", "DEFAULT_RPC", "AuditCommandError", "main"]

log = logging.getLogger(__name__)

DEFAULT_DB: Final = "proxima-audit.sqlite"
"""The database when neither ``--db`` nor ``$PROXIMA_AUDIT_DB`` is given (in the working directory)."""

DEFAULT_RPC: Final = "http://127.0.0.1:8545"
"""The endpoint ``proxima-devnet`` serves, used when nothing else names one."""

_ETH: Final = 10**18


class AuditCommandError(AuditError):
    """A command cannot run as asked (unreachable RPC, wrong chain, no index, port busy...)."""


# --- plumbing ---------------------------------------------------------------------------------------------


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db or os.environ.get("PROXIMA_AUDIT_DB") or DEFAULT_DB).expanduser()


def _deployment_path(args: argparse.Namespace) -> Path:
    return Path(args.deployment or DEFAULT_DEPLOYMENT_PATH).expanduser()


def _load_deployment(args: argparse.Namespace) -> Deployment:
    return Deployment.load(_deployment_path(args))


def _rpc_url(args: argparse.Namespace, deployment: Deployment | None) -> str:
    if args.rpc:
        return str(args.rpc)
    from_env = os.environ.get("PROXIMA_AUDIT_RPC")
    if from_env:
        return from_env
    if deployment is not None and deployment.rpc_url:
        return deployment.rpc_url
    return DEFAULT_RPC


def _connect(url: str, deployment: Deployment) -> Web3:
    """A Web3 on ``url`` whose chain is the deployment's (one line of error otherwise)."""
    try:
        w3 = connect(url)
        chain_id = int(w3.eth.chain_id)
    except (IndexerConnectionError, requests.RequestException, Web3Exception, OSError, ValueError) as err:
        raise AuditCommandError(
            f"cannot reach the JSON-RPC endpoint {url} ({err}); start the devnet (proxima-devnet) or pass "
            "--rpc URL"
        ) from err
    if chain_id != deployment.chain_id:
        raise AuditCommandError(
            f"the endpoint {url} serves chain id {chain_id}, the deployment is on chain "
            f"{deployment.chain_id}; pass the --rpc of that chain or the --deployment of this one"
        )
    return w3


def _open_offline(args: argparse.Namespace) -> AuditService:
    """A service on the existing database (read-only); the RPC only if the parameters were never saved."""
    path = _db_path(args)
    if not path.is_file():
        raise AuditCommandError(f"no audit index at {path}; run `proxima-audit sync` first (or pass --db)")
    store = AuditStore(path, readonly=True)
    deployment = store.deployment
    if deployment is None or store.checkpoint() is None:
        store.close()
        raise AuditCommandError(f"the audit index {path} is empty; run `proxima-audit sync` first")
    w3 = None
    if store.get_meta("ledger_parameters") is None:
        w3 = _connect(_rpc_url(args, deployment), deployment)
    return AuditService(store, w3, deployment)


def _open_online(args: argparse.Namespace, *, writable: bool) -> AuditService:
    """A service with the RPC endpoint, on the database (created when ``writable``)."""
    deployment = _load_deployment(args)
    w3 = _connect(_rpc_url(args, deployment), deployment)
    path = _db_path(args)
    if writable:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise AuditCommandError(f"no audit index at {path}; run `proxima-audit sync` first (or pass --db)")
    store = AuditStore(path, readonly=not writable)
    stored = store.deployment
    if stored is not None and stored.contracts != deployment.contracts:
        store.close()
        raise AuditCommandError(
            f"{path} indexes another deployment (chain {stored.chain_id}, block {stored.block_number}); "
            "pass its --deployment or another --db"
        )
    return AuditService(store, w3, deployment, confirmations=getattr(args, "confirmations", None))


@contextmanager
def _service(
    args: argparse.Namespace, *, online: bool = False, writable: bool = False
) -> Iterator[AuditService]:
    service = _open_online(args, writable=writable) if online else _open_offline(args)
    try:
        yield service
    finally:
        service.stop()
        service.store.close()


def _eth(wei: int) -> str:
    """Wei as ETH with every digit kept (``1.5``, ``0.00002``); tables say "(ETH)" in their headers."""
    text = format(Decimal(wei) / Decimal(_ETH), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _amount(header: str) -> Column:
    """A column of ETH amounts: right-aligned, digits folded onto a second line rather than cut."""
    return Column(header, justify="right", overflow="fold")


def _short(value: str, keep: int = 10) -> str:
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-6:]}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _flops(value: float | int | None) -> str:
    if value is None or value == 0:
        return "—"
    number = float(value)
    for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("MFLOP/s", 1e6)):
        if number >= scale:
            return f"{number / scale:.2f} {unit}"
    return f"{number:.0f} FLOP/s"


def _write_json(out: TextIO, rows: Any) -> None:
    out.write(json.dumps(rows, indent=2) + "\n")


def _page_json(page: Any) -> Any:
    return page.model_dump(mode="json")


def _footer(console: Console, page: Any, noun: str) -> None:
    shown = len(page.data)
    if page.total > shown:
        console.print(
            f"{shown} of {page.total} {noun} (offset {page.offset}); --limit/--offset for more; "
            f"block {page.block_number}"
        )
    else:
        console.print(f"{page.total} {noun} at block {page.block_number}")


# --- commands ---------------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace, console: Console) -> int:
    with _service(args, online=True, writable=True) as service:
        result = _sync_once(service, args, console)
        _show_sync(console, result, service)
        if not args.follow:
            return 0
        console.print(f"following the chain every {args.interval:g} s; Ctrl-C to stop")
        stop = threading.Event()
        try:
            while not stop.wait(args.interval):
                result = service.sync(confirmations=args.confirmations)
                if result.events or result.rolled_back:
                    _show_sync(console, result, service)
        except KeyboardInterrupt:
            console.print("stopped")
        return 0


def _sync_once(service: AuditService, args: argparse.Namespace, console: Console) -> SyncResult:
    with Progress(
        TextColumn("indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("blocks  {task.fields[events]} events"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task: TaskID | None = None

        def progress(p: SyncProgress) -> None:
            nonlocal task
            total = max(p.to_block - p.from_block + 1, 1)
            done = min(max(p.current - p.from_block + 1, 0), total)
            if task is None:
                task = bar.add_task("sync", total=total, events=p.events)
            bar.update(task, total=total, completed=done, events=p.events)

        return service.sync(args.to_block, confirmations=args.confirmations, progress=progress)


def _show_sync(console: Console, result: SyncResult, service: AuditService) -> None:
    checkpoint = service.checkpoint()
    at = "nothing indexed yet" if checkpoint is None else f"index at block {checkpoint.number}"
    rolled = f", {result.rolled_back} events rolled back (reorg)" if result.rolled_back else ""
    if result.to_block < result.from_block:
        console.print(f"up to date; {at}{rolled}")
        return
    console.print(
        f"indexed blocks {result.from_block}-{result.to_block}: {result.events} events, "
        f"{result.transactions} transactions in {result.elapsed_s:.1f} s{rolled}; {at}"
    )


def cmd_providers(args: argparse.Namespace, console: Console) -> int:
    with _service(args) as service:
        page = queries.providers(
            service.ledger(),
            service.locations(),
            role=args.role,
            sort=args.sort,
            descending=not args.ascending,
            limit=args.limit,
            offset=args.offset,
        )
    if args.json:
        _write_json(sys.stdout, _page_json(page))
        return 0
    table = Table(
        Column("address", no_wrap=True, min_width=42),  # never cut an address
        "role",
        _amount("stake (ETH)"),
        "reliability",
        "verified throughput",
        _amount("earned (ETH)"),
        "jobs ok/failed",
        _amount("slashed (ETH)"),
    )
    for row in page.data:
        table.add_row(
            row.address,
            row.role,
            _eth(row.stake_wei),
            _pct(row.reliability),
            _flops(row.verified_throughput_flops),
            _eth(row.earned_wei),
            f"{row.jobs_completed}/{row.jobs_failed}",
            f"{_eth(row.total_slashed_wei)} ({row.slashes}x)" if row.slashes else "—",
        )
    console.print(table)
    _footer(console, page, "accounts")
    return 0


def cmd_provider(args: argparse.Namespace, console: Console) -> int:
    address = _address_argument(args.address, "ADDRESS")
    with _service(args) as service:
        detail = queries.provider_detail(service.ledger(), address, service.locations())
    if detail is None:
        raise AuditCommandError(f"no registered account {address} in the index")
    if args.json:
        _write_json(sys.stdout, detail.model_dump(mode="json"))
        return 0
    row = detail.account
    facts = Table(show_header=False, title=f"{row.role} {row.address}")
    facts.add_column("field")
    facts.add_column("value")
    for name, value in (
        ("stake (ETH)", _eth(row.stake_wei)),
        ("unbonding (ETH)", _eth(row.unbonding_wei)),
        ("reliability", _pct(row.reliability)),
        ("verified throughput", _flops(row.verified_throughput_flops)),
        ("attested GEMM", _flops(row.gemm_flops)),
        (
            "jobs completed / failed / disputes lost",
            f"{row.jobs_completed} / {row.jobs_failed} / {row.disputes_lost}",
        ),
        ("earned (ETH)", _eth(row.earned_wei)),
        (
            "rewards claimed / claimable (ETH)",
            f"{_eth(row.rewards_claimed_wei)} / {_eth(row.rewards_claimable_wei)}",
        ),
        ("slashed (ETH)", f"{_eth(row.total_slashed_wei)} in {row.slashes} slash(es)"),
        (
            "location",
            "—" if row.country is None else f"{row.country} / {row.region} ({queries.LOCATION_NOTE})",
        ),
    ):
        facts.add_row(name, value)
    console.print(facts)
    if detail.slashes:
        console.print(_slash_table(detail.slashes, "slashes"))
    if detail.attestations:
        console.print(_attestation_table(detail.attestations, "attestations and reports"))
    if detail.jobs:
        console.print(_job_table(detail.jobs, "escrow jobs"))
    if detail.epochs:
        epochs = Table("epoch", "work", _amount("share of pot (ETH)"), title="reward epochs")
        for e in detail.epochs:
            epochs.add_row(str(e.epoch), str(e.work), _eth(e.reward_wei) + ("" if e.final else " (so far)"))
        console.print(epochs)
    console.print(f"at block {detail.block_number}")
    return 0


def _job_table(rows: Sequence[queries.JobRow], title: str | None = None) -> Table:
    table = Table(
        "job",
        "status",
        "client",
        "provider",
        _amount("price (ETH)"),
        _amount("payout (ETH)"),
        "opened (block)",
        title=title,
    )
    for j in rows:
        table.add_row(
            _short(j.job_id),
            j.status,
            _short(j.client),
            _short(j.provider),
            _eth(j.price_wei),
            _eth(j.payout_wei),
            str(j.opened_block),
        )
    return table


def _slash_table(rows: Sequence[queries.SlashRow], title: str | None = None) -> Table:
    table = Table(
        "block",
        "kind",
        "account",
        _amount("amount (ETH)"),
        "finder (reward, ETH)",
        "job",
        "transaction",
        "evidence",
        title=title,
    )
    for s in rows:
        table.add_row(
            str(s.block_number),
            s.kind,
            _short(s.account),
            _eth(s.amount_wei),
            "—" if s.finder is None else f"{_short(s.finder)} ({_eth(s.finder_reward_wei)})",
            "—" if s.job_id is None else _short(s.job_id),
            _short(s.tx_hash),
            "\n".join(f"{k}={_short(v)}" for k, v in s.evidence.items()) or "—",
        )
    return table


def _attestation_table(rows: Sequence[queries.AttestationRow], title: str | None = None) -> Table:
    table = Table("block", "kind", "provider", "signer", "GEMM", "passed", "transaction", title=title)
    for a in rows:
        table.add_row(
            str(a.block_number),
            a.kind,
            _short(a.provider),
            _short(a.signer),
            _flops(a.gemm_flops),
            "—" if a.passed is None else ("yes" if a.passed else "NO"),
            _short(a.tx_hash),
        )
    return table


def _show_page(
    args: argparse.Namespace,
    console: Console,
    page: Any,
    table: Callable[[Any], Table],
    noun: str,
) -> int:
    """Print one page of rows: JSON with ``--json``, else a table and the paging footer."""
    if args.json:
        _write_json(sys.stdout, _page_json(page))
        return 0
    console.print(table(page.data))
    _footer(console, page, noun)
    return 0


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    with _service(args) as service:
        page = queries.jobs(
            service.ledger(),
            provider=_optional_address(args.provider, "--provider"),
            client=_optional_address(args.client, "--client"),
            status=args.status,
            descending=not args.ascending,
            limit=args.limit,
            offset=args.offset,
        )
    return _show_page(args, console, page, _job_table, "jobs")


def cmd_slashes(args: argparse.Namespace, console: Console) -> int:
    with _service(args) as service:
        page = queries.slashes(
            service.ledger(),
            provider=_optional_address(args.provider, "--provider"),
            kind=args.kind,
            descending=not args.ascending,
            limit=args.limit,
            offset=args.offset,
        )
    return _show_page(args, console, page, _slash_table, "slashes")


def cmd_attestations(args: argparse.Namespace, console: Console) -> int:
    with _service(args) as service:
        page = queries.attestations(
            service.ledger(),
            provider=_optional_address(args.provider, "--provider"),
            kind=args.kind,
            descending=not args.ascending,
            limit=args.limit,
            offset=args.offset,
        )
    return _show_page(args, console, page, _attestation_table, "attestations and reports")


def cmd_rewards(args: argparse.Namespace, console: Console) -> int:
    with _service(args) as service:
        page = queries.reward_epochs(
            service.ledger(), descending=not args.ascending, limit=args.limit, offset=args.offset
        )
    if args.json:
        _write_json(sys.stdout, _page_json(page))
        return 0
    table = Table(
        "epoch",
        "ended",
        _amount("pot (ETH)"),
        _amount("treasury (ETH)"),
        _amount("rolled in/out (ETH)"),
        "total work",
        "providers",
        _amount("claimed (ETH)"),
    )
    for e in page.data:
        table.add_row(
            str(e.epoch),
            "yes" if e.ended else "no (current)",
            _eth(e.pot_wei),
            _eth(e.treasury_wei),
            f"{_eth(e.rolled_in_wei)} / {_eth(e.rolled_out_wei)}",
            str(e.total_work),
            str(e.providers),
            _eth(e.claimed_wei),
        )
    console.print(table)
    _footer(console, page, "epochs")
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    with _service(args) as service:
        text = queries.export(service.ledger(), args.what, args.format, service.locations())
    if args.out is None or str(args.out) == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out).expanduser()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise AuditCommandError(f"cannot write {out}: {err.strerror or err}") from err
    console.print(f"wrote {args.what} ({args.format}) to {out}")
    return 0


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    with _service(args, online=True) as service:
        if service.checkpoint() is None:
            raise AuditCommandError(
                f"the audit index {service.where} is empty; run `proxima-audit sync` first"
            )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=max(total, 1))
                bar.update(tasks[stage], completed=done, total=max(total, 1))

            report = service.verify(progress)
    if args.json:
        from proxima.audit.api import report_public

        _write_json(sys.stdout, report_public(report).model_dump(mode="json"))
        return 0 if report.ok else 1
    if report.discrepancies:
        table = Table("kind", "subject", "expected", "actual", "detail", title="discrepancies")
        for d in report.discrepancies:
            table.add_row(d.kind, d.subject, d.expected, d.actual, d.detail)
        console.print(table)
    checked = ", ".join(f"{n} {what}" for what, n in sorted(report.checked.items()))
    if report.ok:
        console.print(f"OK at block {report.block_number}: no discrepancy ({checked})")
        return 0
    console.print(
        f"FAILED at block {report.block_number}: {len(report.discrepancies)} discrepancies ({checked})"
    )
    return 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise AuditCommandError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port"
        ) from err
    return sock


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from proxima.audit.api import create_app

    configure_logging("DEBUG" if args.verbose else "INFO", as_json=args.log_json)
    sock = _bind(args.host, args.port)
    try:
        if args.offline:
            service = _open_offline(args)
        else:
            service = _open_online(args, writable=args.follow)
            service.follow = args.follow
            service.follow_interval_s = args.interval
    except BaseException:
        sock.close()
        raise
    try:
        if args.offers:
            url, key = args.offers, os.environ.get(args.offers_key_env)
            accepted = service.set_offers(fetch_offers(url, key))  # the first read fails loudly
            log.info("provider locations loaded", extra={"offers": accepted, "from": url})
            service.offer_source = lambda: fetch_offers(url, key)
            service.offer_refresh_s = 60.0
        app = create_app(service)
        host, port = sock.getsockname()[:2]
        log.info(
            "auditor listening", extra={"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs"}
        )
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        server.run(sockets=[sock])
    finally:
        sock.close()
        service.stop()
        service.store.close()
    return 0 if server.started else 1


def _address_argument(value: str, name: str) -> str:
    from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address

    if not is_hex_address(value):
        raise AuditCommandError(f"{name} {value!r} is not an address (0x + 40 hex digits)")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise AuditCommandError(f"{name} {value} has an invalid EIP-55 checksum (typo?)")
    return str(to_checksum_address(value))


def _optional_address(value: str | None, name: str) -> str | None:
    return None if value is None else _address_argument(value, name)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from err
    if value < 1 or value > 100_000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 100000")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from err
    if not 0.05 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{value} is not between 0.05 and 86400 seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxima-audit",
        description="Proxima auditor: index the contracts' events, query and verify the ledger, serve it.",
    )

    def globals_(p: argparse.ArgumentParser, default: Any) -> None:
        p.add_argument(
            "--db", default=default, help=f"the audit database (default $PROXIMA_AUDIT_DB or ./{DEFAULT_DB})"
        )
        p.add_argument(
            "--rpc",
            default=default,
            help="JSON-RPC URL (default $PROXIMA_AUDIT_RPC, the deployment's rpc_url, or "
            + DEFAULT_RPC
            + ")",
        )
        p.add_argument(
            "--deployment",
            default=default,
            help=f"deployment file (default {DEFAULT_DEPLOYMENT_PATH}, written by proxima-devnet)",
        )

    globals_(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    globals_(common, argparse.SUPPRESS)  # also accepted after the command, without resetting them

    listing = argparse.ArgumentParser(add_help=False, parents=[common])
    listing.add_argument("--limit", type=_positive, default=50, help="rows to show (default 50)")
    listing.add_argument("--offset", type=_non_negative, default=0, help="rows to skip")
    listing.add_argument("--ascending", action="store_true", help="oldest or smallest first")
    listing.add_argument("--json", action="store_true", help="print JSON (amounts in wei, as strings)")

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = sub.add_parser("sync", parents=[common], help="index new blocks into the database")
    sync.add_argument(
        "--to-block", type=_non_negative, help="last block to index (default: the confirmed head)"
    )
    sync.add_argument("--confirmations", type=_non_negative, help="blocks kept back from the head")
    sync.add_argument("--follow", action="store_true", help="keep indexing new blocks until Ctrl-C")
    sync.add_argument("--interval", type=_seconds, default=2.0, help="seconds between polls with --follow")
    sync.set_defaults(handler=cmd_sync)

    providers = sub.add_parser("providers", parents=[listing], help="providers and verifiers")
    providers.add_argument("--role", choices=["provider", "verifier"], help="only this role")
    providers.add_argument("--sort", choices=list(queries.PROVIDER_SORTS), default="stake", help="sort key")
    providers.set_defaults(handler=cmd_providers)

    provider = sub.add_parser("provider", parents=[common], help="one provider or verifier in detail")
    provider.add_argument("address", metavar="ADDRESS", help="the account's address")
    provider.add_argument("--json", action="store_true", help="print JSON")
    provider.set_defaults(handler=cmd_provider)

    jobs = sub.add_parser("jobs", parents=[listing], help="escrow jobs")
    jobs.add_argument("--provider", help="only this provider's jobs")
    jobs.add_argument("--client", help="only this client's jobs")
    jobs.add_argument("--status", choices=list(queries.JOB_STATUSES), help="only jobs in this status")
    jobs.set_defaults(handler=cmd_jobs)

    slashes = sub.add_parser("slashes", parents=[listing], help="slashes with their evidence")
    slashes.add_argument("--provider", help="only this account's slashes")
    slashes.add_argument("--kind", choices=list(queries.SLASH_KINDS), help="only this kind")
    slashes.set_defaults(handler=cmd_slashes)

    attestations = sub.add_parser("attestations", parents=[listing], help="attestations and verifier reports")
    attestations.add_argument("--provider", help="only about this provider")
    attestations.add_argument("--kind", choices=["attestation", "report"], help="only this kind")
    attestations.set_defaults(handler=cmd_attestations)

    rewards = sub.add_parser("rewards", parents=[listing], help="reward epochs")
    rewards.set_defaults(handler=cmd_rewards)

    export = sub.add_parser("export", parents=[common], help="a whole table as CSV or JSON")
    export.add_argument("--what", choices=list(queries.EXPORTS), default="providers", help="which table")
    export.add_argument("--format", choices=["csv", "json"], default="csv", help="file format")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(handler=cmd_export)

    verify = sub.add_parser("verify", parents=[common], help="re-check the index against the chain")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=cmd_verify)

    serve = sub.add_parser("serve", parents=[common], help="serve the HTTP API and explorer until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_non_negative, default=8090, help="TCP port (default 8090; 0: any free)"
    )
    serve.add_argument("--follow", action="store_true", help="keep indexing new blocks while serving")
    serve.add_argument("--interval", type=_seconds, default=2.0, help="seconds between polls with --follow")
    serve.add_argument("--offline", action="store_true", help="serve the database only (no RPC; no verify)")
    serve.add_argument(
        "--offers",
        metavar="URL",
        help="a gateway whose /v1/offers gives provider locations (read every minute)",
    )
    serve.add_argument(
        "--offers-key-env",
        default="PROXIMA_AUDIT_OFFERS_API_KEY",
        help="variable holding the gateway API key for --offers",
    )
    serve.add_argument("--log-json", action="store_true", help="log JSON lines")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=cmd_serve, confirmations=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxima-audit``.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit status: 0 on success, 1 on an error or a failed verification, 130 on Ctrl-C. Bad usage
        exits with status 2 (``SystemExit`` from argparse).
    """
    args = _parser().parse_args(argv)
    if args.command not in ("serve",):
        configure_logging("WARNING")
    console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 160)
    try:
        handler: Callable[[argparse.Namespace, Console], int] = args.handler
        return handler(args, console)
    except KeyboardInterrupt:
        return 130
    except (ProximaError, OSError, ValueError) as err:
        message = str(err).replace("\n", "; ")
        print(f"proxima-audit: error: {message}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
