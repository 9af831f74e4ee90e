"""Exception hierarchy of :mod:`proxima.audit`: everything it raises derives from AuditError."""

from __future__ import annotations

from proxima.contracts import ProximaError

__all__ = ["AuditError"]


class AuditError(ProximaError):
    """Root of the errors raised by the indexer, the ledger checks, the audit API and ``proxima-audit``."""
