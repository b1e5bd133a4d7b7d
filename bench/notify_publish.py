"""Benchmark: what notifying costs the hot path — building a Notice and `Notifier.publish` routing it to the five
channels of the docs/operations.md example (no delivery: the workers are not started, so only the caller's cost
is measured). Reported as the best of several runs, in microseconds per notice.

Run: .venv/bin/python bench/notify_publish.py [--notices 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tomllib
from pathlib import Path

from onguard.errors import ConfigError
from onguard.ops.notice import Notice, NoticeKind
from onguard.ops.notify import Notifier
from onguard.ops.settings import parse_notifications
from onguard.policies.model import Severity
from onguard.tomlfields import Table

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
ENVIRON = {"ONGUARD_WEBHOOK_URL": "http://127.0.0.1:9/", "ONGUARD_WEBHOOK_SECRET": "s",
           "ONGUARD_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/", "ONGUARD_DISCORD_WEBHOOK_URL": "http://127.0.0.1:9/",
           "ONGUARD_PAGERDUTY_ROUTING_KEY": "k", "ONGUARD_SMTP_PASSWORD": "p"}


def documented_notifier(queue_size: int) -> Notifier:
    text = DOC.read_text().split("```toml\n", 1)[1].split("```", 1)[0]
    data = tomllib.loads(text)
    data["notifications"]["queue_size"] = queue_size
    root = Table(data, file=str(DOC), prefix="", error=ConfigError)
    return Notifier.from_settings(parse_notifications(root.table("notifications")), environ=ENVIRON)


def notice(number: int) -> Notice:
    return Notice(kind=NoticeKind.INCIDENT_OPENED, severity=Severity.CRITICAL, chain_id=1, policy_id="vault-drain",
                  incident_id=number, title="vault drained 38% in 2 blocks", summary="The vault is being paused.",
                  details={"threat_tx": "0x" + "ab" * 32, "assets_before": 1_250_000 * 10**6})


async def measure(count: int, repeat: int) -> tuple[float, float]:
    build, publish = [], []
    for _ in range(repeat):
        notifier = documented_notifier(queue_size=count)
        started = time.perf_counter()
        notices = [notice(number) for number in range(count)]
        built = time.perf_counter()
        for item in notices:
            notifier.publish(item)
        done = time.perf_counter()
        assert not notifier.failures, "the bench must not overflow the queues"
        assert len(notifier.channels_for(notices[0])) == 5
        build.append((built - started) / count)
        publish.append((done - built) / count)
    return min(build) * 1e6, min(publish) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    build, publish = asyncio.run(measure(args.notices, args.repeat))
    print(f"Notice(...):             {build:6.2f} µs per notice")
    print(f"publish (5 channels):    {publish:6.2f} µs per notice")


if __name__ == "__main__":
    main()
