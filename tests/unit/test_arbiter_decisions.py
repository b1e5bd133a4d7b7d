"""arbiter.py: one incident per tripped condition, cooldowns on chain time, dry-run and alert-only policies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from onguard.arbiter import Arbiter
from onguard.incidents.store import IncidentStore
from onguard.policies.model import Finding, PolicyCommon, Severity, Verdict

CHAIN_ID = 31337
T0 = 1_700_000_000
COOLDOWN = 3600.0

POLICY = PolicyCommon(id="vault-drain", kind="event", description="drain", severity=Severity.CRITICAL,
                      response=("pause_vault", "trip_breaker"), cooldown=COOLDOWN, enabled=True, dry_run=False,
                      confirmations=0, file=Path("policies/vault-drain.toml"))


def finding(block: int, block_time: int, policy: PolicyCommon = POLICY, value: int = 10**24) -> Finding:
    return Finding(policy=policy, verdict=Verdict.CONDITION_MET, summary=f"sum is {value}",
                   block_number=block, block_time=block_time, evidence={"value": value})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IncidentStore]:
    store = IncidentStore(tmp_path / "onguard.db")
    yield store
    store.close()


@pytest.fixture
def arbiter(store: IncidentStore) -> Arbiter:
    return Arbiter(store, CHAIN_ID)


def test_first_finding_opens_an_incident_with_the_policy_actions(arbiter: Arbiter, store: IncidentStore) -> None:
    decision = arbiter.decide(finding(100, T0))

    assert decision.opened is True
    assert decision.actions == ("pause_vault", "trip_breaker")
    incident = store.incident(decision.incident.id)
    assert incident.status == "open"
    assert incident.policy_id == "vault-drain"
    assert incident.chain_id == CHAIN_ID
    assert incident.severity == "critical"
    assert incident.title == "sum is 1000000000000000000000000"
    assert incident.opened_block == 100 and incident.opened_block_time == T0
    assert incident.evidence == {"verdict": "condition-met", "path": "block", "value": 10**24}
    assert incident.dry_run is False


def test_second_finding_within_the_cooldown_joins_without_actions(arbiter: Arbiter, store: IncidentStore) -> None:
    first = arbiter.decide(finding(100, T0))
    second = arbiter.decide(finding(105, T0 + int(COOLDOWN) - 1, value=2 * 10**24))

    assert second.opened is False
    assert second.actions == ()
    assert second.incident.id == first.incident.id
    assert len(store.incidents()) == 1
    assert store.incident(first.incident.id).last_seen_block == 105
    timeline = store.timeline(first.incident.id)
    assert [entry.kind for entry in timeline] == ["detected", "tripped-again"]
    assert timeline[1].detail == {"block": 105, "value": 2 * 10**24}


def test_after_the_cooldown_a_new_incident_opens_with_actions(arbiter: Arbiter, store: IncidentStore) -> None:
    first = arbiter.decide(finding(100, T0))
    later = arbiter.decide(finding(400, T0 + int(COOLDOWN)))  # exactly one cooldown later: no longer within it

    assert later.opened is True
    assert later.actions == ("pause_vault", "trip_breaker")
    assert later.incident.id != first.incident.id
    assert len(store.incidents()) == 2


def test_cooldown_runs_from_when_the_incident_opened(arbiter: Arbiter) -> None:
    first = arbiter.decide(finding(100, T0))
    assert arbiter.decide(finding(200, T0 + 3000)).opened is False
    # 700 s after the last trip, but 3700 s after the incident opened: a new incident
    third = arbiter.decide(finding(260, T0 + 3700))
    assert third.opened is True and third.incident.id != first.incident.id


def test_cooldown_uses_block_time_not_the_wall_clock(arbiter: Arbiter) -> None:
    # Both findings are decided within milliseconds; only their block times say whether they are a cooldown apart.
    arbiter.decide(finding(100, T0))
    assert arbiter.decide(finding(101, T0 + 12)).opened is False
    assert arbiter.decide(finding(9000, T0 + 10 * int(COOLDOWN))).opened is True


def test_dry_run_policy_records_a_dry_run_incident_and_takes_no_action(arbiter: Arbiter,
                                                                       store: IncidentStore) -> None:
    policy = dataclasses.replace(POLICY, dry_run=True)
    decision = arbiter.decide(finding(100, T0, policy))

    assert decision.opened is True
    assert decision.actions == ()
    incident = store.incident(decision.incident.id)
    assert incident.status == "dry-run"
    assert incident.dry_run is True


def test_alert_only_policy_is_alerted_with_no_action(arbiter: Arbiter, store: IncidentStore) -> None:
    policy = dataclasses.replace(POLICY, response=())
    decision = arbiter.decide(finding(100, T0, policy))

    assert decision.opened is True
    assert decision.actions == ()
    assert store.incident(decision.incident.id).status == "alerted"


def test_policies_do_not_join_each_others_incidents(arbiter: Arbiter) -> None:
    other = dataclasses.replace(POLICY, id="oracle-jump", response=("trip_breaker",))
    first = arbiter.decide(finding(100, T0))
    second = arbiter.decide(finding(100, T0, other))
    assert second.opened is True
    assert second.actions == ("trip_breaker",)
    assert second.incident.id != first.incident.id


def test_chains_do_not_join_each_others_incidents(store: IncidentStore) -> None:
    mainnet, anvil = Arbiter(store, 1), Arbiter(store, CHAIN_ID)
    assert mainnet.decide(finding(100, T0)).opened is True
    decision = anvil.decide(finding(100, T0))
    assert decision.opened is True
    assert decision.incident.chain_id == CHAIN_ID


def test_a_restarted_arbiter_still_honours_the_cooldown(tmp_path: Path) -> None:
    path = tmp_path / "onguard.db"
    store = IncidentStore(path)
    Arbiter(store, CHAIN_ID).decide(finding(100, T0))
    store.close()

    reopened = IncidentStore(path)
    try:
        decision = Arbiter(reopened, CHAIN_ID).decide(finding(101, T0 + 60))
        assert decision.opened is False
        assert decision.actions == ()
    finally:
        reopened.close()


def test_a_broken_invariant_is_recorded_with_its_verdict(arbiter: Arbiter, store: IncidentStore) -> None:
    solvent = dataclasses.replace(POLICY, id="vault-solvent", kind="state")
    broken = Finding(policy=solvent, verdict=Verdict.INVARIANT_BROKEN, summary="invariant broken at block 7",
                     block_number=7, block_time=T0, evidence={"state": {"assets": 1, "supply": 2}})
    decision = arbiter.decide(broken)
    assert decision.opened is True
    assert decision.actions == ("pause_vault", "trip_breaker")
    incident = store.incident(decision.incident.id)
    assert incident.policy_id == "vault-solvent"
    assert incident.evidence == {"verdict": "invariant-broken", "path": "block", "state": {"assets": 1, "supply": 2}}
