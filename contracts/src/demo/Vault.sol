// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {PriceOracle} from "./PriceOracle.sol";
import {CircuitBreaker} from "./CircuitBreaker.sol";

/// @notice The demo protocol onguard guards: an ERC-4626 vault that also lends its asset against collateral
/// priced by a PriceOracle. It carries two deliberate flaws for the attack scenarios:
///  - `redeemFor` (a "migration helper") forgets to check the owner's allowance, so anyone can redeem
///    anyone's shares to themselves: a drain;
///  - `borrow` trusts the oracle's spot price, so a manipulated price lets a borrower take everything.
/// Pausing (PAUSER_ROLE, held by the Safe) stops deposits, withdrawals and loans (share transfers go on, as in
/// most ERC-4626 vaults); the circuit breaker stops outflows.
contract Vault is ERC4626, Pausable, AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    uint256 public constant LOAN_TO_VALUE_BPS = 8_000;

    IERC20 public immutable collateralToken;
    PriceOracle public immutable oracle;
    CircuitBreaker public immutable breaker;

    mapping(address => uint256) public collateralOf;
    mapping(address => uint256) public debtOf;
    uint256 public totalDebt;

    event CollateralDeposited(address indexed account, uint256 amount);
    event Borrow(address indexed borrower, uint256 amount, uint256 price);

    error ExceedsBorrowLimit(uint256 requested, uint256 limit);

    constructor(IERC20 asset_, IERC20 collateral_, PriceOracle oracle_, CircuitBreaker breaker_, address admin)
        ERC4626(asset_)
        ERC20("onguard demo vault share", "ogVAULT")
    {
        collateralToken = collateral_;
        oracle = oracle_;
        breaker = breaker_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
    }

    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @dev Unpausing takes the admin role (the Safe at full threshold): never a guardian's call.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    /// @notice Assets the vault owns: cash in hand plus what borrowers owe.
    function totalAssets() public view override returns (uint256) {
        return IERC20(asset()).balanceOf(address(this)) + totalDebt;
    }

    /// @notice FLAW (drain): meant for a migration router, but checks no allowance from `owner`.
    function redeemFor(address owner, address receiver, uint256 shares) external returns (uint256 assets) {
        assets = previewRedeem(shares);
        // Passing `owner` as the caller is the bug: ERC4626 only spends an allowance when caller != owner.
        _withdraw(owner, receiver, owner, assets, shares);
    }

    function depositCollateral(uint256 amount) external whenNotPaused {
        collateralToken.safeTransferFrom(msg.sender, address(this), amount);
        collateralOf[msg.sender] += amount;
        emit CollateralDeposited(msg.sender, amount);
    }

    /// @notice FLAW (price manipulation): the limit trusts the oracle's latest price, however it got there.
    function borrow(uint256 amount) external whenNotPaused {
        breaker.requireNotTripped();
        uint256 price = oracle.price();
        uint256 limit = collateralOf[msg.sender] * price * LOAN_TO_VALUE_BPS / (1e18 * 10_000);
        uint256 debt = debtOf[msg.sender] + amount;
        if (debt > limit) revert ExceedsBorrowLimit(debt, limit);
        debtOf[msg.sender] = debt;
        totalDebt += amount;
        IERC20(asset()).safeTransfer(msg.sender, amount);
        emit Borrow(msg.sender, amount, price);
    }

    // ERC-4626 asks max* to return 0 while an action is disabled, even temporarily.
    function maxDeposit(address receiver) public view override returns (uint256) {
        return paused() ? 0 : super.maxDeposit(receiver);
    }

    function maxMint(address receiver) public view override returns (uint256) {
        return paused() ? 0 : super.maxMint(receiver);
    }

    function maxWithdraw(address owner) public view override returns (uint256) {
        return _outflowsHalted() ? 0 : super.maxWithdraw(owner);
    }

    function maxRedeem(address owner) public view override returns (uint256) {
        return _outflowsHalted() ? 0 : super.maxRedeem(owner);
    }

    function _outflowsHalted() internal view returns (bool) {
        return paused() || breaker.tripped();
    }

    function _deposit(address caller, address receiver, uint256 assets, uint256 shares)
        internal
        override
        whenNotPaused
    {
        super._deposit(caller, receiver, assets, shares);
    }

    function _withdraw(address caller, address receiver, address owner, uint256 assets, uint256 shares)
        internal
        override
        whenNotPaused
    {
        breaker.requireNotTripped();
        super._withdraw(caller, receiver, owner, assets, shares);
    }
}
