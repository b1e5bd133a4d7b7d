"""The daemon with its state on PostgreSQL ([state] database_url), against a real Anvil fork with the real Safe
v1.4.1: the same code paths as on SQLite pause a drain and keep the whole record there, and a restart resumes from
the checkpoint PostgreSQL holds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from onguard.chain.keys import load_guardian_account
from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import Roles, dev_account
from onguard.store.audit import AuditLog
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.runtime import Guardian

from .helpers import ALICE, drain_slice, is_paused, tokens

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address


def make_guardian(config_path: Path) -> Guardian:
    config = load_config(config_path)
    return Guardian(config, load_guardian_account(config.guardian_key))


async def handle_new_blocks(guardian: Guardian) -> list:
    decisions = await guardian.step()
    await guardian.drain_responses()
    return decisions


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
