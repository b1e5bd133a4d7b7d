"""Pre-emption on real Anvil chains with mining held (`evm_setAutomine false`, blocks ordered by fee): the attack
waits in the mempool, the guardian sees it, trips and sends the pause; one block is mined; the pause is in it
before the attack, the attack reverts and the vault keeps its assets. And a harmless withdrawal trips nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from onguard.demo.world import TOKEN, Roles, artifact, contract, dev_account, write_config
from onguard.incidents.store import ResponseStatus
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import ALICE, ATTACKER, LIMIT, following_the_mempool, make_guardian, send_drain, tokens, until, vault_cash

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address
POLICIES = {
    "simulate.toml": """
id = "vault-cash-guard"
description = "A pending transaction would take more than 25% of the vault's cash"
kind = "simulate"
severity = "critical"
response = ["pause_vault"]
[reads]
cash = "asset.balanceOf(vault)"
[trigger]
condition = "not reverted and after.cash < 75% * before.cash"
""",
    "roles.toml": """
id = "no-role-changes"
description = "Only the Safe may grant or revoke the vault's roles"
kind = "call"
severity = "critical"
response = ["pause_vault"]
[match]
contract = "vault"
functions = ["grantRole", "revokeRole"]
allow_from = ["{safe}"]
""",
}


def preemption_config(chain, tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in POLICIES.items():
        (folder / name).write_text(text.replace("{safe}", chain.world.safe))
    config = write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV, policies_dir=folder)
    text = config.read_text() + f'\n[mempool]\nenabled = true\nws_url = "{chain.node.ws_url}"\n'
    config.write_text(text)
    return config


def race(chain, config_path: Path, send_attack, wait: float = 5.0, until: str = "response-broadcast",
         watch: Callable[[Guardian], None] | None = None, times: int = 1) -> dict:
    """Starts the guardian with its mempool source, sends the attack with mining held, waits for the pause to be
    broadcast (or `times` events of kind `until`; at most `wait` seconds), mines one block and reports what the
    block holds. `watch` sees the guardian once it is built."""
    w3 = chain.w3

    async def scenario() -> dict:
        guardian = make_guardian(config_path)
        if watch is not None:
            watch(guardian)
        try:
            await guardian.start()
            await guardian.step()
            w3.provider.make_request("evm_setAutomine", [False])
            async with following_the_mempool(guardian):
                attack_hash = await asyncio.to_thread(send_attack)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and sum(
                        e.kind == until for i in guardian.store.incidents() for e in guardian.store.timeline(i.id)
                ) < times:
                    await asyncio.sleep(0.02)
                sent = [r for i in guardian.store.incidents() for r in guardian.store.responses(i.id)
                        if r.status == ResponseStatus.SENT]
                w3.provider.make_request("evm_mine", [])
                await guardian.drain_responses(timeout=10)
            block = w3.eth.get_block("latest")
            hashes = [h.to_0x_hex() for h in block["transactions"]]
            return {"hashes": hashes, "attack": attack_hash, "pause": sent[0].tx_hash if sent else None,
                    "attack_status": w3.eth.get_transaction_receipt(attack_hash)["status"],
                    "incidents": guardian.store.incidents(),
                    "timeline": [e for i in guardian.store.incidents() for e in guardian.store.timeline(i.id)]}
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    return asyncio.run(scenario())


def assert_pause_first(outcome: dict) -> None:
    assert outcome["pause"] is not None, "no pause was sent"
    assert outcome["pause"] in outcome["hashes"] and outcome["attack"] in outcome["hashes"]
    assert outcome["hashes"].index(outcome["pause"]) < outcome["hashes"].index(outcome["attack"])
    assert outcome["attack_status"] == 0
    (incident,) = outcome["incidents"]
    assert incident.evidence["path"] == "mempool" and incident.evidence["threat_tx"] == outcome["attack"]
    kinds = {e.kind: e.detail for e in outcome["timeline"]}
    assert kinds["race"]["pause_first"] is True
    assert {"signed_ms", "broadcast_ms"} <= set(kinds["response-broadcast"]) and "decided_ms" in kinds["decided"]
    assert "included_ms" in kinds["response-included"]


def test_a_pending_direct_drain_is_beaten_by_the_pause(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    cash_before = vault_cash(w3, world)
    outcome = race(chain, preemption_config(chain, tmp_path), lambda: send_drain(w3, world, ALICE))
    assert_pause_first(outcome)
    assert vault_cash(w3, world) == cash_before
    assert outcome["incidents"][0].policy_id == "vault-cash-guard"


def test_the_guardians_own_probes_wait_until_the_simulate_policys_pause_is_on_the_wire(chain, guardian_config,
                                                                                        tmp_path):
    # The attack's simulation for the policies carries none of the built-in self-defence's probes; those are a
    # simulation of their own, asked for only once the pause's broadcast has returned. (A deadline long enough
    # that the hold's bound, half of it, is never what ends the wait on a loaded machine.)
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    config = preemption_config(chain, tmp_path)
    config.write_text(config.read_text() + "simulation_timeout = 30\n")
    simulations: list[tuple[bool, bool, int]] = []  # (with probes, a response being sent, transactions)

    def watch(guardian: Guardian) -> None:
        assert guardian.simulator is not None
        simulate_many = guardian.simulator.simulate_many

        async def recording(raws, specs, head=None, probes=(), **options):  # type: ignore[no-untyped-def]
            simulations.append((bool(probes), guardian.responder.sending(), len(raws)))
            return await simulate_many(raws, specs, head, probes, **options)

        guardian.simulator.simulate_many = recording  # type: ignore[method-assign]

    def attack() -> str:
        shares = vault.functions.balanceOf(ALICE).call()
        return vault.functions.redeemFor(ALICE, ATTACKER, shares).transact(
            {"from": ATTACKER, "gas": 500_000}).to_0x_hex()

    outcome = race(chain, config, attack, watch=watch)
    assert_pause_first(outcome)
    assert simulations[0] == (False, False, 1), "the policies' simulation first, without probes"
    probing = [s for s in simulations if s[0]]
    assert probing, "the self-defence still judged the attack"
    assert not any(sending for _, sending, _ in probing), "no probe went out while the pause was being sent"


def test_an_oracle_manipulation_and_borrow_in_one_transaction_is_beaten(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    build = artifact("OracleBorrowAttacker")
    factory = w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"])
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": ATTACKER}))
    attacker = w3.eth.contract(address=receipt["contractAddress"], abi=build["abi"])
    # The attack's premise: the oracle's updater role is compromised (granted to the exploit contract).
    oracle = contract(w3, "PriceOracle", world.oracle)
    w3.provider.make_request("anvil_impersonateAccount", [world.safe])
    w3.provider.make_request("anvil_setBalance", [world.safe, hex(10**18)])
    oracle.functions.grantRole(oracle.functions.UPDATER_ROLE().call(), attacker.address).transact(
        {"from": world.safe})
    contract(w3, "TestToken", world.collateral).functions.mint(attacker.address, 10 * TOKEN).transact(
        {"from": ATTACKER})
    cash_before = vault_cash(w3, world)

    def attack() -> str:
        return attacker.functions.attack(world.oracle, world.vault, 10 * TOKEN, 10**24).transact(
            {"from": ATTACKER, "gas": 1_000_000}).to_0x_hex()

    outcome = race(chain, preemption_config(chain, tmp_path), attack)
    assert_pause_first(outcome)
    assert vault_cash(w3, world) == cash_before
    assert outcome["incidents"][0].evidence["after"]["cash"] == 0  # what the simulation predicted


def test_an_unauthorised_role_grant_is_beaten(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)

    def attack() -> str:
        role = vault.functions.PAUSER_ROLE().call()
        return vault.functions.grantRole(role, ATTACKER).transact({"from": ATTACKER, "gas": 200_000}).to_0x_hex()

    outcome = race(chain, preemption_config(chain, tmp_path), attack)
    assert_pause_first(outcome)
    assert outcome["incidents"][0].policy_id == "no-role-changes"


def test_a_large_honest_withdrawal_trips_nothing(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)

    def withdrawal() -> str:
        return vault.functions.withdraw(tokens(250_000), ALICE, ALICE).transact(
            {"from": ALICE, "gas": 300_000}).to_0x_hex()

    outcome = race(chain, preemption_config(chain, tmp_path), withdrawal, wait=1.5)
    assert outcome["pause"] is None and outcome["incidents"] == []
    assert outcome["attack_status"] == 1 and outcome["hashes"] == [outcome["attack"]]
    assert not vault.functions.paused().call()


def guardian_txs(w3, block) -> list:
    return [tx for tx in block["transactions"] if tx["from"] == GUARDIAN]


def until_the_guardian_has_a_pending_transaction(w3) -> None:
    """Waits (bounded) until the node's pool holds a transaction from the guardian (its nonce counted with the
    pending ones is ahead of the mined one)."""
    deadline = time.monotonic() + LIMIT
    while w3.eth.get_transaction_count(GUARDIAN, "pending") == w3.eth.get_transaction_count(GUARDIAN, "latest"):
        assert time.monotonic() < deadline, f"not within {LIMIT:.0f}s: a pending transaction from the guardian"
        time.sleep(0.02)


def test_two_threats_make_one_pause_bumped_to_outbid_the_richer_one(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    bob = dev_account(Roles.DEPOSITORS[1]).address

    def attacks() -> str:
        first = vault.functions.redeemFor(ALICE, ATTACKER, vault.functions.balanceOf(ALICE).call()).transact(
            {"from": ATTACKER, "gas": 500_000, "maxPriorityFeePerGas": 2 * 10**9, "maxFeePerGas": 50 * 10**9})
        until_the_guardian_has_a_pending_transaction(w3)  # it has answered the first one
        vault.functions.redeemFor(bob, ATTACKER, vault.functions.balanceOf(bob).call()).transact(
            {"from": ATTACKER, "gas": 500_000, "maxPriorityFeePerGas": 20 * 10**9, "maxFeePerGas": 60 * 10**9})
        return first.to_0x_hex()

    outcome = race(chain, preemption_config(chain, tmp_path), attacks, until="response-replaced")
    block = w3.eth.get_block("latest", full_transactions=True)
    ours = guardian_txs(w3, block)
    assert len(ours) == 1, "one pause, not two"
    assert block["transactions"][0]["from"] == GUARDIAN  # ahead of both attacks
    assert ours[0]["maxPriorityFeePerGas"] > 20 * 10**9  # outbid the richer threat
    kinds = [e.kind for e in outcome["timeline"]]
    assert kinds.count("response-broadcast") == 1 and "response-replaced" in kinds
    assert all(r["status"] == 0 for r in (w3.eth.get_transaction_receipt(tx["hash"]) for tx in block["transactions"]
                                          if tx["from"] == ATTACKER))


def test_a_pause_not_mined_in_time_is_replaced_with_higher_fees(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    config_path = preemption_config(chain, tmp_path)
    config_path.write_text(config_path.read_text() + '\n[response]\nbump_after = "300ms"\n')
    vault = contract(w3, "Vault", world.vault)

    def attack() -> str:
        return vault.functions.redeemFor(ALICE, ATTACKER, vault.functions.balanceOf(ALICE).call()).transact(
            {"from": ATTACKER, "gas": 500_000}).to_0x_hex()

    # No block for a while: the guardian bumps its pause, and bumps it again.
    outcome = race(chain, config_path, attack, until="response-replaced", times=2, wait=LIMIT)
    kinds = [e.kind for e in outcome["timeline"]]
    assert kinds.count("response-replaced") >= 2
    replaced = [e.detail for e in outcome["timeline"] if e.kind == "response-replaced"]
    assert replaced[-1]["tip"] > replaced[0]["tip"]
    ours = guardian_txs(w3, w3.eth.get_block("latest", full_transactions=True))
    assert len(ours) == 1 and ours[0]["hash"].to_0x_hex() == replaced[-1]["tx_hash"]
    assert outcome["attack_status"] == 0


def test_the_daemon_loop_itself_pre_empts_with_its_mempool_source(chain, guardian_config, tmp_path):
    """Not the pieces wired by hand: Guardian.run starts the mempool source from the config."""
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    config_path = preemption_config(chain, tmp_path)

    async def scenario() -> tuple[str, str]:
        guardian = make_guardian(config_path)
        stop = asyncio.Event()
        daemon = asyncio.create_task(guardian.run(stop))
        try:
            await asyncio.wait_for(guardian.ready.wait(), timeout=20)
            # Sync web3 calls go through a thread: web3 shares one threading lock between its sync and async
            # session caches, so a sync call on the event loop can deadlock with the daemon's async requests.
            await asyncio.to_thread(w3.provider.make_request, "evm_setAutomine", [False])
            await until(lambda: guardian.mempool is not None and guardian.mempool.live,
                        "the pending-transaction subscription is up", task=daemon)
            shares = await asyncio.to_thread(vault.functions.balanceOf(ALICE).call)
            attack = await asyncio.to_thread(vault.functions.redeemFor(ALICE, ATTACKER, shares).transact,
                                             {"from": ATTACKER, "gas": 500_000})

            def responses() -> list:
                return [r for i in guardian.store.incidents() for r in guardian.store.responses(i.id)]

            await until(lambda: any(r.tx_hash for r in responses()), "the pause is broadcast", task=daemon)
            pause = next(r.tx_hash for r in responses() if r.tx_hash)
            await asyncio.to_thread(w3.provider.make_request, "evm_mine", [])
            # Stopped only once the daemon has seen its pause mined: the loop itself, not only the source, handled
            # the block.
            await until(lambda: any(r.status == ResponseStatus.MINED for r in responses()), "the pause is mined",
                        task=daemon)
            return attack.to_0x_hex(), pause
        finally:
            stop.set()
            await asyncio.wait_for(daemon, timeout=20)
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    attack, pause = asyncio.run(scenario())
    hashes = [h.to_0x_hex() for h in w3.eth.get_block("latest")["transactions"]]
    assert hashes.index(pause) < hashes.index(attack)
    assert w3.eth.get_transaction_receipt(attack)["status"] == 0
