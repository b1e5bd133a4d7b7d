"""The safe state holds through faults, on real Anvil with the real Safe: a reorganisation that orphans the pause,
a send endpoint answering HTTP 500 for a while, the daemon killed between send and receipt, a database that
refuses writes during the response. Each test asserts the end state: the vault paused, exactly one effective
pause, and the incident's record true to the chain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from web3 import Web3

from onguard.config import load_config
from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.incidents.store import IncidentStatus, IncidentStore, Outcome, ResponseStatus
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import (
    ALICE,
    ATTACKER,
    LIMIT,
    drain_slice,
    is_paused,
    make_guardian,
    restart_finishes_the_response,
    started,
    tokens,
    until,
)

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address


def effective_pauses(w3: Web3, world, since_block: int) -> list[str]:  # type: ignore[no-untyped-def]
    """The guardian's successful transactions on the canonical chain after `since_block`."""
    found = []
    for number in range(since_block + 1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == GUARDIAN and w3.eth.get_transaction_receipt(tx["hash"])["status"] == 1:
                found.append(tx["hash"].to_0x_hex())
    return found


def rpc(w3: Web3, method: str, *params: object) -> object:
    answer = w3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer.get("result")


# ---- (a) a reorganisation orphans the mined pause ----


async def _drained_and_paused(chain, guardian: Guardian) -> tuple[object, int, object]:  # type: ignore[no-untyped-def]
    """Three drain slices after a snapshot, the guardian's trip and its pause mined: (snapshot, incident, response)."""
    snapshot = rpc(chain.w3, "evm_snapshot")
    for _ in range(3):
        drain_slice(chain.w3, chain.world, ALICE, tokens(100_000))
    (decision,) = await guardian.step()
    await guardian.drain_responses()
    (first,) = guardian.store.responses(decision.incident.id)
    assert first.status == ResponseStatus.MINED and is_paused(chain.w3, chain.world)
    return snapshot, decision.incident.id, first


def _drain_again_on_a_new_chain(chain, snapshot: object) -> None:  # type: ignore[no-untyped-def]
    """The chain reorganised back to `snapshot`: the same three drain slices mined again, the pause not."""
    rpc(chain.w3, "evm_revert", snapshot)
    for _ in range(3):
        drain_slice(chain.w3, chain.world, ALICE, tokens(100_000))


def test_a_reorg_that_orphans_the_pause_is_answered_by_sending_it_again(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            start = w3.eth.block_number
            snapshot, incident_id, first = await _drained_and_paused(chain, guardian)

            # The chain is reorganised: the drain is mined again, the pause is not.
            _drain_again_on_a_new_chain(chain, snapshot)
            chain.mine(2)  # the new chain outgrows the old one
            assert not is_paused(w3, world) and _receipt_gone(w3, first.tx_hash)

            await until(lambda: is_paused(w3, world), "the vault paused again", step=guardian.step)
            await guardian.drain_responses()
            await guardian.step()  # one more comparison with the chain after the re-sent pause landed

            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED and response.orphaned == 1
            assert response.outcome == Outcome.ORPHANED_RESENT
            assert response.outcome_detail["landed"] == Outcome.CONTAINED
            assert w3.eth.get_transaction_receipt(response.tx_hash)["status"] == 1
            assert guardian.store.incident(incident_id).status == IncidentStatus.SAFE
            kinds = [e.kind for e in guardian.store.timeline(incident_id)]
            assert "response-orphaned" in kinds and kinds.count("response-mined") == 2
            assert len(guardian.store.incidents()) == 1  # the re-trip joined the incident
        finally:
            await guardian.close()
        assert is_paused(w3, world)
        assert len(effective_pauses(w3, world, start)) == 1

    asyncio.run(scenario())


def test_an_orphaned_pause_whose_action_another_hand_put_in_effect_is_recorded_as_already_done(
        chain, guardian_config):
    """A reorganisation drops the guardian's pause, and on the new chain the Safe itself paused the vault: nothing
    is sent again, and the response says what the chain shows (already done), not "orphaned, being sent again"."""
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            start = w3.eth.block_number
            snapshot, incident_id, first = await _drained_and_paused(chain, guardian)

            _drain_again_on_a_new_chain(chain, snapshot)  # ... and on it the owners' own pause
            rpc(w3, "anvil_impersonateAccount", world.safe)
            rpc(w3, "anvil_setBalance", world.safe, hex(10**18))
            owners_pause = contract(w3, "Vault", world.vault).functions.pause().transact({"from": world.safe})
            rpc(w3, "anvil_stopImpersonatingAccount", world.safe)
            chain.mine(2)
            assert is_paused(w3, world) and _receipt_gone(w3, first.tx_hash)

            def recorded() -> bool:
                (response,) = guardian.store.responses(incident_id)
                return response.status == ResponseStatus.ALREADY_DONE

            await until(recorded, "the orphaned response recorded as already done", step=guardian.step)
            await guardian.drain_responses()
            (response,) = guardian.store.responses(incident_id)
            assert response.orphaned == 1
            assert guardian.store.incident(incident_id).status == IncidentStatus.SAFE
            kinds = [e.kind for e in guardian.store.timeline(incident_id)]
            assert kinds.index("response-orphaned") < kinds.index("response-already-done")
            assert effective_pauses(w3, world, start) == []  # nothing of the guardian's was sent again
            assert w3.eth.get_transaction_receipt(owners_pause)["status"] == 1
        finally:
            await guardian.close()

    asyncio.run(scenario())


def test_anvil_reorg_dropping_the_pause_block_is_answered_by_sending_it_again(chain, guardian_config):
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            chain.mine(1)  # anvil reorganises only blocks mined after the fork point
            start, nonce = w3.eth.block_number, w3.eth.get_transaction_count(GUARDIAN)
            drains = [drain_slice(w3, world, ALICE, tokens(100_000))["transactionHash"].to_0x_hex()
                      for _ in range(3)]
            (decision,) = await guardian.step()
            await guardian.drain_responses()
            first_incident = decision.incident.id
            (first,) = guardian.store.responses(first_incident)
            # The pause's block is replaced by an empty one (the drain stays); the block source had not read that
            # block yet, so this reorganisation is no rewind for it.
            rpc(w3, "anvil_reorg", 1, [])
            assert not is_paused(w3, world) and _receipt_gone(w3, first.tx_hash)
            # Anvil 1.7.1's anvil_reorg on a fork leaves the module's record of the orphaned execution in place
            # (getAction's lastExecuted keeps the orphaned block's time while paused() is back to false), so the
            # module's cooldown would refuse the re-sent pause: let the hour pass, as a real reorg would undo it.
            # (An hour of chain time also ends the policy's cooldown: the next trip opens a second incident.)
            rpc(w3, "evm_increaseTime", 3600)
            chain.mine(1)

            def recorded() -> bool:
                (response,) = guardian.store.responses(first_incident)
                return response.status == ResponseStatus.MINED and response.orphaned == 1

            await until(lambda: is_paused(w3, world) and recorded(), "paused again, and recorded",
                        step=guardian.step)
            await guardian.drain_responses()
            (response,) = guardian.store.responses(first_incident)
            assert response.outcome == Outcome.ORPHANED_RESENT and response.tx_hash != first.tx_hash
            assert sorted(response.outcome_detail["harm_before"]) == sorted(drains)
            assert w3.eth.get_transaction_receipt(response.tx_hash)["status"] == 1
            assert all(r.tx_hash == response.tx_hash for i in guardian.store.incidents()
                       for r in guardian.store.responses(i.id))  # every incident names the one live pause
            # One pause in effect. (Not "one transaction": on a loaded machine the re-sent pause was seen to revert
            # once or twice on the state Anvil 1.7.1's anvil_reorg leaves behind on a fork, and the reconciler
            # tried again until it held — the behaviour wanted; the 14-block test below, on a clean state, pins
            # the re-use of the orphaned nonce.)
            assert nonce + 1 <= w3.eth.get_transaction_count(GUARDIAN)
            assert len(effective_pauses(w3, world, start)) == 1
        finally:
            await guardian.close()

    asyncio.run(scenario())


def test_an_orphaned_response_joins_the_pause_a_new_trip_already_started(chain, guardian_config):
    """The losing order of the test above, forced: the second trip's campaign is under way (held before its send)
    when the reconciler finds the first incident's pause orphaned. The first incident joins that campaign, so the
    one live pause is recorded for both as soon as it is mined — no later poll needed (none comes without a block)."""
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            chain.mine(1)  # anvil reorganises only blocks mined after the fork point
            drains = [drain_slice(w3, world, ALICE, tokens(100_000))["transactionHash"].to_0x_hex()
                      for _ in range(3)]
            (decision,) = await guardian.step()
            await guardian.drain_responses()
            first_incident = decision.incident.id
            (first,) = guardian.store.responses(first_incident)
            rpc(w3, "anvil_reorg", 1, [])
            assert not is_paused(w3, world) and _receipt_gone(w3, first.tx_hash)
            rpc(w3, "evm_increaseTime", 3600)  # the module's and the policy's cooldowns end (see the test above)
            chain.mine(1)
            # The send lock is held through the step: the new trip's campaign starts but cannot send before the
            # reconciler has compared the chain (and found the first pause orphaned).
            async with guardian.responder._send_lock:
                (second,) = [d for d in await guardian.step() if d.opened]  # the cooldown is over: a new incident
                (orphaned,) = guardian.store.responses(first_incident)
                assert orphaned.status == ResponseStatus.ORPHANED and guardian.responder.in_flight(orphaned.action)
            await guardian.drain_responses()
            # No step since: the campaign itself recorded its end for the first incident too (mined, or reverted on
            # the state anvil_reorg leaves behind, see the test above).
            (joined,), (own,) = (guardian.store.responses(i) for i in (first_incident, second.incident.id))
            assert joined.status == own.status != ResponseStatus.ORPHANED and joined.tx_hash == own.tx_hash

            def recorded() -> bool:
                (response,) = guardian.store.responses(first_incident)
                return response.status == ResponseStatus.MINED and response.orphaned == 1

            await until(lambda: is_paused(w3, world) and recorded(), "paused again, and recorded", step=guardian.step)
            await guardian.drain_responses()
            (response,) = guardian.store.responses(first_incident)
            assert response.outcome == Outcome.ORPHANED_RESENT and response.tx_hash != first.tx_hash
            assert sorted(response.outcome_detail["harm_before"]) == sorted(drains)
            assert all(r.tx_hash == response.tx_hash for i in guardian.store.incidents()
                       for r in guardian.store.responses(i.id))  # every incident names the one live pause
        finally:
            await guardian.close()

    asyncio.run(scenario())


def test_a_reorg_fourteen_blocks_deep_re_including_the_drain_and_not_the_pause_is_answered(chain, guardian_config):
    """The issue's case: the daemon had read and committed the pause's block and ten more; a reorganisation 14
    blocks deep brings a chain with the same three drain slices and no pause. The block source walks back to the
    common ancestor (deeper than any fixed window), the reconciler re-checks every receipt from there, finds the
    pause orphaned and sends it again at the same nonce; the record says so. (The new chain is made with
    evm_revert and re-mined blocks: Anvil 1.7.1's anvil_reorg on a fork leaves some of the orphaned state.)"""
    w3, world = chain.w3, chain.world

    async def scenario() -> None:
        guardian = await started(guardian_config)
        try:
            start, nonce = w3.eth.block_number, w3.eth.get_transaction_count(GUARDIAN)
            fork_point = rpc(w3, "evm_snapshot")
            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            (decision,) = await guardian.step()
            await guardian.drain_responses()
            (first,) = guardian.store.responses(decision.incident.id)
            assert first.status == ResponseStatus.MINED and is_paused(w3, world)
            chain.mine(10)
            await guardian.step()
            assert guardian.source.last_committed == w3.eth.block_number == start + 14
            rpc(w3, "evm_revert", fork_point)
            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            chain.mine(12)  # the new chain outgrows the old one: 15 blocks past the common ancestor
            assert not is_paused(w3, world) and _receipt_gone(w3, first.tx_hash)

            def recorded() -> bool:
                (response,) = guardian.store.responses(decision.incident.id)
                return response.status == ResponseStatus.MINED and response.orphaned == 1

            await until(lambda: is_paused(w3, world) and recorded(), "paused again, and recorded",
                        step=guardian.step)
            await guardian.drain_responses()
            (response,) = guardian.store.responses(decision.incident.id)
            assert response.outcome == Outcome.ORPHANED_RESENT and response.tx_hash != first.tx_hash
            # The pause was re-sent before the new chain's drain blocks were judged again: the harm is the trip's
            # (the evidence's transactions were orphaned with the pause), measured by the evidence's value.
            assert response.outcome_detail["landed"] == Outcome.CONTAINED
            assert response.outcome_detail["loss"] == tokens(300_000)
            assert w3.eth.get_transaction_receipt(response.tx_hash)["status"] == 1
            assert w3.eth.get_transaction_count(GUARDIAN) == nonce + 1  # the orphaned nonce, used again
            assert len(effective_pauses(w3, world, start)) == 1
            assert guardian.store.incident(decision.incident.id).status == IncidentStatus.SAFE
        finally:
            await guardian.close()

    asyncio.run(scenario())


def _receipt_gone(w3: Web3, tx_hash: str) -> bool:
    try:
        return w3.eth.get_transaction_receipt(tx_hash) is None
    except Exception:  # noqa: BLE001 - web3 raises TransactionNotFound for an unknown hash
        return True


# ---- (b) the send endpoint answers HTTP 500 for a while ----


def test_a_send_endpoint_failing_for_a_while_is_retried_with_back_off_until_the_pause_lands(chain, guardian_config):
    from .sendstub import send_stub

    w3, world = chain.w3, chain.world

    async def scenario(stub) -> None:  # type: ignore[no-untyped-def]
        guardian = await started(guardian_config)
        try:
            start = w3.eth.block_number
            stub.failing.set()
            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            (decision,) = await guardian.step()
            await guardian.drain_responses()
            incident_id = decision.incident.id
            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.FAILED and "every endpoint refused" in response.error
            assert guardian.store.incident(incident_id).status == IncidentStatus.FAILED
            assert response.outcome == Outcome.FAILED and not is_paused(w3, world)

            async def step() -> None:
                await guardian.step()
                await guardian.drain_responses()

            # No new block is needed: the daemon keeps trying, spaced by the back-off, as long as it fails.
            def failures() -> int:
                return [e.kind for e in guardian.store.timeline(incident_id)].count("response-failed")

            await until(lambda: failures() >= 3, "three failed attempts", step=step)
            assert stub.refused >= 3
            stub.failing.clear()  # the endpoint comes back
            await until(lambda: is_paused(w3, world), "the vault paused", step=step)
            await step()

            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED and response.outcome == Outcome.CONTAINED
            assert guardian.store.incident(incident_id).status == IncidentStatus.SAFE
            kinds = [e.kind for e in guardian.store.timeline(incident_id)]
            assert kinds.count("response-failed") >= 3 and kinds[-1] != "response-failed"
        finally:
            await guardian.close()
        assert len(effective_pauses(w3, world, start)) == 1

    with send_stub(chain.node.rpc_url) as stub:
        text = guardian_config.read_text()
        guardian_config.write_text(text + f'\n[response]\nretry_backoff = "100ms"\nretry_backoff_max = "400ms"\n'
                                          f'[[response.endpoints]]\nurl = "{stub.url}"\nprivate = false\n')
        asyncio.run(scenario(stub))
        assert stub.passed >= 1


# ---- (c) the daemon is killed between send and receipt ----


def kill_the_daemon_after_it_sent_the_pause(chain, config_path: Path, log: Path) -> list[tuple[str, int, int]]:
    """`onguard run` in its own process trips on a drain and sends the pause with mining held; it is SIGKILLed once
    the pause is stored and in the node's pool. Returns the response transactions it stored."""
    w3, world = chain.w3, chain.world
    database = load_config(config_path).database
    vault = contract(w3, "Vault", world.vault)
    with log.open("w") as output:
        daemon = subprocess.Popen([sys.executable, "-m", "onguard.cli.main", "run", "--config", str(config_path)],
                                  stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            _wait(lambda: _checkpoint(database) is not None, "the daemon handled a block", daemon)
            for _ in range(2):
                drain_slice(w3, world, ALICE, tokens(100_000))
            rpc(w3, "evm_setAutomine", False)  # mining held: the pause will wait in the pool
            shares = vault.functions.previewWithdraw(tokens(100_000)).call()
            vault.functions.redeemFor(ALICE, ATTACKER, shares).transact({"from": ATTACKER, "gas": 500_000})
            rpc(w3, "evm_mine")  # the third slice: the daemon trips and sends the pause
            _wait(lambda: _sent_and_pooled(w3, database), "the pause stored and in the pool", daemon)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    return _stored(database)


def test_a_daemon_killed_before_the_receipt_resumes_the_same_nonce_with_higher_fees(chain, guardian_config,
                                                                                    tmp_path):
    w3, world = chain.w3, chain.world
    database = load_config(guardian_config).database
    nonce, start = w3.eth.get_transaction_count(GUARDIAN), w3.eth.block_number
    stored_before = kill_the_daemon_after_it_sent_the_pause(chain, guardian_config, tmp_path / "daemon.log")

    async def restart() -> None:
        guardian = make_guardian(guardian_config)
        try:
            await guardian.start()  # compares the open incident with the chain: the pause is not in effect
            await until(lambda: len(_stored(database)) > len(stored_before), "a replacement stored")
            await asyncio.to_thread(rpc, w3, "evm_mine")
            await guardian.drain_responses()
            await guardian.step()
            (incident,) = guardian.store.incidents()
            (response,) = guardian.store.responses(incident.id)
            stored = _stored(database)
            assert {tx[1] for tx in stored} == {nonce}  # every transaction at the one nonce
            assert stored[-1][2] > stored_before[-1][2]  # the replacement pays more than what was stuck
            assert response.status == ResponseStatus.MINED and response.tx_hash == stored[-1][0]
            assert guardian.store.incident(incident.id).status == IncidentStatus.SAFE
            broadcast = [e.detail for e in guardian.store.timeline(incident.id) if e.kind == "response-broadcast"]
            assert broadcast[-1]["replaces"] == stored_before[-1][0] and broadcast[-1]["nonce"] == nonce
        finally:
            await guardian.close()

    try:
        asyncio.run(restart())
    finally:
        rpc(w3, "evm_setAutomine", True)
    assert is_paused(w3, world)
    assert w3.eth.get_transaction_count(GUARDIAN) == nonce + 1
    assert len(effective_pauses(w3, world, start)) == 1


def test_a_pause_mined_while_the_daemon_was_down_is_recorded_after_the_restart(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    nonce, start = w3.eth.get_transaction_count(GUARDIAN), w3.eth.block_number
    stored_before = kill_the_daemon_after_it_sent_the_pause(chain, guardian_config, tmp_path / "daemon.log")
    rpc(w3, "evm_mine")  # the pause the killed daemon sent is mined while nothing watches
    rpc(w3, "evm_setAutomine", True)
    assert is_paused(w3, world)

    async def restart() -> None:
        guardian = make_guardian(guardian_config)
        try:
            await guardian.start()
            await guardian.drain_responses()
            (incident,) = guardian.store.incidents()
            (response,) = guardian.store.responses(incident.id)
            assert response.status == ResponseStatus.MINED and response.tx_hash == stored_before[-1][0]
            assert response.outcome == Outcome.CONTAINED
            assert guardian.store.incident(incident.id).status == IncidentStatus.SAFE
        finally:
            await guardian.close()

    asyncio.run(restart())
    assert w3.eth.get_transaction_count(GUARDIAN) == nonce + 1  # nothing more was sent
    assert len(effective_pauses(w3, world, start)) == 1


def _wait(condition: Callable[[], bool], what: str, daemon: subprocess.Popen) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}) before: {what}"
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _query(database: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    if not database.exists():
        return []
    db = sqlite3.connect(database)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # the daemon has not created the table yet
    finally:
        db.close()


def _checkpoint(database: Path) -> int | None:
    rows = _query(database, "SELECT block_number FROM checkpoints")
    return rows[0][0] if rows else None


def _stored(database: Path) -> list[tuple[str, int, int]]:
    return [(h, n, int(tip)) for h, n, tip in _query(
        database, "SELECT tx_hash, nonce, max_priority_fee_per_gas FROM response_txs ORDER BY id")]


def _sent_and_pooled(w3: Web3, database: Path) -> bool:
    stored = _stored(database)
    if not stored:
        return False
    try:
        return w3.eth.get_transaction(stored[-1][0]) is not None
    except Exception:  # noqa: BLE001 - not known to the node yet
        return False


# ---- (f) the database refuses writes during the response ----


async def pause_while_the_database_refuses(chain, config_path: Path, capsys, refuse: Callable[[Guardian], None],
                                           restore: Callable[[Guardian], None], error: str) -> None:
    """The drain trips the policy while every write is refused: the pause still goes out, each refused write is a
    critical log line, and once the database takes writes again the record is completed, in order."""
    w3, world = chain.w3, chain.world
    guardian = await started(config_path)
    try:
        refuse(guardian)
        capsys.readouterr()
        for _ in range(3):
            await asyncio.to_thread(drain_slice, w3, world, ALICE, tokens(100_000))
        (decision,) = await guardian.step()
        await guardian.drain_responses()
        assert is_paused(w3, world)  # the pause went out with the database refusing every write
        failed = [line for line in capsys.readouterr().out.splitlines() if "database write FAILED" in line]
        assert failed and all("critical" in line for line in failed) and error in failed[0]
        assert guardian.store.unsaved_writes > 0

        restore(guardian)  # the database takes writes again
        chain.mine(1)
        await guardian.step()
        assert guardian.store.unsaved_writes == 0
        incident_id = decision.incident.id
        (response,) = guardian.store.responses(incident_id)
        assert response.status == ResponseStatus.MINED and response.outcome == Outcome.CONTAINED
        assert guardian.store.incident(incident_id).status == IncidentStatus.SAFE
        kinds = [e.kind for e in guardian.store.timeline(incident_id)]
        assert kinds.index("response-sent") < kinds.index("response-mined")  # replayed in order
        assert len(guardian.store.response_txs(GUARDIAN)) == 1
    finally:
        await guardian.close()


def test_a_database_refusing_writes_does_not_stop_the_pause_and_the_record_is_written_later(chain, guardian_config,
                                                                                           capsys):
    def refuse(guardian: Guardian) -> None:
        guardian.store.database.execute("PRAGMA query_only=ON")  # every write now fails with an OperationalError

    def restore(guardian: Guardian) -> None:
        guardian.store.database.execute("PRAGMA query_only=OFF")

    asyncio.run(pause_while_the_database_refuses(chain, guardian_config, capsys, refuse, restore,
                                                 "attempt to write a readonly database"))
    assert len(effective_pauses(chain.w3, chain.world, 0)) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill it needs root")
def test_a_full_disk_does_not_stop_the_pause_nor_a_restart(chain, guardian_config, capsys, tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("this machine does not let the test mount a tmpfs")
    filler = mount / "filler"
    try:
        config_path = write_config(chain.world, tmp_path / "on-small-disk", key_env=GUARDIAN_KEY_ENV,
                                   poll_interval="50ms", database=mount / "onguard.db")

        def fill(_: Guardian | None = None) -> None:
            # Unbuffered: a buffered file keeps the bytes the full disk refused and raises ENOSPC again on close.
            with filler.open("ab", buffering=0) as handle:
                with contextlib.suppress(OSError):  # ENOSPC: the disk is full
                    while True:
                        handle.write(b"\0" * 65536)

        asyncio.run(pause_while_the_database_refuses(chain, config_path, capsys, fill,
                                                     lambda _: filler.unlink(), "database or disk is full"))
        assert len(effective_pauses(chain.w3, chain.world, 0)) == 1

        async def restart_on_a_full_disk() -> None:
            fill()
            guardian = make_guardian(config_path)
            try:
                await guardian.start()  # no crash loop: the checkpoint and audit writes fail, the daemon runs
                chain.mine(1)
                await guardian.step()
            finally:
                await guardian.close()

        asyncio.run(restart_on_a_full_disk())
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_a_restart_takes_up_a_failed_response_while_the_state_is_not_safe(chain, guardian_config):
    w3, world = chain.w3, chain.world
    config = load_config(guardian_config)
    # What the daemon before the restart left: its response failed ("act by hand now") and nobody acted.
    store = IncidentStore(config.database)
    incident, _ = store.open_or_join(chain_id=world.chain_id, policy_id="vault-drain", cooldown=3600.0,
                                     severity="critical", title="drain", dry_run=False, block=1, block_time=1,
                                     evidence={"path": "block"}, status=IncidentStatus.OPEN,
                                     actions=("pause_vault",))
    store.update_response(incident.id, "pause_vault", ResponseStatus.FAILED, error="every endpoint refused")
    store.set_status(incident.id, IncidentStatus.FAILED, reason="every endpoint refused")
    store.close()

    asyncio.run(restart_finishes_the_response(guardian_config, incident.id))
    assert is_paused(w3, world)
