"""The distribution ships every package folder under its ``proxima.*`` name, and nothing at top level."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "audit": "proxima.audit",
    "contracts": "proxima.contracts",
    "marketplace": "proxima.marketplace",
    "node": "proxima.node",
    "sdk": "proxima.sdk",
    "sim": "proxima.sim",
}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder for folder, name in FOLDERS.items()}
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "node_modules" in init.parts:
                continue
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert set(config["packages"]) == found


def test_sdk_ships_py_typed() -> None:
    assert (ROOT / "sdk" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in config["package-data"]["proxima.sdk"]
