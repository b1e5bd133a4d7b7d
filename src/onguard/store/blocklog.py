"""The chain as the daemon handled it, kept in the state database: the hash of every handled block (so a
reorganisation of any depth is walked back to the common ancestor, across restarts), the chain's genesis hash
(so a node that now serves another chain is noticed), and every reorganisation noticed (so the responses whose
receipts were in an orphaned range can be verified again)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from onguard.store.checkpoints import ALONE
from onguard.store.database import Database
from onguard.store.records import now

HISTORY_BLOCKS = 10_000  # handled blocks remembered per chain: the deepest reorganisation walked back exactly
T = TypeVar("T")
# How a write the database may refuse is run: IncidentStore.durably keeps it in memory for later; alone, it runs.
Durably = Callable[[str, Callable[[], Any]], Any]


def at_once(what: str, write: Callable[[], T]) -> T:
    del what
    return write()

@dataclass(frozen=True, slots=True)
class BlockRef:
    number: int
    hash: str


@dataclass(frozen=True, slots=True)
class Reorg:
    """A reorganisation the block source walked back. `orphaned` are the handled blocks that are no longer
    canonical, oldest first. `ancestor` is the newest block both chains share; None when the reorganisation
    went deeper than the recorded history (`exhausted`): blocks older than `orphaned[0]` may be orphaned too."""

    chain_id: int
    ancestor: BlockRef | None
    orphaned: tuple[BlockRef, ...]
    exhausted: bool
    id: int | None = None

    @property
    def depth(self) -> int:
        return len(self.orphaned)


class BlockLog:
    """One chain's identity, its reorganisations and the blocks one replica handled, in the state database. The
    daemon passes its store's `durably`, so a database that refuses a write (full disk) does not stop it: the
    write is kept for later."""

    def __init__(self, db: Database, chain_id: int, *, replica: str = ALONE, keep: int = HISTORY_BLOCKS,
                 durably: Durably = at_once) -> None:
        """`replica`: whose handled blocks (each replica walks back through the blocks it handled itself)."""
        self._db = db
        self._durably = durably
        self.chain_id = chain_id
        self.replica = replica
        self.keep = keep

    # ---- handled blocks ----

    def record(self, number: int, block_hash: str) -> None:
        """Remembers a handled block (replacing what was recorded at that height) and forgets the oldest."""
        def write() -> None:
            with self._db.transaction():
                self._db.execute("INSERT INTO handled_blocks (replica, chain_id, number, hash) VALUES (?, ?, ?, ?) "
                                 "ON CONFLICT (replica, chain_id, number) DO UPDATE SET hash=excluded.hash",
                                 (self.replica, self.chain_id, number, block_hash))
                self._db.execute("DELETE FROM handled_blocks WHERE replica=? AND chain_id=? AND number<=?",
                                 (self.replica, self.chain_id, number - self.keep))
        self._durably("handled block", write)

    def hash_at(self, number: int) -> str | None:
        row = self._db.fetch_one("SELECT hash FROM handled_blocks WHERE replica=? AND chain_id=? AND number=?",
                                 (self.replica, self.chain_id, number))
        return row[0] if row else None

    def oldest(self) -> BlockRef | None:
        row = self._db.fetch_one("SELECT number, hash FROM handled_blocks WHERE replica=? AND chain_id=? "
                                 "ORDER BY number LIMIT 1", (self.replica, self.chain_id))
        return BlockRef(row[0], row[1]) if row else None

    def forget_after(self, number: int) -> tuple[BlockRef, ...]:
        """Forgets the blocks above `number` and returns them, oldest first."""
        rows = self._db.fetch_all("SELECT number, hash FROM handled_blocks WHERE replica=? AND chain_id=? "
                                  "AND number>? ORDER BY number", (self.replica, self.chain_id, number))
        self._durably("forget orphaned blocks", lambda: self._db.execute(
            "DELETE FROM handled_blocks WHERE replica=? AND chain_id=? AND number>?",
            (self.replica, self.chain_id, number)))
        return tuple(BlockRef(n, h) for n, h in rows)

    # ---- reorganisations ----

    def record_reorg(self, reorg: Reorg) -> Reorg:
        reorg_id = self._durably("reorganisation", lambda: self._db.scalar(
            "INSERT INTO reorgs (chain_id, ancestor_number, ancestor_hash, orphaned, exhausted, noticed_at) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (self.chain_id, reorg.ancestor.number if reorg.ancestor else None,
             reorg.ancestor.hash if reorg.ancestor else None,
             json.dumps([[b.number, b.hash] for b in reorg.orphaned]), int(reorg.exhausted), now())))
        return Reorg(self.chain_id, reorg.ancestor, reorg.orphaned, reorg.exhausted,
                     id=reorg_id)

    def reorgs(self, after_id: int = 0) -> list[Reorg]:
        """The reorganisations noticed on this chain with an id above `after_id`, oldest first."""
        rows = self._db.fetch_all("SELECT id, ancestor_number, ancestor_hash, orphaned, exhausted FROM reorgs "
                                  "WHERE chain_id=? AND id>? ORDER BY id", (self.chain_id, after_id))
        return [Reorg(self.chain_id, BlockRef(row[1], row[2]) if row[1] is not None else None,
                      tuple(BlockRef(n, h) for n, h in json.loads(row[3])), bool(row[4]), id=row[0])
                for row in rows]

    # ---- identity ----

    def genesis(self) -> str | None:
        row = self._db.fetch_one("SELECT genesis_hash FROM chain_identity WHERE chain_id=?",
                                 (self.chain_id,))
        return row[0] if row else None

    def record_genesis(self, genesis_hash: str) -> None:
        """Records the genesis hash the first time; an existing record is never overwritten."""
        self._durably("chain identity", lambda: self._db.execute(
            "INSERT INTO chain_identity (chain_id, genesis_hash, recorded_at) VALUES (?, ?, ?) "
            "ON CONFLICT (chain_id) DO NOTHING", (self.chain_id, genesis_hash, now())))
