// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Reward pool funded by protocol fees and slashes, paid per epoch in proportion to verified work
/// @notice Money that arrives during epoch `e` (protocol fees, the unshared part of slashes, donations) is
/// that epoch's pot. Payment contracts report each provider's settled, client-accepted work (in wei paid).
/// When `e` has ended, each provider may claim `pot(e) * work(e, provider) / totalWork(e)`, rounded down.
/// An epoch that ended with no work gives its pot to the current epoch via {rollover}. A share of every
/// deposit, `treasuryBps`, goes to the treasury instead.
interface IRewardPool {
    /// @notice Totals of one epoch.
    struct Epoch {
        uint128 pot;
        uint128 totalWork;
    }

    /// @notice Where a provider's not yet claimed rewards stand.
    struct ProviderRewards {
        uint32 epoch;
        uint96 work;
        uint128 credited;
    }

    event PoolFunded(uint256 indexed epoch, address indexed from, uint256 toPool, uint256 toTreasury);
    /// @notice A payment contract paid a fee and recorded `work` (wei paid) for `provider`.
    event FeesDeposited(
        uint256 indexed epoch, address indexed provider, uint256 work, uint256 toPool, uint256 toTreasury
    );
    event EpochRolledOver(uint256 indexed fromEpoch, uint256 indexed toEpoch, uint256 amount);
    event RewardsClaimed(address indexed provider, uint256 amount);
    event TreasuryWithdrawn(address indexed to, uint256 amount);

    error RewardPoolEpochNotEnded(uint256 epoch, uint256 currentEpoch);
    error RewardPoolEpochHasWork(uint256 epoch, uint256 totalWork);
    error RewardPoolNothingToClaim(address provider);
    error RewardPoolTreasuryInsufficient(uint256 requested, uint256 available);
    error RewardPoolInvalidParameter(bytes32 name, uint256 value);
    error RewardPoolTransferFailed(address to, uint256 amount);
    error RewardPoolUnauthorizedSource(address caller);

    /// @notice Adds the sent ETH to the current epoch's pot (less the treasury share).
    function fund() external payable;

    /// @notice Called by the two payment contracts fixed at deployment on every settlement: adds the fee in `msg.value` to the pot and
    /// `work` (wei the client paid) to the provider's verified work in the current epoch.
    function depositFees(address provider, uint256 work) external payable;

    /// @notice Moves the pot of an ended epoch without any work into the current epoch.
    function rollover(uint256 epoch) external;

    /// @notice Pays the caller every reward it has earned in ended epochs.
    function claim() external returns (uint256 amount);

    /// @notice What `provider` could claim now.
    function claimable(address provider) external view returns (uint256);

    /// @notice Sends treasury funds; TREASURER_ROLE only.
    function withdrawTreasury(address payable to, uint256 amount) external;

    /// @notice The epoch that contains `block.timestamp`.
    function currentEpoch() external view returns (uint256);

    function epochOf(uint256 epoch) external view returns (Epoch memory);

    function rewardsOf(address provider) external view returns (ProviderRewards memory);

    /// @notice ETH owed to providers: every pot not yet claimed, rounding dust included.
    function poolBalance() external view returns (uint256);

    /// @notice ETH held for the treasury.
    function treasuryBalance() external view returns (uint256);
}
