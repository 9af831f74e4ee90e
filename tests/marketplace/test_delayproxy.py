"""The delaying TCP proxy adds its round trip, keeps bytes in order, and emulates outages."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import trio
from _trio_support import key, trio_test

from proxima.marketplace.delayproxy import DelayProxy, DelayProxyError, main
from proxima.sdk.p2p import open_peer


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[0], server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _round_trip(address: tuple[str, int], payload: bytes = b"ping") -> float:
    with socket.create_connection(address, timeout=5) as sock:
        started = time.perf_counter()
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
        elapsed = time.perf_counter() - started
    assert received == payload
    return elapsed


def test_round_trip_grows_by_twice_the_delay(echo: tuple[str, int]) -> None:
    with DelayProxy(echo, 0.05) as proxy:
        assert _round_trip(proxy.address) >= 0.1
        proxy.set_delay(0.0)
        assert proxy.one_way_delay == 0.0
        assert _round_trip(proxy.address) < 0.1


def test_large_payload_arrives_whole_and_in_order(echo: tuple[str, int]) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, many chunks
    with DelayProxy(echo, 0.002) as proxy:
        _round_trip(proxy.address, payload)
        assert proxy.connections == 1


def test_cut_resets_connections_and_refuses_new_ones_until_restored(echo: tuple[str, int]) -> None:
    with DelayProxy(echo, 0.0) as proxy:
        sock = socket.create_connection(proxy.address, timeout=5)
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        proxy.cut()
        try:
            after_cut = sock.recv(1)
        except ConnectionResetError:
            after_cut = b""
        assert after_cut == b""
        sock.close()
        with socket.create_connection(proxy.address, timeout=5) as refused:
            assert refused.recv(1) == b""
        proxy.restore()
        assert _round_trip(proxy.address) < 1


def test_unreachable_target_closes_the_client_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with DelayProxy(("127.0.0.1", free_port), 0.0) as proxy, socket.create_connection(proxy.address) as sock:
        sock.settimeout(5)
        assert sock.recv(1) == b""


def test_bad_arguments_and_states_are_reported(echo: tuple[str, int]) -> None:
    with pytest.raises(ValueError, match="one_way_delay must be between 0 and 10"):
        DelayProxy(echo, -1)
    proxy = DelayProxy(echo, 0.0)
    with pytest.raises(DelayProxyError, match="not running"):
        _ = proxy.address
    with proxy:
        with pytest.raises(DelayProxyError, match="cannot listen on"):
            DelayProxy(echo, 0.0, listen=proxy.address).start()
        with pytest.raises(DelayProxyError, match="already running"):
            proxy.start()
    proxy.stop()  # idempotent


def test_cli_refuses_a_malformed_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--target", "nowhere", "--rtt-ms", "10"])
    assert exit_info.value.code == 2
    assert "'nowhere' is not HOST:PORT" in capsys.readouterr().err


@trio_test
async def test_libp2p_ping_through_an_announced_proxy_shows_the_delay() -> None:
    async with open_peer(key(1)) as provider:
        listen = provider.addrs()[0].split("/")
        proxy = DelayProxy((listen[2], int(listen[4])), 0.04)
        host, port = proxy.start()
        try:
            async with open_peer(key(2)) as client:
                remote = await client.connect(f"/ip4/{host}/tcp/{port}/p2p/{provider.peer_id_b58}")
                rtts = [await client.ping(remote) for _ in range(3)]
                await trio.sleep(0)
        finally:
            proxy.stop()
    assert min(rtts) >= 0.08
