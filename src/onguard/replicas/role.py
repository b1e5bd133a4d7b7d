"""This daemon's part among replicas: its leases (liveness, leader), whether it is cut off from the database, and
which other replicas are alive. On SQLite there is one daemon: it leads for ever, is never cut off, and every
claim is its own, so the single daemon behaves exactly as before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import psycopg

from onguard.config import Config
from onguard.log import get_logger
from onguard.replicas.claims import ClaimWatch
from onguard.replicas.lease import Lease, ReplicaLeases, SoleLease, leader_name, liveness_name
from onguard.replicas.settings import ReplicaSettings
from onguard.store.database import Database, PostgresDatabase

_ALIVE = ("SELECT name FROM leases WHERE name LIKE 'replica:%%' "
          "AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint")


class ReplicaRole:
    def __init__(self, settings: ReplicaSettings, chain_id: int, database_url: str | None) -> None:
        self.settings = settings
        self.id = settings.id
        self.claims = ClaimWatch(settings)
        self.leases: ReplicaLeases | None = None
        self._started = False  # before its leases are first taken, a replica is not cut off: it has not tried
        self._database: PostgresDatabase | None = None  # the state database guard() bounds once the daemon runs
        self._early: asyncio.Task[None] | None = None  # renewals between start() and the daemon's own task
        self._early_stop = asyncio.Event()
        self.leader: Lease = SoleLease(leader_name(chain_id))
        if database_url is not None:
            self.leases = ReplicaLeases(database_url, settings.id, chain_id, ttl=settings.lease_ttl,
                                        renew_every=settings.renew_every)
            self.leader = self.leases.leader
        self._log = get_logger(component="replicas", replica=settings.id, chain_id=chain_id)

    @property
    def shared(self) -> bool:
        """The state is in PostgreSQL: other replicas may act on the same incidents."""
        return self.leases is not None

    async def start(self) -> None:
        """Takes this replica's liveness lease (refused while another live replica has its id) and, if free, the
        leader lease."""
        if self.leases is not None:
            await self.leases.start()
            self._started = True
            # Renewed from now on, not only once the daemon's tasks run: a start that takes longer than the lease
            # (preflight, warm-up, resumed responses, a loaded machine) must not leave this replica cut off.
            self._early = asyncio.ensure_future(self.leases.renew(self._early_stop))
            self._log.info("replica started", leader=self.leader.held(), lease_ttl=self.settings.lease_ttl)

    async def stop(self) -> None:
        """Leaves the replicas: a daemon closed without its leases task having run (or ended) still releases its
        liveness lease, so it can start again under its id at once."""
        await self._end_early_renewals()
        if self.leases is not None and self._started:
            await self.leases.stop()

    def tasks(self) -> dict[str, Callable[[asyncio.Event], Awaitable[None]]]:
        return {} if self.leases is None else {"leases": self._run_leases}

    async def _run_leases(self, stop: asyncio.Event) -> None:
        """The daemon's leases task; from now on each statement on the state database is bounded (see guard)."""
        assert self.leases is not None
        await self._end_early_renewals()
        if self._database is not None:
            self._database.deadline = self.leases.connection.deadline
        await self.leases.run(stop)

    async def _end_early_renewals(self) -> None:
        if self._early is not None:
            self._early_stop.set()
            with contextlib.suppress(Exception):
                await self._early
            self._early = None

    def guard(self, database: Database) -> None:
        """Stops `database` from trying the server while this replica is cut off, and once the daemon runs bounds
        every statement by the leases' own deadline: a server that stops answering must not hold the daemon's
        loop longer than a lease renewal may take (the leases' connection finds out when it answers again)."""
        if isinstance(database, PostgresDatabase) and self.leases is not None:
            database.reachable = lambda: not self.cut_off()
            self._database = database

    def cut_off(self) -> bool:
        """The database has not renewed this replica's liveness lately: its claims cannot be written, and the
        others may already take this replica for dead."""
        return (self._started and self.leases is not None and not self.leases.stopped
                and not self.leases.alive.held())

    async def alive_replicas(self) -> set[str] | None:
        """The ids of the replicas whose liveness lease has not expired; None when the database did not answer."""
        if self.leases is None:
            return {self.id}
        try:
            rows = await self.leases.connection.all(_ALIVE)
        except psycopg.Error:
            return None
        prefix = liveness_name("")
        return {str(row[0])[len(prefix):] for row in rows}


def replica_claimant(config: Config) -> str | None:
    """The id the store records as `claimed_by`: this replica's among replicas (PostgreSQL), none alone."""
    return config.replicas.id if config.database_url else None
