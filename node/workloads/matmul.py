"""The ``matmul`` workload: dense ``C = A @ B`` in float32 or float64, numpy on CPU, torch on CUDA.

Clients verify results with Freivalds' check against full-precision products, so the CUDA path keeps
float32 at IEEE precision (``torch.set_float32_matmul_precision("highest")``: no TF32).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from proxima.node.workloads.base import (
    Device,
    Workload,
    WorkloadCost,
    WorkloadExecutionError,
    WorkloadUnavailableError,
)
from proxima.sdk.workloads import (
    MatmulInput,
    MatmulOutput,
    Tensor,
    billing_units,
    matmul_operands,
    result_hash,
)

__all__ = ["MatmulWorkload", "matmul_torch"]

log = logging.getLogger(__name__)


def matmul_torch(a: NDArray[Any], b: NDArray[Any], device: str) -> NDArray[Any]:
    """``a @ b`` computed by torch on ``device`` (``"cuda"`` in service; any torch device works).

    The operands are copied to the device, multiplied in their own dtype and the product copied back.
    """
    import torch

    with torch.inference_mode():
        ta = torch.tensor(a, device=device)
        tb = torch.tensor(b, device=device)
        product = torch.matmul(ta, tb).cpu().numpy()
    return np.asarray(product)


class MatmulWorkload(Workload):
    """Dense matrix products. Inputs and limits: ``proxima.sdk.workloads.MatmulInput``.

    Args:
        device: ``"cpu"`` (numpy, float32/float64) or ``"cuda"`` (torch; needs a CUDA build and a GPU).
    """

    name = "matmul"
    input_model = MatmulInput
    output_model = MatmulOutput

    def __init__(self, device: Device = "cpu") -> None:
        super().__init__(device)
        self._ready = False
        self._lock = threading.Lock()

    def estimate(self, inp: BaseModel) -> WorkloadCost:
        """Units from ``billing_units``; ``2*m*k*n`` flops; operand bytes in, result bytes out."""
        inp = self._expect(inp, MatmulInput)
        m, k, n = inp.dims
        itemsize = np.dtype(inp.element_type).itemsize
        return WorkloadCost(
            units=billing_units(self.name, inp),
            flops=2 * m * k * n,
            bytes_in=(m * k + k * n) * itemsize,
            bytes_out=m * n * itemsize,
        )

    def load(self) -> None:
        """On CUDA: import torch, check a GPU is visible and pin float32 products to IEEE precision.

        Raises:
            WorkloadUnavailableError: If torch is not installed or sees no CUDA device.
        """
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self.device == "cuda":
                try:
                    import torch
                except ImportError as err:
                    raise WorkloadUnavailableError(self.name, self.device, "torch is not installed") from err
                if not torch.cuda.is_available():
                    raise WorkloadUnavailableError(self.name, self.device, "torch sees no CUDA device")
                torch.set_float32_matmul_precision("highest")
                log.info(
                    "matmul on cuda",
                    extra={"workload": self.name, "gpu": torch.cuda.get_device_name(0)},
                )
            self._ready = True

    def execute(self, inp: BaseModel) -> MatmulOutput:
        """Compute ``C = A @ B`` (operands from ``matmul_operands``: the same ones a verifier regenerates).

        Raises:
            InvalidInputError: If ``inp`` is not a ``MatmulInput``.
            WorkloadUnavailableError: If the device is unusable.
            WorkloadExecutionError: If the device fails (for example out of memory).
        """
        inp = self._expect(inp, MatmulInput)
        self.load()
        started = time.perf_counter()
        a, b = matmul_operands(inp)
        if self.device == "cuda":
            try:
                c = matmul_torch(a, b, "cuda")
            except RuntimeError as err:  # torch reports CUDA failures (OOM included) as RuntimeError
                raise WorkloadExecutionError(self.name, f"cuda matmul failed: {err}") from err
        else:
            c = np.matmul(a, b)
        out = MatmulOutput(c=Tensor.from_array(c))
        log.debug(
            "matmul done",
            extra={
                "workload": self.name,
                "device": self.device,
                "dims": inp.dims,
                "dtype": inp.element_type,
                "seconds": round(time.perf_counter() - started, 6),
            },
        )
        return out

    def result_hash(self, out: BaseModel) -> bytes:
        """``proxima.sdk.workloads.result_hash("matmul", out)``: keccak over a header and C's raw bytes."""
        return result_hash(self.name, self._expect(out, MatmulOutput))
