"""The GuardianModule client against the module the demo world deploys on a real Anvil chain with the real Safe
v1.4.1: its reads see what the owners configured, and its calldata does on chain what it says."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from eth_utils import function_signature_to_4byte_selector
from hexbytes import HexBytes
from safe_eth.eth import EthereumClient
from safe_eth.safe import Safe
from safe_eth.safe.enums import SafeOperationEnum
from safe_eth.safe.multi_send import MultiSend, MultiSendOperation, MultiSendTx
from web3.exceptions import ContractCustomError

from onguard.chain.module import (
    NO_PIN,
    GuardianModuleClient,
    ModuleAction,
    ModuleCall,
    decode_module_error,
    encode_execute,
    encode_execute_batch,
    encode_reset_cooldown,
)
from onguard.chain.rpc import Rpc
from onguard.demo.world import ACTION_COOLDOWN, Roles, dev_account, exec_as_owners
from onguard.paths import PROJECT_ROOT

from .helpers import is_paused

pytestmark = pytest.mark.chain

PAUSE = function_signature_to_4byte_selector("pause()")
UNPAUSE = function_signature_to_4byte_selector("unpause()")
TRIP = function_signature_to_4byte_selector("trip()")
GUARDIAN = dev_account(Roles.GUARDIAN).address
MULTI_SEND_CALL_ONLY = (PROJECT_ROOT / "node_modules/@safe-global/safe-contracts/build/artifacts/contracts/libraries"
                        / "MultiSendCallOnly.sol/MultiSendCallOnly.json")


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
    assert str(refusal(chain, encode_execute(world.vault, PAUSE))) == f"CoolingDown(readyAt={pause.ready_at})"
    # ...until they reset the pause's cooldown; then it can, at once.
    exec_as_owners(client, world.safe, world.module, encode_reset_cooldown(world.vault, PAUSE))
    assert read(world.rpc_url, world.module, "get_action", world.vault, PAUSE).last_executed_at == 0
    assert send_as_guardian(chain, encode_execute(world.vault, PAUSE))["status"] == 1
    assert is_paused(w3, world)


def test_the_owners_unpause_and_reset_the_cooldown_in_one_safe_transaction(chain):
    """What onguard's unpause proposal does: unpause + resetCooldown through MultiSendCallOnly (a delegatecall of
    the Safe), signed by the threshold of owners; the guardian can pause a second attack at once."""
    world, w3 = chain.world, chain.w3
    assert send_as_guardian(chain, encode_execute(world.vault, PAUSE))["status"] == 1

    client = EthereumClient(world.rpc_url)
    multi_send = MultiSend(client, address=deploy_multi_send_call_only(chain), call_only=True)
    batch = multi_send.build_tx_data([
        MultiSendTx(MultiSendOperation.CALL, world.vault, 0, UNPAUSE),
        MultiSendTx(MultiSendOperation.CALL, world.module, 0, encode_reset_cooldown(world.vault, PAUSE)),
    ])
    safe_tx = Safe(world.safe, client).build_multisig_tx(  # type: ignore[abstract]
        multi_send.address, 0, bytes(batch), operation=SafeOperationEnum.DELEGATE_CALL.value)
    for index in Roles.OWNERS[:world.threshold]:
        safe_tx.sign(dev_account(index).key.to_0x_hex())
    tx_hash, _ = safe_tx.execute(dev_account(Roles.DEPLOYER).key.to_0x_hex())
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)["status"] == 1

    assert not is_paused(w3, world)
    assert read(world.rpc_url, world.module, "get_action", world.vault, PAUSE).last_executed_at == 0
    assert send_as_guardian(chain, encode_execute(world.vault, PAUSE))["status"] == 1
    assert is_paused(w3, world)


def refusal(chain: Any, data: bytes) -> Any:
    """The module's reason for refusing the guardian's call, as an eth_call shows it."""
    with pytest.raises(ContractCustomError) as refused:
        chain.w3.eth.call({"from": GUARDIAN, "to": chain.world.module, "data": data})
    return decode_module_error(HexBytes(refused.value.data))


def deploy_multi_send_call_only(chain: Any) -> str:
    """MultiSendCallOnly v1.4.1 from the bytecode the npm package publishes."""
    bytecode = json.loads(MULTI_SEND_CALL_ONLY.read_text())["bytecode"]
    tx_hash = chain.w3.eth.send_transaction({"from": dev_account(Roles.DEPLOYER).address, "data": bytecode})
    return chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)["contractAddress"]

