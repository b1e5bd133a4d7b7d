"""The embedded SQLite store: incidents and their timelines, responses, and the block checkpoint."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onguard.errors import ConfigError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL, chain_id INTEGER NOT NULL,
    block_number INTEGER NOT NULL, block_hash TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (source, chain_id)
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id INTEGER NOT NULL,
    policy_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    title TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    opened_at TEXT NOT NULL,
    opened_block INTEGER NOT NULL,
    opened_block_time INTEGER NOT NULL,
    last_seen_at TEXT NOT NULL,
    last_seen_block INTEGER NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_policy ON incidents (chain_id, policy_id, id);
CREATE TABLE IF NOT EXISTS timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluation_failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id INTEGER NOT NULL,
    policy_id TEXT NOT NULL,
    block_number INTEGER NOT NULL,
    message TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluation_failures_by_policy ON evaluation_failures (policy_id, id);
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    tx_hash TEXT,
    block_number INTEGER,
    gas_used INTEGER,
    error TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (incident_id, action)
);
"""


class IncidentStatus:
    OPEN = "open"            # detected; a response may be under way
    MITIGATED = "mitigated"  # every response is in effect on chain
    FAILED = "failed"        # a response could not be put in effect: humans must act
    ALERTED = "alerted"      # the policy only alerts
    DRY_RUN = "dry-run"      # the policy is in dry-run: recorded, never acted on


class ResponseStatus:
    CLAIMED = "claimed"            # this incident owns the action; nothing sent yet
    SENT = "sent"                  # transaction broadcast, receipt pending
    MINED = "mined"                # mined and succeeded
    REVERTED = "reverted"          # mined and reverted
    ALREADY_DONE = "already-done"  # the protocol was already in the safe state: nothing sent
    FAILED = "failed"              # could not be sent


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    chain_id: int
    policy_id: str
    severity: str
    status: str
    title: str
    dry_run: bool
    opened_at: str
    opened_block: int
    opened_block_time: int
    last_seen_at: str
    last_seen_block: int
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: str
    kind: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    incident_id: int
    action: str
    status: str
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    error: str | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class FailureSummary:
    policy_id: str
    count: int
    last_block: int
    last_message: str
    last_at: str


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json(value: Mapping[str, Any]) -> str:
    # uint256 values do not fit JSON numbers in most readers: keep big ints as decimal strings.
    return json.dumps(value, default=str, sort_keys=True)


class IncidentStore:
    """One SQLite file; every write is its own transaction so a crash loses nothing already recorded."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the state database ({exc})", file=str(self.path),
                              field="state.database",
                              hint="point it at a writable path, for a new or an existing onguard database") from None

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection, for modules that keep their own tables in this file (audit log, Safe txs)."""
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- checkpoint ----

    def checkpoint(self, source: str, chain_id: int) -> tuple[int, str] | None:
        row = self._db.execute("SELECT block_number, block_hash FROM checkpoints WHERE source=? AND chain_id=?",
                               (source, chain_id)).fetchone()
        return (row["block_number"], row["block_hash"]) if row else None

    def checkpoint_row(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """The checkpointed block and when it was written."""
        row = self._db.execute("SELECT block_number, updated_at FROM checkpoints WHERE source=? AND chain_id=?",
                               (source, chain_id)).fetchone()
        return (row["block_number"], row["updated_at"]) if row else None

    def save_checkpoint(self, source: str, chain_id: int, block_number: int, block_hash: str) -> None:
        self._db.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, chain_id) DO UPDATE SET "
            "block_number=excluded.block_number, block_hash=excluded.block_hash, updated_at=excluded.updated_at",
            (source, chain_id, block_number, block_hash, now()))

    # ---- incidents ----

    def open_incident(self, *, chain_id: int, policy_id: str, severity: str, title: str, dry_run: bool,
                      block: int, block_time: int, evidence: Mapping[str, Any],
                      status: str = IncidentStatus.OPEN) -> Incident:
        at = now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO incidents (chain_id, policy_id, severity, status, title, dry_run, opened_at, "
                "opened_block, opened_block_time, last_seen_at, last_seen_block, evidence) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (chain_id, policy_id, severity, status, title, int(dry_run), at, block, block_time, at, block,
                 _json(evidence)))
            incident_id = int(cursor.lastrowid or 0)
            db.execute("INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
                       (incident_id, at, "detected", _json({"block": block, **evidence})))
        return self.incident(incident_id)

    def record_seen_again(self, incident_id: int, block: int, evidence: Mapping[str, Any]) -> None:
        at = now()
        with self._transaction() as db:
            db.execute("UPDATE incidents SET last_seen_at=?, last_seen_block=? WHERE id=?", (at, block, incident_id))
            db.execute("INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
                       (incident_id, at, "tripped-again", _json({"block": block, **evidence})))

    def add_timeline(self, incident_id: int, kind: str, detail: Mapping[str, Any]) -> None:
        self._db.execute("INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
                         (incident_id, now(), kind, _json(detail)))

    def set_status(self, incident_id: int, status: str) -> None:
        self._db.execute("UPDATE incidents SET status=? WHERE id=?", (status, incident_id))

    def latest_incident(self, chain_id: int, policy_id: str) -> Incident | None:
        row = self._db.execute("SELECT * FROM incidents WHERE chain_id=? AND policy_id=? ORDER BY id DESC LIMIT 1",
                               (chain_id, policy_id)).fetchone()
        return _incident(row) if row else None

    def incident(self, incident_id: int) -> Incident:
        row = self._db.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
        if row is None:
            raise LookupError(incident_id)
        return _incident(row)

    def incidents(self, limit: int = 100) -> list[Incident]:
        rows = self._db.execute("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_incident(row) for row in rows]

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        rows = self._db.execute("SELECT at, kind, detail FROM timeline WHERE incident_id=? ORDER BY id",
                                (incident_id,)).fetchall()
        return [TimelineEntry(at=r["at"], kind=r["kind"], detail=json.loads(r["detail"])) for r in rows]

    # ---- policy evaluation failures ----

    def record_evaluation_failure(self, chain_id: int, policy_id: str, block_number: int, message: str) -> None:
        self._db.execute("INSERT INTO evaluation_failures (chain_id, policy_id, block_number, message, at) "
                         "VALUES (?,?,?,?,?)", (chain_id, policy_id, block_number, message, now()))

    def evaluation_failures(self) -> list[FailureSummary]:
        """Per policy: how many evaluations failed, and the latest failure."""
        rows = self._db.execute(
            "SELECT policy_id, COUNT(*) AS count, MAX(id) AS last_id FROM evaluation_failures GROUP BY policy_id "
            "ORDER BY policy_id").fetchall()
        summaries = []
        for row in rows:
            last = self._db.execute("SELECT block_number, message, at FROM evaluation_failures WHERE id=?",
                                    (row["last_id"],)).fetchone()
            summaries.append(FailureSummary(policy_id=row["policy_id"], count=row["count"],
                                            last_block=last["block_number"], last_message=last["message"],
                                            last_at=last["at"]))
        return summaries

    # ---- responses ----

    def claim_response(self, incident_id: int, action: str) -> bool:
        """Reserves `action` for this incident. False when it was already claimed: never send twice."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO responses (incident_id, action, status, updated_at) VALUES (?,?,?,?)",
            (incident_id, action, ResponseStatus.CLAIMED, now()))
        return cursor.rowcount == 1

    def update_response(self, incident_id: int, action: str, status: str, *, tx_hash: str | None = None,
                        block_number: int | None = None, gas_used: int | None = None,
                        error: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE responses SET status=?, tx_hash=COALESCE(?, tx_hash), block_number=?, gas_used=?, "
                "error=?, updated_at=? WHERE incident_id=? AND action=?",
                (status, tx_hash, block_number, gas_used, error, now(), incident_id, action))
            detail = {"action": action, "tx_hash": tx_hash, "block": block_number, "gas_used": gas_used,
                      "error": error}
            db.execute("INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
                       (incident_id, now(), f"response-{status}", _json({k: v for k, v in detail.items() if v})))

    def responses(self, incident_id: int) -> list[ResponseRecord]:
        rows = self._db.execute("SELECT * FROM responses WHERE incident_id=? ORDER BY id", (incident_id,)).fetchall()
        return [_response(row) for row in rows]

    def unfinished_responses(self) -> list[ResponseRecord]:
        """Responses a crash may have interrupted: claimed or sent, with no final outcome recorded."""
        rows = self._db.execute("SELECT * FROM responses WHERE status IN (?, ?) ORDER BY id",
                                (ResponseStatus.CLAIMED, ResponseStatus.SENT)).fetchall()
        return [_response(row) for row in rows]


def _incident(row: sqlite3.Row) -> Incident:
    return Incident(id=row["id"], chain_id=row["chain_id"], policy_id=row["policy_id"], severity=row["severity"],
                    status=row["status"], title=row["title"], dry_run=bool(row["dry_run"]),
                    opened_at=row["opened_at"], opened_block=row["opened_block"],
                    opened_block_time=row["opened_block_time"], last_seen_at=row["last_seen_at"],
                    last_seen_block=row["last_seen_block"], evidence=json.loads(row["evidence"]))


def _response(row: sqlite3.Row) -> ResponseRecord:
    return ResponseRecord(incident_id=row["incident_id"], action=row["action"], status=row["status"],
                          tx_hash=row["tx_hash"], block_number=row["block_number"], gas_used=row["gas_used"],
                          error=row["error"], updated_at=row["updated_at"])
