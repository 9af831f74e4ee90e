"""Provider nodes as separate OS processes (``proxima-node init`` / ``start``) for the integration tests."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from prometheus_client.parser import text_string_to_metric_families

from proxima.node.service import read_status
from proxima.sdk.peerid import peer_id_from_key

PASSPHRASE = "integration test passphrase"


@dataclass
class NodeProcess:
    name: str
    data_dir: Path
    account: LocalAccount
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    addrs: tuple[str, ...] = ()
    metrics_url: str | None = None
    restarts: int = field(default=0)

    @property
    def peer_id(self) -> bytes:
        return peer_id_from_key(bytes(self.account.key))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def node_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxima.node.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def node_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PROXIMA_PASSPHRASE": PASSPHRASE, "HF_HUB_OFFLINE": "1", **extra})
    return env


def start_node(node: NodeProcess) -> None:
    log = node.log_path.open("ab")
    node.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxima.node.cli",
            "start",
            "--data-dir",
            str(node.data_dir),
            "--quick-benchmark",
        ],
        env=node_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()


def wait_ready(node: NodeProcess, timeout: float = 120.0) -> None:
    assert node.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(node.data_dir)
        if status is not None and status.pid == node.proc.pid:
            node.addrs = status.addrs
            node.metrics_url = status.metrics_url
            return
        if node.proc.poll() is not None:
            pytest.fail(f"{node.name} exited with {node.proc.returncode}:\n{node.log_text()[-4000:]}")
        time.sleep(0.2)
    pytest.fail(f"{node.name} not ready after {timeout} s:\n{node.log_text()[-4000:]}")


def stop_node(node: NodeProcess, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
    assert node.proc is not None
    if node.proc.poll() is None:
        node.proc.send_signal(sig)
    try:
        return node.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        node.proc.wait()
        pytest.fail(f"{node.name} did not stop within {timeout} s:\n{node.log_text()[-4000:]}")


def node_metrics(node: NodeProcess) -> dict[str, float]:
    assert node.metrics_url is not None
    with urllib.request.urlopen(node.metrics_url, timeout=10) as response:  # noqa: S310 - loopback URL
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def node_jobs(node: NodeProcess) -> dict[str, str]:
    """Job id (``0x`` hex) -> state in the node's own database (empty while it cannot be read)."""
    path = node.data_dir / "node.sqlite"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute("SELECT job_id, state FROM jobs").fetchall()
    except sqlite3.Error:
        return {}
    return {"0x" + bytes(job_id).hex(): str(state) for job_id, state in rows}


def node_job_state(node: NodeProcess, job_id: str) -> str | None:
    """The state of one job in the node's database, None if unknown."""
    return node_jobs(node).get(job_id)
