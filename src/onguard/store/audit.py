"""The append-only, hash-chained audit log: every decision, proposal, signature, execution and config change."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onguard.errors import InputError
from onguard.store.database import Database
from onguard.store.records import AUDIT_GENESIS, now

GENESIS = AUDIT_GENESIS
APPEND_LOCK = "audit-log-append"
JSON_SAFE_INT = 2**53 - 1  # larger integers are written as decimal strings: JSON readers other than Python lose them


class AuditKind:
    DECISION = "decision"
    CONFIG = "config"                     # the daemon started with config/policy files of these hashes
    PRESIGNED = "presigned"               # an owner pre-signed an emergency transaction
    PRESIGNED_STALE = "presigned-stale"   # the Safe's nonce moved: those pre-signatures are void
    PROPOSAL = "proposal"
    SIGNATURE = "signature"
    EXECUTION = "execution"
    REJECTION = "rejection"
    NOTIFICATION_FAILED = "notification-failed"  # a notice reached no one on a channel (ops.notify.DeliveryFailure)
    INCIDENT_ACK = "incident-acknowledged"       # a person took an incident in hand (`onguard incidents ack`)
    INCIDENT_NOTE = "incident-note"              # a person's note on an incident (`onguard incidents note`)
    RECOVERY = "recovery"                        # `onguard recover` proposed the way back (unpause, reset)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    kind: str
    actor: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.at, "kind": self.kind, "actor": self.actor,
                "details": self.details, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True, slots=True)
class Head:
    """The newest entry's seq and hash, recorded apart from the entries: a log cut short no longer reaches it."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Break:
    """The first entry whose chain does not hold, and why."""

    seq: int
    reason: str


def entry_hash(seq: int, at: str, kind: str, actor: str, details: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of the entry's fields, prev_hash included:
    anyone with a JSON library and sha256 can recompute it."""
    canonical = json.dumps({"seq": seq, "time": at, "kind": kind, "actor": actor, "details": details,
                            "prev_hash": prev_hash}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    """Details as plain JSON values, exactly as they will be read back (so the hash verifies after a round trip)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if abs(value) <= JSON_SAFE_INT else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return str(value)


class AuditLog:
    """The audit tables of the state database. Appends are serialised (one writer at a time on SQLite, an advisory
    lock on PostgreSQL), so the daemon, a CLI signing at the same time and replicas sharing one database still make
    one unbroken chain. The head (seq and hash of the newest entry) moves in the same transaction as each append,
    so entries deleted from the end are found missing."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def head(self) -> Head | None:
        """The recorded head; None when its row was deleted."""
        row = self._db.fetch_one("SELECT seq, hash FROM audit_head WHERE id=1")
        return Head(seq=row[0], hash=row[1]) if row else None

    def append(self, kind: str, actor: str, details: Mapping[str, Any]) -> AuditEntry:
        plain = _plain(details)
        with self._db.transaction():
            self._db.serialise(APPEND_LOCK)
            # Chained to the recorded head, not to whatever entry is last: after a truncation the gap stays visible.
            head = self.head() or self._last_entry()
            seq, prev = head.seq + 1, head.hash
            at = now()
            digest = entry_hash(seq, at, kind, actor, plain, prev)
            self._db.execute("INSERT INTO audit_log (seq, at, kind, actor, details, prev_hash, hash) "
                             "VALUES (?,?,?,?,?,?,?)", (seq, at, kind, actor, json.dumps(plain, sort_keys=True), prev,
                                                       digest))
            self._db.execute("UPDATE audit_head SET seq=?, hash=? WHERE id=1", (seq, digest))
        return AuditEntry(seq=seq, at=at, kind=kind, actor=actor, details=plain, prev_hash=prev, hash=digest)

    def _last_entry(self) -> Head:
        last = self._db.fetch_one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return Head(seq=last[0], hash=last[1]) if last else Head(seq=0, hash=GENESIS)

    def entries(self, kind: str | None = None) -> Iterator[AuditEntry]:
        query = "SELECT * FROM audit_log" + (" WHERE kind=?" if kind else "") + " ORDER BY seq"
        for row in self._db.fetch_all(query, (kind,) if kind else ()):
            try:
                details = json.loads(row["details"])
            except json.JSONDecodeError:
                details = {"unreadable": row["details"]}
            yield AuditEntry(seq=row["seq"], at=row["at"], kind=row["kind"], actor=row["actor"], details=details,
                             prev_hash=row["prev_hash"], hash=row["hash"])

    def last(self, kind: str, actor: str | None = None) -> AuditEntry | None:
        """The latest entry of `kind` (by `actor`, when given)."""
        seq = (self._db.scalar("SELECT seq FROM audit_log WHERE kind=? ORDER BY seq DESC LIMIT 1", (kind,))
               if actor is None else
               self._db.scalar("SELECT seq FROM audit_log WHERE kind=? AND actor=? ORDER BY seq DESC LIMIT 1",
                               (kind, actor)))
        return next((e for e in self.entries() if e.seq == seq), None) if seq is not None else None

    def verify(self) -> tuple[int, Break | None]:
        """Every entry's hash and link, and that the entries reach the recorded head. Read in one snapshot, so an
        append by another process in between is not mistaken for a break."""
        with self._db.snapshot():
            head, last = self.head(), self._last_entry()
            count, broken = verify_entries(self.entries())
        if broken is not None:
            return count, broken
        if head is None:
            return count, Break(count + 1, "the head record (seq and hash of the newest entry) was deleted: entries "
                                           f"after entry {count} may have been deleted with it")
        return count, reaches_head(count, last, head)

    def export(self, path: Path) -> tuple[int, Head]:
        """Writes every entry; returns how many and the newest one written, the head to hand out of band."""
        count, last = 0, Head(seq=0, hash=GENESIS)
        with self._db.snapshot(), path.open("w") as handle:
            for entry in self.entries():
                handle.write(json.dumps(entry.as_json(), sort_keys=True, ensure_ascii=False) + "\n")
                count, last = count + 1, Head(seq=entry.seq, hash=entry.hash)
        return count, last


def verify_entries(entries: Iterable[AuditEntry]) -> tuple[int, Break | None]:
    """(entries checked, the first break or None). A deleted entry shows as a gap, an edited one as a hash that no
    longer matches, a re-hashed edit as the next entry's prev_hash no longer matching. Entries cut off at the end
    are not seen here: check the newest against a head (`reaches_head`, `contains_head`)."""
    expected_seq, prev, count = 1, GENESIS, 0
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            return count, Break(expected_seq, f"entry {expected_seq} is missing (next found: {entry.seq})")
        if entry.prev_hash != prev:
            return count, Break(entry.seq, "its prev_hash does not match the hash of the entry before it")
        if entry_hash(entry.seq, entry.at, entry.kind, entry.actor, entry.details, entry.prev_hash) != entry.hash:
            return count, Break(entry.seq, "its content does not match its hash (edited after it was written)")
        expected_seq, prev = entry.seq + 1, entry.hash
    return count, None


def reaches_head(count: int, last: Head, head: Head) -> Break | None:
    """Whether an intact chain whose newest entry is `last` ends exactly at the recorded head."""
    if last.seq < head.seq:
        missing = f"entry {head.seq}" if last.seq + 1 == head.seq else f"entries {last.seq + 1} to {head.seq}"
        return Break(last.seq + 1, f"{missing} missing: the log ends at entry {last.seq} ({count} entries) but its "
                                   f"head is entry {head.seq} (deleted from the end)")
    if last.seq > head.seq:
        return Break(head.seq + 1, f"entries after the recorded head (entry {head.seq}) were not written by onguard")
    if last.hash != head.hash:
        return Break(head.seq, f"its hash {last.hash[:16]}… is not the recorded head's {head.hash[:16]}… "
                               "(the newest entry was replaced)")
    return None


def contains_head(entries: Iterable[AuditEntry], head_hash: str) -> Break | None:
    """Whether an intact chain of entries holds the entry whose hash was handed out as the head: everything up to
    it is then proven present by the links. Entries after it are newer than that head."""
    last = Head(seq=0, hash=GENESIS)
    for entry in entries:
        if entry.hash == head_hash:
            return None
        last = Head(seq=entry.seq, hash=entry.hash)
    return Break(last.seq + 1, f"the head {head_hash[:16]}… is not in the log, which ends at entry {last.seq}: "
                               "entries were cut off the end, or the head is from another log")


def read_export(path: Path) -> list[AuditEntry]:
    """Entries from a file written by `onguard audit export` (one JSON object per line)."""
    entries = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the audit export ({exc.strerror})", file=str(path)) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            entries.append(AuditEntry(seq=int(item["seq"]), at=item["time"], kind=item["kind"], actor=item["actor"],
                                      details=item["details"], prev_hash=item["prev_hash"], hash=item["hash"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise InputError(f"line {number} is not an audit entry", file=str(path),
                             hint="expected one JSON object per line as written by `onguard audit export`") from None
    return entries


def files_digest(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of each file's bytes, by path: what the daemon ran with."""
    digests = {}
    for path in sorted(set(paths)):
        try:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digests[str(path)] = "unreadable"
    return digests


def record_config(audit: AuditLog, actor: str, paths: Iterable[Path], *, per_actor: bool = False) -> AuditEntry | None:
    """Appends a config entry when the files differ from the previous start's (always on the first start).
    `per_actor`: compared with the previous start of this actor only (replicas sharing one log, each its files)."""
    files = files_digest(paths)
    combined = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    previous = audit.last(AuditKind.CONFIG, actor if per_actor else None)
    if previous is not None and previous.details.get("hash") == combined:
        return None
    before: Mapping[str, str] = previous.details.get("files", {}) if previous else {}
    changed = sorted(p for p in set(files) | set(before) if files.get(p) != before.get(p))
    return audit.append(AuditKind.CONFIG, actor, {"hash": combined, "files": files,
                                                  "changed": changed if previous else [],
                                                  "first": previous is None})

