// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ReentrantReceiver (test only)
/// @notice A hostile account for reentrancy tests. It acts as a client, verifier, finder or treasury recipient
/// through {execute}, and when it receives ETH it tries one configured call back into the system. The inner
/// call's outcome is recorded, never bubbled, so the outer payout completes and the test can read whether the
/// reentry got through. It can also refuse every payment, to test payouts that a recipient can block.
/// @dev Also used as EIP-7702 delegation target of provider EOAs: no constructor state is relied upon, and all
/// storage starts at zero in the delegating account.
contract ReentrantReceiver {
    error ReceiverRejected(uint256 amount);

    event Received(address indexed from, uint256 amount, bool reentered, bool reentrySucceeded, bytes reentryData);

    /// @notice Where the reentrant call goes and what it sends.
    address public reentryTarget;
    bytes public reentryData;
    /// @notice Whether every receive (until {disarm}) tries the reentrant call.
    bool public armed;
    /// @dev Set while the reentrant call runs, so that ETH it brings back does not recurse.
    bool private _reentering;
    /// @notice Whether every receive reverts with {ReceiverRejected}.
    bool public revertOnReceive;

    /// @notice Number of reentrant calls tried so far.
    uint256 public reentryAttempts;
    /// @notice Number of reentrant calls that succeeded.
    uint256 public reentrySuccesses;
    /// @notice The outcome of the last reentrant call and its return or revert data.
    bool public lastReentrySucceeded;
    bytes public lastReentryData;
    /// @notice ETH received (by plain transfers) so far.
    uint256 public totalReceived;
    uint256 public receiveCount;

    /// @notice Calls `target` with `value` and `data` as this account; bubbles a failure's revert data.
    function execute(address target, uint256 value, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }

    /// @notice Every following receive calls `target` with `data` (not recursively), until {disarm}.
    function arm(address target, bytes calldata data) external {
        reentryTarget = target;
        reentryData = data;
        armed = true;
    }

    function disarm() external {
        armed = false;
    }

    function setRevertOnReceive(bool value) external {
        revertOnReceive = value;
    }

    receive() external payable {
        if (revertOnReceive) revert ReceiverRejected(msg.value);
        totalReceived += msg.value;
        receiveCount += 1;
        if (!armed || _reentering) {
            emit Received(msg.sender, msg.value, false, false, "");
            return;
        }
        reentryAttempts += 1;
        _reentering = true;
        (bool ok, bytes memory ret) = reentryTarget.call(reentryData);
        _reentering = false;
        lastReentrySucceeded = ok;
        lastReentryData = ret;
        if (ok) reentrySuccesses += 1;
        emit Received(msg.sender, msg.value, true, ok, ret);
    }
}
