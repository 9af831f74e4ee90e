"""Exception roots shared by every Proxima package.

``ProximaError`` lives here, in the lowest package of the dependency graph
(``sdk`` depends on ``contracts``), so that every other package can subclass it.
"""

from __future__ import annotations

__all__ = ["ArtifactNotFoundError", "BuildError", "ContractError", "ProximaError"]


class ProximaError(Exception):
    """Root of every error raised by Proxima code."""


class ContractError(ProximaError):
    """Something is wrong with the contract sources, the compiler or the artifacts."""


class ArtifactNotFoundError(ContractError, LookupError):
    """No compiled artifact exists under the requested contract name.

    Args:
        name: The contract name that was asked for.
        available: The names that do have an artifact.
    """

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        listing = ", ".join(available) if available else "none"
        super().__init__(
            f"no artifact for contract {name!r} (available: {listing}); "
            "run `python -m proxima.contracts.build` after adding or renaming contracts"
        )


class BuildError(ContractError):
    """The Solidity compiler could not be run or reported errors.

    Args:
        summary: One line saying what failed.
        details: Individual problems (for example ``file:line: message``), one per entry.
    """

    def __init__(self, summary: str, details: list[str] | None = None) -> None:
        self.summary = summary
        self.details = details or []
        lines = [summary, *(f"  {d}" for d in self.details)]
        super().__init__("\n".join(lines))
