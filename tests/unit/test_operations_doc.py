"""docs/operations.md shows real output: every rendered example in it is what the code produces today."""

from __future__ import annotations

import json
import re
from pathlib import Path

from notifykit import EXAMPLE, EXAMPLE_ACK

from onguard.ops.channels import sign
from onguard.ops.messages import discord_message, email_message, pagerduty_event, slack_message, text, webhook_body

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
BLOCK = re.compile(r"<!-- rendered: ([a-z-]+) -->\n```[a-z]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
ROUTING_KEY = "<the routing key from ONGUARD_PAGERDUTY_ROUTING_KEY>"


def rendered() -> dict[str, str]:
    def pretty(value: object) -> str:
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"

    mail = email_message(EXAMPLE, sender="onguard@example.com", recipients=("oncall@example.com",))
    return {
        "email": f"Subject: {mail['Subject']}\nFrom: {mail['From']}\nTo: {mail['To']}\n\n{text(EXAMPLE)}",
        "webhook": pretty(json.loads(webhook_body(EXAMPLE))),
        "signature": f"X-Onguard-Signature: {sign(webhook_body(EXAMPLE), 'example-secret')}\n",
        "slack": pretty(slack_message(EXAMPLE)),
        "discord": pretty(discord_message(EXAMPLE)),
        "pagerduty-trigger": pretty(pagerduty_event(EXAMPLE, routing_key=ROUTING_KEY, source="guardian-eu-1")),
        "pagerduty-acknowledge": pretty(pagerduty_event(EXAMPLE_ACK, routing_key=ROUTING_KEY,
                                                        source="guardian-eu-1")),
    }


def test_every_rendered_example_in_the_operations_doc_is_current() -> None:
    shown = dict(BLOCK.findall(DOC.read_text()))
    expected = rendered()
    assert set(shown) == set(expected)
    for name, block in expected.items():
        assert shown[name] == block, f"docs/operations.md '{name}' is stale; it should read:\n{block}"
