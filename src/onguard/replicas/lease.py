"""Leases in PostgreSQL: a row per lease (name, holder, expires_at, token) renewed by its holder, taken over by
another once it has expired, with a fencing token that grows at every change of hands.

Time is the database's (`clock_timestamp()`, in milliseconds), so replicas on machines with skewed clocks agree
on who holds what.
Locally a holder believes in its lease only until `sent + ttl - margin`, measured from before the renewal was
sent: a holder cut off from the database stops acting as holder before anybody else can take the lease over.
On SQLite the single daemon holds every lease for ever (SoleLease): nothing changes for one daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import psycopg

from onguard.errors import ConfigError
from onguard.log import get_logger
from onguard.store.settings import PASSWORD_ENV

CONNECT_TIMEOUT = 3  # seconds (libpq's connect_timeout is whole seconds)
LOG_EVERY_FAILURES = 30  # failed renewals in a row: the first and every 30th are logged
SAFETY = 0.2         # the share of the ttl a holder gives up locally, for clock rates and the renewal's own trip

# The database's clock, in milliseconds since the epoch (leases.expires_at holds the same unit).
_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_TAKE = f"""
INSERT INTO leases (name, holder, expires_at, token)
VALUES (%(name)s, %(holder)s, {_NOW_MS} + %(ttl_ms)s, 1)
ON CONFLICT (name) DO UPDATE
   SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
       token = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > {_NOW_MS}
                    THEN leases.token ELSE leases.token + 1 END
 WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= {_NOW_MS}
RETURNING token
"""
_RELEASE = (f"UPDATE leases SET expires_at = {_NOW_MS} "
            "WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s")
_CONFIRM = ("SELECT 1 FROM leases WHERE name = %(name)s AND holder = %(holder)s AND token = %(token)s "
            f"AND expires_at > {_NOW_MS}")
_HOLDER = f"SELECT holder, token, expires_at > {_NOW_MS} AS live FROM leases WHERE name = %(name)s"


class Lease(Protocol):
    """What once-only work asks before it is done: am I the holder (a local look), and am I still (a database
    look, for the moment just before an effect that must not happen twice)."""

    name: str

    def held(self) -> bool: ...

    async def confirm(self) -> bool: ...


class SoleLease:
    """The single daemon's lease (SQLite): always held."""

    token = 1

    def __init__(self, name: str) -> None:
        self.name = name

    def held(self) -> bool:
        return True

    async def confirm(self) -> bool:
        return True


class DatabaseLease:
    """One named lease row; `renew()` takes or keeps it, `held()` says whether it is ours now (locally)."""

    def __init__(self, connection: LeaseConnection, name: str, holder: str, ttl: float,
                 on_change: Callable[[bool, int | None], None] | None = None) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.token: int | None = None
        self._connection = connection
        self._held_until = 0.0
        self._was_held = False
        self._on_change = on_change

    def held(self) -> bool:
        return time.monotonic() < self._held_until

    async def renew(self) -> bool:
        """One attempt to take or keep the lease. A failure of the database raises (the caller retries)."""
        sent = time.monotonic()
        row = await self._connection.one(_TAKE, {"name": self.name, "holder": self.holder,
                                                 "ttl_ms": round(self.ttl * 1000)})
        if row is None:
            self._held_until = 0.0
        else:
            self.token = int(row[0])
            self._held_until = sent + self.ttl * (1 - SAFETY)
        self._tell()
        return row is not None

    async def confirm(self) -> bool:
        """A database look: the lease is ours with our token and not expired. False when the database is away."""
        if self.token is None or not self.held():
            return False
        try:
            row = await self._connection.one(_CONFIRM, self._key())
        except psycopg.Error:
            return False
        return row is not None

    async def release(self) -> None:
        """Ends our tenure at once, so another replica takes over without waiting for the expiry."""
        self._held_until = 0.0
        self._was_held = False  # a clean stop: nothing to report
        if self.token is not None:
            await self._connection.one(_RELEASE, self._key(), returns=False)

    def lapse(self) -> None:
        """Called when a renewal failed: the local deadline runs out on its own; say so once it has."""
        self._tell()

    def _key(self) -> dict[str, object]:
        return {"name": self.name, "holder": self.holder, "token": self.token}

    def _tell(self) -> None:
        now_held = self.held()
        if now_held != self._was_held:
            self._was_held = now_held
            if self._on_change is not None:
                self._on_change(now_held, self.token)


class LeaseConnection:
    """The leases' own connection (autocommit, each statement bounded by `deadline`): a renewal never waits behind
    the daemon's other writes, and a database that stops answering fails a renewal instead of hanging it."""

    def __init__(self, url: str, deadline: float) -> None:
        self._url = url
        self.deadline = deadline
        self._connection: psycopg.AsyncConnection | None = None

    async def one(self, sql: str, params: dict[str, object], *, returns: bool = True) -> tuple | None:
        rows = await self._bounded(sql, params, fetch=returns)
        return rows[0] if rows else None

    async def all(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        return await self._bounded(sql, params or {}, fetch=True)

    async def _bounded(self, sql: str, params: dict[str, object], *, fetch: bool) -> list[tuple]:
        try:
            await self._connect()
            return await asyncio.wait_for(self._execute(sql, params, fetch), self.deadline)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self.close()  # the next call connects afresh
            if isinstance(exc, psycopg.Error):
                raise
            raise psycopg.OperationalError(f"the database did not answer in time ({type(exc).__name__})") from exc

    async def _execute(self, sql: str, params: dict[str, object], fetch: bool) -> list[tuple]:
        cursor = await self._connection.execute(sql, params)  # type: ignore[union-attr]  # connected first
        return await cursor.fetchall() if fetch else []

    async def _connect(self) -> None:
        """Connects when there is no open connection, within CONNECT_TIMEOUT (a connection's start-up — TCP,
        authentication — takes longer than one statement on a loaded machine)."""
        if self._connection is not None and not self._connection.closed:
            return
        password = {"password": os.environ[PASSWORD_ENV]} if os.environ.get(PASSWORD_ENV) else {}
        self._connection = await asyncio.wait_for(psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="onguard-leases",
            **password), CONNECT_TIMEOUT + 1)

    async def holder(self, name: str) -> tuple[str, int, bool] | None:
        """(holder, token, live) of a lease, or None when nobody ever took it."""
        row = await self.one(_HOLDER, {"name": name})
        return None if row is None else (str(row[0]), int(row[1]), bool(row[2]))

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


class ReplicaLeases:
    """This replica's two leases, renewed together every `renew_every`: its liveness (`replica:<id>`, which the
    other replicas read to know whether its claims are alive; taken at start, refused when another replica runs
    under the same id) and the leader lease (`leader:<chain>`, for the work that must happen once)."""

    def __init__(self, url: str, replica_id: str, chain_id: int, *, ttl: float, renew_every: float) -> None:
        self.replica_id = replica_id
        self.renew_every = renew_every
        self._was_cut_off = False
        self.stopped = False
        # A renewal slower than a third of the ttl is given up (the next one is tried): a database that stopped
        # answering must not hold the renewals, and one slow answer must not cost the lease.
        self.connection = LeaseConnection(url, deadline=max(renew_every, ttl / 3))
        self._log = get_logger(component="replicas", replica=replica_id, chain_id=chain_id)
        # The liveness row's holder names this process too: a second process under the same id cannot renew it.
        self.alive = DatabaseLease(self.connection, liveness_name(replica_id), f"{replica_id}/{uuid.uuid4().hex[:12]}",
                                   ttl, on_change=self._reach_changed)
        self.leader = DatabaseLease(self.connection, leader_name(chain_id), replica_id, ttl,
                                    on_change=self._leadership_changed)

    async def start(self) -> None:
        try:
            if not await self.alive.renew():
                raise DuplicateReplica(self.replica_id)
            await self._renew_leader()
        except psycopg.Error as exc:
            raise ConfigError(f"cannot take this replica's leases in the state database ({str(exc).strip()})",
                              field="state.database_url",
                              hint="check that the server answers and the schema is onguard's (the daemon "
                                   "migrates it on start)") from None

    async def run(self, stop: asyncio.Event) -> None:
        """Renews both leases until `stop`, then releases them (another replica leads at once)."""
        try:
            await self.renew(stop)
        finally:
            await self.stop()

    async def renew(self, stop: asyncio.Event) -> None:
        """Renews both leases every `renew_every` until `stop`; a renewal the database refuses is logged."""
        failures = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.renew_every)
            if stop.is_set():
                break
            try:
                if not await self.alive.renew():
                    self._log.critical("this replica's liveness row is held by another replica with the same "
                                       "id: give each replica its own [replicas] id")
                await self._renew_leader()
            except psycopg.Error as exc:
                self.alive.lapse()
                self.leader.lapse()
                failures += 1
                if failures % LOG_EVERY_FAILURES == 1:  # loud, not a flood
                    self._log.error("the leases could not be renewed: the database is out of reach",
                                    error=str(exc).strip(), failures=failures, leader=self.leader.held())
            else:
                failures = 0

    async def stop(self) -> None:
        """Releases both leases (another replica leads at once) and closes their connection; once."""
        if self.stopped:
            return
        self.stopped = True  # a clean stop: the database is not out of reach, this replica is leaving
        with contextlib.suppress(psycopg.Error):
            await self.leader.release()
            await self.alive.release()
        await self.connection.close()

    async def _renew_leader(self) -> None:
        await self.leader.renew()

    def _reach_changed(self, alive: bool, token: int | None) -> None:
        del token
        if alive:
            if self._was_cut_off:
                self._log.warning("this replica reaches the database again")
            self._was_cut_off = False
        else:
            self._was_cut_off = True
            self._log.critical("this replica is cut off from the database: it goes on judging, and acts only on "
                               "what still does not hold on chain after partition_deadline")

    def _leadership_changed(self, held: bool, token: int | None) -> None:
        if held:
            self._log.warning("this replica now holds the leader lease", lease=self.leader.name, token=token)
        else:
            self._log.warning("this replica no longer holds the leader lease", lease=self.leader.name)


class DuplicateReplica(ConfigError):
    """Another live replica uses this replica's id: their claims and liveness would be mistaken for each other."""

    def __init__(self, replica_id: str) -> None:
        super().__init__(f"another replica named {replica_id!r} is running on this database",
                         field="replicas.id", hint="give each replica its own [replicas] id (or leave it out: "
                                                   "host and process id)")


def liveness_name(replica_id: str) -> str:
    return f"replica:{replica_id}"


def leader_name(chain_id: int) -> str:
    return f"leader:{chain_id}"
