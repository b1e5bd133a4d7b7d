"""The notifier: `publish(notice)` queues in microseconds and never touches the network; background workers (one
per channel, so a slow channel delays no other and each keeps its order) deliver with bounded, jittered
exponential back-off. A notice that cannot be delivered becomes a DeliveryFailure: logged at error level, kept in
`failures`, counted, and handed to every `on_failure` hook (the audit log, the failure metric). Never lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from onguard.log import get_logger
from onguard.ops.channels import Channel, DeliveryError, build_channels
from onguard.ops.notice import Notice, iso_time
from onguard.ops.settings import NotificationSettings, RetrySettings, Route

FAILURES_KEPT = 1000
DEFAULT_STOP_TIMEOUT = 5.0
HOLD_POLL = 0.005   # seconds between looks at `hold_while`
DEFAULT_HOLD_LIMIT = 2.0


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A notice that did not reach a channel, and why (the reason never holds a secret)."""

    notice: Notice
    channel: str
    attempts: int     # 0: never attempted (queue full, notifier stopped)
    reason: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self) -> dict[str, object]:
        """JSON-safe details for the audit log (kind "notification-failed")."""
        notice = self.notice
        return {"channel": self.channel, "notice_id": notice.id, "kind": notice.kind.value,
                "severity": notice.severity.value, "chain_id": notice.chain_id, "policy_id": notice.policy_id,
                "incident_id": notice.incident_id, "title": notice.title, "attempts": self.attempts,
                "reason": self.reason, "at": iso_time(self.at)}


@dataclass(frozen=True, slots=True)
class Delivered:
    notice: Notice
    channel: str
    attempts: int


FailureHook = Callable[[DeliveryFailure], None]
DeliveredHook = Callable[[Delivered], None]


class Notifier:
    def __init__(self, channels: Mapping[str, Channel], routes: Sequence[Route], *, retry: RetrySettings,
                 queue_size: int = 1000, on_failure: Sequence[FailureHook] = (),
                 on_delivered: Sequence[DeliveredHook] = (), rng: random.Random | None = None,
                 hold_while: Callable[[], bool] | None = None, hold_limit: float = DEFAULT_HOLD_LIMIT) -> None:
        """`hold_while`: while it returns True (a response is being priced, signed or sent), deliveries wait —
        up to `hold_limit` seconds — so that not even their CPU slices (JSON, HMAC, TLS) run before the pause is
        on the wire. Publishing is never held."""
        unknown = {name for route in routes for name in route.channels} - set(channels)
        if unknown:
            raise ValueError(f"routes name channels that do not exist: {sorted(unknown)}")
        self._channels = dict(channels)
        self._routes = tuple(routes)
        self._retry = retry
        self._queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[Notice]] = {name: asyncio.Queue(queue_size) for name in channels}
        self._on_failure = list(on_failure)
        self._on_delivered = list(on_delivered)
        self._rng = rng or random.Random()
        self._hold_while = hold_while
        self._hold_limit = hold_limit
        self._workers: list[asyncio.Task[None]] = []
        self._stopped = False
        self.failures: deque[DeliveryFailure] = deque(maxlen=FAILURES_KEPT)  # the latest, for status and tests
        self.delivered: Counter[str] = Counter()  # per channel
        self.failed: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        self._log = get_logger(component="notifier")

    @classmethod
    def from_settings(cls, settings: NotificationSettings, *, environ: Mapping[str, str] | None = None,
                      on_failure: Sequence[FailureHook] = (), on_delivered: Sequence[DeliveredHook] = (),
                      hold_while: Callable[[], bool] | None = None,
                      hold_limit: float = DEFAULT_HOLD_LIMIT, **extra: Any) -> Self:
        """Builds the channels, reading their secrets from the environment (ConfigError when one is missing).
        `extra`: a subclass's own arguments."""
        channels = build_channels(settings, os.environ if environ is None else environ)
        return cls(channels, settings.routes, retry=settings.retry, queue_size=settings.queue_size,
                   on_failure=on_failure, on_delivered=on_delivered, hold_while=hold_while, hold_limit=hold_limit,
                   **extra)

    @property
    def channel_names(self) -> list[str]:
        return list(self._channels)

    def channels_for(self, notice: Notice) -> list[str]:
        """Every channel some route sends this notice to, each once, in the order routes name them."""
        names: dict[str, None] = {}
        for route in self._routes:
            if route.matches(notice):
                names.update(dict.fromkeys(route.channels))
        return list(names)

    def publish(self, notice: Notice) -> None:
        """Queues the notice for every channel its routes name. Never awaits, never does I/O: safe on the hot
        path. Call it from the event loop's thread. A notice that cannot be queued is recorded as a failure —
        just after the caller yields, so that logging and the hooks (the audit log) stay off the hot path too."""
        for name in self.channels_for(notice):
            if self._stopped:
                self._fail_soon(notice, name, "the notifier is stopped")
                continue
            try:
                self._queues[name].put_nowait(notice)
            except asyncio.QueueFull:
                self._fail_soon(notice, name, f"queue full ({self._queues[name].maxsize} notices waiting)")

    def _fail_soon(self, notice: Notice, channel: str, reason: str) -> None:
        try:
            asyncio.get_running_loop().call_soon(self._fail, notice, channel, 0, reason)
        except RuntimeError:  # no loop running (a notice published while the daemon shuts down): record it now
            self._fail(notice, channel, 0, reason)

    def start(self) -> None:
        """Starts one delivery worker per channel (notices published before are delivered too)."""
        if self._workers:
            return
        self._workers = [asyncio.create_task(self._work(name), name=f"notify:{name}") for name in self._channels]

    async def flush(self) -> None:
        """Returns once every notice queued so far is delivered or recorded as failed."""
        await asyncio.gather(*(queue.join() for queue in self._queues.values()))

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Delivers what is queued for up to `timeout` seconds, then gives up on the rest: every notice not
        delivered by then is recorded as a failure. Publishing afterwards records failures too."""
        self._stopped = True
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for name, queue in self._queues.items():
            while not queue.empty():
                self._abandon(name, queue.get_nowait())
                queue.task_done()
        for channel in self._channels.values():
            await channel.close()

    async def _work(self, name: str) -> None:
        queue = self._queues[name]
        while True:
            notice = await queue.get()
            try:
                await self._deliver(name, notice)
            finally:
                queue.task_done()

    async def _deliver(self, name: str, notice: Notice) -> None:
        channel = self._channels[name]
        attempt = 0
        try:
            while True:
                await self._hold()
                if not self._may_deliver(name, notice):
                    return
                attempt += 1
                try:
                    await channel.deliver(notice)
                except DeliveryError as exc:
                    if not exc.retryable or attempt >= self._retry.max_attempts:
                        self._fail(notice, name, attempt, exc.reason)
                        return
                    delay = self.backoff(attempt, exc.retry_after)
                    self.retried[name] += 1
                    self._log.warning("notification not delivered: retrying", channel=name, notice=notice.id,
                                      attempt=attempt, reason=exc.reason, retry_in=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
                except Exception as exc:  # a bug in a channel must cost one notice, not the worker
                    self._fail(notice, name, attempt, f"internal error: {type(exc).__name__}")
                    return
                self._delivered(name, notice, attempt)
                return
        except asyncio.CancelledError:
            self._interrupted(name, notice, attempt)
            raise

    # ---- what becomes of a notice (DurableNotifier keeps the outbox in step) ----

    def _may_deliver(self, name: str, notice: Notice) -> bool:
        """Asked before each attempt: whether this notifier still delivers (here: always)."""
        return True

    def _delivered(self, name: str, notice: Notice, attempts: int) -> None:
        self.delivered[name] += 1
        self._call(self._on_delivered, Delivered(notice=notice, channel=name, attempts=attempts))

    def _interrupted(self, name: str, notice: Notice, attempts: int) -> None:
        """The notifier stopped during a delivery."""
        self._fail(notice, name, attempts, "the notifier stopped during delivery (it may or may not have arrived)")

    def _abandon(self, name: str, notice: Notice) -> None:
        """A notice still queued when the notifier stopped."""
        self._fail(notice, name, 0, "not delivered before the notifier stopped")

    async def _hold(self) -> None:
        if self._hold_while is None or not self._hold_while():
            return
        deadline = asyncio.get_running_loop().time() + self._hold_limit
        while self._hold_while() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(HOLD_POLL)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt `attempt + 1`: doubling from first_delay up to max_delay, half of it jittered
        (so guardians that failed together do not retry together); never sooner than a Retry-After asks."""
        ceiling = min(self._retry.max_delay, self._retry.first_delay * 2 ** (attempt - 1))
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._retry.max_delay))
        return delay

    def _fail(self, notice: Notice, channel: str, attempts: int, reason: str) -> None:
        failure = DeliveryFailure(notice=notice, channel=channel, attempts=attempts, reason=reason)
        self.failures.append(failure)
        self.failed[channel] += 1
        self._log.error("notification NOT delivered", channel=channel, notice=notice.id, kind=notice.kind.value,
                        severity=notice.severity.value, policy_id=notice.policy_id, incident_id=notice.incident_id,
                        attempts=attempts, reason=reason)
        self._call(self._on_failure, failure)

    def _call(self, hooks: Sequence[Callable[[object], None]], value: object) -> None:
        for hook in hooks:
            try:
                hook(value)
            except Exception as exc:  # a broken hook must not stop deliveries
                self._log.error("notification hook failed", hook=getattr(hook, "__qualname__", repr(hook)),
                                error=repr(exc))


async def deliver_now(settings: NotificationSettings, notice: Notice, *,
                      timeout: float = DEFAULT_STOP_TIMEOUT) -> tuple[list[str], list[DeliveryFailure]]:
    """Outside the daemon (a command a person runs): delivers one notice to the channels its routes choose and
    returns them with the failures (ConfigError when a channel's secret is missing from the environment)."""
    notifier = Notifier.from_settings(settings)
    channels = notifier.channels_for(notice)
    notifier.start()
    notifier.publish(notice)
    await notifier.stop(timeout)
    return channels, list(notifier.failures)
