"""The README's main command: the whole marketplace, locally, on embedded defaults.

Today it runs the foundation end to end on a real chain: start anvil, deploy the contracts, register three
providers with stake (their libp2p peer ids checked on chain), submit performance attestations measured on
this machine, run one job through escrow and a stream of jobs through payment vouchers (the jobs really
compute matrix products and commit their result hashes), let a provider miss its deadline and get slashed,
and print the resulting ledger. It checks each outcome and exits non-zero if any failed to happen.

Run it with ``scripts/demo`` (bootstraps the environment) or ``python -m proxima.marketplace.demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from rich.console import Console
from rich.table import Table

from proxima.node.benchmark import run_benchmark
from proxima.node.workloads.matmul import MatmulWorkload
from proxima.sdk.bindings import JobStatus, ProximaContracts
from proxima.sdk.chain import AnvilProcess, Chain, InProcessChain
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import Attestation, JobTerms, LocalSigner, Voucher
from proxima.sdk.ledger import Ledger, read_ledger
from proxima.sdk.logs import configure_logging
from proxima.sdk.peerid import peer_id_from_key, peer_id_to_base58
from proxima.sdk.workloads import MatmulInput, spec_hash

__all__ = ["DemoFailedError", "main", "run_demo"]

log = logging.getLogger(__name__)

ETH = 10**18
GWEI = 10**9
PROVIDER_STAKE = 5 * ETH
MATRIX_SIZE = 64
VOUCHER_JOBS = 25


class DemoFailedError(Exception):
    """An outcome the demo promises did not happen."""


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str


@dataclass
class _Run:
    console: Console
    chain: Chain
    c: ProximaContracts
    outcomes: list[Outcome] = field(default_factory=list)
    step_no: int = 0

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.step_no += 1
        started = time.monotonic()
        self.console.print(f"[bold cyan][{self.step_no}/7][/] {title} ...")
        yield
        self.console.print(f"      [green]done[/] in {time.monotonic() - started:.2f}s")

    def expect(self, name: str, ok: bool, detail: str) -> None:
        self.outcomes.append(Outcome(name, ok, detail))
        mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
        self.console.print(f"      {mark} {name}: {detail}")


def _matmul_input(seed: int) -> MatmulInput:
    return MatmulInput(seed=seed, m=MATRIX_SIZE, k=MATRIX_SIZE, n=MATRIX_SIZE, dtype="float32")


def _run_matmul_job(seed: int) -> bytes:
    """Run a matmul job with the node's workload; returns its result hash (what a provider commits)."""
    workload = MatmulWorkload("cpu")
    return workload.result_hash(workload.execute(_matmul_input(seed)))


def _open_escrow_job(
    chain: Chain,
    c: ProximaContracts,
    client: LocalAccount,
    provider: LocalAccount,
    *,
    price: int,
    seed: int,
    duration: int,
) -> JobTerms:
    """The provider quotes a matmul job (signs its terms) and the client opens it with the price."""
    now = chain.now()
    terms = JobTerms(
        job_id=secrets.token_bytes(32),
        client=client.address,
        provider=provider.address,
        price=price,
        slash_amount=ETH,
        spec_hash=spec_hash("matmul", _matmul_input(seed)),
        accept_by=now + 600,
        delivery_deadline=now + duration,
        challenge_window=600,
    )
    c.escrow.open_job(client, terms.sign(LocalSigner(provider), c.escrow.domain))
    return terms


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def _eth(wei: int) -> str:
    return f"{wei / ETH:,.6f}"


def _balance_change(chain: Chain, account: LocalAccount, action: Callable[[], object]) -> int:
    before = chain.balance(account.address)
    action()
    return chain.balance(account.address) - before


def run_demo(chain: Chain, console: Console) -> Ledger:
    """Run the scenario on ``chain`` (deploying fresh contracts) and return the final ledger.

    Raises:
        DemoFailedError: If any promised outcome did not happen.
    """
    admin, providers, clients = chain.accounts[0], chain.accounts[1:4], chain.accounts[4:6]
    run = _Run(console, chain, ProximaContracts.from_deployment(chain, deploy_all(chain, admin)))
    c = run.c
    console.print(f"      contracts deployed at block {c.deployment.block_number} on chain {chain.chain_id}")

    with run.step("Registering three providers with stake (peer ids checked on chain)"):
        for provider in providers:
            peer_id = peer_id_from_key(bytes(provider.key))
            c.registry.register(
                provider, peer_id, keccak(text=f"metadata:{provider.address}"), PROVIDER_STAKE
            )
            console.print(f"      {_short(provider.address)}  {peer_id_to_base58(peer_id)}")
        active = [c.registry.is_active_provider(p.address) for p in providers]
        run.expect("providers active", all(active), f"{sum(active)}/3 staked {_eth(PROVIDER_STAKE)} ETH each")

    with run.step("Benchmarking this machine and submitting signed attestations (one batch)"):
        bench = run_benchmark("cpu", quick=True)
        flops, bandwidth = bench.gemm_flops, bench.mem_bandwidth
        console.print(
            f"      measured {flops / 1e9:,.1f} GFLOP/s fp32 GEMM, {bandwidth / 1e9:,.1f} GB/s copy"
        )
        deadline = chain.now() + 3_600
        batch = [
            Attestation(
                provider=p.address,
                benchmark_id=bench.benchmark_id,
                gemm_flops=flops,
                mem_bandwidth=bandwidth,
                epoch=1,
                nonce=c.attestations.nonce_of(p.address),
                deadline=deadline,
            ).sign(LocalSigner(p), c.attestations.domain)
            for p in providers
        ]
        receipt = c.attestations.submit_attestations(admin, batch)
        stored = [c.attestations.latest_figures(p.address).gemm_flops for p in providers]
        run.expect(
            "attestations on chain",
            stored == [flops] * 3,
            f"3 in one transaction, {receipt['gasUsed'] // 3:,} gas each",
        )

    with run.step("One job through escrow: quote, open, compute, commit, confirm"):
        client, provider = clients[0], providers[0]
        terms = _open_escrow_job(chain, c, client, provider, price=20 * 10**15, seed=1, duration=3_600)
        c.escrow.commit_result(provider, terms.job_id, _run_matmul_job(1))
        paid = _balance_change(chain, provider, lambda: c.escrow.confirm_result(client, terms.job_id))
        job = c.escrow.job_of(terms.job_id)
        fee = terms.price * c.escrow.parameter("feeBps") // 10_000
        run.expect(
            "escrow job settled",
            job.status is JobStatus.SETTLED and paid == terms.price - fee,
            f"provider paid {_eth(paid)} ETH, protocol fee {_eth(fee)} ETH to the reward pool",
        )

    with run.step(f"{VOUCHER_JOBS} jobs through payment vouchers, redeemed in one transaction"):
        client, provider = clients[1], providers[1]
        c.vouchers.deposit(client, ETH)
        price_per_job = 2 * 10**15
        latest = None
        for done in range(1, VOUCHER_JOBS + 1):
            _run_matmul_job(1_000 + done)
            latest = Voucher(
                client=client.address,
                provider=provider.address,
                cumulative_amount=done * price_per_job,
                cumulative_jobs=done,
            ).sign(LocalSigner(client), c.vouchers.domain)
        assert latest is not None
        receipt = c.vouchers.redeem(provider, latest)
        record = c.registry.account_of(provider.address)
        run.expect(
            "vouchers redeemed",
            record.jobs_completed == VOUCHER_JOBS,
            f"{VOUCHER_JOBS} jobs, {_eth(VOUCHER_JOBS * price_per_job)} ETH, "
            f"{receipt['gasUsed'] // VOUCHER_JOBS:,} gas per job",
        )

    with run.step("A provider accepts a job and misses its deadline: refund and slash"):
        client, provider = clients[0], providers[2]
        terms = _open_escrow_job(chain, c, client, provider, price=30 * 10**15, seed=2, duration=900)
        chain.advance_time(terms.delivery_deadline - chain.now() + 1)
        refunded = _balance_change(chain, client, lambda: c.escrow.claim_timeout(client, terms.job_id))
        record = c.registry.account_of(provider.address)
        run.expect(
            "missed deadline slashed",
            record.total_slashed == ETH and record.jobs_failed == 1 and refunded > 0,
            f"provider lost {_eth(record.total_slashed)} ETH of stake; client got the price back "
            f"and the finder's share ({_eth(refunded)} ETH net of gas)",
        )

    with run.step("Reading the ledger back from events and contract state"):
        ledger = read_ledger(c)
        run.expect(
            "funds conserved",
            ledger.money.conserved,
            f"contracts hold {_eth(ledger.money.total_held)} ETH and owe {_eth(ledger.money.total_owed)} ETH",
        )

    with run.step("Ledger"):
        _print_ledger(console, ledger)

    failed = [o for o in run.outcomes if not o.ok]
    if failed:
        raise DemoFailedError("; ".join(f"{o.name}: {o.detail}" for o in failed))
    return ledger


def _print_ledger(console: Console, ledger: Ledger) -> None:
    accounts = Table(title=f"Providers at block {ledger.block_number}", title_justify="left")
    for column in ("address", "stake ETH", "completed", "failed", "slashed ETH", "GFLOP/s", "earned ETH"):
        accounts.add_column(column, justify="left" if column == "address" else "right")
    for a in ledger.accounts:
        accounts.add_row(
            _short(a.address),
            _eth(a.stake),
            str(a.jobs_completed),
            str(a.jobs_failed),
            _eth(a.total_slashed),
            f"{a.gemm_flops / 1e9:,.1f}",
            _eth(a.earned),
        )
    console.print(accounts)

    jobs = Table(title="Escrow jobs", title_justify="left")
    for column in ("job", "client", "provider", "price ETH", "status", "paid ETH"):
        jobs.add_column(column)
    for j in ledger.jobs:
        jobs.add_row(
            j.job_id.hex()[:10],
            _short(j.client),
            _short(j.provider),
            _eth(j.price),
            j.status.name.lower(),
            _eth(j.payout),
        )
    for v in ledger.vouchers:
        jobs.add_row(
            f"{v.jobs} vouchers", _short(v.client), _short(v.provider), _eth(v.amount), "redeemed", ""
        )
    console.print(jobs)

    slashes = Table(title="Slashes", title_justify="left")
    for column in ("provider", "amount ETH", "reason", "job", "finder", "finder reward ETH"):
        slashes.add_column(column)
    for s in ledger.slashes:
        slashes.add_row(
            _short(s.account),
            _eth(s.amount),
            s.reason,
            s.ref.hex()[:10],
            _short(s.finder),
            _eth(s.finder_reward),
        )
    console.print(slashes)

    money = Table(title="Money held by the contracts", title_justify="left")
    money.add_column("owed to")
    money.add_column("ETH", justify="right")
    m = ledger.money
    for label, value in (
        ("stakes", m.staked),
        ("unbonding stakes", m.unbonding),
        ("open escrows", m.escrowed),
        ("voucher deposits", m.deposits),
        ("reward pool", m.reward_pool),
        ("treasury", m.treasury),
    ):
        money.add_row(label, _eth(value))
    money.add_row("[bold]total owed[/]", f"[bold]{_eth(m.total_owed)}[/]")
    money.add_row("[bold]total held[/]", f"[bold]{_eth(m.total_held)}[/]")
    console.print(money)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scripts/demo``."""
    parser = argparse.ArgumentParser(prog="proxima-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=("anvil", "inprocess"),
        default="anvil",
        help="anvil: a local devnet process (default); inprocess: py-evm inside this process",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show structured logs on stderr")
    args = parser.parse_args(argv)
    configure_logging("INFO" if args.verbose else "WARNING")
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    started = time.monotonic()
    console.print("[bold]Proxima[/] — local marketplace demo (foundation: contracts and settlement)")
    try:
        with contextlib.ExitStack() as stack:
            if args.backend == "anvil":
                anvil = stack.enter_context(AnvilProcess())
                chain: Chain = stack.enter_context(anvil.connect())
                console.print(f"[bold cyan][0/7][/] local chain: anvil at {anvil.url}")
            else:
                chain = stack.enter_context(InProcessChain())
                console.print("[bold cyan][0/7][/] local chain: py-evm in process")
            run_demo(chain, console)
    except DemoFailedError as err:
        console.print(f"[bold red]demo failed:[/] {err}")
        return 1
    console.print(f"[bold green]all outcomes happened[/] in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
