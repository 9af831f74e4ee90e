// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Proofs of provider faults: equivocation, wrong canary answers and invalid results
/// @notice Three kinds of evidence slash a provider, each taking a share of its slashable stake and paying the
/// finder's share of what was taken to whoever submitted it:
/// - Equivocation needs no one's judgement: two receipts signed by the same provider for the same job with
///   different result hashes prove it on their own.
/// - A wrong canary answer: a verifier committed `keccak256(abi.encode(jobId, specHash, salt))` on chain before
///   sending the job; the provider's signed receipt, the reveal (`specHash`, `salt`) and a quorum of verifier
///   verdicts saying the result is invalid prove it.
/// - An invalid result of any other job (a voucher-paid one, say): the provider's signed receipt and a quorum of
///   verifier verdicts saying the result is invalid prove it.
/// Whether a result is wrong cannot be computed on chain (the work is too big, floats are not bitwise
/// reproducible), so for the last two kinds it is decided by staked verifiers: at least `verdictQuorum` distinct
/// active verifiers sign `Verdict(jobId, resultHash, false)` in this contract's EIP-712 domain, having checked
/// the evidence themselves. One provider is slashed at most once per job, whatever the kind of proof.
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

    /// @notice What verifiers sign about a result; proofs here need `resultValid == false`.
    struct Verdict {
        bytes32 jobId;
        bytes32 resultHash;
        bool resultValid;
    }

    /// @notice The kind of fault proven for a (provider, job); `None` while nothing is.
    enum FaultKind {
        None,
        Equivocation,
        Canary,
        InvalidResult
    }

    event EquivocationProven(
        address indexed provider,
        bytes32 indexed jobId,
        address indexed finder,
        bytes32 resultHashA,
        bytes32 resultHashB,
        uint256 slashed
    );
    event CanaryCommitted(bytes32 indexed commitment, address indexed verifier);
    event CanaryFaultProven(
        address indexed provider, bytes32 indexed jobId, address indexed finder, bytes32 resultHash, uint256 slashed
    );
    event InvalidResultProven(
        address indexed provider, bytes32 indexed jobId, address indexed finder, bytes32 resultHash, uint256 slashed
    );

    error EquivocationDifferentJobs(bytes32 jobIdA, bytes32 jobIdB);
    error EquivocationDifferentProviders(address providerA, address providerB);
    error EquivocationSameResult(bytes32 jobId, bytes32 resultHash);
    error EquivocationInvalidSignature(address expected, address recovered);
    error EquivocationAlreadyProven(address provider, bytes32 jobId);
    error EquivocationNothingToSlash(address provider);
    error FaultProofsInvalidParameter(bytes32 name, uint256 value);
    /// @notice `commitCanary` by an account that is not an active verifier.
    error CanaryCommitterNotVerifier(address account);
    error CanaryZeroCommitment();
    error CanaryAlreadyCommitted(bytes32 commitment, address verifier);
    /// @notice No canary was committed for `keccak256(abi.encode(jobId, specHash, salt))`.
    error CanaryNotCommitted(bytes32 commitment, bytes32 jobId);
    /// @notice The receipt is not signed by its provider in this contract's domain.
    error FaultInvalidReceiptSignature(address provider, address recovered);
    error FaultQuorumNotReached(bytes32 jobId, uint256 signers, uint256 quorum);
    /// @notice Verdict signature number `index` is malformed.
    error FaultInvalidVerdictSignature(uint256 index);
    /// @notice A verdict signer is not an active verifier. A signature over another verdict (another job, result
    /// hash, or `resultValid == true`) recovers to an unrelated address and ends here too.
    error FaultVerifierNotActive(address verifier);
    /// @notice Verdict signers must be strictly ascending (which also rules out duplicates).
    error FaultVerifiersNotSorted(address previous, address next);
    error FaultAlreadyProven(address provider, bytes32 jobId, FaultKind kind);
    error FaultNothingToSlash(address provider);

    function proveEquivocation(
        JobReceipt calldata a,
        bytes calldata signatureA,
        JobReceipt calldata b,
        bytes calldata signatureB
    ) external returns (uint256 slashed);

    /// @notice An active verifier commits to a canary job before sending it:
    /// `commitment = keccak256(abi.encode(jobId, specHash, salt))`. Each commitment can be made once.
    function commitCanary(bytes32 commitment) external;

    /// @notice Who committed `commitment` and when (block timestamp); `(address(0), 0)` if no one did.
    function canaryOf(bytes32 commitment) external view returns (address verifier, uint64 committedAt);

    /// @notice Proves that a provider answered a committed canary wrongly: its receipt for the canary job,
    /// signed in this contract's domain, the reveal of the commitment, and at least `verdictQuorum` signatures
    /// of distinct active verifiers over `Verdict(receipt.jobId, receipt.resultHash, false)`, sorted by signer.
    /// Slashes `faultSlashBps` of the provider's slashable stake; the caller gets the finder's share.
    /// @return slashed the amount taken from the provider.
    function proveCanaryFault(
        JobReceipt calldata receipt,
        bytes calldata providerSignature,
        bytes32 specHash,
        bytes32 salt,
        bytes[] calldata verdictSignatures
    ) external returns (uint256 slashed);

    /// @notice Proves that a provider returned an invalid result: as {proveCanaryFault} without a commitment.
    /// @return slashed the amount taken from the provider.
    function proveInvalidResult(
        JobReceipt calldata receipt,
        bytes calldata providerSignature,
        bytes[] calldata verdictSignatures
    ) external returns (uint256 slashed);

    /// @notice Whether equivocation (and not another kind of fault) was proven for this provider and job.
    function isEquivocationProven(address provider, bytes32 jobId) external view returns (bool);

    /// @notice Whether any kind of fault was proven for this provider and job.
    function isFaultProven(address provider, bytes32 jobId) external view returns (bool);

    /// @notice The kind of fault proven for this provider and job (`None` if none).
    function faultOf(address provider, bytes32 jobId) external view returns (FaultKind);

    function hashReceipt(JobReceipt calldata receipt) external view returns (bytes32);

    function hashVerdict(Verdict calldata verdict) external view returns (bytes32);
}
