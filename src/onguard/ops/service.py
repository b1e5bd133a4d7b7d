"""Operations as one service the daemon starts and stops: the notifier, the metrics and the health server, wired
to each other (a failed notification counts in the metrics). The daemon's composition root builds it from the
[notifications] and [metrics] settings and calls `start()` before its loop and `stop()` after draining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from onguard.ops.health import HealthServer
from onguard.ops.metrics import Metrics
from onguard.ops.notice import Notice
from onguard.ops.notify import FailureHook, Notifier
from onguard.ops.settings import MetricsSettings, NotificationSettings


class Operations:
    def __init__(self, metrics: Metrics, notifier: Notifier | None, server: HealthServer | None) -> None:
        self.metrics = metrics
        self.notifier = notifier      # None: no channel is configured
        self.server = server          # None: [metrics] is off (the metrics are still kept for `status`)

    @classmethod
    def build(cls, notifications: NotificationSettings, metrics: MetricsSettings, *, mempool_required: bool,
              environ: Mapping[str, str] | None = None, on_failure: Sequence[FailureHook] = ()) -> Operations:
        """Reads the channels' secrets from the environment now, so a missing one stops the start (ConfigError)."""
        instruments = Metrics()
        notifier = None
        if notifications.enabled:
            notifier = Notifier.from_settings(notifications, environ=environ,
                                              on_failure=[instruments.notification_failed, *on_failure],
                                              on_delivered=[instruments.notification_delivered])
        server = (HealthServer.for_daemon(instruments, metrics, mempool_required=mempool_required)
                  if metrics.enabled else None)
        return cls(instruments, notifier, server)

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
