"""Safe transactions and their owner signatures in the state database: pre-signed emergency transactions and
proposals, linked to incidents (whose timelines say proposed, signed by whom, executed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from onguard.safe.interop import SafeSnapshot
from onguard.safe.tx import OwnerSignature, SafeTxData
from onguard.store.database import Database
from onguard.store.incidents import Incidents
from onguard.store.records import now

class TxKind(StrEnum):
    PRESIGNED = "presigned"
    PROPOSAL = "proposal"


class TxStatus(StrEnum):
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
    """The Safe transactions repository: records, owner signatures and the Safe snapshots files carried. A change
    that concerns an incident writes its timeline entry in the same transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._incidents = Incidents(db)

    def add(self, kind: str, tx: SafeTxData, *, purpose: str, proposer: str, action: str | None = None,
            incident_id: int | None = None) -> SafeTxRecord:
        """Records the transaction, or returns the one already recorded with the same hash."""
        at = now()
        with self._db.transaction():
            record = self._insert(kind, tx, at, purpose=purpose, proposer=proposer, action=action,
                                  incident_id=incident_id)
            if incident_id is not None and kind == TxKind.PROPOSAL:
                self._incidents.add_timeline(incident_id, "proposed", {
                    "proposal": record.id, "by": proposer, "purpose": purpose, "safe_tx_hash": record.safe_tx_hash})
        return record

    def _insert(self, kind: str, tx: SafeTxData, at: str, *, purpose: str, proposer: str, action: str | None,
                incident_id: int | None) -> SafeTxRecord:
        self._db.execute(
            "INSERT INTO safe_txs (kind, chain_id, safe, to_address, value, data, operation, safe_tx_gas, "
            "base_gas, gas_price, gas_token, refund_receiver, nonce, safe_tx_hash, action, purpose, incident_id, "
            "proposer, status, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (kind, safe_tx_hash) DO NOTHING",
            (kind, tx.chain_id, tx.safe, tx.to, str(tx.value), "0x" + tx.data.hex(), tx.operation,
             str(tx.safe_tx_gas), str(tx.base_gas), str(tx.gas_price), tx.gas_token, tx.refund_receiver, tx.nonce,
             tx.safe_tx_hash_hex, action, purpose, incident_id, proposer, TxStatus.PENDING, at, at))
        record_id = self._db.scalar("SELECT id FROM safe_txs WHERE kind=? AND safe_tx_hash=?",
                                    (kind, tx.safe_tx_hash_hex))
        return self.get(record_id)

    def add_signature(self, record: SafeTxRecord, signature: OwnerSignature) -> bool:
        """False when this owner's signature was already held."""
        with self._db.transaction():
            added = self._db.execute(
                "INSERT INTO safe_signatures (safe_tx_id, owner, kind, signature, added_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (safe_tx_id, owner) DO NOTHING",
                (record.id, signature.owner, signature.kind, signature.hex, now())) == 1
            if added:
                self._signed(record, signature)
        return added

    def replace_signature(self, record: SafeTxRecord, signature: OwnerSignature) -> None:
        """A contract owner's signature grows as its own owners sign: the newer payload replaces the older."""
        with self._db.transaction():
            self._db.execute(
                "INSERT INTO safe_signatures (safe_tx_id, owner, kind, signature, added_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (safe_tx_id, owner) DO UPDATE SET kind=excluded.kind, signature=excluded.signature, "
                "added_at=excluded.added_at", (record.id, signature.owner, signature.kind, signature.hex, now()))
            self._signed(record, signature)

    def _signed(self, record: SafeTxRecord, signature: OwnerSignature) -> None:
        if record.incident_id is not None:
            self._incidents.add_timeline(record.incident_id, "signed", {
                "proposal": record.id, "owner": signature.owner, "signature_kind": signature.kind})

    def set_status(self, record: SafeTxRecord, status: str, *, tx_hash: str | None = None,
                   block_number: int | None = None, note: str | None = None) -> None:
        with self._db.transaction():
            self._db.execute("UPDATE safe_txs SET status=?, tx_hash=COALESCE(?, tx_hash), "
                             "block_number=COALESCE(?, block_number), note=COALESCE(?, note), updated_at=? WHERE id=?",
                             (status, tx_hash, block_number, note, now(), record.id))
            if record.incident_id is not None and status in (TxStatus.EXECUTED, TxStatus.REJECTED):
                self._incidents.add_timeline(record.incident_id, status, {"proposal": record.id, "tx_hash": tx_hash,
                                                                          "block": block_number, "note": note})

    def record_snapshot(self, record: SafeTxRecord, snapshot: SafeSnapshot, source: str) -> None:
        """The Safe's state a file carried with this transaction: what offline review and signing go by."""
        self._db.execute("INSERT INTO safe_tx_snapshots (safe_tx_id, chain_id, nonce, threshold, owners, version, "
                         "source, recorded_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (safe_tx_id) DO UPDATE SET "
                         "chain_id=excluded.chain_id, nonce=excluded.nonce, threshold=excluded.threshold, "
                         "owners=excluded.owners, version=excluded.version, source=excluded.source, "
                         "recorded_at=excluded.recorded_at",
                         (record.id, snapshot.chain_id, snapshot.nonce, snapshot.threshold,
                          json.dumps(list(snapshot.owners)), snapshot.version, source, now()))

    def snapshot(self, record: SafeTxRecord) -> tuple[SafeSnapshot, str, str] | None:
        """(state, where it came from, when) as recorded with this transaction, if a file carried one."""
        row = self._db.fetch_one("SELECT * FROM safe_tx_snapshots WHERE safe_tx_id=?", (record.id,))
        if row is None:
            return None
        return (SafeSnapshot(chain_id=row["chain_id"], nonce=row["nonce"], threshold=row["threshold"],
                             owners=tuple(json.loads(row["owners"])), version=row["version"]),
                row["source"], row["recorded_at"])

    def get(self, record_id: int) -> SafeTxRecord:
        row = self._db.fetch_one("SELECT * FROM safe_txs WHERE id=?", (record_id,))
        if row is None:
            raise LookupError(record_id)
        return self._record(row)

    def by_hash(self, kind: str, safe_tx_hash: str) -> SafeTxRecord | None:
        row = self._db.fetch_one("SELECT * FROM safe_txs WHERE kind=? AND safe_tx_hash=?",
                                 (kind, safe_tx_hash.lower()))
        return self._record(row) if row else None

    def list(self, kind: str, status: str | None = None) -> list[SafeTxRecord]:
        query = "SELECT * FROM safe_txs WHERE kind=?" + (" AND status=?" if status else "") + " ORDER BY id"
        return [self._record(row) for row in self._db.fetch_all(query, (kind, status) if status else (kind,))]

    def _record(self, row: Any) -> SafeTxRecord:
        tx = SafeTxData(safe=row["safe"], chain_id=row["chain_id"], to=row["to_address"], value=int(row["value"]),
                        data=bytes.fromhex(row["data"][2:]), operation=row["operation"],
                        safe_tx_gas=int(row["safe_tx_gas"]), base_gas=int(row["base_gas"]),
                        gas_price=int(row["gas_price"]), gas_token=row["gas_token"],
                        refund_receiver=row["refund_receiver"], nonce=row["nonce"])
        signatures = tuple(
            OwnerSignature(owner=s["owner"], kind=s["kind"], signature=bytes.fromhex(s["signature"][2:]))
            for s in self._db.fetch_all("SELECT * FROM safe_signatures WHERE safe_tx_id=? ORDER BY added_at",
                                        (row["id"],)))
        return SafeTxRecord(id=row["id"], kind=row["kind"], tx=tx, safe_tx_hash=row["safe_tx_hash"],
                            action=row["action"], purpose=row["purpose"], incident_id=row["incident_id"],
                            proposer=row["proposer"], status=row["status"], tx_hash=row["tx_hash"],
                            block_number=row["block_number"], note=row["note"], created_at=row["created_at"],
                            signatures=signatures)
