"""The node's Vivaldi network coordinate, kept current by pinging the peers it is connected to.

Each round the service pings connected peers whose coordinate it knows (from their offers) and folds every
measured RTT into its own coordinate (:func:`proxima.sdk.vivaldi.update`). The advertiser puts
:meth:`CoordinateService.current` into each offer, so clients predict the RTT to this node without probing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from proxima.sdk.p2p import Peer, PingError
from proxima.sdk.peerid import peer_id_to_base58
from proxima.sdk.vivaldi import DIMENSIONS, InvalidCoordinateError, VivaldiCoordinate, update

__all__ = ["CoordinateService"]

log = logging.getLogger(__name__)


class CoordinateService:
    """Measures RTTs to connected peers and keeps this node's Vivaldi coordinate.

    Args:
        peer: The running libp2p peer.
        interval: Seconds between rounds.
        remote_coordinates: The coordinate a peer advertises, by binary peer id, or None if unknown (the
            node passes a lookup into its :class:`proxima.sdk.offers.OfferBook`). Unknown peers are not
            pinged.
        peers_per_round: Most peers pinged in one round; rounds rotate through the connected peers.
        pings_per_sample: Round trips per sample; the smallest counts (the least queueing delay).
        ping_timeout: Seconds allowed for one sample.
        initial: Starting coordinate (the origin of ``DIMENSIONS`` dimensions by default).
    """

    def __init__(
        self,
        peer: Peer,
        interval: float,
        remote_coordinates: Callable[[bytes], VivaldiCoordinate | None],
        *,
        peers_per_round: int = 8,
        pings_per_sample: int = 3,
        ping_timeout: float = 5.0,
        initial: VivaldiCoordinate | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        if peers_per_round < 1 or pings_per_sample < 1 or not ping_timeout > 0:
            raise ValueError(
                f"bad probe settings: peers_per_round={peers_per_round}, "
                f"pings_per_sample={pings_per_sample}, ping_timeout={ping_timeout}"
            )
        self._peer = peer
        self._interval = interval
        self._remote_coordinates = remote_coordinates
        self._peers_per_round = peers_per_round
        self._pings_per_sample = pings_per_sample
        self._ping_timeout = ping_timeout
        self._coordinate = initial or VivaldiCoordinate.origin(DIMENSIONS)
        self._rotation = 0
        self.samples = 0
        """RTT samples folded into the coordinate so far."""
        self.failures = 0
        """Pings that failed (peer gone, timeout)."""

    def current(self) -> VivaldiCoordinate:
        """This node's coordinate now."""
        return self._coordinate

    async def probe(self, peer_id: bytes) -> float | None:
        """Ping one peer and, if its coordinate is known, update ours.

        Returns:
            The measured RTT in seconds, or None if the peer's coordinate is unknown or the ping failed.
        """
        remote = self._remote_coordinates(peer_id)
        if remote is None:
            return None
        try:
            rtt = await self._peer.ping(peer_id, count=self._pings_per_sample, timeout=self._ping_timeout)
        except PingError as err:
            self.failures += 1
            log.debug("ping failed", extra={"peer": peer_id_to_base58(peer_id), "error": err.problem})
            return None
        try:
            self._coordinate = update(self._coordinate, remote, rtt, tiebreak=self._peer.peer_id + peer_id)
        except InvalidCoordinateError as err:
            log.warning(
                "unusable remote coordinate", extra={"peer": peer_id_to_base58(peer_id), "error": str(err)}
            )
            return None
        self.samples += 1
        return rtt

    async def run_once(self) -> int:
        """One round: probe up to ``peers_per_round`` connected peers with known coordinates, one at a time.

        Returns:
            How many samples were folded in.
        """
        candidates = sorted(
            p for p in self._peer.connected_peers() if self._remote_coordinates(p) is not None
        )
        if not candidates:
            return 0
        start = self._rotation % len(candidates)
        chosen = (candidates[start:] + candidates[:start])[: self._peers_per_round]
        self._rotation = start + len(chosen)
        updated = 0
        for peer_id in chosen:
            if await self.probe(peer_id) is not None:
                updated += 1
        if updated:
            c = self._coordinate
            log.debug(
                "coordinate updated",
                extra={"vector_s": c.vector, "height_s": c.height, "error": c.error, "samples": updated},
            )
        return updated

    async def run(self) -> None:
        """Probe every ``interval`` seconds until cancelled."""
        while True:
            await self.run_once()
            await trio.sleep(self._interval)
