"""Incidents with their timelines, and the policy evaluations that failed: written and read in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from onguard.store.database import Database
from onguard.store.records import (
    WATCHED_STATUSES,
    FailureSummary,
    Incident,
    IncidentStatus,
    TimelineEntry,
    as_json,
    now,
)

_COLUMNS = ("chain_id, policy_id, severity, status, title, dry_run, opened_at, opened_block, opened_block_time, "
            "last_seen_at, last_seen_block, evidence")


class Incidents:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ---- writes (each atomic; callers may wrap several in one transaction) ----

    def insert(self, *, chain_id: int, policy_id: str, severity: str, title: str, dry_run: bool, block: int,
               block_time: int, evidence: Mapping[str, Any], status: IncidentStatus) -> int:
        """Opens an incident with its "detected" timeline entry; its id, the database's."""
        at = now()
        values = (chain_id, policy_id, severity, status, title, int(dry_run), at, block, block_time, at, block,
                  as_json(evidence))
        with self._db.transaction():
            incident_id = int(self._db.scalar(
                f"INSERT INTO incidents ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id", values))
            self.add_timeline(incident_id, "detected", {"block": block, **evidence}, at=at)
        return incident_id

    def add_timeline(self, incident_id: int, kind: str, detail: Mapping[str, Any], at: str | None = None) -> None:
        self._db.execute("INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
                         (incident_id, at or now(), kind, as_json(detail)))

    def seen_again(self, incident_id: int, block: int, seen: Mapping[str, Any]) -> None:
        with self._db.transaction():
            self._db.execute("UPDATE incidents SET last_seen_at=?, last_seen_block=? WHERE id=?",
                             (now(), block, incident_id))
            self.add_timeline(incident_id, "tripped-again", {"block": block, **seen})

    def set_status(self, incident_id: int, status: IncidentStatus, detail: Mapping[str, Any],
                   expected: str | None = None) -> bool:
        """Moves the incident to `status` (only from `expected`, when given: of two writers, replicas, who saw the
        same change one records it). False when it was not in `expected` any more."""
        with self._db.transaction():
            if expected is None:
                moved = self._db.execute("UPDATE incidents SET status=? WHERE id=?", (status, incident_id)) == 1
            else:
                moved = self._db.execute("UPDATE incidents SET status=? WHERE id=? AND status=?",
                                         (status, incident_id, expected)) == 1
            if moved:
                self.add_timeline(incident_id, "status", detail)
        return moved

    def open_or_join(self, *, cooldown: float, seen: Mapping[str, Any], **fields: Any) -> tuple[int, bool]:
        """In one transaction, serialised per (chain, policy) so two writers, on one machine or on replicas, cannot
        both open: joins the policy's latest unresolved incident opened less than `cooldown` seconds of chain time
        before, or opens one. (incident id, opened). Callers claim the actions in the same transaction."""
        with self._db.transaction():
            self._db.serialise(f"open-incident:{fields['chain_id']}:{fields['policy_id']}")
            latest = self.latest(fields["chain_id"], fields["policy_id"])
            if (latest is not None and latest.status != IncidentStatus.RESOLVED
                    and fields["block_time"] - latest.opened_block_time < cooldown):
                self.seen_again(latest.id, fields["block"], seen)
                return latest.id, False
            return self.insert(**fields), True

    # ---- reads ----

    def get(self, incident_id: int) -> Incident | None:
        row = self._db.fetch_one("SELECT * FROM incidents WHERE id=?", (incident_id,))
        return _incident(row) if row else None

    def status(self, incident_id: int) -> IncidentStatus | None:
        value = self._db.scalar("SELECT status FROM incidents WHERE id=?", (incident_id,))
        return IncidentStatus(value) if value is not None else None

    def latest(self, chain_id: int, policy_id: str) -> Incident | None:
        row = self._db.fetch_one("SELECT * FROM incidents WHERE chain_id=? AND policy_id=? ORDER BY id DESC LIMIT 1",
                                 (chain_id, policy_id))
        return _incident(row) if row else None

    def recent(self, limit: int = 100) -> list[Incident]:
        return [_incident(r) for r in self._db.fetch_all("SELECT * FROM incidents ORDER BY id DESC LIMIT ?",
                                                         (limit,))]

    def watched(self, chain_id: int) -> list[Incident]:
        """Incidents not resolved by a human, in which the guardian acts (dry-run and alert-only ones excluded)."""
        marks = ",".join("?" * len(WATCHED_STATUSES))
        rows = self._db.fetch_all(f"SELECT * FROM incidents WHERE chain_id=? AND dry_run=0 AND status IN ({marks}) "
                                  "ORDER BY id", (chain_id, *WATCHED_STATUSES))
        return [_incident(row) for row in rows]

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        rows = self._db.fetch_all("SELECT at, kind, detail FROM timeline WHERE incident_id=? ORDER BY id",
                                  (incident_id,))
        return [TimelineEntry(at=r["at"], kind=r["kind"], detail=json.loads(r["detail"])) for r in rows]


class EvaluationFailures:
    """Policy evaluations that raised, per policy: the daemon goes on; `onguard status` shows them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, chain_id: int, policy_id: str, block_number: int, message: str) -> None:
        self._db.execute("INSERT INTO evaluation_failures (chain_id, policy_id, block_number, message, at) "
                         "VALUES (?,?,?,?,?)", (chain_id, policy_id, block_number, message, now()))

    def summaries(self) -> list[FailureSummary]:
        """Per policy: how many evaluations failed, and the latest failure."""
        rows = self._db.fetch_all(
            "SELECT f.policy_id, c.count, f.block_number, f.message, f.at FROM evaluation_failures f JOIN "
            "(SELECT policy_id, COUNT(*) AS count, MAX(id) AS last_id FROM evaluation_failures GROUP BY policy_id) c "
            "ON f.id = c.last_id ORDER BY f.policy_id")
        return [FailureSummary(policy_id=r["policy_id"], count=int(r["count"]), last_block=r["block_number"],
                               last_message=r["message"], last_at=r["at"]) for r in rows]


def _incident(row: Any) -> Incident:
    return Incident(id=row["id"], chain_id=row["chain_id"], policy_id=row["policy_id"], severity=row["severity"],
                    status=IncidentStatus(row["status"]), title=row["title"], dry_run=bool(row["dry_run"]),
                    opened_at=row["opened_at"], opened_block=row["opened_block"],
                    opened_block_time=row["opened_block_time"], last_seen_at=row["last_seen_at"],
                    last_seen_block=row["last_seen_block"], evidence=json.loads(row["evidence"]))
