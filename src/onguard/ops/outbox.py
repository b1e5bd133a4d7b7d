"""Notices through the state database: every replica records what it publishes in the outbox (one row per notice
id, so an event told by three replicas is one notice), and only the holder of the leader lease delivers, taking
the pending deliveries in the order recorded. A new leader delivers what a dead one left; a restarted single
daemon delivers what a crash left. Delivery is at least once, with a stable id: a notice in flight when its
deliverer died is sent again under the same id (X-Onguard-Notice, PagerDuty's dedup_key, the mail's Message-ID),
and receivers drop the duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from onguard.incidents.store import IncidentStore
from onguard.ops.channels import Channel
from onguard.ops.notice import Notice, notice_document, notice_from_document
from onguard.ops.notify import DEFAULT_STOP_TIMEOUT, Notifier
from onguard.ops.settings import Route
from onguard.store.database import WRITE_REFUSED
from onguard.store.outbox import DeliveryStatus, Outbox

POLL_EVERY = 1.0          # seconds between the leader's looks at the outbox for notices other replicas recorded
LOG_EVERY_REFUSALS = 30   # outbox reads refused in a row: the first and every 30th are logged


class NoticeOutbox:
    """The notifier's side of the outbox: records through the store (a write the database refuses is kept in
    memory and replayed, like every other write), reads and marks deliveries for one chain."""

    def __init__(self, store: IncidentStore, chain_id: int, replica: str) -> None:
        self.chain_id = chain_id
        self.replica = replica
        self._store = store
        self._outbox = Outbox(store.database)

    def record(self, notice: Notice, channels: Sequence[str]) -> None:
        document = json.dumps(notice_document(notice), sort_keys=True, ensure_ascii=False)
        self._store.durably(f"notice {notice.kind.value}", lambda: self._outbox.add(
            notice_id=notice.id, chain_id=notice.chain_id, kind=notice.kind.value, incident_id=notice.incident_id,
            document=document, channels=channels, by=self.replica))

    def pending(self, channel: str, limit: int) -> list[Notice]:
        """The oldest notices still to deliver to `channel` (raises what the database raises when it refuses)."""
        return [notice_from_document(json.loads(row.document))
                for row in self._outbox.pending(self.chain_id, [channel], limit)]

    def finish(self, notice: Notice, channel: str, status: DeliveryStatus, attempts: int,
               reason: str | None = None) -> bool:
        """Marks the delivery; False while the database holds the mark back (kept in memory, replayed)."""
        def mark() -> bool:
            self._outbox.finish(notice.id, channel, status, attempts=attempts, by=self.replica, reason=reason)
            return True
        return self._store.durably(f"notice {status}", mark) is not None


class DurableNotifier(Notifier):
    """A Notifier whose notices go through the outbox. `publish()` stays a queue put: the notice is recorded once
    the caller has yielded and no response is being sent (`hold_while`, as deliveries); `leads()` (the leader
    lease, looked at locally) says whether this replica delivers, asked again before every attempt."""

    def __init__(self, channels: Mapping[str, Channel], routes: Sequence[Route], *, outbox: NoticeOutbox,
                 leads: Callable[[], bool], poll_every: float = POLL_EVERY, **options: Any) -> None:
        super().__init__(channels, routes, **options)
        self._outbox = outbox
        self._leads = leads
        self._poll_every = poll_every
        self._unrecorded: deque[tuple[Notice, list[str]]] = deque()
        self._record_soon = asyncio.Event()
        self._look_soon = asyncio.Event()
        self._taken: set[tuple[str, str]] = set()  # (notice id, channel) queued here, or finished here unsaved
        self._tasks: list[asyncio.Task[None]] = []
        self._refusals = 0
        self._left = 0  # deliveries left pending when the notifier stopped

    def publish(self, notice: Notice) -> None:
        """Keeps the notice for recording just after the caller yields: never awaits, never does I/O (except once
        the notifier has stopped: the daemon is shutting down, so it is recorded at once)."""
        channels = self.channels_for(notice)
        if not channels:
            return
        if self._stopped:  # the daemon is stopping: record it now, the next leader or start delivers it
            self._record(notice, channels)
            return
        if len(self._unrecorded) >= self._queue_size:
            for name in channels:
                self._fail_soon(notice, name, f"queue full ({self._queue_size} notices waiting to be recorded)")
            return
        self._unrecorded.append((notice, channels))
        self._record_soon.set()

    def start(self) -> None:
        if self._tasks:
            return
        super().start()
        self._tasks = [asyncio.create_task(self._recorder(), name="notify:record"),
                       asyncio.create_task(self._pump(), name="notify:outbox")]

    async def flush(self) -> None:
        """Records what was published; if this replica leads, returns once every delivery pending then is
        delivered or failed."""
        self._record_all()
        self._take()
        await super().flush()

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Records what was published; the leader delivers what is pending for up to `timeout` seconds. What is
        left stays pending in the outbox: the next leader, or the next start, delivers it."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._record_all()
        self._take()
        await super().stop(timeout)
        if self._left:
            self._log.warning("notices left undelivered in the outbox: the leader (or this daemon, when it starts "
                              "again) delivers them", deliveries=self._left)

    # ---- recording ----

    async def _recorder(self) -> None:
        while not self._stopped:
            await self._record_soon.wait()
            self._record_soon.clear()
            await self._hold()
            self._record_all()

    def _record_all(self) -> None:
        recorded = bool(self._unrecorded)
        while self._unrecorded:
            self._record(*self._unrecorded.popleft())
        if recorded:
            self._look_soon.set()

    def _record(self, notice: Notice, channels: list[str]) -> None:
        try:
            self._outbox.record(notice, channels)
        except Exception as exc:  # a bug must cost one notice, and say so, not the recorder
            for name in channels:
                self._fail(notice, name, 0, f"could not be recorded: {type(exc).__name__}: {exc}")

    # ---- delivering (the leader) ----

    async def _pump(self) -> None:
        while not self._stopped:
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for swallows a cancellation that meets the event
            # being set (stop() records, then cancels), and the pump would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_every):
                    await self._look_soon.wait()
            self._look_soon.clear()
            if self._leads():
                await self._hold()
                self._take()

    def _take(self) -> None:
        """Queues, per channel and in order, the pending deliveries not already queued here."""
        if not self._leads():
            return
        for name, queue in self._queues.items():
            room = queue.maxsize - queue.qsize()
            if room <= 0:
                continue
            ours = sum(1 for _, channel in self._taken if channel == name)
            try:
                pending = self._outbox.pending(name, room + ours)
            except WRITE_REFUSED as exc:
                self._refusals += 1
                if self._refusals % LOG_EVERY_REFUSALS == 1:
                    self._log.error("the outbox cannot be read: notices wait in it until the database answers",
                                    error=str(exc).strip(), refusals=self._refusals)
                return
            self._refusals = 0
            for notice in pending:
                key = (notice.id, name)
                if key in self._taken or queue.full():
                    continue
                self._taken.add(key)
                queue.put_nowait(notice)

    def _may_deliver(self, name: str, notice: Notice) -> bool:
        if self._leads():
            return True
        self._taken.discard((notice.id, name))  # still pending in the outbox: the leader delivers it
        return False

    def _delivered(self, name: str, notice: Notice, attempts: int) -> None:
        super()._delivered(name, notice, attempts)
        self._finish(name, notice, DeliveryStatus.DELIVERED, attempts)

    def _fail(self, notice: Notice, channel: str, attempts: int, reason: str) -> None:
        super()._fail(notice, channel, attempts, reason)
        if (notice.id, channel) in self._taken:  # a delivery from the outbox (not one refused before recording)
            self._finish(channel, notice, DeliveryStatus.FAILED, attempts, reason)

    def _finish(self, name: str, notice: Notice, status: DeliveryStatus, attempts: int,
                reason: str | None = None) -> None:
        if self._outbox.finish(notice, name, status, attempts, reason):
            self._taken.discard((notice.id, name))
        # else: kept as taken, so the pump does not deliver it again while the database holds the mark back

    def _interrupted(self, name: str, notice: Notice, attempts: int) -> None:
        self._leave(name, notice)

    def _abandon(self, name: str, notice: Notice) -> None:
        self._leave(name, notice)

    def _leave(self, name: str, notice: Notice) -> None:
        self._taken.discard((notice.id, name))
        self._left += 1
