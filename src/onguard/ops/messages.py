"""What each channel carries for a notice: the text a person reads, and the Slack, Discord, PagerDuty Events v2
and email formats built from it. Pure functions: no I/O, so every format is tested byte for byte."""

from __future__ import annotations

import json
import re
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from onguard.ops.notice import KIND_LABELS, Notice, iso_time, notice_document, plain
from onguard.policies.model import Severity

SEVERITY_MARKS = {
    Severity.CRITICAL: "\U0001F534", Severity.HIGH: "\U0001F7E0", Severity.MEDIUM: "\U0001F7E1",
    Severity.LOW: "\U0001F535", Severity.INFO: "\u26AA",
}
DISCORD_COLOURS = {
    Severity.CRITICAL: 0xD32F2F, Severity.HIGH: 0xF57C00, Severity.MEDIUM: 0xFBC02D,
    Severity.LOW: 0x1976D2, Severity.INFO: 0x9E9E9E,
}
PAGERDUTY_SEVERITIES = {
    Severity.CRITICAL: "critical", Severity.HIGH: "error", Severity.MEDIUM: "warning",
    Severity.LOW: "info", Severity.INFO: "info",
}
# Only these statuses move the page: "safe" (the pause is in effect) still needs a person, so it stays open.
PAGERDUTY_STATUS_ACTIONS = {"acknowledged": "acknowledge", "resolved": "resolve"}


def headline(notice: Notice) -> str:
    return f"{notice.severity.value.upper()} · {KIND_LABELS[notice.kind]} · {notice.title}"


def facts(notice: Notice) -> list[tuple[str, str]]:
    """The fixed facts every message shows, in the order a person scans them."""
    rows = [("Severity", notice.severity.value)]
    if notice.policy_id is not None:
        rows.append(("Policy", notice.policy_id))
    if notice.incident_id is not None:
        rows.append(("Incident", f"#{notice.incident_id}"))
    if notice.status is not None:
        rows.append(("Status", notice.status))
    rows.append(("Chain", str(notice.chain_id)))
    rows.append(("At", notice.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")))
    return rows


def detail_rows(notice: Notice) -> list[tuple[str, str]]:
    return [(str(key), _detail_text(value)) for key, value in notice.details.items()]


def _detail_text(value: Any) -> str:
    value = plain(value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def text(notice: Notice) -> str:
    """The plain-text message (the email body; Slack and Discord show the same facts in their own layout)."""
    width = max(len(label) for label, _ in facts(notice)) + 1
    lines = [headline(notice), "", notice.summary, ""]
    lines += [f"{label + ':':<{width}} {value}" for label, value in facts(notice)]
    details = detail_rows(notice)
    if details:
        lines += ["", "Details:"] + [f"  {key}: {value}" for key, value in details]
    lines += ["", f"Incident key {notice.incident_key} · notice {notice.id} · sent by onguard"]
    return "\n".join(lines) + "\n"


def webhook_body(notice: Notice) -> bytes:
    """The exact bytes posted (and signed): compact, keys sorted, UTF-8."""
    return json.dumps(notice_document(notice), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` is the fallback shown in notifications, `blocks` the layout."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _cut(f"{SEVERITY_MARKS[notice.severity]} {headline(notice)}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_slack_escape(notice.summary), 3000)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f"*{label}*\n{_slack_escape(value)}", 2000)}
                                       for label, value in facts(notice)][:10]},
    ]
    details = detail_rows(notice)
    if details:
        listing = "\n".join(f"{key}: {value}" for key, value in details)
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "```" + _cut(_slack_escape(listing), 2990) + "```"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(
        f"onguard · {notice.incident_key} · notice {notice.id}")}]})
    return {"text": _cut(f"{headline(notice)}: {notice.summary}", 3000), "blocks": blocks}


def discord_message(notice: Notice) -> dict[str, Any]:
    """A Discord webhook message with one embed. Mentions are disabled: titles and details can carry strings an
    attacker chose (token names, revert reasons), which must not ping @everyone."""
    fields = [{"name": label, "value": _cut(value, 1024), "inline": True} for label, value in facts(notice)]
    fields += [{"name": _cut(key, 256), "value": _cut(value, 1024), "inline": False}
               for key, value in detail_rows(notice)]
    embed = {
        "title": _cut(f"{KIND_LABELS[notice.kind]}: {notice.title}", 256),
        "description": _cut(notice.summary, 4096),
        "color": DISCORD_COLOURS[notice.severity],
        "fields": fields[:25],
        "timestamp": iso_time(notice.at),
        "footer": {"text": _cut(f"onguard · {notice.incident_key}", 2048)},
    }
    return {"content": _cut(f"{SEVERITY_MARKS[notice.severity]} **{headline(notice)}**", 2000),
            "embeds": [embed], "allowed_mentions": {"parse": []}}


def pagerduty_action(notice: Notice) -> str:
    """acknowledge/resolve when the notice says so in details["status"] (an incident acknowledged or resolved,
    a chain-health alert recovered); trigger otherwise."""
    return PAGERDUTY_STATUS_ACTIONS.get(notice.status or "", "trigger")


def pagerduty_event(notice: Notice, *, routing_key: str, source: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event. Every notice of one incident shares its dedup_key, so the first triggers
    the page, later ones are added to it, and acknowledged/resolved status changes move it."""
    action = pagerduty_action(notice)
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": notice.incident_key}
    if action == "trigger":
        event["payload"] = {
            "summary": _cut(headline(notice), 1024),
            "source": source,
            "severity": PAGERDUTY_SEVERITIES[notice.severity],
            "timestamp": iso_time(notice.at),
            "component": notice.policy_id or "daemon",
            "group": f"chain-{notice.chain_id}",
            "class": notice.kind.value,
            "custom_details": {**notice_document(notice)["details"], "summary": notice.summary,
                               "incident_id": notice.incident_id, "notice_id": notice.id},
        }
        event["client"] = "onguard"
    return event


def email_message(notice: Notice, *, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    """A plain-text mail. Every notice of one incident refers to the same thread id, so mail clients group them."""
    message = EmailMessage()
    message["Subject"] = _cut(f"[onguard] {headline(notice)}", 200)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(notice.at.astimezone(UTC))
    message["Message-ID"] = f"<{notice.id}@onguard>"
    thread = "<" + re.sub(r"[^A-Za-z0-9.-]", ".", notice.incident_key) + "@onguard>"
    message["In-Reply-To"] = thread
    message["References"] = thread
    message["X-Onguard-Incident-Key"] = notice.incident_key
    message.set_content(text(notice))
    return message


def _slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
