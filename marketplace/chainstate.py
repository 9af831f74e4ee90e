"""What the chain says about providers, cached for the matching engine.

:class:`ChainState` reads each provider's registry account (stake, job counters, slashes), its latest attested
figures and its verifier report summary, and turns them into a
:class:`~proxima.marketplace.matching.reliability.ProviderStats`. Reads are blocking chain calls (three
``eth_call`` per provider), so the gateway runs :meth:`ChainState.refresh` in a worker thread; everything
else only touches the cache and is safe to call from any thread.

Chain data is outside input: an address the registry does not know reads as all zeros (a newcomer with no
stake), a verifier's stake does not count as a provider's, and a provider whose reads fail keeps its previous
entry (the refresh goes on with the others and reports the failures at the end).

The gateway's own experience (:meth:`ChainState.record_observation`) is kept beside the chain figures and
added to every :class:`ProviderStats` it hands out; it survives refreshes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

from eth_abi.exceptions import DecodingError
from eth_utils.address import is_checksum_address
from web3.exceptions import Web3Exception

from proxima.contracts import ProximaError
from proxima.marketplace.errors import MarketError
from proxima.marketplace.matching.reliability import ProviderStats
from proxima.sdk.bindings import ProximaContracts, Role
from proxima.sdk.types import Address

__all__ = ["ChainReadError", "ChainState", "ChainStateError", "InvalidProviderError", "UnknownProviderError"]

log = logging.getLogger(__name__)

_READ_ERRORS: Final = (ProximaError, Web3Exception, DecodingError, OSError, ValueError)


class ChainStateError(MarketError):
    """Root of the chain state errors."""


class UnknownProviderError(ChainStateError, KeyError):
    """The provider's figures were never read from the chain (call :meth:`ChainState.refresh` first)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(f"no chain figures for provider {provider}: it was never refreshed")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidProviderError(ChainStateError, ValueError):
    """A provider address is not an EIP-55 checksummed address."""

    def __init__(self, provider: object) -> None:
        self.provider = provider
        super().__init__(f"provider must be a checksummed address, got {provider!r}")


class ChainReadError(ChainStateError):
    """Reading some providers from the chain failed; the others were refreshed.

    Attributes:
        failed: The providers whose reads failed (their previous entries are kept).
    """

    def __init__(self, failed: tuple[Address, ...], cause: BaseException) -> None:
        self.failed = failed
        super().__init__(
            f"reading {len(failed)} provider(s) from the chain failed, first {failed[0]}: "
            f"{type(cause).__name__}: {cause}"
        )


@dataclass(slots=True)
class _Observed:
    successes: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class _Cached:
    stats: ProviderStats
    read_at: float


class ChainState:
    """Provider figures from the contracts, cached for ``ttl`` seconds.

    Args:
        contracts: The bound contracts of the deployment.
        ttl: Seconds a read stays fresh; :meth:`refresh` re-reads entries older than this.
        clock: Monotonic time source (seconds).

    Raises:
        ChainStateError: If ``ttl`` is not a positive number.
    """

    def __init__(
        self, contracts: ProximaContracts, *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ChainStateError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self._contracts = contracts
        self._ttl = float(ttl)
        self._clock = clock
        self._cache: dict[Address, _Cached] = {}
        self._observed: dict[Address, _Observed] = {}
        self._min_stake: int | None = None
        self._lock = threading.Lock()

    def stats(self, provider: Address) -> ProviderStats:
        """The provider's figures as last read (fresh or stale), plus this gateway's observations.

        Raises:
            UnknownProviderError: If the provider was never read.
        """
        with self._lock:
            cached = self._cache.get(provider)
            if cached is None:
                raise UnknownProviderError(provider)
            return self._with_observed_locked(cached.stats)

    def known(self) -> dict[Address, ProviderStats]:
        """Every provider read so far, in numeric address order, with this gateway's observations."""
        with self._lock:
            return {
                a: self._with_observed_locked(self._cache[a].stats)
                for a in sorted(self._cache, key=str.lower)
            }

    def stale(self, providers: Iterable[Address]) -> list[Address]:
        """The given providers that were never read or were read more than ``ttl`` seconds ago, deduplicated
        and in numeric address order.

        Raises:
            InvalidProviderError: If an address is not checksummed.
        """
        wanted = _validated(providers)
        now = self._clock()
        with self._lock:
            return [a for a in wanted if (c := self._cache.get(a)) is None or now - c.read_at >= self._ttl]

    def refresh(self, providers: Iterable[Address]) -> None:
        """Read every stale or unknown provider among ``providers`` from the chain (blocking).

        Fresh entries are left alone. A provider whose reads fail keeps its previous entry; the others are
        still refreshed, then the failures are raised together.

        Args:
            providers: Checksummed addresses.

        Raises:
            InvalidProviderError: If an address is not checksummed (nothing is read).
            ChainReadError: If some reads failed (the rest were stored).
        """
        failed: list[Address] = []
        first_error: BaseException | None = None
        for provider in self.stale(providers):
            try:
                stats = self._read(provider)
            except _READ_ERRORS as err:
                log.warning(
                    "provider chain read failed",
                    extra={"provider": provider, "error": f"{type(err).__name__}: {err}"},
                )
                failed.append(provider)
                first_error = first_error or err
                continue
            read_at = self._clock()
            with self._lock:
                self._cache[provider] = _Cached(stats, read_at)
        if failed:
            assert first_error is not None
            raise ChainReadError(tuple(failed), first_error) from first_error

    def understaked(self) -> frozenset[Address]:
        """Providers read so far whose stake is below the registry's minimum (slashed, unbonded, or never
        providers): the chain no longer lets them take escrow jobs, so no job should go to them.

        The minimum is read from the registry once. Until it could be read, nobody is reported.
        """
        if self._min_stake is None:
            try:
                self._min_stake = self._contracts.registry.min_provider_stake()
            except _READ_ERRORS as err:
                log.warning("cannot read the minimum provider stake", extra={"error": str(err)})
                return frozenset()
        minimum = self._min_stake
        with self._lock:
            return frozenset(a for a, c in self._cache.items() if c.stats.stake_wei < minimum)

    def invalidate(self, provider: Address) -> None:
        """Make the provider's entry stale, so the next :meth:`refresh` re-reads it (after a slash, say).

        Raises:
            InvalidProviderError: If the address is not checksummed.
        """
        if not isinstance(provider, str) or not is_checksum_address(provider):
            raise InvalidProviderError(provider)
        with self._lock:
            cached = self._cache.get(provider)
            if cached is not None:
                self._cache[provider] = _Cached(cached.stats, float("-inf"))

    def record_observation(self, provider: Address, success: bool) -> None:
        """Count one outcome this gateway saw (a delivered job, or a failed attempt).

        Raises:
            InvalidProviderError: If the address is not checksummed.
            ChainStateError: If ``success`` is not a bool.
        """
        if not isinstance(provider, str) or not is_checksum_address(provider):
            raise InvalidProviderError(provider)
        if not isinstance(success, bool):
            raise ChainStateError(f"success must be a bool, got {success!r}")
        with self._lock:
            observed = self._observed.setdefault(provider, _Observed())
            if success:
                observed.successes += 1
            else:
                observed.failures += 1

    def _with_observed_locked(self, stats: ProviderStats) -> ProviderStats:
        observed = self._observed.get(stats.address)
        if observed is None:
            return stats
        return replace(stats, observed_successes=observed.successes, observed_failures=observed.failures)

    def _read(self, provider: Address) -> ProviderStats:
        account = self._contracts.registry.account_of(provider)
        figures = self._contracts.attestations.latest_figures(provider)
        report = self._contracts.attestations.latest_report(provider)
        stats = ProviderStats(
            address=provider,
            # A verifier's bond is not a provider's stake; an unknown address has Role.NONE and zeros.
            stake_wei=account.stake if account.role == Role.PROVIDER else 0,
            jobs_completed=account.jobs_completed,
            jobs_failed=account.jobs_failed,
            disputes_lost=account.disputes_lost,
            total_slashed_wei=account.total_slashed,
            attested_flops=figures.gemm_flops,
            verified_flops=report.measured_flops,
            report_passes=report.passes,
            report_failures=report.failures,
        )
        log.debug(
            "provider read from chain",
            extra={"provider": provider, "stake_wei": stats.stake_wei, "completed": stats.jobs_completed},
        )
        return stats


def _validated(providers: Iterable[Address]) -> list[Address]:
    if isinstance(providers, str):  # a lone address would iterate as characters
        raise InvalidProviderError(providers)
    unique: set[Address] = set()
    for provider in providers:
        if not isinstance(provider, str) or not is_checksum_address(provider):
            raise InvalidProviderError(provider)
        unique.add(provider)
    return sorted(unique, key=str.lower)
