"""The marketplace's own libp2p host: it sees the offer book, measures RTTs, and runs jobs for asyncio code.

py-libp2p runs on trio; the gateway runs on asyncio (uvicorn). :class:`MarketNetwork` runs one trio event loop
in a thread of its own, and everything libp2p happens there:

* a peer on the gateway's key (:func:`proxima.sdk.p2p.open_peer`, with bootstrap peers);
* the offer topic, checked by an :class:`~proxima.sdk.offers.OfferValidator` whose stake check is a
  :class:`~proxima.sdk.offers.StakeCache` over the caller's ``is_staked`` (unsigned, expired, replayed,
  oversized and unstaked offers never reach the book), followed into an
  :class:`~proxima.sdk.offers.OfferBook`;
* a probe loop that pings offered providers through their offer addresses (dialing them when needed), keeps
  the RTTs in an :class:`~proxima.marketplace.matching.latency.RttTable` and folds every sample into this
  host's Vivaldi coordinate (:func:`proxima.sdk.vivaldi.update`), as a node's coordinate service does;
* the job exchanges: :meth:`MarketNetwork.run_job` and :meth:`MarketNetwork.request_quote` are coroutines for
  asyncio. Each call is scheduled into the trio loop's nursery (``TrioToken.run_sync_soon``; no thread per
  call), runs :func:`proxima.sdk.jobclient.run_job` / :func:`~proxima.sdk.jobclient.request_quote` there, and
  resolves an asyncio future through ``loop.call_soon_threadsafe``. Many calls run at once; cancelling the
  awaiting asyncio task cancels the exchange in trio.

The book and the RTT table are read from other threads through thread-safe copies. :meth:`MarketNetwork.stop`
closes the host in order and joins the thread; it is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import trio
from eth_utils.address import is_checksum_address

from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching.latency import InvalidRttError, RttTable
from proxima.sdk.jobclient import JobTimeoutError, JobTransportError
from proxima.sdk.jobclient import request_quote as sdk_request_quote
from proxima.sdk.jobclient import run_job as sdk_run_job
from proxima.sdk.jobs import Domains, JobRequest, JobResult, Quote, QuoteRequest
from proxima.sdk.offers import (
    MAX_OFFER_BYTES,
    Offer,
    OfferBook,
    OfferValidator,
    RejectReason,
    SignedOffer,
    StakeCache,
    subscribe_offers,
)
from proxima.sdk.p2p import DialError, GossipConfig, P2PError, Peer, PingError, open_peer, parse_bootstrap
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import DIMENSIONS, InvalidCoordinateError, VivaldiCoordinate, update

__all__ = [
    "InvalidNetworkConfigError",
    "MarketNetwork",
    "NetworkError",
    "NetworkNotRunningError",
    "NetworkStartError",
    "NetworkStatus",
    "NetworkStoppedError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_STOP_TIMEOUT: Final = 20.0
_PRUNE_INTERVAL: Final = 1.0


class NetworkError(MarketError):
    """Root of the marketplace network's errors."""


class InvalidNetworkConfigError(NetworkError, ValueError):
    """A constructor argument is invalid; the message names it (never the key's value)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid {field}: {problem}")


class NetworkStartError(NetworkError):
    """The libp2p host could not start (listen address malformed or taken, or no start in time)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"the market network could not start: {problem}")


class NetworkNotRunningError(NetworkError):
    """The network is not running (not started yet, or stopped)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs a running market network; call start() first")


class NetworkStoppedError(NetworkError, JobTransportError):
    """A job exchange was cut short because the network stopped (a transport failure for the caller)."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider, "the market network stopped")


@dataclass(frozen=True)
class NetworkStatus:
    """Counters for health checks and metrics.

    Attributes:
        running: Whether the host is up.
        peer_id: This host's base58 peer id.
        addrs: Its dialable addresses (empty when not running).
        offers: Live offers in the book.
        book_version: Increments whenever the book changes.
        offers_accepted: Offers that passed validation.
        offers_rejected: Rejected offers by reason.
        rtt_samples: RTT samples taken.
        ping_failures: Pings (or the dials before them) that failed.
        exchanges_in_flight: Job and quote exchanges running now.
    """

    running: bool
    peer_id: str
    addrs: tuple[str, ...]
    offers: int
    book_version: int
    offers_accepted: int
    offers_rejected: dict[str, int]
    rtt_samples: int
    ping_failures: int
    exchanges_in_flight: int


class _LockedBook(OfferBook):
    """An OfferBook that other threads may read while the trio thread writes; counts its changes."""

    def __init__(self, *, max_offers: int) -> None:
        super().__init__(max_offers=max_offers)
        self.lock = threading.Lock()
        self.version = 0

    def add(self, signed: SignedOffer, now: float | None = None) -> bool:
        with self.lock:
            added = super().add(signed, now)
            if added:
                self.version += 1
            return added

    def get(self, provider: Address) -> SignedOffer | None:
        with self.lock:
            return super().get(provider)

    def offers(self, now: float) -> list[SignedOffer]:
        with self.lock:
            return super().offers(now)

    def prune(self, now: float) -> int:
        with self.lock:
            removed = super().prune(now)
            if removed:
                self.version += 1
            return removed

    def __len__(self) -> int:
        with self.lock:
            return super().__len__()


class MarketNetwork:
    """The gateway's libp2p host, run on trio in its own thread and called from asyncio.

    Args:
        private_key: The 32-byte secp256k1 key of this host's libp2p identity (it pays nothing; job requests
            carry their own client signatures).
        listen: Multiaddrs to listen on.
        bootstrap: Peers to connect to at start (``/ip4/<ip>/tcp/<port>/p2p/<peer id>``).
        is_staked: Whether an address is an active staked provider (for example
            ``contracts.registry.is_active_provider``); called from the network thread, cached per
            ``stake_ttl``.
        domains: The deployment's signing domains (quotes and receipts are checked in them).
        ping_interval: Seconds between probe rounds.
        pings_per_round: Most providers probed per round (rounds rotate through the book).
        ping_timeout: Seconds for one probe (dial included).
        dial_timeout: Seconds for a dial before a job exchange.
        stake_ttl: Seconds a stake answer is trusted.
        offer_max_ttl: Longest offer validity accepted, seconds.
        max_offers: Providers the book holds.
        announce: Addresses to advertise instead of the listen addresses.
        gossip: Gossipsub parameters.
        rtts: The RTT table to fill (a new one by default).

    Raises:
        InvalidNetworkConfigError: If an argument is invalid.
    """

    def __init__(
        self,
        private_key: bytes,
        *,
        listen: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
        bootstrap: Sequence[str] = (),
        is_staked: Callable[[Address], bool],
        domains: Domains,
        ping_interval: float = 10.0,
        pings_per_round: int = 16,
        ping_timeout: float = 5.0,
        dial_timeout: float = 5.0,
        stake_ttl: float = 60.0,
        offer_max_ttl: int = 300,
        max_offers: int = 100_000,
        announce: Sequence[str] | None = None,
        gossip: GossipConfig | None = None,
        rtts: RttTable | None = None,
    ) -> None:
        if (
            not isinstance(private_key, bytes)
            or len(private_key) != 32
            or not 0 < int.from_bytes(private_key, "big") < _SECP256K1_N
        ):
            raise InvalidNetworkConfigError("private_key", "must be a 32-byte secp256k1 private key")
        for name, value in (
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("dial_timeout", dial_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise InvalidNetworkConfigError(name, f"must be a positive number of seconds, got {value!r}")
        if isinstance(stake_ttl, bool) or not isinstance(stake_ttl, int | float) or not stake_ttl >= 0:
            raise InvalidNetworkConfigError("stake_ttl", f"must be >= 0 seconds, got {stake_ttl!r}")
        for name, count in (
            ("pings_per_round", pings_per_round),
            ("offer_max_ttl", offer_max_ttl),
            ("max_offers", max_offers),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidNetworkConfigError(name, f"must be a positive int, got {count!r}")
        if isinstance(listen, str) or not listen:
            raise InvalidNetworkConfigError("listen", "must be a non-empty list of multiaddrs")
        if isinstance(bootstrap, str):
            raise InvalidNetworkConfigError("bootstrap", "must be a list of multiaddrs, not one string")
        for addr in bootstrap:
            try:
                parse_bootstrap(addr)
            except P2PError as err:
                raise InvalidNetworkConfigError("bootstrap", str(err)) from err
        if not callable(is_staked):
            raise InvalidNetworkConfigError("is_staked", "must be callable")

        self._key = private_key
        self._listen = tuple(listen)
        self._bootstrap = tuple(bootstrap)
        self._announce = None if announce is None else tuple(announce)
        self._gossip = gossip
        self._domains = domains
        self._ping_interval = float(ping_interval)
        self._pings_per_round = pings_per_round
        self._ping_timeout = float(ping_timeout)
        self._dial_timeout = float(dial_timeout)
        self._stake = StakeCache(is_staked, ttl=stake_ttl)
        self._offer_max_ttl = offer_max_ttl
        self._book = _LockedBook(max_offers=max_offers)
        self.rtts: RttTable = rtts if rtts is not None else RttTable()
        """Measured RTT per provider (seconds), from pings through the offers' addresses."""

        self._peer_id = peer_id_from_key(private_key)
        self._peer_id_b58 = peer_id_to_base58(self._peer_id)
        self._coordinate = VivaldiCoordinate.origin(DIMENSIONS)
        self._addrs: tuple[str, ...] = ()
        self._counters_lock = threading.Lock()
        self._rejected: Counter[str] = Counter()
        self._accepted = 0
        self._rtt_samples = 0
        self._ping_failures = 0
        self._in_flight = 0

        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._peer: Peer | None = None
        self._stop: trio.Event | None = None
        self._wake: trio.Event | None = None
        self._stopping = False
        self._stopped = False
        self._dial_locks: dict[bytes, trio.Lock] = {}
        self._rotation = 0

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the network thread and wait until the host listens and follows the offer topic.

        Args:
            timeout: Seconds to wait for the host.

        Raises:
            NetworkStartError: If the host cannot start (the thread is gone again when this is raised).
            NetworkError: If the network was started before (a stopped network cannot be restarted).
        """
        with self._state_lock:
            if self._thread is not None or self._stopped:
                raise NetworkError("this market network was already started; create a new one")
            self._thread = threading.Thread(
                target=self._thread_main, name=f"proxima-market-{self._peer_id_b58[-8:]}", daemon=True
            )
            self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise NetworkStartError(f"no libp2p host within {timeout} s")
        if self._start_error is not None:
            err = self._start_error
            self._join()
            with self._state_lock:
                self._stopped = True
            raise NetworkStartError(f"{type(err).__name__}: {err}") from err
        log.info("market network started", extra={"peer": self._peer_id_b58, "addrs": list(self._addrs)})

    def stop(self) -> None:
        """Close the host in order and join the thread; exchanges still running fail with
        :class:`NetworkStoppedError`. Idempotent, and a no-op before :meth:`start`."""
        with self._state_lock:
            if self._stopped or self._thread is None:
                self._stopped = True
                return
            self._stopping = True
            token, stop_event = self._token, self._stop
        if token is not None and stop_event is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop_event.set)
        self._join()
        with self._state_lock:
            self._stopped = True
            self._addrs = ()
        log.info("market network stopped", extra={"peer": self._peer_id_b58})

    def _join(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                log.warning("market network thread did not stop in time", extra={"timeout_s": _STOP_TIMEOUT})

    @property
    def running(self) -> bool:
        """Whether the host is up and accepting calls."""
        return (
            self._started.is_set() and self._start_error is None and not self._stopping and not self._stopped
        )

    # --- read side (any thread) ----------------------------------------------------------------------------

    @property
    def peer_id_b58(self) -> str:
        """This host's base58 peer id (derived from the key; known before start)."""
        return self._peer_id_b58

    @property
    def addrs(self) -> tuple[str, ...]:
        """Dialable addresses (``.../p2p/<peer id>``) while running; empty otherwise."""
        return self._addrs

    def offers(self, now: float | None = None) -> list[SignedOffer]:
        """A copy of the live book: offers not expired at ``now`` (unix seconds), by provider address."""
        return self._book.offers(time.time() if now is None else now)

    def offer_of(self, provider: Address) -> SignedOffer | None:
        """The provider's latest offer if it has not expired, else None."""
        signed = self._book.get(provider)
        if signed is None or signed.offer.expires_at <= time.time():
            return None
        return signed

    @property
    def book_version(self) -> int:
        """Increments whenever the book changes (a new or newer offer, expired offers pruned)."""
        return self._book.version

    def coordinate(self) -> VivaldiCoordinate:
        """This host's Vivaldi coordinate, refined by every RTT sample."""
        return self._coordinate

    def status(self) -> NetworkStatus:
        """Counters for health checks and metrics."""
        with self._counters_lock:
            rejected = dict(sorted(self._rejected.items()))
            accepted, samples, failures, in_flight = (
                self._accepted,
                self._rtt_samples,
                self._ping_failures,
                self._in_flight,
            )
        return NetworkStatus(
            running=self.running,
            peer_id=self._peer_id_b58,
            addrs=self._addrs,
            offers=len(self.offers()),
            book_version=self.book_version,
            offers_accepted=accepted,
            offers_rejected=rejected,
            rtt_samples=samples,
            ping_failures=failures,
            exchanges_in_flight=in_flight,
        )

    # --- job exchanges (asyncio) ---------------------------------------------------------------------------

    async def run_job(self, offer: Offer, request: JobRequest, *, timeout: float) -> JobResult:
        """Run a signed job on the offer's provider and return its verified result (asyncio).

        Dials ``offer.addrs`` first when not connected. ``timeout`` covers the dial and the exchange.

        Raises:
            JobRejectedError: The provider refused or failed the job.
            InvalidResponseError: The answer is malformed or its receipt invalid (InvalidReceiptError).
            JobTimeoutError: No connection or no answer within ``timeout``.
            JobTransportError: The provider cannot be reached or the stream broke (NetworkStoppedError when
                the network stops meanwhile).
            ValueError: ``request.provider`` is not the offer's provider (from the SDK, nothing sent).
            WorkloadSpecError: The workload is unknown to the SDK (nothing sent).
            NetworkNotRunningError: The network is not running.
        """
        domains = self._domains

        async def exchange(peer: Peer, remaining: float) -> JobResult:
            return await sdk_run_job(peer, offer.peer_id_bytes, request, domains=domains, timeout=remaining)

        return await self._call("run_job", offer, exchange, timeout)

    async def request_quote(self, offer: Offer, request: QuoteRequest, *, timeout: float) -> Quote:
        """Ask the offer's provider for signed escrow terms (asyncio); errors as :meth:`run_job`."""
        domains = self._domains

        async def exchange(peer: Peer, remaining: float) -> Quote:
            return await sdk_request_quote(
                peer, offer.peer_id_bytes, request, domains=domains, timeout=remaining
            )

        return await self._call("request_quote", offer, exchange, timeout)

    async def _call(
        self,
        what: str,
        offer: Offer,
        exchange: Callable[[Peer, float], Awaitable[T]],
        timeout: float,
    ) -> T:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise InvalidNetworkConfigError(
                "timeout", f"must be a positive number of seconds, got {timeout!r}"
            )
        token = self._token
        if not self.running or token is None:
            raise NetworkNotRunningError(what)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        provider = offer.peer_id
        scope = trio.CancelScope()  # created here, used only in the trio thread

        def settle(result: T | None, error: BaseException | None) -> None:
            def apply() -> None:
                if future.done():  # the caller was cancelled
                    return
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)  # type: ignore[arg-type]

            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                loop.call_soon_threadsafe(apply)

        def done() -> None:  # before settling: the caller may look at the counters as soon as it resumes
            with self._counters_lock:
                self._in_flight -= 1

        async def task() -> None:
            with self._counters_lock:
                self._in_flight += 1
            try:
                with scope:
                    result = await self._exchange(offer, exchange, timeout)
            except Exception as err:  # noqa: BLE001 - every error of the exchange goes to the caller, unchanged
                done()
                settle(None, err)
                return
            except BaseException:  # the network is stopping (trio.Cancelled): tell the caller, then unwind
                done()
                settle(None, NetworkStoppedError(provider))
                raise
            done()
            if scope.cancelled_caught:  # the caller was cancelled; nobody waits for this
                settle(None, NetworkStoppedError(provider))
            else:
                settle(result, None)

        def spawn() -> None:
            nursery = self._nursery
            if nursery is None or self._stopping:
                settle(None, NetworkStoppedError(provider))
                return
            nursery.start_soon(task, name=f"{what} {provider}")

        try:
            token.run_sync_soon(spawn)
        except trio.RunFinishedError as err:
            raise NetworkNotRunningError(what) from err
        try:
            return await future
        except asyncio.CancelledError:
            # Callbacks run in order, so the task was spawned (or refused) before this cancel runs.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
            raise

    async def _exchange(
        self, offer: Offer, exchange: Callable[[Peer, float], Awaitable[T]], timeout: float
    ) -> T:
        peer = self._peer
        if peer is None:
            raise NetworkStoppedError(offer.peer_id)
        started = trio.current_time()
        if not peer.is_connected(offer.peer_id_bytes):
            try:
                with trio.fail_after(timeout):
                    await self._connect(peer, offer, min(timeout, self._dial_timeout))
            except trio.TooSlowError as err:
                raise JobTimeoutError(offer.peer_id, timeout) from err
        remaining = timeout - (trio.current_time() - started)
        if remaining <= 0:
            raise JobTimeoutError(offer.peer_id, timeout)
        return await exchange(peer, remaining)

    async def _connect(self, peer: Peer, offer: Offer, dial_timeout: float) -> None:
        """Dial the offer's addresses in order until one works (one dial per provider at a time)."""
        peer_id = offer.peer_id_bytes
        lock = self._dial_locks.setdefault(peer_id, trio.Lock())
        try:
            async with lock:
                if peer.is_connected(peer_id):
                    return
                problems = []
                for addr in offer.addrs:
                    try:
                        await peer.connect(addr, timeout=dial_timeout)
                        return
                    except DialError as err:
                        problems.append(err.problem)
                raise JobTransportError(offer.peer_id, "cannot connect: " + "; ".join(problems))
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._dial_locks.pop(peer_id, None)

    # --- the trio thread -----------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as err:  # noqa: BLE001 - reported to start(), or logged after it
            if not self._started.is_set():
                self._start_error = err
            else:
                log.error("market network failed", extra={"error": f"{type(err).__name__}: {err}"})
        finally:
            with self._state_lock:
                self._stopping = True
                self._nursery = None
                self._peer = None
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._wake = trio.Event()
        validator = OfferValidator(
            self._stake, max_bytes=MAX_OFFER_BYTES, max_ttl=self._offer_max_ttl, on_reject=self._on_reject
        )
        async with open_peer(
            self._key,
            self._listen,
            bootstrap=self._bootstrap,
            announce=self._announce,
            gossip=self._gossip,
            dial_timeout=self._dial_timeout,
        ) as peer:
            subscription = await subscribe_offers(peer, validator)
            async with trio.open_nursery() as nursery:
                self._peer = peer
                self._nursery = nursery
                self._addrs = tuple(peer.addrs())
                nursery.start_soon(partial(self._book.follow, subscription, on_offer=self._on_offer))
                nursery.start_soon(self._probe_loop, peer)
                nursery.start_soon(self._prune_loop)
                with self._state_lock:
                    stopping = self._stopping
                self._started.set()
                if not stopping:
                    await self._stop.wait()
                self._stopping = True
                nursery.cancel_scope.cancel()

    def _on_reject(self, reason: RejectReason) -> None:
        with self._counters_lock:
            self._rejected[reason.value] += 1

    def _on_offer(self, signed: SignedOffer) -> None:
        with self._counters_lock:
            self._accepted += 1
        if self.rtts.get(signed.offer.provider) is None and self._wake is not None:
            self._wake.set()  # a provider never measured: probe it now rather than at the next round

    async def _prune_loop(self) -> None:
        while True:
            await trio.sleep(_PRUNE_INTERVAL)
            self._book.prune(time.time())

    async def _probe_loop(self, peer: Peer) -> None:
        while True:
            assert self._wake is not None
            self._wake = trio.Event()
            await self._probe_round(peer)
            with trio.move_on_after(self._ping_interval):
                await self._wake.wait()

    async def _probe_round(self, peer: Peer) -> None:
        offers = [s.offer for s in self.offers() if s.offer.peer_id_bytes != peer.peer_id]
        if not offers:
            return
        # Never measured first, then the rotation through the rest.
        fresh = [o for o in offers if self.rtts.get(o.provider) is None]
        known = [o for o in offers if self.rtts.get(o.provider) is not None]
        if known:
            start = self._rotation % len(known)
            known = known[start:] + known[:start]
        chosen = (fresh + known)[: self._pings_per_round]
        self._rotation += max(0, len(chosen) - len(fresh))
        async with trio.open_nursery() as nursery:
            for offer in chosen:
                nursery.start_soon(self._probe, peer, offer)

    async def _probe(self, peer: Peer, offer: Offer) -> None:
        try:
            with trio.fail_after(self._ping_timeout):
                if not peer.is_connected(offer.peer_id_bytes):
                    await self._connect(peer, offer, self._ping_timeout)
                rtt = await peer.ping(offer.peer_id_bytes, count=3, timeout=self._ping_timeout)
        except (trio.TooSlowError, JobTransportError, PingError) as err:
            with self._counters_lock:
                self._ping_failures += 1
            log.debug("probe failed", extra={"provider": offer.provider, "error": str(err)})
            return
        if not is_checksum_address(offer.provider):  # pragma: no cover - offers are validated
            return
        try:
            self.rtts.observe(offer.provider, max(rtt, 1e-6))
            self._coordinate = update(
                self._coordinate,
                offer.coordinates.to_vivaldi(),
                max(rtt, 1e-6),
                tiebreak=peer.peer_id + offer.peer_id_bytes,
            )
        except (InvalidRttError, InvalidCoordinateError) as err:
            log.warning("unusable probe", extra={"provider": offer.provider, "error": str(err)})
            return
        with self._counters_lock:
            self._rtt_samples += 1

    def __repr__(self) -> str:
        return f"MarketNetwork({self._peer_id_b58}, running={self.running})"

    def __enter__(self) -> MarketNetwork:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
