"""Node metrics: recorded values read back over real HTTP from /metrics and parsed as Prometheus text."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from proxima.node.metrics import MetricsError, NodeMetrics

ADDRESS = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"


@pytest.fixture
def metrics() -> Iterator[NodeMetrics]:
    m = NodeMetrics(workloads=["matmul", "embed"])
    yield m
    m.close()


def _scrape(host: str, port: int) -> dict[str, list[Sample]]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, (name, labels, samples)
    return matches[0]


def test_served_metrics_show_what_was_recorded(metrics: NodeMetrics) -> None:
    metrics.set_info(version="0.1.0", address=ADDRESS, peer_id="16Uiu2HAm", region="eu-west")
    metrics.job_finished("matmul", "ok", queue_seconds=0.004, compute_seconds=0.2)
    metrics.job_finished("matmul", "ok", queue_seconds=0.001, compute_seconds=3.0)
    metrics.job_finished("embed", "failed", queue_seconds=0.0, compute_seconds=0.01)
    metrics.job_rejected("matmul", "busy")
    metrics.job_errors.labels(code="unpaid").inc()
    metrics.queue_depth.set(3)
    metrics.in_flight.inc()
    metrics.earned("escrow", 20 * 10**15)
    metrics.earned("voucher", 10**18)
    metrics.offers_published.inc(5)
    metrics.offers_rejected.labels(reason="expired").inc()
    metrics.chain_tx.labels(kind="commit", outcome="ok").inc()
    metrics.attestations_submitted.inc(2)
    metrics.stake_wei.set(10**18)

    host, port = metrics.serve("127.0.0.1", 0)
    assert (host, port) == metrics.address
    assert port > 0
    families = _scrape(host, port)

    jobs = families["proxima_node_jobs"]
    assert _value(jobs, "proxima_node_jobs_total", workload="matmul", outcome="ok") == 2
    assert _value(jobs, "proxima_node_jobs_total", workload="embed", outcome="failed") == 1
    assert _value(jobs, "proxima_node_jobs_total", workload="matmul", outcome="rejected") == 1
    errors = families["proxima_node_job_errors"]
    assert _value(errors, "proxima_node_job_errors_total", code="busy") == 1
    assert _value(errors, "proxima_node_job_errors_total", code="unpaid") == 1
    assert _value(families["proxima_node_queue_depth"], "proxima_node_queue_depth") == 3
    assert _value(families["proxima_node_in_flight"], "proxima_node_in_flight") == 1

    phases = families["proxima_node_job_phase_seconds"]
    name = "proxima_node_job_phase_seconds"
    assert _value(phases, f"{name}_count", workload="matmul", phase="compute") == 2
    assert _value(phases, f"{name}_sum", workload="matmul", phase="compute") == pytest.approx(3.2)
    assert _value(phases, f"{name}_sum", workload="matmul", phase="total") == pytest.approx(3.205)
    assert _value(phases, f"{name}_bucket", workload="matmul", phase="queue", le="0.0025") == 1
    assert _value(phases, f"{name}_bucket", workload="matmul", phase="compute", le="0.25") == 1
    assert _value(phases, f"{name}_bucket", workload="matmul", phase="compute", le="+Inf") == 2

    earnings = families["proxima_node_earnings_wei"]
    assert _value(earnings, "proxima_node_earnings_wei_total", kind="escrow") == 20 * 10**15
    assert _value(earnings, "proxima_node_earnings_wei_total", kind="voucher") == 10**18
    assert _value(families["proxima_node_offers_published"], "proxima_node_offers_published_total") == 5
    rejected = families["proxima_node_offers_rejected"]
    assert _value(rejected, "proxima_node_offers_rejected_total", reason="expired") == 1
    tx = families["proxima_node_chain_tx"]
    assert _value(tx, "proxima_node_chain_tx_total", kind="commit", outcome="ok") == 1
    attested = families["proxima_node_attestations_submitted"]
    assert _value(attested, "proxima_node_attestations_submitted_total") == 2
    assert _value(families["proxima_node_stake_wei"], "proxima_node_stake_wei") == 10**18
    info = families["proxima_node_info"]
    labels = {"version": "0.1.0", "address": ADDRESS, "peer_id": "16Uiu2HAm", "region": "eu-west"}
    assert _value(info, "proxima_node_info", **labels) == 1


def test_earnings_exist_at_zero_before_any_payment(metrics: NodeMetrics) -> None:
    families = {f.name: f.samples for f in text_string_to_metric_families(metrics.render().decode())}
    earnings = families["proxima_node_earnings_wei"]
    assert _value(earnings, "proxima_node_earnings_wei_total", kind="escrow") == 0
    assert _value(earnings, "proxima_node_earnings_wei_total", kind="voucher") == 0


def test_unknown_workload_names_are_counted_as_other(metrics: NodeMetrics) -> None:
    for i in range(20):
        metrics.job_rejected(f"attacker-{i}", "unknown_workload")
    families = {f.name: f.samples for f in text_string_to_metric_families(metrics.render().decode())}
    jobs = families["proxima_node_jobs"]
    assert _value(jobs, "proxima_node_jobs_total", workload="other", outcome="rejected") == 20
    assert {s.labels["workload"] for s in jobs} == {"other"}


def test_info_is_replaced_not_added(metrics: NodeMetrics) -> None:
    metrics.set_info(version="1", address="0x1", peer_id="a", region="eu")
    metrics.set_info(version="2", address="0x1", peer_id="a", region="us")
    families = {f.name: f.samples for f in text_string_to_metric_families(metrics.render().decode())}
    assert [s.labels["region"] for s in families["proxima_node_info"]] == ["us"]


def test_each_node_has_its_own_registry() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.offers_published.inc()
    assert b"proxima_node_offers_published_total 1.0" in first.render()
    assert b"proxima_node_offers_published_total 0.0" in second.render()
    assert not any(name.startswith("proxima_node") for name in REGISTRY._names_to_collectors)


def test_negative_earnings_are_refused(metrics: NodeMetrics) -> None:
    with pytest.raises(ValueError, match="negative"):
        metrics.earned("escrow", -1)


def test_render_matches_what_is_served(metrics: NodeMetrics) -> None:
    metrics.stake_wei.set(42)
    host, port = metrics.serve("127.0.0.1", 0)
    served = _scrape(host, port)
    rendered = {f.name: f.samples for f in text_string_to_metric_families(metrics.render().decode())}
    assert served["proxima_node_stake_wei"] == rendered["proxima_node_stake_wei"]


def test_close_stops_the_server_and_frees_the_port(metrics: NodeMetrics) -> None:
    host, port = metrics.serve("127.0.0.1", 0)
    _scrape(host, port)
    metrics.close()
    assert metrics.address is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2)
    metrics.close()  # idempotent
    assert metrics.serve("127.0.0.1", port) == ("127.0.0.1", port)  # the same port can be bound again


def test_serving_twice_is_refused(metrics: NodeMetrics) -> None:
    metrics.serve("127.0.0.1", 0)
    with pytest.raises(MetricsError, match="already serving"):
        metrics.serve("127.0.0.1", 0)


def test_a_busy_port_is_reported(metrics: NodeMetrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.serve("127.0.0.1", port)
    assert metrics.address is None


def test_an_unresolvable_host_is_reported(metrics: NodeMetrics) -> None:
    with pytest.raises(MetricsError, match="cannot resolve"):
        metrics.serve("no-such-host.invalid", 0)


def test_context_manager_closes(metrics: NodeMetrics) -> None:
    with NodeMetrics() as scoped:
        host, port = scoped.serve("127.0.0.1", 0)
        _scrape(host, port)
    assert scoped.address is None
