"""Follows new blocks, fetches and decodes the watched contracts' logs, and resumes from a checkpoint."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.config import WatchedContract
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
REORG_REWIND = 12  # blocks re-read after a reorganisation is noticed


@dataclass(frozen=True, slots=True)
class SourcePoll:
    """What one poll found: new blocks in order, or (rewound_to set) that blocks from there on must be
    forgotten and will be read again."""

    batches: list[BlockBatch]
    rewound_to: int | None = None


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
        self._log = get_logger(component="block-source", chain_id=chain_id)

    @property
    def last_committed(self) -> int | None:
        return self._last[0] if self._last else None

    async def next_batches(self) -> SourcePoll:
        """Every block after the checkpoint up to the head (at most max_block_range of them), or a rewind
        when the chain under the checkpoint was reorganised."""
        head = await self._rpc.head()
        if self._end_block is not None:
            head = min(head, self._end_block)
        if self._last is None:
            first = head if self._start_block is None else self._start_block
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
            return SourcePoll(batches=[], rewound_to=self._rewind_after_reorg(first))
        blocks = _linked_prefix(blocks)  # a reorg during the fetch: keep what links up, read the rest next time
        last = int(blocks[-1]["number"])
        logs = await self._rpc.logs(self._addresses, first, last) if self._addresses else []
        logs_by_block: dict[int, list[Any]] = defaultdict(list)
        for log in logs:
            logs_by_block[int(log["blockNumber"])].append(log)
        return SourcePoll(batches=[self._batch(block, logs_by_block.get(int(block["number"]), []))
                                   for block in blocks])

    def commit(self, batch: BlockBatch) -> None:
        self._store.save_checkpoint(SOURCE_NAME, self._chain_id, batch.block.number, batch.block.hash)
        self._last = (batch.block.number, batch.block.hash)

    def _rewind_after_reorg(self, first: int) -> int:
        rewind_to = max(first - 1 - REORG_REWIND, 0)
        self._log.warning("reorganisation: the new block's parent is not the checkpointed block; re-reading",
                          block=first, checkpoint=self._last, rewind_to=rewind_to)
        # Forget the hash: the block at rewind_to is read again and becomes the new anchor.
        self._last = None
        self._start_block = rewind_to
        return rewind_to

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
        sender=to_checksum_address(raw["from"]),
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
