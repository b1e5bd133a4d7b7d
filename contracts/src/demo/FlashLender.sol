// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

interface IFlashBorrower {
    function onFlashLoan(uint256 amount, bytes calldata data) external;
}

/// @notice A minimal flash lender for the replay scenarios: lends its whole token balance, fee-free, for one
/// call, and reverts unless it is repaid before the call returns. Test chains only.
contract FlashLender {
    IERC20 public immutable token;

    constructor(IERC20 token_) {
        token = token_;
    }

    function flashLoan(uint256 amount, bytes calldata data) external {
        uint256 before = token.balanceOf(address(this));
        require(token.transfer(msg.sender, amount), "transfer failed");
        IFlashBorrower(msg.sender).onFlashLoan(amount, data);
        require(token.balanceOf(address(this)) >= before, "flash loan not repaid");
    }
}
