"""The pre-signed ladder: which nonces are covered, and what a routine transaction at a nonce leaves."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account

from onguard.store.safetxs import TxStatus
from onguard.safe.ladder import build_ladders
from onguard.safe.tx import SafeTxData, approved_hash, sign

OWNERS = [Account.create() for _ in range(3)]
SAFE = "0x" + "11" * 20


@dataclass(frozen=True)
class Record:
    action: str
    status: str
    tx: SafeTxData
    signatures: tuple


def record(nonce: int, signers=OWNERS[:2], action="pause", status=TxStatus.PENDING) -> Record:
    tx = SafeTxData.call(SAFE, 1, "0x" + "22" * 20, b"\x84\x56\xcb\x59", nonce)
    return Record(action, status, tx, tuple(sign(tx, o) for o in signers))


def ladder(records, live=5, approved=None):
    return build_ladders(["pause"], records, live, 2, [o.address for o in OWNERS], approved)["pause"]


def test_a_ladder_of_three_survives_two_routine_transactions():
    rungs = ladder([record(5), record(6), record(7)])
    assert rungs.protected and rungs.depth == 3 and rungs.top == 7
    assert rungs.remaining_after(5) == 2 and rungs.remaining_after(6) == 1 and rungs.remaining_after(7) == 0
    assert "remain (2)" in rungs.effect_of_executing(5)
    assert "only nonce 7 stays pre-signed" in rungs.effect_of_executing(6)
    assert "AFTER IT NO PRE-SIGNED PAUSE REMAINS for nonce 8" in rungs.effect_of_executing(7)


def test_below_threshold_spent_and_executed_records_are_not_rungs():
    rungs = ladder([record(4), record(5, signers=OWNERS[:1]), record(6, status=TxStatus.EXECUTED)])
    assert not rungs.protected and rungs.depth == 0 and rungs.top is None
    assert rungs.spent == {4} and rungs.partial == {5} and rungs.rungs == frozenset()
    assert "not executable now anyway" in rungs.effect_of_executing(5)
    assert rungs.effect_of_executing(9) is None


def test_a_gap_ends_the_ladder_and_signatures_from_former_owners_do_not_count():
    stranger = Account.create()
    rungs = ladder([record(5), record(6, signers=[OWNERS[0], stranger]), record(7)])
    assert rungs.depth == 1 and rungs.rungs == {5, 7} and rungs.remaining_after(5) == 0


def test_an_approved_hash_counts_only_when_approved_on_chain():
    tx = SafeTxData.call(SAFE, 1, "0x" + "22" * 20, b"", 5)
    held = Record("pause", TxStatus.PENDING, tx, (sign(tx, OWNERS[0]), approved_hash(OWNERS[1].address)))
    assert ladder([held], approved=lambda owner, h: True).protected
    assert not ladder([held], approved=lambda owner, h: False).protected
    assert ladder([held]).protected  # offline: cannot be read, counted
