"""Pre-emption with two simulation endpoints on real Anvil ([mempool] simulation_urls), the first of them
black-holed through the fault proxy once the guardian has started: the attack (the first of its shape) is sent to
both endpoints at once, the other one's answer counts, and the pause is still mined before the attack in the one
block mined (mining held). Failover per batch is shown against scripted nodes in
tests/unit/test_simulation_spread.py. And `onguard status` names a failing simulation endpoint without
calling the chain blind."""

from __future__ import annotations

import asyncio

import pytest

from onguard.cli.main import main
from onguard.chain.transport import Role
from onguard.incidents.store import ResponseStatus

from ..chain.helpers import ALICE, following_the_mempool, make_guardian, send_drain, until, vault_cash
from ..chain.test_preemption import assert_pause_first, preemption_config
from .daemon import configure, running
from .proxy import Mode

pytestmark = pytest.mark.chain


def test_an_attack_is_paused_before_inclusion_with_one_simulation_endpoint_black_holed(chain, guardian_config,
                                                                                        tmp_path, fault_proxy):
    w3, world = chain.w3, chain.world
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = preemption_config(chain, tmp_path)
    config_path.write_text(config_path.read_text() + f'simulation_urls = ["{proxy.url}", "{chain.node.rpc_url}"]\n'
                                                     'simulation_timeout = "3s"\n')
    cash_before = vault_cash(w3, world)

    async def scenario() -> dict:
        guardian = make_guardian(config_path)
        try:
            await guardian.start()
            await guardian.step()
            proxy.set_mode(Mode.BLACKHOLE)
            connections = proxy.connections
            w3.provider.make_request("evm_setAutomine", [False])
            async with following_the_mempool(guardian):
                attack_hash = await asyncio.to_thread(send_drain, w3, world, ALICE)
                store = guardian.store
                await until(lambda: any(r.status == ResponseStatus.SENT for i in store.incidents()
                                        for r in store.responses(i.id)), "the pause broadcast")
                (sent,) = [r for i in store.incidents() for r in store.responses(i.id)]
                w3.provider.make_request("evm_mine", [])
                await guardian.drain_responses(timeout=10)
            block = w3.eth.get_block("latest")
            return {"hashes": [h.to_0x_hex() for h in block["transactions"]], "attack": attack_hash,
                    "pause": sent.tx_hash, "attack_status": w3.eth.get_transaction_receipt(attack_hash)["status"],
                    "incidents": store.incidents(),
                    "timeline": [e for i in store.incidents() for e in store.timeline(i.id)],
                    "simulation_endpoints": guardian.transport.health(Role.SIMULATE),
                    "black_hole_asked": proxy.connections > connections}
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    outcome = asyncio.run(scenario())
    assert_pause_first(outcome)
    assert vault_cash(w3, world) == cash_before
    _, direct = outcome["simulation_endpoints"]
    assert outcome["black_hole_asked"], "the attack's simulation was not sent to the black-holed endpoint"
    assert direct.last_success_at is not None


def test_status_names_a_failing_simulation_endpoint_and_the_chain_is_not_blind(chain, tmp_path, fault_proxy,
                                                                               key_in_env, capsys):
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, chain.node.rpc_url, request_timeout='"300ms"')
    config_path.write_text(config_path.read_text() + f'\n[mempool]\nsimulation_urls = ["{proxy.url}"]\n')
    asyncio.run(running(config_path, lambda guardian: asyncio.sleep(0)))
    capsys.readouterr()
    assert main(["status", "--config", str(config_path)]) == 0
    assert f"endpoint      simulate#1 {proxy.url}: ok" in capsys.readouterr().out

    proxy.set_mode(Mode.BLACKHOLE)
    assert main(["status", "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert f"endpoint      simulate#1 {proxy.url}: FAILING — no answer within 0.3s" in out
    assert "BLIND" not in out and "endpoint      read#1" in out
