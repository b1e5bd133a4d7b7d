// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @notice Price of the vault's collateral in units of its asset (18 decimals), pushed by an updater key.
/// Deliberately unguarded against jumps: a compromised updater can set any price, which is the
/// price-manipulation path the demo scenarios exploit.
contract PriceOracle is AccessControl {
    bytes32 public constant UPDATER_ROLE = keccak256("UPDATER_ROLE");

    uint256 public price;
    uint256 public updatedAt;

    event PriceUpdated(uint256 previousPrice, uint256 newPrice, address indexed updater);

    constructor(address admin, address updater, uint256 initialPrice) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(UPDATER_ROLE, updater);
        price = initialPrice;
        updatedAt = block.timestamp;
    }

    function setPrice(uint256 newPrice) external onlyRole(UPDATER_ROLE) {
        emit PriceUpdated(price, newPrice, msg.sender);
        price = newPrice;
        updatedAt = block.timestamp;
    }
}
