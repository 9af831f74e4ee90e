"""A chain reached over JSON-RPC (HTTP): anvil locally, any EVM chain in production."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from requests.exceptions import RequestException
from web3 import HTTPProvider, Web3
from web3.exceptions import Web3Exception

from ._backend import Chain, ChainConnectionError, ChainError, SnapshotError, SnapshotId

__all__ = ["RpcChain"]

log = logging.getLogger(__name__)


class RpcChain(Chain):
    """A chain behind an HTTP JSON-RPC URL.

    :meth:`mine`, :meth:`advance_time`, :meth:`snapshot` and :meth:`revert` use the
    development methods of anvil and hardhat (``evm_mine``, ``evm_snapshot``, ...);
    production nodes do not have them.

    Args:
        url: The node's HTTP URL, for example ``http://127.0.0.1:8545``.
        accounts: Accounts (with keys) that will sign transactions.
        request_timeout: Seconds to wait for one RPC answer.
        receipt_timeout: Seconds to wait for a transaction to be mined.

    Raises:
        ChainConnectionError: If nothing answers ``eth_chainId`` at ``url``.
    """

    def __init__(
        self,
        url: str,
        accounts: Sequence[LocalAccount] = (),
        *,
        request_timeout: float = 30.0,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.url = url
        self._session = requests.Session()
        provider = HTTPProvider(url, request_kwargs={"timeout": request_timeout}, session=self._session)
        w3 = Web3(provider)
        super().__init__(w3, accounts, receipt_timeout=receipt_timeout)
        try:
            chain_id = self.chain_id
        except (RequestException, Web3Exception, OSError) as err:
            self._session.close()
            raise ChainConnectionError(
                f"no JSON-RPC node answers at {url} ({err}); start one (for example "
                "`proxima-devnet`) or check the URL"
            ) from err
        log.debug("connected to %s (chain id %d)", url, chain_id)

    def _rpc(self, method: str, *params: Any) -> Any:
        try:
            response = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        except (RequestException, OSError) as err:
            raise ChainConnectionError(f"{method} to {self.url} failed: {err}") from err
        if "error" in response:
            raise ChainError(
                f"{method} failed at {self.url}: {response['error']}; "
                "development methods need anvil or hardhat"
            )
        return response.get("result")

    def mine(self) -> None:
        """Mine one empty block (``evm_mine``)."""
        self._rpc("evm_mine")

    def _mine_at(self, timestamp: int) -> None:
        self._rpc("evm_setNextBlockTimestamp", timestamp)
        self._rpc("evm_mine")

    def snapshot(self) -> SnapshotId:
        """Record the chain state (``evm_snapshot``); see :meth:`Chain.snapshot`."""
        return SnapshotId(str(self._rpc("evm_snapshot")))

    def revert(self, snapshot_id: SnapshotId) -> None:
        """Return to a snapshot (``evm_revert``); see :meth:`Chain.revert`.

        Raises:
            SnapshotError: If the node does not know the id (or it was already used).
        """
        if self._rpc("evm_revert", snapshot_id) is not True:
            raise SnapshotError(f"unknown or already used snapshot id {snapshot_id}")

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()
