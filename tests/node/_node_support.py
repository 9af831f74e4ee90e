"""Types shared by the node tests (the fixtures that build them are in this folder's conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Deployment, InProcessChain


@dataclass(frozen=True)
class Deployed:
    """The chain, the bound contracts and the deployment; accounts 1-3 are staked providers."""

    chain: InProcessChain
    c: ProximaContracts
    deployment: Deployment
