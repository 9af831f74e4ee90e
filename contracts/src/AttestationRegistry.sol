// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

import {IAttestationRegistry} from "./interfaces/IAttestationRegistry.sol";
import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";

/// @title AttestationRegistry
/// @notice Implements {IAttestationRegistry}; see the interface for the rules.
/// @dev Storage per provider is one slot of latest figures and one slot of report counts; nonces are one slot
/// per signer. Everything else is in the events. In a batch from one signer every slot after the first is
/// warm. A provider-signed AttestationBatch pays one signature check, one nonce and one storage write
/// for all its measurements; the rest is calldata and one event per measurement.
contract AttestationRegistry is IAttestationRegistry, EIP712, Nonces {
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(address provider,bytes32 benchmarkId,uint64 gemmFlops,uint64 memBandwidth,uint32 epoch,uint256 nonce,uint256 deadline)"
    );
    bytes32 public constant MEASUREMENT_TYPEHASH =
        keccak256("Measurement(bytes32 benchmarkId,uint64 gemmFlops,uint64 memBandwidth)");
    bytes32 public constant ATTESTATION_BATCH_TYPEHASH = keccak256(
        "AttestationBatch(address provider,uint32 epoch,uint256 nonce,uint256 deadline,Measurement[] measurements)"
        "Measurement(bytes32 benchmarkId,uint64 gemmFlops,uint64 memBandwidth)"
    );
    bytes32 public constant VERIFIER_REPORT_TYPEHASH = keccak256(
        "VerifierReport(address verifier,address provider,bytes32 challengeId,uint64 measuredFlops,bool passed,uint256 nonce,uint256 deadline)"
    );

    IProviderRegistry public immutable registry;

    mapping(address provider => Figures) private _figures;
    mapping(address provider => ReportSummary) private _reports;

    constructor(IProviderRegistry registry_) EIP712("Proxima Attestations", "1") {
        registry = registry_;
    }

    /// @inheritdoc IAttestationRegistry
    function submitAttestation(Attestation calldata attestation, bytes calldata signature) external {
        _checkSigner(attestation.provider, _hashAttestation(attestation), signature, attestation.deadline);
        _recordAttestation(attestation);
    }

    /// @inheritdoc IAttestationRegistry
    function submitAttestations(Attestation[] calldata attestations, CompactSignature[] calldata signatures)
        external
    {
        uint256 count = _checkBatch(attestations.length, signatures.length);
        for (uint256 i = 0; i < count; ++i) {
            Attestation calldata attestation = attestations[i];
            _checkCompact(attestation.provider, _hashAttestation(attestation), signatures[i], attestation.deadline);
            _recordAttestation(attestation);
        }
    }

    /// @inheritdoc IAttestationRegistry
    function submitAttestationBatch(AttestationBatch calldata batch, bytes calldata signature) external {
        uint256 count = batch.measurements.length;
        if (count == 0) revert AttestationEmptyBatch();
        address provider = batch.provider;
        _checkSigner(provider, _hashAttestationBatch(batch), signature, batch.deadline);
        if (!registry.isActiveProvider(provider)) revert AttestationUnknownProvider(provider);
        _useCheckedNonce(provider, batch.nonce);
        uint32 latestEpoch = _figures[provider].epoch;
        if (batch.epoch < latestEpoch) revert AttestationStaleEpoch(provider, batch.epoch, latestEpoch);
        for (uint256 i = 0; i < count; ++i) {
            Measurement calldata m = batch.measurements[i];
            emit AttestationSubmitted(provider, m.benchmarkId, m.gemmFlops, m.memBandwidth, batch.epoch, batch.nonce);
        }
        Measurement calldata last = batch.measurements[count - 1];
        _figures[provider] = Figures({
            gemmFlops: last.gemmFlops,
            memBandwidth: last.memBandwidth,
            epoch: batch.epoch,
            updatedAt: uint64(block.timestamp)
        });
    }

    /// @inheritdoc IAttestationRegistry
    function submitReport(VerifierReport calldata report, bytes calldata signature) external {
        _checkSigner(report.verifier, _hashReport(report), signature, report.deadline);
        _recordReport(report);
    }

    /// @inheritdoc IAttestationRegistry
    function submitReports(VerifierReport[] calldata reports, CompactSignature[] calldata signatures) external {
        uint256 count = _checkBatch(reports.length, signatures.length);
        for (uint256 i = 0; i < count; ++i) {
            VerifierReport calldata report = reports[i];
            _checkCompact(report.verifier, _hashReport(report), signatures[i], report.deadline);
            _recordReport(report);
        }
    }

    /// @inheritdoc IAttestationRegistry
    function latestFigures(address provider) external view returns (Figures memory) {
        return _figures[provider];
    }

    /// @inheritdoc IAttestationRegistry
    function latestReport(address provider) external view returns (ReportSummary memory) {
        return _reports[provider];
    }

    /// @inheritdoc IAttestationRegistry
    function hashAttestation(Attestation calldata attestation) external view returns (bytes32) {
        return _hashAttestation(attestation);
    }

    /// @inheritdoc IAttestationRegistry
    function hashAttestationBatch(AttestationBatch calldata batch) external view returns (bytes32) {
        return _hashAttestationBatch(batch);
    }

    /// @inheritdoc IAttestationRegistry
    function hashReport(VerifierReport calldata report) external view returns (bytes32) {
        return _hashReport(report);
    }

    function _recordAttestation(Attestation calldata attestation) private {
        address provider = attestation.provider;
        if (!registry.isActiveProvider(provider)) revert AttestationUnknownProvider(provider);
        _useCheckedNonce(provider, attestation.nonce);
        Figures storage latest = _figures[provider];
        uint32 latestEpoch = latest.epoch;
        if (attestation.epoch < latestEpoch) revert AttestationStaleEpoch(provider, attestation.epoch, latestEpoch);
        _figures[provider] = Figures({
            gemmFlops: attestation.gemmFlops,
            memBandwidth: attestation.memBandwidth,
            epoch: attestation.epoch,
            updatedAt: uint64(block.timestamp)
        });
        emit AttestationSubmitted(
            provider,
            attestation.benchmarkId,
            attestation.gemmFlops,
            attestation.memBandwidth,
            attestation.epoch,
            attestation.nonce
        );
    }

    function _recordReport(VerifierReport calldata report) private {
        address verifier = report.verifier;
        if (!registry.isActiveVerifier(verifier)) revert AttestationUnknownVerifier(verifier);
        if (verifier == report.provider) revert AttestationSelfReport(verifier);
        if (registry.accountOf(report.provider).role != IProviderRegistry.Role.Provider) {
            revert AttestationUnknownProvider(report.provider);
        }
        _useCheckedNonce(verifier, report.nonce);
        ReportSummary storage summary = _reports[report.provider];
        summary.measuredFlops = report.measuredFlops;
        if (report.passed) {
            summary.passes += 1;
        } else {
            summary.failures += 1;
        }
        summary.updatedAt = uint64(block.timestamp);
        emit VerifierReportSubmitted(
            verifier, report.provider, report.challengeId, report.measuredFlops, report.passed, report.nonce
        );
    }

    function _checkBatch(uint256 items, uint256 signatures) private pure returns (uint256) {
        if (items == 0) revert AttestationEmptyBatch();
        if (items != signatures) revert AttestationLengthMismatch(items, signatures);
        return items;
    }

    function _checkSigner(address expected, bytes32 digest, bytes calldata signature, uint256 deadline)
        private
        view
    {
        if (block.timestamp > deadline) revert AttestationExpired(expected, deadline, block.timestamp);
        (address recovered,,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (recovered != expected) revert AttestationInvalidSigner(expected, recovered);
    }

    function _checkCompact(address expected, bytes32 digest, CompactSignature calldata signature, uint256 deadline)
        private
        view
    {
        if (block.timestamp > deadline) revert AttestationExpired(expected, deadline, block.timestamp);
        (address recovered,,) = ECDSA.tryRecover(digest, signature.r, signature.vs);
        if (recovered != expected) revert AttestationInvalidSigner(expected, recovered);
    }

    function _hashAttestation(Attestation calldata a) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ATTESTATION_TYPEHASH,
                    a.provider,
                    a.benchmarkId,
                    a.gemmFlops,
                    a.memBandwidth,
                    a.epoch,
                    a.nonce,
                    a.deadline
                )
            )
        );
    }

    /// @dev EIP-712 encodes an array of structs as the hash of its members' struct hashes, concatenated.
    function _hashAttestationBatch(AttestationBatch calldata b) private view returns (bytes32) {
        uint256 count = b.measurements.length;
        bytes32[] memory hashes = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            Measurement calldata m = b.measurements[i];
            hashes[i] = keccak256(abi.encode(MEASUREMENT_TYPEHASH, m.benchmarkId, m.gemmFlops, m.memBandwidth));
        }
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ATTESTATION_BATCH_TYPEHASH,
                    b.provider,
                    b.epoch,
                    b.nonce,
                    b.deadline,
                    keccak256(abi.encodePacked(hashes))
                )
            )
        );
    }

    function _hashReport(VerifierReport calldata r) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VERIFIER_REPORT_TYPEHASH,
                    r.verifier,
                    r.provider,
                    r.challengeId,
                    r.measuredFlops,
                    r.passed,
                    r.nonce,
                    r.deadline
                )
            )
        );
    }
}
