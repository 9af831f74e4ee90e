// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Provider and verifier registry with staking, unbonding, counters and slashing
/// @notice Providers and verifiers bond native ETH here. Stake that is unbonding stays slashable until it is
/// withdrawn, so a cheater cannot run before its fault is proven. Only contracts holding SLASHER_ROLE may slash
/// and only the escrow and voucher contracts fixed at deployment may move the job counters.
interface IProviderRegistry {
    /// @notice What an account is registered as.
    enum Role {
        None,
        Provider,
        Verifier
    }

    /// @notice Everything the registry keeps about one account.
    struct Account {
        Role role;
        uint64 registeredAt;
        uint64 unbondReadyAt;
        uint32 jobsFailed;
        uint32 disputesLost;
        uint128 stake;
        uint128 unbonding;
        uint64 jobsCompleted;
        uint128 totalSlashed;
    }

    /// @notice A provider registered with its libp2p peer id (which encodes the same secp256k1 key).
    event ProviderRegistered(address indexed account, bytes peerId, bytes32 metadataHash, uint256 stake);
    /// @notice A verifier registered.
    event VerifierRegistered(address indexed account, bytes32 metadataHash, uint256 stake);
    /// @notice An account pointed to a new metadata document.
    event MetadataUpdated(address indexed account, bytes32 metadataHash);
    /// @notice An account added stake.
    event StakeIncreased(address indexed account, uint256 amount, uint256 newStake);
    /// @notice An account moved stake into unbonding; the whole unbonding amount is withdrawable at `readyAt`.
    event UnbondRequested(address indexed account, uint256 amount, uint256 totalUnbonding, uint256 readyAt);
    /// @notice An account withdrew its unbonded stake.
    event StakeWithdrawn(address indexed account, uint256 amount);
    /// @notice Stake was taken; `finderReward` went to `finder`, the rest to the reward pool.
    event Slashed(
        address indexed account,
        uint256 amount,
        address indexed finder,
        uint256 finderReward,
        bytes32 indexed reason,
        bytes32 ref
    );
    /// @notice Job counters moved.
    event OutcomeRecorded(address indexed provider, uint256 completed, uint256 failed, uint256 disputesLost);

    error RegistryAlreadyRegistered(address account);
    error RegistryNotRegistered(address account);
    error RegistryInsufficientStake(address account, uint256 provided, uint256 required);
    error RegistryInvalidPeerId(bytes peerId);
    error RegistryPeerIdMismatch(address account, address keyAddress);
    error RegistryZeroAmount();
    error RegistryUnbondExceedsStake(address account, uint256 requested, uint256 staked);
    error RegistryNothingToWithdraw(address account);
    error RegistryUnbondingNotReady(address account, uint256 readyAt, uint256 timestamp);
    error RegistryInvalidShare(uint256 bps);
    error RegistryTransferFailed(address to, uint256 amount);
    error RegistryUnauthorizedRecorder(address caller);

    /// @notice Registers the caller as a provider. `peerId` must be the binary libp2p peer id of the caller's
    /// own secp256k1 key (identity multihash of the protobuf public key); it is checked on chain.
    /// @param peerId binary peer id (39 bytes).
    /// @param metadataHash hash of the provider's metadata document (hardware, region, endpoints).
    function register(bytes calldata peerId, bytes32 metadataHash) external payable;

    /// @notice Registers the caller as a verifier with at least the verifier minimum stake.
    function registerVerifier(bytes32 metadataHash) external payable;

    /// @notice Points the caller's registration at a new metadata document.
    function updateMetadata(bytes32 metadataHash) external;

    /// @notice Adds the sent ETH to the caller's stake.
    function topUp() external payable;

    /// @notice Moves `amount` of bonded stake into unbonding and restarts the unbonding delay.
    function requestUnbond(uint256 amount) external;

    /// @notice Pays out all unbonding stake once the unbonding delay has passed.
    /// @return amount the ETH sent to the caller.
    function withdraw() external returns (uint256 amount);

    /// @notice Takes up to `amount` from the account's stake, then from its unbonding stake; never more than
    /// both. Pays `finderShareBps` of what was taken to `finder` and the rest to the reward pool.
    /// @return slashed the amount actually taken.
    function slash(
        address account,
        uint256 amount,
        address finder,
        uint256 finderShareBps,
        bytes32 reason,
        bytes32 ref
    ) external returns (uint256 slashed);

    /// @notice Moves a provider's job counters; only the escrow and voucher contracts may.
    function recordOutcome(address provider, uint64 completed, uint32 failed, uint32 disputesLost) external;

    /// @notice The stored account record (all zero when unknown).
    function accountOf(address account) external view returns (Account memory);

    /// @notice True when `account` is a provider whose bonded stake is at least the minimum.
    function isActiveProvider(address account) external view returns (bool);

    /// @notice True when `account` is a verifier whose bonded stake is at least the verifier minimum.
    function isActiveVerifier(address account) external view returns (bool);

    /// @notice Stake plus unbonding stake: everything that can still be slashed.
    function slashableOf(address account) external view returns (uint256);

    /// @notice Sum of all bonded stake.
    function totalStaked() external view returns (uint256);

    /// @notice Sum of all unbonding stake.
    function totalUnbonding() external view returns (uint256);
}
