"""Metrics and health: the HTTP server on an ephemeral port is scraped and parsed as Prometheus would; /readyz
flips between 200 and 503 as the daemon's reported state changes; /healthz answers while the loop runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from notifykit import notice
from prometheus_client.parser import text_string_to_metric_families

from onguard.ops.health import HealthServer, Readiness, ReadinessRules, assess
from onguard.ops.metrics import HealthSnapshot, Metrics, PendingResult, Stage, endpoint_label
from onguard.ops.notify import Delivered, DeliveryFailure
from onguard.ops.settings import MetricsSettings

GUARDIAN = "0x00000000000000000000000000000000000000aa"
SETTINGS = MetricsSettings(enabled=True, host="127.0.0.1", port=0, lag_budget=3, stale_after=60.0,
                           require_preflight=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serve(metrics: Metrics, server: HealthServer,
          visit: Callable[[aiohttp.ClientSession, str], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                return await visit(session, f"http://127.0.0.1:{server.port}")
        finally:
            await server.stop()
    return asyncio.run(scenario())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_scrape_of_metrics_shows_what_the_daemon_reported() -> None:
    metrics = Metrics()
    metrics.chain_polled(105)
    for number in (100, 101, 102):
        metrics.block_handled(number, lag=105 - number)
    metrics.pending_judged(PendingResult.JUDGED)
    metrics.pending_judged(PendingResult.JUDGED)
    metrics.pending_judged(PendingResult.TIMED_OUT)
    for policy in ("vault-drain", "vault-drain", "oracle-deviation"):
        metrics.policy_evaluated(policy)
    metrics.policy_failed("oracle-deviation")
    metrics.policy_tripped("vault-drain", "critical")
    metrics.stage(Stage.DECIDED, 0.0008)
    metrics.stage(Stage.SIGNED, 0.002)
    metrics.stage(Stage.BROADCAST, 0.004)
    metrics.stage(Stage.INCLUDED, 11.5)
    metrics.response_outcome("pause-vault", "mined")
    metrics.guardian_balance(GUARDIAN, 25 * 10**16, floor_wei=10**17)
    metrics.endpoint_health("https://eth-mainnet.example.com/v2/SECRETAPIKEY123", up=False)
    metrics.endpoint_health("private-builder", up=True)
    metrics.notification_failed(DeliveryFailure(notice=notice(), channel="pager", attempts=5, reason="HTTP 503"))
    metrics.notification_delivered(Delivered(notice=notice(), channel="team", attempts=1))
    server = HealthServer(metrics, lambda: assess(metrics.snapshot(), ReadinessRules(3, 60.0, False, False)))

    async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[str, str]:
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
            return response.headers["Content-Type"], await response.text()

    content_type, text = serve(metrics, server, scrape)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "SECRETAPIKEY123" not in text
    got = samples(text)
    assert got[("onguard_handled_block", ())] == 102
    assert got[("onguard_head_block", ())] == 105
    assert got[("onguard_head_lag_blocks", ())] == 3
    assert got[("onguard_blocks_processed_total", ())] == 3
    assert got[("onguard_pending_transactions_total", (("result", "judged"),))] == 2
    assert got[("onguard_pending_transactions_total", (("result", "timed_out"),))] == 1
    assert got[("onguard_policy_evaluations_total", (("policy", "vault-drain"),))] == 2
    assert got[("onguard_policy_failures_total", (("policy", "oracle-deviation"),))] == 1
    assert got[("onguard_policy_trips_total", (("policy", "vault-drain"), ("severity", "critical")))] == 1
    assert got[("onguard_stage_seconds_count", (("stage", "included"),))] == 1
    assert got[("onguard_stage_seconds_bucket", (("le", "0.001"), ("stage", "decided")))] == 1
    assert got[("onguard_stage_seconds_bucket", (("le", "10.0"), ("stage", "included")))] == 0
    assert got[("onguard_responses_total", (("action", "pause-vault"), ("outcome", "mined")))] == 1
    assert got[("onguard_guardian_balance_ether", (("address", GUARDIAN),))] == 0.25
    assert got[("onguard_guardian_balance_floor_ether", (("address", GUARDIAN),))] == 0.1
    assert got[("onguard_endpoint_up", (("endpoint", "https://eth-mainnet.example.com"),))] == 0
    assert got[("onguard_endpoint_up", (("endpoint", "private-builder"),))] == 1
    assert got[("onguard_notification_failures_total", (("channel", "pager"),))] == 1
    assert got[("onguard_notifications_delivered_total", (("channel", "team"),))] == 1
    assert got[("onguard_ready", ())] == 1
    assert got[("onguard_info", (("version", "0.1.0"),))] == 1


def test_readyz_answers_200_only_while_every_check_holds() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    rules = ReadinessRules.from_settings(SETTINGS, mempool_required=True)
    server = HealthServer(metrics, lambda: assess(metrics.snapshot(), rules), port=0)

    async def visit(session: aiohttp.ClientSession, base: str) -> list[tuple[int, dict]]:
        seen = []

        async def ready() -> None:
            async with session.get(f"{base}/readyz") as response:
                seen.append((response.status, await response.json()))
            async with session.get(f"{base}/healthz") as alive:
                assert alive.status == 200 and (await alive.json())["alive"] is True

        await ready()                                    # starting: nothing reported yet
        metrics.block_handled(100, lag=0)
        metrics.mempool_live(True)
        metrics.preflight(True)
        await ready()                                    # all green
        metrics.block_handled(101, lag=10)
        await ready()                                    # fell behind
        metrics.block_handled(111, lag=0)
        metrics.mempool_live(False)
        await ready()                                    # mempool lost
        metrics.mempool_live(True)
        metrics.preflight(False, "the guardian key is no longer registered in the module")
        await ready()                                    # preflight red
        metrics.preflight(True)
        clock.now += 61
        await ready()                                    # the chain went silent
        metrics.chain_polled(111)
        await ready()                                    # back
        return seen

    seen = serve(metrics, server, visit)
    assert [status for status, _ in seen] == [503, 200, 503, 503, 503, 503, 200]
    assert seen[0][1]["reasons"] == ["the chain has not answered yet (starting up?)", "no block handled yet",
                                     "the mempool source is configured but not connected",
                                     "no preflight has run yet"]
    assert seen[1][1] == {"ready": True, "reasons": [], "checks": {
        "chain_answering": True, "within_lag_budget": True, "mempool_live": True, "preflight_ok": True}}
    assert seen[2][1]["reasons"] == ["10 blocks behind the head (budget 3)"]
    assert seen[3][1]["reasons"] == ["the mempool source is configured but not connected"]
    assert seen[4][1]["reasons"] == ["the last preflight failed: the guardian key is no longer registered in the "
                                     "module"]
    assert seen[5][1]["reasons"] == ["no answer from the chain for 61s (budget 60s)"]


def test_a_readiness_check_that_raises_means_not_ready_and_says_so() -> None:
    def broken() -> Readiness:
        raise RuntimeError("database locked")

    metrics = Metrics()
    server = HealthServer(metrics, broken)

    async def visit(session: aiohttp.ClientSession, base: str) -> tuple[int, dict, str]:
        async with session.get(f"{base}/readyz") as response, session.get(f"{base}/metrics") as scrape:
            return response.status, await response.json(), await scrape.text()

    status, body, text = serve(metrics, server, visit)
    assert status == 503 and body["reasons"] == ["the readiness check failed: RuntimeError"]
    assert samples(text)[("onguard_ready", ())] == 0


@pytest.mark.parametrize("snapshot, rules, ready", [
    (HealthSnapshot(110, 110, 0, 1.0, None, None, None, ()), ReadinessRules(0, 60, False, False), True),
    (HealthSnapshot(110, 107, 3, 1.0, None, True, None, ()), ReadinessRules(3, 60, False, True), True),
    (HealthSnapshot(110, 106, 4, 1.0, None, True, None, ()), ReadinessRules(3, 60, False, True), False),
    (HealthSnapshot(110, 110, 0, 60.0, True, True, None, ()), ReadinessRules(3, 60, True, True), True),
    (HealthSnapshot(110, 110, 0, 60.5, True, True, None, ()), ReadinessRules(3, 60, True, True), False),
    (HealthSnapshot(110, 110, 0, 1.0, None, True, None, ()), ReadinessRules(3, 60, True, True), False),
])
def test_assess_judges_each_rule_at_its_boundary(snapshot: HealthSnapshot, rules: ReadinessRules,
                                                 ready: bool) -> None:
    verdict = assess(snapshot, rules)
    assert verdict.ready is ready
    assert (verdict.reasons == ()) is ready


@pytest.mark.parametrize("endpoint, label", [
    ("https://eth-mainnet.g.example.com/v2/KEY", "https://eth-mainnet.g.example.com"),
    ("wss://user:pass@node.example.com:8546/ws?token=abc", "wss://node.example.com:8546"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("flashbots-protect", "flashbots-protect"),
])
def test_endpoint_labels_never_carry_paths_credentials_or_queries(endpoint: str, label: str) -> None:
    assert endpoint_label(endpoint) == label


def test_a_scraper_asking_for_openmetrics_gets_openmetrics() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    metrics = Metrics()
    metrics.policy_tripped("vault-drain", "high")
    server = HealthServer(metrics, lambda: assess(metrics.snapshot(), ReadinessRules(3, 60.0, False, False)))

    async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[str, str]:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with session.get(f"{base}/metrics", headers=headers) as response:
            return response.headers["Content-Type"], await response.text()

    content_type, text = serve(metrics, server, scrape)
    assert content_type.startswith("application/openmetrics-text")
    trips = {family.name: family for family in openmetrics_families(text)}["onguard_policy_trips"]
    assert [(s.labels, s.value) for s in trips.samples if s.name == "onguard_policy_trips_total"] == [
        ({"policy": "vault-drain", "severity": "high"}, 1.0)]


def test_declared_series_exist_at_zero_before_anything_happens() -> None:
    """So that Prometheus' increase() sees the first trip, failed response or failed notification."""
    metrics = Metrics()
    metrics.declare(policies={"vault-drain": "critical"}, actions=["pause-vault"], channels=["pager"])
    server = HealthServer(metrics, lambda: assess(metrics.snapshot(), ReadinessRules(3, 60.0, False, False)))

    async def scrape(session: aiohttp.ClientSession, base: str) -> str:
        async with session.get(f"{base}/metrics") as response:
            return await response.text()

    got = samples(serve(metrics, server, scrape))
    assert got[("onguard_policy_trips_total", (("policy", "vault-drain"), ("severity", "critical")))] == 0
    assert got[("onguard_responses_total", (("action", "pause-vault"), ("outcome", "failed")))] == 0
    assert got[("onguard_notification_failures_total", (("channel", "pager"),))] == 0
    assert got[("onguard_stage_seconds_count", (("stage", "included"),))] == 0


def test_the_readiness_watch_pages_after_the_grace_once_and_resolves_when_ready_again() -> None:
    from onguard.ops.health import ReadinessWatch
    from onguard.ops.messages import pagerduty_action
    from onguard.ops.notice import Notice, NoticeKind

    clock = Clock()
    metrics = Metrics(clock=clock)
    rules = ReadinessRules(lag_budget=3, stale_after=600.0, mempool_required=False, require_preflight=False)
    published: list[Notice] = []
    watch = ReadinessWatch(lambda: assess(metrics.snapshot(), rules), published.append, chain_id=1, grace=120.0,
                           clock=clock)

    metrics.block_handled(100, lag=0)
    assert watch.check().ready
    metrics.block_handled(101, lag=9)
    for _ in range(3):                     # behind for 0s, 60s, 119s: within the grace, nobody is paged
        watch.check()
        clock.now += 59.5
    assert published == []
    clock.now += 2
    watch.check()
    watch.check()                          # still behind: no second page
    metrics.block_handled(110, lag=0)
    watch.check()
    watch.check()
    assert [(n.kind, n.status, pagerduty_action(n)) for n in published] == [
        (NoticeKind.CHAIN_HEALTH, "open", "trigger"), (NoticeKind.CHAIN_HEALTH, "resolved", "resolve")]
    assert published[0].title == "not ready: 9 blocks behind the head (budget 3)"
    assert published[0].incident_key == published[1].incident_key == "onguard/1/chain_health/daemon"


def test_a_replicas_health_alert_names_it_and_each_episode_has_its_own_ids() -> None:
    from onguard.ops.health import ReadinessWatch
    from onguard.ops.notice import Notice

    clock = Clock()
    metrics = Metrics(clock=clock)
    rules = ReadinessRules(lag_budget=3, stale_after=600.0, mempool_required=False, require_preflight=False)
    published: list[Notice] = []
    watch = ReadinessWatch(lambda: assess(metrics.snapshot(), rules), published.append, chain_id=1, grace=0.0,
                           clock=clock, replica="eu-1")
    for block in (100, 200):  # two episodes: behind, then caught up
        metrics.block_handled(block, lag=9)
        watch.check()
        metrics.block_handled(block + 9, lag=0)
        watch.check()
    assert [n.status for n in published] == ["open", "resolved", "open", "resolved"]
    assert {n.details["replica"] for n in published} == {"eu-1"}
    assert len({n.id for n in published}) == 4


def test_each_replicas_health_page_is_its_own_so_one_resolving_never_closes_anothers() -> None:
    """Two replicas behind the head, then one catches up: its "resolved" carries its own dedup key, so the other's
    page stays open (with one shared key, PagerDuty closed it while that replica was still behind)."""
    from onguard.ops.health import ReadinessWatch
    from onguard.ops.messages import pagerduty_event
    from onguard.ops.notice import Notice

    clock = Clock()
    rules = ReadinessRules(lag_budget=3, stale_after=600.0, mempool_required=False, require_preflight=False)
    published: list[Notice] = []
    watches = {}
    for name in ("eu-1", "us-1"):
        metrics = Metrics(clock=clock)
        watch = ReadinessWatch(lambda m=metrics: assess(m.snapshot(), rules), published.append, chain_id=1,
                               grace=0.0, clock=clock, replica=name)
        watches[name] = (metrics, watch)
        metrics.block_handled(100, lag=9)
        watch.check()
    metrics, watch = watches["eu-1"]
    metrics.block_handled(109, lag=0)
    watch.check()
    opened = {n.details["replica"]: n.incident_key for n in published if n.status == "open"}
    (resolved,) = [n for n in published if n.status == "resolved"]
    assert opened == {"eu-1": "onguard/1/chain_health/daemon/eu-1", "us-1": "onguard/1/chain_health/daemon/us-1"}
    assert resolved.incident_key == opened["eu-1"] != opened["us-1"]
    assert pagerduty_event(resolved, routing_key="k", source="s")["dedup_key"] == opened["eu-1"]
