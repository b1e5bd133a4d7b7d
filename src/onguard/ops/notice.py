"""The notice: one frozen thing worth telling a person, and its versioned JSON document (schema onguard.notice.v1)."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from onguard.policies.model import Severity

SCHEMA = "onguard.notice.v1"
JS_SAFE_INTEGER = 2**53 - 1  # larger integers (wei amounts) are sent as decimal strings: JavaScript would round them


class NoticeKind(str, Enum):
    INCIDENT_OPENED = "incident_opened"          # a policy tripped and an incident was opened
    RESPONSE_OUTCOME = "response_outcome"        # a response (pause) reached its outcome: mined, reverted, failed…
    INCIDENT_STATUS = "incident_status"          # an incident changed status (details["status"]: resolved…)
    GUARDIAN_CANNOT_ACT = "guardian_cannot_act"  # the guardian lost a power it relies on (key, module, funds, nonce)
    CHAIN_HEALTH = "chain_health"                # not ready: behind, chain silent… (status "resolved": ready again)
    TEST = "test"                                # `onguard notify-test`: checks a channel's URL, key and format


KIND_LABELS = {
    NoticeKind.INCIDENT_OPENED: "Incident opened",
    NoticeKind.RESPONSE_OUTCOME: "Response outcome",
    NoticeKind.INCIDENT_STATUS: "Incident status changed",
    NoticeKind.GUARDIAN_CANNOT_ACT: "Guardian cannot act",
    NoticeKind.CHAIN_HEALTH: "Chain health",
    NoticeKind.TEST: "Test",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """What happened, for whom it matters (severity, policy) and the facts. Cheap to build: publish it on the
    hot path. `details` is copied, so the caller may keep mutating its own dict."""

    kind: NoticeKind
    severity: Severity
    chain_id: int
    title: str          # one line, e.g. "vault drained 45% in 3 blocks"
    summary: str        # a sentence or two a person reads first
    policy_id: str | None = None
    incident_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # One per event: receivers drop duplicates by it (a retry, or a delivery a dead leader had in flight). The daemon
    # derives it from the event (event_id), so replicas that record the same event record one notice.
    id: str = field(default_factory=lambda: os.urandom(16).hex())

    def __post_init__(self) -> None:
        if not isinstance(self.kind, NoticeKind):
            object.__setattr__(self, "kind", NoticeKind(self.kind))
        if not isinstance(self.severity, Severity):
            object.__setattr__(self, "severity", Severity(self.severity))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
        if self.at.tzinfo is None:
            raise ValueError("Notice.at must be timezone-aware (use datetime.now(UTC))")

    @property
    def incident_key(self) -> str:
        """Stable across every notice about the same incident (PagerDuty's dedup_key); without an incident, stable
        per chain, kind, policy and replica, so that a repeated health alert updates one page instead of opening
        many — and one replica's "resolved" never closes the page another replica's alert opened."""
        if self.incident_id is not None:
            return f"onguard/{self.chain_id}/incident/{self.incident_id}"
        key = f"onguard/{self.chain_id}/{self.kind.value}/{self.policy_id or 'daemon'}"
        replica = self.details.get("replica")
        return key if replica is None else f"{key}/{replica}"

    @property
    def status(self) -> str | None:
        """details["status"]: an incident's new status, or "resolved" when a health alert has cleared."""
        value = self.details.get("status")
        return str(value) if value is not None else None


def event_id(chain_id: int, kind: NoticeKind, *identity: object) -> str:
    """A notice id derived from the event it tells (chain, kind and the event's own identity): the same on every
    replica that records the event, different for every other event. 32 hex digits, like a random id."""
    text = "\x1f".join(str(part) for part in (chain_id, kind.value, *identity))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def notice_document(notice: Notice) -> dict[str, Any]:
    """The webhook body, schema onguard.notice.v1 (docs/operations.md). New fields may be added within v1;
    a field is never removed or changes meaning without a new schema name."""
    return {
        "schema": SCHEMA,
        "id": notice.id,
        "kind": notice.kind.value,
        "severity": notice.severity.value,
        "chain_id": notice.chain_id,
        "policy_id": notice.policy_id,
        "incident_id": notice.incident_id,
        "incident_key": notice.incident_key,
        "title": notice.title,
        "summary": notice.summary,
        "details": {str(key): plain(value) for key, value in notice.details.items()},
        "at": iso_time(notice.at),
    }


def notice_from_document(document: Mapping[str, Any]) -> Notice:
    """The notice a document (notice_document) describes, as kept in the state database's outbox: details come
    back as their JSON-native copies, which every channel renders exactly as it renders the originals."""
    return Notice(kind=NoticeKind(document["kind"]), severity=Severity(document["severity"]),
                  chain_id=int(document["chain_id"]), title=document["title"], summary=document["summary"],
                  policy_id=document["policy_id"], incident_id=document["incident_id"],
                  details=document["details"], at=datetime.fromisoformat(document["at"]), id=document["id"])


def plain(value: Any) -> Any:
    """A JSON-native copy of a detail value: big integers and exact numbers as decimal strings, bytes as 0x hex,
    enums by value, anything else unknown by its str()."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or Infinity
    if isinstance(value, int):
        return value if abs(value) <= JS_SAFE_INTEGER else str(value)
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (Decimal, Fraction)):
        return str(value)
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    return str(value)


def iso_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
