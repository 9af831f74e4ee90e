"""Asynchronous HTTP client of a ``proxima-verify`` service (the gateway's dispatcher uses it).

Example::

    client = VerifierClient("http://127.0.0.1:8090", api_key=key)
    canary = await client.canary(CanaryRequest(m=256, k=256, n=256))   # committed on chain already
    verdict = await client.verdict(evidence)                           # re-checked and signed
    await client.aclose()
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from proxima.marketplace.errors import MarketError
from proxima.marketplace.verifier.protocol import (
    Canary,
    CanaryRequest,
    Evidence,
    Health,
    SignedVerdict,
    VerifierInfo,
)

__all__ = [
    "VerifierClient",
    "VerifierClientError",
    "VerifierRefusedError",
    "VerifierResponseError",
    "VerifierUnavailableError",
]

_M = TypeVar("_M", bound=BaseModel)
_MAX_MESSAGE: Final = 500


class VerifierClientError(MarketError):
    """Root of the errors of a verifier request."""


class VerifierRefusedError(VerifierClientError):
    """The verifier answered with a 4xx error: the request or the evidence is wrong.

    Args:
        status: The HTTP status.
        code: The error code (``invalid_evidence``, ``unknown_canary``, ``invalid_request``...).
        message: The verifier's explanation, naming what is wrong.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"verifier refused ({status} {code}): {message}")


class VerifierUnavailableError(VerifierClientError):
    """The verifier could not be reached or cannot decide now (5xx, timeout, connection refused).

    Args:
        url: The request's URL.
        problem: What happened.
    """

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(f"verifier at {url} unavailable: {problem}")


class VerifierResponseError(VerifierClientError):
    """The verifier's answer is not what the API promises.

    Args:
        url: The request's URL.
        problem: What is wrong with it.
    """

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(f"invalid answer from the verifier at {url}: {problem}")


class VerifierClient:
    """Client of one verifier.

    Args:
        base_url: The service's base URL, for example ``http://127.0.0.1:8090``.
        timeout: Seconds for one request (canaries wait for a chain transaction; verdicts recompute).
        api_key: Sent as ``Authorization: Bearer <key>`` when the verifier requires one.
        transport: An httpx transport (tests: ``httpx.ASGITransport(app)``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    def __repr__(self) -> str:
        return f"VerifierClient({self.base_url!r})"

    async def canary(self, request: CanaryRequest) -> Canary:
        """A new canary of the requested shape; the verifier committed it on chain before answering.

        Raises:
            VerifierRefusedError: The shape is refused (too large, bad dimensions) or the key is wrong.
            VerifierUnavailableError: The verifier or its chain is unreachable.
            VerifierResponseError: The answer is malformed.
        """
        return await self._request("POST", "/v1/canaries", Canary, request)

    async def verdict(self, evidence: Evidence) -> SignedVerdict:
        """The verifier re-checks the evidence and signs ``Verdict(jobId, resultHash, valid)``.

        Raises:
            VerifierRefusedError: The evidence is inconsistent (the message names what).
            VerifierUnavailableError: The verifier cannot decide now (for example no embedding model).
            VerifierResponseError: The answer is malformed.
        """
        return await self._request("POST", "/v1/verdicts", SignedVerdict, evidence)

    async def info(self) -> VerifierInfo:
        """The verifier's address, quorums, stake and limits."""
        return await self._request("GET", "/v1/info", VerifierInfo, None)

    async def health(self) -> Health:
        """Liveness and counters."""
        return await self._request("GET", "/v1/health", Health, None)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> VerifierClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, model: type[_M], body: BaseModel | None) -> _M:
        url = self.base_url + path
        content = None if body is None else body.model_dump_json().encode()
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = await self._http.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as err:
            raise VerifierUnavailableError(url, f"no answer in time ({type(err).__name__})") from err
        except httpx.HTTPError as err:
            raise VerifierUnavailableError(url, f"{type(err).__name__}: {err}") from err
        if response.status_code >= 400:
            code, message = _error_of(response)
            if response.status_code >= 500:
                raise VerifierUnavailableError(url, f"{response.status_code} {code}: {message}")
            raise VerifierRefusedError(response.status_code, code, message)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as err:
            raise VerifierResponseError(url, f"not a {model.__name__}: {err.errors()[0]['msg']}") from err


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body: Any = response.json()
        error = body["error"]
        return str(error["code"]), str(error["message"])[:_MAX_MESSAGE]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return "http_error", response.text[:_MAX_MESSAGE] or response.reason_phrase
