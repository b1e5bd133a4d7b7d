// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

interface IPausableProtocol {
    function paused() external view returns (bool);
}

/// @notice The protocol's fee treasury for the replay scenarios: owned by the Safe (OpenZeppelin Ownable), holds
/// fees in one token, and the owner sweeps them. It honours the vault's pause switch: nothing leaves it while the
/// vault is paused, which is what lets the guardian protect it.
/// @dev DELIBERATELY FLAWED, for the ownership-takeover scenario: `transferOwnership` also accepts the
/// fee-collector key (meant for "key rotation" by the ops team), so whoever holds that hot key can take
/// ownership from the Safe. Test chains only.
contract FeeTreasury is Ownable {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;
    IPausableProtocol public immutable protocol;
    address public immutable feeCollector;

    event Swept(address indexed to, uint256 amount);

    constructor(IERC20 token_, IPausableProtocol protocol_, address owner_, address feeCollector_) Ownable(owner_) {
        token = token_;
        protocol = protocol_;
        feeCollector = feeCollector_;
    }

    /// @notice The flaw: the owner OR the fee collector may hand ownership over.
    function transferOwnership(address newOwner) public override {
        if (msg.sender != owner() && msg.sender != feeCollector) revert OwnableUnauthorizedAccount(msg.sender);
        if (newOwner == address(0)) revert OwnableInvalidOwner(address(0));
        _transferOwnership(newOwner);
    }

    /// @notice Sends every fee the treasury holds to `to`; refused while the protocol is paused.
    function sweep(address to) external onlyOwner {
        require(!protocol.paused(), "FeeTreasury: protocol paused");
        uint256 amount = token.balanceOf(address(this));
        token.safeTransfer(to, amount);
        emit Swept(to, amount);
    }
}
