"""Run the pinned anvil binary (npm ``@foundry-rs/anvil``) as a local development node."""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import requests

from ._backend import ChainConnectionError, ChainError, dev_accounts
from .rpc import RpcChain

__all__ = ["AnvilNotFoundError", "AnvilProcess", "find_anvil"]

log = logging.getLogger(__name__)

_CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
_NODE_MODULES = _CONTRACTS_DIR / "node_modules"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class AnvilNotFoundError(ChainError, FileNotFoundError):
    """The anvil binary is not installed.

    Args:
        looked_at: The paths that were tried.
    """

    def __init__(self, looked_at: list[Path]) -> None:
        self.looked_at = looked_at
        tried = ", ".join(str(p) for p in looked_at)
        super().__init__(
            f"anvil is not installed (tried {tried}); run scripts/bootstrap.sh, "
            "which runs `npm ci --ignore-scripts` in contracts/"
        )


def find_anvil() -> Path:
    """Return the path of the pinned anvil executable.

    The platform package's native binary is preferred over the ``.bin/anvil`` node
    wrapper, so that signals reach anvil itself.

    Raises:
        AnvilNotFoundError: If neither is installed.
    """
    system = platform.system().lower().replace("windows", "win32")
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    candidates = [
        _NODE_MODULES / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil",
        _NODE_MODULES / ".bin" / "anvil",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AnvilNotFoundError(candidates)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AnvilProcess:
    """An anvil node on 127.0.0.1, started and stopped by this object.

    Its accounts are those of :data:`~proxima.sdk.chain.DEV_MNEMONIC`. The hardfork
    is pinned (Prague by default) so that gas costs match :class:`InProcessChain`.

    Args:
        port: TCP port; a free one is chosen when ``None``.
        chain_id: The chain id to report.
        accounts: How many dev accounts anvil funds.
        balance_eth: Each account's starting balance, in ether.
        hardfork: An anvil ``--hardfork`` name (must be ``cancun`` or later).
        startup_timeout: Seconds to wait for the node to answer.
        extra_args: More command-line arguments for anvil.

    Example:
        >>> with AnvilProcess() as anvil, anvil.connect() as chain:  # doctest: +SKIP
        ...     chain.balance(chain.accounts[0].address)
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        chain_id: int = 31337,
        accounts: int = 10,
        balance_eth: int = 1_000_000,
        hardfork: str = "prague",
        startup_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        self.chain_id = chain_id
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.hardfork = hardfork
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's HTTP JSON-RPC URL.

        Raises:
            ChainError: If the node is not started.
        """
        if self._process is None or self.port is None:
            raise ChainError("anvil is not running; call start() or use it as a context manager")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the anvil process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start anvil and wait until it answers ``eth_chainId``.

        Returns:
            This object, for chaining.

        Raises:
            AnvilNotFoundError: If the binary is not installed.
            ChainConnectionError: If anvil exits early or does not answer in time.
        """
        if self.running:
            return self
        binary = find_anvil()
        if self.port is None:
            self.port = _free_port()
        command = [
            str(binary),
            "--silent",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.accounts),
            "--balance", str(self.balance_eth),
            "--hardfork", self.hardfork,
            *self.extra_args,
        ]  # fmt: skip
        started = time.monotonic()
        # stderr to a file: a pipe that nobody reads could fill up and block anvil
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        log.info(
            "anvil started on %s (pid %d) in %.2fs",
            self.url,
            self._process.pid,
            time.monotonic() - started,
        )
        return self

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        url = f"http://127.0.0.1:{self.port}"
        with requests.Session() as session:
            while True:
                if self._process.poll() is not None:
                    stderr = ""
                    if self._stderr is not None:
                        self._stderr.seek(0)
                        stderr = self._stderr.read().decode(errors="replace")[-2000:]
                    raise ChainConnectionError(
                        f"anvil exited with status {self._process.returncode} "
                        f"before answering: {stderr.strip() or 'no output'}"
                    )
                try:
                    answer = session.post(url, json=payload, timeout=1.0).json()
                    if int(answer["result"], 16) == self.chain_id:
                        return
                except (requests.RequestException, ValueError, KeyError):
                    pass
                if time.monotonic() - started > self.startup_timeout:
                    raise ChainConnectionError(
                        f"anvil did not answer eth_chainId at {url} within "
                        f"{self.startup_timeout}s; is the port ({self.port}) already in use?"
                    )
                time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop anvil: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Args:
            timeout: Seconds to wait after SIGTERM.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("anvil (pid %d) ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        log.info("anvil (pid %d) stopped", process.pid)

    def connect(self, *, receipt_timeout: float = 120.0) -> RpcChain:
        """Return an :class:`RpcChain` on this node whose accounts are anvil's dev accounts.

        Args:
            receipt_timeout: Seconds to wait for a transaction to be mined.
        """
        return RpcChain(self.url, dev_accounts(self.accounts), receipt_timeout=receipt_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()
