"""Freivalds' test, embedding and canary comparisons (proxima.sdk.verification)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from proxima.sdk.verification import (
    CANARY_RTOL,
    CheckResult,
    VerificationError,
    compare_embeddings,
    compare_to_expected,
    freivalds,
    verify_matmul,
    verify_output,
)
from proxima.sdk.workloads import (
    EMBED_DIM,
    EmbedInput,
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    Tensor,
    matmul_operands,
)

SHAPES = [(1, 1, 1), (3, 5, 7), (64, 64, 64), (200, 31, 90), (17, 1500, 3), (300, 300, 1)]


def _operands(seed: int, m: int, k: int, n: int, dtype: str, kind: str = "normal") -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    if kind == "positive":
        return rng.random((m, k)).astype(dtype), rng.random((k, n)).astype(dtype)
    return rng.lognormal(0, 2, (m, k)).astype(dtype), rng.lognormal(0, 2, (k, n)).astype(dtype)


def _sequential_product(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """A BLAS unlike numpy's: one rank-1 update per k, each rounded to the dtype (naive summation order)."""
    c = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    for p in range(a.shape[1]):
        c = (c + np.outer(a[:, p], b[p])).astype(a.dtype)
    return c


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES)
def test_freivalds_acceptsHonestNumpyProducts(shape: tuple[int, int, int], dtype: str) -> None:
    a, b = _operands(1, *shape, dtype)
    result = freivalds(a, b, a @ b, rounds=16, rng=np.random.default_rng(2))
    assert result.passed, result.detail
    assert (result.method, result.rounds) == ("freivalds", 16)
    assert result.elapsed_s >= 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["normal", "positive", "lognormal"])
def test_freivalds_acceptsOtherSummationOrders(kind: str, dtype: str) -> None:
    a, b = _operands(3, 40, 700, 30, dtype, kind)
    # Naive sequential accumulation, and the exact product rounded once: both honest answers.
    for c in (_sequential_product(a, b), (a.astype(np.float64) @ b.astype(np.float64)).astype(dtype)):
        result = freivalds(a, b, c, rng=np.random.default_rng(4))
        assert result.passed, result.detail


def test_freivalds_acceptsStructuredInputsAfterRecomputingSuspectRows() -> None:
    # Identical columns of positive data summed naively: honest errors add up coherently along each row,
    # beyond the tight bound; the recomputation clears them.
    rng = np.random.default_rng(5)
    a = rng.random((32, 3000)).astype(np.float32)
    b = np.ones((3000, 64), dtype=np.float32) * rng.random((3000, 1)).astype(np.float32)
    result = freivalds(a, b, _sequential_product(a, b), rng=np.random.default_rng(6))
    assert result.passed, result.detail


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_freivalds_catchesOneElementOffByOnePercentOverSeeds(dtype: str) -> None:
    a, b = _operands(7, 120, 256, 80, dtype)
    c = a @ b
    caught = 0
    rng = np.random.default_rng(8)
    for _ in range(40):
        wrong = c.copy()
        i, j = int(rng.integers(120)), int(rng.integers(80))
        # one percent of the element, at least one percent of the row's typical magnitude
        wrong[i, j] += 0.01 * max(abs(float(c[i, j])), float(np.abs(c[i]).mean()))
        result = freivalds(a, b, wrong, rounds=16, rng=rng)
        if not result.passed:
            caught += 1
            assert f"c[{i}, {j}]" in result.detail
    assert caught == 40


def test_freivalds_rejectsRandomMatrixAndNaN() -> None:
    a, b = _operands(9, 50, 60, 70, "float32")
    rng = np.random.default_rng(10)
    random_answer = rng.standard_normal((50, 70)).astype(np.float32)
    assert not freivalds(a, b, random_answer, rng=rng).passed
    with_nan = a @ b
    with_nan[3, 4] = np.nan
    result = freivalds(a, b, with_nan, rng=rng)
    assert not result.passed
    assert "c[3, 4] = nan" in result.detail


def test_freivalds_oneRoundAcceptsAWrongRowHalfTheTime() -> None:
    # One wrong element, one round: accepted exactly when r_j = 0, i.e. with probability 1/2.
    a, b = _operands(11, 20, 20, 20, "float64")
    wrong = a @ b
    wrong[5, 6] += 1.0
    rng = np.random.default_rng(12)
    accepted = sum(freivalds(a, b, wrong, rounds=1, rng=rng).passed for _ in range(400))
    assert 150 < accepted < 250


def test_freivalds_isDeterministicWithASeededGenerator() -> None:
    a, b = _operands(13, 30, 40, 50, "float32")
    wrong = a @ b
    wrong[0, 0] += 5.0
    runs = [freivalds(a, b, wrong, rounds=1, rng=np.random.default_rng(seed)) for seed in range(12)] * 2
    again = [freivalds(a, b, wrong, rounds=1, rng=np.random.default_rng(seed)) for seed in range(12)] * 2
    assert [r.passed for r in runs] == [r.passed for r in again]
    assert [r.detail for r in runs] == [r.detail for r in again]


@pytest.mark.parametrize("rounds", [0, -1, 257, True, 2.0])
def test_freivalds_rejectsBadRounds(rounds: Any) -> None:
    a, b = _operands(14, 4, 4, 4, "float32")
    with pytest.raises(VerificationError, match="rounds"):
        freivalds(a, b, a @ b, rounds=rounds)


def test_freivalds_rejectsShapeAndDtypeMismatches() -> None:
    a, b = _operands(15, 4, 5, 6, "float32")
    with pytest.raises(VerificationError, match="do not agree"):
        freivalds(a, b.T, a @ b)
    with pytest.raises(VerificationError, match=r"c has shape \(6, 4\)"):
        freivalds(a, b, (a @ b).T)
    with pytest.raises(VerificationError, match="2-D"):
        freivalds(a, b, (a @ b).ravel())
    with pytest.raises(VerificationError, match="differ in dtype"):
        freivalds(a, b.astype(np.float64), a @ b)
    with pytest.raises(VerificationError, match="float32 or float64"):
        freivalds(a.astype(np.int32), b.astype(np.int32), (a @ b).astype(np.int32))
    infinite = a.copy()
    infinite[0, 0] = np.inf
    with pytest.raises(VerificationError, match="finite"):
        freivalds(infinite, b, a @ b)


def test_verifyMatmul_checksSeededAndExplicitJobs() -> None:
    seeded = MatmulInput(seed=2**63 + 5, m=40, k=30, n=20, dtype="float32")
    a, b = matmul_operands(seeded)
    honest = MatmulOutput(c=Tensor.from_array(a @ b))
    assert verify_matmul(seeded, honest, rng=np.random.default_rng(1)).passed
    wrong_c = a @ b
    wrong_c[39, 19] *= 1.5
    assert not verify_matmul(seeded, MatmulOutput(c=Tensor.from_array(wrong_c))).passed

    explicit = MatmulInput(
        a=Tensor.from_array(a.astype(np.float64)), b=Tensor.from_array(b.astype(np.float64))
    )
    assert verify_matmul(explicit, MatmulOutput(c=Tensor.from_array(a.astype(np.float64) @ b))).passed
    with pytest.raises(VerificationError, match="expected float64"):
        verify_matmul(explicit, honest)
    transposed = MatmulOutput(c=Tensor.from_array((a @ b).T.copy()))
    with pytest.raises(VerificationError, match=r"expected float32 \(40, 20\)"):
        verify_matmul(seeded, transposed)


def _embedding(seed: int, rows: int = 3) -> NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((rows, EMBED_DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _embed_output(vectors: NDArray[Any]) -> EmbedOutput:
    return EmbedOutput(model="all-MiniLM-L6-v2", embeddings=Tensor.from_array(vectors.astype(np.float32)))


def test_compareEmbeddings_toleranceDecides() -> None:
    x = _embedding(1)
    close = x.copy()
    close[1, 7] += 5e-4
    far = x.copy()
    far[2, 9] += 3e-3
    ok = compare_embeddings(_embed_output(x), _embed_output(close))
    assert (ok.passed, ok.method) == (True, "redundant")
    bad = compare_embeddings(_embed_output(x), _embed_output(far))
    assert not bad.passed
    assert "embedding 2" in bad.detail
    assert "element 9" in bad.detail
    assert compare_embeddings(_embed_output(x), _embed_output(far), atol=5e-3).passed
    assert not compare_embeddings(_embed_output(x), _embed_output(_embedding(2))).passed


def test_compareEmbeddings_rejectsMismatchedArguments() -> None:
    with pytest.raises(VerificationError, match="shapes differ"):
        compare_embeddings(_embed_output(_embedding(1, 3)), _embed_output(_embedding(1, 2)))
    with pytest.raises(VerificationError, match="atol"):
        compare_embeddings(_embed_output(_embedding(1)), _embed_output(_embedding(1)), atol=-1.0)
    with pytest.raises(VerificationError, match="atol"):
        compare_embeddings(_embed_output(_embedding(1)), _embed_output(_embedding(1)), atol=float("nan"))


def test_compareToExpected_matmulCanary() -> None:
    a, b = _operands(20, 64, 512, 48, "float32")
    expected = MatmulOutput(c=Tensor.from_array(a @ b))
    other_order = MatmulOutput(c=Tensor.from_array(_sequential_product(a, b)))
    result = compare_to_expected("matmul", other_order, expected)
    assert (result.passed, result.method) == (True, "canary")
    assert f"rtol {CANARY_RTOL['float32']:g}" in result.detail
    wrong = (a @ b).copy()
    wrong[10, 11] += 0.01 * np.abs(wrong[10]).max()
    bad = compare_to_expected("matmul", MatmulOutput(c=Tensor.from_array(wrong)), expected)
    assert not bad.passed
    assert "c[10, 11]" in bad.detail
    assert compare_to_expected("matmul", MatmulOutput(c=Tensor.from_array(wrong)), expected, rtol=0.02).passed
    with pytest.raises(VerificationError, match="expected float32"):
        compare_to_expected("matmul", MatmulOutput(c=Tensor.from_array((a @ b).T.copy())), expected)


def test_compareToExpected_embedAndUnknownWorkload() -> None:
    x = _embed_output(_embedding(3))
    assert compare_to_expected("embed", x, x).passed
    assert not compare_to_expected("embed", _embed_output(_embedding(4)), x).passed
    with pytest.raises(VerificationError, match="no canary comparison"):
        compare_to_expected("sort", x, x)
    with pytest.raises(VerificationError, match="MatmulOutput"):
        compare_to_expected("matmul", x, x)


def test_verifyOutput_perWorkload() -> None:
    seeded = MatmulInput(seed=1, m=8, k=8, n=8, dtype="float64")
    a, b = matmul_operands(seeded)
    result = verify_output("matmul", seeded, MatmulOutput(c=Tensor.from_array(a @ b)), rounds=20)
    assert isinstance(result, CheckResult)
    assert (result.passed, result.rounds) == (True, 20)
    texts = EmbedInput(model="all-MiniLM-L6-v2", texts=["a", "b", "c"])
    assert verify_output("embed", texts, _embed_output(_embedding(1))) is None
    with pytest.raises(VerificationError, match="2 embeddings for 3 texts"):
        verify_output("embed", texts, _embed_output(_embedding(1, 2)))
    with pytest.raises(VerificationError, match="no verifier"):
        verify_output("sort", texts, _embed_output(_embedding(1)))
    with pytest.raises(VerificationError, match="rounds"):
        verify_output("matmul", seeded, MatmulOutput(c=Tensor.from_array(a @ b)), rounds=0)
