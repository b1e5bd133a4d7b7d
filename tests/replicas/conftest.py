"""Replica fixtures: a fresh PostgreSQL database (tests/pg.py's `postgres_url`) with onguard's schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from onguard.incidents.store import IncidentStore
from onguard.store.settings import DatabaseSettings


@pytest.fixture
def replica_database(postgres_url: str, tmp_path: Path) -> str:
    """The URL of a fresh database migrated to the current schema (leases, response claims)."""
    IncidentStore(DatabaseSettings(path=tmp_path / "unused.db", url=postgres_url)).close()
    return postgres_url
