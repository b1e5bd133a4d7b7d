"""The daemon's state, as the rest of the code uses it: a facade over the database layer (onguard.store) with the
repositories for checkpoints, incidents, responses and the daemon's heartbeat. A write the database refuses (full
disk, I/O error, lost PostgreSQL connection) while an attack is under way never stops the daemon: it is logged at
critical level, kept in memory and replayed in order once the database takes writes; a read the daemon needs while
it acts (its responses, its signed transactions, an incident it holds) answers with what memory holds instead of
raising."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from onguard.errors import ConfigError
from onguard.log import get_logger
from onguard.store.audit import AuditLog
from onguard.store.checkpoints import ALONE, Checkpoints
from onguard.store.database import WRITE_REFUSED, Database, Dialect, connect
from onguard.store.settings import DatabaseSettings
from onguard.store.incidents import EvaluationFailures, Incidents
from onguard.store.meta import HEARTBEAT, Meta
from onguard.store.migrations import migrate
from onguard.store.records import (  # noqa: F401  (re-exported: the records' long-standing home)
    WATCHED_STATUSES,
    FailureSummary,
    Incident,
    IncidentStatus,
    Outcome,
    ResponseRecord,
    ResponseStatus,
    ResponseTx,
    TimelineEntry,
    now,
)
from onguard.store.responses import Responses

LOG_EVERY_UNSAVED = 50   # while writes are refused: a critical line for the first and every 50th kept in memory
LOG_EVERY_UNREAD = 50    # while reads fail: a line for the first and every 50th answered from memory
T = TypeVar("T")


class IncidentStore:
    """One state database (a SQLite file, or PostgreSQL shared by replicas), migrated to the current schema when
    opened; every write is its own transaction so a crash loses nothing already recorded. A write the database
    refuses with an operational error is kept in memory and replayed, in order, before the next write; reads
    meanwhile show what the database holds."""

    def __init__(self, database: Database | DatabaseSettings | Path | str, *, claimant: str | None = None) -> None:
        """`claimant`: among replicas, the id recorded as `claimed_by` on the responses this store claims."""
        self.database = database if isinstance(database, Database) else connect(database)
        self.claimant = claimant
        try:
            migrate(self.database)
        except WRITE_REFUSED as exc:
            self.database.close()
            hint = ("point it at a writable path, for a new or an existing onguard database"
                    if self.database.dialect == Dialect.SQLITE else "check that the PostgreSQL server is reachable")
            raise ConfigError(f"cannot open the state database ({str(exc).strip()})", file=self.database.name,
                              field=self.database.field, hint=hint) from None
        except BaseException:
            self.database.close()
            raise
        self._checkpoints = Checkpoints(self.database, self.replica)
        self._incidents = Incidents(self.database)
        self._failures = EvaluationFailures(self.database)
        self._responses = Responses(self.database)
        self._meta = Meta(self.database)
        self._backlog: list[tuple[str, Callable[[], object]]] = []
        # Incidents opened while the database refused writes, under provisional ids: negative, which the database
        # never hands out, so that one can never be taken for an incident another replica opened meanwhile. Once
        # saved, the database's id is the incident's; every write and read under the provisional id goes there.
        self._unsaved_incidents: dict[int, Incident] = {}
        self._saved_as: dict[int, int] = {}  # provisional id -> the database's
        self._last_provisional = 0
        self._statuses: dict[int, IncidentStatus] = {}  # as last set here, for while writes are held in memory
        self._known: dict[int, Incident] = {}  # as last read here, for while the database does not answer reads
        self._failed_reads = 0
        # Called after each status change with (incident id, the change's detail); must not block (the daemon's
        # operations publish a notice here).
        self.status_listeners: list[Callable[[int, Mapping[str, Any]], None]] = []
        self._log = get_logger(component="store", database=self.database.name)

    @property
    def replica(self) -> str:
        """Whose checkpoint and handled blocks this store reads and writes: the replica's id, "" alone."""
        return self.claimant or ALONE

    @property
    def name(self) -> str:
        """The file or URL of the database, for messages."""
        return self.database.name

    def close(self) -> None:
        self.flush()
        if self._backlog:
            self._log.critical("closing with database writes NOT saved (the database still refuses them)",
                               unsaved=[what for what, _ in self._backlog])
        self.database.close()

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
            except WRITE_REFUSED:
                return False
            self._backlog.pop(0)
            if not self._backlog:
                self._log.warning("database writes resumed: every write kept in memory is saved")
        return True

    def _read(self, what: str, read: Callable[[], T], fallback: Callable[[], T]) -> T:
        """`read()`, or when the database cannot answer (a PostgreSQL outage) what memory holds: the daemon goes on
        acting on what it knows rather than crash in the middle of a response."""
        try:
            value = read()
        except WRITE_REFUSED as exc:
            self._failed_reads += 1
            if self._failed_reads % LOG_EVERY_UNREAD == 1:  # loud, not a flood
                self._log.error("database read FAILED: going on with what this daemon holds in memory", read=what,
                                error=str(exc).strip(), failed_reads=self._failed_reads)
            return fallback()
        self._failed_reads = 0
        return value

    def durably(self, what: str, write: Callable[[], T]) -> T | None:
        """Runs `write` (one transaction) after any backlog, or keeps it for later when the database refuses."""
        if self.flush():
            try:
                return write()
            except WRITE_REFUSED as exc:
                error = str(exc)
        else:
            error = "earlier writes are still waiting"
        self._backlog.append((what, write))
        if len(self._backlog) == 1 or len(self._backlog) % LOG_EVERY_UNSAVED == 0:  # loud, not a flood
            self._log.critical("database write FAILED: kept in memory and replayed when the database takes "
                               "writes again; the guardian goes on acting", write=what, error=error,
                               unsaved=len(self._backlog))
        return None

    # ---- checkpoint and heartbeat ----

    def checkpoint(self, source: str, chain_id: int) -> tuple[int, str] | None:
        return self._checkpoints.get(source, chain_id)

    def checkpoint_row(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """The checkpointed block and when it was written."""
        return self._checkpoints.written(source, chain_id)

    def save_checkpoint(self, source: str, chain_id: int, block_number: int, block_hash: str) -> None:
        self.durably("checkpoint", lambda: self._checkpoints.save(source, chain_id, block_number, block_hash))

    def record_heartbeat(self, details: Mapping[str, Any]) -> None:
        """What the running daemon last said about itself (mempool source live, responses under way), for
        `onguard status` to show with the daemon's time."""
        beat = {"at": now(), **details}
        self.durably("heartbeat", lambda: self._meta.put(HEARTBEAT, beat))

    def last_heartbeat(self) -> Mapping[str, Any] | None:
        return self._meta.get(HEARTBEAT)

    # ---- incidents ----

    def open_incident(self, *, chain_id: int, policy_id: str, severity: str, title: str, dry_run: bool,
                      block: int, block_time: int, evidence: Mapping[str, Any],
                      status: IncidentStatus = IncidentStatus.OPEN) -> Incident:
        incident_id = self._incidents.insert(chain_id=chain_id, policy_id=policy_id, severity=severity, title=title,
                                             dry_run=dry_run, block=block, block_time=block_time, evidence=evidence,
                                             status=status)
        return self.incident(incident_id)

    def open_or_join(self, *, chain_id: int, policy_id: str, cooldown: float, severity: str, title: str,
                     dry_run: bool, block: int, block_time: int, evidence: Mapping[str, Any],
                     status: IncidentStatus, actions: tuple[str, ...],
                     seen: Mapping[str, Any] | None = None) -> tuple[Incident, bool]:
        """In ONE transaction (so two writers, or two replicas, cannot both open): joins the policy's latest
        unresolved incident opened less than `cooldown` seconds of chain time before, or opens one and claims its
        actions. `seen` is what the tripped-again entry records when joining (default: the evidence).
        (incident, opened). When the database refuses the write, the incident is opened in memory under a
        provisional id (negative) and saved once writes resume, as the database opens or joins it then (another
        replica may have opened it meanwhile): the response must not wait for the database."""
        fields = dict(chain_id=chain_id, policy_id=policy_id, severity=severity, title=title, dry_run=dry_run,
                      block=block, block_time=block_time, evidence=evidence, status=status)
        latest = self._unsaved_latest(chain_id, policy_id)
        if latest is None and self.flush():
            try:
                with self.database.transaction():
                    incident_id, opened = self._incidents.open_or_join(
                        cooldown=cooldown, seen=evidence if seen is None else seen, **fields)
                    if opened:
                        for action in actions:
                            self._responses.claim(incident_id, action, self.claimant)
                return self.incident(incident_id), opened
            except WRITE_REFUSED as exc:
                error = str(exc)
        else:
            error = "earlier writes are still waiting"
        if latest is not None and latest.status != IncidentStatus.RESOLVED \
                and block_time - latest.opened_block_time < cooldown:
            return latest, False
        self._last_provisional -= 1
        incident_id = self._last_provisional
        self.durably(f"open incident {incident_id}", lambda: self._save_opened(
            incident_id, actions, fields, cooldown=cooldown, seen=evidence if seen is None else seen))
        self._log.critical("incident opened in memory only, under a provisional id: the database refused it",
                           incident_id=incident_id, error=error)
        incident = Incident(id=incident_id, chain_id=chain_id, policy_id=policy_id, severity=severity,
                            status=status, title=title, dry_run=dry_run, opened_at=now(), opened_block=block,
                            opened_block_time=block_time, last_seen_at=now(), last_seen_block=block,
                            evidence=evidence)
        self._unsaved_incidents[incident_id] = incident
        return incident, True

    def rehearse_trip(self, chain_id: int, sender: str, actions: Sequence[str]) -> None:
        """Runs the statements a trip runs before its pause is sent — opening an incident (open_or_join's
        statements, the claims, the read back) and reading the response transactions stored for each action — once,
        in a transaction rolled back at its end, so nothing of it stays. SQLite compiles a statement the first time a
        connection runs it, and the first trip of a daemon is the one that matters: measured, the first
        open_or_join on a new connection took p50 1.03 ms, the following ones 0.49 ms — the difference came
        straight off the first pause. Not on PostgreSQL, where a rolled-back insert still spends a sequence value
        (and a statement's round trip dwarfs its compilation). A database refusing the write is left for the real
        trip to meet (and keep in memory)."""
        if self.database.dialect != Dialect.SQLITE:
            return
        try:
            with self.database.transaction():
                incident_id, _ = self._incidents.open_or_join(
                    cooldown=0, seen={}, chain_id=chain_id, policy_id=_REHEARSAL_POLICY, severity="info",
                    title="rehearsal", dry_run=False, block=0, block_time=0, evidence={},
                    status=IncidentStatus.OPEN)
                for action in actions:
                    self._responses.claim(incident_id, action, self.claimant)
                    self._responses.txs(sender, action)
                self._incidents.get(incident_id)
                raise _Rehearsed
        except _Rehearsed:
            pass
        except WRITE_REFUSED as exc:
            self._log.warning("could not rehearse opening an incident: the database refuses writes",
                              error=str(exc).strip())

    def _save_opened(self, provisional: int, actions: tuple[str, ...], fields: Mapping[str, Any], *,
                     cooldown: float, seen: Mapping[str, Any]) -> None:
        with self.database.transaction():
            incident_id, opened = self._incidents.open_or_join(cooldown=cooldown, seen=seen, **fields)
            if opened:
                for action in actions:
                    self._responses.claim(incident_id, action, self.claimant)
        self._saved_as[provisional] = incident_id
        self._unsaved_incidents.pop(provisional, None)
        self._log.warning("an incident opened in memory is saved: its provisional id now stands for the "
                          "database's", provisional_id=provisional, incident_id=incident_id, joined=not opened)

    def saved_id(self, incident_id: int) -> int:
        """The database's id of an incident: the id itself, or the one a provisional id was saved as (the same
        provisional id while it is not saved yet). Writes kept for later call it when they run."""
        return self._saved_as.get(incident_id, incident_id)

    def _unsaved_latest(self, chain_id: int, policy_id: str) -> Incident | None:
        mine = [i for i in self._unsaved_incidents.values() if (i.chain_id, i.policy_id) == (chain_id, policy_id)]
        return max(mine, key=lambda i: i.id) if mine else None

    def record_seen_again(self, incident_id: int, block: int, evidence: Mapping[str, Any]) -> None:
        self.durably("tripped-again", lambda: self._incidents.seen_again(self.saved_id(incident_id), block, evidence))

    def add_timeline(self, incident_id: int, kind: str, detail: Mapping[str, Any]) -> None:
        at = now()  # when it happened, even if the database takes it later
        self.durably(f"timeline {kind}",
                     lambda: self._incidents.add_timeline(self.saved_id(incident_id), kind, detail, at=at))

    def set_status(self, incident_id: int, status: IncidentStatus, *, actor: str = "daemon",
                   reason: str = "") -> bool:
        """Moves the incident to `status`, with a timeline entry and an audit-log entry. False if it was there."""
        remembered = self._statuses.get(incident_id, getattr(self._unsaved_incidents.get(incident_id), "status", None))
        before = self._read("incident status", lambda: self._incidents.status(self.saved_id(incident_id)),
                            lambda: remembered)
        if self._backlog:  # the database may not hold what was last set yet
            before = self._statuses.get(incident_id, before)
        if before == status:
            return False
        detail = {"from": before, "to": str(status), "by": actor, "reason": reason}

        def write() -> bool:
            saved = self.saved_id(incident_id)
            with self.database.transaction():
                moved = self._incidents.set_status(saved, status, detail, expected=before)
                if moved:
                    self._audit_status(saved, detail, actor)
            return moved
        if self.durably(f"status {status}", write) is False:
            return False  # another writer (a replica) moved it first: its change, its entries, its notice
        self._statuses[incident_id] = status
        for listener in self.status_listeners:
            listener(incident_id, detail)
        return True

    def _audit_status(self, incident_id: int, detail: Mapping[str, Any], actor: str) -> None:
        AuditLog(self.database).append(INCIDENT_STATUS_AUDIT_KIND, actor, {"incident_id": incident_id, **detail})

    def latest_incident(self, chain_id: int, policy_id: str) -> Incident | None:
        return self._incidents.latest(chain_id, policy_id)

    def incident(self, incident_id: int) -> Incident:
        if incident_id in self._unsaved_incidents:  # not in the database yet (which may not even answer)
            return self._unsaved_incidents[incident_id]
        found = self._read("incident", lambda: self._incidents.get(self.saved_id(incident_id)),
                           lambda: self._known.get(incident_id))
        if found is None:
            raise LookupError(incident_id)
        self._known[incident_id] = found
        return found

    def incidents(self, limit: int = 100) -> list[Incident]:
        return self._incidents.recent(limit)

    def watched_incidents(self, chain_id: int) -> list[Incident]:
        """Incidents not resolved by a human, in which the guardian acts (dry-run and alert-only ones excluded)."""
        return self._incidents.watched(chain_id)

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        return self._read("timeline", lambda: self._incidents.timeline(self.saved_id(incident_id)), list)

    # ---- policy evaluation failures ----

    def record_evaluation_failure(self, chain_id: int, policy_id: str, block_number: int, message: str) -> None:
        self.durably("evaluation failure",
                     lambda: self._failures.record(chain_id, policy_id, block_number, message))

    def evaluation_failures(self) -> list[FailureSummary]:
        """Per policy: how many evaluations failed, and the latest failure."""
        return self._failures.summaries()

    # ---- responses ----

    def claim_response(self, incident_id: int, action: str) -> bool:
        """Reserves `action` for this incident. False when it was already claimed: never send twice."""
        return self._responses.claim(self.saved_id(incident_id), action, self.claimant)

    def take_over_claim(self, incident_id: int, action: str, claimed_by: str, replica: str) -> bool:
        """Among replicas: moves the claim of `action` from `claimed_by` to `replica`, unless it moved already."""
        return self._responses.take_over(self.saved_id(incident_id), action, claimed_by, replica)

    def update_response(self, incident_id: int, action: str, status: ResponseStatus, *, tx_hash: str | None = None,
                        block_number: int | None = None, gas_used: int | None = None,
                        error: str | None = None) -> None:
        at = now()
        self.durably(f"response {action} {status}", lambda: self._responses.update(
            self.saved_id(incident_id), action, status, tx_hash=tx_hash, block_number=block_number, gas_used=gas_used,
            error=error, at=at))

    def record_outcome(self, incident_id: int, action: str, outcome: Outcome, detail: Mapping[str, Any]) -> None:
        """Where the response landed against the harm, as the chain shows it (see responders/outcome.py)."""
        self.durably(f"outcome {action}",
                     lambda: self._responses.record_outcome(self.saved_id(incident_id), action, outcome, detail))

    def record_orphaned(self, incident_id: int, action: str, tx_hash: str, block: int | None) -> None:
        """A mined response a reorganisation dropped: counted, back to being sent."""
        self.durably(f"orphaned {action}",
                     lambda: self._responses.record_orphaned(self.saved_id(incident_id), action, tx_hash, block))

    def responses(self, incident_id: int) -> list[ResponseRecord]:
        return self._read("responses", lambda: self._responses.of_incident(self.saved_id(incident_id)), list)

    def unfinished_responses(self) -> list[ResponseRecord]:
        """Responses a crash may have interrupted: claimed or sent, with no final outcome recorded."""
        return self._responses.unfinished()

    # ---- response transactions ----

    def record_response_tx(self, tx: ResponseTx) -> None:
        """Stored BEFORE the transaction is sent, so a restart knows the nonce it holds and the fees to beat."""
        self.durably("response transaction",
                     lambda: self._responses.record_tx(replace(tx, incident_id=self.saved_id(tx.incident_id))))

    def save_signed_ladders(self, sender: str, action: str, ladders: Sequence[Mapping[str, Any]]) -> None:
        """The fee ladders last signed for `sender`'s `action` (responders/feeladder.py), newest first: kept so a
        restart recognises a rung that was sent but not yet recorded. One `meta` row per action, replaced."""
        key = f"{_LADDER_KEY}{sender.lower()}:{action}"
        self.durably("signed ladder", lambda: self._meta.put(key, {"ladders": list(ladders)}))

    def signed_ladders(self, sender: str) -> list[Mapping[str, Any]]:
        """Every fee ladder kept for `sender`, whatever the action."""
        prefix = f"{_LADDER_KEY}{sender.lower()}:"
        return [ladder for value in self._meta.with_prefix(prefix) for ladder in value["ladders"]]

    def response_txs(self, sender: str, action: str | None = None) -> list[ResponseTx]:
        """The transactions `sender` signed for responses (for one action), oldest first."""
        return self._read("response transactions", lambda: self._responses.txs(sender, action), list)


INCIDENT_STATUS_AUDIT_KIND = "incident-status"
_REHEARSAL_POLICY = "onguard:rehearsal"  # never stays in the database: see IncidentStore.rehearse_trip


class _Rehearsed(Exception):
    """Rolls a rehearsal's transaction back."""
_LADDER_KEY = "signed-ladder:"
