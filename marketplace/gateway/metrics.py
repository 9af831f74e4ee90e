"""Prometheus metrics of the gateway, in a registry of its own (served at ``/metrics``).

* ``proxima_gateway_requests_total{route,method,status}``: HTTP requests answered (route template, not the
  raw path);
* ``proxima_gateway_request_seconds{route,method}``: time to answer (histogram);
* ``proxima_gateway_jobs_total{workload,outcome}``: jobs that ended (``succeeded``, ``failed``,
  ``cancelled``);
* ``proxima_gateway_jobs_submitted_total{workload}``: jobs accepted;
* ``proxima_gateway_failovers_total{workload}``: attempts that failed and moved a job to another provider;
* ``proxima_gateway_placement_seconds``: time the matching engine took to place a job (histogram);
* ``proxima_gateway_cache_hits_total{workload}``: jobs answered from the result cache;
* ``proxima_gateway_budget_refusals_total``: jobs refused because the budget would be exceeded;
* ``proxima_gateway_rate_limited_total``: requests refused by the rate limit;
* ``proxima_gateway_auth_failures_total``: requests refused for missing or bad credentials;
* ``proxima_gateway_offers``: live offers the gateway sees (read at scrape time);
* ``proxima_gateway_verifications_total{workload,method,outcome}``: results checked before a job succeeds
  (``method``: ``freivalds``, ``redundant``, ``canary``, ``verdict``, ``majority``, ``none``; ``outcome``:
  ``passed``, ``failed``, ``unchecked``);
* ``proxima_gateway_evidence_total{kind,outcome}``: evidence against rejected results (``kind``:
  ``invalid_result``, ``canary``, ``escrow``; ``outcome``: ``proven``, ``skipped``, ``no_quorum``,
  ``already_proven``, ``error``, ``pending``);
* ``proxima_gateway_canaries_total{outcome}``: canary jobs sent to providers (``passed``, ``failed``,
  ``undelivered``, ``unavailable``).

Canary jobs (the gateway's own) are not counted in the job counters.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "FinishedJobs", "GatewayMetrics", "VerificationMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""Content type of the Prometheus text format."""

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_PLACEMENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class GatewayMetrics:
    """The gateway's counters and histograms.

    The job counters (outcomes, failovers, cache hits, placement time) are derived from the job store at
    scrape time (:meth:`sync_jobs`): the dispatcher records every transition there.

    Args:
        offers: Called at scrape time for the number of live offers (None: the gauge stays 0).
        clock: Unix time; jobs that finished before this object was made are not counted.
    """

    def __init__(
        self, offers: Callable[[], int] | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._sync_lock = threading.Lock()
        self._mark = clock()
        self._at_mark: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "proxima_gateway_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "proxima_gateway_request_seconds",
            "Time to answer an HTTP request",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs = Counter("proxima_gateway_jobs", "Jobs that ended", ["workload", "outcome"], registry=r)
        self.jobs_submitted = Counter(
            "proxima_gateway_jobs_submitted", "Jobs accepted", ["workload"], registry=r
        )
        self.failovers = Counter(
            "proxima_gateway_failovers",
            "Failed attempts that moved a job to another provider",
            ["workload"],
            registry=r,
        )
        self.placement_seconds = Histogram(
            "proxima_gateway_placement_seconds",
            "Time the matching engine took to place a job",
            buckets=_PLACEMENT_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "proxima_gateway_cache_hits", "Jobs answered from the result cache", ["workload"], registry=r
        )
        self.budget_refusals = Counter(
            "proxima_gateway_budget_refusals", "Jobs refused because the budget would be exceeded", registry=r
        )
        self.rate_limited = Counter(
            "proxima_gateway_rate_limited", "Requests refused by the rate limit", registry=r
        )
        self.auth_failures = Counter(
            "proxima_gateway_auth_failures", "Requests refused for missing or bad credentials", registry=r
        )
        self.offers = Gauge("proxima_gateway_offers", "Live offers the gateway sees", registry=r)
        if offers is not None:
            self.offers.set_function(lambda: float(offers()))
        self.verifications = Counter(
            "proxima_gateway_verifications",
            "Results checked before a job succeeds",
            ["workload", "method", "outcome"],
            registry=r,
        )
        self.evidence = Counter(
            "proxima_gateway_evidence",
            "Evidence filed (or not) against rejected results",
            ["kind", "outcome"],
            registry=r,
        )
        self.canaries = Counter(
            "proxima_gateway_canaries", "Canary jobs sent to providers", ["outcome"], registry=r
        )

    def verified(self, workload: str, method: str, outcome: str) -> None:
        """Count one result check (``outcome``: ``passed``, ``failed`` or ``unchecked``)."""
        self.verifications.labels(workload, method, outcome).inc()

    def evidence_filed(self, kind: str, outcome: str) -> None:
        """Count one evidence outcome (``kind``: ``invalid_result``, ``canary`` or ``escrow``)."""
        self.evidence.labels(kind, outcome).inc()

    def canary_done(self, outcome: str) -> None:
        """Count one canary job (``passed``, ``failed``, ``undelivered``, ``unavailable``)."""
        self.canaries.labels(outcome).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def job_submitted(self, workload: str) -> None:
        """Count an accepted job."""
        self.jobs_submitted.labels(workload).inc()

    def job_finished(self, workload: str, outcome: str, *, failovers: int, cached: bool) -> None:
        """Count a job that reached a final status.

        Args:
            workload: Its workload.
            outcome: ``succeeded``, ``failed`` or ``cancelled``.
            failovers: Attempts that failed before the last one.
            cached: Answered from the result cache.
        """
        self.jobs.labels(workload, outcome).inc()
        if failovers > 0:
            self.failovers.labels(workload).inc(failovers)
        if cached:
            self.cache_hits.labels(workload).inc()

    def placed(self, seconds: float) -> None:
        """Record one placement's duration."""
        self.placement_seconds.observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def sync_jobs(self, store: FinishedJobs, *, limit: int = 10_000) -> int:
        """Count the jobs that finished since the last call (outcomes, failovers, cache hits, placement time).

        The job store is the record of what happened (the dispatcher writes every transition there), so the
        counters are derived from it, each finished job once: jobs are read in ``updated_at`` order after a
        high-water mark that starts when this object is made (counters restart with the process, as
        Prometheus expects).

        Args:
            store: The job store.
            limit: Most jobs read per call (the rest are read by the next call).

        Returns:
            How many finished jobs were counted.
        """
        with self._sync_lock:
            rows = store.read(
                "SELECT id, workload, status, cached, timing, updated_at FROM jobs "
                "WHERE status IN ('succeeded', 'failed', 'cancelled') AND kind = 'client' "
                "AND updated_at >= ? "
                "ORDER BY updated_at, id LIMIT ?",
                (self._mark, limit + len(self._at_mark)),
            )
            fresh = [r for r in rows if str(r["id"]) not in self._at_mark]
            if not fresh:
                return 0
            ids = [str(r["id"]) for r in fresh]
            failed: dict[str, int] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in store.read(
                    f"SELECT job_id, count(*) AS n FROM attempts WHERE outcome IN ('failed', 'rejected') "  # noqa: S608
                    f"AND job_id IN ({marks}) GROUP BY job_id",
                    chunk,
                ):
                    failed[str(row["job_id"])] = int(row["n"])
            for row in fresh:
                job_id = str(row["id"])
                failed_attempts = failed.get(job_id, 0)
                if row["status"] == "failed" and failed_attempts:
                    failed_attempts -= 1  # the last failed attempt moved the job nowhere
                self.job_finished(
                    str(row["workload"]),
                    str(row["status"]),
                    failovers=failed_attempts,
                    cached=bool(row["cached"]),
                )
                match_ms = _match_ms(row["timing"])
                if match_ms is not None and not row["cached"]:
                    self.placed(match_ms / 1000.0)
            last = float(fresh[-1]["updated_at"])
            if last > self._mark:
                self._mark = last
                self._at_mark = set()
            self._at_mark.update(str(r["id"]) for r in fresh if float(r["updated_at"]) == last)
            return len(fresh)


class VerificationMetrics(Protocol):
    """Where the dispatcher counts result checks, evidence and canaries (:class:`GatewayMetrics`)."""

    def verified(self, workload: str, method: str, outcome: str) -> None:
        """Count one result check."""

    def evidence_filed(self, kind: str, outcome: str) -> None:
        """Count one evidence outcome."""

    def canary_done(self, outcome: str) -> None:
        """Count one canary job."""


class FinishedJobs(Protocol):
    """What :meth:`GatewayMetrics.sync_jobs` reads: the job store's read-only queries."""

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Rows of one query (mapping-like)."""


def _match_ms(timing: object) -> float | None:
    if not isinstance(timing, str):
        return None
    try:
        value = json.loads(timing).get("match")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value >= 0 else None
