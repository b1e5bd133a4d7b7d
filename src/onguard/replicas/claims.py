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

import time
from dataclasses import dataclass
from enum import StrEnum

from onguard.replicas.settings import ReplicaSettings

SENT = "sent"


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
    deadline, promise = ((settings.land_deadline, "in effect") if claim.status == SENT
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
