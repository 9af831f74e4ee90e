"""Fault injection: a node that returns wrong matmul results on purpose, for demos and tests.

With ``[faults] wrong_matmul_rate = r`` (0 < r <= 1) in ``node.toml`` the node perturbs the product ``C`` of
a share ``r`` of the matmul jobs it runs, and signs its receipt for the perturbed result: it behaves as a
real dishonest provider would, and everything a client or verifier does about it (Freivalds' check, the
rerun elsewhere, the fault proof and the slash) runs for real. Which jobs are falsified is decided from
``[faults] seed`` and the job id alone (keccak), so a run is reproducible and a retried job gets the same
(stored) answer. Off by default; a node with it on logs a warning at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from eth_utils.crypto import keccak
from numpy.typing import NDArray

from proxima.node.errors import NodeError
from proxima.sdk.workloads import MatmulOutput, Tensor

__all__ = ["PERTURBED_ELEMENTS", "FaultInjectionError", "FaultInjector"]

log = logging.getLogger(__name__)

PERTURBED_ELEMENTS: Final = 4
"""Elements of ``C`` changed in a falsified product (in distinct columns where ``C`` has enough)."""

_SCALE: Final = 2.0**64


class FaultInjectionError(NodeError):
    """Fault injection is configured with values out of range."""


@dataclass(frozen=True)
class FaultInjector:
    """Decides which matmul jobs to falsify and falsifies them.

    Args:
        wrong_matmul_rate: Share of matmul jobs answered wrongly, 0..1.
        seed: Mixed with each job id into the decision, so different nodes (or runs) cheat on different jobs.

    Raises:
        FaultInjectionError: If the rate is outside 0..1 or the seed is negative.
    """

    wrong_matmul_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        rate = self.wrong_matmul_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise FaultInjectionError(f"wrong_matmul_rate must be a number in 0..1, got {rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise FaultInjectionError(f"seed must be an integer in 0..2**64-1, got {self.seed!r}")

    @property
    def active(self) -> bool:
        """Whether any job can be falsified."""
        return self.wrong_matmul_rate > 0.0

    def _draw(self, job_id: bytes, purpose: bytes) -> bytes:
        return keccak(b"proxima-fault:" + purpose + self.seed.to_bytes(8, "big") + job_id)

    def falsifies(self, workload: str, job_id: bytes) -> bool:
        """Whether the job ``job_id`` of ``workload`` gets a wrong answer (deterministic)."""
        if workload != "matmul" or not self.active:
            return False
        draw = int.from_bytes(self._draw(job_id, b"decide")[:8], "big") / _SCALE
        return draw < self.wrong_matmul_rate

    def perturb(self, job_id: bytes, output: MatmulOutput) -> MatmulOutput:
        """``output`` with one element in each of :data:`PERTURBED_ELEMENTS` distinct columns of ``C`` (all
        columns when fewer) moved by a clearly wrong amount.

        Each chosen element gets ``(1 + max|C|) * (1 + u)`` added, ``u`` in [0, 1): far beyond any float
        rounding. A Freivalds round with ``r`` in {0,1}^n misses the change only when ``r`` is 0 on every
        perturbed column, probability ``2**-4`` per round with four columns.
        """
        c: NDArray[Any] = output.c.to_array().copy()
        if c.size == 0:
            return output
        rows, cols = c.shape
        rng = np.random.default_rng(int.from_bytes(self._draw(job_id, b"where")[:8], "big"))
        columns = rng.choice(cols, size=min(PERTURBED_ELEMENTS, cols), replace=False)
        magnitude = 1.0 + float(np.max(np.abs(c)))
        chosen = []
        for j in sorted(int(col) for col in columns):
            i = int(rng.integers(rows))
            c[i, j] += magnitude * (1.0 + float(rng.random()))
            chosen.append((i, j))
        log.warning(
            "fault injection: matmul result falsified",
            extra={"job_id": "0x" + job_id.hex(), "elements": chosen},
        )
        return MatmulOutput(c=Tensor.from_array(c))

    def apply(self, workload: str, job_id: bytes, output: Any) -> Any:
        """The output to sign: ``output`` itself, or a falsified copy when this job is one to cheat on."""
        if isinstance(output, MatmulOutput) and self.falsifies(workload, job_id):
            return self.perturb(job_id, output)
        return output
