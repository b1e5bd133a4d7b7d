"""The reconciler: keeps every watched incident's desired state — each of its actions' `done_when` holding on the
canonical chain — until a human resolves it. Every poll it compares and acts: a response a reorganisation
orphaned, a pause dropped, stuck or failed, an action undone while the incident is open, a joined incident whose
action does not hold: each is put (back) in effect through the response life cycle, failures retried with
back-off, across restarts. It never unpauses: owners resolve the incident first, then unpause."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.config import ResponseSettings
from onguard.incidents.store import Incident, IncidentStatus, IncidentStore, ResponseRecord, ResponseStatus
from onguard.log import get_logger
from onguard.replicas.claims import ClaimGate
from onguard.responders.lifecycle import IN_EFFECT, ResponseLifecycle


RECENT_BLOCKS = 64  # mined responses this close to the head are re-checked every poll


class Step(StrEnum):
    """What the reconciler does for one action this poll."""

    HOLDS = "holds"          # done_when holds: nothing to do
    UNDER_WAY = "under-way"  # a campaign is out for it: the life cycle watches, bumps, replaces
    WAIT = "wait"            # the last attempt failed; the back-off has not run out
    ACT = "act"              # not in effect and nothing out: send (again)


def next_step(*, holds: bool, in_flight: bool, retry_at: float | None, now: float) -> Step:
    if in_flight:
        return Step.UNDER_WAY
    if holds:
        return Step.HOLDS
    if retry_at is not None and now < retry_at:
        return Step.WAIT
    return Step.ACT


def backoff(settings: ResponseSettings, failures: int) -> float:
    """Seconds before attempt `failures + 1`: retry_backoff doubled per failure, capped at retry_backoff_max."""
    return min(settings.retry_backoff * 2 ** max(failures - 1, 0), settings.retry_backoff_max)


def incident_status(holds: dict[str, bool], responses: list[ResponseRecord]) -> IncidentStatus:
    """SAFE when every action holds on chain; FAILED when one does not and its response failed; else OPEN."""
    if holds and all(holds.values()):
        return IncidentStatus.SAFE
    failed = {r.action for r in responses if r.status in (ResponseStatus.FAILED, ResponseStatus.REVERTED)}
    if any(not held and action in failed for action, held in holds.items()):
        return IncidentStatus.FAILED
    return IncidentStatus.OPEN


@dataclass(slots=True)
class _Retry:
    failures: int
    at: float


class Reconciler:
    def __init__(self, store: IncidentStore, lifecycle: ResponseLifecycle, rpc: Rpc, chain_id: int,
                 settings: ResponseSettings, gate: ClaimGate) -> None:
        """`gate`: among replicas, which incidents this one acts for (a single daemon: all of them)."""
        self._store = store
        self._gate = gate
        self._lifecycle = lifecycle
        self._rpc = rpc
        self._chain_id = chain_id
        self._settings = settings
        self._retries: dict[str, _Retry] = {}
        self._failures_seen = 0
        self._rewound_to: int | None = None  # kept until the receipts from there on are re-checked
        self._log = get_logger(component="reconciler", chain_id=chain_id)

    def retry_due(self) -> bool:
        """A response failed since the last comparison, or a back-off ran out: compare again now."""
        now = time.monotonic()
        return self._rewound_to is not None or self._lifecycle.failures != self._failures_seen or any(
            retry.at <= now and not self._lifecycle.in_flight(action)
            for action, retry in self._retries.items()) or self._gate.due()

    async def reconcile(self, *, head: int | None = None, rewound_to: int | None = None) -> None:
        """One comparison of every watched incident with the chain, acting where they differ. `rewound_to`: the
        first block the block source re-reads after a reorganisation (every receipt from there on is re-checked);
        `head`: the newest block handled (responses mined in the RECENT_BLOCKS before it are re-checked too: a
        reorganisation of blocks the source had not read yet is no rewind for it)."""
        self._failures_seen = self._lifecycle.failures
        if rewound_to is not None:
            self._rewound_to = rewound_to if self._rewound_to is None else min(self._rewound_to, rewound_to)
        self._store.flush()
        incidents = self._store.watched_incidents(self._chain_id)
        if not incidents:
            self._rewound_to = None
            return
        responses = {incident.id: self._store.responses(incident.id) for incident in incidents}
        recent = None if head is None else max(head - RECENT_BLOCKS, 0)
        since = min((b for b in (self._rewound_to, recent) if b is not None), default=None)
        if since is not None:
            await self._reverify(responses, since)
            self._rewound_to = None
            responses = {incident.id: self._store.responses(incident.id) for incident in incidents}
        by_action: dict[str, list[Incident]] = defaultdict(list)
        for incident in incidents:
            for record in responses[incident.id]:
                by_action[record.action].append(incident)
        holds: dict[str, bool] = {}
        for action, wanting in by_action.items():
            if not self._lifecycle.knows(action):
                continue
            holds[action] = await self._lifecycle.is_done(action)
            if not holds[action] and not self._lifecycle.in_flight(action):
                # Recorded as mined, yet the action does not hold: was ours dropped by a reorganisation?
                await self._reverify({i.id: responses[i.id] for i in wanting}, 0, action=action)
                for incident in wanting:
                    responses[incident.id] = self._store.responses(incident.id)
            await self._act(action, wanting, holds[action], responses)
            # Another replica's campaign records its own responses; ours (or unclaimed ones, or a dead replica's,
            # taken over) are settled here.
            if holds[action]:
                await self._gate.take_from_the_dead(action, wanting, responses)
                for incident in wanting:
                    responses[incident.id] = self._store.responses(incident.id)
            unrecorded = [i.id for i in wanting if any(r.action == action and r.status not in IN_EFFECT
                                                       and self._gate.mine(r) for r in responses[i.id])]
            if holds[action] and unrecorded and not self._lifecycle.in_flight(action):
                await self._lifecycle.settle_unrecorded(action, unrecorded)
                for incident_id in unrecorded:
                    responses[incident_id] = self._store.responses(incident_id)
        if not self._gate.records_statuses():
            return
        for incident in incidents:
            if any(self._lifecycle.in_flight(r.action) for r in responses[incident.id]):
                continue  # a response is under way: its life cycle records the outcome, then the status
            mine = {r.action: holds[r.action] for r in responses[incident.id] if r.action in holds}
            if mine:
                self._store.set_status(incident.id, incident_status(mine, responses[incident.id]),
                                       reason=_reason(mine))

    async def _act(self, action: str, wanting: list[Incident], holds: bool,
                   responses: dict[int, list[ResponseRecord]]) -> None:
        retry = self._retries.get(action)
        step = next_step(holds=holds, in_flight=self._lifecycle.in_flight(action),
                         retry_at=retry.at if retry else None, now=time.monotonic())
        if step == Step.HOLDS:
            self._retries.pop(action, None)
        if step == Step.UNDER_WAY:
            await self._join(action, wanting, responses)
        if step != Step.ACT:
            return
        wanting = await self._gate.acting_for(action, wanting, responses)
        if not wanting:
            return  # other live replicas' claims, within their deadlines
        failed = any(r.action == action and r.status in (ResponseStatus.FAILED, ResponseStatus.REVERTED)
                     for i in wanting for r in responses[i.id])
        if failed or retry is not None:
            failures = (retry.failures if retry else 0) + 1
            self._retries[action] = _Retry(failures=failures, at=time.monotonic() + backoff(self._settings, failures))
        self._log.warning("an action does not hold on chain: putting it in effect", action=action,
                          incidents=[i.id for i in wanting], retry=failed or None)
        for incident in wanting:
            self._lifecycle.respond(incident.id, action)

    async def _join(self, action: str, wanting: list[Incident], responses: dict[int, list[ResponseRecord]]) -> None:
        """A campaign is out for the action: an incident whose response for it is not in effect (orphaned by a
        reorganisation found meanwhile, failed) joins it, so that the campaign records what the chain shows for it
        too. Left out, it would wait for a poll after the campaign ended, and none comes while no block does."""
        served = self._lifecycle.serves(action)
        stale = [i for i in wanting if i.id not in served and any(
            r.action == action and r.status not in IN_EFFECT and self._gate.mine(r) for r in responses[i.id])]
        joining = await self._gate.acting_for(action, stale, responses) if stale else []
        if not self._lifecycle.in_flight(action):
            return  # ended while the claims were read: the next poll settles them from the chain
        for incident in joining:
            self._lifecycle.respond(incident.id, action)

    async def _reverify(self, responses: dict[int, list[ResponseRecord]], rewound_to: int,
                        action: str | None = None) -> None:
        """Every mined response (of `action`) at or after `rewound_to`: still on the chain, in the same block?"""
        for incident_id, records in responses.items():
            for record in records:
                if action is not None and record.action != action:
                    continue
                if (record.status != ResponseStatus.MINED or record.tx_hash is None
                        or record.block_number is None or record.block_number < rewound_to):
                    continue
                receipt = await self._rpc.receipt(record.tx_hash)  # a ChainError keeps the rewind for next poll
                if receipt is None:
                    self._store.record_orphaned(incident_id, record.action, record.tx_hash, record.block_number)
                    self._log.error("a reorganisation ORPHANED the response: sending it again",
                                    incident_id=incident_id, action=record.action, tx_hash=record.tx_hash,
                                    was_in_block=record.block_number)
                elif int(receipt["blockNumber"]) != record.block_number:
                    self._store.update_response(incident_id, record.action, ResponseStatus.MINED,
                                                tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
                                                block_number=int(receipt["blockNumber"]),
                                                gas_used=int(receipt["gasUsed"]))


def _reason(holds: dict[str, bool]) -> str:
    held = [a for a, h in holds.items() if h]
    missing = [a for a, h in holds.items() if not h]
    return (f"holds on chain: {', '.join(held) or '-'}"
            + (f"; does NOT hold: {', '.join(missing)}" if missing else ""))
