"""Recordings: the observations of a block range (blocks, decoded logs, transactions to watched contracts, the
state the policies read, and — recorded live — pending transactions to watched contracts), written to a
JSON-lines file that policies can later be judged against offline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onguard.chain.rpc import Rpc
from onguard.chain.view import BatchStateReader, ReadFailure
from onguard.config import Config
from onguard.errors import InputError
from onguard.incidents.store import IncidentStore
from onguard.observations import (
    BlockBatch,
    BlockObservation,
    LogObservation,
    TransactionObservation,
    frozen_mapping,
)
from onguard.policies.kinds.base import Policy, StateValues
from onguard.policies.reads import ReadSpec
from onguard.sources.blocks import BlockSource
from onguard.sources.mempool import MempoolSource, PendingTransaction

FORMAT = "onguard-recording/1"


@dataclass(frozen=True, slots=True)
class RecordedBlock:
    batch: BlockBatch
    reads: dict[str, Any]   # read key (address:calldata) → value, or {"failed": reason}

    def state_for(self, specs: Sequence[ReadSpec]) -> StateValues:
        """The recorded values of these reads; one that was not recorded is a failed read, never a guess."""
        state: dict[ReadSpec, Any] = {}
        for spec in specs:
            value = self.reads.get(read_key(spec))
            if value is None:
                state[spec] = ReadFailure(spec, "not in the recording (record with this policy loaded)")
            elif isinstance(value, dict) and "failed" in value:
                state[spec] = ReadFailure(spec, value["failed"])
            else:
                state[spec] = value
        return state


def read_key(spec: ReadSpec) -> str:
    field = "" if spec.path == (0,) else ":" + ".".join(map(str, spec.path))  # a named output or struct field
    return f"{spec.address.lower()}:{spec.calldata.hex()}{field}"


async def record(config: Config, policies: Sequence[Policy], first: int, last: int, out: Path,
                 progress: Any = None) -> int:
    """Writes blocks first..last with the reads every given policy makes; returns how many blocks. Blocks not
    mined yet are waited for; meanwhile, when the config's mempool source is on, the pending transactions sent to
    watched contracts are written too, each before the block that follows its arrival."""
    specs = sorted({spec for policy in policies for spec in policy.evaluator().reads}, key=read_key)
    rpc = Rpc.from_config(config)
    scratch = IncidentStore(":memory:")
    pending: list[PendingTransaction] = []
    stop = asyncio.Event()
    listening = None
    written = 0
    try:
        source = BlockSource(rpc, scratch, config.chain.chain_id, config.contracts, start_block=first,
                             max_block_range=config.chain.max_block_range, end_block=last)
        reader = BatchStateReader(rpc)
        if config.mempool.enabled and last > await rpc.head():
            mempool = MempoolSource(config.mempool.ws_url, config.chain.rpc_url, config.chain.chain_id,
                                    config.contracts)
            listening = asyncio.create_task(mempool.run(_collect(pending), stop))
        with out.open("w") as handle:
            handle.write(json.dumps({"format": FORMAT, "chain_id": config.chain.chain_id, "from_block": first,
                                     "to_block": last, "reads": {read_key(s): s.text for s in specs}}) + "\n")
            while source.last_committed is None or source.last_committed < last:
                batches = (await source.next_batches()).batches
                taken = _take(pending)
                for seen in taken:
                    handle.write(json.dumps(_pending_record(seen)) + "\n")
                if taken:
                    handle.flush()  # on disk as soon as seen: a recording cut short keeps what it saw pending
                for batch in batches:
                    values = await reader.read(specs, batch.block.number) if specs else {}
                    handle.write(json.dumps(_block_record(batch, values)) + "\n")
                    source.commit(batch)
                    written += 1
                    if progress is not None:
                        progress(written)
                if not batches:
                    await asyncio.sleep(config.chain.poll_interval)
    finally:
        stop.set()
        if listening is not None:
            await listening
        scratch.close()
        await rpc.close()
    return written


def _collect(into: list[PendingTransaction]) -> Any:
    async def on_pending(pending: PendingTransaction) -> None:
        if pending.observation is not None:  # only what the call policies can judge without a chain
            into.append(pending)
    return on_pending


def _take(pending: list[PendingTransaction]) -> list[PendingTransaction]:
    taken, pending[:] = list(pending), []
    return taken


def _pending_record(pending: PendingTransaction) -> dict[str, Any]:
    tx = pending.observation
    assert tx is not None
    return {"pending": {"hash": tx.hash, "from": tx.sender, "to": tx.to, "contract": tx.contract, "value": tx.value,
                        "input": "0x" + tx.input.hex(), "function": tx.function, "args": _plain(dict(tx.args)),
                        "max_priority_fee": tx.max_priority_fee}}


def load_recording(path: Path) -> tuple[dict[str, Any], list[RecordedBlock | TransactionObservation]]:
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
    except (OSError, IndexError, json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("not a recording", file=str(path),
                         hint="make one with `onguard replay --record FILE --from-block N`") from None
    if header.get("format") != FORMAT:
        raise InputError(f"unknown recording format {header.get('format')!r}", file=str(path),
                         hint=f"this onguard reads {FORMAT}")
    return header, [_recorded_item(json.loads(line)) for line in lines[1:] if line.strip()]


def _recorded_item(item: dict[str, Any]) -> RecordedBlock | TransactionObservation:
    if "pending" not in item:
        return _recorded_block(item)
    tx = item["pending"]
    return TransactionObservation(chain_id=0, hash=tx["hash"], block_number=None, sender=tx["from"], to=tx["to"],
                                  contract=tx["contract"], value=tx["value"], input=bytes.fromhex(tx["input"][2:]),
                                  function=tx["function"], args=frozen_mapping(_tuples(tx["args"])),
                                  max_priority_fee=tx["max_priority_fee"])


def _block_record(batch: BlockBatch, values: StateValues) -> dict[str, Any]:
    block = batch.block
    return {
        "block": {"number": block.number, "hash": block.hash, "parent_hash": block.parent_hash,
                  "timestamp": block.timestamp, "base_fee": block.base_fee},
        "logs": [{"tx": log.transaction_hash, "index": log.log_index, "contract": log.contract,
                  "address": log.address, "event": log.event, "args": _plain(dict(log.args))} for log in batch.logs],
        "transactions": [{"hash": tx.hash, "from": tx.sender, "to": tx.to, "contract": tx.contract,
                          "value": tx.value, "input": "0x" + tx.input.hex(), "function": tx.function,
                          "args": _plain(dict(tx.args))} for tx in batch.transactions],
        "reads": {read_key(spec): ({"failed": value.reason} if isinstance(value, ReadFailure) else _plain(value))
                  for spec, value in values.items()},
    }


def _recorded_block(item: dict[str, Any]) -> RecordedBlock:
    raw = item["block"]
    block = BlockObservation(chain_id=0, number=raw["number"], hash=raw["hash"], parent_hash=raw["parent_hash"],
                             timestamp=raw["timestamp"], base_fee=raw["base_fee"])
    logs = tuple(LogObservation(chain_id=0, block_number=block.number, block_hash=block.hash,
                                transaction_hash=log["tx"], log_index=log["index"], contract=log["contract"],
                                address=log["address"], event=log["event"], args=frozen_mapping(_tuples(log["args"])))
                 for log in item["logs"])
    transactions = tuple(TransactionObservation(chain_id=0, hash=tx["hash"], block_number=block.number,
                                                sender=tx["from"], to=tx["to"], contract=tx["contract"],
                                                value=tx["value"], input=bytes.fromhex(tx["input"][2:]),
                                                function=tx["function"], args=frozen_mapping(_tuples(tx["args"])))
                         for tx in item["transactions"])
    return RecordedBlock(BlockBatch(block=block, logs=logs, transactions=transactions), item["reads"])


def _plain(value: Any) -> Any:
    """JSON keeps Python ints exact (uint256 included); tuples become lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
