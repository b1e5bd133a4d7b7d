"""What the daemon tells the people who run it: its decisions, responses, status changes, preflights and chain
health turned into metrics and notices. Every method is synchronous and never awaits (publishing is a queue put),
so the daemon calls them after the pause is spawned without delaying it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from onguard.arbiter import Decision
from onguard.chain.health import ChainHealth
from onguard.config import Config
from onguard.errors import ConfigError
from onguard.store.audit import AuditKind, AuditLog
from onguard.incidents.store import IncidentStatus, IncidentStore
from onguard.log import get_logger
from onguard.ops.dashboard import Dashboard
from onguard.ops.metrics import PendingResult, Stage
from onguard.ops.notice import Notice, NoticeKind, event_id
from onguard.ops.notify import DeliveryFailure
from onguard.ops.outbox import NoticeOutbox
from onguard.ops.service import Operations
from onguard.policies.engine import EngineResult
from onguard.policies.model import Severity
from onguard.preflight import PreflightReport
from onguard.store.database import WRITE_REFUSED

# Evidence values shown in a notice: scalars and small mappings only (a person reads it on a phone).
_EVIDENCE_LIMIT = 12


class GuardianOps:
    """The daemon's one operations collaborator: the Operations service plus the translation of domain events."""

    def __init__(self, service: Operations, store: IncidentStore, chain_id: int,
                 dashboard: Dashboard | None = None) -> None:
        self.service = service
        self.dashboard = dashboard
        self.metrics = service.metrics
        self._store = store
        self._chain_id = chain_id
        self._log = get_logger(component="ops", chain_id=chain_id)
        store.status_listeners.append(self.status_changed)

    @classmethod
    def build(cls, config: Config, store: IncidentStore, *, mempool_required: bool,
              hold_while: Any = None, leads: Callable[[], bool] | None = None) -> GuardianOps:
        """Reads the channels' secrets now: a missing variable is a ConfigError before anything starts. Notices go
        through the store's outbox; `leads()` (the leader lease; default: always) says whether this daemon
        delivers them."""
        audit = AuditLog(store.database)

        def audit_failure(failure: DeliveryFailure) -> None:
            store.durably("audit notification-failed",
                          lambda: audit.append(AuditKind.NOTIFICATION_FAILED, "daemon", failure.record()))

        service = Operations.build(config.notifications, config.metrics, chain_id=config.chain.chain_id,
                                   mempool_required=mempool_required, on_failure=[audit_failure],
                                   hold_while=hold_while, leads=leads,
                                   outbox=NoticeOutbox(store, config.chain.chain_id, config.replicas.id),
                                   replica=config.replicas.id if config.database_url else None)
        dashboard = None
        if config.dashboard.enabled:
            dashboard = Dashboard(config.dashboard, store, chain_id=config.chain.chain_id,
                                  readiness=service.readiness, snapshot=service.metrics.snapshot)
        return cls(service, store, config.chain.chain_id, dashboard)

    async def start(self, *, policies: Mapping[str, str], actions: list[str]) -> None:
        channels = list(self.service.notifier.channel_names) if self.service.notifier is not None else []
        self.metrics.declare(policies=policies, actions=actions, channels=channels)
        try:
            await self.service.start()
        except OSError as exc:  # before any chain work: a daemon nobody can probe is refused, loudly
            raise ConfigError(f"the metrics endpoint cannot listen: {exc.strerror or exc}", field="metrics.port",
                              hint="pick a free port (or host), or stop what holds it") from None
        if self.dashboard is not None:
            try:
                await self.dashboard.start(policies)
            except OSError as exc:
                await self.service.stop()
                raise ConfigError(f"the dashboard cannot listen: {exc.strerror or exc}", field="dashboard.port",
                                  hint="pick a free port (or host), or stop what holds it") from None

    async def stop(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.stop()
        await self.service.stop()

    def heartbeat(self) -> None:
        self.service.heartbeat()

    # ---- the block loop and the mempool path ----

    def evaluated(self, result: EngineResult) -> None:
        for policy_id in result.evaluated:
            self.metrics.policy_evaluated(policy_id)
        for failure in result.failures:
            self.metrics.policy_failed(failure.policy_id)

    def block_handled(self, number: int, head: int | None) -> None:
        """`head`: the chain's head as last looked at (it may trail the block just handled)."""
        head = max(head or number, number)
        self.metrics.chain_polled(head)
        self.metrics.block_handled(number, head - number)

    def pending_judged(self, result: PendingResult) -> None:
        self.metrics.pending_judged(result)

    def decided(self, decision: Decision, seen_at: float | None, *, path: str, at: float | None = None) -> None:
        """After the responses are spawned: the trip counted, seen → decided (`at`, default now) timed, the
        opening published."""
        policy = decision.finding.policy
        self.metrics.policy_tripped(policy.id, policy.severity)
        if seen_at is not None:
            self.metrics.stage(Stage.DECIDED, (time.perf_counter() if at is None else at) - seen_at)
        if decision.opened:
            self.service.publish(opened_notice(decision, self._chain_id, path=path))

    # ---- responses ----

    def stage(self, stage: Stage, seconds: float) -> None:
        self.metrics.stage(stage, seconds)

    def response_outcome(self, incident_ids: list[int], action: str, status: str,
                         detail: Mapping[str, Any]) -> None:
        self.metrics.response_outcome(action, status)
        for incident_id in incident_ids:
            incident = self._store.incident(incident_id)
            in_effect = status in ("mined", "already-done")
            summary = (f"Action {action} is in effect ({status})." if in_effect else
                       f"Action {action} is NOT in effect ({status}): the guardian retries with back-off; "
                       f"act by hand if it persists.")
            severity = Severity(incident.severity) if in_effect else Severity.CRITICAL
            self.service.publish(Notice(
                kind=NoticeKind.RESPONSE_OUTCOME, severity=severity, chain_id=self._chain_id,
                title=f"{action}: {status} · {incident.title}", summary=summary, policy_id=incident.policy_id,
                incident_id=incident_id, details={"action": action, "outcome": status, **detail},
                id=event_id(self._chain_id, NoticeKind.RESPONSE_OUTCOME, incident_id, action, status,
                            detail.get("tx_hash") or self._occurrence(incident_id, f"response-{status}", action))))

    # ---- incidents and the guardian's powers ----

    def status_changed(self, incident_id: int, detail: Mapping[str, Any]) -> None:
        """The store's status listener: every status change of an incident, whoever made it."""
        try:
            incident = self._store.incident(incident_id)
        except LookupError:
            return
        status = str(detail.get("to"))
        severity = Severity.CRITICAL if status == IncidentStatus.FAILED else Severity(incident.severity)
        # Which change of the incident this is: a status change is a compare-and-set, so every replica counting the
        # incident's changes once it is recorded finds the same number.
        changes = self._occurrence(incident_id, "status")
        self.service.publish(status_notice(
            incident_id, incident.policy_id, severity, incident.title, status, by=str(detail.get("by")),
            reason=str(detail.get("reason") or ""), chain_id=self._chain_id,
            notice_id=event_id(self._chain_id, NoticeKind.INCIDENT_STATUS, incident_id, detail.get("from"), status,
                               changes)))

    def preflight(self, report: PreflightReport) -> None:
        self.metrics.preflight(report.ok, None if report.ok else report.summary())
        if report.guardian is not None and report.balance_wei is not None:
            self.metrics.guardian_balance(report.guardian, report.balance_wei, report.balance_floor_wei)

    def cannot_act(self, incident_id: int, report: PreflightReport) -> None:
        """Told when the preflight opened its incident (once: opening is serialised)."""
        self.service.publish(Notice(
            kind=NoticeKind.GUARDIAN_CANNOT_ACT, severity=Severity.CRITICAL, chain_id=self._chain_id,
            title="the guardian can no longer act", summary=report.summary(), policy_id=None,
            incident_id=incident_id, details={"block": report.block,
                                              "failures": [f.check.value for f in report.failures]},
            id=event_id(self._chain_id, NoticeKind.GUARDIAN_CANNOT_ACT, "incident", incident_id)))

    def presigned_stale(self, action: str, signed_nonce: int, safe_nonce: int) -> None:
        self.service.publish(Notice(
            kind=NoticeKind.GUARDIAN_CANNOT_ACT, severity=Severity.CRITICAL, chain_id=self._chain_id,
            title=f"the pre-signed {action} is void",
            summary=(f"The Safe's nonce moved to {safe_nonce}: the owners' pre-signature of {action} (nonce "
                     f"{signed_nonce}) can no longer be executed. Owners must sign again "
                     f"(`onguard presign {action}`)."),
            details={"action": action, "signed_nonce": signed_nonce, "safe_nonce": safe_nonce},
            id=event_id(self._chain_id, NoticeKind.GUARDIAN_CANNOT_ACT, "presigned-stale", action, signed_nonce)))

    def _occurrence(self, incident_id: int, kind: str, action: str | None = None) -> str:
        """Which occurrence of a timeline entry an event is (the n-th status change, the n-th failure of a
        response): the same count on every replica once the entry is recorded. While the database does not hold
        every write the count may be stale: a fresh token then, so the notice is told, not taken for an earlier."""
        if not self._store.unsaved_writes:
            try:
                return str(sum(1 for entry in self._store.timeline(incident_id)
                               if entry.kind == kind and (action is None or entry.detail.get("action") == action)))
            except WRITE_REFUSED:
                pass
        return "unsaved-" + os.urandom(8).hex()

    def chain_seen(self, health: ChainHealth, mempool_live: bool | None) -> None:
        if health.head is not None:
            self.metrics.chain_polled(health.head)
        for endpoint in health.endpoints:
            self.metrics.endpoint_health(endpoint.label, endpoint.healthy)
        if mempool_live is not None:
            self.metrics.mempool_live(mempool_live)


def opened_notice(decision: Decision, chain_id: int, *, path: str) -> Notice:
    finding, incident = decision.finding, decision.incident
    policy = finding.policy
    if policy.dry_run:
        doing = "The policy is in dry run: nothing is sent."
    elif decision.actions:
        doing = f"The guardian is acting through the Safe: {', '.join(decision.actions)}."
    else:
        doing = "No action is configured for this policy: a person must look now."
    details: dict[str, Any] = {"verdict": finding.verdict.value, "path": path, "block": finding.block_number,
                               "actions": list(decision.actions)}
    for key, value in list(finding.evidence.items())[:_EVIDENCE_LIMIT]:
        details.setdefault(key, value)
    return Notice(kind=NoticeKind.INCIDENT_OPENED, severity=policy.severity, chain_id=chain_id, title=finding.summary,
                  summary=f"Policy {policy.id} tripped at block {finding.block_number:,}. {doing}",
                  policy_id=policy.id, incident_id=incident.id, details=details,
                  id=event_id(chain_id, NoticeKind.INCIDENT_OPENED, incident.id))


def status_notice(incident_id: int, policy_id: str, severity: Severity, title: str, status: str, *, by: str,
                  reason: str, chain_id: int, notice_id: str | None = None) -> Notice:
    """An incident's status changed (`status` is an IncidentStatus value, or "acknowledged"). `notice_id`: the
    event's (the daemon's); a person's command gets a fresh one."""
    notice = Notice(kind=NoticeKind.INCIDENT_STATUS, severity=severity, chain_id=chain_id,
                    title=f"#{incident_id} {status} · {title}",
                    summary=f"Incident {incident_id} is now {status} (by {by}){': ' + reason if reason else ''}.",
                    policy_id=policy_id, incident_id=incident_id,
                    details={"status": status, "by": by, "reason": reason})
    return notice if notice_id is None else replace(notice, id=notice_id)
