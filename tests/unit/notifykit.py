"""Helpers for the notification tests: settings read from TOML text exactly as onguard.toml is, and notices."""

from __future__ import annotations

import tomllib
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
