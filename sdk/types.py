"""Domain types shared across Proxima (``NewType``s in web3.py's ``types.py`` style)."""

from __future__ import annotations

from typing import NewType

from eth_typing import ChecksumAddress

__all__ = ["Address", "Bytes32", "JobId", "Wei"]

Address = ChecksumAddress
"""An EIP-55 checksummed Ethereum address."""

Bytes32 = NewType("Bytes32", bytes)
"""Exactly 32 bytes (hashes, ids)."""

JobId = NewType("JobId", bytes)
"""A job's 32-byte id, chosen by the client, unique per escrow."""

Wei = NewType("Wei", int)
"""An amount of native ETH in wei."""
