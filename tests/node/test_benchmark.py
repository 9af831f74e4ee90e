"""The benchmark: real measurements on this machine (quick mode), and the rules results must follow."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from eth_utils.address import to_checksum_address
from pydantic import ValidationError

from proxima.node.benchmark import (
    METHOD_VERSION,
    BenchmarkError,
    BenchmarkResult,
    _check_product,
    benchmark_id_for,
    plan_for,
    run_benchmark,
)
from proxima.node.hardware import probe_cpu
from proxima.sdk.eip712 import Domain, Measurement


@pytest.fixture(scope="module")
def result() -> BenchmarkResult:
    return run_benchmark("cpu", quick=True)


def test_cpu_figures_are_the_medians_of_the_samples(result: BenchmarkResult) -> None:
    plan = plan_for("cpu", quick=True)
    assert len(result.gemm_samples) == plan.gemm_repeats
    assert len(result.bandwidth_samples) == plan.copy_repeats
    assert result.gemm_flops == int(statistics.median(result.gemm_samples))
    assert result.mem_bandwidth == int(statistics.median(result.bandwidth_samples))
    assert all(s > 0 for s in result.gemm_samples + result.bandwidth_samples)
    assert min(result.gemm_samples) <= result.gemm_flops <= max(result.gemm_samples)
    assert result.gemm_spread >= 0
    assert result.bandwidth_spread >= 0


def test_cpu_result_describes_what_was_measured(result: BenchmarkResult) -> None:
    plan = plan_for("cpu", quick=True)
    assert result.device == "cpu"
    assert result.device_name == probe_cpu().model
    assert (result.gemm_n, result.copy_bytes) == (plan.gemm_n, plan.copy_bytes)
    assert result.method_version == METHOD_VERSION
    assert result.benchmark_id == benchmark_id_for("cpu", result.device_name, plan)
    assert len(result.benchmark_id) == 32
    assert result.duration_seconds > 0


def test_measurement_is_the_attested_form(result: BenchmarkResult) -> None:
    measurement = result.measurement()
    assert measurement == Measurement(
        benchmark_id=result.benchmark_id, gemm_flops=result.gemm_flops, mem_bandwidth=result.mem_bandwidth
    )
    domain = Domain(
        "Proxima Attestations", "1", 31337, to_checksum_address("0x5FbDB2315678afecb367f032d93F642f64180aa3")
    )
    assert len(measurement.digest(domain)) == 32  # fits the EIP-712 uint64 fields


def test_progress_reports_each_sample_of_each_stage() -> None:
    seen: list[tuple[str, float]] = []
    run_benchmark("cpu", quick=True, progress=lambda stage, done: seen.append((stage, done)))
    plan = plan_for("cpu", quick=True)
    gemm = [f for s, f in seen if s == "gemm"]
    copy = [f for s, f in seen if s == "bandwidth"]
    assert gemm == [(i + 1) / plan.gemm_repeats for i in range(plan.gemm_repeats)]
    assert copy == [(i + 1) / plan.copy_repeats for i in range(plan.copy_repeats)]
    assert [s for s, _ in seen] == ["gemm"] * len(gemm) + ["bandwidth"] * len(copy)


def test_benchmark_id_changes_with_what_is_measured() -> None:
    quick, full = plan_for("cpu", quick=True), plan_for("cpu", quick=False)
    ids = {
        benchmark_id_for("cpu", "AMD EPYC", quick),
        benchmark_id_for("cpu", "AMD EPYC", full),
        benchmark_id_for("cpu", "Intel Xeon", quick),
        benchmark_id_for("cuda", "AMD EPYC", quick),
    }
    assert len(ids) == 4
    assert benchmark_id_for("cpu", "AMD EPYC", quick) == benchmark_id_for("cpu", "AMD EPYC", quick)


def test_results_cannot_carry_figures_that_were_not_measured(result: BenchmarkResult) -> None:
    raw = result.model_dump()
    for field, value in [
        ("gemm_flops", result.gemm_flops * 2),
        ("mem_bandwidth", result.mem_bandwidth + 1),
        ("benchmark_id", b"\x00" * 32),
        ("device_name", "NVIDIA H200"),
        ("gemm_n", 4096),
        ("method_version", METHOD_VERSION + 1),
        ("gemm_samples", ()),
        ("gemm_samples", tuple(-s for s in result.gemm_samples)),
    ]:
        with pytest.raises(ValidationError):
            BenchmarkResult.model_validate({**raw, field: value})
    with pytest.raises(ValidationError, match="gemm_flops"):
        BenchmarkResult.model_validate({k: v for k, v in raw.items() if k != "gemm_flops"})


def test_figures_above_uint64_are_refused(result: BenchmarkResult) -> None:
    raw = result.model_dump()
    samples = (2.0**65,) * 3
    with pytest.raises(ValidationError, match="less than or equal"):
        BenchmarkResult.model_validate({**raw, "gemm_samples": samples, "gemm_flops": int(2.0**65)})


def test_save_and_load_round_trip(tmp_path: Path, result: BenchmarkResult) -> None:
    path = tmp_path / "state" / "benchmark.json"
    result.save(path)
    assert BenchmarkResult.load(path) == result
    assert json.loads(path.read_text())["benchmark_id"] == result.benchmark_id.hex()


def test_load_refuses_a_doctored_file(tmp_path: Path, result: BenchmarkResult) -> None:
    path = tmp_path / "benchmark.json"
    result.save(path)
    raw = json.loads(path.read_text())
    raw["gemm_flops"] *= 10
    path.write_text(json.dumps(raw))
    with pytest.raises(BenchmarkError, match="not the median of gemm_samples"):
        BenchmarkResult.load(path)


def test_load_reports_missing_and_garbled_files(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="cannot read"):
        BenchmarkResult.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BenchmarkError, match="not a valid benchmark result"):
        BenchmarkResult.load(tmp_path / "bad.json")


def test_a_wrong_product_fails_the_benchmark() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((64, 64), dtype=np.float32)
    b = rng.random((64, 64), dtype=np.float32)
    _check_product(a, b, a @ b, rng)
    with pytest.raises(BenchmarkError, match="wrong matrix product on the CPU"):
        _check_product(a, b, a @ b * np.float32(1.001), rng)


def test_cuda_runs_only_where_torch_can_use_a_gpu() -> None:
    import torch

    if torch.version.cuda is not None and torch.cuda.is_available():
        result = run_benchmark("cuda", quick=True)
        assert result.device == "cuda"
        assert result.device_name == torch.cuda.get_device_name()
        assert result.gemm_flops > 0
        assert result.mem_bandwidth > 0
        assert torch.get_float32_matmul_precision() == "highest"  # restored
    else:
        with pytest.raises(BenchmarkError, match="device 'cuda' requested but torch"):
            run_benchmark("cuda", quick=True)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(BenchmarkError, match="unknown device 'tpu'"):
        run_benchmark("tpu", quick=True)  # type: ignore[arg-type]
