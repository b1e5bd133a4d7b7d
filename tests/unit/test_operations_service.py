"""Operations wired together: a failed and a delivered notification show in a scrape of the live /metrics, the
failure reaches the audit hook as a JSON-safe record, and /readyz reflects what the daemon reported."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from notifykit import notice, notification_settings
from prometheus_client.parser import text_string_to_metric_families
from receivers import HttpReceiver

from onguard.ops.service import Operations
from onguard.ops.settings import MetricsSettings

SECRET = "hmac-secret-for-tests"
METRICS = MetricsSettings(enabled=True, host="127.0.0.1", port=0, lag_budget=3, stale_after=60.0,
                          require_preflight=False)
TOML = """
[notifications]
max_attempts = 1
[notifications.channels.good]
type = "webhook"
url_env = "GOOD_URL"
secret_env = "SECRET"
[notifications.channels.bad]
type = "webhook"
url_env = "BAD_URL"
secret_env = "SECRET"
[[notifications.routes]]
channels = ["good", "bad"]
"""


def test_operations_count_notifications_in_the_live_metrics_and_audit_failures() -> None:
    audited: list[dict] = []

    async def scenario() -> tuple[dict, list[int]]:
        async with HttpReceiver(secret=SECRET) as receiver:
            ops = Operations.build(notification_settings(TOML), METRICS, chain_id=1, mempool_required=False,
                                   environ={"GOOD_URL": receiver.url("/webhook"), "BAD_URL": receiver.url("/down"),
                                            "SECRET": SECRET},
                                   on_failure=[lambda failure: audited.append(failure.record())])
            await ops.start()
            assert ops.server is not None and ops.notifier is not None
            ops.publish(notice(incident_id=7))
            await ops.notifier.flush()
            base = f"http://127.0.0.1:{ops.server.port}"
            statuses = []
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/readyz") as response:
                    statuses.append(response.status)
                ops.metrics.block_handled(500, lag=1)
                async with session.get(f"{base}/readyz") as response:
                    statuses.append(response.status)
                async with session.get(f"{base}/metrics") as response:
                    text = await response.text()
            await ops.stop()
        values = {(s.name, tuple(s.labels.items())): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}
        return values, statuses

    values, statuses = asyncio.run(scenario())
    assert statuses == [503, 200]
    assert values[("onguard_notifications_delivered_total", (("channel", "good"),))] == 1
    assert values[("onguard_notification_failures_total", (("channel", "bad"),))] == 1
    [record] = audited
    assert json.loads(json.dumps(record)) == record
    assert (record["channel"], record["incident_id"], record["reason"]) == ("bad", 7, "HTTP 503: down for maintenance")


def test_without_channels_or_endpoint_operations_publish_nothing_and_start_nothing() -> None:
    async def scenario() -> Operations:
        ops = Operations.build(notification_settings(""), MetricsSettings(False, "127.0.0.1", 0, 3, 60.0, True),
                               chain_id=1, mempool_required=False, environ={})
        await ops.start()
        ops.publish(notice())
        await ops.stop()
        return ops

    ops = asyncio.run(scenario())
    assert ops.notifier is None and ops.server is None


def test_the_heartbeat_publishes_a_chain_health_notice_when_not_ready_and_its_resolution() -> None:
    toml = TOML.replace('channels = ["good", "bad"]', 'channels = ["good"]\nkinds = ["chain_health"]')
    settings = MetricsSettings(enabled=False, host="127.0.0.1", port=0, lag_budget=3, stale_after=60.0,
                               require_preflight=False, alert_after=0.0)

    async def scenario() -> list[dict]:
        async with HttpReceiver(secret=SECRET) as receiver:
            ops = Operations.build(notification_settings(toml), settings, chain_id=1, mempool_required=False,
                                   environ={"GOOD_URL": receiver.url("/webhook"), "BAD_URL": "https://x.invalid/",
                                            "SECRET": SECRET})
            await ops.start()
            assert not ops.heartbeat().ready    # nothing handled yet: not ready, and alert_after = 0
            ops.metrics.block_handled(500, lag=0)
            assert ops.heartbeat().ready
            await ops.stop()
            return [received.json() for received in receiver.requests["/webhook"]]

    opened, resolved = asyncio.run(scenario())
    assert (opened["kind"], opened["severity"], opened["details"]["status"]) == ("chain_health", "high", "open")
    assert opened["details"]["reasons"] == ["the chain has not answered yet (starting up?)", "no block handled yet"]
    assert resolved["details"]["status"] == "resolved" and resolved["incident_key"] == opened["incident_key"]
