"""Operations as one service the daemon starts and stops: the notifier, the metrics, the health server and the
readiness watch, wired to each other (a failed notification counts in the metrics; losing readiness publishes a
chain_health notice). The daemon's composition root builds it from the [notifications] and [metrics] settings,
calls `start()` before its loop, `heartbeat()` from its heartbeat and `stop()` after draining."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from onguard.ops.health import HealthServer, Readiness, ReadinessCheck, ReadinessRules, ReadinessWatch, assess
from onguard.ops.metrics import Metrics
from onguard.ops.notice import Notice
from onguard.ops.notify import FailureHook, Notifier
from onguard.ops.outbox import DurableNotifier, NoticeOutbox
from onguard.ops.settings import MetricsSettings, NotificationSettings


class Operations:
    def __init__(self, metrics: Metrics, notifier: Notifier | None, server: HealthServer | None,
                 readiness: ReadinessCheck, *, chain_id: int, alert_after: float, replica: str | None = None) -> None:
        """`replica`: this daemon's replica id, in its chain-health notices (each replica's health is its own)."""
        self.metrics = metrics
        self.notifier = notifier      # None: no channel is configured
        self.server = server          # None: [metrics] is off (the metrics are still kept for `status`)
        self.readiness = readiness
        self._watch = ReadinessWatch(readiness, self.publish, chain_id=chain_id, grace=alert_after, replica=replica)

    @classmethod
    def build(cls, notifications: NotificationSettings, metrics: MetricsSettings, *, chain_id: int,
              mempool_required: bool, environ: Mapping[str, str] | None = None,
              on_failure: Sequence[FailureHook] = (), hold_while: Callable[[], bool] | None = None,
              outbox: NoticeOutbox | None = None, leads: Callable[[], bool] | None = None,
              replica: str | None = None) -> Operations:
        """Reads the channels' secrets from the environment now, so a missing one stops the start (ConfigError).
        `hold_while`: see Notifier (pass "a response is under way and not yet broadcast"). `outbox`: notices go
        through the state database and are delivered only while `leads()` (the leader lease; default: always).
        `replica`: among replicas, this one's id (named in its chain-health notices)."""
        instruments = Metrics()
        notifier: Notifier | None = None
        if notifications.enabled:
            hooks: dict[str, Any] = dict(environ=environ, on_failure=[instruments.notification_failed, *on_failure],
                                         on_delivered=[instruments.notification_delivered], hold_while=hold_while)
            if outbox is None:
                notifier = Notifier.from_settings(notifications, **hooks)
            else:
                notifier = DurableNotifier.from_settings(notifications, outbox=outbox,
                                                         leads=leads or (lambda: True), **hooks)
        rules = ReadinessRules.from_settings(metrics, mempool_required=mempool_required)

        def readiness() -> Readiness:
            return assess(instruments.snapshot(), rules)

        server = HealthServer(instruments, readiness, host=metrics.host, port=metrics.port) if metrics.enabled else None
        return cls(instruments, notifier, server, readiness, chain_id=chain_id, alert_after=metrics.alert_after,
                   replica=replica)

    def heartbeat(self) -> Readiness:
        """From the daemon's heartbeat: publishes a chain_health notice when the daemon has not been ready for
        [metrics] alert_after, and its "resolved" twin when it is ready again."""
        return self._watch.check()

    def publish(self, notice: Notice) -> None:
        """Hands a notice to the notifier (nothing happens without channels). Never awaits: hot-path safe."""
        if self.notifier is not None:
            self.notifier.publish(notice)

    async def start(self) -> None:
        if self.notifier is not None:
            self.notifier.start()
        if self.server is not None:
            await self.server.start()

    async def stop(self, notify_timeout: float = 5.0) -> None:
        """Delivers what is queued for up to `notify_timeout` seconds (the rest is recorded as failed), then
        closes the health server last, so probes see the daemon until it is gone."""
        if self.notifier is not None:
            await self.notifier.stop(notify_timeout)
        if self.server is not None:
            await self.server.stop()
