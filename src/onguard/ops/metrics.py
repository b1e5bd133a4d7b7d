"""The daemon's Prometheus instruments behind small typed methods, and the live state readiness is judged on.

One `Metrics` per daemon, with its own registry (never the process-global one, so tests and replays each get
theirs). Every method is a few counter/gauge updates: cheap enough for the hot path. Labels never carry a URL
(RPC URLs often hold API keys): endpoints are reduced to scheme://host[:port] or named by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from onguard import __version__
from onguard.ops.notify import Delivered, DeliveryFailure

WEI_PER_ETHER = 10**18
# From sub-millisecond (seen → decided on the mempool path) to minutes (broadcast → included under congestion).
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120,
                 300)


class Stage(str, Enum):
    """A response's stages; each is timed from the one before (seen → decided → signed → broadcast → included)."""

    DECIDED = "decided"      # the threat was seen (pending tx or block) → a policy tripped and the arbiter decided
    SIGNED = "signed"        # decided → the response transaction was signed
    BROADCAST = "broadcast"  # signed → the first endpoint accepted it
    INCLUDED = "included"    # broadcast → mined in a block


# The final outcomes a response is recorded with (the store's response statuses); alerts fire on failed|reverted.
RESPONSE_OUTCOMES = ("mined", "already-done", "reverted", "failed")


class PendingResult(str, Enum):
    JUDGED = "judged"          # every pending-transaction policy gave its verdict
    TIMED_OUT = "timed_out"    # not judged within mempool.simulation_timeout: left to the block path
    FAILED = "failed"          # the chain did not answer: left to the block path


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What readiness is judged on, as last reported by the daemon."""

    head: int | None                 # the chain head at the last successful poll
    handled: int | None              # the last block whose policies ran
    lag: int | None                  # head - handled, in blocks
    since_chain_answered: float | None  # seconds since the last successful head poll or handled block
    mempool_live: bool | None        # None: the daemon never reported a mempool source
    preflight_ok: bool | None        # None: no preflight ran yet
    preflight_reason: str | None
    endpoints_down: tuple[str, ...]


def endpoint_label(endpoint: str) -> str:
    """A label that names an endpoint without its secrets: scheme://host[:port] for a URL, a plain name as is."""
    split = urlsplit(endpoint)
    if not split.scheme or not split.hostname:
        return endpoint
    port = f":{split.port}" if split.port else ""
    return f"{split.scheme}://{split.hostname}{port}"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._wall_clock = wall_clock
        self._head: int | None = None
        self._handled: int | None = None
        self._chain_answered_at: float | None = None
        self._mempool_live: bool | None = None
        self._preflight: tuple[bool, str | None] | None = None
        self._endpoints: dict[str, bool] = {}
        r = self.registry
        Info("onguard", "The onguard build.", registry=r).info({"version": __version__})
        self.head_block = Gauge("onguard_head_block", "The chain head at the last successful poll.", registry=r)
        self.handled_block = Gauge("onguard_handled_block", "The last block whose policies ran.", registry=r)
        self.head_lag = Gauge("onguard_head_lag_blocks", "Blocks between the chain head and the last handled block.",
                              registry=r)
        self.head_polled = Gauge("onguard_last_head_poll_timestamp_seconds",
                                 "Unix time the chain last answered a head poll (a stall shows as an old value).",
                                 registry=r)
        self.blocks = Counter("onguard_blocks_processed", "Blocks whose policies ran.", registry=r)
        self.pending = Counter("onguard_pending_transactions", "Pending transactions judged by call policies.",
                               ["result"], registry=r)
        self.evaluations = Counter("onguard_policy_evaluations", "Policy evaluations.", ["policy"], registry=r)
        self.failures = Counter("onguard_policy_failures",
                                "Policy evaluations that could not complete (that block is NOT known to be safe).",
                                ["policy"], registry=r)
        self.trips = Counter("onguard_policy_trips", "Policies tripped (findings).", ["policy", "severity"],
                             registry=r)
        self.stages = Histogram("onguard_stage_seconds", "Seconds from the previous stage of a response to this one.",
                                ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.responses = Counter("onguard_responses", "Responses by action and final outcome.", ["action", "outcome"],
                                 registry=r)
        self.balance = Gauge("onguard_guardian_balance_ether", "The guardian (or relayer) account's balance.",
                             ["address"], registry=r)
        self.balance_floor = Gauge("onguard_guardian_balance_floor_ether",
                                   "The balance below which the guardian may not afford its responses.", ["address"],
                                   registry=r)
        self.endpoint_up = Gauge("onguard_endpoint_up", "1 when the endpoint answered its last call, else 0.",
                                 ["endpoint"], registry=r)
        self.mempool_up = Gauge("onguard_mempool_source_up", "1 while the pending-transaction source is connected.",
                                registry=r)
        self.preflight_ok = Gauge("onguard_preflight_ok", "1 when the last preflight found every power in place.",
                                  registry=r)
        self.preflight_at = Gauge("onguard_last_preflight_timestamp_seconds", "Unix time of the last preflight.",
                                  registry=r)
        self.notifications = Counter("onguard_notifications_delivered", "Notifications delivered.", ["channel"],
                                     registry=r)
        self.notification_failures = Counter("onguard_notification_failures",
                                             "Notifications NOT delivered after every attempt.", ["channel"],
                                             registry=r)
        self.ready = Gauge("onguard_ready", "1 when /readyz would answer 200 (set at each scrape).", registry=r)

    def declare(self, *, policies: Mapping[str, str | Enum], actions: Iterable[str] = (),
                channels: Iterable[str] = ()) -> None:
        """Creates every labelled series at 0 once at start (policy id → severity, actions, notification
        channels): Prometheus' increase() cannot see a counter's first step if the series only appears at 1,
        so without this the first trip, failed response or failed notification would raise no alert."""
        for policy_id, severity in policies.items():
            self.evaluations.labels(policy_id)
            self.failures.labels(policy_id)
            self.trips.labels(policy_id, _value(severity))
        for action in actions:
            for outcome in RESPONSE_OUTCOMES:
                self.responses.labels(action, outcome)
        for channel in channels:
            self.notifications.labels(channel)
            self.notification_failures.labels(channel)
        for result in PendingResult:
            self.pending.labels(result.value)
        for stage in Stage:
            self.stages.labels(stage.value)

    # ---- following the chain

    def chain_polled(self, head: int) -> None:
        """After each successful poll of the chain head (also when it brought no new block)."""
        self._head = head
        self._heard()
        self.head_block.set(head)
        if self._handled is not None:
            self.head_lag.set(max(head - self._handled, 0))

    def block_handled(self, number: int, lag: int) -> None:
        """After a block's policies ran and its checkpoint was committed; `lag`: blocks still behind the head."""
        self._handled = number
        self._head = number + max(lag, 0)
        self._heard()
        self.blocks.inc()
        self.handled_block.set(number)
        self.head_block.set(self._head)
        self.head_lag.set(max(lag, 0))

    def _heard(self) -> None:
        self._chain_answered_at = self._clock()
        self.head_polled.set(self._wall_clock())

    def pending_judged(self, result: PendingResult) -> None:
        self.pending.labels(PendingResult(result).value).inc()

    def mempool_live(self, live: bool) -> None:
        """When the pending-transaction source connects (True) or loses its connection (False)."""
        self._mempool_live = live
        self.mempool_up.set(1 if live else 0)

    def endpoint_health(self, endpoint: str, up: bool) -> None:
        label = endpoint_label(endpoint)
        self._endpoints[label] = up
        self.endpoint_up.labels(label).set(1 if up else 0)

    # ---- policies and responses

    def policy_evaluated(self, policy_id: str) -> None:
        self.evaluations.labels(policy_id).inc()

    def policy_failed(self, policy_id: str) -> None:
        self.failures.labels(policy_id).inc()

    def policy_tripped(self, policy_id: str, severity: str | Enum) -> None:
        self.trips.labels(policy_id, _value(severity)).inc()

    def stage(self, stage: Stage, seconds: float) -> None:
        self.stages.labels(Stage(stage).value).observe(max(seconds, 0.0))

    def response_outcome(self, action: str, outcome: str | Enum) -> None:
        self.responses.labels(action, _value(outcome)).inc()

    def guardian_balance(self, address: str, wei: int, floor_wei: int | None = None) -> None:
        self.balance.labels(address).set(wei / WEI_PER_ETHER)
        if floor_wei is not None:
            self.balance_floor.labels(address).set(floor_wei / WEI_PER_ETHER)

    def preflight(self, ok: bool, reason: str | None = None) -> None:
        """After each preflight (chain id, module enabled, key registered, actions allowlisted, funds)."""
        self._preflight = (ok, reason)
        self.preflight_ok.set(1 if ok else 0)
        self.preflight_at.set(self._wall_clock())

    # ---- notifications (pass these as the notifier's hooks)

    def notification_delivered(self, delivered: Delivered) -> None:
        self.notifications.labels(delivered.channel).inc()

    def notification_failed(self, failure: DeliveryFailure) -> None:
        self.notification_failures.labels(failure.channel).inc()

    # ---- readiness

    def snapshot(self) -> HealthSnapshot:
        lag = None
        if self._head is not None and self._handled is not None:
            lag = max(self._head - self._handled, 0)
        return HealthSnapshot(
            head=self._head, handled=self._handled, lag=lag,
            since_chain_answered=None if self._chain_answered_at is None else self._clock() - self._chain_answered_at,
            mempool_live=self._mempool_live,
            preflight_ok=None if self._preflight is None else self._preflight[0],
            preflight_reason=None if self._preflight is None else self._preflight[1],
            endpoints_down=tuple(sorted(name for name, up in self._endpoints.items() if not up)),
        )


def _value(value: str | Enum) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)
