"""The dashboard: served on a real local port from a real state database, refused without its token, every string
escaped; rendered by headless Chromium (Debian's `chromium`), whose DOM shows the incident with its race and
stages, the proposal awaiting signatures with its Safe tx hash and the policies' health, and whose screenshot is
written (docs/dashboard.png is one)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from onguard.errors import ConfigError
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStatus, IncidentStore, Outcome, ResponseStatus
from onguard.ops.dashboard import Dashboard
from onguard.ops.health import ReadinessRules, assess
from onguard.ops.metrics import Metrics
from onguard.ops.settings import DashboardSettings, parse_dashboard
from onguard.safe.tx import SafeTxData
from onguard.tomlfields import Table

TX = "0x" + "ab" * 32
TOKEN = "dashboard-token-for-tests"
SAFE = "0x" + "5a" * 20
VAULT = "0x" + "0a" * 20


def populated(path: Path) -> tuple[IncidentStore, str]:
    store = IncidentStore(path)
    incident, _ = store.open_or_join(chain_id=1, policy_id="vault-drain", cooldown=3600.0, severity="critical",
                                     title="vault drained 38% <script>alert(1)</script>", dry_run=False, block=20,
                                     block_time=1_000, evidence={"path": "mempool", "threat_tx": TX},
                                     status=IncidentStatus.OPEN, actions=("pause_vault",))
    store.add_timeline(incident.id, "decided", {"path": "mempool", "threat_tx": TX, "decided_ms": 1.7})
    store.add_timeline(incident.id, "response-broadcast", {"action": "pause_vault", "tx_hash": TX,
                                                           "signed_ms": 2.9, "broadcast_ms": 4.1})
    store.update_response(incident.id, "pause_vault", ResponseStatus.MINED, tx_hash=TX, block_number=21)
    store.add_timeline(incident.id, "response-included", {"action": "pause_vault", "block": 21, "included_ms": 980.0})
    store.add_timeline(incident.id, "race", {"threat_tx": TX, "pause_first": True, "pause": "block 21 position 0",
                                             "threat": "block 21 position 1, reverted"})
    store.record_outcome(incident.id, "pause_vault", Outcome.STOPPED_BEFORE_ATTACK,
                         {"landed": "stopped-before-attack"})
    store.set_status(incident.id, IncidentStatus.SAFE, reason="paused() holds")
    proposal = SafeTxStore(store.database).add(
        TxKind.PROPOSAL, SafeTxData.call(SAFE, 1, VAULT, bytes.fromhex("3f4ba83a"), 4),
        purpose="recover from incident 1: vault.unpause()", proposer="alice", incident_id=incident.id)
    store.record_evaluation_failure(1, "oracle-deviation", 19, "the read oracle.latestAnswer() reverted")
    return store, proposal.safe_tx_hash


def dashboard(store: IncidentStore, metrics: Metrics) -> Dashboard:
    metrics.chain_polled(22)
    metrics.block_handled(21, 1)
    metrics.preflight(True)
    rules = ReadinessRules(lag_budget=3, stale_after=60, mempool_required=False, require_preflight=True)
    return Dashboard(DashboardSettings(enabled=True, host="127.0.0.1", port=0, token_env="DASH_TOKEN", refresh=5),
                     store, chain_id=1, readiness=lambda: assess(metrics.snapshot(), rules),
                     snapshot=metrics.snapshot, environ={"DASH_TOKEN": TOKEN})


def test_the_page_needs_its_token_and_escapes_what_an_attacker_wrote(tmp_path: Path) -> None:
    store, safe_tx_hash = populated(tmp_path / "state.db")

    async def scenario() -> tuple[int, int, str]:
        board = dashboard(store, Metrics())
        port = await board.start(["vault-drain", "oracle-deviation"])
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/") as refused:
                    refused_status = refused.status
                async with http.get(f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer wrong"}) as bad:
                    bad_status = bad.status
                async with http.get(f"http://127.0.0.1:{port}/",
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as page:
                    assert page.status == 200
                    return refused_status, bad_status, await page.text()
        finally:
            await board.stop()

    try:
        refused, bad, html = asyncio.run(scenario())
    finally:
        store.close()
    assert (refused, bad) == (401, 401)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert safe_tx_hash in html and "READY" in html


def test_headless_chromium_renders_an_incident_its_race_the_proposal_and_policy_health(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium is not None, "the dashboard test needs Debian's chromium on PATH (./run-tests installs it)"
    store, safe_tx_hash = populated(tmp_path / "state.db")
    screenshot = tmp_path / "dashboard.png"

    async def browse(url: str, *flags: str) -> str:
        browser = await asyncio.create_subprocess_exec(
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1100", *flags, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await browser.communicate()
        assert browser.returncode == 0
        return out.decode()

    async def scenario() -> str:
        board = dashboard(store, Metrics())
        port = await board.start(["vault-drain", "oracle-deviation"])
        try:
            url = f"http://127.0.0.1:{port}/?token={TOKEN}"
            dom = await browse(url, "--dump-dom")
            await browse(url, f"--screenshot={screenshot}")
            return dom
        finally:
            await board.stop()

    try:
        dom = asyncio.run(scenario())
    finally:
        store.close()
    assert "#1" in dom and "vault drained 38%" in dom and "SAFE" in dom
    assert "race: pause FIRST: pause at block 21 position 0" in dom
    assert "decided 1.7 ms" in dom and "included 980.0 ms" in dom
    assert "stopped-before-attack" in dom
    assert safe_tx_hash in dom and "recover from incident 1" in dom
    assert "NOT evaluated at 1 block(s)" in dom and "oracle-deviation" in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("ONGUARD_DASHBOARD_SCREENSHOT"):  # to refresh docs/dashboard.png: set it to that path
        shutil.copy(screenshot, os.environ["ONGUARD_DASHBOARD_SCREENSHOT"])


@pytest.mark.parametrize("table, field, message", [
    ({"token": "s3cret"}, "dashboard.token", "secrets are never written"),
    ({"host": "0.0.0.0"}, "dashboard.host", "no token_env is set"),
    ({"port": 70000}, "dashboard.port", "is not a TCP port"),
    ({"token_env": "not a name"}, "dashboard.token_env", "is not an environment variable name"),
])
def test_bad_dashboard_settings_name_their_field(table: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dashboard(Table(table, file="onguard.toml", prefix="dashboard", error=ConfigError))
    assert caught.value.field == field and message in caught.value.message


def test_a_missing_token_variable_stops_the_start(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "state.db")
    try:
        with pytest.raises(ConfigError, match="DASH_TOKEN is not set"):
            Dashboard(DashboardSettings(enabled=True, host="127.0.0.1", port=0, token_env="DASH_TOKEN", refresh=5),
                      store, chain_id=1, readiness=lambda: None, snapshot=lambda: None, environ={})  # type: ignore
    finally:
        store.close()
