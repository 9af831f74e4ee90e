"""Gas used by the Proxima contracts, measured from receipts on a freshly deployed system.

Run ``.venv/bin/python benchmarks/gas.py [--backend anvil|inprocess] [--json out.json]``, plus
``--breakdown`` (execution gas by opcode, anvil only) and ``--wall-runs N`` (time sequential transactions).
See docs/BENCHMARKS.md for the figures and what they mean. Exits 1 when a target is missed.

Gas is deterministic: the chain clock starts at a fixed time and moves one second per block, and keys and job
ids come from fixed seeds, so every signature (and so every calldata byte) is the same on every run. Execution
gas is identical on both backends; totals differ by a few zero bytes of signature, as the chain ids differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from web3.types import TxReceipt, Wei

from proxima.sdk.bindings import ProximaContracts, canary_commitment
from proxima.sdk.chain import AnvilProcess, Chain, InProcessChain, RpcChain
from proxima.sdk.deploy import DeployParameters, deploy_all
from proxima.sdk.eip712 import (
    Attestation,
    AttestationBatch,
    JobReceipt,
    JobTerms,
    LocalSigner,
    Measurement,
    Voucher,
)
from proxima.sdk.peerid import peer_id_from_key

log = logging.getLogger("benchmarks.gas")

ETH = 10**18
START_TIME = 2_000_000_000  # a fixed chain clock (2033-05-18) makes every signature reproducible
FAR_DEADLINE = 2**40
STAKE = 10 * ETH
VERIFIER_STAKE = 2 * ETH
BATCH = 50
VOUCHER_JOBS = (1, 100, 1_000)
BATCH_CLIENTS = 20
JOB_PRICE = 10**15  # per job, in vouchers and escrow
VOUCHER_TARGET = 100  # gas per job at 1,000 jobs
ATTESTATION_TARGET = 10_000  # gas per batched attestation


@dataclass(frozen=True)
class Row:
    """One measured transaction (or batch).

    Attributes:
        group: Which scenario it belongs to.
        step: What was sent.
        gas: ``gasUsed`` from the receipt.
        calldata_gas: The calldata part of the intrinsic gas (4 per zero byte, 16 per other byte).
        units: How many items the transaction covers (attestations, jobs, clients).
        unit: What an item is.
        target: Gas per item the issue asks for, if any.
        tx: The transaction hash.
    """

    group: str
    step: str
    gas: int
    calldata_gas: int
    tx: str
    units: int = 1
    unit: str = "tx"
    target: int | None = None

    @property
    def per_unit(self) -> float:
        return self.gas / self.units

    @property
    def execution_gas(self) -> int:
        """What the EVM spent running the call: gas used less the 21,000 base and the calldata."""
        return self.gas - 21_000 - self.calldata_gas

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.per_unit <= self.target


def derived_account(label: str) -> LocalAccount:
    """A key that is the same on every run (``keccak(label)``)."""
    account: LocalAccount = Account.from_key(keccak(text=f"proxima-benchmark/{label}"))
    return account


class Bench:
    """A deployed system on ``chain`` and the rows measured on it."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.rows: list[Row] = []
        self.breakdowns: dict[str, dict[str, int]] = {}
        self.trace = False
        accounts = chain.accounts
        self.admin, self.outsider = accounts[0], accounts[9]
        self.providers = accounts[1:4]
        self.clients = accounts[4:6]
        self.c = ProximaContracts.from_deployment(chain, deploy_all(chain, self.admin, DeployParameters()))
        self._seq = 0

    # --- helpers ------------------------------------------------------------------------------------

    def record(
        self,
        group: str,
        step: str,
        receipt: TxReceipt,
        units: int = 1,
        unit: str = "tx",
        target: int | None = None,
    ) -> Row:
        data = bytes(self.chain.w3.eth.get_transaction(receipt["transactionHash"])["input"])
        calldata_gas = sum(4 if b == 0 else 16 for b in data)
        tx = receipt["transactionHash"].to_0x_hex()
        row = Row(group, step, int(receipt["gasUsed"]), calldata_gas, tx, units, unit, target)
        self.rows.append(row)
        if self.trace:  # now: isolated scenarios are reverted afterwards
            self.breakdowns[tx] = opcode_gas(self.chain, tx)
        log.info("%s / %s: %d gas (%.0f per %s)", group, step, row.gas, row.per_unit, unit)
        return row

    def fund(self, accounts: list[LocalAccount], amount: int) -> None:
        for account in accounts:
            self.chain.send_transaction(self.admin, {"to": account.address, "value": Wei(amount)})

    def register(self, provider: LocalAccount) -> TxReceipt:
        return self.c.registry.register(provider, peer_id_from_key(bytes(provider.key)), b"\x11" * 32, STAKE)

    def attestation(self, provider: LocalAccount, epoch: int = 1) -> Attestation:
        return Attestation(
            provider=provider.address,
            benchmark_id=keccak(text=f"bench/{provider.address}/{epoch}"),
            gemm_flops=312 * 10**12 + epoch,
            mem_bandwidth=3_350 * 10**9,
            epoch=epoch,
            nonce=self.c.attestations.nonce_of(provider.address),
            deadline=FAR_DEADLINE,
        )

    def attest_many(self, providers: list[LocalAccount], epoch: int) -> TxReceipt:
        """One ``submitAttestations`` with one attestation per entry of ``providers`` (repeats allowed)."""
        nonces = {p.address: self.c.attestations.nonce_of(p.address) for p in providers}
        domain = self.c.attestations.domain
        batch = []
        for provider in providers:
            message = self.attestation(provider, epoch).model_copy(update={"nonce": nonces[provider.address]})
            nonces[provider.address] += 1
            batch.append(message.sign(LocalSigner(provider), domain))
        return self.c.attestations.submit_attestations(self.outsider, batch)

    def job_id(self) -> bytes:
        self._seq += 1
        return keccak(text=f"bench/job/{self._seq}")

    def terms(self, client: LocalAccount, provider: LocalAccount) -> JobTerms:
        now = self.chain.now()
        return JobTerms(
            job_id=self.job_id(),
            client=client.address,
            provider=provider.address,
            price=JOB_PRICE,
            slash_amount=ETH // 2,
            spec_hash=b"\x5e" * 32,
            accept_by=now + 600,
            delivery_deadline=now + 3_600,
            challenge_window=600,
        )

    def open_job(self, client: LocalAccount, provider: LocalAccount) -> tuple[JobTerms, TxReceipt]:
        terms = self.terms(client, provider)
        signed = terms.sign(LocalSigner(provider), self.c.escrow.domain)
        return terms, self.c.escrow.open_job(client, signed)

    def voucher(self, client: LocalAccount, provider: LocalAccount, jobs: int) -> Voucher:
        return Voucher(
            client=client.address,
            provider=provider.address,
            cumulative_amount=jobs * JOB_PRICE,
            cumulative_jobs=jobs,
        )

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Run a scenario and then put the chain back as it was (the clock too)."""
        snapshot = self.chain.snapshot()
        try:
            yield
        finally:
            self.chain.revert(snapshot)

    # --- scenarios ----------------------------------------------------------------------------------

    def run(self) -> list[Row]:
        for scenario in (
            self.registration,
            self.attestations,
            self.escrow,
            self.faults,
            self.vouchers,
            self.voucher_batch,
        ):
            log.info("scenario %s", scenario.__name__)
            scenario()
        return self.rows

    def registration(self) -> None:
        self.record("register", "register provider (stake, peer-id check)", self.register(self.providers[0]))
        for provider in self.providers[1:]:
            self.register(provider)

    def attestations(self) -> None:
        g = "attestation"
        p = self.providers[0]
        domain = self.c.attestations.domain
        first = self.attestation(p).sign(LocalSigner(p), domain)
        self.record(g, "single submit, provider's first", self.c.attestations.submit_attestation(p, first))
        again = self.attestation(p).sign(LocalSigner(p), domain)
        self.record(g, "single submit, steady state", self.c.attestations.submit_attestation(p, again))

        signer = self.providers[2]
        for label, epoch in (("provider's first", 1), ("steady state", 2)):
            batch = AttestationBatch(
                provider=signer.address,
                epoch=epoch,
                nonce=self.c.attestations.nonce_of(signer.address),
                deadline=FAR_DEADLINE,
                measurements=tuple(
                    Measurement(
                        benchmark_id=keccak(text=f"bench/{i}"),
                        gemm_flops=312 * 10**12 + i,
                        mem_bandwidth=3_350 * 10**9 + i,
                    )
                    for i in range(BATCH)
                ),
            )
            receipt = self.c.attestations.submit_attestation_batch(
                self.outsider, batch.sign(LocalSigner(signer), domain)
            )
            self.record(
                g,
                f"provider-signed batch of {BATCH}, {label}",
                receipt,
                BATCH,
                "attestation",
                ATTESTATION_TARGET,
            )

        # Batches of individually signed attestations (an aggregator's path): informational.
        one = self.providers[1]
        for label, epoch in (("first 50 of the provider", 1), ("next 50", 2)):
            receipt = self.attest_many([one] * BATCH, epoch)
            self.record(g, f"batch {BATCH} signed singly, 1 provider, {label}", receipt, BATCH, "attestation")

        many = [derived_account(f"provider/{i}") for i in range(BATCH)]
        self.fund(many, STAKE + ETH)
        for provider in many:
            self.register(provider)
        for label, epoch in (("each one's first", 1), ("each one's second", 2)):
            receipt = self.attest_many(many, epoch)
            self.record(
                g, f"batch {BATCH} signed singly, {BATCH} providers, {label}", receipt, BATCH, "attestation"
            )

    def escrow(self) -> None:
        client, provider = self.clients[0], self.providers[0]
        escrow = self.c.escrow
        terms, opened = self.open_job(client, provider)
        self.record("escrow: confirm", "openJob", opened)
        self.record(
            "escrow: confirm", "commitResult", escrow.commit_result(provider, terms.job_id, b"\x01" * 32)
        )
        self.record(
            "escrow: confirm",
            "confirmResult (first fees of the epoch)",
            escrow.confirm_result(client, terms.job_id),
        )

        terms, opened = self.open_job(client, provider)
        self.record("escrow: release", "openJob", opened)
        committed = escrow.commit_result(provider, terms.job_id, b"\x02" * 32)
        self.record("escrow: release", "commitResult", committed)
        self.chain.advance_time(terms.challenge_window + 1)
        self.record(
            "escrow: release", "releasePayment (after window)", escrow.release_payment(provider, terms.job_id)
        )

        terms, opened = self.open_job(client, provider)
        self.record("escrow: timeout", "openJob", opened)
        self.chain.advance_time(terms.delivery_deadline - self.chain.now() + 1)
        receipt = escrow.claim_timeout(self.outsider, terms.job_id)
        self.record("escrow: timeout", "claimTimeout (refund + slash)", receipt)

    def faults(self) -> None:
        provider, client = self.providers[2], self.clients[0]
        job_id = self.job_id()
        domain = self.c.fault_proofs.domain
        signed = [
            JobReceipt(
                job_id=job_id,
                provider=provider.address,
                client=client.address,
                result_hash=bytes([tag]) * 32,
                queue_micros=1_000,
                compute_micros=250_000,
            ).sign(LocalSigner(provider), domain)
            for tag in (0xA1, 0xB2)
        ]
        receipt = self.c.fault_proofs.prove_equivocation(self.outsider, signed[0], signed[1])
        self.record("fault proof", "proveEquivocation (slash)", receipt)
        self.judged_faults()

    def judged_faults(self) -> None:
        """Canary and invalid-result proofs with a quorum of verifier verdicts (the deployment's quorum)."""
        fp = self.c.fault_proofs
        quorum = fp.verdict_quorum()
        verifiers = sorted(self.chain.accounts[6 : 6 + quorum], key=lambda a: int(a.address, 16))
        for verifier in verifiers:
            self.c.registry.register_verifier(verifier, b"\x22" * 32, VERIFIER_STAKE)
        provider, client = self.providers[1], self.clients[0]
        job_id, spec_hash, salt = self.job_id(), keccak(text="bench/spec"), keccak(text="bench/salt")
        receipt = fp.commit_canary(verifiers[0], canary_commitment(job_id, spec_hash, salt))
        self.record("fault proof", "commitCanary", receipt)
        signed = JobReceipt(
            job_id=job_id,
            provider=provider.address,
            client=client.address,
            result_hash=b"\xee" * 32,
            queue_micros=1_000,
            compute_micros=250_000,
        ).sign(LocalSigner(provider), fp.domain)
        verdicts = [
            fp.verdict_signature(LocalSigner(v), job_id, signed.message.result_hash) for v in verifiers
        ]
        step = f"{quorum} verdict{'s' if quorum > 1 else ''}, slash"
        with self.isolated():  # both proofs slash the same provider's first fault
            receipt = fp.prove_canary_fault_tx(self.outsider, signed, spec_hash, salt, verdicts)
            self.record("fault proof", f"proveCanaryFault ({step})", receipt)
        with self.isolated():
            receipt = fp.prove_invalid_result_tx(self.outsider, signed, verdicts)
            self.record("fault proof", f"proveInvalidResult ({step})", receipt)

    def vouchers(self) -> None:
        provider, client = self.providers[0], self.clients[1]
        domain = self.c.vouchers.domain
        self.c.vouchers.deposit(client, 10 * ETH)
        for jobs in VOUCHER_JOBS:
            with self.isolated():
                for label, total in (("first", jobs), ("second", 2 * jobs)):
                    # The target is settlement gas; a pair's first redemption also creates its storage slot.
                    target = VOUCHER_TARGET if jobs == max(VOUCHER_JOBS) and label == "second" else None
                    signed = self.voucher(client, provider, total).sign(LocalSigner(client), domain)
                    receipt = self.c.vouchers.redeem(provider, signed)
                    step = f"redeem {jobs:,} job{'s' if jobs > 1 else ''}, {label} from the client"
                    self.record("voucher", step, receipt, jobs, "job", target)

    def voucher_batch(self) -> None:
        provider = self.providers[0]
        clients = [derived_account(f"client/{i}") for i in range(BATCH_CLIENTS)]
        self.fund(clients, 2 * ETH)
        for client in clients:
            self.c.vouchers.deposit(client, ETH)
        domain = self.c.vouchers.domain
        for label, jobs in (("first from each", 100), ("second from each", 200)):
            batch = [self.voucher(c, provider, jobs).sign(LocalSigner(c), domain) for c in clients]
            receipt = self.c.vouchers.redeem_batch(provider, provider.address, batch)
            self.record(
                "voucher batch",
                f"redeemBatch {BATCH_CLIENTS} clients, {label}",
                receipt,
                BATCH_CLIENTS,
                "client",
            )


# --- chains ---------------------------------------------------------------------------------------------


@contextmanager
def open_chain(backend: str, steps_tracing: bool = False) -> Iterator[Chain]:
    """A fresh chain whose clock stands at :data:`START_TIME` and moves one second per block."""
    if backend == "anvil":
        extra = ("--timestamp", str(START_TIME), *(("--steps-tracing",) if steps_tracing else ()))
        with AnvilProcess(extra_args=extra) as anvil, anvil.connect() as rpc:
            rpc.w3.provider.make_request("anvil_setBlockTimestampInterval", [1])  # type: ignore[arg-type]
            yield rpc
    else:
        with InProcessChain() as chain:
            chain.advance_time(START_TIME - chain.now())
            yield chain


def describe(chain: Chain) -> str:
    if isinstance(chain, RpcChain):
        return str(chain.w3.client_version)
    return "py-evm (eth-tester)"


# --- where the gas goes (anvil --steps-tracing) -------------------------------------------------------

CATEGORIES = {
    "SLOAD": "SLOAD",
    "SSTORE": "SSTORE",
    "STATICCALL": "calls",  # ecrecover is a STATICCALL to precompile 0x01: 100 + 3,000
    "CALL": "calls",
    "DELEGATECALL": "calls",
    "EXTCODESIZE": "account",  # Solidity's code check before a call: 2,600 when the address is cold
    "KECCAK256": "keccak",
}


def opcode_gas(chain: Chain, tx: str) -> dict[str, int]:
    """Execution gas of ``tx`` by opcode category, from anvil's struct logger.

    Each step is charged its own cost: the drop in gas to the next step of the same frame, less what any
    frame it opened consumed (so a CALL counts its access, value and stipend costs, not the callee's work).
    """
    answer = chain.w3.provider.make_request(
        "debug_traceTransaction",  # type: ignore[arg-type]
        [tx, {"disableStorage": True, "disableMemory": True, "disableStack": True}],
    )
    steps = answer["result"]["structLogs"]
    totals: dict[str, int] = {}
    for i, step in enumerate(steps):
        depth, j, inner = step["depth"], i + 1, 0
        if j < len(steps) and steps[j]["depth"] > depth:
            entry = steps[j]["gas"]
            while j < len(steps) and steps[j]["depth"] > depth:
                j += 1
            inner = entry - (steps[j - 1]["gas"] - steps[j - 1]["gasCost"])
        same_frame = j < len(steps) and steps[j]["depth"] == depth
        cost = step["gas"] - steps[j]["gas"] - inner if same_frame else step["gasCost"]
        op = str(step["op"])
        key = "LOG" if op.startswith("LOG") else CATEGORIES.get(op, "other")
        totals[key] = totals.get(key, 0) + int(cost)
    return totals


# --- wall clock -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WallTime:
    """Seconds for ``count`` transactions, over several runs."""

    backend: str
    what: str
    count: int
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def tx_per_s(self) -> float:
        return self.count / self.median


def time_runs(runs: int, body: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        body()
        times.append(time.perf_counter() - started)
    return times


def wall_clock(bench: Bench, backend: str, runs: int) -> list[WallTime]:
    """Sequential sign-send-wait throughput: single attestations, and escrow jobs opened."""
    p, client = bench.providers[2], bench.clients[0]
    domain = bench.c.attestations.domain
    count = 20
    epoch = iter(range(10, 10_000))

    def attest() -> None:
        for _ in range(count):
            signed = bench.attestation(p, next(epoch)).sign(LocalSigner(p), domain)
            bench.c.attestations.submit_attestation(p, signed)

    def open_jobs() -> None:
        for _ in range(count):
            bench.open_job(client, bench.providers[0])

    return [
        WallTime(backend, "submitAttestation", count, time_runs(runs, attest)),
        WallTime(backend, "openJob", count, time_runs(runs, open_jobs)),
    ]


# --- output ---------------------------------------------------------------------------------------------


def gas_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    for name in ("scenario", "step", "gasUsed", "calldata", "execution", "per item", "target", ""):
        table.add_column(name, justify="left" if name in ("scenario", "step", "") else "right")
    previous = ""
    for row in rows:
        if previous and row.group != previous:
            table.add_section()
        previous = row.group
        table.add_row(
            row.group,
            row.step,
            f"{row.gas:,}",
            f"{row.calldata_gas:,}",
            f"{row.execution_gas:,}",
            f"{row.per_unit:,.1f} / {row.unit}" if row.units > 1 else "",
            f"<= {row.target:,}" if row.target is not None else "",
            "" if row.passed is None else ("[green]PASS" if row.passed else "[red]FAIL"),
        )
    return table


def breakdown_table(rows: list[Row], breakdowns: dict[str, dict[str, int]]) -> Table:
    keys = ["SLOAD", "SSTORE", "calls", "account", "LOG", "keccak", "other"]
    table = Table(
        title="Execution gas by opcode (calls: CALL/STATICCALL incl. ecrecover; account: EXTCODESIZE)"
    )
    for name in ("scenario", "step", *keys):
        table.add_column(name, justify="left" if name in ("scenario", "step") else "right")
    for row in rows:
        split = breakdowns.get(row.tx, {})
        table.add_row(row.group, row.step, *(f"{split.get(k, 0):,}" for k in keys))
    return table


def wall_table(walls: list[WallTime]) -> Table:
    table = Table(title="Wall clock: sequential sign + send + wait for receipt")
    for name in ("backend", "transaction", "tx per run", "runs", "median s", "min-max s", "tx/s (median)"):
        table.add_column(name, justify="left" if name in ("backend", "transaction") else "right")
    for w in walls:
        spread = f"{min(w.runs):.2f}-{max(w.runs):.2f}"
        table.add_row(
            w.backend, w.what, str(w.count), str(len(w.runs)), f"{w.median:.2f}", spread, f"{w.tx_per_s:.0f}"
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["anvil", "inprocess"], default="anvil")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--wall-runs", type=int, default=0, help="time sequential transactions this many times"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="split execution gas by opcode (anvil with --steps-tracing)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False)],
    )
    if args.breakdown and args.backend != "anvil":
        parser.error("--breakdown needs --backend anvil")

    started = time.perf_counter()
    with open_chain(args.backend, steps_tracing=args.breakdown) as chain:
        client = describe(chain)
        bench = Bench(chain)
        bench.trace = args.breakdown
        rows = bench.run()
        walls = wall_clock(bench, args.backend, args.wall_runs) if args.wall_runs > 0 else []
    elapsed = time.perf_counter() - started

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    console.print(gas_table(rows, f"Proxima gas from receipts ({args.backend}: {client})"))
    if bench.breakdowns:
        console.print(breakdown_table(rows, bench.breakdowns))
    if walls:
        console.print(wall_table(walls))
    checked = [r for r in rows if r.passed is not None]
    met = sum(bool(r.passed) for r in checked)
    log.warning(
        "%d of %d targets met; %d transactions measured in %.1fs", met, len(checked), len(rows), elapsed
    )
    if args.json:
        document = {
            "backend": args.backend,
            "client": client,
            "rows": [
                {**asdict(r), "per_unit": r.per_unit, "execution_gas": r.execution_gas, "passed": r.passed}
                | ({"opcode_gas": bench.breakdowns[r.tx]} if r.tx in bench.breakdowns else {})
                for r in rows
            ],
            "wall_clock": [{**asdict(w), "median": w.median, "tx_per_s": w.tx_per_s} for w in walls],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if met == len(checked) else 1


if __name__ == "__main__":
    raise SystemExit(main())
