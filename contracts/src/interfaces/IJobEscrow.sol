// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Per-job escrow with a challenge window and verifier-quorum disputes
/// @notice Life cycle: the client opens a job with the price and the provider's EIP-712 signature over the exact
/// terms (`Accepted`); the provider commits a result hash before the delivery deadline (`Delivered`); during
/// the challenge window the client may confirm (pays at once) or dispute (posts a bond); after the window
/// anyone may release the payment. A job not delivered by its deadline refunds the client and slashes the
/// provider. A dispute is decided by a quorum of registered verifiers' signatures over a `Verdict`; the loser
/// pays. A protocol fee on every payment goes to the reward pool.
interface IJobEscrow {
    enum Status {
        None,
        Accepted,
        Delivered,
        Disputed,
        Settled,
        Refunded
    }

    /// @notice The terms a provider signs to accept a job.
    struct JobTerms {
        bytes32 jobId;
        address client;
        address provider;
        uint256 price;
        uint256 slashAmount;
        bytes32 specHash;
        uint64 acceptBy;
        uint64 deliveryDeadline;
        uint64 challengeWindow;
    }

    /// @notice What verifiers sign to decide a dispute.
    struct Verdict {
        bytes32 jobId;
        bytes32 resultHash;
        bool resultValid;
    }

    struct Job {
        address client;
        Status status;
        uint64 deliveryDeadline;
        address provider;
        uint64 challengeWindow;
        uint128 price;
        uint128 slashAmount;
        bytes32 resultHash;
        uint64 challengeEndsAt;
        uint64 disputeEndsAt;
        uint128 disputeBond;
    }

    event JobOpened(
        bytes32 indexed jobId,
        address indexed client,
        address indexed provider,
        uint256 price,
        uint256 slashAmount,
        bytes32 specHash,
        uint64 deliveryDeadline,
        uint64 challengeWindow
    );
    event ResultCommitted(bytes32 indexed jobId, address indexed provider, bytes32 resultHash, uint64 challengeEndsAt);
    event JobSettled(bytes32 indexed jobId, address indexed provider, uint256 payout, uint256 fee, bool confirmed);
    event JobTimedOut(bytes32 indexed jobId, address indexed provider, uint256 refund, uint256 slashed);
    event JobDisputed(bytes32 indexed jobId, address indexed client, uint256 bond, uint64 disputeEndsAt);
    event DisputeResolved(bytes32 indexed jobId, bool resultValid, uint256 signers);
    event DisputeExpired(bytes32 indexed jobId, uint256 refund, uint256 bondToProvider);
    /// @notice A payout to `account` could not be delivered and was credited instead (see {withdrawCredit}).
    event PaymentCredited(address indexed account, uint256 amount);
    event CreditWithdrawn(address indexed account, uint256 amount);

    error EscrowJobExists(bytes32 jobId);
    error EscrowUnknownJob(bytes32 jobId);
    error EscrowWrongStatus(bytes32 jobId, Status status, Status expected);
    error EscrowNotClient(bytes32 jobId, address caller, address client);
    error EscrowNotProvider(bytes32 jobId, address caller, address provider);
    error EscrowWrongDeposit(bytes32 jobId, uint256 sent, uint256 required);
    error EscrowZeroPrice(bytes32 jobId);
    error EscrowQuoteExpired(bytes32 jobId, uint256 acceptBy, uint256 timestamp);
    error EscrowInvalidDeadline(bytes32 jobId, uint256 deliveryDeadline, uint256 timestamp, uint256 maxDuration);
    error EscrowInvalidChallengeWindow(bytes32 jobId, uint256 window, uint256 min, uint256 max);
    error EscrowProviderInactive(address provider);
    error EscrowInvalidSignature(address expected, address recovered);
    error EscrowDeadlinePassed(bytes32 jobId, uint256 deadline, uint256 timestamp);
    error EscrowDeadlineNotReached(bytes32 jobId, uint256 deadline, uint256 timestamp);
    error EscrowZeroResult(bytes32 jobId);
    error EscrowChallengeWindowClosed(bytes32 jobId, uint256 endedAt, uint256 timestamp);
    error EscrowChallengeWindowOpen(bytes32 jobId, uint256 endsAt, uint256 timestamp);
    error EscrowDisputeWindowOpen(bytes32 jobId, uint256 endsAt, uint256 timestamp);
    error EscrowVerdictMismatch(bytes32 jobId, bytes32 resultHash, bytes32 committed);
    error EscrowInvalidVerdictSignature(uint256 index);
    error EscrowVerifierNotActive(address verifier);
    error EscrowVerifiersNotSorted(address previous, address next);
    error EscrowQuorumNotReached(bytes32 jobId, uint256 signers, uint256 quorum);
    error EscrowInvalidParameter(bytes32 name, uint256 value);
    error EscrowTransferFailed(address to, uint256 amount);
    error EscrowNoCredit(address account);

    /// @notice Opens and funds a job the provider accepted off chain. `msg.value` must equal the price and the
    /// caller must be the client named in the terms.
    function openJob(JobTerms calldata terms, bytes calldata providerSignature) external payable;

    /// @notice The provider commits the hash of its result before the delivery deadline.
    function commitResult(bytes32 jobId, bytes32 resultHash) external;

    /// @notice The client accepts a delivered result before the window ends; the provider is paid at once.
    function confirmResult(bytes32 jobId) external;

    /// @notice Anyone pays the provider once the challenge window has ended without a dispute.
    function releasePayment(bytes32 jobId) external;

    /// @notice Anyone refunds the client and slashes the provider of a job not delivered by its deadline.
    /// The caller receives the finder's share of the slash.
    function claimTimeout(bytes32 jobId) external;

    /// @notice The client disputes a delivered result during the challenge window, posting the dispute bond.
    function disputeResult(bytes32 jobId) external payable;

    /// @notice Decides a dispute with signatures of at least `quorum` distinct active verifiers over `verdict`,
    /// sorted by signer address. A valid result pays the provider and gives it the bond; an invalid one refunds
    /// the client with its bond and slashes the provider, the client taking the finder's share.
    function resolveDispute(Verdict calldata verdict, bytes[] calldata signatures) external;

    /// @notice After the dispute window without a quorum: the client gets the price back, the provider the bond.
    /// A party whose address refuses ETH is credited instead, so neither can block the other's payment.
    function expireDispute(bytes32 jobId) external;

    /// @notice Pays the caller what was credited to it when a payout could not be delivered.
    function withdrawCredit() external returns (uint256 amount);

    /// @notice ETH credited to `account` and not yet withdrawn.
    function creditOf(address account) external view returns (uint256);

    function jobOf(bytes32 jobId) external view returns (Job memory);

    /// @notice The bond a client must post to dispute `jobId`.
    function disputeBondOf(bytes32 jobId) external view returns (uint256);

    /// @notice ETH held for open jobs (accepted, delivered or disputed), bonds and undelivered credits included.
    function totalEscrowed() external view returns (uint256);

    function hashTerms(JobTerms calldata terms) external view returns (bytes32);

    function hashVerdict(Verdict calldata verdict) external view returns (bytes32);
}
