"""incidents/store.py: checkpoints, incidents with their timeline, and at-most-once response claims in SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onguard.errors import ConfigError
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "onguard.db"  # the parent folder does not exist yet


@pytest.fixture
def store(db_path: Path) -> Iterator[IncidentStore]:
    store = IncidentStore(db_path)
    yield store
    store.close()


def open_one(store: IncidentStore, **overrides: object) -> int:
    fields: dict[str, object] = dict(chain_id=31337, policy_id="vault-drain", severity="critical",
                                     title="withdrawals above 25%", dry_run=False, block=100, block_time=1_700_000_000,
                                     evidence={"value": 10**24})
    fields.update(overrides)
    return store.open_incident(**fields).id  # type: ignore[arg-type]


# ---- checkpoints ----


def test_checkpoint_is_none_before_anything_is_saved(store: IncidentStore) -> None:
    assert store.checkpoint("blocks", 31337) is None


def test_checkpoint_round_trips_and_is_overwritten(store: IncidentStore) -> None:
    store.save_checkpoint("blocks", 31337, 10, "0xaa")
    assert store.checkpoint("blocks", 31337) == (10, "0xaa")
    store.save_checkpoint("blocks", 31337, 11, "0xbb")
    assert store.checkpoint("blocks", 31337) == (11, "0xbb")


def test_checkpoints_are_kept_per_source_and_chain(store: IncidentStore) -> None:
    store.save_checkpoint("blocks", 1, 5, "0x01")
    store.save_checkpoint("blocks", 31337, 7, "0x07")
    store.save_checkpoint("other", 1, 9, "0x09")
    assert store.checkpoint("blocks", 1) == (5, "0x01")
    assert store.checkpoint("blocks", 31337) == (7, "0x07")
    assert store.checkpoint("other", 1) == (9, "0x09")
    assert store.checkpoint("other", 31337) is None


def test_checkpoint_survives_reopening_the_file(db_path: Path) -> None:
    first = IncidentStore(db_path)
    first.save_checkpoint("blocks", 31337, 123_456, "0x" + "ab" * 32)
    first.close()

    second = IncidentStore(db_path)
    try:
        assert second.checkpoint("blocks", 31337) == (123_456, "0x" + "ab" * 32)
    finally:
        second.close()


# ---- incidents and timeline ----


def test_open_incident_records_it_with_a_detected_entry(store: IncidentStore) -> None:
    incident = store.open_incident(chain_id=31337, policy_id="vault-drain", severity="critical", title="drain",
                                   dry_run=True, block=100, block_time=1_700_000_000,
                                   evidence={"value": 42, "transactions": ["0x01"]}, status=IncidentStatus.DRY_RUN)

    assert incident.id >= 1
    assert (incident.chain_id, incident.policy_id, incident.severity) == (31337, "vault-drain", "critical")
    assert incident.status == "dry-run"
    assert incident.dry_run is True
    assert (incident.opened_block, incident.opened_block_time, incident.last_seen_block) == (100, 1_700_000_000, 100)
    assert incident.evidence == {"value": 42, "transactions": ["0x01"]}
    assert store.incident(incident.id) == incident

    timeline = store.timeline(incident.id)
    assert [entry.kind for entry in timeline] == ["detected"]
    assert timeline[0].detail == {"block": 100, "value": 42, "transactions": ["0x01"]}


def test_record_seen_again_moves_last_seen_and_extends_the_timeline(store: IncidentStore) -> None:
    incident_id = open_one(store, block=100)

    store.record_seen_again(incident_id, 103, {"value": 7})

    incident = store.incident(incident_id)
    assert incident.opened_block == 100
    assert incident.last_seen_block == 103
    timeline = store.timeline(incident_id)
    assert [entry.kind for entry in timeline] == ["detected", "tripped-again"]
    assert timeline[1].detail == {"block": 103, "value": 7}


def test_latest_incident_is_per_chain_and_policy(store: IncidentStore) -> None:
    first = open_one(store)
    second = open_one(store)
    other_policy = open_one(store, policy_id="oracle-jump")
    other_chain = open_one(store, chain_id=1)

    latest = store.latest_incident(31337, "vault-drain")
    assert latest is not None and latest.id == second != first
    assert store.latest_incident(31337, "oracle-jump").id == other_policy  # type: ignore[union-attr]
    assert store.latest_incident(1, "vault-drain").id == other_chain  # type: ignore[union-attr]
    assert store.latest_incident(5, "vault-drain") is None


def test_incidents_lists_newest_first_with_a_limit(store: IncidentStore) -> None:
    ids = [open_one(store, block=100 + i) for i in range(3)]
    assert [incident.id for incident in store.incidents()] == list(reversed(ids))
    assert [incident.id for incident in store.incidents(limit=2)] == list(reversed(ids))[:2]


def test_unknown_incident_raises_lookup_error(store: IncidentStore) -> None:
    with pytest.raises(LookupError):
        store.incident(99)


def test_set_status_and_add_timeline(store: IncidentStore) -> None:
    incident_id = open_one(store)
    store.set_status(incident_id, IncidentStatus.SAFE)
    store.add_timeline(incident_id, "note", {"by": "operator"})
    assert store.incident(incident_id).status == "safe"
    assert store.timeline(incident_id)[-1].kind == "note"
    assert store.timeline(incident_id)[-1].detail == {"by": "operator"}


def test_big_ints_in_evidence_round_trip_exactly(db_path: Path) -> None:
    evidence = {"value": 10**30, "thresholds": {"share": 2**256 - 1}, "reference": 10**30 + 1}
    store = IncidentStore(db_path)
    incident_id = open_one(store, evidence=evidence)
    store.record_seen_again(incident_id, 101, {"value": 10**30 + 7})
    store.close()

    reopened = IncidentStore(db_path)
    try:
        incident = reopened.incident(incident_id)
        assert incident.evidence == evidence
        assert incident.evidence["value"] == 10**30
        assert type(incident.evidence["value"]) is int
        assert incident.evidence["thresholds"]["share"] == 2**256 - 1
        assert reopened.timeline(incident_id)[1].detail["value"] == 10**30 + 7
    finally:
        reopened.close()


# ---- responses ----


def test_claim_response_only_once_per_incident_and_action(store: IncidentStore) -> None:
    incident_id = open_one(store)
    assert store.claim_response(incident_id, "pause_vault") is True
    assert store.claim_response(incident_id, "pause_vault") is False
    assert store.claim_response(incident_id, "trip_breaker") is True  # another action: its own claim
    [pause, trip] = store.responses(incident_id)
    assert (pause.action, pause.status) == ("pause_vault", ResponseStatus.CLAIMED)
    assert (trip.action, trip.status) == ("trip_breaker", ResponseStatus.CLAIMED)


def test_claims_are_per_incident(store: IncidentStore) -> None:
    first, second = open_one(store), open_one(store)
    assert store.claim_response(first, "pause_vault") is True
    assert store.claim_response(second, "pause_vault") is True


def test_claim_survives_closing_and_reopening_the_database(db_path: Path) -> None:
    store = IncidentStore(db_path)
    incident_id = open_one(store)
    assert store.claim_response(incident_id, "pause_vault") is True
    store.close()

    reopened = IncidentStore(db_path)
    try:
        assert reopened.claim_response(incident_id, "pause_vault") is False
        assert len(reopened.responses(incident_id)) == 1
    finally:
        reopened.close()


def test_claims_from_two_connections_to_one_file_do_not_both_win(db_path: Path) -> None:
    one, two = IncidentStore(db_path), IncidentStore(db_path)
    try:
        incident_id = open_one(one)
        assert [one.claim_response(incident_id, "pause_vault"), two.claim_response(incident_id, "pause_vault")] \
            == [True, False]
    finally:
        one.close()
        two.close()


def test_update_response_transitions_and_unfinished_responses(store: IncidentStore) -> None:
    incident_id = open_one(store)
    store.claim_response(incident_id, "pause_vault")
    store.claim_response(incident_id, "trip_breaker")
    assert [(r.action, r.status) for r in store.unfinished_responses()] == [
        ("pause_vault", "claimed"), ("trip_breaker", "claimed")]

    store.update_response(incident_id, "pause_vault", ResponseStatus.SENT, tx_hash="0xfeed")
    store.update_response(incident_id, "trip_breaker", ResponseStatus.ALREADY_DONE)
    assert [(r.action, r.status, r.tx_hash) for r in store.unfinished_responses()] == [
        ("pause_vault", "sent", "0xfeed")]

    store.update_response(incident_id, "pause_vault", ResponseStatus.MINED, block_number=105, gas_used=61_234)
    assert store.unfinished_responses() == []

    pause = store.responses(incident_id)[0]
    assert pause.status == "mined"
    assert pause.tx_hash == "0xfeed"  # kept from the "sent" update
    assert (pause.block_number, pause.gas_used, pause.error) == (105, 61_234, None)
    kinds = [entry.kind for entry in store.timeline(incident_id)]
    assert kinds == ["detected", "response-sent", "response-already-done", "response-mined"]
    mined = store.timeline(incident_id)[-1].detail
    assert mined == {"action": "pause_vault", "block": 105, "gas_used": 61_234}


def test_failed_response_records_its_error(store: IncidentStore) -> None:
    incident_id = open_one(store)
    store.claim_response(incident_id, "pause_vault")
    store.update_response(incident_id, "pause_vault", ResponseStatus.FAILED, error="nonce too low")
    [record] = store.responses(incident_id)
    assert (record.status, record.error) == ("failed", "nonce too low")
    assert store.unfinished_responses() == []
    assert store.timeline(incident_id)[-1].detail == {"action": "pause_vault", "error": "nonce too low"}


def test_unwritable_database_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ConfigError) as caught:
        IncidentStore(blocker / "onguard.db")
    assert caught.value.field == "state.database"
    assert "cannot open the state database" in str(caught.value)
