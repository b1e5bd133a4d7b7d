"""Small named values about the daemon kept in the database (its last heartbeat), as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from onguard.store.database import Database
from onguard.store.records import as_json

HEARTBEAT = "heartbeat"


class Meta:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                         "value=excluded.value", (key, as_json(value)))

    def get(self, key: str) -> Mapping[str, Any] | None:
        value = self._db.scalar("SELECT value FROM meta WHERE key=?", (key,))
        return json.loads(value) if value is not None else None

    def with_prefix(self, prefix: str) -> list[Mapping[str, Any]]:
        """Every value whose key starts with `prefix` (a prefix without LIKE's wildcards)."""
        rows = self._db.fetch_all("SELECT value FROM meta WHERE key LIKE ? ORDER BY key", (prefix + "%",))
        return [json.loads(row[0]) for row in rows]
