"""The fork source of a replay: JSON-RPC to the node it forks, and the transactions it takes from it by hash with
the blocks rebuilt around them (every transaction of a block between the fork block and theirs, and in theirs the
ones before them, as `cast run` replays a block up to its transaction), each sent again as it was mined."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from eth_utils import to_checksum_address

from onguard.errors import InputError, ReplayFailed
from onguard.replay.scenario import TX_HASH, Scenario, ScenarioError, Step
from onguard.chain.transport import redacted_url

PROBE_TIMEOUT = 5.0        # seconds a fork source gets to answer before the scenario fails

MAX_REBUILT_BLOCKS = 64    # blocks of the fork source rebuilt between the fork block and a transaction by hash
REPLAYABLE_TYPES = (0, 1, 2, 4)  # legacy, access list, EIP-1559, EIP-7702 (blobs cannot be re-sent by a node)


@dataclass(frozen=True, slots=True)
class OriginalTx:
    """A transaction of the fork source, to be sent again as it was: from its original sender (impersonated), with
    its target, input, value, gas limit and fee fields (gas price, or the EIP-1559 caps), access list and
    authorisations."""

    hash: str
    sender: str
    block: int
    position: int
    request: Mapping[str, Any]   # the eth_sendTransaction parameters


@dataclass(frozen=True, slots=True)
class OriginalBlock:
    """A block of the fork source, rebuilt on the replay's chain with its timestamp and base fee: every transaction
    of a block between the fork block and the scenario's, and in a block of the scenario's, the ones up to its last
    transaction by hash (those after it are not part of the attack, as `cast run` stops at its transaction)."""

    number: int
    timestamp: int
    base_fee: int | None
    txs: tuple[OriginalTx, ...]


@dataclass(frozen=True, slots=True)
class Originals:
    """The transactions by hash of a scenario and the blocks rebuilt around them, by attack-block offset (0: the
    block after the fork block)."""

    by_hash: Mapping[str, OriginalTx] = field(default_factory=dict)
    blocks: Mapping[int, OriginalBlock] = field(default_factory=dict)
    fork_block: int = 0

    def offset(self, tx_hash: str) -> int:
        return self.by_hash[tx_hash].block - self.fork_block - 1

    def placed(self, scenario: Scenario) -> Scenario:
        """The scenario with each transaction by hash in the attack block of its original block."""
        if not self.by_hash:
            return scenario
        return replace(scenario, attack=tuple(replace(s, block=self.offset(s.tx_hash)) if s.tx_hash else s
                                              for s in scenario.attack))

    def plan(self, offset: int, steps: list[Step]) -> list[Step | OriginalTx]:
        """What is sent for one attack block, in order: the rebuilt block's transactions (the scenario's own by
        hash among them, at their original positions), then the block's other steps."""
        block = self.blocks.get(offset)
        if block is None:
            return list(steps)
        by_hash = {s.tx_hash: s for s in steps if s.tx_hash is not None}
        return [by_hash.get(tx.hash, tx) for tx in block.txs] + [s for s in steps if s.tx_hash is None]


def fetch_originals(scenario: Scenario) -> Originals:
    steps = [s for s in scenario.attack if s.tx_hash is not None]
    if not steps:
        return Originals()
    url, fork_block = scenario.fork.rpc_url, scenario.fork.block
    assert url is not None and fork_block is not None  # the scenario reader refuses tx steps without them
    # A one-shot replay's steps are its --tx options; a file's are fields of the file.
    one_shot = steps[0].field.startswith("--")
    file = None if one_shot else str(scenario.path)
    found: dict[str, OriginalTx] = {}
    for step in steps:
        raw = json_rpc(url, "eth_getTransactionByHash", [step.tx_hash])
        if raw is None or raw.get("blockNumber") is None:
            raise ScenarioError(f"transaction {step.tx_hash} is not mined on {url}", file=file,
                                field="--tx" if one_shot else f"{step.field}.tx",
                                hint="copy the hash from the chain the fork source serves (a pending or dropped "
                                     "one cannot be replayed)")
        tx = _original(raw, file, "--tx" if one_shot else f"{step.field}.tx")
        if tx.block <= fork_block:
            raise ScenarioError(f"transaction {step.tx_hash} is in block {tx.block}, not after the fork block "
                                f"{fork_block} (its effects are already in the fork's state)", file=file,
                                field="--block" if one_shot else "fork.block",
                                hint=f"fork at block {tx.block - 1} (the state it started from) or earlier")
        if tx.block - fork_block > MAX_REBUILT_BLOCKS:
            raise ScenarioError(f"transaction {step.tx_hash} is {tx.block - fork_block} blocks after the fork block "
                                f"{fork_block}: at most {MAX_REBUILT_BLOCKS} blocks are rebuilt", file=file,
                                field="--block" if one_shot else "fork.block",
                                hint=f"fork at block {tx.block - 1} (the state it started from)")
        found[tx.hash] = tx
    last = max(t.block for t in found.values())
    blocks = {}
    for number in range(fork_block + 1, last + 1):
        raw_block = json_rpc(url, "eth_getBlockByNumber", [hex(number), True])
        ours = [found[h].position for h in found if found[h].block == number]
        up_to = max(ours) if ours else len(raw_block["transactions"])
        txs = tuple(found.get(raw["hash"].lower()) or _original(raw, file, "--tx" if one_shot else "fork.block")
                    for raw in raw_block["transactions"] if int(raw["transactionIndex"], 16) <= up_to)
        base_fee = raw_block.get("baseFeePerGas")
        blocks[number - fork_block - 1] = OriginalBlock(number=number, timestamp=int(raw_block["timestamp"], 16),
                                                        base_fee=int(base_fee, 16) if base_fee else None, txs=txs)
    return Originals(by_hash=MappingProxyType(found), blocks=MappingProxyType(blocks), fork_block=fork_block)


def transaction_block(url: str, tx_hash: str) -> int:
    """The block a transaction of the fork source was mined in."""
    if not TX_HASH.match(tx_hash):
        raise InputError(f"{tx_hash!r} is not a transaction hash", field="--tx", hint="0x and 64 hex digits")
    raw = json_rpc(url, "eth_getTransactionByHash", [tx_hash])
    if raw is None or raw.get("blockNumber") is None:
        raise InputError(f"transaction {tx_hash} is not mined on {url}", field="--tx",
                         hint="copy the hash from the chain the fork source serves")
    return int(raw["blockNumber"], 16)


def _original(raw: Mapping[str, Any], file: str | None, where: str) -> OriginalTx:
    """A transaction as the node gave it, as the parameters that send it again unchanged."""
    kind = int(raw.get("type") or "0x0", 16)
    if kind not in REPLAYABLE_TYPES:
        raise ScenarioError(f"transaction {raw['hash']} (block {int(raw['blockNumber'], 16)}) is of type {kind}, "
                            "which a node cannot re-send", file=file, field=where,
                            hint="fork at its block (blob transactions and other chain-specific types are not "
                                 "replayed)")
    request: dict[str, Any] = {"from": to_checksum_address(raw["from"]), "data": raw["input"], "value": raw["value"],
                               "gas": raw["gas"]}
    if raw.get("to"):
        request["to"] = to_checksum_address(raw["to"])
    if kind in (0, 1):
        request["gasPrice"] = raw["gasPrice"]
    else:
        request["maxFeePerGas"] = raw["maxFeePerGas"]
        request["maxPriorityFeePerGas"] = raw["maxPriorityFeePerGas"]
    if kind != 0 and raw.get("accessList"):
        request["accessList"] = raw["accessList"]
    if kind == 4:
        request["authorizationList"] = raw["authorizationList"]
    return OriginalTx(hash=raw["hash"].lower(), sender=request["from"], block=int(raw["blockNumber"], 16),
                      position=int(raw["transactionIndex"], 16), request=MappingProxyType(request))


def json_rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReplayFailed(f"the fork source {redacted_url(url)} is unreachable ({reason})",
                           hint="check fork.rpc_url (and that the node serves historical state at fork.block), "
                                "or replay from a state file (fork.state_file) without any network") from None
    if "error" in answer:
        raise ReplayFailed(f"the fork source {redacted_url(url)} refused {method}: {answer['error']}")
    return answer.get("result")
