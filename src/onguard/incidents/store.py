"""The embedded SQLite store: incidents and their timelines, responses and the transactions sent for them, and
the block checkpoint. A write the disk refuses (full, I/O error) while an attack is under way never stops the
daemon: it is logged at critical level, kept in memory and replayed in order once the database takes writes."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from onguard.errors import ConfigError
from onguard.log import get_logger

SCHEMA_VERSION = 2
LOG_EVERY_UNSAVED = 50   # while writes are refused: a critical line for the first and every 50th kept in memory
T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS response_txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    incident_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    tx_hash TEXT NOT NULL,
    max_fee_per_gas TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    raw TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS response_txs_by_action ON response_txs (sender, action, id);
"""

# Columns added to tables of schema 1 (a database written by an older onguard opens and is brought up to date).
_MIGRATIONS = (
    ("responses", "outcome", "ALTER TABLE responses ADD COLUMN outcome TEXT"),
    ("responses", "outcome_detail", "ALTER TABLE responses ADD COLUMN outcome_detail TEXT"),
    ("responses", "orphaned", "ALTER TABLE responses ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0"),
)


class IncidentStatus(StrEnum):
    OPEN = "open"            # detected; the guardian is acting: the safe state does not hold yet
    SAFE = "safe"            # every action's done_when holds on the canonical chain; still watched until resolved
    FAILED = "failed"        # the last attempt failed and the state is NOT safe: retried with back-off; humans act
    RESOLVED = "resolved"    # a human ended it (`onguard incidents resolve`): no longer watched
    ALERTED = "alerted"      # the policy only alerts
    DRY_RUN = "dry-run"      # the policy is in dry-run: recorded, never acted on


# Incidents the reconciler keeps in the safe state, block after block.
WATCHED_STATUSES = (IncidentStatus.OPEN, IncidentStatus.SAFE, IncidentStatus.FAILED)


class ResponseStatus(StrEnum):
    CLAIMED = "claimed"            # this incident owns the action; nothing sent yet
    SENT = "sent"                  # transaction broadcast, receipt pending
    MINED = "mined"                # mined and succeeded (on the chain as last checked)
    REVERTED = "reverted"          # mined and reverted
    ALREADY_DONE = "already-done"  # the protocol was already in the safe state: nothing sent
    FAILED = "failed"              # could not be put in effect (retried while the incident is watched)
    ORPHANED = "orphaned"          # was mined, then a reorganisation dropped it: being sent again


class Outcome(StrEnum):
    """Where a mined response landed against the harmful transactions, read from the chain."""

    STOPPED_BEFORE_ATTACK = "stopped-before-attack"  # no harmful transaction succeeded before it
    CONTAINED = "contained"                          # harm landed first: which, and how much, in the detail
    ORPHANED_RESENT = "orphaned-resent"              # a reorg orphaned it; re-sent and landed (detail: where)
    FAILED = "failed"                                # not in effect


@dataclass(frozen=True, slots=True)
class ResponseTx:
    """One signed response transaction, stored before it is sent: a restart resumes its nonce, fees above it."""

    action: str
    incident_id: int
    sender: str
    nonce: int
    tx_hash: str
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    chain_id: int
    policy_id: str
    severity: str
    status: IncidentStatus
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
    status: ResponseStatus
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    error: str | None
    updated_at: str
    outcome: Outcome | None = None
    outcome_detail: Mapping[str, Any] | None = None
    orphaned: int = 0                 # how many times a reorganisation dropped it


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
    """One SQLite file; every write is its own transaction so a crash loses nothing already recorded. A write the
    database refuses with an operational error (disk full, I/O error) is kept in memory and replayed, in order,
    before the next write; reads meanwhile show what the file holds."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._backlog: list[tuple[str, Callable[[], object]]] = []
        self._unsaved_incidents: dict[int, Incident] = {}  # opened while the database refused writes
        self._statuses: dict[int, IncidentStatus] = {}  # as last set here, for while writes are held in memory
        # Called after each status change with (incident id, the change's detail); must not block (the daemon's
        # operations publish a notice here).
        self.status_listeners: list[Callable[[int, Mapping[str, Any]], None]] = []
        self._log = get_logger(component="store", database=str(self.path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._connect(exclusive=False)
            except sqlite3.OperationalError as exc:
                if not self.path.exists():
                    raise
                # A full disk: the shared-memory index of WAL mode cannot be created. Exclusive locking needs
                # none, so the daemon still starts (and pauses); other processes cannot read the file meanwhile.
                self._db = self._connect(exclusive=True)
                self._log.critical("the state database could not be opened normally (disk full?): opened for "
                                   "this process alone; writes are kept in memory until the disk takes them",
                                   error=str(exc))
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the state database ({exc})", file=str(self.path),
                              field="state.database",
                              hint="point it at a writable path, for a new or an existing onguard database") from None

    def _connect(self, *, exclusive: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if {"meta", "response_txs"} <= tables and self._columns("responses") >= {m[1] for m in _MIGRATIONS}:
            return  # up to date: opening writes nothing (a full disk must not stop a restart)
        self._db.executescript(_SCHEMA)
        existing = self._columns("responses")
        for table, column, statement in _MIGRATIONS:
            if column not in existing:
                self._db.execute(statement)
        # Schema 1 said "mitigated" for what was only hoped: the pause is in effect, which is what "safe" says.
        self._db.execute("UPDATE incidents SET status=? WHERE status='mitigated'", (IncidentStatus.SAFE,))
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.flush()
        if self._backlog:
            self._log.critical("closing with database writes NOT saved (the database still refuses them)",
                               unsaved=[what for what, _ in self._backlog])
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
            with contextlib.suppress(sqlite3.Error):  # a full disk can have rolled it back already
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- degraded writes ----

    @property
    def unsaved_writes(self) -> int:
        """Writes the database refused and memory holds, waiting to be replayed."""
        return len(self._backlog)

    def flush(self) -> bool:
        """Replays the writes the database refused, in order. True when nothing is left unsaved."""
        while self._backlog:
            what, write = self._backlog[0]
            try:
                write()
            except sqlite3.OperationalError:
                return False
            self._backlog.pop(0)
            if not self._backlog:
                self._log.warning("database writes resumed: every write kept in memory is saved")
        return True

    def durably(self, what: str, write: Callable[[], T]) -> T | None:
        """Runs `write` (one transaction) after any backlog, or keeps it for later when the database refuses."""
        if self.flush():
            try:
                return write()
            except sqlite3.OperationalError as exc:
                error = str(exc)
        else:
            error = "earlier writes are still waiting"
        self._backlog.append((what, write))
        if len(self._backlog) == 1 or len(self._backlog) % LOG_EVERY_UNSAVED == 0:  # loud, not a flood
            self._log.critical("database write FAILED: kept in memory and replayed when the database takes "
                               "writes again; the guardian goes on acting", write=what, error=error,
                               unsaved=len(self._backlog))
        return None

    def _execute(self, what: str, sql: str, params: tuple[Any, ...]) -> None:
        self.durably(what, lambda: self._db.execute(sql, params))

    # ---- checkpoint ----

    def checkpoint(self, source: str, chain_id: int) -> tuple[int, str] | None:
        row = self._db.execute("SELECT block_number, block_hash FROM checkpoints WHERE source=? AND chain_id=?",
                               (source, chain_id)).fetchone()
        return (row["block_number"], row["block_hash"]) if row else None

    def record_heartbeat(self, details: Mapping[str, Any]) -> None:
        """What the running daemon last said about itself (mempool source live, responses under way), for
        `onguard status` to show with the daemon's time."""
        self._execute("heartbeat", "INSERT OR REPLACE INTO meta VALUES ('heartbeat', ?)",
                      (_json({"at": now(), **details}),))

    def last_heartbeat(self) -> Mapping[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key='heartbeat'").fetchone()
        return json.loads(row[0]) if row else None

    def checkpoint_row(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """The checkpointed block and when it was written."""
        row = self._db.execute("SELECT block_number, updated_at FROM checkpoints WHERE source=? AND chain_id=?",
                               (source, chain_id)).fetchone()
        return (row["block_number"], row["updated_at"]) if row else None

    def save_checkpoint(self, source: str, chain_id: int, block_number: int, block_hash: str) -> None:
        self._execute(
            "checkpoint",
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, chain_id) DO UPDATE SET "
            "block_number=excluded.block_number, block_hash=excluded.block_hash, updated_at=excluded.updated_at",
            (source, chain_id, block_number, block_hash, now()))

    # ---- incidents ----

    def open_incident(self, *, chain_id: int, policy_id: str, severity: str, title: str, dry_run: bool,
                      block: int, block_time: int, evidence: Mapping[str, Any],
                      status: IncidentStatus = IncidentStatus.OPEN) -> Incident:
        with self._transaction() as db:
            incident_id = _insert_incident(db, chain_id=chain_id, policy_id=policy_id, severity=severity,
                                           title=title, dry_run=dry_run, block=block, block_time=block_time,
                                           evidence=evidence, status=status)
        return self.incident(incident_id)

    def open_or_join(self, *, chain_id: int, policy_id: str, cooldown: float, severity: str, title: str,
                     dry_run: bool, block: int, block_time: int, evidence: Mapping[str, Any],
                     status: IncidentStatus, actions: tuple[str, ...],
                     seen: Mapping[str, Any] | None = None) -> tuple[Incident, bool]:
        """In ONE immediate transaction (so two writers cannot both open): joins the policy's latest unresolved
        incident opened less than `cooldown` seconds of chain time before, or opens one and claims its actions.
        `seen` is what the tripped-again entry records when joining (default: the evidence).
        (incident, opened). When the database refuses the write, the incident is opened in memory under the next
        id and saved once writes resume: the response must not wait for the disk."""
        fields = dict(chain_id=chain_id, policy_id=policy_id, severity=severity, title=title, dry_run=dry_run,
                      block=block, block_time=block_time, evidence=evidence, status=status)
        latest = self._unsaved_latest(chain_id, policy_id)
        if latest is None and self.flush():
            try:
                with self._transaction() as db:
                    return self._open_or_join(db, cooldown=cooldown, actions=actions,
                                              seen=evidence if seen is None else seen, **fields)
            except sqlite3.OperationalError as exc:
                error = str(exc)
        else:
            error = "earlier writes are still waiting"
        if latest is not None and latest.status != IncidentStatus.RESOLVED \
                and block_time - latest.opened_block_time < cooldown:
            return latest, False
        incident_id = max([self._max_incident_id(), *self._unsaved_incidents]) + 1
        self.durably(f"open incident {incident_id}", lambda: self._save_opened(incident_id, actions, fields))
        self._log.critical("incident opened in memory only: the database refused it", incident_id=incident_id,
                           error=error)
        incident = Incident(id=incident_id, chain_id=chain_id, policy_id=policy_id, severity=severity,
                            status=status, title=title, dry_run=dry_run, opened_at=now(), opened_block=block,
                            opened_block_time=block_time, last_seen_at=now(), last_seen_block=block,
                            evidence=evidence)
        self._unsaved_incidents[incident_id] = incident
        return incident, True

    def _open_or_join(self, db: sqlite3.Connection, *, cooldown: float, actions: tuple[str, ...],
                      seen: Mapping[str, Any], **fields: Any) -> tuple[Incident, bool]:
        row = db.execute("SELECT * FROM incidents WHERE chain_id=? AND policy_id=? ORDER BY id DESC LIMIT 1",
                         (fields["chain_id"], fields["policy_id"])).fetchone()
        if (row is not None and row["status"] != IncidentStatus.RESOLVED
                and fields["block_time"] - row["opened_block_time"] < cooldown):
            db.execute("UPDATE incidents SET last_seen_at=?, last_seen_block=? WHERE id=?",
                       (now(), fields["block"], row["id"]))
            _insert_timeline(db, row["id"], "tripped-again", {"block": fields["block"], **seen})
            return _incident(db.execute("SELECT * FROM incidents WHERE id=?", (row["id"],)).fetchone()), False
        incident_id = _insert_incident(db, **fields)
        for action in actions:
            db.execute("INSERT INTO responses (incident_id, action, status, updated_at) VALUES (?,?,?,?)",
                       (incident_id, action, ResponseStatus.CLAIMED, now()))
        return _incident(db.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()), True

    def _save_opened(self, incident_id: int, actions: tuple[str, ...], fields: Mapping[str, Any]) -> None:
        with self._transaction() as db:
            _insert_incident(db, incident_id=incident_id, **fields)
            for action in actions:
                db.execute("INSERT INTO responses (incident_id, action, status, updated_at) VALUES (?,?,?,?)",
                           (incident_id, action, ResponseStatus.CLAIMED, now()))
        self._unsaved_incidents.pop(incident_id, None)

    def _unsaved_latest(self, chain_id: int, policy_id: str) -> Incident | None:
        mine = [i for i in self._unsaved_incidents.values() if (i.chain_id, i.policy_id) == (chain_id, policy_id)]
        return max(mine, key=lambda i: i.id) if mine else None

    def _max_incident_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM incidents").fetchone()[0])

    def record_seen_again(self, incident_id: int, block: int, evidence: Mapping[str, Any]) -> None:
        def write() -> None:
            with self._transaction() as db:
                db.execute("UPDATE incidents SET last_seen_at=?, last_seen_block=? WHERE id=?",
                           (now(), block, incident_id))
                _insert_timeline(db, incident_id, "tripped-again", {"block": block, **evidence})
        self.durably("tripped-again", write)

    def add_timeline(self, incident_id: int, kind: str, detail: Mapping[str, Any]) -> None:
        at = now()  # when it happened, even if the disk takes it later
        self._execute(f"timeline {kind}", "INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
                      (incident_id, at, kind, _json(detail)))

    def set_status(self, incident_id: int, status: IncidentStatus, *, actor: str = "daemon",
                   reason: str = "") -> bool:
        """Moves the incident to `status`, with a timeline entry and an audit-log entry. False if it was there."""
        row = self._db.execute("SELECT status FROM incidents WHERE id=?", (incident_id,)).fetchone()
        before = row["status"] if row else None
        if self._backlog:  # the file may not hold what was last set yet
            before = self._statuses.get(incident_id, before)
        if before == status:
            return False
        self._statuses[incident_id] = status
        detail = {"from": before, "to": str(status), "by": actor, "reason": reason}

        def write() -> None:
            with self._transaction() as db:
                db.execute("UPDATE incidents SET status=? WHERE id=?", (str(status), incident_id))
                _insert_timeline(db, incident_id, "status", detail)
        self.durably(f"status {status}", write)
        self.durably("audit incident-status", lambda: self._audit_status(incident_id, detail, actor))
        for listener in self.status_listeners:
            listener(incident_id, detail)
        return True

    def _audit_status(self, incident_id: int, detail: Mapping[str, Any], actor: str) -> None:
        from onguard.incidents.audit import AuditLog  # the audit log is built on this store: imported late

        AuditLog(self).append(INCIDENT_STATUS_AUDIT_KIND, actor, {"incident_id": incident_id, **detail})

    def latest_incident(self, chain_id: int, policy_id: str) -> Incident | None:
        row = self._db.execute("SELECT * FROM incidents WHERE chain_id=? AND policy_id=? ORDER BY id DESC LIMIT 1",
                               (chain_id, policy_id)).fetchone()
        return _incident(row) if row else None

    def incident(self, incident_id: int) -> Incident:
        row = self._db.execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
        if row is None and incident_id in self._unsaved_incidents:
            return self._unsaved_incidents[incident_id]
        if row is None:
            raise LookupError(incident_id)
        return _incident(row)

    def incidents(self, limit: int = 100) -> list[Incident]:
        rows = self._db.execute("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_incident(row) for row in rows]

    def watched_incidents(self, chain_id: int) -> list[Incident]:
        """Incidents not resolved by a human, in which the guardian acts (dry-run and alert-only ones excluded)."""
        marks = ",".join("?" * len(WATCHED_STATUSES))
        rows = self._db.execute(f"SELECT * FROM incidents WHERE chain_id=? AND dry_run=0 AND status IN ({marks}) "
                                "ORDER BY id", (chain_id, *WATCHED_STATUSES)).fetchall()
        return [_incident(row) for row in rows]

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        rows = self._db.execute("SELECT at, kind, detail FROM timeline WHERE incident_id=? ORDER BY id",
                                (incident_id,)).fetchall()
        return [TimelineEntry(at=r["at"], kind=r["kind"], detail=json.loads(r["detail"])) for r in rows]

    # ---- policy evaluation failures ----

    def record_evaluation_failure(self, chain_id: int, policy_id: str, block_number: int, message: str) -> None:
        self._execute("evaluation failure",
                      "INSERT INTO evaluation_failures (chain_id, policy_id, block_number, message, at) "
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

    def update_response(self, incident_id: int, action: str, status: ResponseStatus, *, tx_hash: str | None = None,
                        block_number: int | None = None, gas_used: int | None = None,
                        error: str | None = None) -> None:
        at = now()

        def write() -> None:
            with self._transaction() as db:
                db.execute(
                    "UPDATE responses SET status=?, tx_hash=COALESCE(?, tx_hash), block_number=?, gas_used=?, "
                    "error=?, updated_at=? WHERE incident_id=? AND action=?",
                    (str(status), tx_hash, block_number, gas_used, error, at, incident_id, action))
                detail = {"action": action, "tx_hash": tx_hash, "block": block_number, "gas_used": gas_used,
                          "error": error}
                _insert_timeline(db, incident_id, f"response-{status}", {k: v for k, v in detail.items() if v},
                                 at=at)
        self.durably(f"response {action} {status}", write)

    def record_outcome(self, incident_id: int, action: str, outcome: Outcome, detail: Mapping[str, Any]) -> None:
        """Where the response landed against the harm, as the chain shows it (see responders/outcome.py)."""
        def write() -> None:
            with self._transaction() as db:
                db.execute("UPDATE responses SET outcome=?, outcome_detail=? WHERE incident_id=? AND action=?",
                           (str(outcome), _json(detail), incident_id, action))
                _insert_timeline(db, incident_id, "outcome", {"action": action, "outcome": str(outcome), **detail})
        self.durably(f"outcome {action}", write)

    def record_orphaned(self, incident_id: int, action: str, tx_hash: str, block: int | None) -> None:
        """A mined response a reorganisation dropped: counted, back to being sent."""
        def write() -> None:
            with self._transaction() as db:
                db.execute("UPDATE responses SET status=?, orphaned=orphaned+1, block_number=NULL, gas_used=NULL, "
                           "outcome=NULL, outcome_detail=NULL, updated_at=? WHERE incident_id=? AND action=?",
                           (ResponseStatus.ORPHANED, now(), incident_id, action))
                _insert_timeline(db, incident_id, "response-orphaned",
                                 {"action": action, "tx_hash": tx_hash, "was_in_block": block})
        self.durably(f"orphaned {action}", write)

    def responses(self, incident_id: int) -> list[ResponseRecord]:
        rows = self._db.execute("SELECT * FROM responses WHERE incident_id=? ORDER BY id", (incident_id,)).fetchall()
        return [_response(row) for row in rows]

    def unfinished_responses(self) -> list[ResponseRecord]:
        """Responses a crash may have interrupted: claimed or sent, with no final outcome recorded."""
        rows = self._db.execute("SELECT * FROM responses WHERE status IN (?, ?) ORDER BY id",
                                (ResponseStatus.CLAIMED, ResponseStatus.SENT)).fetchall()
        return [_response(row) for row in rows]

    # ---- response transactions ----

    def record_response_tx(self, tx: ResponseTx) -> None:
        """Stored BEFORE the transaction is sent, so a restart knows the nonce it holds and the fees to beat."""
        self._execute("response transaction",
                      "INSERT INTO response_txs (action, incident_id, sender, nonce, tx_hash, max_fee_per_gas, "
                      "max_priority_fee_per_gas, raw, stored_at) VALUES (?,?,?,?,?,?,?,?,?)",
                      (tx.action, tx.incident_id, tx.sender, tx.nonce, tx.tx_hash, str(tx.max_fee_per_gas),
                       str(tx.max_priority_fee_per_gas), "0x" + tx.raw.hex(), now()))

    def save_signed_ladders(self, sender: str, action: str, ladders: Sequence[Mapping[str, Any]]) -> None:
        """The fee ladders last signed for `sender`'s `action` (responders/feeladder.py), newest first: kept so a
        restart recognises a rung that was sent but not yet recorded. One `meta` row per action, replaced."""
        self._execute("signed ladder", "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                      (f"{_LADDER_KEY}{sender.lower()}:{action}", json.dumps(list(ladders))))

    def signed_ladders(self, sender: str) -> list[Mapping[str, Any]]:
        """Every fee ladder kept for `sender`, whatever the action."""
        prefix = f"{_LADDER_KEY}{sender.lower()}:"
        rows = self._db.execute("SELECT value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return [ladder for row in rows for ladder in json.loads(row[0])]

    def response_txs(self, sender: str, action: str | None = None) -> list[ResponseTx]:
        """The transactions `sender` signed for responses (for one action), oldest first."""
        query = "SELECT * FROM response_txs WHERE sender=?" + (" AND action=?" if action else "") + " ORDER BY id"
        rows = self._db.execute(query, (sender, action) if action else (sender,)).fetchall()
        return [ResponseTx(action=r["action"], incident_id=r["incident_id"], sender=r["sender"], nonce=r["nonce"],
                           tx_hash=r["tx_hash"], max_fee_per_gas=int(r["max_fee_per_gas"]),
                           max_priority_fee_per_gas=int(r["max_priority_fee_per_gas"]),
                           raw=bytes.fromhex(r["raw"][2:])) for r in rows]


INCIDENT_STATUS_AUDIT_KIND = "incident-status"
_LADDER_KEY = "signed-ladder:"


def _insert_incident(db: sqlite3.Connection, *, incident_id: int | None = None, chain_id: int, policy_id: str,
                     severity: str, title: str, dry_run: bool, block: int, block_time: int, evidence: Mapping[str, Any],
                     status: IncidentStatus) -> int:
    at = now()
    cursor = db.execute(
        "INSERT INTO incidents (id, chain_id, policy_id, severity, status, title, dry_run, opened_at, "
        "opened_block, opened_block_time, last_seen_at, last_seen_block, evidence) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (incident_id, chain_id, policy_id, severity, str(status), title, int(dry_run), at, block, block_time, at, block,
         _json(evidence)))
    incident_id = int(cursor.lastrowid or 0)
    _insert_timeline(db, incident_id, "detected", {"block": block, **evidence}, at=at)
    return incident_id


def _insert_timeline(db: sqlite3.Connection, incident_id: int, kind: str, detail: Mapping[str, Any],
                     at: str | None = None) -> None:
    db.execute("INSERT INTO timeline (incident_id, at, kind, detail) VALUES (?,?,?,?)",
               (incident_id, at or now(), kind, _json(detail)))


def _incident(row: sqlite3.Row) -> Incident:
    return Incident(id=row["id"], chain_id=row["chain_id"], policy_id=row["policy_id"], severity=row["severity"],
                    status=IncidentStatus(row["status"]), title=row["title"], dry_run=bool(row["dry_run"]),
                    opened_at=row["opened_at"], opened_block=row["opened_block"],
                    opened_block_time=row["opened_block_time"], last_seen_at=row["last_seen_at"],
                    last_seen_block=row["last_seen_block"], evidence=json.loads(row["evidence"]))


def _response(row: sqlite3.Row) -> ResponseRecord:
    detail = row["outcome_detail"]
    return ResponseRecord(incident_id=row["incident_id"], action=row["action"], status=ResponseStatus(row["status"]),
                          tx_hash=row["tx_hash"], block_number=row["block_number"], gas_used=row["gas_used"],
                          error=row["error"], updated_at=row["updated_at"],
                          outcome=Outcome(row["outcome"]) if row["outcome"] else None,
                          outcome_detail=json.loads(detail) if detail else None, orphaned=row["orphaned"])
