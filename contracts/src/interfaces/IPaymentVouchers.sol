// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Prepaid deposits and cumulative payment vouchers for steady traffic
/// @notice A client deposits once and signs, per provider, vouchers whose amount and job count only grow. The
/// provider redeems the latest voucher in one transaction however many jobs it covers, and many clients'
/// vouchers in one batch. Withdrawing a deposit takes a delay so providers can redeem what they are owed.
interface IPaymentVouchers {
    struct Voucher {
        address client;
        address provider;
        uint256 cumulativeAmount;
        uint64 cumulativeJobs;
    }

    struct CompactSignature {
        bytes32 r;
        bytes32 vs;
    }

    struct Deposit {
        uint128 balance;
        uint128 pendingWithdrawal;
        uint64 withdrawableAt;
    }

    /// @notice How much of the client's vouchers to a provider has been paid.
    struct Redeemed {
        uint192 amount;
        uint64 jobs;
    }

    event Deposited(address indexed client, uint256 amount, uint256 balance);
    event WithdrawalRequested(address indexed client, uint256 amount, uint256 withdrawableAt);
    event WithdrawalCancelled(address indexed client);
    event Withdrawn(address indexed client, uint256 amount, uint256 balance);
    event VoucherRedeemed(
        address indexed client,
        address indexed provider,
        uint256 cumulativeAmount,
        uint64 cumulativeJobs,
        uint256 amount,
        uint64 jobs
    );
    /// @notice A batch redemption paid `provider` once for all its vouchers (single redemptions emit only
    /// VoucherRedeemed; the fee is `amount * feeBps / 10000`).
    event ProviderPaid(address indexed provider, uint256 payout, uint256 fee, uint64 jobs);

    error VouchersZeroAmount();
    error VouchersNoWithdrawalPending(address client);
    error VouchersWithdrawalNotReady(address client, uint256 withdrawableAt, uint256 timestamp);
    error VouchersWithdrawalExceedsBalance(address client, uint256 requested, uint256 balance);
    error VouchersWrongProvider(address voucherProvider, address provider);
    error VouchersNotIncreasing(address client, address provider, uint256 cumulativeAmount, uint256 redeemed);
    error VouchersJobsDecreased(address client, address provider, uint64 cumulativeJobs, uint64 redeemedJobs);
    error VouchersInsufficientDeposit(address client, uint256 balance, uint256 needed);
    error VouchersInvalidSignature(address expected, address recovered);
    error VouchersLengthMismatch(uint256 vouchers, uint256 signatures);
    error VouchersEmptyBatch();
    error VouchersInvalidParameter(bytes32 name, uint256 value);
    error VouchersTransferFailed(address to, uint256 amount);

    /// @notice Adds the sent ETH to the caller's deposit.
    function deposit() external payable;

    /// @notice Starts the withdrawal delay for `amount`; replaces any pending request. The amount stays
    /// redeemable by providers until it is withdrawn.
    function requestWithdrawal(uint256 amount) external;

    function cancelWithdrawal() external;

    /// @notice After the delay, pays the pending amount (or what is left of the deposit, if less).
    function withdraw() external returns (uint256 amount);

    /// @notice Pays `voucher.provider` the difference between this voucher and what was already redeemed.
    function redeem(Voucher calldata voucher, bytes calldata signature) external;

    /// @notice Redeems many clients' vouchers to one provider; one payout, one fee.
    function redeemBatch(address provider, Voucher[] calldata vouchers, CompactSignature[] calldata signatures)
        external;

    function depositOf(address client) external view returns (Deposit memory);

    function redeemedOf(address client, address provider) external view returns (Redeemed memory);

    /// @notice Sum of all clients' deposits.
    function totalDeposits() external view returns (uint256);

    function hashVoucher(Voucher calldata voucher) external view returns (bytes32);
}
