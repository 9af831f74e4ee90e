"""Workload schemas, the tensor codec and the canonical hashes clients recompute (proxima.sdk.workloads)."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from proxima.sdk.workloads import (
    EMBED_DIM,
    EMBED_MAX_CHARS,
    EMBED_MAX_TEXTS,
    EMBED_MODEL,
    MATMUL_MAX_DIM,
    MATMUL_MAX_EXPLICIT_BYTES,
    TENSOR_MAX_ELEMENTS,
    WORKLOAD_SCHEMAS,
    EmbedInput,
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    Tensor,
    TensorError,
    WorkloadSpecError,
    billing_units,
    canonical_json,
    check_output,
    matmul_operands,
    parse_input,
    parse_output,
    result_hash,
    spec_hash,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def tensor_payload(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    return Tensor.from_array(array).model_dump(mode="json")


def seeded(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"seed": 7, "m": 3, "k": 4, "n": 2, "dtype": "float64"}
    payload.update(changes)
    return payload


def unit_rows(n: int) -> np.ndarray[Any, Any]:
    rows = np.zeros((n, EMBED_DIM), dtype=np.float32)
    rows[np.arange(n), np.arange(n) % EMBED_DIM] = 1.0
    return rows


# --- Tensor codec -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 1, 4), (1, 1, 1, 1)])
def test_tensor_roundTripsValuesShapeAndDtype(dtype: type, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    tensor = Tensor.from_array(array)
    assert tensor.dtype == np.dtype(dtype).name
    assert tensor.shape == shape
    decoded = Tensor.model_validate(json.loads(tensor.model_dump_json())).to_array()
    assert decoded.dtype == dtype
    assert np.array_equal(decoded, array)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype("<f4"), np.dtype(">f4"), np.dtype("<f8"), np.dtype(">f8")]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
        elements={"allow_nan": True, "allow_infinity": True, "allow_subnormal": True},
    )
)
def test_tensor_roundTripsEveryBitThroughJson(array: np.ndarray[Any, Any]) -> None:
    tensor = Tensor.model_validate_json(Tensor.from_array(array).model_dump_json())
    decoded = tensor.to_array()
    assert decoded.shape == array.shape
    assert (
        decoded.astype(array.dtype.newbyteorder("=")).tobytes()
        == array.astype(array.dtype.newbyteorder("=")).tobytes()
    )


def test_tensor_dataIsLittleEndianCOrderWhateverTheArrayLayout() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    little_c = struct.pack("<6d", 0, 1, 2, 3, 4, 5)
    strided = np.arange(12, dtype=np.float64).reshape(2, 6)[:, ::2] / 2
    for variant in (array, np.asfortranarray(array), array.astype(">f8"), strided):
        assert base64.b64decode(Tensor.from_array(variant).data) == little_c


def test_tensor_decodedArrayIsReadOnly() -> None:
    decoded = Tensor.from_array(np.ones((2, 2), dtype=np.float32)).to_array()
    with pytest.raises(ValueError, match="read-only"):
        decoded[0, 0] = 5.0


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((2, 2), dtype=np.int32), "dtype must be float32 or float64"),
        (np.ones((2, 2), dtype=np.float16), "dtype must be float32 or float64"),
        (np.float32(1.0), "1 to 4 dimensions"),
        (np.ones((2, 0), dtype=np.float32), "dimensions must be >= 1"),
        (np.ones((1, 1, 1, 1, 1), dtype=np.float32), "1 to 4 dimensions"),
        (np.broadcast_to(np.float32(0), (TENSOR_MAX_ELEMENTS + 1,)), "more than"),
    ],
)
def test_tensor_fromArray_rejectsUnsupportedArrays(array: Any, match: str) -> None:
    with pytest.raises(TensorError, match=match):
        Tensor.from_array(array)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"dtype": "int32", "shape": [1], "data": b64(bytes(4))}, "dtype"),
        ({"dtype": "float32", "shape": [], "data": ""}, "1 to 4 dimensions"),
        ({"dtype": "float32", "shape": [0, 3], "data": ""}, "dimensions must be >= 1"),
        ({"dtype": "float32", "shape": [2, -1], "data": ""}, "dimensions must be >= 1"),
        ({"dtype": "float32", "shape": [True], "data": b64(bytes(4))}, r"shape\.0"),
        ({"dtype": "float32", "shape": ["1"], "data": b64(bytes(4))}, r"shape\.0"),
        ({"dtype": "float32", "shape": [1.0], "data": b64(bytes(4))}, r"shape\.0"),
        ({"dtype": "float32", "shape": [2**13, 2**12 + 1], "data": ""}, "more than 33554432"),
        ({"dtype": "float32", "shape": [2], "data": b64(bytes(4))}, "needs 8 bytes = 12 characters"),
        ({"dtype": "float64", "shape": [1], "data": b64(bytes(4))}, "needs 8 bytes = 12 characters"),
        ({"dtype": "float32", "shape": [1], "data": "AAA*AA=="}, "not valid base64"),
        ({"dtype": "float32", "shape": [1], "data": "AAAAAB=="}, "not canonical base64"),
        ({"dtype": "float32", "shape": [1], "data": "AAA\nAA=="}, "not valid base64"),
        ({"dtype": "float32", "shape": [1], "data": "AAAAAé=="}, "not valid base64"),
        ({"dtype": "float32", "shape": [1], "data": b64(bytes(4)), "order": "F"}, "order"),
        ({"dtype": "float32", "shape": [1]}, "data"),
    ],
)
def test_tensor_rejectsInvalidEncodings_namingTheProblem(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(WorkloadSpecError, match=match) as info:
        parse_input("matmul", {"a": payload, "b": tensor_payload(np.ones((1, 1), np.float32))})
    assert str(info.value).startswith("invalid matmul input: a")


def test_tensor_toArray_enforcesTheCallersElementBound() -> None:
    tensor = Tensor.from_array(np.ones((4, 4), dtype=np.float32))
    assert tensor.to_array(max_elements=16).shape == (4, 4)
    with pytest.raises(TensorError, match="16 elements, more than the 15 allowed"):
        tensor.to_array(max_elements=15)


# --- matmul input -------------------------------------------------------------------------------------


def test_matmulInput_acceptsSeededAndExplicitForms() -> None:
    s = parse_input("matmul", seeded())
    assert isinstance(s, MatmulInput)
    assert (s.is_seeded, s.dims, s.element_type) == (True, (3, 4, 2), "float64")
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    e = parse_input("matmul", {"a": tensor_payload(a), "b": tensor_payload(b)})
    assert isinstance(e, MatmulInput)
    assert (e.is_seeded, e.dims, e.element_type) == (False, (3, 4, 2), "float32")


def test_matmulInput_acceptsTheLargestDimensions() -> None:
    inp = parse_input("matmul", seeded(m=MATMUL_MAX_DIM, k=MATMUL_MAX_DIM, n=1, dtype="float32"))
    assert isinstance(inp, MatmulInput)
    assert inp.dims == (4096, 4096, 1)


@pytest.mark.parametrize(
    ("changes", "field", "match"),
    [
        ({"m": 0}, "m", "greater than or equal to 1"),
        ({"k": MATMUL_MAX_DIM + 1}, "k", "less than or equal to 4096"),
        ({"n": -3}, "n", "greater than or equal to 1"),
        ({"m": 3.0}, "m", "valid integer"),
        ({"n": "2"}, "n", "valid integer"),
        ({"k": True}, "k", "valid integer"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"seed": 2**64}, "seed", "less than 18446744073709551616"),
        ({"dtype": "float16"}, "dtype", "'float32' or 'float64'"),
        ({"mode": "fast"}, "mode", "Extra inputs are not permitted"),
    ],
)
def test_matmulInput_rejectsOutOfRangeSeededFields(changes: dict[str, Any], field: str, match: str) -> None:
    with pytest.raises(WorkloadSpecError, match=match) as info:
        parse_input("matmul", seeded(**changes))
    assert f"invalid matmul input: {field}: " in str(info.value)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # 4096 * 4096 * 3 elements of A, B and C together exceed the element bound
        ({"m": 4096, "k": 4096, "n": 4096, "dtype": "float32"}, "more than MATMUL_MAX_ELEMENTS"),
        # a 4096 x 4096 float64 result is 128 MiB
        ({"m": 4096, "k": 1, "n": 4096, "dtype": "float64"}, "more than MATMUL_MAX_OUTPUT_BYTES"),
    ],
)
def test_matmulInput_rejectsJobsBeyondTheMemoryBounds(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(WorkloadSpecError, match=match):
        parse_input("matmul", seeded(**changes))


def test_matmulInput_rejectsMissingOrMixedForms() -> None:
    one = tensor_payload(np.ones((2, 2), np.float32))
    with pytest.raises(WorkloadSpecError, match=r"missing: \['k', 'n', 'dtype'\]"):
        parse_input("matmul", {"seed": 1, "m": 2})
    with pytest.raises(WorkloadSpecError, match=r"missing: \['seed', 'm', 'k', 'n', 'dtype'\]"):
        parse_input("matmul", {})
    with pytest.raises(WorkloadSpecError, match=r"not both \(also got \['seed'\]\)"):
        parse_input("matmul", {"a": one, "b": one, "seed": 1})
    with pytest.raises(WorkloadSpecError, match=r"need both a and b \(b missing\)"):
        parse_input("matmul", {"a": one})


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), "do not agree"),
        (np.ones((2, 2), np.float32), np.ones((2, 2), np.float64), r"a.dtype \(float32\) and b.dtype"),
        (np.ones(4, np.float32), np.ones((4, 1), np.float32), r"a.shape must be 2-D"),
        (np.ones((1, 2), np.float32), np.ones((2, 1, 1), np.float32), r"b.shape must be 2-D"),
        (np.ones((MATMUL_MAX_DIM + 1, 1), np.float32), np.ones((1, 1), np.float32), r"a.shape\[0\] = 4097"),
        (np.ones((1, 1), np.float32), np.ones((1, MATMUL_MAX_DIM + 1), np.float32), r"b.shape\[1\] = 4097"),
        (np.array([[1.0, np.nan]], np.float32), np.ones((2, 1), np.float32), "a.data holds NaN or infinite"),
        (np.ones((1, 2), np.float64), np.array([[1.0], [-np.inf]]), "b.data holds NaN or infinite"),
    ],
)
def test_matmulInput_rejectsInconsistentExplicitOperands(
    a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], match: str
) -> None:
    with pytest.raises(WorkloadSpecError, match=match):
        parse_input("matmul", {"a": tensor_payload(a), "b": tensor_payload(b)})


def test_matmulInput_rejectsExplicitOperandsAboveTheByteBound() -> None:
    side = 1449  # two float64 squares of this side are just over 32 MiB
    assert 2 * side * side * 8 > MATMUL_MAX_EXPLICIT_BYTES
    big = Tensor.from_array(np.zeros((side, side)))
    with pytest.raises(ValueError, match="more than MATMUL_MAX_EXPLICIT_BYTES"):
        MatmulInput(a=big, b=big)
    small = Tensor.from_array(np.zeros((1448, 1448)))
    assert MatmulInput(a=small, b=small).dims == (1448, 1448, 1448)


def test_matmulOperands_seededAreTheDocumentedGeneratorDraws() -> None:
    inp = MatmulInput(seed=7, m=3, k=4, n=2, dtype="float64")
    a, b = matmul_operands(inp)
    rng = np.random.default_rng(7)
    assert np.array_equal(a, rng.standard_normal((3, 4)))
    assert np.array_equal(b, rng.standard_normal((4, 2)))
    # Pinned so that a change of numpy's generator or of this definition fails here, not in a verifier.
    assert a[0, 0] == 0.0012301533574825742
    assert b[-1, -1] == -1.289537739784976
    assert keccak(a.tobytes() + b.tobytes()).hex() == (
        "4cc84b4824fb0a34b81845966271cf73e40b31fddc4df9f0c19bf6f423d03c03"
    )
    a32, b32 = matmul_operands(MatmulInput(seed=7, m=3, k=4, n=2, dtype="float32"))
    assert (a32.dtype, b32.dtype, a32.shape, b32.shape) == (np.float32, np.float32, (3, 4), (4, 2))
    assert keccak(a32.tobytes() + b32.tobytes()).hex() == (
        "9bb49cce49cdb851c4624b01a52a79873c39a27eb5252d80d5faff27cd0b248c"
    )


def test_matmulOperands_explicitAreTheSentArrays() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(3, dtype=np.float32).reshape(3, 1)
    got_a, got_b = matmul_operands(MatmulInput(a=Tensor.from_array(a), b=Tensor.from_array(b)))
    assert np.array_equal(got_a, a)
    assert np.array_equal(got_b, b)


def test_matmulOutput_rejectsANon2DResult() -> None:
    with pytest.raises(WorkloadSpecError, match=r"invalid matmul output: c: c.shape must be 2-D"):
        parse_output("matmul", {"c": tensor_payload(np.ones(3, np.float32))})


# --- embed input and output ---------------------------------------------------------------------------


def test_embedInput_acceptsTheBounds() -> None:
    inp = parse_input("embed", {"model": EMBED_MODEL, "texts": ["x" * EMBED_MAX_CHARS] + ["é"] * 255})
    assert isinstance(inp, EmbedInput)
    assert len(inp.texts) == EMBED_MAX_TEXTS
    assert inp.total_chars == EMBED_MAX_CHARS + 255


@pytest.mark.parametrize(
    ("payload", "field", "match"),
    [
        ({"model": "bert-base", "texts": ["a"]}, "model", "'all-MiniLM-L6-v2'"),
        ({"model": EMBED_MODEL, "texts": []}, "texts", "at least 1 item"),
        ({"model": EMBED_MODEL, "texts": ["a"] * (EMBED_MAX_TEXTS + 1)}, "texts", "at most 256 items"),
        ({"model": EMBED_MODEL, "texts": ["a", ""]}, "texts.1", "at least 1 character"),
        (
            {"model": EMBED_MODEL, "texts": ["x" * (EMBED_MAX_CHARS + 1)]},
            "texts.0",
            "at most 4096 characters",
        ),
        ({"model": EMBED_MODEL, "texts": ["a", 5]}, "texts.1", "valid string"),
        ({"model": EMBED_MODEL, "texts": "abc"}, "texts", "valid list"),
        ({"model": EMBED_MODEL, "texts": ["ok", "bad \ud800"]}, "texts.1", "valid string"),
        ({"model": EMBED_MODEL, "texts": ["a"], "pooling": "cls"}, "pooling", "Extra inputs"),
        ({"texts": ["a"]}, "model", "Field required"),
    ],
)
def test_embedInput_rejectsEachBound_namingTheField(payload: dict[str, Any], field: str, match: str) -> None:
    with pytest.raises(WorkloadSpecError, match=match) as info:
        parse_input("embed", payload)
    assert f"invalid embed input: {field}: " in str(info.value)


def test_embedOutput_acceptsNormalisedRows() -> None:
    out = parse_output("embed", {"model": EMBED_MODEL, "embeddings": tensor_payload(unit_rows(3))})
    assert isinstance(out, EmbedOutput)
    assert out.embeddings.shape == (3, EMBED_DIM)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (unit_rows(2).astype(np.float64), "embeddings.dtype must be float32"),
        (np.full((2, 383), 1 / np.sqrt(383), np.float32), r"must be \(1..256, 384\)"),
        (unit_rows(2)[0], r"must be \(1..256, 384\)"),
        (unit_rows(2) * 1.01, "row 0 has L2 norm 1.010000, not 1"),
        (np.vstack([unit_rows(1), np.zeros((1, EMBED_DIM), np.float32)]), "row 1 has L2 norm 0.000000"),
        (np.full((1, EMBED_DIM), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_embedOutput_rejectsMalformedEmbeddings(array: np.ndarray[Any, Any], match: str) -> None:
    with pytest.raises(WorkloadSpecError, match=match) as info:
        parse_output("embed", {"model": EMBED_MODEL, "embeddings": tensor_payload(array)})
    assert "invalid embed output: embeddings: " in str(info.value)


# --- parsing, checking ---------------------------------------------------------------------------------


def test_parse_rejectsUnknownWorkloadsAndNonObjects() -> None:
    with pytest.raises(WorkloadSpecError, match="unknown workload 'sort'; known: embed, matmul"):
        parse_input("sort", {})
    with pytest.raises(WorkloadSpecError, match="expected a JSON object, got list"):
        parse_input("matmul", [1, 2])  # type: ignore[arg-type]
    assert set(WORKLOAD_SCHEMAS) == {"matmul", "embed"}


def test_checkOutput_rejectsAnswersToAnotherQuestion() -> None:
    inp = MatmulInput(seed=1, m=2, k=3, n=4, dtype="float32")
    check_output("matmul", inp, MatmulOutput(c=Tensor.from_array(np.ones((2, 4), np.float32))))
    with pytest.raises(WorkloadSpecError, match=r"c is float32 \(4, 2\), expected float32 \(2, 4\)"):
        check_output("matmul", inp, MatmulOutput(c=Tensor.from_array(np.ones((4, 2), np.float32))))
    with pytest.raises(WorkloadSpecError, match=r"c is float64 \(2, 4\), expected float32"):
        check_output("matmul", inp, MatmulOutput(c=Tensor.from_array(np.ones((2, 4)))))
    texts = EmbedInput(model=EMBED_MODEL, texts=["a", "b", "c"])
    check_output("embed", texts, EmbedOutput(model=EMBED_MODEL, embeddings=Tensor.from_array(unit_rows(3))))
    with pytest.raises(WorkloadSpecError, match="2 embeddings for 3 texts"):
        check_output(
            "embed", texts, EmbedOutput(model=EMBED_MODEL, embeddings=Tensor.from_array(unit_rows(2)))
        )
    with pytest.raises(WorkloadSpecError, match="matmul expects MatmulOutput, got EmbedOutput"):
        check_output(
            "matmul", inp, EmbedOutput(model=EMBED_MODEL, embeddings=Tensor.from_array(unit_rows(1)))
        )


# --- canonical hashes (pinned: a change of the encoding must fail here) -------------------------------


def test_specHash_seededMatmul_isPinned() -> None:
    inp = MatmulInput(seed=7, m=3, k=4, n=2, dtype="float64")
    preimage = b'{"input":{"dtype":"float64","k":4,"m":3,"n":2,"seed":7},"workload":"matmul"}'
    assert spec_hash("matmul", inp) == keccak(preimage)
    assert (
        spec_hash("matmul", inp).hex() == "b3d3798966b7d5f0c4af23c77453616007707a2946e9e7e864de5e41b78f8c8f"
    )


def test_specHash_explicitMatmul_isPinned() -> None:
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([[0.5], [-1]], dtype=np.float32)
    inp = MatmulInput(a=Tensor.from_array(a), b=Tensor.from_array(b))
    preimage = (
        b'{"input":{"a":{"data":"AACAPwAAAEAAAEBAAACAQA==","dtype":"float32","shape":[2,2]},'
        b'"b":{"data":"AAAAPwAAgL8=","dtype":"float32","shape":[2,1]}},"workload":"matmul"}'
    )
    assert spec_hash("matmul", inp) == keccak(preimage)
    assert (
        spec_hash("matmul", inp).hex() == "750f0a041821541aa2bd49014ddc54fb42b02c464acad859410408502c168d46"
    )


def test_specHash_embed_isPinnedWithUnescapedUtf8() -> None:
    inp = EmbedInput(model=EMBED_MODEL, texts=["café ☕", "x"])
    preimage = '{"input":{"model":"all-MiniLM-L6-v2","texts":["café ☕","x"]},"workload":"embed"}'.encode()
    assert spec_hash("embed", inp) == keccak(preimage)
    pinned = "7203becb157d694faa56617394da41578034134de728cb25288d0fa95d780589"
    assert spec_hash("embed", inp).hex() == pinned


def test_specHash_dependsOnContentNotOnJsonFormatting() -> None:
    one = parse_input("matmul", json.loads('{"seed": 7, "m": 3, "k": 4, "n": 2, "dtype": "float64"}'))
    two = parse_input("matmul", json.loads('{"dtype":"float64","n":2,"k":4,"m":3,"seed":7}'))
    assert spec_hash("matmul", one) == spec_hash("matmul", two)
    assert spec_hash("matmul", one) != spec_hash("matmul", parse_input("matmul", seeded(seed=8)))
    # The workload name is part of the hash: another workload with the same fields is another job.
    assert spec_hash("matmul", one) != spec_hash("matmul2", one)


def test_specHash_rejectsAnInputOfAnotherWorkload() -> None:
    with pytest.raises(WorkloadSpecError, match="embed expects EmbedInput, got MatmulInput"):
        spec_hash("embed", MatmulInput(seed=1, m=1, k=1, n=1, dtype="float32"))


def test_resultHash_matmul_isPinnedAndDocumented() -> None:
    out = MatmulOutput(c=Tensor.from_array(np.array([[1, 2], [3, 4]], dtype=np.float32)))
    header = b'{"dtype":"float32","shape":[2,2],"workload":"matmul"}'
    raw = np.array([1, 2, 3, 4], dtype="<f4").tobytes()
    assert result_hash("matmul", out) == keccak(len(header).to_bytes(4, "big") + header + raw)
    assert (
        result_hash("matmul", out).hex() == "3540fe39ba4cb7c351001de1f3c31cf239529bf35703a35eaee8c18517eac6dd"
    )


def test_resultHash_embed_isPinnedAndCoversTheModel() -> None:
    rows = np.zeros((2, EMBED_DIM), np.float32)
    rows[0, 0], rows[1, 383] = 1.0, -1.0
    out = EmbedOutput(model=EMBED_MODEL, embeddings=Tensor.from_array(rows))
    header = b'{"dtype":"float32","model":"all-MiniLM-L6-v2","shape":[2,384],"workload":"embed"}'
    assert result_hash("embed", out) == keccak(len(header).to_bytes(4, "big") + header + rows.tobytes())
    assert (
        result_hash("embed", out).hex() == "91af178b802b3655bae0abfdbe1030268dfda0cd97b3731314517772791af190"
    )


def test_resultHash_changesWithShapeDtypeAndEveryBit() -> None:
    values = np.arange(4, dtype=np.float32)
    square = result_hash("matmul", MatmulOutput(c=Tensor.from_array(values.reshape(2, 2))))
    row = result_hash("matmul", MatmulOutput(c=Tensor.from_array(values.reshape(1, 4))))
    wide = result_hash("matmul", MatmulOutput(c=Tensor.from_array(values.reshape(2, 2).astype(np.float64))))
    flipped = values.copy()
    flipped.view(np.uint32)[3] ^= 1  # the last bit of the last element
    nudged = result_hash("matmul", MatmulOutput(c=Tensor.from_array(flipped.reshape(2, 2))))
    assert len({square, row, wide, nudged}) == 4
    assert all(len(h) == 32 for h in (square, row, wide, nudged))


def test_canonicalJson_refusesValuesWithoutAJsonForm() -> None:
    assert canonical_json({"b": 1, "a": ["é"]}) == '{"a":["é"],"b":1}'.encode()
    with pytest.raises(WorkloadSpecError, match="no canonical JSON form"):
        canonical_json({"x": float("nan")})


# --- billing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "units"),
    [((1, 1, 1), 1), ((1000, 1000, 500), 1), ((1000, 1000, 501), 2), ((4096, 4096, 512), 18)],
)
def test_billingUnits_matmulIsStartedGflop(dims: tuple[int, int, int], units: int) -> None:
    m, k, n = dims
    assert billing_units("matmul", MatmulInput(seed=0, m=m, k=k, n=n, dtype="float32")) == units


@pytest.mark.parametrize(("texts", "units"), [(["a"], 1), (["x" * 1000], 1), (["x" * 500, "y" * 501], 2)])
def test_billingUnits_embedIsStartedThousandCharacters(texts: list[str], units: int) -> None:
    assert billing_units("embed", EmbedInput(model=EMBED_MODEL, texts=texts)) == units


# --- clients import this without the heavy stack --------------------------------------------------------


def test_sdkWorkloads_doesNotImportTorchOrSentenceTransformers() -> None:
    code = (
        "import sys, proxima.sdk.workloads as w\n"
        "w.parse_input('matmul', {'seed': 1, 'm': 2, 'k': 2, 'n': 2, 'dtype': 'float32'})\n"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
