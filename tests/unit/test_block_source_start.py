"""sources/blocks.py: a start_block of "latest" is the head the daemon saw while starting, not the head of its first
poll, so the blocks mined between "guardian started" and the first poll's answer (a slow read endpoint, a busy
machine) are read rather than skipped."""

from __future__ import annotations

import asyncio
from typing import Any

from onguard.incidents.store import IncidentStore
from onguard.sources.blocks import BlockSource

CHAIN_ID = 31337


def block_hash(number: int) -> str:
    return "0x" + f"{number:064x}"


class FakeChain:
    """A chain whose head the test moves on; answers the reads BlockSource makes."""

    def __init__(self, head: int) -> None:
        self.head_number = head

    async def head(self) -> int:
        return self.head_number

    async def block(self, number: int, full_transactions: bool = False) -> dict[str, Any]:
        assert number <= self.head_number
        return {"number": number, "hash": block_hash(number), "parentHash": block_hash(number - 1),
                "timestamp": 1_700_000_000 + number, "baseFeePerGas": 1, "transactions": []}


def source_on(chain: FakeChain, store: IncidentStore, start_block: int | None) -> BlockSource:
    rpc: Any = chain  # the reads BlockSource makes, no more
    return BlockSource(rpc, store, CHAIN_ID, {}, start_block=start_block, max_block_range=100)


def first_poll(source: BlockSource) -> list[int]:
    return [batch.block.number for batch in asyncio.run(source.next_batches()).batches]


def test_latest_is_the_head_seen_at_start_so_blocks_mined_before_the_first_poll_are_read() -> None:
    chain, store = FakeChain(head=10), IncidentStore(":memory:")
    try:
        source = source_on(chain, store, None)
        source.start_at_latest(chain.head_number)  # what the daemon does before it says "started"
        chain.head_number = 13  # mined while the first poll's head() was on its way (a drain, say)
        assert first_poll(source) == [10, 11, 12, 13]
    finally:
        store.close()


def test_a_checkpoint_or_a_configured_start_block_wins_over_latest() -> None:
    chain, store = FakeChain(head=10), IncidentStore(":memory:")
    try:
        configured = source_on(chain, store, 8)
        configured.start_at_latest(10)
        assert first_poll(configured) == [8, 9, 10]
        configured.commit(asyncio.run(configured.next_batches()).batches[-1])
        resumed = source_on(chain, store, None)
        resumed.start_at_latest(10)
        chain.head_number = 11
        assert first_poll(resumed) == [11]
    finally:
        store.close()
