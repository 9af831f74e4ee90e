"""The marketplace gateway: an HTTP API (FastAPI) in front of the Proxima network.

``create_app(settings)`` builds the ASGI app; ``proxima-gateway serve`` runs it. Clients authenticate with an
API key or signed requests (:func:`sign_request_headers`), have budgets (:class:`Accounts`), and submit jobs
that the dispatcher places, pays, runs with failover and verifies. See docs/GATEWAY.md.

The names below are imported lazily, so that importing one module of the package (the job store, say) does
not pull in the whole web application.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxima.marketplace.gateway.accounts import Accounts, BudgetExceededError, ClientAccount
    from proxima.marketplace.gateway.app import create_app
    from proxima.marketplace.gateway.auth import sign_request_headers
    from proxima.marketplace.gateway.services import GatewayServices
    from proxima.marketplace.gateway.settings import GatewaySettings, SettingsError, load_settings

__all__ = [
    "Accounts",
    "BudgetExceededError",
    "ClientAccount",
    "GatewayServices",
    "GatewaySettings",
    "SettingsError",
    "create_app",
    "load_settings",
    "sign_request_headers",
]

_HOMES = {
    "Accounts": "accounts",
    "BudgetExceededError": "accounts",
    "ClientAccount": "accounts",
    "create_app": "app",
    "sign_request_headers": "auth",
    "GatewayServices": "services",
    "GatewaySettings": "settings",
    "SettingsError": "settings",
    "load_settings": "settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
