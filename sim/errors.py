"""Exception hierarchy of :mod:`proxima.sim`: everything it raises derives from SimError."""

from __future__ import annotations

from proxima.contracts import ProximaError

__all__ = ["SimError"]


class SimError(ProximaError):
    """Root of the errors raised by the simulator, its data loaders, the replay and ``proxima-sim``."""
