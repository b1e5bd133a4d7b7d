"""What replicas need of the state database, on both engines: a claim records its replica and moves by
compare-and-set (one taker wins), and of two writers who saw the same status change only one records it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onguard.incidents.store import IncidentStatus, IncidentStore
from onguard.store.incidents import Incidents
from onguard.store.settings import DatabaseSettings


@pytest.fixture
def two_replicas(state_location: Path | DatabaseSettings) -> Iterator[tuple[IncidentStore, IncidentStore]]:
    a, b = IncidentStore(state_location, claimant="a"), IncidentStore(state_location, claimant="b")
    yield a, b
    a.close()
    b.close()


def open_one(store: IncidentStore) -> int:
    incident, opened = store.open_or_join(
        chain_id=1, policy_id="drain", cooldown=3600, severity="critical", title="drain", dry_run=False, block=10,
        block_time=1000, evidence={"path": "block"}, status=IncidentStatus.OPEN, actions=("pause",))
    assert opened
    return incident.id


def test_the_opener_claims_and_a_second_replica_joins(two_replicas):
    a, b = two_replicas
    incident_id = open_one(a)
    joined, opened = b.open_or_join(
        chain_id=1, policy_id="drain", cooldown=3600, severity="critical", title="drain", dry_run=False, block=11,
        block_time=1001, evidence={}, status=IncidentStatus.OPEN, actions=("pause",))
    assert (joined.id, opened) == (incident_id, False)
    (response,) = b.responses(incident_id)
    assert response.claimed_by == "a" and response.claimed_at is not None


def test_a_claim_moves_once_however_many_replicas_take_it_over(two_replicas):
    a, b = two_replicas
    incident_id = open_one(a)
    assert b.take_over_claim(incident_id, "pause", "a", "b")
    assert not a.take_over_claim(incident_id, "pause", "a", "a")  # it is not a's any more: a second taker loses
    (response,) = a.responses(incident_id)
    assert response.claimed_by == "b"
    taken = [e for e in a.timeline(incident_id) if e.kind == "claim-taken-over"]
    assert [e.detail for e in taken] == [{"action": "pause", "from": "a", "by": "b"}]


def test_of_two_writers_of_one_status_change_only_one_records_it(two_replicas):
    a, b = two_replicas
    incident_id = open_one(a)
    assert a.set_status(incident_id, IncidentStatus.SAFE, reason="paused")
    # b saw the incident open a moment ago and writes the same change: the database says it moved already.
    assert not Incidents(b.database).set_status(incident_id, IncidentStatus.SAFE, {"to": "safe"},
                                                expected=IncidentStatus.OPEN)
    assert not b.set_status(incident_id, IncidentStatus.SAFE, reason="paused")
    statuses = [e for e in a.timeline(incident_id) if e.kind == "status"]
    assert len(statuses) == 1 and statuses[0].detail["to"] == "safe"
