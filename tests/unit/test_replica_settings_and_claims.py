"""The [replicas] section (defaults, ranges, errors naming the field), the claim verdict (when a replica leaves a
response to the replica that claimed it, and when it takes it over) and what a replica cut off from the database
does with a trip (the chain's `done_when` faked)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onguard.config import load_config
from onguard.errors import ConfigError
from onguard.policies.model import Finding, PolicyCommon, Severity
from onguard.policies.model import Verdict as FindingVerdict
from onguard.replicas.claims import Claim, ClaimWatch, CutOff, Verdict, judge
from onguard.replicas.role import ReplicaRole
from onguard.replicas.settings import ReplicaSettings

WriteToml = Callable[..., Path]
SETTINGS = ReplicaSettings(id="b", send_deadline=1.0, land_deadline=30.0)


def replicas_error(write_toml: WriteToml, config_data: dict[str, Any], **fields: object) -> ConfigError:
    config_data["replicas"] = fields
    path = write_toml(config_data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_without_a_replicas_section_the_id_is_host_and_pid(write_toml: WriteToml, config_data: dict[str, Any]):
    settings = load_config(write_toml(config_data)).replicas
    assert settings.id == f"{socket.gethostname()}-{os.getpid()}"
    assert (settings.lease_ttl, settings.renew_every, settings.send_deadline) == (3.0, 1.0, 1.0)


def test_a_replicas_section_is_read(write_toml: WriteToml, config_data: dict[str, Any]):
    config_data["replicas"] = {"id": "eu-1", "lease_ttl": "10s", "renew_every": "2s", "send_deadline": "500ms",
                               "land_deadline": "1m", "partition_deadline": "20s"}
    settings = load_config(write_toml(config_data)).replicas
    assert settings == ReplicaSettings(id="eu-1", lease_ttl=10.0, renew_every=2.0, send_deadline=0.5,
                                       land_deadline=60.0, partition_deadline=20.0)


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"id": "has space"}, "replicas.id", "not a replica name"),
    ({"lease_ttl": "2h"}, "replicas.lease_ttl", "outside 1s..60s"),
    ({"lease_ttl": "3s", "renew_every": "2s"}, "replicas.renew_every", "more than half of lease_ttl"),
    ({"send_deadline": "5m"}, "replicas.send_deadline", "outside"),
    ({"partition_deadline": "soon"}, "replicas.partition_deadline", "not a duration"),
    ({"leader": True}, "replicas.leader", "unknown field"),
])
def test_bad_replica_settings_name_the_field(write_toml: WriteToml, config_data: dict[str, Any],
                                             fields: dict[str, object], field: str, words: str):
    error = replicas_error(write_toml, config_data, **fields)
    assert error.field == field and words in str(error)
    assert error.hint or "write e.g." in str(error)  # and how to fix it


def claim(by: str | None, status: str = "claimed") -> Claim:
    return Claim(incident_id=1, action="pause_vault", claimed_by=by, status=status)


def test_unclaimed_and_own_claims_are_acted_on():
    assert judge(claim(None), me="b", claimer_alive=True, waited=0, settings=SETTINGS).verdict == Verdict.MINE
    assert judge(claim("b"), me="b", claimer_alive=False, waited=0, settings=SETTINGS).verdict == Verdict.MINE


def test_a_live_claimer_within_its_deadline_is_left_to_act():
    judgement = judge(claim("a"), me="b", claimer_alive=True, waited=0.4, settings=SETTINGS)
    assert judgement.verdict == Verdict.WAIT and judgement.due_in == pytest.approx(0.6)
    sent = judge(claim("a", "sent"), me="b", claimer_alive=True, waited=5, settings=SETTINGS)
    assert sent.verdict == Verdict.WAIT and sent.due_in == pytest.approx(25)


@pytest.mark.parametrize(("status", "waited"), [("claimed", 1.0), ("failed", 1.5), ("sent", 30.0)])
def test_a_claimer_past_its_deadline_is_taken_over(status: str, waited: float):
    judgement = judge(claim("a", status), me="b", claimer_alive=True, waited=waited, settings=SETTINGS)
    assert judgement.verdict == Verdict.TAKE_OVER and "did not have it" in judgement.why


def test_a_dead_claimer_is_taken_over_at_once():
    judgement = judge(claim("a", "sent"), me="b", claimer_alive=False, waited=0, settings=SETTINGS)
    assert judgement.verdict == Verdict.TAKE_OVER and "not alive" in judgement.why


def test_the_watch_counts_from_the_first_sight_of_each_state_and_says_when_one_falls_due():
    watch = ClaimWatch(ReplicaSettings(id="b", send_deadline=0.0, land_deadline=600.0))
    assert watch.judge(claim("a", "sent"), claimer_alive=True).verdict == Verdict.WAIT
    assert not watch.due()
    # The claimer moved back to "claimed" (e.g. its attempt failed and it retries): a new state, a new deadline.
    assert watch.judge(claim("a", "claimed"), claimer_alive=True).verdict == Verdict.TAKE_OVER


def finding(policy_id: str = "drain", response: tuple[str, ...] = ("pause", "trip")) -> Finding:
    policy = PolicyCommon(id=policy_id, kind="delta", description="", severity=Severity.CRITICAL, response=response,
                          cooldown=3600, enabled=True, dry_run=False, confirmations=0, file=Path("drain.toml"))
    return Finding(policy=policy, verdict=FindingVerdict.CONDITION_MET, summary="drained", block_number=7,
                   block_time=70, evidence={})


def cut_off_replica(holding: set[str]) -> tuple[CutOff, list[tuple[str, list[str]]], list[asyncio.Task[None]]]:
    """A CutOff whose chain says `holding` actions hold; it records what it would act on (a faked responder)."""
    acted: list[tuple[str, list[str]]] = []
    tasks: list[asyncio.Task[None]] = []

    async def is_done(action: str) -> bool:
        return action in holding

    role = ReplicaRole(ReplicaSettings(id="c", partition_deadline=0.0), 1, None)
    cut = CutOff(role, is_done, lambda f, actions, threat: acted.append((f.policy.id, actions)),
                 lambda coroutine: tasks.append(asyncio.ensure_future(coroutine)))
    return cut, acted, tasks


def test_cut_off_sends_nothing_when_the_actions_already_hold():
    async def scenario() -> list[tuple[str, list[str]]]:
        cut, acted, tasks = cut_off_replica({"pause", "trip"})
        cut.tripped(finding())
        await asyncio.gather(*tasks)
        return acted

    assert asyncio.run(scenario()) == []


def test_cut_off_acts_on_what_still_does_not_hold_and_waits_once_per_policy():
    async def scenario() -> list[tuple[str, list[str]]]:
        cut, acted, tasks = cut_off_replica({"pause"})
        cut.tripped(finding())
        cut.tripped(finding())  # tripped again while waiting: one wait
        cut.tripped(finding(response=()))  # alert only: nothing to wait for
        await asyncio.gather(*tasks)
        return acted

    assert asyncio.run(scenario()) == [("drain", ["trip"])]
