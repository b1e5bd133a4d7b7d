"""The values the policy layer deals in: what every policy carries, severities, verdicts and findings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

ALERT_ONLY = "alert"
SELF_DEFENCE_ID = "guardian-self-defence"             # the built-in policies (onguard.policies.selfdefence)
ROUTINE_ID = "guardian-routine-authority-change"
BUILT_IN_IDS = frozenset({SELF_DEFENCE_ID, ROUTINE_ID})


class Severity(str, Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Verdict(str, Enum):
    """Why a policy tripped."""

    CONDITION_MET = "condition-met"          # a watched event, call or measure met the policy's condition
    INVARIANT_BROKEN = "invariant-broken"    # a state invariant no longer holds
    SIMULATION_PREDICTS_BREACH = "simulation-predicts-breach"  # a pending tx would break the condition


@dataclass(frozen=True, slots=True)
class PolicyCommon:
    """What every policy kind carries, whatever it watches."""

    id: str
    kind: str
    description: str
    severity: Severity
    response: tuple[str, ...]  # action names from the config; empty means alert only
    cooldown: float            # seconds (chain time) during which new trips join the open incident
    enabled: bool
    dry_run: bool
    confirmations: int         # blocks a piece of mined evidence must be buried under before it counts
    file: Path

    @property
    def alert_only(self) -> bool:
        return not self.response


@dataclass(frozen=True, slots=True)
class Finding:
    """A policy's verdict on what it saw, with the evidence for it."""

    policy: PolicyCommon
    verdict: Verdict
    summary: str
    block_number: int
    block_time: int  # the block's timestamp: cooldowns run on chain time, so replays behave like the daemon
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EvaluationFailure:
    """A policy that could not be evaluated at a block (a read reverted, a value was missing). Never treated
    as "safe": it is logged at error level and recorded for `onguard status`."""

    policy_id: str
    block_number: int
    message: str
