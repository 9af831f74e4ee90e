// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Proofs of provider faults that need no one's judgement
/// @notice Two receipts signed by the same provider for the same job with different result hashes prove
/// equivocation on their own. Anyone can submit them; the provider is slashed and the submitter gets the
/// finder's share.
interface IFaultProofs {
    /// @notice What a provider signs when it returns a result (timings in microseconds).
    struct JobReceipt {
        bytes32 jobId;
        address provider;
        address client;
        bytes32 resultHash;
        uint64 queueMicros;
        uint64 computeMicros;
    }

    event EquivocationProven(
        address indexed provider,
        bytes32 indexed jobId,
        address indexed finder,
        bytes32 resultHashA,
        bytes32 resultHashB,
        uint256 slashed
    );

    error EquivocationDifferentJobs(bytes32 jobIdA, bytes32 jobIdB);
    error EquivocationDifferentProviders(address providerA, address providerB);
    error EquivocationSameResult(bytes32 jobId, bytes32 resultHash);
    error EquivocationInvalidSignature(address expected, address recovered);
    error EquivocationAlreadyProven(address provider, bytes32 jobId);
    error EquivocationNothingToSlash(address provider);
    error FaultProofsInvalidParameter(bytes32 name, uint256 value);

    function proveEquivocation(
        JobReceipt calldata a,
        bytes calldata signatureA,
        JobReceipt calldata b,
        bytes calldata signatureB
    ) external returns (uint256 slashed);

    function isEquivocationProven(address provider, bytes32 jobId) external view returns (bool);

    function hashReceipt(JobReceipt calldata receipt) external view returns (bytes32);
}
