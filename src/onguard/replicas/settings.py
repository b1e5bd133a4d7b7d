"""The [replicas] section of onguard.toml: who this replica is and the deadlines that let the others cover for it."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass

from onguard.tomlfields import Table

REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
# Sane ranges: outside them a value is a typo (a unit missing, a zero too many), not a tuning choice.
LEASE_TTL = (1.0, 60.0)
RENEW_EVERY = (0.1, 30.0)
SEND_DEADLINE = (0.0, 60.0)
LAND_DEADLINE = (1.0, 600.0)
PARTITION_DEADLINE = (0.5, 600.0)


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """`lease_ttl` bounds how long a dead replica keeps the lease (and its claims count as alive); the others act
    on its claims after `send_deadline` (claimed, not broadcast) or `land_deadline` (broadcast, not in effect), at
    once when its own liveness lease has expired. A replica that cannot reach the database acts from chain state
    alone after `partition_deadline`, and only if the action still does not hold."""

    id: str
    lease_ttl: float = 3.0
    renew_every: float = 1.0
    send_deadline: float = 1.0
    land_deadline: float = 30.0
    partition_deadline: float = 5.0


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:64]


def default_replicas() -> ReplicaSettings:
    return ReplicaSettings(id=default_replica_id())


def parse_replicas(table: Table | None) -> ReplicaSettings:
    if table is None:
        return default_replicas()
    replica_id = table.get("id", str, default=None)
    if replica_id is None:
        replica_id = default_replica_id()
    elif not REPLICA_ID.match(replica_id):
        raise table.fail("id", f"{replica_id!r} is not a replica name",
                         "1 to 64 letters, digits or . _ : @ -, starting with a letter or digit, e.g. \"eu-1\"")
    defaults = ReplicaSettings(id=replica_id)
    ttl = table.duration_in("lease_ttl", defaults.lease_ttl, LEASE_TTL)
    renew = table.duration_in("renew_every", defaults.renew_every, RENEW_EVERY)
    if renew > ttl / 2:
        raise table.fail("renew_every", f"{renew:g}s is more than half of lease_ttl ({ttl:g}s)",
                         "renew at least twice per lease_ttl, or one late renewal loses the lease: e.g. "
                         "renew_every = \"1s\" with lease_ttl = \"3s\"")
    settings = ReplicaSettings(
        id=replica_id, lease_ttl=ttl, renew_every=renew,
        send_deadline=table.duration_in("send_deadline", defaults.send_deadline, SEND_DEADLINE),
        land_deadline=table.duration_in("land_deadline", defaults.land_deadline, LAND_DEADLINE),
        partition_deadline=table.duration_in("partition_deadline", defaults.partition_deadline, PARTITION_DEADLINE))
    table.finish()
    return settings
