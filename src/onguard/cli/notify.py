"""`onguard notify-test`: sends a test notice to the channels of onguard.toml's [notifications] and says, per
channel, whether it arrived — so a wrong URL, key or password is found before an incident, not during one."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from onguard.errors import ConfigError
from onguard.ops.notice import Notice, NoticeKind
from onguard.ops.notify import Notifier
from onguard.ops.settings import NotificationSettings, PagerDutySpec, Route, parse_notifications
from onguard.policies.model import Severity
from onguard.tomlfields import Table, read_toml


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("notify-test", help="send a test notice to each notification channel")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.add_argument("--channel", action="append", dest="channels", metavar="NAME",
                        help="only this channel (repeat for several). PagerDuty channels are tested only when "
                             "named: their test pages the on-call, then resolves the page at once")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    path = Path(args.config)
    data = read_toml(path, ConfigError)
    root = Table(data, file=str(path), prefix="", error=ConfigError)
    settings = parse_notifications(root.table("notifications", required=False))
    chain = root.table("chain", required=False)
    chain_id = chain.get("chain_id", int, default=0) if chain is not None else 0
    names = _chosen(settings, args.channels, root)
    if not names:
        print("no channel to test: add [notifications.channels.NAME] tables (docs/operations.md)")
        return 1
    results = asyncio.run(_send(settings, names, chain_id))
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {results[name]}")
    return 0 if all(result == "delivered" for result in results.values()) else 1


def _chosen(settings: NotificationSettings, wanted: list[str] | None, root: Table) -> list[str]:
    if wanted is None:
        return [name for name, spec in settings.channels.items() if not isinstance(spec, PagerDutySpec)]
    for name in wanted:
        if name not in settings.channels:
            raise root.fail("notifications.channels", f"no channel named {name!r}",
                            f"channels: {', '.join(settings.channels) or 'none'}")
    return list(dict.fromkeys(wanted))


async def _send(settings: NotificationSettings, names: list[str], chain_id: int) -> dict[str, str]:
    notifier = _notifier(settings, names)
    notifier.start()
    notifier.publish(_notice(chain_id, "open"))
    await notifier.stop()
    failed = {failure.channel: failure.reason for failure in notifier.failures}
    paged = [name for name in names if isinstance(settings.channels[name], PagerDutySpec) and name not in failed]
    if paged:  # the test opened a page: resolve it at once
        closer = _notifier(settings, paged)
        closer.start()
        closer.publish(_notice(chain_id, "resolved"))
        await closer.stop()
        failed |= {failure.channel: f"the test page was opened but NOT resolved: {failure.reason}"
                   for failure in closer.failures}
    return {name: f"FAILED: {failed[name]}" if name in failed else "delivered" for name in names}


def _notifier(settings: NotificationSettings, names: list[str]) -> Notifier:
    """A notifier for just these channels, whatever the routes say (a test must reach the channel it names)."""
    route = Route(channels=tuple(names), severities=None, policies=None, kinds=None, field="notify-test")
    only = NotificationSettings(file=settings.file, channels={name: settings.channels[name] for name in names},
                                routes=(route,), retry=settings.retry, timeout=settings.timeout,
                                queue_size=settings.queue_size)
    return Notifier.from_settings(only)


def _notice(chain_id: int, status: str) -> Notice:
    return Notice(kind=NoticeKind.TEST, severity=Severity.INFO, chain_id=chain_id,
                  title="test notice from onguard notify-test",
                  summary="If you read this, onguard can reach this channel. Nothing happened on chain.",
                  details={"status": status})
