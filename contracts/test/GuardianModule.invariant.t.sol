// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "./utils/Vm.sol";
import {Fixture} from "./utils/Fixture.sol";
import {RealSafe} from "./utils/RealSafe.sol";
import {Recorder} from "./utils/Recorder.sol";
import {GuardianModule} from "../src/GuardianModule.sol";
import {Vault} from "../src/demo/Vault.sol";
import {CircuitBreaker} from "../src/demo/CircuitBreaker.sol";
import {Safe} from "@safe-global/safe-contracts/contracts/Safe.sol";

/// @dev What forge's invariant runner reads from `targetSelectors()` (forge-std's layout; no forge-std here).
struct FuzzSelector {
    address addr;
    bytes4[] selectors;
}

bytes4 constant SEL_A = bytes4(0xaaaaaaaa); // allowlisted on recorder 0, any arguments
bytes4 constant SEL_B = bytes4(0xbbbbbbbb); // allowlisted on recorder 0, pinned
bytes4 constant SEL_C = bytes4(0xcccccccc); // allowlisted on recorder 1, pinned
bytes4 constant SEL_D = bytes4(0xdddddddd); // never allowlisted

/// @notice A guardian key gone rogue: tries random targets, selectors, calldata, operations and values, singly
/// and in batches, at random times. Counts every call the module let through.
contract RogueGuardian is TestBase {
    GuardianModule internal immutable module;
    address internal immutable safe;
    Recorder[3] internal recorders;
    bytes internal pinB;
    bytes internal pinC;

    /// Calls the module let through (each call of a successful batch counts).
    uint256 public successfulCalls;

    constructor(GuardianModule module_, address safe_, Recorder[3] memory recorders_, bytes memory pinB_, bytes memory pinC_) {
        module = module_;
        safe = safe_;
        recorders = recorders_;
        pinB = pinB_;
        pinC = pinC_;
    }

    function execute(uint256 targetSeed, uint256 selectorSeed, bytes calldata tail, uint256 variant) external {
        address target = _target(targetSeed);
        bytes memory data = _data(selectorSeed, tail);
        uint256 value = 0;
        uint8 operation = 0;
        // Mostly plain calls (so that allowlisted ones get through often), sometimes every forbidden variant.
        uint256 kind = variant % 8;
        if (kind == 0) operation = 1;
        // forge-lint: disable-next-line(unsafe-typecast)
        else if (kind == 1) operation = uint8(variant >> 8); // any operation: truncating a random seed is the point
        else if (kind == 2) value = variant >> 8;
        else if (kind == 3) data = _prefix(data, (variant >> 8) % 4);
        try module.execute(target, value, data, operation) {
            successfulCalls++;
        } catch {}
    }

    function executeBatch(uint256[3] calldata targetSeeds, uint256[3] calldata selectorSeeds, bytes calldata tail, uint256 size)
        external
    {
        GuardianModule.Call[] memory calls = new GuardianModule.Call[](size % 4); // 0 to 3 calls
        for (uint256 i = 0; i < calls.length; i++) {
            calls[i] = GuardianModule.Call({target: _target(targetSeeds[i]), data: _data(selectorSeeds[i], tail)});
        }
        try module.executeBatch(calls) {
            successfulCalls += calls.length;
        } catch {}
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + bound(seconds_, 0, 2 hours));
    }

    function _target(uint256 seed) internal view returns (address) {
        uint256 pick = seed % 8;
        if (pick < 3) return address(recorders[pick]);
        if (pick == 3) return safe;
        if (pick == 4) return address(module);
        if (pick == 5) return address(0);
        if (pick == 6) return address(recorders[0]);
        // forge-lint: disable-next-line(unsafe-typecast)
        return address(uint160(seed >> 8)); // anywhere, mostly an empty account (a call to it succeeds)
    }

    function _data(uint256 seed, bytes calldata tail) internal view returns (bytes memory) {
        uint256 pick = seed % 7;
        if (pick == 0) return abi.encodePacked(SEL_A, tail);
        if (pick == 1) return abi.encodePacked(SEL_B, tail);
        if (pick == 2) return pinB;
        if (pick == 3) return pinC;
        if (pick == 4) return abi.encodePacked(SEL_C, tail);
        if (pick == 5) return abi.encodePacked(SEL_D, tail);
        // forge-lint: disable-next-line(unsafe-typecast)
        return abi.encodePacked(bytes4(uint32(seed >> 8)), tail); // any selector: truncating a random seed
    }

    function _prefix(bytes memory data, uint256 length) internal pure returns (bytes memory prefix) {
        prefix = new bytes(length < data.length ? length : data.length);
        for (uint256 i = 0; i < prefix.length; i++) {
            prefix[i] = data[i];
        }
    }
}

/// @notice (a) Whatever a guardian tries, the only calls that leave the Safe are allowlisted ones, with their
/// pinned calldata, sent by the Safe without value, no more often than their cooldown; and the Safe stays intact.
contract GuardianModuleAllowlistInvariantTest is Fixture {
    uint64 internal constant COOLDOWN_A = 60;
    uint64 internal constant COOLDOWN_B = 10 minutes;
    uint64 internal constant COOLDOWN_C = 1 hours;

    Recorder[3] internal recorders;
    RogueGuardian internal rogue;
    bytes internal pinB;
    bytes internal pinC;
    address[] internal ownersBefore;
    bytes internal singletonBefore;

    function setUp() public override {
        super.setUp();
        recorders = [new Recorder(), new Recorder(), new Recorder()];
        pinB = abi.encodeWithSelector(SEL_B, uint256(1));
        pinC = abi.encodeWithSelector(SEL_C, address(0xBEEF), uint256(7));
        _allow(address(recorders[0]), SEL_A, bytes32(0), COOLDOWN_A);
        _allow(address(recorders[0]), SEL_B, keccak256(pinB), COOLDOWN_B);
        _allow(address(recorders[1]), SEL_C, keccak256(pinC), COOLDOWN_C);

        rogue = new RogueGuardian(module, address(safe), recorders, pinB, pinC);
        _ownersExec(address(module), abi.encodeCall(GuardianModule.addGuardian, (address(rogue))));
        ownersBefore = safe.getOwners();
        singletonBefore = safe.getStorageAt(0, 1);
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(rogue);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory selectors) {
        bytes4[] memory functions = new bytes4[](3);
        functions[0] = RogueGuardian.execute.selector;
        functions[1] = RogueGuardian.executeBatch.selector;
        functions[2] = RogueGuardian.warp.selector;
        selectors = new FuzzSelector[](1);
        selectors[0] = FuzzSelector({addr: address(rogue), selectors: functions});
    }

    /// forge-config: default.invariant.runs = 48
    /// forge-config: default.invariant.depth = 24
    function invariant_onlyAllowlistedCallsLeaveTheSafe() public view {
        uint256 received;
        for (uint256 r = 0; r < recorders.length; r++) {
            uint256 lastA;
            uint256 lastB;
            uint256 lastC;
            for (uint256 i = 0; i < recorders[r].count(); i++) {
                Recorder.Received memory call = recorders[r].at(i);
                assertEq(call.sender, address(safe), "every call comes from the Safe");
                assertEq(call.value, 0, "without value");
                require(call.data.length >= 4, "with a selector");
                bytes4 selector = bytes4(call.data);
                if (r == 0 && selector == SEL_A) {
                    lastA = _spaced(lastA, call.timestamp, COOLDOWN_A);
                } else if (r == 0 && selector == SEL_B) {
                    assertEq(call.data, pinB, "exactly the pinned calldata of B");
                    lastB = _spaced(lastB, call.timestamp, COOLDOWN_B);
                } else if (r == 1 && selector == SEL_C) {
                    assertEq(call.data, pinC, "exactly the pinned calldata of C");
                    lastC = _spaced(lastC, call.timestamp, COOLDOWN_C);
                } else {
                    revert("a call that is not allowlisted reached a target");
                }
            }
            received += recorders[r].count();
        }
        // Nothing the module let through went anywhere else (an empty account would have taken it silently).
        assertEq(received, rogue.successfulCalls(), "every successful call is one the recorders saw");
    }

    function invariant_theSafeIsIntact() public view {
        assertEq(safe.getStorageAt(0, 1), singletonBefore, "singleton unchanged");
        assertEq(keccak256(abi.encode(safe.getOwners())), keccak256(abi.encode(ownersBefore)), "owners unchanged");
        assertEq(safe.getThreshold(), THRESHOLD, "threshold unchanged");
        assertTrue(safe.isModuleEnabled(address(module)), "module still enabled");
        assertFalse(safe.isModuleEnabled(address(rogue)), "no module added");
    }

    function _spaced(uint256 last, uint256 at, uint64 cooldown) internal pure returns (uint256) {
        require(last == 0 || at >= last + cooldown, "an action ran again inside its cooldown");
        return at;
    }
}

/// @notice The owners configuring the module at random through real Safe transactions (allow, pin, revoke, add and
/// remove guardians, reset cooldowns), and their guardians acting in between.
contract OwnersAtRandom is RealSafe {
    GuardianModule internal immutable module;
    address[] internal targets;
    bytes4[] internal selectors;
    address[] internal guardians;
    mapping(bytes32 => bytes) internal pinned; // action key => the calldata it is pinned to

    constructor(Safe safe_, GuardianModule module_, address[] memory targets_, bytes4[] memory selectors_) {
        safe = safe_;
        ownerKeys = [OWNER_KEY_1, OWNER_KEY_2, OWNER_KEY_3];
        module = module_;
        targets = targets_;
        selectors = selectors_;
        guardians = [address(0x6A4D), address(0x6A4E), address(0x6A4F)];
    }

    function allow(uint256 targetSeed, uint256 selectorSeed, uint64 cooldown, bool pin, uint256 argument) external {
        (address target, bytes4 selector) = _pair(targetSeed, selectorSeed);
        bytes memory data = pin ? abi.encodePacked(selector, argument) : bytes("");
        pinned[module.actionKey(target, selector)] = data;
        cooldown = uint64(bound(cooldown, module.MIN_COOLDOWN(), 1 days));
        _ownersExec(
            address(module),
            abi.encodeCall(GuardianModule.allowAction, (target, selector, pin ? keccak256(data) : bytes32(0), cooldown))
        );
    }

    function revoke(uint256 targetSeed, uint256 selectorSeed) external {
        (address target, bytes4 selector) = _pair(targetSeed, selectorSeed);
        _ownersExec(address(module), abi.encodeCall(GuardianModule.revokeAction, (target, selector)));
    }

    function resetCooldown(uint256 targetSeed, uint256 selectorSeed) external {
        (address target, bytes4 selector) = _pair(targetSeed, selectorSeed);
        if (!module.getAction(target, selector).allowed) return;
        _ownersExec(address(module), abi.encodeCall(GuardianModule.resetCooldown, (target, selector)));
    }

    function addGuardian(uint256 guardianSeed) external {
        _ownersExec(address(module), abi.encodeCall(GuardianModule.addGuardian, (guardians[guardianSeed % 3])));
    }

    function removeGuardian(uint256 guardianSeed) external {
        _ownersExec(address(module), abi.encodeCall(GuardianModule.removeGuardian, (guardians[guardianSeed % 3])));
    }

    function guardianExecutes(uint256 guardianSeed, uint256 targetSeed, uint256 selectorSeed) external {
        (address target, bytes4 selector) = _pair(targetSeed, selectorSeed);
        bytes memory data = callData(target, selector); // before the prank: it reads the module
        vm.prank(guardians[guardianSeed % 3]);
        try module.execute(target, 0, data, 0) {} catch {}
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + bound(seconds_, 0, 1 days));
    }

    // ---- what the invariants need to know ----

    /// The calldata a guardian would send for (target, selector): the pinned one if any.
    function callData(address target, bytes4 selector) public view returns (bytes memory) {
        bytes memory data = pinned[module.actionKey(target, selector)];
        return data.length > 0 ? data : abi.encodePacked(selector);
    }

    function allTargets() external view returns (address[] memory) {
        return targets;
    }

    function allSelectors() external view returns (bytes4[] memory) {
        return selectors;
    }

    function allGuardians() external view returns (address[] memory) {
        return guardians;
    }

    function _pair(uint256 targetSeed, uint256 selectorSeed) internal view returns (address, bytes4) {
        return (targets[targetSeed % targets.length], selectors[selectorSeed % selectors.length]);
    }
}

/// @notice (b) Whatever the configuration, one Safe transaction of the owners revokes every action or removes every
/// guardian, and afterwards no guardian can act. Each probe is rolled back (it ends in a revert carrying its
/// verdict), so the run goes on from the configuration it probed.
contract GuardianModuleOwnersInvariantTest is Fixture {
    OwnersAtRandom internal owners;

    error ProbeHeld();
    error GuardianStillActs(address guardian, address target, bytes4 selector);

    function setUp() public override {
        super.setUp();
        // Small pools keep each probe (one Safe transaction, then every guardian on every pair) cheap.
        address[] memory targets = new address[](3);
        (targets[0], targets[1], targets[2]) = (address(vault), address(breaker), address(recorder));
        bytes4[] memory selectors = new bytes4[](3);
        (selectors[0], selectors[1], selectors[2]) = (Vault.pause.selector, CircuitBreaker.trip.selector, SEL_A);
        owners = new OwnersAtRandom(safe, module, targets, selectors);
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(owners);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory selectors) {
        bytes4[] memory functions = new bytes4[](7);
        functions[0] = OwnersAtRandom.allow.selector;
        functions[1] = OwnersAtRandom.revoke.selector;
        functions[2] = OwnersAtRandom.resetCooldown.selector;
        functions[3] = OwnersAtRandom.addGuardian.selector;
        functions[4] = OwnersAtRandom.removeGuardian.selector;
        functions[5] = OwnersAtRandom.guardianExecutes.selector;
        functions[6] = OwnersAtRandom.warp.selector;
        selectors = new FuzzSelector[](1);
        selectors[0] = FuzzSelector({addr: address(owners), selectors: functions});
    }

    /// forge-config: default.invariant.runs = 16
    /// forge-config: default.invariant.depth = 12
    function invariant_ownersCanAlwaysRevokeEveryAction() public {
        try this.probeRevokeEverything() {
            revert("a probe always reverts");
        } catch (bytes memory verdict) {
            assertEq(verdict, abi.encodeWithSelector(ProbeHeld.selector), "revoking every action held");
        }
    }

    /// forge-config: default.invariant.runs = 16
    /// forge-config: default.invariant.depth = 12
    function invariant_ownersCanAlwaysRemoveEveryGuardian() public {
        try this.probeRemoveEveryGuardian() {
            revert("a probe always reverts");
        } catch (bytes memory verdict) {
            assertEq(verdict, abi.encodeWithSelector(ProbeHeld.selector), "removing every guardian held");
        }
    }

    /// @dev One Safe transaction revokes every action; then no guardian can execute any of them. Always reverts.
    function probeRevokeEverything() external {
        address[] memory targets = owners.allTargets();
        bytes4[] memory selectors = owners.allSelectors();
        address[] memory batchTargets = new address[](targets.length * selectors.length);
        bytes[] memory datas = new bytes[](batchTargets.length);
        for (uint256 t = 0; t < targets.length; t++) {
            for (uint256 s = 0; s < selectors.length; s++) {
                batchTargets[t * selectors.length + s] = address(module);
                datas[t * selectors.length + s] = abi.encodeCall(GuardianModule.revokeAction, (targets[t], selectors[s]));
            }
        }
        _ownersExecBatch(batchTargets, datas);
        for (uint256 t = 0; t < targets.length; t++) {
            for (uint256 s = 0; s < selectors.length; s++) {
                require(!module.getAction(targets[t], selectors[s]).allowed, "revoked");
            }
        }
        // Registered guardians are refused the action; the others were never able to act.
        _everyAttemptFails(GuardianModule.ActionNotAllowed.selector);
        revert ProbeHeld();
    }

    /// @dev One Safe transaction removes every guardian; then none can execute anything. Always reverts.
    function probeRemoveEveryGuardian() external {
        address[] memory guardians = owners.allGuardians();
        address[] memory batchTargets = new address[](guardians.length);
        bytes[] memory datas = new bytes[](guardians.length);
        for (uint256 g = 0; g < guardians.length; g++) {
            batchTargets[g] = address(module);
            datas[g] = abi.encodeCall(GuardianModule.removeGuardian, (guardians[g]));
        }
        _ownersExecBatch(batchTargets, datas);
        _everyAttemptFails(GuardianModule.NotGuardian.selector);
        revert ProbeHeld();
    }

    /// @dev `whenRegistered`: the error a registered guardian gets; an unregistered one gets NotGuardian.
    function _everyAttemptFails(bytes4 whenRegistered) internal {
        address[] memory guardians = owners.allGuardians();
        address[] memory targets = owners.allTargets();
        bytes4[] memory selectors = owners.allSelectors();
        for (uint256 g = 0; g < guardians.length; g++) {
            for (uint256 t = 0; t < targets.length; t++) {
                for (uint256 s = 0; s < selectors.length; s++) {
                    bytes memory data = owners.callData(targets[t], selectors[s]); // before the prank
                    bytes4 expectedError =
                        module.isGuardian(guardians[g]) ? whenRegistered : GuardianModule.NotGuardian.selector;
                    vm.prank(guardians[g]);
                    try module.execute(targets[t], 0, data, 0) {
                        revert GuardianStillActs(guardians[g], targets[t], selectors[s]);
                    } catch (bytes memory reason) {
                        // forge-lint: disable-next-line(unsafe-typecast)
                        require(bytes4(reason) == expectedError, "refused for the expected reason"); // the selector
                    }
                }
            }
        }
    }
}
