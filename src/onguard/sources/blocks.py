"""Follows new blocks, fetches and decodes the watched contracts' logs, and resumes from a checkpoint."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from onguard.chain.checksum import checksum
from onguard.chain.rpc import Rpc
from onguard.config import WatchedContract
from onguard.store.blocklog import BlockLog, BlockRef, Reorg
from onguard.incidents.store import IncidentStore
from onguard.log import get_logger
from onguard.observations import (
    BlockBatch,
    BlockObservation,
    LogObservation,
    TransactionObservation,
    frozen_mapping,
)

SOURCE_NAME = "blocks"


@dataclass(frozen=True, slots=True)
class SourcePoll:
    """What one poll found: new blocks in order, or (rewound_to set) that the handled blocks from rewound_to on
    were orphaned by a reorganisation: forget them, they are read again from the new chain. `reorg` says which
    blocks (number, hash) were orphaned, so receipts in that range can be verified again."""

    batches: list[BlockBatch]
    rewound_to: int | None = None
    reorg: Reorg | None = None

    @property
    def orphaned(self) -> tuple[BlockRef, ...]:
        return self.reorg.orphaned if self.reorg else ()


class BlockSource:
    """Yields a BlockBatch per block, in order, never skipping one. The caller commits each batch after
    handling it, so a crash replays the uncommitted block rather than losing it."""

    def __init__(self, rpc: Rpc, store: IncidentStore, chain_id: int,
                 contracts: Mapping[str, WatchedContract], *, start_block: int | None,
                 max_block_range: int, end_block: int | None = None) -> None:
        self._rpc = rpc
        self._store = store
        self._chain_id = chain_id
        self._by_address = {c.address.lower(): c for c in contracts.values()}
        self._addresses = [c.address for c in contracts.values()]
        self._start_block = start_block
        self._max_range = max_block_range
        self._end_block = end_block  # a bounded range (policy tests, replays); None follows the head for ever
        self._last: tuple[int, str] | None = store.checkpoint(SOURCE_NAME, chain_id)
        self.history = BlockLog(store.database, chain_id, replica=store.replica, durably=store.durably)
        if self._last is not None and self.history.hash_at(self._last[0]) is None:
            self.history.record(*self._last)  # a checkpoint written before the history was kept
        self._log = get_logger(component="block-source", chain_id=chain_id)

    @property
    def last_committed(self) -> int | None:
        return self._last[0] if self._last else None

    def start_at_latest(self, head: int) -> None:
        """Decides a start_block of "latest" now, as `head` (the head the daemon saw while starting), rather than at
        the first poll: the blocks mined between "started" and the first poll's answer (a slow endpoint, a busy
        machine) are read, not skipped. No effect once a checkpoint or a start block is set."""
        if self._last is None and self._start_block is None:
            self._start_block = head

    async def next_batches(self) -> SourcePoll:
        """Every block after the checkpoint up to the head (at most max_block_range of them), or a rewind
        when the chain under the checkpoint was reorganised."""
        head = await self._rpc.head()
        if self._end_block is not None:
            head = min(head, self._end_block)
        if self._last is None:
            if self._start_block is None:
                # "latest" is decided once: a first poll that fails must not move the start past blocks mined
                # while the node was unreachable.
                self._start_block = head
            first = self._start_block
            self._log.info("no checkpoint: starting", block=first)
        else:
            first = self._last[0] + 1
        if first > head:
            return SourcePoll(batches=[])
        last = min(head, first + self._max_range - 1)
        if first < last:
            self._log.info("catching up", from_block=first, to_block=last, head=head)
        blocks = list(await asyncio.gather(*(self._rpc.block(n, full_transactions=True)
                                              for n in range(first, last + 1))))
        if self._last is not None and _hex(blocks[0]["parentHash"]) != self._last[1]:
            reorg = await self._walk_back(blocks[0])
            return SourcePoll(batches=[], rewound_to=self._rewind_to(reorg), reorg=reorg)
        blocks = _linked_prefix(blocks)  # a reorg during the fetch: keep what links up, read the rest next time
        last = int(blocks[-1]["number"])
        logs = await self._rpc.logs(self._addresses, first, last) if self._addresses else []
        logs_by_block: dict[int, list[Any]] = defaultdict(list)
        for log in logs:
            logs_by_block[int(log["blockNumber"])].append(log)
        return SourcePoll(batches=[self._batch(block, logs_by_block.get(int(block["number"]), []))
                                   for block in blocks])

    def commit(self, batch: BlockBatch) -> None:
        self.history.record(batch.block.number, batch.block.hash)
        self._store.save_checkpoint(SOURCE_NAME, self._chain_id, batch.block.number, batch.block.hash)
        self._last = (batch.block.number, batch.block.hash)

    async def _walk_back(self, new_block: Any) -> Reorg:
        """Follows the new chain by parent hash until a block the daemon handled: the common ancestor. Every
        handled block above it was orphaned. Gives up (exhausted) when the recorded history ends first."""
        assert self._last is not None
        checkpoint = self._last
        oldest = self.history.oldest()
        if oldest is not None and oldest.number < checkpoint[0]:
            # A chain that does not even hold the oldest recorded block would be walked back block by block
            # through the whole history: one read tells it is deeper than that.
            canonical = await self._rpc.block(oldest.number)
            if _hex(canonical["hash"]) != oldest.hash:
                return self._exhausted(oldest, checkpoint)
        child = new_block
        while True:
            number, parent = int(child["number"]) - 1, _hex(child["parentHash"])
            recorded = self.history.hash_at(number)
            if recorded is None:
                return self._exhausted(oldest or BlockRef(*checkpoint), checkpoint)
            if recorded == parent:
                ancestor = BlockRef(number, parent)
                reorg = Reorg(self._chain_id, ancestor, self.history.forget_after(number), exhausted=False)
                self._log.warning("reorganisation: walked back to the common ancestor; re-reading the new chain",
                                  ancestor=number, depth=reorg.depth, checkpoint=checkpoint[0],
                                  first_orphaned=reorg.orphaned[0].number if reorg.orphaned else None)
                return self.history.record_reorg(reorg)
            child = await self._rpc.block_by_hash(parent)

    def _exhausted(self, oldest: BlockRef, checkpoint: tuple[int, str]) -> Reorg:
        orphaned = self.history.forget_after(oldest.number - 1)
        self._log.critical("reorganisation DEEPER than the recorded history: the common ancestor is unknown; "
                           "re-reading from the oldest recorded block. Blocks before it may have been orphaned "
                           "unnoticed: check the chain and the node (is it still the same chain?)",
                           oldest_recorded=oldest.number, checkpoint=checkpoint[0], recorded=len(orphaned))
        return self.history.record_reorg(Reorg(self._chain_id, None, orphaned, exhausted=True))

    def _rewind_to(self, reorg: Reorg) -> int:
        """Moves the checkpoint back below the orphaned blocks; the first block to read again."""
        if reorg.ancestor is not None:
            self._last = (reorg.ancestor.number, reorg.ancestor.hash)
            self._store.save_checkpoint(SOURCE_NAME, self._chain_id, reorg.ancestor.number, reorg.ancestor.hash)
            return reorg.ancestor.number + 1
        first = reorg.orphaned[0].number if reorg.orphaned else (self._last[0] if self._last else 0)
        # No anchor to check the next block against: it is read as a fresh start.
        self._last = None
        self._start_block = first
        return first

    def _batch(self, block: Any, raw_logs: list[Any]) -> BlockBatch:
        observation = block_observation(block, self._chain_id)
        decoded = []
        for raw in sorted(raw_logs, key=lambda item: int(item["logIndex"])):
            log = self._decode(raw, observation)
            if log is not None:
                decoded.append(log)
        transactions = tuple(tx for tx in (decode_transaction(raw, self._chain_id, self._by_address)
                                           for raw in block.get("transactions", [])) if tx is not None)
        return BlockBatch(block=observation, logs=tuple(decoded), transactions=transactions)

    def _decode(self, raw: Any, block: BlockObservation) -> LogObservation | None:
        contract = self._by_address.get(str(raw["address"]).lower())
        if contract is None:
            return None
        try:
            decoded = contract.abi.decode_log([bytes(t) for t in raw["topics"]], bytes(raw["data"]))
        except ValueError as exc:
            # Not dropped silently: a contract whose events no longer fit its ABI (an upgrade?) needs a human.
            self._log.warning("a log of a watched contract does not fit its ABI; skipped", contract=contract.name,
                              tx_hash=_hex(raw["transactionHash"]), log_index=int(raw["logIndex"]),
                              error=str(exc))
            return None
        if decoded is None:
            return None
        event, args = decoded
        return LogObservation(
            chain_id=self._chain_id,
            block_number=block.number,
            block_hash=block.hash,
            transaction_hash=HexBytes(raw["transactionHash"]).to_0x_hex(),
            log_index=int(raw["logIndex"]),
            contract=contract.name,
            address=contract.address,
            event=event.name,
            args=frozen_mapping(args),
        )


def block_observation(block: Any, chain_id: int) -> BlockObservation:
    """A block header from the node as a frozen observation."""
    return BlockObservation(
        chain_id=chain_id,
        number=int(block["number"]),
        hash=_hex(block["hash"]),
        parent_hash=_hex(block["parentHash"]),
        timestamp=int(block["timestamp"]),
        base_fee=int(block["baseFeePerGas"]) if block.get("baseFeePerGas") is not None else None,
    )


def decode_transaction(raw: Any, chain_id: int,
                       watched: Mapping[str, WatchedContract]) -> TransactionObservation | None:
    """A transaction object (mined or pending) as an observation, when it is sent to a watched contract.
    `watched` is keyed by lower-case address (not by the contracts' names)."""
    to = raw.get("to")
    contract = watched.get(str(to).lower()) if to else None
    if contract is None:
        return None
    data = bytes(HexBytes(raw.get("input", b"")))
    decoded = contract.abi.decode_call(data) if len(data) >= 4 else None
    block_number = raw.get("blockNumber")
    priority = raw.get("maxPriorityFeePerGas", raw.get("gasPrice"))
    return TransactionObservation(
        chain_id=chain_id,
        hash=_hex(raw["hash"]),
        block_number=int(block_number) if block_number is not None else None,
        sender=checksum(raw["from"]),
        to=contract.address,
        contract=contract.name,
        value=int(raw.get("value", 0)),
        input=data,
        function=decoded[0].signature if decoded else None,
        args=frozen_mapping(decoded[1] if decoded else {}),
        max_priority_fee=int(priority) if priority is not None else None,
    )


def _hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()


def _linked_prefix(blocks: list[Any]) -> list[Any]:
    """The leading blocks each of which is the parent of the next."""
    for index in range(1, len(blocks)):
        if _hex(blocks[index]["parentHash"]) != _hex(blocks[index - 1]["hash"]):
            return blocks[:index]
    return blocks
