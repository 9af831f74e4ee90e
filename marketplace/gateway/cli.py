"""``proxima-gateway``: run the marketplace gateway and manage its clients.

    proxima-gateway serve          build the services (chain, payer, libp2p, dispatcher) and serve HTTP
    proxima-gateway add-client     open a client account with a budget and print its API key (once)
    proxima-gateway new-key        issue another API key for a client (printed once)
    proxima-gateway set-budget     change a client's budget
    proxima-gateway list-clients   budgets, spend and reservations of every client

Settings come from ``--config FILE`` (TOML), ``PROXIMA_GATEWAY_*`` environment variables and the options;
the payer keystore's passphrase from the variable ``payer.passphrase_env`` names (default
``PROXIMA_GATEWAY_PASSPHRASE``). Amounts are wei (``1000``) or carry a unit (``20 gwei``, ``0.5 ether``).
Exit status: 0 on success, 1 on an error (printed on one line that says what to do), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.table import Table

from proxima.contracts import ProximaError
from proxima.marketplace.gateway.accounts import Accounts, ClientAccount
from proxima.marketplace.gateway.app import create_app
from proxima.marketplace.gateway.services import GatewayServices
from proxima.marketplace.gateway.settings import GatewaySettings, load_settings
from proxima.marketplace.settings_files import load_from_args, wei_argument
from proxima.sdk.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> GatewaySettings:
    return load_from_args(load_settings, args)


def _accounts(settings: GatewaySettings) -> Accounts:
    return Accounts(settings.accounts_path)


def _show(account: ClientAccount) -> str:
    return (
        f"client {account.address}: budget {account.budget_wei} wei, spent {account.spent_wei} wei, "
        f"reserved {account.reserved_wei} wei, available {account.available_wei} wei, "
        f"{account.api_keys} API key(s)"
    )


def cmd_add_client(args: argparse.Namespace, console: Console) -> int:
    settings = _settings(args)
    budget = settings.default_budget_wei if args.budget_wei is None else args.budget_wei
    with _accounts(settings) as accounts:
        account = accounts.add_client(args.address, budget)
        key = accounts.issue_api_key(account.address)
        console.print(_show(account))
    console.print(f"API key (shown once; keep it secret): {key}")
    return 0


def cmd_new_key(args: argparse.Namespace, console: Console) -> int:
    with _accounts(_settings(args)) as accounts:
        key = accounts.issue_api_key(args.address)
    console.print(f"API key (shown once; keep it secret): {key}")
    return 0


def cmd_set_budget(args: argparse.Namespace, console: Console) -> int:
    with _accounts(_settings(args)) as accounts:
        console.print(_show(accounts.set_budget(args.address, args.budget_wei)))
    return 0


def cmd_list_clients(args: argparse.Namespace, console: Console) -> int:
    with _accounts(_settings(args)) as accounts:
        clients = accounts.clients()
    if args.json:
        rows = [
            {
                "address": c.address,
                "budget_wei": str(c.budget_wei),
                "spent_wei": str(c.spent_wei),
                "reserved_wei": str(c.reserved_wei),
                "available_wei": str(c.available_wei),
                "api_keys": c.api_keys,
            }
            for c in clients
        ]
        print(json.dumps(rows, indent=2))  # noqa: T201 - the command's output
        return 0
    if not clients:
        console.print("no clients yet; add one with `proxima-gateway add-client --address 0x...`")
        return 0
    table = Table("address", "budget (wei)", "spent (wei)", "reserved (wei)", "available (wei)", "API keys")
    for c in clients:
        table.add_row(
            c.address,
            str(c.budget_wei),
            str(c.spent_wei),
            str(c.reserved_wei),
            str(c.available_wei),
            str(c.api_keys),
        )
    console.print(table)
    return 0


class ListenError(ProximaError):
    """The HTTP address cannot be bound.

    Args:
        host: The interface.
        port: The port.
        problem: The system's reason.
    """

    def __init__(self, host: str, port: int, problem: str) -> None:
        super().__init__(
            f"cannot listen on {host}:{port}: {problem}; choose another --port or stop the other server"
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket says TCP; with proto 0 every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ListenError(host, port, err.strerror or str(err)) from err
    return sock


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    settings = _settings(args)
    configure_logging(
        "DEBUG" if args.verbose else settings.log_level, as_json=args.log_json or settings.log_json
    )
    if not args.verbose:
        logging.getLogger("libp2p").setLevel(logging.WARNING)
    sock = _bind(settings.host, settings.port)
    try:
        services = GatewayServices.build(settings)  # before serving: problems are one line, not a traceback
    except BaseException:
        sock.close()
        raise
    app = create_app(settings, services=services, start_services=True)
    host, port = sock.getsockname()[:2]
    log.info(
        "gateway listening", extra={"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs"}
    )
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxima-gateway",
        description="Proxima marketplace gateway: an HTTP API in front of the network.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (PROXIMA_GATEWAY_* variables override it)")
    common.add_argument("--data-dir", type=Path, help="folder of the SQLite files (overrides the settings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="serve the HTTP API until Ctrl-C")
    serve.add_argument("--host", help="interface to bind (overrides the settings)")
    serve.add_argument("--port", type=int, help="TCP port (overrides the settings; 0 picks a free one)")
    serve.add_argument("--log-json", action="store_true", help="log JSON lines instead of key=value")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=cmd_serve)

    add = sub.add_parser("add-client", parents=[common], help="open a client account and print its API key")
    add.add_argument("--address", required=True, help="the client's Ethereum address")
    add.add_argument(
        "--budget-wei", type=wei_argument, help="budget (default: the settings' default_budget_wei)"
    )
    add.set_defaults(handler=cmd_add_client)

    key = sub.add_parser("new-key", parents=[common], help="issue another API key for a client")
    key.add_argument("--address", required=True, help="the client's address")
    key.set_defaults(handler=cmd_new_key)

    budget = sub.add_parser("set-budget", parents=[common], help="change a client's budget")
    budget.add_argument("--address", required=True, help="the client's address")
    budget.add_argument(
        "--budget-wei", type=wei_argument, required=True, help="the new budget (what was spent stays)"
    )
    budget.set_defaults(handler=cmd_set_budget)

    listing = sub.add_parser("list-clients", parents=[common], help="budgets and spend of every client")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list_clients)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxima-gateway``.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit status: 0 on success, 1 on an error (printed to stderr with what to do next), 130 on
        Ctrl-C. Bad usage exits with status 2 (``SystemExit`` from argparse).
    """
    args = _parser().parse_args(argv)
    if args.command != "serve":
        configure_logging("WARNING")
    console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        handler: Callable[[argparse.Namespace, Console], int] = args.handler
        return handler(args, console)
    except KeyboardInterrupt:
        return 130
    except (ProximaError, OSError, ValueError) as err:
        message = str(err).replace("\n", "; ")
        print(f"proxima-gateway: error: {message}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
