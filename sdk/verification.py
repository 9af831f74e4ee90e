"""Checks of workload results: Freivalds' test for matmul, comparisons for embeddings and canaries.

Everything here is pure (numpy and :mod:`proxima.sdk.workloads`); clients, the gateway and verifiers use the
same functions, so they agree on what "correct" means.

**Freivalds' test** (:func:`freivalds`). A provider claims ``C = A @ B`` with ``A`` of shape ``(m, k)`` and
``B`` of shape ``(k, n)``. For a random ``r`` in ``{0, 1}^n``, ``C r`` must equal ``A (B r)``; that costs
``O(mk + kn + mn)`` per round instead of the ``O(mkn)`` of the product. All rounds run at once as one
``n x rounds`` matrix ``R``, in float64 whatever the operands' dtype, so the check's own rounding is
negligible next to the provider's.

Floats are not bitwise reproducible across BLAS libraries and GPUs, so the comparison has a tolerance. It is
derived from the result dtype's unit roundoff ``u = eps / 2``, the inner dimension ``k`` and the data:

* per row ``i`` a *scale* ``s_i = sqrt(sum_j ((A o A)(B o B))_ij + (C o C)_ij)`` (``o`` is the elementwise
  product; computed as ``(A o A)((B o B) 1)`` in ``O(mk + kn)``), which is the root-sum-square of every
  product term and every result element of the row;
* row ``i`` passes when ``|(C R)_i - (A (B R))_i| <= TIGHT_FACTOR * u * sqrt(k) * s_i`` in every round.

Rounding errors of an honest dot product behave like a random walk (Higham and Mary, "A New Approach to
Probabilistic Rounding Error Analysis", SIAM J. Sci. Comput. 2019), so an honest row lands well inside
that bound on any BLAS or GPU that accumulates in the result's precision (TF32 and other reduced-precision
accumulation are not float32 and fail). Inputs with unusual structure (identical columns, all-positive data
summed naively) can make an honest provider's errors add up coherently along a row and exceed the tight
bound, so a row that fails it is not rejected yet: it is *recomputed* in float64 (``O(kn)`` per row, worst
rows first) and each element compared with the rigorous probabilistic bound
``RECHECK_LAMBDA * u * sqrt(k + 2) * sum_p |a_ip b_pj| + u |c_ij|``. The result fails only when a recomputed
element is outside it (or a row holds NaN or infinity where the exact product is finite). A wrong matrix is
therefore rejected after recomputing a single row; an honest result on adversarially structured inputs at
worst costs a recomputation of its suspect rows.

**False acceptance.** If some element of ``C - A B`` is off by more than twice the row's tolerance, one
round accepts with probability at most 1/2 (flipping ``r_j`` changes ``(C r)_i - (A B r)_i`` by that
element, so at most one of ``r`` and its flip can pass), and ``rounds`` independent rounds accept with
probability at most ``2**-rounds``. Smaller deviations are within what floating point allows honest
providers. The generator must be unpredictable to the provider: pass nothing (fresh OS entropy) in
production, a seeded generator only in tests.

Detection limit, for scale: float32, ``m = k = n = 4096``, standard normal operands (typical ``|c_ij|`` about
64): a row passes the tight test when its difference is below about 0.07, and a recomputed element may be off
by about 0.08, so an element off by more than about 0.1 (0.15% of a typical element) is caught; one off by 1%
of its own value is caught unless it is itself below about a sixth of the typical magnitude. Float64 results
are limited by the check's own float64 rounding: deviations above about 1e-8 of a typical element are caught.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from proxima.sdk.errors import SdkError
from proxima.sdk.workloads import (
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    WorkloadSpecError,
    check_output,
    matmul_operands,
)

__all__ = [
    "CANARY_RTOL",
    "CHECK_LAMBDA",
    "DEFAULT_ROUNDS",
    "MAX_ROUNDS",
    "RECHECK_LAMBDA",
    "TIGHT_FACTOR",
    "CheckMethod",
    "CheckResult",
    "VerificationError",
    "compare_embeddings",
    "compare_to_expected",
    "freivalds",
    "verify_matmul",
    "verify_output",
]

CheckMethod = Literal["freivalds", "redundant", "canary", "recompute"]
"""How a result was checked."""

DEFAULT_ROUNDS: Final = 16
"""Freivalds rounds unless told otherwise: false acceptance <= 2**-16 (about 1.5e-5)."""
MAX_ROUNDS: Final = 256
"""Most Freivalds rounds one call runs (2**-256 is far below any other risk)."""
TIGHT_FACTOR: Final = 3.0
"""Multiple of ``u * sqrt(k) * scale`` a row's Freivalds difference may reach before it is recomputed."""
CHECK_LAMBDA: Final = 4.0
"""Higham-Mary parameter of the bound on the check's own float64 rounding (matters for float64 results)."""
RECHECK_LAMBDA: Final = 8.0
"""Higham-Mary confidence parameter of the elementwise bound: holds with probability >= 1 - 2k exp(-32)."""
CANARY_RTOL: Final = {"float32": 1e-4, "float64": 1e-10}
"""Default relative tolerance of a canary answer, per result dtype, relative to the row's largest element."""


class VerificationError(SdkError, ValueError):
    """A check was called with bad arguments (shapes that do not agree, an unknown workload, rounds < 1).

    A *wrong result* is not an error: it is a :class:`CheckResult` with ``passed`` false.
    """


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        passed: Whether the result was accepted.
        method: ``"freivalds"``, ``"redundant"`` (two providers compared), ``"canary"`` (compared with an
            answer committed in advance) or ``"recompute"`` (compared with a recomputation).
        detail: What was checked, or what failed and by how much.
        rounds: Freivalds rounds run (0 for the other methods).
        elapsed_s: Wall-clock seconds the check took.
    """

    passed: bool
    method: CheckMethod
    detail: str
    rounds: int = 0
    elapsed_s: float = 0.0


def _unit_roundoff(dtype: np.dtype[Any]) -> float:
    return float(np.finfo(dtype).eps) / 2.0


def _as_matrix(name: str, x: NDArray[Any]) -> NDArray[Any]:
    array = np.asarray(x)
    if array.ndim != 2:
        raise VerificationError(f"{name} must be 2-D, got shape {array.shape}")
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        raise VerificationError(f"{name} must be float32 or float64, got {array.dtype}")
    return array


def _check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise VerificationError(f"rounds must be an integer in 1..{MAX_ROUNDS}, got {rounds!r}")


def freivalds(
    a: NDArray[Any],
    b: NDArray[Any],
    c: NDArray[Any],
    *,
    rounds: int = DEFAULT_ROUNDS,
    rng: np.random.Generator | None = None,
) -> CheckResult:
    """Check ``c == a @ b`` with Freivalds' test (see the module docstring for the tolerance).

    Args:
        a: ``(m, k)`` float32 or float64.
        b: ``(k, n)``, same dtype as ``a``.
        c: ``(m, n)``, the claimed product (its dtype sets the tolerance).
        rounds: Independent random vectors; false acceptance <= ``2**-rounds``.
        rng: Source of the random vectors; ``None`` draws fresh OS entropy (use that against providers).

    Returns:
        ``passed`` true when every row agrees within tolerance (possibly after recomputing suspect rows);
        ``detail`` names the first wrong element otherwise.

    Raises:
        VerificationError: If the shapes do not agree, a dtype is not float32/float64, ``a`` and ``b`` differ
            in dtype or ``rounds`` is outside ``1..MAX_ROUNDS``.
    """
    _check_rounds(rounds)
    a = _as_matrix("a", a)
    b = _as_matrix("b", b)
    c = _as_matrix("c", c)
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise VerificationError(f"a {a.shape} and b {b.shape} do not agree (k={k} vs {k2})")
    if c.shape != (m, n):
        raise VerificationError(f"c has shape {c.shape}, a @ b has shape {(m, n)}")
    if a.dtype != b.dtype:
        raise VerificationError(f"a ({a.dtype}) and b ({b.dtype}) differ in dtype")
    generator = rng if rng is not None else np.random.default_rng()
    started = time.perf_counter()
    passed, detail = _freivalds(a, b, c, rounds, generator)
    return CheckResult(
        passed=passed,
        method="freivalds",
        detail=detail,
        rounds=rounds,
        elapsed_s=time.perf_counter() - started,
    )


_BLOCK_ELEMENTS: Final = 1 << 20
"""Elements of one float64 block (8 MiB): matrices are converted block by block into one reused buffer."""
_RECHECK_BATCH: Final = 16
"""Suspect rows recomputed together (one matrix product per batch)."""


@dataclass
class _RowSums:
    """Per-row products of a matrix ``X`` (computed in float64): ``X R``, ``(X o X) v``, ``|X| w``."""

    plain: NDArray[np.float64]
    squares: NDArray[np.float64]
    absolute: NDArray[np.float64]
    finite: NDArray[np.bool_]


def _row_sums(
    x: NDArray[Any], r: NDArray[np.float64], v: NDArray[np.float64], w: NDArray[np.float64]
) -> _RowSums:
    """``X R``, ``(X o X) v`` and ``|X| w`` in float64, block by block (no full float64 copy of ``X``).

    Non-finite elements count as zero; ``finite`` says which rows had none.
    """
    rows, cols = x.shape
    step = max(1, _BLOCK_ELEMENTS // max(cols, 1))
    buffer = np.empty((min(step, rows), cols), dtype=np.float64)
    out = _RowSums(
        plain=np.empty((rows, r.shape[1])),
        squares=np.empty(rows),
        absolute=np.empty(rows),
        finite=np.empty(rows, dtype=np.bool_),
    )
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        block = buffer[: stop - start]
        np.copyto(block, x[start:stop], casting="safe")
        finite = np.isfinite(block)
        out.finite[start:stop] = finite.all(axis=1)
        if not out.finite[start:stop].all():
            block[~finite] = 0.0
        out.plain[start:stop] = block @ r
        out.squares[start:stop] = np.einsum("ij,ij,j->i", block, block, v)
        np.abs(block, out=block)
        out.absolute[start:stop] = block @ w
    return out


def _freivalds(
    a: NDArray[Any], b: NDArray[Any], c: NDArray[Any], rounds: int, rng: np.random.Generator
) -> tuple[bool, str]:
    m, k = a.shape
    n = b.shape[1]
    u = _unit_roundoff(c.dtype)
    shape = f"{m}x{k} @ {k}x{n} {c.dtype}"
    r = rng.integers(0, 2, size=(n, rounds), dtype=np.int8).astype(np.float64)
    ones_n = np.ones(n)
    b_sums = _row_sums(b, r, ones_n, ones_n)
    a_sums = _row_sums(a, b_sums.plain, b_sums.squares, b_sums.absolute)
    if not (a_sums.finite.all() and b_sums.finite.all()):
        raise VerificationError("operands a and b must be finite (no NaN or infinity)")
    c_sums = _row_sums(c, r, ones_n, ones_n)
    diff = np.abs(c_sums.plain - a_sums.plain).max(axis=1)
    # Honest rounding of the provider (random-walk scale) ...
    tolerance = TIGHT_FACTOR * u * math.sqrt(k) * np.sqrt(a_sums.squares + c_sums.squares)
    # ... plus the check's own float64 rounding of C R and A (B R) (Higham-Mary; it matters for float64 only).
    u64 = _unit_roundoff(np.dtype(np.float64))
    tolerance += (
        CHECK_LAMBDA
        * u64
        * (math.sqrt(n) * c_sums.absolute + (math.sqrt(k) + math.sqrt(n)) * a_sums.absolute)
    )
    tolerance += float(np.finfo(c.dtype).tiny) * k
    ratio = diff / tolerance
    suspect = np.flatnonzero((ratio > 1.0) | ~c_sums.finite)
    worst = float(ratio.max()) if m else 0.0
    if suspect.size == 0:
        return True, (
            f"{rounds} rounds on {shape}: every row within tolerance "
            f"(largest difference {worst:.3g} of the tolerance)"
        )
    # Worst rows first: a wrong element shows up as the largest ratio, so a wrong result costs one batch.
    order = suspect[np.argsort(-np.where(c_sums.finite[suspect], ratio[suspect], np.inf), kind="stable")]
    for start in range(0, order.size, _RECHECK_BATCH):
        rows = order[start : start + _RECHECK_BATCH]
        problem = _recheck_rows(rows, a, b, c, u)
        if problem is not None:
            i, what = problem
            return False, (
                f"{rounds} rounds on {shape}: row {i} differs by {ratio[i]:.3g} times the tolerance; "
                f"recomputed, {what}"
            )
    return True, (
        f"{rounds} rounds on {shape}: {suspect.size} row(s) beyond the tight tolerance "
        f"(largest {worst:.3g}) were recomputed and every element is within the rounding bound"
    )


def _recheck_rows(
    rows: NDArray[np.intp], a: NDArray[Any], b: NDArray[Any], c: NDArray[Any], u: float
) -> tuple[int, str] | None:
    """Recompute ``rows`` of ``a @ b`` in float64; the first row (in order) with a wrong element and what."""
    k, n = b.shape
    a_rows = a[rows].astype(np.float64)
    abs_a_rows = np.abs(a_rows)
    exact = np.zeros((rows.size, n))
    magnitude = np.zeros((rows.size, n))
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    buffer = np.empty((min(step, k), n), dtype=np.float64)
    for start in range(0, k, step):
        stop = min(start + step, k)
        block = buffer[: stop - start]
        np.copyto(block, b[start:stop], casting="safe")
        exact += a_rows[:, start:stop] @ block
        np.abs(block, out=block)
        magnitude += abs_a_rows[:, start:stop] @ block
    bound = RECHECK_LAMBDA * u * math.sqrt(k + 2) * magnitude + u * np.abs(exact)
    bound += float(np.finfo(c.dtype).tiny) * k
    with np.errstate(over="ignore", invalid="ignore"):
        exact_in_dtype = exact.astype(c.dtype).astype(np.float64)
    got = c[rows].astype(np.float64)
    finite = np.isfinite(got)
    # A non-finite element is right only where the exact value overflows the dtype the same way.
    bad_nonfinite = ~finite & ~(np.isinf(got) & (got == exact_in_dtype))
    with np.errstate(invalid="ignore"):
        excess = np.where(finite, np.abs(got - exact) - bound, -np.inf)
    for index, i in enumerate(rows):
        if bad_nonfinite[index].any():
            j = int(np.flatnonzero(bad_nonfinite[index])[0])
            return int(i), f"c[{i}, {j}] = {got[index, j]} where a @ b = {exact[index, j]:.9g}"
        j = int(np.argmax(excess[index]))
        if excess[index, j] > 0:
            off = abs(got[index, j] - exact[index, j])
            return int(i), (
                f"c[{i}, {j}] = {got[index, j]:.9g} but a @ b = {exact[index, j]:.9g} (off by {off:.3g}, "
                f"rounding allows {bound[index, j]:.3g})"
            )
    return None


def verify_matmul(
    inp: MatmulInput,
    out: MatmulOutput,
    *,
    rounds: int = DEFAULT_ROUNDS,
    rng: np.random.Generator | None = None,
) -> CheckResult:
    """Freivalds' test of a matmul job's output against its input (seeded or explicit operands).

    Raises:
        VerificationError: If ``out`` does not have the shape and dtype ``inp`` asks for, or ``rounds`` is
            outside ``1..MAX_ROUNDS``.
    """
    try:
        check_output("matmul", inp, out)
    except WorkloadSpecError as err:
        raise VerificationError(str(err)) from err
    a, b = matmul_operands(inp)
    return freivalds(a, b, out.c.to_array(), rounds=rounds, rng=rng)


def compare_embeddings(x: EmbedOutput, y: EmbedOutput, *, atol: float = 1e-3) -> CheckResult:
    """Compare two providers' embeddings of the same texts element by element (method ``"redundant"``).

    Args:
        x: One answer.
        y: Another answer to the same input.
        atol: Largest absolute difference allowed in any element (rows are unit vectors, so ``1e-3`` is far
            above the differences between CPU and GPU runs of the same model and far below what another
            model or text gives).

    Raises:
        VerificationError: If the two are from different models or have different shapes, or ``atol`` is not
            a finite non-negative number.
    """
    started = time.perf_counter()
    _check_tolerance("atol", atol)
    if x.model != y.model:
        raise VerificationError(f"embeddings from different models: {x.model!r} and {y.model!r}")
    if x.embeddings.shape != y.embeddings.shape:
        raise VerificationError(f"embedding shapes differ: {x.embeddings.shape} and {y.embeddings.shape}")
    passed, detail = _compare_embedding_arrays(x.embeddings.to_array(), y.embeddings.to_array(), atol)
    return CheckResult(passed, "redundant", detail, elapsed_s=time.perf_counter() - started)


def _compare_embedding_arrays(x: NDArray[Any], y: NDArray[Any], atol: float) -> tuple[bool, str]:
    delta = np.abs(x.astype(np.float64) - y.astype(np.float64))
    row, col = np.unravel_index(int(np.argmax(delta)), delta.shape)
    worst = float(delta[row, col])
    if worst > atol:
        cosine = float(x[row].astype(np.float64) @ y[row].astype(np.float64))
        return False, (
            f"embedding {row} differs: element {col} by {worst:.3g} (atol {atol:g}); cosine similarity "
            f"{cosine:.6f}"
        )
    return True, f"{x.shape[0]} embeddings agree within atol {atol:g} (largest difference {worst:.3g})"


def _check_tolerance(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise VerificationError(f"{name} must be a finite number >= 0, got {value!r}")


def compare_to_expected(
    workload: str,
    output: BaseModel,
    expected: BaseModel,
    *,
    atol: float = 0.0,
    rtol: float | None = None,
) -> CheckResult:
    """Compare a provider's answer with the answer committed in advance (a canary; method ``"canary"``).

    ``matmul``: element ``(i, j)`` passes when ``|out - expected| <= atol + rtol * max_j |expected_ij|``
    (relative to the row's largest element, as rounding errors scale with the row, not with each element);
    ``rtol`` defaults to :data:`CANARY_RTOL` for the dtype. ``embed``: as :func:`compare_embeddings` with
    ``atol`` (default ``1e-3`` when ``atol`` is 0).

    Raises:
        VerificationError: If the workload is unknown, the outputs are not its output model, or they differ in
            shape, dtype or model.
    """
    started = time.perf_counter()
    _check_tolerance("atol", atol)
    if rtol is not None:
        _check_tolerance("rtol", rtol)
    if workload == "matmul":
        if not isinstance(output, MatmulOutput) or not isinstance(expected, MatmulOutput):
            raise VerificationError("matmul canary needs two MatmulOutput values")
        passed, detail = _compare_matrices(output, expected, atol, rtol)
    elif workload == "embed":
        if not isinstance(output, EmbedOutput) or not isinstance(expected, EmbedOutput):
            raise VerificationError("embed canary needs two EmbedOutput values")
        if output.model != expected.model or output.embeddings.shape != expected.embeddings.shape:
            raise VerificationError(
                f"embed answer {output.model} {output.embeddings.shape} does not match the expected "
                f"{expected.model} {expected.embeddings.shape}"
            )
        passed, detail = _compare_embedding_arrays(
            output.embeddings.to_array(), expected.embeddings.to_array(), atol or 1e-3
        )
    else:
        raise VerificationError(f"no canary comparison for workload {workload!r}")
    return CheckResult(passed, "canary", detail, elapsed_s=time.perf_counter() - started)


def _compare_matrices(
    output: MatmulOutput, expected: MatmulOutput, atol: float, rtol: float | None
) -> tuple[bool, str]:
    if output.c.shape != expected.c.shape or output.c.dtype != expected.c.dtype:
        raise VerificationError(
            f"answer is {output.c.dtype} {output.c.shape}, expected {expected.c.dtype} {expected.c.shape}"
        )
    relative = CANARY_RTOL[expected.c.dtype] if rtol is None else rtol
    got = output.c.to_array().astype(np.float64)
    want = expected.c.to_array().astype(np.float64)
    allowed = atol + relative * np.abs(want).max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        excess = np.where(np.isfinite(got), np.abs(got - want) - allowed, np.inf)
    i, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[i, j] > 0:
        return False, (
            f"c[{i}, {j}] = {got[i, j]:.9g}, expected {want[i, j]:.9g} "
            f"(allowed difference {float(allowed[i, 0]):.3g})"
        )
    return True, f"{got.shape[0]}x{got.shape[1]} answer equals the expected one within rtol {relative:g}"


def verify_output(
    workload: str, inp: BaseModel, out: BaseModel, *, rounds: int = DEFAULT_ROUNDS
) -> CheckResult | None:
    """The workload's own cheap check of a result, when it has one.

    ``matmul``: Freivalds (:func:`verify_matmul`, fresh randomness). ``embed``: ``None``, it has no check
    cheaper than running it again (use redundant execution and :func:`compare_embeddings`).

    Raises:
        VerificationError: If the workload is unknown, the values are not its models, or the output does not
            have the shape the input asks for.
    """
    if workload == "matmul":
        if not isinstance(inp, MatmulInput) or not isinstance(out, MatmulOutput):
            raise VerificationError("matmul needs a MatmulInput and a MatmulOutput")
        return verify_matmul(inp, out, rounds=rounds)
    if workload == "embed":
        try:
            check_output("embed", inp, out)
        except WorkloadSpecError as err:
            raise VerificationError(str(err)) from err
        return None
    raise VerificationError(f"no verifier for workload {workload!r}")
