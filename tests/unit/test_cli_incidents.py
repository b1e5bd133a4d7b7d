"""`onguard incidents show` prints what the timeline holds (each stage's milliseconds, the outcome); `onguard
incidents resolve` ends an incident with who and why, audited, and refuses bad input with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from onguard.cli.main import main
from onguard.incidents.audit import AuditLog
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
        last = list(AuditLog(store).entries())[-1]
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
