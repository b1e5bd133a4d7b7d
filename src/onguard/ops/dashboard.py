"""The live dashboard the daemon serves: one read-only HTML page (current health, incidents with their timelines and
each response's race outcome, proposals awaiting signatures with their Safe tx hashes, policy health), rebuilt
from the daemon's own state at each request. Bound to 127.0.0.1 by default; with `token_env` a viewer must present
the token (`Authorization: Bearer …` or `?token=…`). Every string is escaped: titles and evidence can carry text
an attacker chose."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from aiohttp import web

from onguard.errors import ConfigError
from onguard.incidents.report import race_lines, stage_milliseconds
from onguard.store.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import WATCHED_STATUSES, Incident, IncidentStore
from onguard.log import get_logger
from onguard.ops.health import Readiness
from onguard.ops.metrics import HealthSnapshot
from onguard.ops.settings import DashboardSettings

RECENT = 10  # incidents no longer watched still shown

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:8px}
th,td{border:1px solid #d9dde3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3} code{font-size:12px;word-break:break-all}
.ok{color:#0a7a3d;font-weight:600} .bad{color:#b3261e;font-weight:600} .muted{color:#6b7280}
.incident{background:#fff;border:1px solid #d9dde3;padding:8px 12px;margin-bottom:12px}
.critical,.failed{color:#b3261e} .high{color:#c2410c} .safe{color:#0a7a3d}
"""


class Dashboard:
    def __init__(self, settings: DashboardSettings, store: IncidentStore, *, chain_id: int,
                 readiness: Callable[[], Readiness], snapshot: Callable[[], HealthSnapshot],
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._token = None
        if settings.token_env is not None:
            self._token = env.get(settings.token_env)
            if not self._token:
                raise ConfigError(f"the environment variable {settings.token_env} is not set",
                                  field="dashboard.token_env", hint="set it to the token viewers must present")
        self._settings = settings
        self._store = store
        self._chain_id = chain_id
        self._readiness = readiness
        self._snapshot = snapshot
        self._policies: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._log = get_logger(component="dashboard")

    async def start(self, policies: Iterable[str]) -> int:
        self._policies = sorted(policies)
        app = web.Application()
        app.router.add_get("/", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._settings.host, self._settings.port).start()
        self.port = self._runner.addresses[0][1]
        self._log.info("serving the dashboard", host=self._settings.host, port=self.port,
                       token_required=self._token is not None)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _page(self, request: web.Request) -> web.Response:
        if not self._admitted(request):
            return web.Response(status=401, text="a token is required", headers={"WWW-Authenticate": "Bearer"})
        return web.Response(text=self.render(), content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    def _admitted(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or \
            request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self._token.encode())

    def render(self) -> str:
        incidents = self._store.incidents(200)
        watched = [i for i in incidents if i.status in WATCHED_STATUSES]
        recent = [i for i in incidents if i.status not in WATCHED_STATUSES][:RECENT]
        refresh = int(self._settings.refresh)
        return "".join([
            f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='{refresh}'>",
            f"<title>onguard · chain {self._chain_id}</title><style>{_STYLE}</style></head><body>",
            f"<h1>onguard · chain {self._chain_id}</h1>",
            self._health(),
            "<h2>Incidents being kept safe</h2>",
            "".join(self._incident(i) for i in watched) or "<p class='muted'>none</p>",
            "<h2>Recent incidents</h2>",
            "".join(self._incident(i) for i in recent) or "<p class='muted'>none</p>",
            self._proposals(),
            self._policy_health(incidents),
            "</body></html>"])

    def _health(self) -> str:
        verdict, snap = self._readiness(), self._snapshot()
        state = "<span class='ok'>READY</span>" if verdict.ready else "<span class='bad'>NOT READY</span>"
        reasons = "".join(f"<li>{escape(r)}</li>" for r in verdict.reasons)
        rows = [("head", snap.head), ("last handled block", snap.handled), ("lag (blocks)", snap.lag),
                ("mempool source", "n/a" if snap.mempool_live is None else "live" if snap.mempool_live else "DOWN"),
                ("last preflight", "n/a" if snap.preflight_ok is None else
                 "green" if snap.preflight_ok else f"RED: {snap.preflight_reason}"),
                ("endpoints down", ", ".join(snap.endpoints_down) or "none")]
        return (f"<h2>Health: {state}</h2>" + (f"<ul>{reasons}</ul>" if reasons else "")
                + _table(("", ""), [(name, "-" if value is None else value) for name, value in rows]))

    def _incident(self, incident: Incident) -> str:
        timeline = self._store.timeline(incident.id)
        responses = self._store.responses(incident.id)
        stages = stage_milliseconds(timeline)
        races = race_lines(timeline)
        response_rows = [(r.action, str(r.status), _code(r.tx_hash), r.block_number or "-",
                          (r.outcome_detail or {}).get("landed", r.outcome or "-")) for r in responses]
        timeline_rows = [(e.at[11:23], e.kind, "; ".join(f"{k}={v}" for k, v in e.detail.items()
                                                          if k in _SHOWN and v not in (None, "", [])))
                         for e in timeline]
        return "".join([
            f"<div class='incident'><b>#{incident.id}</b> <span class='{escape(str(incident.status))}'>"
            f"{escape(str(incident.status).upper())}</span> · <span class='{escape(incident.severity)}'>"
            f"{escape(incident.severity)}</span> · {escape(incident.policy_id)} · block {incident.opened_block}"
            f"<div>{escape(incident.title)}</div>",
            "<div>stages: " + escape("  ".join(f"{n} {ms} ms" for n, ms in stages)) + "</div>" if stages else "",
            "".join(f"<div>race: {escape(line)}</div>" for line in races),
            _table(("action", "status", "transaction", "block", "outcome"), response_rows) if response_rows else "",
            f"<details><summary>timeline ({len(timeline)})</summary>"
            + _table(("at (UTC)", "what", "detail"), timeline_rows) + "</details></div>"])

    def _proposals(self) -> str:
        pending = SafeTxStore(self._store.database).list(TxKind.PROPOSAL, TxStatus.PENDING)
        rows = [(p.id, p.purpose, p.incident_id or "-", p.tx.nonce, len(p.signatures), _code(p.safe_tx_hash))
                for p in pending]
        return "<h2>Proposals awaiting signatures</h2>" + (
            _table(("id", "purpose", "incident", "nonce", "signatures", "Safe tx hash"), rows) if rows
            else "<p class='muted'>none</p>")

    def _policy_health(self, incidents: list[Incident]) -> str:
        failures = {f.policy_id: f for f in self._store.evaluation_failures()}
        trips: dict[str, int] = {}
        for incident in incidents:
            trips[incident.policy_id] = trips.get(incident.policy_id, 0) + 1
        rows = []
        for policy in sorted(set(self._policies) | set(failures)):
            failure = failures.get(policy)
            health = (f"<span class='bad'>NOT evaluated at {failure.count} block(s)</span>, last "
                      f"{failure.last_block}: {escape(failure.last_message)}") if failure else \
                "<span class='ok'>evaluated at every block</span>"
            rows.append((policy, trips.get(policy, 0), _Raw(health)))
        return "<h2>Policies</h2>" + _table(("policy", "incidents", "evaluation"), rows)


_SHOWN = ("block", "action", "path", "tx_hash", "tip", "by", "to", "reason", "outcome", "landed", "pause_first",
          "threat", "proposal", "owner")


class _Raw(str):
    """HTML built here from escaped parts: not escaped again."""


def _code(value: Any) -> _Raw | str:
    return _Raw(f"<code>{escape(str(value))}</code>") if value else "-"


def _table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else escape(str(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
