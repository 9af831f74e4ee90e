// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IFaultProofs} from "./interfaces/IFaultProofs.sol";
import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";

/// @title FaultProofs
/// @notice Implements {IFaultProofs}; see the interface for the rules.
contract FaultProofs is IFaultProofs, EIP712, ReentrancyGuardTransient {
    bytes32 public constant JOB_RECEIPT_TYPEHASH = keccak256(
        "JobReceipt(bytes32 jobId,address provider,address client,bytes32 resultHash,uint64 queueMicros,uint64 computeMicros)"
    );
    bytes32 public constant REASON_EQUIVOCATION = "EQUIVOCATION";
    uint256 private constant _BPS = 10_000;

    IProviderRegistry public immutable registry;
    /// @notice Share of the provider's slashable stake taken for one proven equivocation.
    uint256 public immutable equivocationSlashBps;
    /// @notice Share of the slash paid to whoever proved it.
    uint256 public immutable finderShareBps;

    mapping(address provider => mapping(bytes32 jobId => bool)) private _proven;

    constructor(IProviderRegistry registry_, uint256 equivocationSlashBps_, uint256 finderShareBps_)
        EIP712("Proxima Receipts", "1")
    {
        if (equivocationSlashBps_ == 0 || equivocationSlashBps_ > _BPS) {
            revert FaultProofsInvalidParameter("equivocationSlashBps", equivocationSlashBps_);
        }
        if (finderShareBps_ > _BPS) revert FaultProofsInvalidParameter("finderShareBps", finderShareBps_);
        registry = registry_;
        equivocationSlashBps = equivocationSlashBps_;
        finderShareBps = finderShareBps_;
    }

    /// @inheritdoc IFaultProofs
    function proveEquivocation(
        JobReceipt calldata a,
        bytes calldata signatureA,
        JobReceipt calldata b,
        bytes calldata signatureB
    ) external nonReentrant returns (uint256 slashed) {
        if (a.jobId != b.jobId) revert EquivocationDifferentJobs(a.jobId, b.jobId);
        if (a.provider != b.provider) revert EquivocationDifferentProviders(a.provider, b.provider);
        if (a.resultHash == b.resultHash) revert EquivocationSameResult(a.jobId, a.resultHash);
        address provider = a.provider;
        if (_proven[provider][a.jobId]) revert EquivocationAlreadyProven(provider, a.jobId);
        _checkSigner(provider, a, signatureA);
        _checkSigner(provider, b, signatureB);
        uint256 amount = (registry.slashableOf(provider) * equivocationSlashBps) / _BPS;
        if (amount == 0) revert EquivocationNothingToSlash(provider);

        _proven[provider][a.jobId] = true;
        slashed = registry.slash(provider, amount, msg.sender, finderShareBps, REASON_EQUIVOCATION, a.jobId);
        emit EquivocationProven(provider, a.jobId, msg.sender, a.resultHash, b.resultHash, slashed);
    }

    /// @inheritdoc IFaultProofs
    function isEquivocationProven(address provider, bytes32 jobId) external view returns (bool) {
        return _proven[provider][jobId];
    }

    /// @inheritdoc IFaultProofs
    function hashReceipt(JobReceipt calldata receipt) external view returns (bytes32) {
        return _hashReceipt(receipt);
    }

    function _checkSigner(address provider, JobReceipt calldata receipt, bytes calldata signature) private view {
        (address signer,,) = ECDSA.tryRecoverCalldata(_hashReceipt(receipt), signature);
        if (signer != provider) revert EquivocationInvalidSignature(provider, signer);
    }

    function _hashReceipt(JobReceipt calldata r) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    JOB_RECEIPT_TYPEHASH, r.jobId, r.provider, r.client, r.resultHash, r.queueMicros, r.computeMicros
                )
            )
        );
    }
}
