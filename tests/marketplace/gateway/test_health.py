"""Circuit breakers per provider and per region, driven by an explicit clock."""

from __future__ import annotations

import pytest

from proxima.marketplace.errors import MarketConfigError
from proxima.marketplace.gateway.health import BreakerState, HealthSettings, HealthTracker
from proxima.sdk.types import Address

A = Address("0x00000000000000000000000000000000000000A1")
B = Address("0x00000000000000000000000000000000000000b2")
C = Address("0x00000000000000000000000000000000000000C3")
D = Address("0x00000000000000000000000000000000000000d4")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def tracker(**settings: float) -> tuple[HealthTracker, Clock]:
    clock = Clock()
    return HealthTracker(HealthSettings(**settings), clock=clock), clock  # type: ignore[arg-type]


def test_failures_within_the_window_open_the_breaker() -> None:
    health, clock = tracker(failure_threshold=3, window_s=60, cooldown_s=30)
    health.record(A, "eu", False)
    clock.now += 70  # the first failure leaves the window
    health.record(A, "eu", False)
    health.record(A, "eu", False)
    assert health.provider_state(A) is BreakerState.CLOSED
    assert A not in health.excluded()
    health.record(A, "eu", False)
    assert health.provider_state(A) is BreakerState.OPEN
    assert A in health.excluded()


def test_a_success_clears_the_failure_count() -> None:
    health, _ = tracker(failure_threshold=2)
    health.record(A, "eu", False)
    health.record(A, "eu", True)
    health.record(A, "eu", False)
    assert health.provider_state(A) is BreakerState.CLOSED


def test_half_open_allows_one_trial_and_a_success_closes() -> None:
    health, clock = tracker(failure_threshold=1, cooldown_s=30, region_min_tried=5, region_min_failed=5)
    health.record(A, "eu", False)
    clock.now += 29
    assert A in health.excluded()
    clock.now += 2
    assert health.provider_state(A) is BreakerState.HALF_OPEN
    assert A not in health.excluded()  # the trial may go
    health.begin(A, "eu")
    assert A in health.excluded()  # ... only one
    health.record(A, "eu", True)
    assert health.provider_state(A) is BreakerState.CLOSED
    assert A not in health.excluded()


def test_a_failed_trial_reopens_for_twice_as_long() -> None:
    health, clock = tracker(failure_threshold=1, cooldown_s=30, max_cooldown_s=50, region_min_tried=5)
    health.record(A, "eu", False)
    clock.now += 31
    health.begin(A, "eu")
    health.record(A, "eu", False)
    assert health.provider_state(A) is BreakerState.OPEN
    clock.now += 49
    assert health.provider_state(A) is BreakerState.OPEN  # 60 s would be twice 30; capped at 50
    clock.now += 2
    assert health.provider_state(A) is BreakerState.HALF_OPEN


def test_a_trial_without_outcome_stops_blocking_after_its_timeout() -> None:
    health, clock = tracker(failure_threshold=1, cooldown_s=10, trial_timeout_s=20, region_min_tried=5)
    health.record(A, "eu", False)
    clock.now += 11
    health.begin(A, "eu")
    assert A in health.excluded()
    clock.now += 21
    assert A not in health.excluded()


def test_a_region_goes_dark_when_every_provider_tried_failed() -> None:
    health, _ = tracker(failure_threshold=5, region_min_tried=2, region_min_failed=9, cooldown_s=30)
    health.record(A, "eu", False)
    assert health.dark_regions() == frozenset()  # one provider failing is the provider's problem
    health.record(C, "us", True)
    health.record(B, "eu", False)
    assert health.dark_regions() == {"eu"}
    assert health.region_state("eu") is BreakerState.OPEN
    assert health.excluded() == {A, B}  # breakers closed, excluded for their region
    assert health.region_state("us") is BreakerState.CLOSED


def test_a_region_with_a_recent_success_is_not_dark_until_k_distinct_failures() -> None:
    health, _ = tracker(failure_threshold=5, region_min_tried=2, region_min_failed=3)
    health.record(A, "eu", True)
    health.record(B, "eu", False)
    health.record(C, "eu", False)
    assert health.dark_regions() == frozenset()  # A's latest attempt there succeeded
    health.record(D, "eu", False)
    assert health.dark_regions() == {"eu"}  # three distinct providers failed within the window


def test_old_outcomes_do_not_darken_a_region() -> None:
    health, clock = tracker(failure_threshold=5, window_s=60, region_min_tried=2, region_min_failed=9)
    health.record(A, "eu", False)
    clock.now += 61
    health.record(B, "eu", False)
    assert health.dark_regions() == frozenset()


def test_a_dark_region_half_opens_for_one_trial_job_and_a_success_clears_it() -> None:
    health, clock = tracker(failure_threshold=5, region_min_tried=2, cooldown_s=30)
    health.record(A, "eu", False)
    health.record(B, "eu", False)
    clock.now += 31
    assert health.region_state("eu") is BreakerState.HALF_OPEN
    assert health.dark_regions() == frozenset()
    health.begin(B, "eu")
    assert health.dark_regions() == {"eu"}  # the trial runs: the others wait
    assert health.excluded() == {A, B}
    health.record(B, "eu", True)
    assert health.region_state("eu") is BreakerState.CLOSED
    assert health.excluded() == frozenset()


def test_a_failed_region_trial_makes_it_dark_again() -> None:
    health, clock = tracker(failure_threshold=5, region_min_tried=2, cooldown_s=30)
    health.record(A, "eu", False)
    health.record(B, "eu", False)
    clock.now += 31
    health.begin(A, "eu")
    health.record(A, "eu", False)
    assert health.region_state("eu") is BreakerState.OPEN
    clock.now += 31
    assert health.region_state("eu") is BreakerState.OPEN  # longer cool-down the second time
    assert health.summary()["regions"] == {"eu": "open"}


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_threshold": 0},
        {"window_s": 0},
        {"cooldown_s": float("inf")},
        {"cooldown_s": 100, "max_cooldown_s": 10},
        {"region_min_tried": True},
    ],
)
def test_settings_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(MarketConfigError):
        HealthSettings(**bad)  # type: ignore[arg-type]
