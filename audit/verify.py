"""``verify``: recompute everything from the index and check it against the chain, listing every discrepancy.

Trust: only the JSON-RPC endpoint (blocks, transactions, state) and the contracts' compiled ABIs. The index is
re-checked, not believed: a row forged in it shows up as a difference from the chain.

Steps, each reported to ``progress(stage, done, total)``:

1. ``index``: the store's checkpoint block must still be on the endpoint's chain (same hash) and the chain id
   must match the store's.
2. ``parameters``: read from the contracts' view functions at the checkpoint
   (:func:`~.ledger.read_parameters`).
3. ``ledger``: fold every indexed event (:func:`~.ledger.build_ledger`); each event whose numbers break a
   contract rule is a ``rule`` discrepancy (a settlement's fee or payout, a slash's finder share, a claim's
   amount, a deposit's balance...).
4. ``signatures``: re-check every signature in the indexed transactions' calldata, cross-checked with the
   events they emitted (:func:`~.calldata.check_calldata`).
5. ``state``: read the contracts at the checkpoint block (:func:`~.state.read_state`) and compare every stake,
   unbonding amount, counter, attested and measured figure, nonce, job, deposit, redeemed total, reward epoch,
   claimable reward, fault, canary, credit and the contracts' totals with the ledger; recompute each
   provider's reliability and verified throughput from contract state and compare them with the ledger's.
6. ``money``: each contract's ETH balance against what the events say flowed in and out of it
   (``balance``), against what the ledger says it owes (``owed``), and against what its own totals say it
   owes (``solvency``).

Discrepancy kinds: ``index``, ``rule``, ``malformed_event``, ``signature``, ``signer_inactive``,
``verdict_order``, ``quorum``, ``deadline``, ``calldata``, ``unverified_event``, ``account``, ``figures``,
``report``, ``nonce``, ``job``, ``deposit``, ``voucher``, ``epoch``, ``reward``, ``reliability``,
``throughput``, ``fault``, ``canary``, ``credit``, ``total``, ``balance``, ``owed``, ``solvency``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address
from web3 import Web3

from proxima.audit.calldata import check_calldata
from proxima.audit.errors import AuditError
from proxima.audit.ledger import JOB_STATUSES, AuditLedger, build_ledger, read_parameters
from proxima.audit.state import CONTRACTS, ChainState, read_state
from proxima.marketplace.matching.reliability import ProviderStats, reliability, verified_throughput

if TYPE_CHECKING:
    from proxima.audit.store import AuditStore, IndexedEvent

__all__ = ["Discrepancy", "VerifyError", "VerifyReport", "compare", "verify"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class VerifyError(AuditError):
    """``verify`` cannot run (an empty or unbound index); the message says what to do."""


@dataclass(frozen=True)
class Discrepancy:
    """One difference between what the events say and what the chain says (or what the rules allow).

    Attributes:
        kind: What was compared (see the module docstring).
        subject: Whose (an address, ``"0x<job id>"``, ``"<client>/<provider>"``, ``"epoch 3"``, a contract).
        expected: The value recomputed from events (or required by the rules).
        actual: The value on chain (or in the event).
        detail: A sentence saying which field and where.
    """

    kind: str
    subject: str
    expected: str
    actual: str
    detail: str


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`.

    Attributes:
        block_number: The checkpoint block everything was checked at.
        checked: How many of each thing were checked (``events``, ``transactions``, ``signatures``,
            ``accounts``, ``jobs``, ``state_calls``...).
        discrepancies: Every difference found; empty when the ledger adds up.
        elapsed_s: Wall time of the run.
    """

    block_number: int
    checked: dict[str, int] = field(default_factory=dict)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """No discrepancy."""
        return not self.discrepancies


class _Compare:
    def __init__(self, out: list[Discrepancy]) -> None:
        self.out = out

    def __call__(self, kind: str, subject: str, field_name: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            self.out.append(
                Discrepancy(
                    kind,
                    subject,
                    _show(expected),
                    _show(actual),
                    f"{field_name}: the events say {_show(expected)}, the chain says {_show(actual)}",
                )
            )


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


_ACCOUNT_FIELDS = (
    ("registered_at", "registered_at"),
    ("unbond_ready_at", "unbond_ready_at"),
    ("stake", "stake"),
    ("unbonding", "unbonding"),
    ("jobs_completed", "jobs_completed"),
    ("jobs_failed", "jobs_failed"),
    ("disputes_lost", "disputes_lost"),
    ("total_slashed", "total_slashed"),
)
_JOB_FIELDS = (
    "client",
    "provider",
    "price",
    "slash_amount",
    "delivery_deadline",
    "challenge_window",
    "result_hash",
    "challenge_ends_at",
    "dispute_ends_at",
    "dispute_bond",
)
_ROLES = {"provider": 1, "verifier": 2}


def compare(ledger: AuditLedger, state: ChainState) -> tuple[list[Discrepancy], dict[str, int]]:
    """Every difference between a ledger and contract state read at the same block.

    Returns:
        The discrepancies and how many of each thing were compared.
    """
    out: list[Discrepancy] = []
    same = _Compare(out)
    checked: dict[str, int] = defaultdict(int)
    for address, acc in ledger.accounts.items():
        chain = state.accounts.get(address)
        if chain is None:
            continue
        checked["accounts"] += 1
        same("account", address, "role", _ROLES[acc.role], int(chain["role"]))
        for mine, theirs in _ACCOUNT_FIELDS:
            same("account", address, mine, getattr(acc, mine), int(chain[theirs]))
        same("nonce", address, "attestation nonce", acc.attestation_nonce, state.nonces.get(address))
        if acc.role != "provider":
            continue
        figures, report = state.figures[address], state.reports[address]
        same("figures", address, "gemm_flops", acc.gemm_flops, int(figures["gemm_flops"]))
        same("figures", address, "mem_bandwidth", acc.mem_bandwidth, int(figures["mem_bandwidth"]))
        same("figures", address, "attested epoch", acc.attested_epoch, int(figures["epoch"]))
        same("figures", address, "attested at", acc.attested_at, int(figures["updated_at"]))
        same("report", address, "measured_flops", acc.measured_flops, int(report["measured_flops"]))
        same("report", address, "reports passed", acc.reports_passed, int(report["passes"]))
        same("report", address, "reports failed", acc.reports_failed, int(report["failures"]))
        same("report", address, "reported at", acc.reported_at, int(report["updated_at"]))
        same("reward", address, "claimable rewards", acc.rewards_claimable, state.claimable.get(address))
        stats = ProviderStats(
            address=to_checksum_address(address),
            stake_wei=int(chain["stake"]) if int(chain["role"]) == 1 else 0,
            jobs_completed=int(chain["jobs_completed"]),
            jobs_failed=int(chain["jobs_failed"]),
            disputes_lost=int(chain["disputes_lost"]),
            total_slashed_wei=int(chain["total_slashed"]),
            attested_flops=int(figures["gemm_flops"]),
            verified_flops=int(report["measured_flops"]),
            report_passes=int(report["passes"]),
            report_failures=int(report["failures"]),
        )
        same("reliability", address, "reliability", acc.reliability, reliability(stats))
        same(
            "throughput",
            address,
            "verified throughput",
            acc.verified_throughput,
            verified_throughput(int(figures["gemm_flops"]), stats),
        )
    for job_id, job in ledger.jobs.items():
        chain = state.jobs.get(job_id)
        if chain is None:
            continue
        checked["jobs"] += 1
        subject = "0x" + job_id.hex()
        status = int(chain["status"])
        same(
            "job",
            subject,
            "status",
            job.status,
            JOB_STATUSES[status] if status < len(JOB_STATUSES) else status,
        )
        for name in _JOB_FIELDS:
            same("job", subject, name, getattr(job, name), chain[name])
    for client, deposit in ledger.deposits.items():
        chain = state.deposits.get(client)
        if chain is None:
            continue
        checked["deposits"] += 1
        same("deposit", client, "balance", deposit.balance, int(chain["balance"]))
        same(
            "deposit",
            client,
            "pending withdrawal",
            deposit.pending_withdrawal,
            int(chain["pending_withdrawal"]),
        )
        same("deposit", client, "withdrawable at", deposit.withdrawable_at, int(chain["withdrawable_at"]))
    for (client, provider), voucher in ledger.vouchers.items():
        chain = state.redeemed.get((client, provider))
        if chain is None:
            continue
        checked["vouchers"] += 1
        same("voucher", f"{client}/{provider}", "redeemed amount", voucher.amount, int(chain["amount"]))
        same("voucher", f"{client}/{provider}", "redeemed jobs", voucher.jobs, int(chain["jobs"]))
    for number, epoch in ledger.epochs.items():
        chain = state.epochs.get(number)
        if chain is None:
            continue
        checked["epochs"] += 1
        same("epoch", f"epoch {number}", "pot", epoch.pot, int(chain["pot"]))
        same("epoch", f"epoch {number}", "total work", epoch.total_work, int(chain["total_work"]))
    for key, kind in ledger.faults.items():
        provider, _, job_hex = key.partition("/")
        checked["faults"] += 1
        same("fault", key, "fault kind", kind, state.faults.get((provider, bytes.fromhex(job_hex[2:]))))
    for commitment, (verifier, at) in ledger.canaries.items():
        checked["canaries"] += 1
        chain_canary = state.canaries.get(commitment)
        same("canary", "0x" + commitment.hex(), "committed by, at", (verifier, at), chain_canary)
    for account, amount in state.credits.items():
        checked["credits"] += 1
        same("credit", account, "escrow credit", ledger.money.credits.get(account, 0), amount)
    for name, value in ledger.money.totals.items():
        checked["totals"] += 1
        same("total", name, name, value, state.totals.get(name))
    owed_by_state = {
        "ProviderRegistry": state.totals["total_staked"] + state.totals["total_unbonding"],
        "JobEscrow": state.totals["total_escrowed"],
        "PaymentVouchers": state.totals["total_deposits"],
        "RewardPool": state.totals["pool_balance"] + state.totals["treasury_balance"],
    }
    for name in CONTRACTS:
        held = state.balances[name]
        checked["balances"] += 1
        same("balance", name, "ETH held vs value in - out by the events", ledger.money.expected[name], held)
        same("owed", name, "what the events say it owes vs ETH held", ledger.money.owed[name], held)
        same(
            "solvency", name, "what its own totals say it owes vs ETH held", owed_by_state.get(name, 0), held
        )
    return out, dict(checked)


def verify(store: AuditStore, w3: Web3, *, progress: Progress | None = None) -> VerifyReport:
    """Check the index's ledger against the chain at the index's checkpoint; see the module docstring.

    Args:
        store: An index bound to a deployment, synced at least once.
        w3: A connection to the same chain (the only thing trusted).
        progress: Called with ``(stage, done, total)``; stages ``index``, ``parameters``, ``events``,
            ``ledger``, ``signatures``, ``state``, ``money``.

    Returns:
        The report; ``report.ok`` when nothing differs.

    Raises:
        VerifyError: If the index is unbound or empty.
        StateReadError: If the endpoint does not answer a state read.
    """
    started = time.perf_counter()
    report_progress: Progress = progress or (lambda stage, done, total: None)
    deployment = store.deployment
    checkpoint = store.checkpoint()
    if deployment is None or checkpoint is None:
        raise VerifyError("the audit index is empty: run `proxima-audit sync` before `verify`")
    report = VerifyReport(block_number=checkpoint.number)
    found = report.discrepancies

    report_progress("index", 0, 1)
    chain_id = int(w3.eth.chain_id)
    if store.chain_id is not None and store.chain_id != chain_id:
        found.append(
            Discrepancy(
                "index", "chain id", str(store.chain_id), str(chain_id), "the index is of another chain"
            )
        )
    block = w3.eth.get_block(checkpoint.number)
    if bytes(block["hash"]) != checkpoint.hash:
        found.append(
            Discrepancy(
                "index",
                f"block {checkpoint.number}",
                "0x" + checkpoint.hash.hex(),
                "0x" + bytes(block["hash"]).hex(),
                "the checkpoint block is no longer on the chain (reorganised): sync again",
            )
        )
    report_progress("index", 1, 1)

    report_progress("parameters", 0, 1)
    parameters = read_parameters(w3, deployment, checkpoint.number)
    report_progress("parameters", 1, 1)

    events: list[IndexedEvent] = list(store.events(to_block=checkpoint.number))
    report_progress("events", len(events), len(events))
    by_tx: dict[bytes, list[IndexedEvent]] = defaultdict(list)
    for event in events:
        by_tx[event.tx_hash].append(event)
    ledger = build_ledger(
        events, parameters, block_number=checkpoint.number, block_timestamp=checkpoint.timestamp
    )
    report_progress("ledger", len(events), len(events))
    for anomaly in ledger.anomalies:
        where = f"block {anomaly.block_number}, tx 0x{anomaly.tx_hash.hex()}"
        found.append(
            Discrepancy(
                anomaly.kind, anomaly.subject, anomaly.expected, anomaly.actual, f"{anomaly.detail} ({where})"
            )
        )

    transactions = [tx for tx in store.transactions() if tx.block_number <= checkpoint.number]
    signatures = check_calldata(
        transactions,
        by_tx,
        ledger,
        deployment,
        progress=lambda done, total: report_progress("signatures", done, total),
    )
    for issue in signatures.issues:
        found.append(Discrepancy(issue.kind, issue.subject, issue.expected, issue.actual, issue.detail))

    providers = [a for a, r in ledger.accounts.items() if r.role == "provider"]
    credit_accounts = set(ledger.money.credits)
    for job in ledger.jobs.values():
        if job.outcome == "dispute_expired":
            credit_accounts.update((job.client, job.provider))
    epochs = set(ledger.epochs) | {ledger.current_epoch}
    state = read_state(
        w3,
        deployment,
        checkpoint.number,
        accounts=list(ledger.accounts),
        providers=providers,
        signers=list(ledger.accounts),
        credit_accounts=sorted(credit_accounts),
        jobs=list(ledger.jobs),
        clients=list(ledger.deposits),
        pairs=list(ledger.vouchers),
        epochs=sorted(epochs),
        faults=[(k.partition("/")[0], bytes.fromhex(k.partition("/")[2][2:])) for k in ledger.faults],
        canaries=list(ledger.canaries),
        progress=lambda done, total: report_progress("state", done, total),
    )
    report_progress("money", 0, 1)
    differences, checked = compare(ledger, state)
    found.extend(differences)
    report_progress("money", 1, 1)

    report.checked = {
        "events": len(events),
        "transactions": signatures.transactions,
        "signatures": signatures.signatures,
        **checked,
        "state_calls": state.calls,
    }
    report.elapsed_s = time.perf_counter() - started
    log.info(
        "verify finished",
        extra={
            "block": checkpoint.number,
            "events": len(events),
            "discrepancies": len(found),
            "elapsed_s": round(report.elapsed_s, 3),
        },
    )
    return report
