"""Typed bindings of the Proxima contracts, returning pydantic models and raising decoded custom errors."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils.address import to_checksum_address
from web3.types import TxReceipt

from proxima.sdk.bindings._base import (
    ContractBinding,
    DecodedEvent,
    ProximaModel,
    decode_events,
    decode_logs,
    decode_revert,
)
from proxima.sdk.bindings.attestations import AttestationRegistry, Figures, ReportSummary
from proxima.sdk.bindings.escrow import EscrowJob, JobEscrow, JobStatus
from proxima.sdk.bindings.faults import FaultKind, FaultProofs, canary_commitment
from proxima.sdk.bindings.registry import ProviderRegistry, RegistryAccount, Role
from proxima.sdk.bindings.rewards import EpochTotals, ProviderRewards, RewardPool
from proxima.sdk.bindings.vouchers import ClientDeposit, PaymentVouchers, RedeemedTotals
from proxima.sdk.chain import Chain, Deployment
from proxima.sdk.errors import DeploymentError
from proxima.sdk.types import Address

__all__ = [
    "AttestationRegistry",
    "ClientDeposit",
    "ContractBinding",
    "DecodedEvent",
    "EpochTotals",
    "EscrowJob",
    "FaultKind",
    "FaultProofs",
    "Figures",
    "JobEscrow",
    "JobStatus",
    "PaymentVouchers",
    "ProviderRegistry",
    "ProviderRewards",
    "ProximaContracts",
    "ProximaModel",
    "RedeemedTotals",
    "RegistryAccount",
    "ReportSummary",
    "RewardPool",
    "Role",
    "canary_commitment",
    "decode_events",
    "decode_logs",
    "decode_revert",
]


@dataclass(frozen=True)
class ProximaContracts:
    """All Proxima contracts of one deployment."""

    chain: Chain
    deployment: Deployment
    registry: ProviderRegistry
    attestations: AttestationRegistry
    escrow: JobEscrow
    vouchers: PaymentVouchers
    fault_proofs: FaultProofs
    rewards: RewardPool

    @classmethod
    def from_deployment(cls, chain: Chain, deployment: Deployment) -> ProximaContracts:
        """Bind every contract of ``deployment``; the chain ids must match."""
        if deployment.chain_id != chain.chain_id:
            raise DeploymentError(
                f"the deployment is for chain {deployment.chain_id} but the chain is {chain.chain_id}"
            )
        c = deployment.contracts
        return cls(
            chain=chain,
            deployment=deployment,
            registry=ProviderRegistry(chain, c["ProviderRegistry"]),
            attestations=AttestationRegistry(chain, c["AttestationRegistry"]),
            escrow=JobEscrow(chain, c["JobEscrow"]),
            vouchers=PaymentVouchers(chain, c["PaymentVouchers"]),
            fault_proofs=FaultProofs(chain, c["FaultProofs"]),
            rewards=RewardPool(chain, c["RewardPool"]),
        )

    @property
    def faults(self) -> FaultProofs:
        """The same binding as :attr:`fault_proofs` (the shorter name)."""
        return self.fault_proofs

    @property
    def names_by_address(self) -> dict[Address, str]:
        return {to_checksum_address(a): name for name, a in self.deployment.contracts.items()}

    def events(self, receipt: TxReceipt) -> list[DecodedEvent]:
        """Every Proxima event in ``receipt``, in log order."""
        return decode_events(receipt, self.names_by_address)

    def logs(self, from_block: int | None = None, to_block: int | str = "latest") -> list[DecodedEvent]:
        """Every Proxima event from ``from_block`` (default: the deployment block), in chain order.

        Keep ranges narrow on py-evm, whose ``eth_getLogs`` slows with chain length.
        """
        start = self.deployment.block_number if from_block is None else from_block
        raw = self.chain.w3.eth.get_logs(
            {
                "address": [to_checksum_address(a) for a in self.deployment.contracts.values()],
                "fromBlock": start,
                "toBlock": to_block,  # type: ignore[typeddict-item]
            }
        )
        return decode_logs(raw, self.names_by_address)

    def held_eth(self) -> int:
        """ETH held by all the contracts together."""
        return sum(self.chain.balance(a) for a in self.deployment.contracts.values())

    def liabilities(self) -> int:
        """What the contracts owe: stakes + unbonding + open escrows + deposits + reward pool + treasury."""
        return (
            self.registry.total_staked()
            + self.registry.total_unbonding()
            + self.escrow.total_escrowed()
            + self.vouchers.total_deposits()
            + self.rewards.pool_balance()
            + self.rewards.treasury_balance()
        )
