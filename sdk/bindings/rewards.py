"""Binding of ``RewardPool``: fees and slashes in, per-epoch rewards out."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding, ProximaModel

__all__ = ["EpochTotals", "ProviderRewards", "RewardPool"]


class EpochTotals(ProximaModel):
    pot: int
    total_work: int


class ProviderRewards(ProximaModel):
    epoch: int
    work: int
    credited: int


class RewardPool(ContractBinding):
    """The reward pool; rewards of an epoch are claimable once it has ended."""

    contract_name = "RewardPool"

    def fund(self, account: LocalAccount, amount: int) -> TxReceipt:
        return self._transact(account, "fund", value=amount)

    def deposit_fees(self, account: LocalAccount, provider: str, work: int, fee: int) -> TxReceipt:
        """Record work and a fee (only callers holding FEE_SOURCE_ROLE succeed)."""
        return self._transact(account, "depositFees", provider, work, value=fee)

    def rollover(self, account: LocalAccount, epoch: int) -> TxReceipt:
        return self._transact(account, "rollover", epoch)

    def claim(self, account: LocalAccount) -> TxReceipt:
        return self._transact(account, "claim")

    def withdraw_treasury(self, account: LocalAccount, to: str, amount: int) -> TxReceipt:
        return self._transact(account, "withdrawTreasury", to, amount)

    def grant_role(self, account: LocalAccount, role: bytes, member: str) -> TxReceipt:
        return self._transact(account, "grantRole", role, member)

    def role_id(self, name: str) -> bytes:
        return bytes(self._call(name))

    def claimable(self, provider: str) -> int:
        return int(self._call("claimable", provider))

    def current_epoch(self) -> int:
        return int(self._call("currentEpoch"))

    def epoch_length(self) -> int:
        return int(self._call("epochLength"))

    def treasury_bps(self) -> int:
        return int(self._call("treasuryBps"))

    def epoch_of(self, epoch: int) -> EpochTotals:
        return self._call_model(EpochTotals, "epochOf", epoch)

    def rewards_of(self, provider: str) -> ProviderRewards:
        return self._call_model(ProviderRewards, "rewardsOf", provider)

    def pool_balance(self) -> int:
        return int(self._call("poolBalance"))

    def treasury_balance(self) -> int:
        return int(self._call("treasuryBalance"))
