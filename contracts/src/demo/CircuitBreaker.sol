// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @notice A switch that halts the vault's outflows (withdrawals, redemptions, borrows) while deposits go on.
/// Tripping is a guardian's job; only the admin (the Safe, at full threshold) can reset it.
contract CircuitBreaker is AccessControl {
    bytes32 public constant TRIPPER_ROLE = keccak256("TRIPPER_ROLE");

    bool public tripped;

    event Tripped(address indexed by);
    event Reset(address indexed by);

    error BreakerTripped();

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(TRIPPER_ROLE, admin);
    }

    function trip() external onlyRole(TRIPPER_ROLE) {
        tripped = true;
        emit Tripped(msg.sender);
    }

    function reset() external onlyRole(DEFAULT_ADMIN_ROLE) {
        tripped = false;
        emit Reset(msg.sender);
    }

    function requireNotTripped() external view {
        if (tripped) revert BreakerTripped();
    }
}
