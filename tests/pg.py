"""PostgreSQL for the tests: a fresh database `onguard_test_<random>` on the machine's server for each test, dropped
after it. The server is 127.0.0.1:5432 as user postgres (trust auth), or the one ONGUARD_TEST_POSTGRES names
(`postgresql://USER@HOST:PORT/postgres`, any database the user may create databases from). An unreachable server
FAILS the test with the reason: a PostgreSQL test never silently skips.

Fixtures (imported into tests/conftest.py, so every tier can use them):
- `postgres_url`: the URL of a fresh empty database (no password in it), for `[state] database_url` or
  `IncidentStore(DatabaseSettings(path=…, url=postgres_url))`.
- `state_location`: parametrised over both engines: a SQLite file path, or `DatabaseSettings` for a fresh
  PostgreSQL database; pass it to `IncidentStore(...)` as often as a test needs connections to one database.
Helpers: `refuse_connections(url)` cuts every connection to that database and refuses new ones until
`accept_connections(url)` (PostgreSQL's side of a lost database: what a replica sees in a network partition)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from onguard.store.settings import DatabaseSettings

SERVER_ENV = "ONGUARD_TEST_POSTGRES"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get(SERVER_ENV, DEFAULT_SERVER)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _admin() -> psycopg.Connection:
    url = server_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"the PostgreSQL server at {url} is unreachable ({str(exc).strip()}): the PostgreSQL tests need "
                    f"it; start it, or point {SERVER_ENV} at one (postgresql://USER@HOST:PORT/postgres)",
                    pytrace=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"onguard_test_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url(), name)
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | DatabaseSettings:
    path = tmp_path / "state" / "onguard.db"
    if request.param == "sqlite":
        return path
    return DatabaseSettings(path=path, url=request.getfixturevalue("postgres_url"))


def refuse_connections(url: str) -> None:
    name = _database_name(url)
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def accept_connections(url: str) -> None:
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{_database_name(url)}" ALLOW_CONNECTIONS true')
