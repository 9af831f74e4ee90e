"""Helpers for the market-input tests: a deployed system with named actors, and real on-chain outcomes.

Accounts (dev mnemonic): 0 admin, 1-3 providers (registered with 10 ETH), 4-5 clients (voucher deposits of
1 ETH), 6-8 verifiers (5 ETH), 9 outsider. Every figure a test reads is produced by the contracts' own paths:
voucher redemptions complete jobs, escrow timeouts fail them (and slash), lost disputes count and slash,
attestations and verifier reports are EIP-712 messages submitted on chain.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from libp2p.abc import INetStream, ISubscriptionAPI
from web3.types import Wei

from proxima.node.advertiser import Advertiser
from proxima.node.jobserver import JobLimits, JobServer
from proxima.node.payments import PaymentChecker
from proxima.node.store import NodeStore
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Chain, Deployment
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import Attestation, JobTerms, LocalSigner, Verdict, VerifierReport, Voucher
from proxima.sdk.jobs import Domains, JobRequest, VoucherPayment, sign_request
from proxima.sdk.offers import (
    Offer,
    OfferCapacity,
    OfferCoordinates,
    OfferHardware,
    OfferMeasurement,
    OfferValidator,
    OfferWorkload,
    SignedOffer,
    subscribe_offers,
)
from proxima.sdk.p2p import JOB_PROTOCOL, open_peer
from proxima.sdk.peerid import peer_id_from_key
from proxima.sdk.types import Address
from proxima.sdk.vivaldi import VivaldiCoordinate
from proxima.sdk.workloads import billing_units, parse_input

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


def fund_clients(m: Market, count: int) -> list[LocalAccount]:
    """``count`` more clients (fixed keys), each sent 2 ETH by the admin and holding a voucher deposit."""
    clients = [Account.from_key(keccak(text=f"proxima-test-client-{i}")) for i in range(count)]
    for client in clients:
        m.chain.send_transaction(m.admin, {"to": client.address, "value": Wei(2 * ETH)})
        m.c.vouchers.deposit(client, CLIENT_DEPOSIT)
    return clients


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


# --- providers on real libp2p hosts, each running trio in a thread of its own ----------------------------

UNIT_PRICE = 10**12


def seeded_matmul(n: int = 8, seed: int = 1) -> dict[str, Any]:
    """A small matmul input whose operands both sides regenerate from a seed."""
    return {"seed": seed, "m": n, "k": n, "n": n, "dtype": "float64"}


class Payer:
    """Signs job requests paid by cumulative vouchers, one running total per (client, provider)."""

    def __init__(self, m: Market) -> None:
        self.m = m
        self._paid: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def request(
        self,
        provider: Address,
        inp: dict[str, Any],
        *,
        client: LocalAccount | None = None,
        workload: str = "matmul",
    ) -> JobRequest:
        client = client or self.m.clients[0]
        price = billing_units(workload, parse_input(workload, inp)) * UNIT_PRICE
        with self._lock:
            amount, jobs = self._paid.get((client.address, provider), (0, 0))
            amount, jobs = amount + price, jobs + 1
            self._paid[(client.address, provider)] = (amount, jobs)
        voucher = Voucher(
            client=client.address, provider=provider, cumulative_amount=amount, cumulative_jobs=jobs
        )
        signed = voucher.sign(LocalSigner(client), self.m.domains.vouchers_domain)
        request = JobRequest(
            job_id=secrets.token_bytes(32),
            client=client.address,
            provider=provider,
            workload=workload,
            input=dict(inp),
            payment=VoucherPayment(voucher=voucher, signature=signed.signature.to_bytes()),
            issued_at=int(time.time()),
        )
        return sign_request(request, LocalSigner(client))


def make_offer(
    account: LocalAccount,
    peer_id_b58: str,
    addrs: Sequence[str],
    seq: int,
    *,
    region: str = "eu-west",
    country: str = "DE",
    coordinate: VivaldiCoordinate | None = None,
    ttl: int = 60,
) -> Offer:
    now = int(time.time())
    return Offer(
        provider=account.address,
        peer_id=peer_id_b58,
        addrs=tuple(addrs),
        region=region,
        country=country,
        hardware=OfferHardware(cpu_model="test cpu", cpu_cores=2, memory_bytes=8 << 30),
        measured=OfferMeasurement(
            benchmark_id="0x" + "00" * 32, device="cpu", gemm_flops=10**10, mem_bandwidth=10**10
        ),
        workloads=(OfferWorkload(name="matmul", unit_price_wei=UNIT_PRICE),),
        coordinates=OfferCoordinates.from_vivaldi(coordinate or VivaldiCoordinate.origin()),
        capacity=OfferCapacity(max_concurrency=2, free_slots=2, queue_depth=0),
        issued_at=now,
        expires_at=now + ttl,
        seq=seq,
    )


class ProviderThread:
    """A provider on its own libp2p host and trio loop: the node's real JobServer (matmul, vouchers checked
    on chain, SQLite store) and Advertiser (signed offers on the gossip topic every ``heartbeat`` seconds).

    With ``serve_jobs=False`` the host advertises but serves no job protocol; with ``hang=True`` it accepts
    job streams and never answers (a provider that stalls).
    """

    def __init__(
        self,
        m: Market,
        account: LocalAccount,
        db: Path,
        *,
        bootstrap: Sequence[str] = (),
        coordinate: VivaldiCoordinate | None = None,
        heartbeat: float = 0.5,
        serve_jobs: bool = True,
        hang: bool = False,
    ) -> None:
        self.m = m
        self.account = account
        self.db = db
        self.bootstrap = list(bootstrap)
        self.coordinate = coordinate
        self.heartbeat = heartbeat
        self.serve_jobs = serve_jobs
        self.hang = hang
        self.addrs: list[str] = []
        self.peer_id_b58 = ""
        self.published = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"provider-{account.address[:8]}", daemon=True)

    def __enter__(self) -> ProviderThread:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            self.stop()
            raise RuntimeError(f"provider did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def offer(self, seq: int = 1) -> Offer:
        """An offer for this provider's host, built here (not gossiped)."""
        return make_offer(self.account, self.peer_id_b58, self.addrs, seq, coordinate=self.coordinate)

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "provider thread did not stop"

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as err:  # noqa: BLE001 - reported to the test by __enter__
            self._error = err
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        key = bytes(self.account.key)
        async with open_peer(key, bootstrap=self.bootstrap) as peer, trio.open_nursery() as nursery:
            self.addrs, self.peer_id_b58 = peer.addrs(), peer.peer_id_b58
            # Join the topic's mesh (and read what arrives, as a node does, so that no queue overflows).
            subscription = await subscribe_offers(peer, OfferValidator(lambda address: True))
            nursery.start_soon(_drain, subscription)
            store: NodeStore | None = None
            if self.hang:
                peer.host.set_stream_handler(JOB_PROTOCOL, _never_answer)
            elif self.serve_jobs:
                store = NodeStore(self.db)
                server = JobServer(
                    peer,
                    {"matmul": MatmulWorkload()},
                    PaymentChecker(self.m.c, self.account.address, store, max_unredeemed_per_client=ETH),
                    store,
                    LocalSigner(self.account),
                    self.m.domains,
                    JobLimits(max_concurrency=2, max_queue=32, read_timeout=10, job_timeout=30),
                    None,
                    {"matmul": UNIT_PRICE},
                )
                await nursery.start(server.run)

            def offer(seq: int) -> Offer:
                return make_offer(
                    self.account, peer.peer_id_b58, peer.addrs(), seq, coordinate=self.coordinate
                )

            def published(_: SignedOffer) -> None:
                self.published += 1

            advertiser = Advertiser(
                peer,
                LocalSigner(self.account),
                offer,
                heartbeat=self.heartbeat,
                min_interval=0.05,
                on_publish=published,
            )
            nursery.start_soon(advertiser.run)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                nursery.cancel_scope.cancel()
                if store is not None:
                    store.close()


async def _never_answer(stream: INetStream) -> None:
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await stream.reset()


async def _drain(subscription: ISubscriptionAPI) -> None:
    while True:
        await subscription.get()
