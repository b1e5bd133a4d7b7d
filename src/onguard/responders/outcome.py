"""What a mined response achieved, read from the chain: where it landed against every harmful transaction (the
threats it raced, the incident's evidence, and later transactions of the same senders to the watched contracts)
in its block and the blocks before it. A pause behind the drain is `contained`, never a success story."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.incidents.store import Outcome

MAX_SCAN_BLOCKS = 64   # blocks read back from the pause for the senders' later transactions
_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_TX_KEYS = ("tx_hash", "threat_tx", "transactions")
_LOSS_KEYS = ("net_outflow", "value", "outflow")   # the evidence's measure of the harm, where it has one


@dataclass(frozen=True, slots=True)
class Landing:
    block: int
    index: int


@dataclass(frozen=True, slots=True)
class HarmfulTx:
    tx_hash: str
    block: int
    index: int
    succeeded: bool


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    outcome: Outcome
    detail: Mapping[str, Any]


def evidence_transactions(evidence: Mapping[str, Any]) -> set[str]:
    """Every transaction hash the evidence names (calls, events, windows, the pending threat)."""
    found: set[str] = set()

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and key in _TX_KEYS and _TX_HASH.match(value):
            found.add(value.lower())

    walk(evidence, None)
    return found


def classify(pause: Landing, harmful: Iterable[HarmfulTx], *, evidence: Mapping[str, Any], path: str,
             tripped_at: int, orphaned: bool) -> OutcomeRecord:
    """The outcome of a pause mined at `pause`. On the block path the trip itself proves harm landed at or before
    `tripped_at`, even when the evidence names no transaction."""
    harmful = sorted(harmful, key=lambda h: (h.block, h.index))
    before = [h for h in harmful if h.succeeded and (h.block, h.index) < (pause.block, pause.index)]
    after = [h for h in harmful if (h.block, h.index) > (pause.block, pause.index)]
    unnamed_harm = path == "block" and not harmful and tripped_at < pause.block
    landed = Outcome.CONTAINED if before or unnamed_harm else Outcome.STOPPED_BEFORE_ATTACK
    detail: dict[str, Any] = {"landed": str(landed), "pause": f"block {pause.block} position {pause.index}",
                              "harm_before": [h.tx_hash for h in before],
                              "after_pause": [h.tx_hash for h in after],
                              "after_pause_reverted": sum(not h.succeeded for h in after)}
    if unnamed_harm:
        detail["harm_before_note"] = (f"the policy tripped on block {tripped_at} before the pause; its evidence "
                                      "names no transaction on the canonical chain")
    if landed == Outcome.CONTAINED:
        loss = next((evidence[k] for k in _LOSS_KEYS if k in evidence), None)
        if loss is not None:
            detail["loss"] = loss
    return OutcomeRecord(outcome=Outcome.ORPHANED_RESENT if orphaned else landed, detail=detail)


async def harmful_transactions(rpc: Rpc, watched: Collection[str], seeds: Iterable[str],
                               pause: Landing) -> list[HarmfulTx]:
    """The seed transactions as mined, and every transaction from their senders to a watched contract from the
    first seed's block up to the pause's block (at most MAX_SCAN_BLOCKS back)."""
    found: dict[str, HarmfulTx] = {}
    senders: set[str] = set()
    first = pause.block
    for tx_hash in seeds:
        receipt = await rpc.receipt(tx_hash)
        if receipt is None:
            continue  # still pending or dropped: nothing landed
        harm = _harm(receipt)
        found[harm.tx_hash] = harm
        senders.add(str(receipt["from"]).lower())
        first = min(first, harm.block)
    if not senders:
        return list(found.values())
    addresses = {a.lower() for a in watched}
    for number in range(max(first, pause.block - MAX_SCAN_BLOCKS), pause.block + 1):
        block = await rpc.block(number, full_transactions=True)
        for tx in block["transactions"]:
            tx_hash = HexBytes(tx["hash"]).to_0x_hex().lower()
            if (tx_hash not in found and str(tx["from"]).lower() in senders
                    and str(tx.get("to") or "").lower() in addresses):
                receipt = await rpc.receipt(tx_hash)
                if receipt is not None:
                    found[tx_hash] = _harm(receipt)
    return list(found.values())


def _harm(receipt: Any) -> HarmfulTx:
    return HarmfulTx(tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex().lower(),
                     block=int(receipt["blockNumber"]), index=int(receipt["transactionIndex"]),
                     succeeded=receipt["status"] == 1)
