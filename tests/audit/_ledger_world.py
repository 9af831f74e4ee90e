"""A deployed Proxima world in which every kind of transaction happened, for the auditor's tests.

:func:`build_world` deploys the contracts on any :class:`~proxima.sdk.chain.Chain` (py-evm in process or
anvil) with small time parameters and plays a fixed script over four reward epochs:

* epoch 0: four providers and three verifiers register (one updates its metadata, one tops up); attestations
  (one single, one batch of individually signed ones, one provider-signed ``AttestationBatch``) and verifier
  reports (single and batch); escrow jobs confirmed, disputed and resolved valid, disputed and resolved
  invalid; three client deposits and a single voucher redemption; jobs left to be released after their
  challenge window, to time out and to let their dispute expire, which happens after the clock moves; an
  equivocation proof; a deposit withdrawal requested and cancelled.
* epoch 1: a claim of epoch 0's rewards; a second (cumulative) single voucher and a batch redemption; a
  committed canary answered wrongly (proved with a verdict quorum); a withdrawal requested; an unbond.
* epoch 2: no paid work; an invalid-result proof with three verdicts and a donation fund the pot.
* epoch 3: epoch 2's pot is rolled over; the deposit and the unbonded stake are withdrawn; the treasury
  pays out; one job is confirmed, one is left delivered and one accepted (open at the end).

:class:`WorldFacts` records what happened (names of actors, job ids, transaction hashes by step, the
expected outcome of each job) so that tests can assert numbers and tamper with a chosen transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.types import TxReceipt

from proxima.sdk.bindings import ProximaContracts, canary_commitment
from proxima.sdk.chain import Chain, Deployment
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import (
    Attestation,
    AttestationBatch,
    JobReceipt,
    JobTerms,
    LocalSigner,
    Measurement,
    SignedMessage,
    Verdict,
    VerifierReport,
    Voucher,
)
from proxima.sdk.peerid import peer_id_from_key

__all__ = ["ACCOUNTS", "ETH", "PARAMS", "World", "WorldFacts", "build_world"]

ETH = 10**18
GWEI = 10**9
HOUR = 3_600
ACCOUNTS = 14
"""Funded dev accounts the world needs (InProcessChain(accounts=ACCOUNTS); anvil has more)."""

PARAMS = DeployParameters(
    epoch_length=HOUR,
    dispute_window=1_800,
    max_job_duration=HOUR,
    min_challenge_window=60,
    max_challenge_window=1_800,
    unbonding_delay=HOUR + 1_800 + 1_800,
    withdrawal_delay=600,
    verdict_quorum=2,
)
"""Small time parameters so that a few clock jumps cover every deadline and four epochs."""

PROVIDER_STAKE = 10 * ETH
VERIFIER_STAKE = 5 * ETH
SPEC = b"\x5e" * 32
GOOD = b"\x60" * 32
WRONG = b"\xee" * 32


@dataclass
class WorldFacts:
    """What the script did; numbers the auditor must find again from the chain alone.

    Attributes:
        providers, verifiers, clients: Addresses by role (index = the name used below, e.g. provider 0).
        admin: Deployer, admin and treasurer. finder: The outsider who submits proofs and releases jobs.
        treasury_to: Receiver of the treasury withdrawal.
        jobs: Escrow job id by name (``confirmed``, ``released``, ``timed_out``, ``dispute_valid``,
            ``dispute_invalid``, ``dispute_expired``, ``late_confirmed``, ``delivered``, ``open``).
        job_status: Expected final status name of each job (``Settled``, ``Refunded``, ``Delivered``,
            ``Accepted``), by name.
        job_provider: Provider address of each job, by name.
        tx: Transaction hash of each named step (``open:confirmed``, ``redeem:single``, ``redeem:batch``,
            ``prove:canary``, ``prove:invalid``, ``prove:equivocation``, ``resolve:valid``,
            ``attest:single``, ``attest:batch``, ``attest:signed_batch``, ``report:single``,
            ``report:batch``, ...).
        slashes: Expected slashes in chain order as ``(kind, account)``.
        rollover_epoch: The epoch whose pot was rolled over (it had no work).
        claimed: Providers that claimed rewards, in order.
        epochs: Number of the last epoch (the current one at the end).
        deployment_block: Block of the first deployment transaction.
        end_block: The latest block once the script finished.
    """

    providers: list[str] = field(default_factory=list)
    verifiers: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    admin: str = ""
    finder: str = ""
    treasury_to: str = ""
    jobs: dict[str, bytes] = field(default_factory=dict)
    job_status: dict[str, str] = field(default_factory=dict)
    job_provider: dict[str, str] = field(default_factory=dict)
    tx: dict[str, bytes] = field(default_factory=dict)
    slashes: list[tuple[str, str]] = field(default_factory=list)
    rollover_epoch: int = 0
    claimed: list[str] = field(default_factory=list)
    epochs: int = 0
    deployment_block: int = 0
    end_block: int = 0


@dataclass
class World:
    """A deployed, exercised world: the chain, the bindings, the deployment and the facts."""

    chain: Chain
    contracts: ProximaContracts
    deployment: Deployment
    facts: WorldFacts
    params: DeployParameters


class _Script:
    """The steps of :func:`build_world`, sharing the actors and bindings."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        accounts = chain.accounts
        if len(accounts) < ACCOUNTS:
            raise ValueError(f"the world needs {ACCOUNTS} funded accounts, the chain has {len(accounts)}")
        self.admin = accounts[0]
        self.providers = list(accounts[1:5])
        self.verifiers = list(accounts[5:8])
        self.clients = list(accounts[8:11])
        self.finder = accounts[11]
        self.treasury_to = accounts[12]
        self.deployment = deploy_all(chain, self.admin, PARAMS)
        self.c = ProximaContracts.from_deployment(chain, self.deployment)
        self.genesis = int(self.c.rewards._call("genesis"))
        self.facts = WorldFacts(
            providers=[a.address for a in self.providers],
            verifiers=[a.address for a in self.verifiers],
            clients=[a.address for a in self.clients],
            admin=self.admin.address,
            finder=self.finder.address,
            treasury_to=self.treasury_to.address,
            deployment_block=self.deployment.block_number,
        )
        self._job_counter = 0
        self._voucher_totals: dict[tuple[str, str], tuple[int, int]] = {}

    # --- helpers ---------------------------------------------------------------------------------------

    def record(self, name: str, receipt: TxReceipt) -> TxReceipt:
        self.facts.tx[name] = bytes(HexBytes(receipt["transactionHash"]))
        return receipt

    def to_epoch(self, epoch: int, offset: int = 5) -> None:
        """Move the clock to ``offset`` seconds into ``epoch``."""
        target = self.genesis + epoch * PARAMS.epoch_length + offset
        self.chain.advance_time(max(1, target - self.chain.now()))

    def terms(
        self, name: str, provider: int, client: int, price: int, *, duration: int = 1_200, window: int = 300
    ) -> JobTerms:
        self._job_counter += 1
        job_id = self._job_counter.to_bytes(4, "big").rjust(32, b"\x10")
        now = self.chain.now()
        terms = JobTerms(
            job_id=job_id,
            client=self.clients[client].address,
            provider=self.providers[provider].address,
            price=price,
            slash_amount=ETH,
            spec_hash=SPEC,
            accept_by=now + 600,
            delivery_deadline=now + duration,
            challenge_window=window,
        )
        self.facts.jobs[name] = job_id
        self.facts.job_provider[name] = terms.provider
        return terms

    def open_job(self, name: str, provider: int, client: int, price: int, **kw: int) -> bytes:
        terms = self.terms(name, provider, client, price, **kw)
        signed = terms.sign(LocalSigner(self.providers[provider]), self.c.escrow.domain)
        self.record(f"open:{name}", self.c.escrow.open_job(self.clients[client], signed))
        return terms.job_id

    def commit(self, name: str, provider: int, result: bytes = GOOD) -> None:
        self.record(
            f"commit:{name}",
            self.c.escrow.commit_result(self.providers[provider], self.facts.jobs[name], result),
        )

    def escrow_verdict(self, name: str, valid: bool, signers: list[LocalAccount]) -> None:
        verdict = Verdict(job_id=self.facts.jobs[name], result_hash=GOOD, result_valid=valid)
        sigs = [(v.address, verdict.sign(LocalSigner(v), self.c.escrow.domain).signature) for v in signers]
        tx = self.c.escrow.resolve_dispute(self.finder, verdict, sigs)
        self.record(f"resolve:{'valid' if valid else 'invalid'}", tx)

    def voucher(self, client: int, provider: int, amount: int, jobs: int) -> SignedMessage[Voucher]:
        key = (self.clients[client].address, self.providers[provider].address)
        total_amount, total_jobs = self._voucher_totals.get(key, (0, 0))
        total_amount, total_jobs = total_amount + amount, total_jobs + jobs
        self._voucher_totals[key] = (total_amount, total_jobs)
        message = Voucher(
            client=key[0], provider=key[1], cumulative_amount=total_amount, cumulative_jobs=total_jobs
        )
        return message.sign(LocalSigner(self.clients[client]), self.c.vouchers.domain)

    def receipt(self, provider: int, job_id: bytes, result: bytes) -> SignedMessage[JobReceipt]:
        message = JobReceipt(
            job_id=job_id,
            provider=self.providers[provider].address,
            client=self.clients[0].address,
            result_hash=result,
            queue_micros=1_500,
            compute_micros=640_000,
        )
        return message.sign(LocalSigner(self.providers[provider]), self.c.fault_proofs.domain)

    def fault_verdicts(self, job_id: bytes, result: bytes, signers: list[LocalAccount]) -> list[bytes]:
        fp = self.c.fault_proofs
        return [fp.verdict_signature(LocalSigner(v), job_id, result) for v in signers]

    def attestation(self, provider: int, gemm: int, bandwidth: int, epoch: int) -> SignedMessage[Attestation]:
        account = self.providers[provider]
        message = Attestation(
            provider=account.address,
            benchmark_id=b"\xbe" * 31 + bytes([provider]),
            gemm_flops=gemm,
            mem_bandwidth=bandwidth,
            epoch=epoch,
            nonce=self.c.attestations.nonce_of(account.address),
            deadline=self.chain.now() + HOUR,
        )
        return message.sign(LocalSigner(account), self.c.attestations.domain)

    def report(
        self, verifier: int, provider: int, measured: int, passed: bool, nonce: int
    ) -> SignedMessage[VerifierReport]:
        account = self.verifiers[verifier]
        message = VerifierReport(
            verifier=account.address,
            provider=self.providers[provider].address,
            challenge_id=bytes([verifier, provider]).rjust(32, b"\xc0"),
            measured_flops=measured,
            passed=passed,
            nonce=nonce,
            deadline=self.chain.now() + HOUR,
        )
        return message.sign(LocalSigner(account), self.c.attestations.domain)

    # --- the script ------------------------------------------------------------------------------------

    def epoch0(self) -> None:
        c, f = self.c, self.facts
        for provider in self.providers:
            c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
        for verifier in self.verifiers:
            c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
        self.record("metadata", c.registry.update_metadata(self.providers[0], b"\x12" * 32))
        self.record("top_up", c.registry.top_up(self.providers[1], 2 * ETH))

        # attestations: single, batch of individually signed, provider-signed batch
        tx = c.attestations.submit_attestation(self.finder, self.attestation(0, 80 * 10**12, 900 * 10**9, 1))
        self.record("attest:single", tx)
        batch = [
            self.attestation(1, 60 * 10**12, 700 * 10**9, 1),
            self.attestation(2, 40 * 10**12, 500 * 10**9, 1),
        ]
        self.record("attest:batch", c.attestations.submit_attestations(self.finder, batch))
        p3 = self.providers[3]
        signed_batch = AttestationBatch(
            provider=p3.address,
            epoch=1,
            nonce=c.attestations.nonce_of(p3.address),
            deadline=self.chain.now() + HOUR,
            measurements=(
                Measurement(benchmark_id=b"\xb1" * 32, gemm_flops=20 * 10**12, mem_bandwidth=300 * 10**9),
                Measurement(benchmark_id=b"\xb2" * 32, gemm_flops=25 * 10**12, mem_bandwidth=320 * 10**9),
                Measurement(benchmark_id=b"\xb3" * 32, gemm_flops=30 * 10**12, mem_bandwidth=350 * 10**9),
            ),
        ).sign(LocalSigner(p3), c.attestations.domain)
        self.record("attest:signed_batch", c.attestations.submit_attestation_batch(self.finder, signed_batch))

        # verifier reports: single, then a batch (verifier 0 twice: consecutive nonces)
        self.record(
            "report:single",
            c.attestations.submit_report(self.finder, self.report(0, 0, 75 * 10**12, True, 0)),
        )
        reports = [
            self.report(1, 1, 58 * 10**12, True, 0),
            self.report(0, 2, 12 * 10**12, False, 1),
            self.report(2, 0, 79 * 10**12, True, 0),
        ]
        self.record("report:batch", c.attestations.submit_reports(self.finder, reports))

        # escrow: confirmed
        self.open_job("confirmed", 0, 0, ETH // 10)
        self.commit("confirmed", 0)
        self.record("confirm:confirmed", c.escrow.confirm_result(self.clients[0], f.jobs["confirmed"]))
        f.job_status["confirmed"] = "Settled"
        # disputed, resolved valid (the provider takes the bond)
        self.open_job("dispute_valid", 0, 1, ETH // 5)
        self.commit("dispute_valid", 0)
        self.record("dispute:valid", c.escrow.dispute_result(self.clients[1], f.jobs["dispute_valid"]))
        self.escrow_verdict("dispute_valid", True, self.verifiers[:2])
        f.job_status["dispute_valid"] = "Settled"
        # disputed, resolved invalid (client refunded, provider 1 slashed, client is the finder)
        self.open_job("dispute_invalid", 1, 0, ETH // 4)
        self.commit("dispute_invalid", 1)
        self.record("dispute:invalid", c.escrow.dispute_result(self.clients[0], f.jobs["dispute_invalid"]))
        self.escrow_verdict("dispute_invalid", False, self.verifiers[1:3])
        f.job_status["dispute_invalid"] = "Refunded"
        f.slashes.append(("dispute", self.providers[1].address))

        # deposits, one single redemption
        for i, amount in enumerate((3 * ETH, 2 * ETH, ETH)):
            self.record(f"deposit:{i}", c.vouchers.deposit(self.clients[i], amount))
        self.record("redeem:single", c.vouchers.redeem(self.providers[0], self.voucher(0, 0, ETH // 2, 5)))
        self.record("withdrawal:request_cancelled", c.vouchers.request_withdrawal(self.clients[1], ETH // 2))
        self.record("withdrawal:cancel", c.vouchers.cancel_withdrawal(self.clients[1]))

        # jobs that finish after the clock moves
        self.open_job("released", 1, 1, ETH // 8, window=300)
        self.commit("released", 1)
        self.open_job("timed_out", 2, 0, ETH // 10, duration=900)
        self.open_job("dispute_expired", 2, 1, ETH // 10)
        self.commit("dispute_expired", 2)
        self.record("dispute:expired", c.escrow.dispute_result(self.clients[1], f.jobs["dispute_expired"]))

        # equivocation of provider 3 (before it unbonds)
        job = b"\xe9" * 32
        a, b = self.receipt(3, job, GOOD), self.receipt(3, job, WRONG)
        self.record("prove:equivocation", c.fault_proofs.prove_equivocation(self.finder, a, b))
        f.slashes.append(("equivocation", self.providers[3].address))

        # past the challenge window, the delivery deadline and the dispute window, still in epoch 0
        self.chain.advance_time(1_900)
        self.record("release:released", c.escrow.release_payment(self.finder, f.jobs["released"]))
        f.job_status["released"] = "Settled"
        self.record("timeout:timed_out", c.escrow.claim_timeout(self.finder, f.jobs["timed_out"]))
        f.job_status["timed_out"] = "Refunded"
        f.slashes.append(("timeout", self.providers[2].address))
        self.record("expire:dispute_expired", c.escrow.expire_dispute(self.finder, f.jobs["dispute_expired"]))
        f.job_status["dispute_expired"] = "Refunded"

    def epoch1(self) -> None:
        c, f = self.c, self.facts
        self.to_epoch(1)
        self.record("claim:0", c.rewards.claim(self.providers[0]))
        f.claimed.append(self.providers[0].address)
        self.record("redeem:single2", c.vouchers.redeem(self.providers[0], self.voucher(0, 0, ETH // 4, 3)))
        batch = [self.voucher(0, 1, ETH // 5, 2), self.voucher(1, 1, ETH // 3, 4)]
        self.record(
            "redeem:batch", c.vouchers.redeem_batch(self.providers[1], self.providers[1].address, batch)
        )

        # a committed canary answered wrongly by provider 2
        job, salt = b"\xca" * 32, b"\x5a" * 32
        self.record(
            "canary:commit",
            c.fault_proofs.commit_canary(self.verifiers[2], canary_commitment(job, SPEC, salt)),
        )
        receipt = self.receipt(2, job, WRONG)
        sigs = self.fault_verdicts(job, WRONG, self.verifiers[:2])
        self.record(
            "prove:canary", c.fault_proofs.prove_canary_fault_tx(self.finder, receipt, SPEC, salt, sigs)
        )
        f.slashes.append(("canary", self.providers[2].address))

        self.record("withdrawal:request", c.vouchers.request_withdrawal(self.clients[2], ETH // 2))
        self.record("unbond", c.registry.request_unbond(self.providers[3], 2 * ETH))

    def epoch2(self) -> None:
        c, f = self.c, self.facts
        self.to_epoch(2)
        job = b"\x1d" * 32
        receipt = self.receipt(1, job, WRONG)
        sigs = self.fault_verdicts(job, WRONG, self.verifiers)
        self.record("prove:invalid", c.fault_proofs.prove_invalid_result_tx(self.finder, receipt, sigs))
        f.slashes.append(("invalid_result", self.providers[1].address))
        self.record("fund", c.rewards.fund(self.finder, ETH // 100))

    def epoch3(self) -> None:
        c, f = self.c, self.facts
        self.to_epoch(3, offset=1_900)  # also past provider 3's unbonding delay
        self.record("rollover", c.rewards.rollover(self.finder, 2))
        f.rollover_epoch = 2
        self.record("withdrawal:withdraw", c.vouchers.withdraw(self.clients[2]))
        self.record("unbond:withdraw", c.registry.withdraw(self.providers[3]))
        self.record(
            "treasury", c.rewards.withdraw_treasury(self.admin, self.treasury_to.address, ETH // 1000)
        )
        self.open_job("late_confirmed", 3, 2, ETH // 20)
        self.commit("late_confirmed", 3)
        self.record(
            "confirm:late_confirmed", c.escrow.confirm_result(self.clients[2], f.jobs["late_confirmed"])
        )
        f.job_status["late_confirmed"] = "Settled"
        self.open_job("delivered", 0, 2, ETH // 20)
        self.commit("delivered", 0)
        f.job_status["delivered"] = "Delivered"
        self.open_job("open", 0, 0, ETH // 50)
        f.job_status["open"] = "Accepted"
        f.epochs = 3


def build_world(chain: Chain) -> World:
    """Deploy on ``chain`` and play the whole script; returns the world with its facts.

    Args:
        chain: A fresh chain with at least :data:`ACCOUNTS` funded dev accounts.
    """
    script = _Script(chain)
    script.epoch0()
    script.epoch1()
    script.epoch2()
    script.epoch3()
    script.facts.end_block = chain.block_number()
    return World(chain, script.c, script.deployment, script.facts, PARAMS)
