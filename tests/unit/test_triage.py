"""Triage of pending transactions: the lanes, the order a flood cannot bury an attack in, deadlines counted from
when a transaction was seen."""

from __future__ import annotations

from hexbytes import HexBytes
from onguard.sources.triage import Lane, PendingCounters, PendingQueue, Triage

VAULT = "0x" + "aa" * 20
TOKEN = "0x" + "bb" * 20
STRANGER = "0x" + "cc" * 20
EXPLOIT = "0x" + "dd" * 20
ALICE = "0x" + "11" * 20
MALLORY = "0x" + "22" * 20
DEPOSIT = HexBytes("0xb6b55f25" + "00" * 32)
REDEEM = HexBytes("0xba087652" + "00" * 96)


def tx(to: str | None, data: bytes = b"", sender: str = ALICE, **extra) -> dict:
    return {"to": to, "from": sender, "input": HexBytes(data), "nonce": 0, **extra}


def test_lanes_of_pending_transactions() -> None:
    triage = Triage([VAULT.upper().replace("0X", "0x"), TOKEN])
    assert triage.lane(tx(VAULT, DEPOSIT)) is Lane.DIRECT
    assert triage.lane(tx(EXPLOIT, HexBytes("0x12345678") + bytes(12) + bytes.fromhex(VAULT[2:]))) is Lane.MENTIONS
    assert triage.lane(tx(EXPLOIT, HexBytes("0x12345678"),
                          accessList=[{"address": TOKEN, "storageKeys": []}])) is Lane.MENTIONS
    assert triage.lane(tx(EXPLOIT, HexBytes("0x12345678"))) is Lane.CALL
    assert triage.lane(tx(STRANGER)) is None, "a plain value transfer to an unwatched address runs nothing"
    assert triage.lane(tx(STRANGER, b"\x01\x02")) is None


def test_calldata_mentioning_any_watched_address_is_found_whatever_its_bytes() -> None:
    """The calldata is searched for every watched address in one pass: addresses made of bytes a regular expression
    treats specially (. | * ( \\ ) are matched as bytes, and nothing is found when nothing is watched."""
    special = "0x" + "2e7c2a285c5b3f2b7b24" * 2
    triage = Triage([VAULT, special])
    call = HexBytes("0x12345678") + bytes(12)
    assert triage.lane(tx(EXPLOIT, call + bytes.fromhex(special[2:]))) is Lane.MENTIONS
    assert triage.lane(tx(EXPLOIT, call + bytes.fromhex(special[2:])[:-1] + b"\x00")) is Lane.CALL
    assert triage.lane(tx(EXPLOIT, call + bytes.fromhex("2e" * 20))) is Lane.CALL  # "." is no wildcard
    assert Triage([]).lane(tx(EXPLOIT, call + bytes.fromhex(VAULT[2:]))) is Lane.CALL


def test_a_creation_marks_its_contract_fresh() -> None:
    triage = Triage([VAULT])
    # the address a creation by 0x11…11 at nonce 0 deploys to: keccak(rlp([sender, nonce]))[12:]
    from eth_utils import keccak
    import rlp
    created = "0x" + keccak(rlp.encode([bytes.fromhex(ALICE[2:]), 0]))[12:].hex()
    assert triage.lane(tx(created, HexBytes("0x12345678"))) is Lane.CALL
    assert triage.lane(tx(None, HexBytes("0x6080"))) is None
    assert triage.lane(tx(created, HexBytes("0x12345678"))) is Lane.FRESH


def test_senders_and_targets_of_a_trip_are_suspects() -> None:
    triage = Triage([VAULT])
    triage.suspect(MALLORY, EXPLOIT)
    assert triage.lane(tx(STRANGER, HexBytes("0x12345678"), sender=MALLORY)) is Lane.SUSPECT
    assert triage.lane(tx(EXPLOIT, HexBytes("0x12345678"))) is Lane.SUSPECT
    assert triage.lane(tx(VAULT, DEPOSIT)) is Lane.DIRECT


def test_an_attack_in_a_flood_of_one_shape_is_judged_second() -> None:
    counters = PendingCounters()
    queue: PendingQueue[str] = PendingQueue(budget=10.0, counters=counters)
    for number in range(1000):
        queue.push(f"junk-{number}", tx(VAULT, DEPOSIT), Lane.DIRECT, seen_at=float(number) / 1000)
        if number == 600:
            queue.push("attack", tx(VAULT, REDEEM, sender=MALLORY), Lane.DIRECT, seen_at=0.6)
    assert [queue.pop(now=1.0) for _ in range(3)] == [["junk-0"], ["attack"], ["junk-1"]]
    assert counters.queued == 1001 and counters.missed == 0 and len(queue) == 998


def test_direct_calls_go_before_other_lanes_of_the_same_crowding() -> None:
    queue: PendingQueue[str] = PendingQueue(budget=10.0, counters=PendingCounters())
    queue.push("exploit-call", tx(EXPLOIT, HexBytes("0x12345678")), Lane.CALL, seen_at=0.0)
    queue.push("mentions", tx(STRANGER, HexBytes("0x12345678")), Lane.MENTIONS, seen_at=0.1)
    queue.push("direct", tx(VAULT, REDEEM), Lane.DIRECT, seen_at=0.2)
    queue.push("suspect", tx(TOKEN, REDEEM), Lane.SUSPECT, seen_at=0.3)
    assert [queue.pop(now=1.0) for _ in range(4)] == [["suspect"], ["direct"], ["mentions"], ["exploit-call"]]


def test_what_misses_its_deadline_is_dropped_and_counted() -> None:
    counters = PendingCounters()
    queue: PendingQueue[str] = PendingQueue(budget=0.5, counters=counters)
    queue.push("old", tx(VAULT, DEPOSIT), Lane.DIRECT, seen_at=0.0)
    queue.push("older-shape", tx(VAULT, REDEEM), Lane.DIRECT, seen_at=0.1)
    queue.push("fresh", tx(VAULT, DEPOSIT), Lane.DIRECT, seen_at=0.4)
    assert queue.pop(limit=5, now=0.65) == ["fresh"], "seen at 0.0 and 0.1 with half a second each: missed"
    assert counters.missed == 2 and len(queue) == 0
    assert counters.snapshot()["missed"] == 2 and counters.snapshot()["queued"] == 3


def test_a_batch_is_of_crowded_shapes_and_the_first_of_a_shape_goes_alone() -> None:
    queue: PendingQueue[str] = PendingQueue(budget=10.0, counters=PendingCounters())
    for number in range(5):
        queue.push(f"junk-{number}", tx(VAULT, DEPOSIT), Lane.DIRECT, seen_at=number / 10)
    queue.push("attack", tx(VAULT, REDEEM), Lane.DIRECT, seen_at=0.5)
    assert queue.pop(limit=8, now=1.0) == ["junk-0"]
    assert queue.pop(limit=8, now=1.0) == ["attack"]
    assert queue.pop(limit=3, now=1.0) == ["junk-1", "junk-2", "junk-3"]


def test_a_novel_only_pop_takes_the_first_of_a_shape_or_nothing() -> None:
    queue: PendingQueue[str] = PendingQueue(budget=10.0, counters=PendingCounters())
    for number in range(3):
        queue.push(f"junk-{number}", tx(VAULT, DEPOSIT), Lane.DIRECT, seen_at=number / 10)
    assert queue.novel_waiting
    assert queue.pop(novel_only=True, now=1.0) == ["junk-0"]
    assert not queue.novel_waiting and queue.pop(novel_only=True, now=1.0) == []
    queue.push("attack", tx(VAULT, REDEEM), Lane.DIRECT, seen_at=0.5)
    assert queue.novel_waiting and queue.pop(limit=8, novel_only=True, now=1.0) == ["attack"]
