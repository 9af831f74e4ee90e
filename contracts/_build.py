"""Compile ``contracts/src`` with the pinned solc-js and manage the committed artifacts.

The compiler runs in ``--standard-json`` mode with settings that make the output
independent of the machine and of the checkout's location (no metadata hash), so
that the artifacts committed to git can be checked for freshness in CI.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import BuildError

__all__ = [
    "ARTIFACTS_DIR",
    "CONTRACTS_DIR",
    "EVM_VERSION",
    "OPTIMIZER_RUNS",
    "SOURCE_DIR",
    "ArtifactDiff",
    "check_artifacts",
    "compile_sources",
    "render_artifact",
    "solc_version",
    "write_artifacts",
]

log = logging.getLogger(__name__)

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCE_DIR = CONTRACTS_DIR / "src"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
OPTIMIZER_RUNS = 200
EVM_VERSION = "cancun"
_SOURCE_PREFIX = "src/"
_SOLCJS = CONTRACTS_DIR / "node_modules" / ".bin" / "solcjs"
_SOLC_PACKAGE = CONTRACTS_DIR / "node_modules" / "solc" / "package.json"
_COMPILE_TIMEOUT_S = 600


def solc_version() -> str:
    """Return the version of the pinned solc-js package (for example ``0.8.30``).

    Raises:
        BuildError: If the npm toolchain is not installed.
    """
    try:
        package = json.loads(_SOLC_PACKAGE.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise BuildError(
            f"solc-js is not installed ({_SOLC_PACKAGE} is missing); run scripts/bootstrap.sh"
        ) from err
    return str(package["version"])


def _standard_json_input(sources: dict[str, str]) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {key: {"content": text} for key, text in sorted(sources.items())},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "viaIR": False,
            "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
            "metadata": {"bytecodeHash": "none", "appendCBOR": False},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }


def _parse_solcjs_stdout(stdout: str) -> dict[str, Any]:
    """Parse solcjs output, skipping the non-JSON lines it prints before the JSON."""
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if line.lstrip().startswith("{"):
            try:
                result = json.loads("\n".join(lines[index:]))
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict):
                return result
    raise BuildError("solcjs printed no JSON output", [stdout.strip()[:2000] or "(empty)"])


def _line_of(text: str | None, offset: int) -> int | None:
    if text is None or offset < 0:
        return None
    return text.encode("utf-8")[:offset].count(b"\n") + 1


def _describe_error(error: dict[str, Any], sources: dict[str, str]) -> str:
    location = error.get("sourceLocation") or {}
    file = location.get("file")
    message = f"{error.get('type', 'Error')}: {error.get('message', '').strip()}"
    if not file:
        return message
    text = sources.get(file)
    if text is None and (CONTRACTS_DIR / file).is_file():
        text = (CONTRACTS_DIR / file).read_text(encoding="utf-8")
    line = _line_of(text, int(location.get("start", -1)))
    where = f"{file}:{line}" if line is not None else file
    return f"{where}: {message}"


def _read_sources(source_dir: Path) -> dict[str, str]:
    if not source_dir.is_dir():
        raise BuildError(f"source directory {source_dir} does not exist")
    sources = {
        _SOURCE_PREFIX + path.relative_to(source_dir).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(source_dir.rglob("*.sol"))
    }
    if not sources:
        raise BuildError(f"no .sol files under {source_dir}; nothing to compile")
    return sources


def compile_sources(source_dir: Path = SOURCE_DIR) -> dict[str, dict[str, Any]]:
    """Compile every ``.sol`` file under ``source_dir`` and return the artifacts.

    Sources are keyed ``src/<relative path>`` whatever ``source_dir`` is, so the
    artifacts do not depend on where the sources live. OpenZeppelin imports resolve
    from ``contracts/node_modules``.

    Args:
        source_dir: Directory searched recursively for ``*.sol`` files.

    Returns:
        A mapping from contract name to its artifact (the JSON-ready dictionary
        written to ``artifacts/<name>.json``), for every contract, interface and
        library defined under ``source_dir``.

    Raises:
        BuildError: If there are no sources, solc-js is missing or fails, the
            compiler reports errors, or two contracts share a name.
    """
    sources = _read_sources(source_dir)
    if not _SOLCJS.exists():
        raise BuildError(f"solcjs not found at {_SOLCJS}; run scripts/bootstrap.sh")
    version = solc_version()
    started = time.monotonic()
    # solcjs reads stdin with readFileSync (EAGAIN on a pipe that is not yet filled) and exits
    # before a stdout pipe drains (truncated JSON): give it regular files on both ends.
    try:
        with (
            tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stdin,
            tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stdout,
        ):
            json.dump(_standard_json_input(sources), stdin)
            stdin.seek(0)
            proc = subprocess.run(
                [str(_SOLCJS), "--standard-json", "--base-path", "."],
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                cwd=CONTRACTS_DIR,
                timeout=_COMPILE_TIMEOUT_S,
                check=False,
            )
            stdout.seek(0)
            solc_stdout = stdout.read()
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BuildError(f"could not run solcjs: {err}") from err
    if proc.returncode != 0:
        raise BuildError(f"solcjs exited with status {proc.returncode}", [proc.stderr.strip()[:2000]])
    output = _parse_solcjs_stdout(solc_stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError(
            f"solc reported {len(errors)} error(s)", [_describe_error(e, sources) for e in errors]
        )
    for warning in output.get("errors", []):
        if warning.get("severity") != "error":
            log.debug("solc: %s", _describe_error(warning, sources))

    artifacts: dict[str, dict[str, Any]] = {}
    for source_name, contracts in sorted(output.get("contracts", {}).items()):
        if source_name not in sources:
            continue  # a dependency such as OpenZeppelin
        for name, compiled in sorted(contracts.items()):
            if name in artifacts:
                raise BuildError(
                    f"contract name {name!r} is defined twice",
                    [artifacts[name]["sourceName"], source_name],
                )
            artifacts[name] = {
                "contractName": name,
                "sourceName": source_name,
                "abi": compiled["abi"],
                "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
                "compiler": {
                    "solc": version,
                    "optimizerRuns": OPTIMIZER_RUNS,
                    "evmVersion": EVM_VERSION,
                },
            }
    log.info(
        "compiled %d source file(s) into %d artifact(s) in %.1fs",
        len(sources),
        len(artifacts),
        time.monotonic() - started,
    )
    return artifacts


def render_artifact(artifact: dict[str, Any]) -> str:
    """Serialize an artifact deterministically (sorted keys, 2-space indent, final newline).

    Args:
        artifact: One value of :func:`compile_sources`'s result.

    Returns:
        The exact text stored in ``artifacts/<name>.json``.
    """
    return json.dumps(artifact, sort_keys=True, indent=2) + "\n"


@dataclass(frozen=True)
class ArtifactDiff:
    """Differences between freshly compiled artifacts and those on disk.

    Attributes:
        missing: Contracts with no artifact file yet.
        changed: Contracts whose artifact file differs from the compiler output.
        stale: Artifact files for contracts that no longer exist.
    """

    missing: tuple[str, ...]
    changed: tuple[str, ...]
    stale: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """Whether the artifacts on disk match the sources exactly."""
        return not (self.missing or self.changed or self.stale)

    def describe(self) -> list[str]:
        """Return one human-readable line per difference."""
        return (
            [f"missing: {n}.json" for n in self.missing]
            + [f"differs: {n}.json" for n in self.changed]
            + [f"stale:   {n}.json (no such contract)" for n in self.stale]
        )


def check_artifacts(
    artifacts: dict[str, dict[str, Any]], artifacts_dir: Path = ARTIFACTS_DIR
) -> ArtifactDiff:
    """Compare compiled artifacts with the files in ``artifacts_dir`` without writing.

    Args:
        artifacts: The result of :func:`compile_sources`.
        artifacts_dir: Directory holding the committed ``<name>.json`` files.

    Returns:
        What is missing, different or stale.
    """
    on_disk = {p.stem: p for p in artifacts_dir.glob("*.json")} if artifacts_dir.is_dir() else {}
    missing, changed = [], []
    for name, artifact in sorted(artifacts.items()):
        path = on_disk.get(name)
        if path is None:
            missing.append(name)
        elif path.read_text(encoding="utf-8") != render_artifact(artifact):
            changed.append(name)
    stale = sorted(set(on_disk) - set(artifacts))
    return ArtifactDiff(tuple(missing), tuple(changed), tuple(stale))


def write_artifacts(
    artifacts: dict[str, dict[str, Any]], artifacts_dir: Path = ARTIFACTS_DIR
) -> ArtifactDiff:
    """Write changed artifacts and delete stale ones.

    Args:
        artifacts: The result of :func:`compile_sources`.
        artifacts_dir: Directory receiving ``<name>.json`` files (created if needed).

    Returns:
        What was different before writing (empty when nothing changed).
    """
    diff = check_artifacts(artifacts, artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    for name in (*diff.missing, *diff.changed):
        (artifacts_dir / f"{name}.json").write_text(render_artifact(artifacts[name]), encoding="utf-8")
    for name in diff.stale:
        (artifacts_dir / f"{name}.json").unlink()
    return diff
