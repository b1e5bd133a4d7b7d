// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {MockSafe} from "./utils/MockSafe.sol";
import {GuardianModule} from "../src/GuardianModule.sol";
import {Vault} from "../src/demo/Vault.sol";
import {CircuitBreaker} from "../src/demo/CircuitBreaker.sol";
import {PriceOracle} from "../src/demo/PriceOracle.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @notice Unit tests for GuardianModule, executed through a MockSafe against the real demo contracts.
contract GuardianModuleTest is Fixture {
    uint64 internal constant COOLDOWN = 1 hours;

    // =====================================================================
    // construction and wiring
    // =====================================================================

    function test_constructor_setsSafe() public view {
        assertEq(address(module.safe()), address(safe), "safe");
        assertTrue(module.isGuardian(guardian), "fixture guardian");
        assertEq(safe.module(), address(module), "module enabled on safe");
    }

    function test_constructor_revertsOnZeroSafe() public {
        vm.expectRevert(GuardianModule.ZeroAddress.selector);
        new GuardianModule(address(0));
    }

    function test_mockSafe_refusesCallsNotFromTheModule() public {
        vm.expectRevert(abi.encodeWithSelector(MockSafe.NotAuthorizedModule.selector, guardian));
        vm.prank(guardian);
        safe.execTransactionFromModuleReturnData(address(vault), 0, pauseData, 0);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    // =====================================================================
    // the allowlist
    // =====================================================================

    function test_allowAction_storesAction() public {
        _allow(address(vault), Vault.pause.selector, keccak256(pauseData), COOLDOWN);
        GuardianModule.Action memory a = module.getAction(address(vault), Vault.pause.selector);
        assertTrue(a.allowed, "allowed");
        assertEq(a.cooldown, COOLDOWN, "cooldown");
        assertEq(a.lastExecutedAt, 0, "never executed");
        assertEq(a.calldataHash, keccak256(pauseData), "calldata hash");
        assertEq(
            module.actionKey(address(vault), Vault.pause.selector),
            keccak256(abi.encode(address(vault), Vault.pause.selector)),
            "action key"
        );
    }

    function test_execute_allowlistedActionPausesVault() public {
        _allowPause(COOLDOWN);
        assertFalse(vault.paused(), "not paused before");

        _exec(address(vault), pauseData);

        assertTrue(vault.paused(), "vault paused");
        assertEq(safe.callCount(), 1, "one safe call");
        assertEq(safe.lastTo(), address(vault), "safe called the vault");
        assertEq(safe.lastValue(), 0, "no value");
        assertEq(safe.lastData(), pauseData, "exact calldata forwarded");
        assertEq(safe.lastOperation(), 0, "plain call");
        assertEq(
            module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, START, "execution time recorded"
        );
    }

    function test_execute_allowlistedActionTripsBreaker() public {
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "breaker tripped");
        assertEq(safe.lastTo(), address(breaker), "safe called the breaker");
    }

    function test_execute_returnsInnerReturnData() public {
        // hasRole is a view returning bool: a harmless allowlisted read shows the return data is passed back.
        _allow(address(vault), IAccessControl.hasRole.selector, bytes32(0), 0);
        bytes memory ret =
            _exec(address(vault), abi.encodeCall(IAccessControl.hasRole, (vault.PAUSER_ROLE(), address(safe))));
        assertEq(ret, abi.encode(true), "return data");
    }

    function test_execute_pinnedCalldataAcceptsExactCalldata() public {
        _allow(address(vault), Vault.pause.selector, keccak256(pauseData), COOLDOWN);
        _exec(address(vault), pauseData);
        assertTrue(vault.paused(), "vault paused");
    }

    function test_execute_pinnedCalldataRefusesOtherCalldataWithSameSelector() public {
        _allow(address(vault), Vault.pause.selector, keccak256(pauseData), COOLDOWN);
        // Same selector, trailing bytes: Solidity's pause() would accept it, the pin must not.
        bytes memory other = abi.encodePacked(Vault.pause.selector, uint256(1));
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.CalldataMismatch.selector, keccak256(pauseData), keccak256(other))
        );
        _exec(address(vault), other);
        assertFalse(vault.paused(), "vault must not be paused");
        assertEq(safe.callCount(), 0, "safe never called");
    }

    function test_execute_pinnedCalldataRefusesOtherArguments() public {
        // A pinned call with arguments: the Safe may set the price to exactly 2e18 through a guardian, nothing else.
        PriceOracle safeOracle = new PriceOracle(address(safe), address(safe), INITIAL_PRICE);
        bytes memory pinned = abi.encodeCall(PriceOracle.setPrice, (2e18));
        _allow(address(safeOracle), PriceOracle.setPrice.selector, keccak256(pinned), COOLDOWN);

        bytes memory other = abi.encodeCall(PriceOracle.setPrice, (1000e18));
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.CalldataMismatch.selector, keccak256(pinned), keccak256(other))
        );
        _exec(address(safeOracle), other);

        _exec(address(safeOracle), pinned);
        assertEq(safeOracle.price(), 2e18, "pinned price set");
    }

    function test_execute_unpinnedActionAcceptsAnyCalldataWithTheSelector() public {
        _allowPause(COOLDOWN);
        _exec(address(vault), abi.encodePacked(Vault.pause.selector, uint256(42)));
        assertTrue(vault.paused(), "vault paused");
    }

    function test_revokeAction_removesAction() public {
        _allowPause(COOLDOWN);
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.ActionRevoked(address(vault), Vault.pause.selector);
        vm.prank(address(safe));
        module.revokeAction(address(vault), Vault.pause.selector);

        GuardianModule.Action memory a = module.getAction(address(vault), Vault.pause.selector);
        assertFalse(a.allowed, "revoked");
        assertEq(a.cooldown, 0, "cooldown cleared");
        assertEq(a.calldataHash, bytes32(0), "hash cleared");

        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, address(vault), Vault.pause.selector)
        );
        _exec(address(vault), pauseData);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_allowAction_isPerTarget() public {
        // Allowing pause() on one vault does not allow pause() on another vault the Safe also administers.
        Vault other = new Vault(asset, collateral, oracle, breaker, address(safe));
        _allowPause(COOLDOWN);
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, address(other), Vault.pause.selector)
        );
        _exec(address(other), pauseData);
        assertFalse(other.paused(), "other vault must not be paused");
    }

    // =====================================================================
    // the rate limit
    // =====================================================================

    function test_execute_secondExecutionInsideCooldownReverts() public {
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);

        vm.warp(START + COOLDOWN - 1);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        _exec(address(breaker), tripData);
        assertEq(safe.callCount(), 1, "only the first execution reached the safe");
    }

    function test_execute_sameBlockRepeatReverts() public {
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        _exec(address(breaker), tripData);
    }

    function test_execute_succeedsAfterCooldown() public {
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);
        vm.prank(address(safe));
        breaker.reset();

        vm.warp(START + COOLDOWN); // exactly at readyAt
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "tripped again");
        assertEq(safe.callCount(), 2, "two executions");
        assertEq(
            module.getAction(address(breaker), CircuitBreaker.trip.selector).lastExecutedAt,
            START + COOLDOWN,
            "timestamp updated"
        );

        vm.warp(START + 10 * COOLDOWN);
        _exec(address(breaker), tripData);
        assertEq(safe.callCount(), 3, "three executions");
    }

    function test_execute_zeroCooldownAllowsImmediateRepeat() public {
        _allowTrip(0);
        _exec(address(breaker), tripData);
        _exec(address(breaker), tripData);
        assertEq(safe.callCount(), 2, "two executions in one block");
    }

    function test_execute_cooldownIsPerAction() public {
        _allowPause(COOLDOWN);
        _allowTrip(COOLDOWN);
        _exec(address(vault), pauseData);
        _exec(address(breaker), tripData); // a different action is not cooling down
        assertTrue(vault.paused() && breaker.tripped(), "both executed");
    }

    function test_execute_cooldownIsSharedBetweenGuardians() public {
        address second = address(0x5EC0);
        vm.prank(address(safe));
        module.addGuardian(second);
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);

        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        vm.prank(second);
        module.execute(address(breaker), 0, tripData, 0);
    }

    function test_execute_failedExecutionDoesNotConsumeCooldown() public {
        _allowPause(COOLDOWN);
        vm.prank(address(safe));
        vault.pause();

        vm.expectRevert(
            abi.encodeWithSelector(
                GuardianModule.ExecutionFailed.selector, abi.encodeWithSelector(Pausable.EnforcedPause.selector)
            )
        );
        _exec(address(vault), pauseData);
        assertEq(module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, 0, "not recorded");

        vm.prank(address(safe));
        vault.unpause();
        _exec(address(vault), pauseData); // no CoolingDown: the failed attempt was rolled back
        assertTrue(vault.paused(), "paused");
    }

    // =====================================================================
    // forbidden paths
    // =====================================================================

    function test_execute_revertsForNonGuardian() public {
        _allowPause(COOLDOWN);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotGuardian.selector, mallory));
        vm.prank(mallory);
        module.execute(address(vault), 0, pauseData, 0);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_execute_revertsForTheSafeAsCaller() public {
        // The Safe configures the module; it is not itself a guardian.
        _allowPause(COOLDOWN);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotGuardian.selector, address(safe)));
        vm.prank(address(safe));
        module.execute(address(vault), 0, pauseData, 0);
    }

    function test_execute_revertsForRemovedGuardian() public {
        _allowPause(COOLDOWN);
        vm.prank(address(safe));
        module.removeGuardian(guardian);
        assertFalse(module.isGuardian(guardian), "removed");

        vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotGuardian.selector, guardian));
        _exec(address(vault), pauseData);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_execute_revertsForUnlistedSelector() public {
        _allowPause(COOLDOWN);
        // The Safe holds the admin role, so unpause() would succeed if it were reachable.
        vm.prank(address(safe));
        vault.pause();
        bytes memory unpauseData = abi.encodeCall(Vault.unpause, ());
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, address(vault), Vault.unpause.selector)
        );
        _exec(address(vault), unpauseData);
        assertTrue(vault.paused(), "still paused");
    }

    function test_execute_revertsForDrainingSelector() public {
        // Even with pause allowlisted, the Safe's tokens cannot be moved through the module.
        _allowPause(COOLDOWN);
        asset.mint(address(safe), 1e18);
        bytes memory transferData = abi.encodeCall(IERC20.transfer, (mallory, 1e18));
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, address(asset), IERC20.transfer.selector)
        );
        _exec(address(asset), transferData);
        assertEq(asset.balanceOf(address(safe)), 1e18, "safe funds intact");
    }

    function test_execute_revertsWhenTargetIsSafe() public {
        bytes memory data = abi.encodeCall(MockSafe.enableModule, (mallory));
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(safe)));
        _exec(address(safe), data);
    }

    function test_execute_revertsWhenTargetIsModule() public {
        bytes memory data = abi.encodeCall(GuardianModule.addGuardian, (mallory));
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(module)));
        _exec(address(module), data);
        assertFalse(module.isGuardian(mallory), "no new guardian");
    }

    function test_execute_revertsWhenTargetIsZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(0)));
        _exec(address(0), pauseData);
    }

    function test_allowAction_revertsWhenTargetIsSafe() public {
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(safe)));
        vm.prank(address(safe));
        module.allowAction(address(safe), MockSafe.enableModule.selector, bytes32(0), 0);
    }

    function test_allowAction_revertsWhenTargetIsModule() public {
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(module)));
        vm.prank(address(safe));
        module.allowAction(address(module), GuardianModule.addGuardian.selector, bytes32(0), 0);
    }

    function test_allowAction_revertsWhenTargetIsZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(0)));
        vm.prank(address(safe));
        module.allowAction(address(0), Vault.pause.selector, bytes32(0), 0);
    }

    function test_execute_revertsOnDelegatecall() public {
        _allowPause(COOLDOWN);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.OnlyCallAllowed.selector, uint8(1)));
        vm.prank(guardian);
        module.execute(address(vault), 0, pauseData, 1);
        assertEq(safe.callCount(), 0, "safe never called");
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_execute_revertsOnNonzeroValue() public {
        _allowPause(COOLDOWN);
        vm.deal(address(safe), 1 ether);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ValueNotAllowed.selector, uint256(1)));
        vm.prank(guardian);
        module.execute(address(vault), 1, pauseData, 0);
        assertEq(safe.callCount(), 0, "safe never called");
        assertEq(address(safe).balance, 1 ether, "safe ether intact");
    }

    function test_execute_revertsOnCalldataShorterThanFourBytes() public {
        _allowPause(COOLDOWN);
        bytes memory pauseSel = pauseData;
        for (uint256 len = 0; len < 4; len++) {
            bytes memory data = new bytes(len);
            for (uint256 i = 0; i < len; i++) {
                data[i] = pauseSel[i];
            }
            vm.expectRevert(GuardianModule.CalldataTooShort.selector);
            _exec(address(vault), data);
        }
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_execute_reportsFailingInnerCallAsExecutionFailed() public {
        // A breaker whose TRIPPER_ROLE the Safe does not hold: the inner call reverts inside the Safe.
        CircuitBreaker foreign = new CircuitBreaker(address(0xDEAD));
        _allow(address(foreign), CircuitBreaker.trip.selector, bytes32(0), COOLDOWN);
        bytes memory inner = abi.encodeWithSelector(
            IAccessControl.AccessControlUnauthorizedAccount.selector, address(safe), foreign.TRIPPER_ROLE()
        );
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ExecutionFailed.selector, inner));
        _exec(address(foreign), tripData);
        assertFalse(foreign.tripped(), "not tripped");
    }

    function test_addGuardian_revertsUnlessSafe() public {
        address[3] memory callers = [mallory, guardian, address(this)];
        for (uint256 i = 0; i < callers.length; i++) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotSafe.selector, callers[i]));
            vm.prank(callers[i]);
            module.addGuardian(mallory);
        }
        assertFalse(module.isGuardian(mallory), "mallory not added");
    }

    function test_removeGuardian_revertsUnlessSafe() public {
        address[3] memory callers = [mallory, guardian, address(this)];
        for (uint256 i = 0; i < callers.length; i++) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotSafe.selector, callers[i]));
            vm.prank(callers[i]);
            module.removeGuardian(guardian);
        }
        assertTrue(module.isGuardian(guardian), "guardian still there");
    }

    function test_allowAction_revertsUnlessSafe() public {
        address[3] memory callers = [mallory, guardian, address(this)];
        for (uint256 i = 0; i < callers.length; i++) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotSafe.selector, callers[i]));
            vm.prank(callers[i]);
            module.allowAction(address(vault), Vault.unpause.selector, bytes32(0), 0);
        }
        assertFalse(module.getAction(address(vault), Vault.unpause.selector).allowed, "not allowed");
    }

    function test_revokeAction_revertsUnlessSafe() public {
        _allowPause(COOLDOWN);
        address[3] memory callers = [mallory, guardian, address(this)];
        for (uint256 i = 0; i < callers.length; i++) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotSafe.selector, callers[i]));
            vm.prank(callers[i]);
            module.revokeAction(address(vault), Vault.pause.selector);
        }
        assertTrue(module.getAction(address(vault), Vault.pause.selector).allowed, "still allowed");
    }

    function test_addGuardian_revertsOnZeroAddress() public {
        vm.expectRevert(GuardianModule.ZeroAddress.selector);
        vm.prank(address(safe));
        module.addGuardian(address(0));
    }

    // =====================================================================
    // events
    // =====================================================================

    function test_addGuardian_emitsGuardianAdded() public {
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.GuardianAdded(bob);
        vm.prank(address(safe));
        module.addGuardian(bob);
        assertTrue(module.isGuardian(bob), "bob added");
    }

    function test_removeGuardian_emitsGuardianRemoved() public {
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.GuardianRemoved(guardian);
        vm.prank(address(safe));
        module.removeGuardian(guardian);
    }

    function test_allowAction_emitsActionAllowed() public {
        bytes32 h = keccak256(pauseData);
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.ActionAllowed(address(vault), Vault.pause.selector, h, COOLDOWN);
        vm.prank(address(safe));
        module.allowAction(address(vault), Vault.pause.selector, h, COOLDOWN);
    }

    function test_execute_emitsActionExecuted() public {
        _allowPause(COOLDOWN);
        // The vault sees the Safe as the pauser, then the module logs who executed what.
        vm.expectEmit(true, true, true, true, address(vault));
        emit Pausable.Paused(address(safe));
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.ActionExecuted(guardian, address(vault), Vault.pause.selector, keccak256(pauseData));
        _exec(address(vault), pauseData);
    }
}
