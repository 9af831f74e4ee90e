"""Publishes the node's signed offer: at start, when something changes, and as a heartbeat.

The offer's ``seq`` is the larger of "last + 1" and the current Unix time in milliseconds, so it grows
strictly across restarts without being stored (as long as the clock does not go back by more than the
downtime).
Changes (``trigger()``) are coalesced: the advertiser publishes at most once per ``min_interval`` seconds,
which keeps the node far below gossipsub's spam limit (10 messages/s per topic by default) however often its
capacity changes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import trio

from proxima.node.errors import NodeError
from proxima.sdk.eip712 import Signer
from proxima.sdk.offers import Offer, SignedOffer, sign_offer
from proxima.sdk.p2p import OFFER_TOPIC, P2PError, Peer

__all__ = ["Advertiser", "AdvertiserError"]

log = logging.getLogger(__name__)


class AdvertiserError(NodeError):
    """An offer could not be built, signed or published."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"cannot advertise: {problem}")


class Advertiser:
    """Keeps the node's offer on the gossip topic.

    Args:
        peer: The running libp2p peer (with pubsub).
        signer: The provider's key; it must be the offer's provider.
        make_offer: Builds the current offer for a given ``seq`` (prices, capacity, coordinate, times).
        heartbeat: Seconds between publications when nothing changes; keep it well under the offers' validity.
        min_interval: Fewest seconds between two publications.
        topic: The gossip topic.
        clock: Unix seconds (for ``seq``).
        on_publish: Called with each published offer (for metrics).
    """

    def __init__(
        self,
        peer: Peer,
        signer: Signer,
        make_offer: Callable[[int], Offer],
        heartbeat: float,
        *,
        min_interval: float = 1.0,
        topic: str = OFFER_TOPIC,
        clock: Callable[[], float] = time.time,
        on_publish: Callable[[SignedOffer], None] | None = None,
    ) -> None:
        if not heartbeat > 0 or not min_interval >= 0 or min_interval > heartbeat:
            raise ValueError(f"need 0 <= min_interval <= heartbeat, got {min_interval} and {heartbeat}")
        self._peer = peer
        self._signer = signer
        self._make_offer = make_offer
        self._heartbeat = heartbeat
        self._min_interval = min_interval
        self._topic = topic
        self._clock = clock
        self._on_publish = on_publish
        self._changed = trio.Event()
        self._last_seq = -1
        self.last: SignedOffer | None = None
        """The offer published last."""
        self.published = 0
        """Offers published so far."""

    def trigger(self) -> None:
        """Ask for a publication soon (capacity or prices changed). Call it from the trio thread."""
        self._changed.set()

    def next_seq(self) -> int:
        """The ``seq`` the next offer gets: above the last one, and at least the time in milliseconds."""
        return max(self._last_seq + 1, math.floor(self._clock() * 1000))

    async def publish_now(self) -> SignedOffer:
        """Build, sign and publish the current offer.

        Raises:
            AdvertiserError: If the offer cannot be built or signed, or pubsub refuses it.
        """
        seq = self.next_seq()
        try:
            offer = self._make_offer(seq)
        except (ValueError, NodeError) as err:  # pydantic's ValidationError is a ValueError
            raise AdvertiserError(f"building the offer failed: {err}") from err
        if offer.seq != seq:
            raise AdvertiserError(f"make_offer returned seq {offer.seq}, expected {seq}")
        try:
            signed = sign_offer(offer, self._signer)
        except ValueError as err:  # SignatureError: the signer is not the provider
            raise AdvertiserError(str(err)) from err
        try:
            await self._peer.publish(self._topic, signed.to_wire())
        except P2PError as err:
            raise AdvertiserError(str(err)) from err
        self._last_seq = seq
        self.last = signed
        self.published += 1
        log.debug("offer published", extra={"seq": seq, "free_slots": offer.capacity.free_slots})
        if self._on_publish is not None:
            self._on_publish(signed)
        return signed

    async def run(self) -> None:
        """Publish now, then on every trigger (coalesced) and heartbeat, until cancelled.

        A failed publication is logged and retried at the next trigger or heartbeat.
        """
        while True:
            self._changed = trio.Event()  # triggers from here on ask for the next publication
            attempt = trio.current_time()
            try:
                await self.publish_now()
            except AdvertiserError as err:
                log.error("offer not published", extra={"error": err.problem})
            with trio.move_on_after(self._heartbeat):
                await self._changed.wait()
            # Coalesce bursts of triggers: at most one publication per min_interval.
            await trio.sleep_until(attempt + self._min_interval)
