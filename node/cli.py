"""``proxima-node``: the provider's command line.

    proxima-node init      create the encrypted keystore and the config file
    proxima-node start     benchmark, register, advertise and serve jobs until Ctrl-C
    proxima-node status    stake, record, attested figures, whether a node is running
    proxima-node stake     register or add stake          proxima-node unbond    start unbonding stake
    proxima-node withdraw  take back unbonded stake       proxima-node attest    benchmark and attest now
    proxima-node earnings  what the node earned and is owed

Every command finds its files through ``--data-dir`` (default ``~/.proxima/node``; the config is
``node.toml`` there unless ``--config`` names another). The keystore passphrase comes from
``PROXIMA_PASSPHRASE`` or a prompt. Exit status: 0 on success, 1 on an error (printed on one line that says
what to do), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from proxima.contracts import ProximaError
from proxima.node.benchmark import run_benchmark
from proxima.node.config import (
    CONFIG_FILE_NAME,
    NodeConfig,
    default_config,
    load_config,
    save_config,
)
from proxima.node.duties import ChainDuties
from proxima.node.errors import ConfigError, KeystoreError, NodeError
from proxima.node.hardware import probe_hardware, select_device
from proxima.node.identity import NodeIdentity, create_keystore, load_keystore, read_passphrase
from proxima.node.service import (
    EPOCH_SECONDS,
    ProviderNode,
    connect_chain,
    ensure_registered,
    metadata_hash,
    read_status,
)
from proxima.node.store import NodeStore
from proxima.sdk.bindings.registry import Role
from proxima.sdk.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("~/.proxima/node")
WEI_PER_ETH = 10**18


def _eth_amount(text: str) -> int:
    """Parse ``1.5`` (ETH) or ``2000000000wei`` into wei."""
    raw = text.strip().lower()
    try:
        if raw.endswith("wei"):
            value = int(raw[:-3])
        else:
            amount = Decimal(raw.removesuffix("eth"))
            value = int(amount * WEI_PER_ETH)
            if amount * WEI_PER_ETH != value:
                raise argparse.ArgumentTypeError(f"{text!r} has more than 18 decimals")
    except (InvalidOperation, ValueError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount (use 1.5 for ETH or 1500wei)") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the amount must be positive")
    return value


def _price(text: str) -> tuple[str, int]:
    name, sep, wei = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: use WORKLOAD=WEI_PER_UNIT, e.g. matmul=1000000000000")
    try:
        value = int(wei)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: the price must be an integer number of wei") from err
    return name, value


def _format_eth(wei: int) -> str:
    return f"{Decimal(wei) / WEI_PER_ETH:.6f} ETH"


# --- files ------------------------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config).expanduser()
    return Path(args.data_dir).expanduser() / CONFIG_FILE_NAME


def _load(args: argparse.Namespace) -> NodeConfig:
    path = _config_path(args)
    if not path.exists():
        raise ConfigError(f"no config at {path}; create one with `proxima-node init --data-dir ...`")
    return load_config(path)


def _identity(config: NodeConfig) -> NodeIdentity:
    return load_keystore(config.keystore_path, read_passphrase())


def _keystore_address(config: NodeConfig) -> str:
    """The address recorded in the keystore file (readable without the passphrase)."""
    try:
        raw = json.loads(config.keystore_path.read_text())
        return "0x" + str(raw["address"]).removeprefix("0x")
    except (OSError, ValueError, KeyError) as err:
        raise KeystoreError(
            f"cannot read the address from {config.keystore_path} ({err}); run `proxima-node init`"
        ) from err


# --- commands ---------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    data_dir = Path(args.data_dir).expanduser().absolute()
    config_path = _config_path(args)
    if config_path.exists():
        raise ConfigError(f"{config_path} exists already; remove it or use another --data-dir")
    base = default_config(data_dir, region=args.region, chain_url=args.chain_url, deployment=args.deployment)
    fields: dict[str, Any] = base.model_dump()
    if args.country is not None:
        fields["country"] = args.country
    if args.lat is not None or args.lon is not None:
        if args.lat is None or args.lon is None:
            raise ConfigError("give both --lat and --lon")
        fields["location"] = {"lat": args.lat, "lon": args.lon}
    if args.workloads is not None:
        fields["workloads"] = [w.strip() for w in args.workloads.split(",") if w.strip()]
        fields["prices"] = {w: base.prices.get(w, 0) for w in fields["workloads"]}
    for name, wei in args.price or ():
        fields["prices"][name] = wei
    if args.listen:
        fields["p2p"]["listen"] = list(args.listen)
    if args.bootstrap:
        fields["p2p"]["bootstrap"] = list(args.bootstrap)
    if args.stake is not None:
        fields["chain"]["stake_wei"] = args.stake
    if args.device is not None:
        fields["device"] = args.device
    if args.max_concurrency is not None:
        fields["capacity"]["max_concurrency"] = args.max_concurrency
    if args.metrics_port is not None:
        fields["metrics"]["port"] = args.metrics_port
    try:
        config = NodeConfig.model_validate(fields)
    except ValueError as err:
        raise ConfigError(f"invalid option: {err}") from err

    private_key = None
    if args.import_key_env:
        text = os.environ.get(args.import_key_env, "").strip().removeprefix("0x")
        try:
            private_key = bytes.fromhex(text)
        except ValueError as err:
            raise KeystoreError(f"${args.import_key_env} does not hold a hex private key") from err
        if len(private_key) != 32:
            raise KeystoreError(f"${args.import_key_env} must hold a 32-byte hex private key")
    passphrase = read_passphrase(confirm=True)
    identity = create_keystore(config.keystore_path, passphrase, private_key)
    save_config(config, config_path)
    console.print(f"keystore  {config.keystore_path} (encrypted, mode 0600)")
    console.print(f"config    {config_path}")
    console.print(f"address   {identity.address}")
    console.print(f"peer id   {identity.peer_id_b58}")
    console.print(
        f"next: fund {identity.address} with at least {_format_eth(config.chain.stake_wei)} plus gas, "
        "then run `proxima-node start`"
    )
    return 0


def cmd_start(args: argparse.Namespace, console: Console) -> int:
    config = _load(args)
    identity = _identity(config)
    node = ProviderNode(config, identity, quick_benchmark=args.quick_benchmark)
    trio.run(node.run)
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    config = _load(args)
    address = _keystore_address(config)
    table = Table(title=f"provider {address}", show_header=False)
    running = read_status(config.data_dir)
    if running is None:
        table.add_row("node", "not running")
    else:
        table.add_row("node", f"running (pid {running.pid}, device {running.device})")
        table.add_row("peer id", running.peer_id)
        table.add_row("listening", "\n".join(running.addrs))
        table.add_row("metrics", running.metrics_url or "off")
    table.add_row("region", config.region + (f" ({config.country})" if config.country else ""))
    try:
        chain_rows = _chain_status(config, address)
    except ProximaError as err:
        chain_rows = [("chain", f"unreachable: {err}")]
    for name, value in chain_rows:
        table.add_row(name, value)
    console.print(table)
    return 0


def _chain_status(config: NodeConfig, address: str) -> list[tuple[str, str]]:
    from proxima.sdk.bindings import ProximaContracts
    from proxima.sdk.chain import Deployment, RpcChain

    deployment = Deployment.load(config.chain.deployment)
    with RpcChain(config.chain.url) as chain:
        contracts = ProximaContracts.from_deployment(chain, deployment)
        account = contracts.registry.account_of(address)
        rows = [("balance", _format_eth(chain.balance(address)))]
        if account.role != Role.PROVIDER:
            rows.append(("registered", "no (run `proxima-node stake` or `start`)"))
            return rows
        rows += [
            (
                "registered",
                "yes, active" if contracts.registry.is_active_provider(address) else "yes, inactive",
            ),
            ("stake", _format_eth(account.stake)),
            ("unbonding", _format_eth(account.unbonding)),
            ("jobs completed / failed", f"{account.jobs_completed} / {account.jobs_failed}"),
            ("disputes lost", str(account.disputes_lost)),
            ("slashed", _format_eth(account.total_slashed)),
        ]
        if account.unbonding:
            rows.append(("withdrawable from", f"unix time {account.unbond_ready_at}"))
        figures = contracts.attestations.latest_figures(address)
        if figures.epoch:
            rows.append(
                (
                    "attested",
                    f"{figures.gemm_flops / 1e9:.1f} GFLOP/s, {figures.mem_bandwidth / 1e9:.1f} GB/s "
                    f"(epoch {figures.epoch})",
                )
            )
        return rows


def _with_chain(
    args: argparse.Namespace, action: Callable[[NodeConfig, NodeIdentity, Any], list[tuple[str, str]]]
) -> list[tuple[str, str]]:
    config = _load(args)
    identity = _identity(config)
    chain, contracts, _ = connect_chain(config, identity)
    with chain:
        return action(config, identity, contracts)


def _print_rows(console: Console, title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False)
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def cmd_stake(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: Any) -> list[tuple[str, str]]:
        account = contracts.registry.account_of(identity.address)
        if account.role == Role.PROVIDER:
            contracts.registry.top_up(identity.account, args.amount)
        else:
            ensure_registered(contracts, identity, args.amount, metadata_hash(config, probe_hardware()))
        account = contracts.registry.account_of(identity.address)
        return [("address", identity.address), ("stake", _format_eth(account.stake))]

    _print_rows(console, "staked", _with_chain(args, act))
    return 0


def cmd_unbond(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: Any) -> list[tuple[str, str]]:
        contracts.registry.request_unbond(identity.account, args.amount)
        account = contracts.registry.account_of(identity.address)
        return [
            ("stake", _format_eth(account.stake)),
            ("unbonding", _format_eth(account.unbonding)),
            ("withdrawable from", f"unix time {account.unbond_ready_at}"),
        ]

    _print_rows(console, "unbonding", _with_chain(args, act))
    return 0


def cmd_withdraw(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: Any) -> list[tuple[str, str]]:
        before = contracts.registry.account_of(identity.address).unbonding
        contracts.registry.withdraw(identity.account)
        account = contracts.registry.account_of(identity.address)
        return [("withdrawn", _format_eth(before - account.unbonding)), ("stake", _format_eth(account.stake))]

    _print_rows(console, "withdrawn", _with_chain(args, act))
    return 0


def cmd_attest(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: Any) -> list[tuple[str, str]]:
        device = select_device(config.device, probe_hardware())
        result = run_benchmark(device, quick=args.quick)
        result.save(config.benchmark_path)
        with NodeStore(config.store_path) as store:
            duties = ChainDuties(contracts, identity.account, store)
            tx = duties.submit_attestation([result.measurement()], contracts.chain.now() // EPOCH_SECONDS)
        return [
            ("device", f"{device} ({result.device_name})"),
            ("GEMM", f"{result.gemm_flops / 1e9:.1f} GFLOP/s (spread {result.gemm_spread:.1%})"),
            ("bandwidth", f"{result.mem_bandwidth / 1e9:.1f} GB/s (spread {result.bandwidth_spread:.1%})"),
            ("transaction", "0x" + tx.hex()),
        ]

    _print_rows(console, "attested", _with_chain(args, act))
    return 0


def cmd_earnings(args: argparse.Namespace, console: Console) -> int:
    config = _load(args)
    if not config.store_path.exists():
        console.print("no jobs yet (the node has not run)")
        return 0
    with NodeStore(config.store_path) as store:
        summary = store.earnings()
    table = Table(title="earnings (gross, before the protocol fee)", show_header=False)
    table.add_row("paid", _format_eth(summary.total_paid))
    table.add_row("escrow settled", _format_eth(summary.escrow_settled))
    table.add_row("escrow committed, in challenge window", _format_eth(summary.escrow_committed))
    table.add_row("escrow accepted, not committed", _format_eth(summary.escrow_pending))
    table.add_row("vouchers redeemed", _format_eth(summary.voucher_redeemed))
    table.add_row("vouchers not redeemed yet", _format_eth(summary.voucher_outstanding))
    jobs = ", ".join(f"{state.value} {count}" for state, count in summary.jobs_by_state.items() if count)
    table.add_row("jobs", jobs or "none")
    console.print(table)
    return 0


# --- parser -----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxima-node", description="Proxima provider node: earn by running jobs on your hardware."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help="node folder (default ~/.proxima/node)"
    )
    common.add_argument("--config", help="config file (default DATA_DIR/node.toml)")
    common.add_argument("--log-json", action="store_true", help="log JSON lines instead of key=value")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", parents=[common], help="create keystore and config")
    init.add_argument("--region", default="local", help="market region label, e.g. eu-west")
    init.add_argument("--country", help="ISO 3166-1 alpha-2 code of the machine's location, e.g. DE")
    init.add_argument("--lat", type=float, help="latitude of the machine")
    init.add_argument("--lon", type=float, help="longitude of the machine")
    init.add_argument("--workloads", help="comma-separated workloads to serve (default matmul,embed)")
    init.add_argument("--price", type=_price, action="append", help="WORKLOAD=WEI per billing unit")
    init.add_argument("--listen", action="append", help="libp2p listen multiaddr (repeatable)")
    init.add_argument("--bootstrap", action="append", help="bootstrap peer multiaddr with /p2p/ (repeatable)")
    init.add_argument("--chain-url", default="http://127.0.0.1:8545", help="JSON-RPC URL")
    init.add_argument("--deployment", type=Path, help="deployment file (default .devnet/deployment.json)")
    init.add_argument("--stake", type=_eth_amount, help="stake to put up at start (ETH, or NNNwei)")
    init.add_argument("--device", choices=["auto", "cpu", "cuda"])
    init.add_argument("--max-concurrency", type=int)
    init.add_argument("--metrics-port", type=int, help="Prometheus port (0 picks a free one)")
    init.add_argument(
        "--import-key-env",
        metavar="VAR",
        help="take the private key (hex) from this environment variable instead of generating one",
    )
    init.set_defaults(handler=cmd_init)

    start = sub.add_parser("start", parents=[common], help="run the node until Ctrl-C")
    start.add_argument("--quick-benchmark", action="store_true", help="short benchmark (tests, demos)")
    start.set_defaults(handler=cmd_start)

    sub.add_parser("status", parents=[common], help="stake, record and whether it runs").set_defaults(
        handler=cmd_status
    )
    stake = sub.add_parser("stake", parents=[common], help="register or add stake")
    stake.add_argument("amount", type=_eth_amount, help="ETH (1.5) or wei (1500wei)")
    stake.set_defaults(handler=cmd_stake)
    unbond = sub.add_parser("unbond", parents=[common], help="start unbonding stake")
    unbond.add_argument("amount", type=_eth_amount, help="ETH (1.5) or wei (1500wei)")
    unbond.set_defaults(handler=cmd_unbond)
    sub.add_parser("withdraw", parents=[common], help="withdraw unbonded stake").set_defaults(
        handler=cmd_withdraw
    )
    attest = sub.add_parser("attest", parents=[common], help="benchmark and attest on chain now")
    attest.add_argument("--quick", action="store_true", help="short benchmark")
    attest.set_defaults(handler=cmd_attest)
    sub.add_parser("earnings", parents=[common], help="earned and owed").set_defaults(handler=cmd_earnings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxima-node``; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging("DEBUG" if args.verbose else "INFO", as_json=args.log_json)
    console = Console()
    try:
        handler: Callable[[argparse.Namespace, Console], int] = args.handler
        return handler(args, console)
    except KeyboardInterrupt:
        return 130
    except (ProximaError, OSError) as err:
        kind = "error" if isinstance(err, NodeError) else type(err).__name__
        print(f"proxima-node: {kind}: {err}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
