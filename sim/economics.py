"""The contracts' money rules as pure functions, and the simulator's ledger built from them.

Every rule mirrors a Solidity expression (integer wei, rounding down exactly where the contract divides), and
is parameterised by :class:`proxima.sdk.deploy.DeployParameters`, so that the model and the contracts agree to
the wei (``sim/replay.py`` replays a sample onto the real contracts on py-evm and compares):

=====================================  ==================================================================
rule                                   contract expression
=====================================  ==================================================================
:func:`redeem_split`                   ``PaymentVouchers._pay``: ``fee = amount * feeBps / BPS``,
                                       ``payout = amount - fee``; the fee goes to ``RewardPool.depositFees``
:func:`pool_credit`                    ``RewardPool._credit``: ``toTreasury = value * treasuryBps / BPS``,
                                       ``toPool = value - toTreasury`` (per deposit, so per-deposit rounding)
:func:`fault_slash`                    ``FaultProofs._proveJudgedFault``: ``amount = slashableOf *
                                       faultSlashBps / BPS`` (canary, invalid result;
                                       ``equivocationSlashBps`` for equivocation), then
                                       ``ProviderRegistry.slash``: ``finderReward = slashed *
                                       finderShareBps / BPS``, the rest ``fund``-ed into the pool
:func:`epoch_rewards`                  ``RewardPool._shareOf``: ``pot(e) * work(e, p) / totalWork(e)`` per
                                       ended epoch; an ended epoch without work rolls its pot over
=====================================  ==================================================================

Settlement in the model: clients pay providers with cumulative vouchers. **Each provider redeems once per
reward epoch**: one ``redeemBatch`` of all its clients' latest cumulative vouchers, covering the jobs that
*finished* in that epoch, executed before the epoch ends (the fee is rounded once per batch, on the batch's
total). Work for rewards is the gross voucher amount of the batch, credited to that epoch. A slash happens
when a wrong result is caught (fault proof: ``invalid_result`` for a checked client job, ``canary`` for a
canary), takes ``fault_slash_bps`` of the provider's slashable stake at that moment (so repeated slashes
compound), pays the finder (the gateway that filed the proof) its share and funds the pool of the slash's
epoch with the rest. A provider whose stake falls below ``min_provider_stake`` is no longer an active
provider (``ProviderRegistry.isActiveProvider``) and leaves the market.

Records (:class:`Redemption`, :class:`SlashEvent`) are what ``SimResult.settlements`` holds, in time order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from proxima.sdk.deploy import DeployParameters
from proxima.sim.errors import SimError

__all__ = [
    "BPS",
    "FAULT_KINDS",
    "EconomicsError",
    "Ledger",
    "Redemption",
    "SlashAmounts",
    "SlashEvent",
    "epoch_of",
    "epoch_rewards",
    "fault_slash",
    "pool_credit",
    "redeem_split",
]

BPS: Final = 10_000
"""Basis points in one (the contracts' ``_BPS``)."""

FaultKind = Literal["invalid_result", "canary", "equivocation"]
FAULT_KINDS: Final = ("invalid_result", "canary", "equivocation")
"""Fault proof kinds (``FaultProofs``' ``INVALID_RESULT``, ``CANARY``, ``EQUIVOCATION`` reasons)."""


class EconomicsError(SimError, ValueError):
    """An amount or an argument of a money rule is out of range; the message names it."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"{name} must be {expected}, got {value!r}")


def _wei(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EconomicsError(name, value, "a non-negative int (wei)")
    return value


def epoch_of(t: float, params: DeployParameters) -> int:
    """The reward epoch of simulated time ``t`` (seconds since the pool's genesis at t = 0).

    ``RewardPool.currentEpoch`` is ``(block.timestamp - genesis) / epochLength``.
    """
    if t < 0:
        raise EconomicsError("t", t, ">= 0")
    return int(t // params.epoch_length)


def redeem_split(amount: int, params: DeployParameters) -> tuple[int, int]:
    """``(payout, fee)`` of redeeming ``amount`` wei of vouchers (one ``redeem`` / ``redeemBatch``).

    Raises:
        EconomicsError: If ``amount`` is not a non-negative int.
    """
    _wei("amount", amount)
    fee = amount * params.fee_bps // BPS
    return amount - fee, fee


def pool_credit(value: int, params: DeployParameters) -> tuple[int, int]:
    """``(to_pot, to_treasury)`` of ``value`` wei arriving at the reward pool (fees or a slash's remainder).

    Raises:
        EconomicsError: If ``value`` is not a non-negative int.
    """
    _wei("value", value)
    treasury = value * params.treasury_bps // BPS
    return value - treasury, treasury


@dataclass(frozen=True, slots=True)
class SlashAmounts:
    """What one fault proof moves.

    Attributes:
        slashed: Taken from the provider's stake.
        finder_reward: Paid to whoever proved the fault.
        funded: Sent to the reward pool (``slashed - finder_reward``).
        to_pot: Of ``funded``, credited to the epoch's reward pot.
        to_treasury: Of ``funded``, credited to the treasury.
    """

    slashed: int
    finder_reward: int
    funded: int
    to_pot: int
    to_treasury: int


def fault_slash(
    slashable: int, params: DeployParameters, *, kind: FaultKind = "invalid_result"
) -> SlashAmounts:
    """What a proven fault takes from a provider whose slashable stake (stake + unbonding) is ``slashable``.

    Args:
        slashable: ``ProviderRegistry.slashableOf(provider)`` before the slash, wei.
        params: The deployment's parameters.
        kind: ``invalid_result`` and ``canary`` take ``fault_slash_bps``; ``equivocation`` takes
            ``equivocation_slash_bps``.

    Returns:
        The amounts (all zero if nothing is slashable; the contract would refuse such a proof).

    Raises:
        EconomicsError: If ``slashable`` is negative or ``kind`` unknown.
    """
    _wei("slashable", slashable)
    if kind not in FAULT_KINDS:
        raise EconomicsError("kind", kind, f"one of {FAULT_KINDS}")
    bps = params.equivocation_slash_bps if kind == "equivocation" else params.fault_slash_bps
    slashed = min(slashable * bps // BPS, slashable)
    finder = slashed * params.finder_share_bps // BPS
    funded = slashed - finder
    to_pot, to_treasury = pool_credit(funded, params)
    return SlashAmounts(slashed, finder, funded, to_pot, to_treasury)


def epoch_rewards(
    pots: Mapping[int, int], work: Mapping[tuple[int, int], int], *, ended_before: int | None = None
) -> tuple[dict[int, int], dict[int, int]]:
    """Rewards each provider can claim for the ended epochs.

    ``RewardPool``: a provider's share of an ended epoch is ``pot(e) * work(e, p) // totalWork(e)``; an ended
    epoch without work has its pot rolled into the next epoch (``rollover``, called during the next epoch).

    Args:
        pots: Epoch -> wei credited to its pot (fees less treasury, slashes' remainders less treasury).
        work: ``(provider, epoch)`` -> gross voucher amount redeemed by the provider in that epoch.
        ended_before: Only epochs below this have ended (None: every epoch given has ended).

    Returns:
        ``(rewards, pots_final)``: provider -> total claimable wei; epoch -> its pot after rollovers (what the
        contract's ``epochOf(e).pot`` holds at the end; a rolled-over epoch has 0).
    """
    totals: dict[int, int] = {}
    for (_, e), w in work.items():
        totals[e] = totals.get(e, 0) + _wei("work", w)
    epochs = sorted(set(pots) | set(totals))
    final: dict[int, int] = {}
    carry = 0
    last = epochs[-1] if epochs else 0
    for e in range(epochs[0] if epochs else 0, last + 1):
        pot = _wei("pot", pots.get(e, 0)) + carry
        carry = 0
        ended = ended_before is None or e < ended_before
        if totals.get(e, 0) == 0 and ended and e < last:
            final[e] = 0
            carry = pot
        else:
            final[e] = pot
    rewards: dict[int, int] = {}
    for (provider, e), w in sorted(work.items()):
        if w == 0 or (ended_before is not None and e >= ended_before):
            continue
        share = final[e] * w // totals[e]
        rewards[provider] = rewards.get(provider, 0) + share
    return rewards, final


@dataclass(frozen=True, slots=True)
class Redemption:
    """One provider's ``redeemBatch`` of its clients' vouchers for the jobs that finished in one epoch.

    Attributes:
        epoch: The epoch the batch is redeemed in (that of its jobs).
        t: Simulated time of the redemption (just before the epoch ends, or the end of the run).
        provider: Provider index in the world.
        amount_wei: Gross amount (sum over clients), the work credited for rewards.
        jobs: Jobs covered (the registry's completed counter moves by this).
        fee_wei: ``amount * fee_bps // BPS`` (to the reward pool).
        payout_wei: ``amount - fee``, to the provider.
        to_pot_wei: Of the fee, to the epoch's pot.
        to_treasury_wei: Of the fee, to the treasury.
        per_client: Client index -> ``(amount_wei, jobs)`` in this batch (the increase of its cumulative
            voucher to this provider).
        cumulative: Client index -> ``(cumulative_amount_wei, cumulative_jobs)`` of the voucher redeemed.
        kind: Always ``"redeem"``.
    """

    epoch: int
    t: float
    provider: int
    amount_wei: int
    jobs: int
    fee_wei: int
    payout_wei: int
    to_pot_wei: int
    to_treasury_wei: int
    per_client: Mapping[int, tuple[int, int]]
    cumulative: Mapping[int, tuple[int, int]]
    kind: Literal["redeem"] = "redeem"


@dataclass(frozen=True, slots=True)
class SlashEvent:
    """One proven fault and the slash it caused.

    Attributes:
        t: Simulated time of the proof.
        epoch: Its epoch (the pot the remainder funds).
        provider: Provider index.
        job: Job index in the arrivals (-1 for a canary, which is not a client job).
        fault: ``invalid_result`` or ``canary``.
        slashable_wei: Slashable stake before the slash.
        slashed_wei: Taken.
        finder_reward_wei: To the finder (the gateway).
        funded_wei: To the reward pool.
        to_pot_wei: Of ``funded_wei``, to the epoch's pot.
        to_treasury_wei: Of ``funded_wei``, to the treasury.
        stake_after_wei: The provider's stake after the slash.
        honest: Whether the provider was honest (an honest provider must never be slashed).
        kind: Always ``"slash"``.
    """

    t: float
    epoch: int
    provider: int
    job: int
    fault: str
    slashable_wei: int
    slashed_wei: int
    finder_reward_wei: int
    funded_wei: int
    to_pot_wei: int
    to_treasury_wei: int
    stake_after_wei: int
    honest: bool
    kind: Literal["slash"] = "slash"


@dataclass
class Ledger:
    """The model's money, updated as the simulation settles and slashes (the engine owns one).

    Args:
        params: Deployment parameters.
        stakes: Initial stake per provider (wei).
        honest: Whether each provider is honest (recorded with each slash).

    Attributes:
        stake: Current stake per provider.
        payout: Voucher payouts received per provider.
        fees: Fees paid on each provider's redemptions.
        slashed: Total slashed per provider.
        work: ``(provider, epoch)`` -> gross amount redeemed.
        pots: Epoch -> pot credits (before rollovers).
        treasury: Treasury credits.
        finder_rewards: Finder rewards paid (to the gateway).
        settlements: Redemptions and slashes in time order.
    """

    params: DeployParameters
    stakes: Iterable[int]
    honest: Iterable[bool]
    stake: list[int] = field(init=False)
    is_honest: list[bool] = field(init=False)
    payout: list[int] = field(init=False)
    fees: list[int] = field(init=False)
    slashed: list[int] = field(init=False)
    work: dict[tuple[int, int], int] = field(init=False, default_factory=dict)
    pots: dict[int, int] = field(init=False, default_factory=dict)
    treasury: int = field(init=False, default=0)
    finder_rewards: int = field(init=False, default=0)
    settlements: list[Redemption | SlashEvent] = field(init=False, default_factory=list)
    _cumulative: dict[tuple[int, int], tuple[int, int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.stake = [_wei("stake", int(s)) for s in self.stakes]
        self.is_honest = [bool(h) for h in self.honest]
        if len(self.is_honest) != len(self.stake):
            raise EconomicsError("honest", len(self.is_honest), f"one flag per provider ({len(self.stake)})")
        n = len(self.stake)
        self.payout = [0] * n
        self.fees = [0] * n
        self.slashed = [0] * n

    def active(self, provider: int) -> bool:
        """``ProviderRegistry.isActiveProvider``: stake at least ``min_provider_stake``."""
        return self.stake[provider] >= self.params.min_provider_stake

    def redeem(
        self, t: float, epoch: int, provider: int, per_client: Mapping[int, tuple[int, int]]
    ) -> Redemption:
        """Redeem one provider's vouchers of one epoch (one ``redeemBatch``).

        Args:
            t: Simulated time.
            epoch: The epoch it happens in.
            provider: Provider index.
            per_client: Client -> ``(amount_wei, jobs)`` since the previous redemption.

        Returns:
            The record (also appended to :attr:`settlements`).
        """
        amount = sum(a for a, _ in per_client.values())
        jobs = sum(j for _, j in per_client.values())
        payout, fee = redeem_split(amount, self.params)
        to_pot, to_treasury = pool_credit(fee, self.params)
        cumulative: dict[int, tuple[int, int]] = {}
        for client in sorted(per_client):
            a, j = per_client[client]
            ca, cj = self._cumulative.get((client, provider), (0, 0))
            cumulative[client] = self._cumulative[(client, provider)] = (ca + a, cj + j)
        self.payout[provider] += payout
        self.fees[provider] += fee
        if amount:
            self.work[(provider, epoch)] = self.work.get((provider, epoch), 0) + amount
        self.pots[epoch] = self.pots.get(epoch, 0) + to_pot
        self.treasury += to_treasury
        record = Redemption(
            epoch=epoch,
            t=t,
            provider=provider,
            amount_wei=amount,
            jobs=jobs,
            fee_wei=fee,
            payout_wei=payout,
            to_pot_wei=to_pot,
            to_treasury_wei=to_treasury,
            per_client={c: per_client[c] for c in sorted(per_client)},
            cumulative=cumulative,
        )
        self.settlements.append(record)
        return record

    def slash(self, t: float, epoch: int, provider: int, job: int, fault: FaultKind) -> SlashEvent | None:
        """Slash ``provider`` for a proven fault (None, and nothing happens, if it has no stake left).

        Returns:
            The record (also appended to :attr:`settlements`).
        """
        slashable = self.stake[provider]
        amounts = fault_slash(slashable, self.params, kind=fault)
        if amounts.slashed == 0:
            return None  # FaultNothingToSlash: the contract refuses the proof
        self.stake[provider] = slashable - amounts.slashed
        self.slashed[provider] += amounts.slashed
        self.finder_rewards += amounts.finder_reward
        self.pots[epoch] = self.pots.get(epoch, 0) + amounts.to_pot
        self.treasury += amounts.to_treasury
        record = SlashEvent(
            t=t,
            epoch=epoch,
            provider=provider,
            job=job,
            fault=fault,
            slashable_wei=slashable,
            slashed_wei=amounts.slashed,
            finder_reward_wei=amounts.finder_reward,
            funded_wei=amounts.funded,
            to_pot_wei=amounts.to_pot,
            to_treasury_wei=amounts.to_treasury,
            stake_after_wei=self.stake[provider],
            honest=self.is_honest[provider],
        )
        self.settlements.append(record)
        return record

    def rewards(self, *, ended_before: int | None = None) -> tuple[dict[int, int], dict[int, int]]:
        """:func:`epoch_rewards` of everything so far: ``(provider -> reward, epoch -> final pot)``."""
        return epoch_rewards(self.pots, self.work, ended_before=ended_before)
