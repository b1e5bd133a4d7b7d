// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "./utils/Vm.sol";
import {DonationLendingMarket} from "../src/fixtures/DonationLendingMarket.sol";
import {DonationAttacker} from "../src/fixtures/DonationAttacker.sol";
import {FlashLender} from "../src/demo/FlashLender.sol";
import {TestToken} from "../src/demo/TestToken.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @notice The Euler-shaped lending market of the replay corpus: deposits, leverage up to the self-collateral
/// factor, the health checks it has and the one it lacks (donateToReserves), the capped liquidation discount, the
/// whole donate-then-self-liquidate exploit in one transaction, and the pause that stops it.
contract DonationLendingMarketTest is TestBase {
    uint256 internal constant HONEST = 2_000_000e18;
    uint256 internal constant LOAN = 3_000_000e18;
    uint256 internal constant DEPOSIT = 2_000_000e18;

    TestToken internal asset;
    DonationLendingMarket internal market;
    FlashLender internal lender;
    address internal safe = address(0x5AFE);
    address internal alice = address(0xA11CE);
    address internal mallory = address(0x3A11);
    address internal liquidator = address(0x11C0);

    function setUp() public {
        asset = new TestToken("Demo DAI", "dDAI");
        market = new DonationLendingMarket(asset, safe);
        lender = new FlashLender(asset);
        asset.mint(address(lender), LOAN);
        _deposit(alice, HONEST);
    }

    function _deposit(address account, uint256 assets) internal {
        asset.mint(account, assets);
        vm.startPrank(account);
        asset.approve(address(market), type(uint256).max);
        market.deposit(assets);
        vm.stopPrank();
    }

    function test_depositAndWithdraw_oneShareAnAssetWithoutInterest() public {
        assertEq(market.sharesOf(alice), HONEST, "shares");
        assertEq(market.cash(), HONEST, "cash");
        vm.prank(alice);
        market.withdraw(HONEST / 4);
        assertEq(market.sharesOf(alice), HONEST * 3 / 4, "shares left");
        assertEq(asset.balanceOf(alice), HONEST / 4, "paid out");
    }

    function test_mint_leversUpToTheSelfCollateralFactorAndNoFurther() public {
        _deposit(mallory, 100e18);
        vm.startPrank(mallory);
        market.mint(1_900e18); // 0.95 * 2,000 = 1,900: health exactly 1
        assertEq(market.healthScore(mallory), 1e18, "health at the limit");
        vm.expectRevert(bytes("unhealthy"));
        market.mint(1e18);
        vm.stopPrank();
    }

    function test_withdraw_refusedWhenItWouldLeaveTheAccountUnderWater() public {
        _deposit(mallory, 100e18);
        vm.startPrank(mallory);
        market.mint(1_000e18);
        vm.expectRevert(bytes("unhealthy"));
        market.withdraw(100e18);
        vm.stopPrank();
    }

    function test_donateToReserves_leavesTheDonorUnderWaterWithoutAnyCheck() public {
        _deposit(mallory, 100e18);
        vm.startPrank(mallory);
        market.mint(1_000e18);
        market.donateToReserves(500e18); // the flaw: accepted although it leaves 600 shares against 1,000 debt
        vm.stopPrank();
        assertTrue(market.healthScore(mallory) < 1e18, "under water");
        assertEq(market.reserveShares(), 500e18, "reserves");
        assertEq(market.totalShares(), HONEST + 1_100e18, "donated shares still count in the total");
    }

    function test_liquidate_refusesAHealthyAccountAndTheViolatorItself() public {
        _deposit(mallory, 100e18);
        vm.prank(liquidator);
        vm.expectRevert(bytes("healthy"));
        market.liquidate(mallory, type(uint256).max);
        vm.startPrank(mallory);
        market.mint(1_000e18);
        market.donateToReserves(500e18);
        vm.expectRevert(bytes("self-liquidation"));
        market.liquidate(mallory, type(uint256).max);
        vm.stopPrank();
    }

    function test_liquidate_paysMoreCollateralThanTheDebtTakenOn() public {
        _deposit(mallory, 100e18);
        vm.startPrank(mallory);
        market.mint(1_000e18);
        market.donateToReserves(500e18); // health 600 * 0.95 / 1,000 = 0.57: the discount is capped at 20%
        vm.stopPrank();
        vm.prank(liquidator);
        market.liquidate(mallory, type(uint256).max);
        assertEq(market.sharesOf(liquidator), 600e18, "every share of the violator");
        assertEq(market.debtOf(liquidator), 480e18, "for 80% of their value in debt");
        assertEq(market.debtOf(mallory), 520e18, "bad debt left behind, with no collateral");
        assertEq(market.sharesOf(mallory), 0, "no collateral left");
    }

    function test_attack_donateThenSelfLiquidateTakesTheHonestDepositsInOneTransaction() public {
        vm.prank(mallory);
        DonationAttacker attacker = new DonationAttacker(lender, market);
        vm.prank(mallory);
        attacker.attack(LOAN, DEPOSIT);
        assertEq(asset.balanceOf(mallory), HONEST, "the attacker leaves with the honest deposits");
        assertEq(market.cash(), 0, "the market's cash is gone");
        assertEq(asset.balanceOf(address(market)), 0, "and its tokens");
        assertEq(asset.balanceOf(address(lender)), LOAN, "the flash loan was repaid");
        assertEq(market.sharesOf(alice), HONEST, "alice's shares are now claims on bad debt");
    }

    function test_attack_revertsOnAPausedMarket() public {
        vm.prank(mallory);
        DonationAttacker attacker = new DonationAttacker(lender, market);
        vm.prank(safe);
        market.pause();
        vm.prank(mallory);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        attacker.attack(LOAN, DEPOSIT);
        assertEq(market.cash(), HONEST, "nothing taken");
    }

    function test_pause_onlyTheOwner() public {
        vm.prank(mallory);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, mallory));
        market.pause();
        vm.prank(safe);
        market.pause();
        assertTrue(market.paused(), "paused by the Safe");
    }
}
