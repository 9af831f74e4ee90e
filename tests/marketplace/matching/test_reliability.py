"""Reliability (Beta posterior from on-chain outcomes) and verified throughput."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching.reliability import (
    DISPUTE_WEIGHT,
    MAX_COUNT,
    UNVERIFIED_DISCOUNT,
    InvalidStatsError,
    ProviderStats,
    ReliabilityPrior,
    reliability,
    reliability_arrays,
    slash_penalty,
    verified_throughput,
    verified_throughput_arrays,
)
from proxima.sdk.types import Address

ADDR = Address("0x" + "11" * 20)  # type: ignore[arg-type]
ETH = 10**18

COUNTERS = (
    "jobs_completed",
    "jobs_failed",
    "disputes_lost",
    "report_passes",
    "report_failures",
    "observed_successes",
    "observed_failures",
)
GOOD = ("jobs_completed", "report_passes", "observed_successes")
BAD = ("jobs_failed", "disputes_lost", "report_failures", "observed_failures")

counts = st.integers(min_value=0, max_value=10**6) | st.integers(min_value=0, max_value=2**256 - 1)
wei = st.integers(min_value=0, max_value=10**24) | st.integers(min_value=0, max_value=2**256 - 1)
stats_strategy = st.builds(
    ProviderStats,
    address=st.just(ADDR),
    stake_wei=wei,
    jobs_completed=counts,
    jobs_failed=counts,
    disputes_lost=counts,
    total_slashed_wei=wei,
    attested_flops=counts,
    verified_flops=counts,
    report_passes=counts,
    report_failures=counts,
    observed_successes=counts,
    observed_failures=counts,
)
priors = st.builds(
    ReliabilityPrior,
    successes=st.floats(min_value=1e-3, max_value=1e6),
    failures=st.floats(min_value=1e-3, max_value=1e6),
)


def test_newcomer_getsThePriorMean() -> None:
    assert reliability(ProviderStats(ADDR)) == pytest.approx(2 / 3)
    prior = ReliabilityPrior(successes=9.0, failures=1.0)
    assert reliability(ProviderStats(ADDR), prior) == pytest.approx(0.9)
    assert prior.mean == pytest.approx(0.9)


def test_posteriorMean_countsEveryOutcome() -> None:
    stats = ProviderStats(
        ADDR,
        jobs_completed=10,
        report_passes=3,
        observed_successes=2,
        jobs_failed=4,
        disputes_lost=1,
        report_failures=2,
        observed_failures=1,
    )
    alpha = 2 + 10 + 3 + 2
    beta = 1 + 4 + DISPUTE_WEIGHT * 1 + 2 + 1
    assert reliability(stats) == pytest.approx(alpha / (alpha + beta))


@pytest.mark.parametrize("field", GOOD)
def test_moreSuccesses_raiseReliability(field: str) -> None:
    base = ProviderStats(ADDR, jobs_completed=5, jobs_failed=5)
    more = replace(base, **{field: getattr(base, field) + 1})
    assert reliability(more) > reliability(base)


@pytest.mark.parametrize("field", BAD)
def test_moreFailures_lowerReliability(field: str) -> None:
    base = ProviderStats(ADDR, jobs_completed=5, jobs_failed=5)
    more = replace(base, **{field: getattr(base, field) + 1})
    assert reliability(more) < reliability(base)


def test_lostDispute_weighsMoreThanAFailure() -> None:
    base = ProviderStats(ADDR, jobs_completed=20)
    assert reliability(replace(base, disputes_lost=1)) < reliability(replace(base, jobs_failed=1))


@given(stats=stats_strategy, field=st.sampled_from(COUNTERS), extra=st.integers(1, 1000))
@settings(max_examples=150, deadline=None)
def test_monotonic_inEveryCounter(stats: ProviderStats, field: str, extra: int) -> None:
    more = replace(stats, **{field: min(getattr(stats, field) + extra, 2**256 - 1)})
    if field in GOOD:
        assert reliability(more) >= reliability(stats)
    else:
        assert reliability(more) <= reliability(stats)


def test_slashed_ranksBelowUnslashed_andMoreSlashingIsWorse() -> None:
    clean = ProviderStats(ADDR, stake_wei=10 * ETH, jobs_completed=500, jobs_failed=2)
    a_little = replace(clean, total_slashed_wei=ETH // 10)
    half = replace(clean, stake_wei=5 * ETH, total_slashed_wei=5 * ETH)
    everything = replace(clean, stake_wei=0, total_slashed_wei=10 * ETH)
    assert reliability(clean) > reliability(a_little) > reliability(half) > reliability(everything)
    assert slash_penalty(clean) == 0.0
    assert slash_penalty(everything) == pytest.approx(100.0)
    # A newcomer who was slashed ranks below a newcomer who was not.
    assert reliability(ProviderStats(ADDR, total_slashed_wei=1)) < reliability(ProviderStats(ADDR))


@given(stats=stats_strategy, slashed=st.integers(1, 2**200))
@settings(max_examples=100, deadline=None)
def test_slashing_neverRaisesReliability(stats: ProviderStats, slashed: int) -> None:
    clean = replace(stats, total_slashed_wei=0)
    assert reliability(replace(clean, total_slashed_wei=slashed)) < reliability(clean)


@given(stats=stats_strategy, prior=priors)
@settings(max_examples=200, deadline=None)
def test_reliability_isStrictlyInsideZeroOne(stats: ProviderStats, prior: ReliabilityPrior) -> None:
    value = reliability(stats, prior)
    assert 0.0 < value < 1.0


def test_hugeChainCounters_areCapped_notOverflowing() -> None:
    huge = ProviderStats(ADDR, jobs_completed=2**256 - 1)
    capped = ProviderStats(ADDR, jobs_completed=MAX_COUNT)
    assert reliability(huge) == reliability(capped) < 1.0


@given(stats=st.lists(stats_strategy, max_size=20), prior=priors)
@settings(max_examples=100, deadline=None)
def test_vectorized_equalsScalar(stats: list[ProviderStats], prior: ReliabilityPrior) -> None:
    array = reliability_arrays(stats, prior)
    assert array.dtype == np.float64
    assert array.shape == (len(stats),)
    assert array.tolist() == [reliability(s, prior) for s in stats]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jobs_completed": -1}, "jobs_completed"),
        ({"stake_wei": 2**256}, "stake_wei"),
        ({"disputes_lost": True}, "disputes_lost"),
        ({"verified_flops": 1.5}, "verified_flops"),
        ({"report_passes": "3"}, "report_passes"),
    ],
)
def test_stats_rejectOutOfRangeNumbers(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidStatsError, match=field) as info:
        ProviderStats(ADDR, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, MarketError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"successes": 0.0}, "prior.successes"),
        ({"failures": -1.0}, "prior.failures"),
        ({"successes": float("nan")}, "prior.successes"),
        ({"failures": float("inf")}, "prior.failures"),
    ],
)
def test_prior_rejectsOutOfRange(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidStatsError, match=field):
        ReliabilityPrior(**kwargs)


def test_trackRecord_isZeroForNewcomers() -> None:
    assert ProviderStats(ADDR).track_record == 0
    assert ProviderStats(ADDR, jobs_completed=3, observed_failures=2).track_record == 5


# --- throughput ------------------------------------------------------------------------------------------


def test_throughput_withoutAttestationOrReport_isDiscountedClaim() -> None:
    assert verified_throughput(10**12, ProviderStats(ADDR)) == UNVERIFIED_DISCOUNT * 10**12


def test_throughput_isCappedByAttestation() -> None:
    stats = ProviderStats(ADDR, attested_flops=4 * 10**11)
    assert verified_throughput(10**12, stats) == UNVERIFIED_DISCOUNT * 4 * 10**11
    # an attestation above the claim does not raise it
    assert verified_throughput(10**11, stats) == UNVERIFIED_DISCOUNT * 10**11


def test_throughput_withReport_isMinOfClaimAttestedAndVerified() -> None:
    assert verified_throughput(10**12, ProviderStats(ADDR, verified_flops=3 * 10**11)) == 3 * 10**11
    assert verified_throughput(10**12, ProviderStats(ADDR, verified_flops=5 * 10**12)) == 10**12
    stats = ProviderStats(ADDR, attested_flops=6 * 10**11, verified_flops=9 * 10**11)
    assert verified_throughput(10**12, stats) == 6 * 10**11


@given(claimed=counts, stats=stats_strategy)
@settings(max_examples=150, deadline=None)
def test_throughput_neverAboveClaimNorAttested(claimed: int, stats: ProviderStats) -> None:
    value = verified_throughput(claimed, stats)
    assert 0.0 <= value <= float(claimed)
    if stats.attested_flops > 0:
        assert value <= float(stats.attested_flops)
    if stats.verified_flops > 0:
        assert value <= float(stats.verified_flops)


@given(pairs=st.lists(st.tuples(counts, stats_strategy), max_size=10))
@settings(max_examples=50, deadline=None)
def test_throughputArrays_equalScalar(pairs: list[tuple[int, ProviderStats]]) -> None:
    claims = [c for c, _ in pairs]
    stats = [s for _, s in pairs]
    assert verified_throughput_arrays(claims, stats).tolist() == [verified_throughput(c, s) for c, s in pairs]


@pytest.mark.parametrize("claimed", [-1, True, 1.0])
def test_throughput_rejectsBadClaims(claimed: object) -> None:
    with pytest.raises(InvalidStatsError, match="claimed_flops"):
        verified_throughput(claimed, ProviderStats(ADDR))  # type: ignore[arg-type]


def test_throughputArrays_rejectsLengthMismatch() -> None:
    with pytest.raises(InvalidStatsError, match="claimed_flops"):
        verified_throughput_arrays([1, 2], [ProviderStats(ADDR)])
