"""ChainWatch on real Anvil nodes: all well on one chain; two read endpoints whose heads drift apart or hold
different blocks at the same height disagree; a head that does not advance is stalled; a head below the last
handled block is said; the genesis is recorded once and another chain is named as such."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from web3 import Web3

from onguard.chain.anvil import start_anvil
from onguard.chain.health import ChainWatch
from onguard.chain.transport import Transport
from onguard.store.blocklog import BlockLog
from onguard.incidents.store import IncidentStore

pytestmark = pytest.mark.chain


def watch_over(urls: list[str], store: IncidentStore, chain_id: int, stall_after: float = 3600.0) \
        -> tuple[Transport, ChainWatch]:
    transport = Transport.from_urls(urls)
    return transport, ChainWatch(transport, BlockLog(store.database, chain_id), chain_id, stall_after=stall_after)


def test_one_chain_two_endpoints_all_well_then_drifting_apart(chain, base_chain, tmp_path: Path):
    base, _ = base_chain
    store = IncidentStore(tmp_path / "state.db")
    with start_anvil("--fork-url", base.rpc_url) as other:
        async def scenario() -> None:
            transport, watch = watch_over([chain.node.rpc_url, other.rpc_url], store, chain.world.chain_id)
            try:
                head = chain.w3.eth.block_number
                health = await watch.check(head)
                assert health.problems(max_lag=0) == ()
                assert health.head == head and health.lag == 0
                recorded = BlockLog(store.database, chain.world.chain_id).genesis()
                assert recorded == health.genesis  # recorded at first look
                assert [e.last_head for e in health.endpoints] == [head, head]

                chain.mine(1)  # same height on both, after one block on each: two different blocks
                other_w3 = Web3(Web3.HTTPProvider(other.rpc_url))
                other_w3.provider.make_request("evm_mine", [chain.w3.eth.get_block("latest")["timestamp"] + 7])
                health = await watch.check(head)
                assert health.disagreement and f"different blocks at height {head + 1}" in health.disagreement

                chain.mine(10)
                health = await watch.check(head)
                assert "heads 10 blocks apart" in (health.disagreement or "")
                assert health.head == head + 11  # the highest head on the right chain
                (line,) = [p for p in health.problems() if p.startswith("ENDPOINTS DISAGREE")]
                assert "read#1" in line and "read#2" in line
                lagging = transport.health()[1]
                assert not lagging.healthy and "lagging" in (lagging.last_error or "")  # reads go to read#1
            finally:
                await transport.close()

        asyncio.run(scenario())
    store.close()


def test_a_stalled_head_and_a_head_behind_the_checkpoint(chain, tmp_path: Path):
    store = IncidentStore(tmp_path / "state.db")

    async def scenario() -> None:
        transport, watch = watch_over([chain.node.rpc_url], store, chain.world.chain_id, stall_after=0.0)
        try:
            head = chain.w3.eth.block_number
            first = await watch.check(head)
            assert not first.stalled  # one look cannot tell
            again = await watch.check(head)
            assert again.stalled and any(p.startswith("STALLED") for p in again.problems())
            chain.mine(1)
            moved = await watch.check(head)
            assert moved.head == head + 1
            behind = await watch.check(head + 50)
            assert behind.behind_checkpoint and behind.lag == -49
            assert any(p.startswith("HEAD BEHIND CHECKPOINT") for p in behind.problems())
        finally:
            await transport.close()

    asyncio.run(scenario())
    store.close()


def test_another_chain_is_named_and_the_record_is_kept(chain, tmp_path: Path):
    store = IncidentStore(tmp_path / "state.db")
    with start_anvil(chain_id=chain.world.chain_id) as fresh:
        async def scenario() -> None:
            transport, watch = watch_over([chain.node.rpc_url, fresh.rpc_url], store, chain.world.chain_id)
            try:
                recorded = (await watch.check(None)).genesis
                health = await watch.check(None)
                assert health.wrong_chain and "read#2" in health.wrong_chain and "genesis" in health.wrong_chain
                assert health.head == chain.w3.eth.block_number  # the right endpoint still counts
                assert BlockLog(store.database, chain.world.chain_id).genesis() == recorded
                assert not transport.health()[1].healthy  # demoted: reads go to the right chain first
            finally:
                await transport.close()

        asyncio.run(scenario())
    store.close()
