"""The daemon with its state on PostgreSQL ([state] database_url), against a real Anvil fork with the real Safe
v1.4.1: the same code paths as on SQLite pause a drain and keep the whole record there, a restart resumes from
the checkpoint PostgreSQL holds, and a server that stops answering does not stall the guardian."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import Roles, dev_account, write_config
from onguard.store.audit import AuditLog
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.store.settings import DatabaseSettings

from ..conftest import GUARDIAN_KEY_ENV
from ..pg import SilentProxy
from .helpers import ALICE, drain_slice, handle_new_blocks, is_paused, make_guardian, tokens

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address


def test_a_drain_is_paused_and_recorded_in_postgresql(chain, postgres_guardian_config, postgres_url, capsys):
    w3, world = chain.w3, chain.world
    assert not (postgres_guardian_config.parent / "onguard.db").exists()

    async def scenario() -> int:
        guardian = make_guardian(postgres_guardian_config)
        try:
            await guardian.start()
            await guardian.step()
            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            (decision,) = await handle_new_blocks(guardian)
            return decision.incident.id
        finally:
            await guardian.close()

    incident_id = asyncio.run(scenario())
    assert is_paused(w3, world)
    assert not (postgres_guardian_config.parent / "onguard.db").exists()  # nothing went to a SQLite file
    store = IncidentStore(load_config(postgres_guardian_config).state)
    try:
        store_checkpoint = store.checkpoint("blocks", world.chain_id)[0]
        assert store.name == postgres_url
        assert store.incident(incident_id).status == IncidentStatus.SAFE
        (response,) = store.responses(incident_id)
        assert response.status == ResponseStatus.MINED and response.tx_hash
        assert [tx.tx_hash for tx in store.response_txs(GUARDIAN)] == [response.tx_hash]
        kinds = [entry.kind for entry in store.timeline(incident_id)]
        assert kinds[0] == "detected" and "response-mined" in kinds
        count, broken = AuditLog(store.database).verify()
        assert broken is None and count >= 2  # the config, the decision, the status change
    finally:
        store.close()
    assert main(["--config", str(postgres_guardian_config), "audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().out
    main(["--config", str(postgres_guardian_config), "status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert status["database"] == postgres_url
    assert status["incidents"]["safe_and_watched"] == [incident_id]
    assert status["last_block"]["number"] == store_checkpoint  # the checkpoint PostgreSQL holds


def test_a_restart_resumes_from_the_checkpoint_postgresql_holds(chain, postgres_guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = make_guardian(postgres_guardian_config)
        await guardian.start()
        await guardian.step()
        checkpoint = guardian.source.last_committed
        await guardian.close()
        receipts = [drain_slice(w3, world, ALICE, tokens(100_000)) for _ in range(3)]  # while the daemon is down
        chain.mine(1)
        restarted = make_guardian(postgres_guardian_config)
        try:
            await restarted.start()
            assert restarted.source.last_committed == checkpoint
            decisions = await handle_new_blocks(restarted)
            assert decisions[0].opened and decisions[0].finding.block_number == receipts[2]["blockNumber"]
            assert len(restarted.store.incidents()) == 1
        finally:
            await restarted.close()
        assert is_paused(w3, world)

    asyncio.run(scenario())


class LoopStalls:
    """The longest the event loop went without running this task's next step (it asks for one every 10 ms)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - before - 0.01)

    def reset(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def stop(self) -> None:
        self._task.cancel()


async def until(condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Waits on the loop (which must be free for it) until `condition()` holds; sync web3 calls go to a thread."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_database_that_stops_answering_neither_stalls_the_guardian_nor_stops_the_pause(
        chain, tmp_path, monkeypatch, postgres_url):
    """The server goes silent (connections open, no answer, nothing refused) while the daemon runs: the drain that
    follows is still paused (cut off, the replica acts from chain state after partition_deadline), the loop goes on
    handling blocks, and once the server answers again the record is saved: one incident, paused."""
    w3, world = chain.w3, chain.world
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    with SilentProxy(postgres_url) as proxy:
        config_path = write_config(world, tmp_path, key_env=GUARDIAN_KEY_ENV, poll_interval="50ms",
                                   database_url=proxy.url_through(postgres_url))
        with config_path.open("a") as config:
            config.write('\n[replicas]\nid = "solo"\nlease_ttl = "2s"\nrenew_every = "500ms"\n'
                         'partition_deadline = "1s"\n')

        async def scenario() -> None:
            guardian = make_guardian(config_path)
            stop = asyncio.Event()
            daemon = asyncio.create_task(guardian.run(stop))
            stalls = LoopStalls()
            try:
                await asyncio.wait_for(guardian.ready.wait(), timeout=30)
                healthy = stalls.reset()
                proxy.blackhole()
                for _ in range(3):
                    await asyncio.to_thread(drain_slice, w3, world, ALICE, tokens(100_000))
                await until(lambda: is_paused(w3, world), "the vault paused while the database is silent")
                assert guardian.replica.cut_off()
                await asyncio.to_thread(chain.mine, 3)
                head = await asyncio.to_thread(lambda: w3.eth.block_number)
                await until(lambda: (guardian.source.last_committed or 0) >= head, "the next blocks handled")
                silent = stalls.reset()
                print(f"\nworst event-loop stall: {healthy * 1000:.0f} ms while the database answered, "
                      f"{silent * 1000:.0f} ms while it was silent")
                assert guardian.store.unsaved_writes > 0  # the record waits in memory

                proxy.restore()
                await until(lambda: not guardian.replica.cut_off(), "the replica reaching the database again")
                await asyncio.to_thread(chain.mine, 1)
                await until(lambda: guardian.store.unsaved_writes == 0, "the kept writes saved")
            finally:
                stalls.stop()
                stop.set()
                await asyncio.wait_for(daemon, timeout=60)
                await guardian.close()

        asyncio.run(scenario())
    store = IncidentStore(DatabaseSettings(path=tmp_path / "unused.db", url=postgres_url))
    try:
        (incident,) = store.incidents()
        assert incident.id > 0 and incident.policy_id == "vault-drain"
        assert [r.action for r in store.responses(incident.id)] == ["pause_vault"]
    finally:
        store.close()
    assert is_paused(w3, world)
