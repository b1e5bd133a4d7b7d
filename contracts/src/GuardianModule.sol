// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The part of a Safe v1.4.1 that a module uses.
interface ISafe {
    function execTransactionFromModuleReturnData(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bool success, bytes memory returnData);
}

/// @title GuardianModule
/// @notice Lets registered guardian keys execute a short allowlist of pre-authorised calls through a Safe,
/// and nothing else. The Safe's owners configure it through ordinary multisig transactions.
/// A stolen guardian key can only do what is allowlisted (e.g. pause), at most once per cooldown:
/// it can grief, never steal.
contract GuardianModule {
    uint8 internal constant OPERATION_CALL = 0;

    struct Action {
        bool allowed;
        uint64 cooldown; // seconds between two executions of this action
        uint64 lastExecutedAt;
        bytes32 calldataHash; // zero: any calldata with the selector; otherwise keccak256 of the exact calldata
    }

    ISafe public immutable safe;
    mapping(address => bool) public isGuardian;
    mapping(bytes32 => Action) internal actions;

    event GuardianAdded(address indexed guardian);
    event GuardianRemoved(address indexed guardian);
    event ActionAllowed(address indexed target, bytes4 indexed selector, bytes32 calldataHash, uint64 cooldown);
    event ActionRevoked(address indexed target, bytes4 indexed selector);
    event ActionExecuted(address indexed guardian, address indexed target, bytes4 indexed selector, bytes32 calldataHash);

    error NotSafe(address caller);
    error NotGuardian(address caller);
    error ForbiddenTarget(address target);
    error OnlyCallAllowed(uint8 operation);
    error ValueNotAllowed(uint256 value);
    error CalldataTooShort();
    error ActionNotAllowed(address target, bytes4 selector);
    error CalldataMismatch(bytes32 expected, bytes32 actual);
    error CoolingDown(uint256 readyAt);
    error ExecutionFailed(bytes returnData);
    error ZeroAddress();

    modifier onlySafe() {
        if (msg.sender != address(safe)) revert NotSafe(msg.sender);
        _;
    }

    constructor(address safe_) {
        if (safe_ == address(0)) revert ZeroAddress();
        safe = ISafe(safe_);
    }

    // ---- configuration: only the Safe, i.e. its owners at threshold ----

    function addGuardian(address guardian) external onlySafe {
        if (guardian == address(0)) revert ZeroAddress();
        isGuardian[guardian] = true;
        emit GuardianAdded(guardian);
    }

    function removeGuardian(address guardian) external onlySafe {
        isGuardian[guardian] = false;
        emit GuardianRemoved(guardian);
    }

    function allowAction(address target, bytes4 selector, bytes32 calldataHash, uint64 cooldown) external onlySafe {
        _checkTarget(target);
        Action storage action = actions[actionKey(target, selector)];
        action.allowed = true;
        action.cooldown = cooldown;
        action.calldataHash = calldataHash;
        emit ActionAllowed(target, selector, calldataHash, cooldown);
    }

    function revokeAction(address target, bytes4 selector) external onlySafe {
        delete actions[actionKey(target, selector)];
        emit ActionRevoked(target, selector);
    }

    // ---- the guardian's one power ----

    /// @notice Executes an allowlisted call through the Safe. Mirrors the Safe's module call so that every
    /// forbidden variant (value, delegatecall) is refused explicitly rather than impossible to express.
    function execute(address target, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bytes memory returnData)
    {
        if (!isGuardian[msg.sender]) revert NotGuardian(msg.sender);
        if (operation != OPERATION_CALL) revert OnlyCallAllowed(operation);
        if (value != 0) revert ValueNotAllowed(value);
        _checkTarget(target);
        if (data.length < 4) revert CalldataTooShort();

        bytes4 selector = bytes4(data[:4]);
        Action storage action = actions[actionKey(target, selector)];
        if (!action.allowed) revert ActionNotAllowed(target, selector);
        bytes32 dataHash = keccak256(data);
        if (action.calldataHash != bytes32(0) && action.calldataHash != dataHash) {
            revert CalldataMismatch(action.calldataHash, dataHash);
        }
        // A validator's few seconds of timestamp drift cannot matter against a cooldown of minutes.
        // forge-lint: disable-next-line(block-timestamp)
        if (action.lastExecutedAt != 0 && block.timestamp < uint256(action.lastExecutedAt) + action.cooldown) {
            revert CoolingDown(uint256(action.lastExecutedAt) + action.cooldown);
        }
        action.lastExecutedAt = uint64(block.timestamp);

        bool success;
        (success, returnData) = safe.execTransactionFromModuleReturnData(target, 0, data, OPERATION_CALL);
        if (!success) revert ExecutionFailed(returnData);
        emit ActionExecuted(msg.sender, target, selector, dataHash);
    }

    // ---- reads ----

    function actionKey(address target, bytes4 selector) public pure returns (bytes32) {
        return keccak256(abi.encode(target, selector));
    }

    function getAction(address target, bytes4 selector) external view returns (Action memory) {
        return actions[actionKey(target, selector)];
    }

    /// @dev The Safe itself and this module are never targets: either would let a guardian
    /// rewrite who governs the Safe or the module.
    function _checkTarget(address target) internal view {
        if (target == address(safe) || target == address(this) || target == address(0)) {
            revert ForbiddenTarget(target);
        }
    }
}
