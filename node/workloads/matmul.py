"""The ``matmul`` workload: dense ``C = A @ B`` in float32 or float64, numpy on CPU, torch on CUDA.

Clients verify results with Freivalds' check against full-precision products, so the CUDA path keeps
float32 at IEEE precision (``torch.set_float32_matmul_precision("highest")``: no TF32).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from proxima.node.workloads.base import (
    Device,
    InvalidInputError,
    Workload,
    WorkloadCost,
    WorkloadExecutionError,
    WorkloadUnavailableError,
)
from proxima.sdk.workloads import (
    MATMUL_MAX_DIM,
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
        max_dim: Largest matrix dimension this node serves (at most the protocol's ``MATMUL_MAX_DIM``).
    """

    name = "matmul"
    input_model = MatmulInput
    output_model = MatmulOutput

    def __init__(self, device: Device = "cpu", *, max_dim: int = MATMUL_MAX_DIM) -> None:
        super().__init__(device)
        self._ready = False
        self._lock = threading.Lock()
        self.max_dim = MATMUL_MAX_DIM
        self.limit_dimensions(max_dim)

    def limit_dimensions(self, max_dim: int) -> None:
        """Serve only products whose dimensions are all at most ``max_dim`` (the node's config).

        Raises:
            ValueError: If ``max_dim`` is not in ``1..MATMUL_MAX_DIM``.
        """
        if isinstance(max_dim, bool) or not isinstance(max_dim, int) or not 1 <= max_dim <= MATMUL_MAX_DIM:
            raise ValueError(f"max_dim must be an integer in 1..{MATMUL_MAX_DIM}, got {max_dim!r}")
        self.max_dim = max_dim

    def parse(self, payload: Mapping[str, Any]) -> BaseModel:
        """Validate the input and the node's own dimension limit.

        Raises:
            InvalidInputError: Naming the invalid field, or the dimension above ``max_dim``.
        """
        inp = self._expect(super().parse(payload), MatmulInput)
        for name, value in zip(("m", "k", "n"), inp.dims, strict=True):
            if value > self.max_dim:
                raise InvalidInputError(
                    self.name, f"{name}: {value} exceeds this node's largest dimension {self.max_dim}"
                )
        return inp

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
