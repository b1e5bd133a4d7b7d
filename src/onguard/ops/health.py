"""The daemon's HTTP face for operators: /metrics (Prometheus), /healthz (the process and its loop answer) and
/readyz (200 only while the daemon follows the chain within its lag budget, its mempool source is live when one
is configured and its last preflight was green; 503 with the reasons otherwise). Bound to 127.0.0.1 by default:
it has no authentication, so exposing it is a deliberate choice (host = "0.0.0.0" behind a firewall)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from onguard.log import get_logger
from onguard.ops.metrics import HealthSnapshot, Metrics
from onguard.ops.notice import Notice, NoticeKind, event_id, iso_time
from onguard.ops.settings import MetricsSettings, is_loopback
from onguard.policies.model import Severity


@dataclass(frozen=True, slots=True)
class ReadinessRules:
    lag_budget: int           # blocks
    stale_after: float        # seconds without an answer from the chain
    mempool_required: bool    # config.mempool.enabled (and a policy judges pending transactions)
    require_preflight: bool

    @classmethod
    def from_settings(cls, settings: MetricsSettings, *, mempool_required: bool) -> ReadinessRules:
        return cls(lag_budget=settings.lag_budget, stale_after=settings.stale_after,
                   mempool_required=mempool_required, require_preflight=settings.require_preflight)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]      # why not, in words an operator acts on; empty when ready
    checks: Mapping[str, bool]    # each check by name

    def document(self) -> dict[str, object]:
        return {"ready": self.ready, "reasons": list(self.reasons), "checks": dict(self.checks)}


ReadinessCheck = Callable[[], Readiness]


def assess(snapshot: HealthSnapshot, rules: ReadinessRules) -> Readiness:
    """Judges a snapshot against the rules. Pure, so every combination is tested without a daemon."""
    reasons: list[str] = []
    checks: dict[str, bool] = {}

    if snapshot.since_chain_answered is None:
        reasons.append("the chain has not answered yet (starting up?)")
        checks["chain_answering"] = False
    else:
        checks["chain_answering"] = snapshot.since_chain_answered <= rules.stale_after
        if not checks["chain_answering"]:
            reasons.append(f"no answer from the chain for {snapshot.since_chain_answered:.0f}s "
                           f"(budget {rules.stale_after:g}s)")

    checks["within_lag_budget"] = snapshot.lag is not None and snapshot.lag <= rules.lag_budget
    if snapshot.lag is None:
        reasons.append("no block handled yet")
    elif snapshot.lag > rules.lag_budget:
        reasons.append(f"{snapshot.lag} blocks behind the head (budget {rules.lag_budget})")

    if rules.mempool_required:
        checks["mempool_live"] = snapshot.mempool_live is True
        if not checks["mempool_live"]:
            reasons.append("the mempool source is configured but not connected")

    if rules.require_preflight:
        checks["preflight_ok"] = snapshot.preflight_ok is True
        if snapshot.preflight_ok is None:
            reasons.append("no preflight has run yet")
        elif not snapshot.preflight_ok:
            reasons.append(f"the last preflight failed: {snapshot.preflight_reason or 'no reason given'}")

    return Readiness(ready=not reasons, reasons=tuple(reasons), checks=MappingProxyType(checks))


class ReadinessWatch:
    """Turns readiness into chain-health notices, from the daemon's heartbeat: one when the daemon has not been
    ready for `grace` seconds (a short blip, or the start-up, pages no one), one with status "resolved" when it is
    ready again (PagerDuty resolves the page). Both share one incident key, so a flapping daemon updates one page."""

    def __init__(self, readiness: ReadinessCheck, publish: Callable[[Notice], None], *, chain_id: int,
                 grace: float = 120.0, clock: Callable[[], float] = time.monotonic, replica: str | None = None) -> None:
        """`replica`: named in the notices (among replicas, each one's readiness is its own)."""
        self._readiness = readiness
        self._replica = replica
        self._episode = ""  # when (wall clock) and which time this daemon stopped being ready: its alerts' identity
        self._episodes = 0
        self._publish = publish
        self._chain_id = chain_id
        self._grace = grace
        self._clock = clock
        self._unready_since: float | None = None
        self._alerted = False

    def check(self) -> Readiness:
        verdict = self._readiness()
        now = self._clock()
        if verdict.ready:
            if self._alerted:
                self._publish(self._notice("ready again", "The guardian follows the chain again.", verdict,
                                           status="resolved"))
            self._unready_since, self._alerted = None, False
            return verdict
        if self._unready_since is None:
            self._unready_since = now
            self._episodes += 1
            self._episode = f"{iso_time(datetime.now(UTC))}#{self._episodes}"
        if not self._alerted and now - self._unready_since >= self._grace:
            self._alerted = True
            self._publish(self._notice(
                f"not ready: {verdict.reasons[0]}",
                f"The guardian has not been ready for {now - self._unready_since:.0f}s: "
                + "; ".join(verdict.reasons) + ". Until it is, threats may be seen late or not acted on.",
                verdict, status="open"))
        return verdict

    def _notice(self, title: str, summary: str, verdict: Readiness, *, status: str) -> Notice:
        details: dict[str, object] = {"status": status, "reasons": list(verdict.reasons),
                                      "checks": dict(verdict.checks)}
        if self._replica is not None:
            details["replica"] = self._replica
        # A replica's own event: its id and the episode it began are the identity (no other replica tells it).
        return Notice(kind=NoticeKind.CHAIN_HEALTH, severity=Severity.HIGH, chain_id=self._chain_id, title=title,
                      summary=summary, details=details,
                      id=event_id(self._chain_id, NoticeKind.CHAIN_HEALTH, self._replica, self._episode, status))


class HealthServer:
    """Serves /metrics, /healthz and /readyz from the daemon's event loop (aiohttp)."""

    def __init__(self, metrics: Metrics, readiness: ReadinessCheck, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._started_at = time.monotonic()
        self._log = get_logger(component="health")
        self.port: int | None = None  # the bound port once started (port 0 picks a free one)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/healthz", self._alive)
        app.router.add_get("/readyz", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.port = self._runner.addresses[0][1]
        self._log.info("serving /metrics, /healthz and /readyz", host=self._host, port=self.port)
        if not is_loopback(self._host):
            self._log.warning("the metrics endpoint has no authentication and listens beyond this machine: "
                              "keep it behind a firewall", host=self._host)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def readiness(self) -> Readiness:
        """The callback's verdict; a callback that raises makes the daemon not ready, and says so."""
        try:
            verdict = self._readiness()
        except Exception as exc:
            self._log.error("readiness check failed", error=repr(exc))
            verdict = Readiness(ready=False, reasons=(f"the readiness check failed: {type(exc).__name__}",),
                                checks=MappingProxyType({}))
        self._metrics.ready.set(1 if verdict.ready else 0)
        return verdict

    async def _scrape(self, request: web.Request) -> web.Response:
        self.readiness()  # so onguard_ready is current in every scrape
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))  # OpenMetrics when asked
        return web.Response(body=encode(self._metrics.registry), headers={"Content-Type": content_type})

    async def _alive(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True, "uptime_seconds": round(time.monotonic() - self._started_at, 3)})

    async def _ready(self, request: web.Request) -> web.Response:
        verdict = self.readiness()
        return web.json_response(verdict.document(), status=200 if verdict.ready else 503)
