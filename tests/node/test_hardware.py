"""The hardware probe on the machine running the tests, checked against independent sources.

The GPU figures are compared with the kernel driver's own list (``/proc/driver/nvidia/gpus``): on a machine
without the NVIDIA driver both are empty; on a GPU machine the same tests check NVML's answers.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pynvml
import pytest
from pydantic import ValidationError

from proxima.node.hardware import (
    CpuInfo,
    GpuInfo,
    HardwareError,
    HardwareProfile,
    parse_cpuinfo,
    probe_cpu,
    probe_gpus,
    probe_hardware,
    read_gpus,
    select_device,
)

_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")


def _driver_gpu_count() -> int:
    """GPUs the NVIDIA kernel driver registered (0 without the driver)."""
    return len(list(_DRIVER_GPUS.iterdir())) if _DRIVER_GPUS.is_dir() else 0


def _lscpu() -> dict[str, str]:
    if shutil.which("lscpu") is None:
        return {}
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, env={"LC_ALL": "C"}).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def test_probe_reports_this_machine_cpu_and_memory() -> None:
    cpu = probe_hardware().cpu
    assert cpu.logical_threads == os.cpu_count()
    assert 1 <= cpu.physical_cores <= cpu.logical_threads
    assert cpu.memory_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert cpu.architecture == platform.machine()
    assert cpu.model


def test_cpu_model_and_cores_agree_with_lscpu() -> None:
    info = _lscpu()
    cpu = probe_cpu()
    if "Model name" in info:
        assert cpu.model == info["Model name"]
    if "Core(s) per socket" in info and "Socket(s)" in info:
        assert cpu.physical_cores == int(info["Core(s) per socket"]) * int(info["Socket(s)"])


def test_gpus_agree_with_the_kernel_driver(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    profile = probe_hardware()
    assert len(profile.gpus) == _driver_gpu_count()
    assert profile.cuda_available == bool(profile.gpus)
    if not profile.gpus:
        assert profile.driver_version is None
        assert any("CPU only" in r.getMessage() for r in caplog.records), "the reason is logged"
    for i, gpu in enumerate(profile.gpus):
        assert gpu.index == i
        assert gpu.name
        assert gpu.uuid.startswith("GPU-")
        assert gpu.memory_bytes > 2**30
        assert gpu.compute_capability is None or gpu.compute_capability >= (3, 0)
    if profile.gpus:
        assert profile.driver_version
        driver_file = Path("/proc/driver/nvidia/version")
        if driver_file.exists():
            assert profile.driver_version in driver_file.read_text()


def test_read_gpus_with_the_real_nvml_binding() -> None:
    if _driver_gpu_count() == 0:
        with pytest.raises(pynvml.NVMLError):
            read_gpus(pynvml)
    else:
        gpus, driver, _ = read_gpus(pynvml)
        assert len(gpus) == _driver_gpu_count()
        assert driver


def test_probe_gpus_never_raises() -> None:
    gpus, driver, cuda = probe_gpus()
    assert len(gpus) == _driver_gpu_count()
    if not Path("/proc/driver/nvidia").exists():
        assert (gpus, driver, cuda) == ((), None, None)
    else:
        assert driver


def test_select_device_follows_what_the_machine_can_do() -> None:
    import torch

    profile = probe_hardware()
    usable = profile.cuda_available and torch.version.cuda is not None and torch.cuda.is_available()
    assert select_device("cpu", profile) == "cpu"
    assert select_device("auto", profile) == ("cuda" if usable else "cpu")
    if usable:
        assert select_device("cuda", profile) == "cuda"
    else:
        with pytest.raises(HardwareError, match="device 'cuda' requested but"):
            select_device("cuda", profile)


def test_cuda_request_without_gpu_names_the_reason() -> None:
    profile = HardwareProfile(cpu=probe_cpu())
    with pytest.raises(HardwareError, match="no NVIDIA GPU found through NVML"):
        select_device("cuda", profile)
    assert select_device("auto", profile) == "cpu"


def test_profile_is_frozen_and_strict() -> None:
    profile = probe_hardware()
    with pytest.raises(ValidationError):
        profile.cuda_available = True  # type: ignore[misc]
    with pytest.raises(ValidationError):
        CpuInfo(model="x", architecture="x86_64", physical_cores=0, logical_threads=1, memory_bytes=1)
    with pytest.raises(ValidationError):
        GpuInfo(index=0, name="", uuid="GPU-1", memory_bytes=1)


def test_summary_names_cpu_and_gpus() -> None:
    cpu = CpuInfo(
        model="AMD EPYC 9654",
        architecture="x86_64",
        physical_cores=96,
        logical_threads=192,
        memory_bytes=768 * 2**30,
    )
    h200 = [GpuInfo(index=i, name="NVIDIA H200", uuid=f"GPU-{i}", memory_bytes=141 * 2**30) for i in range(2)]
    assert HardwareProfile(cpu=cpu).summary() == "AMD EPYC 9654 (96 cores, 768.0 GiB)"
    profile = HardwareProfile(cpu=cpu, gpus=tuple(h200), cuda_available=True)
    assert profile.summary() == "2 x NVIDIA H200 (141.0 GiB); AMD EPYC 9654 (96 cores, 768.0 GiB)"
    assert probe_cpu().model in probe_hardware().summary()


# Excerpts of real /proc/cpuinfo files (trimmed to the fields the parser reads).
_TWO_SOCKETS_WITH_SMT = "\n\n".join(
    f"processor\t: {cpu}\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
    f"physical id\t: {socket}\nsiblings\t: 4\ncore id\t\t: {core}\ncpu cores\t: 2"
    for cpu, (socket, core) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)] * 2)
)
_RASPBERRY_PI = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 1
BogoMIPS\t: 108.00
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03111
Model\t\t: Raspberry Pi 4 Model B Rev 1.1
"""
_GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nCPU part\t: 0xd0c\n\nprocessor\t: 1\nBogoMIPS\t: 243.75\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_TWO_SOCKETS_WITH_SMT, ("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", 4)),
        (_RASPBERRY_PI, ("BCM2835", None)),
        (_GRAVITON, (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_cpuinfo(text: str, expected: tuple[str | None, int | None]) -> None:
    assert parse_cpuinfo(text) == expected
