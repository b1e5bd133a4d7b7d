"""GuardianOps, the daemon's operations collaborator, turns domain events into notices and metrics: an opening
says what the guardian does (acting, dry run, or nothing configured: a person must look); a status change is told
whoever made it, critical when the incident failed; a response not in effect and a guardian that cannot act are
critical; a failed delivery is appended to the audit log. (The notifier is replaced by a recorder here; the real
delivery path is tested against real receivers in test_notifications.py and tests/chain/test_operations_wiring.py.)"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from conftest import base_config_data, to_toml

from onguard.arbiter import Decision
from onguard.config import load_config
from onguard.errors import ConfigError
from onguard.store.audit import AuditLog
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.ops.metrics import Metrics
from onguard.ops.notice import Notice, NoticeKind
from onguard.ops.reporting import GuardianOps
from onguard.ops.service import Operations
from onguard.policies.model import Finding, PolicyCommon, Severity, Verdict
from onguard.preflight import Check, CheckResult, PreflightReport
from onguard.store.outbox import DeliveryStatus, Outbox


class Recorder:
    def __init__(self) -> None:
        self.published: list[Notice] = []

    def publish(self, notice: Notice) -> None:
        self.published.append(notice)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = IncidentStore(tmp_path / "state.db")
    yield opened
    opened.close()


def ops_over(store: IncidentStore) -> tuple[GuardianOps, Recorder]:
    recorder = Recorder()
    service = Operations(Metrics(), recorder, None, lambda: None, chain_id=1, alert_after=60.0)  # type: ignore[arg-type]
    return GuardianOps(service, store, chain_id=1), recorder


def policy(*, response: tuple[str, ...] = ("pause_vault",), dry_run: bool = False) -> PolicyCommon:
    return PolicyCommon(id="vault-drain", kind="event", description="", severity=Severity.HIGH, response=response,
                        cooldown=60.0, enabled=True, dry_run=dry_run, confirmations=0, file=Path("p.toml"))


def decision(store: IncidentStore, common: PolicyCommon) -> Decision:
    finding = Finding(policy=common, verdict=Verdict.CONDITION_MET, summary="vault drained 30%", block_number=12,
                      block_time=1_000, evidence={"value": 10**24, "transactions": ["0x" + "ab" * 32]})
    incident, _ = store.open_or_join(chain_id=1, policy_id=common.id, cooldown=60.0, severity="high",
                                     title=finding.summary, dry_run=common.dry_run, block=12, block_time=1_000,
                                     evidence={}, status=IncidentStatus.OPEN, actions=common.response)
    return Decision(finding=finding, incident=incident, opened=True,
                    actions=() if common.dry_run else common.response)


@pytest.mark.parametrize("common, says", [
    (policy(), "The guardian is acting through the Safe: pause_vault."),
    (policy(dry_run=True), "The policy is in dry run: nothing is sent."),
    (policy(response=()), "No action is configured for this policy: a person must look now."),
])
def test_an_opening_says_what_the_guardian_does(store: IncidentStore, common: PolicyCommon, says: str) -> None:
    ops, recorder = ops_over(store)
    ops.decided(decision(store, common), None, path="block")
    [opened] = recorder.published
    assert opened.kind == NoticeKind.INCIDENT_OPENED and opened.severity == Severity.HIGH
    assert opened.summary == f"Policy vault-drain tripped at block 12. {says}"
    assert opened.details["value"] == 10**24 and opened.details["path"] == "block"


def test_a_joined_trip_is_counted_but_not_told_again(store: IncidentStore) -> None:
    ops, recorder = ops_over(store)
    joined = decision(store, policy())
    ops.decided(Decision(finding=joined.finding, incident=joined.incident, opened=False, actions=()), None,
                path="block")
    assert recorder.published == []
    assert ops.metrics.trips.labels("vault-drain", "high")._value.get() == 1


def test_every_status_change_is_told_and_a_failure_is_critical(store: IncidentStore) -> None:
    ops, recorder = ops_over(store)
    incident = decision(store, policy()).incident
    store.set_status(incident.id, IncidentStatus.SAFE, reason="paused() holds")
    store.set_status(incident.id, IncidentStatus.FAILED, reason="unpaused by someone")
    store.set_status(incident.id, IncidentStatus.RESOLVED, actor="alice", reason="over")
    told = [(n.details["status"], n.severity, n.details["by"]) for n in recorder.published]
    assert told == [("safe", Severity.HIGH, "daemon"), ("failed", Severity.CRITICAL, "daemon"),
                    ("resolved", Severity.HIGH, "alice")]


def test_a_response_not_in_effect_and_a_guardian_that_cannot_act_are_critical(store: IncidentStore) -> None:
    ops, recorder = ops_over(store)
    incident = decision(store, policy()).incident
    ops.response_outcome([incident.id], "pause_vault", "mined", {"tx_hash": "0x01"})
    ops.response_outcome([incident.id], "pause_vault", "failed", {"error": "every endpoint refused"})
    report = PreflightReport(block=40, results=(CheckResult(Check.BALANCE, False, "0 ETH", "send ETH"),),
                             gas_estimates={}, gas_limits={})
    ops.cannot_act(incident.id, report)
    mined, failed, cannot = recorder.published
    assert (mined.severity, failed.severity, cannot.severity) == (Severity.HIGH, Severity.CRITICAL, Severity.CRITICAL)
    assert "NOT in effect" in failed.summary and cannot.kind == NoticeKind.GUARDIAN_CANNOT_ACT
    assert ops.metrics.responses.labels("pause_vault", "failed")._value.get() == 1


def hook_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose one webhook channel nobody answers (port 9), tried once."""
    data = base_config_data()
    data["notifications"] = {"max_attempts": 1,
                             "channels": {"hook": {"type": "webhook", "url_env": "HOOK", "secret_env": "SECRET"}},
                             "routes": [{"channels": ["hook"]}]}
    path = tmp_path / "onguard.toml"
    path.write_text(to_toml(data))
    monkeypatch.setenv("HOOK", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("SECRET", "s")
    return path


def test_a_notice_that_reaches_no_one_is_appended_to_the_audit_log(store: IncidentStore, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(hook_config(tmp_path, monkeypatch))
    ops = GuardianOps.build(config, store, mempool_required=False)
    sent = Notice(kind=NoticeKind.TEST, severity=Severity.INFO, chain_id=config.chain.chain_id, title="t",
                  summary="s")

    async def scenario() -> None:
        assert ops.service.notifier is not None
        ops.service.notifier.start()
        ops.service.publish(sent)
        await ops.service.notifier.flush()
        await ops.stop()

    asyncio.run(scenario())
    [entry] = [e for e in AuditLog(store.database).entries() if e.kind == "notification-failed"]
    assert (entry.details["channel"], entry.details["kind"], entry.details["attempts"]) == ("hook", "test", 1)
    [delivery] = Outbox(store.database).deliveries(sent.id)
    assert delivery.status == DeliveryStatus.FAILED


def test_a_notice_the_daemon_could_not_deliver_before_it_stopped_stays_in_the_outbox(
        store: IncidentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a failure: the next start (or, among replicas, the leader) delivers it."""
    config = load_config(hook_config(tmp_path, monkeypatch))
    ops = GuardianOps.build(config, store, mempool_required=False)
    sent = Notice(kind=NoticeKind.TEST, severity=Severity.INFO, chain_id=config.chain.chain_id, title="t",
                  summary="s")
    ops.service.publish(sent)
    asyncio.run(ops.stop())  # never started
    assert [e for e in AuditLog(store.database).entries() if e.kind == "notification-failed"] == []
    [delivery] = Outbox(store.database).deliveries(sent.id)
    assert delivery.status == DeliveryStatus.PENDING


def test_replicas_telling_one_event_give_it_one_notice_id_and_each_event_its_own(store: IncidentStore) -> None:
    """Two replicas (two stores on one database) publish the same opening, status change and outcome: the same
    ids; two failures of one response are two events."""
    other = IncidentStore(store.name)
    try:
        ops, told = ops_over(store)
        twin, twin_told = ops_over(other)
        made = decision(store, policy())
        for each in (ops, twin):
            each.decided(made, None, path="block")
        store.set_status(made.incident.id, IncidentStatus.SAFE, reason="paused() holds")
        twin.status_changed(made.incident.id, {"from": "open", "to": "safe", "by": "daemon"})
        for each in (ops, twin):
            each.response_outcome([made.incident.id], "pause_vault", "mined", {"tx_hash": "0x01"})
        assert [n.id for n in told.published] == [n.id for n in twin_told.published]
        assert len({n.id for n in told.published}) == 3
        for _ in range(2):
            store.update_response(made.incident.id, "pause_vault", ResponseStatus.FAILED, error="refused")
            ops.response_outcome([made.incident.id], "pause_vault", "failed", {"error": "refused"})
            twin.response_outcome([made.incident.id], "pause_vault", "failed", {"error": "refused"})
        first, second = told.published[-2:]
        assert first.id != second.id and [first.id, second.id] == [n.id for n in twin_told.published[-2:]]
    finally:
        other.close()


def test_a_metrics_port_already_taken_is_a_config_error_naming_the_field(store: IncidentStore, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data = base_config_data()
        data["metrics"] = {"port": taken.getsockname()[1]}
        path = tmp_path / "onguard.toml"
        path.write_text(to_toml(data))
        ops = GuardianOps.build(load_config(path), store, mempool_required=False)
        with pytest.raises(ConfigError) as caught:
            asyncio.run(ops.start(policies={}, actions=[]))
    assert caught.value.field == "metrics.port" and "cannot listen" in caught.value.message


def test_a_voided_pre_signature_pages_as_a_guardian_that_cannot_act(store: IncidentStore) -> None:
    ops, recorder = ops_over(store)
    ops.presigned_stale("pause_vault", 4, 5)
    [notice] = recorder.published
    assert (notice.kind, notice.severity) == (NoticeKind.GUARDIAN_CANNOT_ACT, Severity.CRITICAL)
    assert "onguard presign pause_vault" in notice.summary and notice.details["safe_nonce"] == 5
