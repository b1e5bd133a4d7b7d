// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "./utils/Vm.sol";
import {GuardedToken} from "../src/fixtures/GuardedToken.sol";
import {ERC1967Proxy} from "@openzeppelin/contracts/proxy/ERC1967/ERC1967Proxy.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Initializable} from "@openzeppelin/contracts-upgradeable/proxy/utils/Initializable.sol";
import {PausableUpgradeable} from "@openzeppelin/contracts-upgradeable/utils/PausableUpgradeable.sol";

/// @notice GuardedToken behind its ERC1967Proxy: roles as initialised, minting and transfers, the pause switch,
/// the revocation that cuts off a compromised minter, and upgrades only by the admin.
contract GuardedTokenTest is TestBase {
    GuardedToken internal token;
    address internal admin = address(0x5AFE);
    address internal minter = address(0x3147);
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);

    function setUp() public {
        GuardedToken implementation = new GuardedToken();
        bytes memory init = abi.encodeCall(GuardedToken.initialize, ("Guarded", "GRD", admin, minter));
        token = GuardedToken(address(new ERC1967Proxy(address(implementation), init)));
    }

    function test_initialize_grantsEveryRoleToAdminAndMintingToTheHotKey() public view {
        assertTrue(token.hasRole(token.DEFAULT_ADMIN_ROLE(), admin), "admin role");
        assertTrue(token.hasRole(token.PAUSER_ROLE(), admin), "pauser role");
        assertTrue(token.hasRole(token.MINTER_ROLE(), admin), "admin mints");
        assertTrue(token.hasRole(token.MINTER_ROLE(), minter), "hot key mints");
        assertFalse(token.hasRole(token.PAUSER_ROLE(), minter), "hot key cannot pause");
        assertFalse(token.hasRole(token.DEFAULT_ADMIN_ROLE(), minter), "hot key is no admin");
    }

    function test_initialize_cannotRunTwice() public {
        vm.expectRevert(Initializable.InvalidInitialization.selector);
        token.initialize("Again", "AGN", alice, alice);
    }

    function test_implementation_cannotBeInitialised() public {
        GuardedToken implementation = new GuardedToken();
        vm.expectRevert(Initializable.InvalidInitialization.selector);
        implementation.initialize("Direct", "DIR", alice, alice);
    }

    function test_mintAndTransfer_whenUnpaused() public {
        vm.prank(minter);
        token.mint(alice, 100e18);
        vm.prank(alice);
        assertTrue(token.transfer(bob, 40e18), "transfer");
        assertEq(token.balanceOf(alice), 60e18, "alice");
        assertEq(token.balanceOf(bob), 40e18, "bob");
    }

    function test_mint_refusedWithoutTheRole(address caller) public {
        vm.assume(caller != admin && caller != minter);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, token.MINTER_ROLE()
            )
        );
        vm.prank(caller);
        token.mint(caller, 1);
    }

    function test_pause_stopsTransfersAndMints() public {
        vm.prank(minter);
        token.mint(alice, 100e18);
        vm.prank(admin);
        token.pause();

        vm.expectRevert(PausableUpgradeable.EnforcedPause.selector);
        vm.prank(alice);
        // forge-lint: disable-next-line(erc20-unchecked-transfer)
        token.transfer(bob, 1);
        vm.expectRevert(PausableUpgradeable.EnforcedPause.selector);
        vm.prank(minter);
        token.mint(alice, 1);
        assertEq(token.balanceOf(alice), 100e18, "nothing moved");
    }

    function test_pause_refusedWithoutThePauserRole() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, minter, token.PAUSER_ROLE()
            )
        );
        vm.prank(minter);
        token.pause();
        assertFalse(token.paused(), "still unpaused");
    }

    function test_unpause_restoresTransfers() public {
        vm.prank(minter);
        token.mint(alice, 10);
        vm.startPrank(admin);
        token.pause();
        token.unpause();
        vm.stopPrank();
        vm.prank(alice);
        assertTrue(token.transfer(bob, 10), "transfer");
        assertEq(token.balanceOf(bob), 10, "bob");
    }

    function test_revokeRole_cutsOffACompromisedMinter() public {
        bytes32 minterRole = token.MINTER_ROLE();
        vm.prank(admin);
        token.revokeRole(minterRole, minter);
        assertFalse(token.hasRole(minterRole, minter), "role revoked");
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, minter, minterRole)
        );
        vm.prank(minter);
        token.mint(minter, 1e30);
        assertEq(token.totalSupply(), 0, "nothing minted");
    }

    function test_revokeRole_refusedToTheMinterItself() public {
        bytes32 minterRole = token.MINTER_ROLE();
        bytes32 adminRole = token.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, minter, adminRole)
        );
        vm.prank(minter);
        token.revokeRole(minterRole, admin);
    }

    function test_upgrade_onlyByTheAdmin() public {
        GuardedToken next = new GuardedToken();
        bytes32 adminRole = token.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, minter, adminRole)
        );
        vm.prank(minter);
        token.upgradeToAndCall(address(next), "");

        vm.prank(minter);
        token.mint(alice, 7);
        vm.prank(admin);
        token.upgradeToAndCall(address(next), "");
        assertEq(token.balanceOf(alice), 7, "state kept across the upgrade");
    }
}
