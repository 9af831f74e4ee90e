"""``proxima-verify``: run a staked verifier.

    proxima-verify init       create the verifier's encrypted keystore (mode 0600)
    proxima-verify register   stake as a verifier (ProviderRegistry.registerVerifier)
    proxima-verify serve      serve the HTTP API (canaries, verdicts) and run the duty loop
    proxima-verify api-key    make an API key and print the SHA-256 line for the settings

Settings come from ``--config FILE`` (TOML), ``PROXIMA_VERIFY_*`` environment variables and the options; the
keystore's passphrase from the variable ``key.passphrase_env`` names (default ``PROXIMA_VERIFY_PASSPHRASE``),
else it is asked on the terminal (``init``). Amounts are wei (``1000``) or carry a unit (``2 ether``).
Exit status: 0 on success, 1 on an error (one line that says what to do), 2 on bad usage, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from proxima.contracts import ProximaError
from proxima.marketplace.settings_files import load_from_args, wei_argument
from proxima.marketplace.verifier.app import build_service, connect, create_app, load_key
from proxima.marketplace.verifier.settings import VerifierSettings, load_settings
from proxima.sdk.logs import configure_logging

__all__ = ["VerifyCommandError", "main"]

log = logging.getLogger(__name__)

_SCRYPT_N = 2**18


class VerifyCommandError(ProximaError):
    """A command cannot do what it was asked (keystore exists, empty passphrase, stake too low, port busy)."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise VerifyCommandError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port"
        ) from err
    return sock


def _settings(args: argparse.Namespace, **extra: Any) -> VerifierSettings:
    return load_from_args(load_settings, args, **extra)


def _passphrase(env_var: str, confirm: bool) -> str:
    from_env = os.environ.get(env_var)
    if from_env is not None:
        if not from_env:
            raise VerifyCommandError(
                f"${env_var} is set but empty; unset it to be asked, or set a passphrase"
            )
        return from_env
    try:
        passphrase = getpass.getpass("Keystore passphrase: ")
        if confirm and getpass.getpass("Repeat the passphrase: ") != passphrase:
            raise VerifyCommandError("the two passphrases differ")
    except EOFError as err:
        raise VerifyCommandError(f"no passphrase: no terminal to ask on, and ${env_var} is not set") from err
    if not passphrase:
        raise VerifyCommandError("the passphrase must not be empty")
    return passphrase


def write_keystore(path: Path, passphrase: str, *, scrypt_n: int = _SCRYPT_N) -> LocalAccount:
    """Create an encrypted keystore for a fresh key at ``path`` (mode 0600, never replacing a file).

    Raises:
        VerifyCommandError: If the file exists, the passphrase is empty, or it cannot be written.
    """
    if not passphrase:
        raise VerifyCommandError("refusing an empty passphrase: the keystore would not be protected")
    account: LocalAccount = Account.create()
    data = (
        json.dumps(Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=scrypt_n)) + "\n"
    ).encode()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise VerifyCommandError(
            f"{path} already exists; choose another --keystore or keep using it"
        ) from err
    except OSError as err:
        raise VerifyCommandError(f"cannot create {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)
        raise VerifyCommandError(f"cannot write {path}: {err.strerror or err}") from err
    return account


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.keystore).expanduser()
    env_var = args.passphrase_env
    account = write_keystore(path, _passphrase(env_var, confirm=True), scrypt_n=args.scrypt_n)
    print(f"verifier key created: {account.address}")  # noqa: T201 - the command's output
    print(f"keystore: {path} (mode 0600); its passphrase goes in ${env_var} for serve and register")  # noqa: T201
    print(f'settings: [key] keystore = "{path}"')  # noqa: T201
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    settings = _settings(args)
    account = load_key(settings)
    chain, contracts = connect(settings, account)
    try:
        registry = contracts.registry
        if registry.is_active_verifier(account.address):
            print(f"{account.address} is already an active verifier")  # noqa: T201
            return 0
        minimum = registry.min_verifier_stake()
        stake = minimum if args.stake_wei is None else args.stake_wei
        if stake < minimum:
            raise VerifyCommandError(
                f"--stake-wei {stake} is below the registry's minimum verifier stake {minimum}"
            )
        metadata = keccak(text=args.metadata or f"proxima-verify {account.address}")
        registry.register_verifier(account, metadata, stake)
        print(f"{account.address} registered as a verifier with {stake} wei staked")  # noqa: T201
    finally:
        chain.close()
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(32)
    print(f"API key (shown once; give it to the gateway): {key}")  # noqa: T201
    print(f'settings: api_key_sha256 = ["{hashlib.sha256(key.encode()).hexdigest()}"]')  # noqa: T201
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    extra = {"duties": {"enabled": False}} if args.no_duties else {}
    settings = _settings(args, **extra)
    configure_logging(
        "DEBUG" if args.verbose else settings.log_level, as_json=args.log_json or settings.log_json
    )
    if not args.verbose:
        logging.getLogger("libp2p").setLevel(logging.WARNING)
    sock = _bind(settings.host, settings.port)
    try:
        service, close = build_service(settings)
    except BaseException:
        sock.close()
        raise
    app = create_app(service, start_duties=settings.duties.enabled, on_close=close)
    host, port = sock.getsockname()[:2]
    log.info("verifier listening", extra={"url": f"http://{host}:{port}", "address": service.address})
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxima-verify", description="Proxima staked verifier.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (PROXIMA_VERIFY_* variables override it)")
    common.add_argument("--data-dir", type=Path, help="folder of the SQLite file (overrides the settings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create the verifier's encrypted keystore")
    init.add_argument("--keystore", required=True, help="where to write it (must not exist)")
    init.add_argument(
        "--passphrase-env", default="PROXIMA_VERIFY_PASSPHRASE", help="variable holding the passphrase"
    )
    init.add_argument(
        "--scrypt-n", type=int, default=_SCRYPT_N, choices=[2**10, 2**14, 2**18], help="work factor"
    )
    init.set_defaults(handler=cmd_init)

    register = sub.add_parser("register", parents=[common], help="stake as a verifier")
    register.add_argument("--stake-wei", type=wei_argument, help="stake (default: the registry's minimum)")
    register.add_argument("--metadata", help="text whose keccak256 is the metadata hash")
    register.set_defaults(handler=cmd_register)

    serve = sub.add_parser("serve", parents=[common], help="serve the HTTP API and run duties until Ctrl-C")
    serve.add_argument("--host", help="interface to bind (overrides the settings)")
    serve.add_argument("--port", type=int, help="TCP port (overrides the settings; 0 picks a free one)")
    serve.add_argument("--no-duties", action="store_true", help="serve canaries and verdicts only")
    serve.add_argument("--log-json", action="store_true", help="log JSON lines")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=cmd_serve)

    api_key = sub.add_parser("api-key", help="make an API key for the POST routes")
    api_key.set_defaults(handler=cmd_api_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``proxima-verify``.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit status: 0 on success, 1 on an error (printed to stderr with what to do), 130 on Ctrl-C.
    """
    args = _parser().parse_args(argv)
    if args.command != "serve":
        configure_logging("WARNING")
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except (ProximaError, OSError, ValueError) as err:
        message = str(err).replace("\n", "; ")
        print(f"proxima-verify: error: {message}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
