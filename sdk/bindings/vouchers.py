"""Binding of ``PaymentVouchers``: deposits and cumulative vouchers."""

from __future__ import annotations

from collections.abc import Sequence

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from proxima.sdk.bindings._base import ContractBinding, ProximaModel
from proxima.sdk.eip712 import SignedMessage, Voucher

__all__ = ["ClientDeposit", "PaymentVouchers", "RedeemedTotals"]


class ClientDeposit(ProximaModel):
    balance: int
    pending_withdrawal: int
    withdrawable_at: int


class RedeemedTotals(ProximaModel):
    amount: int
    jobs: int


class PaymentVouchers(ContractBinding):
    """Prepaid deposits; providers redeem clients' latest cumulative vouchers."""

    contract_name = "PaymentVouchers"
    eip712_name = "Proxima Vouchers"

    def deposit(self, client: LocalAccount, amount: int) -> TxReceipt:
        return self._transact(client, "deposit", value=amount)

    def request_withdrawal(self, client: LocalAccount, amount: int) -> TxReceipt:
        return self._transact(client, "requestWithdrawal", amount)

    def cancel_withdrawal(self, client: LocalAccount) -> TxReceipt:
        return self._transact(client, "cancelWithdrawal")

    def withdraw(self, client: LocalAccount) -> TxReceipt:
        return self._transact(client, "withdraw")

    def redeem(self, account: LocalAccount, signed: SignedMessage[Voucher]) -> TxReceipt:
        return self._transact(account, "redeem", signed.message.to_abi(), signed.signature.to_bytes())

    def redeem_batch(
        self, account: LocalAccount, provider: str, batch: Sequence[SignedMessage[Voucher]]
    ) -> TxReceipt:
        """Redeem many clients' vouchers to ``provider`` in one transaction."""
        return self._transact(
            account,
            "redeemBatch",
            provider,
            [s.message.to_abi() for s in batch],
            [s.signature.to_compact() for s in batch],
        )

    def deposit_of(self, client: str) -> ClientDeposit:
        return self._call_model(ClientDeposit, "depositOf", client)

    def redeemed_of(self, client: str, provider: str) -> RedeemedTotals:
        return self._call_model(RedeemedTotals, "redeemedOf", client, provider)

    def total_deposits(self) -> int:
        return int(self._call("totalDeposits"))

    def hash_voucher(self, voucher: Voucher) -> bytes:
        return bytes(self._call("hashVoucher", voucher.to_abi()))

    def parameter(self, name: str) -> int:
        return int(self._call(name))
