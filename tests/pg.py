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
`accept_connections(url)` (PostgreSQL's side of a lost database: what a replica sees in a network partition).
`SilentProxy(url)` stands between the daemon and the server and can go silent (`blackhole()`): every socket stays
open, nothing is forwarded either way and nothing is refused, as a hung server or a partition that drops packets
looks to libpq (its kernel acknowledges what is sent, so no TCP timeout fires); `restore()` forwards again."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
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


class SilentProxy:
    """A TCP proxy on 127.0.0.1 in front of the server of `url`, in threads of its own; `url_through` gives the URL
    of a database through it. Bytes read while it is silent are held, and forwarded in order once restored."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]

    def url_through(self, url: str) -> str:
        parts = urlsplit(url)
        netloc = f"{parts.username}@127.0.0.1:{self.port}" if parts.username else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def blackhole(self) -> None:
        self._forwarding.clear()

    def restore(self) -> None:
        self._forwarding.set()

    def __enter__(self) -> SilentProxy:
        threading.Thread(target=self._accept, name="silent-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._forwarding.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="silent-proxy-pump",
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                while not self._forwarding.wait(0.1):  # silent: held, the socket left open
                    if self._closed:
                        return
                if self._closed:
                    return
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)
