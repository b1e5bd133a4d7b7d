"""responders/feeladder.py: the fee levels of the ladder, which rung a threat gets, and when the ladder is signed
again (nonce, base fee, the action's transaction), stored before it can be used."""

from __future__ import annotations

import asyncio
from fractions import Fraction

from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from hypothesis import given
from hypothesis import strategies as st

from onguard.config import ResponseSettings
from onguard.responders.feeladder import TIP_STEP, FeeLadders, SignedLadder, rung_fees, rung_hashes, sign_ladder
from onguard.responders.fees import Fees, Threat, initial_fees

GWEI = 10**9
SETTINGS = ResponseSettings(receipt_timeout=60.0, max_fee_per_gas=500 * GWEI, priority_fee=2 * GWEI,
                            outbid_factor=Fraction(5, 4), outbid_margin=GWEI, bump_after=3.0,
                            bump_factor=Fraction(5, 4), endpoints=(), public_fallback_after=None)
GUARDIAN = Account.from_key("0x" + "11" * 32)
MODULE = "0x" + "22" * 20
CALL = bytes.fromhex("8456cb59")
CHAIN_ID = 31337


def ladder(nonce: int = 7, base_fee: int = 30 * GWEI) -> SignedLadder:
    return asyncio.run(sign_ladder(GUARDIAN, CHAIN_ID, SETTINGS, action="pause", nonce=nonce, base_fee=base_fee,
                                   to=MODULE, data=CALL, gas_limit=200_000))


def threat(tip: int, max_fee: int) -> Threat:
    return Threat(tx_hash="0x" + "33" * 32, effective_tip=tip, max_fee=max_fee, seen_at=0.0)


def test_the_cheapest_rung_is_the_price_without_a_threat_and_the_dearest_the_ceiling() -> None:
    levels = rung_fees(SETTINGS, 30 * GWEI)
    assert levels[0] == initial_fees(SETTINGS, 30 * GWEI, None)
    assert levels[-1].max_priority_fee_per_gas == SETTINGS.max_fee_per_gas
    assert levels == sorted(levels, key=lambda f: (f.max_priority_fee_per_gas, f.max_fee_per_gas))
    assert all(f.max_priority_fee_per_gas <= f.max_fee_per_gas <= SETTINGS.max_fee_per_gas for f in levels)
    assert 10 <= len(levels) <= 40  # about ten tip levels, a few fee caps each: cheap to sign every head


def test_each_rung_is_the_signed_transaction_at_its_fees_and_nonce() -> None:
    signed = ladder(nonce=7)
    for rung in signed.rungs:
        tx = TypedTransaction.from_bytes(HexBytes(rung.raw)).as_dict()
        assert Account.recover_transaction(rung.raw) == GUARDIAN.address
        assert (tx["nonce"], tx["to"], bytes(tx["data"]), tx["gas"]) == (7, bytes.fromhex(MODULE[2:]), CALL,
                                                                         200_000)
        assert (tx["maxPriorityFeePerGas"], tx["maxFeePerGas"]) == (rung.fees.max_priority_fee_per_gas,
                                                                    rung.fees.max_fee_per_gas)
    assert len({rung.tx_hash for rung in signed.rungs}) == len(signed.rungs)


def test_no_threat_gets_the_bottom_rung_and_a_usual_attack_a_rung_just_above_it() -> None:
    signed = ladder(base_fee=30 * GWEI)
    assert signed.lowest_fitting(initial_fees(SETTINGS, 30 * GWEI, None)) == signed.rungs[0]
    # web3's defaults for an attacker: 1.5 gwei tip, twice the base fee above it.
    wanted = initial_fees(SETTINGS, 30 * GWEI, threat(int(1.5 * GWEI), 60 * GWEI + int(1.5 * GWEI)))
    rung = signed.lowest_fitting(wanted)
    assert rung is not None and rung.outbids(wanted)
    assert rung.fees.max_priority_fee_per_gas < 2 * wanted.max_priority_fee_per_gas


def test_a_threat_with_a_fee_cap_far_above_its_tip_gets_no_rung_it_is_signed_fresh() -> None:
    signed = ladder(base_fee=10 * GWEI)  # rungs' fee caps reach 16 base fees above their tips: 160 gwei here
    wanted = initial_fees(SETTINGS, 10 * GWEI, threat(2 * GWEI, 300 * GWEI))
    assert signed.lowest_fitting(wanted) is None


@given(tip=st.integers(0, 600 * GWEI), headroom=st.integers(0, 80), base_gwei=st.integers(0, 200))
def test_the_rung_taken_outbids_the_threat_and_is_the_cheapest_that_does(tip: int, headroom: int,
                                                                         base_gwei: int) -> None:
    base_fee = base_gwei * GWEI
    levels = rung_fees(SETTINGS, base_fee)
    wanted = initial_fees(SETTINGS, base_fee, threat(tip, tip + headroom * base_fee))
    fitting = [f for f in levels if f.max_priority_fee_per_gas >= wanted.max_priority_fee_per_gas
               and f.max_fee_per_gas >= wanted.max_fee_per_gas
               and f.max_priority_fee_per_gas <= TIP_STEP * wanted.max_priority_fee_per_gas]
    picked = SignedLadder(action="pause", nonce=0, base_fee=base_fee, to=MODULE, data=CALL, gas_limit=1,
                          rungs=tuple(_unsigned(f) for f in levels)).lowest_fitting(wanted)
    assert (picked.fees if picked else None) == (fitting[0] if fitting else None)
    if headroom <= 16:  # a threat within the ladder's fee caps always finds a rung
        assert picked is not None


def _unsigned(fees: Fees):
    from onguard.responders.feeladder import Rung

    return Rung(fees=fees, tx_hash=f"0x{fees.max_priority_fee_per_gas:x}{fees.max_fee_per_gas:x}", raw=b"")


class Saved:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict]]] = []

    def __call__(self, action: str, ladders: list[dict]) -> None:
        self.calls.append((action, ladders))


def refresh(ladders: FeeLadders, *, nonce: int, base_fee: int, data: bytes = CALL, wanted: bool = True) -> None:
    asyncio.run(ladders.refresh("pause", nonce=nonce, base_fee=base_fee, to=MODULE, data=data, gas_limit=200_000,
                                still_wanted=lambda: wanted))


def test_the_ladder_is_signed_again_when_the_base_fee_or_the_nonce_moves_and_only_then() -> None:
    saved = Saved()
    ladders = FeeLadders(GUARDIAN, CHAIN_ID, SETTINGS, save=saved)
    refresh(ladders, nonce=7, base_fee=30 * GWEI)
    first = ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=200_000)
    assert first is not None and len(saved.calls) == 1
    refresh(ladders, nonce=7, base_fee=30 * GWEI)
    assert ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=200_000) is first
    assert len(saved.calls) == 1  # nothing moved: not signed again

    refresh(ladders, nonce=7, base_fee=33 * GWEI)
    by_base_fee = ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=200_000)
    assert by_base_fee is not None and by_base_fee.base_fee == 33 * GWEI
    assert by_base_fee.rungs[0].fees.max_fee_per_gas > first.rungs[0].fees.max_fee_per_gas

    refresh(ladders, nonce=8, base_fee=33 * GWEI)
    assert ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=200_000) is None
    by_nonce = ladders.for_trip("pause", nonce=8, to=MODULE, data=CALL, gas_limit=200_000)
    assert by_nonce is not None and by_nonce.nonce == 8
    assert len(saved.calls) == 3


def test_what_is_stored_holds_the_ladder_in_use_and_the_one_it_replaced_every_rung_recognisable() -> None:
    saved = Saved()
    ladders = FeeLadders(GUARDIAN, CHAIN_ID, SETTINGS, save=saved)
    refresh(ladders, nonce=7, base_fee=30 * GWEI)
    old = ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=200_000)
    refresh(ladders, nonce=7, base_fee=31 * GWEI)
    new = ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=200_000)
    action, stored = saved.calls[-1]
    assert action == "pause" and [s["base_fee"] for s in stored] == [31 * GWEI, 30 * GWEI]
    known = rung_hashes(stored)
    for rung in (*old.rungs, *new.rungs):  # recognised by its hash, and signed again into the very same bytes
        assert known[rung.tx_hash.lower()].nonce == 7
        assert known[rung.tx_hash.lower()].signed(GUARDIAN, CHAIN_ID) == rung
    assert known[new.rungs[0].tx_hash.lower()].signed(Account.create(), CHAIN_ID) is None  # another key's is not


def test_a_ladder_for_another_transaction_or_signed_while_the_inputs_moved_is_not_used() -> None:
    saved = Saved()
    ladders = FeeLadders(GUARDIAN, CHAIN_ID, SETTINGS, save=saved)
    refresh(ladders, nonce=7, base_fee=30 * GWEI)
    assert ladders.for_trip("pause", nonce=7, to=MODULE, data=b"\x01", gas_limit=200_000) is None
    assert ladders.for_trip("pause", nonce=7, to=MODULE, data=CALL, gas_limit=300_000) is None
    refresh(ladders, nonce=8, base_fee=30 * GWEI, wanted=False)  # the nonce moved again while it was signed
    assert ladders.for_trip("pause", nonce=8, to=MODULE, data=CALL, gas_limit=200_000) is None
    assert len(saved.calls) == 1  # never stored, never used
