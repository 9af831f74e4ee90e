"""Provider reliability and verified throughput, estimated from public on-chain outcomes.

Reliability is the posterior mean of a Beta distribution over "the next job succeeds". Every observed outcome
is a pseudo-count: successes raise ``alpha``, failures raise ``beta``, and a newcomer without any record gets
the prior's mean (2/3 by default: neither trusted nor shunned). The evidence, all of it public except the
gateway's own record:

==========================  =====================  ===========================================================
source                      counts as              why
==========================  =====================  ===========================================================
``jobs_completed``          1 success each        registry counter, settled jobs
``report_passes``           1 success each        a staked verifier checked a result and it was right
``observed_successes``      1 success each        this gateway's own record (not on chain)
``jobs_failed``             1 failure each        registry counter (timeouts, refunded escrows)
``report_failures``         1 failure each        a staked verifier found a wrong result
``observed_failures``       1 failure each        this gateway's own record
``disputes_lost``           :data:`DISPUTE_WEIGHT`  a proven wrong answer is worse than a timeout
``total_slashed_wei > 0``   :func:`slash_penalty`   stake taken for an on-chain-proven fault
==========================  =====================  ===========================================================

The slash penalty is :data:`SLASH_BASE_PENALTY` pseudo-failures plus :data:`SLASH_SCALE_PENALTY` times the
share of the provider's money at risk that was taken (``slashed / (stake + slashed)``): a provider that lost
all its stake gets the full 100, one that lost 1% of it about 20. It does not grow with the success count (a
penalty proportional to past successes would make more successes *lower* the estimate), so a slashed
provider always ranks below an otherwise identical unslashed one and climbs back only by a long clean record.

Every count is capped at :data:`MAX_COUNT` before use: chain data is outside input and a counter of 2**256
must neither overflow floats nor round the estimate to exactly 1.0. The estimate is therefore always strictly
inside (0, 1).

Throughput: :func:`verified_throughput` never plans with more than the offer claims nor more than the provider
attested on chain; with a verifier report it takes the measured figure when lower, without one it discounts
the claim by :data:`UNVERIFIED_DISCOUNT`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np
from numpy.typing import NDArray

from proxima.marketplace.errors import MarketError
from proxima.sdk.types import Address

__all__ = [
    "DISPUTE_WEIGHT",
    "MAX_COUNT",
    "SLASH_BASE_PENALTY",
    "SLASH_SCALE_PENALTY",
    "UNVERIFIED_DISCOUNT",
    "InvalidStatsError",
    "ProviderStats",
    "ReliabilityPrior",
    "reliability",
    "reliability_arrays",
    "slash_penalty",
    "verified_throughput",
    "verified_throughput_arrays",
]

DISPUTE_WEIGHT: Final = 5.0
"""Pseudo-failures per lost dispute: a dispute is lost only over a proven wrong or withheld result."""

SLASH_BASE_PENALTY: Final = 20.0
"""Pseudo-failures for having been slashed at all."""

SLASH_SCALE_PENALTY: Final = 80.0
"""Further pseudo-failures, times the share of the provider's at-risk money that was slashed."""

UNVERIFIED_DISCOUNT: Final = 0.5
"""Share of the claimed (and attested) throughput to plan with while no verifier has measured the provider."""

MAX_COUNT: Final = 10**9
"""Counts above this carry no further information and are capped (keeps the estimate strictly below 1)."""

_MAX_UINT256: Final = 2**256 - 1
_PRIOR_RANGE: Final = (1e-3, 1e6)


class InvalidStatsError(MarketError, ValueError):
    """A provider statistic or a prior is out of range; the message names the field."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} must be {expected}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """What the chain (and this gateway's own experience) says about a provider.

    Attributes:
        address: The provider's checksummed address.
        stake_wei: Stake currently bonded in the registry.
        jobs_completed: Registry counter of completed jobs.
        jobs_failed: Registry counter of failed jobs.
        disputes_lost: Registry counter of lost disputes.
        total_slashed_wei: Everything ever slashed from the provider.
        attested_flops: ``AttestationRegistry.latest_figures(provider).gemm_flops`` (0: none).
        verified_flops: ``AttestationRegistry.latest_report(provider).measured_flops`` (0: no report).
        report_passes: Verifier checks the provider passed.
        report_failures: Verifier checks the provider failed.
        observed_successes: Jobs this gateway saw the provider deliver (not on chain).
        observed_failures: Attempts this gateway saw the provider fail (not on chain).

    Raises:
        InvalidStatsError: If a number is not a non-negative int below 2**256.
    """

    address: Address
    stake_wei: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    disputes_lost: int = 0
    total_slashed_wei: int = 0
    attested_flops: int = 0
    verified_flops: int = 0
    report_passes: int = 0
    report_failures: int = 0
    observed_successes: int = 0
    observed_failures: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.address, str):
            raise InvalidStatsError("address", self.address, "a checksummed address string")
        for f in fields(self):
            if f.name == "address":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT256:
                raise InvalidStatsError(f.name, value, "an int in [0, 2**256)")

    @property
    def track_record(self) -> int:
        """Outcomes known about the provider (on chain and observed); 0 for a newcomer."""
        return (
            self.jobs_completed
            + self.jobs_failed
            + self.disputes_lost
            + self.report_passes
            + self.report_failures
            + self.observed_successes
            + self.observed_failures
        )


@dataclass(frozen=True)
class ReliabilityPrior:
    """The Beta prior every provider starts from (a newcomer's reliability is its mean).

    The default ``Beta(2, 1)`` has mean 2/3 and weighs as much as three jobs: a newcomer is below any provider
    with a clean record of a few jobs, above one that fails half of its jobs, and its estimate moves quickly.

    Attributes:
        successes: Pseudo-successes (``alpha``), in [0.001, 1e6].
        failures: Pseudo-failures (``beta``), in [0.001, 1e6].
    """

    successes: float = 2.0
    failures: float = 1.0

    def __post_init__(self) -> None:
        low, high = _PRIOR_RANGE
        for name in ("successes", "failures"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not low <= value <= high
            ):
                raise InvalidStatsError(f"prior.{name}", value, f"a number in [{low}, {high}]")

    @property
    def mean(self) -> float:
        """The prior mean, a newcomer's reliability."""
        return float(self.successes) / (float(self.successes) + float(self.failures))


_DEFAULT_PRIOR: Final = ReliabilityPrior()


def _count(value: int) -> float:
    return float(min(value, MAX_COUNT))


def slash_penalty(stats: ProviderStats) -> float:
    """Pseudo-failures for slashing: 0 if never slashed, else ``20 + 80 * slashed / (stake + slashed)``."""
    if stats.total_slashed_wei <= 0:
        return 0.0
    slashed = float(stats.total_slashed_wei)
    share = slashed / (float(stats.stake_wei) + slashed)
    return SLASH_BASE_PENALTY + SLASH_SCALE_PENALTY * share


def _alpha_beta(stats: ProviderStats, prior: ReliabilityPrior) -> tuple[float, float]:
    alpha = (
        float(prior.successes)
        + _count(stats.jobs_completed)
        + _count(stats.report_passes)
        + _count(stats.observed_successes)
    )
    beta = (
        float(prior.failures)
        + _count(stats.jobs_failed)
        + DISPUTE_WEIGHT * _count(stats.disputes_lost)
        + _count(stats.report_failures)
        + _count(stats.observed_failures)
        + slash_penalty(stats)
    )
    return alpha, beta


def reliability(stats: ProviderStats, prior: ReliabilityPrior = _DEFAULT_PRIOR) -> float:
    """The provider's probability of delivering its next job: the Beta posterior mean.

    Args:
        stats: The provider's record.
        prior: The prior (a newcomer gets its mean).

    Returns:
        ``alpha / (alpha + beta)``, strictly inside (0, 1); see the module docstring for the counts.
    """
    alpha, beta = _alpha_beta(stats, prior)
    return alpha / (alpha + beta)


def reliability_arrays(
    stats: Sequence[ProviderStats], prior: ReliabilityPrior = _DEFAULT_PRIOR
) -> NDArray[np.float64]:
    """:func:`reliability` of many providers at once, with identical values.

    Args:
        stats: The providers' records.
        prior: The prior.

    Returns:
        A float64 array, one reliability per entry of ``stats``, in order.
    """
    n = len(stats)
    if n == 0:
        return np.zeros(0, dtype=np.float64)

    def column(name: str) -> NDArray[np.float64]:
        return np.fromiter((_count(getattr(s, name)) for s in stats), dtype=np.float64, count=n)

    stake = np.fromiter((float(s.stake_wei) for s in stats), dtype=np.float64, count=n)
    slashed = np.fromiter((float(s.total_slashed_wei) for s in stats), dtype=np.float64, count=n)
    was_slashed = slashed > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(was_slashed, slashed / (stake + slashed), 0.0)
    penalty = np.where(was_slashed, SLASH_BASE_PENALTY + SLASH_SCALE_PENALTY * share, 0.0)

    # Same operations in the same order as _alpha_beta, so that the float results are bit-identical.
    alpha = float(prior.successes) + column("jobs_completed")
    alpha = alpha + column("report_passes")
    alpha = alpha + column("observed_successes")
    beta = float(prior.failures) + column("jobs_failed")
    beta = beta + DISPUTE_WEIGHT * column("disputes_lost")
    beta = beta + column("report_failures")
    beta = beta + column("observed_failures")
    beta = beta + penalty
    result: NDArray[np.float64] = alpha / (alpha + beta)
    return result


def verified_throughput(claimed_flops: int, stats: ProviderStats) -> float:
    """The FLOP/s to plan a job with on this provider.

    Never above the offer's claim nor above the figure the provider attested on chain (when it attested);
    with a verifier report, the lower of that cap and the verifier's measurement; without one, the cap times
    :data:`UNVERIFIED_DISCOUNT`.

    Args:
        claimed_flops: What the offer claims (FLOP/s, >= 0).
        stats: The provider's record.

    Returns:
        FLOP/s, in [0, claimed_flops].

    Raises:
        InvalidStatsError: If ``claimed_flops`` is not a non-negative int.
    """
    if isinstance(claimed_flops, bool) or not isinstance(claimed_flops, int) or claimed_flops < 0:
        raise InvalidStatsError("claimed_flops", claimed_flops, "a non-negative int")
    cap = claimed_flops if stats.attested_flops <= 0 else min(claimed_flops, stats.attested_flops)
    if stats.verified_flops > 0:
        return float(min(cap, stats.verified_flops))
    return UNVERIFIED_DISCOUNT * float(cap)


def verified_throughput_arrays(
    claimed_flops: Sequence[int], stats: Sequence[ProviderStats]
) -> NDArray[np.float64]:
    """:func:`verified_throughput` of many offers at once, with identical values.

    Args:
        claimed_flops: Each offer's claim.
        stats: The record of each offer's provider (same length).

    Returns:
        A float64 array of FLOP/s, in order.

    Raises:
        InvalidStatsError: If the lengths differ or a claim is not a non-negative int.
    """
    if len(claimed_flops) != len(stats):
        raise InvalidStatsError(
            "claimed_flops", f"{len(claimed_flops)} entries", f"as long as stats ({len(stats)})"
        )
    return np.fromiter(
        (verified_throughput(c, s) for c, s in zip(claimed_flops, stats, strict=True)),
        dtype=np.float64,
        count=len(stats),
    )
