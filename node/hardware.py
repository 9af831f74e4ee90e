"""What this machine has: CPU, memory and NVIDIA GPUs (through NVML), as a frozen :class:`HardwareProfile`.

The probe never fails for lack of a GPU: without the NVIDIA driver (no ``libnvidia-ml``), or when NVML
reports an error, the profile is CPU-only and the reason is logged. Nothing here imports torch; whether the
installed torch can use CUDA is asked only by :func:`select_device`, and only when NVML saw a GPU.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from proxima.node.errors import NodeError

__all__ = [
    "CpuInfo",
    "Device",
    "GpuInfo",
    "HardwareError",
    "HardwareProfile",
    "parse_cpuinfo",
    "probe_cpu",
    "probe_gpus",
    "probe_hardware",
    "read_gpus",
    "select_device",
]

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
"""Where work runs."""

_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")


class HardwareError(NodeError):
    """The requested device cannot be used on this machine.

    Args:
        problem: What is missing.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CpuInfo(_Frozen):
    """The machine's processors.

    Attributes:
        model: Marketing name (``AMD EPYC 9654 96-Core Processor``), or the architecture if unknown.
        architecture: ``x86_64``, ``aarch64``, ...
        physical_cores: Physical cores over all sockets (equal to ``logical_threads`` where the kernel
            does not tell the topology).
        logical_threads: Logical CPUs (hardware threads).
        memory_bytes: Total system memory.
    """

    model: str = Field(min_length=1)
    architecture: str
    physical_cores: int = Field(ge=1)
    logical_threads: int = Field(ge=1)
    memory_bytes: int = Field(gt=0)


class GpuInfo(_Frozen):
    """One NVIDIA GPU as NVML reports it.

    Attributes:
        index: NVML index (the order CUDA uses unless ``CUDA_DEVICE_ORDER`` says otherwise).
        name: Model name (``NVIDIA H200``).
        uuid: Stable identifier (``GPU-...``).
        memory_bytes: Total device memory.
        compute_capability: CUDA compute capability ``(major, minor)``, if NVML reports it.
    """

    index: int = Field(ge=0)
    name: str = Field(min_length=1)
    uuid: str
    memory_bytes: int = Field(ge=0)
    compute_capability: tuple[int, int] | None = None


class HardwareProfile(_Frozen):
    """Everything the node knows about its machine.

    Attributes:
        cpu: Processors and memory.
        gpus: NVIDIA GPUs NVML sees (empty without the driver).
        driver_version: NVIDIA driver version, when NVML is present.
        cuda_driver_version: Highest CUDA version the driver supports (``"12.4"``), when NVML reports it.
        cuda_available: NVML sees at least one GPU (the driver works; whether torch can use it is
            :func:`select_device`'s question).
    """

    cpu: CpuInfo
    gpus: tuple[GpuInfo, ...] = ()
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cuda_available: bool = False

    def summary(self) -> str:
        """One line for logs and the CLI: ``2 x NVIDIA H200 (139.8 GiB); AMD EPYC (16 cores, 125.6 GiB)``."""
        cpu = f"{self.cpu.model} ({self.cpu.physical_cores} cores, {_gib(self.cpu.memory_bytes)})"
        if not self.gpus:
            return cpu
        names = sorted({g.name for g in self.gpus})
        gpus = ", ".join(
            f"{sum(g.name == n for g in self.gpus)} x {n} "
            f"({_gib(next(g.memory_bytes for g in self.gpus if g.name == n))})"
            for n in names
        )
        return f"{gpus}; {cpu}"


def probe_hardware() -> HardwareProfile:
    """Probe CPU, memory and NVIDIA GPUs; never raises for a missing GPU or driver.

    Returns:
        The profile (CPU-only when NVML is missing or fails).
    """
    cpu = probe_cpu()
    gpus, driver, cuda = probe_gpus()
    profile = HardwareProfile(
        cpu=cpu,
        gpus=gpus,
        driver_version=driver,
        cuda_driver_version=cuda,
        cuda_available=bool(gpus),
    )
    log.info("hardware probed", extra={"hardware": profile.summary(), "gpus": len(gpus)})
    return profile


def probe_cpu() -> CpuInfo:
    """Processor model, cores, threads and memory of this machine."""
    logical = os.cpu_count() or 1
    model, physical = None, None
    try:
        model, physical = parse_cpuinfo(_CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError as err:
        log.debug("no /proc/cpuinfo", extra={"error": str(err)})
    model = model or platform.processor() or platform.machine() or "unknown"
    return CpuInfo(
        model=model,
        architecture=platform.machine() or "unknown",
        physical_cores=min(physical or logical, logical),
        logical_threads=logical,
        memory_bytes=_total_memory(),
    )


def parse_cpuinfo(text: str) -> tuple[str | None, int | None]:
    """The CPU model name and physical core count in a ``/proc/cpuinfo`` text.

    Args:
        text: The file's content.

    Returns:
        ``(model, physical cores)``; either is ``None`` when the text does not say (ARM kernels often
        omit the topology and the model name).
    """
    model: str | None = None
    cores: set[tuple[str, str]] = set()
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "core id" in block:
                cores.add((block.get("physical id", "0"), block["core id"]))
            block = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        block[key] = value
        if model is None and value and key in ("model name", "Model", "Hardware", "cpu model"):
            model = value
    return model, (len(cores) or None)


def _total_memory() -> int:
    try:
        for line in _MEMINFO.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    except (OSError, ValueError, IndexError) as err:
        log.debug("no /proc/meminfo", extra={"error": str(err)})
    return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))


def probe_gpus() -> tuple[tuple[GpuInfo, ...], str | None, str | None]:
    """The NVIDIA GPUs through NVML; empty when the library or driver is missing or fails.

    Returns:
        ``(gpus, driver version, CUDA driver version)``.
    """
    try:
        import pynvml
    except ImportError as err:  # nvidia-ml-py is a dependency, but a broken install must not stop the node
        log.info("NVML bindings not installed; CPU only", extra={"error": str(err)})
        return (), None, None
    try:
        return read_gpus(pynvml)
    except pynvml.NVMLError as err:
        log.info("no NVIDIA GPU through NVML; CPU only", extra={"error": str(err)})
        return (), None, None


def read_gpus(nvml: ModuleType) -> tuple[tuple[GpuInfo, ...], str | None, str | None]:
    """Read every GPU through an NVML binding module (``pynvml``).

    Initialises NVML and always shuts it down again. A query that a GPU or driver does not support (compute
    capability on old drivers) leaves that field empty instead of failing.

    Args:
        nvml: The ``pynvml`` module.

    Returns:
        ``(gpus, driver version, CUDA driver version)``.

    Raises:
        pynvml.NVMLError: If NVML cannot start (no library, no driver, no permission).
    """
    nvml.nvmlInit()
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _optional(nvml, lambda: _cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion())))
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            capability = _optional(nvml, lambda h=handle: nvml.nvmlDeviceGetCudaComputeCapability(h))
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    compute_capability=(
                        (int(capability[0]), int(capability[1])) if capability is not None else None
                    ),
                )
            )
        return tuple(gpus), driver, cuda
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as err:
            log.debug("nvmlShutdown failed", extra={"error": str(err)})


def select_device(requested: Literal["auto", "cpu", "cuda"], profile: HardwareProfile) -> Device:
    """The device to run workloads on.

    ``auto`` is ``cuda`` when NVML sees a GPU and the installed torch was built with CUDA and can use it,
    else ``cpu``.

    Args:
        requested: The configuration's ``device``.
        profile: The probed hardware.

    Returns:
        ``"cpu"`` or ``"cuda"``.

    Raises:
        HardwareError: If ``cuda`` was requested and cannot be used (the message says why).
    """
    if requested == "cpu":
        return "cpu"
    problem = None if profile.cuda_available else "no NVIDIA GPU found through NVML"
    if problem is None:
        problem = _torch_cuda_problem()
    if problem is None:
        return "cuda"
    if requested == "cuda":
        raise HardwareError(f"device 'cuda' requested but {problem}")
    log.info("using the CPU", extra={"reason": problem})
    return "cpu"


def _torch_cuda_problem() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed (install the 'embed' extra with a CUDA build of torch)"
    if torch.version.cuda is None:
        return f"the installed torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the GPU"
    return None


def _optional(nvml: ModuleType, query: Any) -> Any:
    try:
        return query()
    except nvml.NVMLError as err:
        log.debug("NVML query not supported", extra={"error": str(err)})
        return None


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cuda_version(encoded: int) -> str:
    """NVML's CUDA version number (12040) as text (``"12.4"``)."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
