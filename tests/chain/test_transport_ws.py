"""The transport over ws:// on real Anvil: reads, eth_simulateV1 batches and raw sends answer over the WebSocket
as they do over HTTP, and a guardian whose every endpoint (read, simulation, send) is a ws:// URL pauses a pending
drain before it is mined."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account
from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.chain.transport import Role, Transport
from onguard.demo.world import TOKEN, Roles, contract, dev_account
from onguard.runtime import Guardian

from .helpers import ALICE, send_drain, vault_cash
from .test_preemption import assert_pause_first, preemption_config, race

pytestmark = pytest.mark.chain


def simulations(chain, count: int) -> list[tuple[str, list]]:
    """`count` eth_simulateV1 calls: each a withdrawal by Alice followed by a read of the vault's cash."""
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    asset = contract(w3, "TestToken", world.asset)
    cash = HexBytes(asset.functions.balanceOf(world.vault)._encode_transaction_data()).to_0x_hex()
    requests = []
    for n in range(count):
        withdraw = HexBytes(vault.functions.withdraw(TOKEN * (n + 1), ALICE, ALICE)._encode_transaction_data())
        requests.append(("eth_simulateV1", [{"blockStateCalls": [{"calls": [
            {"from": ALICE, "to": world.vault, "data": withdraw.to_0x_hex(), "gas": hex(300_000)},
            {"to": world.asset, "data": cash}]}]}, "latest"]))
    return requests


def test_reads_simulation_batches_and_raw_sends_answer_over_a_websocket_as_over_http(chain):
    node = chain.node

    async def scenario() -> None:
        over_ws = Rpc(transport=Transport.from_urls([node.ws_url], simulate=[node.ws_url],
                                                    send=[(node.ws_url, False)]))
        over_http = Rpc(node.rpc_url)
        try:
            assert await over_ws.chain_id() == await over_http.chain_id() == 31337
            head = await over_ws.head()
            assert head == await over_http.head()
            assert (await over_ws.block(head))["hash"] == (await over_http.block(head))["hash"]
            requests = simulations(chain, 4)
            by_ws = await over_ws.simulation_batch(requests)
            assert by_ws == await over_http.batch(requests)
            assert all("result" in answer for answer in by_ws)
            # Many at once on the one socket: each batch gets its own answers back.
            many = await asyncio.gather(*(over_ws.simulation_batch(simulations(chain, n)) for n in (1, 2, 3, 5)))
            assert [len(answers) for answers in many] == [1, 2, 3, 5]
            guardian = dev_account(Roles.GUARDIAN)
            raw = Account.sign_transaction({"to": guardian.address, "value": 1, "gas": 21_000, "chainId": 31337,
                                            "nonce": await over_http.nonce(guardian.address),
                                            "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9},
                                           guardian.key).raw_transaction
            sent = await over_ws.transport.send_raw(raw)
            assert sent.accepted == ("send#1 ws://127.0.0.1:" + node.ws_url.rsplit(":", 1)[1],)
            receipt = await over_http.wait_for_receipt(sent.tx_hash, timeout=10)
            assert receipt is not None and receipt["status"] == 1
            read, simulate, send = (over_ws.transport.health(role)[0] for role in (Role.READ, Role.SIMULATE,
                                                                                   Role.SEND))
            assert read.answered == 3 and simulate.answered == 5 and send.answered == 1
        finally:
            await over_ws.transport.close()
            await over_http.close()

    asyncio.run(scenario())


def test_a_guardian_on_websocket_endpoints_pauses_a_pending_drain_before_it_is_mined(chain, guardian_config,
                                                                                      tmp_path):
    w3, world, node = chain.w3, chain.world, chain.node
    cash_before = vault_cash(w3, world)
    config = preemption_config(chain, tmp_path)
    text = config.read_text().replace(f'rpc_url = "{node.rpc_url}"', f'rpc_url = "{node.ws_url}"')
    assert f'rpc_url = "{node.ws_url}"' in text
    config.write_text(text + f'simulation_urls = ["{node.ws_url}"]\n\n'
                             f'[[response.endpoints]]\nurl = "{node.ws_url}"\nprivate = false\n')
    guardians: list[Guardian] = []
    outcome = race(chain, config, lambda: send_drain(w3, world, ALICE), watch=guardians.append)
    assert_pause_first(outcome)
    assert vault_cash(w3, world) == cash_before
    (guardian,) = guardians
    for role in (Role.READ, Role.SIMULATE):
        (endpoint,) = guardian.transport.health(role)
        assert endpoint.label.startswith(f"{role.value}#1 ws://") and endpoint.answered >= 1, endpoint
    # The responder sends through an Rpc of its own per [[response.endpoints]] entry: the pause went over that
    # one's socket (the only send endpoint).
    (sender,) = guardian.responder._public
    (endpoint,) = sender.transport.health()
    assert " ws://" in endpoint.label and endpoint.answered >= 1 and endpoint.healthy, endpoint
