"""How the client reaches a market: the :class:`Transport` protocol and its gateway implementation.

The client's logic (budgets, verification, job handles, ``map``) is written once over a :class:`Transport`,
which speaks in the gateway's JSON (``JobPublic``, ``OfferPublic``, ``AccountPublic``):

* :class:`GatewayTransport`: httpx against a gateway's REST API (``POST /v1/jobs``, ``GET /v1/jobs/{id}``,
  ``DELETE``, the SSE ``/events`` stream, ``/v1/offers``, ``/v1/account``), authenticated by an API key or by
  requests signed with the client's key (EIP-191, the gateway's ``PROXIMA-REQUEST-V1`` scheme);
* ``proxima.marketplace.embedded.EmbeddedMarket``: the gateway's own services in this process, no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from proxima.sdk._client_errors import (
    ClientError,
    GatewayConnectionError,
    GatewayError,
    JobNotFoundError,
    RateLimitedError,
    UnsupportedOperationError,
    error_from_api,
)
from proxima.sdk._client_models import DepositInfo

__all__ = [
    "REQUEST_SIGNING_VERSION",
    "TERMINAL",
    "GatewayTransport",
    "Transport",
    "sign_request_headers",
]

log = logging.getLogger("proxima.sdk.client")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
"""Job statuses that do not change any more."""

REQUEST_SIGNING_VERSION = "PROXIMA-REQUEST-V1"
"""First line of the text a signed gateway request signs."""

_RETRIES_429 = 5
_POLL_S = 0.25


@runtime_checkable
class Transport(Protocol):
    """What the client needs from a market (a gateway over HTTP, or the embedded market).

    Every method speaks the gateway's JSON and raises :mod:`proxima.sdk._client_errors` types.
    """

    mode: str
    """``"gateway"`` or ``"embedded"``."""

    @property
    def receipt_domain(self) -> Mapping[str, Any] | None:
        """The ``FaultProofs`` EIP-712 domain receipts must be signed in, when known (embedded mode)."""
        ...

    async def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, price, reserve and store a job (``POST /v1/jobs``); the stored job."""
        ...

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job as it is now (``GET /v1/jobs/{id}``)."""
        ...

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        """The job once final, or as it is when ``timeout`` seconds passed (None: no limit)."""
        ...

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a job (``DELETE``); the job, or None if it had already finished."""
        ...

    async def offers(self, workload: str | None = None) -> list[dict[str, Any]]:
        """Live offers (``GET /v1/offers``)."""
        ...

    async def measured_rtt_ms(self, provider: str) -> float | None:
        """The market's measured round trip to a provider, milliseconds (None: not measured yet)."""
        ...

    async def account(self) -> dict[str, Any]:
        """The client's budget and spend (``GET /v1/account``)."""
        ...

    async def deposit(self) -> DepositInfo | None:
        """The voucher deposit that pays providers, when this client owns it (embedded mode)."""
        ...

    async def fund(self, amount_wei: int) -> DepositInfo:
        """Add ``amount_wei`` to the voucher deposit (embedded mode)."""
        ...

    async def aclose(self) -> None:
        """Release everything (connections, the embedded market's services)."""
        ...


def sign_request_headers(
    account: LocalAccount, method: str, target: str, body: bytes = b"", *, timestamp: float | None = None
) -> dict[str, str]:
    """The headers that authenticate one gateway request as ``account`` (no key is sent).

    The signature is EIP-191 ``personal_sign`` of the text ``PROXIMA-REQUEST-V1``, the method, the path and
    query, the timestamp and the body's SHA-256 (hex), one per line, as the gateway's
    ``proxima.marketplace.gateway.auth`` checks it.

    Args:
        account: The client's key.
        method: HTTP method.
        target: Path and query exactly as sent (``/v1/jobs?limit=5``).
        body: The exact body bytes sent.
        timestamp: Unix seconds to sign (now when omitted).

    Returns:
        ``X-Proxima-Address``, ``X-Proxima-Timestamp`` and ``X-Proxima-Signature``.
    """
    stamp = f"{time.time() if timestamp is None else timestamp:.3f}"
    digest = hashlib.sha256(body).hexdigest()
    message = f"{REQUEST_SIGNING_VERSION}\n{method.upper()}\n{target}\n{stamp}\n{digest}"
    signed = account.sign_message(encode_defunct(text=message))
    return {
        "X-Proxima-Address": account.address,
        "X-Proxima-Timestamp": stamp,
        "X-Proxima-Signature": "0x" + bytes(signed.signature).hex(),
    }


class GatewayTransport:
    """A gateway's REST API over httpx (one connection pool, HTTP keep-alive).

    Args:
        base_url: The gateway's URL (``http://127.0.0.1:8080``).
        api_key: An API key (``pxk_...``); or
        signer: the client's key, to sign each request instead (exactly one of the two).
        timeout: Seconds for one HTTP exchange (the SSE stream waits as long as the caller does).
        max_connections: Connections kept to the gateway (``map`` follows each job on one).

    Raises:
        ClientError: If neither or both of ``api_key`` and ``signer`` are given.
    """

    mode = "gateway"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        signer: LocalAccount | None = None,
        timeout: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        if (api_key is None) == (signer is None):
            raise ClientError("give the gateway client an api_key or a signer (exactly one)")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._signer = signer
        self._timeout = timeout
        self._stamp_lock = threading.Lock()
        self._last_stamp = 0.0
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def __repr__(self) -> str:  # never the key
        auth = (
            "api key"
            if self._api_key is not None
            else f"signed by {self._signer.address if self._signer else ''}"
        )
        return f"GatewayTransport({self.base_url!r}, {auth})"

    @property
    def receipt_domain(self) -> Mapping[str, Any] | None:
        """Unknown at a gateway: receipts are checked in the domain they carry."""
        return None

    # --- HTTP ---------------------------------------------------------------------------------------------

    def _stamp(self) -> float:
        """A timestamp for a signature, never equal to the previous one (the gateway refuses replays)."""
        with self._stamp_lock:
            stamp = max(round(time.time(), 3), round(self._last_stamp + 0.001, 3))
            self._last_stamp = stamp
            return stamp

    def _build(
        self, method: str, path: str, body: bytes | None, params: Mapping[str, Any] | None
    ) -> httpx.Request:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        request = self._http.build_request(method, path, content=body, headers=headers, params=params)
        if self._signer is not None:
            target = request.url.raw_path.decode("ascii")
            request.headers.update(
                sign_request_headers(self._signer, method, target, body or b"", timestamp=self._stamp())
            )
        return request

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> httpx.Response:
        for attempt in range(_RETRIES_429 + 1):
            request = self._build(method, path, body, params)
            try:
                response = await self._http.send(request)
            except httpx.TimeoutException as err:
                raise GatewayConnectionError(
                    str(request.url), f"no answer within {self._timeout:g} s"
                ) from err
            except httpx.HTTPError as err:
                raise GatewayConnectionError(str(request.url), f"{type(err).__name__}: {err}") from err
            if response.status_code in ok:
                return response
            error = _api_error(response)
            if isinstance(error, RateLimitedError) and attempt < _RETRIES_429:
                log.info(
                    "rate limited by the gateway", extra={"retry_after": error.retry_after, "path": path}
                )
                await asyncio.sleep(min(error.retry_after, 10.0))
                continue
            raise error
        raise AssertionError("unreachable")

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as err:
            raise GatewayError(
                response.status_code, "invalid_json", "the gateway's answer is not JSON"
            ) from err

    # --- the protocol --------------------------------------------------------------------------------------

    async def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs`` (retried after a 429: the body carries an idempotency key)."""
        import json

        raw = json.dumps(dict(body), separators=(",", ":")).encode()
        job: dict[str, Any] = await self._json("POST", "/v1/jobs", body=raw)
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``."""
        job: dict[str, Any] = await self._json("GET", f"/v1/jobs/{job_id}")
        return job

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        """``DELETE /v1/jobs/{id}``; None when the gateway answers 409 (already finished)."""
        try:
            job: dict[str, Any] = await self._json("DELETE", f"/v1/jobs/{job_id}")
        except GatewayError as err:
            if err.status == 409:
                return None
            raise
        return job

    async def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        """Follow the job's SSE stream until its ``end`` event (or ``timeout``), then read the job.

        A broken stream is resumed after the last event seen (``Last-Event-ID`` semantics through
        ``?after=``); if streaming keeps failing, the job is polled.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        after = 0
        failures = 0
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return await self.job(job_id)
            try:
                async with asyncio.timeout(remaining):
                    if failures < 3:
                        after, ended = await self._follow(job_id, after)
                    else:
                        ended = (await self.job(job_id)).get("status") in TERMINAL
                        if not ended:
                            await asyncio.sleep(_POLL_S)
            except TimeoutError:
                return await self.job(job_id)
            except GatewayConnectionError as err:
                failures += 1
                log.info("job event stream broke", extra={"job_id": job_id, "error": str(err)[:200]})
                await asyncio.sleep(min(_POLL_S * failures, 1.0))
                continue
            if ended:
                job = await self.job(job_id)
                if job.get("status") in TERMINAL:
                    return job

    async def _follow(self, job_id: str, after: int) -> tuple[int, bool]:
        """Read the SSE stream from ``after``; ``(last event id, whether "end" came)``."""
        request = self._build("GET", f"/v1/jobs/{job_id}/events", None, {"after": after})
        request.extensions["timeout"] = httpx.Timeout(self._timeout, read=None).as_dict()
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as err:
            raise GatewayConnectionError(str(request.url), f"{type(err).__name__}: {err}") from err
        try:
            if response.status_code != 200:
                await response.aread()
                raise _api_error(response)
            event: str | None = None
            async for line in _lines(response):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("id:"):
                    with contextlib.suppress(ValueError):
                        after = max(after, int(line[3:].strip()))
                elif not line:
                    if event == "end":
                        return after, True
                    event = None
            return after, False
        finally:
            await response.aclose()

    async def offers(self, workload: str | None = None) -> list[dict[str, Any]]:
        """``GET /v1/offers`` (all live offers, or those serving ``workload``)."""
        params: dict[str, Any] = {"limit": 10_000}
        if workload is not None:
            params["workload"] = workload
        data = await self._json("GET", "/v1/offers", params=params)
        offers: list[dict[str, Any]] = list(data.get("data", []))
        return offers

    async def measured_rtt_ms(self, provider: str) -> float | None:
        """``GET /v1/providers/{address}``: the gateway's measured RTT to the provider."""
        try:
            data = await self._json("GET", f"/v1/providers/{provider}")
        except JobNotFoundError:
            return None
        rtt = (data.get("gateway") or {}).get("measured_rtt_ms")
        return None if rtt is None else float(rtt)

    async def account(self) -> dict[str, Any]:
        """``GET /v1/account``."""
        data: dict[str, Any] = await self._json("GET", "/v1/account")
        return data

    async def deposit(self) -> DepositInfo | None:
        """None: at a gateway, the operator's deposit pays providers; the client has a budget."""
        return None

    async def fund(self, amount_wei: int) -> DepositInfo:
        """Not available: a gateway's operator sets client budgets.

        Raises:
            UnsupportedOperationError: Always.
        """
        raise UnsupportedOperationError(
            "fund",
            "at a gateway the operator pays providers and sets your budget (proxima-gateway set-budget); "
            "fund() is for embedded mode",
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


async def _lines(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        yield line.rstrip("\r")


def _api_error(response: httpx.Response) -> ClientError:
    """The client error for a gateway's error answer."""
    code, message, param = "error", response.reason_phrase or "error", None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        detail = response.json()["error"]
        code = str(detail.get("code", code))
        message = str(detail.get("message", message))
        param = detail.get("param")
    retry_after = None
    with contextlib.suppress(TypeError, ValueError):
        retry_after = float(response.headers.get("Retry-After", ""))
    return error_from_api(response.status_code, code, message, param, retry_after=retry_after)
