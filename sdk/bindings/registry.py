"""Binding of ``ProviderRegistry``: stake, unbonding, counters, slashing."""

from __future__ import annotations

from enum import IntEnum

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding, ProximaModel
from proxima.sdk.types import Address

__all__ = ["ProviderRegistry", "RegistryAccount", "Role"]


class Role(IntEnum):
    NONE = 0
    PROVIDER = 1
    VERIFIER = 2


class RegistryAccount(ProximaModel):
    """An account's registration, stake and counters (all zero when unknown)."""

    role: Role
    registered_at: int
    unbond_ready_at: int
    jobs_failed: int
    disputes_lost: int
    stake: int
    unbonding: int
    jobs_completed: int
    total_slashed: int


class ProviderRegistry(ContractBinding):
    """Providers and verifiers, their stake and their record."""

    contract_name = "ProviderRegistry"

    def register(self, account: LocalAccount, peer_id: bytes, metadata_hash: bytes, stake: int) -> TxReceipt:
        """Register ``account`` as a provider; ``peer_id`` must be its own key's binary libp2p peer id."""
        return self._transact(account, "register", peer_id, metadata_hash, value=stake)

    def register_verifier(self, account: LocalAccount, metadata_hash: bytes, stake: int) -> TxReceipt:
        return self._transact(account, "registerVerifier", metadata_hash, value=stake)

    def update_metadata(self, account: LocalAccount, metadata_hash: bytes) -> TxReceipt:
        return self._transact(account, "updateMetadata", metadata_hash)

    def top_up(self, account: LocalAccount, amount: int) -> TxReceipt:
        return self._transact(account, "topUp", value=amount)

    def request_unbond(self, account: LocalAccount, amount: int) -> TxReceipt:
        return self._transact(account, "requestUnbond", amount)

    def withdraw(self, account: LocalAccount) -> TxReceipt:
        return self._transact(account, "withdraw")

    def slash(
        self,
        account: LocalAccount,
        target: str,
        amount: int,
        finder: str,
        finder_share_bps: int,
        reason: bytes,
        ref: bytes,
    ) -> TxReceipt:
        """Slash ``target`` (only callers holding SLASHER_ROLE succeed)."""
        return self._transact(account, "slash", target, amount, finder, finder_share_bps, reason, ref)

    def record_outcome(
        self, account: LocalAccount, provider: str, completed: int, failed: int, disputes_lost: int
    ) -> TxReceipt:
        """Move job counters (only callers holding RECORDER_ROLE succeed)."""
        return self._transact(account, "recordOutcome", provider, completed, failed, disputes_lost)

    def grant_role(self, account: LocalAccount, role: bytes, member: str) -> TxReceipt:
        return self._transact(account, "grantRole", role, member)

    def role_id(self, name: str) -> bytes:
        """The id of a role constant, for example ``"SLASHER_ROLE"``."""
        return bytes(self._call(name))

    def account_of(self, address: str) -> RegistryAccount:
        return self._call_model(RegistryAccount, "accountOf", address)

    def is_active_provider(self, address: str) -> bool:
        return bool(self._call("isActiveProvider", address))

    def is_active_verifier(self, address: str) -> bool:
        return bool(self._call("isActiveVerifier", address))

    def slashable_of(self, address: str) -> int:
        return int(self._call("slashableOf", address))

    def total_staked(self) -> int:
        return int(self._call("totalStaked"))

    def total_unbonding(self) -> int:
        return int(self._call("totalUnbonding"))

    def min_provider_stake(self) -> int:
        return int(self._call("minProviderStake"))

    def min_verifier_stake(self) -> int:
        return int(self._call("minVerifierStake"))

    def unbonding_delay(self) -> int:
        return int(self._call("unbondingDelay"))

    def reward_pool(self) -> Address:
        return to_checksum_address(self._call("rewardPool"))
