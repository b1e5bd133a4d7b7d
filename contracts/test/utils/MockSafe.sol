// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The module-facing part of a Safe, behaving as a real Safe does for an enabled module:
/// operation 0 is a CALL with value, operation 1 a DELEGATECALL; any caller other than the enabled
/// module is refused. Records the last call it executed.
contract MockSafe {
    address public immutable deployer;
    address public module;

    address public lastTo;
    uint256 public lastValue;
    bytes public lastData;
    uint8 public lastOperation;
    uint256 public callCount;

    error NotAuthorizedModule(address caller);
    error InvalidOperation(uint8 operation);

    constructor() {
        deployer = msg.sender;
    }

    receive() external payable {}

    /// @dev Stands in for enableModule (a real Safe only lets itself, i.e. its owners, call it).
    function enableModule(address module_) external {
        require(msg.sender == deployer || msg.sender == address(this), "MockSafe: not owner");
        module = module_;
    }

    function execTransactionFromModuleReturnData(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bool success, bytes memory returnData)
    {
        if (msg.sender != module || module == address(0)) revert NotAuthorizedModule(msg.sender);
        if (operation == 0) {
            (success, returnData) = to.call{value: value}(data);
        } else if (operation == 1) {
            (success, returnData) = to.delegatecall(data);
        } else {
            revert InvalidOperation(operation);
        }
        lastTo = to;
        lastValue = value;
        lastData = data;
        lastOperation = operation;
        callCount++;
    }
}
