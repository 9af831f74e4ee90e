"""Re-check every signature the contracts accepted, from the indexed transactions' calldata.

Each indexed transaction sent to a Proxima contract is decoded with the ABI of its compiled artifact
(:func:`decode_call`), every signature in it is recovered in the deployment's EIP-712 domain for that contract
(:class:`Domains`), and the result is cross-checked with the events the transaction emitted and with the
ledger recomputed from events (who was an active verifier or provider just before the transaction):

==============================  ==============================================================================
call                            checks
==============================  ==============================================================================
``JobEscrow.openJob``           terms signed by ``terms.provider`` (an active provider), sent by the client
                                with exactly the price before ``acceptBy``; ``JobOpened`` equals the terms
``JobEscrow.resolveDispute``    ``Verdict`` signers strictly ascending, each an active verifier, at least the
                                escrow's quorum; ``DisputeResolved`` says the same verdict and signer count
``PaymentVouchers.redeem``      voucher signed by its client; ``VoucherRedeemed`` equals the voucher
``...redeemBatch``              each voucher (compact signature) signed by its client, all for the named
                                provider; one ``VoucherRedeemed`` per voucher, in order
``AttestationRegistry.submit*`` attestations / batches signed by their provider (active), reports by their
                                verifier (active), before their deadline; the events equal what was signed
``FaultProofs.prove*``          receipts signed by the provider; canary commitment committed earlier;
                                ``Verdict(jobId, resultHash, false)`` quorum of active verifiers, ascending,
                                in the FaultProofs domain; the proof event equals the receipts
``ProviderRegistry.register``   the peer id holds the sender's own key
==============================  ==============================================================================

Finally every event that needs a signature (``JobOpened``, ``DisputeResolved``, ``VoucherRedeemed``,
``AttestationSubmitted``, ``VerifierReportSubmitted``, the three proofs, ``ProviderRegistered``) must have
been accounted for by such a check; one that was not (its transaction is missing from the index, was not sent
to the contract directly, or its calldata does not say it) is reported too.

Signatures are recovered as OpenZeppelin's ``ECDSA.tryRecover`` does: 65 bytes with ``v`` 27 or 28, or
EIP-2098 compact ``(r, vs)``; an ``s`` in the upper half of the curve order recovers nobody.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import coincurve
from eth_abi.abi import encode as abi_encode
from eth_abi.codec import ABICodec
from eth_abi.decoding import AddressDecoder
from eth_abi.registry import BaseEquals, registry
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from proxima.contracts import load_artifact
from proxima.sdk.bindings._base import abi_type
from proxima.sdk.chain import Deployment
from proxima.sdk.eip712 import (
    Attestation,
    AttestationBatch,
    Domain,
    Eip712Message,
    JobReceipt,
    JobTerms,
    Measurement,
    Verdict,
    VerifierReport,
    Voucher,
)
from proxima.sdk.peerid import InvalidPeerIdError, address_of_peer_id

if TYPE_CHECKING:
    from proxima.audit.ledger import AuditLedger
    from proxima.audit.store import IndexedEvent, IndexedTransaction

__all__ = [
    "EIP712_NAMES",
    "SIGNED_EVENTS",
    "CalldataIssue",
    "CalldataReport",
    "DecodedCall",
    "Domains",
    "check_calldata",
    "decode_call",
    "recover",
    "recover_compact",
    "typed_digest",
]

log = logging.getLogger(__name__)

EIP712_NAMES = {
    "AttestationRegistry": "Proxima Attestations",
    "JobEscrow": "Proxima Escrow",
    "PaymentVouchers": "Proxima Vouchers",
    "FaultProofs": "Proxima Receipts",
}
"""EIP-712 domain name of each contract that checks signatures (version ``"1"``)."""

SIGNED_EVENTS = frozenset(
    {
        "ProviderRegistered",
        "JobOpened",
        "DisputeResolved",
        "VoucherRedeemed",
        "AttestationSubmitted",
        "VerifierReportSubmitted",
        "EquivocationProven",
        "CanaryFaultProven",
        "InvalidResultProven",
    }
)
"""Events the contracts emit only after checking a signature (or, for registration, key ownership)."""

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _N // 2
_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


def _hex_address(raw: bytes) -> str:
    return "0x" + bytes(raw).hex()


class _FastAddressDecoder(AddressDecoder):
    """eth-abi's address decoder validates and normalises each address (~30 us); the bytes are 20 already."""

    decoder_fn = staticmethod(_hex_address)  # type: ignore[assignment]


_registry = registry.copy()  # type: ignore[no-untyped-call]
_registry.unregister_decoder("address")
_registry.register_decoder(BaseEquals("address"), _FastAddressDecoder, label="address")  # type: ignore[no-untyped-call]
_CODEC = ABICodec(_registry)


@lru_cache(maxsize=1 << 16)
def _checksum(address: str) -> str:
    """EIP-55 form of a lowercase hex address (cached: a few addresses sign most messages)."""
    return to_checksum_address(address)


# --- EIP-712 digests and recovery ----------------------------------------------------------------------


@dataclass(frozen=True)
class Domains:
    """The deployment's EIP-712 domain separators, by contract name."""

    chain_id: int
    separators: dict[str, bytes]
    domains: dict[str, Domain]

    @classmethod
    def of(cls, deployment: Deployment, chain_id: int) -> Domains:
        """The domains of ``deployment`` on chain ``chain_id`` (from the contracts' names and addresses)."""
        domains: dict[str, Domain] = {}
        separators: dict[str, bytes] = {}
        for contract, name in EIP712_NAMES.items():
            address = to_checksum_address(deployment.address(contract))
            domains[contract] = Domain(name, "1", chain_id, address)
            separators[contract] = keccak(
                abi_encode(
                    ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                    [_DOMAIN_TYPEHASH, keccak(name.encode()), keccak(b"1"), chain_id, address],
                )
            )
        return cls(chain_id, separators, domains)


@cache
def _struct_types(message: type[Eip712Message]) -> tuple[bytes, list[str]]:
    types = ["bytes32" if t.endswith("[]") else t for _, t in message.eip712_fields()]
    return message.type_hash(), ["bytes32", *types]


def _word(sol_type: str, value: Any) -> bytes:
    """One static ABI word (every EIP-712 member here is static: uintN, address, bytes32, bool)."""
    if sol_type == "bytes32":
        return bytes(value)
    if sol_type == "address":
        return b"\0" * 12 + bytes.fromhex(value[2:])
    return int(value).to_bytes(32, "big")  # uintN and bool (range-checked by the ABI decoder)


def _struct_hash(message: type[Eip712Message], values: Sequence[Any]) -> bytes:
    type_hash, types = _struct_types(message)
    if message is AttestationBatch:
        *head, measurements = values
        inner = b"".join(_struct_hash(Measurement, m) for m in measurements)
        values = [*head, keccak(inner)]
    encoded = b"".join(_word(t, v) for t, v in zip(types[1:], values, strict=True))
    return keccak(type_hash + encoded)


def typed_digest(separator: bytes, message: type[Eip712Message], values: Sequence[Any]) -> bytes:
    """The EIP-712 digest of a message given as its ABI values (struct member order), for a domain separator.

    Equal to ``message(**fields).digest(domain)`` of :mod:`proxima.sdk.eip712`, without building the model.
    """
    return keccak(b"\x19\x01" + separator + _struct_hash(message, values))


def _recover_rsv(digest: bytes, r: int, s: int, v: int) -> str | None:
    if v not in (27, 28) or not 0 < s <= _HALF_N or not 0 < r < _N:
        return None
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v - 27]), digest, hasher=None
        )
    except Exception:  # noqa: BLE001 - coincurve raises on points off the curve
        return None
    return _checksum("0x" + keccak(public.format(compressed=False)[1:])[12:].hex())


def recover(digest: bytes, signature: bytes) -> str | None:
    """The signer of a 65-byte ``r || s || v`` signature over ``digest``, or ``None`` where the contracts'
    ``ECDSA.tryRecover`` recovers nobody (bad length, ``v``, or high ``s``)."""
    if len(signature) != 65:
        return None
    return _recover_rsv(
        digest, int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    )


def recover_compact(digest: bytes, r: bytes, vs: bytes) -> str | None:
    """The signer of an EIP-2098 compact signature ``(r, vs)`` over ``digest``, or ``None``."""
    vs_int = int.from_bytes(vs, "big")
    return _recover_rsv(digest, int.from_bytes(r, "big"), vs_int & ((1 << 255) - 1), 27 + (vs_int >> 255))


# --- decoding -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedCall:
    """A transaction's input decoded with its contract's ABI.

    Attributes:
        contract: The contract's name. function: The function's name.
        args: Raw ABI values by parameter name (tuples for structs, in member order; addresses checksummed).
    """

    contract: str
    function: str
    args: dict[str, Any]


@cache
def _selectors() -> dict[tuple[str, bytes], tuple[str, list[str], list[str]]]:
    table: dict[tuple[str, bytes], tuple[str, list[str], list[str]]] = {}
    for contract in (
        "ProviderRegistry",
        "AttestationRegistry",
        "JobEscrow",
        "PaymentVouchers",
        "FaultProofs",
        "RewardPool",
    ):
        for item in load_artifact(contract).abi:
            if item.get("type") != "function":
                continue
            types = [abi_type(i) for i in item["inputs"]]
            selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
            table[(contract, selector)] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def _checksummed(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return _checksum(value.lower())
    if isinstance(value, tuple | list):
        return tuple(_checksummed(v) for v in value)
    return value


def decode_call(contract: str, data: bytes) -> DecodedCall | None:
    """Decode calldata sent to ``contract``; ``None`` if the selector is not one of its functions or the
    arguments do not decode."""
    entry = _selectors().get((contract, bytes(data[:4])))
    if entry is None:
        return None
    function, names, types = entry
    try:
        values = _CODEC.decode(types, bytes(data[4:]))
    except Exception:  # noqa: BLE001 - eth-abi raises several types for malformed data
        return None
    return DecodedCall(contract, function, {n: _checksummed(v) for n, v in zip(names, values, strict=True)})


# --- the checks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalldataIssue:
    """One thing wrong with a signature or with what a transaction's calldata says.

    Attributes:
        kind: ``signature`` (recovers to someone else or nobody), ``signer_inactive`` (not an active verifier
            or provider then), ``verdict_order`` (signers not strictly ascending), ``quorum`` (too few),
            ``deadline``, ``calldata`` (undecodable, or not what the events say), ``unverified_event`` (an
            event that needs a signature no checked transaction accounts for).
        subject: What it is about (a job id, an address, an event).
        expected, actual: The values compared.
        detail: A sentence naming the transaction and the message.
        tx_hash: The transaction.
    """

    kind: str
    subject: str
    expected: str
    actual: str
    detail: str
    tx_hash: bytes


@dataclass
class CalldataReport:
    """What :func:`check_calldata` did and found."""

    transactions: int = 0
    signatures: int = 0
    issues: list[CalldataIssue] = field(default_factory=list)


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


class _Checker:
    def __init__(self, ledger: AuditLedger, domains: Domains, report: CalldataReport) -> None:
        self.ledger = ledger
        self.domains = domains
        self.report = report
        self.tx: IndexedTransaction | None = None
        self.events: list[IndexedEvent] = []
        self.covered: set[tuple[int, int]] = set()
        self.timestamp = 0

    # --- helpers ------------------------------------------------------------------------------------------

    def issue(self, kind: str, subject: str, expected: object, actual: object, detail: str) -> None:
        assert self.tx is not None
        self.report.issues.append(
            CalldataIssue(
                kind, subject, str(expected), str(actual), f"tx {_hex(self.tx.hash)}: {detail}", self.tx.hash
            )
        )

    def take(self, name: str, match: Callable[[dict[str, Any]], bool] | None = None) -> IndexedEvent | None:
        """The first uncovered event ``name`` of this transaction (matching ``match``); marks it covered."""
        for event in self.events:
            key = (event.block_number, event.log_index)
            if event.name == name and key not in self.covered and (match is None or match(event.args)):
                self.covered.add(key)
                return event
        return None

    def signed(
        self,
        contract: str,
        message: type[Eip712Message],
        values: Sequence[Any],
        signature: bytes,
        expected: str,
        what: str,
    ) -> str | None:
        digest = typed_digest(self.domains.separators[contract], message, values)
        signer = recover(digest, bytes(signature))
        self.report.signatures += 1
        if signer != expected:
            self.issue(
                "signature", expected, expected, signer or "nobody", f"{what} is not signed by {expected}"
            )
        return signer

    def signed_compact(
        self,
        contract: str,
        message: type[Eip712Message],
        values: Sequence[Any],
        compact: Sequence[bytes],
        expected: str,
        what: str,
    ) -> None:
        digest = typed_digest(self.domains.separators[contract], message, values)
        signer = recover_compact(digest, bytes(compact[0]), bytes(compact[1]))
        self.report.signatures += 1
        if signer != expected:
            self.issue(
                "signature", expected, expected, signer or "nobody", f"{what} is not signed by {expected}"
            )

    def active(self, account: str, role: str, what: str) -> None:
        assert self.tx is not None
        if not self.ledger.is_active_at(account, role, self.tx.block_number, self.tx.tx_index):
            self.issue(
                "signer_inactive",
                account,
                f"an active {role}",
                "not one",
                f"{what}: {account} was not an active {role} before this transaction by the events",
            )

    def deadline(self, deadline: int, signer: str, what: str) -> None:
        if self.timestamp > deadline:
            self.issue(
                "deadline", signer, f">= {self.timestamp}", deadline, f"{what} had expired when accepted"
            )

    def verdicts(
        self,
        contract: str,
        job_id: bytes,
        result_hash: bytes,
        valid: bool,
        signatures: Sequence[bytes],
        quorum: int,
        what: str,
    ) -> None:
        digest = typed_digest(self.domains.separators[contract], Verdict, (job_id, result_hash, valid))
        previous = 0
        subject = _hex(job_id)
        if len(signatures) < quorum:
            self.issue(
                "quorum", subject, f">= {quorum}", len(signatures), f"{what}: too few verdict signatures"
            )
        for index, signature in enumerate(signatures):
            self.report.signatures += 1
            signer = recover(digest, bytes(signature))
            if signer is None:
                self.issue(
                    "signature",
                    subject,
                    "a verifier",
                    "nobody",
                    f"{what}: verdict signature {index} recovers nobody",
                )
                continue
            if int(signer, 16) <= previous:
                self.issue(
                    "verdict_order",
                    subject,
                    "strictly ascending signers",
                    signer,
                    f"{what}: verdict signer {index} is not above the one before",
                )
            previous = int(signer, 16)
            self.active(signer, "verifier", f"{what}: verdict signer {index}")

    def same(self, subject: str, event: IndexedEvent | None, expected: dict[str, Any], what: str) -> None:
        if event is None:
            self.issue("calldata", subject, what, "no such event", f"the transaction emitted no {what}")
            return
        for key, value in expected.items():
            if event.args.get(key) != value:
                self.issue(
                    "calldata",
                    subject,
                    f"{key}={value!r}",
                    f"{key}={event.args.get(key)!r}",
                    f"{event.name} does not say what the calldata does",
                )

    # --- per function -------------------------------------------------------------------------------------

    def check(self, tx: IndexedTransaction, call: DecodedCall, events: list[IndexedEvent]) -> None:
        self.tx, self.events = tx, events
        self.timestamp = events[0].timestamp if events else 0
        handler = getattr(self, f"c_{call.contract}_{call.function}", None)
        if handler is not None:
            handler(call.args)

    def c_JobEscrow_openJob(self, a: dict[str, Any]) -> None:  # noqa: N802 - named after the call
        assert self.tx is not None
        terms = a["terms"]
        job_id, client, provider, price, slash, spec, accept_by, deadline, window = terms
        self.signed(
            "JobEscrow", JobTerms, terms, a["providerSignature"], provider, f"JobTerms of {_hex(job_id)}"
        )
        self.active(provider, "provider", f"job {_hex(job_id)}")
        if self.tx.sender != client:
            self.issue(
                "calldata", _hex(job_id), client, self.tx.sender, "openJob not sent by the terms' client"
            )
        if self.tx.value != price:
            self.issue("calldata", _hex(job_id), price, self.tx.value, "openJob's value is not the price")
        self.deadline(accept_by, provider, f"JobTerms of {_hex(job_id)} (acceptBy)")
        event = self.take("JobOpened", lambda e: e.get("jobId") == job_id)
        self.same(
            _hex(job_id),
            event,
            {
                "client": client,
                "provider": provider,
                "price": price,
                "slashAmount": slash,
                "specHash": spec,
                "deliveryDeadline": deadline,
                "challengeWindow": window,
            },
            "JobOpened",
        )

    def c_JobEscrow_resolveDispute(self, a: dict[str, Any]) -> None:  # noqa: N802
        job_id, result_hash, valid = a["verdict"]
        signatures = a["signatures"]
        what = f"dispute of {_hex(job_id)}"
        self.verdicts(
            "JobEscrow", job_id, result_hash, valid, signatures, self.ledger.parameters.verdict_quorum, what
        )
        job = self.ledger.jobs.get(job_id)
        if job is not None and job.result_hash != result_hash:
            self.issue(
                "calldata",
                _hex(job_id),
                _hex(job.result_hash),
                _hex(result_hash),
                "the verdict is about another result than the one committed",
            )
        event = self.take("DisputeResolved", lambda e: e.get("jobId") == job_id)
        self.same(_hex(job_id), event, {"resultValid": valid, "signers": len(signatures)}, "DisputeResolved")

    def _voucher(self, voucher: tuple[Any, ...]) -> None:
        client, provider, amount, jobs = voucher
        event = self.take(
            "VoucherRedeemed", lambda e: e.get("client") == client and e.get("provider") == provider
        )
        self.same(
            f"{client}/{provider}",
            event,
            {"cumulativeAmount": amount, "cumulativeJobs": jobs},
            "VoucherRedeemed",
        )

    def c_PaymentVouchers_redeem(self, a: dict[str, Any]) -> None:  # noqa: N802
        voucher = a["voucher"]
        self.signed(
            "PaymentVouchers", Voucher, voucher, a["signature"], voucher[0], f"voucher to {voucher[1]}"
        )
        self._voucher(voucher)

    def c_PaymentVouchers_redeemBatch(self, a: dict[str, Any]) -> None:  # noqa: N802
        provider = a["provider"]
        for index, (voucher, compact) in enumerate(zip(a["vouchers"], a["signatures"], strict=False)):
            self.signed_compact(
                "PaymentVouchers",
                Voucher,
                voucher,
                compact,
                voucher[0],
                f"voucher {index} of the batch to {provider}",
            )
            if voucher[1] != provider:
                self.issue(
                    "calldata", voucher[1], provider, voucher[1], f"voucher {index} is for another provider"
                )
            self._voucher(voucher)
        if len(a["vouchers"]) != len(a["signatures"]):
            self.issue(
                "calldata", provider, len(a["vouchers"]), len(a["signatures"]), "vouchers vs signatures"
            )

    def _attestation(self, att: tuple[Any, ...]) -> None:
        provider, benchmark, gemm, bandwidth, epoch, nonce, deadline = att
        self.active(provider, "provider", "attestation")
        self.deadline(deadline, provider, f"attestation {nonce} of {provider}")
        event = self.take(
            "AttestationSubmitted",
            lambda e: e.get("provider") == provider and e.get("benchmarkId") == benchmark,
        )
        self.same(
            provider,
            event,
            {"gemmFlops": gemm, "memBandwidth": bandwidth, "epoch": epoch, "nonce": nonce},
            "AttestationSubmitted",
        )

    def c_AttestationRegistry_submitAttestation(self, a: dict[str, Any]) -> None:  # noqa: N802
        att = a["attestation"]
        self.signed("AttestationRegistry", Attestation, att, a["signature"], att[0], f"attestation {att[5]}")
        self._attestation(att)

    def c_AttestationRegistry_submitAttestations(self, a: dict[str, Any]) -> None:  # noqa: N802
        for att, compact in zip(a["attestations"], a["signatures"], strict=False):
            self.signed_compact(
                "AttestationRegistry", Attestation, att, compact, att[0], f"attestation {att[5]}"
            )
            self._attestation(att)

    def c_AttestationRegistry_submitAttestationBatch(self, a: dict[str, Any]) -> None:  # noqa: N802
        batch = a["batch"]
        provider, epoch, nonce, deadline, measurements = batch
        self.signed(
            "AttestationRegistry",
            AttestationBatch,
            batch,
            a["signature"],
            provider,
            f"attestation batch {nonce}",
        )
        self.active(provider, "provider", "attestation batch")
        self.deadline(deadline, provider, f"attestation batch {nonce} of {provider}")
        for benchmark, gemm, bandwidth in measurements:
            event = self.take("AttestationSubmitted", _is_measurement(provider, benchmark))
            self.same(
                provider,
                event,
                {"gemmFlops": gemm, "memBandwidth": bandwidth, "epoch": epoch, "nonce": nonce},
                "AttestationSubmitted",
            )

    def _report(self, report: tuple[Any, ...]) -> None:
        verifier, provider, challenge, measured, passed, nonce, deadline = report
        self.active(verifier, "verifier", "verifier report")
        self.deadline(deadline, verifier, f"report {nonce} of {verifier}")
        event = self.take(
            "VerifierReportSubmitted", lambda e: e.get("verifier") == verifier and e.get("nonce") == nonce
        )
        self.same(
            verifier,
            event,
            {"provider": provider, "challengeId": challenge, "measuredFlops": measured, "passed": passed},
            "VerifierReportSubmitted",
        )

    def c_AttestationRegistry_submitReport(self, a: dict[str, Any]) -> None:  # noqa: N802
        report = a["report"]
        self.signed(
            "AttestationRegistry", VerifierReport, report, a["signature"], report[0], f"report {report[5]}"
        )
        self._report(report)

    def c_AttestationRegistry_submitReports(self, a: dict[str, Any]) -> None:  # noqa: N802
        for report, compact in zip(a["reports"], a["signatures"], strict=False):
            self.signed_compact(
                "AttestationRegistry", VerifierReport, report, compact, report[0], f"report {report[5]}"
            )
            self._report(report)

    def _receipt(self, receipt: tuple[Any, ...], signature: bytes, what: str) -> None:
        self.signed(
            "FaultProofs", JobReceipt, receipt, signature, receipt[1], f"{what} receipt of {_hex(receipt[0])}"
        )

    def c_FaultProofs_proveEquivocation(self, a: dict[str, Any]) -> None:  # noqa: N802
        first, second = a["a"], a["b"]
        self._receipt(first, a["signatureA"], "equivocation")
        self._receipt(second, a["signatureB"], "equivocation")
        job_id, provider = first[0], first[1]
        if second[0] != job_id or second[1] != provider or first[3] == second[3]:
            self.issue(
                "calldata",
                _hex(job_id),
                "two results of one job and provider",
                "otherwise",
                "the receipts do not prove equivocation",
            )
        event = self.take(
            "EquivocationProven", lambda e: e.get("jobId") == job_id and e.get("provider") == provider
        )
        self.same(
            _hex(job_id), event, {"resultHashA": first[3], "resultHashB": second[3]}, "EquivocationProven"
        )

    def _judged(self, a: dict[str, Any], event_name: str, what: str) -> None:
        receipt = a["receipt"]
        job_id, provider, _, result_hash, _, _ = receipt
        self._receipt(receipt, a["providerSignature"], what)
        self.verdicts(
            "FaultProofs",
            job_id,
            result_hash,
            False,
            a["verdictSignatures"],
            self.ledger.parameters.fault_verdict_quorum,
            f"{what} of {_hex(job_id)}",
        )
        event = self.take(event_name, lambda e: e.get("jobId") == job_id and e.get("provider") == provider)
        self.same(_hex(job_id), event, {"resultHash": result_hash}, event_name)

    def c_FaultProofs_proveCanaryFault(self, a: dict[str, Any]) -> None:  # noqa: N802
        job_id = a["receipt"][0]
        commitment = keccak(abi_encode(["bytes32", "bytes32", "bytes32"], [job_id, a["specHash"], a["salt"]]))
        committed = self.ledger.canaries.get(commitment)
        if committed is None or committed[1] > self.timestamp:
            self.issue(
                "calldata",
                _hex(job_id),
                f"canary {_hex(commitment)} committed before",
                "no such commitment",
                "the canary proof reveals a commitment the events never made",
            )
        self._judged(a, "CanaryFaultProven", "canary")

    def c_FaultProofs_proveInvalidResult(self, a: dict[str, Any]) -> None:  # noqa: N802
        self._judged(a, "InvalidResultProven", "invalid-result")

    def c_ProviderRegistry_register(self, a: dict[str, Any]) -> None:  # noqa: N802
        assert self.tx is not None
        peer_id = bytes(a["peerId"])
        try:
            owner: str | None = address_of_peer_id(peer_id)
        except InvalidPeerIdError:
            owner = None
        if owner != self.tx.sender:
            self.issue(
                "signature",
                self.tx.sender,
                self.tx.sender,
                owner or "no key",
                "the registered peer id does not hold the sender's key",
            )
        event = self.take(
            "ProviderRegistered", lambda e: e.get("account") == self.tx.sender if self.tx else False
        )
        self.same(
            self.tx.sender,
            event,
            {"peerId": peer_id, "metadataHash": a["metadataHash"]},
            "ProviderRegistered",
        )


def check_calldata(
    transactions: Iterable[IndexedTransaction],
    events_by_tx: dict[bytes, list[IndexedEvent]],
    ledger: AuditLedger,
    deployment: Deployment,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CalldataReport:
    """Re-check the signatures in ``transactions`` against their events and the ledger.

    Args:
        transactions: The indexed transactions (any order).
        events_by_tx: The indexed events of each transaction, in log order.
        ledger: The ledger built from the same events (who was active when, canary commitments, jobs).
        deployment: Contract addresses (the EIP-712 domains' verifying contracts).
        progress: Called with (transactions done, transactions in all) now and then.

    Returns:
        How many transactions and signatures were checked, and every issue found.
    """
    domains = Domains.of(deployment, ledger.parameters.chain_id)
    names: dict[str, str] = {to_checksum_address(a): n for n, a in deployment.contracts.items()}
    report = CalldataReport()
    checker = _Checker(ledger, domains, report)
    seen: set[bytes] = set()
    txs = list(transactions)
    for done, tx in enumerate(txs, 1):
        events = events_by_tx.get(tx.hash, [])
        seen.add(tx.hash)
        contract = names.get(tx.to) if tx.to else None
        if contract is None or tx.status != 1:
            continue
        report.transactions += 1
        call = decode_call(contract, tx.input)
        if call is None:
            checker.tx = tx
            checker.issue(
                "calldata",
                _hex(tx.hash),
                f"a call of a {contract} function",
                _hex(tx.input[:4]),
                "the input does not decode with the contract's ABI",
            )
            continue
        checker.check(tx, call, events)
        if progress is not None and done % 1_000 == 0:
            progress(done, len(txs))
    for tx_hash, events in events_by_tx.items():
        for event in events:
            if event.name in SIGNED_EVENTS and (event.block_number, event.log_index) not in checker.covered:
                missing = tx_hash not in seen
                report.issues.append(
                    CalldataIssue(
                        "unverified_event",
                        f"{event.contract}.{event.name}",
                        "a transaction whose calldata carries its signature",
                        "its transaction is not in the index" if missing else "none that says it",
                        f"block {event.block_number} log {event.log_index} (tx {_hex(tx_hash)}): "
                        f"{event.name} {_describe(event.args)} is not backed by checked calldata",
                        tx_hash,
                    )
                )
    if progress is not None:
        progress(len(txs), len(txs))
    return report


def _is_measurement(provider: str, benchmark: bytes) -> Callable[[dict[str, Any]], bool]:
    def match(args: dict[str, Any]) -> bool:
        return bool(args.get("provider") == provider and args.get("benchmarkId") == benchmark)

    return match


def _describe(args: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={_hex(v) if isinstance(v, bytes) else v}" for k, v in list(args.items())[:3])
    return f"({shown}, ...)"
