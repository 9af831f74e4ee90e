"""Proxima contracts: Solidity sources, compiled artifacts and their loader.

Example:
    >>> from proxima.contracts import load_artifact
    >>> artifact = load_artifact("ProviderRegistry")  # doctest: +SKIP
    >>> artifact.abi, artifact.bytecode  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ._errors import ArtifactNotFoundError, BuildError, ContractError, ProximaError

__all__ = [
    "ARTIFACTS_DIR",
    "Artifact",
    "ArtifactNotFoundError",
    "BuildError",
    "ContractError",
    "ProximaError",
    "available_artifacts",
    "load_artifact",
]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract.

    Attributes:
        name: Contract name, as in Solidity.
        source_name: Source file, relative to ``contracts/`` (``src/...``).
        abi: The ABI as a list of JSON objects.
        bytecode: Creation code (empty for interfaces and abstract contracts).
        deployed_bytecode: Runtime code (empty for interfaces and abstract contracts).
    """

    name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes


def available_artifacts(artifacts_dir: Path = ARTIFACTS_DIR) -> list[str]:
    """Return the sorted names of contracts that have an artifact.

    Args:
        artifacts_dir: Where to look; defaults to the package's ``artifacts/``.
    """
    if not artifacts_dir.is_dir():
        return []
    return sorted(p.stem for p in artifacts_dir.glob("*.json"))


@cache
def load_artifact(name: str, artifacts_dir: Path = ARTIFACTS_DIR) -> Artifact:
    """Load the compiled artifact of one contract (read once per process; artifacts do not change).

    Args:
        name: Contract name, for example ``"ProviderRegistry"``.
        artifacts_dir: Where to look; defaults to the package's ``artifacts/``.

    Returns:
        The artifact with its ABI and bytecode decoded.

    Raises:
        ArtifactNotFoundError: If no artifact has that name (the message lists those that exist).
        ContractError: If the artifact file is not valid.
    """
    path = artifacts_dir / f"{name}.json"
    if not path.is_file():
        raise ArtifactNotFoundError(name, available_artifacts(artifacts_dir))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Artifact(
            name=data["contractName"],
            source_name=data["sourceName"],
            abi=list(data["abi"]),
            bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
            deployed_bytecode=bytes.fromhex(data["deployedBytecode"].removeprefix("0x")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ContractError(
            f"artifact {path} is corrupt ({err!r}); regenerate it with `python -m proxima.contracts.build`"
        ) from err
