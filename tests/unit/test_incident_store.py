"""incidents/store.py: checkpoints, incidents with their timeline, and at-most-once response claims, on SQLite and
on PostgreSQL (the `state_location` fixture runs a test on both; tests of SQLite's own files take `db_path`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onguard.errors import ConfigError
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.store import migrations
from onguard.store.blocklog import BlockLog
from onguard.store.settings import DatabaseSettings
from tests.pg import accept_connections, refuse_connections


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "onguard.db"  # the parent folder does not exist yet


@pytest.fixture
def store(state_location: Path | DatabaseSettings) -> Iterator[IncidentStore]:
    store = IncidentStore(state_location)
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


def test_checkpoint_survives_reopening_the_database(state_location: Path | DatabaseSettings) -> None:
    first = IncidentStore(state_location)
    first.save_checkpoint("blocks", 31337, 123_456, "0x" + "ab" * 32)
    first.close()

    second = IncidentStore(state_location)
    try:
        assert second.checkpoint("blocks", 31337) == (123_456, "0x" + "ab" * 32)
    finally:
        second.close()


def test_each_replica_keeps_its_own_checkpoint_and_handled_blocks(state_location: Path | DatabaseSettings) -> None:
    """Replicas on one database at different heights: the lagging one does not move the leader's checkpoint back,
    and restarted it resumes after the last block IT handled, not after the most advanced replica's."""
    ahead, behind = (IncidentStore(state_location, claimant=name) for name in ("r1", "r2"))
    try:
        behind.save_checkpoint("blocks", 31337, 100, "0x64")
        ahead.save_checkpoint("blocks", 31337, 110, "0x6e")
        behind.save_checkpoint("blocks", 31337, 101, "0x65")  # written last: it moved a shared checkpoint back
        assert ahead.checkpoint("blocks", 31337) == (110, "0x6e")
        BlockLog(ahead.database, 31337, replica=ahead.replica).record(110, "0x6e")
        assert BlockLog(behind.database, 31337, replica=behind.replica).hash_at(110) is None
    finally:
        ahead.close()
        behind.close()
    restarted, newcomer, tool = (IncidentStore(state_location, claimant=name) for name in ("r2", "r3", None))
    try:
        assert restarted.checkpoint("blocks", 31337) == (101, "0x65")  # blocks 102..110 are still to be judged
        assert newcomer.checkpoint("blocks", 31337) == (110, "0x6e")   # first start: where the most advanced is
        assert tool.checkpoint_row("blocks", 31337)[0] == 110           # `status`: how far the guardian got
    finally:
        for store in (restarted, newcomer, tool):
            store.close()


def test_the_shared_checkpoint_of_schema_4_is_where_each_replica_resumes(
        state_location: Path | DatabaseSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as schema_4:
        schema_4.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
        schema_4.setattr(migrations, "LATEST", 4)
        old = IncidentStore(state_location)
        old.database.execute("INSERT INTO checkpoints (source, chain_id, block_number, block_hash, updated_at) "
                             "VALUES ('blocks', 31337, 77, '0x4d', 'then')")
        old.database.execute("INSERT INTO handled_blocks (chain_id, number, hash) VALUES (31337, 77, '0x4d')")
        old.close()
    alone, replica = IncidentStore(state_location), IncidentStore(state_location, claimant="r1")
    try:
        assert migrations.schema_version(alone.database) == migrations.LATEST
        assert alone.checkpoint("blocks", 31337) == replica.checkpoint("blocks", 31337) == (77, "0x4d")
        assert BlockLog(alone.database, 31337).hash_at(77) == "0x4d"  # the daemon alone keeps its history
    finally:
        alone.close()
        replica.close()


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


def test_big_ints_in_evidence_round_trip_exactly(state_location: Path | DatabaseSettings) -> None:
    evidence = {"value": 10**30, "thresholds": {"share": 2**256 - 1}, "reference": 10**30 + 1}
    store = IncidentStore(state_location)
    incident_id = open_one(store, evidence=evidence)
    store.record_seen_again(incident_id, 101, {"value": 10**30 + 7})
    store.close()

    reopened = IncidentStore(state_location)
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


def test_claim_survives_closing_and_reopening_the_database(state_location: Path | DatabaseSettings) -> None:
    store = IncidentStore(state_location)
    incident_id = open_one(store)
    assert store.claim_response(incident_id, "pause_vault") is True
    store.close()

    reopened = IncidentStore(state_location)
    try:
        assert reopened.claim_response(incident_id, "pause_vault") is False
        assert len(reopened.responses(incident_id)) == 1
    finally:
        reopened.close()


def test_claims_from_two_connections_to_one_database_do_not_both_win(state_location: Path | DatabaseSettings) -> None:
    one, two = IncidentStore(state_location), IncidentStore(state_location)
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


# ---- open-or-join, statuses, response transactions, degraded writes ----


def open_or_join(store: IncidentStore, block_time: int, **overrides: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = dict(chain_id=31337, policy_id="vault-drain", cooldown=3600.0, severity="critical",
                                     title="drain", dry_run=False, block=100, block_time=block_time,
                                     evidence={"value": 1}, status=IncidentStatus.OPEN, actions=("pause_vault",))
    fields.update(overrides)
    return store.open_or_join(**fields)  # type: ignore[arg-type]


def test_open_or_join_opens_with_claims_then_joins_within_the_cooldown(store: IncidentStore) -> None:
    incident, opened = open_or_join(store, 1_000)
    assert opened and [(r.action, r.status) for r in store.responses(incident.id)] == [("pause_vault", "claimed")]
    joined, opened_again = open_or_join(store, 1_500, block=105)
    assert (joined.id, opened_again) == (incident.id, False)
    assert joined.last_seen_block == 105
    assert [e.kind for e in store.timeline(incident.id)] == ["detected", "tripped-again"]


def test_rehearsing_a_trip_leaves_nothing_behind(store: IncidentStore) -> None:
    """The start-up rehearsal of a trip's statements is rolled back: no incident, claim, timeline or audit entry,
    and the first real incident still gets the first id (SQLite's AUTOINCREMENT counter is rolled back too)."""
    store.rehearse_trip(31337, "0x" + "11" * 20, ("pause_vault", "trip_breaker"))
    assert store.incidents() == [] and store.unfinished_responses() == []
    counts = {table: store.database.scalar(f"SELECT COUNT(*) FROM {table}")
              for table in ("incidents", "timeline", "responses", "response_txs")}
    assert counts == dict.fromkeys(counts, 0)
    incident, opened = open_or_join(store, 1_000)
    assert opened and [(r.action, r.status) for r in store.responses(incident.id)] == [("pause_vault", "claimed")]
    if store.database.dialect.value == "sqlite":
        assert incident.id == 1


def test_rehearsing_a_trip_on_a_database_refusing_writes_opens_nothing(db_path: Path) -> None:
    """Unlike a real trip, the rehearsal keeps nothing in memory when the database refuses it (SQLite only: on
    PostgreSQL there is no rehearsal)."""
    store = IncidentStore(db_path)
    try:
        incident_id = open_one(store)
        outage = Outage(store, db_path)
        outage.begin(incident_id)
        unsaved = store.unsaved_writes
        store.rehearse_trip(31337, "0x" + "11" * 20, ("pause_vault",))
        assert store.unsaved_writes == unsaved
        outage.end()
        assert store.flush()
        assert [i.id for i in store.incidents()] == [incident_id]
    finally:
        store.close()


def test_a_resolved_incident_is_never_joined(store: IncidentStore) -> None:
    incident, _ = open_or_join(store, 1_000)
    store.set_status(incident.id, IncidentStatus.RESOLVED, actor="alice", reason="owners unpaused after the fix")
    again, opened = open_or_join(store, 1_001)
    assert opened and again.id != incident.id


def test_two_writers_racing_to_open_make_one_incident(db_path: Path) -> None:
    import threading

    one, two = IncidentStore(db_path), IncidentStore(db_path)
    try:
        # The first writer is opening an incident (its transaction not committed yet) when the second checks.
        one.database.execute("BEGIN IMMEDIATE")
        one.database.execute("INSERT INTO incidents (chain_id, policy_id, severity, status, title, dry_run, opened_at, "
                       "opened_block, opened_block_time, last_seen_at, last_seen_block, evidence) "
                       "VALUES (31337, 'vault-drain', 'critical', 'open', 'drain', 0, 'now', 100, 1000, 'now', 100, "
                       "'{}')")
        checking = threading.Event()
        two.database.connection.set_trace_callback(lambda statement: checking.set())
        result: list = []
        second = threading.Thread(target=lambda: result.append(open_or_join(two, 1_000)))
        second.start()
        assert checking.wait(timeout=10)
        one.database.execute("COMMIT")
        second.join(timeout=10)
        two.database.connection.set_trace_callback(None)
        (incident, opened), = result
        assert opened is False  # it waited for the first writer and joined its incident
        assert len(one.incidents()) == 1
    finally:
        one.close()
        two.close()


def test_every_status_change_is_in_the_timeline_and_the_audit_log(store: IncidentStore) -> None:
    from onguard.store.audit import AuditLog

    incident_id = open_one(store)
    assert store.set_status(incident_id, IncidentStatus.SAFE, reason="paused() holds") is True
    assert store.set_status(incident_id, IncidentStatus.SAFE) is False  # no change, no entry
    store.set_status(incident_id, IncidentStatus.RESOLVED, actor="alice", reason="fixed and unpaused")
    changes = [e.detail for e in store.timeline(incident_id) if e.kind == "status"]
    assert [(c["from"], c["to"], c["by"]) for c in changes] == [("open", "safe", "daemon"),
                                                               ("safe", "resolved", "alice")]
    audit = [(e.kind, e.actor, e.details["to"], e.details["reason"]) for e in AuditLog(store.database).entries()]
    assert audit == [("incident-status", "daemon", "safe", "paused() holds"),
                     ("incident-status", "alice", "resolved", "fixed and unpaused")]
    assert [i.id for i in store.watched_incidents(31337)] == []


def test_response_transactions_round_trip_per_sender_and_action(store: IncidentStore) -> None:
    from onguard.incidents.store import ResponseTx

    sent = ResponseTx(action="pause_vault", incident_id=1, sender="0xG", nonce=7, tx_hash="0x01",
                      max_fee_per_gas=2 * 10**30, max_priority_fee_per_gas=10**9, raw=b"\x02\xf8")
    store.record_response_tx(sent)
    store.record_response_tx(ResponseTx(action="trip_breaker", incident_id=1, sender="0xG", nonce=8,
                                        tx_hash="0x02", max_fee_per_gas=1, max_priority_fee_per_gas=1, raw=b""))
    assert store.response_txs("0xG", "pause_vault") == [sent]
    assert [tx.nonce for tx in store.response_txs("0xG")] == [7, 8]
    assert store.response_txs("0xOther") == []


def test_outcome_and_orphaned_responses_are_recorded(store: IncidentStore) -> None:
    from onguard.incidents.store import Outcome

    incident_id = open_one(store)
    store.claim_response(incident_id, "pause_vault")
    store.update_response(incident_id, "pause_vault", ResponseStatus.MINED, tx_hash="0xaa", block_number=9)
    store.record_outcome(incident_id, "pause_vault", Outcome.CONTAINED, {"harm_before": ["0x01"], "loss": 10**24})
    (record,) = store.responses(incident_id)
    assert (record.outcome, record.outcome_detail) == (Outcome.CONTAINED, {"harm_before": ["0x01"],
                                                                           "loss": 10**24})
    store.record_orphaned(incident_id, "pause_vault", "0xaa", 9)
    (record,) = store.responses(incident_id)
    assert (record.status, record.orphaned, record.outcome, record.block_number) == ("orphaned", 1, None, None)


def test_a_schema_1_database_is_migrated_and_mitigated_becomes_safe(db_path: Path) -> None:
    import sqlite3

    store = IncidentStore(db_path)
    incident_id = open_one(store)
    store.close()
    raw = sqlite3.connect(db_path)
    raw.execute("DROP TABLE schema_versions")  # as an onguard of schema 1 left it: no versions recorded
    raw.execute("DROP TABLE response_txs")
    raw.execute("ALTER TABLE responses DROP COLUMN outcome")
    raw.execute("UPDATE incidents SET status='mitigated'")
    raw.commit()
    raw.close()
    reopened = IncidentStore(db_path)
    try:
        assert reopened.incident(incident_id).status == IncidentStatus.SAFE
        assert reopened.response_txs("0xG") == []
    finally:
        reopened.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Outage:
    """The database refusing writes: on SQLite its file capped at its size (SQLite answers "database or disk is
    full"), on PostgreSQL every connection cut and new ones refused (a lost server or network)."""

    def __init__(self, store: IncidentStore, location: Path | DatabaseSettings) -> None:
        self.store, self.url = store, location.url if isinstance(location, DatabaseSettings) else None
        self.pages = 0

    def begin(self, incident_id: int) -> None:
        if self.url:
            refuse_connections(self.url)
            return
        self.pages = self.store.database.scalar("PRAGMA page_count")
        self.store.database.execute(f"PRAGMA max_page_count={self.pages}")
        for _ in range(10_000):  # what room is left in the last page: filled
            if self.store.unsaved_writes:
                return
            self.store.add_timeline(incident_id, "filler", {"pad": "x" * 400})
        raise AssertionError("the capped database kept taking writes")

    def end(self) -> None:
        if self.url:
            accept_connections(self.url)
        else:
            self.store.database.execute(f"PRAGMA max_page_count={self.pages * 100}")


def test_writes_the_database_refuses_are_kept_and_replayed_in_order(
        store: IncidentStore, state_location: Path | DatabaseSettings) -> None:
    incident_id = open_one(store)
    store.claim_response(incident_id, "pause_vault")
    outage = Outage(store, state_location)
    outage.begin(incident_id)
    for n in range(200):
        store.add_timeline(incident_id, "note", {"n": n, "pad": "x" * 400})
        store.save_checkpoint("blocks", 31337, n, f"0x{n:02x}")
    store.update_response(incident_id, "pause_vault", ResponseStatus.MINED, tx_hash="0xfeed", block_number=12)
    assert store.unsaved_writes > 0  # refused: nothing raised, the writes wait in memory
    assert store.flush() is False  # still refused
    outage.end()
    wait_until(store.flush, "the kept writes to be saved")  # a lost connection is tried again within a second
    assert store.unsaved_writes == 0
    notes = [e.detail["n"] for e in store.timeline(incident_id) if e.kind == "note"]
    assert notes == list(range(200))  # every one, in order
    assert store.checkpoint("blocks", 31337) == (199, "0xc7")
    assert store.responses(incident_id)[0].status == ResponseStatus.MINED


def test_an_incident_opened_while_the_database_refuses_writes_is_saved_when_it_takes_them(
        store: IncidentStore, state_location: Path | DatabaseSettings) -> None:
    first = open_one(store)
    outage = Outage(store, state_location)
    outage.begin(first)
    incident, opened = open_or_join(store, 5_000, policy_id="other-policy")
    assert opened and incident.id < 0 and store.incident(incident.id).policy_id == "other-policy"  # in memory
    joined, opened_again = open_or_join(store, 5_001, policy_id="other-policy")
    assert (joined.id, opened_again) == (incident.id, False)
    outage.end()
    wait_until(store.flush, "the kept writes to be saved")
    assert [(r.action, r.status) for r in store.responses(incident.id)] == [("pause_vault", "claimed")]
    saved = store.incident(incident.id)
    assert saved.policy_id == "other-policy" and saved.id > first  # the database's id from now on
    later, _ = open_or_join(store, 5_000, policy_id="third-policy")
    assert later.id > saved.id


class CutOff:
    """One store cut off from a database the others still reach: on SQLite its connection made read-only (every
    write refused), on PostgreSQL its `reachable` guard down, as a replica's is once its leases lapse."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def begin(self) -> None:
        if self.store.database.dialect == "sqlite":
            self.store.database.execute("PRAGMA query_only=ON")
        else:
            self.store.database.reachable = lambda: False  # type: ignore[attr-defined]

    def end(self) -> None:
        if self.store.database.dialect == "sqlite":
            self.store.database.execute("PRAGMA query_only=OFF")
        else:
            self.store.database.reachable = lambda: True  # type: ignore[attr-defined]


def test_an_incident_opened_while_cut_off_never_shares_an_id_with_another_replicas(
        state_location: Path | DatabaseSettings) -> None:
    """Replica r1 is cut off and opens incidents in memory while r2, still connected, opens others: none of r1's
    ids is one the database gives r2, and what r1 wrote under them lands on its own incident, or on the one r2
    opened for the same policy meanwhile (one incident per attack)."""
    r1, r2 = IncidentStore(state_location, claimant="r1"), IncidentStore(state_location, claimant="r2")
    cut = CutOff(r1)
    try:
        open_or_join(r2, 1_000, policy_id="before")
        cut.begin()
        mine, opened = open_or_join(r1, 2_000, policy_id="only-r1")
        both, _ = open_or_join(r1, 2_000, policy_id="both")
        assert opened and r1.unsaved_writes
        theirs, _ = open_or_join(r2, 2_000, policy_id="other")         # under the id max+1 gave r1 before
        theirs_too, _ = open_or_join(r2, 2_001, policy_id="both")
        assert {mine.id, both.id}.isdisjoint({theirs.id, theirs_too.id})
        r1.add_timeline(mine.id, "note", {"by": "r1"})
        r1.add_timeline(both.id, "note", {"by": "r1"})
        assert r1.incident(mine.id).policy_id == "only-r1"
        cut.end()
        wait_until(r1.flush, "r1's kept writes to be saved")
        saved = r1.incident(mine.id)
        assert saved.policy_id == "only-r1" and saved.id not in (theirs.id, theirs_too.id) and saved.id > 0
        assert [e.kind for e in r2.timeline(saved.id)] == ["detected", "note"]
        assert [(r.action, r.claimed_by) for r in r2.responses(saved.id)] == [("pause_vault", "r1")]
        assert "note" not in [e.kind for e in r2.timeline(theirs.id)]
        assert r1.incident(both.id).id == theirs_too.id  # joined the incident r2 opened meanwhile
        assert [e.kind for e in r2.timeline(theirs_too.id)] == ["detected", "tripped-again", "note"]
        assert [r.claimed_by for r in r2.responses(theirs_too.id)] == ["r2"]
        assert [i.policy_id for i in r2.incidents()].count("both") == 1
    finally:
        r1.close()
        r2.close()


def test_the_daemons_last_heartbeat_is_kept_for_status(state_location: Path | DatabaseSettings) -> None:
    store = IncidentStore(state_location)
    assert store.last_heartbeat() is None
    store.record_heartbeat({"block": 7, "mempool": "live", "responses_under_way": 0})
    store.record_heartbeat({"block": 9, "mempool": "DOWN", "responses_under_way": 1})
    store.close()
    reopened = IncidentStore(state_location)
    try:
        beat = reopened.last_heartbeat()
        assert beat is not None and beat["block"] == 9 and beat["mempool"] == "DOWN" and beat["at"]
    finally:
        reopened.close()
