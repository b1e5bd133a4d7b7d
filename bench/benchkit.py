"""What several benches share: the simulate policy they race with, and pending withdrawals to simulate."""

from __future__ import annotations

from hexbytes import HexBytes
from web3 import Web3

from onguard.demo.world import TOKEN, Roles, contract, dev_account

CASH_GUARD_POLICY = """id = "vault-cash-guard"
description = "A pending transaction would take more than 30% of the vault's cash"
kind = "simulate"
severity = "critical"
response = ["pause_vault"]
[reads]
cash = "asset.balanceOf(vault)"
[trigger]
condition = "not reverted and after.cash < 70% * before.cash"
"""


def withdrawals(w3: Web3, vault_address: str, count: int) -> list[dict]:
    """Distinct pending withdrawals by the three depositors (never sent: only simulated)."""
    vault = contract(w3, "Vault", vault_address)
    holders = [dev_account(i).address for i in Roles.DEPOSITORS]
    pending = []
    for n in range(count):
        holder = holders[n % len(holders)]
        data = HexBytes(vault.functions.withdraw(TOKEN + n, holder, holder)._encode_transaction_data())
        pending.append({"from": holder, "to": vault_address, "input": data, "value": 0, "gas": 300_000,
                        "hash": HexBytes(n.to_bytes(32, "big"))})
    return pending
