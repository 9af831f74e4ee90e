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
    bytes32 public constant VERDICT_TYPEHASH = keccak256("Verdict(bytes32 jobId,bytes32 resultHash,bool resultValid)");
    bytes32 public constant REASON_EQUIVOCATION = "EQUIVOCATION";
    bytes32 public constant REASON_CANARY = "CANARY";
    bytes32 public constant REASON_INVALID_RESULT = "INVALID_RESULT";
    uint256 private constant _BPS = 10_000;

    struct Canary {
        address verifier;
        uint64 committedAt;
    }

    IProviderRegistry public immutable registry;
    /// @notice Share of the provider's slashable stake taken for one proven equivocation.
    uint256 public immutable equivocationSlashBps;
    /// @notice Share of the provider's slashable stake taken for one proven wrong canary or invalid result.
    uint256 public immutable faultSlashBps;
    /// @notice Share of the slash paid to whoever proved it.
    uint256 public immutable finderShareBps;
    /// @notice How many distinct active verifiers must sign a verdict.
    uint256 public immutable verdictQuorum;

    mapping(address provider => mapping(bytes32 jobId => FaultKind)) private _faults;
    mapping(bytes32 commitment => Canary) private _canaries;

    constructor(
        IProviderRegistry registry_,
        uint256 equivocationSlashBps_,
        uint256 faultSlashBps_,
        uint256 finderShareBps_,
        uint256 verdictQuorum_
    ) EIP712("Proxima Receipts", "1") {
        if (equivocationSlashBps_ == 0 || equivocationSlashBps_ > _BPS) {
            revert FaultProofsInvalidParameter("equivocationSlashBps", equivocationSlashBps_);
        }
        if (faultSlashBps_ == 0 || faultSlashBps_ > _BPS) {
            revert FaultProofsInvalidParameter("faultSlashBps", faultSlashBps_);
        }
        if (finderShareBps_ > _BPS) revert FaultProofsInvalidParameter("finderShareBps", finderShareBps_);
        if (verdictQuorum_ == 0) revert FaultProofsInvalidParameter("verdictQuorum", 0);
        registry = registry_;
        equivocationSlashBps = equivocationSlashBps_;
        faultSlashBps = faultSlashBps_;
        finderShareBps = finderShareBps_;
        verdictQuorum = verdictQuorum_;
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
        if (_faults[provider][a.jobId] != FaultKind.None) revert EquivocationAlreadyProven(provider, a.jobId);
        _checkSigner(provider, a, signatureA);
        _checkSigner(provider, b, signatureB);
        uint256 amount = (registry.slashableOf(provider) * equivocationSlashBps) / _BPS;
        if (amount == 0) revert EquivocationNothingToSlash(provider);

        _faults[provider][a.jobId] = FaultKind.Equivocation;
        slashed = registry.slash(provider, amount, msg.sender, finderShareBps, REASON_EQUIVOCATION, a.jobId);
        emit EquivocationProven(provider, a.jobId, msg.sender, a.resultHash, b.resultHash, slashed);
    }

    /// @inheritdoc IFaultProofs
    function commitCanary(bytes32 commitment) external {
        if (commitment == bytes32(0)) revert CanaryZeroCommitment();
        if (!registry.isActiveVerifier(msg.sender)) revert CanaryCommitterNotVerifier(msg.sender);
        Canary storage canary = _canaries[commitment];
        if (canary.verifier != address(0)) revert CanaryAlreadyCommitted(commitment, canary.verifier);
        canary.verifier = msg.sender;
        canary.committedAt = uint64(block.timestamp);
        emit CanaryCommitted(commitment, msg.sender);
    }

    /// @inheritdoc IFaultProofs
    function canaryOf(bytes32 commitment) external view returns (address verifier, uint64 committedAt) {
        Canary storage canary = _canaries[commitment];
        return (canary.verifier, canary.committedAt);
    }

    /// @inheritdoc IFaultProofs
    function proveCanaryFault(
        JobReceipt calldata receipt,
        bytes calldata providerSignature,
        bytes32 specHash,
        bytes32 salt,
        bytes[] calldata verdictSignatures
    ) external nonReentrant returns (uint256 slashed) {
        bytes32 commitment = keccak256(abi.encode(receipt.jobId, specHash, salt));
        if (_canaries[commitment].verifier == address(0)) revert CanaryNotCommitted(commitment, receipt.jobId);
        slashed = _proveJudgedFault(receipt, providerSignature, verdictSignatures, FaultKind.Canary, REASON_CANARY);
        emit CanaryFaultProven(receipt.provider, receipt.jobId, msg.sender, receipt.resultHash, slashed);
    }

    /// @inheritdoc IFaultProofs
    function proveInvalidResult(
        JobReceipt calldata receipt,
        bytes calldata providerSignature,
        bytes[] calldata verdictSignatures
    ) external nonReentrant returns (uint256 slashed) {
        slashed = _proveJudgedFault(
            receipt, providerSignature, verdictSignatures, FaultKind.InvalidResult, REASON_INVALID_RESULT
        );
        emit InvalidResultProven(receipt.provider, receipt.jobId, msg.sender, receipt.resultHash, slashed);
    }

    /// @inheritdoc IFaultProofs
    function isEquivocationProven(address provider, bytes32 jobId) external view returns (bool) {
        return _faults[provider][jobId] == FaultKind.Equivocation;
    }

    /// @inheritdoc IFaultProofs
    function isFaultProven(address provider, bytes32 jobId) external view returns (bool) {
        return _faults[provider][jobId] != FaultKind.None;
    }

    /// @inheritdoc IFaultProofs
    function faultOf(address provider, bytes32 jobId) external view returns (FaultKind) {
        return _faults[provider][jobId];
    }

    /// @inheritdoc IFaultProofs
    function hashReceipt(JobReceipt calldata receipt) external view returns (bytes32) {
        return _hashReceipt(receipt);
    }

    /// @inheritdoc IFaultProofs
    function hashVerdict(Verdict calldata verdict) external view returns (bytes32) {
        return _hashVerdict(verdict.jobId, verdict.resultHash, verdict.resultValid);
    }

    /// @dev Checks the receipt's signature and the verdict quorum against it, marks the fault, slashes.
    function _proveJudgedFault(
        JobReceipt calldata receipt,
        bytes calldata providerSignature,
        bytes[] calldata verdictSignatures,
        FaultKind kind,
        bytes32 reason
    ) private returns (uint256 slashed) {
        address provider = receipt.provider;
        bytes32 jobId = receipt.jobId;
        FaultKind proven = _faults[provider][jobId];
        if (proven != FaultKind.None) revert FaultAlreadyProven(provider, jobId, proven);
        (address signer,,) = ECDSA.tryRecoverCalldata(_hashReceipt(receipt), providerSignature);
        if (signer != provider) revert FaultInvalidReceiptSignature(provider, signer);
        _checkVerdictQuorum(jobId, receipt.resultHash, verdictSignatures);
        uint256 amount = (registry.slashableOf(provider) * faultSlashBps) / _BPS;
        if (amount == 0) revert FaultNothingToSlash(provider);

        _faults[provider][jobId] = kind;
        slashed = registry.slash(provider, amount, msg.sender, finderShareBps, reason, jobId);
    }

    /// @dev At least `verdictQuorum` distinct active verifiers, strictly ascending, signed that the result is
    /// invalid. Activity is checked before order so that a signature over another verdict, which recovers to
    /// an unrelated address, is reported as such rather than as a sorting mistake.
    function _checkVerdictQuorum(bytes32 jobId, bytes32 resultHash, bytes[] calldata signatures) private view {
        if (signatures.length < verdictQuorum) revert FaultQuorumNotReached(jobId, signatures.length, verdictQuorum);
        bytes32 digest = _hashVerdict(jobId, resultHash, false);
        address previous = address(0);
        for (uint256 i = 0; i < signatures.length; ++i) {
            (address signer,,) = ECDSA.tryRecoverCalldata(digest, signatures[i]);
            if (signer == address(0)) revert FaultInvalidVerdictSignature(i);
            if (!registry.isActiveVerifier(signer)) revert FaultVerifierNotActive(signer);
            if (signer <= previous) revert FaultVerifiersNotSorted(previous, signer);
            previous = signer;
        }
    }

    function _checkSigner(address provider, JobReceipt calldata receipt, bytes calldata signature) private view {
        (address signer,,) = ECDSA.tryRecoverCalldata(_hashReceipt(receipt), signature);
        if (signer != provider) revert EquivocationInvalidSignature(provider, signer);
    }

    function _hashVerdict(bytes32 jobId, bytes32 resultHash, bool resultValid) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VERDICT_TYPEHASH, jobId, resultHash, resultValid)));
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
