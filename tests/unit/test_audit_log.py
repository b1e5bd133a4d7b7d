"""The audit log: entries chain by hash, any edit, deletion or re-hashed edit is found and named, exports verify
on their own, and a config change since the previous start is recorded."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from onguard.cli.main import main
from onguard.store.audit import GENESIS, AuditKind, AuditLog, Break, Head, entry_hash, read_export, \
    record_config, verify_entries
from onguard.incidents.store import IncidentStore


@pytest.fixture
def store(tmp_path: Path):
    store = IncidentStore(tmp_path / "onguard.db")
    store.path = tmp_path / "onguard.db"  # these tests edit the file as someone with write access to it could
    yield store
    store.close()


def filled(store: IncidentStore, count: int = 5) -> AuditLog:
    audit = AuditLog(store.database)
    for n in range(count):
        audit.append(AuditKind.SIGNATURE, f"0x{n:040x}", {"n": n, "big": 10**24, "raw": b"\x01\x02"})
    return audit


def tamper(path: Path, sql: str, *args: object) -> None:
    """What someone with write access to the file can do: the triggers are no obstacle to them."""
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
    db.execute(sql, args)
    db.commit()
    db.close()


def test_entries_chain_from_genesis_and_verify(store):
    audit = filled(store)
    entries = list(audit.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:]))
    assert entries[2].details == {"n": 2, "big": str(10**24), "raw": "0x0102"}
    assert entries[2].hash == entry_hash(3, entries[2].at, AuditKind.SIGNATURE, entries[2].actor,
                                         entries[2].details, entries[1].hash)
    assert audit.verify() == (5, None)


def test_the_database_refuses_plain_updates_and_deletes(store):
    filled(store, 2)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.database.execute("UPDATE audit_log SET actor='x' WHERE seq=1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.database.execute("DELETE FROM audit_log WHERE seq=1")


def test_an_edited_entry_is_named(store):
    filled(store)
    tamper(store.path, "UPDATE audit_log SET details=? WHERE seq=3", json.dumps({"n": 99}))
    _, broken = AuditLog(store.database).verify()
    assert broken is not None and broken.seq == 3 and "content" in broken.reason


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(store):
    audit = filled(store)
    third = next(e for e in audit.entries() if e.seq == 3)
    forged = entry_hash(3, third.at, third.kind, "0xforger", third.details, third.prev_hash)
    tamper(store.path, "UPDATE audit_log SET actor='0xforger', hash=? WHERE seq=3", forged)
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 4 and "prev_hash" in broken.reason


def test_a_deleted_entry_is_a_gap(store):
    audit = filled(store)
    tamper(store.path, "DELETE FROM audit_log WHERE seq=2")
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 2 and "missing" in broken.reason


def test_cli_verify_and_export(store, tmp_path, capsys):
    filled(store)
    db = str(store.path)
    assert main(["audit", "--db", db, "verify"]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out
    export = tmp_path / "audit.jsonl"
    assert main(["audit", "--db", db, "export", str(export)]) == 0
    lines = export.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["hash"] for line in lines)
    assert main(["audit", "verify", "--file", str(export)]) == 0
    # The exported file verifies on its own, and an edit in it is found.
    item = json.loads(lines[3])
    item["details"]["n"] = 42
    lines[3] = json.dumps(item)
    export.write_text("\n".join(lines) + "\n")
    assert verify_entries(read_export(export))[1].seq == 4
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(export)]) == 1
    assert "BROKEN at entry 4" in capsys.readouterr().out
    tamper(store.path, "UPDATE audit_log SET kind='decision' WHERE seq=5")
    assert main(["audit", "--db", db, "verify"]) == 1
    assert "BROKEN at entry 5" in capsys.readouterr().out


def test_cli_a_file_that_is_not_an_export_is_bad_input(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("not json\n")
    result = subprocess.run([sys.executable, "-m", "onguard.cli.main", "audit", "verify", "--file", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "line 1 is not an audit entry" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_recorded_on_first_start_and_on_change_only(store, tmp_path):
    audit = AuditLog(store.database)
    config, policy = tmp_path / "onguard.toml", tmp_path / "p.toml"
    config.write_text("a = 1\n")
    policy.write_text("id = 'x'\n")
    first = record_config(audit, "daemon", [config, policy])
    assert first is not None and first.details["first"] is True
    assert record_config(audit, "daemon", [config, policy]) is None  # unchanged: nothing new
    policy.write_text("id = 'y'\n")
    changed = record_config(audit, "daemon", [config, policy])
    assert changed is not None and changed.details["changed"] == [str(policy)]
    assert [e.kind for e in audit.entries()] == [AuditKind.CONFIG, AuditKind.CONFIG]
    assert audit.verify() == (2, None)


def test_every_arbiter_decision_is_audited(store):
    from onguard.arbiter import Arbiter
    from onguard.policies.model import Finding, PolicyCommon, Severity, Verdict

    policy = PolicyCommon(id="vault-drain", kind="event", description="drain", severity=Severity.CRITICAL,
                          response=("pause_vault",), cooldown=3600.0, enabled=True, dry_run=False,
                          confirmations=0, file=Path("p.toml"))
    arbiter = Arbiter(store, 31337)
    for block in (10, 11):
        arbiter.decide(Finding(policy=policy, verdict=Verdict.CONDITION_MET, summary="sum", block_number=block,
                               block_time=1_700_000_000 + block, evidence={"value": 10**24}))
    decisions = list(AuditLog(store.database).entries(AuditKind.DECISION))
    assert [(d.details["opened"], d.details["actions"], d.details["block"]) for d in decisions] == [
        (True, ["pause_vault"], 10), (False, [], 11)]
    assert decisions[0].details["incident_id"] == decisions[1].details["incident_id"] == 1


def delete_entries(path: Path, where: str) -> None:
    tamper(path, f"DELETE FROM audit_log WHERE {where}")


def test_the_head_follows_every_append(store):
    audit = filled(store, 3)
    newest = list(audit.entries())[-1]
    assert audit.head() == Head(seq=3, hash=newest.hash)


def test_an_empty_log_is_intact_and_its_head_is_genesis(store):
    audit = AuditLog(store.database)
    assert audit.head() == Head(seq=0, hash=GENESIS)
    assert audit.verify() == (0, None)


def test_the_last_entry_deleted_is_found_missing(store):
    audit = filled(store)
    delete_entries(store.path, "seq=5")
    count, broken = audit.verify()
    assert count == 4
    assert broken == Break(5, "entry 5 missing: the log ends at entry 4 (4 entries) but its head is entry 5 "
                              "(deleted from the end)")


def test_every_entry_deleted_is_found_missing(store):
    audit = filled(store)
    delete_entries(store.path, "1=1")
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 1
    assert broken.reason.startswith("entries 1 to 5 missing: the log ends at entry 0")


def test_a_replaced_newest_entry_does_not_match_the_head(store):
    audit = filled(store)
    fifth = list(audit.entries())[-1]
    forged = entry_hash(5, fifth.at, fifth.kind, "0xforger", fifth.details, fifth.prev_hash)
    tamper(store.path, "UPDATE audit_log SET actor='0xforger', hash=? WHERE seq=5", forged)
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 5 and "is not the recorded head's" in broken.reason


def test_a_deleted_head_record_is_found(store):
    audit = filled(store)
    db = sqlite3.connect(store.path)
    db.executescript("DROP TRIGGER audit_head_no_delete; DELETE FROM audit_head;")
    db.close()
    assert AuditLog(store.database).head() is None  # not silently re-created from what is left
    _, broken = audit.verify()
    assert broken is not None and "head record" in broken.reason and "was deleted" in broken.reason


def test_an_append_after_a_truncation_keeps_the_gap_visible(store):
    audit = filled(store)
    delete_entries(store.path, "seq >= 4")
    appended = audit.append(AuditKind.DECISION, "daemon", {"after": "truncation"})
    assert appended.seq == 6  # chained to the head, not to the surviving entry 3
    _, broken = audit.verify()
    assert broken is not None and broken.seq == 4 and "missing" in broken.reason


def test_the_head_cannot_move_back(store):
    filled(store, 2)
    with pytest.raises(sqlite3.IntegrityError, match="only moves forward"):
        store.database.execute("UPDATE audit_head SET seq=1")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        store.database.execute("DELETE FROM audit_head")


def test_a_database_from_before_the_head_gets_the_newest_entry_as_its_head(tmp_path):
    path = tmp_path / "old.db"
    store = IncidentStore(path)
    audit = filled(store, 3)
    store.close()
    db = sqlite3.connect(path)
    # Drops its triggers too: the file as an older onguard left it (which recorded no schema versions).
    db.executescript("DROP TABLE audit_head; DROP TABLE schema_versions;")
    db.close()
    store = IncidentStore(path)
    try:
        audit = AuditLog(store.database)
        assert audit.head() == Head(seq=3, hash=list(audit.entries())[-1].hash)
        assert audit.verify() == (3, None)
    finally:
        store.close()


def test_cli_database_verify_fails_on_a_truncated_log(store, capsys):
    filled(store)
    delete_entries(store.path, "seq=5")
    assert main(["audit", "--db", str(store.path), "verify"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN at entry 5: entry 5 missing: the log ends at entry 4")


def test_cli_export_prints_the_head_and_verify_checks_a_file_against_it(store, tmp_path, capsys):
    audit = filled(store)
    newest = list(audit.entries())[-1]
    export = tmp_path / "audit.jsonl"
    assert main(["audit", "--db", str(store.path), "export", str(export)]) == 0
    out = capsys.readouterr().out
    assert f"head: entry 5 {newest.hash}\n" in out

    assert main(["audit", "verify", "--file", str(export), "--head", newest.hash]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out
    # Without the head, the file's end cannot be checked, and verify says so.
    assert main(["audit", "verify", "--file", str(export)]) == 0
    assert "not checked: whether entries were cut off the end" in capsys.readouterr().out

    lines = export.read_text().splitlines()
    export.write_text("\n".join(lines[:3]) + "\n")  # the last two entries cut off
    assert main(["audit", "verify", "--file", str(export)]) == 0  # the chain itself still holds
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(export), "--head", newest.hash]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"BROKEN at entry 4: the head {newest.hash[:16]}… is not in the log, which ends at "
                          "entry 3")
    export.write_text("")
    assert main(["audit", "verify", "--file", str(export), "--head", newest.hash]) == 1


def test_cli_a_file_longer_than_the_head_verifies_up_to_it(store, tmp_path, capsys):
    audit = filled(store, 3)
    head = audit.head()
    filled(store, 2)
    export = tmp_path / "audit.jsonl"
    assert main(["audit", "--db", str(store.path), "export", str(export)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(export), "--head", head.hash]) == 0
    assert "is entry 3; 2 newer entries after it" in capsys.readouterr().out


def test_cli_a_malformed_head_is_bad_input(store, tmp_path, capsys):
    export = tmp_path / "audit.jsonl"
    filled(store, 1)
    assert main(["audit", "--db", str(store.path), "export", str(export)]) == 0
    assert main(["audit", "verify", "--file", str(export), "--head", "abc"]) == 2
    assert "--head: 'abc' is not a head hash" in capsys.readouterr().err


def test_an_entry_added_behind_the_heads_back_is_found(store):
    audit = filled(store, 2)
    second = list(audit.entries())[-1]
    at = "2026-01-01T00:00:00.000+00:00"
    digest = entry_hash(3, at, AuditKind.DECISION, "0xintruder", {}, second.hash)
    db = sqlite3.connect(store.path)  # a well-chained entry, written straight into the table
    db.execute("INSERT INTO audit_log VALUES (3, ?, ?, '0xintruder', '{}', ?, ?)",
               (at, AuditKind.DECISION, second.hash, digest))
    db.commit()
    db.close()
    _, broken = audit.verify()
    assert broken == Break(3, "entries after the recorded head (entry 2) were not written by onguard")


def test_cli_database_cut_short_with_its_head_rewritten_is_caught_by_a_head_kept_apart(store, capsys):
    audit = filled(store)
    kept = audit.head()
    third = list(audit.entries())[2]
    db = sqlite3.connect(store.path)  # someone who can write the file rewrites the head record as well
    db.executescript("DROP TRIGGER audit_log_no_delete; DROP TRIGGER audit_head_forward_only;")
    db.execute("DELETE FROM audit_log WHERE seq > 3")
    db.execute("UPDATE audit_head SET seq=3, hash=?", (third.hash,))
    db.commit()
    db.close()
    assert main(["audit", "--db", str(store.path), "verify"]) == 0  # consistent with itself: only the kept head tells
    capsys.readouterr()
    assert main(["audit", "--db", str(store.path), "verify", "--head", kept.hash]) == 1
    assert capsys.readouterr().out.startswith(f"BROKEN at entry 4: the head {kept.hash[:16]}… is not in the log")
    assert main(["audit", "--db", str(store.path), "verify", "--head", third.hash]) == 0
    assert "it holds the given head" in capsys.readouterr().out
