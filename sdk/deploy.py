"""Deploying the Proxima contracts and wiring their roles."""

from __future__ import annotations

import logging
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxima.contracts import load_artifact
from proxima.sdk.bindings import ProximaContracts
from proxima.sdk.bindings._base import abi_type as _abi_type
from proxima.sdk.chain import Chain, Deployment, TransactionReverted
from proxima.sdk.errors import DeploymentError
from proxima.sdk.types import Address

__all__ = ["DeployParameters", "create_address", "deploy_all"]

log = logging.getLogger(__name__)

_ETH = 10**18
_DAY = 86_400


class DeployParameters(BaseModel):
    """Economic and timing parameters of a deployment (ETH amounts in wei, durations in seconds).

    The defaults suit a local devnet; every value is validated.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_provider_stake: int = Field(default=1 * _ETH, gt=0)
    min_verifier_stake: int = Field(default=2 * _ETH, gt=0)
    unbonding_delay: int = Field(default=7 * _DAY, ge=0)
    epoch_length: int = Field(default=_DAY, gt=0)
    treasury_bps: int = Field(default=1_000, ge=0, le=10_000)
    fee_bps: int = Field(default=200, ge=0, le=10_000)
    finder_share_bps: int = Field(default=5_000, ge=0, le=10_000)
    dispute_bond_bps: int = Field(default=5_000, ge=0)
    dispute_window: int = Field(default=_DAY, gt=0)
    verdict_quorum: int = Field(default=2, gt=0)
    max_job_duration: int = Field(default=_DAY, gt=0)
    min_challenge_window: int = Field(default=60, ge=0)
    max_challenge_window: int = Field(default=_DAY, ge=0)
    withdrawal_delay: int = Field(default=_DAY, ge=0)
    equivocation_slash_bps: int = Field(default=5_000, gt=0, le=10_000)
    fault_slash_bps: int = Field(default=5_000, gt=0, le=10_000)

    @model_validator(mode="after")
    def _check(self) -> DeployParameters:
        if self.min_challenge_window > self.max_challenge_window:
            raise ValueError("min_challenge_window must not exceed max_challenge_window")
        longest = self.max_job_duration + self.max_challenge_window + self.dispute_window
        if self.unbonding_delay < longest:
            raise ValueError(
                f"unbonding_delay ({self.unbonding_delay}s) must cover a job's longest life "
                f"({longest}s = max_job_duration + max_challenge_window + dispute_window), "
                "or a provider could withdraw before it is slashed"
            )
        return self


def create_address(sender: str, nonce: int) -> Address:
    """The address a contract created by ``sender`` with transaction ``nonce`` gets (CREATE)."""
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])


def _deploy(chain: Chain, deployer: LocalAccount, name: str, *args: Any) -> str:
    artifact = load_artifact(name)
    constructor: dict[str, Any] = next(
        (i for i in artifact.abi if i.get("type") == "constructor"), {"inputs": []}
    )
    types = [_abi_type(i) for i in constructor["inputs"]]
    data = HexStr("0x" + (artifact.bytecode + abi_encode(types, list(args))).hex())
    try:
        receipt = chain.send_transaction(deployer, {"data": data})
    except TransactionReverted as err:
        raise DeploymentError(f"deploying {name} reverted: {err}") from err
    address = receipt.get("contractAddress")
    if not address:
        raise DeploymentError(f"deploying {name}: the receipt has no contract address")
    log.info("contract deployed", extra={"contract": name, "address": address, "gas": receipt["gasUsed"]})
    return to_checksum_address(address)


def deploy_all(chain: Chain, deployer: LocalAccount, params: DeployParameters | None = None) -> Deployment:
    """Deploy every Proxima contract, grant the roles they need, and describe the result.

    Order: ``RewardPool`` -> ``ProviderRegistry`` -> ``AttestationRegistry`` -> ``JobEscrow`` ->
    ``PaymentVouchers`` -> ``FaultProofs``. Escrow and vouchers are fixed in the registry (job counters)
    and the pool (fees) at construction; escrow and fault proofs are then granted ``SLASHER_ROLE``.

    Args:
        chain: Where to deploy.
        deployer: Pays for the deployment and holds the admin roles.
        params: Economic parameters; devnet defaults when omitted.

    Returns:
        The deployment (chain id, addresses, first block, parameters).
    """
    p = params or DeployParameters()
    start_block = chain.block_number() + 1
    admin = deployer.address
    # The registry and the pool name escrow and vouchers as immutables, so their addresses are predicted
    # from the deployer's nonce (deployment order below) and checked once they exist.
    nonce = chain.w3.eth.get_transaction_count(admin)
    escrow_at, vouchers_at = create_address(admin, nonce + 3), create_address(admin, nonce + 4)
    pool = _deploy(
        chain, deployer, "RewardPool", admin, escrow_at, vouchers_at, p.epoch_length, p.treasury_bps
    )
    registry = _deploy(
        chain,
        deployer,
        "ProviderRegistry",
        admin,
        pool,
        escrow_at,
        vouchers_at,
        p.min_provider_stake,
        p.min_verifier_stake,
        p.unbonding_delay,
    )
    attestations = _deploy(chain, deployer, "AttestationRegistry", registry)
    escrow = _deploy(
        chain,
        deployer,
        "JobEscrow",
        registry,
        pool,
        (
            p.fee_bps,
            p.finder_share_bps,
            p.dispute_bond_bps,
            p.dispute_window,
            p.verdict_quorum,
            p.max_job_duration,
            p.min_challenge_window,
            p.max_challenge_window,
        ),
    )
    vouchers = _deploy(chain, deployer, "PaymentVouchers", registry, pool, p.fee_bps, p.withdrawal_delay)
    faults = _deploy(
        chain,
        deployer,
        "FaultProofs",
        registry,
        p.equivocation_slash_bps,
        p.fault_slash_bps,
        p.finder_share_bps,
        p.verdict_quorum,
    )
    if (escrow, vouchers) != (escrow_at, vouchers_at):
        raise DeploymentError(
            "another transaction from the deployer interleaved with the deployment: escrow and vouchers "
            f"landed at {escrow}, {vouchers} instead of {escrow_at}, {vouchers_at}; deploy again from an "
            "account that sends nothing else meanwhile"
        )
    deployment = Deployment(
        chain_id=chain.chain_id,
        deployer=admin,
        block_number=start_block,
        contracts={
            "RewardPool": pool,
            "ProviderRegistry": registry,
            "AttestationRegistry": attestations,
            "JobEscrow": escrow,
            "PaymentVouchers": vouchers,
            "FaultProofs": faults,
        },
        parameters=p.model_dump(),
    )
    contracts = ProximaContracts.from_deployment(chain, deployment)
    slasher = contracts.registry.role_id("SLASHER_ROLE")
    for member in (escrow, faults):
        contracts.registry.grant_role(deployer, slasher, member)
    return deployment
