"""Helpers of the indexer tests: a deployment with staked providers, cheap events, index comparisons.

Events come from provider-signed attestation batches (``submitAttestationBatch``): one transaction, one
``AttestationSubmitted`` event per measurement. ``benchmark_ids`` are derived from a ``tag`` so that a test
can tell which transactions' events are in an index (for example those of orphaned blocks).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.types import TxReceipt

from proxima.audit.store import AuditStore
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.chain import Chain, Deployment
from proxima.sdk.deploy import deploy_all
from proxima.sdk.eip712 import AttestationBatch, LocalSigner, Measurement
from proxima.sdk.peerid import peer_id_from_key

PROVIDER_STAKE = 10 * 10**18


@dataclass
class Deployed:
    """A fresh deployment with ``providers`` registered (accounts 1..n)."""

    chain: Chain
    deployment: Deployment
    contracts: ProximaContracts
    providers: list[LocalAccount]
    payer: LocalAccount

    def attest(self, provider: int = 0, count: int = 3, tag: str = "x", epoch: int = 1) -> TxReceipt:
        """One batch of ``count`` measurements signed by ``providers[provider]``: ``count`` events."""
        account = self.providers[provider]
        batch = AttestationBatch(
            provider=account.address,
            epoch=epoch,
            nonce=self.contracts.attestations.nonce_of(account.address),
            deadline=self.chain.now() + 3_600,
            measurements=tuple(
                Measurement(
                    benchmark_id=benchmark_id(tag, i), gemm_flops=10**12 + i, mem_bandwidth=10**11 + i
                )
                for i in range(count)
            ),
        )
        signed = batch.sign(LocalSigner(account), self.contracts.attestations.domain)
        return self.contracts.attestations.submit_attestation_batch(self.payer, signed)


def benchmark_id(tag: str, i: int) -> bytes:
    return keccak(text=f"{tag}/{i}")


def deploy(chain: Chain, providers: int = 2) -> Deployed:
    """Deploy every contract from account 0 and register ``providers`` providers (accounts 1..)."""
    deployer = chain.accounts[0]
    deployment = deploy_all(chain, deployer)
    contracts = ProximaContracts.from_deployment(chain, deployment)
    accounts = chain.accounts[1 : 1 + providers]
    for account in accounts:
        contracts.registry.register(
            account, peer_id_from_key(bytes(account.key)), b"\x11" * 32, PROVIDER_STAKE
        )
    return Deployed(chain, deployment, contracts, list(accounts), chain.accounts[9])


def dump(store: AuditStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the events and transactions tables, in key order (to compare two indexes)."""
    conn: sqlite3.Connection = store._conn
    return {
        "events": conn.execute("SELECT * FROM events ORDER BY block_number, log_index").fetchall(),
        "transactions": conn.execute("SELECT * FROM transactions ORDER BY block_number, tx_index").fetchall(),
    }


def chain_events(d: Deployed, to_block: int | str = "latest") -> list[tuple[int, int, str, dict[str, Any]]]:
    """What the chain has: (block, log index, event name, args) of every Proxima log, by the bindings."""
    return [(e.block_number, e.log_index, e.name, e.args) for e in d.contracts.logs(to_block=to_block)]


def indexed_events(store: AuditStore) -> list[tuple[int, int, str, dict[str, Any]]]:
    return [(e.block_number, e.log_index, e.name, e.args) for e in store.events()]
