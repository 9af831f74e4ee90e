"""ProviderRegistry: registration with on-chain peer-id binding, staking, unbonding, slashing, counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _support import ETH, PROVIDER_STAKE, VERIFIER_STAKE, block_time, gas_cost, reverts
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from proxima.sdk.bindings import Role
from proxima.sdk.peerid import peer_id_from_key

if TYPE_CHECKING:
    from conftest import System  # tests/contracts/conftest.py


ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
SECP256K1_P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
PREFIX = bytes.fromhex("002508021221")
META = b"\x42" * 32
REASON = b"TEST_REASON".ljust(32, b"\x00")
REF = b"\x07" * 32
MAX_UINT256 = 2**256 - 1
SLASHER_ROLE = keccak(text="SLASHER_ROLE")
PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]


def peer_id(account: LocalAccount) -> bytes:
    return peer_id_from_key(bytes(account.key))


def event_names(px: System, receipt: Any) -> list[str]:
    return [e.name for e in px.c.events(receipt)]


def only_event(px: System, receipt: Any, name: str) -> dict[str, Any]:
    found = [e for e in px.c.events(receipt) if e.name == name]
    assert len(found) == 1, event_names(px, receipt)
    return found[0].args


def x_not_on_curve() -> int:
    """The smallest x for which x^3 + 7 has no square root mod p (no point with that x)."""
    x = 1
    while pow((x**3 + 7) % SECP256K1_P, (SECP256K1_P - 1) // 2, SECP256K1_P) == 1:
        x += 1
    return x


def grant_slasher(px: System, member: LocalAccount) -> None:
    px.c.registry.grant_role(px.admin, SLASHER_ROLE, member.address)


# --- constructor parameters and views ---------------------------------------------------------


def test_parameters_match_deployment(px: System) -> None:
    r = px.c.registry
    assert r.min_provider_stake() == px.params.min_provider_stake
    assert r.min_verifier_stake() == px.params.min_verifier_stake
    assert r.unbonding_delay() == px.params.unbonding_delay
    assert r.role_id("SLASHER_ROLE") == SLASHER_ROLE
    assert r._call("escrowRecorder") == px.c.escrow.address.lower()
    assert r._call("voucherRecorder") == px.c.vouchers.address.lower()


def test_reward_pool_is_the_deployed_pool_as_checksummed_address(px: System) -> None:
    """The binding returns ``Address`` (EIP-55), so it compares equal to the deployment's addresses."""
    assert px.c.registry.reward_pool() == px.c.rewards.address


def test_account_of_unknown_is_all_zero(px: System) -> None:
    account = px.c.registry.account_of(px.outsider.address)
    assert account.role == Role.NONE
    assert account.model_dump() == {k: 0 for k in account.model_dump()}
    assert not px.c.registry.is_active_provider(px.outsider.address)
    assert not px.c.registry.is_active_verifier(px.outsider.address)
    assert px.c.registry.slashable_of(px.outsider.address) == 0


def test_totals_reflect_fixture_registrations(px: System) -> None:
    expected = PROVIDER_STAKE * len(px.providers) + VERIFIER_STAKE * len(px.verifiers)
    assert px.c.registry.total_staked() == expected
    assert px.c.registry.total_unbonding() == 0
    assert px.chain.balance(px.c.registry.address) == expected
    px.assert_conserved()


# --- register ---------------------------------------------------------------------------------


def test_register_stores_provider_and_emits_event(px: System) -> None:
    who = px.clients[0]
    before_total = px.c.registry.total_staked()
    before_held = px.chain.balance(px.c.registry.address)
    receipt = px.c.registry.register(who, peer_id(who), META, 3 * ETH)

    account = px.c.registry.account_of(who.address)
    assert account.role == Role.PROVIDER
    assert account.stake == 3 * ETH
    assert account.unbonding == 0
    assert account.registered_at == block_time(px, receipt)
    assert account.unbond_ready_at == 0
    assert px.c.registry.is_active_provider(who.address)
    assert not px.c.registry.is_active_verifier(who.address)
    assert px.c.registry.slashable_of(who.address) == 3 * ETH
    assert px.c.registry.total_staked() == before_total + 3 * ETH
    assert px.chain.balance(px.c.registry.address) == before_held + 3 * ETH
    assert only_event(px, receipt, "ProviderRegistered") == {
        "account": who.address,
        "peerId": peer_id(who),
        "metadataHash": META,
        "stake": 3 * ETH,
    }
    px.assert_conserved()


def test_register_accepts_exactly_the_minimum_stake(px: System) -> None:
    who = px.clients[0]
    px.c.registry.register(who, peer_id(who), META, px.params.min_provider_stake)
    assert px.c.registry.is_active_provider(who.address)


def test_register_rejects_peer_id_of_another_key(px: System) -> None:
    who, other = px.clients[0], px.clients[1]
    with reverts("RegistryPeerIdMismatch", {"account": who.address, "keyAddress": other.address}):
        px.c.registry.register(who, peer_id(other), META, 2 * ETH)
    assert px.c.registry.account_of(who.address).role == Role.NONE


def _malformed_peer_ids() -> list[Any]:
    good = peer_id_from_key(b"\x01" * 32)
    return [
        pytest.param(b"", id="empty"),
        pytest.param(good[:38], id="38-bytes"),
        pytest.param(good + b"\x00", id="40-bytes"),
        pytest.param(b"\x01" + good[1:], id="not-identity-multihash"),
        pytest.param(good[:3] + b"\x01" + good[4:], id="ed25519-key-type"),
        pytest.param(good[:5] + b"\x20" + good[6:], id="wrong-data-length"),
        pytest.param(good[:6] + b"\x04" + good[7:], id="parity-byte-4"),
        pytest.param(good[:6] + b"\x00" + good[7:], id="parity-byte-0"),
        pytest.param(PREFIX + b"\x02" + x_not_on_curve().to_bytes(32, "big"), id="x-not-on-curve"),
        pytest.param(PREFIX + b"\x02" + SECP256K1_P.to_bytes(32, "big"), id="x-equal-p"),
        pytest.param(PREFIX + b"\x03" + b"\xff" * 32, id="x-above-p"),
    ]


@pytest.mark.parametrize("bad", _malformed_peer_ids())
def test_register_rejects_malformed_peer_id(px: System, bad: bytes) -> None:
    who = px.clients[0]
    with reverts("RegistryInvalidPeerId", {"peerId": bad}):
        px.c.registry.register(who, bad, META, 2 * ETH)
    assert px.c.registry.account_of(who.address).role == Role.NONE


def test_register_accepts_peer_id_with_either_parity(px: System) -> None:
    """Keys whose compressed form starts with 0x02 and 0x03 both bind to the sender."""
    parities = set()
    for who in (px.clients[0], px.clients[1], px.outsider):
        pid = peer_id(who)
        parities.add(pid[6])
        px.c.registry.register(who, pid, META, ETH)
        assert px.c.registry.is_active_provider(who.address)
    if parities != {2, 3}:  # the dev keys happen to cover both; make sure the test stays meaningful
        pytest.fail(f"dev keys only cover parity bytes {parities}")


@pytest.mark.parametrize("stake", [0, 1, ETH - 1])
def test_register_rejects_below_min_stake(px: System, stake: int) -> None:
    who = px.clients[0]
    with reverts(
        "RegistryInsufficientStake",
        {"account": who.address, "provided": stake, "required": px.params.min_provider_stake},
    ):
        px.c.registry.register(who, peer_id(who), META, stake)


def test_register_rejects_already_registered_provider(px: System) -> None:
    who = px.providers[0]
    with reverts("RegistryAlreadyRegistered", {"account": who.address}):
        px.c.registry.register(who, peer_id(who), META, 2 * ETH)
    assert px.c.registry.account_of(who.address).stake == PROVIDER_STAKE


def test_register_rejects_registered_verifier(px: System) -> None:
    who = px.verifiers[0]
    with reverts("RegistryAlreadyRegistered", {"account": who.address}):
        px.c.registry.register(who, peer_id(who), META, 2 * ETH)
    assert px.c.registry.account_of(who.address).role == Role.VERIFIER


# --- registerVerifier -------------------------------------------------------------------------


def test_register_verifier_stores_verifier_and_emits_event(px: System) -> None:
    who = px.clients[0]
    before = px.c.registry.total_staked()
    receipt = px.c.registry.register_verifier(who, META, px.params.min_verifier_stake)
    account = px.c.registry.account_of(who.address)
    assert account.role == Role.VERIFIER
    assert account.stake == px.params.min_verifier_stake
    assert account.registered_at == block_time(px, receipt)
    assert px.c.registry.is_active_verifier(who.address)
    assert not px.c.registry.is_active_provider(who.address)
    assert px.c.registry.total_staked() == before + px.params.min_verifier_stake
    assert only_event(px, receipt, "VerifierRegistered") == {
        "account": who.address,
        "metadataHash": META,
        "stake": px.params.min_verifier_stake,
    }
    px.assert_conserved()


def test_register_verifier_rejects_below_min_stake(px: System) -> None:
    who = px.clients[0]
    stake = px.params.min_verifier_stake - 1
    with reverts(
        "RegistryInsufficientStake",
        {"account": who.address, "provided": stake, "required": px.params.min_verifier_stake},
    ):
        px.c.registry.register_verifier(who, META, stake)


@pytest.mark.parametrize("group", ["providers", "verifiers"])
def test_register_verifier_rejects_already_registered(px: System, group: str) -> None:
    who = getattr(px, group)[0]
    with reverts("RegistryAlreadyRegistered", {"account": who.address}):
        px.c.registry.register_verifier(who, META, 3 * ETH)


# --- updateMetadata ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["providers", "verifiers"])
def test_update_metadata_emits_event(px: System, group: str) -> None:
    who = getattr(px, group)[0]
    before = px.c.registry.account_of(who.address)
    receipt = px.c.registry.update_metadata(who, b"\x99" * 32)
    assert only_event(px, receipt, "MetadataUpdated") == {
        "account": who.address,
        "metadataHash": b"\x99" * 32,
    }
    assert px.c.registry.account_of(who.address) == before


def test_update_metadata_rejects_unregistered(px: System) -> None:
    with reverts("RegistryNotRegistered", {"account": px.outsider.address}):
        px.c.registry.update_metadata(px.outsider, META)


# --- topUp ------------------------------------------------------------------------------------


def test_top_up_adds_to_stake(px: System) -> None:
    who = px.providers[0]
    receipt = px.c.registry.top_up(who, 2 * ETH)
    assert px.c.registry.account_of(who.address).stake == PROVIDER_STAKE + 2 * ETH
    assert only_event(px, receipt, "StakeIncreased") == {
        "account": who.address,
        "amount": 2 * ETH,
        "newStake": PROVIDER_STAKE + 2 * ETH,
    }
    expected_total = PROVIDER_STAKE * 3 + VERIFIER_STAKE * 3 + 2 * ETH
    assert px.c.registry.total_staked() == expected_total
    px.assert_conserved()


def test_top_up_reactivates_provider_below_minimum(px: System) -> None:
    who = px.providers[0]
    px.c.registry.request_unbond(who, PROVIDER_STAKE)
    assert not px.c.registry.is_active_provider(who.address)
    px.c.registry.top_up(who, px.params.min_provider_stake)
    assert px.c.registry.is_active_provider(who.address)


def test_top_up_rejects_zero(px: System) -> None:
    with reverts("RegistryZeroAmount", {}):
        px.c.registry.top_up(px.providers[0], 0)


def test_top_up_rejects_unregistered(px: System) -> None:
    with reverts("RegistryNotRegistered", {"account": px.outsider.address}):
        px.c.registry.top_up(px.outsider, ETH)


# --- requestUnbond ----------------------------------------------------------------------------


def test_request_unbond_moves_stake_to_unbonding(px: System) -> None:
    who = px.providers[0]
    total_before = px.c.registry.total_staked()
    receipt = px.c.registry.request_unbond(who, 4 * ETH)
    ready_at = block_time(px, receipt) + px.params.unbonding_delay

    account = px.c.registry.account_of(who.address)
    assert account.stake == PROVIDER_STAKE - 4 * ETH
    assert account.unbonding == 4 * ETH
    assert account.unbond_ready_at == ready_at
    assert px.c.registry.slashable_of(who.address) == PROVIDER_STAKE
    assert px.c.registry.total_staked() == total_before - 4 * ETH
    assert px.c.registry.total_unbonding() == 4 * ETH
    assert only_event(px, receipt, "UnbondRequested") == {
        "account": who.address,
        "amount": 4 * ETH,
        "totalUnbonding": 4 * ETH,
        "readyAt": ready_at,
    }
    px.assert_conserved()


def test_request_unbond_again_accumulates_and_restarts_delay(px: System) -> None:
    who = px.providers[0]
    px.c.registry.request_unbond(who, ETH)
    px.chain.advance_time(1_000)
    receipt = px.c.registry.request_unbond(who, 2 * ETH)
    ready_at = block_time(px, receipt) + px.params.unbonding_delay
    account = px.c.registry.account_of(who.address)
    assert account.unbonding == 3 * ETH
    assert account.unbond_ready_at == ready_at
    assert only_event(px, receipt, "UnbondRequested")["totalUnbonding"] == 3 * ETH


def test_request_unbond_of_whole_stake_is_allowed(px: System) -> None:
    who = px.providers[0]
    px.c.registry.request_unbond(who, PROVIDER_STAKE)
    account = px.c.registry.account_of(who.address)
    assert (account.stake, account.unbonding) == (0, PROVIDER_STAKE)
    assert account.role == Role.PROVIDER


def test_request_unbond_rejects_zero(px: System) -> None:
    with reverts("RegistryZeroAmount", {}):
        px.c.registry.request_unbond(px.providers[0], 0)


@pytest.mark.parametrize("amount", [PROVIDER_STAKE + 1, MAX_UINT256])
def test_request_unbond_rejects_more_than_stake(px: System, amount: int) -> None:
    who = px.providers[0]
    with reverts(
        "RegistryUnbondExceedsStake",
        {"account": who.address, "requested": amount, "staked": PROVIDER_STAKE},
    ):
        px.c.registry.request_unbond(who, amount)


def test_request_unbond_rejects_amount_already_unbonding(px: System) -> None:
    """Unbonding stake no longer counts as stake: it cannot be unbonded twice."""
    who = px.providers[0]
    px.c.registry.request_unbond(who, 6 * ETH)
    with reverts(
        "RegistryUnbondExceedsStake",
        {"account": who.address, "requested": 5 * ETH, "staked": 4 * ETH},
    ):
        px.c.registry.request_unbond(who, 5 * ETH)


def test_request_unbond_rejects_unregistered(px: System) -> None:
    with reverts("RegistryNotRegistered", {"account": px.outsider.address}):
        px.c.registry.request_unbond(px.outsider, 1)


def test_is_active_provider_false_after_unbonding_below_minimum(px: System) -> None:
    who = px.providers[0]
    minimum = px.params.min_provider_stake
    px.c.registry.request_unbond(who, PROVIDER_STAKE - minimum)
    assert px.c.registry.is_active_provider(who.address)  # exactly the minimum is still active
    px.c.registry.request_unbond(who, 1)
    assert not px.c.registry.is_active_provider(who.address)


def test_is_active_verifier_false_after_unbonding_below_minimum(px: System) -> None:
    who = px.verifiers[0]
    minimum = px.params.min_verifier_stake
    px.c.registry.request_unbond(who, VERIFIER_STAKE - minimum)
    assert px.c.registry.is_active_verifier(who.address)
    px.c.registry.request_unbond(who, 1)
    assert not px.c.registry.is_active_verifier(who.address)


# --- withdraw ---------------------------------------------------------------------------------


def test_withdraw_rejects_nothing_unbonding(px: System) -> None:
    who = px.providers[0]
    with reverts("RegistryNothingToWithdraw", {"account": who.address}):
        px.c.registry.withdraw(who)


def test_withdraw_rejects_unregistered(px: System) -> None:
    with reverts("RegistryNotRegistered", {"account": px.outsider.address}):
        px.c.registry.withdraw(px.outsider)


def test_withdraw_fails_before_delay(px: System) -> None:
    who = px.providers[0]
    px.c.registry.request_unbond(who, ETH)
    ready_at = px.c.registry.account_of(who.address).unbond_ready_at
    px.chain.advance_time(px.params.unbonding_delay - 100)
    with reverts("RegistryUnbondingNotReady") as info:
        px.c.registry.withdraw(who)
    args = info
    assert args["account"] == who.address
    assert args["readyAt"] == ready_at
    assert px.chain.now() <= args["timestamp"] < ready_at
    assert px.c.registry.account_of(who.address).unbonding == ETH


def test_withdraw_after_delay_pays_exactly_the_unbonding_stake(px: System) -> None:
    who = px.providers[0]
    px.c.registry.request_unbond(who, 3 * ETH)
    px.chain.advance_time(px.params.unbonding_delay)
    balance_before = px.chain.balance(who.address)
    held_before = px.chain.balance(px.c.registry.address)

    receipt = px.c.registry.withdraw(who)

    assert px.chain.balance(who.address) == balance_before + 3 * ETH - gas_cost(receipt)
    assert px.chain.balance(px.c.registry.address) == held_before - 3 * ETH
    assert only_event(px, receipt, "StakeWithdrawn") == {"account": who.address, "amount": 3 * ETH}
    account = px.c.registry.account_of(who.address)
    assert (account.stake, account.unbonding) == (PROVIDER_STAKE - 3 * ETH, 0)
    assert px.c.registry.total_unbonding() == 0
    assert px.c.registry.is_active_provider(who.address)
    px.assert_conserved()
    with reverts("RegistryNothingToWithdraw", {"account": who.address}):
        px.c.registry.withdraw(who)


def test_withdraw_of_whole_stake_leaves_inactive_registration(px: System) -> None:
    who = px.verifiers[0]
    px.c.registry.request_unbond(who, VERIFIER_STAKE)
    px.chain.advance_time(px.params.unbonding_delay + 1)
    balance_before = px.chain.balance(who.address)
    receipt = px.c.registry.withdraw(who)
    assert px.chain.balance(who.address) == balance_before + VERIFIER_STAKE - gas_cost(receipt)
    account = px.c.registry.account_of(who.address)
    assert account.role == Role.VERIFIER
    assert (account.stake, account.unbonding) == (0, 0)
    assert not px.c.registry.is_active_verifier(who.address)
    px.assert_conserved()


# --- slash ------------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["admin", "outsider", "provider"])
def test_slash_rejects_caller_without_slasher_role(px: System, caller: str) -> None:
    who = {"admin": px.admin, "outsider": px.outsider, "provider": px.providers[1]}[caller]
    target = px.providers[0].address
    with reverts("AccessControlUnauthorizedAccount", {"account": who.address, "neededRole": SLASHER_ROLE}):
        px.c.registry.slash(who, target, ETH, who.address, 5_000, REASON, REF)
    assert px.c.registry.account_of(target).stake == PROVIDER_STAKE


def test_slash_takes_stake_pays_finder_and_funds_pool(px: System) -> None:
    slasher, finder, target = px.outsider, px.clients[0], px.providers[0]
    grant_slasher(px, slasher)
    pool_before = px.c.rewards.pool_balance()
    treasury_before = px.c.rewards.treasury_balance()
    finder_before = px.chain.balance(finder.address)
    total_before = px.c.registry.total_staked()

    receipt = px.c.registry.slash(slasher, target.address, 2 * ETH, finder.address, 2_500, REASON, REF)

    finder_reward = 2 * ETH * 2_500 // 10_000
    to_pool = 2 * ETH - finder_reward
    to_treasury = to_pool * px.params.treasury_bps // 10_000
    account = px.c.registry.account_of(target.address)
    assert account.stake == PROVIDER_STAKE - 2 * ETH
    assert account.total_slashed == 2 * ETH
    assert px.c.registry.total_staked() == total_before - 2 * ETH
    assert px.chain.balance(finder.address) == finder_before + finder_reward
    assert px.c.rewards.treasury_balance() == treasury_before + to_treasury
    assert px.c.rewards.pool_balance() == pool_before + to_pool - to_treasury
    assert only_event(px, receipt, "Slashed") == {
        "account": target.address,
        "amount": 2 * ETH,
        "finder": finder.address,
        "finderReward": finder_reward,
        "reason": REASON,
        "ref": REF,
    }
    funded = only_event(px, receipt, "PoolFunded")
    assert funded["toPool"] + funded["toTreasury"] == to_pool
    px.assert_conserved()


def test_slash_returns_amount_taken(px: System) -> None:
    slasher = px.outsider
    grant_slasher(px, slasher)
    tx = {
        "from": slasher.address,
        "to": px.c.registry.address,
        "data": px.c.registry._encode(
            "slash", (px.providers[0].address, MAX_UINT256, ZERO_ADDRESS, 0, REASON, REF)
        ),
    }
    assert int.from_bytes(px.chain.call(tx), "big") == PROVIDER_STAKE


def test_slash_takes_stake_before_unbonding(px: System) -> None:
    slasher, target = px.outsider, px.providers[0]
    grant_slasher(px, slasher)
    px.c.registry.request_unbond(target, 4 * ETH)  # stake 6, unbonding 4
    receipt = px.c.registry.slash(slasher, target.address, 7 * ETH, ZERO_ADDRESS, 0, REASON, REF)
    account = px.c.registry.account_of(target.address)
    assert (account.stake, account.unbonding) == (0, 3 * ETH)
    assert px.c.registry.total_unbonding() == 3 * ETH
    assert only_event(px, receipt, "Slashed")["amount"] == 7 * ETH
    px.assert_conserved()


@pytest.mark.parametrize("amount", [PROVIDER_STAKE + 1, 1_000 * ETH, MAX_UINT256])
def test_slash_never_exceeds_stake_plus_unbonding(px: System, amount: int) -> None:
    slasher, target = px.outsider, px.providers[0]
    grant_slasher(px, slasher)
    px.c.registry.request_unbond(target, 4 * ETH)
    pool_before = px.c.rewards.pool_balance() + px.c.rewards.treasury_balance()
    receipt = px.c.registry.slash(slasher, target.address, amount, ZERO_ADDRESS, 5_000, REASON, REF)
    event = only_event(px, receipt, "Slashed")
    assert event["amount"] == PROVIDER_STAKE
    assert event["finderReward"] == 0  # no finder: everything goes to the pool
    account = px.c.registry.account_of(target.address)
    assert (account.stake, account.unbonding, account.total_slashed) == (0, 0, PROVIDER_STAKE)
    assert px.c.registry.slashable_of(target.address) == 0
    assert not px.c.registry.is_active_provider(target.address)
    assert px.c.rewards.pool_balance() + px.c.rewards.treasury_balance() == pool_before + PROVIDER_STAKE
    px.assert_conserved()


def test_slash_of_nothing_left_moves_nothing(px: System) -> None:
    slasher, target = px.outsider, px.providers[0]
    grant_slasher(px, slasher)
    px.c.registry.slash(slasher, target.address, MAX_UINT256, ZERO_ADDRESS, 0, REASON, REF)
    pool_before = px.c.rewards.pool_balance()
    receipt = px.c.registry.slash(slasher, target.address, ETH, px.clients[0].address, 5_000, REASON, REF)
    assert only_event(px, receipt, "Slashed")["amount"] == 0
    assert "PoolFunded" not in event_names(px, receipt)
    assert px.c.rewards.pool_balance() == pool_before
    px.assert_conserved()


def test_slash_full_finder_share_pays_everything_to_finder(px: System) -> None:
    slasher, finder, target = px.outsider, px.clients[0], px.providers[0]
    grant_slasher(px, slasher)
    pool_before = px.c.rewards.pool_balance()
    finder_before = px.chain.balance(finder.address)
    receipt = px.c.registry.slash(slasher, target.address, ETH, finder.address, 10_000, REASON, REF)
    assert px.chain.balance(finder.address) == finder_before + ETH
    assert px.c.rewards.pool_balance() == pool_before
    assert "PoolFunded" not in event_names(px, receipt)
    px.assert_conserved()


def test_slash_rejects_invalid_share(px: System) -> None:
    slasher = px.outsider
    grant_slasher(px, slasher)
    with reverts("RegistryInvalidShare", {"bps": 10_001}):
        px.c.registry.slash(slasher, px.providers[0].address, ETH, px.clients[0].address, 10_001, REASON, REF)


def test_slash_rejects_unregistered_account(px: System) -> None:
    slasher = px.outsider
    grant_slasher(px, slasher)
    with reverts("RegistryNotRegistered", {"account": px.clients[0].address}):
        px.c.registry.slash(slasher, px.clients[0].address, ETH, ZERO_ADDRESS, 0, REASON, REF)


def test_slash_reverts_whole_slash_when_finder_rejects_eth(px: System) -> None:
    """A finder that cannot receive ETH makes the slash revert, taking nothing."""
    slasher, target = px.outsider, px.providers[0]
    grant_slasher(px, slasher)
    rejecting = px.c.registry.address  # no receive(): refuses plain ETH
    with reverts("RegistryTransferFailed", {"to": rejecting, "amount": ETH // 2}):
        px.c.registry.slash(slasher, target.address, ETH, rejecting, 5_000, REASON, REF)
    assert px.c.registry.account_of(target.address).stake == PROVIDER_STAKE


def test_slash_after_unbond_request_takes_unbonding_and_withdraw_pays_rest(px: System) -> None:
    slasher, target = px.outsider, px.providers[0]
    grant_slasher(px, slasher)
    px.c.registry.request_unbond(target, PROVIDER_STAKE)
    px.c.registry.slash(slasher, target.address, 3 * ETH, ZERO_ADDRESS, 0, REASON, REF)
    account = px.c.registry.account_of(target.address)
    assert (account.stake, account.unbonding) == (0, PROVIDER_STAKE - 3 * ETH)

    px.chain.advance_time(px.params.unbonding_delay)
    balance_before = px.chain.balance(target.address)
    receipt = px.c.registry.withdraw(target)
    paid = PROVIDER_STAKE - 3 * ETH
    assert only_event(px, receipt, "StakeWithdrawn")["amount"] == paid
    assert px.chain.balance(target.address) == balance_before + paid - gas_cost(receipt)
    assert px.c.registry.slashable_of(target.address) == 0
    px.assert_conserved()


def test_slash_of_all_unbonding_leaves_nothing_to_withdraw(px: System) -> None:
    slasher, target = px.outsider, px.providers[0]
    grant_slasher(px, slasher)
    px.c.registry.request_unbond(target, PROVIDER_STAKE)
    px.c.registry.slash(slasher, target.address, MAX_UINT256, ZERO_ADDRESS, 0, REASON, REF)
    px.chain.advance_time(px.params.unbonding_delay)
    with reverts("RegistryNothingToWithdraw", {"account": target.address}):
        px.c.registry.withdraw(target)
    px.assert_conserved()


# --- recordOutcome ----------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["admin", "outsider", "provider"])
def test_record_outcome_rejects_anyone_but_escrow_and_vouchers(px: System, caller: str) -> None:
    who = {"admin": px.admin, "outsider": px.outsider, "provider": px.providers[0]}[caller]
    with reverts("RegistryUnauthorizedRecorder", {"caller": who.address}):
        px.c.registry.record_outcome(who, px.providers[0].address, 1, 0, 0)
    account = px.c.registry.account_of(px.providers[0].address)
    assert (account.jobs_completed, account.jobs_failed, account.disputes_lost) == (0, 0, 0)


def test_record_outcome_moves_counters_through_escrow(px: System) -> None:
    """Settling one job and timing out another move exactly the counters they should, with events."""
    provider = px.providers[0]
    settled = px.open_job()
    px.c.escrow.commit_result(provider, settled.job_id, b"\x01" * 32)
    receipt = px.c.escrow.confirm_result(px.clients[0], settled.job_id)
    assert only_event(px, receipt, "OutcomeRecorded") == {
        "provider": provider.address,
        "completed": 1,
        "failed": 0,
        "disputesLost": 0,
    }
    late = px.open_job(px.terms(duration=120))
    px.chain.advance_time(121)
    px.c.escrow.claim_timeout(px.outsider, late.job_id)
    account = px.c.registry.account_of(provider.address)
    assert (account.jobs_completed, account.jobs_failed, account.disputes_lost) == (1, 1, 0)


# --- roles ------------------------------------------------------------------------------------


def test_grant_role_rejects_non_admin(px: System) -> None:
    with reverts(
        "AccessControlUnauthorizedAccount",
        {"account": px.outsider.address, "neededRole": b"\x00" * 32},
    ):
        px.c.registry.grant_role(px.outsider, SLASHER_ROLE, px.outsider.address)


def test_deployment_grants_slasher_to_contracts_only(px: System) -> None:
    def has(role: bytes, who: str) -> bool:
        return bool(px.c.registry._call("hasRole", role, who))

    assert has(SLASHER_ROLE, px.c.escrow.address)
    assert has(SLASHER_ROLE, px.c.fault_proofs.address)
    assert not has(SLASHER_ROLE, px.admin.address)
    assert not has(SLASHER_ROLE, px.c.vouchers.address)
