// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Recorder} from "./utils/Recorder.sol";
import {GuardianModule} from "../src/GuardianModule.sol";
import {Vault} from "../src/demo/Vault.sol";
import {CircuitBreaker} from "../src/demo/CircuitBreaker.sol";
import {PriceOracle} from "../src/demo/PriceOracle.sol";
import {Enum} from "@safe-global/safe-contracts/contracts/common/Enum.sol";
import {ModuleManager} from "@safe-global/safe-contracts/contracts/base/ModuleManager.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @notice Unit tests for GuardianModule on a real Safe v1.4.1 (2-of-3), configured by the owners' multisig
/// transactions, against the real demo contracts.
contract GuardianModuleTest is Fixture {
    uint64 internal constant COOLDOWN = 1 hours;
    bytes4 internal constant RECORDED = bytes4(0x12345678);

    // =====================================================================
    // construction and wiring
    // =====================================================================

    function test_constructor_setsSafe() public view {
        assertEq(address(module.safe()), address(safe), "safe");
        assertTrue(module.isGuardian(guardian), "fixture guardian");
        assertTrue(safe.isModuleEnabled(address(module)), "module enabled on safe by a multisig transaction");
    }

    function test_constructor_revertsOnZeroSafe() public {
        vm.expectRevert(GuardianModule.ZeroAddress.selector);
        new GuardianModule(address(0));
    }

    function test_safe_refusesModuleCallsNotFromTheModule() public {
        vm.expectRevert(bytes("GS104"));
        vm.prank(guardian);
        safe.execTransactionFromModuleReturnData(address(vault), 0, pauseData, Enum.Operation.Call);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_execute_revertsWhenTheSafeDisabledTheModule() public {
        _allowPause(COOLDOWN);
        // The module is the only one, so the sentinel (0x1) precedes it in the Safe's linked list.
        _ownersExec(address(safe), abi.encodeCall(ModuleManager.disableModule, (address(0x1), address(module))));
        assertFalse(safe.isModuleEnabled(address(module)), "disabled");

        vm.expectRevert(bytes("GS104"));
        _exec(address(vault), pauseData);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_minCooldown_isOneMinute() public view {
        assertEq(module.MIN_COOLDOWN(), 60, "MIN_COOLDOWN");
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

    function test_allowAction_revertsOnCooldownBelowMinimum() public {
        uint64[3] memory tooShort = [uint64(0), 1, 59];
        for (uint256 i = 0; i < tooShort.length; i++) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.CooldownTooShort.selector, tooShort[i], 60));
            vm.prank(address(safe));
            module.allowAction(address(vault), Vault.pause.selector, bytes32(0), tooShort[i]);
        }
        assertFalse(module.getAction(address(vault), Vault.pause.selector).allowed, "nothing allowed");
    }

    function test_allowAction_revertsOnCooldownBelowMinimumThroughTheSafe() public {
        // The owners' transaction itself fails (GS013: the Safe reverts when its call fails and safeTxGas is 0).
        uint256 nonce = safe.nonce();
        vm.expectRevert(bytes("GS013"));
        this.allowThroughSafe(address(vault), Vault.pause.selector, 0);
        assertEq(safe.nonce(), nonce, "nonce not used");
        assertFalse(module.getAction(address(vault), Vault.pause.selector).allowed, "nothing allowed");
    }

    /// @dev External so that expectRevert can catch the Safe transaction as one call.
    function allowThroughSafe(address target, bytes4 selector, uint64 cooldown) external {
        _allow(target, selector, bytes32(0), cooldown);
    }

    function test_allowAction_acceptsTheMinimumCooldown() public {
        _allowTrip(60);
        _exec(address(breaker), tripData);
        vm.prank(address(safe));
        breaker.reset();

        vm.warp(START + 59);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + 60));
        _exec(address(breaker), tripData);

        vm.warp(START + 60);
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "tripped again after one minute");
    }

    function test_allowAction_updateKeepsLastExecution() public {
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);
        _allowTrip(2 * COOLDOWN);
        GuardianModule.Action memory a = module.getAction(address(breaker), CircuitBreaker.trip.selector);
        assertEq(a.cooldown, 2 * COOLDOWN, "new cooldown");
        assertEq(a.lastExecutedAt, START, "still cooling down from the last execution");
    }

    function test_execute_allowlistedActionPausesVault() public {
        _allowPause(COOLDOWN);
        assertFalse(vault.paused(), "not paused before");

        vm.expectCall(address(vault), 0, pauseData, 1);
        _exec(address(vault), pauseData);

        assertTrue(vault.paused(), "vault paused");
        assertEq(
            module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, START, "execution time recorded"
        );
    }

    function test_execute_theSafeSendsTheExactCalldataWithoutValue() public {
        _allow(address(recorder), RECORDED, bytes32(0), COOLDOWN);
        bytes memory data = abi.encodePacked(RECORDED, uint256(7), "tail");
        _exec(address(recorder), data);

        assertEq(recorder.count(), 1, "one call received");
        Recorder.Received memory r = recorder.at(0);
        assertEq(r.sender, address(safe), "sent by the Safe");
        assertEq(r.value, 0, "no value");
        assertEq(r.data, data, "exact calldata");
    }

    function test_execute_allowlistedActionTripsBreaker() public {
        _allowTrip(COOLDOWN);
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "breaker tripped");
    }

    function test_execute_returnsInnerReturnData() public {
        // hasRole is a view returning bool: a harmless allowlisted read shows the return data is passed back.
        _allow(address(vault), IAccessControl.hasRole.selector, bytes32(0), COOLDOWN);
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
        _ownersExec(address(module), abi.encodeCall(GuardianModule.revokeAction, (address(vault), Vault.pause.selector)));

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
        vm.prank(address(safe));
        breaker.reset();

        vm.warp(START + COOLDOWN - 1);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        _exec(address(breaker), tripData);
        assertFalse(breaker.tripped(), "the second execution never reached the breaker");
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
        assertEq(
            module.getAction(address(breaker), CircuitBreaker.trip.selector).lastExecutedAt,
            START + COOLDOWN,
            "timestamp updated"
        );

        vm.prank(address(safe));
        breaker.reset();
        vm.warp(START + 10 * COOLDOWN);
        _exec(address(breaker), tripData);
        assertTrue(breaker.tripped(), "tripped a third time");
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
        _ownersExec(address(module), abi.encodeCall(GuardianModule.addGuardian, (second)));
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
    // resetCooldown: a second attack after an unpause
    // =====================================================================

    function test_cooldown_withoutResetASecondAttackAfterUnpauseCannotBePaused() public {
        _allowPause(COOLDOWN);
        _exec(address(vault), pauseData);
        _ownersExec(address(vault), abi.encodeCall(Vault.unpause, ()));
        assertFalse(vault.paused(), "owners unpaused");

        vm.warp(START + 10 minutes); // a second attack, well inside the first pause's cooldown
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        _exec(address(vault), pauseData);
        assertFalse(vault.paused(), "the guardian could not pause");
    }

    function test_cooldown_unpauseBatchedWithResetLetsTheGuardianPauseAtOnce() public {
        _allowPause(COOLDOWN);
        _exec(address(vault), pauseData);

        // One Safe transaction (MultiSendCallOnly): unpause the vault and reset the pause's cooldown.
        address[] memory targets = new address[](2);
        bytes[] memory datas = new bytes[](2);
        (targets[0], datas[0]) = (address(vault), abi.encodeCall(Vault.unpause, ()));
        (targets[1], datas[1]) =
            (address(module), abi.encodeCall(GuardianModule.resetCooldown, (address(vault), Vault.pause.selector)));
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.CooldownReset(address(vault), Vault.pause.selector);
        _ownersExecBatch(targets, datas);
        assertFalse(vault.paused(), "owners unpaused");
        assertEq(module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, 0, "cooldown cleared");

        vm.warp(START + 10 minutes);
        _exec(address(vault), pauseData);
        assertTrue(vault.paused(), "the second attack is paused at once");
        assertEq(
            module.getAction(address(vault), Vault.pause.selector).lastExecutedAt,
            START + 10 minutes,
            "a new cooldown runs from the second pause"
        );
    }

    function test_resetCooldown_keepsTheRestOfTheAction() public {
        _allow(address(vault), Vault.pause.selector, keccak256(pauseData), COOLDOWN);
        _exec(address(vault), pauseData);
        _ownersExec(
            address(module), abi.encodeCall(GuardianModule.resetCooldown, (address(vault), Vault.pause.selector))
        );
        GuardianModule.Action memory a = module.getAction(address(vault), Vault.pause.selector);
        assertTrue(a.allowed, "still allowed");
        assertEq(a.cooldown, COOLDOWN, "cooldown kept");
        assertEq(a.calldataHash, keccak256(pauseData), "pin kept");
        assertEq(a.lastExecutedAt, 0, "last execution cleared");
    }

    function test_resetCooldown_revertsUnlessSafe() public {
        _allowPause(COOLDOWN);
        _exec(address(vault), pauseData);
        address[3] memory callers = [mallory, guardian, address(this)];
        for (uint256 i = 0; i < callers.length; i++) {
            vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotSafe.selector, callers[i]));
            vm.prank(callers[i]);
            module.resetCooldown(address(vault), Vault.pause.selector);
        }
        assertEq(module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, START, "still cooling down");
    }

    function test_resetCooldown_revertsForAnActionNotAllowlisted() public {
        _allowPause(COOLDOWN);
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, address(vault), Vault.unpause.selector)
        );
        vm.prank(address(safe));
        module.resetCooldown(address(vault), Vault.unpause.selector);
    }

    // =====================================================================
    // executeBatch
    // =====================================================================

    function _allowPauseAndRevokeUpdater() internal returns (GuardianModule.Call[] memory calls) {
        // A realistic emergency: pause the vault, then revoke the oracle updater's role (pinned to that account).
        bytes memory revokeData = abi.encodeCall(IAccessControl.revokeRole, (oracle.UPDATER_ROLE(), updater));
        _allowPause(COOLDOWN);
        _allow(address(oracle), IAccessControl.revokeRole.selector, keccak256(revokeData), COOLDOWN);
        calls = new GuardianModule.Call[](2);
        calls[0] = _call(address(vault), pauseData);
        calls[1] = _call(address(oracle), revokeData);
    }

    function test_executeBatch_executesEveryCallInOneTransaction() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.ActionExecuted(guardian, address(vault), Vault.pause.selector, keccak256(pauseData));
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.ActionExecuted(
            guardian, address(oracle), IAccessControl.revokeRole.selector, keccak256(calls[1].data)
        );
        _execBatch(calls);

        assertTrue(vault.paused(), "vault paused");
        assertFalse(oracle.hasRole(oracle.UPDATER_ROLE(), updater), "updater revoked");
        assertEq(module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, START, "pause recorded");
        assertEq(
            module.getAction(address(oracle), IAccessControl.revokeRole.selector).lastExecutedAt,
            START,
            "revoke recorded"
        );
    }

    function test_executeBatch_executesInOrderAndReturnsEachResult() public {
        _allow(address(recorder), RECORDED, bytes32(0), COOLDOWN);
        _allow(address(vault), IAccessControl.hasRole.selector, bytes32(0), COOLDOWN);
        GuardianModule.Call[] memory calls = new GuardianModule.Call[](2);
        calls[0] = _call(address(recorder), abi.encodePacked(RECORDED, uint256(1)));
        calls[1] = _call(address(vault), abi.encodeCall(IAccessControl.hasRole, (vault.PAUSER_ROLE(), address(safe))));

        bytes[] memory results = _execBatch(calls);

        assertEq(results.length, 2, "one result per call");
        assertEq(results[0], "", "the recorder returns nothing");
        assertEq(results[1], abi.encode(true), "hasRole's answer");
        assertEq(recorder.count(), 1, "the recorder was called once");
        assertEq(recorder.at(0).data, calls[0].data, "with the exact calldata");
    }

    function test_executeBatch_revertsOnEmptyBatch() public {
        vm.expectRevert(GuardianModule.EmptyBatch.selector);
        _execBatch(new GuardianModule.Call[](0));
    }

    function test_executeBatch_revertsForNonGuardian() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.NotGuardian.selector, mallory));
        vm.prank(mallory);
        module.executeBatch(calls);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_executeBatch_oneUnlistedCallRevertsTheWholeBatch() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        calls[1] = _call(address(vault), abi.encodeCall(Vault.unpause, ()));
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.ActionNotAllowed.selector, address(vault), Vault.unpause.selector)
        );
        _execBatch(calls);
        assertFalse(vault.paused(), "the first call was undone");
        assertEq(module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, 0, "no cooldown consumed");
    }

    function test_executeBatch_pinnedCalldataIsEnforced() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        bytes32 pinned = keccak256(calls[1].data);
        calls[1].data = abi.encodeCall(IAccessControl.revokeRole, (oracle.DEFAULT_ADMIN_ROLE(), address(safe)));
        vm.expectRevert(
            abi.encodeWithSelector(GuardianModule.CalldataMismatch.selector, pinned, keccak256(calls[1].data))
        );
        _execBatch(calls);
        assertTrue(oracle.hasRole(oracle.DEFAULT_ADMIN_ROLE(), address(safe)), "the Safe keeps its admin role");
    }

    function test_executeBatch_forbiddenTargetRevertsTheWholeBatch() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        calls[1] = _call(address(module), abi.encodeCall(GuardianModule.addGuardian, (mallory)));
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(module)));
        _execBatch(calls);
        assertFalse(vault.paused(), "vault must not be paused");
        assertFalse(module.isGuardian(mallory), "no new guardian");
    }

    function test_executeBatch_shortCalldataRevertsTheWholeBatch() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        calls[1].data = hex"2f2ff1";
        vm.expectRevert(GuardianModule.CalldataTooShort.selector);
        _execBatch(calls);
        assertFalse(vault.paused(), "vault must not be paused");
    }

    function test_executeBatch_theSameActionTwiceRevertsWithCoolingDown() public {
        _allowPause(COOLDOWN);
        GuardianModule.Call[] memory calls = new GuardianModule.Call[](2);
        calls[0] = _call(address(vault), pauseData);
        calls[1] = _call(address(vault), abi.encodePacked(pauseData, uint256(1))); // other arguments, same action
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        _execBatch(calls);
        assertFalse(vault.paused(), "the first call was undone");
    }

    function test_executeBatch_respectsACooldownStartedByExecute() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        _exec(address(vault), pauseData);
        vm.prank(address(safe));
        vault.unpause();
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.CoolingDown.selector, START + COOLDOWN));
        _execBatch(calls);
        assertTrue(oracle.hasRole(oracle.UPDATER_ROLE(), updater), "the second call never ran");
    }

    function test_executeBatch_failingCallRevertsTheWholeBatchWithItsIndex() public {
        GuardianModule.Call[] memory calls = _allowPauseAndRevokeUpdater();
        // The first call pauses the vault, the second reverts inside the Safe (it lacks the breaker's role).
        CircuitBreaker foreign = new CircuitBreaker(address(0xDEAD));
        _allow(address(foreign), CircuitBreaker.trip.selector, bytes32(0), COOLDOWN);
        calls[1] = _call(address(foreign), tripData);
        bytes memory inner = abi.encodeWithSelector(
            IAccessControl.AccessControlUnauthorizedAccount.selector, address(safe), foreign.TRIPPER_ROLE()
        );
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.BatchCallFailed.selector, uint256(1), inner));
        _execBatch(calls);
        assertFalse(vault.paused(), "the first call was undone");
        assertEq(module.getAction(address(vault), Vault.pause.selector).lastExecutedAt, 0, "no cooldown consumed");
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
        _ownersExec(address(module), abi.encodeCall(GuardianModule.removeGuardian, (guardian)));
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
        bytes memory data = abi.encodeCall(ModuleManager.enableModule, (mallory));
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(safe)));
        _exec(address(safe), data);
        assertFalse(safe.isModuleEnabled(mallory), "no new module");
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
        module.allowAction(address(safe), ModuleManager.enableModule.selector, bytes32(0), COOLDOWN);
    }

    function test_allowAction_revertsWhenTargetIsModule() public {
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(module)));
        vm.prank(address(safe));
        module.allowAction(address(module), GuardianModule.addGuardian.selector, bytes32(0), COOLDOWN);
    }

    function test_allowAction_revertsWhenTargetIsZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ForbiddenTarget.selector, address(0)));
        vm.prank(address(safe));
        module.allowAction(address(0), Vault.pause.selector, bytes32(0), COOLDOWN);
    }

    function test_execute_revertsOnDelegatecall() public {
        _allow(address(recorder), RECORDED, bytes32(0), COOLDOWN);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.OnlyCallAllowed.selector, uint8(1)));
        vm.prank(guardian);
        module.execute(address(recorder), 0, abi.encodePacked(RECORDED), uint8(Enum.Operation.DelegateCall));
        assertEq(recorder.count(), 0, "nothing reached the recorder");
    }

    function test_execute_revertsOnNonzeroValue() public {
        _allow(address(recorder), RECORDED, bytes32(0), COOLDOWN);
        vm.deal(address(safe), 1 ether);
        vm.expectRevert(abi.encodeWithSelector(GuardianModule.ValueNotAllowed.selector, uint256(1)));
        vm.prank(guardian);
        module.execute(address(recorder), 1, abi.encodePacked(RECORDED), 0);
        assertEq(recorder.count(), 0, "nothing reached the recorder");
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
            module.allowAction(address(vault), Vault.unpause.selector, bytes32(0), COOLDOWN);
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

    function test_configuration_oneOwnerSignatureIsNotEnough() public {
        // A single owner (below the 2-of-3 threshold) cannot configure the module.
        bytes memory data = abi.encodeCall(GuardianModule.addGuardian, (mallory));
        uint256[] memory oneSigner = new uint256[](1);
        oneSigner[0] = OWNER_KEY_1;
        vm.expectRevert(bytes("GS020"));
        this.ownersExecAs(address(module), data, oneSigner);
        assertFalse(module.isGuardian(mallory), "mallory not added");
    }

    /// @dev External so that expectRevert can catch the Safe transaction as one call.
    function ownersExecAs(address to, bytes memory data, uint256[] memory keys) external {
        _ownersExecAs(to, data, Enum.Operation.Call, keys);
    }

    // =====================================================================
    // events
    // =====================================================================

    function test_addGuardian_emitsGuardianAdded() public {
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.GuardianAdded(bob);
        _ownersExec(address(module), abi.encodeCall(GuardianModule.addGuardian, (bob)));
        assertTrue(module.isGuardian(bob), "bob added");
    }

    function test_removeGuardian_emitsGuardianRemoved() public {
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.GuardianRemoved(guardian);
        _ownersExec(address(module), abi.encodeCall(GuardianModule.removeGuardian, (guardian)));
    }

    function test_allowAction_emitsActionAllowed() public {
        bytes32 h = keccak256(pauseData);
        vm.expectEmit(true, true, true, true, address(module));
        emit GuardianModule.ActionAllowed(address(vault), Vault.pause.selector, h, COOLDOWN);
        _allow(address(vault), Vault.pause.selector, h, COOLDOWN);
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
