"""Result cache for deterministic workloads: the same workload, model and input get the stored result.

The key is ``keccak(canonical_json({"workload", "model", "spec_hash"}))`` where ``spec_hash`` is
:func:`proxima.sdk.workloads.spec_hash` of the parsed input (the hash a provider's quote signs), so two
inputs that parse to the same job share an entry whatever their JSON spelling.

Only verified results go in: :meth:`ResultCache.put` checks again that the receipt is signed by the provider
for that job and client and that the result hash is the output's (:func:`proxima.sdk.jobclient.check_result`
needs the request; here the stored entry keeps the receipt, its signature and its domain, so anyone served
from the cache can check the provider's signature themselves). An entry is served with the receipt of the
original job: a cached answer is the provider's signed answer to an earlier, identical request.

The cache lives in the job database (table ``cache``), bounded by entry count and total output bytes (least
recently used entries go first) and by age (``max_age_s``). A request opts out with ``use_cache=False`` on
the job: it is neither served from the cache nor stored in it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from eth_utils.crypto import keccak
from pydantic import BaseModel

from proxima.marketplace.errors import MarketConfigError, MarketError
from proxima.marketplace.gateway.jobstore import JobStore
from proxima.sdk.jobs import Domains, JobResult, verify_receipt
from proxima.sdk.types import Address
from proxima.sdk.workloads import (
    WorkloadSpecError,
    canonical_json,
    parse_input,
    parse_output,
    result_hash,
    spec_hash,
)

__all__ = [
    "DEFAULT_CACHEABLE",
    "CacheEntry",
    "CacheSettings",
    "ResultCache",
    "UnverifiedResultError",
    "cache_key",
]

log = logging.getLogger(__name__)

DEFAULT_CACHEABLE: Final = frozenset({"matmul", "embed"})
"""Workloads whose result depends only on their input (every correct provider gives an acceptable answer)."""


class UnverifiedResultError(MarketError, ValueError):
    """A result offered to the cache does not check out (receipt, signature or hash)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"result not cached: {problem}")


@dataclass(frozen=True)
class CacheSettings:
    """Bounds of the cache.

    Attributes:
        max_entries: Entries kept; the least recently used go first.
        max_bytes: Total size of the stored results (JSON bytes).
        max_age_s: Seconds an entry is served after it was stored.
        max_entry_bytes: A larger result is not cached.
        cacheable: Workloads that may be cached.
    """

    max_entries: int = 10_000
    max_bytes: int = 512 * 2**20
    max_age_s: float = 7 * 86_400.0
    max_entry_bytes: int = 16 * 2**20
    cacheable: frozenset[str] = DEFAULT_CACHEABLE

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes", "max_entry_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MarketConfigError(f"CacheSettings.{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_age_s, int | float) or not 0 < self.max_age_s < float("inf"):
            raise MarketConfigError(
                f"CacheSettings.max_age_s must be a positive number, got {self.max_age_s!r}"
            )


@dataclass(frozen=True)
class CacheEntry:
    """A cached result.

    Attributes:
        key: The cache key (hex).
        workload: The workload.
        provider: The provider that computed it.
        job_id: The job id the provider ran (``0x`` hex), named in the receipt.
        output: The workload output.
        receipt: ``{"message", "signature", "domain"}``: the provider's signed receipt.
        created_at: Unix seconds when it was stored.
        hits: Times it was served before this one.
    """

    key: str
    workload: str
    provider: Address
    job_id: str
    output: dict[str, Any]
    receipt: dict[str, Any]
    created_at: float
    hits: int


def _model_of(inp: BaseModel) -> str:
    model = getattr(inp, "model", "")
    return model if isinstance(model, str) else ""


def cache_key(workload: str, inp: BaseModel) -> str:
    """The cache key of a parsed input: hex keccak of workload, model and spec hash.

    Raises:
        WorkloadSpecError: If ``inp`` is not the workload's input model.
    """
    body = {"model": _model_of(inp), "spec_hash": "0x" + spec_hash(workload, inp).hex(), "workload": workload}
    return keccak(canonical_json(body)).hex()


def receipt_json(result: JobResult, domains: Domains) -> dict[str, Any]:
    """The receipt of a result as stored: its typed-data message, signature and domain."""
    dumped = result.model_dump(mode="json")
    return {
        "message": dumped["receipt"],
        "signature": dumped["signature"],
        "domain": domains.faults_domain.as_dict(),
    }


class ResultCache:
    """The result cache (in the job database).

    Args:
        store: The job store whose file holds the ``cache`` table.
        domains: The deployment's signing domains (receipts are checked in the ``FaultProofs`` domain).
        settings: Bounds.
        clock: Wall-clock time (unix seconds).
    """

    def __init__(
        self,
        store: JobStore,
        domains: Domains,
        settings: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.domains = domains
        self.settings = settings or CacheSettings()
        self._clock = clock

    def cacheable(self, workload: str) -> bool:
        """Whether results of ``workload`` may be cached."""
        return workload in self.settings.cacheable

    def get(self, workload: str, input: Mapping[str, Any]) -> CacheEntry | None:
        """The fresh entry for this workload and input, if any (and mark it used).

        Raises:
            WorkloadSpecError: If the input is not valid for the workload.
        """
        if not self.cacheable(workload):
            return None
        key = cache_key(workload, parse_input(workload, input))
        now = self._clock()
        with self.store.transaction() as conn:
            row = conn.execute("SELECT * FROM cache WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            if row["created_at"] < now - self.settings.max_age_s:
                conn.execute("DELETE FROM cache WHERE key = ?", (key,))
                return None
            conn.execute("UPDATE cache SET used_at = ?, hits = hits + 1 WHERE key = ?", (now, key))
        stored = json.loads(row["result"])
        return CacheEntry(
            key=key,
            workload=row["workload"],
            provider=row["provider"],
            job_id=row["job_id"],
            output=stored["output"],
            receipt=stored["receipt"],
            created_at=float(row["created_at"]),
            hits=int(row["hits"]),
        )

    def put(self, input: Mapping[str, Any], result: JobResult, provider: Address) -> bool:
        """Store a verified result (replacing an older entry for the same key).

        Args:
            input: The input the result answers.
            result: The provider's result, its receipt and signature.
            provider: The provider the request went to.

        Returns:
            Whether it was stored (``False`` for a workload that is not cacheable or a too large result).

        Raises:
            UnverifiedResultError: If the receipt is not the provider's signature for this job, or its
                result hash is not the output's.
        """
        workload = result.workload
        if not self.cacheable(workload):
            return False
        try:
            inp = parse_input(workload, input)
            output = parse_output(workload, result.output)
        except WorkloadSpecError as err:
            raise UnverifiedResultError(str(err)) from err
        if not verify_receipt(result, self.domains.faults_domain, provider):
            raise UnverifiedResultError(
                f"the receipt is not signed by {provider} for job 0x{result.job_id.hex()}"
            )
        if result_hash(workload, output) != result.receipt.result_hash:
            raise UnverifiedResultError("the receipt's result hash is not the hash of the output")
        body = json.dumps(
            {"output": result.output, "receipt": receipt_json(result, self.domains)}, separators=(",", ":")
        )
        size = len(body)
        if size > self.settings.max_entry_bytes:
            return False
        key = cache_key(workload, inp)
        now = self._clock()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cache (key, workload, model, spec_hash, provider, job_id, result, "
                "size, created_at, used_at, hits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    key,
                    workload,
                    _model_of(inp),
                    "0x" + spec_hash(workload, inp).hex(),
                    provider,
                    "0x" + result.job_id.hex(),
                    body,
                    size,
                    now,
                    now,
                ),
            )
            self._evict(conn, now)
        log.debug("result cached", extra={"job_id": "0x" + result.job_id.hex(), "key": key, "bytes": size})
        return True

    def _evict(self, conn: sqlite3.Connection, now: float) -> None:
        s = self.settings
        conn.execute("DELETE FROM cache WHERE created_at < ?", (now - s.max_age_s,))
        count, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache").fetchone()
        while count > s.max_entries or total > s.max_bytes:
            row = conn.execute("SELECT key, size FROM cache ORDER BY used_at, key LIMIT 1").fetchone()
            if row is None:
                break
            conn.execute("DELETE FROM cache WHERE key = ?", (row["key"],))
            count, total = count - 1, total - int(row["size"])

    def stats(self) -> dict[str, int]:
        """Entries, total bytes and total hits."""
        row = self.store.read(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b, COALESCE(SUM(hits), 0) AS h FROM cache"
        )[0]
        return {"entries": int(row["n"]), "bytes": int(row["b"]), "hits": int(row["h"])}
