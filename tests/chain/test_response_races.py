"""Response races on real Anvil with mining held: the pre-signed path outbids and replaces like the module path; a
pause decided on a mined block is priced above the drain still pending to the vault; two policies tripping on one
pending transaction send one pause, not two."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onguard.config import load_config
from onguard.demo.world import POLICIES_DIR, Roles, contract, dev_account, write_config
from onguard.store.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore, Outcome, ResponseStatus

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import (ALICE, ATTACKER, LIMIT, drain_slice, following_the_mempool, make_guardian, send_drain, tokens,
                      until)
from .test_preemption import POLICIES, race
from .test_presigned import presign

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address
BOB = dev_account(Roles.DEPOSITORS[1]).address
GWEI = 10**9


def config_with(chain, tmp_path: Path, policies: dict[str, str], *, mempool: bool = True) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in policies.items():
        (folder / name).write_text(text.replace("{safe}", chain.world.safe))
    return write_config(chain.world, tmp_path / "config", key_env=GUARDIAN_KEY_ENV, policies_dir=folder,
                        poll_interval="50ms", mempool_ws=chain.node.ws_url if mempool else None)


# ---- (d) the pre-signed path shares the life cycle: it outbids and replaces ----


def test_the_presigned_path_outbids_the_threat_and_replaces_a_lingering_transaction(chain, guardian_config,
                                                                                     tmp_path, monkeypatch):
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    config_path = config_with(chain, tmp_path, {"simulate.toml": POLICIES["simulate.toml"]})
    config_path.write_text(config_path.read_text().replace('done_when = "paused()"\n',
                                                           'done_when = "paused()"\nvia = "presigned"\n', 1)
                           + '\n[response]\nbump_after = "300ms"\n')
    for owner in (dev_account(i) for i in Roles.OWNERS[:world.threshold]):
        assert presign(config_path, owner, monkeypatch) == 0

    def attack() -> str:
        return vault.functions.redeemFor(ALICE, ATTACKER, vault.functions.balanceOf(ALICE).call()).transact(
            {"from": ATTACKER, "gas": 500_000, "maxPriorityFeePerGas": 20 * GWEI, "maxFeePerGas": 60 * GWEI}
        ).to_0x_hex()

    # No block for a while: the guardian replaces its execution with higher fees.
    outcome = race(chain, config_path, attack, until="response-replaced", wait=LIMIT)

    block = w3.eth.get_block("latest", full_transactions=True)
    ours = [tx for tx in block["transactions"] if tx["from"] == GUARDIAN]
    assert len(ours) == 1, "one execution, not two"
    assert block["transactions"][0]["hash"] == ours[0]["hash"] and ours[0]["to"] == world.safe
    broadcast = next(e.detail for e in outcome["timeline"] if e.kind == "response-broadcast")
    assert broadcast["via"] == "presigned" and broadcast["tip"] > 20 * GWEI  # priced to outbid the threat
    replaced = [e.detail for e in outcome["timeline"] if e.kind == "response-replaced"]
    assert replaced and replaced[-1]["tip"] > broadcast["tip"]
    assert {r["nonce"] for r in replaced} == {broadcast["nonce"]}  # same nonce: replaced, never queued
    assert ours[0]["hash"].to_0x_hex() == replaced[-1]["tx_hash"] and outcome["attack_status"] == 0
    store = IncidentStore(load_config(config_path).database)
    try:
        (record,) = SafeTxStore(store.database).list(TxKind.PRESIGNED)
        assert record.status == TxStatus.EXECUTED and record.tx_hash == ours[0]["hash"].to_0x_hex()
        (incident,) = store.incidents()
        (response,) = store.responses(incident.id)
        assert response.status == ResponseStatus.MINED and response.outcome == Outcome.STOPPED_BEFORE_ATTACK
    finally:
        store.close()


# ---- (e) block-path pricing and one pause per action ----


def test_a_block_path_pause_is_priced_above_the_drain_pending_behind_it(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    config_path = config_with(chain, tmp_path, {"vault-drain.toml": (POLICIES_DIR / "vault-drain.toml").read_text()})
    vault = contract(w3, "Vault", world.vault)

    def send(victim: str, **fees: int) -> str:
        shares = vault.functions.previewWithdraw(tokens(100_000)).call()
        return vault.functions.redeemFor(victim, ATTACKER, shares).transact(
            {"from": ATTACKER, "gas": 500_000, **fees}).to_0x_hex()

    async def scenario() -> tuple[str, str, str]:
        guardian = make_guardian(config_path)
        try:
            await guardian.start()
            await guardian.step()
            # no policy judges pending transactions: the source runs to price the pause
            async with following_the_mempool(guardian):
                for _ in range(2):
                    await asyncio.to_thread(drain_slice, w3, world, ALICE, tokens(100_000))
                assert await guardian.step() == []  # 200k: under the threshold
                await asyncio.to_thread(w3.provider.make_request, "evm_setAutomine", [False])
                third = await asyncio.to_thread(send, ALICE)
                await asyncio.to_thread(w3.provider.make_request, "evm_mine", [])
                # The next slice is already pending, paying a rich tip to be mined first.
                fourth = await asyncio.to_thread(send, BOB, maxPriorityFeePerGas=30 * GWEI, maxFeePerGas=80 * GWEI)
                await until(lambda: (t := guardian.tips.highest()) is not None and t.tx_hash == fourth,
                            "the pending slice seen")
                (decision,) = await guardian.step()  # the third slice's block trips the block-path policy
                assert decision.incident.evidence["path"] == "block"
                await until(lambda: any(e.kind == "response-broadcast"
                                        for e in guardian.store.timeline(decision.incident.id)), "the pause sent")
                await asyncio.to_thread(w3.provider.make_request, "evm_mine", [])
                await guardian.drain_responses()
                await guardian.step()
                (response,) = guardian.store.responses(decision.incident.id)
                assert response.status == ResponseStatus.MINED and response.outcome == Outcome.CONTAINED
                detail = response.outcome_detail
                assert third in detail["harm_before"] and detail["after_pause"] == [fourth]
                assert detail["after_pause_reverted"] == 1 and int(detail["loss"]) == tokens(300_000)
                return third, fourth, response.tx_hash
        finally:
            await asyncio.to_thread(w3.provider.make_request, "evm_setAutomine", [True])
            await guardian.close()

    third, fourth, pause = asyncio.run(scenario())
    block = w3.eth.get_block("latest", full_transactions=True)
    hashes = [tx["hash"].to_0x_hex() for tx in block["transactions"]]
    assert hashes.index(pause) < hashes.index(fourth)  # the pause is ordered before the pending slice
    ours = next(tx for tx in block["transactions"] if tx["from"] == GUARDIAN)
    assert ours["maxPriorityFeePerGas"] > 30 * GWEI
    assert w3.eth.get_transaction_receipt(fourth)["status"] == 0


def test_two_policies_tripping_on_one_pending_transaction_send_one_pause(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    policies = {"simulate.toml": POLICIES["simulate.toml"], "redeem.toml": """
id = "no-redeem-for-others"
description = "Only the Safe may redeem on someone else's behalf"
kind = "call"
severity = "critical"
response = ["pause_vault"]
[match]
contract = "vault"
functions = ["redeemFor"]
allow_from = ["{safe}"]
"""}

    outcome = race(chain, config_with(chain, tmp_path, policies), lambda: send_drain(w3, world, ALICE))

    incidents = outcome["incidents"]
    assert sorted(i.policy_id for i in incidents) == ["no-redeem-for-others", "vault-cash-guard"]
    block = w3.eth.get_block("latest", full_transactions=True)
    ours = [tx for tx in block["transactions"] if tx["from"] == GUARDIAN]
    assert len(ours) == 1, "one pause for the one action, whatever the number of incidents"
    assert block["transactions"][0]["hash"] == ours[0]["hash"] and outcome["attack_status"] == 0
    kinds = [e.kind for e in outcome["timeline"]]
    broadcast = {e.detail["tx_hash"] for e in outcome["timeline"] if e.kind == "response-broadcast"}
    assert broadcast == {ours[0]["hash"].to_0x_hex()} and "response-shared" in kinds  # both incidents, one tx
    store = IncidentStore(load_config(config_with_path(tmp_path)).database)
    try:
        hashes = {r.tx_hash for i in store.incidents() for r in store.responses(i.id)
                  if r.status == ResponseStatus.MINED}
        assert hashes == {ours[0]["hash"].to_0x_hex()}
    finally:
        store.close()


def config_with_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "onguard.toml"


def test_a_pause_dropped_from_the_pool_is_sent_again_at_its_nonce(chain, guardian_config, tmp_path):
    w3, world = chain.w3, chain.world
    config_path = config_with(chain, tmp_path, {"vault-drain.toml": (POLICIES_DIR / "vault-drain.toml").read_text()},
                              mempool=False)
    config_path.write_text(config_path.read_text() + '\n[response]\nbump_after = "300ms"\n')
    vault = contract(w3, "Vault", world.vault)

    async def scenario() -> tuple[str, int]:
        guardian = make_guardian(config_path)
        try:
            await guardian.start()
            await guardian.step()
            nonce = await asyncio.to_thread(w3.eth.get_transaction_count, GUARDIAN)
            for _ in range(2):
                await asyncio.to_thread(drain_slice, w3, world, ALICE, tokens(100_000))
            await asyncio.to_thread(w3.provider.make_request, "evm_setAutomine", [False])
            shares = await asyncio.to_thread(vault.functions.previewWithdraw(tokens(100_000)).call)
            await asyncio.to_thread(vault.functions.redeemFor(ALICE, ATTACKER, shares).transact,
                                    {"from": ATTACKER, "gas": 500_000})
            await asyncio.to_thread(w3.provider.make_request, "evm_mine", [])
            (decision,) = await guardian.step()
            incident_id = decision.incident.id

            def sent() -> list[str]:
                return [e.detail["tx_hash"] for e in guardian.store.timeline(incident_id)
                        if e.kind in ("response-broadcast", "response-replaced")]

            await until(lambda: len(sent()) == 1, "the pause sent")
            dropped = sent()[0]
            answer = await asyncio.to_thread(w3.provider.make_request, "anvil_dropTransaction", [dropped])
            assert "error" not in answer and await asyncio.to_thread(_gone, w3, dropped)
            await until(lambda: len(sent()) >= 2, "the pause sent again")
            await asyncio.to_thread(w3.provider.make_request, "evm_mine", [])
            await guardian.drain_responses()
            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED and response.tx_hash in sent()[1:]
            return dropped, nonce
        finally:
            await asyncio.to_thread(w3.provider.make_request, "evm_setAutomine", [True])
            await guardian.close()

    dropped, nonce = asyncio.run(scenario())
    assert vault.functions.paused().call()
    assert w3.eth.get_transaction_count(GUARDIAN) == nonce + 1  # the one nonce: sent again, not queued behind


def _gone(w3, tx_hash: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return w3.eth.get_transaction(tx_hash) is None
    except Exception:  # noqa: BLE001 - web3 raises TransactionNotFound for an unknown hash
        return True
