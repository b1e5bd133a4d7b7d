// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "./Vm.sol";
import {Enum} from "@safe-global/safe-contracts/contracts/common/Enum.sol";
import {Safe} from "@safe-global/safe-contracts/contracts/Safe.sol";
import {SafeProxyFactory} from "@safe-global/safe-contracts/contracts/proxies/SafeProxyFactory.sol";
import {MultiSendCallOnly} from "@safe-global/safe-contracts/contracts/libraries/MultiSendCallOnly.sol";

/// @notice A real Safe v1.4.1, deployed from the bytecode the npm package publishes (the singleton, the proxy
/// factory and MultiSendCallOnly), set up 2-of-3 with Anvil's dev keys 1-3, and the owners' multisig
/// transactions signed with those keys. The Solidity sources give the types only; the code is the published one.
abstract contract RealSafe is TestBase {
    string internal constant SAFE_ARTIFACTS = "node_modules/@safe-global/safe-contracts/build/artifacts/contracts/";
    uint256 internal constant THRESHOLD = 2;
    uint256 internal constant SAFE_SALT = 0x0C6A4D;

    // Anvil's public development keys 1, 2, 3 (test chains only), as the demo world's owners.
    uint256 internal constant OWNER_KEY_1 = 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d;
    uint256 internal constant OWNER_KEY_2 = 0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a;
    uint256 internal constant OWNER_KEY_3 = 0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6;

    Safe internal safe;
    MultiSendCallOnly internal multiSend;
    uint256[3] internal ownerKeys;

    function _deploySafe() internal {
        ownerKeys = [OWNER_KEY_1, OWNER_KEY_2, OWNER_KEY_3];
        Safe singleton = Safe(payable(_deployArtifact("Safe.sol/Safe.json")));
        SafeProxyFactory factory = SafeProxyFactory(_deployArtifact("proxies/SafeProxyFactory.sol/SafeProxyFactory.json"));
        multiSend = MultiSendCallOnly(_deployArtifact("libraries/MultiSendCallOnly.sol/MultiSendCallOnly.json"));

        address[] memory owners = new address[](3);
        for (uint256 i = 0; i < 3; i++) {
            owners[i] = vm.addr(ownerKeys[i]);
        }
        bytes memory initializer = abi.encodeCall(
            Safe.setup, (owners, THRESHOLD, address(0), "", address(0), address(0), 0, payable(address(0)))
        );
        safe = Safe(payable(address(factory.createProxyWithNonce(address(singleton), initializer, SAFE_SALT))));
        require(safe.getThreshold() == THRESHOLD && safe.getOwners().length == 3, "safe set up 2-of-3");
    }

    function _deployArtifact(string memory path) internal returns (address deployed) {
        bytes memory code = vm.getCode(string.concat(SAFE_ARTIFACTS, path));
        assembly ("memory-safe") {
            deployed := create(0, add(code, 0x20), mload(code))
        }
        require(deployed != address(0), string.concat("deploying ", path));
    }

    // ---- the owners' multisig transactions ----

    /// @dev An ordinary Safe transaction signed by owners 1 and 2 (threshold), relayed by this contract.
    /// With safeTxGas 0 the Safe reverts (GS013) when the inner call fails, so a failure is never silent.
    function _ownersExec(address to, bytes memory data) internal {
        _ownersExecAs(to, data, Enum.Operation.Call, _signers(0, 1));
    }

    /// @dev Several calls in one Safe transaction: a delegatecall to MultiSendCallOnly, as the Safe's UI batches.
    function _ownersExecBatch(address[] memory targets, bytes[] memory datas) internal {
        bytes memory packed;
        for (uint256 i = 0; i < targets.length; i++) {
            packed = abi.encodePacked(
                packed, uint8(Enum.Operation.Call), targets[i], uint256(0), datas[i].length, datas[i]
            );
        }
        _ownersExecAs(
            address(multiSend),
            abi.encodeCall(MultiSendCallOnly.multiSend, (packed)),
            Enum.Operation.DelegateCall,
            _signers(0, 1)
        );
    }

    function _ownersExecAs(address to, bytes memory data, Enum.Operation operation, uint256[] memory signerKeys)
        internal
    {
        bytes32 txHash = safe.getTransactionHash(
            to, 0, data, operation, 0, 0, 0, address(0), payable(address(0)), safe.nonce()
        );
        bool ok = safe.execTransaction(
            to, 0, data, operation, 0, 0, 0, address(0), payable(address(0)), _signatures(txHash, signerKeys)
        );
        require(ok, "safe transaction failed");
    }

    function _signers(uint256 a, uint256 b) internal view returns (uint256[] memory keys) {
        keys = new uint256[](2);
        keys[0] = ownerKeys[a];
        keys[1] = ownerKeys[b];
    }

    /// @dev The Safe wants signatures ordered by ascending owner address.
    function _signatures(bytes32 txHash, uint256[] memory keys) internal returns (bytes memory signatures) {
        for (uint256 i = 1; i < keys.length; i++) {
            for (uint256 j = i; j > 0 && vm.addr(keys[j - 1]) > vm.addr(keys[j]); j--) {
                (keys[j - 1], keys[j]) = (keys[j], keys[j - 1]);
            }
        }
        for (uint256 i = 0; i < keys.length; i++) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[i], txHash);
            signatures = abi.encodePacked(signatures, r, s, v);
        }
    }
}
