"""A live drain against the daemon (Guardian.run) while one endpoint misbehaves, through the fault proxy: each
fault on the first read endpoint and on the private send endpoint. Whatever the fault, the end state is asserted:
the vault paused, exactly one pause executed by the module, and an incident record that says what the chain shows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from web3 import Web3

from onguard.incidents.store import IncidentStatus, IncidentStore, Outcome, ResponseStatus

from ..chain.helpers import ALICE, drain_slice, is_paused, tokens, until
from .daemon import configure, running
from .proxy import Mode

pytestmark = pytest.mark.chain

FAULTS = [Mode.DROP, Mode.BLACKHOLE, Mode.HTTP_500, Mode.GARBAGE, Mode.LATENCY]
ACTION_EXECUTED = Web3.keccak(text="ActionExecuted(address,address,bytes4,bytes32)")


def pauses_executed(w3: Web3, module: str) -> int:
    """ActionExecuted events of the module: pauses that took effect on chain, whoever sent them."""
    return len(w3.eth.get_logs({"address": module, "fromBlock": 0, "toBlock": "latest",
                                "topics": [ACTION_EXECUTED]}))


def drain_until_paused(chain, config_path: Path) -> None:
    async def body(_guardian) -> None:
        for _ in range(3):  # 300,000 of 1,000,000 over three blocks: vault-drain trips
            await asyncio.to_thread(drain_slice, chain.w3, chain.world, ALICE, tokens(100_000))
        await until(lambda: is_paused(chain.w3, chain.world), "the vault paused")
        incident_safe = lambda: any(i.status == IncidentStatus.SAFE for i in _guardian.store.incidents())  # noqa: E731
        await until(incident_safe, "the incident recorded as safe")

    asyncio.run(running(config_path, body))


def assert_one_true_pause(chain, config_path: Path) -> None:
    assert is_paused(chain.w3, chain.world)
    assert pauses_executed(chain.w3, chain.world.module) == 1
    store = IncidentStore(config_path.parent / "onguard.db")
    try:
        (incident,) = [i for i in store.incidents() if i.policy_id == "vault-drain"]
        assert incident.status == IncidentStatus.SAFE
        (response,) = store.responses(incident.id)
        assert response.status == ResponseStatus.MINED
        receipt = chain.w3.eth.get_transaction_receipt(response.tx_hash)
        assert receipt["status"] == 1 and receipt["blockNumber"] == response.block_number
        # The drain was mined before the trip: the record says the pause contained it, never "before the attack".
        assert response.outcome == Outcome.CONTAINED
    finally:
        store.close()


@pytest.mark.parametrize("fault", FAULTS, ids=[f.value for f in FAULTS])
def test_a_drain_is_paused_with_the_first_read_endpoint_faulty(chain, tmp_path, fault_proxy, key_in_env, fault):
    proxy = fault_proxy(chain.node.rpc_url)
    proxy.set_mode(fault, latency=0.05)
    config_path = configure(chain, tmp_path, proxy.url, rpc_urls=f'["{chain.node.rpc_url}"]',
                            request_timeout='"500ms"')
    config_path.write_text(config_path.read_text() + f'\n[[response.endpoints]]\nurl = "{chain.node.rpc_url}"\n')
    drain_until_paused(chain, config_path)
    assert_one_true_pause(chain, config_path)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.value for f in FAULTS])
def test_a_drain_is_paused_with_the_private_send_endpoint_faulty(chain, tmp_path, fault_proxy, key_in_env, fault):
    """The private endpoint (a builder) misbehaves: the pause goes out publicly at once rather than not at all."""
    proxy = fault_proxy(chain.node.rpc_url)
    proxy.set_mode(fault, latency=0.05)
    config_path = configure(chain, tmp_path, chain.node.rpc_url)
    config_path.write_text(config_path.read_text() + (
        f'\n[response]\nsend_timeout = "500ms"\n'
        f'\n[[response.endpoints]]\nurl = "{proxy.url}"\nprivate = true\n'
        f'\n[[response.endpoints]]\nurl = "{chain.node.rpc_url}"\nprivate = false\n'))
    drain_until_paused(chain, config_path)
    assert_one_true_pause(chain, config_path)


def test_a_drain_while_the_only_node_is_unreachable_is_paused_when_it_comes_back(chain, tmp_path, fault_proxy,
                                                                                key_in_env):
    """The daemon's one endpoint goes away (as a node restarting) while the drain is mined; when it is back, the
    daemon reads every block it missed, trips, and pauses: nothing was skipped while it was blind."""
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, proxy.url, request_timeout='"500ms"')

    async def body(guardian) -> None:
        proxy.set_mode(Mode.DROP)
        for _ in range(3):
            await asyncio.to_thread(drain_slice, chain.w3, chain.world, ALICE, tokens(100_000))
        assert not is_paused(chain.w3, chain.world)
        proxy.set_mode(Mode.PASS)
        await until(lambda: is_paused(chain.w3, chain.world), "the vault paused")
        await until(lambda: any(i.status == IncidentStatus.SAFE for i in guardian.store.incidents()),
                    "the incident recorded as safe")

    asyncio.run(running(config_path, body))
    assert_one_true_pause(chain, config_path)
