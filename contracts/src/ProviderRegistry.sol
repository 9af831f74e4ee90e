// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {IProviderRegistry} from "./interfaces/IProviderRegistry.sol";
import {IRewardPool} from "./interfaces/IRewardPool.sol";
import {PeerIds} from "./libraries/PeerIds.sol";

/// @title ProviderRegistry
/// @notice Implements {IProviderRegistry}; see the interface for the rules.
contract ProviderRegistry is IProviderRegistry, AccessControl, ReentrancyGuardTransient {
    using SafeCast for uint256;

    bytes32 public constant SLASHER_ROLE = keccak256("SLASHER_ROLE");
    uint256 private constant _BPS = 10_000;

    IRewardPool public immutable rewardPool;
    /// @notice The two contracts that may move job counters, fixed at deployment (no role lookup on the
    /// hot path of every settlement, and no admin can add a recorder later).
    address public immutable escrowRecorder;
    address public immutable voucherRecorder;
    uint256 public immutable minProviderStake;
    uint256 public immutable minVerifierStake;
    uint256 public immutable unbondingDelay;

    mapping(address account => Account) private _accounts;
    uint256 private _totalStaked;
    uint256 private _totalUnbonding;

    constructor(
        address admin,
        IRewardPool rewardPool_,
        address escrowRecorder_,
        address voucherRecorder_,
        uint256 minProviderStake_,
        uint256 minVerifierStake_,
        uint256 unbondingDelay_
    ) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        rewardPool = rewardPool_;
        escrowRecorder = escrowRecorder_;
        voucherRecorder = voucherRecorder_;
        minProviderStake = minProviderStake_;
        minVerifierStake = minVerifierStake_;
        unbondingDelay = unbondingDelay_;
    }

    /// @inheritdoc IProviderRegistry
    function register(bytes calldata peerId, bytes32 metadataHash) external payable {
        address keyAddress = PeerIds.toAddress(peerId);
        if (keyAddress == address(0)) revert RegistryInvalidPeerId(peerId);
        if (keyAddress != msg.sender) revert RegistryPeerIdMismatch(msg.sender, keyAddress);
        _register(Role.Provider, minProviderStake);
        emit ProviderRegistered(msg.sender, peerId, metadataHash, msg.value);
    }

    /// @inheritdoc IProviderRegistry
    function registerVerifier(bytes32 metadataHash) external payable {
        _register(Role.Verifier, minVerifierStake);
        emit VerifierRegistered(msg.sender, metadataHash, msg.value);
    }

    /// @inheritdoc IProviderRegistry
    function updateMetadata(bytes32 metadataHash) external {
        _requireRegistered(msg.sender);
        emit MetadataUpdated(msg.sender, metadataHash);
    }

    /// @inheritdoc IProviderRegistry
    function topUp() external payable {
        Account storage account = _requireRegistered(msg.sender);
        if (msg.value == 0) revert RegistryZeroAmount();
        uint256 newStake = account.stake + msg.value;
        account.stake = newStake.toUint128();
        _totalStaked += msg.value;
        emit StakeIncreased(msg.sender, msg.value, newStake);
    }

    /// @inheritdoc IProviderRegistry
    function requestUnbond(uint256 amount) external {
        Account storage account = _requireRegistered(msg.sender);
        if (amount == 0) revert RegistryZeroAmount();
        if (amount > account.stake) revert RegistryUnbondExceedsStake(msg.sender, amount, account.stake);
        uint256 readyAt = block.timestamp + unbondingDelay;
        // Cannot underflow: amount <= stake was checked above; unbonding + amount <= total ever staked.
        unchecked {
            account.stake -= uint128(amount);
            account.unbonding += uint128(amount);
            _totalStaked -= amount;
        }
        _totalUnbonding += amount;
        account.unbondReadyAt = readyAt.toUint64();
        emit UnbondRequested(msg.sender, amount, account.unbonding, readyAt);
    }

    /// @inheritdoc IProviderRegistry
    function withdraw() external nonReentrant returns (uint256 amount) {
        Account storage account = _requireRegistered(msg.sender);
        amount = account.unbonding;
        if (amount == 0) revert RegistryNothingToWithdraw(msg.sender);
        if (block.timestamp < account.unbondReadyAt) {
            revert RegistryUnbondingNotReady(msg.sender, account.unbondReadyAt, block.timestamp);
        }
        account.unbonding = 0;
        _totalUnbonding -= amount;
        emit StakeWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @inheritdoc IProviderRegistry
    function slash(
        address account,
        uint256 amount,
        address finder,
        uint256 finderShareBps,
        bytes32 reason,
        bytes32 ref
    ) external onlyRole(SLASHER_ROLE) nonReentrant returns (uint256 slashed) {
        if (finderShareBps > _BPS) revert RegistryInvalidShare(finderShareBps);
        Account storage record = _requireRegistered(account);
        uint256 fromStake = amount < record.stake ? amount : record.stake;
        uint256 rest = amount - fromStake;
        uint256 fromUnbonding = rest < record.unbonding ? rest : record.unbonding;
        // Cannot underflow: each part is at most the balance it is taken from.
        unchecked {
            record.stake -= uint128(fromStake);
            record.unbonding -= uint128(fromUnbonding);
            _totalStaked -= fromStake;
            _totalUnbonding -= fromUnbonding;
        }
        slashed = fromStake + fromUnbonding;
        record.totalSlashed += slashed.toUint128();
        uint256 finderReward = finder == address(0) ? 0 : (slashed * finderShareBps) / _BPS;
        emit Slashed(account, slashed, finder, finderReward, reason, ref);
        if (finderReward > 0) _send(finder, finderReward);
        if (slashed > finderReward) rewardPool.fund{value: slashed - finderReward}();
    }

    /// @inheritdoc IProviderRegistry
    function recordOutcome(address provider, uint64 completed, uint32 failed, uint32 disputesLost) external {
        if (msg.sender != escrowRecorder && msg.sender != voucherRecorder) revert RegistryUnauthorizedRecorder(msg.sender);
        // Recorders only name registered providers (escrow checks at opening, vouchers pay providers the
        // client chose); only the fields that change are written.
        // Counters saturate instead of reverting: a voucher can claim any job count, and an overflow must
        // never block a settlement (it would lock delivered jobs' payments in escrow).
        Account storage account = _accounts[provider];
        if (completed != 0) account.jobsCompleted = uint64(_saturatingAdd(account.jobsCompleted, completed, type(uint64).max));
        if (failed != 0) account.jobsFailed = uint32(_saturatingAdd(account.jobsFailed, failed, type(uint32).max));
        if (disputesLost != 0) {
            account.disputesLost = uint32(_saturatingAdd(account.disputesLost, disputesLost, type(uint32).max));
        }
        emit OutcomeRecorded(provider, completed, failed, disputesLost);
    }

    /// @inheritdoc IProviderRegistry
    function accountOf(address account) external view returns (Account memory) {
        return _accounts[account];
    }

    /// @inheritdoc IProviderRegistry
    function isActiveProvider(address account) external view returns (bool) {
        Account storage record = _accounts[account];
        return record.role == Role.Provider && record.stake >= minProviderStake;
    }

    /// @inheritdoc IProviderRegistry
    function isActiveVerifier(address account) external view returns (bool) {
        Account storage record = _accounts[account];
        return record.role == Role.Verifier && record.stake >= minVerifierStake;
    }

    /// @inheritdoc IProviderRegistry
    function slashableOf(address account) external view returns (uint256) {
        Account storage record = _accounts[account];
        return uint256(record.stake) + record.unbonding;
    }

    /// @inheritdoc IProviderRegistry
    function totalStaked() external view returns (uint256) {
        return _totalStaked;
    }

    /// @inheritdoc IProviderRegistry
    function totalUnbonding() external view returns (uint256) {
        return _totalUnbonding;
    }

    function _saturatingAdd(uint256 a, uint256 b, uint256 max) private pure returns (uint256) {
        // Cannot overflow: a and b are at most 2**64 - 1 each.
        unchecked {
            uint256 sum = a + b;
            return sum > max ? max : sum;
        }
    }

    function _register(Role role, uint256 minimum) private {
        Account storage account = _accounts[msg.sender];
        if (account.role != Role.None) revert RegistryAlreadyRegistered(msg.sender);
        if (msg.value < minimum) revert RegistryInsufficientStake(msg.sender, msg.value, minimum);
        account.role = role;
        account.registeredAt = uint64(block.timestamp);
        account.stake = msg.value.toUint128();
        _totalStaked += msg.value;
    }

    function _requireRegistered(address account) private view returns (Account storage record) {
        record = _accounts[account];
        if (record.role == Role.None) revert RegistryNotRegistered(account);
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert RegistryTransferFailed(to, amount);
    }
}
