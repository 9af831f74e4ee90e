// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Signed performance attestations and verifier reports
/// @notice Providers sign what they measured on their own hardware (EIP-712 `Attestation`); staked verifiers
/// sign what they measured of a provider (EIP-712 `VerifierReport`). Anyone may submit them, one at a time or
/// in batches. Each signer's nonce is consumed inside the signed struct, and each carries a deadline, so
/// replayed, cross-chain, expired and wrongly signed messages are rejected. Only the latest figures are
/// stored; the full history is in the events.
interface IAttestationRegistry {
    /// @notice A provider's own measurement. Units: FLOP/s and bytes/s.
    struct Attestation {
        address provider;
        bytes32 benchmarkId;
        uint64 gemmFlops;
        uint64 memBandwidth;
        uint32 epoch;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice One measurement inside a provider-signed batch.
    struct Measurement {
        bytes32 benchmarkId;
        uint64 gemmFlops;
        uint64 memBandwidth;
    }

    /// @notice Many measurements of one epoch signed once by the provider (EIP-712 `AttestationBatch`, whose
    /// `measurements` member is an array of `Measurement` structs). One nonce and one signature cover all.
    struct AttestationBatch {
        address provider;
        uint32 epoch;
        uint256 nonce;
        uint256 deadline;
        Measurement[] measurements;
    }

    /// @notice A verifier's measurement of a provider, answering challenge `challengeId`.
    struct VerifierReport {
        address verifier;
        address provider;
        bytes32 challengeId;
        uint64 measuredFlops;
        bool passed;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice An EIP-2098 compact signature, used in batches to keep calldata small.
    struct CompactSignature {
        bytes32 r;
        bytes32 vs;
    }

    /// @notice The latest attested figures of a provider.
    struct Figures {
        uint64 gemmFlops;
        uint64 memBandwidth;
        uint32 epoch;
        uint64 updatedAt;
    }

    /// @notice What verifiers reported about a provider so far.
    struct ReportSummary {
        uint64 measuredFlops;
        uint32 passes;
        uint32 failures;
        uint64 updatedAt;
    }

    event AttestationSubmitted(
        address indexed provider,
        bytes32 indexed benchmarkId,
        uint64 gemmFlops,
        uint64 memBandwidth,
        uint32 epoch,
        uint256 nonce
    );
    event VerifierReportSubmitted(
        address indexed verifier,
        address indexed provider,
        bytes32 indexed challengeId,
        uint64 measuredFlops,
        bool passed,
        uint256 nonce
    );

    error AttestationExpired(address signer, uint256 deadline, uint256 timestamp);
    error AttestationInvalidSigner(address expected, address recovered);
    error AttestationUnknownProvider(address provider);
    error AttestationUnknownVerifier(address verifier);
    error AttestationSelfReport(address account);
    error AttestationStaleEpoch(address provider, uint32 epoch, uint32 latestEpoch);
    error AttestationLengthMismatch(uint256 items, uint256 signatures);
    error AttestationEmptyBatch();

    function submitAttestation(Attestation calldata attestation, bytes calldata signature) external;

    function submitAttestations(Attestation[] calldata attestations, CompactSignature[] calldata signatures)
        external;

    /// @notice Submits a batch the provider signed once; the last measurement becomes its latest figures.
    function submitAttestationBatch(AttestationBatch calldata batch, bytes calldata signature) external;

    function submitReport(VerifierReport calldata report, bytes calldata signature) external;

    function submitReports(VerifierReport[] calldata reports, CompactSignature[] calldata signatures) external;

    function latestFigures(address provider) external view returns (Figures memory);

    function latestReport(address provider) external view returns (ReportSummary memory);

    /// @notice The EIP-712 digest a provider signs for `attestation`.
    function hashAttestation(Attestation calldata attestation) external view returns (bytes32);

    /// @notice The EIP-712 digest a provider signs for `batch`.
    function hashAttestationBatch(AttestationBatch calldata batch) external view returns (bytes32);

    /// @notice The EIP-712 digest a verifier signs for `report`.
    function hashReport(VerifierReport calldata report) external view returns (bytes32);
}
