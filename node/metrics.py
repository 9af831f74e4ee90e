"""Prometheus metrics of a provider node, in a registry of its own, served over HTTP at ``/metrics``.

Each :class:`NodeMetrics` has its own ``CollectorRegistry`` (never prometheus_client's global one), so
several nodes in one process, and tests, do not share counters. Every metric name starts with
``proxima_node_``. Label values that come from the network must be from a bounded set (a workload name the
node serves, an error code, a rejection reason): unknown workload names are counted as ``other``.

Amounts in wei are exported as Prometheus float64 values: exact up to 2**53 wei (~0.009 ETH), within
1e-16 relative beyond.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from proxima.node.errors import NodeError

__all__ = ["JOB_PHASE_BUCKETS", "MetricsError", "NodeMetrics"]

log = logging.getLogger(__name__)

JOB_PHASE_BUCKETS = (
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
    60.0,
    120.0,
)
"""Histogram buckets (seconds) of job phases: interactive inference lives in the low milliseconds."""

_PREFIX = "proxima_node"


class MetricsError(NodeError):
    """The metrics endpoint cannot be served.

    Args:
        host: Interface that was to be bound.
        port: Port that was to be bound.
        problem: What went wrong.
    """

    def __init__(self, host: str, port: int, problem: str) -> None:
        self.host = host
        self.port = port
        super().__init__(f"cannot serve metrics on {host}:{port}: {problem}")


class _QuietHandler(WSGIRequestHandler):
    """Request handler that logs at debug level instead of writing every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics request", extra={"request": format % args})


class NodeMetrics:
    """A node's counters, gauges and histograms.

    Args:
        workloads: Workload names the node serves; other names are counted as ``other``. Empty: any name
            is used as given (only for callers that validated it).

    Attributes:
        registry: The registry holding every metric below.
        jobs: ``proxima_node_jobs_total{workload, outcome}``: jobs finished (outcome such as ``ok``,
            ``failed``, ``rejected``, ``timeout``).
        job_errors: ``proxima_node_job_errors_total{code}``: error replies by protocol error code.
        queue_depth: ``proxima_node_queue_depth``: jobs waiting.
        in_flight: ``proxima_node_in_flight``: jobs computing.
        job_phase_seconds: ``proxima_node_job_phase_seconds{workload, phase}``: ``queue``, ``compute``
            and ``total`` time of finished jobs.
        earnings_wei: ``proxima_node_earnings_wei_total{kind}``: wei earned (``escrow``, ``voucher``).
        offers_published: ``proxima_node_offers_published_total``.
        offers_rejected: ``proxima_node_offers_rejected_total{reason}``: received offers dropped.
        chain_tx: ``proxima_node_chain_tx_total{kind, outcome}``: transactions sent (kind such as
            ``stake``, ``commit``, ``redeem``, ``attest``; outcome ``ok``, ``reverted``, ``error``).
        attestations_submitted: ``proxima_node_attestations_submitted_total``: measurements attested.
        stake_wei: ``proxima_node_stake_wei``: the node's stake in the registry.
        node_info: ``proxima_node_info{version, address, peer_id, region}``: always 1.
    """

    def __init__(self, workloads: Iterable[str] = ()) -> None:
        self._workloads = frozenset(workloads)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            f"{_PREFIX}_jobs", "Jobs finished, by workload and outcome.", ["workload", "outcome"], registry=r
        )
        self.job_errors = Counter(
            f"{_PREFIX}_job_errors", "Error replies sent, by protocol error code.", ["code"], registry=r
        )
        self.queue_depth = Gauge(f"{_PREFIX}_queue_depth", "Jobs waiting for a worker.", registry=r)
        self.in_flight = Gauge(f"{_PREFIX}_in_flight", "Jobs computing now.", registry=r)
        self.job_phase_seconds = Histogram(
            f"{_PREFIX}_job_phase_seconds",
            "Time of finished jobs in each phase (queue, compute, total).",
            ["workload", "phase"],
            buckets=JOB_PHASE_BUCKETS,
            registry=r,
        )
        self.earnings_wei = Counter(
            f"{_PREFIX}_earnings_wei", "Wei earned, by payment kind (escrow, voucher).", ["kind"], registry=r
        )
        self.offers_published = Counter(f"{_PREFIX}_offers_published", "Offers published.", registry=r)
        self.offers_rejected = Counter(
            f"{_PREFIX}_offers_rejected", "Received offers dropped, by reason.", ["reason"], registry=r
        )
        self.chain_tx = Counter(
            f"{_PREFIX}_chain_tx",
            "Chain transactions sent, by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.attestations_submitted = Counter(
            f"{_PREFIX}_attestations_submitted", "Benchmark measurements attested on chain.", registry=r
        )
        self.stake_wei = Gauge(
            f"{_PREFIX}_stake_wei", "The node's stake in the registry, in wei.", registry=r
        )
        self.node_info = Gauge(
            f"{_PREFIX}_info",
            "Node identity (always 1).",
            ["version", "address", "peer_id", "region"],
            registry=r,
        )
        for kind in ("escrow", "voucher"):
            self.earnings_wei.labels(kind=kind)  # present at 0 from the start, so rate() works
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def set_info(self, *, version: str, address: str, peer_id: str, region: str) -> None:
        """Set the ``proxima_node_info`` labels (replacing earlier ones)."""
        self.node_info.clear()
        self.node_info.labels(version=version, address=address, peer_id=peer_id, region=region).set(1)

    def job_finished(
        self, workload: str, outcome: str, *, queue_seconds: float, compute_seconds: float
    ) -> None:
        """Count a finished job and record its phase times.

        Args:
            workload: The workload's name.
            outcome: ``ok``, ``failed``, ``timeout``, ...
            queue_seconds: Time from acceptance to the start of computing.
            compute_seconds: Time computing.
        """
        name = self.workload_label(workload)
        self.jobs.labels(workload=name, outcome=outcome).inc()
        self.job_phase_seconds.labels(workload=name, phase="queue").observe(queue_seconds)
        self.job_phase_seconds.labels(workload=name, phase="compute").observe(compute_seconds)
        self.job_phase_seconds.labels(workload=name, phase="total").observe(queue_seconds + compute_seconds)

    def job_rejected(self, workload: str, code: str) -> None:
        """Count a job refused or failed with a protocol error code (``busy``, ``unpaid``, ...)."""
        self.jobs.labels(workload=self.workload_label(workload), outcome="rejected").inc()
        self.job_errors.labels(code=code).inc()

    def earned(self, kind: Literal["escrow", "voucher"], wei: int) -> None:
        """Add ``wei`` (>= 0) earned through ``kind`` payments."""
        if wei < 0:
            raise ValueError(f"earnings cannot be negative, got {wei}")
        self.earnings_wei.labels(kind=kind).inc(wei)

    def workload_label(self, workload: str) -> str:
        """The label value for a workload name: the name if served (or no list was given), else ``other``."""
        if not self._workloads or workload in self._workloads:
            return workload
        return "other"

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format (what ``/metrics`` returns)."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve ``/metrics`` over HTTP from a daemon thread until :meth:`close`.

        Args:
            host: Interface to bind (IPv4 or IPv6 address, or a host name).
            port: TCP port; 0 picks a free one.

        Returns:
            The bound ``(host, port)``.

        Raises:
            MetricsError: If it is already serving, or the address cannot be bound.
        """
        with self._lock:
            if self._server is not None:
                raise MetricsError(host, port, "already serving on " + _show(self._server.server_address))
            try:
                family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            except (OSError, UnicodeError) as err:
                raise MetricsError(host, port, f"cannot resolve {host!r}: {err}") from err

            class _Server(ThreadingWSGIServer):
                address_family = family

            try:
                server = make_server(
                    host, port, make_wsgi_app(self.registry), _Server, handler_class=_QuietHandler
                )
            except OSError as err:
                raise MetricsError(host, port, err.strerror or str(err)) from err
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="proxima-metrics",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        log.info("metrics served", extra={"host": bound_host, "port": bound_port})
        return bound_host, bound_port

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound ``(host, port)`` while serving, else ``None``."""
        server = self._server
        return None if server is None else (str(server.server_address[0]), int(server.server_address[1]))

    def close(self) -> None:
        """Stop serving (idempotent); the metrics themselves stay readable through :meth:`render`."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        log.info("metrics server stopped")

    def __enter__(self) -> NodeMetrics:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _show(address: Any) -> str:
    return f"{address[0]}:{address[1]}"
