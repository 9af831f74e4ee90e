"""Workload schemas, tensor codec and canonical hashes, shared by provider nodes and clients.

Everything here is pure data handling (numpy, pydantic, keccak); it never imports torch or
sentence-transformers, so a client can validate inputs, price a job and recompute hashes without them.

Two workloads are defined:

* ``matmul``: a dense product ``C = A @ B`` of float32 or float64 matrices. The operands are either sent
  explicitly (:class:`Tensor` ``a`` and ``b``) or *seeded*: ``{seed, m, k, n, dtype}``, and both sides
  regenerate them with :func:`matmul_operands` (the one definition, which the client also uses for its
  Freivalds check).
* ``embed``: sentence embeddings with all-MiniLM-L6-v2: float32 ``(len(texts), 384)``, each row L2-normalised.

Canonical encodings (stable; a client in any language can recompute them):

* **Canonical JSON**: UTF-8 JSON with object keys sorted, no insignificant whitespace, non-ASCII characters
  written as themselves (not ``\\u`` escapes) and fields that are unset (``None``) left out; exactly
  Python's ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``. The
  schemas contain only strings, integers, lists and objects (tensors are base64 strings), so no float
  formatting is involved.
* :func:`spec_hash` = ``keccak256(canonical_json({"input": <input fields>, "workload": <name>}))``. It is the
  ``JobTerms.spec_hash`` a provider signs.
* :func:`result_hash` = ``keccak256(len(header) as 4 bytes big-endian || header || raw)`` where ``header`` is
  the canonical JSON of ``{"dtype", "shape", "workload"}`` (embed adds ``"model"``) and ``raw`` the result
  tensor's C-order little-endian bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeVar

import numpy as np
from eth_utils.crypto import keccak
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from proxima.sdk.errors import SdkError

__all__ = [
    "EMBED_CHARS_PER_UNIT",
    "EMBED_DIM",
    "EMBED_MAX_CHARS",
    "EMBED_MAX_TEXTS",
    "EMBED_MODEL",
    "MATMUL_FLOPS_PER_UNIT",
    "MATMUL_MAX_DIM",
    "MATMUL_MAX_ELEMENTS",
    "MATMUL_MAX_EXPLICIT_BYTES",
    "MATMUL_MAX_OUTPUT_BYTES",
    "TENSOR_MAX_ELEMENTS",
    "TENSOR_MAX_NDIM",
    "WORKLOAD_SCHEMAS",
    "EmbedInput",
    "EmbedModel",
    "EmbedOutput",
    "MatmulInput",
    "MatmulOutput",
    "Tensor",
    "TensorDtype",
    "TensorError",
    "WorkloadSpecError",
    "billing_units",
    "canonical_json",
    "check_output",
    "matmul_operands",
    "parse_input",
    "parse_output",
    "result_hash",
    "spec_hash",
    "validate_payload",
]

TensorDtype = Literal["float32", "float64"]
"""Element types a :class:`Tensor` carries (always little-endian on the wire)."""

TENSOR_MAX_NDIM: Final = 4
"""Most dimensions a tensor may have."""
TENSOR_MAX_ELEMENTS: Final = 2**25
"""Most elements one tensor may hold (33,554,432: 128 MiB of float32, 256 MiB of float64)."""

MATMUL_MAX_DIM: Final = 4096
"""Largest ``m``, ``k`` or ``n`` of a matmul."""
MATMUL_MAX_ELEMENTS: Final = 2**25
"""Most elements of ``A``, ``B`` and ``C`` together (``m*k + k*n + m*n``): bounds a job's memory."""
MATMUL_MAX_EXPLICIT_BYTES: Final = 2**25
"""Most raw bytes of explicit operands ``A`` and ``B`` together (32 MiB); larger jobs use seeded operands."""
MATMUL_MAX_OUTPUT_BYTES: Final = 2**26
"""Most raw bytes of the result ``C`` (64 MiB), so that it fits in one response."""
MATMUL_FLOPS_PER_UNIT: Final = 10**9
"""A matmul is billed per started GFLOP: ``ceil(2*m*k*n / 1e9)`` units."""

EmbedModel = Literal["all-MiniLM-L6-v2"]
"""Embedding models the ``embed`` workload knows."""
EMBED_MODEL: Final[EmbedModel] = "all-MiniLM-L6-v2"
EMBED_DIM: Final = 384
"""Length of one all-MiniLM-L6-v2 embedding."""
EMBED_MAX_TEXTS: Final = 256
"""Most texts in one embed job."""
EMBED_MAX_CHARS: Final = 4096
"""Most characters (Unicode code points) in one text. The model reads at most 256 word pieces of it."""
EMBED_CHARS_PER_UNIT: Final = 1000
"""An embed job is billed per started 1000 characters over all texts."""

_NORM_TOLERANCE: Final = 1e-3
_ITEMSIZE: Final[Mapping[str, int]] = MappingProxyType({"float32": 4, "float64": 8})
_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


class WorkloadSpecError(SdkError, ValueError):
    """A workload input or output is invalid, or does not belong to the workload named.

    Args:
        message: What is wrong, naming the field.
    """


class TensorError(WorkloadSpecError):
    """A tensor cannot be encoded or decoded (dtype, shape, byte length, base64)."""


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (sorted keys, no whitespace, UTF-8, non-ASCII unescaped).

    Raises:
        WorkloadSpecError: If ``value`` holds something JSON cannot carry (a float NaN, a lone surrogate).
    """
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError) as err:
        raise WorkloadSpecError(f"value has no canonical JSON form: {err}") from err


def _check_shape(dtype: str, shape: tuple[int, ...]) -> int:
    """Check a tensor's shape and return its byte length."""
    if dtype not in _ITEMSIZE:
        raise TensorError(f"dtype must be float32 or float64, got {dtype!r}")
    if not 1 <= len(shape) <= TENSOR_MAX_NDIM:
        raise TensorError(f"shape must have 1 to {TENSOR_MAX_NDIM} dimensions, got {len(shape)}")
    if any(d < 1 for d in shape):
        raise TensorError(f"shape dimensions must be >= 1, got {shape}")
    elements = math.prod(shape)
    if elements > TENSOR_MAX_ELEMENTS:
        raise TensorError(f"shape {shape} has {elements} elements, more than {TENSOR_MAX_ELEMENTS}")
    return elements * _ITEMSIZE[dtype]


class Tensor(BaseModel):
    """A dense array: ``data`` is the standard base64 (with padding) of its C-order little-endian bytes.

    Validation checks the dtype, that every dimension is >= 1, the element bound, that ``data`` is
    canonical base64 (no whitespace, zero padding bits) and that it decodes to exactly
    ``prod(shape) * itemsize`` bytes. The decoded bytes are kept, so :meth:`to_array` does not decode again.
    """

    model_config = _STRICT
    dtype: TensorDtype
    shape: Annotated[tuple[Annotated[int, Strict()], ...], Strict(False)]
    data: str
    _raw: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _decode(self) -> Tensor:
        nbytes = _check_shape(self.dtype, self.shape)
        expected_chars = 4 * math.ceil(nbytes / 3)
        if len(self.data) != expected_chars:
            raise TensorError(
                f"data has {len(self.data)} base64 characters; shape {self.shape} of {self.dtype} needs "
                f"{nbytes} bytes = {expected_chars} characters"
            )
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as err:
            raise TensorError(f"data is not valid base64: {err}") from err
        if len(raw) != nbytes or base64.b64encode(raw).decode("ascii") != self.data:
            raise TensorError("data is not canonical base64 (padding bits must be zero)")
        self._raw = raw
        return self

    @classmethod
    def from_array(cls, array: NDArray[Any]) -> Tensor:
        """Encode a float32 or float64 array.

        Raises:
            TensorError: If the dtype is not float32/float64 or the shape is out of bounds.
        """
        array = np.asarray(array)
        if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
            raise TensorError(f"dtype must be float32 or float64, got {array.dtype}")
        dtype: TensorDtype = "float32" if array.dtype.itemsize == 4 else "float64"
        shape = tuple(int(d) for d in array.shape)
        _check_shape(dtype, shape)
        raw = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
        tensor = cls.model_construct(dtype=dtype, shape=shape, data=base64.b64encode(raw).decode("ascii"))
        tensor._raw = raw
        return tensor

    def to_array(self, max_elements: int = TENSOR_MAX_ELEMENTS) -> NDArray[Any]:
        """Decode into a read-only array of the tensor's dtype and shape (native byte order).

        Args:
            max_elements: Refuse tensors with more elements than this.

        Raises:
            TensorError: If the tensor has more than ``max_elements`` elements.
        """
        elements = math.prod(self.shape)
        if elements > max_elements:
            raise TensorError(f"tensor has {elements} elements, more than the {max_elements} allowed")
        little = np.frombuffer(self._raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)
        return little.astype(np.dtype(self.dtype), copy=False)

    def raw_bytes(self) -> bytes:
        """The tensor's C-order little-endian bytes (what ``data`` encodes)."""
        return self._raw

    @property
    def nbytes(self) -> int:
        """Length of the raw bytes."""
        return len(self._raw)


_Dim = Annotated[int, Field(ge=1, le=MATMUL_MAX_DIM)]
_Seed = Annotated[int, Field(ge=0, lt=2**64)]


class MatmulInput(BaseModel):
    """Operands of ``C = A @ B``, ``A`` of shape ``(m, k)`` and ``B`` of shape ``(k, n)``.

    Exactly one form is allowed:

    * explicit: ``a`` and ``b`` (same dtype, finite values, at most :data:`MATMUL_MAX_EXPLICIT_BYTES`);
    * seeded: ``seed``, ``m``, ``k``, ``n`` and ``dtype``; see :func:`matmul_operands`.

    Every dimension is in ``1..MATMUL_MAX_DIM``; ``m*k + k*n + m*n <= MATMUL_MAX_ELEMENTS`` and the result
    has at most :data:`MATMUL_MAX_OUTPUT_BYTES`.
    """

    model_config = _STRICT
    a: Tensor | None = None
    b: Tensor | None = None
    seed: _Seed | None = None
    m: _Dim | None = None
    k: _Dim | None = None
    n: _Dim | None = None
    dtype: TensorDtype | None = None

    @model_validator(mode="after")
    def _check(self) -> MatmulInput:
        seeded = {"seed": self.seed, "m": self.m, "k": self.k, "n": self.n, "dtype": self.dtype}
        if self.a is not None or self.b is not None:
            given = [name for name, value in seeded.items() if value is not None]
            if given:
                raise ValueError(f"give operands a and b or seeded fields, not both (also got {given})")
            if self.a is None or self.b is None:
                raise ValueError(
                    f"explicit operands need both a and b ({'b' if self.a is not None else 'a'} missing)"
                )
            self._check_explicit(self.a, self.b)
        else:
            missing = [name for name, value in seeded.items() if value is None]
            if missing:
                raise ValueError(f"give operands a and b, or seed, m, k, n and dtype (missing: {missing})")
        m, k, n = self.dims
        elements = m * k + k * n + m * n
        if elements > MATMUL_MAX_ELEMENTS:
            raise ValueError(
                f"m*k + k*n + m*n = {elements} elements for (m, k, n) = {(m, k, n)}, "
                f"more than MATMUL_MAX_ELEMENTS ({MATMUL_MAX_ELEMENTS})"
            )
        out_bytes = m * n * _ITEMSIZE[self.element_type]
        if out_bytes > MATMUL_MAX_OUTPUT_BYTES:
            raise ValueError(
                f"result of shape {(m, n)} is {out_bytes} bytes, "
                f"more than MATMUL_MAX_OUTPUT_BYTES ({MATMUL_MAX_OUTPUT_BYTES})"
            )
        return self

    @staticmethod
    def _check_explicit(a: Tensor, b: Tensor) -> None:
        for name, t in (("a", a), ("b", b)):
            if len(t.shape) != 2:
                raise ValueError(f"{name}.shape must be 2-D, got {t.shape}")
            for axis, size in enumerate(t.shape):
                if size > MATMUL_MAX_DIM:
                    raise ValueError(
                        f"{name}.shape[{axis}] = {size} exceeds MATMUL_MAX_DIM ({MATMUL_MAX_DIM})"
                    )
        if a.shape[1] != b.shape[0]:
            raise ValueError(
                f"a.shape {a.shape} and b.shape {b.shape} do not agree: a has k={a.shape[1]} "
                f"columns, b has {b.shape[0]} rows"
            )
        if a.dtype != b.dtype:
            raise ValueError(f"a.dtype ({a.dtype}) and b.dtype ({b.dtype}) differ")
        if a.nbytes + b.nbytes > MATMUL_MAX_EXPLICIT_BYTES:
            raise ValueError(
                f"a and b are {a.nbytes + b.nbytes} bytes together, more than MATMUL_MAX_EXPLICIT_BYTES "
                f"({MATMUL_MAX_EXPLICIT_BYTES}); use seeded operands"
            )
        for name, t in (("a", a), ("b", b)):
            if not np.isfinite(t.to_array()).all():
                raise ValueError(f"{name}.data holds NaN or infinite values")

    @property
    def is_seeded(self) -> bool:
        """Whether the operands are generated from ``seed``."""
        return self.a is None

    @property
    def dims(self) -> tuple[int, int, int]:
        """``(m, k, n)``."""
        if self.a is not None and self.b is not None:
            return self.a.shape[0], self.a.shape[1], self.b.shape[1]
        assert self.m is not None
        assert self.k is not None
        assert self.n is not None
        return self.m, self.k, self.n

    @property
    def element_type(self) -> TensorDtype:
        """The operands' (and the result's) dtype."""
        if self.a is not None:
            return self.a.dtype
        assert self.dtype is not None
        return self.dtype


class MatmulOutput(BaseModel):
    """The product ``C`` (2-D, same dtype as the operands)."""

    model_config = _STRICT
    c: Tensor

    @field_validator("c")
    @classmethod
    def _check_c(cls, c: Tensor) -> Tensor:
        if len(c.shape) != 2 or max(c.shape) > MATMUL_MAX_DIM:
            raise ValueError(f"c.shape must be 2-D with dimensions <= {MATMUL_MAX_DIM}, got {c.shape}")
        return c


_EmbedText = Annotated[str, StringConstraints(min_length=1, max_length=EMBED_MAX_CHARS)]


class EmbedInput(BaseModel):
    """Texts to embed: 1 to :data:`EMBED_MAX_TEXTS`, each 1 to :data:`EMBED_MAX_CHARS` characters."""

    model_config = _STRICT
    model: EmbedModel
    texts: Annotated[list[_EmbedText], Field(min_length=1, max_length=EMBED_MAX_TEXTS)]

    @property
    def total_chars(self) -> int:
        """Characters (code points) over all texts."""
        return sum(len(t) for t in self.texts)


class EmbedOutput(BaseModel):
    """Embeddings: float32 ``(n, 384)``, one finite L2-normalised row per input text, in input order."""

    model_config = _STRICT
    model: EmbedModel
    embeddings: Tensor

    @field_validator("embeddings")
    @classmethod
    def _check_embeddings(cls, embeddings: Tensor) -> Tensor:
        shape = embeddings.shape
        if embeddings.dtype != "float32":
            raise ValueError(f"embeddings.dtype must be float32, got {embeddings.dtype}")
        if len(shape) != 2 or shape[1] != EMBED_DIM or shape[0] > EMBED_MAX_TEXTS:
            raise ValueError(f"embeddings.shape must be (1..{EMBED_MAX_TEXTS}, {EMBED_DIM}), got {shape}")
        vectors = embeddings.to_array()
        if not np.isfinite(vectors).all():
            raise ValueError("embeddings hold NaN or infinite values")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        worst = int(np.argmax(np.abs(norms - 1.0)))
        if abs(norms[worst] - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"embeddings row {worst} has L2 norm {norms[worst]:.6f}, not 1")
        return embeddings


WORKLOAD_SCHEMAS: Final[Mapping[str, tuple[type[BaseModel], type[BaseModel]]]] = MappingProxyType(
    {"matmul": (MatmulInput, MatmulOutput), "embed": (EmbedInput, EmbedOutput)}
)
"""Workload name -> (input model, output model)."""

_M = TypeVar("_M", bound=BaseModel)


def validate_payload(model: type[_M], payload: Mapping[str, Any], what: str) -> _M:
    """Validate a decoded JSON object against ``model``.

    Args:
        model: The pydantic model.
        payload: The object (as ``json.loads`` returns it).
        what: Names the payload in the error, for example ``"matmul input"``.

    Raises:
        WorkloadSpecError: Naming each invalid field, for example ``"invalid matmul input: m: ..."``.
    """
    if not isinstance(payload, Mapping):
        raise WorkloadSpecError(f"invalid {what}: expected a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(dict(payload))
    except ValidationError as err:
        raise WorkloadSpecError(f"invalid {what}: {_describe(err)}") from err


def _describe(err: ValidationError) -> str:
    problems = []
    for e in err.errors(include_url=False):
        message = e["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in e["loc"])
        problems.append(f"{loc}: {message}" if loc else message)
    return "; ".join(problems)


def _schemas(workload: str) -> tuple[type[BaseModel], type[BaseModel]]:
    try:
        return WORKLOAD_SCHEMAS[workload]
    except KeyError:
        raise WorkloadSpecError(
            f"unknown workload {workload!r}; known: {', '.join(sorted(WORKLOAD_SCHEMAS))}"
        ) from None


def parse_input(workload: str, payload: Mapping[str, Any]) -> BaseModel:
    """Validate a job input for a known workload (``matmul`` or ``embed``).

    Raises:
        WorkloadSpecError: If the workload is unknown or a field is invalid (the message names it).
    """
    return validate_payload(_schemas(workload)[0], payload, f"{workload} input")


def parse_output(workload: str, payload: Mapping[str, Any]) -> BaseModel:
    """Validate a job output (a provider's answer) for a known workload.

    Raises:
        WorkloadSpecError: If the workload is unknown or a field is invalid (the message names it).
    """
    return validate_payload(_schemas(workload)[1], payload, f"{workload} output")


def _expect(workload: str, value: BaseModel, index: int) -> None:
    expected = _schemas(workload)[index]
    if not isinstance(value, expected):
        raise WorkloadSpecError(f"{workload} expects {expected.__name__}, got {type(value).__name__}")


def matmul_operands(inp: MatmulInput) -> tuple[NDArray[Any], NDArray[Any]]:
    """The operands ``(A, B)`` of a matmul input: the one definition nodes and verifying clients share.

    Seeded operands: ``rng = numpy.random.default_rng(seed)``; ``A = rng.standard_normal((m, k), dtype)``
    then ``B = rng.standard_normal((k, n), dtype)`` from the same generator (PCG64, numpy's ziggurat
    normal sampler in the requested precision). Explicit operands are decoded (read-only arrays).
    """
    if inp.a is not None and inp.b is not None:
        return inp.a.to_array(), inp.b.to_array()
    m, k, n = inp.dims
    dtype = np.dtype(inp.element_type)
    rng = np.random.default_rng(inp.seed)
    a = rng.standard_normal((m, k), dtype=dtype)
    b = rng.standard_normal((k, n), dtype=dtype)
    return a, b


def spec_hash(workload: str, input: BaseModel) -> bytes:
    """``keccak256(canonical_json({"input": input fields without unset ones, "workload": workload}))``.

    This is the ``JobTerms.spec_hash`` both parties compute. It is defined for any workload name (plugins
    included); for ``matmul`` and ``embed`` the input must be of their input model.

    Raises:
        WorkloadSpecError: If ``input`` is not the known workload's input model.
    """
    if workload in WORKLOAD_SCHEMAS:
        _expect(workload, input, 0)
    return keccak(
        canonical_json({"input": input.model_dump(mode="json", exclude_none=True), "workload": workload})
    )


def result_hash(workload: str, output: BaseModel) -> bytes:
    """``keccak256(len(header).to_bytes(4, "big") + header + raw)`` of a result tensor.

    ``header`` is the canonical JSON of ``{"dtype", "shape", "workload"}`` (for ``embed`` also ``"model"``)
    and ``raw`` the result's C-order little-endian bytes: ``c`` for matmul, ``embeddings`` for embed.

    Raises:
        WorkloadSpecError: If the workload is unknown or ``output`` is not its output model.
    """
    _expect(workload, output, 1)
    header: dict[str, Any] = {"workload": workload}
    if isinstance(output, MatmulOutput):
        tensor = output.c
    else:
        assert isinstance(output, EmbedOutput)
        tensor = output.embeddings
        header["model"] = output.model
    header.update(dtype=tensor.dtype, shape=list(tensor.shape))
    encoded = canonical_json(header)
    return keccak(len(encoded).to_bytes(4, "big") + encoded + tensor.raw_bytes())


def billing_units(workload: str, input: BaseModel) -> int:
    """Units a job is billed in (price = units * the offer's unit price), always >= 1.

    ``matmul``: ``ceil(2*m*k*n / 1e9)`` (started GFLOP). ``embed``: ``ceil(total characters / 1000)``.

    Raises:
        WorkloadSpecError: If the workload is unknown or ``input`` is not its input model.
    """
    _expect(workload, input, 0)
    if isinstance(input, MatmulInput):
        m, k, n = input.dims
        return max(1, -(-2 * m * k * n // MATMUL_FLOPS_PER_UNIT))
    assert isinstance(input, EmbedInput)
    return max(1, -(-input.total_chars // EMBED_CHARS_PER_UNIT))


def check_output(workload: str, input: BaseModel, output: BaseModel) -> None:
    """Check that ``output`` answers ``input``: shape and dtype of ``C``, one embedding per text, same model.

    Raises:
        WorkloadSpecError: Saying what does not match.
    """
    _expect(workload, input, 0)
    _expect(workload, output, 1)
    if isinstance(input, MatmulInput) and isinstance(output, MatmulOutput):
        m, _, n = input.dims
        if output.c.shape != (m, n) or output.c.dtype != input.element_type:
            raise WorkloadSpecError(
                f"matmul output c is {output.c.dtype} {output.c.shape}, "
                f"expected {input.element_type} {(m, n)}"
            )
    elif isinstance(input, EmbedInput) and isinstance(output, EmbedOutput):
        if output.model != input.model:
            raise WorkloadSpecError(f"embed output is from model {output.model!r}, asked for {input.model!r}")
        if output.embeddings.shape[0] != len(input.texts):
            raise WorkloadSpecError(
                f"embed output has {output.embeddings.shape[0]} embeddings for {len(input.texts)} texts"
            )
