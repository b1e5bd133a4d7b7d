"""The demo's second act: after the owners unpause, an exploit contract manipulates the oracle and borrows the
vault's cash in one transaction; the guardian sees it pending and lands the pause first, in the same block."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from safe_eth.eth import EthereumClient
from web3 import Web3

from onguard.demo.world import TOKEN, Roles, World, artifact, contract, dev_account, exec_as_owners
from onguard.incidents.store import IncidentStore

COOLDOWN_PASSED = 3601  # seconds: the module's on-chain cooldown on pause() is an hour
INFLATED_PRICE = 10**24


@dataclass(frozen=True, slots=True)
class RaceResult:
    unpause_ok: bool
    exploit_tx: str
    pause_tx: str | None
    block: int
    order: tuple[str, ...]       # who is at each position of the block: "pause", "exploit", or an address
    exploit_reverted: bool
    cash_before: int
    cash_after: int
    broadcast_ms: float | None
    predicted_cash_after: int | None


def unpause_by_owners(w3: Web3, world: World) -> bool:
    """An ordinary 2-of-3 multisig transaction: the only way the vault is ever unpaused."""
    w3.provider.make_request("evm_increaseTime", [COOLDOWN_PASSED])
    vault = contract(w3, "Vault", world.vault)
    exec_as_owners(EthereumClient(world.rpc_url), world.safe, world.vault, vault.encode_abi("unpause", []))
    return not vault.functions.paused().call()


def arm_exploit(w3: Web3, world: World) -> Any:
    """Deploys the exploit contract; its premise is a mis-configured integration holding the oracle's updater
    role (granted here by the Safe), and a little collateral."""
    attacker = dev_account(Roles.ATTACKER).address
    build = artifact("OracleBorrowAttacker")
    factory = w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"])
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": attacker}))
    exploit = w3.eth.contract(address=receipt["contractAddress"], abi=build["abi"])
    oracle = contract(w3, "PriceOracle", world.oracle)
    client = EthereumClient(world.rpc_url)
    exec_as_owners(client, world.safe, world.oracle,
                   oracle.encode_abi("grantRole", [oracle.functions.UPDATER_ROLE().call(), exploit.address]))
    w3.eth.wait_for_transaction_receipt(
        contract(w3, "TestToken", world.collateral).functions.mint(exploit.address, 10 * TOKEN).transact(
            {"from": attacker}))
    return exploit


def race(w3: Web3, world: World, exploit: Any, store_path: Any, wait: float = 10.0) -> RaceResult:
    """Holds mining, sends the exploit to the mempool, waits for the guardian's pause, mines one block.
    Blocking: run it in a thread while the guardian runs in the event loop."""
    attacker = dev_account(Roles.ATTACKER).address
    cash = contract(w3, "TestToken", world.asset).functions.balanceOf(world.vault)
    cash_before = cash.call()
    w3.provider.make_request("evm_setIntervalMining", [0])
    w3.provider.make_request("evm_setAutomine", [False])
    exploit_tx = exploit.functions.attack(world.oracle, world.vault, 10 * TOKEN, INFLATED_PRICE).transact(
        {"from": attacker, "gas": 1_000_000}).to_0x_hex()
    store = IncidentStore(store_path)
    try:
        broadcast = _wait_for_broadcast(store, exploit_tx, wait)
        w3.provider.make_request("evm_mine", [])
        block = w3.eth.get_block("latest", full_transactions=True)
        pause_tx = broadcast["tx_hash"] if broadcast else None
        order = tuple("exploit" if tx["hash"].to_0x_hex() == exploit_tx else
                      "pause" if tx["from"] == world.guardian else tx["from"] for tx in block["transactions"])
        time.sleep(0.5)  # the guardian records the receipt and the race outcome
        predicted = _predicted_cash(store, exploit_tx)
    finally:
        store.close()
        w3.provider.make_request("evm_setAutomine", [True])
    return RaceResult(unpause_ok=True, exploit_tx=exploit_tx, pause_tx=pause_tx, block=int(block["number"]),
                      order=order, exploit_reverted=w3.eth.get_transaction_receipt(exploit_tx)["status"] == 0,
                      cash_before=cash_before, cash_after=cash.call(),
                      broadcast_ms=float(broadcast["broadcast_ms"]) if broadcast else None,
                      predicted_cash_after=predicted)


def _wait_for_broadcast(store: IncidentStore, threat: str, wait: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for incident in store.incidents(limit=5):
            for entry in store.timeline(incident.id):
                if entry.kind == "response-broadcast" and entry.detail.get("threat_tx") == threat:
                    return dict(entry.detail)
        time.sleep(0.01)
    return None


def _predicted_cash(store: IncidentStore, threat: str) -> int | None:
    for incident in store.incidents(limit=5):
        if incident.evidence.get("threat_tx") == threat:
            return int(incident.evidence["after"]["cash"])
    return None
