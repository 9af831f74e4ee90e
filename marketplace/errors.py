"""Exception hierarchy of :mod:`proxima.marketplace`: everything it raises derives from MarketError."""

from __future__ import annotations

from proxima.contracts import ProximaError

__all__ = ["MarketConfigError", "MarketError"]


class MarketError(ProximaError):
    """Root of the errors raised by the matching engine and the gateway."""


class MarketConfigError(MarketError, ValueError):
    """A gateway setting or configuration file is missing or invalid; the message names the field."""
