"""Local development network: the deployment file format and the ``proxima-devnet`` command.

``proxima-devnet`` starts anvil, deploys the Proxima contracts with
:func:`proxima.sdk.deploy.deploy_all`, writes a :class:`Deployment` JSON file and keeps the node
running until Ctrl-C. Other processes (nodes, gateway, demo) read that file with
:meth:`Deployment.load` to find the contracts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

from eth_typing import ChecksumAddress
from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ._backend import ChainError
from .anvil import AnvilProcess

__all__ = ["DEFAULT_DEPLOYMENT_PATH", "Deployment", "DeploymentFileError", "main"]

log = logging.getLogger(__name__)

DEFAULT_DEPLOYMENT_PATH = Path(".devnet") / "deployment.json"


class DeploymentFileError(ChainError, ValueError):
    """A deployment file is missing, is not JSON, or does not match the format.

    Args:
        path: The file.
        problem: What is wrong with it.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"bad deployment file {path}: {problem}; regenerate it with `proxima-devnet` or fix it by hand"
        )


def _checksummed(value: str) -> ChecksumAddress:
    """Accept EIP-55 checksummed or single-case hex addresses; reject wrong checksums."""
    if not is_hex_address(value):
        raise ValueError(f"{value!r} is not a 20-byte hex address")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise ValueError(f"{value!r} has an invalid EIP-55 checksum (typo?)")
    return to_checksum_address(value)


Address = Annotated[str, AfterValidator(_checksummed)]


class Deployment(BaseModel):
    """Where the Proxima contracts live on one chain.

    Attributes:
        version: File format version.
        chain_id: Chain the contracts are deployed on.
        rpc_url: JSON-RPC URL of the node, if it is a fixed local one.
        deployer: Address that sent the deployment transactions.
        block_number: Block of the first deployment transaction (index events from here).
        contracts: Contract name (as in Solidity) to address.
        parameters: Constructor and configuration values used (JSON values).
        created_at: When the deployment was made (UTC).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    chain_id: int = Field(gt=0)
    rpc_url: str | None = None
    deployer: Address
    block_number: int = Field(ge=0)
    contracts: dict[str, Address]
    parameters: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def address(self, name: str) -> ChecksumAddress:
        """Return the address of contract ``name``.

        Args:
            name: Contract name, for example ``"ProviderRegistry"``.

        Raises:
            KeyError: If the deployment has no such contract (the message lists those it has).
        """
        try:
            return ChecksumAddress(self.contracts[name])  # type: ignore[arg-type]
        except KeyError:
            raise KeyError(
                f"no contract {name!r} in this deployment (has: {', '.join(self.contracts)})"
            ) from None

    def save(self, path: Path | str) -> Path:
        """Write the deployment as JSON (atomically: readers never see half a file).

        Args:
            path: Destination file; parent directories are created.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> Deployment:
        """Read and validate a deployment file.

        Args:
            path: A file written by :meth:`save`.

        Returns:
            The validated deployment.

        Raises:
            DeploymentFileError: If the file is missing, not JSON, or invalid (the
                message names each bad field).
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise DeploymentFileError(path, "file not found (is the devnet running?)") from err
        except (OSError, UnicodeDecodeError) as err:
            raise DeploymentFileError(path, f"cannot read it ({err})") from err
        except json.JSONDecodeError as err:
            raise DeploymentFileError(path, f"not valid JSON ({err})") from err
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
            )
            raise DeploymentFileError(path, problems) from err


def main(argv: list[str] | None = None) -> int:
    """Run ``proxima-devnet``: anvil + deployed contracts until Ctrl-C.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="proxima-devnet", description="Local anvil chain with the Proxima contracts."
    )
    parser.add_argument("--port", type=int, default=8545, help="RPC port (default 8545)")
    parser.add_argument("--chain-id", type=int, default=31337)
    parser.add_argument("--out", type=Path, default=DEFAULT_DEPLOYMENT_PATH, help="deployment file to write")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with AnvilProcess(args.port, chain_id=args.chain_id) as anvil, anvil.connect() as chain:
            deployer = chain.accounts[0]
            # Imported here: proxima.sdk.deploy imports this package.
            from proxima.sdk.deploy import deploy_all

            deployment = deploy_all(chain, deployer).model_copy(update={"rpc_url": anvil.url})
            deployment.save(args.out)
            print(f"deployment: {args.out.resolve()}")  # noqa: T201
            print(f"rpc url:    {anvil.url}  (chain id {chain.chain_id})")  # noqa: T201
            for i, account in enumerate(chain.accounts[:3]):
                print(f"account {i}:  {account.address} key 0x{bytes(account.key).hex()}")  # noqa: T201
            print("running; press Ctrl-C to stop", flush=True)  # noqa: T201
            while anvil.running:
                time.sleep(0.5)
            log.error("anvil exited unexpectedly")
            return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    except ChainError as err:
        print(f"proxima-devnet: {err}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
