"""The formats each channel carries: the text a person reads, Slack blocks, Discord embeds, PagerDuty events,
e-mail threading, and the versioned webhook document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from notifykit import notice

from onguard.ops.messages import (
    discord_message,
    email_message,
    pagerduty_action,
    pagerduty_event,
    slack_message,
    text,
    webhook_body,
)
from onguard.ops.notice import SCHEMA, Notice, NoticeKind, notice_document

AT = datetime(2026, 12, 2, 7, 1, 2, 345000, tzinfo=UTC)


def fixed(**overrides: object) -> Notice:
    values: dict[str, object] = dict(kind=NoticeKind.INCIDENT_OPENED, severity="critical", chain_id=1,
                                     policy_id="vault-drain", incident_id=12, title="vault drained 45% in 3 blocks",
                                     summary="The vault lost 45% of its assets.", at=AT, id="n1",
                                     details={"drained_wei": 4_500 * 10**18, "actions": ["pause-vault"]})
    values.update(overrides)
    return Notice(**values)  # type: ignore[arg-type]


def test_the_text_a_person_reads_lists_headline_summary_facts_and_details() -> None:
    assert text(fixed()) == """CRITICAL · Incident opened · vault drained 45% in 3 blocks

The vault lost 45% of its assets.

Severity: critical
Policy:   vault-drain
Incident: #12
Chain:    1
At:       2026-12-02 07:01:02 UTC

Details:
  drained_wei: 4500000000000000000000
  actions: ["pause-vault"]

Incident key onguard/1/incident/12 · notice n1 · sent by onguard
"""


def test_the_webhook_document_is_versioned_and_its_bytes_are_stable() -> None:
    document = json.loads(webhook_body(fixed()))
    assert document == notice_document(fixed())
    assert document["schema"] == SCHEMA == "onguard.notice.v1"
    assert document["at"] == "2026-12-02T07:01:02.345Z"
    assert webhook_body(fixed()) == webhook_body(fixed())


def test_notice_times_are_sent_in_utc_whatever_zone_they_were_made_in() -> None:
    local = AT.astimezone(timezone(timedelta(hours=9)))
    assert notice_document(fixed(at=local))["at"] == "2026-12-02T07:01:02.345Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        fixed(at=datetime(2026, 12, 2, 7, 1, 2))


def test_details_are_copied_and_made_json_safe() -> None:
    details = {"amount": 2**70, "small": 7, "raw": b"\x01\xff", "nan": float("nan"), "nested": {"x": (1, 2)}}
    made = fixed(details=details)
    details["amount"] = 0
    assert notice_document(made)["details"] == {"amount": str(2**70), "small": 7, "raw": "0x01ff", "nan": "nan",
                                                "nested": {"x": [1, 2]}}


def test_slack_message_escapes_what_slack_would_read_as_markup() -> None:
    message = slack_message(fixed(summary="<!channel> drained & gone"))
    assert message["text"].startswith("CRITICAL · Incident opened")
    assert message["blocks"][1]["text"]["text"] == "&lt;!channel&gt; drained &amp; gone"
    fields = [field["text"] for field in message["blocks"][2]["fields"]]
    assert fields[:3] == ["*Severity*\ncritical", "*Policy*\nvault-drain", "*Incident*\n#12"]


def test_discord_message_never_mentions_anyone_and_respects_embed_limits() -> None:
    message = discord_message(fixed(title="@everyone " + "x" * 400))
    assert message["allowed_mentions"] == {"parse": []}
    embed = message["embeds"][0]
    assert len(embed["title"]) == 256 and embed["title"].endswith("…")
    assert embed["color"] == 0xD32F2F and embed["timestamp"] == "2026-12-02T07:01:02.345Z"


@pytest.mark.parametrize("kind, status, action", [
    (NoticeKind.INCIDENT_OPENED, None, "trigger"),
    (NoticeKind.RESPONSE_OUTCOME, None, "trigger"),
    (NoticeKind.INCIDENT_STATUS, "acknowledged", "acknowledge"),
    (NoticeKind.INCIDENT_STATUS, "resolved", "resolve"),
    (NoticeKind.INCIDENT_STATUS, "mitigated", "trigger"),  # the pause holds, but a person must still look
    (NoticeKind.CHAIN_HEALTH, "open", "trigger"),
    (NoticeKind.CHAIN_HEALTH, "resolved", "resolve"),
])
def test_pagerduty_action_follows_the_incident_status(kind: NoticeKind, status: str | None, action: str) -> None:
    assert pagerduty_action(notice(kind, **({"status": status} if status else {}))) == action


@pytest.mark.parametrize("severity, paged", [("critical", "critical"), ("high", "error"), ("medium", "warning"),
                                             ("low", "info"), ("info", "info")])
def test_pagerduty_severity_maps_onto_its_four_levels(severity: str, paged: str) -> None:
    event = pagerduty_event(fixed(severity=severity), routing_key="k", source="guardian-1")
    assert event["payload"]["severity"] == paged


def test_notices_without_an_incident_share_a_key_per_chain_kind_and_policy() -> None:
    lag = fixed(kind=NoticeKind.CHAIN_HEALTH, incident_id=None, policy_id=None)
    assert lag.incident_key == "onguard/1/chain_health/daemon"
    assert pagerduty_event(lag, routing_key="k", source="s")["dedup_key"] == lag.incident_key


def test_every_mail_about_one_incident_joins_one_thread() -> None:
    first = email_message(fixed(id="a"), sender="onguard@example.com", recipients=("oncall@example.com",))
    later = email_message(fixed(id="b", kind=NoticeKind.INCIDENT_STATUS), sender="onguard@example.com",
                          recipients=("oncall@example.com",))
    assert first["Message-ID"] != later["Message-ID"]
    assert first["References"] == later["References"] == "<onguard.1.incident.12@onguard>"
