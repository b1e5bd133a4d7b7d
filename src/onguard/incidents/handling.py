"""A person's part in an incident: acknowledging it and adding notes, each recorded with who, when and why in the
incident's timeline and the hash-chained audit log. (Resolving is a status change: `IncidentStore.set_status`.)"""

from __future__ import annotations

from onguard.errors import InputError
from onguard.store.audit import AuditKind, AuditLog
from onguard.incidents.store import Incident, IncidentStatus, IncidentStore

ACKNOWLEDGED = "acknowledged"  # the timeline entry of an acknowledgement (and the notice's status)
NOTE = "note"


def acknowledge(store: IncidentStore, incident: Incident, *, by: str, reason: str) -> None:
    """Someone has taken the incident in hand. An acknowledgement is no status: the guardian keeps the incident's
    actions in effect until it is resolved. Acknowledging twice is refused (who did it first is in `show`)."""
    if incident.status == IncidentStatus.RESOLVED:
        raise InputError(f"incident {incident.id} is resolved", hint="`onguard incidents show ID`")
    earlier = next((e for e in store.timeline(incident.id) if e.kind == ACKNOWLEDGED), None)
    if earlier is not None:
        raise InputError(f"incident {incident.id} was acknowledged by {earlier.detail.get('by')} at {earlier.at}",
                         hint="add what you do with `onguard incidents note ID TEXT`")
    _record(store, incident.id, ACKNOWLEDGED, AuditKind.INCIDENT_ACK, by=by, text=reason)


def add_note(store: IncidentStore, incident: Incident, *, by: str, text: str) -> None:
    _record(store, incident.id, NOTE, AuditKind.INCIDENT_NOTE, by=by, text=text)


def _record(store: IncidentStore, incident_id: int, kind: str, audit_kind: str, *, by: str, text: str) -> None:
    text = text.strip()
    if not text:
        raise InputError("the text is empty", hint="say why, or what was done (it is audited)")
    detail = {"by": by, "reason": text}
    store.add_timeline(incident_id, kind, detail)
    AuditLog(store.database).append(audit_kind, by, {"incident_id": incident_id, **detail})
