// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IPaymentVouchers} from "./interfaces/IPaymentVouchers.sol";
import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";

/// @title PaymentVouchers
/// @notice Implements {IPaymentVouchers}; see the interface for the rules.
/// @dev A redemption touches two slots of this contract (the client's deposit and the client-provider redeemed
/// totals) and makes three calls however many jobs it covers: the counters, the fee, the payout.
contract PaymentVouchers is IPaymentVouchers, EIP712, ReentrancyGuardTransient {
    using SafeCast for uint256;

    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address client,address provider,uint256 cumulativeAmount,uint64 cumulativeJobs)");
    uint256 private constant _BPS = 10_000;

    IProviderRegistry public immutable registry;
    IRewardPool public immutable rewardPool;
    uint256 public immutable feeBps;
    uint256 public immutable withdrawalDelay;

    mapping(address client => Deposit) private _deposits;
    mapping(address client => mapping(address provider => Redeemed)) private _redeemed;
    uint256 private _totalDeposits;

    constructor(IProviderRegistry registry_, IRewardPool rewardPool_, uint256 feeBps_, uint256 withdrawalDelay_)
        EIP712("Proxima Vouchers", "1")
    {
        if (feeBps_ > _BPS) revert VouchersInvalidParameter("feeBps", feeBps_);
        registry = registry_;
        rewardPool = rewardPool_;
        feeBps = feeBps_;
        withdrawalDelay = withdrawalDelay_;
    }

    /// @inheritdoc IPaymentVouchers
    function deposit() external payable {
        if (msg.value == 0) revert VouchersZeroAmount();
        Deposit storage account = _deposits[msg.sender];
        uint256 balance = account.balance + msg.value;
        account.balance = balance.toUint128();
        _totalDeposits += msg.value;
        emit Deposited(msg.sender, msg.value, balance);
    }

    /// @inheritdoc IPaymentVouchers
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert VouchersZeroAmount();
        Deposit storage account = _deposits[msg.sender];
        if (amount > account.balance) revert VouchersWithdrawalExceedsBalance(msg.sender, amount, account.balance);
        uint256 withdrawableAt = block.timestamp + withdrawalDelay;
        account.pendingWithdrawal = uint128(amount);
        account.withdrawableAt = withdrawableAt.toUint64();
        emit WithdrawalRequested(msg.sender, amount, withdrawableAt);
    }

    /// @inheritdoc IPaymentVouchers
    function cancelWithdrawal() external {
        Deposit storage account = _deposits[msg.sender];
        if (account.pendingWithdrawal == 0) revert VouchersNoWithdrawalPending(msg.sender);
        account.pendingWithdrawal = 0;
        account.withdrawableAt = 0;
        emit WithdrawalCancelled(msg.sender);
    }

    /// @inheritdoc IPaymentVouchers
    function withdraw() external nonReentrant returns (uint256 amount) {
        Deposit storage account = _deposits[msg.sender];
        amount = account.pendingWithdrawal;
        if (amount == 0) revert VouchersNoWithdrawalPending(msg.sender);
        if (block.timestamp < account.withdrawableAt) {
            revert VouchersWithdrawalNotReady(msg.sender, account.withdrawableAt, block.timestamp);
        }
        uint256 balance = account.balance;
        if (amount > balance) amount = balance;
        // Cannot underflow: amount <= balance <= total deposits.
        unchecked {
            account.balance = uint128(balance - amount);
            _totalDeposits -= amount;
        }
        account.pendingWithdrawal = 0;
        account.withdrawableAt = 0;
        emit Withdrawn(msg.sender, amount, balance - amount);
        _send(msg.sender, amount);
    }

    /// @inheritdoc IPaymentVouchers
    function redeem(Voucher calldata voucher, bytes calldata signature) external nonReentrant {
        (address signer,,) = ECDSA.tryRecoverCalldata(_hashVoucher(voucher), signature);
        if (signer != voucher.client) revert VouchersInvalidSignature(voucher.client, signer);
        (uint256 amount, uint64 jobs) = _apply(voucher);
        // VoucherRedeemed already tells the amount and jobs of this one redemption.
        _pay(voucher.provider, amount, jobs, false);
    }

    /// @inheritdoc IPaymentVouchers
    function redeemBatch(address provider, Voucher[] calldata vouchers, CompactSignature[] calldata signatures)
        external
        nonReentrant
    {
        if (vouchers.length == 0) revert VouchersEmptyBatch();
        if (vouchers.length != signatures.length) revert VouchersLengthMismatch(vouchers.length, signatures.length);
        uint256 total = 0;
        uint64 jobs = 0;
        for (uint256 i = 0; i < vouchers.length; ++i) {
            Voucher calldata voucher = vouchers[i];
            if (voucher.provider != provider) revert VouchersWrongProvider(voucher.provider, provider);
            (address signer,,) = ECDSA.tryRecover(_hashVoucher(voucher), signatures[i].r, signatures[i].vs);
            if (signer != voucher.client) revert VouchersInvalidSignature(voucher.client, signer);
            (uint256 amount, uint64 count) = _apply(voucher);
            total += amount;
            jobs += count;
        }
        _pay(provider, total, jobs, true);
    }

    /// @inheritdoc IPaymentVouchers
    function depositOf(address client) external view returns (Deposit memory) {
        return _deposits[client];
    }

    /// @inheritdoc IPaymentVouchers
    function redeemedOf(address client, address provider) external view returns (Redeemed memory) {
        return _redeemed[client][provider];
    }

    /// @inheritdoc IPaymentVouchers
    function totalDeposits() external view returns (uint256) {
        return _totalDeposits;
    }

    /// @inheritdoc IPaymentVouchers
    function hashVoucher(Voucher calldata voucher) external view returns (bytes32) {
        return _hashVoucher(voucher);
    }

    /// @dev Checks a voucher against what was redeemed and the client's deposit, and books the difference.
    function _apply(Voucher calldata voucher) private returns (uint256 amount, uint64 jobs) {
        address client = voucher.client;
        Redeemed memory done = _redeemed[client][voucher.provider];
        if (voucher.cumulativeAmount <= done.amount) {
            revert VouchersNotIncreasing(client, voucher.provider, voucher.cumulativeAmount, done.amount);
        }
        if (voucher.cumulativeJobs < done.jobs) {
            revert VouchersJobsDecreased(client, voucher.provider, voucher.cumulativeJobs, done.jobs);
        }
        // Cannot underflow: both cumulative values were checked to be at least what was redeemed.
        unchecked {
            amount = voucher.cumulativeAmount - done.amount;
            jobs = voucher.cumulativeJobs - done.jobs;
        }
        Deposit storage account = _deposits[client];
        uint256 balance = account.balance;
        if (amount > balance) revert VouchersInsufficientDeposit(client, balance, amount);
        // Cannot underflow: amount <= balance was checked just above.
        unchecked {
            account.balance = uint128(balance - amount);
        }
        _redeemed[client][voucher.provider] =
            Redeemed({amount: voucher.cumulativeAmount.toUint192(), jobs: voucher.cumulativeJobs});
        emit VoucherRedeemed(client, voucher.provider, voucher.cumulativeAmount, voucher.cumulativeJobs, amount, jobs);
    }

    function _pay(address provider, uint256 amount, uint64 jobs, bool batch) private {
        uint256 fee = (amount * feeBps) / _BPS;
        uint256 payout = amount - fee;
        _totalDeposits -= amount;
        if (batch) emit ProviderPaid(provider, payout, fee, jobs);
        registry.recordOutcome(provider, jobs, 0, 0);
        rewardPool.depositFees{value: fee}(provider, amount);
        _send(provider, payout);
    }

    function _hashVoucher(Voucher calldata v) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(VOUCHER_TYPEHASH, v.client, v.provider, v.cumulativeAmount, v.cumulativeJobs))
        );
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert VouchersTransferFailed(to, amount);
    }
}
