"""Batched simulations on real Anvil: several pending transactions in one JSON-RPC batch, each against the head
state (not one after another), and a transaction simulated once per head."""

from __future__ import annotations

import asyncio

import pytest
from hexbytes import HexBytes
from onguard.chain.rpc import Rpc
from onguard.chain.simulate import Head, Simulation, Simulator
from onguard.config import load_config
from onguard.demo.world import contract
from onguard.policies.engine import PolicyEngine
from onguard.policies.loader import load_policies

from .helpers import ALICE, ATTACKER
from .test_preemption import preemption_config

pytestmark = pytest.mark.chain


class CountingRpc(Rpc):
    """The real Rpc, counting the batches it sends."""

    batches = 0

    async def simulation_batch(self, requests, **options):  # type: ignore[no-untyped-def]
        CountingRpc.batches += 1
        return await super().simulation_batch(requests, **options)


def test_each_transaction_of_a_batch_runs_on_the_head_state_and_is_simulated_once_per_head(chain, guardian_config,
                                                                                             tmp_path):
    w3, world = chain.w3, chain.world
    config = load_config(preemption_config(chain, tmp_path))
    reads = PolicyEngine(load_policies(config.policies_dir, config.contracts, config.actions)).simulation_reads
    vault = contract(w3, "Vault", world.vault)
    shares = vault.functions.balanceOf(ALICE).call()
    redeem = HexBytes(vault.functions.redeemFor(ALICE, ATTACKER, shares)._encode_transaction_data())
    # The same drain twice: one after the other, the second would find nothing left to redeem.
    drains = [{"from": ATTACKER, "to": world.vault, "input": redeem, "value": 0, "gas": 500_000,
               "hash": HexBytes(bytes([n]) * 32)} for n in (1, 2)]
    block = w3.eth.get_block("latest")
    head = Head(block["number"], block["hash"].to_0x_hex())

    async def simulate_twice() -> tuple[list, list]:
        rpc = CountingRpc(config.chain.rpc_url)
        try:
            simulator = Simulator(rpc)
            first = await simulator.simulate_many(drains, reads, head)
            again = await simulator.simulate_many(drains, reads, head)
            return first, again
        finally:
            await rpc.close()

    first, again = asyncio.run(simulate_twice())
    assert all(isinstance(outcome, Simulation) and not outcome.reverted for outcome in first)
    (cash,) = reads
    assert first[0].before[cash] == first[1].before[cash] and first[0].after[cash] == first[1].after[cash]
    assert first[0].after[cash] < first[0].before[cash]
    assert again == first and CountingRpc.batches == 1, "the second look at the same head comes from the cache"
