"""The fee ladder on real Anvil with mining held: the pause signed before the attack is the transaction broadcast
against it and lands first; two attacks make one pause; and a crash between the broadcast of a rung and its record
leaves one pause, recorded as what the chain shows, whether it was mined while the daemon was down or not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from onguard.demo.world import Roles, dev_account
from onguard.incidents.store import Outcome, ResponseStatus, ResponseTx
from onguard.responders.feeladder import rung_hashes
from onguard.runtime import Guardian

from .helpers import ALICE, BOB, following_the_mempool, make_guardian, send_drain, started, until, vault_cash
from .test_preemption import preemption_config
from .test_presigned import config_path as presigned_config_path  # noqa: F401 (the Safe path's fixture)
from .test_presigned import presign, trip

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address


class Crash(BaseException):
    """The daemon dies right after a rung is on the wire, before it is recorded."""


def kinds(guardian: Guardian) -> list[str]:
    return [e.kind for i in guardian.store.incidents() for e in guardian.store.timeline(i.id)]


async def with_mempool(config_path: Path, body: Callable[[Guardian], Awaitable[None]],
                       guardian: Guardian | None = None) -> None:
    """Runs `body` with a started guardian following the mempool (mining is the caller's)."""
    guardian = guardian or make_guardian(config_path)
    try:
        await guardian.start()
        await guardian.step()
        async with following_the_mempool(guardian):
            await body(guardian)
    finally:
        await guardian.close()


def test_the_pre_signed_rung_is_broadcast_against_the_pending_attack_and_lands_first(chain, guardian_config,
                                                                                     tmp_path):
    config_path = preemption_config(chain, tmp_path)
    w3 = chain.w3
    cash = vault_cash(w3, chain.world)
    seen: dict = {}

    async def body(guardian: Guardian) -> None:
        ladders = rung_hashes(guardian.store.signed_ladders(GUARDIAN))
        assert ladders, "a ladder is signed and stored at start"
        w3.provider.make_request("evm_setAutomine", [False])
        try:
            seen["attack"] = await asyncio.to_thread(send_drain, chain.w3, chain.world, ALICE)
            await until(lambda: "response-broadcast" in kinds(guardian), "the pause is broadcast")
            w3.provider.make_request("evm_mine", [])
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
        await guardian.drain_responses(timeout=20)
        (incident,) = guardian.store.incidents()
        entries = {e.kind: e.detail for e in guardian.store.timeline(incident.id)}
        seen.update(broadcast=entries["response-broadcast"], race=entries["race"], ladders=ladders,
                    response=guardian.store.responses(incident.id)[0])

    asyncio.run(with_mempool(config_path, body))
    pause = seen["broadcast"]["tx_hash"]
    assert seen["broadcast"]["pre_signed"] is True and pause.lower() in seen["ladders"]
    assert seen["ladders"][pause.lower()].nonce == seen["broadcast"]["nonce"]
    block = [h.to_0x_hex() for h in w3.eth.get_block("latest")["transactions"]]
    assert block.index(pause) < block.index(seen["attack"]) and seen["race"]["pause_first"] is True
    attack = w3.eth.get_transaction(seen["attack"])
    ours = w3.eth.get_transaction(pause)
    assert ours["maxPriorityFeePerGas"] > attack["maxPriorityFeePerGas"]
    assert ours["maxFeePerGas"] > attack["maxFeePerGas"]
    assert w3.eth.get_transaction_receipt(seen["attack"])["status"] == 0 and vault_cash(w3, chain.world) == cash
    assert seen["response"].status == ResponseStatus.MINED and seen["response"].tx_hash == pause


def test_two_pending_attacks_make_one_pause(chain, guardian_config, tmp_path):
    config_path = preemption_config(chain, tmp_path)
    w3 = chain.w3
    nonce_before = w3.eth.get_transaction_count(GUARDIAN)
    seen: dict = {}

    async def body(guardian: Guardian) -> None:
        w3.provider.make_request("evm_setAutomine", [False])
        try:
            seen["attacks"] = [await asyncio.to_thread(send_drain, chain.w3, chain.world, victim)
                               for victim in (ALICE, BOB)]
            await until(lambda: kinds(guardian).count("decided") + kinds(guardian).count("tripped-again") >= 2,
                        "both attacks are judged")
            w3.provider.make_request("evm_mine", [])
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
        await guardian.drain_responses(timeout=20)
        seen["incidents"] = guardian.store.incidents()
        seen["responses"] = [r for i in seen["incidents"] for r in guardian.store.responses(i.id)]

    asyncio.run(with_mempool(config_path, body))
    assert w3.eth.get_transaction_count(GUARDIAN) == nonce_before + 1  # one pause, whatever was replaced on the way
    assert len(seen["incidents"]) == 1
    assert [r.status for r in seen["responses"]] == [ResponseStatus.MINED]
    assert all(w3.eth.get_transaction_receipt(a)["status"] == 0 for a in seen["attacks"])


@pytest.mark.parametrize("mined_while_down", [True, False], ids=["mined-while-down", "still-pending"])
def test_a_crash_between_the_broadcast_and_its_record_leaves_one_pause_recorded_as_the_chain_shows(
        chain, guardian_config, tmp_path, mined_while_down):
    config_path = preemption_config(chain, tmp_path)
    w3 = chain.w3
    nonce_before = w3.eth.get_transaction_count(GUARDIAN)
    sent: list[ResponseTx] = []

    async def crash_after_broadcast(guardian: Guardian) -> None:
        record = guardian.store.record_response_tx

        def dies(tx: ResponseTx) -> None:
            sent.append(tx)
            raise Crash

        guardian.store.record_response_tx = dies  # type: ignore[method-assign]
        sent_hash = await asyncio.to_thread(send_drain, chain.w3, chain.world, ALICE)
        await until(lambda: bool(sent), "a rung is broadcast")
        guardian.store.record_response_tx = record  # type: ignore[method-assign]
        assert w3.eth.get_transaction(sent[0].tx_hash) is not None  # on the wire …
        assert not guardian.store.response_txs(GUARDIAN)             # … and not recorded
        crashed["attack"] = sent_hash

    crashed: dict = {}
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        first = make_guardian(config_path)
        asyncio.run(with_mempool(config_path, crash_after_broadcast, guardian=first))
        if mined_while_down:
            w3.provider.make_request("evm_mine", [])

        async def restart() -> dict:
            second = make_guardian(config_path)
            try:
                await second.start()  # recognises the rung by its hash, then the reconciler settles or replaces it
                if not mined_while_down:
                    await until(lambda: "response-broadcast" in kinds(second), "the restart replaces it")
                    w3.provider.make_request("evm_mine", [])
                await second.drain_responses(timeout=20)
                await second.step()
                (incident,) = second.store.incidents()
                return {"response": second.store.responses(incident.id)[0],
                        "txs": second.store.response_txs(GUARDIAN),
                        "incident": second.store.incident(incident.id)}
            finally:
                await second.close()

        after = asyncio.run(restart())
    finally:
        w3.provider.make_request("evm_setAutomine", [True])

    assert w3.eth.get_transaction_count(GUARDIAN) == nonce_before + 1  # one pause
    response = after["response"]
    receipt = w3.eth.get_transaction_receipt(response.tx_hash)
    assert response.status == ResponseStatus.MINED and receipt["status"] == 1
    assert response.block_number == receipt["blockNumber"] and receipt["from"] == GUARDIAN
    adopted = [tx for tx in after["txs"] if tx.tx_hash == sent[0].tx_hash]  # the rung sent before the crash …
    assert [tx.raw for tx in adopted] == [sent[0].raw]                      # … recorded as the very bytes sent
    if mined_while_down:
        assert response.tx_hash == sent[0].tx_hash  # the true record: the very rung that was sent
    assert response.outcome == Outcome.STOPPED_BEFORE_ATTACK
    assert w3.eth.get_transaction_receipt(crashed["attack"])["status"] == 0
    assert {tx.nonce for tx in after["txs"]} == {nonce_before}


@pytest.mark.parametrize("multisig", ["2-of-3"], indirect=True)
def test_the_safe_paths_relayed_execution_is_a_rung_of_the_ladder_too(multisig, presigned_config_path,  # noqa: F811
                                                                       monkeypatch):
    config_path = presigned_config_path
    for owner in multisig.owners[: multisig.threshold]:
        assert presign(config_path, owner, monkeypatch) == 0
    seen: dict = {}

    async def scenario() -> None:
        guardian = await started(config_path)
        try:
            seen["ladders"] = rung_hashes(guardian.store.signed_ladders(GUARDIAN))
            incident_id = await trip(multisig, guardian)
            seen["broadcast"] = next(e.detail for e in guardian.store.timeline(incident_id)
                                     if e.kind == "response-broadcast")
            seen["response"] = guardian.store.responses(incident_id)[0]
        finally:
            await guardian.close()

    asyncio.run(scenario())
    broadcast = seen["broadcast"]
    assert broadcast["via"] == "presigned" and broadcast["pre_signed"] is True
    assert broadcast["tx_hash"].lower() in seen["ladders"]
    assert seen["response"].status == ResponseStatus.MINED and seen["response"].tx_hash == broadcast["tx_hash"]
    tx = multisig.chain.w3.eth.get_transaction(broadcast["tx_hash"])
    assert tx["from"] == GUARDIAN and tx["to"] == multisig.chain.world.safe  # execTransaction, relayed
