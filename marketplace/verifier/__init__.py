"""The staked verifier service ``proxima-verify``: canaries, verdicts, challenges, verifier reports.

The wire models (:mod:`.protocol`) and the HTTP client (:mod:`.client`) are importable without the service's
dependencies being started; the service itself is :mod:`.service` (duties), :mod:`.app` (FastAPI) and
:mod:`.cli` (``proxima-verify init | register | serve``).
"""

from __future__ import annotations

from proxima.marketplace.verifier.client import (
    VerifierClient,
    VerifierClientError,
    VerifierRefusedError,
    VerifierResponseError,
    VerifierUnavailableError,
)
from proxima.marketplace.verifier.protocol import (
    Canary,
    CanaryRequest,
    CanaryReveal,
    Evidence,
    Health,
    SignedVerdict,
    VerifierInfo,
)

__all__ = [
    "Canary",
    "CanaryRequest",
    "CanaryReveal",
    "Evidence",
    "Health",
    "SignedVerdict",
    "VerifierClient",
    "VerifierClientError",
    "VerifierInfo",
    "VerifierRefusedError",
    "VerifierResponseError",
    "VerifierUnavailableError",
]
