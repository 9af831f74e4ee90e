"""Replay a sample of a simulation onto the real contracts on py-evm and compare the money.

The simulator settles jobs and slashes providers with the contracts' rules written as pure functions
(:mod:`proxima.sim.economics`). This module checks those functions against the contracts themselves: it takes
a sample of providers (at least one slashed cheater when the run has one) with every client that paid them,
deploys the contracts on a fresh :class:`~proxima.sdk.chain.InProcessChain` with the model's
:class:`~proxima.sdk.deploy.DeployParameters`, and replays what the model says happened to them:

1. each provider registers with the model's stake (its own secp256k1 key, peer id checked by the registry),
   a quorum of verifiers registers, each client deposits what it will pay;
2. epoch by epoch (the chain clock is moved to each reward epoch of the model): every provider redeems its
   clients' latest cumulative vouchers (signed by the clients) with ``redeemBatch``, in the model's batches;
   every slash of the model is proven with real evidence: a receipt signed by the provider and
   ``verdict_quorum`` verifiers' verdicts (``proveInvalidResult``; for canaries the verifier first commits the
   canary and the proof reveals it, ``proveCanaryFault``), submitted by one finder account;
3. after the last epoch has ended every provider with a reward claims it.

Then it compares, provider by provider, what the chain did with what the model said: stake after slashing,
total slashed, jobs completed, payout, fees, rewards claimed and the ETH the provider gained; and in total the
finder's rewards, the treasury, the pool left over, the clients' deposits left and the conservation of ETH.

Per-provider payouts, fees, stakes and job counts do not depend on who else is in the sample (a provider's
redemptions involve only itself and its clients), so they are compared with the model's own numbers for
the whole run. A reward epoch's pot and total work do depend on everyone who worked in it, so rewards,
treasury and pool are compared with :mod:`proxima.sim.economics` applied to the sampled settlements only.

Everything is deterministic given the simulation result and ``seed``: the sample, the keys (derived from
the seed), the job ids and the order of transactions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.types import TxReceipt

from proxima.contracts import ProximaError
from proxima.sdk.bindings import ProximaContracts, canary_commitment
from proxima.sdk.chain import InProcessChain
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import JobReceipt, LocalSigner, SignedMessage, Voucher
from proxima.sdk.peerid import peer_id_from_key
from proxima.sim.economics import Redemption, SlashEvent, epoch_rewards
from proxima.sim.errors import SimError

__all__ = [
    "Comparison",
    "ExpectedProvider",
    "ExpectedTotals",
    "ReplayError",
    "ReplayPlan",
    "ReplayReport",
    "choose_sample",
    "execute_plan",
    "job_id_of",
    "plan_sample",
    "replay_sample",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as the replay goes."""

Settlement = Redemption | SlashEvent

_GAS_LIMIT = 25_000_000
"""Gas limit of each replayed transaction: a ``redeemBatch`` of all of a provider's clients in one epoch is
one transaction, as in the model (the fee is rounded once per batch), so it may be large (~30k gas a voucher;
py-evm's block limit is 30M)."""

_GAS_MONEY = 10**17
"""ETH each actor gets for gas on top of its stake or deposit."""


class ReplayError(SimError):
    """The replay could not be carried out (a bad sample or plan, or the chain refused a step)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"replay failed at {step}: {reason}")
        self.step = step
        self.reason = reason


# --- the plan: what the model says happened to the sample ----------------------------------------------


@dataclass(frozen=True)
class ExpectedProvider:
    """The model's numbers for one provider (wei unless said otherwise)."""

    stake: int
    slashed: int
    jobs_completed: int
    payout: int
    fees: int
    rewards: int


@dataclass(frozen=True)
class ExpectedTotals:
    """The model's numbers over the whole sample (wei).

    Attributes:
        finder_rewards: Paid to the finder of the sample's faults.
        treasury: Credited to the treasury by the sample's fees and slashes.
        pool_left: Left in the reward pool after every sampled provider claimed (rounding dust and pots of
            epochs nobody can claim).
        pots: Epoch -> its pot at the end (after rollovers).
        work: Epoch -> total work credited.
    """

    finder_rewards: int
    treasury: int
    pool_left: int
    pots: Mapping[int, int]
    work: Mapping[int, int]


@dataclass(frozen=True)
class ReplayPlan:
    """Everything :func:`execute_plan` needs: parameters, actors, the model's records and expectations.

    Attributes:
        params: The model's contract parameters (deployed as they are).
        seed: Derives the actors' keys and the job ids.
        providers: Sampled provider (model index) -> stake at registration.
        clients: Client (model index) -> what it deposits (everything it pays the sampled providers).
        settlements: The model's redemptions and slashes of the sampled providers, in time order.
        job_client: Job index -> client index, for the receipts of slashed jobs (a canary's receipt names
            the committing verifier as the client).
        expected: Provider -> the model's numbers, summed from its records.
        totals: The model's totals over the sample.
        run_figures: Provider -> the run's own per-provider figures (``SimResult.provider_*`` arrays:
            stake, slashed, payout, fees, jobs); compared too when given (rewards are not: the run's pots
            are shared with providers outside the sample).
    """

    params: DeployParameters
    seed: int
    providers: Mapping[int, int]
    clients: Mapping[int, int]
    settlements: tuple[Settlement, ...]
    job_client: Mapping[int, int]
    expected: Mapping[int, ExpectedProvider]
    totals: ExpectedTotals
    run_figures: Mapping[int, ExpectedProvider] | None = None

    @property
    def last_epoch(self) -> int:
        return max((s.epoch for s in self.settlements), default=0)

    def transactions_by_epoch(self) -> dict[int, int]:
        """Transactions the replay sends in each epoch (epoch 0 includes the deployment's tail and setup)."""
        counts: dict[int, int] = defaultdict(int)
        # after the pool's genesis: 7 deployments and role grants, then registrations and deposits
        counts[0] += 7 + len(self.providers) + self.params.verdict_quorum + len(self.clients)
        for record in self.settlements:
            counts[record.epoch] += 2 if getattr(record, "fault", None) == "canary" else 1
        for epoch in range(1, self.last_epoch + 2):
            counts[epoch] += 2  # the block that opens the epoch, and a possible rollover
        return dict(counts)

    def chain_params(self) -> DeployParameters:
        """The parameters deployed: the model's, with a longer epoch only where py-evm's clock needs it.

        py-evm mines one block per transaction and each block is one second after its parent, so an epoch
        of ``epoch_length`` seconds holds fewer than ``epoch_length`` transactions. When an epoch of the
        plan needs more, the chain's epochs are lengthened (every model epoch is still replayed in the
        chain epoch of the same number; no rule depends on the epoch's length otherwise).
        """
        needed = max(self.transactions_by_epoch().values(), default=0) + 4
        if needed <= self.params.epoch_length:
            return self.params
        return self.params.model_copy(update={"epoch_length": needed})

    def check(self) -> None:
        """Refuse a plan that cannot be replayed faithfully.

        Raises:
            ReplayError: Naming the first problem (an actor outside the sample, epochs out of order, a stake
                below the registry minimum, a voucher that does not grow, a deposit that does not cover...).
        """
        p = self.params
        for provider, stake in sorted(self.providers.items()):
            if stake < p.min_provider_stake:
                raise ReplayError(
                    "plan", f"provider {provider} stake {stake} < minimum {p.min_provider_stake}"
                )
            if provider not in self.expected:
                raise ReplayError("plan", f"provider {provider} has no expected numbers")
        previous = 0
        owed: dict[int, int] = defaultdict(int)
        last: dict[tuple[int, int], tuple[int, int]] = {}
        for record in self.settlements:
            if record.epoch < previous:
                raise ReplayError("plan", f"settlements out of epoch order at epoch {record.epoch}")
            previous = record.epoch
            if record.provider not in self.providers:
                raise ReplayError("plan", f"a settlement of provider {record.provider} outside the sample")
            if isinstance(record, SlashEvent):
                if record.fault not in ("invalid_result", "canary"):
                    raise ReplayError("plan", f"fault {record.fault!r} cannot be replayed")
                continue
            for client, (amount, jobs) in sorted(record.cumulative.items()):
                if client not in self.clients:
                    raise ReplayError("plan", f"voucher of client {client} outside the sample")
                done = last.get((client, record.provider), (0, 0))
                if amount <= done[0] or jobs < done[1]:
                    raise ReplayError(
                        "plan", f"voucher of client {client} to provider {record.provider} does not grow"
                    )
                owed[client] += amount - done[0]
                last[(client, record.provider)] = (amount, jobs)
        for client, amount in sorted(owed.items()):
            if self.clients[client] < amount:
                raise ReplayError(
                    "plan", f"client {client} deposits {self.clients[client]} but owes {amount}"
                )


def _is_redemption(record: object) -> bool:
    return getattr(record, "kind", None) == "redeem"


def _is_slash(record: object) -> bool:
    return getattr(record, "kind", None) == "slash"


def plan_sample(
    settlements: Sequence[Settlement],
    stakes: Sequence[int] | Mapping[int, int],
    params: DeployParameters,
    *,
    providers: Sequence[int],
    seed: int,
    job_client: Mapping[int, int] | None = None,
) -> ReplayPlan:
    """The replay plan for ``providers``: their records, their clients and the model's numbers for them.

    Per-provider numbers (stake after slashing, slashed, jobs, payout, fees) are the model's own records
    summed. Rewards, treasury, pots and the pool left are :func:`proxima.sim.economics.epoch_rewards` and the
    records' pot/treasury credits over the sample only (a pot is shared by whoever worked in its epoch).

    Args:
        settlements: The model's redemptions and slashes (``SimResult.settlements``), in time order.
        stakes: Initial stake per provider (index -> wei).
        params: The model's parameters.
        providers: Which providers to replay.
        seed: For keys and job ids.
        job_client: Job index -> client index (for slashed jobs' receipts); optional.

    Raises:
        ReplayError: If ``providers`` is empty or names an unknown provider.
    """
    chosen = sorted({int(p) for p in providers})
    if not chosen:
        raise ReplayError("sampling", "no provider to replay")
    size = len(stakes)
    for p in chosen:
        if not 0 <= p < size:
            raise ReplayError("sampling", f"provider {p} is not in the world (0..{size - 1})")
    wanted = set(chosen)
    records = tuple(r for r in settlements if r.provider in wanted and (_is_redemption(r) or _is_slash(r)))
    deposits: dict[int, int] = defaultdict(int)
    final: dict[tuple[int, int], int] = {}
    pots: dict[int, int] = defaultdict(int)
    work: dict[tuple[int, int], int] = defaultdict(int)
    treasury = finder = 0
    sums: dict[int, dict[str, int]] = {p: defaultdict(int) for p in chosen}
    stake_after = {p: int(stakes[p]) for p in chosen}
    for r in records:
        pots[r.epoch] += r.to_pot_wei
        if isinstance(r, Redemption):
            treasury += r.to_treasury_wei
            for client, (amount, _) in r.cumulative.items():
                final[(client, r.provider)] = amount
            if r.amount_wei:
                work[(r.provider, r.epoch)] += r.amount_wei
            s = sums[r.provider]
            s["payout"] += r.payout_wei
            s["fees"] += r.fee_wei
            s["jobs"] += r.jobs
        else:
            treasury += r.to_treasury_wei
            finder += r.finder_reward_wei
            sums[r.provider]["slashed"] += r.slashed_wei
            stake_after[r.provider] = r.stake_after_wei
    for (client, _), amount in final.items():
        deposits[client] += amount
    rewards, final_pots = epoch_rewards(dict(pots), dict(work))
    expected = {
        p: ExpectedProvider(
            stake=stake_after[p],
            slashed=sums[p]["slashed"],
            jobs_completed=sums[p]["jobs"],
            payout=sums[p]["payout"],
            fees=sums[p]["fees"],
            rewards=rewards.get(p, 0),
        )
        for p in chosen
    }
    total_work: dict[int, int] = defaultdict(int)
    for (_, e), w in work.items():
        total_work[e] += w
    totals = ExpectedTotals(
        finder_rewards=finder,
        treasury=treasury,
        pool_left=sum(final_pots.values()) - sum(rewards.values()),
        pots=dict(sorted(final_pots.items())),
        work=dict(sorted(total_work.items())),
    )
    return ReplayPlan(
        params=params,
        seed=seed,
        providers={p: int(stakes[p]) for p in chosen},
        clients=dict(sorted(deposits.items())),
        settlements=records,
        job_client=dict(job_client or {}),
        expected=expected,
        totals=totals,
    )


def choose_sample(settlements: Sequence[Settlement], *, sample: int, seed: int) -> tuple[int, ...]:
    """Which providers to replay: ``sample`` of those with a redemption or a slash, chosen with ``seed``.

    At least one slashed provider is included when the run slashed anyone (a cheater caught), and the rest
    are drawn from the providers that were paid, so the sample exercises both.

    Raises:
        ReplayError: If ``sample`` is below 1.
    """
    if sample < 1:
        raise ReplayError("sampling", f"the sample must have at least 1 provider, got {sample}")
    rng = np.random.default_rng(seed)
    slashed = sorted({r.provider for r in settlements if _is_slash(r)})
    paid = sorted({r.provider for r in settlements if _is_redemption(r)})
    picks: list[int] = []
    if slashed:
        picks.append(int(slashed[int(rng.integers(len(slashed)))]))
    rest = sorted((set(paid) | set(slashed)) - set(picks))
    order = rng.permutation(len(rest))
    picks += [int(rest[i]) for i in order[: max(0, sample - len(picks))]]
    return tuple(sorted(picks))


# --- the report -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One number the model and the chain must agree on.

    Attributes:
        subject: What it is about, for example ``"provider 12"`` or ``"redemption 3 (provider 12, epoch 0)"``.
        quantity: For example ``"payout_wei"``.
        model: The model's value.
        chain: The contracts' value.
        source: Where the model's value came from.
    """

    subject: str
    quantity: str
    model: int
    chain: int
    source: str

    @property
    def ok(self) -> bool:
        return self.model == self.chain


@dataclass(frozen=True)
class ReplayReport:
    """What the replay did and how the model and the contracts compared."""

    seed: int
    providers: tuple[int, ...]
    cheaters: tuple[int, ...]
    clients: int
    jobs: int
    redemptions: int
    slashes: int
    epochs: int
    transactions: int
    gas: int
    elapsed_s: float
    comparisons: tuple[Comparison, ...]
    conserved: bool
    model_epoch_s: int = 0
    chain_epoch_s: int = 0

    @property
    def agreements(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.ok]

    @property
    def mismatches(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.ok]

    @property
    def ok(self) -> bool:
        """Every number agreed (and there were numbers), and the contracts hold what they owe."""
        return self.conserved and bool(self.comparisons) and not self.mismatches

    def summary(self) -> str:
        """One line: how many numbers agreed, over how much activity."""
        verdict = "agree" if self.ok else f"disagree ({len(self.mismatches)} mismatches)"
        return (
            f"{len(self.agreements)}/{len(self.comparisons)} numbers {verdict}: "
            f"{len(self.providers)} providers ({len(self.cheaters)} slashed), {self.clients} clients, "
            f"{self.jobs} jobs, {self.redemptions} redemptions, {self.slashes} slashes, "
            f"{self.epochs} epochs, {self.transactions} transactions"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (mismatches listed in full, agreements counted)."""
        return {
            "ok": self.ok,
            "seed": self.seed,
            "providers": list(self.providers),
            "cheaters": list(self.cheaters),
            "clients": self.clients,
            "jobs": self.jobs,
            "redemptions": self.redemptions,
            "slashes": self.slashes,
            "epochs": self.epochs,
            "transactions": self.transactions,
            "gas": self.gas,
            "elapsed_s": round(self.elapsed_s, 3),
            "conserved": self.conserved,
            "model_epoch_s": self.model_epoch_s,
            "chain_epoch_s": self.chain_epoch_s,
            "agreements": len(self.agreements),
            "comparisons": len(self.comparisons),
            "mismatches": [
                {"subject": c.subject, "quantity": c.quantity, "model": str(c.model), "chain": str(c.chain)}
                for c in self.mismatches
            ],
        }


# --- execution ------------------------------------------------------------------------------------------


def _key(seed: int, role: str, index: int) -> LocalAccount:
    account: LocalAccount = Account.from_key(keccak(f"proxima-sim-replay:{seed}:{role}:{index}".encode()))
    return account


def job_id_of(seed: int, job: int, *, provider: int | None = None, ordinal: int = 0) -> bytes:
    """The 32-byte id the replay gives job ``job`` (a canary, job -1, is named by provider and ordinal)."""
    if job >= 0:
        return keccak(f"proxima-sim-job:{seed}:{job}".encode())
    return keccak(f"proxima-sim-canary:{seed}:{provider}:{ordinal}".encode())


class _Runner:
    """Sends the plan's transactions and keeps what the chain said."""

    def __init__(self, plan: ReplayPlan, progress: Progress | None) -> None:
        self.plan = plan
        self.progress = progress
        self.chain = InProcessChain(accounts=2)
        self.chain.FAST_GAS_LIMIT = _GAS_LIMIT
        self.admin, self.finder = self.chain.accounts[0], self.chain.accounts[1]
        self.transactions = 0
        self.gas = 0
        self.gas_paid: dict[str, int] = defaultdict(int)
        self.providers = {i: _key(plan.seed, "provider", i) for i in sorted(plan.providers)}
        self.clients = {i: _key(plan.seed, "client", i) for i in sorted(plan.clients)}
        self.verifiers = sorted(
            (_key(plan.seed, "verifier", i) for i in range(plan.params.verdict_quorum)),
            key=lambda a: int(a.address, 16),
        )
        self.comparisons: list[Comparison] = []
        self.claimed: dict[int, int] = defaultdict(int)
        self.paid: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        self.canaries: dict[int, int] = defaultdict(int)
        self.genesis = 0
        self.chain_params = plan.chain_params()
        self.contracts: ProximaContracts

    def sent(self, step: str, send: Callable[[], TxReceipt], payer: str) -> TxReceipt:
        try:
            receipt = send()
        except ProximaError as err:
            raise ReplayError(step, str(err)) from err
        self.transactions += 1
        self.gas += int(receipt["gasUsed"])
        self.gas_paid[payer] += int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0))
        return receipt

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def compare(self, subject: str, quantity: str, model: int, chain: int, source: str) -> None:
        self.comparisons.append(Comparison(subject, quantity, int(model), int(chain), source))

    def setup(self) -> None:
        """Fund every actor, deploy, then register providers and verifiers and make the clients' deposits.

        Funding comes first so that only the registrations and deposits fall in epoch 0 after the pool's
        genesis (py-evm moves its clock one second per block).
        """
        p = self.plan.params
        stakes = {i: self.plan.providers[i] for i in self.providers}
        for index, account in self.providers.items():
            self.fund(account, stakes[index] + _GAS_MONEY)
        for verifier in self.verifiers:
            self.fund(verifier, p.min_verifier_stake + _GAS_MONEY)
        for index, account in self.clients.items():
            self.fund(account, self.plan.clients[index] + _GAS_MONEY)
        try:
            deployment = deploy_all(self.chain, self.admin, self.chain_params)
        except ProximaError as err:
            raise ReplayError("deployment", str(err)) from err
        self.contracts = ProximaContracts.from_deployment(self.chain, deployment)
        self.genesis = int(self.contracts.rewards._call("genesis"))  # the pool's deployment time
        registry, vouchers = self.contracts.registry, self.contracts.vouchers
        total = len(self.providers) + len(self.verifiers) + len(self.clients)
        done = 0
        for index, account in self.providers.items():
            peer_id = peer_id_from_key(bytes(account.key))
            self.sent(
                f"registering provider {index}",
                partial(registry.register, account, peer_id, keccak(peer_id), stakes[index]),
                account.address,
            )
            done += 1
            self.tick("actors", done, total)
        for verifier in self.verifiers:
            self.sent(
                "registering a verifier",
                partial(
                    registry.register_verifier,
                    verifier,
                    keccak(verifier.address.encode()),
                    p.min_verifier_stake,
                ),
                verifier.address,
            )
            done += 1
            self.tick("actors", done, total)
        for index, account in self.clients.items():
            self.sent(
                f"deposit of client {index}",
                partial(vouchers.deposit, account, self.plan.clients[index]),
                account.address,
            )
            done += 1
            self.tick("actors", done, total)

    def fund(self, account: LocalAccount, amount: int) -> None:
        tx: Any = {"to": account.address, "value": amount}
        self.sent("funding an actor", lambda: self.chain.send_transaction(self.admin, tx), self.admin.address)

    def epoch_now(self) -> int:
        return (self.chain.now() - self.genesis) // self.chain_params.epoch_length

    def move_to_epoch(self, epoch: int) -> None:
        """Move the clock into ``epoch``, rolling over each ended epoch that has a pot but no work."""
        current = self.epoch_now()
        if current > epoch:
            raise ReplayError(
                f"epoch {epoch}",
                f"the chain is already in epoch {current}: more transactions than an epoch of "
                f"{self.chain_params.epoch_length}s holds (one block a second)",
            )
        rewards = self.contracts.rewards
        while current < epoch:
            current += 1
            target = self.genesis + current * self.chain_params.epoch_length
            self.chain.advance_time(target - self.chain.now())
            ended = current - 1
            totals = rewards.epoch_of(ended)
            if totals.pot and not totals.total_work and ended < self.plan.last_epoch:
                self.sent(
                    f"rollover of epoch {ended}",
                    partial(rewards.rollover, self.admin, ended),
                    self.admin.address,
                )

    def redeem(self, number: int, record: Redemption) -> None:
        provider = self.providers[record.provider]
        domain = self.contracts.vouchers.domain
        batch: list[SignedMessage[Voucher]] = [
            Voucher(
                client=self.clients[client].address,
                provider=provider.address,
                cumulative_amount=amount,
                cumulative_jobs=jobs,
            ).sign(LocalSigner(self.clients[client]), domain)
            for client, (amount, jobs) in sorted(record.cumulative.items())
        ]
        subject = f"redemption {number} (provider {record.provider}, epoch {record.epoch})"
        receipt = self.sent(
            subject,
            lambda: self.contracts.vouchers.redeem_batch(self.finder, provider.address, batch),
            self.finder.address,
        )
        [paid] = self.contracts.vouchers.events(receipt, "ProviderPaid")
        payout, fee, jobs = int(paid.args["payout"]), int(paid.args["fee"]), int(paid.args["jobs"])
        self.paid[record.provider][0] += payout
        self.paid[record.provider][1] += fee
        source = "model's redemption record"
        self.compare(subject, "payout_wei", record.payout_wei, payout, source)
        self.compare(subject, "fee_wei", record.fee_wei, fee, source)
        self.compare(subject, "jobs", record.jobs, jobs, source)

    def slash(self, number: int, record: SlashEvent) -> None:
        provider = self.providers[record.provider]
        faults = self.contracts.fault_proofs
        ordinal = self.canaries[record.provider] if record.job < 0 else 0
        if record.job < 0:
            self.canaries[record.provider] += 1
        job_id = job_id_of(self.plan.seed, record.job, provider=record.provider, ordinal=ordinal)
        client_index = self.plan.job_client.get(record.job)
        if client_index is None:
            client_address = self.verifiers[0].address  # a canary is the verifier's own job
        else:
            client_address = _key(self.plan.seed, "client", client_index).address
        wrong = keccak(b"wrong result:" + job_id)
        receipt = JobReceipt(
            job_id=job_id,
            provider=provider.address,
            client=client_address,
            result_hash=wrong,
            queue_micros=0,
            compute_micros=0,
        ).sign(LocalSigner(provider), faults.domain)
        verdicts = [faults.verdict_signature(LocalSigner(v), job_id, wrong) for v in self.verifiers]
        subject = f"slash {number} (provider {record.provider}, {record.fault}, epoch {record.epoch})"
        if record.fault == "canary":
            spec, salt = keccak(b"canary spec:" + job_id), keccak(b"canary salt:" + job_id)
            committer = self.verifiers[0]
            self.sent(
                subject,
                lambda: faults.commit_canary(committer, canary_commitment(job_id, spec, salt)),
                committer.address,
            )
            tx = self.sent(
                subject,
                lambda: faults.prove_canary_fault_tx(self.finder, receipt, spec, salt, verdicts),
                self.finder.address,
            )
        else:
            tx = self.sent(
                subject,
                lambda: faults.prove_invalid_result_tx(self.finder, receipt, verdicts),
                self.finder.address,
            )
        [slashed] = self.contracts.registry.events(tx, "Slashed")
        source = "model's slash record"
        self.compare(subject, "slashed_wei", record.slashed_wei, int(slashed.args["amount"]), source)
        self.compare(
            subject, "finder_reward_wei", record.finder_reward_wei, int(slashed.args["finderReward"]), source
        )
        stake = self.contracts.registry.account_of(provider.address).stake
        self.compare(subject, "stake_after_wei", record.stake_after_wei, stake, source)

    def claim_all(self) -> None:
        rewards = self.contracts.rewards
        for index, account in self.providers.items():
            if rewards.claimable(account.address) == 0:
                continue
            receipt = self.sent(
                f"claim of provider {index}", partial(rewards.claim, account), account.address
            )
            for event in rewards.events(receipt, "RewardsClaimed"):
                self.claimed[index] += int(event.args["amount"])


def execute_plan(plan: ReplayPlan, *, progress: Progress | None = None) -> ReplayReport:
    """Carry out ``plan`` on a fresh py-evm chain and compare what the contracts did with its expectations.

    Args:
        plan: What to replay and what the model expects (see :class:`ReplayPlan`).
        progress: Called with ``(stage, done, total)`` as the replay goes.

    Returns:
        The report: every comparison, agreements and mismatches.

    Raises:
        ReplayError: If the plan is inconsistent or the chain refuses one of its steps (the step is named).
    """
    plan.check()
    started = time.monotonic()
    runner = _Runner(plan, progress)
    with runner.chain:
        runner.setup()
        start = {i: runner.chain.balance(a.address) for i, a in runner.providers.items()}
        finder_start = runner.chain.balance(runner.finder.address) + runner.gas_paid[runner.finder.address]
        # Within an epoch the order of redemptions and slashes changes no number: fees and slashes only add
        # to the epoch's pot and the treasury, and a slash takes a share of stake, which redemptions leave.
        redemptions = slashes = 0
        for done, record in enumerate(plan.settlements, start=1):
            runner.move_to_epoch(record.epoch)
            if isinstance(record, Redemption):
                runner.redeem(redemptions, record)
                redemptions += 1
            else:
                runner.slash(slashes, record)
                slashes += 1
            runner.tick("settlements", done, len(plan.settlements))
        runner.move_to_epoch(plan.last_epoch + 1)
        gas_before_claims = dict(runner.gas_paid)
        runner.claim_all()
        _compare_totals(plan, runner, start, gas_before_claims, finder_start)
        conserved = runner.contracts.held_eth() == runner.contracts.liabilities()
    report = ReplayReport(
        seed=plan.seed,
        providers=tuple(sorted(plan.providers)),
        cheaters=tuple(sorted({r.provider for r in plan.settlements if isinstance(r, SlashEvent)})),
        clients=len(plan.clients),
        jobs=sum(e.jobs_completed for e in plan.expected.values()),
        redemptions=redemptions,
        slashes=slashes,
        epochs=plan.last_epoch + 1,
        transactions=runner.transactions,
        gas=runner.gas,
        elapsed_s=time.monotonic() - started,
        comparisons=tuple(runner.comparisons),
        conserved=conserved,
        model_epoch_s=plan.params.epoch_length,
        chain_epoch_s=runner.chain_params.epoch_length,
    )
    log.info(
        "replay finished",
        extra={
            "agreements": len(report.agreements),
            "mismatches": len(report.mismatches),
            "transactions": report.transactions,
            "elapsed_s": round(report.elapsed_s, 2),
        },
    )
    return report


def _compare_totals(
    plan: ReplayPlan,
    runner: _Runner,
    start: dict[int, int],
    gas_before_claims: dict[str, int],
    finder_start: int,
) -> None:
    c = runner.contracts
    model, sample = "model's records", "economics over the sample"
    for index in sorted(plan.providers):
        account = runner.providers[index]
        expected = plan.expected[index]
        record = c.registry.account_of(account.address)
        subject = f"provider {index}"
        claim_gas = runner.gas_paid[account.address] - gas_before_claims.get(account.address, 0)
        gained = runner.chain.balance(account.address) + claim_gas - start[index]
        runner.compare(subject, "stake_wei", expected.stake, record.stake, model)
        runner.compare(subject, "total_slashed_wei", expected.slashed, record.total_slashed, model)
        runner.compare(subject, "jobs_completed", expected.jobs_completed, record.jobs_completed, model)
        runner.compare(subject, "payout_wei", expected.payout, runner.paid[index][0], model)
        runner.compare(subject, "fees_wei", expected.fees, runner.paid[index][1], model)
        runner.compare(subject, "rewards_claimed_wei", expected.rewards, runner.claimed[index], sample)
        runner.compare(
            subject, "eth_received_wei", expected.payout + expected.rewards, gained, "payout + rewards"
        )
        figures = (plan.run_figures or {}).get(index)
        if figures is not None:
            run = "the run's per-provider arrays"
            runner.compare(subject, "run stake_wei", figures.stake, record.stake, run)
            runner.compare(subject, "run slashed_wei", figures.slashed, record.total_slashed, run)
            runner.compare(subject, "run jobs_delivered", figures.jobs_completed, record.jobs_completed, run)
            runner.compare(subject, "run payout_wei", figures.payout, runner.paid[index][0], run)
            runner.compare(subject, "run fees_wei", figures.fees, runner.paid[index][1], run)
    for epoch in range(plan.last_epoch + 1):
        totals = c.rewards.epoch_of(epoch)
        runner.compare(f"epoch {epoch}", "pot_wei", plan.totals.pots.get(epoch, 0), totals.pot, sample)
        runner.compare(
            f"epoch {epoch}", "total_work_wei", plan.totals.work.get(epoch, 0), totals.total_work, sample
        )
    finder_gained = runner.chain.balance(runner.finder.address) + runner.gas_paid[runner.finder.address]
    deposits_left = sum(c.vouchers.deposit_of(a.address).balance for a in runner.clients.values())
    runner.compare(
        "sample", "finder_rewards_wei", plan.totals.finder_rewards, finder_gained - finder_start, model
    )
    runner.compare("sample", "treasury_wei", plan.totals.treasury, c.rewards.treasury_balance(), sample)
    runner.compare("sample", "pool_left_wei", plan.totals.pool_left, c.rewards.pool_balance(), sample)
    runner.compare("sample", "client_deposits_left_wei", 0, deposits_left, "deposit = what the model charged")


# --- from a simulation result ---------------------------------------------------------------------------


def replay_sample(
    result: Any,
    world: Any,
    *,
    sample: int,
    seed: int,
    progress: Progress | None = None,
) -> ReplayReport:
    """Replay ``sample`` providers of a simulation onto the real contracts and compare (see the module doc).

    Args:
        result: A :class:`proxima.sim.engine.SimResult` (its ``settlements`` and parameters are used).
        world: The :class:`proxima.sim.world.World` it ran on (initial stakes).
        sample: How many providers to replay (at least one slashed cheater among them when there is one).
        seed: Chooses the sample and derives keys and job ids.
        progress: Called with ``(stage, done, total)``.

    Returns:
        The report; ``report.ok`` when every number agreed.

    Raises:
        ReplayError: If the result carries nothing to replay, or a step is refused by the chain.
    """
    settlements = tuple(getattr(result, "settlements", ()) or ())
    params = _params_of(result)
    if not settlements:
        raise ReplayError("sampling", "the simulation result has no settlements (no job was paid)")
    providers = choose_sample(settlements, sample=sample, seed=seed)
    # the engine's provider rows: the world's market, then its hyperscale pool
    stakes = [int(s) for s in world.providers.stake_wei] + [int(s) for s in world.hyperscale.stake_wei]
    plan = plan_sample(
        settlements,
        stakes,
        params,
        providers=providers,
        seed=seed,
        job_client=_job_clients(result, settlements),
    )
    figures = {
        p: ExpectedProvider(
            stake=int(result.provider_stake_wei[p]),
            slashed=int(result.provider_slashed_wei[p]),
            jobs_completed=int(result.provider_jobs[p]),
            payout=int(result.provider_payout_wei[p]),
            fees=int(result.provider_fees_wei[p]),
            rewards=int(result.provider_rewards_wei[p]),
        )
        for p in providers
    }
    return execute_plan(dataclasses.replace(plan, run_figures=figures), progress=progress)


def _params_of(result: Any) -> DeployParameters:
    for holder in (result, getattr(result, "config", None)):
        params = getattr(holder, "params", None)
        if isinstance(params, DeployParameters):
            return params
    raise ReplayError("sampling", "the simulation result does not say which DeployParameters it used")


def _job_clients(result: Any, settlements: Sequence[Settlement]) -> dict[int, int]:
    clients = getattr(result, "client", None)
    if clients is None:
        return {}
    jobs = {r.job for r in settlements if isinstance(r, SlashEvent) and r.job >= 0}
    return {job: int(clients[job]) for job in sorted(jobs) if job < len(clients)}
