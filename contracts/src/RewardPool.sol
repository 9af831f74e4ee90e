// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IRewardPool} from "./interfaces/IRewardPool.sol";

/// @title RewardPool
/// @notice Implements {IRewardPool}; see the interface for the rules.
/// @dev Each provider has one storage slot: the last epoch it worked in, its work there, and rewards credited
/// from earlier epochs. Recording work in a later epoch first credits the share of the earlier one, which has
/// ended and whose pot can no longer change (only empty epochs roll over). One slot per provider keeps a
/// voucher redemption cheap.
contract RewardPool is IRewardPool, AccessControl, ReentrancyGuardTransient {
    using SafeCast for uint256;

    bytes32 public constant TREASURER_ROLE = keccak256("TREASURER_ROLE");
    uint256 private constant _BPS = 10_000;

    /// @notice The two payment contracts that may deposit fees and record work, fixed at deployment.
    address public immutable escrowSource;
    address public immutable voucherSource;
    uint256 public immutable genesis;
    uint256 public immutable epochLength;
    uint256 public immutable treasuryBps;

    mapping(uint256 epoch => Epoch) private _epochs;
    mapping(address provider => ProviderRewards) private _rewards;
    uint128 private _poolBalance;
    uint128 private _treasuryBalance;

    constructor(address admin, address escrowSource_, address voucherSource_, uint256 epochLength_, uint256 treasuryBps_) {
        if (epochLength_ == 0) revert RewardPoolInvalidParameter("epochLength", epochLength_);
        if (treasuryBps_ > _BPS) revert RewardPoolInvalidParameter("treasuryBps", treasuryBps_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(TREASURER_ROLE, admin);
        escrowSource = escrowSource_;
        voucherSource = voucherSource_;
        genesis = block.timestamp;
        epochLength = epochLength_;
        treasuryBps = treasuryBps_;
    }

    /// @inheritdoc IRewardPool
    function fund() external payable {
        uint256 epoch = currentEpoch();
        (uint256 toPool, uint256 toTreasury) = _credit(epoch);
        if (msg.value != 0) emit PoolFunded(epoch, msg.sender, toPool, toTreasury);
    }

    /// @inheritdoc IRewardPool
    function depositFees(address provider, uint256 work) external payable {
        if (msg.sender != escrowSource && msg.sender != voucherSource) revert RewardPoolUnauthorizedSource(msg.sender);
        uint256 epoch = currentEpoch();
        (uint256 toPool, uint256 toTreasury) = _credit(epoch);
        if (work != 0) {
            ProviderRewards memory rewards = _rewards[provider];
            if (rewards.epoch != epoch) {
                // The earlier epoch has ended: its pot and total work are final.
                rewards.credited += _shareOf(rewards.epoch, rewards.work).toUint128();
                rewards.epoch = epoch.toUint32();
                rewards.work = 0;
            }
            rewards.work += work.toUint96();
            _rewards[provider] = rewards;
            _epochs[epoch].totalWork += work.toUint128();
        }
        emit FeesDeposited(epoch, provider, work, toPool, toTreasury);
    }

    /// @inheritdoc IRewardPool
    function rollover(uint256 epoch) external {
        uint256 current = currentEpoch();
        if (epoch >= current) revert RewardPoolEpochNotEnded(epoch, current);
        Epoch storage ended = _epochs[epoch];
        if (ended.totalWork != 0) revert RewardPoolEpochHasWork(epoch, ended.totalWork);
        uint128 amount = ended.pot;
        ended.pot = 0;
        _epochs[current].pot += amount;
        emit EpochRolledOver(epoch, current, amount);
    }

    /// @inheritdoc IRewardPool
    function claim() external nonReentrant returns (uint256 amount) {
        ProviderRewards memory rewards = _rewards[msg.sender];
        amount = rewards.credited;
        if (rewards.epoch < currentEpoch()) {
            amount += _shareOf(rewards.epoch, rewards.work);
            rewards.work = 0;
        }
        if (amount == 0) revert RewardPoolNothingToClaim(msg.sender);
        rewards.credited = 0;
        _rewards[msg.sender] = rewards;
        _poolBalance -= amount.toUint128();
        emit RewardsClaimed(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert RewardPoolTransferFailed(msg.sender, amount);
    }

    /// @inheritdoc IRewardPool
    function withdrawTreasury(address payable to, uint256 amount) external onlyRole(TREASURER_ROLE) nonReentrant {
        if (amount > _treasuryBalance) revert RewardPoolTreasuryInsufficient(amount, _treasuryBalance);
        // Cannot underflow: checked just above.
        unchecked {
            _treasuryBalance -= uint128(amount);
        }
        emit TreasuryWithdrawn(to, amount);
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert RewardPoolTransferFailed(to, amount);
    }

    /// @inheritdoc IRewardPool
    function claimable(address provider) external view returns (uint256 amount) {
        ProviderRewards memory rewards = _rewards[provider];
        amount = rewards.credited;
        if (rewards.epoch < currentEpoch()) amount += _shareOf(rewards.epoch, rewards.work);
    }

    /// @inheritdoc IRewardPool
    function currentEpoch() public view returns (uint256) {
        return (block.timestamp - genesis) / epochLength;
    }

    /// @inheritdoc IRewardPool
    function epochOf(uint256 epoch) external view returns (Epoch memory) {
        return _epochs[epoch];
    }

    /// @inheritdoc IRewardPool
    function rewardsOf(address provider) external view returns (ProviderRewards memory) {
        return _rewards[provider];
    }

    /// @inheritdoc IRewardPool
    function poolBalance() external view returns (uint256) {
        return _poolBalance;
    }

    /// @inheritdoc IRewardPool
    function treasuryBalance() external view returns (uint256) {
        return _treasuryBalance;
    }

    /// @dev Splits `msg.value` between the epoch's pot and the treasury.
    function _credit(uint256 epoch) private returns (uint256 toPool, uint256 toTreasury) {
        if (msg.value == 0) return (0, 0);
        toTreasury = (msg.value * treasuryBps) / _BPS;
        toPool = msg.value - toTreasury;
        _treasuryBalance += toTreasury.toUint128();
        _poolBalance += toPool.toUint128();
        _epochs[epoch].pot += toPool.toUint128();
    }

    function _shareOf(uint256 epoch, uint256 work) private view returns (uint256) {
        if (work == 0) return 0;
        Epoch memory totals = _epochs[epoch];
        return (uint256(totals.pot) * work) / totals.totalWork;
    }
}
