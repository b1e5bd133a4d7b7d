"""The failover order on real Anvil: a read endpoint that answers but slowly (the fault proxy's latency mode in
front of the node) is put after the direct one once both are measured; and a simulation endpoint without
eth_simulateV1 (a proxy answering "method not found" to it) listed first does not stop pre-emption — the attack
is simulated on the next endpoint and the pause is mined first. With no endpoint able to simulate, the daemon says
so once, loudly, and the block path still pauses the drain once it is mined."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from onguard.chain.keys import load_guardian_account
from onguard.chain.transport import Role, Transport
from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import contract
from onguard.incidents.store import ResponseStatus
from onguard.runtime import Guardian
from onguard.sources.mempool import MempoolSource

from ..chain.helpers import ALICE, ATTACKER, vault_cash
from ..chain.test_preemption import GUARDIAN, assert_pause_first, preemption_config
from .daemon import configure, running, until
from .proxy import Mode
from .rpc_proxy import MethodRefusingProxy

pytestmark = pytest.mark.chain


@pytest.fixture
def refusing_proxy(chain) -> Iterator[MethodRefusingProxy]:
    with MethodRefusingProxy(chain.node.rpc_url, refuse={"eth_simulateV1"}) as proxy:
        yield proxy


def test_a_slow_read_endpoint_is_put_after_the_direct_one(chain, fault_proxy):
    proxy = fault_proxy(chain.node.rpc_url)
    proxy.set_mode(Mode.LATENCY, latency=1.0)

    async def scenario() -> tuple[Any, ...]:
        transport = Transport.from_urls([proxy.url, chain.node.rpc_url])
        try:
            for _ in range(4):
                assert "result" in await transport.request("eth_blockNumber", [])
            slow, direct = transport.health(Role.READ)
            answer = await transport.request("eth_blockNumber", [])
            return answer, (slow, direct), transport.health(Role.READ)
        finally:
            await transport.close()

    answer, before, after = asyncio.run(scenario())
    assert int(answer["result"], 16) == chain.w3.eth.block_number
    (slow, direct), (slow_after, direct_after) = before, after
    assert slow.slow and slow.healthy and not direct.slow
    assert direct_after.answered == direct.answered + 1 and slow_after.answered == slow.answered  # direct served


def test_status_shows_the_slow_read_endpoint(chain, tmp_path, fault_proxy, key_in_env, capsys):
    proxy = fault_proxy(chain.node.rpc_url)
    config_path = configure(chain, tmp_path, proxy.url, rpc_urls=f'["{chain.node.rpc_url}"]')
    asyncio.run(running(config_path, lambda guardian: asyncio.sleep(0)))
    proxy.set_mode(Mode.LATENCY, latency=0.3)
    capsys.readouterr()
    main(["status", "--json", "--config", str(config_path)])
    slow, direct = json.loads(capsys.readouterr().out)["chain"]["endpoints"]
    assert slow["label"] == f"read#1 {proxy.url}" and slow["slow"] and slow["healthy"]
    assert not direct["slow"] and direct["latency_estimate_ms"] is not None


def pending_attack(chain, config_path, *, mine_in_block_path: bool = False) -> dict:
    """The guardian with its mempool source; the drain sent with mining held; then one block mined once the pause
    is out (or, with mine_in_block_path, once the attack was seen and could not be simulated)."""
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)

    def attack() -> str:
        shares = vault.functions.balanceOf(ALICE).call()
        return vault.functions.redeemFor(ALICE, ATTACKER, shares).transact(
            {"from": ATTACKER, "gas": 500_000}).to_0x_hex()

    async def scenario() -> dict:
        config = load_config(config_path)
        guardian = Guardian(config, load_guardian_account(config.guardian_key))
        stop = asyncio.Event()
        try:
            await guardian.start()
            await guardian.step()
            w3.provider.make_request("evm_setAutomine", [False])
            source = MempoolSource(config.mempool.ws_url, config.chain.rpc_url, config.chain.chain_id,
                                   config.contracts, ignore_senders=[GUARDIAN])
            listening = asyncio.create_task(source.run(guardian.on_pending, stop))
            await until(lambda: source.live, "the pending-transaction subscription is up")
            attack_hash = await asyncio.to_thread(attack)
            store = guardian.store
            if mine_in_block_path:
                await until(lambda: guardian.pending_counters.failed >= 1, "the attack met the simulation refusal")
                await asyncio.to_thread(attack)  # a second one, simulated (or not) on its own
                await until(lambda: guardian.pending_counters.failed >= 2, "the second met it too")
                w3.provider.make_request("evm_mine", [])
                await guardian.step()
                await until(lambda: any(r.status == ResponseStatus.SENT for i in store.incidents()
                                        for r in store.responses(i.id)), "the pause broadcast")
                w3.provider.make_request("evm_mine", [])
            else:
                await until(lambda: any(r.status == ResponseStatus.SENT for i in store.incidents()
                                        for r in store.responses(i.id)), "the pause broadcast")
                w3.provider.make_request("evm_mine", [])
            (sent,) = [r for i in store.incidents() for r in store.responses(i.id)]
            await guardian.drain_responses(timeout=10)
            stop.set()
            await listening
            block = w3.eth.get_block("latest")
            # After the race, two more simulation batches: the refusing endpoint is asked at most once more.
            later = [await guardian.rpc.simulation_batch([("eth_simulateV1", [{"blockStateCalls": [
                {"calls": [{"from": ALICE, "to": ALICE}]}]}, "latest"])]) for _ in range(2)] \
                if not mine_in_block_path else []
            return {"hashes": [h.to_0x_hex() for h in block["transactions"]], "attack": attack_hash,
                    "pause": sent.tx_hash, "attack_status": w3.eth.get_transaction_receipt(attack_hash)["status"],
                    "incidents": store.incidents(),
                    "timeline": [e for i in store.incidents() for e in store.timeline(i.id)],
                    "simulation_endpoints": guardian.transport.health(Role.SIMULATE), "later": later}
        finally:
            stop.set()
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    return asyncio.run(scenario())


def test_a_first_simulation_endpoint_without_eth_simulate_does_not_stop_preemption(chain, guardian_config,
                                                                                    tmp_path, refusing_proxy):
    config_path = preemption_config(chain, tmp_path)
    config_path.write_text(config_path.read_text() + f'simulation_urls = ["{refusing_proxy.url}", '
                                                     f'"{chain.node.rpc_url}"]\n')
    cash_before = vault_cash(chain.w3, chain.world)
    with capture_logs() as logs:
        outcome = pending_attack(chain, config_path)
    assert_pause_first(outcome)
    assert vault_cash(chain.w3, chain.world) == cash_before
    assert refusing_proxy.refused >= 1, "the endpoint without eth_simulateV1 was never asked"
    refusing, direct = outcome["simulation_endpoints"]
    assert refusing.cannot_simulate and "-32601" in refusing.cannot_simulate and refusing.healthy
    assert direct.cannot_simulate is None
    assert all("result" in answer for (answer,) in outcome["later"])
    said = [e for e in logs if "does not serve eth_simulateV1" in e["event"]]
    assert len(said) == 1 and said[0]["endpoint"] == f"simulate#1 {refusing_proxy.url}"
    assert not [e for e in logs if e["event"].startswith("pending transaction could not be judged")]


DRAWDOWN = """
id = "vault-drawdown"
description = "The vault lost more than 30% of its assets in a block"
kind = "delta"
severity = "critical"
response = ["pause_vault"]
[reads]
tvl = "vault.totalAssets()"
[delta]
of = "tvl"
blocks = 1
[trigger]
condition = "drawdown > 30%"
"""


def test_with_no_endpoint_able_to_simulate_it_is_said_once_and_the_block_path_pauses(chain, guardian_config,
                                                                                     tmp_path, refusing_proxy):
    config_path = preemption_config(chain, tmp_path)
    (tmp_path / "policies" / "drawdown.toml").write_text(DRAWDOWN)
    config_path.write_text(config_path.read_text() + f'simulation_urls = ["{refusing_proxy.url}"]\n')
    cash_before = vault_cash(chain.w3, chain.world)
    with capture_logs() as logs:
        outcome = pending_attack(chain, config_path, mine_in_block_path=True)
    (incident,) = outcome["incidents"]
    assert incident.evidence.get("path") != "mempool" and incident.policy_id == "vault-drawdown"
    assert outcome["pause"] in outcome["hashes"]
    assert vault_cash(chain.w3, chain.world) < cash_before  # mined before the guardian could know: drained once
    loud = [e for e in logs if "NO SIMULATION ENDPOINT CAN SIMULATE" in e["event"]]
    assert len(loud) == 1 and loud[0]["log_level"] == "critical"
