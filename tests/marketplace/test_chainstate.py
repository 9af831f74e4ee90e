"""ChainState: provider figures read from real contracts on py-evm, cached, refreshed, with observations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from _market_support import (
    ETH,
    PROVIDER_STAKE,
    Market,
    attest,
    complete_jobs,
    deploy_market,
    lose_dispute,
    miss_deadline,
    verifier_report,
)

from proxima.marketplace.chainstate import (
    ChainReadError,
    ChainState,
    ChainStateError,
    UnknownProviderError,
)
from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching.reliability import ProviderStats, reliability
from proxima.sdk.bindings import ProviderRegistry, RegistryAccount
from proxima.sdk.chain import ChainConnectionError, InProcessChain, SnapshotId


@pytest.fixture(scope="module")
def _market_module() -> Iterator[tuple[Market, list[SnapshotId]]]:
    with InProcessChain() as chain:
        market = deploy_market(chain)
        yield market, [chain.snapshot()]


@pytest.fixture
def market(_market_module: tuple[Market, list[SnapshotId]]) -> Iterator[Market]:
    market, snapshot = _market_module
    try:
        yield market
    finally:
        market.chain.revert(snapshot[0])
        snapshot[0] = market.chain.snapshot()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_freshProvider_readsStakeAndNoRecord(market: Market) -> None:
    provider = market.providers[0].address
    state = ChainState(market.c)
    state.refresh([provider])
    assert state.stats(provider) == ProviderStats(provider, stake_wei=PROVIDER_STAKE)


def test_readsEveryOnChainFigure(market: Market) -> None:
    """Completed (vouchers), failed (escrow timeout), lost dispute, slashes, attestation, verifier reports."""
    p = market.providers[0]
    complete_jobs(market, p, 7)
    miss_deadline(market, p, slash=ETH // 2)
    lose_dispute(market, p, slash=ETH)
    attest(market, p, 4 * 10**14)
    verifier_report(market, market.verifiers[0], p, flops=3 * 10**14, passed=True)
    verifier_report(market, market.verifiers[1], p, flops=2 * 10**14, passed=False)

    state = ChainState(market.c)
    state.refresh([p.address])
    stats = state.stats(p.address)
    assert stats == ProviderStats(
        p.address,
        stake_wei=PROVIDER_STAKE - ETH // 2 - ETH,
        jobs_completed=7,
        jobs_failed=2,  # the timeout and the lost dispute
        disputes_lost=1,
        total_slashed_wei=ETH // 2 + ETH,
        attested_flops=4 * 10**14,
        verified_flops=2 * 10**14,  # the latest report's measurement
        report_passes=1,
        report_failures=1,
    )
    # and the record moves reliability the way a user expects
    clean = ChainState(market.c)
    clean.refresh([market.providers[1].address])
    assert reliability(stats) < reliability(clean.stats(market.providers[1].address))


def test_unknownAddress_readsAsZeros_notACrash(market: Market) -> None:
    outsider = market.outsider.address
    state = ChainState(market.c)
    state.refresh([outsider])
    assert state.stats(outsider) == ProviderStats(outsider)


def test_verifierBond_isNotProviderStake(market: Market) -> None:
    verifier = market.verifiers[0].address
    state = ChainState(market.c)
    state.refresh([verifier])
    assert state.stats(verifier).stake_wei == 0


def test_neverRead_raisesUnknownProvider(market: Market) -> None:
    state = ChainState(market.c)
    with pytest.raises(UnknownProviderError, match="never refreshed") as info:
        state.stats(market.providers[0].address)
    assert isinstance(info.value, MarketError)
    assert isinstance(info.value, KeyError)


def test_cache_isReusedWithinTtl_andReReadAfter(market: Market) -> None:
    p = market.providers[0]
    clock = Clock()
    state = ChainState(market.c, ttl=30.0, clock=clock)
    state.refresh([p.address])
    complete_jobs(market, p, 3)

    clock.now += 29
    assert state.stale([p.address]) == []
    state.refresh([p.address])
    assert state.stats(p.address).jobs_completed == 0  # still the cached read

    clock.now += 1
    assert state.stale([p.address]) == [p.address]
    state.refresh([p.address])
    assert state.stats(p.address).jobs_completed == 3
    assert state.stale([p.address]) == []


def test_known_isEveryReadProvider_inNumericAddressOrder(market: Market) -> None:
    addresses = [a.address for a in market.providers]
    state = ChainState(market.c)
    assert state.known() == {}
    state.refresh(reversed(addresses))
    assert list(state.known()) == sorted(addresses, key=lambda a: int(a, 16))
    assert state.stale([*addresses, addresses[0]]) == []


def test_observations_addToStats_andSurviveRefresh(market: Market) -> None:
    p = market.providers[0].address
    clock = Clock()
    state = ChainState(market.c, ttl=1.0, clock=clock)
    state.record_observation(p, True)  # before the first read: kept
    state.refresh([p])
    state.record_observation(p, True)
    state.record_observation(p, False)
    before = state.stats(p)
    assert (before.observed_successes, before.observed_failures) == (2, 1)

    clock.now += 5
    complete_jobs(market, market.providers[0], 1)
    state.refresh([p])
    after = state.stats(p)
    assert (after.jobs_completed, after.observed_successes, after.observed_failures) == (1, 2, 1)
    assert state.known()[p] == after

    state.record_observation(p, False)
    assert reliability(state.stats(p)) < reliability(after)


@pytest.mark.parametrize("bad", ["0x" + "ab" * 20, "0x1234", 42, None])
def test_badAddresses_areRefusedByName(market: Market, bad: object) -> None:
    state = ChainState(market.c)
    with pytest.raises(ChainStateError, match="checksummed"):
        state.refresh([bad])  # type: ignore[list-item]
    with pytest.raises(ChainStateError, match="checksummed"):
        state.record_observation(bad, True)  # type: ignore[arg-type]
    assert state.known() == {}


def test_aLoneAddressString_isNotIteratedAsCharacters(market: Market) -> None:
    state = ChainState(market.c)
    with pytest.raises(ChainStateError, match="checksummed"):
        state.refresh(market.providers[0].address)  # type: ignore[arg-type]


def test_observationOutcome_mustBeBool(market: Market) -> None:
    with pytest.raises(ChainStateError, match="bool"):
        ChainState(market.c).record_observation(market.providers[0].address, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [0, -1.0, True, "30"])
def test_badTtl_isRefused(market: Market, ttl: object) -> None:
    with pytest.raises(ChainStateError, match="ttl"):
        ChainState(market.c, ttl=ttl)  # type: ignore[arg-type]


class _FlakyRegistry(ProviderRegistry):
    """The real registry binding, except that reads of one address fail as an unreachable node would."""

    def __init__(self, real: ProviderRegistry, failing: str) -> None:
        super().__init__(real.chain, real.address)
        self.failing = failing
        self.armed = False

    def account_of(self, address: str) -> RegistryAccount:
        if self.armed and address == self.failing:
            raise ChainConnectionError("connection refused")
        return super().account_of(address)


def test_failedReads_keepOldEntries_refreshTheRest_andReportTheFailures(market: Market) -> None:
    a, b = market.providers[0], market.providers[1]
    registry = _FlakyRegistry(market.c.registry, a.address)
    clock = Clock()
    state = ChainState(dataclasses.replace(market.c, registry=registry), ttl=1.0, clock=clock)
    state.refresh([a.address, b.address])
    complete_jobs(market, a, 2)
    complete_jobs(market, b, 5)
    clock.now += 2

    registry.armed = True  # the node stops answering for ``a``
    with pytest.raises(ChainReadError, match=f"first {a.address}: ChainConnectionError") as info:
        state.refresh([a.address, b.address])
    assert info.value.failed == (a.address,)
    assert state.stats(a.address).jobs_completed == 0  # the previous read is kept
    assert state.stats(b.address).jobs_completed == 5  # the other was refreshed
    assert state.stale([a.address, b.address]) == [a.address]


def test_contractThatAnswersNothing_isAReadError(market: Market) -> None:
    """A registry address with no code returns empty data: decoding fails, the refresh says so."""
    broken = dataclasses.replace(market.c, registry=ProviderRegistry(market.chain, market.outsider.address))
    state = ChainState(broken)
    with pytest.raises(ChainReadError, match="1 provider"):
        state.refresh([market.providers[0].address])
    assert state.known() == {}


def test_refreshInAWorkerThread_whileReadersRead(market: Market) -> None:
    addresses = [p.address for p in market.providers]
    state = ChainState(market.c)
    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(state.refresh, addresses)
        while not done.done():
            snapshot = state.known()
            assert list(snapshot) == sorted(snapshot, key=lambda a: int(a, 16))
            for address in addresses:
                state.record_observation(address, True)
        done.result()  # re-raises whatever the worker raised
    known = state.known()
    assert list(known) == sorted(addresses, key=lambda a: int(a, 16))
    assert all(s.stake_wei == PROVIDER_STAKE for s in known.values())


def test_understaked_listsProvidersSlashedBelowTheMinimum_afterTheirEntryIsReRead(market: Market) -> None:
    slashed, honest = market.providers[0], market.providers[1]
    clock = Clock()
    state = ChainState(market.c, ttl=30.0, clock=clock)
    state.refresh([slashed.address, honest.address])
    assert state.understaked() == frozenset()

    minimum = market.c.registry.min_provider_stake()
    miss_deadline(market, slashed, slash=PROVIDER_STAKE - minimum + 1)
    state.refresh([slashed.address])
    assert state.understaked() == frozenset()  # the cached read is still fresh

    state.invalidate(slashed.address)
    assert state.stale([slashed.address, honest.address]) == [slashed.address]
    state.refresh([slashed.address, honest.address])
    assert state.understaked() == frozenset({slashed.address})
    assert state.stats(slashed.address).stake_wei == minimum - 1


def test_invalidate_refusesABadAddress_andIgnoresAnUnknownOne(market: Market) -> None:
    state = ChainState(market.c)
    with pytest.raises(MarketError):
        state.invalidate("0xnot-an-address")
    state.invalidate(market.providers[0].address)  # never read: nothing to make stale
    assert state.known() == {}
