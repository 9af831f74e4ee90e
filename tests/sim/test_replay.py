"""The model's money agrees with the real contracts on py-evm (sim/replay.py).

A small simulated world (real data, the real matching engine, cheaters) is run once; a sample of its
providers (with a slashed cheater) and their clients is replayed onto freshly deployed contracts and every
number must agree. A deliberately wrong model number must be reported, and plans that cannot be replayed
are refused with the step named.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

from proxima.sdk.deploy import DeployParameters
from proxima.sim.arrivals import replay_trace
from proxima.sim.data import load_world_data
from proxima.sim.economics import Ledger, Redemption, SlashEvent
from proxima.sim.engine import SimConfig, SimResult, simulate
from proxima.sim.replay import (
    ReplayError,
    ReplayReport,
    choose_sample,
    execute_plan,
    plan_sample,
    replay_sample,
)
from proxima.sim.world import World, WorldConfig, build_world

ETH = 10**18
SEED = 3


@pytest.fixture(scope="module")
def run() -> tuple[World, SimResult]:
    """A 24-provider world with a fifth cheating, 2,500 jobs placed by Proxima."""
    world = build_world(
        load_world_data(), WorldConfig(providers=24, clients=40, seed=SEED, cheater_share=0.2)
    )
    arrivals = replay_trace(world, 2_500, seed=SEED)
    result = simulate(world, arrivals, SimConfig(policy="proxima", seed=SEED, check_share=0.2))
    assert result.slashes > 0, "the fixture must slash a cheater for the replay to prove slashing"
    return world, result


@pytest.fixture(scope="module")
def replayed(run: tuple[World, SimResult]) -> ReplayReport:
    world, result = run
    return replay_sample(result, world, sample=4, seed=SEED)


def test_replay_agrees_with_contracts_on_every_number(replayed: ReplayReport) -> None:
    assert replayed.mismatches == []
    assert replayed.conserved
    assert replayed.ok
    assert len(replayed.providers) == 4
    assert replayed.cheaters, "a slashed cheater is in the sample"
    assert replayed.redemptions > 0
    assert replayed.slashes > 0
    assert replayed.jobs > 0
    quantities = {c.quantity for c in replayed.comparisons}
    for needed in (
        "payout_wei",
        "fees_wei",
        "stake_wei",
        "total_slashed_wei",
        "rewards_claimed_wei",
        "eth_received_wei",
        "finder_rewards_wei",
        "treasury_wei",
        "pool_left_wei",
        "slashed_wei",
        "finder_reward_wei",
        "run payout_wei",
        "run stake_wei",
    ):
        assert needed in quantities, needed
    rewards = [c for c in replayed.comparisons if c.quantity == "rewards_claimed_wei"]
    assert any(c.chain > 0 for c in rewards), "rewards were actually claimed"
    assert "agree" in replayed.summary()
    assert "disagree" not in replayed.summary()


def test_replay_is_deterministic_in_its_sample(run: tuple[World, SimResult], replayed: ReplayReport) -> None:
    _, result = run
    assert choose_sample(result.settlements, sample=4, seed=SEED) == replayed.providers
    assert set(replayed.cheaters) <= set(replayed.providers)


def test_wrong_model_numbers_are_reported(run: tuple[World, SimResult], replayed: ReplayReport) -> None:
    world, result = run
    cheater = replayed.cheaters[0]
    honest = next(p for p in replayed.providers if p not in replayed.cheaters)
    wrong = copy.copy(result)
    # one wei more payout in the run's arrays for an honest provider ...
    payouts = result.provider_payout_wei.copy()
    payouts[honest] = int(payouts[honest]) + 1
    wrong.provider_payout_wei = payouts
    # ... and a slash record that claims 1 wei more than the contract takes
    settlements = list(result.settlements)
    index = next(i for i, r in enumerate(settlements) if isinstance(r, SlashEvent) and r.provider == cheater)
    record = settlements[index]
    assert isinstance(record, SlashEvent)
    settlements[index] = dataclasses.replace(record, slashed_wei=record.slashed_wei + 1)
    wrong.settlements = settlements

    report = replay_sample(wrong, world, sample=4, seed=SEED)

    assert not report.ok
    found = {(c.subject, c.quantity, c.model - c.chain) for c in report.mismatches}
    assert (f"provider {honest}", "run payout_wei", 1) in found
    assert any(q == "slashed_wei" and d == 1 and s.startswith("slash ") for s, q, d in found)
    assert (f"provider {cheater}", "total_slashed_wei", 1) in found
    assert len(report.mismatches) == 3
    assert "disagree (3 mismatches)" in report.summary()
    assert report.to_dict()["ok"] is False


def test_hand_ledger_with_canary_and_rollover_agrees() -> None:
    """The economics ledger's records (no simulator) with a canary, repeated slashes and an epoch of slash
    without work (its pot is rolled over) agree with the contracts to the wei."""
    params = DeployParameters(epoch_length=3_600)
    ledger = Ledger(params, [2 * ETH, 3 * ETH, 5 * ETH], [True, False, True])
    ledger.redeem(100, 0, 0, {0: (10**16 + 7, 3), 1: (2 * 10**16 + 3, 5)})
    ledger.redeem(100, 0, 1, {0: (5 * 10**15 + 1, 2)})
    ledger.slash(200, 0, 1, 5, "invalid_result")
    ledger.slash(3_700, 1, 1, -1, "canary")
    ledger.redeem(7_000, 1, 0, {0: (3 * 10**16 + 11, 4)})
    ledger.slash(7_300, 2, 1, 9, "invalid_result")  # epoch 2: a slash, no work -> rolled into epoch 3
    ledger.redeem(14_000, 3, 2, {2: (7 * 10**16 + 13, 4)})
    plan = plan_sample(
        ledger.settlements,
        [2 * ETH, 3 * ETH, 5 * ETH],
        params,
        providers=[0, 1, 2],
        seed=1,
        job_client={5: 1},
    )
    report = execute_plan(plan)
    assert report.ok, report.mismatches
    assert report.chain_epoch_s == 3_600 == report.model_epoch_s
    pots = {c.subject: c.chain for c in report.comparisons if c.quantity == "pot_wei"}
    assert pots["epoch 2"] == 0
    assert pots["epoch 3"] > 0
    rewards, _ = ledger.rewards()
    claimed = {c.subject: c.chain for c in report.comparisons if c.quantity == "rewards_claimed_wei"}
    assert claimed == {f"provider {p}": rewards.get(p, 0) for p in range(3)}
    stakes = {c.subject: c.chain for c in report.comparisons if c.quantity == "stake_wei"}
    assert stakes["provider 1"] == ledger.stake[1] < 3 * ETH // 4


def test_short_model_epochs_are_lengthened_on_chain_only() -> None:
    params = DeployParameters(epoch_length=5)
    ledger = Ledger(params, [2 * ETH], [True])
    ledger.redeem(4, 0, 0, {c: (10**15 + c, 1) for c in range(6)})
    ledger.redeem(9, 1, 0, {c: (10**15, 1) for c in range(6)})
    plan = plan_sample(ledger.settlements, [2 * ETH], params, providers=[0], seed=2)
    assert plan.chain_params().epoch_length > 5
    assert plan.chain_params().model_copy(update={"epoch_length": 5}) == params
    report = execute_plan(plan)
    assert report.ok
    assert report.model_epoch_s == 5
    assert report.chain_epoch_s > 5


def test_bad_samples_and_plans_are_refused_naming_the_problem() -> None:
    params = DeployParameters()
    ledger = Ledger(params, [2 * ETH, ETH // 2], [True, True])
    ledger.redeem(1, 0, 0, {0: (10**16, 1)})
    with pytest.raises(ReplayError, match="at least 1 provider"):
        choose_sample(ledger.settlements, sample=0, seed=1)
    with pytest.raises(ReplayError, match="provider 7 is not in the world"):
        plan_sample(ledger.settlements, [2 * ETH, ETH // 2], params, providers=[7], seed=1)
    with pytest.raises(ReplayError, match="no provider"):
        plan_sample(ledger.settlements, [2 * ETH], params, providers=[], seed=1)
    # a stake below the registry's minimum cannot be registered
    low = plan_sample(ledger.settlements, [2 * ETH, ETH // 2], params, providers=[1], seed=1)
    with pytest.raises(ReplayError, match=r"provider 1 stake .* < minimum"):
        execute_plan(low)
    # a voucher that does not grow is refused before anything is sent
    plan = plan_sample(ledger.settlements, [2 * ETH], params, providers=[0], seed=1)
    record = plan.settlements[0]
    assert isinstance(record, Redemption)
    shrunk = dataclasses.replace(plan, settlements=(record, record))
    with pytest.raises(ReplayError, match="does not grow"):
        execute_plan(shrunk)
    poor = dataclasses.replace(plan, clients={0: 1})
    with pytest.raises(ReplayError, match="client 0 deposits 1 but owes"):
        execute_plan(poor)
