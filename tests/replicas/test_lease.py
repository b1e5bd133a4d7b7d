"""Leases on the real PostgreSQL server: one holder at a time, renewal keeps the token, expiry lets another take
over with a higher token, the old holder is fenced (locally and in the database), release hands over at once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from onguard.errors import ConfigError
from onguard.replicas.lease import DatabaseLease, LeaseConnection, ReplicaLeases

LIMIT = 30.0  # seconds: only so that a broken build fails instead of hanging


async def eventually(attempt, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + LIMIT
    while not await attempt():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


def test_one_holder_at_a_time_and_renewal_keeps_the_token(replica_database):
    async def scenario() -> None:
        a_db, b_db = LeaseConnection(replica_database, 5), LeaseConnection(replica_database, 5)
        a = DatabaseLease(a_db, "leader:1", "a", ttl=30)
        b = DatabaseLease(b_db, "leader:1", "b", ttl=30)
        try:
            assert await a.renew() and a.held() and a.token == 1
            assert not await b.renew() and not b.held()
            assert await a.renew() and a.token == 1
            assert await a.confirm() and not await b.confirm()
            assert await a_db.holder("leader:1") == ("a", 1, True)
        finally:
            await a_db.close()
            await b_db.close()

    asyncio.run(scenario())


def test_an_expired_lease_is_taken_over_with_a_higher_token_and_the_old_holder_is_fenced(replica_database):
    async def scenario() -> None:
        a_db, b_db = LeaseConnection(replica_database, 5), LeaseConnection(replica_database, 5)
        a = DatabaseLease(a_db, "leader:1", "a", ttl=1)
        b = DatabaseLease(b_db, "leader:1", "b", ttl=30)
        try:
            assert await a.renew()
            first = a.token
            # a stops renewing (a dead holder): b gets it once the database says it expired, not before.
            await eventually(b.renew, "b takes the expired lease over")
            assert b.token == first + 1
            assert not a.held()          # a's local deadline ran out before the database's expiry
            assert not await a.confirm()
            assert not await a.renew()   # a comes back: the lease is b's now
            assert await b.confirm()
        finally:
            await a_db.close()
            await b_db.close()

    asyncio.run(scenario())


def test_a_released_lease_is_taken_at_once(replica_database):
    async def scenario() -> None:
        a_db, b_db = LeaseConnection(replica_database, 5), LeaseConnection(replica_database, 5)
        a = DatabaseLease(a_db, "leader:1", "a", ttl=60)
        b = DatabaseLease(b_db, "leader:1", "b", ttl=60)
        try:
            assert await a.renew()
            await a.release()
            assert not a.held()
            assert await b.renew() and b.token == 2
        finally:
            await a_db.close()
            await b_db.close()

    asyncio.run(scenario())


def test_a_second_replica_with_the_same_id_is_refused(replica_database):
    async def scenario() -> None:
        first = ReplicaLeases(replica_database, "eu-1", 31337, ttl=30, renew_every=1)
        second = ReplicaLeases(replica_database, "eu-1", 31337, ttl=30, renew_every=1)
        try:
            await first.start()
            assert first.leader.held()
            with pytest.raises(ConfigError, match="replicas.id"):
                await second.start()
        finally:
            await first.connection.close()
            await second.connection.close()

    asyncio.run(scenario())


def test_the_keeper_renews_until_stopped_then_hands_the_lead_over(replica_database):
    async def scenario() -> None:
        a = ReplicaLeases(replica_database, "a", 31337, ttl=2, renew_every=0.2)
        b = ReplicaLeases(replica_database, "b", 31337, ttl=2, renew_every=0.2)
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        try:
            await a.start()
            await b.start()
            assert a.leader.held() and not b.leader.held()
            runs = [asyncio.create_task(a.run(stop_a)), asyncio.create_task(b.run(stop_b))]
            renewals_seen = a.leader.token
            stop_a.set()
            await runs[0]
            await eventually(lambda: _true(b.leader.held()), "b leads once a stopped")
            assert b.leader.token == renewals_seen + 1
            stop_b.set()
            await runs[1]
            watcher = LeaseConnection(replica_database, 5)
            assert (await watcher.holder("leader:31337"))[2] is False  # released on stop
            await watcher.close()
        finally:
            await a.connection.close()
            await b.connection.close()

    asyncio.run(scenario())


def test_a_database_out_of_reach_fails_a_renewal_within_its_deadline():
    async def scenario() -> None:
        # Nothing listens on port 9 (discard) here: the connection is refused, the renewal raises, held() is False.
        lease = DatabaseLease(LeaseConnection("postgresql://postgres@127.0.0.1:9/none", 2), "leader:1", "a", ttl=5)
        with pytest.raises(psycopg.OperationalError):
            await lease.renew()
        assert not lease.held()

    asyncio.run(scenario())


async def _true(value: bool) -> bool:
    return value
