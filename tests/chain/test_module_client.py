"""The GuardianModule client against the module the demo world deploys on a real Anvil chain with the real Safe
v1.4.1: its reads see what the owners configured, and its calldata does on chain what it says."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_utils import function_signature_to_4byte_selector
from safe_eth.eth import EthereumClient

from onguard.chain.module import (
    NO_PIN,
    GuardianModuleClient,
    ModuleAction,
    ModuleCall,
    encode_execute,
    encode_execute_batch,
    encode_reset_cooldown,
)
from onguard.chain.rpc import Rpc
from onguard.demo.world import ACTION_COOLDOWN, Roles, dev_account, exec_as_owners

from .helpers import is_paused

pytestmark = pytest.mark.chain

PAUSE = function_signature_to_4byte_selector("pause()")
UNPAUSE = function_signature_to_4byte_selector("unpause()")
TRIP = function_signature_to_4byte_selector("trip()")
GUARDIAN = dev_account(Roles.GUARDIAN).address


def read(rpc_url: str, module: str, method: str, *args: Any) -> Any:
    async def go() -> Any:
        rpc = Rpc(rpc_url)
        try:
            return await getattr(GuardianModuleClient(rpc, module), method)(*args)
        finally:
            await rpc.close()
    return asyncio.run(go())


def send_as_guardian(chain: Any, data: bytes) -> Any:
    """Anvil's dev accounts are unlocked: the guardian's transaction, sent as the daemon would (fixed gas)."""
    tx_hash = chain.w3.eth.send_transaction({"from": GUARDIAN, "to": chain.world.module, "data": data,
                                             "gas": 500_000})
    return chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def test_reads_see_the_configuration_the_owners_made(chain):
    world = chain.world
    assert read(world.rpc_url, world.module, "is_module_enabled", world.safe)
    assert read(world.rpc_url, world.module, "is_guardian", world.guardian)
    assert not read(world.rpc_url, world.module, "is_guardian", dev_account(Roles.ATTACKER).address)
    assert read(world.rpc_url, world.module, "min_cooldown") == 60
    assert read(world.rpc_url, world.module, "get_action", world.vault, PAUSE) == ModuleAction(
        allowed=True, cooldown=ACTION_COOLDOWN, last_executed_at=0, calldata_hash=NO_PIN)
    assert read(world.rpc_url, world.module, "get_action", world.vault, UNPAUSE) == ModuleAction(
        allowed=False, cooldown=0, last_executed_at=0, calldata_hash=NO_PIN)
    # Another address is not a module of this Safe.
    assert not read(world.rpc_url, world.vault, "is_module_enabled", world.safe)


def test_execute_batch_pauses_and_trips_then_the_owners_reset_the_cooldown(chain):
    world, w3 = chain.world, chain.w3
    receipt = send_as_guardian(chain, encode_execute_batch([ModuleCall(world.vault, PAUSE),
                                                            ModuleCall(world.breaker, TRIP)]))
    assert receipt["status"] == 1
    mined_at = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert is_paused(w3, world)
    pause = read(world.rpc_url, world.module, "get_action", world.vault, PAUSE)
    assert pause.last_executed_at == mined_at and pause.ready_at == mined_at + ACTION_COOLDOWN

    # The owners unpause; within the cooldown the guardian cannot pause a second attack...
    client = EthereumClient(world.rpc_url)
    exec_as_owners(client, world.safe, world.vault, UNPAUSE)
    assert send_as_guardian(chain, encode_execute(world.vault, PAUSE))["status"] == 0
    assert not is_paused(w3, world)
    # ...until they reset the pause's cooldown; then it can, at once.
    exec_as_owners(client, world.safe, world.module, encode_reset_cooldown(world.vault, PAUSE))
    assert read(world.rpc_url, world.module, "get_action", world.vault, PAUSE).last_executed_at == 0
    assert send_as_guardian(chain, encode_execute(world.vault, PAUSE))["status"] == 1
    assert is_paused(w3, world)
