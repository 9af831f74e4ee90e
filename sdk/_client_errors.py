"""The errors :class:`proxima.sdk.client.AsyncClient` and :class:`~proxima.sdk.client.Client` raise.

Every one derives from :class:`ClientError` (itself a :class:`proxima.sdk.errors.SdkError`), builds its
message from its arguments, and carries what a caller needs to act on it: the gateway's error ``code`` and
``param``, the job id, the amounts of a budget refusal, the detail of a failed check. Both modes (gateway
and embedded) raise the same types: :func:`error_from_api` turns an API error answer (an HTTP body in
gateway mode, the gateway code's own ``ApiError`` in embedded mode) into one of them.
"""

from __future__ import annotations

from typing import Any

from proxima.sdk.errors import SdkError

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ClientClosedError",
    "ClientError",
    "GatewayConnectionError",
    "GatewayError",
    "InsufficientDepositError",
    "InvalidSpecError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NoProviderError",
    "RateLimitedError",
    "UnsupportedOperationError",
    "VerificationFailedError",
    "error_from_api",
]


class ClientError(SdkError):
    """Root of the client library's errors."""


class InvalidSpecError(ClientError, ValueError):
    """A job spec is invalid; nothing was sent.

    Args:
        field: The field at fault, dotted (``"input.m"``).
        problem: What is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid job spec: {field}: {problem}")


class ClientClosedError(ClientError):
    """The client was closed; open a new one."""

    def __init__(self) -> None:
        super().__init__("the client is closed")


class UnsupportedOperationError(ClientError):
    """The operation does not exist in this client's mode.

    Args:
        operation: What was asked (``"fund"``).
        reason: Why it cannot be done here, and what to do instead.
    """

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        super().__init__(f"{operation} is not available: {reason}")


class BudgetExceededError(ClientError):
    """A job would cost more than a budget allows; it was refused before any money moved.

    Args:
        scope: Which budget: ``"job"`` (the job's own cap or the client's per-job cap), ``"session"`` (this
            client's session budget) or ``"gateway"`` (the account's budget at the gateway).
        needed_wei: What the job may cost (the cheapest qualifying offer for ``job``, the reservation
            otherwise).
        available_wei: What the budget has left.
        detail: More about it (the gateway's message, the offers looked at).
    """

    def __init__(self, scope: str, needed_wei: int, available_wei: int, detail: str = "") -> None:
        self.scope = scope
        self.needed_wei = needed_wei
        self.available_wei = available_wei
        self.detail = detail
        message = f"{scope} budget exceeded: the job needs up to {needed_wei} wei, {available_wei} wei left"
        super().__init__(f"{message} ({detail})" if detail else message)


class InsufficientDepositError(BudgetExceededError):
    """The voucher deposit (embedded mode) cannot pay for the job; nothing was sent.

    ``fund()`` the deposit, or open the client with ``auto_top_up_wei``.
    """

    def __init__(self, needed_wei: int, available_wei: int) -> None:
        super().__init__(
            "deposit",
            needed_wei,
            available_wei,
            "the PaymentVouchers deposit less what unredeemed vouchers owe; fund() it",
        )


class GatewayError(ClientError):
    """The gateway (or the embedded market) refused a request or could not answer it.

    Args:
        status: The HTTP status (embedded mode: the status the gateway would have answered).
        code: The gateway's machine-readable code (``"invalid_input"``, ``"no_provider"``...).
        message: Its explanation.
        param: The request field at fault, dotted, when one is.
    """

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        where = f" [{param}]" if param else ""
        super().__init__(f"gateway answered {status} {code}{where}: {message}")


class AuthenticationError(GatewayError):
    """The gateway did not accept the credentials (401): unknown API key, bad signature, no account."""


class RateLimitedError(GatewayError):
    """Too many requests (429); ``retry_after`` says how many seconds to wait.

    Args:
        status: 429.
        code: ``"rate_limited"``.
        message: The gateway's explanation.
        param: Unused.
        retry_after: Seconds to wait before retrying.
    """

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, *, retry_after: float = 1.0
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, code, message, param)


class NoProviderError(GatewayError):
    """No live offer can serve the job now (503 ``no_provider``): retry later or relax the constraints."""


class JobNotFoundError(GatewayError, KeyError):
    """No such job for this client (404)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class GatewayConnectionError(GatewayError, ConnectionError):
    """The gateway could not be reached, or the connection broke.

    Args:
        url: What was being reached.
        problem: What went wrong (the transport error).
    """

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        super().__init__(0, "unreachable", f"{url}: {problem}")


class JobError(ClientError):
    """Something about one job.

    Args:
        job_id: The job.
        message: What happened.
    """

    def __init__(self, job_id: str, message: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id}: {message}")


class JobFailedError(JobError):
    """The job failed at the gateway (every attempt failed, no provider, deadline...); nothing was charged.

    Args:
        job_id: The job.
        code: The gateway's failure code (``"no_candidate"``, ``"deadline"``, ``"region_unavailable"``,
            ``"budget"``, ``"verification_failed"``...).
        message: The gateway's explanation.
        attempts: The job's attempts, as the gateway reports them.
    """

    def __init__(
        self, job_id: str, code: str, message: str, attempts: list[dict[str, Any]] | None = None
    ) -> None:
        self.code = code
        self.message = message
        self.attempts = list(attempts or [])
        super().__init__(job_id, f"failed ({code}): {message}")


class JobCancelledError(JobError):
    """The job was cancelled before it delivered a result; nothing was charged."""

    def __init__(self, job_id: str, message: str = "cancelled") -> None:
        super().__init__(job_id, message)


class JobTimeoutError(JobError, TimeoutError):
    """The job was not finished after the time the caller waited; it continues (wait again or cancel it).

    Args:
        job_id: The job.
        timeout: Seconds waited.
        status: Its status when the wait ended.
    """

    def __init__(self, job_id: str, timeout: float, status: str) -> None:
        self.timeout = timeout
        self.status = status
        super().__init__(
            job_id, f"still {status} after {timeout:g} s (it continues; wait again or cancel it)"
        )


class VerificationFailedError(JobError):
    """The job's result did not pass the client's own verification; do not use it.

    Args:
        job_id: The job.
        method: The check that failed (``"freivalds"``, ``"receipt"``, ``"schema"``...).
        detail: What failed and by how much.
        provider: The provider that delivered it.
    """

    def __init__(self, job_id: str, method: str, detail: str, provider: str | None = None) -> None:
        self.method = method
        self.detail = detail
        self.provider = provider
        by = f" from {provider}" if provider else ""
        super().__init__(job_id, f"result{by} failed {method} verification: {detail}")


def error_from_api(
    status: int, code: str, message: str, param: str | None = None, *, retry_after: float | None = None
) -> ClientError:
    """The client error for an API error answer (the same mapping in gateway and embedded mode).

    Args:
        status: HTTP status.
        code: The error's ``code``.
        message: Its ``message``.
        param: Its ``param``.
        retry_after: The ``Retry-After`` header of a 429, seconds.

    Returns:
        :class:`BudgetExceededError` (``scope="gateway"``) for 402, :class:`AuthenticationError` for 401,
        :class:`RateLimitedError` for 429, :class:`NoProviderError` for 503 ``no_provider``,
        :class:`JobNotFoundError` for 404, :class:`InvalidSpecError` for 422 about the job's fields, else a
        :class:`GatewayError`.
    """
    if status == 402:
        return BudgetExceededError("gateway", *_amounts(message), message)
    if status == 401:
        return AuthenticationError(status, code, message, param)
    if status == 429:
        return RateLimitedError(status, code, message, param, retry_after=retry_after or 1.0)
    if status == 503 and code == "no_provider":
        return NoProviderError(status, code, message, param)
    if status == 404:
        return JobNotFoundError(status, code, message, param)
    if status == 422 and code in ("invalid_input", "invalid_request") and param:
        return InvalidSpecError(param, message)
    return GatewayError(status, code, message, param)


def _amounts(message: str) -> tuple[int, int]:
    """``(needed, available)`` from the gateway's 402 message ("... up to N wei ... M wei left"), else 0s."""
    words = message.replace(",", " ").split()
    numbers = [
        int(w) for i, w in enumerate(words) if w.isdigit() and i + 1 < len(words) and words[i + 1] == "wei"
    ]
    if len(numbers) >= 2:
        return numbers[0], numbers[1]
    return 0, 0
