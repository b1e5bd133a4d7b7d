"""Safe transactions and their owner signatures in the state database: pre-signed emergency transactions and
proposals, linked to incidents (whose timelines say proposed, signed by whom, executed)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from onguard.incidents.store import IncidentStore, now
from onguard.safe.interop import SafeSnapshot
from onguard.safe.tx import OwnerSignature, SafeTxData

_SCHEMA = """
CREATE TABLE IF NOT EXISTS safe_txs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    safe TEXT NOT NULL,
    to_address TEXT NOT NULL,
    value TEXT NOT NULL,
    data TEXT NOT NULL,
    operation INTEGER NOT NULL,
    safe_tx_gas TEXT NOT NULL,
    base_gas TEXT NOT NULL,
    gas_price TEXT NOT NULL,
    gas_token TEXT NOT NULL,
    refund_receiver TEXT NOT NULL,
    nonce INTEGER NOT NULL,
    safe_tx_hash TEXT NOT NULL,
    action TEXT,
    purpose TEXT NOT NULL,
    incident_id INTEGER REFERENCES incidents (id),
    proposer TEXT NOT NULL,
    status TEXT NOT NULL,
    tx_hash TEXT,
    block_number INTEGER,
    note TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (kind, safe_tx_hash)
);
CREATE TABLE IF NOT EXISTS safe_signatures (
    safe_tx_id INTEGER NOT NULL REFERENCES safe_txs (id),
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    signature TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (safe_tx_id, owner)
);
CREATE TABLE IF NOT EXISTS safe_tx_snapshots (
    safe_tx_id INTEGER PRIMARY KEY REFERENCES safe_txs (id),
    chain_id INTEGER NOT NULL,
    nonce INTEGER NOT NULL,
    threshold INTEGER NOT NULL,
    owners TEXT NOT NULL,
    version TEXT NOT NULL,
    source TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
"""


class TxKind:
    PRESIGNED = "presigned"
    PROPOSAL = "proposal"


class TxStatus:
    PENDING = "pending"      # collecting signatures, or holding them until needed
    EXECUTED = "executed"
    REJECTED = "rejected"    # a rejection (zero-value Safe tx to itself) spent its nonce: never to be executed
    STALE = "stale"          # the Safe's nonce moved past it: its signatures are void


@dataclass(frozen=True, slots=True)
class SafeTxRecord:
    id: int
    kind: str
    tx: SafeTxData
    safe_tx_hash: str
    action: str | None
    purpose: str
    incident_id: int | None
    proposer: str
    status: str
    tx_hash: str | None
    block_number: int | None
    note: str | None
    created_at: str
    signatures: tuple[OwnerSignature, ...]


class SafeTxStore:
    def __init__(self, store: IncidentStore) -> None:
        self._store = store
        self._db = store.db
        self._db.executescript(_SCHEMA)

    def add(self, kind: str, tx: SafeTxData, *, purpose: str, proposer: str, action: str | None = None,
            incident_id: int | None = None) -> SafeTxRecord:
        """Records the transaction, or returns the one already recorded with the same hash."""
        at = now()
        self._db.execute(
            "INSERT OR IGNORE INTO safe_txs (kind, chain_id, safe, to_address, value, data, operation, safe_tx_gas, "
            "base_gas, gas_price, gas_token, refund_receiver, nonce, safe_tx_hash, action, purpose, incident_id, "
            "proposer, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (kind, tx.chain_id, tx.safe, tx.to, str(tx.value), "0x" + tx.data.hex(), tx.operation,
             str(tx.safe_tx_gas), str(tx.base_gas), str(tx.gas_price), tx.gas_token, tx.refund_receiver, tx.nonce,
             tx.safe_tx_hash_hex, action, purpose, incident_id, proposer, TxStatus.PENDING, at, at))
        row = self._db.execute("SELECT id FROM safe_txs WHERE kind=? AND safe_tx_hash=?",
                               (kind, tx.safe_tx_hash_hex)).fetchone()
        record = self.get(row["id"])
        if incident_id is not None and kind == TxKind.PROPOSAL:
            self._store.add_timeline(incident_id, "proposed", {"proposal": record.id, "by": proposer,
                                                               "purpose": purpose, "safe_tx_hash": record.safe_tx_hash})
        return record

    def add_signature(self, record: SafeTxRecord, signature: OwnerSignature) -> bool:
        """False when this owner's signature was already held."""
        cursor = self._db.execute("INSERT OR IGNORE INTO safe_signatures VALUES (?,?,?,?,?)",
                                  (record.id, signature.owner, signature.kind, signature.hex, now()))
        added = cursor.rowcount == 1
        if added and record.incident_id is not None:
            self._store.add_timeline(record.incident_id, "signed", {"proposal": record.id, "owner": signature.owner,
                                                                    "signature_kind": signature.kind})
        return added

    def replace_signature(self, record: SafeTxRecord, signature: OwnerSignature) -> None:
        """A contract owner's signature grows as its own owners sign: the newer payload replaces the older."""
        self._db.execute("INSERT OR REPLACE INTO safe_signatures VALUES (?,?,?,?,?)",
                         (record.id, signature.owner, signature.kind, signature.hex, now()))
        if record.incident_id is not None:
            self._store.add_timeline(record.incident_id, "signed", {"proposal": record.id, "owner": signature.owner,
                                                                    "signature_kind": signature.kind})

    def set_status(self, record: SafeTxRecord, status: str, *, tx_hash: str | None = None,
                   block_number: int | None = None, note: str | None = None) -> None:
        self._db.execute("UPDATE safe_txs SET status=?, tx_hash=COALESCE(?, tx_hash), "
                         "block_number=COALESCE(?, block_number), note=COALESCE(?, note), updated_at=? WHERE id=?",
                         (status, tx_hash, block_number, note, now(), record.id))
        if record.incident_id is not None and status in (TxStatus.EXECUTED, TxStatus.REJECTED):
            self._store.add_timeline(record.incident_id, status, {"proposal": record.id, "tx_hash": tx_hash,
                                                                  "block": block_number, "note": note})

    def record_snapshot(self, record: SafeTxRecord, snapshot: SafeSnapshot, source: str) -> None:
        """The Safe's state a file carried with this transaction: what offline review and signing go by."""
        self._db.execute("INSERT OR REPLACE INTO safe_tx_snapshots VALUES (?,?,?,?,?,?,?,?)",
                         (record.id, snapshot.chain_id, snapshot.nonce, snapshot.threshold,
                          json.dumps(list(snapshot.owners)), snapshot.version, source, now()))

    def snapshot(self, record: SafeTxRecord) -> tuple[SafeSnapshot, str, str] | None:
        """(state, where it came from, when) as recorded with this transaction, if a file carried one."""
        row = self._db.execute("SELECT * FROM safe_tx_snapshots WHERE safe_tx_id=?", (record.id,)).fetchone()
        if row is None:
            return None
        return (SafeSnapshot(chain_id=row["chain_id"], nonce=row["nonce"], threshold=row["threshold"],
                             owners=tuple(json.loads(row["owners"])), version=row["version"]),
                row["source"], row["recorded_at"])

    def get(self, record_id: int) -> SafeTxRecord:
        row = self._db.execute("SELECT * FROM safe_txs WHERE id=?", (record_id,)).fetchone()
        if row is None:
            raise LookupError(record_id)
        return self._record(row)

    def by_hash(self, kind: str, safe_tx_hash: str) -> SafeTxRecord | None:
        row = self._db.execute("SELECT * FROM safe_txs WHERE kind=? AND safe_tx_hash=?",
                               (kind, safe_tx_hash.lower())).fetchone()
        return self._record(row) if row else None

    def list(self, kind: str, status: str | None = None) -> list[SafeTxRecord]:
        query = "SELECT * FROM safe_txs WHERE kind=?" + (" AND status=?" if status else "") + " ORDER BY id"
        return [self._record(row) for row in self._db.execute(query, (kind, status) if status else (kind,))]

    def _record(self, row: sqlite3.Row) -> SafeTxRecord:
        tx = SafeTxData(safe=row["safe"], chain_id=row["chain_id"], to=row["to_address"], value=int(row["value"]),
                        data=bytes.fromhex(row["data"][2:]), operation=row["operation"],
                        safe_tx_gas=int(row["safe_tx_gas"]), base_gas=int(row["base_gas"]),
                        gas_price=int(row["gas_price"]), gas_token=row["gas_token"],
                        refund_receiver=row["refund_receiver"], nonce=row["nonce"])
        signatures = tuple(
            OwnerSignature(owner=s["owner"], kind=s["kind"], signature=bytes.fromhex(s["signature"][2:]))
            for s in self._db.execute("SELECT * FROM safe_signatures WHERE safe_tx_id=? ORDER BY added_at",
                                      (row["id"],)))
        return SafeTxRecord(id=row["id"], kind=row["kind"], tx=tx, safe_tx_hash=row["safe_tx_hash"],
                            action=row["action"], purpose=row["purpose"], incident_id=row["incident_id"],
                            proposer=row["proposer"], status=row["status"], tx_hash=row["tx_hash"],
                            block_number=row["block_number"], note=row["note"], created_at=row["created_at"],
                            signatures=signatures)
