"""The arbiter: turns findings into decisions — one incident per tripped condition, cooldowns, dry-run. The check
for an open incident and the opening (with its response claims) are one database transaction."""

from __future__ import annotations

from dataclasses import dataclass

from onguard.store.audit import AuditKind, AuditLog
from onguard.incidents.store import Incident, IncidentStatus, IncidentStore
from onguard.log import get_logger
from onguard.policies.model import Finding


@dataclass(frozen=True, slots=True)
class Decision:
    finding: Finding
    incident: Incident
    opened: bool                 # False: the finding joined an incident already open for this policy
    actions: tuple[str, ...]     # the pre-authorised actions to take now (none when joined, dry-run or alert)


class Arbiter:
    def __init__(self, store: IncidentStore, chain_id: int) -> None:
        self._store = store
        self._chain_id = chain_id
        self._audit = AuditLog(store.database)
        self._log = get_logger(component="arbiter", chain_id=chain_id)

    def decide(self, finding: Finding) -> Decision:
        """Claims (opens or joins the incident) and records the decision in the audit log."""
        decision = self.claim(finding)
        self.record(decision)
        return decision

    def claim(self, finding: Finding) -> Decision:
        """The incident opened (its actions claimed) or joined, in one database transaction: what the response
        needs before it may go out. The audit entry and the log line are `record`'s, which the pre-emption path
        calls once the pause is on the wire."""
        policy = finding.policy
        if policy.dry_run:
            status = IncidentStatus.DRY_RUN
        elif policy.alert_only:
            status = IncidentStatus.ALERTED
        else:
            status = IncidentStatus.OPEN
        actions = () if policy.dry_run else policy.response
        incident, opened = self._store.open_or_join(
            chain_id=self._chain_id, policy_id=policy.id, cooldown=policy.cooldown, severity=policy.severity.value,
            title=finding.summary, dry_run=policy.dry_run, block=finding.block_number,
            block_time=finding.block_time, evidence={"verdict": finding.verdict.value, "path": "block",
                                                     **finding.evidence},
            status=status, actions=actions, seen=finding.evidence)
        # Joined: the reconciler keeps a joined incident's actions in effect; nothing new is decided here.
        return Decision(finding=finding, incident=incident, opened=opened, actions=actions if opened else ())

    def record(self, decision: Decision) -> None:
        """The decision's log line and audit-log entry."""
        finding, incident, policy = decision.finding, decision.incident, decision.finding.policy
        if decision.opened:
            # The guardian's own authority at stake (the built-in self-defence) is said as loudly as a log can.
            loud = finding.evidence.get("self_defence") and not policy.alert_only
            log = self._log.critical if loud else self._log.warning
            log("policy tripped: incident opened", policy_id=policy.id, incident_id=incident.id,
                severity=policy.severity.value, block=finding.block_number, summary=finding.summary,
                actions=list(decision.actions) or None, dry_run=policy.dry_run or None)
        else:
            self._log.info("policy tripped again: joined the open incident", policy_id=policy.id,
                           incident_id=incident.id, block=finding.block_number)
        self._record(finding, incident, opened=decision.opened, actions=decision.actions)

    def _record(self, finding: Finding, incident: Incident, *, opened: bool, actions: tuple[str, ...]) -> None:
        self._store.durably("audit decision",
                            lambda: self._append(finding, incident, opened=opened, actions=actions))

    def _append(self, finding: Finding, incident: Incident, *, opened: bool, actions: tuple[str, ...]) -> None:
        self._audit.append(AuditKind.DECISION, "daemon", {
            "chain_id": self._chain_id, "policy_id": finding.policy.id,
            "incident_id": self._store.saved_id(incident.id),  # run later, once a provisional id is saved
            "opened": opened, "actions": list(actions), "block": finding.block_number,
            "verdict": finding.verdict.value, "summary": finding.summary, "dry_run": finding.policy.dry_run})
