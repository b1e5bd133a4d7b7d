"""The daemon's operations wiring on a real Anvil fork: a drain trips the policy, the pause is mined, and only then
do the people hear of it — a signed webhook, a PagerDuty Events v2 trigger and an e-mail to real local receivers —
while the metrics endpoint shows the trip, the evaluations and every stage's latency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from onguard.store.audit import AuditLog
from onguard.incidents.store import Incident, IncidentStatus
from onguard.ops.channels import sign
from tests.unit.receivers import HttpReceiver, SmtpReceiver

from .helpers import (
    ALICE,
    LIMIT,
    drain_slice,
    following_the_mempool,
    is_paused,
    make_guardian,
    send_drain,
    tokens,
    until,
)
from .test_preemption import preemption_config

pytestmark = pytest.mark.chain

SECRET = "wiring-test-secret"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
SMTP_PASSWORD = "smtp-pass-for-the-wiring-test"


def notifications_toml(smtp_port: int) -> str:
    return f"""
[notifications]
max_attempts = 3
first_retry = "10ms"
max_retry = "20ms"

[notifications.channels.soc]
type = "webhook"
url_env = "WIRING_HOOK_URL"
secret_env = "WIRING_HOOK_SECRET"

[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "WIRING_PD_KEY"
events_url = "EVENTS_URL"
source = "guardian-test"

[notifications.channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
username = "onguard"
password_env = "WIRING_SMTP_PASSWORD"
from = "onguard@example.com"
to = ["oncall@example.com"]

[[notifications.routes]]
channels = ["soc", "pager", "mail"]
severities = ["critical", "high"]

[metrics]
port = 0
"""


class PauseCheckingReceiver(HttpReceiver):
    """Notes, for every request, whether the vault was already paused on chain when it arrived."""

    def __init__(self, paused_now: Callable[[], bool]) -> None:
        super().__init__(secret=SECRET)
        self.paused_on_arrival: list[tuple[str, bool]] = []
        self._paused_now = paused_now

    async def _handle(self, request: web.Request) -> web.Response:
        self.paused_on_arrival.append((request.path, await asyncio.to_thread(self._paused_now)))
        return await super()._handle(request)


def documents(receiver: HttpReceiver, path: str, kind: str) -> list[dict]:
    return [r.json() for r in receiver.requests[path] if r.json().get("kind") == kind
            or r.json().get("payload", {}).get("class") == kind]


def test_an_attack_is_paused_first_then_people_are_told_and_the_metrics_show_it(
        chain, guardian_config: Path, monkeypatch) -> None:
    w3, world = chain.w3, chain.world

    async def scenario(mail: SmtpReceiver) -> tuple[list[Incident], list[str], str, PauseCheckingReceiver]:
        async with PauseCheckingReceiver(lambda: is_paused(w3, world)) as receiver:
            guardian_config.write_text(guardian_config.read_text() + notifications_toml(mail.port).replace(
                "EVENTS_URL", receiver.url("/pagerduty")))
            for name, value in {"WIRING_HOOK_URL": receiver.url("/webhook"), "WIRING_HOOK_SECRET": SECRET,
                                "WIRING_PD_KEY": ROUTING_KEY, "WIRING_SMTP_PASSWORD": SMTP_PASSWORD}.items():
                monkeypatch.setenv(name, value)
            guardian = make_guardian(guardian_config)
            stop = asyncio.Event()
            daemon = asyncio.create_task(guardian.run(stop))
            try:
                await until(guardian.ready.is_set, "the daemon is ready", task=daemon)
                await until(lambda: guardian.source.last_committed is not None, "the daemon handles blocks")
                for _ in range(3):
                    drain_slice(w3, world, ALICE, tokens(100_000))
                await until(lambda: any(i.status == IncidentStatus.SAFE for i in guardian.store.incidents()),
                            "the incident reaches the safe state")
                await until(lambda: documents(receiver, "/webhook", "incident_opened")
                            and documents(receiver, "/pagerduty", "incident_opened") and mail.messages,
                            "the people are told")
                await until(lambda: documents(receiver, "/webhook", "response_outcome"),
                            "the response's outcome is told")
                port = guardian.ops.service.server.port
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                        scrape = await answer.text()
                incidents = guardian.store.incidents()
                audited = [entry.kind for entry in AuditLog(guardian.store.database).entries()]
            finally:
                stop.set()
                await daemon
                await guardian.close()
            return incidents, audited, scrape, receiver

    with SmtpReceiver("onguard", SMTP_PASSWORD) as mail:
        incidents, audited, scrape, receiver = asyncio.run(scenario(mail))
        messages = list(mail.messages)

    assert is_paused(w3, world)
    [incident] = incidents
    # Every notice arrived once the pause was on chain: the people never held up the pause.
    assert receiver.paused_on_arrival and all(paused for _, paused in receiver.paused_on_arrival)

    assert receiver.rejected == []
    [opened] = [r for r in receiver.requests["/webhook"] if r.json()["kind"] == "incident_opened"]
    assert opened.headers["X-Onguard-Signature"] == sign(opened.body, SECRET)
    body = opened.json()
    assert (body["incident_id"], body["policy_id"], body["severity"]) == (incident.id, "vault-drain", "critical")
    assert body["details"]["actions"] == ["pause_vault"]
    [outcome] = documents(receiver, "/webhook", "response_outcome")
    assert outcome["details"]["outcome"] == "mined" and outcome["details"]["action"] == "pause_vault"

    trigger = documents(receiver, "/pagerduty", "incident_opened")[0]
    assert (trigger["routing_key"], trigger["event_action"], trigger["dedup_key"]) == (
        ROUTING_KEY, "trigger", f"onguard/{world.chain_id}/incident/{incident.id}")

    [(sender, recipients, message)] = [m for m in messages if "Incident opened" in m[2]["Subject"]]
    assert sender == "onguard@example.com" and recipients == ["oncall@example.com"]
    assert incident.title in message["Subject"]

    # Each finding (the opening, then each block the drain stays in the window) is one trip, one decision.
    trips = audited.count("decision")
    assert trips >= 1
    assert f'onguard_policy_trips_total{{policy="vault-drain",severity="critical"}} {trips:.1f}' in scrape
    assert f'onguard_stage_seconds_count{{stage="decided"}} {trips:.1f}' in scrape
    assert 'onguard_responses_total{action="pause_vault",outcome="mined"} 1.0' in scrape
    for stage in ("signed", "broadcast", "included"):  # one pause: one of each
        assert f'onguard_stage_seconds_count{{stage="{stage}"}} 1.0' in scrape, stage
    evaluations = [line for line in scrape.splitlines()
                   if line.startswith('onguard_policy_evaluations_total{policy="vault-drain"}')]
    assert evaluations and float(evaluations[0].split()[-1]) > 0
    assert "onguard_preflight_ok 1.0" in scrape
    balance = [line for line in scrape.splitlines() if line.startswith("onguard_guardian_balance_ether{")]
    floor = [line for line in scrape.splitlines() if line.startswith("onguard_guardian_balance_floor_ether{")]
    assert balance and floor and float(balance[0].split()[-1]) > float(floor[0].split()[-1]) > 0
    assert "decision" in audited and "notification-failed" not in audited  # every notice arrived


def test_the_mempool_path_counts_judged_transactions_and_times_every_stage(chain, guardian_config: Path,
                                                                            tmp_path: Path) -> None:
    """A pending drain with mining held: the guardian judges it, pauses, and the metrics show the pending
    transaction judged, the trip, and one observation of each stage, seen → decided → … → included."""
    w3, world = chain.w3, chain.world
    config_path = preemption_config(chain, tmp_path)

    async def scenario() -> dict[str, float]:
        guardian = make_guardian(config_path)
        try:
            await guardian.start()
            await guardian.step()
            w3.provider.make_request("evm_setAutomine", [False])
            async with following_the_mempool(guardian):
                await asyncio.to_thread(send_drain, w3, world, ALICE)
                await until(lambda: any(e.kind == "response-broadcast" for i in guardian.store.incidents()
                                        for e in guardian.store.timeline(i.id)), "the pause is broadcast")
                w3.provider.make_request("evm_mine", [])
                await guardian.drain_responses(timeout=LIMIT)
            registry = guardian.ops.metrics.registry
            sample = registry.get_sample_value
            return {
                "judged": sample("onguard_pending_transactions_total", {"result": "judged"}) or 0,
                "trips": sample("onguard_policy_trips_total", {"policy": "vault-cash-guard",
                                                               "severity": "critical"}) or 0,
                **{stage: sample("onguard_stage_seconds_count", {"stage": stage}) or 0
                   for stage in ("decided", "signed", "broadcast", "included")},
                "mined": sample("onguard_responses_total", {"action": "pause_vault", "outcome": "mined"}) or 0,
            }
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    counted = asyncio.run(scenario())
    assert counted["judged"] >= 1 and counted["trips"] == 1 and counted["mined"] == 1
    assert (counted["decided"], counted["signed"], counted["broadcast"], counted["included"]) == (1, 1, 1, 1)
