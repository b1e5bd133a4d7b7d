"""Triage of pending transactions: decides in microseconds which ones may matter and in what order they are
simulated, so that a flood of junk cannot bury an attack behind it.

Every pending transaction is put in a lane, best first:

* ``SUSPECT``: its sender or its target was seen in an earlier trip;
* ``DIRECT``: sent to a watched contract;
* ``MENTIONS``: its calldata or access list mentions a watched address (an exploit contract is usually given the
  addresses it attacks);
* ``FRESH``: sent to a contract created by a pending transaction seen recently (an exploit deployed just now);
* ``CALL``: any other contract call (an exploit contract with the addresses built in still needs simulating).

Plain value transfers to an unwatched address and contract creations are not simulated (nothing there to judge:
a transfer runs no code, and eth_simulateV1 on Anvil cannot run a constructor; a creation marks its contract
FRESH instead).

Within the queue, a transaction is judged before any other of a more crowded shape (its target and selector)
then by lane, then by when it was seen: a flood is of one or a few shapes, so ten thousand junk deposits to the
watched vault sink behind the one redeem that is new. Each transaction has a deadline counted from when it was
seen (queue time included); one popped after its deadline is not simulated but counted as missed and left to
the block path, which sees it if it is mined.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

import rlp
from eth_utils import keccak

from onguard.sources.mempool import RecentHashes

FRESH_MEMORY = 10_000     # contracts created by pending transactions, remembered as fresh
SUSPECT_MEMORY = 10_000   # senders and targets of tripping transactions, remembered as suspects


class Lane(IntEnum):
    """Why a pending transaction may matter; a lower lane is judged first."""

    SUSPECT = 0
    DIRECT = 1
    MENTIONS = 2
    FRESH = 3
    CALL = 4


@dataclass(slots=True)
class PendingCounters:
    """What became of the pending transactions, for logs and metrics (monotonic counts since start)."""

    seen: int = 0          # handed to triage
    ignored: int = 0       # nothing to simulate (value transfers, creations, or no simulate policy)
    queued: int = 0        # placed in the simulation queue
    judged: int = 0        # judged within their deadline (call policies, simulations)
    missed: int = 0        # deadline passed (in the queue or while simulating): left to the block path
    failed: int = 0        # the simulation failed (node error): left to the block path

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class Triage:
    """Puts a pending transaction (normalised as web3 does: HexBytes input, checksummed addresses) in a lane, or
    None when there is nothing to simulate. Learns suspects from trips and fresh contracts from creations."""

    def __init__(self, watched: Iterable[str]) -> None:
        self._watched = frozenset(address.lower() for address in watched)
        # One pass over the calldata for every watched address at once (a regex alternation), not one scan per
        # address: with 100 watched contracts, 84 µs -> 0.8 µs a call (164 bytes of calldata).
        watched_bytes = [bytes.fromhex(address[2:]) for address in self._watched]
        self._mentions = re.compile(b"|".join(re.escape(a) for a in watched_bytes)) if watched_bytes else None
        self._suspects = RecentHashes(SUSPECT_MEMORY)
        self._fresh = RecentHashes(FRESH_MEMORY)

    def lane(self, raw: Mapping[str, Any]) -> Lane | None:
        to = raw.get("to")
        if not to:
            self._remember_creation(raw)
            return None
        target = to.lower()
        sender = str(raw.get("from", "")).lower()
        if target in self._suspects or sender in self._suspects:
            return Lane.SUSPECT
        if target in self._watched:
            return Lane.DIRECT
        data = raw.get("input") or b""
        if len(data) < 4:
            return None
        if self._mentions_watched(data, raw.get("accessList")):
            return Lane.MENTIONS
        if target in self._fresh:
            return Lane.FRESH
        return Lane.CALL

    def suspect(self, *addresses: str | None) -> None:
        """A trip: later transactions from or to these addresses are judged first."""
        for address in addresses:
            if address:
                self._suspects.add(address.lower())

    def _mentions_watched(self, data: bytes, access_list: Any) -> bool:
        if self._mentions is not None and self._mentions.search(data):
            return True
        return any(str(entry.get("address", "")).lower() in self._watched for entry in access_list or ())

    def _remember_creation(self, raw: Mapping[str, Any]) -> None:
        sender, nonce = raw.get("from"), raw.get("nonce")
        if isinstance(sender, str) and isinstance(nonce, int):
            created = keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:]
            self._fresh.add("0x" + created.hex())


def shape(raw: Mapping[str, Any]) -> tuple[str, bytes]:
    """What a flood repeats: the target and the selector."""
    return str(raw.get("to") or "").lower(), bytes((raw.get("input") or b"")[:4])


Item = TypeVar("Item")


@dataclass(order=True, slots=True)
class _Entry(Generic[Item]):
    crowding: int
    lane: int
    seen_at: float
    seq: int
    deadline: float = field(compare=False)
    shape: tuple[str, bytes] = field(compare=False)
    item: Item = field(compare=False)


class PendingQueue(Generic[Item]):
    """The pending transactions waiting for a simulation, least crowded shape first, then by lane, then oldest
    first; each with a deadline counted from when it was seen (perf_counter). `on_missed` hears of each item
    dropped for its deadline."""

    def __init__(self, budget: float, counters: PendingCounters,
                 on_missed: Callable[[Item], None] | None = None) -> None:
        self._budget = budget
        self._counters = counters
        self._on_missed = on_missed
        self._heap: list[_Entry[Item]] = []
        self._crowds: dict[tuple[str, bytes], int] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: Item, raw: Mapping[str, Any], lane: Lane, seen_at: float) -> None:
        key = shape(raw)
        crowding = self._crowds.get(key, 0)
        self._crowds[key] = crowding + 1
        self._seq += 1
        heapq.heappush(self._heap, _Entry(crowding, int(lane), seen_at, self._seq, seen_at + self._budget, key,
                                          item))
        self._counters.queued += 1

    @property
    def novel_waiting(self) -> bool:
        """A transaction that is the first of its shape is waiting (the heap keeps it on top)."""
        return bool(self._heap) and self._heap[0].crowding == 0

    def waiting_before(self, seen_at: float) -> int:
        """How many transactions seen before `seen_at` are still waiting (those an attack overtook)."""
        return sum(1 for entry in self._heap if entry.seen_at < seen_at)

    def pop(self, limit: int = 1, now: float | None = None, novel_only: bool = False) -> list[Item]:
        """Up to `limit` items still within their deadline, best first; the expired ones met on the way are
        dropped and counted as missed. A batch is only of crowded shapes: the first of its shape goes alone (a
        batch is answered when its slowest simulation is, and the first of a shape is what an attack looks
        like). `novel_only`: only such a first, or nothing."""
        now = time.perf_counter() if now is None else now
        taken: list[Item] = []
        while self._heap and len(taken) < limit:
            novel = self._heap[0].crowding == 0
            if (novel_only and not novel) or (taken and novel):
                break
            entry = heapq.heappop(self._heap)
            self._crowds[entry.shape] -= 1
            if self._crowds[entry.shape] == 0:
                del self._crowds[entry.shape]
            if entry.deadline <= now:
                self._counters.missed += 1
                if self._on_missed is not None:
                    self._on_missed(entry.item)
                continue
            taken.append(entry.item)
            if entry.crowding == 0:
                break
        return taken
