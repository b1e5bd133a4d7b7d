// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {GuardianModule} from "../src/GuardianModule.sol";
import {Vault} from "../src/demo/Vault.sol";
import {CircuitBreaker} from "../src/demo/CircuitBreaker.sol";
import {PriceOracle} from "../src/demo/PriceOracle.sol";

/// @notice Property tests for GuardianModule: with pause (vault) and trip (breaker) allowlisted,
/// nothing else gets through.
contract GuardianModuleFuzzTest is Fixture {
    uint64 internal constant COOLDOWN = 1 hours;

    function setUp() public override {
        super.setUp();
        _allowPause(COOLDOWN);
        _allowTrip(COOLDOWN);
    }

    function _isAllowlisted(address target, bytes4 selector) internal view returns (bool) {
        return (target == address(vault) && selector == Vault.pause.selector)
            || (target == address(breaker) && selector == CircuitBreaker.trip.selector);
    }

    function _isForbidden(address target) internal view returns (bool) {
        return target == address(safe) || target == address(module) || target == address(0);
    }

    /// Any target/selector pair that was not allowlisted is refused, whatever arguments follow the selector.
    function testFuzz_execute_revertsForUnlistedTargetSelector(address target, bytes4 selector, bytes calldata args)
        public
    {
        vm.assume(!_isAllowlisted(target, selector));
        bytes memory data = abi.encodePacked(selector, args);
        if (_isForbidden(target)) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, target));
        } else {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, target, selector));
        }
        _exec(target, data);
        assertFalse(vault.paused() || breaker.tripped(), "nothing happened");
    }

    /// The same on the contracts the Safe governs: allowlisted selectors on the wrong target, and other
    /// selectors (including unpause/reset/setPrice, which the Safe could perform) on the right one.
    function testFuzz_execute_revertsForUnlistedPairOnKnownContracts(
        uint256 targetIndex,
        uint256 selectorIndex,
        bytes4 anySelector
    ) public {
        address[6] memory targets = [
            address(vault), address(breaker), address(oracle), address(asset), address(safe), address(module)
        ];
        bytes4[7] memory selectors = [
            Vault.pause.selector,
            CircuitBreaker.trip.selector,
            Vault.unpause.selector,
            CircuitBreaker.reset.selector,
            PriceOracle.setPrice.selector,
            Vault.redeemFor.selector,
            anySelector
        ];
        address target = targets[bound(targetIndex, 0, targets.length - 1)];
        bytes4 selector = selectors[bound(selectorIndex, 0, selectors.length - 1)];
        vm.assume(!_isAllowlisted(target, selector));
        if (_isForbidden(target)) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, target));
        } else {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, target, selector));
        }
        _exec(target, abi.encodePacked(selector, uint256(1)));
        assertFalse(vault.paused() || breaker.tripped(), "nothing happened");
    }

    /// Any caller that is not a guardian is refused, even for an allowlisted call.
    function testFuzz_execute_revertsForNonGuardian(address caller, bool useBreaker) public {
        vm.assume(caller != guardian);
        (address target, bytes memory data) = useBreaker ? (address(breaker), tripData) : (address(vault), pauseData);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotGuardian.selector, caller));
        vm.prank(caller);
        module.execute(target, 0, data, 0);
        assertFalse(vault.paused() || breaker.tripped(), "nothing happened");
    }

    /// Any calldata with the pinned selector but extra bytes is refused by a pin on the bare selector.
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_execute_revertsForCalldataDifferentFromPinned(bytes calldata tail) public {
        vm.assume(tail.length > 0);
        _allow(address(vault), Vault.pause.selector, keccak256(pauseData), COOLDOWN);
        bytes memory data = abi.encodePacked(Vault.pause.selector, tail);
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.CalldataMismatch.selector, keccak256(pauseData), keccak256(data))
        );
        _exec(address(vault), data);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    /// Any argument other than the pinned one is refused (same length, same selector).
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_execute_revertsForArgumentDifferentFromPinned(uint256 newPrice) public {
        vm.assume(newPrice != 2e18);
        PriceOracle safeOracle = new PriceOracle(address(safe), address(safe), INITIAL_PRICE);
        bytes memory pinned = abi.encodeCall(PriceOracle.setPrice, (2e18));
        _allow(address(safeOracle), PriceOracle.setPrice.selector, keccak256(pinned), COOLDOWN);
        bytes memory data = abi.encodeCall(PriceOracle.setPrice, (newPrice));
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.CalldataMismatch.selector, keccak256(pinned), keccak256(data))
        );
        _exec(address(safeOracle), data);
        assertEq(safeOracle.price(), INITIAL_PRICE, "price unchanged");
    }

    /// Any nonzero value is refused, even for an allowlisted call.
    function testFuzz_execute_revertsForNonzeroValue(uint256 value) public {
        vm.assume(value != 0);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ValueNotAllowed.selector, value));
        vm.prank(guardian);
        module.execute(address(vault), value, pauseData, 0);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    /// Any nonzero operation (delegatecall or beyond) is refused, even for an allowlisted call and any value.
    function testFuzz_execute_revertsForNonzeroOperation(uint8 operation, uint256 value) public {
        vm.assume(operation != 0);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.OnlyCallAllowed.selector, operation));
        vm.prank(guardian);
        module.execute(address(vault), value, pauseData, operation);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    /// Any calldata shorter than a selector is refused.
    function testFuzz_execute_revertsForShortCalldata(uint256 length, bytes4 seed) public {
        length = bound(length, 0, 3);
        bytes memory data = new bytes(length);
        for (uint256 i = 0; i < length; i++) {
            data[i] = seed[i];
        }
        vm.expectRevert(GuardianModule.CalldataTooShort.selector);
        _exec(address(vault), data);
    }

    /// For any cooldown and any warp shorter than it, the second execution is refused;
    /// at the ready time it goes through.
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_execute_cooldownHolds(uint64 cooldown, uint256 elapsed) public {
        cooldown = uint64(bound(cooldown, module.MIN_COOLDOWN(), 365 days));
        elapsed = bound(elapsed, 0, uint256(cooldown) - 1);
        _allowTrip(cooldown);
        _exec(address(breaker), tripData);
        vm.prank(address(safe));
        breaker.reset();

        vm.warp(START + elapsed);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + cooldown));
        _exec(address(breaker), tripData);

        assertFalse(breaker.tripped(), "the refused execution never reached the breaker");

        vm.warp(START + cooldown);
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "tripped again at the ready time");
    }

    /// Any caller but the Safe is refused every configuration call.
    function testFuzz_configuration_revertsUnlessSafe(address caller, address who) public {
        vm.assume(caller != address(safe));
        bytes memory notSafe = abi.encodeWithSelector(GuardianModule.NotSafe.selector, caller);

        vm.expectRevert(notSafe);
        vm.prank(caller);
        module.addGuardian(who);

        vm.expectRevert(notSafe);
        vm.prank(caller);
        module.removeGuardian(guardian);

        vm.expectRevert(notSafe);
        vm.prank(caller);
        module.allowAction(address(vault), Vault.unpause.selector, bytes32(0), COOLDOWN);

        vm.expectRevert(notSafe);
        vm.prank(caller);
        module.resetCooldown(address(vault), Vault.pause.selector);

        vm.expectRevert(notSafe);
        vm.prank(caller);
        module.revokeAction(address(vault), Vault.pause.selector);

        assertTrue(module.isGuardian(guardian), "guardian intact");
        assertFalse(module.getAction(address(vault), Vault.unpause.selector).allowed, "unpause not allowed");
        assertTrue(module.getAction(address(vault), Vault.pause.selector).allowed, "pause still allowed");
    }

    // =====================================================================
    // v2: the minimum cooldown, resetCooldown, executeBatch
    // =====================================================================

    /// Any cooldown below MIN_COOLDOWN is refused; any from it up is stored as given.
    function testFuzz_allowAction_cooldownMinimum(uint64 cooldown) public {
        uint64 minimum = module.MIN_COOLDOWN();
        vm.prank(address(safe));
        if (cooldown < minimum) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.CooldownTooShort.selector, cooldown, minimum));
            module.allowAction(address(vault), Vault.unpause.selector, bytes32(0), cooldown);
            assertFalse(module.getAction(address(vault), Vault.unpause.selector).allowed, "not allowed");
        } else {
            module.allowAction(address(vault), Vault.unpause.selector, bytes32(0), cooldown);
            assertEq(module.getAction(address(vault), Vault.unpause.selector).cooldown, cooldown, "stored");
        }
    }

    /// Whatever the cooldown and however little time passed, after the owners' reset the guardian acts at once.
    /// forge-config: default.fuzz.runs = 128
    function testFuzz_resetCooldown_letsTheGuardianActAtOnce(uint64 cooldown, uint256 elapsed) public {
        cooldown = uint64(bound(cooldown, module.MIN_COOLDOWN(), 365 days));
        elapsed = bound(elapsed, 0, uint256(cooldown) - 1);
        _allowTrip(cooldown);
        _exec(address(breaker), tripData);
        vm.prank(address(safe));
        breaker.reset();
        vm.warp(START + elapsed);

        _ownersExec(
            address(module), abi.encodeCall(GuardianModule.resetCooldown, (address(breaker), CircuitBreaker.trip.selector))
        );
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "tripped again inside the old cooldown");
        assertEq(
            module.getAction(address(breaker), CircuitBreaker.trip.selector).lastExecutedAt,
            START + elapsed,
            "a new cooldown runs"
        );
    }

    /// An unlisted call at any position of an otherwise allowlisted batch reverts the whole batch.
    function testFuzz_executeBatch_anUnlistedCallAnywhereRevertsTheWholeBatch(
        uint256 position,
        address target,
        bytes4 selector,
        bytes calldata args
    ) public {
        vm.assume(!_isAllowlisted(target, selector) && !_isForbidden(target));
        position = bound(position, 0, 2);
        GuardianModule.Call[] memory calls = new GuardianModule.Call[](3);
        GuardianModule.Call[2] memory allowed = [_call(address(vault), pauseData), _call(address(breaker), tripData)];
        for (uint256 i = 0; i < 3; i++) {
            if (i == position) calls[i] = _call(target, abi.encodePacked(selector, args));
            else calls[i] = allowed[i < position ? i : i - 1];
        }
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, target, selector));
        _execBatch(calls);
        assertFalse(vault.paused() || breaker.tripped(), "nothing happened");
    }

    /// Any caller that is not a guardian is refused a batch of allowlisted calls.
    function testFuzz_executeBatch_revertsForNonGuardian(address caller) public {
        vm.assume(caller != guardian);
        GuardianModule.Call[] memory calls = new GuardianModule.Call[](2);
        calls[0] = _call(address(vault), pauseData);
        calls[1] = _call(address(breaker), tripData);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotGuardian.selector, caller));
        vm.prank(caller);
        module.executeBatch(calls);
        assertFalse(vault.paused() || breaker.tripped(), "nothing happened");
    }
}
