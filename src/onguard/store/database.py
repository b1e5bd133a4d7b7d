"""The state database: one connection to SQLite (the embedded default) or PostgreSQL (shared by replicas), SQL
written once for both, and one transaction helper.

SQL is written for both engines: `?` placeholders (translated for PostgreSQL), upserts as `ON CONFLICT … DO
UPDATE/NOTHING`, new ids read with `RETURNING id`. DDL that differs lives in the per-dialect steps of
`migrations.py`. Rows read by column name or by position on both engines."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as NoAnswer
from collections.abc import Callable, Iterator, Sequence
from enum import Enum, StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg

from onguard.errors import ConfigError
from onguard.log import get_logger
from onguard.store.settings import PASSWORD_ENV, POSTGRES_SCHEMES, DatabaseSettings, check_database_url

CONNECT_TIMEOUT_S = 5
RECONNECT_EVERY_S = 1.0
SQLITE_LOCKED_WAIT_S = 30.0
# A cut network must fail a statement within seconds, not hang the daemon: unacknowledged data and silent peers.
TCP_USER_TIMEOUT_MS = 10_000
KEEPALIVE = dict(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)

# What an engine answers when it cannot take a write now (disk full, I/O error, connection lost): the store keeps
# the write in memory and replays it once the database takes writes again.
WRITE_REFUSED: tuple[type[Exception], ...] = (sqlite3.OperationalError, psycopg.OperationalError)


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgresql"


class Row(tuple):  # type: ignore[type-arg]
    """A PostgreSQL row read like sqlite3.Row: by column name or by position."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return super().__getitem__(self._names[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


@lru_cache(maxsize=512)
def _postgres_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _plain(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(p.value if isinstance(p, Enum) else p for p in params)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class Database:
    """One connection. Statements outside `transaction()` commit on their own; `transaction()` is one atomic unit
    that admits one writer at a time on SQLite (BEGIN IMMEDIATE) and is a real transaction on PostgreSQL, where
    `serialise(name)` orders the writers that must not interleave (opening incidents, appending to the audit log).
    Nested `transaction()` calls join the outer one. Safe to share between threads (one statement at a time)."""

    dialect: Dialect

    def __init__(self, name: str, field: str) -> None:
        self.name = name      # the file or URL (never with a password), for messages
        self.field = field    # the config field it came from, for errors
        self._lock = threading.RLock()
        self._depth = 0

    # ---- statements ----

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs one statement; how many rows it changed."""
        with self._lock:
            return self._run(sql, params).rowcount

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._run(sql, params).fetchall())

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        rows = self.fetch_all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.fetch_one(sql, params)
        return row[0] if row is not None else None

    # ---- transactions ----

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """One atomic write: committed when the block ends, rolled back when it raises."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._begin(write=True)
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            self._run("COMMIT", ())

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Database]:
        """Reads that see one state of the database, whatever other writers commit meanwhile."""
        with self._lock:
            if self._depth:
                yield self
                return
            self._begin(write=False)
            self._depth = 1
            try:
                yield self
            finally:
                self._depth = 0
                self._rollback()

    def _rollback(self) -> None:
        with contextlib.suppress(*WRITE_REFUSED, sqlite3.Error, psycopg.Error):  # may be rolled back already
            self._run("ROLLBACK", ())

    def serialise(self, name: str) -> None:
        """Inside a transaction: waits until no other transaction serialised on `name` is open, so a read-then-write
        (the latest incident, the audit head) is not interleaved with another writer's."""
        assert self._depth, "serialise() belongs inside transaction()"

    # ---- what the schema holds (for migrations) ----

    def tables(self) -> set[str]:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    # ---- engine-specific ----

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        raise NotImplementedError

    def _begin(self, *, write: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteDatabase(Database):
    dialect = Dialect.SQLITE

    def __init__(self, path: Path | str) -> None:
        super().__init__(str(path), "state.database")
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._connect_when_unlocked()
            except sqlite3.OperationalError as exc:
                if not self.path.exists():
                    raise
                # A full disk: the shared-memory index of WAL mode cannot be created. Exclusive locking needs
                # none, so the daemon still starts (and pauses); other processes cannot read the file meanwhile.
                self._db = self._connect(exclusive=True)
                get_logger(component="store", database=self.name).critical(
                    "the state database could not be opened normally (disk full?): opened for this process alone; "
                    "writes are kept in memory until the disk takes them", error=str(exc))
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the state database ({exc})", file=self.name, field=self.field,
                              hint="point it at a writable path, for a new or an existing onguard database") from None

    def _connect_when_unlocked(self) -> sqlite3.Connection:
        """Another process or thread creating the file or switching it to WAL holds its lock for a moment, and
        switching the journal mode does not wait on SQLite's busy handler: wait here instead, bounded (daemons
        and tools starting together on one file)."""
        deadline = time.monotonic() + SQLITE_LOCKED_WAIT_S
        delay = 0.01
        while True:
            try:
                return self._connect(exclusive=False)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _connect(self, *, exclusive: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _run(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        return self._db.execute(sql, _plain(params))

    def _begin(self, *, write: bool) -> None:
        self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def tables(self) -> set[str]:
        return {r[0] for r in self.fetch_all("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.fetch_all(f"PRAGMA table_info({table})")}

    @property
    def connection(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, for tests that watch it; the code goes through this class."""
        return self._db

    def close(self) -> None:
        self._db.close()


class PostgresDatabase(Database):
    dialect = Dialect.POSTGRES

    def __init__(self, url: str, *, config_file: str | None = None) -> None:
        super().__init__(url, "state.database_url")
        self.url = url
        # Whether to try the server at all; replicas point it at their liveness lease (see replicas/role.py).
        self.reachable: Callable[[], bool] = lambda: True
        # The longest a caller waits for one statement (None: as long as libpq does). The daemon sets it (see
        # replicas/role.py): a server that stops answering — hung, or a network that drops packets after a proxy
        # or a load balancer acknowledged them — must not hold the event loop, and no TCP timeout ends that wait.
        self.deadline: float | None = None
        self._config_file = config_file
        self._next_attempt = 0.0
        self._worker: ThreadPoolExecutor | None = None
        self._given_up: Future[Any] | None = None  # a statement past its deadline that has not returned yet
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = dict(connect_timeout=CONNECT_TIMEOUT_S, tcp_user_timeout=TCP_USER_TIMEOUT_MS,
                                     application_name="onguard", **KEEPALIVE)
        if os.environ.get(PASSWORD_ENV):
            extra["password"] = os.environ[PASSWORD_ENV]
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, **extra)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to the state database {self.url} ({str(exc).strip()})",
                              file=self._config_file, field=self.field,
                              hint=f"check the server is up and the user and database exist; the password goes in "
                                   f"{PASSWORD_ENV} or PGPASSWORD") from None

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection; a lost one is opened again on the next statement, at most once per RECONNECT_EVERY_S
        (an unreachable server can hold each attempt for CONNECT_TIMEOUT_S: not on every write of an attack)."""
        if not self.reachable():
            # A replica cut off from the server (its leases could not be renewed): fail at once rather than block
            # the daemon's loop for a connect or tcp_user_timeout on a connection that may hang.
            self._conn.close()
            raise psycopg.OperationalError("cut off from the database (this replica's leases lapsed): not tried")
        if self._conn.closed and not self._depth:
            if time.monotonic() < self._next_attempt:
                raise psycopg.OperationalError("the connection to the state database is lost; trying again shortly")
            self._next_attempt = time.monotonic() + RECONNECT_EVERY_S
            try:
                self._conn = self._connect()
            except ConfigError as exc:
                raise psycopg.OperationalError(exc.message) from None
        return self._conn

    def _run(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        if self.deadline is None:
            return self._statement(sql, params)
        return self._bounded(sql, params, self.deadline)

    def _statement(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        if params:
            return self._connection().execute(_postgres_sql(sql), _plain(params))
        return self._connection().execute(sql)

    def _bounded(self, sql: str, params: Sequence[Any], deadline: float) -> psycopg.Cursor[Any]:
        """Runs the statement on this database's own thread and waits `deadline` for it. Past it the statement is
        given up: the connection's socket is shut (the statement then fails there, and the connection is opened
        again later), and until it has returned every statement fails at once instead of waiting its turn."""
        if self._given_up is not None and not self._given_up.done():
            raise psycopg.OperationalError("the state database has not answered an earlier statement: not tried")
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onguard-postgres")
        running = self._worker.submit(self._statement, sql, params)
        try:
            return running.result(timeout=deadline)
        except NoAnswer:
            self._given_up = running
            self._shut(self._conn)
            raise psycopg.OperationalError(f"the state database did not answer within {deadline:g}s: given up "
                                           "(the connection is opened again)") from None

    @staticmethod
    def _shut(connection: psycopg.Connection[Any]) -> None:
        """Shuts the connection's socket down under libpq's feet (its file descriptor stays open, so the thread
        blocked on it wakes with an error rather than reading a freed one)."""
        with contextlib.suppress(OSError, psycopg.Error, ValueError):
            with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    def _begin(self, *, write: bool) -> None:
        self._run("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ())

    def serialise(self, name: str) -> None:
        super().serialise(name)
        self._run("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    def tables(self) -> set[str]:
        return {r[0] for r in self.fetch_all("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}

    def columns(self, table: str) -> set[str]:
        return {r[0] for r in self.fetch_all("SELECT column_name FROM information_schema.columns WHERE "
                                             "table_schema = current_schema() AND table_name = ?", (table,))}

    def close(self) -> None:
        if self._given_up is not None and not self._given_up.done():
            self._shut(self._conn)  # the thread is still on the connection: freed only once it is off it
            with contextlib.suppress(Exception):
                self._given_up.result(timeout=CONNECT_TIMEOUT_S + 1)
        if self._worker is not None:
            self._worker.shutdown(wait=False)
        self._conn.close()


def connect(settings: DatabaseSettings | Path | str) -> Database:
    """Opens the database the settings name; a path is a SQLite file, a string may also be a PostgreSQL URL (the
    CLI's --db). Not migrated: see migrations.py."""
    if isinstance(settings, DatabaseSettings):
        if settings.url:
            return PostgresDatabase(settings.url, config_file=settings.config_file)
        return SqliteDatabase(settings.path)
    if isinstance(settings, str) and settings.startswith(POSTGRES_SCHEMES):
        return PostgresDatabase(check_database_url(settings, file=None, field="--db"))
    return SqliteDatabase(settings)
