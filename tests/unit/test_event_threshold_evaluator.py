"""policies/event_threshold.py: the aggregate of a watched event over a block window, against exact thresholds.

Coroutines are run with asyncio.run; chain state comes from a fake StateView that records what it was asked.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path
from typing import Any

from onguard.observations import BlockBatch, BlockObservation, LogObservation, frozen_mapping
from onguard.policies.event_threshold import EventThresholdEvaluator, EventThresholdPolicy
from onguard.policies.model import Finding, PolicyCommon, Severity, Verdict

CHAIN_ID = 31337
T0 = 1_700_000_000
TOKEN = 10**18

COMMON = PolicyCommon(id="vault-drain", description="drain", severity=Severity.CRITICAL, response=("pause_vault",),
                      cooldown=3600.0, enabled=True, dry_run=False, file=Path("vault-drain.toml"))


class FakeView:
    """A StateView answering from a dict keyed by (contract, signature, block); records every read."""

    def __init__(self, values: dict[tuple[str, str, int], int] | None = None) -> None:
        self.values = values or {}
        self.reads: list[tuple[str, str, int]] = []

    async def read(self, contract: str, signature: str, block: int) -> Any:
        self.reads.append((contract, signature, block))
        return self.values[(contract, signature, block)]


def policy(*, aggregate: str = "sum", field: str | None = "assets", window: int = 5, above: int | None = None,
           share: Fraction | None = None, share_of: tuple[str, str] | None = None) -> EventThresholdPolicy:
    return EventThresholdPolicy(common=COMMON, contract="vault", event="Withdraw",
                                aggregate=aggregate,  # type: ignore[arg-type]
                                field=field, window_blocks=window, above=above, share=share, share_of=share_of)


def block_hash(number: int) -> str:
    return "0x" + f"{number:064x}"


def withdraw(block: int, log_index: int, assets: int, *, event: str = "Withdraw",
             contract: str = "vault") -> LogObservation:
    return LogObservation(chain_id=CHAIN_ID, block_number=block, block_hash=block_hash(block),
                          transaction_hash="0x" + f"{block:04x}{log_index:060x}", log_index=log_index,
                          contract=contract, address="0x" + "ab" * 20, event=event,
                          args=frozen_mapping({"assets": assets, "shares": assets, "owner": "0x" + "c3" * 20}))


def batch(number: int, *logs: LogObservation) -> BlockBatch:
    block = BlockObservation(chain_id=CHAIN_ID, number=number, hash=block_hash(number),
                             parent_hash=block_hash(number - 1), timestamp=T0 + 12 * number)
    return BlockBatch(block=block, logs=logs)


def evaluate(evaluator: EventThresholdEvaluator, block: BlockBatch, view: FakeView | None = None) -> Finding | None:
    return asyncio.run(evaluator.evaluate(block, view or FakeView()))


# ---- sum against an absolute threshold ----


def test_sum_trips_only_when_strictly_above_the_threshold() -> None:
    evaluator = EventThresholdEvaluator(policy(above=100 * TOKEN))

    assert evaluate(evaluator, batch(1, withdraw(1, 0, 60 * TOKEN))) is None
    assert evaluate(evaluator, batch(2, withdraw(2, 0, 40 * TOKEN))) is None  # exactly at the threshold
    finding = evaluate(evaluator, batch(3, withdraw(3, 0, 1)))  # one base unit above

    assert finding is not None
    assert finding.verdict is Verdict.THRESHOLD_EXCEEDED
    assert finding.policy is COMMON
    assert finding.evidence["value"] == 100 * TOKEN + 1
    assert finding.evidence["thresholds"] == {"absolute": 100 * TOKEN}
    assert finding.evidence["measured"] == "sum(Withdraw.assets)"
    assert finding.evidence["reference"] is None
    assert finding.evidence["window"] == {"from_block": 1, "to_block": 3}
    assert finding.block_number == 3
    assert finding.block_time == T0 + 36
    assert len(finding.evidence["transactions"]) == 3
    assert finding.evidence["transactions"] == sorted(finding.evidence["transactions"])
    assert str(100 * TOKEN + 1) in finding.summary


def test_sum_is_exact_for_uint256_sized_values() -> None:
    limit = 2**255
    evaluator = EventThresholdEvaluator(policy(above=limit))
    assert evaluate(evaluator, batch(1, withdraw(1, 0, 2**254), withdraw(1, 1, 2**254))) is None  # == 2**255
    finding = evaluate(evaluator, batch(2, withdraw(2, 0, 1)))
    assert finding is not None and finding.evidence["value"] == 2**255 + 1


def test_events_older_than_the_window_drop_out() -> None:
    evaluator = EventThresholdEvaluator(policy(window=3, above=100))

    assert evaluate(evaluator, batch(1, withdraw(1, 0, 80))) is None
    tripped = evaluate(evaluator, batch(3, withdraw(3, 0, 30)))  # blocks 1..3: 110
    assert tripped is not None and tripped.evidence["value"] == 110

    assert evaluate(evaluator, batch(4)) is None  # blocks 2..4: block 1's 80 has left the window
    assert evaluate(evaluator, batch(5, withdraw(5, 0, 70))) is None  # blocks 3..5: 30 + 70 = 100, not above
    assert evaluate(evaluator, batch(6, withdraw(6, 0, 1))) is None  # blocks 4..6: 70 + 1


def test_window_of_one_block_only_sees_the_current_block() -> None:
    evaluator = EventThresholdEvaluator(policy(window=1, above=100))
    assert evaluate(evaluator, batch(1, withdraw(1, 0, 100))) is None
    assert evaluate(evaluator, batch(2, withdraw(2, 0, 100))) is None
    assert evaluate(evaluator, batch(3, withdraw(3, 0, 60), withdraw(3, 1, 41))) is not None


def test_duplicate_observations_are_counted_once() -> None:
    evaluator = EventThresholdEvaluator(policy(above=100))
    log = withdraw(1, 0, 60)

    assert evaluate(evaluator, batch(1, log, log)) is None  # twice in one batch
    assert evaluate(evaluator, batch(1, log)) is None  # and the same block delivered again
    finding = evaluate(evaluator, batch(2, withdraw(2, 0, 41)))
    assert finding is not None and finding.evidence["value"] == 101


def test_other_events_and_contracts_are_ignored() -> None:
    evaluator = EventThresholdEvaluator(policy(above=100))
    noise = batch(1, withdraw(1, 0, 500, event="Deposit"), withdraw(1, 1, 500, contract="breaker"))
    assert evaluate(evaluator, noise) is None
    finding = evaluate(evaluator, batch(2, withdraw(2, 0, 101)))
    assert finding is not None and finding.evidence["value"] == 101


def test_no_matching_event_reads_no_state() -> None:
    view = FakeView()
    evaluator = EventThresholdEvaluator(policy(share=Fraction(1, 4), share_of=("vault", "totalAssets()")))
    assert evaluate(evaluator, batch(1, withdraw(1, 0, 5, event="Deposit")), view) is None
    assert view.reads == []


# ---- count and max ----


def test_count_aggregate_counts_events() -> None:
    evaluator = EventThresholdEvaluator(policy(aggregate="count", field=None, above=2))
    assert evaluate(evaluator, batch(1, withdraw(1, 0, 1), withdraw(1, 1, 1))) is None  # 2, not above 2
    finding = evaluate(evaluator, batch(2, withdraw(2, 0, 10**30)))
    assert finding is not None
    assert finding.evidence["value"] == 3
    assert finding.evidence["measured"] == "count(Withdraw)"


def test_max_aggregate_takes_the_largest_event() -> None:
    evaluator = EventThresholdEvaluator(policy(aggregate="max", above=50))
    assert evaluate(evaluator, batch(1, withdraw(1, 0, 30), withdraw(1, 1, 50), withdraw(1, 2, 40))) is None
    finding = evaluate(evaluator, batch(2, withdraw(2, 0, 51)))
    assert finding is not None
    assert finding.evidence["value"] == 51
    assert finding.evidence["measured"] == "max(Withdraw.assets)"


# ---- share of a state value ----


def test_share_threshold_reads_the_reference_at_the_block_before_the_first_event() -> None:
    total = ("vault", "totalAssets()")
    view = FakeView({("vault", "totalAssets()", 9): 1000 * TOKEN,
                     ("vault", "totalAssets()", 10): 800 * TOKEN})
    evaluator = EventThresholdEvaluator(policy(window=5, share=Fraction(1, 4), share_of=total))

    assert evaluate(evaluator, batch(10, withdraw(10, 0, 200 * TOKEN)), view) is None
    assert evaluate(evaluator, batch(11, withdraw(11, 0, 50 * TOKEN)), view) is None  # 250: exactly 25%
    finding = evaluate(evaluator, batch(12, withdraw(12, 0, 1)), view)

    assert finding is not None
    assert view.reads == [("vault", "totalAssets()", 9)] * 3  # not the current block: before the window
    assert finding.evidence["reference"] == 1000 * TOKEN
    assert finding.evidence["thresholds"] == {"share": 250 * TOKEN}
    assert finding.evidence["value"] == 250 * TOKEN + 1
    assert "25%" in finding.summary and "totalAssets()" in finding.summary


def test_share_reference_moves_with_the_start_of_the_window() -> None:
    view = FakeView({("vault", "totalAssets()", 9): 1000, ("vault", "totalAssets()", 11): 100})
    evaluator = EventThresholdEvaluator(policy(window=3, share=Fraction(1, 2), share_of=("vault", "totalAssets()")))

    assert evaluate(evaluator, batch(10, withdraw(10, 0, 100)), view) is None  # 100 <= 500
    finding = evaluate(evaluator, batch(12, withdraw(12, 0, 60)), view)  # window 10..12, still read at 9
    assert finding is None
    finding = evaluate(evaluator, batch(13), view)  # window 11..13: only the 60 at block 12, read at 11

    assert finding is not None
    assert view.reads[-1] == ("vault", "totalAssets()", 11)
    assert finding.evidence["reference"] == 100
    assert finding.evidence["thresholds"] == {"share": 50}
    assert finding.evidence["window"] == {"from_block": 12, "to_block": 13}


def test_absolute_and_share_thresholds_report_only_those_exceeded() -> None:
    view = FakeView({("vault", "totalAssets()", 0): 1000})
    evaluator = EventThresholdEvaluator(policy(above=400, share=Fraction(1, 4), share_of=("vault", "totalAssets()")))
    finding = evaluate(evaluator, batch(1, withdraw(1, 0, 300)), view)
    assert finding is not None
    assert finding.evidence["thresholds"] == {"share": 250}  # 300 is above 25% of 1000 but not above 400
    finding = evaluate(evaluator, batch(2, withdraw(2, 0, 200)), view)
    assert finding is not None
    assert finding.evidence["thresholds"] == {"absolute": 400, "share": 250}
    assert "above 250" in finding.summary  # the lowest limit crossed


# ---- reorganisations ----


def test_forget_from_drops_orphaned_events_and_lets_them_count_again() -> None:
    evaluator = EventThresholdEvaluator(policy(window=10, above=100))
    orphan = withdraw(3, 0, 60)
    assert evaluate(evaluator, batch(2, withdraw(2, 0, 30))) is None
    assert evaluate(evaluator, batch(3, orphan)) is None  # 90

    evaluator.forget_from(3)  # block 3 was reorganised away

    assert evaluate(evaluator, batch(3, withdraw(3, 5, 20))) is None  # 30 + 20: the orphan's 60 is gone
    finding = evaluate(evaluator, batch(4, orphan))  # the same log re-included later: seen as new
    assert finding is not None and finding.evidence["value"] == 110
