"""The committed artifacts match the sources, and the build pipeline behaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxima.contracts import (
    ArtifactNotFoundError,
    BuildError,
    available_artifacts,
    load_artifact,
)
from proxima.contracts._build import (
    SOURCE_DIR,
    check_artifacts,
    compile_sources,
    write_artifacts,
)
from proxima.contracts.build import main as build_main

BOX = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IBox} from "./interfaces/IBox.sol";

contract Box is Ownable, IBox {
    uint256 private _value;

    constructor() Ownable(msg.sender) {}

    function store(uint256 value) external onlyOwner {
        _value = value;
        emit Stored(value);
    }

    function retrieve() external view returns (uint256) {
        return _value;
    }
}
"""

IBOX = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IBox {
    event Stored(uint256 value);

    function retrieve() external view returns (uint256);
}
"""


def test_committedArtifacts_matchSources() -> None:
    assert list(SOURCE_DIR.rglob("*.sol")), f"no Solidity sources under {SOURCE_DIR}"
    diff = check_artifacts(compile_sources())
    assert diff.clean, "run `python -m proxima.contracts.build`:\n" + "\n".join(diff.describe())


def test_committedArtifacts_allLoad() -> None:
    names = available_artifacts()
    assert names
    for name in names:
        artifact = load_artifact(name)
        assert artifact.name == name
        assert artifact.source_name.startswith("src/")


@pytest.fixture
def box_sources(tmp_path: Path) -> Path:
    source_dir = tmp_path / "src"
    (source_dir / "interfaces").mkdir(parents=True)
    (source_dir / "Box.sol").write_text(BOX)
    (source_dir / "interfaces" / "IBox.sol").write_text(IBOX)
    return source_dir


def test_build_writesChecksAndPrunesArtifacts(box_sources: Path, tmp_path: Path) -> None:
    artifacts_dir = tmp_path / "artifacts"
    artifacts_dir.mkdir()
    (artifacts_dir / "Gone.json").write_text("{}\n")

    dirs = ["--source-dir", str(box_sources), "--artifacts-dir", str(artifacts_dir)]
    assert build_main(dirs) == 0

    assert available_artifacts(artifacts_dir) == ["Box", "IBox"]  # not Ownable, not Gone
    raw = json.loads((artifacts_dir / "Box.json").read_text())
    assert set(raw) == {
        "contractName", "sourceName", "abi", "bytecode", "deployedBytecode", "compiler"
    }  # fmt: skip
    assert raw["sourceName"] == "src/Box.sol"
    assert raw["compiler"] == {"solc": "0.8.30", "optimizerRuns": 200, "evmVersion": "cancun"}
    box = load_artifact("Box", artifacts_dir)
    assert box.deployed_bytecode
    assert box.deployed_bytecode in box.bytecode  # no metadata hash appended
    assert {e["name"] for e in box.abi if e["type"] == "function"} >= {"store", "retrieve"}
    interface = load_artifact("IBox", artifacts_dir)
    assert interface.bytecode == b""
    assert [e["name"] for e in interface.abi if e["type"] == "event"] == ["Stored"]

    assert build_main(["--check", *dirs]) == 0
    (box_sources / "Box.sol").write_text(BOX.replace("_value = value;", "_value = value + 1;"))
    assert build_main(["--check", *dirs]) == 1
    assert check_artifacts(compile_sources(box_sources), artifacts_dir).changed == ("Box",)


def test_build_isIndependentOfSourceLocation(box_sources: Path, tmp_path: Path) -> None:
    artifacts_dir = tmp_path / "artifacts"
    write_artifacts(compile_sources(box_sources), artifacts_dir)
    elsewhere = tmp_path / "moved" / "contracts"
    elsewhere.parent.mkdir()
    box_sources.rename(elsewhere)
    assert check_artifacts(compile_sources(elsewhere), artifacts_dir).clean


def test_build_failsWithFileAndLine(box_sources: Path) -> None:
    (box_sources / "Box.sol").write_text(BOX.replace("_value = value;", "_value = valu;"))
    with pytest.raises(BuildError, match=r"src/Box\.sol:13: DeclarationError"):
        compile_sources(box_sources)


def test_build_failsIfNoSources(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no \.sol files"):
        compile_sources(tmp_path)


def test_loadArtifact_failsListingAvailableNames(tmp_path: Path) -> None:
    (tmp_path / "Box.json").write_text("{}")
    with pytest.raises(ArtifactNotFoundError, match=r"'Nope' \(available: Box\)"):
        load_artifact("Nope", tmp_path)
