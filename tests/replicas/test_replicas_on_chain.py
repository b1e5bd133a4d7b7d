"""Three `onguard run` replicas, each with its own guardian key, against one Anvil chain (the real Safe v1.4.1 and
GuardianModule) and one PostgreSQL database: an attack while the leader is SIGKILLed ends in exactly one effective
pause, one incident with a complete record, and the leader lease on another replica; a replica whose database
connection is cut sends nothing while the others pause."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from onguard.demo.world import contract, dev_account
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseStatus
from onguard.store.settings import DatabaseSettings

from ..chain.helpers import ALICE, drain_slice, is_paused, tokens
from ..faults.proxy import FaultProxy, Mode
from .harness import REPLICA_KEYS, Replica, register_guardians, replicas, wait_for

# Three daemons and a chain on a busy 2-core machine: room beyond the suite's 120 s per test (waits are bounded).
pytestmark = [pytest.mark.chain, pytest.mark.timeout(400)]

FAST = {"lease_ttl": '"2s"', "renew_every": '"500ms"', "send_deadline": '"1s"'}


def leader_of(url: str, chain_id: int) -> tuple[str, int] | None:
    """(holder, token) of the chain's leader lease while it is live."""
    with psycopg.connect(url) as db:
        row = db.execute("SELECT holder, token FROM leases WHERE name = %s AND expires_at > "
                         "(extract(epoch FROM clock_timestamp()) * 1000)::bigint", (f"leader:{chain_id}",)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as db:
        return db.execute(sql).fetchall()


def module_executions(chain, from_block: int) -> list:  # type: ignore[no-untyped-def]
    module = contract(chain.w3, "GuardianModule", chain.world.module)
    return module.events.ActionExecuted.get_logs(from_block=from_block)


def all_started(group: list[Replica]) -> bool:
    for replica in group:
        if not replica.running:
            raise AssertionError(f"replica {replica.name} exited while starting:\n{replica.tail()}")
    return all(r.saw("guardian started") for r in group)


def test_an_attack_while_the_leader_is_killed_ends_in_one_pause_and_the_lease_moves(chain, replica_database, tmp_path):
    w3, world = chain.w3, chain.world
    start_block = w3.eth.block_number
    with replicas(chain, tmp_path, [replica_database] * 3, **FAST) as group:
        wait_for(lambda: all_started(group), "three replicas started", group)
        holder, token = wait_for(lambda: leader_of(replica_database, world.chain_id), "a replica leads", group)
        leader = next(r for r in group if r.name == holder)
        others = [r for r in group if r is not leader]

        for _ in range(2):
            drain_slice(w3, world, ALICE, tokens(100_000))  # the attack is under way: 200k, under the threshold
        leader.kill()
        drain_slice(w3, world, ALICE, tokens(100_000))      # 300k: the policy trips on the surviving replicas
        wait_for(lambda: is_paused(w3, world), "the vault is paused", group)
        assert drain_slice(w3, world, ALICE, tokens(100_000))["status"] == 0  # the attack's next slice fails

        moved = wait_for(lambda: (lead := leader_of(replica_database, world.chain_id)) and lead[0] != holder and lead,
                         "the leader lease moved to a surviving replica", group)
        assert moved[0] in {r.name for r in others} and moved[1] > token
        wait_for(lambda: rows(replica_database, "SELECT status FROM incidents") == [("safe",)],
                 "the incident is safe", group)
        for replica in others:
            assert replica.stop() == 0

    # Exactly one effective pause: one execution through the module, by a surviving replica's key.
    (executed,) = module_executions(chain, start_block)
    sender = w3.eth.get_transaction(executed["transactionHash"])["from"]
    assert sender in {r.account.address for r in others}
    # One incident, one response, and its record: detected, sent, mined, safe; the audit log verifies.
    ((incident_id, policy_id),) = rows(replica_database, "SELECT id, policy_id FROM incidents")
    assert policy_id == "vault-drain"
    ((action, status, tx_hash, claimed_by),) = rows(
        replica_database, "SELECT action, status, tx_hash, claimed_by FROM responses")
    assert (action, status) == ("pause_vault", "mined")
    assert tx_hash == executed["transactionHash"].to_0x_hex()
    assert claimed_by in {r.name for r in others}
    kinds = [kind for (kind,) in rows(replica_database, f"SELECT kind FROM timeline WHERE incident_id = {incident_id} "
                                                    "ORDER BY id")]
    assert kinds[0] == "detected"
    assert {"response-sent", "response-mined", "outcome", "status"} <= set(kinds)
    verify = subprocess.run([sys.executable, "-m", "onguard.cli.main", "audit", "--config", str(others[0].config),
                             "verify"], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("cut", [Mode.DROP, Mode.BLACKHOLE], ids=["refused", "silent"])
def test_a_replica_cut_off_from_the_database_does_not_fire_while_the_others_pause(chain, replica_database, tmp_path,
                                                                                  cut):
    """Refused: its connections are closed and new ones dropped. Silent: new connections are accepted and never
    answered (what a network partition looks like to libpq)."""
    w3, world = chain.w3, chain.world
    start_block = w3.eth.block_number
    server = replica_database.rsplit("/", 1)
    with FaultProxy("postgresql://127.0.0.1:5432", max_lifetime=600) as proxy:
        through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{server[1]}"
        with replicas(chain, tmp_path, [replica_database, replica_database, through_proxy], **FAST,
                      partition_deadline='"10s"') as group:
            wait_for(lambda: all_started(group), "three replicas started", group)
            cut_off = group[2]
            nonce_before = w3.eth.get_transaction_count(cut_off.account.address)
            proxy.set_mode(cut)  # its database connections are cut; the chain is still in reach
            wait_for(lambda: cut_off.saw("this replica is cut off from the database"),
                     "the replica knows it is cut off", group)

            for _ in range(3):
                drain_slice(w3, world, ALICE, tokens(100_000))
            wait_for(lambda: is_paused(w3, world), "the vault is paused", group)
            wait_for(lambda: cut_off.saw("cut off from the database: the action already holds on chain: nothing sent"),
                     "the cut-off replica looked at the chain after its deadline", group)
            assert w3.eth.get_transaction_count(cut_off.account.address) == nonce_before  # it sent nothing
            handled = len([e for e in cut_off.events() if e.get("event", "").startswith("the state database is out")])
            chain.mine(3)  # blocks go on while it is cut off: it keeps judging them, its loop never dies
            wait_for(lambda: cut_off.saw("the state database is out of reach") and len(
                [e for e in cut_off.events() if e.get("event", "").startswith("the state database is out")]) > handled,
                "the cut-off replica went on with the next blocks", group)
            assert not cut_off.saw("a daemon task died")

            proxy.set_mode(Mode.PASS)
            wait_for(lambda: cut_off.saw("this replica reaches the database again"), "the replica is back", group)
            for replica in group:
                assert replica.stop() == 0
            assert not cut_off.saw("closing with database writes NOT saved")  # what it kept in memory is saved

    assert len(module_executions(chain, start_block)) == 1
    assert rows(replica_database, "SELECT count(*) FROM incidents") == [(1,)]


def test_a_claim_left_by_a_dead_replica_is_taken_over_by_exactly_one_replica(chain, replica_database, tmp_path):
    """A replica claimed the pause and died before sending it (its liveness lease is gone): the replicas that
    start find the incident not safe, one takes the claim over (compare-and-set) and pauses; the other leaves it."""
    w3, world = chain.w3, chain.world
    start_block = w3.eth.block_number
    now = w3.eth.get_block("latest")
    ghost = IncidentStore(DatabaseSettings(path=tmp_path / "unused.db", url=replica_database), claimant="ghost")
    try:
        incident, opened = ghost.open_or_join(
            chain_id=world.chain_id, policy_id="vault-drain", cooldown=3600, severity="critical",
            title="vault drained", dry_run=False, block=now["number"], block_time=now["timestamp"],
            evidence={"path": "block"}, status=IncidentStatus.OPEN, actions=("pause_vault",))
    finally:
        ghost.close()
    assert opened
    nonces = {f"r{i + 1}": w3.eth.get_transaction_count(dev_account(key).address)
              for i, key in enumerate(REPLICA_KEYS[:2])}
    # A dead claimer is taken over at once; the long send_deadline keeps a slow (loaded) taker from being taken
    # over in turn, so that "the other sent nothing" holds on any machine.
    with replicas(chain, tmp_path, [replica_database] * 2, **{**FAST, "send_deadline": '"30s"'}) as group:
        wait_for(lambda: is_paused(w3, world), "the vault is paused", group)
        wait_for(lambda: rows(replica_database, "SELECT status FROM incidents") == [("safe",)],
                 "the incident is safe", group)
        wait_for(lambda: all_started(group), "both replicas started (a stop before is not a clean one)", group)
        for replica in group:
            assert replica.stop() == 0

    ((claimed_by, status),) = rows(replica_database, "SELECT claimed_by, status FROM responses")
    assert status == "mined" and claimed_by in {r.name for r in group}
    (executed,) = module_executions(chain, start_block)
    taker = next(r for r in group if r.name == claimed_by)
    assert w3.eth.get_transaction(executed["transactionHash"])["from"] == taker.account.address
    other = next(r for r in group if r is not taker)
    assert w3.eth.get_transaction_count(other.account.address) == nonces[other.name]  # the other sent nothing
    taken = rows(replica_database, f"SELECT detail FROM timeline WHERE incident_id = {incident.id} "
                                   "AND kind = 'claim-taken-over'")
    assert len(taken) == 1 and '"from": "ghost"' in taken[0][0]


def test_a_pause_sent_by_a_replica_that_died_before_recording_it_is_recorded_by_a_survivor(chain, replica_database,
                                                                                          tmp_path):
    """A replica claimed, sent the pause (mined), recorded it as sent, and died: the pause holds, so nobody sends;
    a survivor takes the dead replica's claim over and records what the chain shows (mined, with its outcome)."""
    w3, world = chain.w3, chain.world
    ghost_key = dev_account(0)  # an unlocked dev account, registered as a guardian here like each replica's key
    register_guardians(chain, [ghost_key])
    now = w3.eth.get_block("latest")
    ghost = IncidentStore(DatabaseSettings(path=tmp_path / "unused.db", url=replica_database), claimant="ghost")
    try:
        incident, _ = ghost.open_or_join(
            chain_id=world.chain_id, policy_id="vault-drain", cooldown=3600, severity="critical",
            title="vault drained", dry_run=False, block=now["number"], block_time=now["timestamp"],
            evidence={"path": "block"}, status=IncidentStatus.OPEN, actions=("pause_vault",))
        vault = contract(w3, "Vault", world.vault)
        module = contract(w3, "GuardianModule", world.module)
        pause = module.functions.execute(world.vault, 0, vault.encode_abi("pause", []), 0)
        receipt = w3.eth.wait_for_transaction_receipt(pause.transact({"from": ghost_key.address}), timeout=30)
        assert receipt["status"] == 1 and is_paused(w3, world)
        ghost.update_response(incident.id, "pause_vault", ResponseStatus.SENT,
                              tx_hash=receipt["transactionHash"].to_0x_hex())
    finally:
        ghost.close()

    nonces = {f"r{i + 1}": w3.eth.get_transaction_count(dev_account(key).address)
              for i, key in enumerate(REPLICA_KEYS[:2])}
    with replicas(chain, tmp_path, [replica_database] * 2, **FAST) as group:
        wait_for(lambda: rows(replica_database, "SELECT status FROM responses") == [("mined",)],
                 "a survivor recorded the dead replica's pause", group)
        wait_for(lambda: rows(replica_database, "SELECT status FROM incidents") == [("safe",)],
                 "the incident is safe", group)
        wait_for(lambda: all_started(group), "both replicas started (a stop before is not a clean one)", group)
        for replica in group:
            assert replica.stop() == 0

    ((claimed_by, tx_hash, block),) = rows(replica_database, "SELECT claimed_by, tx_hash, block_number FROM responses")
    assert claimed_by in nonces and tx_hash == receipt["transactionHash"].to_0x_hex()
    assert block == receipt["blockNumber"]
    for replica in group:  # nobody sent a second pause
        assert w3.eth.get_transaction_count(replica.account.address) == nonces[replica.name]
