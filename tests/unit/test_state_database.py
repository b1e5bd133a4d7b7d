"""onguard.store on both engines: migrations (files of older onguard versions brought up to date, a newer schema
refused, an up-to-date database only read), [state] database_url checked, the writers that must not interleave
(opening incidents, claims, the audit chain) serialised across connections, and the CLI reading PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from onguard.cli.main import main
from onguard.config import load_config
from onguard.errors import ConfigError
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.blocklog import BlockLog
from onguard.incidents.daemonlock import daemon_lock
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.safe.tx import SafeTxData
from onguard.store.incidents import Incidents
from onguard.store.migrations import LATEST, MIGRATIONS, schema_version
from onguard.store.database import PostgresDatabase
from onguard.store.settings import PASSWORD_ENV, DatabaseSettings
from tests.pg import SilentProxy, server_url

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "state"
Location = Path | DatabaseSettings
INCIDENT = dict(chain_id=31337, policy_id="vault-drain", cooldown=3600.0, severity="critical", title="drain",
                dry_run=False, block=100, block_time=1_000, evidence={"value": 1}, status=IncidentStatus.OPEN,
                actions=("pause_vault",))


def legacy_database(tmp_path: Path, version: int) -> Path:
    """A SQLite file as the onguard of that schema version wrote it (dumped from that version's own code)."""
    path = tmp_path / f"schema{version}.db"
    db = sqlite3.connect(path)
    db.executescript((LEGACY / f"schema{version}.sql").read_text())
    db.close()
    return path


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs work(0..count-1) in threads released together; their results in order (an exception re-raised)."""
    start, results = threading.Barrier(count), [None] * count

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except BaseException as exc:  # re-raised below, in the test's thread
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---- migrations ----


def test_a_new_database_is_created_at_the_latest_version_with_the_replicas_schema(state_location: Location) -> None:
    store = IncidentStore(state_location)
    try:
        assert schema_version(store.database) == LATEST
        versions = store.database.fetch_all("SELECT version FROM schema_versions ORDER BY version")
        assert [row[0] for row in versions] == [m.version for m in MIGRATIONS]
        assert "leases" in store.database.tables()
        assert {"name", "holder", "expires_at", "token"} == store.database.columns("leases")
        assert {"claimed_by", "claimed_at"} <= store.database.columns("responses")
    finally:
        store.close()


@pytest.mark.parametrize(("version", "audit_entries"), [(1, 1), (2, 2)])
def test_a_sqlite_file_of_an_older_onguard_is_brought_up_to_date(tmp_path: Path, version: int,
                                                                 audit_entries: int) -> None:
    store = IncidentStore(legacy_database(tmp_path, version))
    try:
        assert schema_version(store.database) == LATEST
        found = store.database.fetch_all("SELECT version, description FROM schema_versions ORDER BY version")
        assert [(v, d == "found in place (older onguard)") for v, d in found] == [
            (m.version, m.version <= version) for m in MIGRATIONS]
        incident = store.incident(1)
        assert incident.status == IncidentStatus.SAFE  # schema 1's "mitigated" included
        assert incident.evidence == {"value": 10**24}
        (response,) = store.responses(1)
        assert (response.status, response.block_number, response.orphaned, response.claimed_by) == (
            ResponseStatus.MINED, 101, 0, None)
        assert store.checkpoint("blocks", 31337) == (105, "0x" + "cd" * 32)
        audit = AuditLog(store.database)
        assert audit.verify() == (audit_entries, None)
        assert audit.append(AuditKind.DECISION, "daemon", {"after": "upgrade"}).seq == audit_entries + 1
        assert audit.verify() == (audit_entries + 1, None)
        incident_two, opened = store.open_or_join(**{**INCIDENT, "policy_id": "oracle-jump"})
        assert opened and incident_two.id == 2
        if version == 2:
            assert BlockLog(store.database, 31337).hash_at(105) == "0x" + "cd" * 32
            assert [p.purpose for p in SafeTxStore(store.database).list(TxKind.PROPOSAL)] == ["unpause"]
    finally:
        store.close()


def test_replicas_starting_together_on_a_new_database_migrate_it_once(state_location: Location) -> None:
    stores = in_threads(4, lambda n: IncidentStore(state_location))
    try:
        versions = stores[0].database.fetch_all("SELECT version FROM schema_versions ORDER BY version")
        assert [row[0] for row in versions] == [m.version for m in MIGRATIONS]
    finally:
        for store in stores:
            store.close()


def test_a_database_written_by_a_newer_onguard_is_refused(state_location: Location, capsys) -> None:
    store = IncidentStore(state_location)
    name = store.name
    store.database.execute("INSERT INTO schema_versions (version, description, applied_at) VALUES (?, ?, ?)",
                           (LATEST + 1, "from a newer onguard", "2030-01-01"))
    store.close()
    with pytest.raises(ConfigError) as caught:
        IncidentStore(state_location)
    assert caught.value.field == ("state.database_url" if isinstance(state_location, DatabaseSettings)
                                  else "state.database")
    assert f"the state database {name} is at schema version {LATEST + 1}" in str(caught.value)
    assert caught.value.hint == "this database was written by a newer onguard; upgrade"
    # The CLI says so with exit code 2, no traceback.
    db = state_location.url if isinstance(state_location, DatabaseSettings) else str(state_location)
    assert main(["incidents", "--db", db, "list"]) == 2
    assert "this database was written by a newer onguard; upgrade" in capsys.readouterr().err


def test_opening_an_up_to_date_sqlite_file_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "onguard.db"
    IncidentStore(path).close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    store = IncidentStore(path)
    assert store.database.connection.total_changes == 0
    store.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_opening_an_up_to_date_postgresql_database_writes_nothing(postgres_url: str) -> None:
    settings = DatabaseSettings(path=Path("unused.db"), url=postgres_url)
    IncidentStore(settings).close()
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(server_url(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    store = IncidentStore(settings)  # every write of this session would fail
    try:
        assert store.incidents() == []
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            store.claim_response(1, "pause_vault")
    finally:
        store.close()


# ---- [state] database_url ----


def test_a_database_url_moves_the_state_to_postgresql(write_toml, config_data) -> None:
    config_data["state"] = {"database_url": "postgresql://onguard@db.internal:5432/onguard"}
    config = load_config(write_toml(config_data))
    assert config.state.url == "postgresql://onguard@db.internal:5432/onguard"
    assert config.state.field == "state.database_url"
    with daemon_lock(config.state) as first, daemon_lock(config.state) as second:  # replicas share the database
        assert (first, second) == (None, None)


def test_a_password_in_the_database_url_is_refused_and_not_repeated(write_toml, config_data) -> None:
    config_data["state"] = {"database_url": "postgresql://onguard:s3cret-pw@db.internal:5432/onguard"}
    path = write_toml(config_data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.file, error.field) == (str(path), "state.database_url")
    assert PASSWORD_ENV in (error.hint or "") and "PGPASSWORD" in (error.hint or "")
    assert "s3cret-pw" not in error.render()


@pytest.mark.parametrize(("state", "says"), [
    ({"database": "x.db", "database_url": "postgresql://u@h/d"}, "the state lives in one place"),
    ({"database_url": "mysql://u@h/d"}, "is not a PostgreSQL URL"),
    ({"database_url": "postgresql://u@h:5432"}, "names no database"),
])
def test_bad_database_settings_name_the_field(write_toml, config_data, state: dict[str, str], says: str) -> None:
    config_data["state"] = state
    path = write_toml(config_data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.file, caught.value.field) == (str(path), "state.database_url")
    assert says in str(caught.value) and caught.value.hint


def test_an_unreachable_server_is_a_config_error_naming_the_url() -> None:
    url = "postgresql://postgres@127.0.0.1:1/onguard"  # nothing listens on port 1
    with pytest.raises(ConfigError) as caught:
        IncidentStore(DatabaseSettings(path=Path("unused.db"), url=url, config_file="onguard.toml"))
    assert caught.value.field == "state.database_url" and url in str(caught.value)
    assert PASSWORD_ENV in (caught.value.hint or "")


# ---- writers that must not interleave ----


def test_many_connections_racing_to_open_one_incident_open_exactly_one(state_location: Location) -> None:
    stores = [IncidentStore(state_location) for _ in range(6)]
    try:
        results = in_threads(6, lambda n: stores[n].open_or_join(**{**INCIDENT, "block": 100 + n}))
        assert sum(opened for _, opened in results) == 1
        assert len({incident.id for incident, _ in results}) == 1
        (incident,) = stores[0].incidents()
        assert [(r.action, r.status) for r in stores[0].responses(incident.id)] == [("pause_vault", "claimed")]
        assert [e.kind for e in stores[0].timeline(incident.id)].count("tripped-again") == 5
    finally:
        for store in stores:
            store.close()


def test_a_writer_opening_on_postgresql_makes_the_other_wait_then_join(postgres_url: str) -> None:
    settings = DatabaseSettings(path=Path("unused.db"), url=postgres_url)
    one, two = IncidentStore(settings), IncidentStore(settings)
    fields = {k: v for k, v in INCIDENT.items() if k not in ("cooldown", "actions")}
    result: list[Any] = []
    try:
        with one.database.transaction():  # the first writer has opened; its transaction is not committed yet
            Incidents(one.database).open_or_join(cooldown=3600.0, seen={}, **fields)
            second = threading.Thread(target=lambda: result.append(two.open_or_join(**INCIDENT)))
            second.start()
            wait_until(lambda: _waiting_for_advisory_locks(postgres_url) == 1, "the second writer to wait")
        second.join(timeout=30)
        ((incident, opened),) = result
        assert opened is False  # it waited for the first writer and joined its incident
        assert [i.id for i in one.incidents()] == [incident.id]
    finally:
        one.close()
        two.close()


def _waiting_for_advisory_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as watcher:
        row = watcher.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    return int(row[0]) if row else 0


def test_many_connections_claiming_one_action_claim_it_once(state_location: Location) -> None:
    stores = [IncidentStore(state_location) for _ in range(6)]
    try:
        incident, _ = stores[0].open_or_join(**{**INCIDENT, "actions": ()})
        claims = in_threads(6, lambda n: stores[n].claim_response(incident.id, "pause_vault"))
        assert sorted(claims) == [False] * 5 + [True]
        assert len(stores[0].responses(incident.id)) == 1
    finally:
        for store in stores:
            store.close()


def test_appends_from_two_connections_make_one_unbroken_chain(state_location: Location, capsys) -> None:
    one, two = IncidentStore(state_location), IncidentStore(state_location)
    try:
        logs = [AuditLog(one.database), AuditLog(two.database)]
        in_threads(2, lambda n: [logs[n].append(AuditKind.DECISION, f"writer-{n}", {"i": i}) for i in range(25)])
        entries = list(logs[0].entries())
        assert [e.seq for e in entries] == list(range(1, 51))
        assert sorted(e.actor for e in entries) == ["writer-0"] * 25 + ["writer-1"] * 25
        assert logs[1].verify() == (50, None)
        db = state_location.url if isinstance(state_location, DatabaseSettings) else str(state_location)
        assert main(["audit", "--db", db, "verify"]) == 0
        assert "intact: 50 entries" in capsys.readouterr().out
    finally:
        one.close()
        two.close()


def test_the_audit_tables_refuse_plain_edits_on_either_engine(state_location: Location) -> None:
    store = IncidentStore(state_location)
    try:
        AuditLog(store.database).append(AuditKind.DECISION, "daemon", {})
        AuditLog(store.database).append(AuditKind.DECISION, "daemon", {})
        refused = (sqlite3.IntegrityError, psycopg.IntegrityError)
        for statement, says in [("UPDATE audit_log SET actor='x' WHERE seq=1", "append-only"),
                                ("DELETE FROM audit_log WHERE seq=2", "append-only"),
                                ("UPDATE audit_head SET seq=1", "only moves forward"),
                                ("DELETE FROM audit_head", "never deleted")]:
            with pytest.raises(refused, match=says):
                store.database.execute(statement)
        assert AuditLog(store.database).verify() == (2, None)
    finally:
        store.close()


# ---- the CLI on PostgreSQL ----


def test_the_cli_reads_the_state_from_postgresql(write_toml, config_data, postgres_url: str, capsys) -> None:
    config_data["state"] = {"database_url": postgres_url}
    config_path = write_toml(config_data)
    store = IncidentStore(load_config(config_path).state)
    try:
        incident, _ = store.open_or_join(**INCIDENT)
        store.update_response(incident.id, "pause_vault", ResponseStatus.MINED, tx_hash="0x" + "ab" * 32,
                              block_number=101)
        store.set_status(incident.id, IncidentStatus.SAFE, reason="paused() holds")
        tx = SafeTxData(safe=config_data["safe"]["address"], chain_id=31337, to="0x" + "ab" * 20, value=0,
                        data=bytes.fromhex("3f4ba83a"), operation=0, safe_tx_gas=0, base_gas=0, gas_price=0,
                        gas_token="0x" + "00" * 20, refund_receiver="0x" + "00" * 20, nonce=3)
        SafeTxStore(store.database).add(TxKind.PROPOSAL, tx, purpose="unpause after the fix", proposer="alice",
                               incident_id=incident.id)
    finally:
        store.close()
    assert main(["--config", str(config_path), "incidents", "list"]) == 0
    assert "vault-drain" in capsys.readouterr().out
    assert main(["--config", str(config_path), "incidents", "show", str(incident.id)]) == 0
    assert "status safe" in capsys.readouterr().out
    assert main(["--config", str(config_path), "incidents", "resolve", str(incident.id), "--reason", "fixed",
                 "--by", "alice"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config_path), "audit", "verify"]) == 0
    assert "intact: 2 entries" in capsys.readouterr().out
    assert main(["--config", str(config_path), "proposals", "list"]) == 0
    assert "unpause after the fix" in capsys.readouterr().out


def test_the_daemon_refuses_to_start_on_a_schema_it_does_not_know(
        state_location: Location, write_toml, config_data, policy_data, monkeypatch, capsys) -> None:
    if isinstance(state_location, DatabaseSettings):
        config_data["state"] = {"database_url": state_location.url}
    else:
        config_data["state"] = {"database": str(state_location)}
    monkeypatch.setenv(config_data["guardian"]["key_env"], "0x" + "11" * 32)
    config_path = write_toml(config_data)
    write_toml(policy_data, "policies/drain.toml")
    store = IncidentStore(load_config(config_path).state)
    store.database.execute("INSERT INTO schema_versions (version, description, applied_at) VALUES (?, ?, ?)",
                           (LATEST + 1, "from a newer onguard", "2030-01-01"))
    store.close()
    assert main(["run", "--config", str(config_path)]) == 2
    out, err = capsys.readouterr()
    assert f"is at schema version {LATEST + 1}; this onguard knows versions up to {LATEST}" in err
    assert "hint: this database was written by a newer onguard; upgrade" in err
    assert out == "" and "Traceback" not in err


# ---- a server that stops answering ----


def test_a_statement_the_server_never_answers_is_given_up_and_the_connection_opened_again(postgres_url: str,
                                                                                         tmp_path: Path) -> None:
    """The daemon bounds each statement (the proxy keeps the connection open and forwards nothing: no TCP timeout
    would end the wait). Given up, the statement fails; so does the next one, at once, while the first has not
    returned; once the server answers, statements go through again on a new connection."""
    with SilentProxy(postgres_url) as proxy:
        store = IncidentStore(DatabaseSettings(path=tmp_path / "unused.db", url=proxy.url_through(postgres_url)))
        try:
            database = store.database
            assert isinstance(database, PostgresDatabase)
            database.deadline = 0.5
            store.save_checkpoint("blocks", 1, 10, "0x0a")
            proxy.blackhole()
            with pytest.raises(psycopg.OperationalError, match="did not answer within 0.5s"):
                database.scalar("SELECT 1")
            store.save_checkpoint("blocks", 1, 11, "0x0b")  # refused, kept in memory: nothing raised
            assert store.unsaved_writes == 1
            proxy.restore()
            wait_until(store.flush, "the kept checkpoint to be saved")
            assert database.scalar("SELECT 1") == 1
            assert store.checkpoint("blocks", 1) == (11, "0x0b")
        finally:
            store.close()


def test_reads_the_daemon_needs_while_it_acts_answer_from_memory_during_an_outage(postgres_url: str,
                                                                                 tmp_path: Path, capsys) -> None:
    store = IncidentStore(DatabaseSettings(path=tmp_path / "unused.db", url=postgres_url), claimant="r1")
    try:
        incident, _ = store.open_or_join(chain_id=1, policy_id="p", cooldown=60, severity="critical", title="t",
                                         dry_run=False, block=1, block_time=1, evidence={},
                                         status=IncidentStatus.OPEN, actions=("pause",))
        assert store.incident(incident.id).status == IncidentStatus.OPEN
        store.database.reachable = lambda: False  # type: ignore[attr-defined]  # cut off, as a replica's guard does
        assert store.responses(incident.id) == [] and store.timeline(incident.id) == []
        assert store.response_txs("0xG") == []
        assert store.incident(incident.id).policy_id == "p"  # as last read
        assert store.set_status(incident.id, IncidentStatus.SAFE, reason="paused")  # kept for later
        assert "database read FAILED" in capsys.readouterr().out
        store.database.reachable = lambda: True  # type: ignore[attr-defined]
        wait_until(store.flush, "the kept status to be saved")
        assert store.incident(incident.id).status == IncidentStatus.SAFE
    finally:
        store.close()
