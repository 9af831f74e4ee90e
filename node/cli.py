"""``proxima-node``: the provider's command line.

    proxima-node init      create the encrypted keystore and the config file
    proxima-node start     benchmark, register, advertise and serve jobs until Ctrl-C
    proxima-node status    stake, record, attested figures, whether a node is running
    proxima-node stake     register or add stake          proxima-node unbond    start unbonding stake
    proxima-node withdraw  take back unbonded stake       proxima-node attest    benchmark and attest now
    proxima-node earnings  what the node earned and is owed

Every command finds its files through ``--data-dir`` (default ``~/.proxima/node``; the config is
``node.toml`` there unless ``--config`` names another). The keystore passphrase comes from
``PROXIMA_PASSPHRASE`` or, on a terminal, a prompt. Amounts are ETH (``1.5``) or carry a unit (``20gwei``,
``1500wei``). Exit status: 0 on success, 1 on an error (printed on one line that says what to do next), 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from pydantic import ValidationError
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
from proxima.node.identity import (
    PASSPHRASE_ENV,
    KeystoreExistsError,
    NodeIdentity,
    WrongPassphraseError,
    create_keystore,
    load_keystore,
    read_passphrase,
)
from proxima.node.service import (
    EPOCH_SECONDS,
    FundingError,
    ProviderNode,
    connect_chain,
    ensure_registered,
    metadata_hash,
    read_status,
)
from proxima.node.store import NodeStore
from proxima.node.workloads.base import available_workloads
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.bindings.registry import Role
from proxima.sdk.errors import ContractRevertError
from proxima.sdk.logs import configure_logging

__all__ = [
    "NoPassphraseError",
    "NotActiveProviderError",
    "OptionError",
    "RegistryRefusedError",
    "StakeBelowMinimumError",
    "UnbondingNotReadyError",
    "main",
]

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("~/.proxima/node")
WEI_PER_ETH = 10**18
_UINT256_MAX = 2**256 - 1
_GAS_MARGIN_WEI = 10**14
"""Kept for gas when checking that a balance covers a top-up (a registry transaction costs ~0.0001 ETH)."""

_UNIT_DECIMALS = {"eth": 18, "ether": 18, "gwei": 9, "wei": 0}
_AMOUNT = re.compile(r"^(?=\.?[0-9])([0-9]*)(?:\.([0-9]*))?\s*([A-Za-z]*)$")

# NodeConfig fields (dotted) -> the init option that sets them, for error messages.
_OPTION_OF_FIELD = {
    "region": "--region",
    "country": "--country",
    "location.lat": "--lat",
    "location.lon": "--lon",
    "location": "--lat/--lon",
    "workloads": "--workloads",
    "prices": "--price",
    "device": "--device",
    "p2p.listen": "--listen",
    "p2p.bootstrap": "--bootstrap",
    "p2p.announce": "--announce",
    "chain.url": "--chain-url",
    "chain.deployment": "--deployment",
    "chain.stake_wei": "--stake",
    "capacity.max_concurrency": "--max-concurrency",
    "metrics.port": "--metrics-port",
}


# --- errors -----------------------------------------------------------------------------------------------


class OptionError(ConfigError):
    """A command-line option has a value the node cannot use.

    Args:
        option: The option, for example ``--country``.
        problem: What is wrong, and what to give instead.
    """

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}")


class NoPassphraseError(KeystoreError):
    """No passphrase in the environment and no terminal to ask for one on.

    Args:
        env_var: The environment variable that would hold it.
    """

    def __init__(self, env_var: str) -> None:
        self.env_var = env_var
        super().__init__(
            f"no passphrase: ${env_var} is not set and there is no terminal to ask on; "
            f"set it (export {env_var}=...) or run the command in a terminal"
        )


class StakeBelowMinimumError(NodeError):
    """Registering asks for less stake than the registry's minimum.

    Args:
        amount: The stake asked for, in wei.
        minimum: The registry's minimum provider stake, in wei.
    """

    def __init__(self, amount: int, minimum: int) -> None:
        self.amount = amount
        self.minimum = minimum
        super().__init__(
            f"registering needs a stake of at least {_format_eth(minimum)}, not {_format_eth(amount)}; "
            f"run `proxima-node stake {_eth_text(minimum)}`"
        )


class NotActiveProviderError(NodeError):
    """An action that only an active provider may take (attesting).

    Args:
        address: The provider's address.
        stake: Its stake, in wei.
        minimum: The registry's minimum provider stake, in wei.
    """

    def __init__(self, address: str, stake: int, minimum: int) -> None:
        self.address = address
        super().__init__(
            f"{address} is not an active provider (stake {_format_eth(stake)}, minimum "
            f"{_format_eth(minimum)}); stake first with `proxima-node stake {_eth_text(minimum - stake)}`"
        )


class UnbondingNotReadyError(NodeError):
    """Unbonded stake was asked for before the unbonding delay ended.

    Args:
        ready_at: Chain time (unix seconds) from which it can be withdrawn.
        now: The chain's time when it was asked for.
    """

    def __init__(self, ready_at: int, now: int) -> None:
        self.ready_at = ready_at
        self.now = now
        super().__init__(
            f"the unbonding stake can be withdrawn from {_format_time(ready_at)} (chain time), in "
            f"{_format_duration(ready_at - now)}; run `proxima-node withdraw` again then"
        )


class RegistryRefusedError(NodeError):
    """The chain refused a command's transaction for a reason the user can act on.

    Args:
        command: The ``proxima-node`` command.
        reason: Why, in words.
        next_step: What to do about it.
    """

    def __init__(self, command: str, reason: str, next_step: str) -> None:
        self.command = command
        self.reason = reason
        super().__init__(f"{command}: {reason}; {next_step}")


def _refusal(command: str, err: ContractRevertError) -> NodeError:
    """A readable error for a decoded revert of ``command``'s transaction."""
    args = err.error_args
    name = err.error_name
    if name == "RegistryUnbondingNotReady":
        return UnbondingNotReadyError(int(args["readyAt"]), int(args["timestamp"]))
    if name == "RegistryNothingToWithdraw":
        return RegistryRefusedError(
            command,
            "no stake is unbonding",
            "start with `proxima-node unbond AMOUNT`, then withdraw after the unbonding delay",
        )
    if name == "RegistryUnbondExceedsStake":
        return RegistryRefusedError(
            command,
            f"asked to unbond {_format_eth(int(args['requested']))} but the stake is "
            f"{_format_eth(int(args['staked']))}",
            "ask for at most the stake (`proxima-node status` shows it)",
        )
    if name == "RegistryNotRegistered":
        return RegistryRefusedError(
            command, f"{args['account']} is not registered", "register with `proxima-node stake AMOUNT`"
        )
    if name == "RegistryInsufficientStake":
        return StakeBelowMinimumError(int(args["provided"]), int(args["required"]))
    if name == "AttestationUnknownProvider":
        return RegistryRefusedError(
            command, f"{args['provider']} is not an active provider", "stake first with `proxima-node stake`"
        )
    shown = ", ".join(f"{key}={value}" for key, value in args.items())
    return RegistryRefusedError(
        command,
        f"{err.contract}.{err.function} reverted with {name}({shown})",
        "check the account with `proxima-node status`",
    )


# --- amounts and times ------------------------------------------------------------------------------------


def _parse_amount(text: str, default_unit: str) -> int:
    """``1.5`` (in ``default_unit``), ``1.5eth``, ``20 gwei`` or ``1500wei`` as wei."""
    match = _AMOUNT.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount; write 1.5 (ETH), 20gwei or 1500wei")
    whole, fraction, unit = match.group(1), (match.group(2) or "").rstrip("0"), match.group(3).lower()
    unit = unit or default_unit
    if unit not in _UNIT_DECIMALS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown unit {unit!r}; use eth, gwei or wei")
    decimals = _UNIT_DECIMALS[unit]
    if len(fraction) > decimals:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of wei")
    value: int = int(whole or "0") * 10**decimals + (
        int(fraction) * 10 ** (decimals - len(fraction)) if fraction else 0
    )
    if value > _UINT256_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is more than any account can hold")
    return value


def _eth_amount(text: str) -> int:
    """A positive amount, ETH unless it names its unit (argparse type of stake and unbond)."""
    value = _parse_amount(text, "eth")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the amount must be more than zero")
    return value


def _price(text: str) -> tuple[str, int]:
    """``WORKLOAD=PRICE`` with the price in wei per billing unit (or with a unit: ``1000gwei``)."""
    name, sep, amount = text.partition("=")
    if not sep or not name.strip() or not amount.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: use WORKLOAD=WEI_PER_UNIT, e.g. matmul=1000000000000")
    try:
        return name.strip(), _parse_amount(amount, "wei")
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: the price {err}") from err


def _eth_text(wei: int) -> str:
    """Exact decimal ETH, no trailing zeros: ``1.5``, ``0.000001``, ``2``."""
    sign = "-" if wei < 0 else ""
    whole, fraction = divmod(abs(wei), WEI_PER_ETH)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:018d}".rstrip("0")


def _format_eth(wei: int) -> str:
    return f"{_eth_text(wei)} ETH"


def _format_balance(wei: int) -> str:
    """A balance to 6 decimals (rounded down): gas leaves long tails nobody reads."""
    return f"{_eth_text(wei - wei % 10**12)} ETH"


def _format_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_duration(seconds: int) -> str:
    if seconds <= 0:
        return "no time"
    parts = []
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2])


def _withdrawable(ready_at: int, now: int) -> str:
    when = "now" if ready_at <= now else f"in {_format_duration(ready_at - now)}"
    return f"{_format_time(ready_at)} ({when}, chain time)"


# --- files ------------------------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config).expanduser().absolute()
    return Path(args.data_dir).expanduser().absolute() / CONFIG_FILE_NAME


def _load(args: argparse.Namespace) -> NodeConfig:
    path = _config_path(args)
    if not path.exists():
        raise ConfigError(f"no config at {path}; create one with `proxima-node init --data-dir ...`")
    return load_config(path)


def _passphrase(*, confirm: bool = False) -> str:
    """The keystore passphrase from ``$PROXIMA_PASSPHRASE``, or asked on the terminal."""
    if os.environ.get(PASSPHRASE_ENV) is None and not sys.stdin.isatty():
        raise NoPassphraseError(PASSPHRASE_ENV)
    return read_passphrase(PASSPHRASE_ENV, confirm=confirm)


def _identity(config: NodeConfig) -> NodeIdentity:
    try:
        return load_keystore(config.keystore_path, _passphrase())
    except WrongPassphraseError as err:
        raise KeystoreError(f"{err}; check ${PASSPHRASE_ENV} (or what you typed) and try again") from err


def _keystore_address(config: NodeConfig) -> str:
    """The address recorded in the keystore file (readable without the passphrase)."""
    try:
        raw = json.loads(config.keystore_path.read_text())
        return "0x" + str(raw["address"]).removeprefix("0x")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KeystoreError(
            f"cannot read the address from {config.keystore_path} ({err}); run `proxima-node init`"
        ) from err


def _import_key(env_var: str) -> bytes:
    """The private key (hex) held by ``env_var``; the key itself never appears in an error."""
    text = os.environ.get(env_var)
    if text is None:
        raise OptionError("--import-key-env", f"${env_var} is not set; export it with the hex private key")
    try:
        private_key = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise OptionError("--import-key-env", f"${env_var} does not hold a hex private key") from None
    if len(private_key) != 32:
        raise OptionError("--import-key-env", f"${env_var} must hold a 32-byte (64 hex digits) private key")
    return private_key


# --- commands ---------------------------------------------------------------------------------------------


def _init_config(args: argparse.Namespace, data_dir: Path) -> NodeConfig:
    """The configuration ``init`` writes: the devnet defaults with every option applied and checked."""
    fields: dict[str, Any] = default_config(data_dir, deployment=args.deployment).model_dump()
    fields["region"] = args.region
    fields["chain"]["url"] = args.chain_url
    if args.country is not None:
        fields["country"] = args.country
    if (args.lat is None) != (args.lon is None):
        raise OptionError("--lat/--lon", "give both the latitude and the longitude, or neither")
    if args.lat is not None:
        fields["location"] = {"lat": args.lat, "lon": args.lon}
    prices = dict(args.price or ())
    if args.workloads is not None:
        workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
        if not workloads:
            raise OptionError("--workloads", "name at least one workload, e.g. matmul,embed")
        installed = available_workloads()
        unknown = [w for w in workloads if w not in installed]
        if unknown:
            raise OptionError(
                "--workloads",
                f"{', '.join(map(repr, unknown))} not installed; installed workloads: "
                f"{', '.join(installed) or 'none'}",
            )
        default_prices: dict[str, int] = fields["prices"]
        unpriced = [w for w in workloads if w not in prices and w not in default_prices]
        if unpriced:
            raise OptionError(
                "--workloads",
                f"no price for {', '.join(unpriced)}; give one with --price {unpriced[0]}=WEI_PER_UNIT",
            )
        fields["workloads"] = workloads
        fields["prices"] = {w: default_prices[w] for w in workloads if w in default_prices}
    unserved = [name for name in prices if name not in fields["workloads"]]
    if unserved:
        raise OptionError(
            "--price",
            f"{', '.join(unserved)} priced but not served (served: {', '.join(fields['workloads'])}); "
            "add it to --workloads or drop the price",
        )
    fields["prices"].update(prices)
    if args.listen:
        fields["p2p"]["listen"] = list(args.listen)
    if args.bootstrap:
        fields["p2p"]["bootstrap"] = list(args.bootstrap)
    if args.announce:
        fields["p2p"]["announce"] = list(args.announce)
    if args.stake is not None:
        fields["chain"]["stake_wei"] = args.stake
    if args.device is not None:
        fields["device"] = args.device
    if args.max_concurrency is not None:
        fields["capacity"]["max_concurrency"] = args.max_concurrency
    if args.metrics_port is not None:
        fields["metrics"]["port"] = args.metrics_port
    try:
        return NodeConfig.model_validate(fields)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in first["loc"])
        option = next(
            (opt for field, opt in _OPTION_OF_FIELD.items() if loc == field or loc.startswith(field + ".")),
            loc or "options",
        )
        problem = str(first["msg"]).removeprefix("Value error, ")
        value = first.get("input")
        if not first["type"].startswith("value_error") and isinstance(value, str | int | float):
            problem += f" (got {value!r})"
        raise OptionError(option, problem) from err


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    data_dir = Path(args.data_dir).expanduser().absolute()
    config_path = _config_path(args)
    if config_path.exists():
        raise ConfigError(f"{config_path} exists already; remove it or use another --data-dir")
    config = _init_config(args, data_dir)
    private_key = _import_key(args.import_key_env) if args.import_key_env else None
    if config.keystore_path.exists():
        raise KeystoreExistsError(config.keystore_path)
    identity = create_keystore(config.keystore_path, _passphrase(confirm=True), private_key)
    save_config(config, config_path)
    lines = [
        f"keystore  {config.keystore_path} (encrypted, mode 0600)",
        f"config    {config_path}",
        f"address   {identity.address}",
        f"peer id   {identity.peer_id_b58}",
        f"region    {config.region}" + (f" ({config.country})" if config.country else ""),
        "serves    " + ", ".join(f"{w} at {config.prices[w]} wei/unit" for w in config.workloads),
    ]
    if not config.chain.deployment.exists():
        lines.append(
            f"note: {config.chain.deployment} does not exist yet; start a devnet (`proxima-devnet`) or "
            "point chain.deployment in the config at your chain's deployment file"
        )
    lines.append(
        f"next: fund {identity.address} with at least {_format_eth(config.chain.stake_wei)} plus gas, "
        "then run `proxima-node start`"
    )
    for line in lines:
        console.print(line, soft_wrap=True)
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
    rows = [("address", address)]
    running = read_status(config.data_dir)
    if running is None:
        rows.append(("node", "not running"))
    else:
        rows += [
            ("node", f"running (pid {running.pid}, device {running.device})"),
            ("peer id", running.peer_id),
            ("listening", "\n".join(running.addrs)),
            ("metrics", running.metrics_url or "off"),
        ]
    rows.append(("region", config.region + (f" ({config.country})" if config.country else "")))
    try:
        rows += _chain_status(config, address)
    except ProximaError as err:
        rows.append(("chain", f"unreachable: {err}"))
    _print_rows(console, "provider", rows)
    return 0


def _chain_status(config: NodeConfig, address: str) -> list[tuple[str, str]]:
    from proxima.sdk.chain import Deployment, RpcChain

    deployment = Deployment.load(config.chain.deployment)
    with RpcChain(config.chain.url) as chain:
        if chain.chain_id != deployment.chain_id:
            raise NodeError(
                f"the chain at {config.chain.url} has id {chain.chain_id} but {config.chain.deployment} was "
                f"deployed on chain {deployment.chain_id}; fix chain.url or chain.deployment in the config"
            )
        contracts = ProximaContracts.from_deployment(chain, deployment)
        account = contracts.registry.account_of(address)
        rows = [("balance", _format_balance(chain.balance(address)))]
        if account.role != Role.PROVIDER:
            rows.append(("registered", "no (run `proxima-node stake AMOUNT` or `proxima-node start`)"))
            return rows
        minimum = contracts.registry.min_provider_stake()
        active = contracts.registry.is_active_provider(address)
        rows += [
            (
                "registered",
                "yes, active"
                if active
                else f"yes, inactive (stake below the minimum {_format_eth(minimum)})",
            ),
            ("stake", _format_eth(account.stake)),
            ("unbonding", _format_eth(account.unbonding)),
            ("jobs completed / failed", f"{account.jobs_completed} / {account.jobs_failed}"),
            ("disputes lost", str(account.disputes_lost)),
            ("slashed", _format_eth(account.total_slashed)),
        ]
        if account.unbonding:
            rows.append(("withdrawable from", _withdrawable(account.unbond_ready_at, chain.now())))
        figures = contracts.attestations.latest_figures(address)
        if figures.epoch:
            rows.append(
                (
                    "attested",
                    f"{figures.gemm_flops / 1e9:.1f} GFLOP/s, {figures.mem_bandwidth / 1e9:.1f} GB/s "
                    f"(epoch {figures.epoch}, {_format_time(figures.updated_at)})",
                )
            )
        else:
            rows.append(("attested", "not yet (`proxima-node attest` or `start` attests)"))
        return rows


ChainAction = Callable[[NodeConfig, NodeIdentity, ProximaContracts], list[tuple[str, str]]]


def _with_chain(args: argparse.Namespace, action: ChainAction) -> list[tuple[str, str]]:
    """Run ``action`` with the unlocked key and the deployment's contracts; reverts become readable errors."""
    config = _load(args)
    identity = _identity(config)
    chain, contracts, _ = connect_chain(config, identity)
    with chain:
        try:
            return action(config, identity, contracts)
        except ContractRevertError as err:
            raise _refusal(args.command, err) from err


def _print_rows(console: Console, title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def cmd_stake(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: ProximaContracts) -> list[tuple[str, str]]:
        registry = contracts.registry
        account = registry.account_of(identity.address)
        if account.role == Role.PROVIDER:
            balance = contracts.chain.balance(identity.address)
            if balance < args.amount + _GAS_MARGIN_WEI:
                raise FundingError(identity.address, balance, args.amount)
            registry.top_up(identity.account, args.amount)
        else:
            minimum = registry.min_provider_stake()
            if account.role == Role.NONE and args.amount < minimum:
                raise StakeBelowMinimumError(args.amount, minimum)
            ensure_registered(contracts, identity, args.amount, metadata_hash(config, probe_hardware()))
        account = registry.account_of(identity.address)
        active = registry.is_active_provider(identity.address)
        return [
            ("address", identity.address),
            ("stake", _format_eth(account.stake)),
            ("registered", "yes, active" if active else "yes, inactive"),
            ("balance", _format_balance(contracts.chain.balance(identity.address))),
        ]

    _print_rows(console, "staked", _with_chain(args, act))
    return 0


def cmd_unbond(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: ProximaContracts) -> list[tuple[str, str]]:
        registry = contracts.registry
        registry.request_unbond(identity.account, args.amount)
        account = registry.account_of(identity.address)
        rows = [
            ("stake", _format_eth(account.stake)),
            ("unbonding", _format_eth(account.unbonding)),
            ("withdrawable from", _withdrawable(account.unbond_ready_at, contracts.chain.now())),
        ]
        minimum = registry.min_provider_stake()
        if account.stake < minimum:
            rows.append(
                (
                    "note",
                    f"the stake is below the minimum {_format_eth(minimum)}: the node is no longer an active "
                    "provider and peers ignore its offers",
                )
            )
        return rows

    _print_rows(console, "unbonding", _with_chain(args, act))
    return 0


def cmd_withdraw(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: ProximaContracts) -> list[tuple[str, str]]:
        before = contracts.registry.account_of(identity.address).unbonding
        contracts.registry.withdraw(identity.account)
        account = contracts.registry.account_of(identity.address)
        return [
            ("withdrawn", _format_eth(before - account.unbonding)),
            ("stake", _format_eth(account.stake)),
            ("balance", _format_balance(contracts.chain.balance(identity.address))),
        ]

    _print_rows(console, "withdrawn", _with_chain(args, act))
    return 0


def cmd_attest(args: argparse.Namespace, console: Console) -> int:
    def act(config: NodeConfig, identity: NodeIdentity, contracts: ProximaContracts) -> list[tuple[str, str]]:
        if not contracts.registry.is_active_provider(identity.address):
            account = contracts.registry.account_of(identity.address)
            raise NotActiveProviderError(
                identity.address, account.stake, contracts.registry.min_provider_stake()
            )
        device = select_device(config.device, probe_hardware())
        result = run_benchmark(device, quick=args.quick)
        result.save(config.benchmark_path)
        epoch = contracts.chain.now() // EPOCH_SECONDS
        with NodeStore(config.store_path) as store:
            duties = ChainDuties(contracts, identity.account, store)
            tx = duties.submit_attestation([result.measurement()], epoch)
        return [
            ("device", f"{device} ({result.device_name})"),
            ("GEMM", f"{result.gemm_flops / 1e9:.1f} GFLOP/s (spread {result.gemm_spread:.1%})"),
            ("bandwidth", f"{result.mem_bandwidth / 1e9:.1f} GB/s (spread {result.bandwidth_spread:.1%})"),
            ("epoch", str(epoch)),
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
    if not any(summary.jobs_by_state.values()) and not summary.voucher_accepted:
        console.print("no jobs yet")
        return 0
    jobs = ", ".join(f"{state.value} {count}" for state, count in summary.jobs_by_state.items() if count)
    rows = [
        ("paid", _format_eth(summary.total_paid)),
        ("escrow settled", _format_eth(summary.escrow_settled)),
        ("escrow committed, in challenge window", _format_eth(summary.escrow_committed)),
        ("escrow accepted, not committed", _format_eth(summary.escrow_pending)),
        ("vouchers accepted", _format_eth(summary.voucher_accepted)),
        ("vouchers redeemed", _format_eth(summary.voucher_redeemed)),
        ("vouchers not redeemed yet", _format_eth(summary.voucher_outstanding)),
        ("jobs", jobs),
    ]
    _print_rows(console, "earnings (gross, before the protocol fee)", rows)
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
    init.add_argument("--lat", type=float, help="latitude of the machine (degrees, with --lon)")
    init.add_argument("--lon", type=float, help="longitude of the machine (degrees, with --lat)")
    init.add_argument("--workloads", help="comma-separated workloads to serve (default matmul,embed)")
    init.add_argument(
        "--price", type=_price, action="append", help="WORKLOAD=WEI per billing unit (repeatable)"
    )
    init.add_argument("--listen", action="append", help="libp2p listen multiaddr (repeatable)")
    init.add_argument("--bootstrap", action="append", help="bootstrap peer multiaddr with /p2p/ (repeatable)")
    init.add_argument(
        "--announce", action="append", help="multiaddr to advertise instead of the listen ones (repeatable)"
    )
    init.add_argument("--chain-url", default="http://127.0.0.1:8545", help="JSON-RPC URL")
    init.add_argument("--deployment", type=Path, help="deployment file (default .devnet/deployment.json)")
    init.add_argument("--stake", type=_eth_amount, help="stake to hold while running (ETH, or 1500wei)")
    init.add_argument("--device", choices=["auto", "cpu", "cuda"])
    init.add_argument("--max-concurrency", type=int, help="jobs computed at once")
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
    stake.add_argument("amount", type=_eth_amount, help="ETH (1.5), or with a unit (1500wei, 20gwei)")
    stake.set_defaults(handler=cmd_stake)
    unbond = sub.add_parser("unbond", parents=[common], help="start unbonding stake")
    unbond.add_argument("amount", type=_eth_amount, help="ETH (1.5), or with a unit (1500wei, 20gwei)")
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
    """Run ``proxima-node``.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit status: 0 on success, 1 on an error (printed to stderr with what to do next), 130 on
        Ctrl-C. Bad usage exits with status 2 (``SystemExit`` from argparse).
    """
    args = _parser().parse_args(argv)
    configure_logging("DEBUG" if args.verbose else "INFO", as_json=args.log_json)
    if not args.verbose:
        # py-libp2p logs every connection-manager tick at INFO; keep its warnings and errors only.
        logging.getLogger("libp2p").setLevel(logging.WARNING)
    # Off a terminal (pipes, logs, tests) rich would cut lines at 80 columns; tables size to their content.
    console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        handler: Callable[[argparse.Namespace, Console], int] = args.handler
        return handler(args, console)
    except KeyboardInterrupt:
        return 130
    except (ProximaError, OSError) as err:
        print(f"proxima-node: error: {err}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
