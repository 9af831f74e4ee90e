"""Workload plugins of the provider node: entry-point loading, matmul and embed executors (real model)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from eth_utils.crypto import keccak

from proxima.node.workloads import (
    InvalidInputError,
    UnknownWorkloadError,
    Workload,
    WorkloadCost,
    WorkloadError,
    WorkloadPluginError,
    WorkloadUnavailableError,
    available_workloads,
    load_workloads,
)
from proxima.node.workloads.embed import EmbedWorkload
from proxima.node.workloads.matmul import MatmulWorkload, matmul_torch
from proxima.sdk.workloads import (
    EMBED_DIM,
    EMBED_MODEL,
    EmbedInput,
    EmbedOutput,
    MatmulInput,
    MatmulOutput,
    Tensor,
    canonical_json,
    check_output,
    matmul_operands,
    result_hash,
    spec_hash,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def relative_error(got: np.ndarray[Any, Any], reference: np.ndarray[Any, Any]) -> float:
    return float(np.abs(got.astype(np.float64) - reference).max() / np.abs(reference).max())


def reference_product(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Textbook float64 product (a sum of outer products), independent of BLAS."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return sum(
        (np.outer(a64[:, i], b64[i, :]) for i in range(a64.shape[1])), np.zeros((a.shape[0], b.shape[1]))
    )


# --- matmul ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-5), ("float64", 1e-12)])
def test_matmul_explicitOperands_matchAReferenceProduct(dtype: str, tolerance: float) -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, (37, 53)).astype(dtype)
    b = rng.uniform(-1, 1, (53, 19)).astype(dtype)
    workload = MatmulWorkload()
    inp = workload.parse({"a": Tensor.from_array(a).model_dump(), "b": Tensor.from_array(b).model_dump()})
    out = workload.execute(inp)
    c = out.c.to_array()
    assert (c.dtype, c.shape) == (np.dtype(dtype), (37, 19))
    assert relative_error(c, reference_product(a, b)) < tolerance
    check_output("matmul", inp, out)


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-5), ("float64", 1e-12)])
def test_matmul_seededOperands_areWhatAVerifierRegenerates(dtype: str, tolerance: float) -> None:
    workload = MatmulWorkload()
    inp = workload.parse({"seed": 11, "m": 64, "k": 48, "n": 32, "dtype": dtype})
    out = workload.execute(inp)
    assert isinstance(inp, MatmulInput)
    a, b = matmul_operands(inp)  # the client's own regeneration
    c = out.c.to_array()
    assert relative_error(c, reference_product(a, b)) < tolerance
    # Freivalds' check as a verifier runs it: C r == A (B r) for random vectors r.
    r = np.random.default_rng(99).standard_normal((32, 4))
    assert np.allclose(c @ r, a @ (b @ r), rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-4)


def test_matmul_resultHash_isStableAcrossRunsAndChangesWithTheSeed() -> None:
    workload = MatmulWorkload()
    first = workload.execute(workload.parse({"seed": 5, "m": 16, "k": 16, "n": 16, "dtype": "float64"}))
    again = workload.execute(workload.parse({"seed": 5, "m": 16, "k": 16, "n": 16, "dtype": "float64"}))
    other = workload.execute(workload.parse({"seed": 6, "m": 16, "k": 16, "n": 16, "dtype": "float64"}))
    assert workload.result_hash(first) == workload.result_hash(again) == result_hash("matmul", first)
    assert workload.result_hash(first) != workload.result_hash(other)


def test_matmul_resultHash_ofAKnownProduct_isPinned() -> None:
    workload = MatmulWorkload()
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([[1, 0], [0, 1]], dtype=np.float32)
    inp = workload.parse({"a": Tensor.from_array(a).model_dump(), "b": Tensor.from_array(b).model_dump()})
    out = workload.execute(inp)
    assert np.array_equal(out.c.to_array(), a)
    pinned = "3540fe39ba4cb7c351001de1f3c31cf239529bf35703a35eaee8c18517eac6dd"
    assert workload.result_hash(out).hex() == pinned


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmulTorch_keepsTheDtypeAndAgreesWithNumpy(dtype: type) -> None:
    """The torch path the CUDA device uses, run on torch's CPU device."""
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((33, 17)).astype(dtype), rng.standard_normal((17, 9)).astype(dtype)
    a.flags.writeable = False  # decoded tensors are read-only
    c = matmul_torch(a, b, "cpu")
    assert (c.dtype, c.shape) == (np.dtype(dtype), (33, 9))
    assert relative_error(c, reference_product(a, b)) < (1e-5 if dtype == np.float32 else 1e-12)


def test_matmul_estimate_countsFlopsBytesAndUnits() -> None:
    workload = MatmulWorkload()
    cost = workload.estimate(workload.parse({"seed": 1, "m": 1000, "k": 2000, "n": 300, "dtype": "float32"}))
    assert cost == WorkloadCost(
        units=2, flops=1_200_000_000, bytes_in=(2_000_000 + 600_000) * 4, bytes_out=1_200_000
    )
    small = workload.estimate(workload.parse({"seed": 1, "m": 2, "k": 2, "n": 2, "dtype": "float64"}))
    assert small == WorkloadCost(units=1, flops=16, bytes_in=64, bytes_out=32)


def test_matmul_parse_raisesInvalidInputNamingTheField() -> None:
    workload = MatmulWorkload()
    with pytest.raises(InvalidInputError, match="invalid matmul input: n: Input should be less than") as info:
        workload.parse({"seed": 1, "m": 2, "k": 2, "n": 5000, "dtype": "float32"})
    assert isinstance(info.value, ValueError)
    assert info.value.workload == "matmul"
    with pytest.raises(InvalidInputError, match="expected a JSON object"):
        workload.parse("seed=1")  # type: ignore[arg-type]


def test_workloads_refuseInputsOfAnotherWorkload() -> None:
    embed_input = EmbedInput(model=EMBED_MODEL, texts=["a"])
    with pytest.raises(InvalidInputError, match="matmul expects MatmulInput, got EmbedInput"):
        MatmulWorkload().execute(embed_input)
    with pytest.raises(InvalidInputError, match="matmul expects MatmulInput"):
        MatmulWorkload().estimate(embed_input)
    with pytest.raises(InvalidInputError, match="embed expects EmbedInput, got MatmulInput"):
        EmbedWorkload().estimate(MatmulInput(seed=1, m=1, k=1, n=1, dtype="float32"))


def test_workload_rejectsAnUnknownDevice() -> None:
    with pytest.raises(WorkloadUnavailableError, match="unknown device"):
        MatmulWorkload("tpu")  # type: ignore[arg-type]


def test_matmulCuda_loadsExactlyWhenTorchSeesAGpu() -> None:
    workload = MatmulWorkload("cuda")
    if torch.cuda.is_available():
        workload.load()
    else:
        with pytest.raises(
            WorkloadUnavailableError, match="'matmul' is unavailable on cuda: torch sees no CUDA"
        ):
            workload.load()


@requires_cuda
def test_matmulCuda_matchesTheReferenceAtFullFloat32Precision() -> None:
    workload = MatmulWorkload("cuda")
    inp = workload.parse({"seed": 2, "m": 1024, "k": 2048, "n": 512, "dtype": "float32"})
    out = workload.execute(inp)
    assert isinstance(inp, MatmulInput)
    a, b = matmul_operands(inp)
    c = out.c.to_array()
    assert c.dtype == np.float32
    # TF32 (10-bit mantissa) would be off by ~1e-3 here; IEEE float32 stays near 1e-6.
    assert relative_error(c, a.astype(np.float64) @ b.astype(np.float64)) < 1e-5


def test_matmulOnCpu_needsNeitherTorchNorTheEmbedExtra() -> None:
    code = (
        "import sys\n"
        "from proxima.node.workloads import load_workloads\n"
        "w = load_workloads(['matmul', 'embed'])\n"
        "w['matmul'].execute(w['matmul'].parse({'seed': 1, 'm': 2, 'k': 2, 'n': 2, 'dtype': 'float32'}))\n"
        "print(','.join(m for m in ('torch', 'sentence_transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=99
    )
    assert done.stdout.strip() == ""


# --- loading through entry points ------------------------------------------------------------------------


def test_loadWorkloads_findsTheBuiltInsThroughEntryPoints() -> None:
    assert {"matmul", "embed"} <= set(available_workloads())
    workloads = load_workloads(["embed", "matmul", "embed"], device="cpu")
    assert list(workloads) == ["embed", "matmul"]
    assert isinstance(workloads["matmul"], MatmulWorkload)
    assert isinstance(workloads["embed"], EmbedWorkload)
    assert workloads["embed"].models() == (EMBED_MODEL,)
    assert workloads["matmul"].models() == ()


def test_loadWorkloads_unknownNameListsTheAvailableOnes() -> None:
    with pytest.raises(UnknownWorkloadError) as info:
        load_workloads(["matmul", "sort"])
    assert str(info.value) == "unknown workload 'sort'; available: embed, matmul"
    assert isinstance(info.value, KeyError)
    assert info.value.available == ("embed", "matmul")


PLUGIN_SOURCE = """
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from proxima.node.workloads import Workload, WorkloadCost


class CubeInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    x: int


class CubeOutput(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    y: int


class CubeWorkload(Workload):
    name = "cube"
    input_model = CubeInput
    output_model = CubeOutput

    def estimate(self, inp):
        return WorkloadCost(units=1, flops=2, bytes_in=8, bytes_out=8)

    def execute(self, inp):
        return CubeOutput(y=inp.x ** 3)


class Incomplete(Workload):
    name = "incomplete"
    input_model = CubeInput
    output_model = CubeOutput

    def estimate(self, inp):
        return WorkloadCost(units=1, flops=0, bytes_in=0, bytes_out=0)


NOT_A_CLASS = 42
"""


@dataclass
class Plugin:
    module: str


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Plugin]]:
    """Install a real distribution (a dist-info with entry_points.txt) on sys.path for one test."""
    installed: list[str] = []

    def install(entry_points: str) -> Plugin:
        module = f"proxima_test_plugin_{len(installed)}_{os.getpid()}"
        root = tmp_path / f"site{len(installed)}"
        (root / f"{module}-1.0.dist-info").mkdir(parents=True)
        (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
        (root / f"{module}-1.0.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n"
        )
        (root / f"{module}-1.0.dist-info" / "entry_points.txt").write_text(
            "[proxima.workloads]\n" + entry_points.format(module=module)
        )
        monkeypatch.syspath_prepend(str(root))
        installed.append(module)
        return Plugin(module)

    yield install
    for module in installed:
        monkeypatch.delitem(sys.modules, module, raising=False)


def test_loadWorkloads_discoversAThirdPartyPlugin(install_plugin: Callable[[str], Plugin]) -> None:
    install_plugin("cube = {module}:CubeWorkload\n")
    assert "cube" in available_workloads()
    cube = load_workloads(["cube", "matmul"])["cube"]
    assert isinstance(cube, Workload)
    inp = cube.parse({"x": 3})
    out = cube.execute(inp)
    assert out.model_dump() == {"y": 27}
    assert cube.result_hash(out) == keccak(b'{"output":{"y":27},"workload":"cube"}')
    assert (
        cube.spec_hash(inp)
        == spec_hash("cube", inp)
        == keccak(canonical_json({"input": {"x": 3}, "workload": "cube"}))
    )
    with pytest.raises(InvalidInputError, match="invalid cube input: x: Input should be a valid integer"):
        cube.parse({"x": "3"})


@pytest.mark.parametrize(
    ("entry", "name", "match"),
    [
        (
            "bad = {module}:NOT_A_CLASS\n",
            "bad",
            r"workload plugin 'bad' \(proxima_test_plugin_.*:NOT_A_CLASS\): 42 "
            "is not a Workload subclass",
        ),
        ("incomplete = {module}:Incomplete\n", "incomplete", "Incomplete does not implement execute"),
        ("cubic = {module}:CubeWorkload\n", "cubic", r"CubeWorkload.name is 'cube', not 'cubic'"),
        ("gone = proxima_no_such_module_xyz:Thing\n", "gone", "cannot be imported: No module named"),
        ("missing = {module}:Nothing\n", "missing", "cannot be imported: .*Nothing"),
        ("matmul = {module}:CubeWorkload\n", "matmul", "registered more than once with different values"),
    ],
)
def test_loadWorkloads_rejectsBrokenPlugins_namingTheEntryPoint(
    install_plugin: Callable[[str], Plugin], entry: str, name: str, match: str
) -> None:
    install_plugin(entry)
    with pytest.raises(WorkloadPluginError, match=match) as info:
        load_workloads([name])
    assert isinstance(info.value, WorkloadError)
    assert info.value.entry_point == name


# --- embed (the real all-MiniLM-L6-v2 model) --------------------------------------------------------------


@dataclass
class LoadedEmbed:
    workload: EmbedWorkload
    load_messages: int


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def loaded_embed() -> LoadedEmbed:
    """One model for the module (loading takes ~4 s), loaded by four threads at once."""
    workload = EmbedWorkload()
    counter = _Count()
    logger = logging.getLogger("proxima.node.workloads.embed")
    logger.addHandler(counter)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        barrier = threading.Barrier(4)

        def load() -> None:
            barrier.wait()
            workload.load()

        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(load) for _ in range(4)]:
                future.result()
    finally:
        logger.removeHandler(counter)
        logger.setLevel(previous)
    return LoadedEmbed(workload, counter.messages.count("embedding model loaded"))


def embed(workload: EmbedWorkload, texts: list[str]) -> np.ndarray[Any, Any]:
    out = workload.execute(workload.parse({"model": EMBED_MODEL, "texts": texts}))
    return out.embeddings.to_array()


def test_embed_loadIsIdempotentAndThreadSafe(loaded_embed: LoadedEmbed) -> None:
    assert loaded_embed.load_messages == 1
    loaded_embed.workload.load()  # already loaded: returns at once
    assert os.environ.get("HF_HUB_OFFLINE") is not None


def test_embed_givesOneNormalisedFloat32RowPerText(loaded_embed: LoadedEmbed) -> None:
    workload = loaded_embed.workload
    texts = ["The quick brown fox.", "Ünïcödé text, 東京 and emoji 🚀", "a", "x " * 2000]
    inp = workload.parse({"model": EMBED_MODEL, "texts": texts})
    out = workload.execute(inp)
    assert isinstance(out, EmbedOutput)
    vectors = out.embeddings.to_array()
    assert (vectors.dtype, vectors.shape) == (np.float32, (4, EMBED_DIM))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in vectors}) == 4
    check_output("embed", inp, out)


def test_embed_isDeterministicForIdenticalRequests(loaded_embed: LoadedEmbed) -> None:
    workload = loaded_embed.workload
    inp = workload.parse({"model": EMBED_MODEL, "texts": ["Proxima pays providers.", "Identical input"]})
    first, second = workload.execute(inp), workload.execute(inp)
    assert first.embeddings.data == second.embeddings.data
    assert workload.result_hash(first) == workload.result_hash(second) == result_hash("embed", first)


def test_embed_sameTextInAnotherBatch_isTheSameEmbeddingWithinFloatNoise(loaded_embed: LoadedEmbed) -> None:
    workload = loaded_embed.workload
    alone = embed(workload, ["The cat sits on the mat."])[0]
    mixed = embed(
        workload, ["A much longer sentence about the weather in the mountains.", "The cat sits on the mat."]
    )
    assert np.abs(mixed[1] - alone).max() < 1e-5  # the same text, kept in input order


def test_embed_placesSimilarSentencesCloserThanUnrelatedOnes(loaded_embed: LoadedEmbed) -> None:
    guitar, strum, stocks, cat, kitten = embed(
        loaded_embed.workload,
        [
            "A man is playing a guitar.",
            "Someone is strumming a guitar.",
            "The stock market fell sharply after the announcement.",
            "The cat sleeps on the sofa.",
            "A kitten is napping on the couch.",
        ],
    )
    assert guitar @ strum > 0.6
    assert cat @ kitten > 0.5
    for unrelated in (guitar @ stocks, strum @ stocks, cat @ stocks, guitar @ cat):
        assert unrelated < 0.3
        assert unrelated < guitar @ strum
        assert unrelated < cat @ kitten


def test_embed_concurrentRequestsGetTheSameAnswersAsSequentialOnes(loaded_embed: LoadedEmbed) -> None:
    workload = loaded_embed.workload
    requests = [[f"request {i} sentence {j}" for j in range(3)] for i in range(6)]
    sequential = [embed(workload, texts) for texts in requests]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda texts: embed(workload, texts), requests))
    for one, other in zip(sequential, concurrent, strict=True):
        assert np.array_equal(one, other)


def test_embed_estimate_scalesWithText(loaded_embed: LoadedEmbed) -> None:
    workload = loaded_embed.workload
    short = workload.estimate(workload.parse({"model": EMBED_MODEL, "texts": ["hello"]}))
    assert short.units == 1
    assert (short.bytes_in, short.bytes_out) == (5, EMBED_DIM * 4)
    longer = workload.estimate(workload.parse({"model": EMBED_MODEL, "texts": ["hello " * 200, "é" * 1000]}))
    assert longer.units == 3  # 2200 characters, billed per started 1000
    assert longer.bytes_in == 1200 + 2000
    assert longer.bytes_out == 2 * EMBED_DIM * 4
    assert longer.flops > 100 * short.flops


def test_embed_parse_raisesInvalidInputNamingTheField(loaded_embed: LoadedEmbed) -> None:
    with pytest.raises(
        InvalidInputError, match=r"invalid embed input: texts\.1: String should have at least 1"
    ):
        loaded_embed.workload.parse({"model": EMBED_MODEL, "texts": ["ok", ""]})


def test_embedCuda_loadsExactlyWhenTorchSeesAGpu() -> None:
    workload = EmbedWorkload("cuda")
    if torch.cuda.is_available():
        workload.load()
    else:
        with pytest.raises(
            WorkloadUnavailableError, match="'embed' is unavailable on cuda: torch sees no CUDA"
        ):
            workload.load()


@requires_cuda
def test_embedCuda_agreesWithTheCpuModel(loaded_embed: LoadedEmbed) -> None:
    texts = ["The same sentence on two devices.", "Another one."]
    gpu = embed(EmbedWorkload("cuda"), texts)
    cpu = embed(loaded_embed.workload, texts)
    assert np.abs(gpu - cpu).max() < 1e-4


def test_matmulOutput_fromTheExecutorRoundTripsThroughJson() -> None:
    workload = MatmulWorkload()
    out = workload.execute(workload.parse({"seed": 1, "m": 3, "k": 3, "n": 3, "dtype": "float32"}))
    again = MatmulOutput.model_validate_json(out.model_dump_json())
    assert result_hash("matmul", again) == workload.result_hash(out)


def test_matmul_refuses_dimensions_above_the_nodes_limit() -> None:
    workload = MatmulWorkload("cpu", max_dim=64)
    assert workload.parse({"seed": 1, "m": 64, "k": 64, "n": 64, "dtype": "float32"})
    with pytest.raises(InvalidInputError, match="k: 65 exceeds this node's largest dimension 64"):
        workload.parse({"seed": 1, "m": 64, "k": 65, "n": 64, "dtype": "float32"})
    with pytest.raises(ValueError, match="max_dim"):
        workload.limit_dimensions(4097)
