"""Response claims between replicas: the one place that decides whether this replica sends a response another
replica has claimed, and what a replica cut off from the database does.

Every replica watches and judges. The first to open an incident claims its responses (in the same transaction);
the others join it and keep watching. A claim of another replica is honoured while that replica is alive (its
liveness lease) and keeps its promise: broadcast within `send_deadline` of our first sight of the claim, in effect
within `land_deadline` of our first sight of its broadcast. Otherwise this replica takes the claim over (a compare-
and-set on `claimed_by`) and sends. Deadlines are counted on this replica's own monotonic clock from when it first
saw the claim in that state, so clock skew between machines cannot make a replica act early.

What makes the on-chain effect one pause is not the claim but the chain: every campaign reads `done_when` before it
sends, and the guardian module's cooldown reverts a second execution. Claims only keep replicas from spending gas
on a race they need not run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from onguard.log import get_logger
from onguard.replicas.settings import ReplicaSettings
from onguard.store.records import ResponseStatus

if TYPE_CHECKING:
    from onguard.incidents.store import Incident, ResponseRecord
    from onguard.policies.model import Finding
    from onguard.replicas.role import ReplicaRole
    from onguard.responders.fees import Threat

IN_EFFECT = (ResponseStatus.MINED, ResponseStatus.ALREADY_DONE)


class Verdict(StrEnum):
    MINE = "mine"            # unclaimed, or claimed by this replica: act as a single daemon does
    WAIT = "wait"            # another replica's claim, alive and within its deadline: leave it to that replica
    TAKE_OVER = "take-over"  # the claimer is dead or missed its deadline: claim it here and send


@dataclass(frozen=True, slots=True)
class Claim:
    """A response's claim as the database shows it."""

    incident_id: int
    action: str
    claimed_by: str | None
    status: str


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    why: str
    due_in: float | None = None  # WAIT: seconds until the claimer's deadline, when this replica looks again


def judge(claim: Claim, *, me: str, claimer_alive: bool, waited: float, settings: ReplicaSettings) -> Judgement:
    """Whether this replica (`me`) acts on `claim`, having seen it in its present state for `waited` seconds."""
    if claim.claimed_by is None or claim.claimed_by == me:
        return Judgement(Verdict.MINE, "ours")
    if not claimer_alive:
        return Judgement(Verdict.TAKE_OVER, f"replica {claim.claimed_by} is not alive (its liveness lease expired)")
    deadline, promise = ((settings.land_deadline, "in effect") if claim.status == ResponseStatus.SENT
                         else (settings.send_deadline, "broadcast"))
    if waited >= deadline:
        return Judgement(Verdict.TAKE_OVER, f"replica {claim.claimed_by} did not have it {promise} within "
                                            f"{deadline:g}s (status {claim.status})")
    return Judgement(Verdict.WAIT, f"claimed by replica {claim.claimed_by} ({claim.status})", due_in=deadline - waited)


class ClaimWatch:
    """Remembers when this replica first saw each claim of another replica in its present state (the start of
    that claimer's deadline), and the soonest moment one of them falls due."""

    def __init__(self, settings: ReplicaSettings) -> None:
        self.settings = settings
        self.me = settings.id
        self._seen: dict[tuple[int, str], tuple[str | None, str, float]] = {}
        self._due_at: float | None = None

    def judge(self, claim: Claim, *, claimer_alive: bool) -> Judgement:
        key = (claim.incident_id, claim.action)
        now = time.monotonic()
        state = (claim.claimed_by, claim.status)
        seen = self._seen.get(key)
        if seen is None or seen[:2] != state:
            seen = (*state, now)
            self._seen[key] = seen
        judgement = judge(claim, me=self.me, claimer_alive=claimer_alive, waited=now - seen[2],
                          settings=self.settings)
        if judgement.due_in is not None:
            due = now + judgement.due_in
            self._due_at = due if self._due_at is None else min(self._due_at, due)
        return judgement

    def due(self) -> bool:
        """A claimer's deadline has passed since the last look: the reconciler should look again now."""
        if self._due_at is None or time.monotonic() < self._due_at:
            return False
        self._due_at = None
        return True

    def forget(self, incident_id: int, action: str) -> None:
        self._seen.pop((incident_id, action), None)


class ClaimGate:
    """What the reconciler asks before it puts an action in effect: for which of the incidents wanting it this
    replica acts now. A single daemon (SQLite) acts for all of them; a replica leaves the ones another live
    replica claimed within its deadline, and takes over the rest (atomically: only one taker wins)."""

    def __init__(self, role: ReplicaRole, store: ClaimStore) -> None:
        self._role = role
        self._store = store
        self._log = get_logger(component="claims", replica=role.id)

    def due(self) -> bool:
        return self._role.shared and self._role.claims.due()

    def records_statuses(self) -> bool:
        """Incident statuses computed from the chain are written by one replica, the leader (a claimer writes its
        own campaign's statuses as it goes)."""
        return self._role.leader.held()

    def mine(self, record: ResponseRecord) -> bool:
        return not self._role.shared or record.claimed_by in (None, self._role.id)

    async def acting_for(self, action: str, wanting: list[Incident],
                         responses: Mapping[int, list[ResponseRecord]]) -> list[Incident]:
        if not self._role.shared:
            return wanting
        alive: set[str] | None = None
        acting = []
        for incident in wanting:
            record = next(r for r in responses[incident.id] if r.action == action)
            claim = Claim(incident.id, action, record.claimed_by, str(record.status))
            others = claim.claimed_by not in (None, self._role.id)
            if others and alive is None:
                alive = await self._role.alive_replicas()
            # A database that did not answer (alive None): this replica is cut off and takes nobody for dead.
            judgement = self._role.claims.judge(claim, claimer_alive=not others or alive is None
                                                or claim.claimed_by in alive)
            if judgement.verdict == Verdict.MINE:
                acting.append(incident)
            elif judgement.verdict == Verdict.TAKE_OVER:
                if self._store.take_over_claim(incident.id, action, claim.claimed_by, self._role.id):
                    self._log.warning("taking over another replica's response", incident_id=incident.id,
                                      action=action, why=judgement.why)
                    self._role.claims.forget(incident.id, action)
                    acting.append(incident)
        return acting


    async def take_from_the_dead(self, action: str, wanting: list[Incident],
                                 responses: Mapping[int, list[ResponseRecord]]) -> None:
        """The action holds, yet some responses for it are not recorded in effect and their claimer is dead: take
        those claims over, so that this replica records what the chain shows (a live claimer records its own)."""
        if not self._role.shared:
            return
        pending = [(incident, record) for incident in wanting for record in responses[incident.id]
                   if record.action == action and record.status not in IN_EFFECT
                   and record.claimed_by not in (None, self._role.id)]
        if not pending:
            return
        alive = await self._role.alive_replicas()
        if alive is None:
            return  # the database did not answer: nobody is taken for dead
        for incident, record in pending:
            if record.claimed_by not in alive and self._store.take_over_claim(
                    incident.id, action, record.claimed_by, self._role.id):
                self._log.warning("taking over a dead replica's response to record it", incident_id=incident.id,
                                  action=action, claimed_by=record.claimed_by, status=str(record.status))


class ClaimStore(Protocol):
    def take_over_claim(self, incident_id: int, action: str, claimed_by: str | None, replica: str) -> bool: ...


class CutOff:
    """What a replica cut off from the database does with a trip: it cannot claim, and the others (who can) are
    acting on it. It waits `partition_deadline`, then reads each action's `done_when` on chain: an action that
    holds is left alone (nothing sent: the others paused); one that still does not hold is put in effect from
    here, as a single daemon would (its writes are kept in memory until the database is back). One wait per policy
    at a time."""

    def __init__(self, role: ReplicaRole, is_done: Callable[[str], Awaitable[bool]],
                 act: Callable[[Finding, list[str], Threat | None], None],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._role = role
        self._is_done = is_done
        self._act = act
        self._spawn = spawn
        self._waiting: set[str] = set()
        self._log = get_logger(component="claims", replica=role.id)

    def tripped(self, finding: Finding, threat: Threat | None = None) -> None:
        policy = finding.policy
        if policy.dry_run or policy.alert_only or not policy.response or policy.id in self._waiting:
            return
        self._waiting.add(policy.id)
        self._log.critical("a policy tripped while this replica is cut off from the database: the other replicas "
                           "act; this one looks at the chain again after partition_deadline",
                           policy_id=policy.id, actions=list(policy.response), block=finding.block_number,
                           partition_deadline=self._role.settings.partition_deadline)
        self._spawn(self._after_deadline(finding, threat))

    async def _after_deadline(self, finding: Finding, threat: Threat | None) -> None:
        try:
            await asyncio.sleep(self._role.settings.partition_deadline)
            missing = [action for action in finding.policy.response if not await self._is_done(action)]
            held = [action for action in finding.policy.response if action not in missing]
            if held:
                self._log.warning("cut off from the database: the action already holds on chain: nothing sent",
                                  policy_id=finding.policy.id, actions=held)
            if missing:
                self._log.critical("cut off from the database and the action still does not hold on chain: "
                                   "acting from chain state", policy_id=finding.policy.id, actions=missing)
                self._act(finding, missing, threat)
        finally:
            self._waiting.discard(finding.policy.id)
