"""The result cache on a real job database, with results signed by a real provider key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxima.marketplace.errors import MarketConfigError
from proxima.marketplace.gateway.cache import CacheSettings, ResultCache, UnverifiedResultError, cache_key
from proxima.marketplace.gateway.jobstore import JobStore
from proxima.sdk.chain import dev_accounts
from proxima.sdk.eip712 import JobReceipt, LocalSigner
from proxima.sdk.jobs import Domains, JobResult
from proxima.sdk.workloads import MatmulInput, MatmulOutput, Tensor, matmul_operands, parse_input, result_hash

ACCOUNTS = dev_accounts(4)
PROVIDER = LocalSigner(ACCOUNTS[1])
GATEWAY = ACCOUNTS[0].address
DOMAINS = Domains(
    chain_id=31337,
    escrow="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    faults="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
    vouchers="0x9fe46736679d2d9a65f0992f01272643e1c4a4a6",
)


def seeded(seed: int, size: int = 4) -> dict[str, Any]:
    return {"seed": seed, "m": size, "k": size, "n": size, "dtype": "float64"}


def signed_result(inp: dict[str, Any], *, tamper: bool = False, job_id: bytes = b"\x07" * 32) -> JobResult:
    parsed = parse_input("matmul", inp)
    assert isinstance(parsed, MatmulInput)
    a, b = matmul_operands(parsed)
    output = MatmulOutput(c=Tensor.from_array(a @ b))
    receipt = JobReceipt(
        job_id=job_id,
        provider=PROVIDER.address,
        client=GATEWAY,
        result_hash=result_hash("matmul", output),
        queue_micros=10,
        compute_micros=20,
    )
    signed = receipt.sign(PROVIDER, DOMAINS.faults_domain)
    dumped = output.model_dump(mode="json", exclude_none=True)
    if tamper:
        dumped = MatmulOutput(c=Tensor.from_array(a @ b + 1)).model_dump(mode="json", exclude_none=True)
    return JobResult(
        job_id=job_id,
        workload="matmul",
        output=dumped,
        receipt=receipt,
        signature=signed.signature.to_bytes(),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.db")


def test_a_verified_result_is_served_with_its_receipt(store: JobStore) -> None:
    cache = ResultCache(store, DOMAINS)
    inp = seeded(1)
    assert cache.get("matmul", inp) is None
    result = signed_result(inp)
    assert cache.put(inp, result, PROVIDER.address) is True
    # The same job spelled differently (key order) hits the same entry.
    entry = cache.get("matmul", dict(reversed(list(inp.items()))))
    assert entry is not None
    assert entry.output == result.output
    assert entry.provider == PROVIDER.address
    assert entry.job_id == "0x" + "07" * 32
    assert entry.receipt["signature"] == "0x" + result.signature.hex()
    assert entry.receipt["domain"]["verifyingContract"] == DOMAINS.faults
    c = MatmulOutput.model_validate(entry.output).c.to_array()
    a, b = matmul_operands(MatmulInput.model_validate(inp))
    np.testing.assert_array_equal(c, a @ b)
    assert cache.get("matmul", seeded(2)) is None
    assert cache.stats()["hits"] == 1


def test_unverified_results_are_refused(store: JobStore) -> None:
    cache = ResultCache(store, DOMAINS)
    inp = seeded(3)
    with pytest.raises(UnverifiedResultError, match="hash"):
        cache.put(inp, signed_result(inp, tamper=True), PROVIDER.address)
    with pytest.raises(UnverifiedResultError, match="not signed"):
        cache.put(inp, signed_result(inp), ACCOUNTS[2].address)  # not the signer
    assert cache.get("matmul", inp) is None


def test_key_depends_on_workload_model_and_input() -> None:
    a = cache_key("matmul", parse_input("matmul", seeded(1)))
    assert a == cache_key("matmul", parse_input("matmul", seeded(1)))
    assert a != cache_key("matmul", parse_input("matmul", seeded(2)))
    e1 = cache_key("embed", parse_input("embed", {"model": "all-MiniLM-L6-v2", "texts": ["hi"]}))
    e2 = cache_key("embed", parse_input("embed", {"model": "all-MiniLM-L6-v2", "texts": ["ho"]}))
    assert e1 != e2


def test_least_recently_used_entries_go_first(store: JobStore) -> None:
    clock = Clock()
    cache = ResultCache(store, DOMAINS, CacheSettings(max_entries=2), clock=clock)
    for seed in (1, 2):
        clock.now += 1
        cache.put(seeded(seed), signed_result(seeded(seed)), PROVIDER.address)
    clock.now += 1
    assert cache.get("matmul", seeded(1)) is not None  # 1 used more recently than 2
    clock.now += 1
    cache.put(seeded(3), signed_result(seeded(3)), PROVIDER.address)
    assert cache.get("matmul", seeded(2)) is None
    assert cache.get("matmul", seeded(1)) is not None
    assert cache.get("matmul", seeded(3)) is not None
    assert cache.stats()["entries"] == 2


def test_entries_expire_and_size_is_bounded(store: JobStore) -> None:
    clock = Clock()
    one = len(signed_result(seeded(1)).model_dump_json())
    cache = ResultCache(
        store, DOMAINS, CacheSettings(max_age_s=60, max_bytes=one * 3, max_entry_bytes=one * 2), clock=clock
    )
    cache.put(seeded(1), signed_result(seeded(1)), PROVIDER.address)
    clock.now += 61
    assert cache.get("matmul", seeded(1)) is None
    big = seeded(5, size=64)
    assert cache.put(big, signed_result(big), PROVIDER.address) is False  # larger than max_entry_bytes
    for seed in range(10, 16):
        cache.put(seeded(seed), signed_result(seeded(seed)), PROVIDER.address)
    assert cache.stats()["bytes"] <= one * 3


def test_workloads_not_listed_are_not_cached(store: JobStore) -> None:
    cache = ResultCache(store, DOMAINS, CacheSettings(cacheable=frozenset({"embed"})))
    assert cache.put(seeded(1), signed_result(seeded(1)), PROVIDER.address) is False
    assert cache.get("matmul", seeded(1)) is None


def test_settings_are_validated() -> None:
    with pytest.raises(MarketConfigError):
        CacheSettings(max_entries=0)
    with pytest.raises(MarketConfigError):
        CacheSettings(max_age_s=float("nan"))
