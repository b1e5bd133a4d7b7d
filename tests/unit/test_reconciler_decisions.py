"""responders/reconciler.py and responders/outcome.py: what the reconciler does for an action given the chain and
its campaigns, the incident status that follows, and how a mined pause is classified against the harm."""

from __future__ import annotations

from fractions import Fraction

from onguard.config import ResponseSettings
from onguard.incidents.store import IncidentStatus, Outcome, ResponseRecord, ResponseStatus
from onguard.responders.fees import PendingTips, Threat
from onguard.responders.outcome import HarmfulTx, Landing, classify, evidence_transactions
from onguard.responders.reconciler import Step, backoff, incident_status, next_step

SETTINGS = ResponseSettings(receipt_timeout=60.0, max_fee_per_gas=500 * 10**9, priority_fee=2 * 10**9,
                            outbid_factor=Fraction(5, 4), outbid_margin=10**9, bump_after=3.0,
                            bump_factor=Fraction(5, 4), endpoints=(), public_fallback_after=None,
                            retry_backoff=2.0, retry_backoff_max=30.0)
TX = [f"0x{n:064x}" for n in range(10)]


def record(action: str, status: ResponseStatus) -> ResponseRecord:
    return ResponseRecord(incident_id=1, action=action, status=status, tx_hash=None, block_number=None,
                          gas_used=None, error=None, updated_at="now")


# ---- the reconciler's decision per action ----


def test_an_action_that_does_not_hold_with_nothing_out_is_acted_on() -> None:
    # e.g. a pause orphaned by a reorg, dropped from the pool, or a joined incident whose done_when is false
    assert next_step(holds=False, in_flight=False, retry_at=None, now=100.0) == Step.ACT


def test_an_action_that_holds_needs_nothing() -> None:
    assert next_step(holds=True, in_flight=False, retry_at=None, now=100.0) == Step.HOLDS
    assert next_step(holds=True, in_flight=False, retry_at=200.0, now=100.0) == Step.HOLDS


def test_a_campaign_under_way_is_left_to_the_life_cycle() -> None:
    assert next_step(holds=False, in_flight=True, retry_at=None, now=100.0) == Step.UNDER_WAY


def test_a_failed_action_waits_for_its_back_off_then_is_tried_again() -> None:
    assert next_step(holds=False, in_flight=False, retry_at=105.0, now=100.0) == Step.WAIT
    assert next_step(holds=False, in_flight=False, retry_at=105.0, now=105.0) == Step.ACT


def test_back_off_doubles_per_failure_up_to_the_ceiling() -> None:
    assert [backoff(SETTINGS, n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_incident_status_follows_the_chain_not_the_hope() -> None:
    mined = [record("pause_vault", ResponseStatus.MINED)]
    assert incident_status({"pause_vault": True}, mined) == IncidentStatus.SAFE
    # Recorded as mined, but the chain says the vault is not paused (a reorg, an unpause): not safe.
    assert incident_status({"pause_vault": False}, mined) == IncidentStatus.OPEN
    failed = [record("pause_vault", ResponseStatus.FAILED), record("trip_breaker", ResponseStatus.MINED)]
    assert incident_status({"pause_vault": False, "trip_breaker": True}, failed) == IncidentStatus.FAILED
    assert incident_status({"pause_vault": True, "trip_breaker": True}, failed) == IncidentStatus.SAFE


# ---- outcomes ----


def test_a_pause_ahead_of_every_harmful_transaction_stopped_the_attack() -> None:
    harmful = [HarmfulTx(TX[1], block=10, index=1, succeeded=False)]  # the raced drain, after it: reverted
    result = classify(Landing(10, 0), harmful, evidence={"path": "mempool", "threat_tx": TX[1]}, path="mempool",
                      tripped_at=9, orphaned=False)
    assert result.outcome == Outcome.STOPPED_BEFORE_ATTACK
    assert result.detail["harm_before"] == [] and result.detail["after_pause"] == [TX[1]]
    assert result.detail["after_pause_reverted"] == 1 and "loss" not in result.detail


def test_a_pause_behind_the_drain_is_contained_with_the_transactions_and_the_loss() -> None:
    harmful = [HarmfulTx(TX[1], 8, 0, True), HarmfulTx(TX[2], 9, 0, True), HarmfulTx(TX[3], 10, 0, True),
               HarmfulTx(TX[4], 10, 2, False)]
    result = classify(Landing(10, 1), harmful, evidence={"value": 3 * 10**23}, path="block", tripped_at=9,
                      orphaned=False)
    assert result.outcome == Outcome.CONTAINED
    assert result.detail["harm_before"] == [TX[1], TX[2], TX[3]]
    assert result.detail["loss"] == 3 * 10**23 and result.detail["after_pause"] == [TX[4]]


def test_a_block_path_trip_without_named_transactions_is_never_called_a_stop() -> None:
    result = classify(Landing(12, 0), [], evidence={"net_outflow": 5}, path="block", tripped_at=11,
                      orphaned=False)
    assert result.outcome == Outcome.CONTAINED and result.detail["loss"] == 5
    assert "block 11" in result.detail["harm_before_note"]


def test_a_harmful_transaction_that_reverted_before_the_pause_is_no_harm() -> None:
    result = classify(Landing(10, 3), [HarmfulTx(TX[1], 10, 0, False)], evidence={}, path="mempool",
                      tripped_at=9, orphaned=False)
    assert result.outcome == Outcome.STOPPED_BEFORE_ATTACK


def test_a_resent_pause_after_a_reorg_says_so_and_where_it_landed() -> None:
    result = classify(Landing(20, 0), [HarmfulTx(TX[1], 19, 0, True)], evidence={}, path="block", tripped_at=19,
                      orphaned=True)
    assert result.outcome == Outcome.ORPHANED_RESENT and result.detail["landed"] == Outcome.CONTAINED


def test_evidence_transactions_are_found_wherever_the_policy_kinds_put_them() -> None:
    evidence = {"calls": [{"tx_hash": TX[1], "from": "0xabc"}], "events": [{"tx_hash": TX[2].upper()[2:]}],
                "transactions": [TX[3], TX[4]], "threat_tx": TX[5], "state": {"tx_hash": "not a hash"},
                "value": TX[6]}
    assert evidence_transactions(evidence) == {TX[1], TX[3], TX[4], TX[5]}


# ---- block-path pricing ----


def test_pending_tips_give_the_richest_pending_transaction_and_forget_mined_ones() -> None:
    tips = PendingTips()
    assert tips.highest() is None
    tips.add(Threat(tx_hash=TX[1], effective_tip=2 * 10**9, max_fee=50 * 10**9, seen_at=0.0))
    tips.add(Threat(tx_hash=TX[2], effective_tip=30 * 10**9, max_fee=60 * 10**9, seen_at=0.0))
    assert tips.highest().tx_hash == TX[2]
    tips.forget([TX[2].upper().replace("0X", "0x")])
    assert tips.highest().tx_hash == TX[1]


def test_a_block_path_pause_pays_at_least_the_floor_and_outbids_what_is_pending() -> None:
    from onguard.responders.fees import initial_fees

    quiet = initial_fees(SETTINGS, base_fee=GWEI_1, threat=None, min_tip=10 * GWEI_1)
    assert quiet.max_priority_fee_per_gas == 10 * GWEI_1  # the floor, well above priority_fee (2 gwei)
    pending = Threat(tx_hash=TX[1], effective_tip=30 * GWEI_1, max_fee=80 * GWEI_1, seen_at=0.0)
    rich = initial_fees(SETTINGS, base_fee=GWEI_1, threat=pending, min_tip=10 * GWEI_1)
    assert rich.max_priority_fee_per_gas == 30 * GWEI_1 * 5 // 4 + GWEI_1 and rich.max_fee_per_gas > 80 * GWEI_1


GWEI_1 = 10**9
