"""The guardian against real Anvil forks with the real Safe v1.4.1: it pauses a drain through the module, stays
quiet for honest use, never pauses twice, and resumes where it left off."""

from __future__ import annotations

import asyncio

import pytest
from web3 import Web3

from onguard.config import load_config
from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.errors import NotAuthorised
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import (
    ALICE,
    BOB,
    CAROL,
    deposit,
    drain_slice,
    handle_new_blocks,
    is_paused,
    make_guardian,
    restart_finishes_the_response,
    started,
    tokens,
    vault_cash,
    withdraw,
)

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address


def test_drain_trips_the_policy_and_the_safe_module_pauses_the_vault(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            for _ in range(2):
                drain_slice(w3, world, ALICE, tokens(100_000))
            assert await handle_new_blocks(guardian) == []  # 200k of 1M: under the 25% threshold
            assert not is_paused(w3, world)

            drain_slice(w3, world, ALICE, tokens(100_000))  # 300k > 250k
            decisions = await handle_new_blocks(guardian)
            assert [d.finding.policy.id for d in decisions] == ["vault-drain"]
            assert decisions[0].actions == ("pause_vault",)
            incident = guardian.store.incident(decisions[0].incident.id)
            assert incident.status == IncidentStatus.SAFE
            assert int(incident.evidence["value"]) == tokens(300_000)
            assert int(incident.evidence["state"]["assets"]) == tokens(700_000)
            (response,) = guardian.store.responses(incident.id)
            assert response.status == ResponseStatus.MINED
        finally:
            await guardian.close()

        assert is_paused(w3, world)
        receipt = w3.eth.get_transaction_receipt(response.tx_hash)
        tx = w3.eth.get_transaction(response.tx_hash)
        assert tx["from"] == GUARDIAN and tx["to"] == world.module
        # The Safe itself executed the pause for its module (Safe v1.4.1's ExecutionFromModuleSuccess event).
        safe_events = [log for log in receipt["logs"] if log["address"] == world.safe]
        success_topic = Web3.keccak(text="ExecutionFromModuleSuccess(address)")
        assert any(log["topics"][0] == success_topic and log["topics"][1][-20:] == bytes.fromhex(world.module[2:])
                   for log in safe_events)
        # And the attacker's next slice now reverts.
        cash_before = vault_cash(w3, world)
        assert drain_slice(w3, world, BOB, tokens(100_000))["status"] == 0
        assert vault_cash(w3, world) == cash_before

    asyncio.run(scenario())


def test_honest_deposits_and_withdrawals_trip_nothing(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            deposit(w3, world, BOB, tokens(200_000))
            withdraw(w3, world, ALICE, tokens(50_000))
            withdraw(w3, world, BOB, tokens(150_000))
            withdraw(w3, world, CAROL, tokens(40_000))
            chain.mine(6)
            withdraw(w3, world, ALICE, tokens(60_000))  # a new window: nothing adds up to 25%
            assert await handle_new_blocks(guardian) == []
            assert guardian.store.incidents() == []
        finally:
            await guardian.close()
        assert not is_paused(w3, world)

    asyncio.run(scenario())


def test_the_same_incident_never_sends_a_second_pause(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            nonce_before = w3.eth.get_transaction_count(GUARDIAN)
            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            first = await handle_new_blocks(guardian)
            # The withdrawals (blocks n-2..n) stay in the 5-block window up to block n+2, so the policy trips
            # again at n+1 and n+2, then falls quiet.
            chain.mine(3)
            again = await handle_new_blocks(guardian)
            assert len(first) == 1 and first[0].opened
            assert [d.finding.block_number for d in again] == [first[0].finding.block_number + 1,
                                                                first[0].finding.block_number + 2]
            assert all(not d.opened and d.actions == () for d in again)
            assert {d.incident.id for d in first + again} == {first[0].incident.id}
            assert w3.eth.get_transaction_count(GUARDIAN) == nonce_before + 1
            kinds = [entry.kind for entry in guardian.store.timeline(first[0].incident.id)]
            assert kinds.count("tripped-again") == 2 and kinds.count("response-mined") == 1
            # A second response for the same incident and action is refused by the store itself.
            assert guardian.store.claim_response(first[0].incident.id, "pause_vault") is False
        finally:
            await guardian.close()

    asyncio.run(scenario())


def test_a_vault_already_paused_is_not_paused_again(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            for _ in range(3):
                drain_slice(w3, world, CAROL, tokens(90_000))
            # Someone else (here: the Safe's owners, impersonated) paused the vault first.
            w3.provider.make_request("anvil_impersonateAccount", [world.safe])
            w3.provider.make_request("anvil_setBalance", [world.safe, hex(10**18)])
            contract(w3, "Vault", world.vault).functions.pause().transact({"from": world.safe})
            nonce_before = w3.eth.get_transaction_count(GUARDIAN)
            decision, *joined = await handle_new_blocks(guardian)
            assert decision.opened and all(not d.opened for d in joined)
            (response,) = guardian.store.responses(decision.incident.id)
            assert response.status == ResponseStatus.ALREADY_DONE and response.tx_hash is None
            assert guardian.store.incident(decision.incident.id).status == IncidentStatus.SAFE
            assert w3.eth.get_transaction_count(GUARDIAN) == nonce_before
        finally:
            await guardian.close()

    asyncio.run(scenario())


def test_the_module_refuses_a_guardian_key_that_is_not_registered(chain, guardian_config, monkeypatch):
    w3, world = chain.w3, chain.world
    stranger = dev_account(Roles.ATTACKER)
    module = contract(w3, "GuardianModule", world.module)
    pause = contract(w3, "Vault", world.vault).encode_abi("pause", [])
    tx_hash = module.functions.execute(world.vault, 0, pause, 0).transact({"from": stranger.address,
                                                                            "gas": 300_000})
    assert w3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 0
    assert not is_paused(w3, world)
    # The registered key passes the same call (proves the refusal above is about the key, not the call).
    tx_hash = module.functions.execute(world.vault, 0, pause, 0).transact({"from": GUARDIAN, "gas": 300_000})
    assert w3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 1
    assert is_paused(w3, world)

    # The daemon, given an unregistered key, refuses to start rather than watch without the power to act.
    monkeypatch.setenv("ONGUARD_TEST_GUARDIAN_KEY", stranger.key.to_0x_hex())

    async def start_with_stranger() -> None:
        guardian = make_guardian(guardian_config)
        try:
            await guardian.start()
        finally:
            await guardian.close()

    with pytest.raises(NotAuthorised, match="NOT a registered guardian of the module"):
        asyncio.run(start_with_stranger())


def test_a_restart_resumes_from_the_checkpoint_without_missing_blocks(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        checkpoint = guardian.source.last_committed
        await guardian.close()
        # While the daemon is down, the drain happens.
        receipts = [drain_slice(w3, world, ALICE, tokens(100_000)) for _ in range(3)]
        chain.mine(1)
        restarted = make_guardian(guardian_config)
        try:
            await restarted.start()
            assert restarted.source.last_committed == checkpoint
            head = w3.eth.block_number
            decisions = await handle_new_blocks(restarted)
            # Every block mined while it was down was read: the trip is dated at the third slice's block.
            assert decisions[0].opened and decisions[0].finding.block_number == receipts[2]["blockNumber"]
            assert len(restarted.store.incidents()) == 1
            assert restarted.source.last_committed == head
        finally:
            await restarted.close()
        assert is_paused(w3, world)

    asyncio.run(scenario())


def test_the_daemon_loop_pauses_a_live_drain_and_stops_cleanly(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = make_guardian(guardian_config)
        stop = asyncio.Event()
        daemon = asyncio.create_task(guardian.run(stop))
        try:
            # ready: the loop follows from the head it started at, so nothing mined from here is skipped
            await asyncio.wait_for(guardian.ready.wait(), timeout=20)
            for _ in range(3):
                await asyncio.to_thread(drain_slice, w3, world, ALICE, tokens(100_000))
            for _ in range(200):
                # Sync web3 through a thread: web3 shares one threading lock between its sync and async session
                # caches, so a sync call on the event loop can deadlock with the daemon's async requests.
                if await asyncio.to_thread(is_paused, w3, world):
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(daemon, timeout=20)
            state = guardian.config.state
            await guardian.close()
        assert is_paused(w3, world)
        store = IncidentStore(state)
        (incident,) = store.incidents()
        assert incident.status == IncidentStatus.SAFE
        store.close()

    asyncio.run(scenario())


def test_a_response_interrupted_by_a_crash_is_finished_after_the_restart(chain, guardian_config):
    w3, world = chain.w3, chain.world
    config = load_config(guardian_config)
    # The state a crash leaves between deciding to pause and sending: the action claimed, nothing sent.
    store = IncidentStore(config.database)
    incident = store.open_incident(chain_id=world.chain_id, policy_id="vault-drain", severity="critical",
                                   title="drain", dry_run=False, block=1, block_time=1, evidence={})
    assert store.claim_response(incident.id, "pause_vault")
    store.close()

    asyncio.run(restart_finishes_the_response(guardian_config, incident.id))
    assert is_paused(w3, world)


def test_withdrawals_reorganised_away_are_forgotten(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            chain.mine(1)  # anvil can reorganise only blocks mined after the fork point
            for _ in range(2):
                drain_slice(w3, world, ALICE, tokens(100_000))
            assert await handle_new_blocks(guardian) == []
            # The two blocks holding those withdrawals are replaced by empty ones: they never happened.
            reorg = w3.provider.make_request("anvil_reorg", [2, []])
            assert "error" not in reorg, reorg
            chain.mine(1)
            assert await handle_new_blocks(guardian) == []
            drain_slice(w3, world, ALICE, tokens(100_000))
            # Only 100k is really withdrawn now; counting the orphaned 200k would trip (300k > 250k).
            assert await handle_new_blocks(guardian) == []
            assert guardian.source.last_committed == w3.eth.block_number
            assert not is_paused(w3, world)
        finally:
            await guardian.close()

    asyncio.run(scenario())


def test_a_policy_can_trip_the_circuit_breaker_and_pause_in_one_incident(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    policies = tmp_path / "breaker-policies"
    policies.mkdir()
    (policies / "outflow.toml").write_text("""
id = "vault-outflow"
description = "Any two withdrawals within 3 blocks: halt outflows and pause"
kind = "event"
severity = "high"
response = ["trip_breaker", "pause_vault"]
[match]
contract = "vault"
event = "Withdraw"
[aggregate]
function = "count"
window_blocks = 3
[trigger]
condition = "value > 1"
""")
    # guardian_config put the guardian key in the environment; this config differs only by its policies.
    config_path = write_config(world, tmp_path / "breaker", key_env=GUARDIAN_KEY_ENV, policies_dir=policies)

    async def scenario() -> None:
        guardian = await started(config_path)
        try:
            withdraw(w3, world, BOB, tokens(1_000))
            assert await handle_new_blocks(guardian) == []
            withdraw(w3, world, CAROL, tokens(1_000))
            (decision,) = await handle_new_blocks(guardian)
            assert decision.actions == ("trip_breaker", "pause_vault")
            statuses = {r.action: r.status for r in guardian.store.responses(decision.incident.id)}
            assert statuses == {"trip_breaker": ResponseStatus.MINED, "pause_vault": ResponseStatus.MINED}
            assert guardian.store.incident(decision.incident.id).status == IncidentStatus.SAFE
        finally:
            await guardian.close()
        assert contract(w3, "CircuitBreaker", world.breaker).functions.tripped().call()
        assert is_paused(w3, world)

    asyncio.run(scenario())


def test_a_drain_spanning_a_restart_is_judged_over_its_whole_window(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        for _ in range(2):
            drain_slice(w3, world, ALICE, tokens(100_000))
        assert await handle_new_blocks(guardian) == []  # 200k seen, under the threshold
        await guardian.close()

        restarted = make_guardian(guardian_config)
        try:
            await restarted.start()  # replays the blocks before the checkpoint into the 5-block window
            drain_slice(w3, world, ALICE, tokens(100_000))
            decisions = await handle_new_blocks(restarted)
            assert [d.finding.policy.id for d in decisions] == ["vault-drain"]
            assert int(decisions[0].finding.evidence["value"]) == tokens(300_000)
        finally:
            await restarted.close()
        assert is_paused(w3, world)

    asyncio.run(scenario())


def test_a_drain_mined_between_start_and_the_first_poll_is_judged_whole(chain, guardian_config):
    """start_block "latest" is the head seen while starting: blocks mined before the first poll (a slow endpoint, a
    busy machine) are handled, not skipped because the first poll found a newer head."""
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = make_guardian(guardian_config)
        await guardian.start()
        try:
            for _ in range(3):  # 300k of 1M over three blocks, all before the daemon's first poll
                drain_slice(w3, world, ALICE, tokens(100_000))
            decisions = await handle_new_blocks(guardian)
            assert [d.finding.policy.id for d in decisions] == ["vault-drain"]
            assert is_paused(w3, world)
        finally:
            await guardian.close()

    asyncio.run(scenario())
