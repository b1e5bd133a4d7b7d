"""The real protocols guarded end to end by the onguard daemon, configured as their teams would (an onguard.toml
and policies written from the fixture): an attack waiting in the mempool is beaten by the pre-authorised
response through the Safe's GuardianModule, and an hour of ordinary use trips nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo.world import TOKEN, Roles, dev_account
from onguard.incidents.store import Incident, ResponseStatus
from onguard.runtime import Guardian
from onguard.sources.mempool import MempoolSource

from ..fixtures.protocols.config import Watched, forge_abi, write_guard_config
from .conftest import ProtocolsChain

pytestmark = pytest.mark.chain

KEY_ENV = "ONGUARD_TEST_PROTOCOLS_GUARDIAN_KEY"
GUARDIAN = dev_account(Roles.GUARDIAN).address
ATTACKER = dev_account(Roles.ATTACKER).address
ALICE, BOB, CAROL = (dev_account(i).address for i in Roles.DEPOSITORS)
BENIGN_HOUR = 60  # blocks of ordinary use


@pytest.fixture(autouse=True)
def _guardian_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())


@dataclass(frozen=True)
class RaceOutcome:
    block_hashes: list[str]  # the transactions of the one block mined after the attack was sent
    attack: str
    pause: str | None
    attack_status: int
    incidents: list[Incident]


def race(w3: Web3, config_path: Path, send_attack: Callable[[], str], wait: float = 5.0) -> RaceOutcome:
    """Mining held: the guardian (with its mempool source) sees the pending attack and sends its response; then one
    block is mined and its order read."""

    async def scenario() -> RaceOutcome:
        config = load_config(config_path)
        guardian = Guardian(config, load_guardian_account(config.guardian_key))
        stop = asyncio.Event()
        listening = None
        try:
            await guardian.start()
            await guardian.step()
            w3.provider.make_request("evm_setAutomine", [False])
            assert config.mempool.ws_url is not None
            source = MempoolSource(config.mempool.ws_url, config.chain.rpc_url, config.chain.chain_id,
                                   config.contracts, ignore_senders=[GUARDIAN])
            listening = asyncio.create_task(source.run(guardian.on_pending, stop))
            await asyncio.sleep(0.3)  # the subscription is up
            attack = await asyncio.to_thread(send_attack)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not sent_responses(guardian):
                await asyncio.sleep(0.02)
            sent = sent_responses(guardian)
            w3.provider.make_request("evm_mine", [])
            await guardian.drain_responses(timeout=10)
            block = w3.eth.get_block("latest")
            return RaceOutcome(block_hashes=[h.to_0x_hex() for h in block["transactions"]], attack=attack,
                               pause=sent[0] if sent else None,
                               attack_status=w3.eth.get_transaction_receipt(attack)["status"],
                               incidents=guardian.store.incidents())
        finally:
            stop.set()
            if listening is not None:
                await listening
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    return asyncio.run(scenario())


def sent_responses(guardian: Guardian) -> list[str]:
    return [r.tx_hash for i in guardian.store.incidents() for r in guardian.store.responses(i.id)
            if r.status == ResponseStatus.SENT and r.tx_hash]


def assert_response_first(outcome: RaceOutcome, policy_id: str) -> None:
    assert outcome.pause is not None, "no response was sent"
    assert outcome.pause in outcome.block_hashes and outcome.attack in outcome.block_hashes
    assert outcome.block_hashes.index(outcome.pause) < outcome.block_hashes.index(outcome.attack)
    assert outcome.attack_status == 0
    (incident,) = outcome.incidents
    assert incident.policy_id == policy_id
    assert incident.evidence["path"] == "mempool" and incident.evidence["threat_tx"] == outcome.attack


@dataclass(frozen=True)
class QuietOutcome:
    blocks: int  # blocks the guardian handled
    incidents: list[Incident]
    failures: list  # policy evaluations that failed


def follow_ordinary_use(w3: Web3, config_path: Path, ordinary_block: Callable[[int], None]) -> QuietOutcome:
    """The guardian, with its mempool source listening, follows BENIGN_HOUR blocks of ordinary use (one call of
    `ordinary_block(i)` each, its transactions mined as sent) and handles every one of them."""

    async def scenario() -> QuietOutcome:
        config = load_config(config_path)
        guardian = Guardian(config, load_guardian_account(config.guardian_key))
        stop = asyncio.Event()
        listening = None
        try:
            await guardian.start()
            await guardian.step()
            first = guardian.source.last_committed
            assert config.mempool.ws_url is not None and first is not None
            source = MempoolSource(config.mempool.ws_url, config.chain.rpc_url, config.chain.chain_id,
                                   config.contracts, ignore_senders=[GUARDIAN])
            listening = asyncio.create_task(source.run(guardian.on_pending, stop))
            for index in range(BENIGN_HOUR):
                await asyncio.to_thread(ordinary_block, index)
                await guardian.step()
            head = w3.eth.block_number
            while guardian.source.last_committed is None or guardian.source.last_committed < head:
                await guardian.step()
            await guardian.drain_responses(timeout=10)
            return QuietOutcome(blocks=guardian.source.last_committed - first, incidents=guardian.store.incidents(),
                                failures=guardian.store.evaluation_failures())
        finally:
            stop.set()
            if listening is not None:
                await listening
            await guardian.close()

    return asyncio.run(scenario())


def assert_quiet(outcome: QuietOutcome) -> None:
    assert outcome.blocks >= BENIGN_HOUR
    assert outcome.incidents == [] and outcome.failures == []


# ---- GuardedToken: a compromised minter ----------------------------------------------------------------------

TOKEN_POLICIES = {
    "huge-mint.toml": """
id = "huge-mint"
description = "A mint of more than 1,000,000 tokens: ten times what the team ever mints at once"
kind = "call"
severity = "critical"
response = ["token_emergency"]
[match]
contract = "token"
function = "mint"
where = "args.amount > 1_000_000e18"
""",
}


def token_actions() -> str:
    return """
[actions.token_emergency]
contract = "token"
call = "pause()"
done_when = "paused()"
"""


def token_config(protocols: ProtocolsChain, folder: Path) -> Path:
    world = protocols.worlds.token
    return write_guard_config(folder, rpc_url=protocols.node.rpc_url, chain_id=protocols.worlds.chain_id,
                              governance=world.governance,
                              contracts={"token": Watched(world.token, forge_abi("GuardedToken"))},
                              actions=token_actions(), policies=TOKEN_POLICIES, key_env=KEY_ENV,
                              ws_url=protocols.node.ws_url)


def test_token_a_compromised_minters_pending_huge_mint_is_beaten(protocols: ProtocolsChain, tmp_path: Path) -> None:
    w3, world = protocols.w3, protocols.worlds.token
    token = world.token_contract(w3)
    supply = token.functions.totalSupply().call()

    def huge_mint() -> str:
        return token.functions.mint(ATTACKER, 10**9 * TOKEN).transact(
            {"from": world.minter, "gas": 200_000}).to_0x_hex()

    outcome = race(w3, token_config(protocols, tmp_path), huge_mint)

    assert_response_first(outcome, "huge-mint")
    assert token.functions.paused().call() is True
    assert token.functions.totalSupply().call() == supply
    assert token.functions.balanceOf(ATTACKER).call() == 0


def test_token_an_hour_of_ordinary_transfers_and_mints_trips_nothing(protocols: ProtocolsChain,
                                                                     tmp_path: Path) -> None:
    w3, world = protocols.w3, protocols.worlds.token
    token = world.token_contract(w3)
    holders = (ALICE, BOB, CAROL)

    def ordinary_block(index: int) -> None:
        sender, receiver = holders[index % 3], holders[(index + 1) % 3]
        if index % 10 == 0:  # the minter's routine issuance
            token.functions.mint(sender, 50_000 * TOKEN).transact({"from": world.minter})
        else:
            token.functions.transfer(receiver, (index + 1) * TOKEN).transact({"from": sender})

    assert_quiet(follow_ordinary_use(w3, token_config(protocols, tmp_path), ordinary_block))
    assert token.functions.paused().call() is False
