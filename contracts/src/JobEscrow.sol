// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IJobEscrow} from "./interfaces/IJobEscrow.sol";
import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";

/// @title JobEscrow
/// @notice Implements {IJobEscrow}; see the interface for the rules.
contract JobEscrow is IJobEscrow, EIP712, ReentrancyGuardTransient {
    using SafeCast for uint256;

    bytes32 public constant JOB_TERMS_TYPEHASH = keccak256(
        "JobTerms(bytes32 jobId,address client,address provider,uint256 price,uint256 slashAmount,bytes32 specHash,uint64 acceptBy,uint64 deliveryDeadline,uint64 challengeWindow)"
    );
    bytes32 public constant VERDICT_TYPEHASH = keccak256("Verdict(bytes32 jobId,bytes32 resultHash,bool resultValid)");
    bytes32 public constant REASON_MISSED_DEADLINE = "MISSED_DEADLINE";
    bytes32 public constant REASON_LOST_DISPUTE = "LOST_DISPUTE";
    uint256 private constant _BPS = 10_000;

    /// @notice Deployment parameters.
    struct Parameters {
        uint256 feeBps;
        uint256 finderShareBps;
        uint256 disputeBondBps;
        uint256 disputeWindow;
        uint256 verdictQuorum;
        uint256 maxJobDuration;
        uint256 minChallengeWindow;
        uint256 maxChallengeWindow;
    }

    IProviderRegistry public immutable registry;
    IRewardPool public immutable rewardPool;
    uint256 public immutable feeBps;
    uint256 public immutable finderShareBps;
    uint256 public immutable disputeBondBps;
    uint256 public immutable disputeWindow;
    uint256 public immutable verdictQuorum;
    uint256 public immutable maxJobDuration;
    uint256 public immutable minChallengeWindow;
    uint256 public immutable maxChallengeWindow;

    mapping(bytes32 jobId => Job) private _jobs;
    mapping(address account => uint256) private _credits;
    uint256 private _totalEscrowed;

    constructor(IProviderRegistry registry_, IRewardPool rewardPool_, Parameters memory params)
        EIP712("Proxima Escrow", "1")
    {
        if (params.feeBps > _BPS) revert EscrowInvalidParameter("feeBps", params.feeBps);
        if (params.finderShareBps > _BPS) revert EscrowInvalidParameter("finderShareBps", params.finderShareBps);
        if (params.verdictQuorum == 0) revert EscrowInvalidParameter("verdictQuorum", 0);
        if (params.minChallengeWindow > params.maxChallengeWindow) {
            revert EscrowInvalidParameter("minChallengeWindow", params.minChallengeWindow);
        }
        registry = registry_;
        rewardPool = rewardPool_;
        feeBps = params.feeBps;
        finderShareBps = params.finderShareBps;
        disputeBondBps = params.disputeBondBps;
        disputeWindow = params.disputeWindow;
        verdictQuorum = params.verdictQuorum;
        maxJobDuration = params.maxJobDuration;
        minChallengeWindow = params.minChallengeWindow;
        maxChallengeWindow = params.maxChallengeWindow;
    }

    /// @inheritdoc IJobEscrow
    function openJob(JobTerms calldata terms, bytes calldata providerSignature) external payable nonReentrant {
        bytes32 jobId = terms.jobId;
        if (_jobs[jobId].status != Status.None) revert EscrowJobExists(jobId);
        if (msg.sender != terms.client) revert EscrowNotClient(jobId, msg.sender, terms.client);
        if (terms.price == 0) revert EscrowZeroPrice(jobId);
        if (msg.value != terms.price) revert EscrowWrongDeposit(jobId, msg.value, terms.price);
        if (block.timestamp > terms.acceptBy) revert EscrowQuoteExpired(jobId, terms.acceptBy, block.timestamp);
        if (terms.deliveryDeadline <= block.timestamp || terms.deliveryDeadline > block.timestamp + maxJobDuration) {
            revert EscrowInvalidDeadline(jobId, terms.deliveryDeadline, block.timestamp, maxJobDuration);
        }
        if (terms.challengeWindow < minChallengeWindow || terms.challengeWindow > maxChallengeWindow) {
            revert EscrowInvalidChallengeWindow(jobId, terms.challengeWindow, minChallengeWindow, maxChallengeWindow);
        }
        if (!registry.isActiveProvider(terms.provider)) revert EscrowProviderInactive(terms.provider);
        (address signer,,) = ECDSA.tryRecoverCalldata(_hashTerms(terms), providerSignature);
        if (signer != terms.provider) revert EscrowInvalidSignature(terms.provider, signer);

        _jobs[jobId] = Job({
            client: terms.client,
            status: Status.Accepted,
            deliveryDeadline: terms.deliveryDeadline,
            provider: terms.provider,
            challengeWindow: terms.challengeWindow,
            price: terms.price.toUint128(),
            slashAmount: terms.slashAmount.toUint128(),
            resultHash: bytes32(0),
            challengeEndsAt: 0,
            disputeEndsAt: 0,
            disputeBond: 0
        });
        _totalEscrowed += msg.value;
        emit JobOpened(
            jobId,
            terms.client,
            terms.provider,
            terms.price,
            terms.slashAmount,
            terms.specHash,
            terms.deliveryDeadline,
            terms.challengeWindow
        );
    }

    /// @inheritdoc IJobEscrow
    function commitResult(bytes32 jobId, bytes32 resultHash) external {
        Job storage job = _requireStatus(jobId, Status.Accepted);
        if (msg.sender != job.provider) revert EscrowNotProvider(jobId, msg.sender, job.provider);
        if (resultHash == bytes32(0)) revert EscrowZeroResult(jobId);
        if (block.timestamp > job.deliveryDeadline) {
            revert EscrowDeadlinePassed(jobId, job.deliveryDeadline, block.timestamp);
        }
        uint64 challengeEndsAt = (block.timestamp + job.challengeWindow).toUint64();
        job.status = Status.Delivered;
        job.resultHash = resultHash;
        job.challengeEndsAt = challengeEndsAt;
        emit ResultCommitted(jobId, msg.sender, resultHash, challengeEndsAt);
    }

    /// @inheritdoc IJobEscrow
    function confirmResult(bytes32 jobId) external nonReentrant {
        Job storage job = _requireStatus(jobId, Status.Delivered);
        if (msg.sender != job.client) revert EscrowNotClient(jobId, msg.sender, job.client);
        if (block.timestamp > job.challengeEndsAt) {
            revert EscrowChallengeWindowClosed(jobId, job.challengeEndsAt, block.timestamp);
        }
        _settle(jobId, job, 0, true);
    }

    /// @inheritdoc IJobEscrow
    function releasePayment(bytes32 jobId) external nonReentrant {
        Job storage job = _requireStatus(jobId, Status.Delivered);
        if (block.timestamp <= job.challengeEndsAt) {
            revert EscrowChallengeWindowOpen(jobId, job.challengeEndsAt, block.timestamp);
        }
        _settle(jobId, job, 0, false);
    }

    /// @inheritdoc IJobEscrow
    function claimTimeout(bytes32 jobId) external nonReentrant {
        Job storage job = _requireStatus(jobId, Status.Accepted);
        if (block.timestamp <= job.deliveryDeadline) {
            revert EscrowDeadlineNotReached(jobId, job.deliveryDeadline, block.timestamp);
        }
        (address client, address provider, uint256 price) = (job.client, job.provider, job.price);
        job.status = Status.Refunded;
        _totalEscrowed -= price;
        registry.recordOutcome(provider, 0, 1, 0);
        uint256 slashed =
            registry.slash(provider, job.slashAmount, msg.sender, finderShareBps, REASON_MISSED_DEADLINE, jobId);
        emit JobTimedOut(jobId, provider, price, slashed);
        _send(client, price);
    }

    /// @inheritdoc IJobEscrow
    function disputeResult(bytes32 jobId) external payable nonReentrant {
        Job storage job = _requireStatus(jobId, Status.Delivered);
        if (msg.sender != job.client) revert EscrowNotClient(jobId, msg.sender, job.client);
        if (block.timestamp > job.challengeEndsAt) {
            revert EscrowChallengeWindowClosed(jobId, job.challengeEndsAt, block.timestamp);
        }
        uint256 bond = _bondFor(job.price);
        if (msg.value != bond) revert EscrowWrongDeposit(jobId, msg.value, bond);
        uint64 disputeEndsAt = (block.timestamp + disputeWindow).toUint64();
        job.status = Status.Disputed;
        job.disputeBond = bond.toUint128();
        job.disputeEndsAt = disputeEndsAt;
        _totalEscrowed += bond;
        emit JobDisputed(jobId, msg.sender, bond, disputeEndsAt);
    }

    /// @inheritdoc IJobEscrow
    function resolveDispute(Verdict calldata verdict, bytes[] calldata signatures) external nonReentrant {
        bytes32 jobId = verdict.jobId;
        Job storage job = _requireStatus(jobId, Status.Disputed);
        if (verdict.resultHash != job.resultHash) revert EscrowVerdictMismatch(jobId, verdict.resultHash, job.resultHash);
        if (signatures.length < verdictQuorum) revert EscrowQuorumNotReached(jobId, signatures.length, verdictQuorum);
        bytes32 digest = _hashTypedDataV4(
            keccak256(abi.encode(VERDICT_TYPEHASH, verdict.jobId, verdict.resultHash, verdict.resultValid))
        );
        address previous = address(0);
        for (uint256 i = 0; i < signatures.length; ++i) {
            (address signer,,) = ECDSA.tryRecoverCalldata(digest, signatures[i]);
            if (signer == address(0)) revert EscrowInvalidVerdictSignature(i);
            if (signer <= previous) revert EscrowVerifiersNotSorted(previous, signer);
            if (!registry.isActiveVerifier(signer)) revert EscrowVerifierNotActive(signer);
            previous = signer;
        }
        emit DisputeResolved(jobId, verdict.resultValid, signatures.length);
        uint256 bond = job.disputeBond;
        if (verdict.resultValid) {
            _settle(jobId, job, bond, false);
            return;
        }
        (address client, address provider, uint256 price) = (job.client, job.provider, job.price);
        job.status = Status.Refunded;
        _totalEscrowed -= price + bond;
        registry.recordOutcome(provider, 0, 1, 1);
        registry.slash(provider, job.slashAmount, client, finderShareBps, REASON_LOST_DISPUTE, jobId);
        _send(client, price + bond);
    }

    /// @inheritdoc IJobEscrow
    function expireDispute(bytes32 jobId) external nonReentrant {
        Job storage job = _requireStatus(jobId, Status.Disputed);
        if (block.timestamp <= job.disputeEndsAt) {
            revert EscrowDisputeWindowOpen(jobId, job.disputeEndsAt, block.timestamp);
        }
        (address client, address provider, uint256 price, uint256 bond) =
            (job.client, job.provider, job.price, job.disputeBond);
        job.status = Status.Refunded;
        emit DisputeExpired(jobId, price, bond);
        _sendOrCredit(client, price);
        if (bond > 0) _sendOrCredit(provider, bond);
    }

    /// @inheritdoc IJobEscrow
    function withdrawCredit() external nonReentrant returns (uint256 amount) {
        amount = _credits[msg.sender];
        if (amount == 0) revert EscrowNoCredit(msg.sender);
        _credits[msg.sender] = 0;
        _totalEscrowed -= amount;
        emit CreditWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @inheritdoc IJobEscrow
    function creditOf(address account) external view returns (uint256) {
        return _credits[account];
    }

    /// @inheritdoc IJobEscrow
    function jobOf(bytes32 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    /// @inheritdoc IJobEscrow
    function disputeBondOf(bytes32 jobId) external view returns (uint256) {
        return _bondFor(_jobs[jobId].price);
    }

    /// @inheritdoc IJobEscrow
    function totalEscrowed() external view returns (uint256) {
        return _totalEscrowed;
    }

    /// @inheritdoc IJobEscrow
    function hashTerms(JobTerms calldata terms) external view returns (bytes32) {
        return _hashTerms(terms);
    }

    /// @inheritdoc IJobEscrow
    function hashVerdict(Verdict calldata verdict) external view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(VERDICT_TYPEHASH, verdict.jobId, verdict.resultHash, verdict.resultValid))
        );
    }

    /// @dev Pays the provider the price less the protocol fee, plus `extra` (a dispute bond it won).
    function _settle(bytes32 jobId, Job storage job, uint256 extra, bool confirmed) private {
        (address provider, uint256 price) = (job.provider, job.price);
        uint256 fee = (price * feeBps) / _BPS;
        uint256 payout = price - fee + extra;
        job.status = Status.Settled;
        _totalEscrowed -= price + extra;
        emit JobSettled(jobId, provider, payout, fee, confirmed);
        registry.recordOutcome(provider, 1, 0, 0);
        rewardPool.depositFees{value: fee}(provider, price);
        _send(provider, payout);
    }

    function _bondFor(uint256 price) private view returns (uint256) {
        return (price * disputeBondBps) / _BPS;
    }

    function _requireStatus(bytes32 jobId, Status expected) private view returns (Job storage job) {
        job = _jobs[jobId];
        if (job.status == Status.None) revert EscrowUnknownJob(jobId);
        if (job.status != expected) revert EscrowWrongStatus(jobId, job.status, expected);
    }

    function _hashTerms(JobTerms calldata t) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    JOB_TERMS_TYPEHASH,
                    t.jobId,
                    t.client,
                    t.provider,
                    t.price,
                    t.slashAmount,
                    t.specHash,
                    t.acceptBy,
                    t.deliveryDeadline,
                    t.challengeWindow
                )
            )
        );
    }

    /// @dev Pays `to`, or credits it when it refuses: the amount then stays in `_totalEscrowed` until withdrawn.
    function _sendOrCredit(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (ok) {
            _totalEscrowed -= amount;
        } else {
            _credits[to] += amount;
            emit PaymentCredited(to, amount);
        }
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert EscrowTransferFailed(to, amount);
    }
}
