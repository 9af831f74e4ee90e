"""The contracts' money rules as the model computes them: rounding where the contracts round, parameters
from DeployParameters, reward epochs with rollover, and the Ledger's bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxima.sdk.deploy import DeployParameters
from proxima.sim.economics import (
    BPS,
    EconomicsError,
    Ledger,
    epoch_of,
    epoch_rewards,
    fault_slash,
    pool_credit,
    redeem_split,
)

ETH = 10**18
DEFAULTS = DeployParameters()


def test_redeem_split_rounds_the_fee_down_like_the_vouchers_contract() -> None:
    assert redeem_split(10_000, DEFAULTS) == (9_800, 200)
    assert redeem_split(49, DEFAULTS) == (49, 0)  # 49 * 200 // 10_000 == 0
    assert redeem_split(51, DEFAULTS) == (50, 1)
    assert redeem_split(0, DEFAULTS) == (0, 0)
    assert redeem_split(10**6, DeployParameters(fee_bps=0)) == (10**6, 0)


def test_pool_credit_splits_off_the_treasury_per_deposit() -> None:
    assert pool_credit(1_000, DEFAULTS) == (900, 100)
    assert pool_credit(9, DEFAULTS) == (9, 0)
    # per-deposit rounding: two deposits of 9 are not one of 18
    assert pool_credit(18, DEFAULTS) == (17, 1)


def test_fault_slash_takes_its_share_of_the_slashable_stake_and_pays_the_finder() -> None:
    amounts = fault_slash(3 * ETH, DEFAULTS)
    assert amounts.slashed == 3 * ETH // 2
    assert amounts.finder_reward == amounts.slashed // 2
    assert amounts.funded == amounts.slashed - amounts.finder_reward
    assert (amounts.to_pot, amounts.to_treasury) == pool_credit(amounts.funded, DEFAULTS)
    params = DeployParameters(fault_slash_bps=1_000, equivocation_slash_bps=9_000, finder_share_bps=0)
    assert fault_slash(1_000, params).slashed == 100
    assert fault_slash(1_000, params, kind="canary").slashed == 100
    assert fault_slash(1_000, params, kind="equivocation").slashed == 900
    assert fault_slash(1_000, params).finder_reward == 0
    assert fault_slash(0, DEFAULTS).slashed == 0


@given(st.integers(0, 2**128), st.integers(1, BPS), st.integers(0, BPS), st.integers(0, BPS))
def test_slash_never_exceeds_the_stake_and_conserves_value(
    stake: int, bps: int, finder: int, treasury: int
) -> None:
    params = DeployParameters(fault_slash_bps=bps, finder_share_bps=finder, treasury_bps=treasury)
    a = fault_slash(stake, params)
    assert 0 <= a.slashed <= stake
    assert a.finder_reward + a.funded == a.slashed
    assert a.to_pot + a.to_treasury == a.funded


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: redeem_split(-1, DEFAULTS), "amount"),
        (lambda: redeem_split(1.5, DEFAULTS), "amount"),  # type: ignore[arg-type]
        (lambda: pool_credit(True, DEFAULTS), "value"),
        (lambda: fault_slash(-5, DEFAULTS), "slashable"),
        (lambda: fault_slash(5, DEFAULTS, kind="timeout"), "kind"),  # type: ignore[arg-type]
        (lambda: epoch_of(-1.0, DEFAULTS), "t"),
    ],
)
def test_bad_amounts_are_refused_naming_the_argument(call: object, name: str) -> None:
    with pytest.raises(EconomicsError, match=f"^{name} must be"):
        call()  # type: ignore[operator]


def test_epochs_are_whole_epoch_lengths_from_genesis() -> None:
    params = DeployParameters(epoch_length=10)
    assert [epoch_of(t, params) for t in (0.0, 9.999, 10.0, 25.0)] == [0, 0, 1, 2]


def test_epoch_rewards_are_pro_rata_rounded_down_with_rollover() -> None:
    pots = {0: 1_000, 1: 300, 2: 99}
    work = {(7, 0): 1, (8, 0): 2, (7, 2): 5, (9, 2): 5}
    rewards, final = epoch_rewards(pots, work)
    # epoch 0: 1000 * 1 // 3 = 333, 1000 * 2 // 3 = 666; epoch 1 has no work: rolls into 2 (399)
    assert final == {0: 1_000, 1: 0, 2: 399}
    assert rewards == {7: 333 + 199, 8: 666, 9: 199}
    # an epoch that has not ended pays nothing yet and rolls nothing
    pending, final_pending = epoch_rewards(pots, work, ended_before=2)
    assert pending == {7: 333, 8: 666}
    assert final_pending[2] == 399


def test_ledger_books_redemptions_and_slashes() -> None:
    params = DeployParameters(epoch_length=10)
    ledger = Ledger(params, [2 * ETH, 3 * ETH // 2], [True, False])
    r = ledger.redeem(9.9, 0, 0, {5: (10_000, 3), 2: (5_000, 1)})
    assert (r.amount_wei, r.jobs, r.fee_wei, r.payout_wei) == (15_000, 4, 300, 14_700)
    assert list(r.per_client) == [2, 5]
    assert r.cumulative == {2: (5_000, 1), 5: (10_000, 3)}
    again = ledger.redeem(19.9, 1, 0, {5: (1_000, 1)})
    assert again.cumulative == {5: (11_000, 4)}
    s = ledger.slash(12.0, 1, 1, 42, "invalid_result")
    assert s is not None
    assert (s.slashable_wei, s.slashed_wei, s.stake_after_wei, s.honest) == (
        3 * ETH // 2,
        3 * ETH // 4,
        3 * ETH // 4,
        False,
    )
    assert not ledger.active(1)
    assert ledger.active(0)
    assert ledger.pots == {0: 270, 1: 18 + s.to_pot_wei}
    assert ledger.treasury == 30 + 2 + s.to_treasury_wei
    assert ledger.work == {(0, 0): 15_000, (0, 1): 1_000}
    rewards, _ = ledger.rewards()
    assert rewards == {0: 270 + 18 + s.to_pot_wei}
    # nothing left to slash: the contract would refuse, the model does nothing
    empty = Ledger(params, [0], [False])
    assert empty.slash(1.0, 0, 0, 1, "canary") is None
    assert empty.settlements == []
    with pytest.raises(EconomicsError, match="honest"):
        Ledger(params, [1, 2], [True])
