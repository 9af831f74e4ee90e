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
* ``proxima_gateway_offers``: live offers the gateway sees (read at scrape time).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

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

    Args:
        offers: Called at scrape time for the number of live offers (None: the gauge stays 0).
    """

    def __init__(self, offers: Callable[[], int] | None = None) -> None:
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
