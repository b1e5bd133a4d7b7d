"""What the chain tests do to the demo world: deposits, withdrawals, the drain, and reading the outcome."""

from __future__ import annotations

from typing import Any

from web3 import Web3

from onguard.demo.world import TOKEN, Roles, World, contract, dev_account

ATTACKER = dev_account(Roles.ATTACKER).address
ALICE, BOB, CAROL = (dev_account(i).address for i in Roles.DEPOSITORS)


def send(w3: Web3, call: Any, sender: str) -> Any:
    """Mines the call (a fixed gas limit, so a refused call is mined as a revert rather than never sent)."""
    tx_hash = call.transact({"from": sender, "gas": 500_000})
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def drain_slice(w3: Web3, world: World, victim: str, assets: int) -> Any:
    """One step of the demo attack: redeemFor(victim) the shares worth `assets`, to the attacker."""
    vault = contract(w3, "Vault", world.vault)
    shares = vault.functions.previewWithdraw(assets).call()
    return send(w3, vault.functions.redeemFor(victim, ATTACKER, shares), ATTACKER)


def withdraw(w3: Web3, world: World, holder: str, assets: int) -> Any:
    return send(w3, contract(w3, "Vault", world.vault).functions.withdraw(assets, holder, holder), holder)


def deposit(w3: Web3, world: World, holder: str, assets: int) -> Any:
    asset = contract(w3, "TestToken", world.asset)
    send(w3, asset.functions.mint(holder, assets), holder)
    send(w3, asset.functions.approve(world.vault, assets), holder)
    return send(w3, contract(w3, "Vault", world.vault).functions.deposit(assets, holder), holder)


def is_paused(w3: Web3, world: World) -> bool:
    return bool(contract(w3, "Vault", world.vault).functions.paused().call())


def vault_cash(w3: Web3, world: World) -> int:
    return int(contract(w3, "TestToken", world.asset).functions.balanceOf(world.vault).call())


def tokens(amount: int) -> int:
    return amount * TOKEN
