"""Notices among three `onguard run` replicas (one Anvil chain, one PostgreSQL database): every replica records
what it tells in the shared outbox, only the leader delivers; the leader SIGKILLed while a notice is undelivered
(its receiver refuses it) → the next leader delivers it, under the same id, and every event reaches the receiver
under one notice id."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from tests.unit.receivers import ThreadedHttpReceiver

from ..chain.helpers import ALICE, drain_slice, is_paused, tokens
from .harness import replicas, wait_for
from .test_replicas_on_chain import all_started, leader_of, rows

pytestmark = [pytest.mark.chain, pytest.mark.timeout(400)]

SECRET = "replica-notices-secret"
# A lease that outlives a slow start on a loaded machine (the leases are renewed once the daemon has started).
LEASES = {"lease_ttl": '"6s"', "renew_every": '"1s"', "send_deadline": '"1s"'}
# Retried for minutes on a refusal: the first leader is still retrying when it is killed, whatever the load.
NOTIFY = """
[notifications]
max_attempts = 1000
first_retry = "100ms"
max_retry = "500ms"

[notifications.channels.soc]
type = "webhook"
url_env = "REPLICA_HOOK_URL"
secret_env = "REPLICA_HOOK_SECRET"

[[notifications.routes]]
channels = ["soc"]
"""


def event_of(document: dict) -> tuple:
    """What a notice tells, whoever sent it: its kind, incident and, for a change, the change."""
    details = document["details"]
    return (document["kind"], document["incident_id"], details.get("status"), details.get("outcome"),
            details.get("tx_hash"))


def test_the_next_leader_delivers_what_the_killed_leader_left_and_each_event_has_one_notice_id(
        chain, replica_database, tmp_path, monkeypatch):
    w3, world = chain.w3, chain.world
    with ThreadedHttpReceiver(secret=SECRET) as receiver:
        receiver.refusing = True
        monkeypatch.setenv("REPLICA_HOOK_URL", receiver.url("/webhook"))
        monkeypatch.setenv("REPLICA_HOOK_SECRET", SECRET)
        with replicas(chain, tmp_path, [replica_database] * 3, NOTIFY, **LEASES) as group:
            wait_for(lambda: all_started(group), "three replicas started", group)
            holder, token = wait_for(lambda: leader_of(replica_database, world.chain_id), "a replica leads", group)
            leader = next(r for r in group if r.name == holder)
            others = [r for r in group if r is not leader]

            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            wait_for(lambda: is_paused(w3, world), "the vault is paused", group)
            refused = wait_for(lambda: [r.json() for r in receiver.refused if r.json()["kind"] == "incident_opened"],
                               "the leader tried to deliver the opening", group)
            # The opening, the pause's outcome and the incident's status change are recorded, none delivered: then
            # the leader dies. (A notice published in the very instant before a SIGKILL, not yet recorded, is lost
            # with its replica: see the README's limits.)
            wait_for(lambda: {"incident_opened", "response_outcome", "incident_status"} <= {
                kind for (kind,) in rows(replica_database, "SELECT kind FROM notices")}, "the notices recorded", group)
            leader.kill()
            receiver.refusing = False

            wait_for(lambda: (lead := leader_of(replica_database, world.chain_id)) and lead[0] != holder,
                     "the leader lease moved", group)
            delivered = wait_for(lambda: [r.json() for r in receiver.requests["/webhook"]
                                          if r.json()["kind"] == "incident_opened"],
                                 "the next leader delivered the opening", group)
            wait_for(lambda: rows(replica_database, "SELECT status FROM incidents") == [("safe",)],
                     "the incident is safe", group)
            wait_for(lambda: rows(replica_database, "SELECT count(*) FROM notice_deliveries WHERE status <> "
                                                    "'delivered'") == [(0,)], "every notice delivered", group)
            for replica in others:
                assert replica.stop() == 0

    assert {d["id"] for d in delivered} == {refused[0]["id"]}  # the one the dead leader left, under its id
    ((incident_id,),) = rows(replica_database, "SELECT id FROM incidents")
    assert delivered[0]["incident_id"] == incident_id
    # Delivered by the survivors only, after the kill: the dead leader's attempts were all refused.
    finishers = {by for (by,) in rows(replica_database, "SELECT DISTINCT delivered_by FROM notice_deliveries")}
    assert finishers and finishers <= {r.name for r in others}
    # Each event told once: one notice id per event, and one outbox row per notice id whoever recorded it.
    accepted = [r.json() for r in receiver.requests["/webhook"]]
    ids_per_event: dict[tuple, set[str]] = defaultdict(set)
    for document in accepted:
        ids_per_event[event_of(document)].add(document["id"])
    assert ids_per_event and all(len(ids) == 1 for ids in ids_per_event.values()), dict(ids_per_event)
    # ...and by one replica at a time: nothing in flight when the leader died was accepted, so each arrived once.
    assert sorted(Counter(d["id"] for d in accepted).values()) == [1] * len(ids_per_event)
    recorded = rows(replica_database, "SELECT notice_id FROM notices")
    assert sorted({d["id"] for d in accepted}) == sorted(notice_id for (notice_id,) in recorded)
    kinds = {kind for kind, *_ in ids_per_event}
    assert {"incident_opened", "response_outcome", "incident_status"} <= kinds
