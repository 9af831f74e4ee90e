"""Exception hierarchy of :mod:`proxima.node`: everything the provider node raises derives from NodeError."""

from __future__ import annotations

from proxima.contracts import ProximaError

__all__ = ["ConfigError", "KeystoreError", "NodeError"]


class NodeError(ProximaError):
    """Root of the errors raised by the provider node."""


class ConfigError(NodeError, ValueError):
    """A node configuration file or option is missing or invalid; the message names the field."""


class KeystoreError(NodeError):
    """The keystore is missing, unreadable, has unsafe permissions, or the passphrase is wrong."""
