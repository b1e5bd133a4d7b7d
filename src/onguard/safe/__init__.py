"""Safe transactions: building, EIP-712 hashing, signatures and execution (on top of safe-eth-py)."""
