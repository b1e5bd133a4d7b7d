// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Enum} from "@safe-global/safe-contracts/contracts/common/Enum.sol";
import {ModuleManager} from "@safe-global/safe-contracts/contracts/base/ModuleManager.sol";

/// @title GuardianModule
/// @notice Lets registered guardian keys execute a short allowlist of pre-authorised calls through a Safe,
/// and nothing else. The Safe's owners configure it through ordinary multisig transactions.
/// A stolen guardian key can only do what is allowlisted (e.g. pause), at most once per cooldown:
/// it can grief, never steal.
/// @dev Written against Safe v1.4.1: the module calls the Safe's `ModuleManager.execTransactionFromModuleReturnData`
/// with `Enum.Operation.Call` only.
contract GuardianModule {
    /// @notice The shortest cooldown `allowAction` accepts: 60 seconds.
    /// @dev Longer than a block on every chain a Safe runs on (Ethereum 12 s, L2s 0.25-2 s), so an action runs at
    /// most once per block and never twice in one transaction or batch: a stolen key cannot spam an action (with
    /// arguments, say) in a loop. Short enough to constrain no honest use: a guardian pauses once, and a second
    /// attack after the owners unpause is handled by `resetCooldown` in the unpause transaction, not by waiting.
    uint64 public constant MIN_COOLDOWN = 60;

    /// @notice One allowlisted (target, selector) pair and its rate limit.
    struct Action {
        bool allowed;
        uint64 cooldown; // seconds between two executions of this action
        uint64 lastExecutedAt; // 0: never executed since allowed or since the owners reset the cooldown
        bytes32 calldataHash; // zero: any calldata with the selector; otherwise keccak256 of the exact calldata
    }

    /// @notice One call of a batch: `data` (selector and arguments) sent by the Safe to `target`, no value.
    struct Call {
        address target;
        bytes data;
    }

    /// @notice The Safe this module executes through; the only account that may configure the module.
    ModuleManager public immutable safe;

    /// @notice Whether an address may execute allowlisted actions.
    mapping(address => bool) public isGuardian;

    mapping(bytes32 => Action) internal actions;

    /// @notice The Safe registered a guardian key.
    /// @param guardian The key that may now execute allowlisted actions.
    event GuardianAdded(address indexed guardian);

    /// @notice The Safe removed a guardian key.
    /// @param guardian The key that may no longer execute anything.
    event GuardianRemoved(address indexed guardian);

    /// @notice The Safe allowlisted a call, or changed an allowlisted call's pin or cooldown.
    /// @param target The contract the Safe will call.
    /// @param selector The function selector allowed on `target`.
    /// @param calldataHash Zero for any arguments, otherwise keccak256 of the only calldata allowed.
    /// @param cooldown Seconds between two executions.
    event ActionAllowed(address indexed target, bytes4 indexed selector, bytes32 calldataHash, uint64 cooldown);

    /// @notice The Safe removed a call from the allowlist.
    /// @param target The contract of the revoked action.
    /// @param selector The selector of the revoked action.
    event ActionRevoked(address indexed target, bytes4 indexed selector);

    /// @notice A guardian executed an allowlisted call through the Safe (once per call of a batch).
    /// @param guardian The key that executed it.
    /// @param target The contract the Safe called.
    /// @param selector The selector called.
    /// @param calldataHash keccak256 of the full calldata the Safe sent.
    event ActionExecuted(address indexed guardian, address indexed target, bytes4 indexed selector, bytes32 calldataHash);

    /// @notice The Safe cleared an action's last execution time: a guardian may execute it again at once.
    /// @param target The contract of the action.
    /// @param selector The selector of the action.
    event CooldownReset(address indexed target, bytes4 indexed selector);

    /// @notice A configuration call came from someone other than the Safe.
    /// @param caller The refused caller.
    error NotSafe(address caller);

    /// @notice An execution came from an address that is not a registered guardian.
    /// @param caller The refused caller.
    error NotGuardian(address caller);

    /// @notice The target is the Safe, this module or the zero address, which are never allowed.
    /// @param target The refused target.
    error ForbiddenTarget(address target);

    /// @notice `execute` was asked for an operation other than a plain call (e.g. a delegatecall).
    /// @param operation The refused operation.
    error OnlyCallAllowed(uint8 operation);

    /// @notice `execute` was asked to send ether.
    /// @param value The refused value.
    error ValueNotAllowed(uint256 value);

    /// @notice The calldata is shorter than a selector.
    error CalldataTooShort();

    /// @notice (target, selector) is not on the allowlist.
    /// @param target The contract called.
    /// @param selector The selector called.
    error ActionNotAllowed(address target, bytes4 selector);

    /// @notice The action is pinned to exact calldata and this is other calldata.
    /// @param expected The pinned keccak256 hash.
    /// @param actual keccak256 of the calldata given.
    error CalldataMismatch(bytes32 expected, bytes32 actual);

    /// @notice The action was executed less than its cooldown ago.
    /// @param readyAt The first timestamp at which it may run again.
    error CoolingDown(uint256 readyAt);

    /// @notice The Safe's call to the target reverted (for `execute`).
    /// @param returnData The target's revert data.
    error ExecutionFailed(bytes returnData);

    /// @notice A call of a batch reverted inside the Safe; the whole batch is undone.
    /// @param index The position of the failing call in the batch.
    /// @param returnData The target's revert data.
    error BatchCallFailed(uint256 index, bytes returnData);

    /// @notice `executeBatch` was given no calls.
    error EmptyBatch();

    /// @notice `allowAction` was given a cooldown shorter than `MIN_COOLDOWN`.
    /// @param cooldown The refused cooldown.
    /// @param minimum `MIN_COOLDOWN`.
    error CooldownTooShort(uint64 cooldown, uint64 minimum);

    /// @notice The zero address was given where an account is required.
    error ZeroAddress();

    modifier onlySafe() {
        if (msg.sender != address(safe)) revert NotSafe(msg.sender);
        _;
    }

    modifier onlyGuardian() {
        if (!isGuardian[msg.sender]) revert NotGuardian(msg.sender);
        _;
    }

    /// @param safe_ The Safe (v1.4.1) that will enable this module and configure it.
    constructor(address safe_) {
        if (safe_ == address(0)) revert ZeroAddress();
        safe = ModuleManager(payable(safe_));
    }

    // ---- configuration: only the Safe, i.e. its owners at threshold ----

    /// @notice Registers a guardian key. Only the Safe.
    /// @param guardian The key that may execute allowlisted actions; not the zero address.
    function addGuardian(address guardian) external onlySafe {
        if (guardian == address(0)) revert ZeroAddress();
        isGuardian[guardian] = true;
        emit GuardianAdded(guardian);
    }

    /// @notice Removes a guardian key; it can execute nothing afterwards. Only the Safe. Never reverts otherwise,
    /// so the owners can always take a key's power away.
    /// @param guardian The key to remove.
    function removeGuardian(address guardian) external onlySafe {
        isGuardian[guardian] = false;
        emit GuardianRemoved(guardian);
    }

    /// @notice Allowlists `selector` on `target` (or updates its pin and cooldown). Only the Safe.
    /// @dev Updating an allowed action keeps its last execution time: changing the cooldown does not reset it.
    /// @param target The contract the Safe will call; never the Safe, this module or the zero address.
    /// @param selector The function selector allowed on `target`.
    /// @param calldataHash Zero to allow any arguments, otherwise keccak256 of the only calldata allowed.
    /// @param cooldown Seconds between two executions; at least `MIN_COOLDOWN`.
    function allowAction(address target, bytes4 selector, bytes32 calldataHash, uint64 cooldown) external onlySafe {
        _checkTarget(target);
        if (cooldown < MIN_COOLDOWN) revert CooldownTooShort(cooldown, MIN_COOLDOWN);
        Action storage action = actions[actionKey(target, selector)];
        action.allowed = true;
        action.cooldown = cooldown;
        action.calldataHash = calldataHash;
        emit ActionAllowed(target, selector, calldataHash, cooldown);
    }

    /// @notice Removes an action from the allowlist, with its cooldown state. Only the Safe. Never reverts
    /// otherwise (revoking an unknown action is a no-op that still emits), so the owners can always revoke.
    /// @param target The contract of the action.
    /// @param selector The selector of the action.
    function revokeAction(address target, bytes4 selector) external onlySafe {
        delete actions[actionKey(target, selector)];
        emit ActionRevoked(target, selector);
    }

    /// @notice Clears an allowlisted action's last execution time, so a guardian may execute it again at once.
    /// Only the Safe. Meant to be batched with the unpause in the owners' unpause transaction: otherwise the
    /// cooldown of the first pause still runs and a second attack inside it cannot be paused.
    /// @dev Reverts for an action that is not allowlisted, so that a wrong target or selector in the unpause
    /// transaction fails loudly instead of leaving the real action cooling down. If the guardian key may be
    /// compromised, remove it in the same transaction: a reset lets whoever holds it pause again at once.
    /// @param target The contract of the action.
    /// @param selector The selector of the action.
    function resetCooldown(address target, bytes4 selector) external onlySafe {
        Action storage action = actions[actionKey(target, selector)];
        if (!action.allowed) revert ActionNotAllowed(target, selector);
        action.lastExecutedAt = 0;
        emit CooldownReset(target, selector);
    }

    // ---- the guardian's one power ----

    /// @notice Executes an allowlisted call through the Safe. Only a guardian. Mirrors the Safe's module call so
    /// that every forbidden variant (value, delegatecall) is refused explicitly rather than impossible to express.
    /// @dev Checks, in order: guardian, operation, value, target, calldata length, allowlist, pin, cooldown.
    /// A call that reverts inside the Safe reverts this one, so it does not consume the cooldown.
    /// @param target The contract the Safe calls.
    /// @param value Must be 0.
    /// @param data The full calldata (selector and arguments).
    /// @param operation Must be `Enum.Operation.Call` (0).
    /// @return returnData What the target returned.
    function execute(address target, uint256 value, bytes calldata data, uint8 operation)
        external
        onlyGuardian
        returns (bytes memory returnData)
    {
        if (operation != uint8(Enum.Operation.Call)) revert OnlyCallAllowed(operation);
        if (value != 0) revert ValueNotAllowed(value);
        bool success;
        (success, returnData) = _executeChecked(target, data);
        if (!success) revert ExecutionFailed(returnData);
    }

    /// @notice Executes several allowlisted calls through the Safe in order, all or nothing. Only a guardian.
    /// Each call is checked exactly as `execute` checks one (plain call, no value); e.g. pause a pool, then revoke
    /// a role, in one transaction.
    /// @dev Each call consumes its action's cooldown before the next is checked, so one allowlisted action
    /// (same target and selector, whatever the arguments) appears at most once per batch: a second occurrence
    /// reverts the whole batch with `CoolingDown`, since every cooldown is at least `MIN_COOLDOWN`.
    /// @param calls The calls, executed in this order.
    /// @return returnData What each target returned, in the order of `calls`.
    function executeBatch(Call[] calldata calls) external onlyGuardian returns (bytes[] memory returnData) {
        if (calls.length == 0) revert EmptyBatch();
        returnData = new bytes[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            bool success;
            (success, returnData[i]) = _executeChecked(calls[i].target, calls[i].data);
            if (!success) revert BatchCallFailed(i, returnData[i]);
        }
    }

    // ---- reads ----

    /// @notice The storage key of the action (target, selector): keccak256(abi.encode(target, selector)).
    /// @param target The contract of the action.
    /// @param selector The selector of the action.
    /// @return The key.
    function actionKey(address target, bytes4 selector) public pure returns (bytes32) {
        return keccak256(abi.encode(target, selector));
    }

    /// @notice The allowlist entry of (target, selector); all zero when it is not allowlisted.
    /// @param target The contract of the action.
    /// @param selector The selector of the action.
    /// @return The action: allowed, cooldown, lastExecutedAt, calldataHash.
    function getAction(address target, bytes4 selector) external view returns (Action memory) {
        return actions[actionKey(target, selector)];
    }

    // ---- internals ----

    /// @dev The checks every guardian call passes (target, allowlist, pin, cooldown), then the call through the
    /// Safe. Records the execution time before calling: a reverting call reverts the caller and with it the record.
    function _executeChecked(address target, bytes calldata data)
        internal
        returns (bool success, bytes memory returnData)
    {
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

        (success, returnData) = safe.execTransactionFromModuleReturnData(target, 0, data, Enum.Operation.Call);
        if (success) emit ActionExecuted(msg.sender, target, selector, dataHash);
    }

    /// @dev The Safe itself and this module are never targets: either would let a guardian
    /// rewrite who governs the Safe or the module.
    function _checkTarget(address target) internal view {
        if (target == address(safe) || target == address(this) || target == address(0)) {
            revert ForbiddenTarget(target);
        }
    }
}
