"""Checkpoints: per block source and chain, the last block handled, so a restart catches up from there."""

from __future__ import annotations

from onguard.store.database import Database
from onguard.store.records import now


class Checkpoints:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """(block number, block hash)."""
        row = self._db.fetch_one("SELECT block_number, block_hash FROM checkpoints WHERE source=? AND chain_id=?",
                                 (source, chain_id))
        return (row["block_number"], row["block_hash"]) if row else None

    def written(self, source: str, chain_id: int) -> tuple[int, str] | None:
        """(block number, when it was written)."""
        row = self._db.fetch_one("SELECT block_number, updated_at FROM checkpoints WHERE source=? AND chain_id=?",
                                 (source, chain_id))
        return (row["block_number"], row["updated_at"]) if row else None

    def save(self, source: str, chain_id: int, block_number: int, block_hash: str) -> None:
        self._db.execute(
            "INSERT INTO checkpoints (source, chain_id, block_number, block_hash, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (source, chain_id) DO UPDATE SET block_number=excluded.block_number, "
            "block_hash=excluded.block_hash, updated_at=excluded.updated_at",
            (source, chain_id, block_number, block_hash, now()))
