// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice A target that accepts any call and records who sent what, and when, so a test can compare every call
/// that reached it against what was allowed.
contract Recorder {
    struct Received {
        address sender;
        uint256 value;
        bytes data;
        uint256 timestamp;
    }

    Received[] internal received;

    fallback() external payable {
        received.push(Received({sender: msg.sender, value: msg.value, data: msg.data, timestamp: block.timestamp}));
    }

    receive() external payable {
        received.push(Received({sender: msg.sender, value: msg.value, data: "", timestamp: block.timestamp}));
    }

    function count() external view returns (uint256) {
        return received.length;
    }

    function at(uint256 index) external view returns (Received memory) {
        return received[index];
    }
}
