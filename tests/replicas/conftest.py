"""Replica fixtures: a fresh PostgreSQL database on the machine's server (127.0.0.1:5432), dropped after the test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

SERVER = "postgresql://postgres@127.0.0.1:5432"

_LEASES = """CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL, token BIGINT NOT NULL)"""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"onguard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{SERVER}/{name}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(_LEASES)
    try:
        yield url
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
