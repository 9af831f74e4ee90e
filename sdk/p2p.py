"""libp2p for Proxima: one host per secp256k1 key, TCP + Noise + Yamux, gossipsub, and RTT probes.

A provider's libp2p identity is its Ethereum key, so its peer id (``16Uiu2...``) names its address
(:func:`proxima.sdk.peerid.address_of_peer_id`). :func:`open_peer` starts a host on trio and closes everything
it opened when the block exits, even on error or cancellation::

    async with open_peer(private_key, bootstrap=["/ip4/10.0.0.1/tcp/4001/p2p/16Uiu2..."]) as peer:
        subscription = await peer.subscribe(OFFER_TOPIC)
        rtt = await peer.ping(other_peer_id)

py-libp2p runs on trio only; code on asyncio reaches it through a thread (``trio.from_thread``).
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Final

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.io.utils import read_exactly
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID as MESHSUB_1_0
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB_1_1
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from proxima.sdk.errors import SdkError
from proxima.sdk.peerid import peer_id_to_base58

__all__ = [
    "JOB_PROTOCOL",
    "OFFER_TOPIC",
    "PING_PROTOCOL",
    "DialError",
    "GossipConfig",
    "InvalidMultiaddrError",
    "ListenError",
    "P2PError",
    "Peer",
    "PingError",
    "open_peer",
    "parse_bootstrap",
]

log = logging.getLogger(__name__)

OFFER_TOPIC: Final = "/proxima/offers/1.0.0"
"""Gossipsub topic of signed provider offers (versioned: a new wire format gets a new topic)."""

JOB_PROTOCOL: Final = TProtocol("/proxima/job/1.0.0")
"""Stream protocol of job requests and results."""

PING_PROTOCOL: Final = TProtocol("/ipfs/ping/1.0.0")
"""The standard libp2p ping protocol: the responder echoes 32-byte payloads."""

_PING_BYTES = 32
_CLOSE_TIMEOUT = 5.0
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# What a dial, a stream or a closing connection raises when the network or the remote fails.
_NET_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_Target = tuple[str, bytes, multiaddr.Multiaddr]  # bootstrap address as given, peer id, transport address


class P2PError(SdkError):
    """Root of the libp2p layer's errors."""


class InvalidMultiaddrError(P2PError, ValueError):
    """A multiaddr is malformed or lacks a part that is needed (``/tcp``, ``/p2p/<peer id>``)."""

    def __init__(self, addr: str, problem: str) -> None:
        self.addr = addr
        self.problem = problem
        super().__init__(f"invalid multiaddr {addr!r}: {problem}")


class ListenError(P2PError):
    """This peer cannot listen on an address (port taken, address not local)."""

    def __init__(self, addr: str, problem: str) -> None:
        self.addr = addr
        self.problem = problem
        super().__init__(f"cannot listen on {addr}: {problem}")


class DialError(P2PError):
    """A peer could not be reached."""

    def __init__(self, addr: str, problem: str) -> None:
        self.addr = addr
        self.problem = problem
        super().__init__(f"cannot connect to {addr}: {problem}")


class PingError(P2PError):
    """A ping round trip failed (no connection, timeout, wrong echo)."""

    def __init__(self, peer_id: bytes, problem: str) -> None:
        self.peer_id = peer_id
        self.problem = problem
        super().__init__(f"ping to {_b58_or_hex(peer_id)} failed: {problem}")


@dataclass(frozen=True)
class GossipConfig:
    """Gossipsub parameters.

    Attributes:
        degree: Target number of mesh peers per topic (D).
        degree_low: Graft more peers below this (D_lo).
        degree_high: Prune peers above this (D_hi).
        heartbeat_interval: Seconds between mesh maintenance rounds; a new subscriber joins the mesh
            within about one heartbeat.
        max_messages_per_second: Messages per second per topic that one peer may ask us to relay before
            py-libp2p's spam protection drops the rest. Its default (10) is too low for a relay that forwards
            the offers of many providers; each provider's own rate is limited by the advertiser.
    """

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    max_messages_per_second: float = 100.0

    def __post_init__(self) -> None:
        if not 1 <= self.degree_low <= self.degree <= self.degree_high:
            raise ValueError(
                f"gossip degrees must satisfy 1 <= low <= degree <= high, got "
                f"{self.degree_low}, {self.degree}, {self.degree_high}"
            )
        if self.heartbeat_interval < 1:
            raise ValueError(f"gossip heartbeat_interval must be >= 1 s, got {self.heartbeat_interval}")
        if not self.max_messages_per_second > 0:
            raise ValueError(f"max_messages_per_second must be > 0, got {self.max_messages_per_second}")


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    """Parse a multiaddr.

    Raises:
        InvalidMultiaddrError: If ``text`` is not a multiaddr.
    """
    if not isinstance(text, str) or not text.startswith("/"):
        raise InvalidMultiaddrError(str(text), "a multiaddr is text starting with '/'")
    try:
        return multiaddr.Multiaddr(text)
    except Exception as err:  # multiaddr raises several types (ValueError, its own, binascii)
        raise InvalidMultiaddrError(text, str(err) or type(err).__name__) from err


def _check_listen_addr(addr: multiaddr.Multiaddr, text: str) -> None:
    """A TCP address on a port nobody listens on yet.

    py-libp2p listens with SO_REUSEPORT, so a second node on a busy port would start without error and the
    kernel would share incoming connections between the two: probe the port with a plain bind first.
    """
    names = [p.name for p in addr.protocols()]
    if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise InvalidMultiaddrError(
            text, "listen addresses must be /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>"
        )
    port = int(addr.value_for_protocol("tcp"))
    if port == 0:
        return
    family = socket.AF_INET if names[0] == "ip4" else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            probe.bind((str(addr.value_for_protocol(names[0])), port))
        except OSError as err:
            raise ListenError(text, err.strerror or str(err)) from err


def parse_bootstrap(text: str) -> tuple[bytes, multiaddr.Multiaddr]:
    """Split a dialable peer address ``/ip4/<ip>/tcp/<port>/p2p/<peer id>`` into its peer id and transport.

    Args:
        text: The full multiaddr, as a peer's :meth:`Peer.addrs` lists it.

    Returns:
        The binary peer id and the transport address without the ``/p2p`` part.

    Raises:
        InvalidMultiaddrError: If the address is malformed, has no TCP transport, or does not end with
            ``/p2p/<peer id>``.
    """
    addr = parse_multiaddr(text)
    names = [p.name for p in addr.protocols()]
    if not names or names[-1] != "p2p":
        raise InvalidMultiaddrError(text, "it must end with /p2p/<peer id>")
    if "tcp" not in names:
        raise InvalidMultiaddrError(text, "only TCP transports are supported")
    if names.count("p2p") != 1:
        raise InvalidMultiaddrError(text, "relay (/p2p-circuit) and nested /p2p addresses are not supported")
    value = addr.value_for_protocol("p2p")
    try:
        peer_id = ID.from_base58(str(value))
    except Exception as err:  # base58 and multihash errors
        raise InvalidMultiaddrError(text, f"bad peer id {value!r}") from err
    transport = addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{value}"))
    return peer_id.to_bytes(), transport


class Peer:
    """A running libp2p host (and its gossipsub, unless it was opened without).

    Get one from :func:`open_peer`; it is usable only inside that block.

    Attributes:
        host: The py-libp2p host, for stream handlers (``host.set_stream_handler(JOB_PROTOCOL, ...)``).
        pubsub: The pubsub service, or None if opened with ``pubsub=False``.
        gossipsub: Its gossipsub router, or None.
        peer_id: This peer's binary id (equal to :func:`proxima.sdk.peerid.peer_id_from_key` of its key).
        peer_id_b58: The same in base58 (``16Uiu2...``).
    """

    def __init__(self, host: IHost, pubsub: Pubsub | None, gossipsub: GossipSub | None) -> None:
        self.host = host
        self.pubsub = pubsub
        self.gossipsub = gossipsub
        self.peer_id: bytes = host.get_id().to_bytes()
        self.peer_id_b58: str = host.get_id().to_base58()
        self._ping_locks: dict[bytes, trio.Lock] = {}

    def __repr__(self) -> str:
        return f"Peer({self.peer_id_b58})"

    def addrs(self) -> list[str]:
        """The addresses other peers can dial, each ending with ``/p2p/<peer id>``."""
        return [str(addr) for addr in self.host.get_addrs()]

    def connected_peers(self) -> list[bytes]:
        """Binary ids of the peers this host has a connection to."""
        return [peer_id.to_bytes() for peer_id in self.host.get_connected_peers()]

    def is_connected(self, peer_id: bytes) -> bool:
        """Whether there is an open connection to ``peer_id``."""
        return ID(peer_id) in self.host.get_connected_peers()

    async def connect(self, addr: str, *, timeout: float = 10.0) -> bytes:
        """Connect to a peer (no-op if already connected).

        Args:
            addr: ``/ip4/<ip>/tcp/<port>/p2p/<peer id>``.
            timeout: Seconds to wait for the connection to be secured and multiplexed.

        Returns:
            The remote peer's binary id (authenticated by the Noise handshake).

        Raises:
            InvalidMultiaddrError: If ``addr`` is malformed.
            DialError: If the peer cannot be reached in time, or ``addr`` is this peer's own.
        """
        peer_id, transport = parse_bootstrap(addr)
        if peer_id == self.peer_id:
            raise DialError(addr, "that is this peer's own address")
        network = self.host.get_network()
        if isinstance(network, Swarm):
            # An explicit dial is worth trying even if the peer failed a moment ago (the swarm would refuse
            # for a minute).
            network.unblock_peer(ID(peer_id))
        try:
            with trio.fail_after(timeout):
                await self.host.connect(PeerInfo(ID(peer_id), [transport]))
        except trio.TooSlowError as err:
            raise DialError(addr, f"no connection within {timeout} s") from err
        except _NET_ERRORS as err:
            raise DialError(addr, str(err) or type(err).__name__) from err
        log.debug("connected", extra={"peer": peer_id_to_base58(peer_id), "addr": str(transport)})
        return peer_id

    async def disconnect(self, peer_id: bytes) -> None:
        """Close every connection to ``peer_id`` (no-op if there is none)."""
        await self.host.disconnect(ID(peer_id))

    async def ping(self, peer_id: bytes, *, count: int = 1, timeout: float = 5.0) -> float:
        """Measure the round-trip time to a connected peer with ``/ipfs/ping/1.0.0``.

        The clock runs only around each echo (``time.perf_counter``), not around opening the stream, so the
        figure is network RTT plus the two peers' processing, at sub-millisecond resolution.

        Args:
            peer_id: A peer's binary id; there must be a connection to it (this does not dial).
            count: Round trips on one stream; the smallest is returned (the least queueing).
            timeout: Seconds for the whole exchange.

        Returns:
            The RTT in seconds.

        Raises:
            PingError: If there is no connection, the peer does not answer in time, or echoes wrong bytes.
        """
        if count < 1:
            raise ValueError(f"ping count must be >= 1, got {count}")
        if not self.is_connected(peer_id):
            raise PingError(peer_id, "not connected")
        # The responder serves at most two ping streams per peer: one ping at a time to each peer.
        lock = self._ping_locks.setdefault(peer_id, trio.Lock())
        try:
            async with lock:
                with trio.fail_after(timeout):
                    return await self._ping_once(peer_id, count)
        except trio.TooSlowError as err:
            raise PingError(peer_id, f"no answer within {timeout} s") from err
        except _NET_ERRORS as err:
            raise PingError(peer_id, str(err) or type(err).__name__) from err
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._ping_locks.pop(peer_id, None)

    async def _ping_once(self, peer_id: bytes, count: int) -> float:
        stream = await self.host.new_stream(ID(peer_id), [PING_PROTOCOL])
        try:
            best = math.inf
            for _ in range(count):
                payload = secrets.token_bytes(_PING_BYTES)
                start = time.perf_counter()
                await stream.write(payload)
                echo = await read_exactly(stream, _PING_BYTES)
                best = min(best, time.perf_counter() - start)
                if echo != payload:
                    raise PingError(peer_id, "the echo differs from the payload")
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                await _quietly(stream.reset())
            raise
        await stream.close()
        return best

    async def subscribe(self, topic: str) -> ISubscriptionAPI:
        """Subscribe to a gossipsub topic (a subscriber also relays the topic's messages).

        Raises:
            P2PError: If this peer was opened without pubsub.
        """
        return await self._require_pubsub().subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Sign (libp2p message signature) and publish ``data`` on ``topic``.

        The message passes this peer's own topic validator first, as a relayed one would.

        Raises:
            P2PError: If this peer was opened without pubsub.
        """
        await self._require_pubsub().publish(topic, data)

    def _require_pubsub(self) -> Pubsub:
        if self.pubsub is None:
            raise P2PError(f"peer {self.peer_id_b58} was opened without pubsub")
        return self.pubsub


@asynccontextmanager
async def open_peer(
    private_key: bytes,
    listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    *,
    pubsub: bool = True,
    bootstrap: Sequence[str] = (),
    announce: Sequence[str] | None = None,
    gossip: GossipConfig | None = None,
    bootstrap_interval: float = 30.0,
    dial_timeout: float = 5.0,
) -> AsyncIterator[Peer]:
    """Start a libp2p host whose identity is ``private_key`` (trio).

    The host speaks TCP, secured with Noise only (no plaintext, secio or TLS fallbacks) and multiplexed with
    Yamux. Bootstrap peers are dialed before the block starts (failures are logged, not raised) and re-dialed
    every ``bootstrap_interval`` seconds while disconnected. However the block ends (normally, with an
    exception, or cancelled), the host shuts down in order: pubsub stops, connections and listeners close,
    nothing is left open. An exception raised in the block comes out as itself, not in an exception group.

    Args:
        private_key: The 32-byte secp256k1 key (the provider's keystore key).
        listen: Multiaddrs to listen on; port 0 picks a free port.
        pubsub: Whether to run gossipsub.
        bootstrap: Peers to connect to, as ``/ip4/<ip>/tcp/<port>/p2p/<peer id>``.
        announce: Addresses to advertise instead of the listen addresses (behind NAT or a proxy).
        gossip: Gossipsub parameters.
        bootstrap_interval: Seconds between re-dials of disconnected bootstrap peers.
        dial_timeout: Seconds allowed for each bootstrap dial.

    Yields:
        The running :class:`Peer`.

    Raises:
        InvalidMultiaddrError: If a listen, announce or bootstrap address is malformed.
        ListenError: If a listen port is taken or the address is not local.
        ValueError: If ``private_key`` is not a valid secp256k1 key.
    """
    if (
        not isinstance(private_key, bytes)
        or len(private_key) != 32
        or not 0 < int.from_bytes(private_key, "big") < _SECP256K1_N
    ):
        raise ValueError("private_key must be a 32-byte secp256k1 private key")
    listen_addrs = [parse_multiaddr(text) for text in listen]
    if not listen_addrs:
        raise ValueError("at least one listen address is needed")
    for addr, text in zip(listen_addrs, listen, strict=True):
        _check_listen_addr(addr, text)
    targets = [(text, *parse_bootstrap(text)) for text in bootstrap]
    announce_addrs = None if announce is None else [parse_multiaddr(text) for text in announce]
    config = gossip or GossipConfig()

    key_pair = create_new_key_pair(private_key)
    host = new_host(
        key_pair=key_pair,
        listen_addrs=listen_addrs,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, create_new_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        # Without a per-peer limit of one connection, py-libp2p waits 250 ms on every dial.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        announce_addrs=announce_addrs,
    )
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            started: list[Peer] = []
            ready = trio.Event()
            nursery.start_soon(_serve, host, listen_addrs, pubsub, config, ready, started, stop)
            await ready.wait()
            peer = started[0]
            redial = trio.CancelScope()
            try:
                if targets:
                    await _dial_all(peer, targets, dial_timeout)
                    nursery.start_soon(
                        _keep_bootstrap, peer, targets, bootstrap_interval, dial_timeout, redial
                    )
                yield peer
            finally:
                redial.cancel()
                stop.set()
    except BaseExceptionGroup as group:
        # The block runs inside a nursery, which wraps whatever it raises in an exception group: give the
        # caller back its own exception.
        _raise_sole(group)
        raise
    finally:
        stop.set()
        await _close_host(host)  # idempotent: a no-op after a clean exit
        log.info("peer stopped", extra={"peer": host.get_id().to_base58()})


async def _serve(
    host: IHost,
    listen_addrs: Sequence[multiaddr.Multiaddr],
    pubsub: bool,
    config: GossipConfig,
    ready: trio.Event,
    started: list[Peer],
    stop: trio.Event,
) -> None:
    """Run the host until ``stop``, shielded from the caller's cancellation; the peer goes into ``started``.

    Cancelling py-libp2p's tasks abruptly leaves sockets open (their cleanup awaits are cancelled too), so the
    host always shuts down in order: the caller's cancellation only sets ``stop``; the shutdown itself gets
    a deadline.
    """
    with trio.CancelScope(shield=True) as scope:
        async with _run_peer(host, listen_addrs, pubsub, config) as peer:
            started.append(peer)
            ready.set()
            await stop.wait()
            scope.deadline = trio.current_time() + 2 * _CLOSE_TIMEOUT
    if scope.cancelled_caught:
        log.warning("peer did not stop in time", extra={"peer": host.get_id().to_base58()})


@asynccontextmanager
async def _run_peer(
    host: IHost, listen_addrs: Sequence[multiaddr.Multiaddr], pubsub: bool, config: GossipConfig
) -> AsyncIterator[Peer]:
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs))
        # Close connections while the network service still runs: once it has stopped, the swarm has
        # forgotten its connections and their sockets stay open until garbage collection.
        stack.push_async_callback(_close_host, host)
        if not pubsub:
            peer = Peer(host, None, None)
        else:
            router = GossipSub(
                protocols=[MESHSUB_1_1, MESHSUB_1_0],
                degree=config.degree,
                degree_low=config.degree_low,
                degree_high=config.degree_high,
                heartbeat_interval=config.heartbeat_interval,
                max_messages_per_topic_per_second=config.max_messages_per_second,
            )
            service = Pubsub(host, router)
            # Pubsub starts a thread for its seen-message cache and never stops it.
            stack.callback(service.seen_messages.stop)
            await stack.enter_async_context(background_trio_service(service))
            await stack.enter_async_context(background_trio_service(router))
            await service.wait_until_ready()
            peer = Peer(host, service, router)
        log.info("peer started", extra={"peer": peer.peer_id_b58, "addrs": peer.addrs()})
        yield peer


def _raise_sole(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the exception inside nested one-member groups, unchanged; return if there are several."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return
        leaf = leaf.exceptions[0]
    context, cause, suppress = leaf.__context__, leaf.__cause__, leaf.__suppress_context__
    try:
        raise leaf
    finally:
        leaf.__context__, leaf.__cause__, leaf.__suppress_context__ = context, cause, suppress


async def _close_host(host: IHost) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT) as scope:
        await host.close()
    if scope.cancelled_caught:
        log.warning("host did not close in time", extra={"timeout_s": _CLOSE_TIMEOUT})


async def _dial_all(peer: Peer, targets: Sequence[_Target], timeout: float) -> None:
    async with trio.open_nursery() as nursery:
        for text, peer_id, _ in targets:
            if peer_id != peer.peer_id and not peer.is_connected(peer_id):
                nursery.start_soon(_dial_logged, peer, text, timeout)


async def _dial_logged(peer: Peer, addr: str, timeout: float) -> None:
    try:
        await peer.connect(addr, timeout=timeout)
    except DialError as err:
        log.warning("bootstrap peer unreachable", extra={"addr": addr, "error": err.problem})


async def _keep_bootstrap(
    peer: Peer, targets: Sequence[_Target], interval: float, timeout: float, scope: trio.CancelScope
) -> None:
    with scope:
        while True:
            await trio.sleep(interval)
            await _dial_all(peer, targets, timeout)


async def _quietly(awaitable: Awaitable[object]) -> None:
    with suppress(*_NET_ERRORS):
        await awaitable


def _b58_or_hex(peer_id: bytes) -> str:
    return peer_id_to_base58(peer_id) if peer_id else "0x"
