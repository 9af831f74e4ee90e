"""The parts of the gateway's verification without a network: the ``[verification]`` settings, the job
store's verification records and its migration from a version-1 file, the checks themselves, and the
verifier pool's handling of verdicts (signatures checked here before anything goes on chain)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from proxima.marketplace.errors import MarketConfigError, MarketError
from proxima.marketplace.gateway.jobstore import _MIGRATIONS, JobStore, UnknownJobError
from proxima.marketplace.gateway.settings import SettingsError, load_settings
from proxima.marketplace.gateway.verify import (
    EvidenceOutcome,
    VerificationPolicy,
    VerifierPool,
    check_canary,
    check_result_json,
    results_agree,
)
from proxima.sdk.eip712 import Domain, LocalSigner, Verdict
from proxima.sdk.workloads import EMBED_MODEL, MatmulInput, MatmulOutput, Tensor, matmul_operands

CLIENT = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
PROVIDER = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
DOMAIN = Domain("Proxima Receipts", "1", 31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
OTHER_DOMAIN = Domain("Proxima Escrow", "1", 31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROXIMA_GATEWAY_"):
            monkeypatch.delenv(name)


# --- settings -------------------------------------------------------------------------------------------


def test_verification_settings_default_to_freivalds_only() -> None:
    v = load_settings().verification
    assert (v.freivalds_rounds, v.embed_redundancy, v.canary_rate, v.verifier_urls, v.evidence) == (
        16,
        1,
        0.0,
        [],
        True,
    )


def test_verification_settings_from_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        """
        [verification]
        freivalds_rounds = 24
        embed_redundancy = 2
        verifier_urls = ["http://127.0.0.1:8090/", "https://verify.example.org"]
        evidence = false
        quarantine_seconds = 0
        """
    )
    monkeypatch.setenv("PROXIMA_GATEWAY_VERIFICATION__CANARY_RATE", "0.25")
    v = load_settings(path).verification
    assert (v.freivalds_rounds, v.embed_redundancy, v.canary_rate, v.evidence) == (24, 2, 0.25, False)
    assert v.quarantine_seconds == 0
    assert v.verifier_urls == ["http://127.0.0.1:8090", "https://verify.example.org"]


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"canary_rate": 1.5}, "verification.canary_rate"),
        ({"freivalds_rounds": 0}, "verification.freivalds_rounds"),
        ({"embed_redundancy": 6}, "verification.embed_redundancy"),
        ({"verifier_urls": ["ftp://x"]}, "verification.verifier_urls.0"),
        ({"verifier_urls": ["http://a:1", "http://a:1/"]}, "lists a URL twice"),
        ({"verifier_urls": ["http://a:1/?k=v"]}, "no query"),
        ({"quorum": 2}, "verification.quorum: unknown field"),
    ],
)
def test_bad_verification_settings_name_the_field(section: dict[str, Any], words: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(verification=section)
    assert words in str(raised.value)


def test_the_policy_checks_its_values_and_counts_copies() -> None:
    policy = VerificationPolicy(embed_redundancy=3)
    assert policy.copies("embed", 1) == 3
    assert policy.copies("embed", 5) == 5
    assert policy.copies("matmul", 1) == 1
    assert policy.copies("matmul", 2) == 2
    for bad in (
        {"canary_rate": -0.1},
        {"freivalds_rounds": 0},
        {"embed_redundancy": 0},
        {"embed_tolerance": 0},
    ):
        with pytest.raises(MarketConfigError):
            VerificationPolicy(**bad)  # type: ignore[arg-type]


# --- the job store --------------------------------------------------------------------------------------


class _VersionOneStore(JobStore):
    migrations: ClassVar = _MIGRATIONS[:1]


def test_a_version_one_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _VersionOneStore(path).close()
    job_id = "0x" + "ab" * 32
    with sqlite3.connect(path) as conn:  # a job and a failed attempt as a version-1 gateway wrote them
        assert "verification" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        conn.execute(
            "INSERT INTO jobs (id, client, workload, input, spec, payment_mode, use_cache, status, "
            "created_at, updated_at, request_hash) "
            "VALUES (?, ?, 'matmul', ?, '{}', 'voucher', 1, 'running', 1, 1, 'h')",
            (job_id, CLIENT, '{"dtype":"float32","k":2,"m":2,"n":2,"seed":1}'),
        )
        conn.execute(
            "INSERT INTO attempts (job_id, n, provider, region, attempt_job_id, payment, price_wei, "
            "started_at, outcome, error_code) "
            "VALUES (?, 1, ?, 'eu-west', ?, 'voucher', '5', 1, 'failed', 'timeout')",
            (job_id, PROVIDER, job_id),
        )
    store = JobStore(path)
    record = store.get(job_id)
    assert record is not None
    assert (record.kind, record.verification) == ("client", None)
    assert [(a.outcome, a.verification, a.evidence) for a in record.attempts] == [("failed", None, None)]
    assert [r.id for r in store.unfinished()] == [job_id]
    store.close()


def test_attempt_records_hold_the_check_the_rejection_and_the_evidence(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create(CLIENT, "matmul", {"seed": 1, "m": 2, "k": 2, "n": 2, "dtype": "float32"}, {})
    n = store.start_attempt(
        job.id, provider=PROVIDER, region="eu-west", attempt_job_id=job.id, payment="voucher", price_wei=5
    )
    check = {"method": "freivalds", "passed": False, "detail": "row 3 off", "rounds": 16, "verify_ms": 1.5}
    store.reject_attempt(
        job.id, n, code="verification_failed", message="freivalds: row 3 off", verification=check
    )
    store.set_evidence(job.id, n, EvidenceOutcome("invalid_result", "proven", "slashed", "0xab", 7).as_json())
    record = store.get(job.id)
    assert record is not None
    [attempt] = record.attempts
    assert (attempt.outcome, attempt.error_code) == ("rejected", "verification_failed")
    assert attempt.verification == check
    assert attempt.evidence is not None
    assert (attempt.evidence["outcome"], attempt.evidence["slashed_wei"]) == ("proven", "7")
    assert not record.finished  # a rejected attempt does not end the job
    types = [e.type.value for e in store.events(job.id)]
    assert types[-2:] == ["rejected", "evidence"]
    with pytest.raises(UnknownJobError):
        store.set_evidence(job.id, 9, {"outcome": "skipped"})
    with pytest.raises(UnknownJobError):
        store.reject_attempt(job.id, 9, code="verification_failed", message="x")
    canary = store.create(
        PROVIDER, "matmul", {"seed": 2, "m": 2, "k": 2, "n": 2, "dtype": "float32"}, {}, kind="canary"
    )
    assert canary.kind == "canary"
    assert store.list(PROVIDER)[0].kind == "canary"
    store.close()


# --- checks ---------------------------------------------------------------------------------------------


def matmul(seed: int, size: int = 32) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    inp = {"seed": seed, "m": size, "k": size, "n": size, "dtype": "float64"}
    a, b = matmul_operands(MatmulInput.model_validate(inp))
    c = a @ b
    return inp, MatmulOutput(c=Tensor.from_array(c)).model_dump(mode="json"), c


def test_freivalds_passes_an_honest_product_and_rejects_one_wrong_element() -> None:
    inp, out, c = matmul(1)
    check = check_result_json("matmul", inp, out, rounds=16)
    assert check is not None
    assert (check.passed, check.method, check.rounds) == (True, "freivalds", 16)
    c = c.copy()
    c[5, 7] += 1.0
    wrong = MatmulOutput(c=Tensor.from_array(c)).model_dump(mode="json")
    check = check_result_json("matmul", inp, wrong, rounds=16)
    assert check is not None
    assert not check.passed
    # An output of the wrong shape is a failed check, not an error.
    _, small, _ = matmul(1, 8)
    check = check_result_json("matmul", inp, small, rounds=4)
    assert check is not None
    assert not check.passed
    assert "does not fit" in check.detail
    # Embeddings have no cheap check.
    texts = {"model": EMBED_MODEL, "texts": ["x"]}
    vector = np.zeros((1, 384), dtype=np.float32)
    vector[0, 0] = 1.0
    emb = {"model": EMBED_MODEL, "embeddings": Tensor.from_array(vector).model_dump(mode="json")}
    assert check_result_json("embed", texts, emb, rounds=4) is None
    assert results_agree("embed", texts, emb, emb, atol=1e-3).passed
    other = vector.copy()
    other[0, 0], other[0, 1] = 0.0, 1.0
    emb2 = {"model": EMBED_MODEL, "embeddings": Tensor.from_array(other).model_dump(mode="json")}
    assert not results_agree("embed", texts, emb, emb2, atol=1e-3).passed


def test_a_canary_answer_must_equal_the_committed_one() -> None:
    inp, out, _ = matmul(2)
    assert check_canary(inp, out, out, rounds=8).passed
    other_inp, other_out, _ = matmul(3)
    # A correct product of another input is not the canary's answer.
    assert not check_canary(inp, other_out, out, rounds=8).passed
    del other_inp


# --- the verifier pool ----------------------------------------------------------------------------------


class Answer:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class FakeVerifier:
    """A verifier collaborator: answers with a verdict signed by ``signer`` (or fails)."""

    def __init__(
        self,
        account: LocalAccount,
        *,
        valid: bool = False,
        claim: str | None = None,
        domain: Domain = DOMAIN,
        job_id: bytes | None = None,
        fail: bool = False,
    ) -> None:
        self.account, self.valid, self.claim, self.domain = account, valid, claim, domain
        self.job_id, self.fail = job_id, fail

    async def verdict(self, evidence: Any) -> Answer:
        if self.fail:
            raise ConnectionError("verifier down")
        job_id = self.job_id or evidence["job_id"]
        verdict = Verdict(job_id=job_id, result_hash=evidence["result_hash"], result_valid=self.valid)
        signature = verdict.sign(LocalSigner(self.account), self.domain).signature.to_bytes()
        return Answer(
            job_id="0x" + job_id.hex(),
            result_hash=evidence["result_hash"],
            result_valid=self.valid,
            verifier=self.claim or self.account.address,
            signature="0x" + signature.hex(),
        )

    async def canary(self, request: Any) -> Any:
        if self.fail:
            raise ConnectionError("verifier down")
        return {"issued_for": request}

    async def aclose(self) -> None:
        return None


def test_the_pool_keeps_only_signatures_that_check_out() -> None:
    accounts = [Account.create() for _ in range(6)]
    job_id, result_hash = b"\x01" * 32, b"\x02" * 32
    good_a, good_b = FakeVerifier(accounts[0]), FakeVerifier(accounts[1])
    verifiers = [
        good_a,
        good_b,
        FakeVerifier(accounts[2], claim=accounts[3].address),  # signed by someone else than it says
        FakeVerifier(accounts[3], domain=OTHER_DOMAIN),  # the wrong contract's domain
        FakeVerifier(accounts[4], job_id=b"\x09" * 32),  # about another job
        FakeVerifier(accounts[5], valid=True),  # found it valid
        FakeVerifier(accounts[5], fail=True),
    ]
    pool = VerifierPool(verifiers, timeout=5)
    evidence = {"job_id": job_id, "result_hash": result_hash}
    got = asyncio.run(pool.verdicts(evidence, domain=DOMAIN, job_id=job_id, result_hash=result_hash))
    assert [address for address, _ in got.signatures] == sorted(
        [accounts[0].address, accounts[1].address], key=lambda a: int(a, 16)
    )
    assert got.valid == (accounts[5].address,)
    assert len(got.errors) == 4
    assert got.judgement(2) == "invalid"
    assert got.judgement(3) == "valid"
    only_valid = asyncio.run(
        VerifierPool([FakeVerifier(accounts[5], valid=True)]).verdicts(
            evidence, domain=DOMAIN, job_id=job_id, result_hash=result_hash
        )
    )
    assert only_valid.judgement(1) == "valid"
    nothing = asyncio.run(
        VerifierPool([FakeVerifier(accounts[5], fail=True)]).verdicts(
            evidence, domain=DOMAIN, job_id=job_id, result_hash=result_hash
        )
    )
    assert nothing.judgement(1) == "unknown"


def test_canaries_come_from_the_next_verifier_that_answers() -> None:
    down, up = FakeVerifier(Account.create(), fail=True), FakeVerifier(Account.create())
    pool = VerifierPool([down, up], timeout=5)
    issued = asyncio.run(pool.canary("matmul", 4, 5, 6, "float32"))
    assert issued == {"issued_for": {"workload": "matmul", "m": 4, "k": 5, "n": 6, "dtype": "float32"}}
    with pytest.raises(MarketError, match="no verifier issued a canary"):
        asyncio.run(VerifierPool([down], timeout=5).canary("matmul", 4, 4, 4, "float32"))
