"""The fee ladder: each action's transaction signed before any threat, at the guardian's next nonce, over a ladder
of fee levels priced at the current base fee; at a trip the lowest rung that outbids the threat is broadcast at
once (nothing left to sign); a pause is signed at the trip only when no rung fits (a threat whose fee cap is far
above its tip), or to replace one in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from onguard.config import ResponseSettings
from onguard.responders.fees import Fees, Threat, initial_fees

TIP_STEP = 2                  # each rung outbids a threat tipping twice the one below: at most ~2x the tip wanted
CAP_MULTIPLES = (2, 4, 16)    # the threats' fee caps a rung outbids: this many base fees above their tip
FIRST_TIP = 10**9             # wei: the smallest threat tip a rung above the floor is priced for


@dataclass(frozen=True, slots=True)
class Rung:
    """One signed transaction of the ladder."""

    fees: Fees
    tx_hash: str
    raw: bytes

    def outbids(self, wanted: Fees) -> bool:
        return (self.fees.max_priority_fee_per_gas >= wanted.max_priority_fee_per_gas
                and self.fees.max_fee_per_gas >= wanted.max_fee_per_gas)


@dataclass(frozen=True, slots=True)
class SignedLadder:
    """An action's transaction (`to`, `data`, `gas_limit`) signed at `nonce` over the fee levels of `base_fee`,
    cheapest first."""

    action: str
    nonce: int
    base_fee: int
    to: str
    data: bytes
    gas_limit: int
    rungs: tuple[Rung, ...]

    def lowest_fitting(self, wanted: Fees) -> Rung | None:
        """The cheapest rung paying at least `wanted` (tip first, then fee cap) without paying more than TIP_STEP
        times the tip wanted; None when none does (a threat with a fee cap far above its tip: signed fresh)."""
        return next((rung for rung in self.rungs if rung.outbids(wanted)
                     and rung.fees.max_priority_fee_per_gas <= TIP_STEP * wanted.max_priority_fee_per_gas), None)

    def signs(self, to: str, data: bytes, gas_limit: int) -> bool:
        """Whether the rungs are this transaction (a path that built something else makes them void)."""
        return (self.to, self.data, self.gas_limit) == (to, data, gas_limit)

    def to_json(self) -> dict[str, Any]:
        """What the store keeps, so a restart recognises a rung that was sent before it was recorded: the
        transaction once and each rung's fees and hash (signing is deterministic: a rung is signed again to be
        recorded, rather than every raw transaction stored at every head)."""
        return {"action": self.action, "nonce": self.nonce, "base_fee": self.base_fee, "to": self.to,
                "data": "0x" + self.data.hex(), "gas_limit": self.gas_limit,
                "rungs": [{"tx_hash": r.tx_hash, "max_fee_per_gas": r.fees.max_fee_per_gas,
                           "max_priority_fee_per_gas": r.fees.max_priority_fee_per_gas} for r in self.rungs]}


@dataclass(frozen=True, slots=True)
class StoredRung:
    """A rung as the store kept it: enough to recognise it on chain and sign it again to record it."""

    action: str
    nonce: int
    fees: Fees
    tx_hash: str
    to: str
    data: bytes
    gas_limit: int

    def signed(self, account: LocalAccount, chain_id: int) -> Rung | None:
        """The rung signed again (the same bytes: deterministic signatures); None if it is not the one kept."""
        rung = sign_rung(account, chain_id, self.fees, nonce=self.nonce, to=self.to, data=self.data,
                         gas_limit=self.gas_limit)
        return rung if rung.tx_hash.lower() == self.tx_hash.lower() else None


def stored_rungs(ladder: Mapping[str, Any]) -> list[StoredRung]:
    return [StoredRung(action=str(ladder["action"]), nonce=int(ladder["nonce"]), tx_hash=str(r["tx_hash"]),
                       fees=Fees(max_fee_per_gas=int(r["max_fee_per_gas"]),
                                 max_priority_fee_per_gas=int(r["max_priority_fee_per_gas"])),
                       to=str(ladder["to"]), data=bytes.fromhex(str(ladder["data"])[2:]),
                       gas_limit=int(ladder["gas_limit"])) for r in ladder["rungs"]]


def rung_fees(settings: ResponseSettings, base_fee: int) -> list[Fees]:
    """The ladder's fee levels at `base_fee`, cheapest first: each is what `initial_fees` asks against a threat at
    one level (no threat; then tips doubling from FIRST_TIP, each with fee caps CAP_MULTIPLES base fees above
    it), so a rung fits every threat at or below its level. Ends at the first level priced at the ceiling."""
    levels: set[tuple[int, int]] = {(initial_fees(settings, base_fee, None).max_priority_fee_per_gas,
                                     initial_fees(settings, base_fee, None).max_fee_per_gas)}
    tip = max(FIRST_TIP, settings.priority_fee)
    while True:
        for multiple in CAP_MULTIPLES:
            fees = initial_fees(settings, base_fee, _threat_at(tip, tip + multiple * base_fee))
            levels.add((fees.max_priority_fee_per_gas, fees.max_fee_per_gas))
        if fees.max_priority_fee_per_gas >= settings.max_fee_per_gas:
            break
        tip *= TIP_STEP
    return [Fees(max_priority_fee_per_gas=t, max_fee_per_gas=c) for t, c in sorted(levels)]


def _threat_at(tip: int, max_fee: int) -> Threat:
    return Threat(tx_hash="", effective_tip=tip, max_fee=max_fee, seen_at=0.0)


async def sign_ladder(account: LocalAccount, chain_id: int, settings: ResponseSettings, *, action: str, nonce: int,
                      base_fee: int, to: str, data: bytes, gas_limit: int) -> SignedLadder:
    """Signs every rung, letting the event loop run between two (a pending threat must not wait for a ladder)."""
    rungs = []
    for fees in rung_fees(settings, base_fee):
        rungs.append(sign_rung(account, chain_id, fees, nonce=nonce, to=to, data=data, gas_limit=gas_limit))
        await asyncio.sleep(0)
    return SignedLadder(action=action, nonce=nonce, base_fee=base_fee, to=to, data=data, gas_limit=gas_limit,
                        rungs=tuple(rungs))


def sign_rung(account: LocalAccount, chain_id: int, fees: Fees, *, nonce: int, to: str, data: bytes,
              gas_limit: int) -> Rung:
    signed = account.sign_transaction({
        "chainId": chain_id, "to": to, "data": data, "value": 0, "gas": gas_limit, "nonce": nonce, "type": 2,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas, "maxFeePerGas": fees.max_fee_per_gas})
    return Rung(fees=fees, tx_hash=HexBytes(signed.hash).to_0x_hex(), raw=bytes(signed.raw_transaction))


def rung_hashes(ladders: Sequence[Mapping[str, Any]]) -> dict[str, StoredRung]:
    """Every stored rung by its hash (lower case)."""
    return {rung.tx_hash.lower(): rung for ladder in ladders for rung in stored_rungs(ladder)}


class FeeLadders:
    """Each action's ladder, kept current off the hot path: signed again when the nonce, the base fee or the
    action's transaction changed, and handed to `save` (the store) before it can be used, with the one it replaces
    (a rung of either may have just been sent)."""

    def __init__(self, account: LocalAccount, chain_id: int, settings: ResponseSettings,
                 save: Callable[[str, list[dict[str, Any]]], None]) -> None:
        self._account = account
        self._chain_id = chain_id
        self._settings = settings
        self._save = save
        self._ladders: dict[str, SignedLadder] = {}

    def sizes(self) -> dict[str, int]:
        return {name: len(ladder.rungs) for name, ladder in self._ladders.items()}

    def forget(self, action: str) -> None:
        self._ladders.pop(action, None)

    async def refresh(self, action: str, *, nonce: int, base_fee: int, to: str, data: bytes, gas_limit: int,
                      still_wanted: Callable[[], bool]) -> None:
        """Signs `action`'s ladder again unless it already signs this at `nonce` and `base_fee`; dropped unsaved
        when `still_wanted()` says, once signed, that the inputs moved meanwhile."""
        ladder = self._ladders.get(action)
        if (ladder is not None and (ladder.nonce, ladder.base_fee) == (nonce, base_fee)
                and ladder.signs(to, data, gas_limit)):
            return
        fresh = await sign_ladder(self._account, self._chain_id, self._settings, action=action, nonce=nonce,
                                  base_fee=base_fee, to=to, data=data, gas_limit=gas_limit)
        if not still_wanted():
            return
        self._save(action, [fresh.to_json()] + ([ladder.to_json()] if ladder is not None else []))
        self._ladders[action] = fresh

    def for_trip(self, action: str, *, nonce: int, to: str, data: bytes, gas_limit: int) -> SignedLadder | None:
        """The action's ladder if it signs exactly this transaction at `nonce`."""
        ladder = self._ladders.get(action)
        if ladder is None or ladder.nonce != nonce or not ladder.signs(to, data, gas_limit):
            return None
        return ladder
