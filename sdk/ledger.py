"""A readable snapshot of the on-chain ledger, rebuilt from events and checked against contract state.

Who exists comes from events (``ProviderRegistered``, ``JobOpened``, ``VoucherRedeemed``, ``Slashed``...);
how much they hold now comes from contract state. :attr:`Ledger.money` says whether the ETH the contracts
hold equals what they owe.
"""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, ConfigDict

from proxima.sdk.bindings import JobStatus, ProximaContracts, Role
from proxima.sdk.types import Address

__all__ = [
    "AccountLedger",
    "JobLedger",
    "Ledger",
    "MoneyLedger",
    "SlashLedger",
    "VoucherLedger",
    "read_ledger",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class AccountLedger(_Model):
    """A provider or verifier: stake, record, attested figures and earnings (wei)."""

    address: Address
    role: Role
    peer_id: bytes | None
    stake: int
    unbonding: int
    jobs_completed: int
    jobs_failed: int
    disputes_lost: int
    total_slashed: int
    gemm_flops: int
    mem_bandwidth: int
    earned: int
    claimable_rewards: int


class JobLedger(_Model):
    """An escrow job."""

    job_id: bytes
    client: Address
    provider: Address
    price: int
    status: JobStatus
    payout: int


class VoucherLedger(_Model):
    """Redeemed voucher totals of one client-provider pair."""

    client: Address
    provider: Address
    amount: int
    jobs: int


class SlashLedger(_Model):
    """One slash, with its reason and reference (a job id for job faults)."""

    account: Address
    amount: int
    finder: Address
    finder_reward: int
    reason: str
    ref: bytes
    block_number: int


class MoneyLedger(_Model):
    """ETH held by the contracts against what they owe."""

    held: dict[str, int]
    staked: int
    unbonding: int
    escrowed: int
    deposits: int
    reward_pool: int
    treasury: int

    @property
    def total_held(self) -> int:
        return sum(self.held.values())

    @property
    def total_owed(self) -> int:
        return self.staked + self.unbonding + self.escrowed + self.deposits + self.reward_pool + self.treasury

    @property
    def conserved(self) -> bool:
        return self.total_held == self.total_owed


class Ledger(_Model):
    """Everything the ledger says, at one block."""

    block_number: int
    accounts: list[AccountLedger]
    jobs: list[JobLedger]
    vouchers: list[VoucherLedger]
    slashes: list[SlashLedger]
    money: MoneyLedger


def read_ledger(c: ProximaContracts) -> Ledger:
    """Rebuild the ledger of deployment ``c`` from its events and current state."""
    block = c.chain.block_number()
    events = c.logs(to_block=block)
    peer_ids: dict[Address, bytes | None] = {}
    earned: dict[Address, int] = defaultdict(int)
    job_payouts: dict[bytes, int] = defaultdict(int)
    job_ids: list[bytes] = []
    pairs: dict[tuple[Address, Address], None] = {}
    slashes: list[SlashLedger] = []
    for event in events:
        args = event.args
        if event.name == "ProviderRegistered":
            peer_ids[args["account"]] = args["peerId"]
        elif event.name == "VerifierRegistered":
            peer_ids[args["account"]] = None
        elif event.name == "JobOpened":
            job_ids.append(args["jobId"])
        elif event.name == "JobSettled":
            earned[args["provider"]] += args["payout"]
            job_payouts[args["jobId"]] += args["payout"]
        elif event.name == "ProviderPaid":
            earned[args["provider"]] += args["payout"]
        elif event.name == "VoucherRedeemed":
            pairs[(args["client"], args["provider"])] = None
        elif event.name == "Slashed":
            slashes.append(
                SlashLedger(
                    account=args["account"],
                    amount=args["amount"],
                    finder=args["finder"],
                    finder_reward=args["finderReward"],
                    reason=args["reason"].rstrip(b"\0").decode("ascii", "replace"),
                    ref=args["ref"],
                    block_number=event.block_number,
                )
            )
    accounts = []
    for address, peer_id in peer_ids.items():
        record = c.registry.account_of(address)
        figures = c.attestations.latest_figures(address)
        accounts.append(
            AccountLedger(
                address=address,
                role=record.role,
                peer_id=peer_id,
                stake=record.stake,
                unbonding=record.unbonding,
                jobs_completed=record.jobs_completed,
                jobs_failed=record.jobs_failed,
                disputes_lost=record.disputes_lost,
                total_slashed=record.total_slashed,
                gemm_flops=figures.gemm_flops,
                mem_bandwidth=figures.mem_bandwidth,
                earned=earned[address],
                claimable_rewards=c.rewards.claimable(address),
            )
        )
    jobs = []
    for job_id in job_ids:
        job = c.escrow.job_of(job_id)
        jobs.append(
            JobLedger(
                job_id=job_id,
                client=job.client,
                provider=job.provider,
                price=job.price,
                status=job.status,
                payout=job_payouts[job_id],
            )
        )
    vouchers = []
    for client, provider in pairs:
        totals = c.vouchers.redeemed_of(client, provider)
        vouchers.append(
            VoucherLedger(client=client, provider=provider, amount=totals.amount, jobs=totals.jobs)
        )
    money = MoneyLedger(
        held={name: c.chain.balance(address) for name, address in c.deployment.contracts.items()},
        staked=c.registry.total_staked(),
        unbonding=c.registry.total_unbonding(),
        escrowed=c.escrow.total_escrowed(),
        deposits=c.vouchers.total_deposits(),
        reward_pool=c.rewards.pool_balance(),
        treasury=c.rewards.treasury_balance(),
    )
    return Ledger(
        block_number=block,
        accounts=accounts,
        jobs=jobs,
        vouchers=vouchers,
        slashes=slashes,
        money=money,
    )
