"""The advertiser on real libp2p hosts: offers reach a validating subscriber at start, on triggers (coalesced)
and on heartbeats, with a seq that keeps growing across restarts; with CoordinateService, offers carry the
coordinates that peers then use."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio
from _trio_support import key, trio_test

from proxima.node.advertiser import Advertiser, AdvertiserError
from proxima.node.coordinates import CoordinateService
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.offers import (
    Offer,
    OfferBook,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferValidator,
    OfferWorkload,
    SignedOffer,
    subscribe_offers,
)
from proxima.sdk.p2p import OFFER_TOPIC, Peer, open_peer
from proxima.sdk.vivaldi import VivaldiCoordinate


class Node:
    """What the node service hands the advertiser: its state and a make_offer over it."""

    def __init__(self, peer: Peer, private_key: bytes, clock: Callable[[], float] = time.time) -> None:
        self.peer = peer
        self.signer = LocalSigner.from_key(private_key)
        self.clock = clock
        self.free_slots = 4
        self.coordinate = VivaldiCoordinate.origin()
        self.built: list[int] = []

    def make_offer(self, seq: int) -> Offer:
        self.built.append(seq)
        now = int(self.clock())
        return Offer(
            provider=self.signer.address,
            peer_id=self.peer.peer_id_b58,
            addrs=tuple(self.peer.addrs()),
            region="eu-west",
            country="DE",
            hardware=OfferHardware(cpu_model="test cpu", cpu_cores=4, memory_bytes=8 << 30),
            measured=OfferMeasurement(
                benchmark_id="0x" + "00" * 32, device="cpu", gemm_flops=10**11, mem_bandwidth=10**10
            ),
            workloads=(OfferWorkload(name="matmul", unit_price_wei=10**12),),
            coordinates=OfferCoordinates.from_vivaldi(self.coordinate),
            capacity=OfferCapacity(max_concurrency=4, free_slots=self.free_slots, queue_depth=0),
            issued_at=now,
            expires_at=now + 60,
            seq=seq,
        )


async def listen(peer: Peer, nursery: trio.Nursery) -> tuple[OfferValidator, list[SignedOffer]]:
    """Validate and record every offer this peer's subscription delivers."""
    validator = OfferValidator(lambda address: True)
    subscription = await subscribe_offers(peer, validator)
    received: list[SignedOffer] = []

    async def record() -> None:
        while True:
            received.append(SignedOffer.from_wire((await subscription.get()).data))

    nursery.start_soon(record)
    return validator, received


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def watch(
    provider: Peer, watcher: Peer, nursery: trio.Nursery
) -> tuple[OfferValidator, list[SignedOffer]]:
    """The watcher validates and records offers; the provider joins the topic; the mesh forms."""
    validator, received = await listen(watcher, nursery)
    await provider.subscribe(OFFER_TOPIC)
    await trio.sleep(1.1)  # the mesh forms at the next gossipsub heartbeat
    return validator, received


@trio_test
async def test_advertiser_publishesAtStartAndOnHeartbeat() -> None:
    async with (
        open_peer(key(1)) as provider,
        open_peer(key(2), bootstrap=provider.addrs()) as watcher,
        trio.open_nursery() as nursery,
    ):
        validator, received = await watch(provider, watcher, nursery)
        node = Node(provider, key(1))
        published: list[SignedOffer] = []
        advertiser = Advertiser(
            provider,
            LocalSigner.from_key(key(1)),
            node.make_offer,
            heartbeat=0.3,
            min_interval=0.1,
            on_publish=published.append,
        )
        start = time.time()
        nursery.start_soon(advertiser.run)
        await wait_for(lambda: len(received) == 1)
        first = received[0]
        assert first.offer.provider == LocalSigner.from_key(key(1)).address
        assert abs(first.offer.seq - start * 1000) < 1000  # milliseconds since the epoch
        await wait_for(lambda: len(received) >= 4)  # heartbeats
        seqs = [offer.offer.seq for offer in received]
        assert seqs == sorted(set(seqs))
        assert validator.accepted == len(received)
        assert not validator.rejections
        assert advertiser.last == published[-1]
        assert received == published[: len(received)]
        nursery.cancel_scope.cancel()


@trio_test
async def test_advertiser_coalescesTriggersAndPublishesTheLatestState() -> None:
    async with (
        open_peer(key(1)) as provider,
        open_peer(key(2), bootstrap=provider.addrs()) as watcher,
        trio.open_nursery() as nursery,
    ):
        validator, received = await watch(provider, watcher, nursery)
        node = Node(provider, key(1))
        advertiser = Advertiser(
            provider, LocalSigner.from_key(key(1)), node.make_offer, heartbeat=60, min_interval=0.25
        )
        nursery.start_soon(advertiser.run)
        await wait_for(lambda: len(received) == 1)
        start = trio.current_time()
        for slots in (3, 2, 1, 0, 1, 2, 3, 4, 3, 2) * 5:  # 50 capacity changes in 0.5 s
            node.free_slots = slots
            advertiser.trigger()
            await trio.sleep(0.01)
        elapsed = trio.current_time() - start
        await trio.sleep(0.4)
        # one publication per min_interval at most, and the last one carries the final state
        assert 2 <= advertiser.published - 1 <= elapsed / 0.25 + 2
        await wait_for(lambda: len(received) == advertiser.published)
        assert received[-1].offer.capacity.free_slots == 2
        assert not validator.rejections
        nursery.cancel_scope.cancel()


@trio_test
async def test_advertiser_restart_isNotTakenForAReplay() -> None:
    now = [time.time()]
    async with (
        open_peer(key(1)) as provider,
        open_peer(key(2), bootstrap=provider.addrs()) as watcher,
        trio.open_nursery() as nursery,
    ):
        validator, received = await watch(provider, watcher, nursery)
        node = Node(provider, key(1), clock=lambda: now[0])
        signer = LocalSigner.from_key(key(1))
        first = Advertiser(provider, signer, node.make_offer, heartbeat=60, clock=lambda: now[0])
        await first.publish_now()
        await first.publish_now()  # same millisecond: seq still grows
        assert node.built[1] == node.built[0] + 1
        now[0] += 2.0  # the node restarts two seconds later, with no memory of its last seq
        second = Advertiser(provider, signer, node.make_offer, heartbeat=60, clock=lambda: now[0])
        await second.publish_now()
        await wait_for(lambda: len(received) == 3)
        assert not validator.rejections
        assert [r.offer.seq for r in received] == node.built
        nursery.cancel_scope.cancel()


@trio_test
async def test_advertiser_reportsOffersItCannotBuildOrSign() -> None:
    async with open_peer(key(1)) as provider:
        node = Node(provider, key(1))
        wrong_signer = Advertiser(provider, LocalSigner.from_key(key(2)), node.make_offer, heartbeat=60)
        with pytest.raises(AdvertiserError, match="cannot be signed by"):
            await wrong_signer.publish_now()
        wrong_seq = Advertiser(
            provider, LocalSigner.from_key(key(1)), lambda seq: node.make_offer(seq + 1), 60
        )
        with pytest.raises(AdvertiserError, match="seq"):
            await wrong_seq.publish_now()

        def invalid(seq: int) -> Offer:
            node.free_slots = 9  # more than max_concurrency
            return node.make_offer(seq)

        broken = Advertiser(provider, LocalSigner.from_key(key(1)), invalid, heartbeat=0.05, min_interval=0)
        with pytest.raises(AdvertiserError, match="free_slots"):
            await broken.publish_now()
        # run() keeps going: it logs and retries at every heartbeat
        with trio.move_on_after(0.3):
            await broken.run()
        assert broken.published == 0
        assert len(node.built) > 3


def test_advertiser_rejectsBadIntervals() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        Advertiser(None, None, lambda seq: None, heartbeat=1, min_interval=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_interval"):
        Advertiser(None, None, lambda seq: None, heartbeat=0)  # type: ignore[arg-type]


@trio_test
async def test_offersCarryCoordinatesThatPeersUseToMeasure() -> None:
    """Two nodes, each with advertiser, offer book and coordinate service, as the node wires them: the
    coordinate service finds remote coordinates in the book, and the advertiser publishes the result."""
    async with (
        open_peer(key(1)) as a,
        open_peer(key(2), bootstrap=a.addrs()) as b,
        trio.open_nursery() as nursery,
    ):
        services: list[CoordinateService] = []
        books: list[OfferBook] = []
        for peer, private_key in ((a, key(1)), (b, key(2))):
            book = OfferBook()
            nursery.start_soon(
                book.follow, await subscribe_offers(peer, OfferValidator(lambda address: True))
            )

            def advertised(peer_id: bytes, book: OfferBook = book) -> VivaldiCoordinate | None:
                held = book.by_peer_id(peer_id)
                return None if held is None else held.offer.coordinate()

            service = CoordinateService(peer, 0.05, advertised)
            node = Node(peer, private_key)

            def make_offer(seq: int, node: Node = node, service: CoordinateService = service) -> Offer:
                node.coordinate = service.current()
                return node.make_offer(seq)

            advertiser = Advertiser(peer, node.signer, make_offer, heartbeat=0.2, min_interval=0.1)
            nursery.start_soon(advertiser.run)
            nursery.start_soon(service.run)
            services.append(service)
            books.append(book)
        await wait_for(lambda: all(s.samples >= 5 for s in services), timeout=10)
        # b's book holds a's latest offer, whose coordinate is (to the microsecond) one a computed
        await wait_for(lambda: books[1].by_peer_id(a.peer_id) is not None)
        held = books[1].by_peer_id(a.peer_id)
        assert held is not None
        assert held.offer.coordinate() != VivaldiCoordinate.origin()
        nursery.cancel_scope.cancel()
