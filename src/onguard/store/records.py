"""The records the state database holds, as frozen values and enums: incidents, timeline entries, responses and
the transactions sent for them, evaluation failures."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class IncidentStatus(StrEnum):
    OPEN = "open"            # detected; the guardian is acting: the safe state does not hold yet
    SAFE = "safe"            # every action's done_when holds on the canonical chain; still watched until resolved
    FAILED = "failed"        # the last attempt failed and the state is NOT safe: retried with back-off; humans act
    RESOLVED = "resolved"    # a human ended it (`onguard incidents resolve`): no longer watched
    ALERTED = "alerted"      # the policy only alerts
    DRY_RUN = "dry-run"      # the policy is in dry-run: recorded, never acted on


# Incidents the reconciler keeps in the safe state, block after block.
WATCHED_STATUSES = (IncidentStatus.OPEN, IncidentStatus.SAFE, IncidentStatus.FAILED)


class ResponseStatus(StrEnum):
    CLAIMED = "claimed"            # this incident owns the action; nothing sent yet
    SENT = "sent"                  # transaction broadcast, receipt pending
    MINED = "mined"                # mined and succeeded (on the chain as last checked)
    REVERTED = "reverted"          # mined and reverted
    ALREADY_DONE = "already-done"  # the protocol was already in the safe state: nothing sent
    FAILED = "failed"              # could not be put in effect (retried while the incident is watched)
    ORPHANED = "orphaned"          # was mined, then a reorganisation dropped it: being sent again


class Outcome(StrEnum):
    """Where a mined response landed against the harmful transactions, read from the chain."""

    STOPPED_BEFORE_ATTACK = "stopped-before-attack"  # no harmful transaction succeeded before it
    CONTAINED = "contained"                          # harm landed first: which, and how much, in the detail
    ORPHANED_RESENT = "orphaned-resent"              # a reorg orphaned it; re-sent and landed (detail: where)
    FAILED = "failed"                                # not in effect


@dataclass(frozen=True, slots=True)
class ResponseTx:
    """One signed response transaction, stored before it is sent: a restart resumes its nonce, fees above it."""

    action: str
    incident_id: int
    sender: str
    nonce: int
    tx_hash: str
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    chain_id: int
    policy_id: str
    severity: str
    status: IncidentStatus
    title: str
    dry_run: bool
    opened_at: str
    opened_block: int
    opened_block_time: int
    last_seen_at: str
    last_seen_block: int
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: str
    kind: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    incident_id: int
    action: str
    status: ResponseStatus
    tx_hash: str | None
    block_number: int | None
    gas_used: int | None
    error: str | None
    updated_at: str
    outcome: Outcome | None = None
    outcome_detail: Mapping[str, Any] | None = None
    orphaned: int = 0                 # how many times a reorganisation dropped it
    claimed_by: str | None = None     # the replica that claimed it (set by replicas sharing PostgreSQL)
    claimed_at: str | None = None


@dataclass(frozen=True, slots=True)
class FailureSummary:
    policy_id: str
    count: int
    last_block: int
    last_message: str
    last_at: str


AUDIT_GENESIS = "0" * 64  # the prev_hash of the audit log's first entry


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def as_json(value: Mapping[str, Any]) -> str:
    # uint256 values do not fit JSON numbers in most readers: keep big ints as decimal strings.
    return json.dumps(value, default=str, sort_keys=True)
