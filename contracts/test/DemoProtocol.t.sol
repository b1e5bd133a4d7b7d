// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {Fixture} from "./utils/Fixture.sol";
import {Vault} from "../src/demo/Vault.sol";
import {CircuitBreaker} from "../src/demo/CircuitBreaker.sol";
import {PriceOracle} from "../src/demo/PriceOracle.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

/// @notice The demo protocol the guardian protects: pause and breaker semantics, admin-only recovery,
/// and the two deliberate flaws the attack scenarios rely on.
contract DemoProtocolTest is Fixture {
    uint256 internal constant ALICE_DEPOSIT = 1_000e18;
    uint256 internal constant BOB_COLLATERAL = 100e18;

    uint256 internal aliceShares;

    function setUp() public override {
        super.setUp();
        asset.mint(alice, 2 * ALICE_DEPOSIT);
        vm.startPrank(alice);
        asset.approve(address(vault), type(uint256).max);
        aliceShares = vault.deposit(ALICE_DEPOSIT, alice);
        vm.stopPrank();

        collateral.mint(bob, 2 * BOB_COLLATERAL);
        vm.startPrank(bob);
        collateral.approve(address(vault), type(uint256).max);
        vault.depositCollateral(BOB_COLLATERAL);
        vm.stopPrank();
    }

    function _pause() internal {
        vm.prank(address(safe));
        vault.pause();
    }

    function _trip() internal {
        vm.prank(address(safe));
        breaker.trip();
    }

    function _unauthorized(address account, bytes32 role) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, account, role);
    }

    // ---- baseline ----

    function test_setUp_state() public view {
        assertEq(aliceShares, ALICE_DEPOSIT, "1:1 shares on first deposit");
        assertEq(vault.totalAssets(), ALICE_DEPOSIT, "total assets");
        assertEq(vault.collateralOf(bob), BOB_COLLATERAL, "bob collateral");
        assertTrue(vault.hasRole(vault.PAUSER_ROLE(), address(safe)), "safe is pauser");
        assertTrue(vault.hasRole(vault.DEFAULT_ADMIN_ROLE(), address(safe)), "safe is vault admin");
        assertTrue(breaker.hasRole(breaker.TRIPPER_ROLE(), address(safe)), "safe is tripper");
        assertEq(oracle.price(), INITIAL_PRICE, "price");
    }

    function test_testToken_mintsToAnyone() public {
        asset.mint(mallory, 5);
        assertEq(asset.balanceOf(mallory), 5, "minted");
    }

    // ---- a paused vault refuses everything ----

    function test_pausedVault_refusesDeposit() public {
        _pause();
        vm.expectRevert(abi.encodeWithSelector(ERC4626.ERC4626ExceededMaxDeposit.selector, alice, 1e18, 0));
        vm.prank(alice);
        vault.deposit(1e18, alice);
    }

    function test_pausedVault_refusesMint() public {
        _pause();
        vm.expectRevert(abi.encodeWithSelector(ERC4626.ERC4626ExceededMaxMint.selector, alice, 1e18, 0));
        vm.prank(alice);
        vault.mint(1e18, alice);
    }

    function test_pausedVault_refusesWithdraw() public {
        _pause();
        vm.expectRevert(abi.encodeWithSelector(ERC4626.ERC4626ExceededMaxWithdraw.selector, alice, 1e18, 0));
        vm.prank(alice);
        vault.withdraw(1e18, alice, alice);
    }

    function test_pausedVault_refusesRedeem() public {
        _pause();
        uint256 shares = aliceShares;
        vm.expectRevert(abi.encodeWithSelector(ERC4626.ERC4626ExceededMaxRedeem.selector, alice, shares, 0));
        vm.prank(alice);
        vault.redeem(shares, alice, alice);
    }

    function test_pausedVault_refusesRedeemFor() public {
        _pause();
        uint256 shares = aliceShares;
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(mallory);
        vault.redeemFor(alice, mallory, shares);
        assertEq(vault.balanceOf(alice), shares, "alice keeps her shares");
    }

    function test_pausedVault_refusesBorrow() public {
        _pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(bob);
        vault.borrow(1e18);
    }

    function test_pausedVault_refusesDepositCollateral() public {
        _pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(bob);
        vault.depositCollateral(1e18);
    }

    // ---- a tripped breaker halts outflows only ----

    function test_trippedBreaker_refusesWithdraw() public {
        _trip();
        vm.expectRevert(abi.encodeWithSelector(ERC4626.ERC4626ExceededMaxWithdraw.selector, alice, 1e18, 0));
        vm.prank(alice);
        vault.withdraw(1e18, alice, alice);
    }

    function test_trippedBreaker_refusesRedeem() public {
        _trip();
        uint256 shares = aliceShares;
        vm.expectRevert(abi.encodeWithSelector(ERC4626.ERC4626ExceededMaxRedeem.selector, alice, shares, 0));
        vm.prank(alice);
        vault.redeem(shares, alice, alice);
    }

    function test_trippedBreaker_refusesRedeemFor() public {
        _trip();
        uint256 shares = aliceShares;
        vm.expectRevert(CircuitBreaker.BreakerTripped.selector);
        vm.prank(mallory);
        vault.redeemFor(alice, mallory, shares);
    }

    function test_trippedBreaker_refusesBorrow() public {
        _trip();
        vm.expectRevert(CircuitBreaker.BreakerTripped.selector);
        vm.prank(bob);
        vault.borrow(1e18);
    }

    function test_trippedBreaker_allowsDeposit() public {
        _trip();
        vm.prank(alice);
        uint256 shares = vault.deposit(ALICE_DEPOSIT, alice);
        assertEq(shares, ALICE_DEPOSIT, "deposit still works");
        assertEq(vault.balanceOf(alice), 2 * ALICE_DEPOSIT, "alice shares");
    }

    function test_trippedBreaker_allowsDepositCollateral() public {
        _trip();
        vm.prank(bob);
        vault.depositCollateral(BOB_COLLATERAL);
        assertEq(vault.collateralOf(bob), 2 * BOB_COLLATERAL, "collateral added");
    }

    // ---- only the admin recovers ----

    function test_unpause_onlyAdmin() public {
        _pause();
        bytes32 adminRole = vault.DEFAULT_ADMIN_ROLE();
        // A second pauser (e.g. a guardian key granted PAUSER_ROLE directly) still cannot unpause.
        bytes32 pauserRole = vault.PAUSER_ROLE();
        vm.prank(address(safe));
        vault.grantRole(pauserRole, guardian);

        vm.expectRevert(_unauthorized(guardian, adminRole));
        vm.prank(guardian);
        vault.unpause();

        vm.expectRevert(_unauthorized(mallory, adminRole));
        vm.prank(mallory);
        vault.unpause();
        assertTrue(vault.paused(), "still paused");

        vm.prank(address(safe));
        vault.unpause();
        assertFalse(vault.paused(), "admin unpaused");
        vm.prank(alice);
        vault.withdraw(1e18, alice, alice);
    }

    function test_reset_onlyAdmin() public {
        _trip();
        bytes32 adminRole = breaker.DEFAULT_ADMIN_ROLE();
        bytes32 tripperRole = breaker.TRIPPER_ROLE();
        vm.prank(address(safe));
        breaker.grantRole(tripperRole, guardian);

        vm.expectRevert(_unauthorized(guardian, adminRole));
        vm.prank(guardian);
        breaker.reset();

        vm.expectRevert(_unauthorized(mallory, adminRole));
        vm.prank(mallory);
        breaker.reset();
        assertTrue(breaker.tripped(), "still tripped");

        vm.prank(address(safe));
        breaker.reset();
        assertFalse(breaker.tripped(), "admin reset");
        vm.prank(bob);
        vault.borrow(1e18);
    }

    function test_pause_onlyPauser() public {
        bytes32 pauserRole = vault.PAUSER_ROLE();
        vm.expectRevert(_unauthorized(mallory, pauserRole));
        vm.prank(mallory);
        vault.pause();
    }

    function test_trip_onlyTripper() public {
        bytes32 tripperRole = breaker.TRIPPER_ROLE();
        vm.expectRevert(_unauthorized(mallory, tripperRole));
        vm.prank(mallory);
        breaker.trip();
    }

    function test_setPrice_onlyUpdater() public {
        bytes32 updaterRole = oracle.UPDATER_ROLE();
        vm.expectRevert(_unauthorized(mallory, updaterRole));
        vm.prank(mallory);
        oracle.setPrice(1_000e18);
        // Not even the oracle's admin pushes prices without the role.
        vm.expectRevert(_unauthorized(address(safe), updaterRole));
        vm.prank(address(safe));
        oracle.setPrice(1_000e18);
    }

    // ---- deliberate flaw 1: redeemFor checks no allowance ----

    function test_redeemFor_letsAnyoneRedeemAnotherHoldersShares() public {
        uint256 shares = aliceShares;
        assertEq(vault.allowance(alice, mallory), 0, "alice approved nothing");

        vm.prank(mallory);
        uint256 assets = vault.redeemFor(alice, mallory, shares);

        assertEq(assets, ALICE_DEPOSIT, "all of alice's assets");
        assertEq(asset.balanceOf(mallory), ALICE_DEPOSIT, "mallory received them");
        assertEq(vault.balanceOf(alice), 0, "alice's shares burned");
        assertEq(vault.totalAssets(), 0, "vault drained");
    }

    function test_redeem_standardPathStillNeedsAllowance() public {
        uint256 shares = aliceShares;
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, mallory, uint256(0), shares)
        );
        vm.prank(mallory);
        vault.redeem(shares, mallory, alice);
        assertEq(vault.balanceOf(alice), shares, "alice keeps her shares");
    }

    // ---- deliberate flaw 2: borrow trusts the spot price ----

    function test_borrow_limitedByLoanToValue() public {
        uint256 limit = BOB_COLLATERAL * 8_000 / 10_000; // price 1.0
        vm.expectRevert(abi.encodeWithSelector(Vault.ExceedsBorrowLimit.selector, limit + 1, limit));
        vm.prank(bob);
        vault.borrow(limit + 1);

        vm.prank(bob);
        vault.borrow(limit);
        assertEq(vault.debtOf(bob), limit, "debt");
        assertEq(asset.balanceOf(bob), limit, "bob got the loan");
        assertEq(vault.totalAssets(), ALICE_DEPOSIT, "debt counts as an asset");
    }

    function test_raisedOraclePrice_letsBorrowerTakeMore() public {
        uint256 honestLimit = BOB_COLLATERAL * 8_000 / 10_000;
        vm.expectRevert(abi.encodeWithSelector(Vault.ExceedsBorrowLimit.selector, ALICE_DEPOSIT, honestLimit));
        vm.prank(bob);
        vault.borrow(ALICE_DEPOSIT);

        vm.expectEmit(true, true, true, true, address(oracle));
        emit PriceOracle.PriceUpdated(INITIAL_PRICE, 100e18, updater);
        vm.prank(updater);
        oracle.setPrice(100e18);

        vm.prank(bob);
        vault.borrow(ALICE_DEPOSIT); // the whole vault against 100 units of collateral
        assertEq(asset.balanceOf(bob), ALICE_DEPOSIT, "bob took everything");
        assertEq(asset.balanceOf(address(vault)), 0, "vault has no cash left");
    }

    // ---- the guardian, end to end ----

    function test_guardianPauseThroughModule_stopsTheRedeemForDrain() public {
        _allowPause(1 hours);
        _exec(address(vault), pauseData);

        uint256 shares = aliceShares;
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(mallory);
        vault.redeemFor(alice, mallory, shares);
        assertEq(vault.totalAssets(), ALICE_DEPOSIT, "funds safe");
    }

    function test_guardianTripThroughModule_stopsBorrowButKeepsDeposits() public {
        _allowTrip(1 hours);
        _exec(address(breaker), tripData);
        vm.prank(updater);
        oracle.setPrice(100e18);

        vm.expectRevert(CircuitBreaker.BreakerTripped.selector);
        vm.prank(bob);
        vault.borrow(ALICE_DEPOSIT);

        vm.prank(alice);
        vault.deposit(1e18, alice);
        assertEq(vault.totalAssets(), ALICE_DEPOSIT + 1e18, "deposit accepted");
    }
}
