"""The demo's world: anvil, the contracts, provider nodes, a verifier and the gateway, as separate processes.

Every part is the real command a user runs: ``proxima-node init`` / ``start`` for each provider (behind a
:class:`~proxima.marketplace.delayproxy.DelayProxy` giving it the RTT of its country, and announcing the
proxy's address), ``python -m proxima.marketplace.verifier.cli`` for the staked verifier, and
``proxima-gateway add-client`` / ``serve`` for the gateway. Processes start in parallel; readiness is the
node's ``status.json``, the verifier's ``/v1/health`` and the gateway's ``/healthz`` and measured RTTs, never
a fixed sleep. This module talks to the nodes only through their commands, files and ports (the marketplace
does not import ``proxima.node``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import tomli_w
from eth_account.signers.local import LocalAccount

from proxima.marketplace.delayproxy import DelayProxy
from proxima.marketplace.demo.sites import Site
from proxima.marketplace.errors import MarketError
from proxima.marketplace.gateway.accounts import Accounts
from proxima.marketplace.gateway.settings import load_settings as load_gateway_settings
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import AnvilProcess, Deployment, RpcChain, dev_accounts
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58

__all__ = [
    "ETH",
    "DemoSetupError",
    "GatewayHandle",
    "NodeHandle",
    "VerifierHandle",
    "World",
    "WorldSettings",
    "verifier_available",
]

log = logging.getLogger(__name__)

ETH: Final = 10**18
PASSPHRASE: Final = "proxima demo passphrase (dev accounts only)"  # noqa: S105 - public dev keys
VERIFIER_MODULE: Final = "proxima.marketplace.verifier.cli"
GATEWAY_MODULE: Final = "proxima.marketplace.gateway.cli"
NODE_MODULE: Final = "proxima.node.cli"

_INIT_SCRIPT: Final = """
import json, os, sys
from proxima.node.cli import main
for key, argv in json.load(sys.stdin):
    os.environ["NODE_KEY"] = key
    status = main(argv)
    if status:
        sys.exit(status)
"""
"""Runs ``proxima-node init`` for each ``[key, argv]`` read from stdin, in one interpreter."""

# Dev accounts (public keys of the dev mnemonic): 0 deploys, 1 verifies, 2 pays for the gateway, 3 is the
# client, 4.. are the providers.
_ADMIN, _VERIFIER, _PAYER, _CLIENT, _FIRST_NODE = 0, 1, 2, 3, 4


class DemoSetupError(MarketError):
    """A part of the demo world did not start; the message says which and ends with its log."""

    def __init__(self, part: str, problem: str, log_tail: str = "") -> None:
        self.part = part
        tail = f"\n--- {part} log (end) ---\n{log_tail}" if log_tail else ""
        super().__init__(f"{part}: {problem}{tail}")


def verifier_available() -> bool:
    """Whether the verifier service (``proxima.marketplace.verifier``) is installed."""
    try:
        return importlib.util.find_spec(VERIFIER_MODULE) is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class WorldSettings:
    """How the world is built.

    Attributes:
        sites: The provider nodes.
        rtts: One-way delays come from these round-trip times (seconds), by country.
        node_stake_wei: Stake each provider puts up.
        min_provider_stake_wei: The registry's minimum; a provider below it is inactive.
        fault_slash_bps: Share of stake one proven fault takes.
        fault_seed: ``[faults] seed`` of dishonest nodes.
        canary_rate: Gateway ``[verification] canary_rate``.
        freivalds_rounds: Gateway ``[verification] freivalds_rounds``.
        with_verifier: Start the staked verifier (needed to put evidence on chain).
        benchmark_cache: Where the nodes' shared benchmark is kept between runs (None: measured each run).
        verifier_interval_s: Seconds between the verifier's own rounds of canary challenges.
        voucher_redeem_interval_s: Nodes redeem their vouchers at least this often.
        max_concurrency: Jobs each node computes at once.
    """

    sites: tuple[Site, ...]
    rtts: dict[str, float]
    node_stake_wei: int = 3 * ETH // 2
    min_provider_stake_wei: int = ETH
    fault_slash_bps: int = 5_000
    fault_seed: int = 7
    canary_rate: float = 0.25
    freivalds_rounds: int = 16
    with_verifier: bool = True
    benchmark_cache: Path | None = Path(tempfile.gettempdir()) / "proxima-demo" / "benchmark.json"
    verifier_interval_s: float = 15.0
    voucher_redeem_interval_s: float = 4.0
    max_concurrency: int = 2

    def deploy_parameters(self) -> DeployParameters:
        """Quorum 1, and one fault slash takes a provider below the minimum stake."""
        return DeployParameters(
            verdict_quorum=1,
            min_provider_stake=self.min_provider_stake_wei,
            fault_slash_bps=self.fault_slash_bps,
        )


_PORTS: Final = range(20_000, 32_000)
"""Fixed ports come from below Linux's ephemeral range (32768+), so that no process binding port 0 (the
proxies, the nodes' metrics servers) can take one between its choice and its use."""
_taken: set[int] = set()


def _free_port() -> int:
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(_PORTS)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise DemoSetupError("ports", f"no free TCP port in {_PORTS.start}..{_PORTS.stop - 1}")


def _tail(path: Path, chars: int = 3_000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _quiet_env(**extra: str) -> dict[str, str]:
    """The environment of child processes: offline model loading, one BLAS thread each (five nodes share
    a few cores), the demo's keystore passphrase, no inherited gateway or node settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROXIMA_GATEWAY_", "PROXIMA_VERIFY_", "PROXIMA_NODE_"))
    }
    env.update(
        {
            "PROXIMA_PASSPHRASE": PASSPHRASE,
            "PROXIMA_VERIFY_PASSPHRASE": PASSPHRASE,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            **extra,
        }
    )
    return env


@dataclass
class NodeHandle:
    """A provider node process and its delaying proxy."""

    site: Site
    account: LocalAccount
    data_dir: Path
    rtt_s: float
    proxy: DelayProxy
    listen_port: int
    proc: subprocess.Popen[bytes] | None = None
    metrics_url: str | None = None
    killed_at: float | None = None

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def peer_id(self) -> str:
        return peer_id_to_base58(peer_id_from_key(bytes(self.account.key)))

    @property
    def announce(self) -> str:
        """The proxy's address, as peers dial it."""
        host, port = self.proxy.address
        return f"/ip4/{host}/tcp/{port}/p2p/{self.peer_id}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return _tail(self.log_path, 6_000)

    def kill(self) -> None:
        """SIGKILL: the node dies at once, mid-job, without draining."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.killed_at = time.time()

    def stop(self, timeout: float = 20.0) -> None:
        _interrupt(self.proc, timeout)

    def jobs(self) -> dict[str, str]:
        """Job id (``0x`` hex) -> state in the node's own database (empty while it cannot be read)."""
        path = self.data_dir / "node.sqlite"
        if not path.exists():
            return {}
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
                rows = db.execute("SELECT job_id, state FROM jobs").fetchall()
        except sqlite3.Error:
            return {}
        return {"0x" + bytes(job_id).hex(): str(state) for job_id, state in rows}

    def status(self) -> dict[str, Any] | None:
        """The node's ``status.json`` while this process runs, else None."""
        try:
            status: dict[str, Any] = json.loads((self.data_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None
        if self.proc is None or status.get("pid") != self.proc.pid:
            return None
        return status


@dataclass
class GatewayHandle:
    """The gateway process."""

    config: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None
    api_key: str = ""

    @property
    def log_path(self) -> Path:
        return self.config.with_suffix(".log")

    def stop(self) -> None:
        _interrupt(self.proc, 30)


@dataclass
class VerifierHandle:
    """The verifier process (``proxima-verify serve``)."""

    account: LocalAccount
    config: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def log_path(self) -> Path:
        return self.config.with_suffix(".log")

    def stop(self) -> None:
        _interrupt(self.proc, 20)


def _interrupt(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Stop a process as Ctrl-C would (SIGINT, so it drains and closes), killing it after ``timeout`` s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class World:
    """Everything running; :meth:`build` starts it, :meth:`close` stops it (both from :func:`open_world`)."""

    settings: WorldSettings
    root: Path
    anvil: AnvilProcess | None = None
    chain: RpcChain | None = None
    deployment: Deployment | None = None
    contracts: ProximaContracts | None = None
    nodes: dict[str, NodeHandle] = field(default_factory=dict)
    gateway: GatewayHandle | None = None
    verifier: VerifierHandle | None = None
    client: LocalAccount | None = None
    payer: LocalAccount | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def c(self) -> ProximaContracts:
        assert self.contracts is not None, "the world is not built"
        return self.contracts

    def node_by_address(self, address: str) -> NodeHandle | None:
        return next((n for n in self.nodes.values() if n.address == address), None)

    def name_of(self, address: str | None) -> str:
        node = self.node_by_address(address or "")
        return node.name if node is not None else (address or "-")

    # --- building -------------------------------------------------------------------------------------

    def build(self, progress: Callable[[str], None]) -> None:
        """Start anvil, deploy, init and start every node, the verifier and the gateway (in parallel where
        they do not depend on each other) and wait until the gateway has measured every node.

        Raises:
            DemoSetupError: If any part fails to start; its log tail is in the message.
        """
        started = time.monotonic()
        s = self.settings
        self.root.mkdir(parents=True, exist_ok=True)
        accounts = dev_accounts(_FIRST_NODE + len(s.sites))
        self.anvil = AnvilProcess(accounts=len(accounts))
        self.anvil.start()
        self.chain = self.anvil.connect()
        deployment = deploy_all(self.chain, accounts[_ADMIN], s.deploy_parameters())
        self.deployment = deployment.model_copy(update={"rpc_url": self.anvil.url})
        deployment_path = self.deployment.save(self.root / "deployment.json")
        self.contracts = ProximaContracts.from_deployment(self.chain, self.deployment)
        self.client, self.payer = accounts[_CLIENT], accounts[_PAYER]
        self.timings["chain"] = time.monotonic() - started
        progress(f"anvil at {self.anvil.url}, contracts deployed (block {self.deployment.block_number})")

        for i, site in enumerate(s.sites):
            listen_port = _free_port()
            proxy = DelayProxy(("127.0.0.1", listen_port), s.rtts[site.country] / 2)
            proxy.start()
            self.nodes[site.name] = NodeHandle(
                site,
                accounts[_FIRST_NODE + i],
                self.root / site.name,
                s.rtts[site.country],
                proxy,
                listen_port,
            )
        init = self._init_nodes(deployment_path)
        # While the nodes' keystores are made: stake the verifier and open the client's gateway account.
        self._register_verifier(accounts[_VERIFIER], deployment_path)
        self.gateway = self._write_gateway_config(deployment_path)
        self.gateway.api_key = self._add_client(self.gateway.config, self.client.address)
        init_log = self.root / "node-init.log"
        if init.wait(timeout=180) != 0:
            raise DemoSetupError(
                "proxima-node init", f"exited with status {init.returncode}", _tail(init_log)
            )
        for node in self.nodes.values():
            self._configure_node(node)
        self.timings["node init"] = time.monotonic() - started
        progress(f"{len(self.nodes)} provider nodes initialised, verifier staked, client account opened")

        self._start_nodes()
        self._wait_nodes_ready(timeout=180)
        self.timings["nodes ready"] = time.monotonic() - started
        progress("provider nodes ready")
        self._start_verifier()
        self._start_gateway()
        self._wait_measured(timeout=90)
        self.timings["ready"] = time.monotonic() - started
        progress(f"gateway at {self.gateway.url} follows every offer and measured every RTT")

    def _init_nodes(self, deployment_path: Path) -> subprocess.Popen[bytes]:
        """``proxima-node init`` of every node, one after the other in one process (one interpreter start
        instead of five; each ``init`` gets its key in ``NODE_KEY`` as from a shell)."""
        bootstrap = next(iter(self.nodes.values())).announce
        jobs = [
            (bytes(node.account.key).hex(), self._node_init(node, deployment_path, bootstrap))
            for node in self.nodes.values()
        ]
        with (self.root / "node-init.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _INIT_SCRIPT],
                env=_quiet_env(),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._children.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(jobs).encode())
        proc.stdin.close()
        return proc

    def _add_client(self, config: Path, address: str) -> str:
        """What ``proxima-gateway add-client --budget-wei '1 ether'`` does; returns the API key."""
        settings = load_gateway_settings(config)
        with Accounts(settings.accounts_path) as accounts:
            accounts.add_client(address, ETH)
            return accounts.issue_api_key(address)

    def _start_nodes(self) -> None:
        """Start every node. They share this machine's processor, so they share one benchmark: the first
        node measures it (or a cached one from an earlier run is reused), the others reuse its file."""
        nodes = list(self.nodes.values())
        cache = self.settings.benchmark_cache
        first = nodes[0]
        measured = first.data_dir / "benchmark.json"
        if cache is not None and cache.is_file():
            for node in nodes:
                shutil.copyfile(cache, node.data_dir / "benchmark.json")
        else:
            self._start_node(first)
            deadline = time.monotonic() + 120
            while not measured.is_file():
                if first.proc is not None and first.proc.poll() is not None:
                    raise DemoSetupError(
                        f"node {first.name}", f"exited with status {first.proc.returncode}", first.log_text()
                    )
                if time.monotonic() > deadline:
                    raise DemoSetupError(f"node {first.name}", "no benchmark after 120 s", first.log_text())
                time.sleep(0.1)
            time.sleep(0.2)  # the file is written whole (tmp + rename) but give the writer a moment
            for node in nodes[1:]:
                shutil.copyfile(measured, node.data_dir / "benchmark.json")
            if cache is not None:
                with contextlib.suppress(OSError):
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(measured, cache)
        for node in nodes:
            if node.proc is None:
                self._start_node(node)

    def _spawn(self, command: list[str], node: NodeHandle, **env: str) -> subprocess.Popen[bytes]:
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with node.log_path.open("ab") as out:
            proc = subprocess.Popen(command, env=_quiet_env(**env), stdout=out, stderr=subprocess.STDOUT)
        self._children.append(proc)
        return proc

    def _node_init(self, node: NodeHandle, deployment_path: Path, bootstrap: str) -> list[str]:
        """The arguments of ``proxima-node init`` for ``node``."""
        assert self.anvil is not None
        host, port = node.proxy.address
        args = [
            "init",
            "--data-dir", str(node.data_dir),
            "--region", node.site.region,
            "--country", node.site.country,
            "--workloads", ",".join(node.site.workloads),
            "--chain-url", self.anvil.url,
            "--deployment", str(deployment_path),
            "--stake", f"{self.settings.node_stake_wei}wei",
            "--max-concurrency", str(self.settings.max_concurrency),
            "--listen", f"/ip4/127.0.0.1/tcp/{node.listen_port}",
            "--announce", f"/ip4/{host}/tcp/{port}",
            "--import-key-env", "NODE_KEY",
        ]  # fmt: skip
        if node.announce != bootstrap:
            args += ["--bootstrap", bootstrap]
        return args

    def _configure_node(self, node: NodeHandle) -> None:
        """Settlement and offer timing for a short demo, and fault injection for the dishonest node."""
        path = node.data_dir / "node.toml"
        config = tomllib.loads(path.read_text())
        config.setdefault("settlement", {}).update(
            {
                "voucher_redeem_interval_seconds": self.settings.voucher_redeem_interval_s,
                "voucher_redeem_threshold_wei": "1 ether",
            }
        )
        config.setdefault("p2p", {}).update({"heartbeat_seconds": 2.0, "offer_ttl_seconds": 20.0})
        config.setdefault("limits", {}).update({"job_timeout_seconds": 60.0})
        if node.site.dishonest:
            config["faults"] = {
                "wrong_matmul_rate": node.site.wrong_matmul_rate,
                "seed": self.settings.fault_seed,
            }
        path.write_text(tomli_w.dumps(config))

    def _start_node(self, node: NodeHandle) -> None:
        node.proc = self._spawn(
            _module(NODE_MODULE, "start", "--data-dir", str(node.data_dir), "--quick-benchmark"), node
        )

    def _wait_nodes_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(self.nodes)
        while pending:
            for name, node in list(pending.items()):
                status = node.status()
                if status is not None:
                    node.metrics_url = status.get("metrics_url")
                    del pending[name]
                elif node.proc is not None and node.proc.poll() is not None:
                    raise DemoSetupError(
                        f"node {name}", f"exited with status {node.proc.returncode}", node.log_text()
                    )
            if time.monotonic() > deadline:
                name, node = next(iter(pending.items()))
                raise DemoSetupError(f"node {name}", f"not ready after {timeout:.0f}s", node.log_text())
            time.sleep(0.2)

    # --- verifier -------------------------------------------------------------------------------------

    def _register_verifier(self, account: LocalAccount, deployment_path: Path) -> None:
        """Write the verifier's settings and stake it (``proxima-verify register``, run in this process)."""
        if not self.settings.with_verifier or not verifier_available():
            return
        from proxima.marketplace.verifier.cli import main as verifier_main

        assert self.anvil is not None
        port = _free_port()
        config = self.root / "verifier.toml"
        self.verifier = VerifierHandle(account, config, f"http://127.0.0.1:{port}")
        document: dict[str, Any] = {
            "dev_mode": True,
            "port": port,
            "data_dir": "verifier",
            "log_level": "INFO",
            "chain": {"url": self.anvil.url, "deployment": str(deployment_path)},
            "key": {"dev_account_index": _VERIFIER},
            "p2p": {
                "bootstrap": [n.announce for n in self.nodes.values()],
                "ping_interval_seconds": 2.0,
            },
            "duties": {
                "interval_seconds": self.settings.verifier_interval_s,
                "m": 128,
                "k": 128,
                "n": 128,
                "dtype": "float64",
                "job_timeout_seconds": 30.0,
            },
        }
        config.write_text(tomli_w.dumps(document))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = verifier_main(["register", "--config", str(config)])
        self.verifier.log_path.write_text(out.getvalue())
        if status != 0 or not self.c.registry.is_active_verifier(account.address):
            raise DemoSetupError("proxima-verify register", f"exited with status {status}", out.getvalue())

    def _start_verifier(self) -> None:
        verifier = self.verifier
        if verifier is None:
            return
        with verifier.log_path.open("ab") as out:
            verifier.proc = subprocess.Popen(
                _module(VERIFIER_MODULE, "serve", "--config", str(verifier.config)),
                env=_quiet_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._children.append(verifier.proc)

    def _wait_verifier(self, deadline: float) -> None:
        verifier = self.verifier
        if verifier is None or verifier.proc is None:
            return
        while True:
            if verifier.proc.poll() is not None:
                raise DemoSetupError(
                    "verifier", f"exited with status {verifier.proc.returncode}", _tail(verifier.log_path)
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{verifier.url}/v1/health", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoSetupError("verifier", "its /v1/health never answered", _tail(verifier.log_path))
            time.sleep(0.2)

    # --- gateway --------------------------------------------------------------------------------------

    def _write_gateway_config(self, deployment_path: Path) -> GatewayHandle:
        assert self.anvil is not None
        s = self.settings
        port = _free_port()
        config = self.root / "gateway.toml"
        verifier_urls = [self.verifier.url] if self.verifier is not None else []
        document: dict[str, Any] = {
            "dev_mode": True,
            "data_dir": "gateway",
            "port": port,
            "max_attempts": 4,
            "attempt_timeout_seconds": 45.0,
            "capacity_wait_seconds": 10.0,
            "chainstate_ttl_seconds": 1.0,
            "duty_interval_seconds": 2.0,
            "result_cache": False,
            "log_level": "INFO",
            "chain": {"url": self.anvil.url, "deployment": str(deployment_path)},
            "payer": {"dev_account_index": _PAYER},
            "p2p": {
                "bootstrap": [n.announce for n in self.nodes.values()],
                "ping_interval_seconds": 1.0,
            },
            "matching": {"exploration_share": 0.0},
            "verification": {
                "freivalds_rounds": s.freivalds_rounds,
                "canary_rate": s.canary_rate if verifier_urls else 0.0,
                "verifier_urls": verifier_urls,
                "evidence": True,
            },
        }
        config.write_text(tomli_w.dumps(document))
        return GatewayHandle(config, f"http://127.0.0.1:{port}")

    def _start_gateway(self) -> None:
        gateway = self.gateway
        assert gateway is not None
        deadline = time.monotonic() + 60
        with gateway.log_path.open("ab") as out:
            gateway.proc = subprocess.Popen(
                _module(GATEWAY_MODULE, "serve", "--config", str(gateway.config)),
                env=_quiet_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._children.append(gateway.proc)
        self._wait_verifier(deadline)
        while True:
            if gateway.proc.poll() is not None:
                raise DemoSetupError(
                    "gateway", f"exited with status {gateway.proc.returncode}", _tail(gateway.log_path)
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{gateway.url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoSetupError("gateway", "/healthz never answered", _tail(gateway.log_path))
            time.sleep(0.2)

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None, "the world is not built"
        return self.gateway.url

    @property
    def api_key(self) -> str:
        assert self.gateway is not None, "the world is not built"
        return self.gateway.api_key

    def http(self) -> httpx.Client:
        """An HTTP client of the gateway, authenticated as the demo's client."""
        assert self.gateway is not None
        return httpx.Client(
            base_url=self.gateway.url,
            headers={"Authorization": f"Bearer {self.gateway.api_key}"},
            timeout=30,
        )

    def provider_view(self, http: httpx.Client, address: str) -> dict[str, Any]:
        """``GET /v1/providers/{address}`` ({} while unknown)."""
        answer = http.get(f"/v1/providers/{address}")
        return dict(answer.json()) if answer.status_code == 200 else {}

    def _wait_measured(self, timeout: float) -> None:
        """Until the gateway holds every node's offer and has measured its RTT through the proxy."""
        deadline = time.monotonic() + timeout
        with self.http() as http:
            for node in self.nodes.values():
                while True:
                    view = self.provider_view(http, node.address)
                    if view.get("offer") and (view.get("gateway") or {}).get("measured_rtt_ms") is not None:
                        break
                    if time.monotonic() > deadline:
                        assert self.gateway is not None
                        raise DemoSetupError(
                            "gateway",
                            f"no measured offer of {node.name} after {timeout:.0f}s",
                            _tail(self.gateway.log_path),
                        )
                    time.sleep(0.25)

    # --- stopping -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything this world started (gateway, verifier, nodes, proxies, anvil)."""
        if self.gateway is not None:
            self.gateway.stop()
        if self.verifier is not None:
            self.verifier.stop()
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        for node in self.nodes.values():
            node.proxy.stop()
        if self.chain is not None:
            self.chain.close()
        if self.anvil is not None:
            self.anvil.stop()


@contextlib.contextmanager
def open_world(
    settings: WorldSettings, root: Path, progress: Callable[[str], None] = lambda _: None
) -> Iterator[World]:
    """Build a :class:`World` in ``root`` and stop it on exit (also when building fails half-way)."""
    world = World(settings, root)
    try:
        world.build(progress)
        yield world
    finally:
        world.close()
