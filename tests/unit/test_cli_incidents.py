"""`onguard incidents show` prints what the timeline holds (each stage's milliseconds, the outcome); `onguard
incidents resolve` ends an incident with who and why, audited, and refuses bad input with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from onguard.cli.main import main
from onguard.store.audit import AuditLog
from onguard.incidents.store import IncidentStatus, IncidentStore, Outcome, ResponseStatus

TX = "0x" + "ab" * 32


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "onguard.db"
    store = IncidentStore(path)
    incident, _ = store.open_or_join(chain_id=31337, policy_id="vault-cash-guard", cooldown=3600.0,
                                     severity="critical", title="pending drain", dry_run=False, block=20,
                                     block_time=1_000, evidence={"path": "mempool", "threat_tx": TX},
                                     status=IncidentStatus.OPEN, actions=("pause_vault",))
    store.add_timeline(incident.id, "decided", {"path": "mempool", "threat_tx": TX, "decided_ms": 12.5})
    store.update_response(incident.id, "pause_vault", ResponseStatus.SENT, tx_hash=TX)
    store.add_timeline(incident.id, "response-broadcast", {"action": "pause_vault", "tx_hash": TX, "nonce": 0,
                                                           "signed_ms": 20.1, "broadcast_ms": 25.3})
    store.update_response(incident.id, "pause_vault", ResponseStatus.MINED, tx_hash=TX, block_number=21,
                          gas_used=80_000)
    store.add_timeline(incident.id, "response-included", {"action": "pause_vault", "block": 21, "position": 0,
                                                          "included_ms": 1012.0})
    store.add_timeline(incident.id, "race", {"threat_tx": TX, "pause_first": True,
                                             "pause": "block 21 position 0", "threat": "block 21 position 1"})
    store.record_outcome(incident.id, "pause_vault", Outcome.STOPPED_BEFORE_ATTACK,
                         {"landed": "stopped-before-attack", "pause": "block 21 position 0", "harm_before": []})
    store.set_status(incident.id, IncidentStatus.SAFE, reason="paused() holds")
    store.close()
    return path


def test_show_prints_the_stages_and_the_outcome(db: Path, capsys) -> None:
    assert main(["incidents", "--db", str(db), "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "status safe" in out
    assert "stages    decided 12.5 ms  signed 20.1 ms  broadcast 25.3 ms  included 1012.0 ms" in out
    assert "pause_first=True" in out and "threat=block 21 position 1" in out
    assert "outcome stopped-before-attack: landed stopped-before-attack; pause block 21 position 0" in out


def test_resolve_records_who_and_why_in_the_audit_log(db: Path, capsys) -> None:
    assert main(["incidents", "--db", str(db), "resolve", "1", "--reason", "fixed; owners unpause",
                 "--by", "alice"]) == 0
    assert "resolved by alice" in capsys.readouterr().out
    store = IncidentStore(db)
    try:
        assert store.incident(1).status == IncidentStatus.RESOLVED
        assert store.watched_incidents(31337) == []
        last = list(AuditLog(store.database).entries())[-1]
        assert (last.kind, last.actor, last.details["to"], last.details["reason"]) == (
            "incident-status", "alice", "resolved", "fixed; owners unpause")
    finally:
        store.close()


@pytest.mark.parametrize("argv, message", [
    (["resolve", "9", "--reason", "x"], "no incident with id 9"),
    (["resolve", "1", "--reason", "  "], "--reason is empty"),
])
def test_resolve_refuses_bad_input_with_exit_2(db: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["incidents", "--db", str(db), *argv]) == 2
    assert message in capsys.readouterr().err


def test_resolving_twice_is_refused(db: Path, capsys) -> None:
    assert main(["incidents", "--db", str(db), "resolve", "1", "--reason", "done"]) == 0
    assert main(["incidents", "--db", str(db), "resolve", "1", "--reason", "again"]) == 2
    assert "already resolved" in capsys.readouterr().err


def test_ack_and_note_record_who_and_why_in_the_timeline_and_the_audit_log(db: Path, capsys) -> None:
    assert main(["incidents", "--db", str(db), "ack", "1", "--reason", "looking at the vault", "--by", "bob"]) == 0
    assert main(["incidents", "--db", str(db), "note", "1", "the oracle was fed a stale price", "--by", "carol"]) == 0
    assert "acknowledged by bob" in capsys.readouterr().out
    store = IncidentStore(db)
    try:
        assert store.incident(1).status == IncidentStatus.SAFE  # an acknowledgement changes no status
        kinds = {e.kind: e.detail for e in store.timeline(1)}
        assert kinds["acknowledged"] == {"by": "bob", "reason": "looking at the vault"}
        assert kinds["note"] == {"by": "carol", "reason": "the oracle was fed a stale price"}
        audited = [(e.kind, e.actor, e.details["incident_id"]) for e in AuditLog(store.database).entries()][-2:]
        assert audited == [("incident-acknowledged", "bob", 1), ("incident-note", "carol", 1)]
    finally:
        store.close()
    assert main(["incidents", "--db", str(db), "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "acked     by bob" in out
    assert "race      pause FIRST: pause at block 21 position 0" in out


@pytest.mark.parametrize("argv, message", [
    (["ack", "1", "--reason", " "], "the text is empty"),
    (["note", "7", "x"], "no incident with id 7"),
])
def test_ack_and_note_refuse_bad_input_with_exit_2(db: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["incidents", "--db", str(db), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_second_ack_is_refused_naming_the_first(db: Path, capsys) -> None:
    assert main(["incidents", "--db", str(db), "ack", "1", "--reason", "mine", "--by", "bob"]) == 0
    assert main(["incidents", "--db", str(db), "ack", "1", "--reason", "mine too", "--by", "eve"]) == 2
    assert "acknowledged by bob" in capsys.readouterr().err


def test_the_report_holds_the_stages_the_race_the_outcome_and_what_people_did(db: Path, tmp_path: Path,
                                                                               capsys) -> None:
    main(["incidents", "--db", str(db), "ack", "1", "--reason", "on it", "--by", "bob"])
    main(["incidents", "--db", str(db), "resolve", "1", "--reason", "root cause fixed", "--by", "alice"])
    out = tmp_path / "report.md"
    assert main(["incidents", "--db", str(db), "report", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Incident 1: pending drain")
    assert "| decided | 12.5 |" in text and "| included | 1012.0 |" in text
    assert "pause FIRST: pause at block 21 position 0" in text
    assert "| pause_vault | mined | " + TX in text
    assert "Lost: nothing — the pause landed before any harmful transaction" in text
    assert "| acknowledged | bob | on it |" in text and "| status | alice | root cause fixed |" in text
    assert "`onguard recover ID` prepares one" in text


def test_a_report_to_an_unwritable_path_is_exit_2(db: Path, tmp_path: Path, capsys) -> None:
    assert main(["incidents", "--db", str(db), "report", "1", "--out", str(tmp_path / "no" / "dir" / "r.md")]) == 2
    assert "--out" in capsys.readouterr().err
