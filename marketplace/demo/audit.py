"""The demo's closing audit: the ledger read back from the chain, and every signature it was given re-checked.

:func:`audit` reads the ledger (:func:`proxima.sdk.ledger.read_ledger`: events and contract state) and checks
that the ETH the contracts hold equals what they owe, then re-verifies what the gateway handed out:

* every job receipt (EIP-712 ``JobReceipt`` in the ``FaultProofs`` domain): it recovers to the provider the
  gateway names, the domain is this deployment's, and its result hash is the hash of the result delivered;
* every offer the gateway follows (EIP-191 over the canonical offer): it recovers to the offer's provider;
* every redeemed voucher total on chain (``PaymentVouchers.redeemedOf``) is of a known payer (the gateway's,
  or the verifier paying for its challenges) and not empty (the contract checked each voucher's signature
  against its client when it was redeemed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.eip712 import Domain, recover_signer
from proxima.sdk.errors import SdkError
from proxima.sdk.jobs import JobResult
from proxima.sdk.ledger import Ledger, read_ledger
from proxima.sdk.offers import SignedOffer
from proxima.sdk.workloads import WorkloadSpecError, parse_output, result_hash

__all__ = ["AuditReport", "audit", "check_receipt"]

log = logging.getLogger(__name__)


@dataclass
class AuditReport:
    """What the audit found.

    Attributes:
        ledger: The ledger as read.
        receipts_checked: Receipts re-verified.
        offers_checked: Offer signatures re-verified.
        vouchers_checked: Client-provider voucher totals checked.
        problems: One line per failed check (empty: everything holds).
    """

    ledger: Ledger
    receipts_checked: int = 0
    offers_checked: int = 0
    vouchers_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def conserved(self) -> bool:
        """Whether the ETH held equals the ETH owed."""
        return self.ledger.money.conserved

    @property
    def signatures_valid(self) -> bool:
        """Whether every signature checked recovered to the party it names."""
        return not self.problems


def check_receipt(record: Mapping[str, Any], domain: Domain) -> str | None:
    """Re-verify the receipt of a finished gateway job (``GET /v1/jobs/{id}``); None when it holds.

    Returns:
        What is wrong, or None.
    """
    job = str(record.get("id"))
    receipt = record.get("receipt")
    if not isinstance(receipt, Mapping):
        return f"job {job}: no receipt"
    try:
        result = JobResult.model_validate(
            {
                "job_id": receipt["message"]["jobId"],
                "workload": record["workload"],
                "output": {},
                "receipt": dict(receipt["message"]),
                "signature": receipt["signature"],
            },
            strict=False,
        )
        message = result.receipt
        signer = recover_signer(message, domain, result.signature)
    except (KeyError, TypeError, ValueError, ValidationError, SdkError) as err:
        return f"job {job}: receipt unreadable ({err})"
    if signer != record.get("provider") or message.provider != signer:
        return f"job {job}: receipt signed by {signer}, the job names {record.get('provider')}"
    if receipt.get("domain") is not None and dict(receipt["domain"]) != domain.as_dict():
        return f"job {job}: receipt domain {receipt['domain']} is not this deployment's"
    try:
        output = parse_output(str(record["workload"]), record["result"])
    except (KeyError, WorkloadSpecError, ValidationError) as err:
        return f"job {job}: result unreadable ({err})"
    if result_hash(str(record["workload"]), output) != message.result_hash:
        return f"job {job}: the result delivered does not hash to the receipt's result hash"
    return None


def audit(
    contracts: ProximaContracts,
    domain: Domain,
    records: Iterable[Mapping[str, Any]],
    offers: Iterable[Mapping[str, Any]],
    payers: Iterable[str],
) -> AuditReport:
    """Read the ledger and re-verify the receipts of ``records`` (succeeded gateway jobs) and ``offers``
    (``GET /v1/offers`` items).

    Args:
        contracts: The deployment.
        domain: The ``FaultProofs`` EIP-712 domain receipts are signed in.
        records: Finished jobs as the gateway returns them.
        offers: Offers as the gateway returns them.
        payers: The accounts whose vouchers may be redeemed (the gateway's payer, the verifier that pays
            for its challenges).
    """
    report = AuditReport(read_ledger(contracts))
    for record in records:
        if record.get("status") != "succeeded":
            continue
        report.receipts_checked += 1
        problem = check_receipt(record, domain)
        if problem is not None:
            report.problems.append(problem)
    for item in offers:
        report.offers_checked += 1
        body = {k: v for k, v in item.items() if k != "signature"}
        try:
            signed = SignedOffer.model_validate(
                {"offer": body, "signature": item.get("signature")}, strict=False
            )
            signer = signed.signer()
        except (ValidationError, SdkError) as err:
            report.problems.append(f"offer of {item.get('provider')}: unreadable ({err})")
            continue
        if signer != signed.offer.provider:
            report.problems.append(f"offer of {signed.offer.provider} signed by {signer}")
    allowed = set(payers)
    for voucher in report.ledger.vouchers:
        report.vouchers_checked += 1
        if voucher.client not in allowed:
            report.problems.append(f"vouchers of {voucher.client} redeemed: nobody here signed any")
        elif voucher.amount <= 0 or voucher.jobs <= 0:
            report.problems.append(f"voucher total of {voucher.provider} is empty ({voucher.amount} wei)")
    return report
