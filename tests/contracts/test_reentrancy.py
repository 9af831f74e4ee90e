"""Every path that sends ETH resists reentry by a hostile recipient.

A ``ReentrantReceiver`` contract (contracts/src/test) acts as client, verifier, finder or treasury recipient;
when paid it calls back into the system and records the outcome of that inner call without bubbling it. The
reentrant call must fail with ``ReentrancyGuardReentrantCall()`` (or a state error showing the first call's
effects were already booked), the recipient must be paid exactly once, and the contracts must still hold
exactly what they owe.

Providers must be EOAs (``register`` checks that the peer id is the caller's own key), so provider payouts are
tested through EIP-7702: a provider EOA delegates its code to ``ReentrantReceiver`` with a type-4 transaction.
Both backends (py-evm 0.12 through eth-tester, anvil with ``--hardfork prague``) support it;
``test_eip7702_delegation_isSupported`` checks that on each.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import pytest
from _support import ETH, gas_cost
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.types import TxParams, TxReceipt

from proxima.contracts import load_artifact
from proxima.sdk.bindings import ContractBinding, JobStatus, decode_revert
from proxima.sdk.chain import Chain, TransactionReverted
from proxima.sdk.eip712 import JobReceipt, JobTerms, LocalSigner, Verdict, Voucher
from proxima.sdk.errors import ContractRevertError

REENTRANT_CALL = keccak(text="ReentrancyGuardReentrantCall()")[:4]
GAS = 3_000_000
"""Explicit gas for calls that trigger a reentry: an estimate could leave the inner call too little gas to
reach the guard, and the test would then see an out-of-gas failure instead of the guard's revert."""


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def calldata(binding: ContractBinding, function: str, *args: Any) -> bytes:
    contract = binding.chain.w3.eth.contract(address=binding.address, abi=binding.abi)
    return bytes.fromhex(contract.encode_abi(function, args=list(args))[2:])


def send(
    chain: Chain,
    account: LocalAccount,
    to: str,
    data: bytes,
    *,
    value: int = 0,
    contract: str = "ReentrantReceiver",
    function: str = "execute",
    gas: int = GAS,
) -> TxReceipt:
    """Send a transaction with fixed gas; decoded custom errors are raised as ContractRevertError."""
    tx: TxParams = {"to": to_checksum_address(to), "data": data, "value": value, "gas": gas}
    try:
        return chain.send_transaction(account, tx)
    except TransactionReverted as err:
        raise decode_revert(contract, function, err) from err


def call_on(binding: ContractBinding, account: LocalAccount, function: str, *args: Any, value: int = 0):
    """``account`` calls ``binding.function(*args)`` with fixed gas."""
    return send(
        binding.chain,
        account,
        binding.address,
        calldata(binding, function, *args),
        value=value,
        contract=binding.contract_name,
        function=function,
    )


class Receiver:
    """Handle on a ReentrantReceiver: a deployed contract or an EOA delegating to one (EIP-7702)."""

    def __init__(self, chain: Chain, address: str, operator: LocalAccount) -> None:
        self.chain = chain
        self.address = to_checksum_address(address)
        self.operator = operator
        self.abi = load_artifact("ReentrantReceiver").abi
        self.contract = chain.w3.eth.contract(address=self.address, abi=self.abi)

    def _data(self, function: str, *args: Any) -> bytes:
        return bytes.fromhex(self.contract.encode_abi(function, args=list(args))[2:])

    def execute(self, target: ContractBinding, function: str, *args: Any, value: int = 0) -> TxReceipt:
        """The receiver calls ``target.function(*args)`` sending ``value`` (which the operator supplies)."""
        inner = calldata(target, function, *args)
        data = self._data("execute", target.address, value, inner)
        try:
            return send(self.chain, self.operator, self.address, data, value=value)
        except TransactionReverted as err:
            # execute bubbles the target's revert data: decode it as the target's error.
            raise decode_revert(target.contract_name, function, err) from err

    def arm(self, target: ContractBinding, function: str, *args: Any) -> None:
        inner = calldata(target, function, *args)
        send(self.chain, self.operator, self.address, self._data("arm", target.address, inner))

    def disarm(self) -> None:
        send(self.chain, self.operator, self.address, self._data("disarm"))

    def refuse_payments(self, refuse: bool = True) -> None:
        send(self.chain, self.operator, self.address, self._data("setRevertOnReceive", refuse))

    def read(self, name: str) -> Any:
        return getattr(self.contract.functions, name)().call()

    @property
    def attempts(self) -> int:
        return int(self.read("reentryAttempts"))

    @property
    def successes(self) -> int:
        return int(self.read("reentrySuccesses"))

    @property
    def last_data(self) -> bytes:
        return bytes(self.read("lastReentryData"))

    @property
    def balance(self) -> int:
        return self.chain.balance(self.address)

    def assert_all_reentries_blocked(self, attempts: int, error: bytes = REENTRANT_CALL) -> None:
        """``attempts`` reentries were tried, none succeeded, the last failed with ``error``."""
        assert self.attempts == attempts
        assert self.successes == 0
        assert self.read("lastReentrySucceeded") is False
        assert self.last_data[:4] == error, f"reentry failed with 0x{self.last_data.hex()}"


def deploy_receiver(px: Any) -> Receiver:
    artifact = load_artifact("ReentrantReceiver")
    receipt = px.chain.send_transaction(px.admin, {"data": "0x" + artifact.bytecode.hex()})
    return Receiver(px.chain, receipt["contractAddress"], px.outsider)


def delegate(px: Any, eoa: LocalAccount) -> Receiver:
    """Make ``eoa`` an EIP-7702 account running ReentrantReceiver's code (the admin sponsors the tx)."""
    impl = deploy_receiver(px)
    nonce = px.chain.w3.eth.get_transaction_count(eoa.address)
    auth = Account.sign_authorization(
        {"chainId": px.chain.chain_id, "address": impl.address, "nonce": nonce}, eoa.key
    )
    tx: TxParams = {
        "to": eoa.address,
        "data": impl._data("disarm"),
        "authorizationList": [auth],  # type: ignore[typeddict-unknown-key]
        "gas": 200_000,
    }
    px.chain.send_transaction(px.admin, tx)
    code = bytes(px.chain.w3.eth.get_code(eoa.address))
    assert code == b"\xef\x01\x00" + bytes.fromhex(impl.address[2:]), code.hex()
    return Receiver(px.chain, eoa.address, px.outsider)


def verdict_signatures(px: Any, verdict: Verdict) -> list[tuple[str, Any]]:
    return [(v.address, verdict.sign(LocalSigner(v), px.c.escrow.domain).signature) for v in px.verifiers[:2]]


def open_job_as(px: Any, client: Receiver, provider: LocalAccount, **kw: Any) -> JobTerms:
    """The receiver contract opens a job as client."""
    terms = px.terms(client=px.clients[0], provider=provider, **kw)
    terms = terms.model_copy(update={"client": client.address})
    client.execute(
        px.c.escrow, "openJob", terms.to_abi(), px.accept(terms).signature.to_bytes(), value=terms.price
    )
    return terms


def dispute_as(px: Any, client: Receiver, terms: JobTerms, provider: LocalAccount) -> tuple[bytes, int]:
    result = secrets.token_bytes(32)
    px.c.escrow.commit_result(provider, terms.job_id, result)
    bond = px.c.escrow.dispute_bond_of(terms.job_id)
    client.execute(px.c.escrow, "disputeResult", terms.job_id, value=bond)
    return result, bond


def timed_out_job(
    px: Any, client: LocalAccount | None = None, provider: LocalAccount | None = None
) -> JobTerms:
    terms = px.open_job(px.terms(client=client, provider=provider, duration=600))
    return terms


# --- EIP-7702 support --------------------------------------------------------------------------


def test_eip7702_delegation_isSupported(px) -> None:
    provider = delegate(px, px.providers[0])
    assert provider.read("reentryAttempts") == 0
    before = provider.balance
    px.chain.send_transaction(px.outsider, {"to": provider.address, "value": 123})
    assert provider.balance == before + 123
    assert provider.read("totalReceived") == 123
    # The delegated EOA still signs its own transactions: it is still a provider.
    assert px.c.registry.is_active_provider(provider.address)


# --- ProviderRegistry ----------------------------------------------------------------------------


def test_registryWithdraw_contractVerifierReentersWithdraw_blockedAndPaidOnce(px) -> None:
    verifier = deploy_receiver(px)
    stake = px.params.min_verifier_stake
    verifier.execute(px.c.registry, "registerVerifier", b"\x33" * 32, value=stake)
    verifier.execute(px.c.registry, "requestUnbond", stake)
    px.chain.advance_time(px.params.unbonding_delay)
    verifier.arm(px.c.registry, "withdraw")

    before = verifier.balance
    verifier.execute(px.c.registry, "withdraw")

    verifier.assert_all_reentries_blocked(1)
    assert verifier.balance == before + stake
    account = px.c.registry.account_of(verifier.address)
    assert (account.stake, account.unbonding) == (0, 0)
    with pytest.raises(ContractRevertError) as err:
        verifier.execute(px.c.registry, "withdraw")
    assert err.value.error_name == "RegistryNothingToWithdraw"
    px.assert_conserved()


def test_registryWithdraw_contractVerifierReentersRequestUnbond_stateAlreadyBooked(px) -> None:
    verifier = deploy_receiver(px)
    stake = px.params.min_verifier_stake
    verifier.execute(px.c.registry, "registerVerifier", b"\x33" * 32, value=stake)
    verifier.execute(px.c.registry, "requestUnbond", stake)
    px.chain.advance_time(px.params.unbonding_delay)
    # requestUnbond has no guard: the reentry reaches it, and sees the stake already gone.
    verifier.arm(px.c.registry, "requestUnbond", stake)

    verifier.execute(px.c.registry, "withdraw")

    verifier.assert_all_reentries_blocked(1, selector("RegistryUnbondExceedsStake(address,uint256,uint256)"))
    assert px.c.registry.slashable_of(verifier.address) == 0
    px.assert_conserved()


def test_slashFinderReward_contractFinderReentersClaimTimeout_blocked(px) -> None:
    finder = deploy_receiver(px)
    first, second = timed_out_job(px), timed_out_job(px)
    px.chain.advance_time(601)
    finder.arm(px.c.escrow, "claimTimeout", second.job_id)
    client = px.clients[0]
    client_before, finder_before = px.chain.balance(client.address), finder.balance

    finder.execute(px.c.escrow, "claimTimeout", first.job_id)

    finder.assert_all_reentries_blocked(1)
    reward = first.slash_amount * px.params.finder_share_bps // 10_000
    assert finder.balance == finder_before + reward
    assert px.chain.balance(client.address) == client_before + first.price
    assert px.c.escrow.job_of(first.job_id).status == JobStatus.REFUNDED
    assert px.c.escrow.job_of(second.job_id).status == JobStatus.ACCEPTED
    px.assert_conserved()


@pytest.mark.parametrize("target", ["withdraw", "claimTimeoutSameJob"])
def test_slashFinderReward_contractFinderReentersRegistryOrSameJob_blocked(px, target: str) -> None:
    finder = deploy_receiver(px)
    terms = timed_out_job(px)
    px.chain.advance_time(601)
    if target == "withdraw":
        finder.arm(px.c.registry, "withdraw")  # the registry's guard is held by slash()
    else:
        finder.arm(px.c.escrow, "claimTimeout", terms.job_id)

    finder.execute(px.c.escrow, "claimTimeout", terms.job_id)

    finder.assert_all_reentries_blocked(1)
    account = px.c.registry.account_of(terms.provider)
    assert account.total_slashed == terms.slash_amount
    assert account.jobs_failed == 1
    px.assert_conserved()


def test_equivocationFinderReward_contractFinderReentersProof_blocked(px) -> None:
    finder = deploy_receiver(px)
    provider = px.providers[0]
    job_id = secrets.token_bytes(32)
    receipts = [
        JobReceipt(
            job_id=job_id,
            provider=provider.address,
            client=px.clients[0].address,
            result_hash=secrets.token_bytes(32),
            queue_micros=1,
            compute_micros=2,
        ).sign(LocalSigner(provider), px.c.fault_proofs.domain)
        for _ in range(2)
    ]
    args = [x for s in receipts for x in (s.message.to_abi(), s.signature.to_bytes())]
    finder.arm(px.c.fault_proofs, "proveEquivocation", *args)
    slashable = px.c.registry.slashable_of(provider.address)
    before = finder.balance

    finder.execute(px.c.fault_proofs, "proveEquivocation", *args)

    finder.assert_all_reentries_blocked(1)
    slashed = slashable * px.c.fault_proofs.parameter("equivocationSlashBps") // 10_000
    assert px.c.registry.account_of(provider.address).total_slashed == slashed
    assert finder.balance == before + slashed * px.params.finder_share_bps // 10_000
    px.assert_conserved()


# --- JobEscrow: refunds to a contract client ---------------------------------------------------------


def test_claimTimeoutRefund_contractClientReenters_blockedAndRefundedOnce(px) -> None:
    client = deploy_receiver(px)
    terms = open_job_as(px, client, px.providers[0], duration=600)
    px.chain.advance_time(601)
    client.arm(px.c.escrow, "claimTimeout", terms.job_id)
    before = client.balance

    px.c.escrow.claim_timeout(px.outsider, terms.job_id)  # estimated gas: the guard still stops it

    client.assert_all_reentries_blocked(1)
    assert client.balance == before + terms.price
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    px.assert_conserved()


def test_resolveDisputeInvalid_contractClientReentersTwice_blockedAndRefundedOnce(px) -> None:
    client = deploy_receiver(px)
    provider = px.providers[0]
    terms = open_job_as(px, client, provider)
    result, bond = dispute_as(px, client, terms, provider)
    verdict = Verdict(job_id=terms.job_id, result_hash=result, result_valid=False)
    signatures = verdict_signatures(px, verdict)
    ordered = [s.to_bytes() for _, s in sorted(signatures, key=lambda i: int(i[0], 16))]
    client.arm(px.c.escrow, "resolveDispute", verdict.to_abi(), ordered)
    before = client.balance

    call_on(px.c.escrow, px.outsider, "resolveDispute", verdict.to_abi(), ordered)

    # Paid twice (finder reward from the registry, then the refund): both reentries hit the escrow's guard.
    client.assert_all_reentries_blocked(2)
    reward = terms.slash_amount * px.params.finder_share_bps // 10_000
    assert client.balance == before + terms.price + bond + reward
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    px.assert_conserved()


def test_expireDispute_contractClientReenters_blockedAndEachPartyPaidOnce(px) -> None:
    client = deploy_receiver(px)
    provider = px.providers[0]
    terms = open_job_as(px, client, provider)
    _, bond = dispute_as(px, client, terms, provider)
    px.chain.advance_time(px.params.dispute_window + 1)
    client.arm(px.c.escrow, "expireDispute", terms.job_id)
    client_before, provider_before = client.balance, px.chain.balance(provider.address)

    call_on(px.c.escrow, px.outsider, "expireDispute", terms.job_id)

    client.assert_all_reentries_blocked(1)
    assert client.balance == client_before + terms.price
    assert px.chain.balance(provider.address) == provider_before + bond
    px.assert_conserved()


def test_claimTimeout_clientRefusesPayment_onlyBlocksItsOwnRefund(px) -> None:
    client = deploy_receiver(px)
    terms = open_job_as(px, client, px.providers[0], duration=600)
    px.chain.advance_time(601)
    client.refuse_payments()
    with pytest.raises(ContractRevertError) as err:
        call_on(px.c.escrow, px.outsider, "claimTimeout", terms.job_id)
    assert err.value.error_name == "EscrowTransferFailed"
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.ACCEPTED
    px.assert_conserved()
    client.refuse_payments(False)
    call_on(px.c.escrow, px.outsider, "claimTimeout", terms.job_id)
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    px.assert_conserved()


@pytest.mark.parametrize("refuser", ["provider", "client"])
def test_expireDispute_onePartyRefusesPayment_otherPartyStillPaid(px, refuser: str) -> None:
    """A dispute that expires pays two parties in one transaction (client: price, provider: bond). If one of
    them refuses ETH, the other must still get its money. A provider EOA with EIP-7702 code that reverts on
    receive holds the client's refund hostage forever; a client contract that refuses does the same to the
    provider's bond. (Fails today: see the report; fix with pull payments for the second party.)"""
    provider_eoa = px.providers[0]
    provider = delegate(px, provider_eoa)
    client = deploy_receiver(px)
    terms = open_job_as(px, client, provider_eoa)
    _, bond = dispute_as(px, client, terms, provider_eoa)
    px.chain.advance_time(px.params.dispute_window + 1)
    (provider if refuser == "provider" else client).refuse_payments()
    client_before, provider_before = client.balance, provider.balance

    try:
        call_on(px.c.escrow, px.outsider, "expireDispute", terms.job_id)
    except ContractRevertError as err:
        pytest.fail(f"the {refuser} blocked the other party's payout: {err}")

    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.REFUNDED
    if refuser == "provider":
        assert client.balance == client_before + terms.price
        refusing, owed = provider, bond
    else:
        assert provider.balance == provider_before + bond
        refusing, owed = client, terms.price
    assert px.c.escrow.credit_of(refusing.address) == owed
    px.assert_conserved()

    # The refused payout is credited, not lost: once the account accepts ETH it collects it, exactly once.
    refusing.refuse_payments(False)
    before, gas = refusing.balance, 0
    if refuser == "provider":
        receipt = px.c.escrow.withdraw_credit(provider_eoa)  # the provider EOA pays its own gas
        gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    else:
        client.execute(px.c.escrow, "withdrawCredit")  # the client contract's operator pays the gas
    assert refusing.balance == before + owed - gas
    assert px.c.escrow.credit_of(refusing.address) == 0
    with pytest.raises(ContractRevertError, match="EscrowNoCredit"):
        px.c.escrow.withdraw_credit(px.outsider)
    px.assert_conserved()


# --- JobEscrow: payouts to a provider with EIP-7702 code ---------------------------------------------


@pytest.mark.parametrize("how", ["release", "confirm"])
def test_settle_delegatedProviderReentersRelease_blockedAndPaidOnce(px, how: str) -> None:
    provider_eoa = px.providers[0]
    provider = delegate(px, provider_eoa)
    terms = px.open_job(px.terms(provider=provider_eoa))
    px.c.escrow.commit_result(provider_eoa, terms.job_id, secrets.token_bytes(32))
    provider.arm(px.c.escrow, "releasePayment", terms.job_id)
    before = provider.balance

    if how == "release":
        px.chain.advance_time(terms.challenge_window + 1)
        call_on(px.c.escrow, px.outsider, "releasePayment", terms.job_id)
    else:
        call_on(px.c.escrow, px.clients[0], "confirmResult", terms.job_id)

    provider.assert_all_reentries_blocked(1)
    fee = terms.price * px.params.fee_bps // 10_000
    assert provider.balance == before + terms.price - fee
    assert px.c.escrow.job_of(terms.job_id).status == JobStatus.SETTLED
    assert px.c.registry.account_of(provider.address).jobs_completed == 1
    px.assert_conserved()


def test_resolveDisputeValid_delegatedProviderReenters_blockedAndPaidOnce(px) -> None:
    provider_eoa = px.providers[0]
    provider = delegate(px, provider_eoa)
    client = px.clients[0]
    terms = px.open_job(px.terms(provider=provider_eoa))
    result = secrets.token_bytes(32)
    px.c.escrow.commit_result(provider_eoa, terms.job_id, result)
    bond = px.c.escrow.dispute_bond_of(terms.job_id)
    px.c.escrow.dispute_result(client, terms.job_id)
    verdict = Verdict(job_id=terms.job_id, result_hash=result, result_valid=True)
    ordered = [s.to_bytes() for _, s in sorted(verdict_signatures(px, verdict), key=lambda i: int(i[0], 16))]
    provider.arm(px.c.escrow, "resolveDispute", verdict.to_abi(), ordered)
    before = provider.balance

    call_on(px.c.escrow, px.outsider, "resolveDispute", verdict.to_abi(), ordered)

    provider.assert_all_reentries_blocked(1)
    fee = terms.price * px.params.fee_bps // 10_000
    assert provider.balance == before + terms.price - fee + bond
    px.assert_conserved()


# --- PaymentVouchers ------------------------------------------------------------------------------


def test_vouchersWithdraw_contractClientReentersWithdraw_blockedAndPaidOnce(px) -> None:
    client = deploy_receiver(px)
    client.execute(px.c.vouchers, "deposit", value=3 * ETH)
    client.execute(px.c.vouchers, "requestWithdrawal", 2 * ETH)
    px.chain.advance_time(px.params.withdrawal_delay)
    client.arm(px.c.vouchers, "withdraw")
    before = client.balance

    client.execute(px.c.vouchers, "withdraw")

    client.assert_all_reentries_blocked(1)
    assert client.balance == before + 2 * ETH
    deposit = px.c.vouchers.deposit_of(client.address)
    assert (deposit.balance, deposit.pending_withdrawal) == (ETH, 0)
    px.assert_conserved()


def test_vouchersWithdraw_contractClientReentersRequestWithdrawal_seesReducedBalance(px) -> None:
    client = deploy_receiver(px)
    client.execute(px.c.vouchers, "deposit", value=3 * ETH)
    client.execute(px.c.vouchers, "requestWithdrawal", 2 * ETH)
    px.chain.advance_time(px.params.withdrawal_delay)
    client.arm(px.c.vouchers, "requestWithdrawal", 2 * ETH)  # unguarded, but the balance is already 1 ETH

    client.execute(px.c.vouchers, "withdraw")

    client.assert_all_reentries_blocked(
        1, selector("VouchersWithdrawalExceedsBalance(address,uint256,uint256)")
    )
    assert px.c.vouchers.deposit_of(client.address).balance == ETH
    px.assert_conserved()


def _voucher(px: Any, client: LocalAccount, provider: str, amount: int, jobs: int):
    return Voucher(
        client=client.address, provider=provider, cumulative_amount=amount, cumulative_jobs=jobs
    ).sign(LocalSigner(client), px.c.vouchers.domain)


@pytest.mark.parametrize("batch", [False, True])
def test_voucherRedeem_delegatedProviderReentersRedeem_blockedAndPaidOnce(px, batch: bool) -> None:
    provider_eoa = px.providers[0]
    provider = delegate(px, provider_eoa)
    clients: Sequence[LocalAccount] = px.clients
    for client in clients:
        px.c.vouchers.deposit(client, 5 * ETH)
    signed = [_voucher(px, client, provider.address, 2 * ETH, 3) for client in clients]
    if batch:
        args: tuple[Any, ...] = (
            provider.address,
            [s.message.to_abi() for s in signed],
            [s.signature.to_compact() for s in signed],
        )
        function = "redeemBatch"
    else:
        signed = signed[:1]
        args = (signed[0].message.to_abi(), signed[0].signature.to_bytes())
        function = "redeem"
    provider.arm(px.c.vouchers, function, *args)
    before = provider.balance

    call_on(px.c.vouchers, px.outsider, function, *args)

    provider.assert_all_reentries_blocked(1)
    amount = 2 * ETH * len(signed)
    fee = amount * px.params.fee_bps // 10_000
    assert provider.balance == before + amount - fee
    assert px.c.registry.account_of(provider.address).jobs_completed == 3 * len(signed)
    with pytest.raises(ContractRevertError) as err:
        call_on(px.c.vouchers, px.outsider, function, *args)
    assert err.value.error_name == "VouchersNotIncreasing"
    px.assert_conserved()


# --- ProviderRegistry: provider stake withdrawal (EIP-7702) ---------------------------------------------


def test_providerWithdraw_delegatedProviderReentersWithdraw_blockedAndPaidOnce(px) -> None:
    provider_eoa = px.providers[0]
    provider = delegate(px, provider_eoa)
    px.c.registry.request_unbond(provider_eoa, 4 * ETH)
    px.chain.advance_time(px.params.unbonding_delay)
    provider.arm(px.c.registry, "withdraw")
    before = provider.balance

    receipt = call_on(px.c.registry, provider_eoa, "withdraw")

    provider.assert_all_reentries_blocked(1)
    assert provider.balance == before + 4 * ETH - gas_cost(receipt)
    assert px.c.registry.account_of(provider.address).unbonding == 0
    px.assert_conserved()


# --- RewardPool ---------------------------------------------------------------------------------


def test_rewardClaim_delegatedProviderReentersClaim_blockedAndPaidOnce(px) -> None:
    provider_eoa = px.providers[0]
    provider = delegate(px, provider_eoa)
    terms = px.open_job(px.terms(provider=provider_eoa, price=5 * ETH))
    px.c.escrow.commit_result(provider_eoa, terms.job_id, secrets.token_bytes(32))
    px.c.escrow.confirm_result(px.clients[0], terms.job_id)
    px.chain.advance_time(px.params.epoch_length)
    owed = px.c.rewards.claimable(provider.address)
    assert owed > 0
    provider.arm(px.c.rewards, "claim")
    before = provider.balance

    receipt = call_on(px.c.rewards, provider_eoa, "claim")

    provider.assert_all_reentries_blocked(1)
    assert provider.balance == before + owed - gas_cost(receipt)
    assert px.c.rewards.claimable(provider.address) == 0
    px.assert_conserved()


def _fund_treasury(px: Any) -> int:
    px.c.rewards.fund(px.outsider, 10 * ETH)
    treasury = px.c.rewards.treasury_balance()
    assert treasury > 0
    return treasury


def test_treasuryWithdraw_contractRecipientWithoutRoleReenters_rejected(px) -> None:
    recipient = deploy_receiver(px)
    treasury = _fund_treasury(px)
    recipient.arm(px.c.rewards, "withdrawTreasury", recipient.address, treasury // 2)

    call_on(px.c.rewards, px.admin, "withdrawTreasury", recipient.address, treasury // 2)

    recipient.assert_all_reentries_blocked(1, selector("AccessControlUnauthorizedAccount(address,bytes32)"))
    assert recipient.balance == treasury // 2
    assert px.c.rewards.treasury_balance() == treasury - treasury // 2
    px.assert_conserved()


def test_treasuryWithdraw_contractTreasurerReenters_blockedAndPaidOnce(px) -> None:
    treasurer = deploy_receiver(px)
    treasury = _fund_treasury(px)
    role = px.c.rewards.role_id("TREASURER_ROLE")
    px.c.rewards.grant_role(px.admin, role, treasurer.address)
    amount = treasury // 3
    treasurer.arm(px.c.rewards, "withdrawTreasury", treasurer.address, amount)

    treasurer.execute(px.c.rewards, "withdrawTreasury", treasurer.address, amount)

    treasurer.assert_all_reentries_blocked(1)
    assert treasurer.balance == amount
    assert px.c.rewards.treasury_balance() == treasury - amount
    px.assert_conserved()
