"""Stateful property test: random sequences of every action keep the books exact.

A hypothesis ``RuleBasedStateMachine`` drives providers, clients, verifiers and a finder through the whole
system on py-evm: registration, top-ups, unbonding and withdrawal; escrow jobs through every ending (confirm,
release, timeout, dispute resolved either way, dispute expired); deposits, withdrawals and cumulative
vouchers redeemed one by one or in batches (and replayed); equivocation, canary and invalid-result proofs
(judged by quorums of verifiers, one proof per provider and job); attestations and verifier reports; reward
claims and rollovers; and time jumps. A Python model follows what each successful action must
have done. After every step:

* the six contracts hold exactly what they owe (stakes, unbonding, escrows, deposits, pool, treasury), and
  each of those totals equals the sum of its parts in the model;
* every provider's stake, unbonding, counters and slashes match the model; no provider was slashed more than
  it ever staked; its ``jobsCompleted`` is its settled jobs plus the job deltas of its redeemed vouchers;
* each client's ETH out of pocket is what it paid in (prices, bonds, deposits) less what came back (refunds,
  finder rewards, withdrawals), gas apart;
* the reward pool can pay every provider's claimable rewards.

An action the contracts refuse must leave the chain untouched (no block mined, no balance or total moved).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from web3.types import TxReceipt

from proxima.sdk.bindings import JobStatus, ProximaContracts, canary_commitment
from proxima.sdk.chain import InProcessChain, SnapshotId
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import (
    Attestation,
    JobReceipt,
    JobTerms,
    LocalSigner,
    Verdict,
    VerifierReport,
    Voucher,
)
from proxima.sdk.errors import ContractRevertError
from proxima.sdk.peerid import peer_id_from_key

ETH = 10**18
BPS = 10_000
PARAMS = DeployParameters()
VERIFIER_STAKE = 5 * ETH
INITIAL_STAKE = 10 * ETH
INITIAL_DEPOSIT = 10 * ETH
PRE_REGISTERED = 2
N_PROVIDERS, N_CLIENTS, N_VERIFIERS = 3, 3, 3
HOUR, DAY = 3_600, 86_400

providers_ = st.integers(0, N_PROVIDERS - 1)
working_providers = st.sampled_from([0, 0, 1, 1, 2])  # mostly the pre-registered ones
clients_ = st.integers(0, N_CLIENTS - 1)
amounts = st.sampled_from([ETH // 10, ETH // 2, ETH, 2 * ETH, 3 * ETH, 7 * ETH])
picks = st.integers(0, 10**6)


@dataclass
class _Base:
    chain: InProcessChain
    c: ProximaContracts
    snapshot: SnapshotId


_BASE: _Base | None = None


def _base() -> _Base:
    """One deployment (py-evm) for the whole module; each example starts from its snapshot."""
    global _BASE
    if _BASE is None:
        chain = InProcessChain(accounts=1 + N_PROVIDERS + N_CLIENTS + N_VERIFIERS + 1)
        admin = chain.accounts[0]
        c = ProximaContracts.from_deployment(chain, deploy_all(chain, admin, PARAMS))
        for verifier in chain.accounts[1 + N_PROVIDERS + N_CLIENTS :][:N_VERIFIERS]:
            c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
        # A head start, so that short runs reach jobs and vouchers: the first providers are registered
        # and every client has a deposit. The last provider starts unregistered.
        for provider in chain.accounts[1 : 1 + N_PROVIDERS][:PRE_REGISTERED]:
            peer_id = peer_id_from_key(bytes(provider.key))
            c.registry.register(provider, peer_id, b"\x11" * 32, INITIAL_STAKE)
        for client in chain.accounts[1 + N_PROVIDERS : 1 + N_PROVIDERS + N_CLIENTS]:
            c.vouchers.deposit(client, INITIAL_DEPOSIT)
        _BASE = _Base(chain, c, chain.snapshot())
    return _BASE


@dataclass
class ProviderModel:
    registered: bool = False
    stake: int = 0
    unbonding: int = 0
    ready_at: int = 0
    ever_staked: int = 0
    total_slashed: int = 0
    settled_jobs: int = 0
    redeemed_jobs: int = 0
    jobs_failed: int = 0
    disputes_lost: int = 0


@dataclass
class DepositModel:
    balance: int = 0
    pending: int = 0
    withdrawable_at: int = 0


@dataclass
class JobModel:
    terms: JobTerms
    client: int
    provider: int
    status: JobStatus = JobStatus.ACCEPTED
    result: bytes = b""
    challenge_ends_at: int = 0
    dispute_ends_at: int = 0
    bond: int = 0
    equivocation_proven: bool = False

    @property
    def held(self) -> int:
        open_ = self.status in (JobStatus.ACCEPTED, JobStatus.DELIVERED, JobStatus.DISPUTED)
        return self.terms.price + self.bond if open_ else 0


@dataclass
class Model:
    providers: list[ProviderModel] = field(
        default_factory=lambda: [ProviderModel() for _ in range(N_PROVIDERS)]
    )
    deposits: list[DepositModel] = field(default_factory=lambda: [DepositModel() for _ in range(N_CLIENTS)])
    client_paid: list[int] = field(default_factory=lambda: [0] * N_CLIENTS)
    jobs: list[JobModel] = field(default_factory=list)
    # cumulative (amount, jobs) redeemed per (client, provider), and the last voucher that was redeemed
    redeemed: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    last_voucher: dict[tuple[int, int], Any] = field(default_factory=dict)
    attested_epoch: list[int] = field(default_factory=lambda: [0] * N_PROVIDERS)


class ProximaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        base = _base()
        base.chain.revert(base.snapshot)
        base.snapshot = base.chain.snapshot()
        self.chain = base.chain
        self.c = base.c
        accounts = self.chain.accounts
        self.admin = accounts[0]
        self.providers = accounts[1 : 1 + N_PROVIDERS]
        self.clients = accounts[1 + N_PROVIDERS : 1 + N_PROVIDERS + N_CLIENTS]
        self.verifiers = accounts[1 + N_PROVIDERS + N_CLIENTS :][:N_VERIFIERS]
        self.finder = accounts[-1]
        self.m = Model()
        for prov in self.m.providers[:PRE_REGISTERED]:
            prov.registered, prov.stake, prov.ever_staked = True, INITIAL_STAKE, INITIAL_STAKE
        for dep in self.m.deposits:
            dep.balance = INITIAL_DEPOSIT
        self.gas = {a.address: 0 for a in accounts}
        self.initial = {c.address: self.chain.balance(c.address) for c in self.clients}
        self.reverts: dict[str, int] = {}
        self.touched: list[JobModel] = []

    # --- plumbing ------------------------------------------------------------------------------

    def _fingerprint(self) -> tuple[Any, ...]:
        """The latest block and its state root: equal before and after means nothing at all changed."""
        block = self.chain.w3.eth.get_block("latest")
        return (block["number"], bytes(block["stateRoot"]))

    def _try(self, account: LocalAccount, action: Callable[[], TxReceipt]) -> TxReceipt | None:
        """Run one transaction; on a decoded revert check that nothing changed and return None."""
        before = self._fingerprint()
        try:
            receipt = action()
        except ContractRevertError as err:
            name = err.error_name
        else:
            self.gas[account.address] += int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
            return receipt
        assert self._fingerprint() == before, f"{name} changed the state"
        self.reverts[name] = self.reverts.get(name, 0) + 1
        return None

    def _wait_past(self, deadline: int, wait: bool) -> None:
        """With ``wait``, move the clock just past ``deadline`` (so time-gated actions get exercised)."""
        if wait and deadline >= self.chain.now():
            self.chain.advance_time(deadline - self.chain.now() + 1)

    def _ts(self, receipt: TxReceipt) -> int:
        return int(self.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    def _job(self, pick: int) -> JobModel | None:
        if not self.m.jobs:
            return None
        # Mostly jobs still open (their next step is the interesting one), sometimes any job.
        live = [j for j in self.m.jobs if j.held] if pick % 4 else []
        pool = live or self.m.jobs
        job = pool[pick % len(pool)]
        self.touched.append(job)
        return job

    def _slash(self, p: int, amount: int, finder_share: bool) -> tuple[int, int]:
        """Book a slash of provider ``p``; returns (slashed, finder reward)."""
        prov = self.m.providers[p]
        from_stake = min(amount, prov.stake)
        from_unbonding = min(amount - from_stake, prov.unbonding)
        prov.stake -= from_stake
        prov.unbonding -= from_unbonding
        slashed = from_stake + from_unbonding
        prov.total_slashed += slashed
        reward = slashed * PARAMS.finder_share_bps // BPS if finder_share else 0
        return slashed, reward

    # --- registry ------------------------------------------------------------------------------

    @rule(p=providers_, stake=amounts)
    def register(self, p: int, stake: int) -> None:
        account = self.providers[p]
        peer_id = peer_id_from_key(bytes(account.key))
        receipt = self._try(account, lambda: self.c.registry.register(account, peer_id, b"\x11" * 32, stake))
        prov = self.m.providers[p]
        expected = not prov.registered and stake >= PARAMS.min_provider_stake
        assert (receipt is not None) == expected
        if receipt is not None:
            prov.registered = True
            prov.stake += stake
            prov.ever_staked += stake

    @rule(p=providers_, amount=amounts)
    def top_up(self, p: int, amount: int) -> None:
        account = self.providers[p]
        receipt = self._try(account, lambda: self.c.registry.top_up(account, amount))
        prov = self.m.providers[p]
        assert (receipt is not None) == prov.registered
        if receipt is not None:
            prov.stake += amount
            prov.ever_staked += amount

    @rule(p=providers_, share=st.sampled_from([1, 3, 10, 12]))
    def request_unbond(self, p: int, share: int) -> None:
        account, prov = self.providers[p], self.m.providers[p]
        amount = max(prov.stake * share // 10, 1)
        receipt = self._try(account, lambda: self.c.registry.request_unbond(account, amount))
        assert (receipt is not None) == (prov.registered and amount <= prov.stake)
        if receipt is not None:
            prov.stake -= amount
            prov.unbonding += amount
            prov.ready_at = self._ts(receipt) + PARAMS.unbonding_delay

    @rule(p=providers_, wait=st.booleans())
    def withdraw_stake(self, p: int, wait: bool) -> None:
        account, prov = self.providers[p], self.m.providers[p]
        self._wait_past(prov.ready_at - 1, wait and prov.unbonding > 0)
        receipt = self._try(account, lambda: self.c.registry.withdraw(account))
        if receipt is not None:
            assert prov.unbonding > 0
            assert self._ts(receipt) >= prov.ready_at
            prov.unbonding = 0
        else:
            assert not prov.registered or prov.unbonding == 0 or self.chain.now() < prov.ready_at

    # --- escrow --------------------------------------------------------------------------------

    @rule(
        client=clients_,
        p=working_providers,
        price=amounts,
        slash=st.sampled_from([0, ETH // 2, 3 * ETH, 50 * ETH]),
        duration=st.sampled_from([600, HOUR, DAY]),
        window=st.sampled_from([60, 600, HOUR]),
        deliver=st.booleans(),
    )
    def open_job(
        self, client: int, p: int, price: int, slash: int, duration: int, window: int, deliver: bool
    ) -> None:
        now = self.chain.now()
        terms = JobTerms(
            job_id=secrets.token_bytes(32),
            client=self.clients[client].address,
            provider=self.providers[p].address,
            price=price,
            slash_amount=slash,
            spec_hash=b"\x5e" * 32,
            accept_by=now + 600,
            delivery_deadline=now + duration,
            challenge_window=window,
        )
        signed = terms.sign(LocalSigner(self.providers[p]), self.c.escrow.domain)
        account = self.clients[client]
        receipt = self._try(account, lambda: self.c.escrow.open_job(account, signed))
        active = self.m.providers[p].stake >= PARAMS.min_provider_stake
        assert (receipt is not None) == active
        if receipt is not None:
            self.m.jobs.append(JobModel(terms, client, p))
            self.touched.append(self.m.jobs[-1])
            if deliver:
                self._commit(self.m.jobs[-1])
            self.m.client_paid[client] += price

    @rule(pick=picks)
    def commit(self, pick: int) -> None:
        job = self._job(pick)
        if job is not None:
            self._commit(job)

    def _commit(self, job: JobModel) -> None:
        result = secrets.token_bytes(32)
        account = self.providers[job.provider]
        receipt = self._try(account, lambda: self.c.escrow.commit_result(account, job.terms.job_id, result))
        if receipt is not None:
            assert job.status == JobStatus.ACCEPTED
            ts = self._ts(receipt)
            assert ts <= job.terms.delivery_deadline
            job.status, job.result = JobStatus.DELIVERED, result
            job.challenge_ends_at = ts + job.terms.challenge_window

    def _settle(self, job: JobModel) -> None:
        job.status = JobStatus.SETTLED
        self.m.providers[job.provider].settled_jobs += 1

    @rule(pick=picks)
    def confirm(self, pick: int) -> None:
        job = self._job(pick)
        if job is None:
            return
        account = self.clients[job.client]
        receipt = self._try(account, lambda: self.c.escrow.confirm_result(account, job.terms.job_id))
        if receipt is not None:
            assert job.status == JobStatus.DELIVERED
            assert self._ts(receipt) <= job.challenge_ends_at
            self._settle(job)

    @rule(pick=picks, wait=st.booleans())
    def release(self, pick: int, wait: bool) -> None:
        job = self._job(pick)
        if job is None:
            return
        self._wait_past(job.challenge_ends_at, wait)
        receipt = self._try(self.finder, lambda: self.c.escrow.release_payment(self.finder, job.terms.job_id))
        if receipt is not None:
            assert job.status == JobStatus.DELIVERED
            assert self._ts(receipt) > job.challenge_ends_at
            self._settle(job)

    @rule(pick=picks, by_client=st.booleans(), wait=st.booleans())
    def timeout(self, pick: int, by_client: bool, wait: bool) -> None:
        job = self._job(pick)
        if job is None:
            return
        self._wait_past(job.terms.delivery_deadline, wait)
        account = self.clients[job.client] if by_client else self.finder
        receipt = self._try(account, lambda: self.c.escrow.claim_timeout(account, job.terms.job_id))
        if receipt is not None:
            assert job.status == JobStatus.ACCEPTED
            assert self._ts(receipt) > job.terms.delivery_deadline
            job.status = JobStatus.REFUNDED
            _, reward = self._slash(job.provider, job.terms.slash_amount, finder_share=True)
            self.m.providers[job.provider].jobs_failed += 1
            self.m.client_paid[job.client] -= job.terms.price + (reward if by_client else 0)

    @rule(pick=picks)
    def dispute(self, pick: int) -> None:
        job = self._job(pick)
        if job is None:
            return
        account = self.clients[job.client]
        bond = job.terms.price * PARAMS.dispute_bond_bps // BPS
        receipt = self._try(account, lambda: self.c.escrow.dispute_result(account, job.terms.job_id))
        if receipt is not None:
            assert job.status == JobStatus.DELIVERED
            ts = self._ts(receipt)
            assert ts <= job.challenge_ends_at
            job.status, job.bond = JobStatus.DISPUTED, bond
            job.dispute_ends_at = ts + PARAMS.dispute_window
            self.m.client_paid[job.client] += bond

    @rule(pick=picks, valid=st.booleans(), signers=st.sampled_from([1, 2, 3]))
    def resolve(self, pick: int, valid: bool, signers: int) -> None:
        job = self._job(pick)
        if job is None:
            return
        verdict = Verdict(job_id=job.terms.job_id, result_hash=job.result or b"\x01" * 32, result_valid=valid)
        signatures = [
            (v.address, verdict.sign(LocalSigner(v), self.c.escrow.domain).signature)
            for v in self.verifiers[:signers]
        ]
        receipt = self._try(
            self.finder, lambda: self.c.escrow.resolve_dispute(self.finder, verdict, signatures)
        )
        if receipt is None:
            return
        assert job.status == JobStatus.DISPUTED
        assert signers >= PARAMS.verdict_quorum
        if valid:
            self._settle(job)
            return
        job.status = JobStatus.REFUNDED
        _, reward = self._slash(job.provider, job.terms.slash_amount, finder_share=True)
        prov = self.m.providers[job.provider]
        prov.jobs_failed += 1
        prov.disputes_lost += 1
        self.m.client_paid[job.client] -= job.terms.price + job.bond + reward

    @rule(pick=picks, wait=st.booleans())
    def expire(self, pick: int, wait: bool) -> None:
        job = self._job(pick)
        if job is None:
            return
        self._wait_past(job.dispute_ends_at, wait)
        receipt = self._try(self.finder, lambda: self.c.escrow.expire_dispute(self.finder, job.terms.job_id))
        if receipt is not None:
            assert job.status == JobStatus.DISPUTED
            assert self._ts(receipt) > job.dispute_ends_at
            job.status = JobStatus.REFUNDED
            self.m.client_paid[job.client] -= job.terms.price

    # --- vouchers ------------------------------------------------------------------------------

    @rule(client=clients_, amount=amounts)
    def deposit(self, client: int, amount: int) -> None:
        account = self.clients[client]
        receipt = self._try(account, lambda: self.c.vouchers.deposit(account, amount))
        assert receipt is not None
        self.m.deposits[client].balance += amount
        self.m.client_paid[client] += amount

    @rule(client=clients_, share=st.sampled_from([1, 5, 10, 15]))
    def request_withdrawal(self, client: int, share: int) -> None:
        account, dep = self.clients[client], self.m.deposits[client]
        amount = max(dep.balance * share // 10, 1)
        receipt = self._try(account, lambda: self.c.vouchers.request_withdrawal(account, amount))
        assert (receipt is not None) == (amount <= dep.balance)
        if receipt is not None:
            dep.pending = amount
            dep.withdrawable_at = self._ts(receipt) + PARAMS.withdrawal_delay

    @rule(client=clients_, wait=st.booleans())
    def withdraw_deposit(self, client: int, wait: bool) -> None:
        account, dep = self.clients[client], self.m.deposits[client]
        self._wait_past(dep.withdrawable_at - 1, wait and dep.pending > 0)
        receipt = self._try(account, lambda: self.c.vouchers.withdraw(account))
        if receipt is not None:
            assert dep.pending > 0
            assert self._ts(receipt) >= dep.withdrawable_at
            amount = min(dep.pending, dep.balance)
            dep.balance -= amount
            dep.pending, dep.withdrawable_at = 0, 0
            self.m.client_paid[client] -= amount
        else:
            assert dep.pending == 0 or self.chain.now() < dep.withdrawable_at

    def _voucher(self, client: int, p: int, amount_delta: int, jobs_delta: int) -> Any:
        done_amount, done_jobs = self.m.redeemed.get((client, p), (0, 0))
        return Voucher(
            client=self.clients[client].address,
            provider=self.providers[p].address,
            cumulative_amount=done_amount + amount_delta,
            cumulative_jobs=done_jobs + jobs_delta,
        ).sign(LocalSigner(self.clients[client]), self.c.vouchers.domain)

    def _book_redemption(self, client: int, p: int, signed: Any) -> None:
        key = (client, p)
        done_amount, done_jobs = self.m.redeemed.get(key, (0, 0))
        message = signed.message
        self.m.deposits[client].balance -= message.cumulative_amount - done_amount
        self.m.providers[p].redeemed_jobs += message.cumulative_jobs - done_jobs
        self.m.redeemed[key] = (message.cumulative_amount, message.cumulative_jobs)
        self.m.last_voucher[key] = signed

    @rule(
        client=clients_,
        p=working_providers,
        delta=st.sampled_from([ETH // 10, ETH // 2, 2 * ETH]),
        jobs=st.integers(0, 5),
    )
    def redeem(self, client: int, p: int, delta: int, jobs: int) -> None:
        signed = self._voucher(client, p, delta, jobs)
        receipt = self._try(self.finder, lambda: self.c.vouchers.redeem(self.finder, signed))
        funded = delta <= self.m.deposits[client].balance
        if receipt is None:
            # Paying an unregistered provider may be refused (counters need a registered account).
            assert not funded or not self.m.providers[p].registered
        else:
            assert funded
            self._book_redemption(client, p, signed)

    @rule(
        p=providers_,
        deltas=st.lists(st.sampled_from([ETH // 10, ETH]), min_size=N_CLIENTS, max_size=N_CLIENTS),
        jobs=st.integers(0, 3),
    )
    def redeem_batch(self, p: int, deltas: list[int], jobs: int) -> None:
        batch = [self._voucher(c, p, deltas[c], jobs) for c in range(N_CLIENTS)]
        account = self.providers[p]
        receipt = self._try(account, lambda: self.c.vouchers.redeem_batch(account, account.address, batch))
        funded = all(deltas[c] <= self.m.deposits[c].balance for c in range(N_CLIENTS))
        if receipt is None:
            assert not funded or not self.m.providers[p].registered
        else:
            assert funded
            for c, signed in enumerate(batch):
                self._book_redemption(c, p, signed)

    @rule(client=clients_, p=providers_)
    def replay_voucher(self, client: int, p: int) -> None:
        signed = self.m.last_voucher.get((client, p))
        if signed is None:
            return
        receipt = self._try(self.finder, lambda: self.c.vouchers.redeem(self.finder, signed))
        assert receipt is None

    # --- faults, attestations, rewards, time ------------------------------------------------------

    @rule(p=providers_, pick=picks)
    def prove_equivocation(self, p: int, pick: int) -> None:
        job_id = self.m.jobs[pick % len(self.m.jobs)].terms.job_id if self.m.jobs else b"\x07" * 32
        provider = self.providers[p]
        receipts = [
            JobReceipt(
                job_id=job_id,
                provider=provider.address,
                client=self.clients[0].address,
                result_hash=bytes([i + 1]) * 32,
                queue_micros=1,
                compute_micros=2,
            ).sign(LocalSigner(provider), self.c.fault_proofs.domain)
            for i in range(2)
        ]
        proven_before = self.c.fault_proofs.is_fault_proven(provider.address, job_id)
        receipt = self._try(
            self.finder,
            lambda: self.c.fault_proofs.prove_equivocation(self.finder, receipts[0], receipts[1]),
        )
        prov = self.m.providers[p]
        amount = (prov.stake + prov.unbonding) * PARAMS.equivocation_slash_bps // BPS
        assert (receipt is not None) == (not proven_before and amount > 0)
        if receipt is not None:
            self._slash(p, amount, finder_share=True)

    @rule(p=providers_, pick=picks, canary=st.booleans(), signers=st.sampled_from([1, 2, 3]))
    def prove_judged_fault(self, p: int, pick: int, canary: bool, signers: int) -> None:
        """A wrong canary answer or an invalid result, judged by ``signers`` verifiers (one proof per job)."""
        job_id = self.m.jobs[pick % len(self.m.jobs)].terms.job_id if self.m.jobs else b"\x07" * 32
        provider, fp, chosen = self.providers[p], self.c.fault_proofs, self.verifiers[:signers]
        signed = JobReceipt(
            job_id=job_id,
            provider=provider.address,
            client=self.clients[0].address,
            result_hash=b"\xee" * 32,
            queue_micros=1,
            compute_micros=2,
        ).sign(LocalSigner(provider), fp.domain)
        verdicts = [fp.verdict_signature(LocalSigner(v), job_id, signed.message.result_hash) for v in chosen]
        proven_before = fp.is_fault_proven(provider.address, job_id)
        if canary:
            spec_hash, salt = secrets.token_bytes(32), secrets.token_bytes(32)
            committed = self._try(
                self.verifiers[0],
                lambda: fp.commit_canary(self.verifiers[0], canary_commitment(job_id, spec_hash, salt)),
            )
            assert committed is not None
            receipt = self._try(
                self.finder, lambda: fp.prove_canary_fault_tx(self.finder, signed, spec_hash, salt, verdicts)
            )
        else:
            receipt = self._try(
                self.finder, lambda: fp.prove_invalid_result_tx(self.finder, signed, verdicts)
            )
        prov = self.m.providers[p]
        amount = (prov.stake + prov.unbonding) * PARAMS.fault_slash_bps // BPS
        expected = not proven_before and amount > 0 and signers >= PARAMS.verdict_quorum
        assert (receipt is not None) == expected
        if receipt is not None:
            self._slash(p, amount, finder_share=True)
            assert fp.is_fault_proven(provider.address, job_id)

    @rule(p=providers_, epoch_step=st.sampled_from([0, 1, 5]))
    def attest(self, p: int, epoch_step: int) -> None:
        provider = self.providers[p]
        epoch = self.m.attested_epoch[p] + epoch_step
        signed = Attestation(
            provider=provider.address,
            benchmark_id=b"\x42" * 32,
            gemm_flops=10**12 + epoch,
            mem_bandwidth=10**9,
            epoch=epoch,
            nonce=self.c.attestations.nonce_of(provider.address),
            deadline=self.chain.now() + DAY,
        ).sign(LocalSigner(provider), self.c.attestations.domain)
        receipt = self._try(self.finder, lambda: self.c.attestations.submit_attestation(self.finder, signed))
        active = self.m.providers[p].stake >= PARAMS.min_provider_stake
        assert (receipt is not None) == active
        if receipt is not None:
            self.m.attested_epoch[p] = epoch
            assert self.c.attestations.latest_figures(provider.address).epoch == epoch

    @rule(v=st.integers(0, N_VERIFIERS - 1), p=providers_, passed=st.booleans())
    def report(self, v: int, p: int, passed: bool) -> None:
        verifier, provider = self.verifiers[v], self.providers[p]
        signed = VerifierReport(
            verifier=verifier.address,
            provider=provider.address,
            challenge_id=secrets.token_bytes(32),
            measured_flops=10**12,
            passed=passed,
            nonce=self.c.attestations.nonce_of(verifier.address),
            deadline=self.chain.now() + DAY,
        ).sign(LocalSigner(verifier), self.c.attestations.domain)
        receipt = self._try(self.finder, lambda: self.c.attestations.submit_report(self.finder, signed))
        assert (receipt is not None) == self.m.providers[p].registered

    @rule(p=providers_, wait=st.booleans())
    def claim(self, p: int, wait: bool) -> None:
        account = self.providers[p]
        if wait:
            self.chain.advance_time(PARAMS.epoch_length)
        owed = self.c.rewards.claimable(account.address)
        before = self.chain.balance(account.address)
        receipt = self._try(account, lambda: self.c.rewards.claim(account))
        assert (receipt is not None) == (owed > 0)
        if receipt is not None:
            cost = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
            assert self.chain.balance(account.address) == before + owed - cost
            assert self.c.rewards.claimable(account.address) == 0

    @rule(back=st.integers(1, 3))
    def rollover(self, back: int) -> None:
        current = self.c.rewards.current_epoch()
        epoch = max(current - back, 0)
        self._try(self.finder, lambda: self.c.rewards.rollover(self.finder, epoch))

    @rule(share=st.sampled_from([1, 2]))
    def withdraw_treasury(self, share: int) -> None:
        amount = self.c.rewards.treasury_balance() // share
        self._try(
            self.admin,
            lambda: self.c.rewards.withdraw_treasury(self.admin, self.finder.address, amount),
        )

    @rule(seconds=st.sampled_from([30, 600, HOUR, DAY, 8 * DAY]))
    def advance_time(self, seconds: int) -> None:
        self.chain.advance_time(seconds)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def books_are_exact(self) -> None:
        c, m = self.c, self.m
        # Conservation: the contracts hold exactly what they owe, and each total is the sum of its parts.
        staked, unbonding = c.registry.total_staked(), c.registry.total_unbonding()
        escrowed, deposits = c.escrow.total_escrowed(), c.vouchers.total_deposits()
        pool, treasury = c.rewards.pool_balance(), c.rewards.treasury_balance()
        assert c.held_eth() == staked + unbonding + escrowed + deposits + pool + treasury
        assert staked == sum(p.stake for p in m.providers) + N_VERIFIERS * VERIFIER_STAKE
        assert unbonding == sum(p.unbonding for p in m.providers)
        assert escrowed == sum(j.held for j in m.jobs)
        assert deposits == sum(d.balance for d in m.deposits)
        assert pool >= sum(c.rewards.claimable(a.address) for a in self.providers)

        for account, prov in zip(self.providers, m.providers, strict=True):
            on_chain = c.registry.account_of(account.address)
            assert (on_chain.stake, on_chain.unbonding) == (prov.stake, prov.unbonding)
            assert prov.stake >= 0
            assert prov.unbonding >= 0
            assert on_chain.total_slashed == prov.total_slashed
            assert on_chain.total_slashed <= prov.ever_staked
            assert on_chain.jobs_completed == prov.settled_jobs + prov.redeemed_jobs
            assert (on_chain.jobs_failed, on_chain.disputes_lost) == (
                prov.jobs_failed,
                prov.disputes_lost,
            )

        for i, account in enumerate(self.clients):
            spent = self.initial[account.address] - self.chain.balance(account.address)
            assert spent - self.gas[account.address] == m.client_paid[i]
            dep, model = c.vouchers.deposit_of(account.address), m.deposits[i]
            assert (dep.balance, dep.pending_withdrawal) == (model.balance, model.pending)
            assert model.balance >= 0

        for job in self.touched:
            assert c.escrow.job_of(job.terms.job_id).status == job.status
        self.touched.clear()


ProximaMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
def test_randomActionSequences_keepBooksExact() -> None:
    """Runs in the default suite (about a minute); ``-m "not slow"`` leaves it out when iterating."""
    ProximaMachine.TestCase("runTest").runTest()
