"""Proxima sdk: the protocol library and the client (``from proxima.sdk import Client, AsyncClient``).

The client's names are loaded on first use, so that importing a submodule (``proxima.sdk.workloads``) does
not import the client and its dependencies (httpx, rich).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxima.sdk.client import (
        AccountInfo,
        AsyncClient,
        AsyncJob,
        AuthenticationError,
        BudgetExceededError,
        Client,
        ClientClosedError,
        ClientError,
        Constraints,
        DepositInfo,
        Estimate,
        GatewayConnectionError,
        GatewayError,
        InsufficientDepositError,
        InvalidSpecError,
        Job,
        JobCancelledError,
        JobError,
        JobFailedError,
        JobNotFoundError,
        JobOutcome,
        JobSpec,
        JobTimeoutError,
        NoProviderError,
        OfferInfo,
        Placement,
        RateLimitedError,
        SessionBudget,
        Timing,
        UnsupportedOperationError,
        VerificationFailedError,
    )
    from proxima.sdk.errors import SdkError

__all__ = [
    "AccountInfo",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BudgetExceededError",
    "Client",
    "ClientClosedError",
    "ClientError",
    "Constraints",
    "DepositInfo",
    "Estimate",
    "GatewayConnectionError",
    "GatewayError",
    "InsufficientDepositError",
    "InvalidSpecError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobOutcome",
    "JobSpec",
    "JobTimeoutError",
    "NoProviderError",
    "OfferInfo",
    "Placement",
    "RateLimitedError",
    "SdkError",
    "SessionBudget",
    "Timing",
    "UnsupportedOperationError",
    "VerificationFailedError",
]


def __getattr__(name: str) -> Any:
    if name == "SdkError":
        return importlib.import_module("proxima.sdk.errors").SdkError
    if name in __all__:
        return getattr(importlib.import_module("proxima.sdk.client"), name)
    raise AttributeError(f"module 'proxima.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
