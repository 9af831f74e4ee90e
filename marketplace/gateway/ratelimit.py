"""Per-client rate limits: a token bucket per client, refused requests answered 429 with ``Retry-After``.

Each client has a bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a request takes one. An
empty bucket means the request is refused with the time until the next token. Buckets live in memory (a
restart forgives everyone); idle full buckets are dropped so the table stays bounded.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from proxima.marketplace.gateway.schemas import ApiError

__all__ = ["RateLimitedError", "TokenBucketLimiter"]

_PRUNE_EVERY: Final = 4096


class RateLimitedError(ApiError):
    """A client sent requests faster than its limit (HTTP 429).

    Args:
        retry_after: Seconds until a request would be accepted.
        rate: The client's sustained limit, requests per second.
        burst: Its burst.
    """

    def __init__(self, retry_after: float, rate: float, burst: int) -> None:
        self.retry_after = retry_after
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            429,
            "rate_limited",
            f"too many requests: the limit is {rate:g} per second with bursts of {burst}; retry in "
            f"{retry_after:.2f} s",
            headers={"Retry-After": str(seconds)},
        )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBucketLimiter:
    """Token buckets by client key (thread-safe).

    Args:
        rate: Tokens added per second.
        burst: Bucket size.
        clock: Monotonic time source (tests).
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def try_acquire(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket.

        Returns:
            0.0 when taken; otherwise the seconds until enough tokens will be there (nothing taken).
        """
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls % _PRUNE_EVERY == 0:
                self._prune(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            else:
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
                bucket.at = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return (cost - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """Take one token or refuse.

        Raises:
            RateLimitedError: When ``key``'s bucket is empty.
        """
        wait = self.try_acquire(key)
        if wait > 0:
            raise RateLimitedError(wait, self.rate, self.burst)

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.at >= full_after]:
            del self._buckets[key]
