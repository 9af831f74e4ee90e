"""A TCP proxy that delays traffic, to give processes on one machine the round-trip times of distant ones.

``tc netem`` is not available here (see DESIGN.md), so tests and the demo emulate wide-area latency at the
application layer: a provider node listens on a local port and announces the proxy's port instead
(``p2p.announce``); everyone who dials it goes through the proxy, which holds every chunk of bytes for
``one_way_delay`` seconds in each direction, so a round trip through it takes ``2 * one_way_delay`` longer.
Order within a connection is kept. :meth:`DelayProxy.cut` emulates an outage: open connections are reset
and new ones refused until :meth:`DelayProxy.restore`.

The proxy runs an asyncio loop in a thread of its own, so it works beside trio or asyncio code. Run one from
a shell with ``python -m proxima.marketplace.delayproxy --target 127.0.0.1:4001 --rtt-ms 80``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Final

from proxima.marketplace.errors import MarketError

__all__ = ["DelayProxy", "DelayProxyError", "main"]

log = logging.getLogger(__name__)

_CHUNK: Final = 65_536
MAX_DELAY: Final = 10.0
"""Longest one-way delay accepted, seconds."""


class DelayProxyError(MarketError):
    """The proxy could not start (port taken, bad address) or was used wrongly."""


def _check_delay(one_way_delay: float) -> float:
    if not 0 <= one_way_delay <= MAX_DELAY:
        raise ValueError(f"one_way_delay must be between 0 and {MAX_DELAY} s, got {one_way_delay!r}")
    return float(one_way_delay)


class DelayProxy:
    """Forward TCP connections from a local port to ``target``, delaying bytes in both directions.

    Args:
        target: ``(host, port)`` to forward to.
        one_way_delay: Seconds added in each direction (the round trip grows by twice this).
        listen: ``(host, port)`` to accept on; port 0 picks a free one.
    """

    def __init__(
        self,
        target: tuple[str, int],
        one_way_delay: float,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.target = target
        self._delay = _check_delay(one_way_delay)
        self._listen = listen
        self._cut = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._address: tuple[str, int] | None = None
        self.connections = 0
        """Connections accepted so far."""

    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy accepts connections.

        Raises:
            DelayProxyError: If it is not running.
        """
        if self._address is None:
            raise DelayProxyError("the proxy is not running; call start() first")
        return self._address

    @property
    def one_way_delay(self) -> float:
        """Seconds added in each direction."""
        return self._delay

    def set_delay(self, one_way_delay: float) -> None:
        """Change the delay for bytes read from now on."""
        self._delay = _check_delay(one_way_delay)

    def start(self, timeout: float = 5.0) -> tuple[str, int]:
        """Start accepting; returns the bound ``(host, port)``.

        Raises:
            DelayProxyError: If the listen address cannot be bound.
        """
        if self._thread is not None:
            raise DelayProxyError("the proxy is already running")
        started = threading.Event()
        problem: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self._listen[0], self._listen[1])
                )
                sockname = self._server.sockets[0].getsockname()
                self._address = (str(sockname[0]), int(sockname[1]))
            except OSError as err:
                problem.append(err)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"delay-proxy->{self.target[1]}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise DelayProxyError(f"the proxy did not start within {timeout} s")
        if problem:
            self._thread.join()
            self._thread = None
            host, port = self._listen
            raise DelayProxyError(f"cannot listen on {host}:{port}: {problem[0]}") from problem[0]
        log.info(
            "delay proxy started",
            extra={
                "listen": f"{self.address[0]}:{self.address[1]}",
                "target": f"{self.target[0]}:{self.target[1]}",
                "one_way_ms": round(self._delay * 1000, 3),
            },
        )
        return self.address

    def stop(self) -> None:
        """Close every connection and stop (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None
        self._loop = None
        self._address = None

    def cut(self) -> None:
        """Emulate an outage: reset open connections and refuse new ones until :meth:`restore`."""
        self._cut = True
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._close_all)
        log.info("delay proxy cut", extra={"target": f"{self.target[0]}:{self.target[1]}"})

    def restore(self) -> None:
        """Accept connections again after :meth:`cut`."""
        self._cut = False

    def __enter__(self) -> DelayProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inside the loop ----------------------------------------------------------------------------------

    def _close_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):  # already closing: nothing to undo
                transport = writer.transport
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._cut:
            client_writer.transport.abort()
            return
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError as err:
            log.debug("delay proxy cannot reach its target", extra={"error": str(err)})
            client_writer.transport.abort()
            return
        for writer in (client_writer, upstream_writer):
            self._writers.add(writer)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
            )
        finally:
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk written ``delay`` after it was read, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                queue.put_nowait((time.monotonic() + self._delay, data))
                if not data:
                    break
            await delivery
        except (OSError, ConnectionError):
            delivery.cancel()
        finally:
            if not delivery.done():
                delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await delivery


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m proxima.marketplace.delayproxy``: run one proxy until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--target", type=_host_port, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0), help="HOST:PORT to accept on")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add, milliseconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        proxy = DelayProxy(args.target, args.rtt_ms / 2000, listen=args.listen)
        host, port = proxy.start()
    except (ValueError, DelayProxyError) as err:
        parser.exit(1, f"delayproxy: {err}\n")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("listening on %s:%d, forwarding to %s:%d", host, port, *args.target)
    stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
