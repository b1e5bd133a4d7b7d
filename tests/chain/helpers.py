"""What the chain tests do to the demo world and its guardian: deposits, withdrawals, the drain, a guardian built,
started and stepped as the daemon would, bounded waits on a condition, and reading the outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from web3 import Web3

from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo.world import TOKEN, Roles, World, contract, dev_account
from onguard.incidents.store import IncidentStatus, ResponseStatus
from onguard.runtime import Guardian
from onguard.sources.mempool import MempoolSource

ATTACKER = dev_account(Roles.ATTACKER).address
ALICE, BOB, CAROL = (dev_account(i).address for i in Roles.DEPOSITORS)
LIMIT = 60.0  # seconds: a bound on any wait, only so that a broken build fails instead of hanging (never a timing)


def send(w3: Web3, call: Any, sender: str) -> Any:
    """Mines the call (a fixed gas limit, so a refused call is mined as a revert rather than never sent)."""
    tx_hash = call.transact({"from": sender, "gas": 500_000})
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def drain_slice(w3: Web3, world: World, victim: str, assets: int) -> Any:
    """One step of the demo attack: redeemFor(victim) the shares worth `assets`, to the attacker."""
    vault = contract(w3, "Vault", world.vault)
    shares = vault.functions.previewWithdraw(assets).call()
    return send(w3, vault.functions.redeemFor(victim, ATTACKER, shares), ATTACKER)


def send_drain(w3: Web3, world: World, victim: str) -> str:
    """The whole demo attack in one transaction: redeemFor(victim) all its shares, to the attacker. Sent, not waited
    for (mining may be held): its hash."""
    vault = contract(w3, "Vault", world.vault)
    shares = vault.functions.balanceOf(victim).call()
    return vault.functions.redeemFor(victim, ATTACKER, shares).transact({"from": ATTACKER, "gas": 500_000}).to_0x_hex()


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


def make_guardian(config_path: Path) -> Guardian:
    """The guardian the daemon would build from the onguard.toml at config_path (not started)."""
    config = load_config(config_path)
    return Guardian(config, load_guardian_account(config.guardian_key))


async def started(config_path: Path) -> Guardian:
    """A started guardian whose checkpoint is anchored at the current head (one step taken)."""
    guardian = make_guardian(config_path)
    await guardian.start()
    await guardian.step()
    return guardian


async def restart_finishes_the_response(config_path: Path, incident_id: int) -> None:
    """A guardian started afresh on config_path sees the incident's one response through: mined, the incident safe."""
    guardian = make_guardian(config_path)
    try:
        await guardian.start()
        await guardian.drain_responses()
        (response,) = guardian.store.responses(incident_id)
        assert response.status == ResponseStatus.MINED
        assert guardian.store.incident(incident_id).status == IncidentStatus.SAFE
    finally:
        await guardian.close()


async def handle_new_blocks(guardian: Guardian) -> list:
    """The guardian's decisions on the blocks mined since its last step, their responses seen through."""
    decisions = await guardian.step()
    await guardian.drain_responses()
    return decisions


async def until(condition: Callable[[], Any], what: str, *, step: Callable[[], Awaitable[object]] | None = None,
                task: asyncio.Task[Any] | None = None, limit: float = LIMIT) -> None:
    """Waits until `condition()` holds, stepping the guardian before each look when `step` is given. Fails when
    `task` (the daemon's, a source's) ends first, with its error if it raised, or after `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        if step is not None:
            await step()
        if condition():
            return
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"it stopped before {what}")
        if loop.time() > deadline:
            raise AssertionError(f"not within {limit:.0f}s: {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def following_the_mempool(guardian: Guardian) -> AsyncIterator[MempoolSource]:
    """The guardian's own pending-transaction source (as the daemon builds it) feeding guardian.on_pending: live
    when the body runs, stopped (and its run seen to end cleanly) after it."""
    source = guardian.mempool_source()
    assert source is not None, "the config enables no [mempool]"
    stop = asyncio.Event()
    listening = asyncio.create_task(source.run(guardian.on_pending, stop))
    try:
        await until(lambda: source.live, "the pending-transaction subscription is up", task=listening)
        yield source
    finally:
        stop.set()
        await listening
