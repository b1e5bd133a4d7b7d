"""Checkpoints: per replica, block source and chain, the last block handled, so a restart catches up from there.

Each replica has its own (replicas on different nodes are at different heights: one must neither move another's
back nor make it skip blocks it never judged); a daemon alone, or a tool, is replica "". A replica that has none
yet (its first start under this id) resumes at the most advanced checkpoint any replica wrote for the chain, which
is where one shared checkpoint stood before checkpoints were kept per replica."""

from __future__ import annotations

from onguard.store.database import Database
from onguard.store.records import now

ALONE = ""  # the replica key of a daemon alone (SQLite), and of the rows written before replicas had their own

_OWN_FIRST = ("SELECT block_number, block_hash, updated_at FROM checkpoints WHERE source=? AND chain_id=? "
              "ORDER BY CASE WHEN replica=? THEN 0 ELSE 1 END, block_number DESC, updated_at DESC LIMIT 1")


class Checkpoints:
    def __init__(self, db: Database, replica: str = ALONE) -> None:
        self._db = db
        self.replica = replica

    def get(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """(block number, block hash): this replica's, else the most advanced of any replica."""
        row = self._db.fetch_one(_OWN_FIRST, (source, chain_id, self.replica))
        return (row["block_number"], row["block_hash"]) if row else None

    def written(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """(block number, when it was written) of the most advanced checkpoint of any replica: how far the
        guardian has got (`onguard status`)."""
        row = self._db.fetch_one("SELECT block_number, updated_at FROM checkpoints WHERE source=? AND chain_id=? "
                                 "ORDER BY block_number DESC, updated_at DESC LIMIT 1", (source, chain_id))
        return (row["block_number"], row["updated_at"]) if row else None

    def save(self, source: str, chain_id: int, block_number: int, block_hash: str) -> None:
        self._db.execute(
            "INSERT INTO checkpoints (replica, source, chain_id, block_number, block_hash, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (replica, source, chain_id) DO UPDATE SET "
            "block_number=excluded.block_number, block_hash=excluded.block_hash, updated_at=excluded.updated_at",
            (self.replica, source, chain_id, block_number, block_hash, now()))
