"""Signed offers: the model, the signature, the topic validator, the stake cache, the book, and gossip between
real libp2p hosts with a registry on py-evm deciding who is staked."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from _trio_support import key, trio_test
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.bindings.registry import ProviderRegistry
from proxima.sdk.chain import InProcessChain
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import LocalSigner
from proxima.sdk.errors import SignatureError
from proxima.sdk.offers import (
    MAX_OFFER_BYTES,
    Offer,
    OfferBook,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferRejected,
    OfferValidator,
    OfferWorkload,
    RejectReason,
    SignedOffer,
    StakeCache,
    StakeLookupError,
    offer_digest,
    sign_offer,
    subscribe_offers,
)
from proxima.sdk.p2p import OFFER_TOPIC, P2PError, Peer, open_peer
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate

NOW = 1_750_000_000


def make_offer(
    private_key: bytes, seq: int = 1, *, now: int = NOW, ttl: int = 60, port: int = 4001, **changes: Any
) -> Offer:
    peer_id = peer_id_to_base58(peer_id_from_key(private_key))
    fields: dict[str, Any] = {
        "provider": LocalSigner.from_key(private_key).address,
        "peer_id": peer_id,
        "addrs": (f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id}",),
        "region": "eu-west",
        "country": "DE",
        "hardware": OfferHardware(
            cpu_model="AMD EPYC 7763",
            cpu_cores=16,
            memory_bytes=64 << 30,
            gpu_model="NVIDIA H100 80GB HBM3",
            gpu_count=1,
            gpu_memory_bytes=80 << 30,
        ),
        "measured": OfferMeasurement(
            benchmark_id="0x" + "ab" * 32, device="cuda", gemm_flops=400 * 10**12, mem_bandwidth=3 * 10**12
        ),
        "workloads": (
            OfferWorkload(name="matmul", unit_price_wei=10**12),
            OfferWorkload(name="embed", models=("all-MiniLM-L6-v2",), unit_price_wei=5 * 10**11),
        ),
        "coordinates": OfferCoordinates.from_vivaldi(VivaldiCoordinate((0.012, -0.004, 0.001), 0.002, 0.3)),
        "capacity": OfferCapacity(max_concurrency=4, free_slots=3, queue_depth=0),
        "issued_at": now,
        "expires_at": now + ttl,
        "seq": seq,
    }
    fields.update(changes)
    return Offer(**fields)


def signed(private_key: bytes, seq: int = 1, **kwargs: Any) -> SignedOffer:
    return sign_offer(make_offer(private_key, seq, **kwargs), LocalSigner.from_key(private_key))


def wire_of(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --- the offer and its signature -------------------------------------------------------------------------


def test_signedOffer_roundTripsThroughCanonicalWire() -> None:
    offer = signed(key(1))
    data = offer.to_wire()
    assert data == wire_of(json.loads(data))  # sorted keys, no whitespace
    assert SignedOffer.from_wire(data) == offer
    assert offer.signer() == offer.offer.provider
    assert len(data) < 2000


def test_signature_isPersonalSignOfTheCanonicalHash() -> None:
    """A wallet's personal_sign over keccak(canonical JSON of the offer) gives a valid offer signature."""
    offer = make_offer(key(1))
    body = wire_of(offer.model_dump(mode="json"))
    wallet = Account.sign_message(encode_defunct(primitive=keccak(body)), key(1))
    assert wallet.message_hash == offer_digest(offer)
    by_wallet = SignedOffer(offer=offer, signature="0x" + bytes(wallet.signature).hex())
    assert by_wallet.signer() == offer.provider
    assert by_wallet.signature == sign_offer(offer, LocalSigner.from_key(key(1))).signature


def test_signOffer_refusesAnotherKey() -> None:
    with pytest.raises(SignatureError, match="cannot be signed by"):
        sign_offer(make_offer(key(1)), LocalSigner.from_key(key(2)))


def test_coordinates_roundTripToTheMicrosecond() -> None:
    coordinate = VivaldiCoordinate((0.0123456789, -0.2, 0.0), 0.0015, 0.25)
    wire = OfferCoordinates.from_vivaldi(coordinate)
    assert wire.vector_us == (12346, -200000, 0)
    assert wire.height_us == 1500
    assert wire.error_ppm == 250000
    back = wire.to_vivaldi()
    assert back.vector == pytest.approx(coordinate.vector, abs=1e-6)
    assert back.height == pytest.approx(coordinate.height, abs=1e-6)
    assert make_offer(key(1)).coordinate().vector == pytest.approx((0.012, -0.004, 0.001))


def test_offer_lookups() -> None:
    offer = make_offer(key(1))
    assert offer.peer_id_bytes == peer_id_from_key(key(1))
    matmul = offer.workload("matmul")
    assert matmul is not None
    assert matmul.unit_price_wei == 10**12
    assert offer.workload("transcode") is None


def _mutated(path: str, value: Any) -> bytes:
    """The wire bytes of a valid signed offer with one field replaced (``a.b.0.c`` paths)."""
    obj = json.loads(signed(key(1)).to_wire())
    target = obj
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is _DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return wire_of(obj)


_DELETE = object()
OTHER_PEER = peer_id_to_base58(peer_id_from_key(key(2)))


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("offer.provider", "0x" + "ab" * 20, "checksummed"),
        ("offer.peer_id", OTHER_PEER, "another address"),
        ("offer.peer_id", "0OIl", "String should match pattern"),
        ("offer.addrs", [f"/ip4/127.0.0.1/tcp/4001/p2p/{OTHER_PEER}"], "names another peer"),
        ("offer.addrs", [], "at least 1 item"),
        ("offer.addrs", ["/ip4/127.0.0.1/tcp/4001"], "must end with /p2p/"),
        ("offer.country", "de", "String should match pattern"),
        ("offer.region", "EU West", "String should match pattern"),
        ("offer.version", 2, "Input should be 1"),
        ("offer.seq", 1.0, "valid integer"),
        ("offer.seq", "1", "valid integer"),
        ("offer.seq", -1, "greater than or equal to 0"),
        ("offer.expires_at", NOW, "must be after issued_at"),
        ("offer.capacity.free_slots", 5, "exceeds max_concurrency"),
        ("offer.hardware.gpu_count", 0, "gpu_model, gpu_count and gpu_memory_bytes"),
        ("offer.measured.benchmark_id", "0x" + "AB" * 32, "String should match pattern"),
        ("offer.measured.device", "tpu", "'cpu' or 'cuda'"),
        ("offer.workloads.0.unit_price_wei", -1, "greater than or equal to 0"),
        ("offer.workloads.1.name", "matmul", "workload names must be unique"),
        ("offer.workloads.1.models", ["a", "a"], "unique"),
        ("offer.workloads", [], "at least 1 item"),
        ("offer.coordinates.error_ppm", 0, "greater than or equal to 1000"),
        ("offer.coordinates.vector_us", [1, 2, 3, 4], "at most 3 items"),
        ("offer.coordinates.height_us", 1.5, "valid integer"),
        ("offer.extra", 1, "Extra inputs are not permitted"),
        ("offer.hardware.cpu_model", "\u00e9p\u00e9e", "String should match pattern"),
        ("signature", "0x1234", "String should match pattern"),
        ("signature", _DELETE, "Field required"),
        ("offer.issued_at", _DELETE, "Field required"),
    ],
)
def test_fromWire_rejectsMalformedOffersNamingTheField(path: str, value: Any, problem: str) -> None:
    with pytest.raises(OfferRejected) as info:
        SignedOffer.from_wire(_mutated(path, value))
    assert info.value.reason is RejectReason.MALFORMED
    assert problem in info.value.detail


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"offer": 1}',
        # the same valid offer, encoded another way
        json.dumps(json.loads(signed(key(1)).to_wire())).encode(),
        json.dumps(
            dict(reversed(json.loads(signed(key(1)).to_wire()).items())), separators=(",", ":")
        ).encode(),
        signed(key(1)).to_wire().replace(b'"country":"DE"', b'"country":"\\u0044E"'),
    ],
)
def test_fromWire_rejectsNonCanonicalOrNonJson(data: bytes) -> None:
    with pytest.raises(OfferRejected) as info:
        SignedOffer.from_wire(data)
    assert info.value.reason is RejectReason.MALFORMED


def test_fromWire_rejectsOversizedBeforeParsing() -> None:
    with pytest.raises(OfferRejected) as info:
        SignedOffer.from_wire(b"{" + b" " * MAX_OFFER_BYTES + b"}")
    assert info.value.reason is RejectReason.OVERSIZED


# --- the validator ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def validator_for(staked: set[Address], clock: Clock | None = None, **kwargs: Any) -> OfferValidator:
    return OfferValidator(lambda address: address in staked, clock=clock or Clock(), **kwargs)


def provider(i: int) -> Address:
    return LocalSigner.from_key(key(i)).address


def rejection(validator: OfferValidator, offer: SignedOffer | bytes, from_key: int = 1) -> RejectReason:
    data = offer if isinstance(offer, bytes) else offer.to_wire()
    with pytest.raises(OfferRejected) as info:
        validator.check(data, peer_id_from_key(key(from_key)))
    return info.value.reason


def test_validator_acceptsAGoodOfferAndRemembersItsSeq() -> None:
    validator = validator_for({provider(1)})
    offer = signed(key(1), seq=7)
    assert validator.check(offer.to_wire(), peer_id_from_key(key(1))) == offer
    assert validator.last_seq(provider(1)) == 7
    assert validator.accepted == 1


def test_validator_badSignature() -> None:
    validator = validator_for({provider(1), provider(2)})
    offer = make_offer(key(1))
    by_other = SignedOffer(
        offer=offer, signature=sign_offer(make_offer(key(2)), LocalSigner.from_key(key(2))).signature
    )
    assert rejection(validator, by_other) is RejectReason.BAD_SIGNATURE
    # a signed offer changed afterwards: the price is no longer what the provider signed
    good = json.loads(signed(key(1)).to_wire())
    good["offer"]["workloads"][0]["unit_price_wei"] = 1
    assert rejection(validator, wire_of(good)) is RejectReason.BAD_SIGNATURE
    # not a signature at all (s above the curve order's half)
    good["signature"] = "0x" + "ff" * 65
    assert rejection(validator, wire_of(good)) is RejectReason.BAD_SIGNATURE


def test_validator_wrongPeer_offerRepublishedByAnotherKey() -> None:
    validator = validator_for({provider(1), provider(2)})
    assert rejection(validator, signed(key(1)), from_key=2) is RejectReason.WRONG_PEER


def test_validator_timeRules() -> None:
    clock = Clock()
    validator = validator_for({provider(1)}, clock, max_ttl=300, max_skew=30)
    assert rejection(validator, signed(key(1), now=NOW - 120, ttl=60)) is RejectReason.EXPIRED
    assert rejection(validator, signed(key(1), now=NOW - 60, ttl=60)) is RejectReason.EXPIRED  # at expiry
    assert rejection(validator, signed(key(1), now=NOW + 31, ttl=60)) is RejectReason.TOO_FAR_IN_FUTURE
    assert rejection(validator, signed(key(1), ttl=301)) is RejectReason.TOO_FAR_IN_FUTURE
    # within the tolerated skew and validity: accepted
    validator.check(signed(key(1), seq=1, now=NOW + 30, ttl=300).to_wire(), peer_id_from_key(key(1)))


def test_validator_replayedSeq() -> None:
    validator = validator_for({provider(1)})
    first = signed(key(1), seq=10)
    validator.check(first.to_wire(), peer_id_from_key(key(1)))
    assert rejection(validator, first) is RejectReason.REPLAYED
    assert rejection(validator, signed(key(1), seq=9)) is RejectReason.REPLAYED
    validator.check(signed(key(1), seq=11).to_wire(), peer_id_from_key(key(1)))


def test_validator_unstakedAndUnknownStake() -> None:
    validator = validator_for(set())
    assert rejection(validator, signed(key(1))) is RejectReason.UNSTAKED

    def broken(address: Address) -> bool:
        raise ConnectionError("rpc down")

    validator = OfferValidator(broken, clock=Clock())
    with pytest.raises(OfferRejected, match="rpc down") as info:
        validator.check(signed(key(1)).to_wire(), peer_id_from_key(key(1)))
    assert info.value.reason is RejectReason.STAKE_UNKNOWN


def test_validator_rejectedOffersDoNotMoveTheReplayState() -> None:
    staked = {provider(1)}
    clock = Clock()
    validator = validator_for(staked, clock)
    validator.check(signed(key(1), seq=10).to_wire(), peer_id_from_key(key(1)))
    for bad in (
        signed(key(1), seq=20, now=NOW - 100),  # expired
        signed(key(1), seq=21, ttl=10_000),  # too long
        signed(key(1), seq=22),  # from another peer, below
    ):
        assert (
            rejection(validator, bad, from_key=2 if bad.offer.seq == 22 else 1) is not RejectReason.REPLAYED
        )
    staked.clear()
    assert rejection(validator, signed(key(1), seq=23)) is RejectReason.UNSTAKED
    staked.add(provider(1))
    assert validator.last_seq(provider(1)) == 10
    validator.check(signed(key(1), seq=15).to_wire(), peer_id_from_key(key(1)))
    assert validator.last_seq(provider(1)) == 15


def test_validator_forgetsProvidersLongGone() -> None:
    clock = Clock()
    validator = validator_for({provider(1), provider(2)}, clock, max_ttl=300, max_skew=30)
    validator.check(signed(key(1), seq=5, ttl=60).to_wire(), peer_id_from_key(key(1)))
    clock.now = NOW + 60 + 300 + 30 + 61  # past expiry + max_ttl + skew, and a prune is due
    validator.check(signed(key(2), seq=1, now=int(clock.now)).to_wire(), peer_id_from_key(key(2)))
    assert validator.last_seq(provider(1)) is None
    assert validator.last_seq(provider(2)) == 1


def test_validator_asGossipsubValidator_countsAndReports() -> None:
    reasons: list[RejectReason] = []
    validator = validator_for({provider(1)}, on_reject=reasons.append)
    forwarder = ID(peer_id_from_key(key(3)))

    def message(data: bytes, sender: int | bytes) -> rpc_pb2.Message:
        from_id = sender if isinstance(sender, bytes) else peer_id_from_key(key(sender))
        return rpc_pb2.Message(data=data, from_id=from_id, topicIDs=[OFFER_TOPIC])

    assert validator(forwarder, message(signed(key(1), seq=1).to_wire(), 1)) is True
    assert validator(forwarder, message(signed(key(1), seq=1).to_wire(), 1)) is False
    assert validator(forwarder, message(b"junk", 1)) is False
    assert validator(forwarder, message(signed(key(1), seq=2).to_wire(), 2)) is False
    assert validator(forwarder, message(signed(key(1), seq=3).to_wire(), b"\x00not a peer id")) is False
    assert reasons == [
        RejectReason.REPLAYED,
        RejectReason.MALFORMED,
        RejectReason.WRONG_PEER,
        RejectReason.WRONG_PEER,
    ]
    assert validator.rejections == Counter(reasons)


# --- the stake cache -------------------------------------------------------------------------------------


def test_stakeCache_asksOncePerTtl() -> None:
    calls: list[Address] = []
    clock = Clock(0)

    def lookup(address: Address) -> bool:
        calls.append(address)
        return address == provider(1)

    cache = StakeCache(lookup, ttl=60, clock=clock)
    assert cache(provider(1)) is True
    assert cache(provider(2)) is False
    clock.now = 59
    assert cache(provider(1)) is True
    assert cache(provider(2)) is False
    assert len(calls) == 2
    clock.now = 61
    assert cache(provider(1)) is True
    assert len(calls) == 3
    cache.invalidate(provider(1))
    assert cache(provider(1)) is True
    assert len(calls) == 4


def test_stakeCache_usesTheLastAnswerWhenTheChainIsDown() -> None:
    clock = Clock(0)
    up = True

    def lookup(address: Address) -> bool:
        if not up:
            raise TimeoutError("no answer from rpc")
        return True

    cache = StakeCache(lookup, ttl=10, clock=clock)
    assert cache(provider(1)) is True
    up = False
    clock.now = 1000
    assert cache(provider(1)) is True  # stale but known
    with pytest.raises(StakeLookupError, match="no answer from rpc"):
        cache(provider(2))


def test_stakeCache_forgetsLeastRecentlyUsed() -> None:
    calls: list[Address] = []
    cache = StakeCache(lambda a: calls.append(a) is None, ttl=60, clock=Clock(0), max_entries=2)
    cache(provider(1))
    cache(provider(2))
    cache(provider(1))
    cache(provider(3))  # evicts provider 2
    cache(provider(1))
    cache(provider(2))
    assert calls == [provider(1), provider(2), provider(3), provider(2)]


@dataclass
class Staking:
    """A deployed registry on py-evm; accounts 1 and 2 are staked providers, 9 is not."""

    accounts: list[LocalAccount]
    registry: ProviderRegistry

    def key(self, i: int) -> bytes:
        return bytes(self.accounts[i].key)


@pytest.fixture(scope="module")
def staking() -> Iterator[Staking]:
    with InProcessChain() as chain:
        contracts = ProximaContracts.from_deployment(
            chain, deploy_all(chain, chain.accounts[0], DeployParameters())
        )
        stake = contracts.registry.min_provider_stake()
        for account in chain.accounts[1:3]:
            contracts.registry.register(account, peer_id_from_key(bytes(account.key)), b"\x11" * 32, stake)
        yield Staking(chain.accounts, contracts.registry)


def test_stakeCache_overTheRealRegistry(staking: Staking) -> None:
    cache = StakeCache(staking.registry.is_active_provider)
    assert cache(staking.accounts[1].address) is True
    assert cache(staking.accounts[9].address) is False
    validator = OfferValidator(cache)
    outsider = staking.key(9)
    with pytest.raises(OfferRejected) as info:
        validator.check(signed(outsider, now=int(time.time())).to_wire(), peer_id_from_key(outsider))
    assert info.value.reason is RejectReason.UNSTAKED


# --- the book --------------------------------------------------------------------------------------------


def test_offerBook_keepsTheNewestOfferPerProvider() -> None:
    book = OfferBook()
    assert book.add(signed(key(1), seq=5))
    assert not book.add(signed(key(1), seq=4))
    assert not book.add(signed(key(1), seq=5))
    assert book.add(signed(key(1), seq=6, ttl=10))
    assert book.add(signed(key(2), seq=1, ttl=100))
    assert len(book) == 2
    held = book.get(provider(1))
    assert held is not None
    assert held.offer.seq == 6
    assert book.by_peer_id(peer_id_from_key(key(2))) == book.get(provider(2))
    assert book.by_peer_id(b"\x00" * 39) is None
    assert [s.offer.provider for s in book.offers(NOW + 5)] == sorted([provider(1), provider(2)])
    assert [s.offer.provider for s in book.offers(NOW + 10)] == [provider(2)]
    assert book.prune(NOW + 10) == 1
    assert book.get(provider(1)) is None


def test_offerBook_turnsAwayNewProvidersWhenFull() -> None:
    book = OfferBook(max_offers=1)
    assert book.add(signed(key(1), ttl=10), now=NOW)
    assert not book.add(signed(key(2)), now=NOW)
    assert book.add(signed(key(1), seq=2, ttl=10), now=NOW)  # updates still fit
    assert book.add(signed(key(2)), now=NOW + 10)  # the expired one made room


# --- gossip between real hosts ---------------------------------------------------------------------------


async def collect(subscription: Any, into: list[bytes]) -> None:
    while True:
        into.append((await subscription.get()).data)


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


@trio_test
async def test_gossip_offerReachesEveryPeerThroughTheValidators(staking: Staking) -> None:
    """Provider - hub - two receivers: every book gets the offer, relayed by the hub after its validator."""
    is_staked = StakeCache(staking.registry.is_active_provider)
    async with (
        open_peer(staking.key(1)) as provider_peer,
        open_peer(key(40)) as hub,
        open_peer(key(41), bootstrap=hub.addrs()) as r1,
        open_peer(key(42), bootstrap=hub.addrs()) as r2,
        trio.open_nursery() as nursery,
    ):
        await provider_peer.connect(hub.addrs()[0])
        books: list[OfferBook] = []
        validators: list[OfferValidator] = []
        for peer in (provider_peer, hub, r1, r2):
            validator = OfferValidator(is_staked)
            subscription = await subscribe_offers(peer, validator)
            book = OfferBook()
            nursery.start_soon(functools.partial(book.follow, subscription))
            books.append(book)
            validators.append(validator)
        await trio.sleep(1.2)  # the mesh forms at the next gossipsub heartbeat
        offer = sign_offer(
            make_offer(staking.key(1), seq=1, now=int(time.time()), addrs=tuple(provider_peer.addrs())),
            LocalSigner(staking.accounts[1]),
        )
        await provider_peer.publish(OFFER_TOPIC, offer.to_wire())
        await wait_for(lambda: all(book.get(offer.offer.provider) == offer for book in books))
        assert not r1.is_connected(provider_peer.peer_id)  # r1 and r2 heard it through the hub
        assert all(v.accepted == 1 and not v.rejections for v in validators)
        nursery.cancel_scope.cancel()


@trio_test
async def test_gossip_badOffersAreDroppedBeforeAnySubscriberSeesThem(staking: Staking) -> None:
    """A staked but misbehaving peer and an unstaked one publish raw messages (no validator on their side)
    to a hub that relays to a receiver. The hub's validator drops each bad message, so neither the hub's nor
    the receiver's subscribers see it, while the good offers still arrive."""
    is_staked = StakeCache(staking.registry.is_active_provider)
    rogue_key, outsider_key, honest_key = staking.key(2), staking.key(9), staking.key(1)
    async with (
        open_peer(key(40)) as hub,
        open_peer(key(41), bootstrap=hub.addrs()) as receiver,
        open_peer(rogue_key, bootstrap=hub.addrs()) as rogue,
        open_peer(outsider_key, bootstrap=hub.addrs()) as outsider,
        open_peer(honest_key, bootstrap=hub.addrs()) as honest,
        trio.open_nursery() as nursery,
    ):
        hub_validator, receiver_validator = OfferValidator(is_staked), OfferValidator(is_staked)
        seen: dict[str, list[bytes]] = {"hub": [], "receiver": []}
        for name, peer, validator in (
            ("hub", hub, hub_validator),
            ("receiver", receiver, receiver_validator),
        ):
            nursery.start_soon(collect, await subscribe_offers(peer, validator), seen[name])
        for peer in (rogue, outsider, honest):
            await peer.subscribe(OFFER_TOPIC)
        await trio.sleep(1.2)

        now = int(time.time())

        def rogue_offer(seq: int, **kwargs: Any) -> SignedOffer:
            fields = {"now": now, "addrs": tuple(rogue.addrs()), **kwargs}
            return sign_offer(make_offer(rogue_key, seq, **fields), LocalSigner.from_key(rogue_key))

        honest_offer = sign_offer(
            make_offer(honest_key, 1, now=now, addrs=tuple(honest.addrs())), LocalSigner.from_key(honest_key)
        )
        rogue_good = rogue_offer(1000)
        not_canonical = json.dumps(json.loads(rogue_offer(1001).to_wire()), indent=1).encode()
        tampered = json.loads(rogue_offer(1002).to_wire())
        tampered["offer"]["capacity"]["free_slots"] = 4
        bad: list[tuple[Peer, bytes, RejectReason]] = [
            (rogue, b"x" * (MAX_OFFER_BYTES + 1), RejectReason.OVERSIZED),
            (rogue, b"not an offer", RejectReason.MALFORMED),
            (rogue, not_canonical, RejectReason.MALFORMED),
            (rogue, wire_of(tampered), RejectReason.BAD_SIGNATURE),
            (rogue, honest_offer.to_wire(), RejectReason.WRONG_PEER),
            (rogue, rogue_offer(1003, now=now - 600).to_wire(), RejectReason.EXPIRED),
            (rogue, rogue_offer(1004, now=now + 3600).to_wire(), RejectReason.TOO_FAR_IN_FUTURE),
            (rogue, rogue_offer(1005, ttl=86_400).to_wire(), RejectReason.TOO_FAR_IN_FUTURE),
            (rogue, rogue_good.to_wire(), RejectReason.REPLAYED),  # the same offer again
            (rogue, rogue_offer(999).to_wire(), RejectReason.REPLAYED),  # an older seq
            (
                outsider,
                signed(outsider_key, now=now, addrs=tuple(outsider.addrs())).to_wire(),
                RejectReason.UNSTAKED,
            ),
        ]
        await rogue.publish(OFFER_TOPIC, rogue_good.to_wire())
        await wait_for(lambda: rogue_good.to_wire() in seen["receiver"])
        for peer, data, _ in bad:
            await peer.publish(OFFER_TOPIC, data)
            await trio.sleep(0.05)  # keep the order: the replays must come after the good offer
        await honest.publish(OFFER_TOPIC, honest_offer.to_wire())
        await wait_for(lambda: honest_offer.to_wire() in seen["receiver"])
        await trio.sleep(0.3)  # anything still in flight would arrive by now

        expected = [rogue_good.to_wire(), honest_offer.to_wire()]
        assert seen["hub"] == expected
        assert seen["receiver"] == expected
        assert hub_validator.rejections == Counter(reason for _, _, reason in bad)
        assert not receiver_validator.rejections  # nothing bad was relayed to it
        assert hub_validator.last_seq(rogue_good.offer.provider) == 1000
        nursery.cancel_scope.cancel()


@trio_test
async def test_subscribeOffers_needsPubsub() -> None:
    async with open_peer(key(1), pubsub=False) as peer:
        with pytest.raises(P2PError, match="without pubsub"):
            await subscribe_offers(peer, OfferValidator(lambda a: True))
