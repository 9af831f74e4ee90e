"""MarketNetwork on real libp2p hosts: real provider JobServers and Advertisers (each on its own trio thread),
contracts on anvil (every thread reads the chain: the market's stake checks, the providers' voucher checks),
job calls made from asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from _market_support import (
    UNIT_PRICE,
    Market,
    Payer,
    ProviderThread,
    deploy_market,
    fund_clients,
    seeded_matmul,
)
from eth_account.signers.local import LocalAccount

from proxima.marketplace.errors import MarketError
from proxima.marketplace.network import (
    InvalidNetworkConfigError,
    MarketNetwork,
    NetworkError,
    NetworkNotRunningError,
    NetworkStartError,
    NetworkStoppedError,
)
from proxima.sdk.chain import AnvilProcess
from proxima.sdk.jobclient import JobRejectedError, JobTimeoutError, JobTransportError
from proxima.sdk.jobs import ErrorCode, JobResult, Quote, QuoteRequest
from proxima.sdk.offers import Offer
from proxima.sdk.vivaldi import VivaldiCoordinate
from proxima.sdk.workloads import MatmulOutput

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def market(anvil_process: AnvilProcess) -> Iterator[Market]:
    """A fresh deployment on the session's anvil, removed again after this module."""
    with anvil_process.connect() as chain:
        before = chain.snapshot()
        try:
            yield deploy_market(chain)
        finally:
            chain.revert(before)


@pytest.fixture(scope="module")
def payer(market: Market) -> Payer:
    """One voucher ledger for the module: each (client, provider) voucher counts one job more."""
    return Payer(market)


@pytest.fixture(scope="module")
def many_clients(market: Market) -> list[LocalAccount]:
    """Clients with deposits, so that concurrent jobs need no ordering: a provider accepts each client's
    vouchers strictly in sequence."""
    return fund_clients(market, 8)


def new_network(m: Market, **kwargs: object) -> MarketNetwork:
    options: dict[str, object] = {
        "is_staked": m.c.registry.is_active_provider,
        "domains": m.domains,
        "ping_interval": 0.3,
    }
    options.update(kwargs)
    return MarketNetwork(secrets.token_bytes(32), **options)  # type: ignore[arg-type]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def net(market: Market) -> Iterator[MarketNetwork]:
    network = new_network(market)
    network.start()
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="module")
def providers(
    market: Market, net: MarketNetwork, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ProviderThread]]:
    """Providers 1 and 2 (staked) serve matmul and advertise; the outsider (no stake) only advertises."""
    folder = tmp_path_factory.mktemp("providers")
    coordinates = [
        VivaldiCoordinate((0.01, 0.0, 0.0), 0.001, 0.2),
        VivaldiCoordinate((0.0, 0.02, 0.0), 0.002, 0.2),
    ]
    with contextlib.ExitStack() as stack:
        staked = [
            stack.enter_context(
                ProviderThread(
                    market, account, folder / f"p{i}.db", bootstrap=net.addrs, coordinate=coordinate
                )
            )
            for i, (account, coordinate) in enumerate(zip(market.providers[:2], coordinates, strict=True))
        ]
        stack.enter_context(
            ProviderThread(market, market.outsider, folder / "x.db", bootstrap=net.addrs, serve_jobs=False)
        )
        wait_for(lambda: all(net.offer_of(p.account.address) for p in staked), what="the staked offers")
        yield staked


def offer_of(net: MarketNetwork, provider: ProviderThread) -> Offer:
    signed = net.offer_of(provider.account.address)
    assert signed is not None
    return signed.offer


# --- the offer book --------------------------------------------------------------------------------------


def test_book_holdsStakedOffers_andDropsUnstakedOnes(
    market: Market, net: MarketNetwork, providers: list[ProviderThread]
) -> None:
    wait_for(lambda: net.status().offers_rejected.get("unstaked", 0) > 0, what="an unstaked offer rejected")
    offered = [s.offer.provider for s in net.offers()]
    assert offered == sorted(p.account.address for p in providers)
    assert net.offer_of(market.outsider.address) is None
    first = net.offers()[0].offer
    assert first.addrs
    assert first.peer_id in {p.peer_id_b58 for p in providers}
    assert net.offers(now=first.expires_at) == []  # expired by then


def test_bookVersion_growsWithEveryNewerOffer(net: MarketNetwork, providers: list[ProviderThread]) -> None:
    version = net.book_version
    seq = offer_of(net, providers[0]).seq
    wait_for(lambda: offer_of(net, providers[0]).seq > seq, what="a heartbeat offer")
    assert net.book_version > version
    status = net.status()
    assert status.running
    assert status.offers == 2
    assert status.offers_accepted >= 3


def test_probes_measureRtts_andPlaceThisHost(net: MarketNetwork, providers: list[ProviderThread]) -> None:
    addresses = [p.account.address for p in providers]
    wait_for(lambda: all(net.rtts.get(a) is not None for a in addresses), what="RTTs to both providers")
    for address in addresses:
        rtt = net.rtts.get(address)
        assert rtt is not None
        assert 0 < rtt < 0.5  # loopback
    assert sorted(net.rtts.snapshot()) == sorted(addresses)
    # Every sample moves this host's coordinate away from where it started.
    assert net.coordinate().vector != VivaldiCoordinate.origin().vector
    assert net.status().rtt_samples >= 2


# --- job exchanges from asyncio ----------------------------------------------------------------------------


def test_runJob_returnsAVerifiedMatmul(
    market: Market, payer: Payer, net: MarketNetwork, providers: list[ProviderThread]
) -> None:
    offer = offer_of(net, providers[0])
    request = payer.request(offer.provider, seeded_matmul(16, seed=7))

    result = asyncio.run(net.run_job(offer, request, timeout=30))

    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    np.testing.assert_allclose(MatmulOutput.model_validate(result.output).c.to_array(), a @ b)
    assert result.receipt.provider == offer.provider
    assert result.receipt.client == request.client


def test_requestQuote_returnsSignedTerms(
    market: Market, payer: Payer, net: MarketNetwork, providers: list[ProviderThread]
) -> None:
    offer = offer_of(net, providers[1])
    client = market.clients[1]
    quote = asyncio.run(
        net.request_quote(
            offer, QuoteRequest(client=client.address, workload="matmul", input=seeded_matmul()), timeout=10
        )
    )
    assert quote.terms.provider == offer.provider
    assert quote.terms.client == client.address
    assert quote.terms.price == quote.units * UNIT_PRICE
    assert quote.signer(market.domains.escrow_domain) == offer.provider


def test_manyConcurrentCalls_fromOneEventLoop(
    market: Market,
    payer: Payer,
    many_clients: list[LocalAccount],
    net: MarketNetwork,
    providers: list[ProviderThread],
) -> None:
    offers = [offer_of(net, p) for p in providers]
    jobs = [
        (offer, payer.request(offer.provider, seeded_matmul(8, seed=i), client=client))
        for i, (client, offer) in enumerate((c, o) for c in many_clients for o in offers)
    ]
    quotes = [
        (
            offers[i % 2],
            QuoteRequest(client=market.clients[1].address, workload="matmul", input=seeded_matmul(seed=i)),
        )
        for i in range(8)
    ]
    threads_before = set(threading.enumerate())

    async def main() -> tuple[list[JobResult], list[Quote], int]:
        in_flight = 0

        async def watch() -> None:
            nonlocal in_flight
            for _ in range(100):
                in_flight = max(in_flight, net.status().exchanges_in_flight)
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        results = await asyncio.gather(*(net.run_job(o, r, timeout=30) for o, r in jobs))
        terms = await asyncio.gather(*(net.request_quote(o, q, timeout=30) for o, q in quotes))
        await watcher
        return results, terms, in_flight

    results, terms, in_flight = asyncio.run(main())
    assert len(results) == 16
    for i, result in enumerate(results):
        rng = np.random.default_rng(i)
        a, b = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
        np.testing.assert_allclose(MatmulOutput.model_validate(result.output).c.to_array(), a @ b)
        assert result.receipt.provider == jobs[i][0].provider
    assert [q.terms.provider for q in terms] == [o.provider for o, _ in quotes]
    assert in_flight > 1  # they ran at once
    # No thread per call: the only new threads are trio's cached workers, which the providers' job servers use
    # for their chain reads and matmuls.
    new = {t.name for t in set(threading.enumerate()) - threads_before}
    assert all(name.startswith("Trio thread") for name in new), new
    assert net.status().exchanges_in_flight == 0


def test_refusal_isJobRejectedError(
    market: Market, payer: Payer, net: MarketNetwork, providers: list[ProviderThread]
) -> None:
    """The outsider never deposited for vouchers: the provider refuses the request as unpaid."""
    offer = offer_of(net, providers[0])
    request = payer.request(offer.provider, seeded_matmul(), client=market.outsider)
    with pytest.raises(JobRejectedError) as info:
        asyncio.run(net.run_job(offer, request, timeout=30))
    assert info.value.code is ErrorCode.UNPAID


def test_requestForAnotherProvider_isRefusedBeforeSending(
    market: Market, payer: Payer, net: MarketNetwork, providers: list[ProviderThread]
) -> None:
    offer = offer_of(net, providers[0])
    request = payer.request(providers[1].account.address, seeded_matmul())
    with pytest.raises(ValueError, match="is for provider"):
        asyncio.run(net.run_job(offer, request, timeout=30))


def test_deadProvider_isTransportError(
    market: Market, payer: Payer, net: MarketNetwork, tmp_path: Path
) -> None:
    with ProviderThread(market, market.providers[2], tmp_path / "p3.db") as provider:
        offer = provider.offer()
    request = payer.request(offer.provider, seeded_matmul())
    started = time.monotonic()
    with pytest.raises(JobTransportError, match="cannot connect"):
        asyncio.run(net.run_job(offer, request, timeout=5))
    assert time.monotonic() - started < 5  # refused at once, not timed out


def test_stalledProvider_timesOut(market: Market, payer: Payer, net: MarketNetwork, tmp_path: Path) -> None:
    with ProviderThread(market, market.providers[2], tmp_path / "p3.db", hang=True) as provider:
        offer = provider.offer()
        request = payer.request(offer.provider, seeded_matmul())
        with pytest.raises(JobTimeoutError):
            asyncio.run(net.run_job(offer, request, timeout=0.5))
        assert net.status().exchanges_in_flight == 0


def test_cancelledCaller_cancelsTheExchangeInTrio(
    market: Market, payer: Payer, net: MarketNetwork, tmp_path: Path
) -> None:
    with ProviderThread(market, market.providers[2], tmp_path / "p3.db", hang=True) as provider:
        offer = provider.offer()
        request = payer.request(offer.provider, seeded_matmul())

        async def main() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(net.run_job(offer, request, timeout=60), 0.5)

        asyncio.run(main())
        wait_for(
            lambda: net.status().exchanges_in_flight == 0, timeout=5, what="the exchange to be cancelled"
        )


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), True])
def test_badTimeout_isRefused(
    market: Market, payer: Payer, net: MarketNetwork, providers: list[ProviderThread], timeout: float
) -> None:
    offer = offer_of(net, providers[0])
    request = payer.request(offer.provider, seeded_matmul())
    with pytest.raises(InvalidNetworkConfigError, match="timeout"):
        asyncio.run(net.run_job(offer, request, timeout=timeout))


# --- life cycle --------------------------------------------------------------------------------------------


def open_fds() -> set[tuple[int, str]]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
    return fds


def test_stop_failsCallsInFlight_isIdempotent_andLeavesNoSocketOrThread(
    market: Market, payer: Payer, tmp_path: Path
) -> None:
    with ProviderThread(market, market.providers[2], tmp_path / "p3.db", hang=True) as provider:
        offer = provider.offer()
        request = payer.request(offer.provider, seeded_matmul())
        fds, threads = open_fds(), set(threading.enumerate())
        network = new_network(market)
        network.start()
        assert network.running
        assert network.addrs

        async def main() -> None:
            call = asyncio.ensure_future(network.run_job(offer, request, timeout=60))
            while network.status().exchanges_in_flight == 0:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(network.stop)
            with pytest.raises(NetworkStoppedError) as info:
                await call
            assert isinstance(info.value, JobTransportError)  # the dispatcher sees a transport failure

        asyncio.run(main())
        network.stop()
        assert not network.running
        assert network.addrs == ()
        with pytest.raises(NetworkNotRunningError):
            asyncio.run(network.run_job(offer, request, timeout=5))
        with pytest.raises(NetworkError, match="already started"):
            network.start()
        assert set(threading.enumerate()) - threads == set()
        wait_for(lambda: open_fds() - fds == set(), timeout=5, what="sockets to close")


def test_beforeStart_callsAreRefused_andStopIsANoOp(market: Market) -> None:
    network = new_network(market)
    assert not network.running
    assert network.addrs == ()
    assert network.peer_id_b58.startswith("16Uiu2")
    assert network.offers() == []
    network.stop()
    with pytest.raises(NetworkError, match="already started"):
        network.start()


def test_start_badListenAddress_raisesStartError(market: Market) -> None:
    threads = set(threading.enumerate())
    network = new_network(market, listen=["/ip4/127.0.0.1/udp/4001"])
    with pytest.raises(NetworkStartError, match="listen addresses must be") as info:
        network.start()
    assert isinstance(info.value, MarketError)
    assert not network.running
    assert set(threading.enumerate()) - threads == set()


def test_start_portTaken_raisesStartError(market: Market) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        network = new_network(market, listen=[f"/ip4/127.0.0.1/tcp/{port}"])
        with pytest.raises(NetworkStartError, match="cannot listen"):
            network.start()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bootstrap": ["/ip4/127.0.0.1/tcp/4001"]}, "bootstrap"),
        ({"bootstrap": "/ip4/127.0.0.1/tcp/4001/p2p/x"}, "bootstrap"),
        ({"listen": []}, "listen"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"dial_timeout": float("nan")}, "dial_timeout"),
        ({"pings_per_round": 0}, "pings_per_round"),
        ({"stake_ttl": -1}, "stake_ttl"),
    ],
)
def test_badSettings_areNamed(market: Market, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidNetworkConfigError, match=field):
        new_network(market, **kwargs)


@pytest.mark.parametrize("key", [b"\x00" * 32, b"\x01" * 31, "00" * 32, b"\xff" * 32])
def test_badKey_isRefused_withoutShowingIt(market: Market, key: object) -> None:
    with pytest.raises(InvalidNetworkConfigError, match="private_key") as info:
        MarketNetwork(key, is_staked=lambda a: True, domains=market.domains)  # type: ignore[arg-type]
    assert str(key) not in str(info.value)
