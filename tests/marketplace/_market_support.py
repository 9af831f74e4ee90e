"""Helpers for the market-input tests: a deployed system with named actors, and real on-chain outcomes.

Accounts (dev mnemonic): 0 admin, 1-3 providers (registered with 10 ETH), 4-5 clients (voucher deposits of
1 ETH), 6-8 verifiers (5 ETH), 9 outsider. Every figure a test reads is produced by the contracts' own paths:
voucher redemptions complete jobs, escrow timeouts fail them (and slash), lost disputes count and slash,
attestations and verifier reports are EIP-712 messages submitted on chain.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Chain, Deployment
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import Attestation, JobTerms, LocalSigner, Verdict, VerifierReport, Voucher
from proxima.sdk.jobs import Domains
from proxima.sdk.peerid import peer_id_from_key

ETH = 10**18
PROVIDER_STAKE = 10 * ETH
VERIFIER_STAKE = 5 * ETH
CLIENT_DEPOSIT = ETH
RESULT = b"\x42" * 32
PARAMS = DeployParameters()


@dataclass
class Market:
    """A deployed Proxima with named actors."""

    chain: Chain
    c: ProximaContracts
    deployment: Deployment
    admin: LocalAccount
    providers: list[LocalAccount]
    clients: list[LocalAccount]
    verifiers: list[LocalAccount]
    outsider: LocalAccount

    @property
    def domains(self) -> Domains:
        return Domains.from_deployment(self.deployment)


def deploy_market(chain: Chain) -> Market:
    accounts = chain.accounts
    deployment = deploy_all(chain, accounts[0], PARAMS)
    c = ProximaContracts.from_deployment(chain, deployment)
    for provider in accounts[1:4]:
        c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, PROVIDER_STAKE)
    for verifier in accounts[6:9]:
        c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
    for client in accounts[4:6]:
        c.vouchers.deposit(client, CLIENT_DEPOSIT)
    return Market(chain, c, deployment, accounts[0], accounts[1:4], accounts[4:6], accounts[6:9], accounts[9])


def complete_jobs(
    m: Market, provider: LocalAccount, jobs: int, *, client: LocalAccount | None = None
) -> None:
    """``jobs`` more completed jobs: the provider redeems the client's cumulative voucher."""
    client = client or m.clients[0]
    redeemed = m.c.vouchers.redeemed_of(client.address, provider.address)
    voucher = Voucher(
        client=client.address,
        provider=provider.address,
        cumulative_amount=redeemed.amount + jobs * 10**12,
        cumulative_jobs=redeemed.jobs + jobs,
    )
    m.c.vouchers.redeem(provider, voucher.sign(LocalSigner(client), m.c.vouchers.domain))


def _open_escrow(
    m: Market, provider: LocalAccount, *, duration: int = 3_600, slash: int = ETH // 2
) -> JobTerms:
    client = m.clients[0]
    now = m.chain.now()
    terms = JobTerms(
        job_id=secrets.token_bytes(32),
        client=client.address,
        provider=provider.address,
        price=ETH // 100,
        slash_amount=slash,
        spec_hash=b"\x5e" * 32,
        accept_by=now + 600,
        delivery_deadline=now + duration,
        challenge_window=600,
    )
    m.c.escrow.open_job(client, terms.sign(LocalSigner(provider), m.c.escrow.domain))
    return terms


def miss_deadline(m: Market, provider: LocalAccount, *, slash: int = ETH // 2) -> None:
    """An escrow job the provider never delivers: one failed job and ``slash`` taken from its stake."""
    terms = _open_escrow(m, provider, duration=120, slash=slash)
    m.chain.advance_time(121)
    m.c.escrow.claim_timeout(m.outsider, terms.job_id)


def lose_dispute(m: Market, provider: LocalAccount, *, slash: int = ETH // 2) -> None:
    """A delivered result that verifiers rule invalid: a failed job, a lost dispute, and a slash."""
    terms = _open_escrow(m, provider, slash=slash)
    m.c.escrow.commit_result(provider, terms.job_id, RESULT)
    m.c.escrow.dispute_result(m.clients[0], terms.job_id)
    verdict = Verdict(job_id=terms.job_id, result_hash=RESULT, result_valid=False)
    signers = m.verifiers[: PARAMS.verdict_quorum]
    domain = m.c.escrow.domain
    m.c.escrow.resolve_dispute(
        m.outsider, verdict, [(s.address, verdict.sign(LocalSigner(s), domain).signature) for s in signers]
    )


def attest(m: Market, provider: LocalAccount, flops: int, *, epoch: int = 1) -> None:
    """The provider's signed benchmark figures, on chain."""
    attestation = Attestation(
        provider=provider.address,
        benchmark_id=b"\xbe" * 32,
        gemm_flops=flops,
        mem_bandwidth=2 * 10**12,
        epoch=epoch,
        nonce=m.c.attestations.nonce_of(provider.address),
        deadline=m.chain.now() + 3_600,
    )
    m.c.attestations.submit_attestation(
        m.outsider, attestation.sign(LocalSigner(provider), m.c.attestations.domain)
    )


def verifier_report(
    m: Market, verifier: LocalAccount, provider: LocalAccount, *, flops: int, passed: bool
) -> None:
    """A staked verifier's measurement of the provider, on chain."""
    report = VerifierReport(
        verifier=verifier.address,
        provider=provider.address,
        challenge_id=secrets.token_bytes(32),
        measured_flops=flops,
        passed=passed,
        nonce=m.c.attestations.nonce_of(verifier.address),
        deadline=m.chain.now() + 3_600,
    )
    m.c.attestations.submit_report(m.outsider, report.sign(LocalSigner(verifier), m.c.attestations.domain))
