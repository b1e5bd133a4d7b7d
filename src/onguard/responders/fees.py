"""The fee strategy of a response: outbid the threatening transaction so the pause is ordered first (on the block
path: the richest transaction pending to the watched contracts), bump a pause that is not mined, and never pay
past the configured ceiling."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from onguard.config import ResponseSettings


@dataclass(frozen=True, slots=True)
class Threat:
    """The pending transaction a response must get ahead of."""

    tx_hash: str
    effective_tip: int   # what it pays the block builder per gas, at the current base fee
    max_fee: int         # its fee cap (gas price for legacy transactions)
    seen_at: float       # perf_counter when it arrived

    @classmethod
    def of(cls, tx_hash: str, raw: Mapping[str, Any], base_fee: int, seen_at: float) -> Threat:
        cap = raw.get("maxFeePerGas") if raw.get("maxFeePerGas") is not None else raw.get("gasPrice", 0)
        return cls(tx_hash=tx_hash, effective_tip=effective_tip(raw, base_fee), max_fee=int(cap or 0),
                   seen_at=seen_at)


@dataclass(frozen=True, slots=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def effective_tip(raw: Mapping[str, Any], base_fee: int) -> int:
    """A transaction's tip per gas at `base_fee`: min(priority, max fee - base) for EIP-1559, else gas price - base."""
    if raw.get("maxPriorityFeePerGas") is not None:
        return max(0, min(int(raw["maxPriorityFeePerGas"]), int(raw["maxFeePerGas"]) - base_fee))
    return max(0, int(raw.get("gasPrice", 0)) - base_fee)


def initial_fees(settings: ResponseSettings, base_fee: int, threat: Threat | None,
                 min_tip: int | None = None) -> Fees:
    """The first fees of a response: at least `min_tip` (default: the configured priority fee), outbidding
    `threat` when there is one."""
    tip = settings.priority_fee if min_tip is None else max(settings.priority_fee, min_tip)
    cap = 2 * base_fee
    if threat is not None:
        tip = max(tip, int(threat.effective_tip * settings.outbid_factor) + settings.outbid_margin)
        # Some orderings (Anvil's among them) rank by fee cap rather than effective tip: outbid the cap too.
        # It costs nothing where the effective tip decides, since the price paid is base fee + tip.
        cap = max(cap, int(threat.max_fee * settings.outbid_factor) + settings.outbid_margin - tip)
    return _capped(settings, cap, tip)


def outbid(settings: ResponseSettings, current: Fees, base_fee: int, threat: Threat) -> Fees | None:
    """Higher fees when `threat` pays more than the pause in flight; None when the pause already outbids it."""
    wanted = initial_fees(settings, base_fee, threat)
    if wanted.max_priority_fee_per_gas <= current.max_priority_fee_per_gas:
        return None
    return _at_least_replacement(settings, current, wanted)


def bumped(settings: ResponseSettings, current: Fees) -> Fees | None:
    """The next replacement of a pause that is not mined; None when the ceiling is already reached."""
    if current.max_fee_per_gas >= settings.max_fee_per_gas:
        return None
    return _at_least_replacement(settings, current, current)


def _at_least_replacement(settings: ResponseSettings, current: Fees, wanted: Fees) -> Fees:
    # A node accepts a same-nonce replacement only if both fees rise by its minimum step (10% on geth/anvil).
    factor = settings.bump_factor
    tip = max(wanted.max_priority_fee_per_gas, _ceil(current.max_priority_fee_per_gas * factor))
    cap = max(wanted.max_fee_per_gas, _ceil(current.max_fee_per_gas * factor))
    cap = min(cap, settings.max_fee_per_gas)
    return Fees(max_fee_per_gas=cap, max_priority_fee_per_gas=min(tip, cap))


def _capped(settings: ResponseSettings, headroom: int, tip: int) -> Fees:
    """Fee cap = headroom over the tip (at least twice the base fee, so a rising base fee does not strand it)."""
    ceiling = settings.max_fee_per_gas
    tip = min(tip, ceiling)
    return Fees(max_fee_per_gas=min(headroom + tip, ceiling), max_priority_fee_per_gas=tip)


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


class PendingTips:
    """The pending transactions to the watched contracts (fed by the mempool source), so a pause decided on a
    mined block is priced above whatever may be the drain's next slice. Forgets what is mined or older than the
    horizon."""

    def __init__(self, horizon: float = 60.0) -> None:
        self._horizon = horizon
        self._pending: dict[str, tuple[Threat, float]] = {}   # hash → (its fees, when added: monotonic)

    def add(self, threat: Threat) -> None:
        self._pending[threat.tx_hash.lower()] = (threat, time.monotonic())

    def forget(self, tx_hashes: Iterable[str]) -> None:
        for tx_hash in tx_hashes:
            self._pending.pop(tx_hash.lower(), None)

    def highest(self) -> Threat | None:
        """The pending transaction paying the most (by effective tip, then fee cap), or None."""
        horizon = time.monotonic() - self._horizon
        self._pending = {h: entry for h, entry in self._pending.items() if entry[1] >= horizon}
        threats = [threat for threat, _ in self._pending.values()]
        return max(threats, key=lambda t: (t.effective_tip, t.max_fee), default=None)
