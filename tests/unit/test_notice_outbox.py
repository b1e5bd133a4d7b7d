"""The notification outbox on both engines: one notice per id however many writers record it, deliveries pending
per channel in the order recorded, each finished once; and the DurableNotifier over it, against a real receiver:
only the leader delivers, a new leader delivers what the old one left, and a notice recorded but not delivered
before a crash is delivered, under the same id, when the daemon starts again."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from notifykit import notice, notification_settings
from receivers import BlackHole, HttpReceiver

from onguard.incidents.store import IncidentStore
from onguard.ops.notice import NoticeKind, event_id, notice_document, notice_from_document
from onguard.ops.notify import DeliveryFailure
from onguard.ops.outbox import DurableNotifier, NoticeOutbox
from onguard.store.database import Database
from onguard.store.outbox import DeliveryStatus, Outbox
from onguard.store.settings import DatabaseSettings
from tests.unit.test_state_database import in_threads

Location = Path | DatabaseSettings
SECRET = "hmac-secret-for-tests"
HOOKS = """
[notifications]
max_attempts = 2
first_retry = "10ms"
max_retry = "20ms"
[notifications.channels.soc]
type = "webhook"
url_env = "SOC_URL"
secret_env = "SECRET"
[notifications.channels.ops]
type = "webhook"
url_env = "OPS_URL"
secret_env = "SECRET"
[[notifications.routes]]
channels = ["soc", "ops"]
"""


@pytest.fixture
def stores(state_location: Location) -> Iterator[Callable[[], IncidentStore]]:
    """Opens as many stores (connections: replicas) on one database as the test asks for; closes them after."""
    opened: list[IncidentStore] = []

    def open_one() -> IncidentStore:
        opened.append(IncidentStore(state_location))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def record(db: Database, notice_id: str, *, chain_id: int = 1, channels: tuple[str, ...] = ("soc", "ops"),
           by: str = "r1") -> bool:
    return Outbox(db).add(notice_id=notice_id, chain_id=chain_id, kind="incident_opened", incident_id=7,
                          document=json.dumps({"id": notice_id}), channels=channels, by=by)


# ---- the repository ----


def test_three_replicas_recording_one_event_store_one_notice(stores: Callable[[], IncidentStore]) -> None:
    replicas = [stores() for _ in range(3)]
    new = in_threads(3, lambda n: record(replicas[n].database, "n1", by=f"r{n + 1}"))
    assert sorted(new) == [False, False, True]
    db = replicas[0].database
    assert [tuple(row) for row in db.fetch_all("SELECT notice_id FROM notices")] == [("n1",)]
    assert [(d.channel, d.status) for d in Outbox(db).deliveries("n1")] == [("ops", "pending"), ("soc", "pending")]
    assert not record(db, "n1", channels=("soc", "mail"), by="r2")  # a route only r2 has: its channel is added
    assert [d.channel for d in Outbox(db).deliveries("n1")] == ["mail", "ops", "soc"]


def test_pending_deliveries_come_per_channel_in_the_order_recorded_and_finish_once(
        stores: Callable[[], IncidentStore]) -> None:
    db = stores().database
    outbox = Outbox(db)
    for notice_id in ("a", "b", "c"):
        record(db, notice_id)
    record(db, "other-chain", chain_id=2)
    assert [p.notice_id for p in outbox.pending(1, ["soc"], 10)] == ["a", "b", "c"]
    assert [p.notice_id for p in outbox.pending(1, ["soc"], 2)] == ["a", "b"]
    assert outbox.finish("a", "soc", DeliveryStatus.DELIVERED, attempts=1, by="r1")
    assert not outbox.finish("a", "soc", DeliveryStatus.FAILED, attempts=3, by="r2", reason="late")  # finished
    assert outbox.finish("b", "soc", DeliveryStatus.FAILED, attempts=3, by="r2", reason="HTTP 404")
    assert [p.notice_id for p in outbox.pending(1, ["soc"], 10)] == ["c"]
    assert [p.notice_id for p in outbox.pending(1, ["ops"], 10)] == ["a", "b", "c"]  # each channel its own
    assert [p.notice_id for p in outbox.pending(2, ["soc", "ops"], 10)] == ["other-chain", "other-chain"]
    [a_soc] = [d for d in outbox.deliveries("a") if d.channel == "soc"]
    assert (a_soc.status, a_soc.attempts, a_soc.delivered_by) == (DeliveryStatus.DELIVERED, 1, "r1")
    [b_soc] = [d for d in outbox.deliveries("b") if d.channel == "soc"]
    assert (b_soc.status, b_soc.reason) == (DeliveryStatus.FAILED, "HTTP 404")
    assert outbox.count_pending(1) == 4


def test_a_notice_comes_back_from_its_document_as_every_channel_renders_it() -> None:
    sent = notice(NoticeKind.RESPONSE_OUTCOME, tx_hash=b"\x01" * 32, wei=10**30, share=0.25)
    back = notice_from_document(json.loads(json.dumps(notice_document(sent))))
    assert back.id == sent.id and back.kind == sent.kind and back.severity == sent.severity
    assert notice_document(back) == notice_document(sent)


def test_event_ids_are_the_same_for_one_event_and_differ_for_any_other() -> None:
    one = event_id(1, NoticeKind.INCIDENT_OPENED, 7)
    assert one == event_id(1, NoticeKind.INCIDENT_OPENED, 7) and len(one) == 32
    assert len({one, event_id(2, NoticeKind.INCIDENT_OPENED, 7), event_id(1, NoticeKind.INCIDENT_STATUS, 7),
                event_id(1, NoticeKind.INCIDENT_OPENED, 8), event_id(1, NoticeKind.INCIDENT_OPENED, 7, "x")}) == 5


# ---- the notifier over it ----


def durable(store: IncidentStore, environ: dict[str, str], *, replica: str, leads: Callable[[], bool],
            failures: list[DeliveryFailure] | None = None) -> DurableNotifier:
    return DurableNotifier.from_settings(
        notification_settings(HOOKS), environ={"SECRET": SECRET, **environ}, outbox=NoticeOutbox(store, 1, replica),
        leads=leads, poll_every=0.05, on_failure=[failures.append] if failures is not None else [])


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


def statuses(store: IncidentStore, notice_id: str) -> dict[str, tuple[str, str | None]]:
    return {d.channel: (d.status.value, d.delivered_by) for d in Outbox(store.database).deliveries(notice_id)}


def test_every_replica_records_only_the_leader_delivers_and_a_new_leader_delivers_what_is_left(
        stores: Callable[[], IncidentStore]) -> None:
    first, second = stores(), stores()
    leader = {"r1": True, "r2": False}
    sent = notice(incident_id=7)

    async def scenario() -> HttpReceiver:
        async with HttpReceiver(secret=SECRET) as receiver:
            environ = {"SOC_URL": receiver.url("/webhook"), "OPS_URL": receiver.url("/webhook/ops")}
            r1 = durable(first, environ, replica="r1", leads=lambda: leader["r1"])
            r2 = durable(second, environ, replica="r2", leads=lambda: leader["r2"])
            leader["r1"] = False  # r1 leads no longer (its lease lapsed) before anything is delivered
            for notifier in (r1, r2):
                notifier.start()
                notifier.publish(sent)  # both replicas saw the event
                assert statuses(first, sent.id) == {}  # publishing did no I/O: recorded once the caller yields
            await until(lambda: len(statuses(first, sent.id)) == 2, "the notice is recorded")
            await r1.flush()
            await r2.flush()
            assert receiver.requests == {}  # nobody leads: recorded, delivered by no one
            leader["r2"] = True  # r2 takes the lease over
            await until(lambda: statuses(first, sent.id) == {"soc": ("delivered", "r2"), "ops": ("delivered", "r2")},
                        "the new leader delivered what was left")
            await r1.stop()
            await r2.stop()
            return receiver

    receiver = asyncio.run(scenario())
    assert [r.json()["id"] for r in receiver.requests["/webhook"]] == [sent.id]
    assert [r.headers["X-Onguard-Notice"] for r in receiver.requests["/webhook/ops"]] == [sent.id]
    assert first.database.scalar("SELECT COUNT(*) FROM notices") == 1


def test_a_failed_delivery_is_marked_failed_in_the_outbox_and_still_reaches_the_failure_hooks(
        stores: Callable[[], IncidentStore]) -> None:
    store = stores()
    failures: list[DeliveryFailure] = []
    sent = notice(incident_id=3)

    async def scenario() -> None:
        async with HttpReceiver(secret=SECRET) as receiver:
            notifier = durable(store, {"SOC_URL": receiver.url("/gone"), "OPS_URL": receiver.url("/webhook")},
                               replica="solo", leads=lambda: True, failures=failures)
            notifier.start()
            notifier.publish(sent)
            await until(lambda: sorted(statuses(store, sent.id).values()) == [("delivered", "solo"),
                                                                             ("failed", "solo")], "both finished")
            await notifier.stop()

    asyncio.run(scenario())
    [failure] = failures
    assert (failure.channel, failure.notice.id, failure.reason) == ("soc", sent.id, "HTTP 404: no_service")
    [soc] = [d for d in Outbox(store.database).deliveries(sent.id) if d.channel == "soc"]
    assert (soc.attempts, soc.reason) == (1, "HTTP 404: no_service")


def test_a_notice_not_delivered_before_a_crash_is_delivered_after_the_restart(tmp_path: Path) -> None:
    """One daemon on SQLite: the notice is recorded, its delivery hangs, the process ends without stopping its
    notifier (the loop is torn down, as a crash leaves it); a new daemon on the same file delivers it."""
    path = tmp_path / "state.db"
    sent = notice(incident_id=9)

    async def crashes() -> None:
        store = IncidentStore(path)
        async with BlackHole() as hole:
            notifier = durable(store, {"SOC_URL": hole.url("/webhook"), "OPS_URL": hole.url("/ops")},
                               replica="host-1", leads=lambda: True)
            notifier.start()
            notifier.publish(sent)
            await hole.connections(2)  # both deliveries are in flight, unanswered: then the crash
        # no notifier.stop(), no store.close(): what is on disk is what a SIGKILL leaves

    asyncio.run(crashes())
    with sqlite3.connect(path) as raw:  # as a crash left it: recorded, not delivered
        assert raw.execute("SELECT status FROM notice_deliveries").fetchall() == [("pending",), ("pending",)]

    async def restarts() -> HttpReceiver:
        store = IncidentStore(path)
        try:
            async with HttpReceiver(secret=SECRET) as receiver:
                notifier = durable(store, {"SOC_URL": receiver.url("/webhook"), "OPS_URL": receiver.url("/ops")},
                                   replica="host-2", leads=lambda: True)
                notifier.start()
                await until(lambda: set(statuses(store, sent.id).values()) == {("delivered", "host-2")},
                            "the restarted daemon delivered it")
                await notifier.stop()
                return receiver
        finally:
            store.close()

    receiver = asyncio.run(restarts())
    assert [r.json()["id"] for r in receiver.requests["/webhook"]] == [sent.id]
    assert [r.json()["title"] for r in receiver.requests["/ops"]] == [sent.title]


def test_a_stop_leaves_what_it_could_not_deliver_pending_for_the_next_start(
        stores: Callable[[], IncidentStore]) -> None:
    store = stores()
    failures: list[DeliveryFailure] = []
    sent = notice(incident_id=4)

    async def scenario() -> None:
        async with BlackHole() as hole:
            notifier = durable(store, {"SOC_URL": hole.url("/a"), "OPS_URL": hole.url("/b")}, replica="solo",
                               leads=lambda: True, failures=failures)
            notifier.start()
            notifier.publish(sent)
            await hole.connections(2)
            await notifier.stop(timeout=0.05)
            notifier.publish(notice(incident_id=5))  # after the stop: recorded at once, for the next start

    asyncio.run(scenario())
    assert failures == []  # not failures: still to be delivered
    assert Outbox(store.database).count_pending(1) == 4


def test_a_stop_ends_whenever_it_meets_the_outbox_pump_waking_up(stores: Callable[[], IncidentStore]) -> None:
    """Recording a notice wakes the outbox pump; stop() cancels it. Whichever turn of the loop the cancellation
    falls on, it must not be lost in the wake-up (with asyncio.wait_for on Python 3.11 it was: stop() hung)."""
    store = stores()

    async def scenario() -> None:
        for turns in range(12):
            notifier = durable(store, {"SOC_URL": "http://127.0.0.1:9/", "OPS_URL": "http://127.0.0.1:9/"},
                               replica="follower", leads=lambda: False)
            notifier.start()
            await asyncio.sleep(0)  # the pump waits for a wake-up
            notifier.publish(notice(incident_id=turns))
            for _ in range(turns):  # let the recording and the wake-up go this many turns of the loop
                await asyncio.sleep(0)
            async with asyncio.timeout(10):
                await notifier.stop()

    asyncio.run(scenario())
    assert Outbox(store.database).count_pending(1) == 24  # every notice recorded, left for the leader
