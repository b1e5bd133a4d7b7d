// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RealSafe} from "./RealSafe.sol";
import {Recorder} from "./Recorder.sol";
import {GuardianModule} from "../../src/GuardianModule.sol";
import {Vault} from "../../src/demo/Vault.sol";
import {CircuitBreaker} from "../../src/demo/CircuitBreaker.sol";
import {PriceOracle} from "../../src/demo/PriceOracle.sol";
import {TestToken} from "../../src/demo/TestToken.sol";
import {ModuleManager} from "@safe-global/safe-contracts/contracts/base/ModuleManager.sol";

/// @notice Deploys the demo protocol administered by a real Safe v1.4.1 (2-of-3), and a GuardianModule enabled on
/// that Safe with one guardian, both through the owners' multisig transactions. Nothing is allowlisted yet.
abstract contract Fixture is RealSafe {
    uint256 internal constant START = 1_700_000_000;
    uint256 internal constant INITIAL_PRICE = 1e18;

    GuardianModule internal module;
    TestToken internal asset;
    TestToken internal collateral;
    PriceOracle internal oracle;
    CircuitBreaker internal breaker;
    Vault internal vault;
    Recorder internal recorder;

    address internal guardian = address(0x6A4D);
    address internal updater = address(0x0DA7E);
    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);
    address internal mallory = address(0x3A11);

    bytes internal pauseData;
    bytes internal tripData;

    function setUp() public virtual {
        vm.warp(START);
        _deploySafe();
        module = new GuardianModule(address(safe));
        _ownersExec(address(safe), abi.encodeCall(ModuleManager.enableModule, (address(module))));

        asset = new TestToken("Demo Asset", "DAST");
        collateral = new TestToken("Demo Collateral", "DCOL");
        oracle = new PriceOracle(address(safe), updater, INITIAL_PRICE);
        breaker = new CircuitBreaker(address(safe));
        vault = new Vault(asset, collateral, oracle, breaker, address(safe));
        recorder = new Recorder();

        _ownersExec(address(module), abi.encodeCall(GuardianModule.addGuardian, (guardian)));

        pauseData = abi.encodeCall(Vault.pause, ());
        tripData = abi.encodeCall(CircuitBreaker.trip, ());

        vm.label(address(safe), "safe");
        vm.label(address(module), "module");
        vm.label(address(vault), "vault");
        vm.label(address(breaker), "breaker");
        vm.label(address(oracle), "oracle");
        vm.label(address(recorder), "recorder");
        vm.label(guardian, "guardian");
    }

    // ---- configuration, as the owners do it: Safe transactions ----

    function _allow(address target, bytes4 selector, bytes32 calldataHash, uint64 cooldown) internal {
        _ownersExec(
            address(module), abi.encodeCall(GuardianModule.allowAction, (target, selector, calldataHash, cooldown))
        );
    }

    function _allowPause(uint64 cooldown) internal {
        _allow(address(vault), Vault.pause.selector, bytes32(0), cooldown);
    }

    function _allowTrip(uint64 cooldown) internal {
        _allow(address(breaker), CircuitBreaker.trip.selector, bytes32(0), cooldown);
    }

    function _exec(address target, bytes memory data) internal returns (bytes memory) {
        vm.prank(guardian);
        return module.execute(target, 0, data, 0);
    }

    function _execBatch(GuardianModule.Call[] memory calls) internal returns (bytes[] memory) {
        vm.prank(guardian);
        return module.executeBatch(calls);
    }

    function _call(address target, bytes memory data) internal pure returns (GuardianModule.Call memory) {
        return GuardianModule.Call({target: target, data: data});
    }
}
