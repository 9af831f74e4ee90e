"""The libp2p layer with real hosts on 127.0.0.1: identity, dialing, bootstrap, ping, gossip, and a shutdown
that leaves nothing open."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from _trio_support import key, trio_test

from proxima.sdk.p2p import (
    DialError,
    GossipConfig,
    InvalidMultiaddrError,
    ListenError,
    P2PError,
    Peer,
    PingError,
    open_peer,
    parse_bootstrap,
)
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58

PEER = "16Uiu2HAmEWQnHq2jLKJypwVnVoQeFCULuyop6atvq2eWjYSUjzNi"
TOPIC = "/proxima/test/1.0.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_fds() -> set[tuple[int, str]]:
    """(fd, what it points to) for every open file descriptor of this process (sockets have unique inodes)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd of the listdir itself is gone by now
            fds.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
    return fds


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def receive(subscription: Any, timeout: float = 3.0) -> Any:
    with trio.fail_after(timeout):
        return await subscription.get()


# --- addresses -------------------------------------------------------------------------------------------


def test_parseBootstrap_splitsPeerIdAndTransport() -> None:
    peer_id = peer_id_from_key(key(1))
    text = f"/ip4/10.0.0.1/tcp/4001/p2p/{peer_id_to_base58(peer_id)}"
    parsed_id, transport = parse_bootstrap(text)
    assert parsed_id == peer_id
    assert str(transport) == "/ip4/10.0.0.1/tcp/4001"
    # bootstrap peers may have any key type (here an RSA peer id)
    rsa_id, _ = parse_bootstrap(
        "/dns4/boot.example.org/tcp/4001/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
    )
    assert rsa_id.startswith(b"\x12\x20")  # sha2-256 multihash


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "starting with '/'"),
        ("ip4/10.0.0.1/tcp/4001", "starting with '/'"),
        ("/ip4/10.0.0.1/tcp/4001", "must end with /p2p/"),
        (f"/ip4/300.0.0.1/tcp/4001/p2p/{PEER}", "invalid multiaddr"),
        (f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{PEER}", "TCP"),
        (f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}/p2p-circuit/p2p/{PEER}", "relay"),
        ("/ip4/10.0.0.1/tcp/4001/p2p/notapeerid0", "invalid multiaddr"),
    ],
)
def test_parseBootstrap_rejectsWhatCannotBeDialed(text: str, problem: str) -> None:
    with pytest.raises(InvalidMultiaddrError, match=problem):
        parse_bootstrap(text)


def test_gossipConfig_rejectsInconsistentDegrees() -> None:
    with pytest.raises(ValueError, match="degrees"):
        GossipConfig(degree=3, degree_low=4)
    with pytest.raises(ValueError, match="heartbeat"):
        GossipConfig(heartbeat_interval=0)


# --- hosts -----------------------------------------------------------------------------------------------


@trio_test
async def test_openPeer_identityIsTheKeystoreKey() -> None:
    async with open_peer(key(1)) as peer:
        assert peer.peer_id == peer_id_from_key(key(1))
        assert peer.peer_id_b58 == peer_id_to_base58(peer.peer_id)
        assert peer.peer_id_b58.startswith("16Uiu2")
        [addr] = peer.addrs()
        assert addr.startswith("/ip4/127.0.0.1/tcp/")
        assert addr.endswith(f"/p2p/{peer.peer_id_b58}")
        assert peer.connected_peers() == []


@trio_test
async def test_openPeer_announcesGivenAddresses() -> None:
    async with open_peer(key(1), announce=["/ip4/203.0.113.5/tcp/4001"]) as peer:
        assert peer.addrs() == [f"/ip4/203.0.113.5/tcp/4001/p2p/{peer.peer_id_b58}"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"private_key": b"\x01" * 31}, ValueError),
        ({"private_key": b"\xff" * 32}, ValueError),
        ({"private_key": bytes(32)}, ValueError),
        ({"private_key": key(1), "listen": ()}, ValueError),
        ({"private_key": key(1), "listen": ("/ip4/127.0.0.1/udp/0",)}, InvalidMultiaddrError),
        ({"private_key": key(1), "bootstrap": ("/ip4/127.0.0.1/tcp/1",)}, InvalidMultiaddrError),
    ],
)
def test_openPeer_rejectsBadArguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    async def body() -> None:
        async with open_peer(**kwargs):
            pass

    with pytest.raises(error):
        trio.run(body)


@trio_test
async def test_openPeer_refusesAPortAnotherPeerListensOn() -> None:
    # py-libp2p binds with SO_REUSEPORT: without the check both would run and share incoming connections.
    async with open_peer(key(1)) as a:
        port = a.addrs()[0].split("/")[4]
        with pytest.raises(ListenError, match="in use"):
            async with open_peer(key(2), listen=[f"/ip4/127.0.0.1/tcp/{port}"]):
                pass
    with pytest.raises(ListenError, match=r"203\.0\.113\.1"):
        async with open_peer(key(2), listen=["/ip4/203.0.113.1/tcp/4001"]):
            pass


@trio_test
async def test_connect_authenticatesTheRemoteAndPingMeasuresRtt() -> None:
    async with open_peer(key(1)) as a, open_peer(key(2)) as b:
        assert await b.connect(a.addrs()[0]) == a.peer_id
        assert b.connected_peers() == [a.peer_id]
        await wait_until(lambda: a.is_connected(b.peer_id))
        rtt = await b.ping(a.peer_id)
        assert 0 < rtt < 1.0
        best_of_five = await a.ping(b.peer_id, count=5)
        assert 0 < best_of_five < 1.0
        # a second connect is a no-op on the same connection
        assert await b.connect(a.addrs()[0]) == a.peer_id


@trio_test
async def test_connect_failsWhenTheRemoteIsNotThePeerNamed() -> None:
    async with open_peer(key(1)) as a, open_peer(key(2)) as b:
        transport = a.addrs()[0].split("/p2p/")[0]
        impostor = f"{transport}/p2p/{peer_id_to_base58(peer_id_from_key(key(3)))}"
        with pytest.raises(DialError):
            await b.connect(impostor, timeout=5)
        assert b.connected_peers() == []


@trio_test
async def test_connect_failsOnClosedPortAndOwnAddress() -> None:
    async with open_peer(key(1)) as a:
        closed = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{peer_id_to_base58(peer_id_from_key(key(2)))}"
        with pytest.raises(DialError, match="cannot connect"):
            await a.connect(closed, timeout=5)
        with pytest.raises(DialError, match="own address"):
            await a.connect(a.addrs()[0])


@trio_test
async def test_ping_failsWithoutConnection() -> None:
    async with open_peer(key(1)) as a, open_peer(key(2)) as b:
        with pytest.raises(PingError, match="not connected"):
            await a.ping(b.peer_id)
        await b.connect(a.addrs()[0])
        with pytest.raises(ValueError, match="count"):
            await b.ping(a.peer_id, count=0)


@trio_test
async def test_ping_failsWhenThePeerGoesAway() -> None:
    async with open_peer(key(1)) as a:
        async with open_peer(key(2)) as b:
            await a.connect(b.addrs()[0])
        await wait_until(lambda: not a.is_connected(b.peer_id))
        with pytest.raises(PingError):
            await a.ping(b.peer_id, timeout=2)


@trio_test
async def test_bootstrap_connectsAtStartAndRedialsWhenThePeerAppears() -> None:
    a_id = peer_id_to_base58(peer_id_from_key(key(1)))
    port = free_port()
    bootstrap = [f"/ip4/127.0.0.1/tcp/{port}/p2p/{a_id}"]
    # The bootstrap peer is not up yet: starting does not fail, and a later re-dial finds it.
    async with open_peer(key(2), bootstrap=bootstrap, bootstrap_interval=0.1, dial_timeout=1) as b:
        assert b.connected_peers() == []
        async with open_peer(key(1), listen=[f"/ip4/127.0.0.1/tcp/{port}"]) as a:
            await wait_until(lambda: b.is_connected(a.peer_id))
            # A third peer that bootstraps from a live peer is connected when the block starts.
            async with open_peer(key(3), bootstrap=a.addrs()) as c:
                assert c.connected_peers() == [a.peer_id]


@trio_test
async def test_pubsub_relaysThroughAMiddlePeer() -> None:
    # a - b - c: a and c are not connected, gossip reaches c through b.
    async with open_peer(key(1)) as a, open_peer(key(2)) as b, open_peer(key(3)) as c:
        await a.connect(b.addrs()[0])
        await c.connect(b.addrs()[0])
        subs = [await p.subscribe(TOPIC) for p in (a, b, c)]
        await trio.sleep(1.2)  # one gossipsub heartbeat: the mesh forms
        await a.publish(TOPIC, b"offer")
        for sub in subs:
            msg = await receive(sub)
            assert msg.data == b"offer"
            assert msg.from_id == a.peer_id  # the original publisher, signed by its key
        assert not c.is_connected(a.peer_id)


@trio_test
async def test_peerWithoutPubsub_refusesGossip() -> None:
    async with open_peer(key(1), pubsub=False) as peer:
        assert peer.pubsub is None
        with pytest.raises(P2PError, match="without pubsub"):
            await peer.subscribe(TOPIC)
        with pytest.raises(P2PError, match="without pubsub"):
            await peer.publish(TOPIC, b"x")


# --- shutdown --------------------------------------------------------------------------------------------


async def _busy_network(fail: bool) -> None:
    """Three peers with bootstrap, gossip and pings; raises in the middle when ``fail``."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_peer(key(1)))
        peers: list[Peer] = [a]
        for i in (2, 3):
            peers.append(await stack.enter_async_context(open_peer(key(i), bootstrap=a.addrs())))
        subs = [await p.subscribe(TOPIC) for p in peers]
        await trio.sleep(1.1)
        await peers[1].publish(TOPIC, b"hello")
        for sub in subs:
            assert (await receive(sub)).data == b"hello"
        assert await peers[2].ping(a.peer_id) > 0
        if fail:
            raise RuntimeError("boom")


@pytest.mark.parametrize("fail", [False, True])
def test_openPeer_leavesNoSocketOrThreadBehind(fail: bool) -> None:
    trio.run(_busy_network, False)  # warm up: imports and lazily created globals are not leaks
    fds, threads = open_fds(), set(threading.enumerate())
    if fail:
        with pytest.raises(RuntimeError, match="boom"):
            trio.run(_busy_network, True)
    else:
        trio.run(_busy_network, False)
    assert open_fds() - fds == set()
    assert set(threading.enumerate()) - threads == set()


def test_openPeer_closesWhenCancelled() -> None:
    async def body() -> None:
        with trio.move_on_after(0.5) as scope:
            async with open_peer(key(1)) as a, open_peer(key(2), bootstrap=a.addrs()):
                await trio.sleep_forever()
        assert scope.cancelled_caught

    trio.run(body)
    fds = open_fds()
    trio.run(body)
    assert open_fds() - fds == set()
