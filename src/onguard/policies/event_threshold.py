"""The event-threshold policy kind: an aggregate of a watched event's argument over a block window."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from onguard.chain.view import StateView
from onguard.observations import BlockBatch
from onguard.policies.model import Finding, PolicyCommon, Verdict

Aggregate = Literal["sum", "count", "max"]
AGGREGATES: tuple[str, ...] = ("sum", "count", "max")


@dataclass(frozen=True, slots=True)
class EventThresholdPolicy:
    common: PolicyCommon
    contract: str
    event: str
    aggregate: Aggregate
    field: str | None            # the event argument aggregated; None for count
    window_blocks: int
    above: int | None            # absolute threshold, exact uint256
    share: Fraction | None       # threshold as a share of a state value ...
    share_of: tuple[str, str] | None  # ... read from (contract, view) just before the window's first event


@dataclass(frozen=True, slots=True)
class _Entry:
    block_number: int
    observation_id: str
    transaction_hash: str
    value: int


class EventThresholdEvaluator:
    """Keeps the matching events of the last `window_blocks` blocks and checks their aggregate each block."""

    def __init__(self, policy: EventThresholdPolicy) -> None:
        self.policy = policy
        self._window: deque[_Entry] = deque()
        self._seen: set[str] = set()

    async def evaluate(self, batch: BlockBatch, view: StateView) -> Finding | None:
        self._take(batch)
        if not self._window:
            return None
        value = self._aggregate()
        thresholds: dict[str, int] = {}
        if self.policy.above is not None:
            thresholds["absolute"] = self.policy.above
        reference = None
        if self.policy.share is not None and self.policy.share_of is not None:
            contract, signature = self.policy.share_of
            reference_block = self._window[0].block_number - 1
            reference = int(await view.read(contract, signature, reference_block))
            thresholds["share"] = int(reference * self.policy.share)
        exceeded = {name: limit for name, limit in thresholds.items() if value > limit}
        if not exceeded:
            return None
        return self._finding(batch, value, exceeded, reference)

    def forget_from(self, block_number: int) -> None:
        """Drops what was seen at `block_number` and after: those blocks were reorganised away."""
        kept = [entry for entry in self._window if entry.block_number < block_number]
        for entry in self._window:
            if entry.block_number >= block_number:
                self._seen.discard(entry.observation_id)
        self._window = deque(kept)

    def _take(self, batch: BlockBatch) -> None:
        policy = self.policy
        for log in batch.logs:
            if log.contract != policy.contract or log.event != policy.event or log.id in self._seen:
                continue
            value = 1 if policy.field is None else int(log.args[policy.field])
            self._window.append(_Entry(log.block_number, log.id, log.transaction_hash, value))
            self._seen.add(log.id)
        oldest_kept = batch.block.number - policy.window_blocks + 1
        while self._window and self._window[0].block_number < oldest_kept:
            self._seen.discard(self._window.popleft().observation_id)

    def _aggregate(self) -> int:
        values = [entry.value for entry in self._window]
        if self.policy.aggregate == "sum":
            return sum(values)
        if self.policy.aggregate == "max":
            return max(values)
        return len(values)

    def _finding(self, batch: BlockBatch, value: int, exceeded: dict[str, int], reference: int | None) -> Finding:
        policy = self.policy
        block = batch.block.number
        measured = f"{policy.aggregate}({policy.event}.{policy.field})" if policy.field else f"count({policy.event})"
        limit = min(exceeded.values())
        summary = (f"{measured} over {policy.window_blocks} blocks on {policy.contract} is {value}, "
                   f"above {limit}")
        if "share" in exceeded and reference is not None:
            summary += f" ({float(policy.share or 0):.0%} of {policy.share_of[1] if policy.share_of else ''} "
            summary += f"= {reference} before the window)"
        evidence = {
            "measured": measured,
            "value": value,
            "thresholds": exceeded,
            "reference": reference,
            "window": {"from_block": self._window[0].block_number, "to_block": block},
            "transactions": sorted({entry.transaction_hash for entry in self._window}),
        }
        return Finding(policy=policy.common, verdict=Verdict.THRESHOLD_EXCEEDED, summary=summary,
                       block_number=block, block_time=batch.block.timestamp, evidence=evidence)
