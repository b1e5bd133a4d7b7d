"""The block source against anvil_reorg deeper than any fixed window: it walks back by parent hash to the
common ancestor, reports the orphaned blocks, and reads every block of the new chain, none skipped; a
reorganisation deeper than the recorded history is said loudly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from onguard.chain.rpc import Rpc
from onguard.incidents.store import IncidentStore
from onguard.sources.blocks import BlockSource

pytestmark = pytest.mark.chain


async def read_to_head(source: BlockSource, rpc: Rpc) -> list[tuple[int, str, str]]:
    """Every block read (number, hash, parent hash) until the source reaches the node's head."""
    read: list[tuple[int, str, str]] = []
    head = await rpc.head()
    while source.last_committed is None or source.last_committed < head:
        poll = await source.next_batches()
        assert poll.rewound_to is None
        for batch in poll.batches:
            read.append((batch.block.number, batch.block.hash, batch.block.parent_hash))
            source.commit(batch)
    return read


def canonical(w3, number: int) -> str:
    return w3.eth.get_block(number)["hash"].to_0x_hex()


def test_a_reorg_deeper_than_twelve_blocks_is_walked_back_and_the_new_chain_read_whole(chain, tmp_path: Path):
    w3 = chain.w3

    async def scenario() -> None:
        rpc = Rpc(chain.node.rpc_url)
        store = IncidentStore(tmp_path / "state.db")
        try:
            chain.mine(1)  # anvil reorganises only blocks mined after the fork point
            source = BlockSource(rpc, store, chain.world.chain_id, {}, start_block=None, max_block_range=500)
            await read_to_head(source, rpc)
            anchor = source.last_committed
            chain.mine(20)
            await read_to_head(source, rpc)
            old_head = source.last_committed
            assert old_head == anchor + 20
            old_hashes = {n: canonical(w3, n) for n in range(anchor, old_head + 1)}

            assert "error" not in w3.provider.make_request("anvil_reorg", [15, []])
            chain.mine(3)
            new_head = w3.eth.block_number

            poll = await source.next_batches()
            assert poll.batches == []
            assert poll.rewound_to == old_head - 15 + 1
            assert poll.reorg is not None and not poll.reorg.exhausted
            assert poll.reorg.ancestor.number == old_head - 15
            assert poll.reorg.ancestor.hash == old_hashes[old_head - 15] == canonical(w3, old_head - 15)
            assert [(b.number, b.hash) for b in poll.orphaned] == \
                [(n, old_hashes[n]) for n in range(old_head - 14, old_head + 1)]
            assert all(canonical(w3, b.number) != b.hash for b in poll.orphaned)
            assert source.history.reorgs()[-1].orphaned == poll.orphaned  # recorded for the reconciler

            read = await read_to_head(source, rpc)
            assert [n for n, _, _ in read] == list(range(old_head - 14, new_head + 1))  # none skipped
            assert all(h == canonical(w3, n) for n, h, _ in read)
            assert read[0][2] == old_hashes[old_head - 15]  # the first one hangs on the common ancestor
            assert all(read[i][2] == read[i - 1][1] for i in range(1, len(read)))
        finally:
            await rpc.close()
            store.close()

    asyncio.run(scenario())


def test_a_reorg_deeper_than_the_recorded_history_is_said_loudly(chain, tmp_path: Path):
    w3 = chain.w3

    async def scenario() -> None:
        rpc = Rpc(chain.node.rpc_url)
        store = IncidentStore(tmp_path / "state.db")
        try:
            chain.mine(1)
            source = BlockSource(rpc, store, chain.world.chain_id, {}, start_block=None, max_block_range=500)
            source.history.keep = 5
            await read_to_head(source, rpc)
            chain.mine(10)
            await read_to_head(source, rpc)
            old_head = source.last_committed
            assert "error" not in w3.provider.make_request("anvil_reorg", [8, []])
            chain.mine(1)

            with capture_logs() as logs:
                poll = await source.next_batches()
            assert poll.reorg is not None and poll.reorg.exhausted and poll.reorg.ancestor is None
            assert poll.rewound_to == old_head - 4  # the oldest block still recorded
            assert [e for e in logs if e["log_level"] == "critical" and "DEEPER" in e["event"]]
            read = await read_to_head(source, rpc)
            assert [n for n, _, _ in read] == list(range(old_head - 4, w3.eth.block_number + 1))
            assert all(h == canonical(w3, n) for n, h, _ in read)
        finally:
            await rpc.close()
            store.close()

    asyncio.run(scenario())
