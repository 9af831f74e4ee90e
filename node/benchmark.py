"""Measured throughput of this machine: float32 GEMM (FLOP/s) and memory copy bandwidth (bytes/s).

The node advertises and attests only what it measured: :func:`run_benchmark` is the one producer of
:class:`BenchmarkResult`, whose figures must be the medians of its samples (the model checks it), so no code
path can attest a made-up number without also making up every sample.

On the CPU the kernels are numpy's (its BLAS uses every core); on a GPU they are torch's, timed with CUDA
events. torch is imported only for ``device="cuda"``. Each product is spot-checked against a float64
reference, so a broken device fails the benchmark instead of advertising speed it does not compute with.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proxima.node.errors import NodeError
from proxima.node.hardware import Device, probe_cpu
from proxima.sdk.eip712 import Measurement

__all__ = [
    "METHOD_VERSION",
    "BenchmarkError",
    "BenchmarkPlan",
    "BenchmarkResult",
    "Progress",
    "benchmark_id_for",
    "plan_for",
    "run_benchmark",
]

log = logging.getLogger(__name__)

METHOD_VERSION = 1
"""Version of the measuring method; part of every benchmark id, bumped whenever the method changes."""

Progress = Callable[[str, float], None]
"""Called as ``progress(stage, fraction)`` after each sample; stage is ``"gemm"`` or ``"bandwidth"``."""

_UINT64_MAX = 2**64 - 1
_MIB = 2**20
_CHECKED_ENTRIES = 16


class BenchmarkError(NodeError):
    """The benchmark cannot run on the requested device, or a result is inconsistent.

    Args:
        problem: What went wrong.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"benchmark failed: {problem}")


@dataclass(frozen=True)
class BenchmarkPlan:
    """What one benchmark run measures.

    Attributes:
        gemm_n: Size of the square float32 matrices multiplied.
        gemm_inner: Products per timed sample (several on a GPU, where one is too short to time well).
        gemm_repeats: Timed GEMM samples.
        copy_bytes: Size of the buffer copied for the bandwidth figure.
        copy_repeats: Timed copy samples.
    """

    gemm_n: int
    gemm_inner: int
    gemm_repeats: int
    copy_bytes: int
    copy_repeats: int


_PLANS: dict[tuple[Device, bool], BenchmarkPlan] = {
    # (device, quick): quick takes ~0.2-0.5 s on a small CPU; the full CPU run a few seconds.
    ("cpu", True): BenchmarkPlan(
        gemm_n=1024, gemm_inner=1, gemm_repeats=5, copy_bytes=64 * _MIB, copy_repeats=5
    ),
    ("cpu", False): BenchmarkPlan(
        gemm_n=2048, gemm_inner=1, gemm_repeats=9, copy_bytes=256 * _MIB, copy_repeats=9
    ),
    ("cuda", True): BenchmarkPlan(
        gemm_n=4096, gemm_inner=5, gemm_repeats=10, copy_bytes=256 * _MIB, copy_repeats=10
    ),
    ("cuda", False): BenchmarkPlan(
        gemm_n=8192, gemm_inner=5, gemm_repeats=20, copy_bytes=1024 * _MIB, copy_repeats=20
    ),
}


def plan_for(device: Device, *, quick: bool = False) -> BenchmarkPlan:
    """The plan :func:`run_benchmark` follows for ``device``.

    Raises:
        BenchmarkError: If the device is not ``"cpu"`` or ``"cuda"``.
    """
    try:
        return _PLANS[(device, quick)]
    except KeyError:
        raise BenchmarkError(f"unknown device {device!r}; expected 'cpu' or 'cuda'") from None


def benchmark_id_for(device: Device, device_name: str, plan: BenchmarkPlan) -> bytes:
    """The 32-byte id of a benchmark: keccak of its canonical description.

    Two results have the same id exactly when they measured the same thing (method version, device kind and
    model, matrix size, products per sample, copy size), so their figures can be compared.
    """
    description = {
        "method": "proxima-gemm-fp32+copy",
        "version": METHOD_VERSION,
        "device": device,
        "device_name": device_name,
        "gemm": {"dtype": "float32", "n": plan.gemm_n, "inner": plan.gemm_inner},
        "copy_bytes": plan.copy_bytes,
    }
    return keccak(json.dumps(description, sort_keys=True, separators=(",", ":")).encode())


class BenchmarkResult(BaseModel):
    """One benchmark run's samples and figures.

    Attributes:
        method_version: :data:`METHOD_VERSION` of the run.
        device: ``"cpu"`` or ``"cuda"``.
        device_name: CPU or GPU model measured.
        gemm_n: Matrix size of the GEMM.
        gemm_inner: Products per GEMM sample.
        copy_bytes: Buffer size of the copy.
        gemm_samples: FLOP/s of each timed sample.
        bandwidth_samples: Bytes/s (read + written) of each timed copy.
        gemm_flops: Median of ``gemm_samples``, FLOP/s (as attested, uint64).
        mem_bandwidth: Median of ``bandwidth_samples``, bytes/s (as attested, uint64).
        benchmark_id: :func:`benchmark_id_for` of the above.
        measured_at: When the run finished (UTC).
        duration_seconds: Wall time of the run.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, ser_json_bytes="hex", val_json_bytes="hex"
    )

    method_version: int
    device: Device
    device_name: str = Field(min_length=1)
    gemm_n: int = Field(ge=1)
    gemm_inner: int = Field(ge=1)
    copy_bytes: int = Field(ge=1)
    gemm_samples: tuple[float, ...] = Field(min_length=1)
    bandwidth_samples: tuple[float, ...] = Field(min_length=1)
    gemm_flops: int = Field(gt=0, le=_UINT64_MAX)
    mem_bandwidth: int = Field(gt=0, le=_UINT64_MAX)
    benchmark_id: bytes = Field(min_length=32, max_length=32)
    measured_at: datetime
    duration_seconds: float = Field(ge=0)

    @model_validator(mode="after")
    def _check_consistent(self) -> BenchmarkResult:
        if any(not s > 0 for s in (*self.gemm_samples, *self.bandwidth_samples)):
            raise ValueError("every sample must be a positive rate")
        if self.gemm_flops != _median(self.gemm_samples):
            raise ValueError(f"gemm_flops {self.gemm_flops} is not the median of gemm_samples")
        if self.mem_bandwidth != _median(self.bandwidth_samples):
            raise ValueError(f"mem_bandwidth {self.mem_bandwidth} is not the median of bandwidth_samples")
        plan = BenchmarkPlan(self.gemm_n, self.gemm_inner, 1, self.copy_bytes, 1)
        if self.method_version != METHOD_VERSION:
            raise ValueError(f"method_version {self.method_version} is not the current {METHOD_VERSION}")
        if self.benchmark_id != benchmark_id_for(self.device, self.device_name, plan):
            raise ValueError("benchmark_id does not match the described benchmark")
        return self

    @property
    def gemm_spread(self) -> float:
        """``(max - min) / median`` of the GEMM samples (0 for one sample)."""
        return (max(self.gemm_samples) - min(self.gemm_samples)) / self.gemm_flops

    @property
    def bandwidth_spread(self) -> float:
        """``(max - min) / median`` of the copy samples."""
        return (max(self.bandwidth_samples) - min(self.bandwidth_samples)) / self.mem_bandwidth

    def measurement(self) -> Measurement:
        """The figures as the EIP-712 :class:`~proxima.sdk.eip712.Measurement` an attestation batch holds."""
        return Measurement(
            benchmark_id=self.benchmark_id, gemm_flops=self.gemm_flops, mem_bandwidth=self.mem_bandwidth
        )

    def save(self, path: Path) -> None:
        """Write the result as JSON (atomically), for :meth:`load` at the next start."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as err:
            raise BenchmarkError(f"cannot write {path}: {err}") from err

    @classmethod
    def load(cls, path: Path) -> BenchmarkResult:
        """Read a result written by :meth:`save`, re-checking that it is consistent.

        Raises:
            BenchmarkError: If the file is missing, unreadable, or not a consistent result of the current
                method version.
        """
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as err:
            raise BenchmarkError(f"cannot read {path}: {err}") from err
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
            )
            raise BenchmarkError(f"{path} is not a valid benchmark result: {problems}") from err


def run_benchmark(
    device: Device = "cpu", *, quick: bool = False, progress: Progress | None = None
) -> BenchmarkResult:
    """Measure GEMM throughput and copy bandwidth on ``device``.

    Args:
        device: ``"cpu"`` (numpy) or ``"cuda"`` (torch, the current CUDA device).
        quick: A short run (~0.2-0.5 s on a small CPU) with smaller sizes; it has its own benchmark id.
        progress: Called after each sample with the stage and the fraction of it done.

    Returns:
        The samples and their medians.

    Raises:
        BenchmarkError: If the device cannot be used or computes wrong products.
    """
    plan = plan_for(device, quick=quick)
    started = time.perf_counter()
    log.info("benchmark started", extra={"device": device, "quick": quick})
    if device == "cuda":
        name, gemm, bandwidth = _run_cuda(plan, progress)
    else:
        name = probe_cpu().model
        gemm = _cpu_gemm(plan, progress)
        bandwidth = _cpu_copy(plan, progress)
    result = BenchmarkResult(
        method_version=METHOD_VERSION,
        device=device,
        device_name=name,
        gemm_n=plan.gemm_n,
        gemm_inner=plan.gemm_inner,
        copy_bytes=plan.copy_bytes,
        gemm_samples=tuple(gemm),
        bandwidth_samples=tuple(bandwidth),
        gemm_flops=_median(gemm),
        mem_bandwidth=_median(bandwidth),
        benchmark_id=benchmark_id_for(device, name, plan),
        measured_at=datetime.now(UTC),
        duration_seconds=time.perf_counter() - started,
    )
    log.info(
        "benchmark done",
        extra={
            "device": device,
            "device_name": name,
            "gflops": round(result.gemm_flops / 1e9, 1),
            "gemm_spread": round(result.gemm_spread, 3),
            "gbytes_per_s": round(result.mem_bandwidth / 1e9, 1),
            "bandwidth_spread": round(result.bandwidth_spread, 3),
            "seconds": round(result.duration_seconds, 2),
        },
    )
    return result


def _median(samples: tuple[float, ...] | list[float]) -> int:
    return int(statistics.median(samples))


def _report(progress: Progress | None, stage: Literal["gemm", "bandwidth"], done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done / total)


def _cpu_gemm(plan: BenchmarkPlan, progress: Progress | None) -> list[float]:
    n = plan.gemm_n
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    for _ in range(2):  # warm-up: BLAS thread pool start, page faults on c
        np.matmul(a, b, out=c)
    _check_product(a, b, c, rng)
    samples = []
    for i in range(plan.gemm_repeats):
        t0 = time.perf_counter()
        for _ in range(plan.gemm_inner):
            np.matmul(a, b, out=c)
        elapsed = time.perf_counter() - t0
        samples.append(2 * n**3 * plan.gemm_inner / elapsed)
        _report(progress, "gemm", i + 1, plan.gemm_repeats)
    _check_product(a, b, c, rng)
    return samples


def _cpu_copy(plan: BenchmarkPlan, progress: Progress | None) -> list[float]:
    src = np.full(plan.copy_bytes, 7, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: page faults on dst
    samples = []
    for i in range(plan.copy_repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        elapsed = time.perf_counter() - t0
        samples.append(2 * src.nbytes / elapsed)
        _report(progress, "bandwidth", i + 1, plan.copy_repeats)
    if dst[-1] != 7 or dst[0] != 7:
        raise BenchmarkError("the copied buffer does not hold the source's bytes")
    return samples


def _check_product(a: Any, b: Any, c: Any, rng: np.random.Generator) -> None:
    """Compare random entries of ``c = a @ b`` (numpy arrays) with a float64 reference."""
    n = a.shape[0]
    rows, cols = rng.integers(0, n, _CHECKED_ENTRIES), rng.integers(0, n, _CHECKED_ENTRIES)
    _check_entries(a[rows], b[:, cols], c[rows, cols], "CPU")


def _check_entries(a_rows: Any, b_cols: Any, c_entries: Any, where: str) -> None:
    """``c_entries[i]`` must be ``a_rows[i] . b_cols[:, i]`` up to float32 rounding."""
    a64, b64 = a_rows.astype(np.float64), b_cols.astype(np.float64)
    expected = np.einsum("ij,ji->i", a64, b64)
    scale = np.einsum("ij,ji->i", np.abs(a64), np.abs(b64))
    error = np.abs(c_entries.astype(np.float64) - expected)
    if not np.all(error <= 1e-4 * scale + 1e-6):
        worst = int(np.argmax(error / (scale + 1e-6)))
        raise BenchmarkError(
            f"wrong matrix product on the {where}: got {float(c_entries[worst])}, expected {expected[worst]}"
        )


def _run_cuda(plan: BenchmarkPlan, progress: Progress | None) -> tuple[str, list[float], list[float]]:
    try:
        import torch
    except ImportError as err:
        raise BenchmarkError("device 'cuda' needs torch, which is not installed") from err
    if torch.version.cuda is None or not torch.cuda.is_available():
        raise BenchmarkError(
            f"device 'cuda' requested but torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}) cannot use a GPU here"
        )
    index = torch.cuda.current_device()
    name = str(torch.cuda.get_device_name(index))
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # true fp32, not TF32: the figure is fp32 GEMM
    try:
        gemm = _cuda_gemm(torch, plan, progress)
        bandwidth = _cuda_copy(torch, plan, progress)
    except torch.cuda.OutOfMemoryError as err:
        raise BenchmarkError(f"not enough memory on {name} for the benchmark: {err}") from err
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.cuda.empty_cache()
    return name, gemm, bandwidth


def _cuda_gemm(torch: Any, plan: BenchmarkPlan, progress: Progress | None) -> list[float]:
    n = plan.gemm_n
    generator = torch.Generator(device="cuda").manual_seed(0)
    a = torch.rand((n, n), dtype=torch.float32, device="cuda", generator=generator)
    b = torch.rand((n, n), dtype=torch.float32, device="cuda", generator=generator)
    c = torch.empty((n, n), dtype=torch.float32, device="cuda")
    for _ in range(2):  # warm-up: cuBLAS handle and kernel selection
        torch.mm(a, b, out=c)
    torch.cuda.synchronize()
    rng = np.random.default_rng(0)
    _check_cuda_product(torch, a, b, c, rng)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for i in range(plan.gemm_repeats):
        start.record()
        for _ in range(plan.gemm_inner):
            torch.mm(a, b, out=c)
        end.record()
        end.synchronize()
        samples.append(2 * n**3 * plan.gemm_inner / (start.elapsed_time(end) / 1e3))
        _report(progress, "gemm", i + 1, plan.gemm_repeats)
    _check_cuda_product(torch, a, b, c, rng)
    return samples


def _check_cuda_product(torch: Any, a: Any, b: Any, c: Any, rng: np.random.Generator) -> None:
    """Spot-check entries of ``c = a @ b`` computed on the GPU against a float64 product on the host."""
    n = a.shape[0]
    rows = torch.as_tensor(rng.integers(0, n, _CHECKED_ENTRIES), device=a.device)
    cols = torch.as_tensor(rng.integers(0, n, _CHECKED_ENTRIES), device=a.device)
    a_rows = a.index_select(0, rows).cpu().numpy()
    b_cols = b.index_select(1, cols).cpu().numpy()
    _check_entries(a_rows, b_cols, c[rows, cols].cpu().numpy(), "GPU")


def _cuda_copy(torch: Any, plan: BenchmarkPlan, progress: Progress | None) -> list[float]:
    src = torch.full((plan.copy_bytes,), 7, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for i in range(plan.copy_repeats):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        samples.append(2 * plan.copy_bytes / (start.elapsed_time(end) / 1e3))
        _report(progress, "bandwidth", i + 1, plan.copy_repeats)
    if int(dst[-1].item()) != 7 or int(dst[0].item()) != 7:
        raise BenchmarkError("the copied GPU buffer does not hold the source's bytes")
    return samples
