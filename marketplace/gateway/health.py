"""Circuit breakers per provider and per region: stop sending work where it keeps failing.

**Provider breaker.** ``failure_threshold`` failures of a provider within ``window_s`` seconds *open* its
breaker: the provider is excluded from matching for ``cooldown_s``. Then it is *half-open*: one attempt (the
trial) may go to it; while the trial runs the provider is excluded again for everyone else. A success closes
the breaker (and forgets the failures); a failure opens it again, for twice the previous cool-down (at most
``max_cooldown_s``). A success while closed clears the provider's failure count.

**Region darkness.** A region goes *dark* when, within ``window_s``,

* every provider of it that was tried failed on its latest attempt, and at least ``region_min_tried`` of
  them were tried; or
* at least ``region_min_failed`` distinct providers of it failed (whatever others did).

Every provider of a dark region is excluded (the dispatcher also excludes providers of the region that this
tracker has never seen, from the market snapshot) for ``cooldown_s``; then the region is half-open: one trial
job may go to one of its providers. A successful trial clears the region; a failed one makes it dark again.
A region going dark never widens a job's residency: a job allowed only there fails instead.

Everything is pure and driven by an injectable clock (seconds, monotonic), so that it is tested beside
itself; it is thread-safe (one lock).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from proxima.marketplace.errors import MarketConfigError
from proxima.sdk.types import Address

__all__ = ["BreakerState", "HealthSettings", "HealthTracker"]


class BreakerState(StrEnum):
    """A circuit breaker's state."""

    CLOSED = "closed"
    """Traffic flows."""
    OPEN = "open"
    """Excluded until the cool-down ends."""
    HALF_OPEN = "half_open"
    """One trial may go; the rest wait for its outcome."""


@dataclass(frozen=True)
class HealthSettings:
    """Thresholds of the breakers.

    Attributes:
        failure_threshold: Failures of one provider within ``window_s`` that open its breaker.
        window_s: Seconds a failure (or a region's outcome) counts.
        cooldown_s: Seconds an open breaker (or a dark region) excludes before a trial.
        max_cooldown_s: Longest cool-down after repeated failed trials (the cool-down doubles per failure).
        trial_timeout_s: A trial without an outcome after this long no longer blocks another trial.
        region_min_tried: Providers of a region that must have been tried (all failing) to call it dark.
        region_min_failed: Distinct failed providers of a region that make it dark regardless.
    """

    failure_threshold: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    trial_timeout_s: float = 120.0
    region_min_tried: int = 2
    region_min_failed: int = 3

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "region_min_tried", "region_min_failed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MarketConfigError(f"HealthSettings.{name} must be an integer >= 1, got {value!r}")
        for name in ("window_s", "cooldown_s", "max_cooldown_s", "trial_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise MarketConfigError(f"HealthSettings.{name} must be a positive number, got {value!r}")
        if self.max_cooldown_s < self.cooldown_s:
            raise MarketConfigError(
                f"HealthSettings.max_cooldown_s ({self.max_cooldown_s}) must be >= cooldown_s "
                f"({self.cooldown_s})"
            )


@dataclass
class _Breaker:
    failures: deque[float] = field(default_factory=deque)
    opened_at: float | None = None
    cooldown: float = 0.0
    trial_started: float | None = None


@dataclass
class _Region:
    outcomes: dict[Address, tuple[float, bool]] = field(default_factory=dict)
    """Latest outcome per provider: (when, ok)."""
    failed_at: dict[Address, float] = field(default_factory=dict)
    """Latest failure per provider."""
    dark_since: float | None = None
    cooldown: float = 0.0
    trial_started: float | None = None


class HealthTracker:
    """Circuit breakers per provider and per region.

    Args:
        settings: Thresholds.
        clock: Monotonic seconds (used when a method is called without ``now``).
    """

    def __init__(
        self, settings: HealthSettings | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or HealthSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._providers: dict[Address, _Breaker] = {}
        self._regions: dict[str, _Region] = {}
        self._region_of: dict[Address, str] = {}

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    # --- outcomes ------------------------------------------------------------------------------------

    def begin(self, provider: Address, region: str, *, now: float | None = None) -> None:
        """An attempt to ``provider`` starts: it takes the trial if the provider's breaker or its region is
        half-open (others stay excluded until the trial's outcome is recorded)."""
        now = self._now(now)
        with self._lock:
            self._region_of[provider] = region
            breaker = self._providers.get(provider)
            if breaker is not None and self._provider_state(breaker, now) is BreakerState.HALF_OPEN:
                breaker.trial_started = now
            area = self._regions.get(region)
            if area is not None and self._region_state(area, now) is BreakerState.HALF_OPEN:
                area.trial_started = now

    def record(self, provider: Address, region: str, ok: bool, *, now: float | None = None) -> None:
        """The outcome of an attempt to ``provider`` (in ``region``)."""
        now = self._now(now)
        s = self.settings
        with self._lock:
            self._region_of[provider] = region
            breaker = self._providers.setdefault(provider, _Breaker())
            area = self._regions.setdefault(region, _Region())
            if ok:
                breaker.failures.clear()
                breaker.opened_at = None
                breaker.cooldown = 0.0
                breaker.trial_started = None
                area.dark_since = None
                area.cooldown = 0.0
                area.trial_started = None
                area.failed_at.pop(provider, None)
            else:
                state = self._provider_state(breaker, now)
                breaker.failures.append(now)
                self._prune(breaker.failures, now)
                if state is BreakerState.HALF_OPEN or (
                    state is BreakerState.CLOSED and len(breaker.failures) >= s.failure_threshold
                ):
                    breaker.cooldown = (
                        s.cooldown_s if breaker.cooldown == 0 else min(breaker.cooldown * 2, s.max_cooldown_s)
                    )
                    breaker.opened_at = now
                    breaker.trial_started = None
                area.failed_at[provider] = now
            area.outcomes[provider] = (now, ok)
            if not ok:
                self._update_region(area, now)

    def _prune(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] < now - self.settings.window_s:
            failures.popleft()

    def _update_region(self, area: _Region, now: float) -> None:
        s = self.settings
        state = self._region_state(area, now)
        if state is BreakerState.HALF_OPEN:
            # The trial (or any attempt there) failed: dark again, for longer.
            area.cooldown = min(area.cooldown * 2, s.max_cooldown_s)
            area.dark_since = now
            area.trial_started = None
            return
        if state is not BreakerState.CLOSED:
            return
        recent = {p: o for p, o in area.outcomes.items() if o[0] >= now - s.window_s}
        failed = {p for p, at in area.failed_at.items() if at >= now - s.window_s}
        all_failed = len(recent) >= s.region_min_tried and all(not ok for _, ok in recent.values())
        if all_failed or len(failed) >= s.region_min_failed:
            area.dark_since = now
            area.cooldown = s.cooldown_s
            area.trial_started = None

    # --- states --------------------------------------------------------------------------------------

    def _provider_state(self, breaker: _Breaker, now: float) -> BreakerState:
        if breaker.opened_at is None:
            return BreakerState.CLOSED
        if now < breaker.opened_at + breaker.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def _region_state(self, area: _Region, now: float) -> BreakerState:
        if area.dark_since is None:
            return BreakerState.CLOSED
        if now < area.dark_since + area.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def _trial_running(self, started: float | None, now: float) -> bool:
        return started is not None and now < started + self.settings.trial_timeout_s

    def provider_state(self, provider: Address, now: float | None = None) -> BreakerState:
        """The provider's breaker state."""
        now = self._now(now)
        with self._lock:
            breaker = self._providers.get(provider)
            return BreakerState.CLOSED if breaker is None else self._provider_state(breaker, now)

    def region_state(self, region: str, now: float | None = None) -> BreakerState:
        """The region's state: closed, open (dark) or half-open (dark, one trial allowed)."""
        now = self._now(now)
        with self._lock:
            area = self._regions.get(region)
            return BreakerState.CLOSED if area is None else self._region_state(area, now)

    def dark_regions(self, now: float | None = None) -> frozenset[str]:
        """Regions whose providers are all excluded now: dark, or half-open with their trial running."""
        now = self._now(now)
        with self._lock:
            return frozenset(
                name
                for name, area in self._regions.items()
                if (state := self._region_state(area, now)) is BreakerState.OPEN
                or (state is BreakerState.HALF_OPEN and self._trial_running(area.trial_started, now))
            )

    def excluded(self, now: float | None = None) -> frozenset[Address]:
        """Providers not to place on now: open breakers, half-open ones whose trial runs, and every provider
        this tracker knows in a dark region."""
        now = self._now(now)
        dark = self.dark_regions(now)
        with self._lock:
            out: set[Address] = set()
            for provider, breaker in self._providers.items():
                state = self._provider_state(breaker, now)
                if state is BreakerState.OPEN or (
                    state is BreakerState.HALF_OPEN and self._trial_running(breaker.trial_started, now)
                ):
                    out.add(provider)
            out.update(p for p, region in self._region_of.items() if region in dark)
            return frozenset(out)

    def summary(self, now: float | None = None) -> dict[str, object]:
        """A JSON-able view for status pages and logs: open/half-open providers, regions and their states."""
        now = self._now(now)
        with self._lock:
            providers = {
                p: self._provider_state(b, now).value
                for p, b in sorted(self._providers.items())
                if self._provider_state(b, now) is not BreakerState.CLOSED
            }
            regions = {
                r: self._region_state(a, now).value
                for r, a in sorted(self._regions.items())
                if self._region_state(a, now) is not BreakerState.CLOSED
            }
        return {"providers": providers, "regions": regions}
