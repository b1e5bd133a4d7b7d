"""Helpers for the notification tests: settings read from TOML text exactly as onguard.toml is, and notices."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any

from onguard.errors import ConfigError
from onguard.ops.notice import Notice, NoticeKind
from onguard.ops.settings import NotificationSettings, parse_notifications
from onguard.tomlfields import Table


def notification_settings(text: str, file: str = "onguard.toml") -> NotificationSettings:
    data = tomllib.loads(text)
    root = Table(data, file=file, prefix="", error=ConfigError)
    settings = parse_notifications(root.table("notifications", required=False))
    root.finish()
    return settings


def notice(kind: NoticeKind = NoticeKind.INCIDENT_OPENED, severity: str = "critical", policy_id: str | None =
           "vault-drain", incident_id: int | None = 12, **details: Any) -> Notice:
    return Notice(kind=kind, severity=severity, chain_id=1, policy_id=policy_id, incident_id=incident_id,
                  title="vault drained 45% in 3 blocks",
                  summary="The vault lost 45% of its assets in 3 blocks; the guardian is pausing it.",
                  details=details or {"drained_wei": 4_500 * 10**18, "threat_tx": "0x" + "ab" * 32})


# The notice docs/operations.md renders in every channel's format (test_operations_doc checks the doc is current).
EXAMPLE = Notice(
    kind=NoticeKind.INCIDENT_OPENED, severity="critical", chain_id=1, policy_id="vault-drain", incident_id=42,
    title="vault drained 38% in 2 blocks",
    summary="Vault assets fell from 1,250,000 USDC to 775,000 USDC between blocks 21,400,118 and 21,400,119. "
            "The guardian is pausing the vault through the Safe (action pause-vault).",
    details={"verdict": "threshold", "path": "mempool",
             "threat_tx": "0x9f3c2a7e41d0b8c5a6e2f1d3b4c5a6e7f8091a2b3c4d5e6f708192a3b4c5d6e7",
             "block": 21400119, "assets_before": 1_250_000 * 10**6, "assets_after": 775_000 * 10**6,
             "actions": ["pause-vault"]},
    at=datetime(2026, 12, 2, 7, 14, 9, 512000, tzinfo=UTC), id="5b1f0c9e2d7a4e3f8c6b1a0d9e8f7a6b")
EXAMPLE_ACK = Notice(
    kind=NoticeKind.INCIDENT_STATUS, severity="critical", chain_id=1, policy_id="vault-drain", incident_id=42,
    title="acknowledged by alice", summary="alice is looking into it.",
    details={"status": "acknowledged", "by": "alice"},
    at=datetime(2026, 12, 2, 7, 16, 0, tzinfo=UTC), id="0c4e6a8b1d3f5a7c9e0b2d4f6a8c0e2b")
