"""Is the guardian seeing the right chain, and all of it? Probes every read and simulation endpoint (chain id,
genesis hash and head in one batch each; a probe's answer is what brings a failed endpoint back) and judges:
blind (no read endpoint answers), a head that stopped advancing, a head behind the last handled block, another
chain (chain id or genesis hash changed), endpoints that disagree. The answer is a frozen ChainHealth for the
daemon's logs and heartbeat and for `onguard status`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from onguard.chain.transport import EndpointFault, EndpointHealth, Role, Transport
from onguard.store.blocklog import BlockLog
from onguard.store.database import WRITE_REFUSED

HEAD_GAP = 5  # blocks between the read endpoints' heads beyond which they are said to disagree


@dataclass(frozen=True, slots=True)
class ChainHealth:
    """One look at the chain. `head` is the highest head on the right chain; `lag` how many blocks the last
    handled block (`checkpoint`) trails it. Each problem field is None/False when all is well."""

    chain_id: int
    checked_at: float                 # Unix seconds
    head: int | None
    checkpoint: int | None
    head_unchanged_for: float | None  # seconds since the head was last seen to advance (None: first look)
    stalled: bool                     # ... for longer than the stall threshold
    blind: bool                       # no read endpoint answered
    wrong_chain: str | None           # why the node is not the chain this guardian watches
    disagreement: str | None          # how the read endpoints disagree
    endpoints: tuple[EndpointHealth, ...]
    genesis: str | None = None        # the genesis hash the endpoints showed (when they agree with the record)

    @property
    def lag(self) -> int | None:
        if self.head is None or self.checkpoint is None:
            return None
        return self.head - self.checkpoint

    @property
    def behind_checkpoint(self) -> bool:
        return self.head is not None and self.checkpoint is not None and self.head < self.checkpoint

    def problems(self, max_lag: int | None = None) -> tuple[str, ...]:
        """One line per thing a human must look at (max_lag: the lag budget, when lag counts)."""
        found: list[str] = []
        if self.blind:
            failing = "; ".join(f"{e.label}: {e.last_error}" for e in self.endpoints if e.role == Role.READ)
            found.append(f"BLIND: no read endpoint answers ({failing})")
        if self.wrong_chain:
            found.append(f"WRONG CHAIN: {self.wrong_chain}")
        if self.behind_checkpoint:
            found.append(f"HEAD BEHIND CHECKPOINT: the head {self.head} is below the last handled block "
                         f"{self.checkpoint} (a lagging node, or another chain)")
        if self.stalled:
            found.append(f"STALLED: the head has not advanced for {self.head_unchanged_for:.0f}s (at {self.head})")
        if self.disagreement:
            found.append(f"ENDPOINTS DISAGREE: {self.disagreement}")
        lag = self.lag
        if max_lag is not None and lag is not None and lag > max_lag:
            found.append(f"BEHIND: the last handled block {self.checkpoint} is {lag} blocks behind the head "
                         f"{self.head} (budget chain.max_lag = {max_lag})")
        return tuple(found)


@dataclass(frozen=True, slots=True)
class _Probe:
    label: str
    chain_id: int
    genesis: str
    head: int
    head_hash: str


class ChainWatch:
    """Keeps what it needs between looks (the highest head and when it last moved) to tell a stall."""

    def __init__(self, transport: Transport, history: BlockLog, chain_id: int, *, stall_after: float,
                 record_genesis: bool = True) -> None:
        self._record_genesis = record_genesis  # the daemon records; `status` only compares
        self._transport = transport
        self._history = history
        self._chain_id = chain_id
        self._stall_after = stall_after
        self._best_head: int | None = None
        self._genesis: str | None = None  # as the state database last said
        self._advanced_at: float | None = None

    async def check(self, checkpoint: int | None) -> ChainHealth:
        labels = self._transport.labels(Role.READ) + self._transport.labels(Role.SIMULATE)
        results = await asyncio.gather(*(self._probe(label) for label in labels), return_exceptions=True)
        for label, result in zip(labels, results, strict=True):
            if isinstance(result, ValueError):
                self._transport.demote(label, f"unreadable answer: {result}")
            elif isinstance(result, BaseException) and not isinstance(result, EndpointFault):
                raise result
        probes = [r for r in results if isinstance(r, _Probe)]
        wrong = self._wrong_chain(probes)
        # Simulation endpoints are demoted like read ones, but the chain's head and blindness are the reads'.
        reads = set(self._transport.labels(Role.READ))
        right = [p for p in probes if p.label not in wrong and p.label in reads]
        for probe in probes:
            self._transport.note_head(probe.label, probe.head)
        for label, reason in wrong.items():
            self._transport.demote(label, reason)  # reads go elsewhere while it serves another chain
        head = max((p.head for p in right), default=None)
        for probe in (p for p in probes if p.label not in wrong):
            if head is not None and head - probe.head > HEAD_GAP:
                self._transport.demote(probe.label, f"lagging: head {probe.head}, {head - probe.head} blocks "
                                                    "behind the other endpoints")
        now = time.monotonic()
        if head is not None and (self._best_head is None or head > self._best_head):
            self._best_head, self._advanced_at = head, now
        unchanged = None if self._advanced_at is None else now - self._advanced_at
        return ChainHealth(
            chain_id=self._chain_id, checked_at=time.time(), head=head, checkpoint=checkpoint,
            head_unchanged_for=unchanged, stalled=unchanged is not None and unchanged > self._stall_after,
            blind=not any(p.label in reads for p in probes),
            wrong_chain="; ".join(f"{label}: {why}" for label, why in wrong.items()) or None,
            disagreement=await self._disagreement(right), endpoints=self._transport.health(),
            genesis=right[0].genesis if right else None)

    async def _probe(self, label: str) -> _Probe:
        answers = await self._transport.batch_on(label, [
            ("eth_chainId", []), ("eth_getBlockByNumber", ["0x0", False]), ("eth_getBlockByNumber", ["latest", False])])
        if not isinstance(answers, list):
            raise ValueError(f"{label} refused a batch")
        try:
            chain_id, genesis, latest = (_result(a) for a in answers)
            return _Probe(label=label, chain_id=int(chain_id, 16), genesis=_hex(genesis["hash"]),
                          head=int(latest["number"], 16), head_hash=_hex(latest["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            # A node answering nonsense is as useless as a silent one: ValueError demotes it.
            raise ValueError(f"{type(exc).__name__}: {exc}"[:200]) from exc

    def _wrong_chain(self, probes: Sequence[_Probe]) -> dict[str, str]:
        """The endpoints on another chain, with the reason. The first genesis seen is recorded for later."""
        try:
            self._genesis = self._history.genesis() or self._genesis
        except WRITE_REFUSED:
            pass  # the state database does not answer (an outage): the genesis last read here is compared
        if self._genesis is None and self._record_genesis:
            right_id = [p for p in probes if p.chain_id == self._chain_id]
            if right_id:
                self._history.record_genesis(right_id[0].genesis)
                self._genesis = right_id[0].genesis
        recorded = self._genesis
        wrong: dict[str, str] = {}
        for probe in probes:
            if probe.chain_id != self._chain_id:
                wrong[probe.label] = f"chain id {probe.chain_id}, the config says {self._chain_id}"
            elif recorded is not None and probe.genesis != recorded:
                wrong[probe.label] = (f"genesis block {probe.genesis[:18]}…, the state database recorded "
                                      f"{recorded[:18]}… (a fresh or different chain)")
        return wrong

    async def _disagreement(self, probes: Sequence[_Probe]) -> str | None:
        if len(probes) < 2:
            return None
        low, high = min(probes, key=lambda p: p.head), max(probes, key=lambda p: p.head)
        if high.head - low.head > HEAD_GAP:
            return f"heads {high.head - low.head} blocks apart ({low.label} at {low.head}, {high.label} at {high.head})"
        # The same height on every endpoint must be the same block.
        hashes = {low.label: low.head_hash}
        for probe in probes:
            if probe.label == low.label:
                continue
            if probe.head == low.head:
                hashes[probe.label] = probe.head_hash
                continue
            try:
                answers = await self._transport.batch_on(probe.label,
                                                         [("eth_getBlockByNumber", [hex(low.head), False])])
                block = _result(answers[0]) if isinstance(answers, list) else None
            except (EndpointFault, ValueError):
                continue
            if block is not None:
                hashes[probe.label] = _hex(block["hash"])
        if len(set(hashes.values())) > 1:
            listed = ", ".join(f"{label} {value[:12]}…" for label, value in hashes.items())
            return f"different blocks at height {low.head}: {listed}"
        return None


def _result(answer: Any) -> Any:
    if not isinstance(answer, dict) or answer.get("result") is None:
        raise ValueError(f"no result: {answer!r}"[:200])
    return answer["result"]


def _hex(value: Any) -> str:
    return HexBytes(value).to_0x_hex()
