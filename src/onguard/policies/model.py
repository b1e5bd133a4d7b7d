"""The values the policy layer deals in: policy settings common to every kind, severities and findings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

ALERT_ONLY = "alert"


class Severity(str, Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Verdict(str, Enum):
    """Why a policy tripped."""

    THRESHOLD_EXCEEDED = "threshold-exceeded"


@dataclass(frozen=True, slots=True)
class PolicyCommon:
    """What every policy kind carries, whatever it watches."""

    id: str
    description: str
    severity: Severity
    response: tuple[str, ...]  # action names from the config; empty means alert only
    cooldown: float            # seconds during which new trips join the open incident
    enabled: bool
    dry_run: bool
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
