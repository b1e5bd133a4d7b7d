"""Responses (one per incident and action, claimed at most once) and the signed transactions sent for them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from onguard.store.database import Database
from onguard.store.incidents import Incidents
from onguard.store.records import Outcome, ResponseRecord, ResponseStatus, ResponseTx, as_json, now


class Responses:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._incidents = Incidents(db)

    def claim(self, incident_id: int, action: str, by: str | None = None) -> bool:
        """Reserves `action` for this incident (for replica `by`, among replicas), atomically on either engine.
        False when it was already claimed."""
        at = now()
        return self._db.execute(
            "INSERT INTO responses (incident_id, action, status, updated_at, claimed_by, claimed_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT (incident_id, action) DO NOTHING",
            (incident_id, action, ResponseStatus.CLAIMED, at, by, None if by is None else at)) == 1

    def take_over(self, incident_id: int, action: str, claimed_by: str, by: str) -> bool:
        """Moves a claim from replica `claimed_by` to `by` (a compare-and-set: of several takers one wins), with a
        timeline entry. False when the claim had already moved."""
        at = now()
        with self._db.transaction():
            moved = self._db.execute(
                "UPDATE responses SET claimed_by=?, claimed_at=? WHERE incident_id=? AND action=? AND claimed_by=?",
                (by, at, incident_id, action, claimed_by)) == 1
            if moved:
                self._incidents.add_timeline(incident_id, "claim-taken-over",
                                             {"action": action, "from": claimed_by, "by": by}, at=at)
        return moved

    def update(self, incident_id: int, action: str, status: ResponseStatus, *, tx_hash: str | None,
               block_number: int | None, gas_used: int | None, error: str | None, at: str) -> None:
        with self._db.transaction():
            self._db.execute(
                "UPDATE responses SET status=?, tx_hash=COALESCE(?, tx_hash), block_number=?, gas_used=?, error=?, "
                "updated_at=? WHERE incident_id=? AND action=?",
                (status, tx_hash, block_number, gas_used, error, at, incident_id, action))
            detail = {"action": action, "tx_hash": tx_hash, "block": block_number, "gas_used": gas_used,
                      "error": error}
            self._incidents.add_timeline(incident_id, f"response-{status}", {k: v for k, v in detail.items() if v},
                                         at=at)

    def record_outcome(self, incident_id: int, action: str, outcome: Outcome, detail: Mapping[str, Any]) -> None:
        with self._db.transaction():
            self._db.execute("UPDATE responses SET outcome=?, outcome_detail=? WHERE incident_id=? AND action=?",
                             (outcome, as_json(detail), incident_id, action))
            self._incidents.add_timeline(incident_id, "outcome", {"action": action, "outcome": str(outcome),
                                                                  **detail})

    def record_orphaned(self, incident_id: int, action: str, tx_hash: str, block: int | None) -> None:
        with self._db.transaction():
            self._db.execute(
                "UPDATE responses SET status=?, orphaned=orphaned+1, block_number=NULL, gas_used=NULL, outcome=NULL, "
                "outcome_detail=NULL, updated_at=? WHERE incident_id=? AND action=?",
                (ResponseStatus.ORPHANED, now(), incident_id, action))
            self._incidents.add_timeline(incident_id, "response-orphaned",
                                         {"action": action, "tx_hash": tx_hash, "was_in_block": block})

    def of_incident(self, incident_id: int) -> list[ResponseRecord]:
        rows = self._db.fetch_all("SELECT * FROM responses WHERE incident_id=? ORDER BY id", (incident_id,))
        return [_response(row) for row in rows]

    def unfinished(self) -> list[ResponseRecord]:
        """Claimed or sent, with no final outcome recorded: what a crash may have interrupted."""
        rows = self._db.fetch_all("SELECT * FROM responses WHERE status IN (?, ?) ORDER BY id",
                                  (ResponseStatus.CLAIMED, ResponseStatus.SENT))
        return [_response(row) for row in rows]

    # ---- response transactions ----

    def record_tx(self, tx: ResponseTx) -> None:
        self._db.execute(
            "INSERT INTO response_txs (action, incident_id, sender, nonce, tx_hash, max_fee_per_gas, "
            "max_priority_fee_per_gas, raw, stored_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (tx.action, tx.incident_id, tx.sender, tx.nonce, tx.tx_hash, str(tx.max_fee_per_gas),
             str(tx.max_priority_fee_per_gas), "0x" + tx.raw.hex(), now()))

    def txs(self, sender: str, action: str | None = None) -> list[ResponseTx]:
        """The transactions `sender` signed for responses (for one action), oldest first."""
        query = "SELECT * FROM response_txs WHERE sender=?" + (" AND action=?" if action else "") + " ORDER BY id"
        rows = self._db.fetch_all(query, (sender, action) if action else (sender,))
        return [ResponseTx(action=r["action"], incident_id=r["incident_id"], sender=r["sender"], nonce=r["nonce"],
                           tx_hash=r["tx_hash"], max_fee_per_gas=int(r["max_fee_per_gas"]),
                           max_priority_fee_per_gas=int(r["max_priority_fee_per_gas"]),
                           raw=bytes.fromhex(r["raw"][2:])) for r in rows]


def _response(row: Any) -> ResponseRecord:
    detail = row["outcome_detail"]
    return ResponseRecord(incident_id=row["incident_id"], action=row["action"], status=ResponseStatus(row["status"]),
                          tx_hash=row["tx_hash"], block_number=row["block_number"], gas_used=row["gas_used"],
                          error=row["error"], updated_at=row["updated_at"],
                          outcome=Outcome(row["outcome"]) if row["outcome"] else None,
                          outcome_detail=json.loads(detail) if detail else None, orphaned=row["orphaned"],
                          claimed_by=row["claimed_by"], claimed_at=row["claimed_at"])
