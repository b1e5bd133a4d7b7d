"""Benchmark: does notifying delay the pause? bench/reaction.py's measurement (a tripping block on the node → the
pause accepted by the node) with notifications off, on, and on with deliveries held while a response is under way,
in interleaved trials on one real Anvil chain.

Run: .venv/bin/python bench/notify_reaction.py [--trials 90]
"On": every decision publishes an incident_opened notice to four channels (signed webhook, Slack, Discord,
PagerDuty format) served by a local receiver in another thread, as a remote service would be. The notice is
published inside the arbiter's decision, BEFORE the response is spawned: the least favourable place for the pause.
"Held": the same, with Notifier(hold_while=<the guardian has responses under way>). "Daemon": the daemon's own
wiring, from a [notifications] section in onguard.toml (notices published after the responses are spawned,
deliveries held while a response is being signed and sent). Each notifying trial checks that the four deliveries
really happened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from web3 import Web3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from chain.helpers import ALICE, drain_slice, is_paused, tokens  # noqa: E402
from receivers import HttpReceiver, ThreadedHttpReceiver  # noqa: E402

from onguard.chain.anvil import start_anvil  # noqa: E402
from onguard.chain.keys import load_guardian_account  # noqa: E402
from onguard.config import load_config  # noqa: E402
from onguard.demo.world import Roles, World, build_world, dev_account, write_config  # noqa: E402
from onguard.errors import ConfigError  # noqa: E402
from onguard.incidents.store import ResponseStatus  # noqa: E402
from onguard.log import configure_logging  # noqa: E402
from onguard.ops.notice import Notice, NoticeKind  # noqa: E402
from onguard.ops.service import Operations  # noqa: E402
from onguard.ops.settings import MetricsSettings, parse_notifications  # noqa: E402
from onguard.runtime import Guardian  # noqa: E402
from onguard.tomlfields import Table  # noqa: E402

KEY_ENV = "ONGUARD_BENCH_GUARDIAN_KEY"
SECRET = "bench-secret"
CHANNELS = {"hook": "/webhook", "slack": "/slack", "discord": "/discord", "pager": "/pagerduty"}
NOTIFICATIONS = """
[notifications]
[notifications.channels.hook]
type = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"
[notifications.channels.slack]
type = "slack"
url_env = "SLACK_URL"
[notifications.channels.discord]
type = "discord"
url_env = "DISCORD_URL"
[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "PD_KEY"
events_url = "EVENTS_URL"
[[notifications.routes]]
channels = ["hook", "slack", "discord", "pager"]
"""
METRICS_OFF = MetricsSettings(enabled=False, host="127.0.0.1", port=0, lag_budget=3, stale_after=60.0,
                              require_preflight=False)


def delivered(receiver: HttpReceiver) -> int:
    return sum(len(receiver.requests[path]) for path in CHANNELS.values())


def operations(receiver: HttpReceiver, chain_id: int, hold_while=None) -> Operations:  # type: ignore[no-untyped-def]
    data = tomllib.loads(NOTIFICATIONS.replace("EVENTS_URL", receiver.url("/pagerduty")))
    settings = parse_notifications(Table(data, file="bench", prefix="", error=ConfigError).table("notifications"))
    environ = {"HOOK_URL": receiver.url("/webhook"), "HOOK_SECRET": SECRET, "SLACK_URL": receiver.url("/slack"),
               "DISCORD_URL": receiver.url("/discord"), "PD_KEY": "bench-routing-key"}
    return Operations.build(settings, METRICS_OFF, chain_id=chain_id, mempool_required=False, environ=environ,
                            hold_while=hold_while)


def publish_on_decision(guardian: Guardian, ops: Operations) -> None:
    decide = guardian.arbiter.decide

    def decide_and_notify(finding):  # type: ignore[no-untyped-def]
        decision = decide(finding)
        if decision.opened:
            ops.publish(Notice(kind=NoticeKind.INCIDENT_OPENED, severity=finding.policy.severity,
                               chain_id=guardian.config.chain.chain_id, policy_id=finding.policy.id,
                               incident_id=decision.incident.id, title=finding.summary, summary=finding.summary,
                               details=dict(finding.evidence)))
        return decision

    guardian.arbiter.decide = decide_and_notify  # type: ignore[method-assign]


def wire_into_config(config_path: Path, receiver: HttpReceiver) -> None:
    """The daemon's own wiring: the [notifications] section in onguard.toml, secrets in the environment."""
    config_path.write_text(config_path.read_text() +
                           NOTIFICATIONS.replace("EVENTS_URL", receiver.url("/pagerduty")))
    os.environ.update({"HOOK_URL": receiver.url("/webhook"), "HOOK_SECRET": SECRET,
                       "SLACK_URL": receiver.url("/slack"), "DISCORD_URL": receiver.url("/discord"),
                       "PD_KEY": "bench-routing-key"})


async def one_trial(config_path: Path, w3: Web3, world: World, mode: str, receiver: HttpReceiver) -> float:
    if mode == "daemon":
        wire_into_config(config_path, receiver)
    config = load_config(config_path)
    guardian = Guardian(config, load_guardian_account(config.guardian_key))
    ops = None
    if mode in ("on", "held"):
        hold = (lambda: bool(guardian._responses)) if mode == "held" else None
        ops = operations(receiver, config.chain.chain_id, hold)
    try:
        await guardian.start()
        if mode == "daemon":
            await guardian.ops.start(policies=guardian.engine.severities, actions=list(config.actions))
            ops = guardian.ops.service
        elif ops is not None:
            await ops.start()
            publish_on_decision(guardian, ops)
        await guardian.step()
        for _ in range(3):
            drain_slice(w3, world, ALICE, tokens(100_000))
        before = delivered(receiver)
        started = time.perf_counter()
        decisions = await guardian.step()
        incident_id = decisions[0].incident.id
        while not any(r.status != ResponseStatus.CLAIMED for r in guardian.store.responses(incident_id)):
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        await guardian.drain_responses()
        assert is_paused(w3, world), "the trial ended without a pause"
        if ops is not None:
            await ops.stop()
            assert ops.notifier is not None and not ops.notifier.failures, list(ops.notifier.failures)
            # The daemon's wiring also announces the response's outcome and the status change: at least one each.
            wanted = (delivered(receiver) - before >= len(CHANNELS)) if mode == "daemon" else \
                (delivered(receiver) - before == len(CHANNELS))
            assert wanted, "the notices were not all delivered"
        return elapsed
    finally:
        await guardian.close()


def summary(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{label}: {len(ms)} trials, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120, help="in all, a quarter in each mode")
    args = parser.parse_args()
    configure_logging("console", "error")
    os.environ[KEY_ENV] = dev_account(Roles.GUARDIAN).key.to_0x_hex()
    modes = ("off", "on", "held", "daemon")
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    with start_anvil() as node, tempfile.TemporaryDirectory() as folder, ThreadedHttpReceiver(SECRET) as receiver:
        world = build_world(node.rpc_url)
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        for trial in range(args.trials):
            mode = modes[trial % len(modes)]
            snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
            config_path = write_config(world, Path(folder) / str(trial), key_env=KEY_ENV)
            samples[mode].append(asyncio.run(one_trial(config_path, w3, world, mode, receiver)))
            w3.provider.make_request("evm_revert", [snapshot])
            if (trial + 1) % 30 == 0:
                print(f"  {trial + 1}/{args.trials} trials", file=sys.stderr)
    print("block available -> pause accepted by the node")
    print(summary("  notifications off ", samples["off"]))
    print(summary("  notifications on  ", samples["on"]))
    print(summary("  on, held          ", samples["held"]))
    print(summary("  the daemon's own  ", samples["daemon"]))


if __name__ == "__main__":
    main()
