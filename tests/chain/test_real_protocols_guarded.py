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
from web3.exceptions import ContractLogicError

from onguard.config import load_config
from onguard.demo.world import TOKEN, Roles, artifact, contract, dev_account, transact
from onguard.incidents.store import Incident, ResponseStatus
from onguard.runtime import Guardian

from ..fixtures.protocols.balancer import POOL_LIQUIDITY, BalancerWorld, swap_given_in
from ..fixtures.protocols.config import Watched, forge_abi, write_guard_config
from ..fixtures.protocols.governance import guardian_module
from ..fixtures.protocols.uniswap import UniswapWorld, swap_token0_for_token1
from ..scenarios.fixtures.balancer_spot_price import guard_config
from .conftest import ProtocolsChain
from .helpers import following_the_mempool, make_guardian

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
    responses: list[str]  # the guardian's response transactions sent, in the order they were sent
    attack_status: int
    incidents: list[Incident]

    @property
    def pause(self) -> str | None:
        return self.responses[0] if self.responses else None


def race(w3: Web3, config_path: Path, send_attack: Callable[[], str], wait: float = 5.0,
         responses: int = 1) -> RaceOutcome:
    """Mining held: the guardian (with its mempool source) sees the pending attack and sends its `responses`
    transactions; then one block is mined and its order read."""

    async def scenario() -> RaceOutcome:
        guardian = make_guardian(config_path)
        try:
            await guardian.start()
            await guardian.step()
            w3.provider.make_request("evm_setAutomine", [False])
            async with following_the_mempool(guardian):
                attack = await asyncio.to_thread(send_attack)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and len(sent_responses(guardian)) < responses:
                    await asyncio.sleep(0.02)
                sent = sent_responses(guardian)
                w3.provider.make_request("evm_mine", [])
                await guardian.drain_responses(timeout=10)
            block = w3.eth.get_block("latest")
            return RaceOutcome(block_hashes=[h.to_0x_hex() for h in block["transactions"]], attack=attack,
                               responses=sent,
                               attack_status=w3.eth.get_transaction_receipt(attack)["status"],
                               incidents=guardian.store.incidents())
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
            await guardian.close()

    return asyncio.run(scenario())


def sent_responses(guardian: Guardian) -> list[str]:
    return [r.tx_hash for i in guardian.store.incidents() for r in guardian.store.responses(i.id)
            if r.status == ResponseStatus.SENT and r.tx_hash]


def assert_response_first(outcome: RaceOutcome, policy_id: str, responses: int = 1) -> None:
    assert len(outcome.responses) == responses, f"{len(outcome.responses)} responses sent, not {responses}"
    assert outcome.attack in outcome.block_hashes
    for response in outcome.responses:
        assert response in outcome.block_hashes
        assert outcome.block_hashes.index(response) < outcome.block_hashes.index(outcome.attack)
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
        guardian = make_guardian(config_path)
        try:
            await guardian.start()
            await guardian.step()
            first = guardian.source.last_committed
            assert first is not None
            async with following_the_mempool(guardian):
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
response = ["freeze_token"]
[match]
contract = "token"
function = "mint"
where = "args.amount > 1_000_000e18"
""",
}


def token_actions(minter: str) -> str:
    """Pause, and cut the compromised minter off: one action of two calls, sent in one transaction through the
    module's executeBatch (all or nothing, in order)."""
    return f"""
[actions.freeze_token]
done_when = "token.paused() and not token.hasRole(keccak256:MINTER_ROLE, {minter})"

[[actions.freeze_token.calls]]
contract = "token"
function = "pause()"

[[actions.freeze_token.calls]]
contract = "token"
function = "revokeRole(bytes32,address)"
args = ["keccak256:MINTER_ROLE", "{minter}"]
"""


def token_config(protocols: ProtocolsChain, folder: Path) -> Path:
    world = protocols.worlds.token
    return write_guard_config(folder, rpc_url=protocols.node.rpc_url, chain_id=protocols.worlds.chain_id,
                              governance=world.governance,
                              contracts={"token": Watched(world.token, forge_abi("GuardedToken"))},
                              actions=token_actions(world.minter), policies=TOKEN_POLICIES, key_env=KEY_ENV,
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
    assert token.functions.hasRole(token.functions.MINTER_ROLE().call(), world.minter).call() is False
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



# ---- Balancer V2: a pool drained through the Vault ---------------------------------------------------------------

SPOT_DUMP = 9_000_000 * TOKEN  # token0 the attacker pushes into the Uniswap pair


def balancer_config(protocols: ProtocolsChain, folder: Path) -> Path:
    return guard_config(protocols.worlds, folder, protocols.node.rpc_url, KEY_ENV, ws_url=protocols.node.ws_url)


def spot_price_drain(w3: Web3, balancer: BalancerWorld, uniswap: UniswapWorld) -> Callable[[], str]:
    """Deploys the SpotPriceAttacker holding SPOT_DUMP token0; the returned call sends its drain of the pool."""
    build = artifact("SpotPriceAttacker")
    receipt = transact(w3, w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"]).constructor(
        balancer.vault, balancer.pool), ATTACKER)
    attacker = w3.eth.contract(address=receipt["contractAddress"], abi=build["abi"])
    transact(w3, contract(w3, "TestToken", uniswap.token0).functions.mint(attacker.address, SPOT_DUMP), ATTACKER)

    def drain() -> str:
        return attacker.functions.attack(uniswap.token0, uniswap.token1, SPOT_DUMP,
                                         POOL_LIQUIDITY[0] * TOKEN).transact(
            {"from": ATTACKER, "gas": 1_000_000}).to_0x_hex()

    return drain


def test_balancer_a_pending_spot_price_drain_is_beaten_by_set_paused_true(protocols: ProtocolsChain,
                                                                           tmp_path: Path) -> None:
    w3, world, uniswap = protocols.w3, protocols.worlds.balancer, protocols.worlds.uniswap
    token0 = contract(w3, "TestToken", uniswap.token0)
    outcome = race(w3, balancer_config(protocols, tmp_path), spot_price_drain(w3, world, uniswap))

    assert_response_first(outcome, "vault-pool-drain")
    assert world.vault_contract(w3).functions.getPausedState().call()[0] is True
    assert token0.functions.balanceOf(world.vault).call() == POOL_LIQUIDITY[0] * TOKEN
    assert token0.functions.balanceOf(ATTACKER).call() == 0
    pause = w3.eth.get_transaction(outcome.pause)
    assert pause["from"] == GUARDIAN and pause["to"] == world.governance.module


def test_balancer_an_hour_of_ordinary_swaps_flash_loans_and_trades_trips_nothing(protocols: ProtocolsChain,
                                                                          tmp_path: Path) -> None:
    w3, world, uniswap = protocols.w3, protocols.worlds.balancer, protocols.worlds.uniswap
    tokens = (contract(w3, "TestToken", uniswap.token0), contract(w3, "TestToken", uniswap.token1))
    borrower = contract(w3, "BalancerFlashBorrower", world.borrower)
    for trader in (ALICE, BOB):
        for token in tokens:
            transact(w3, token.functions.mint(trader, 200_000 * TOKEN), trader)
            transact(w3, token.functions.approve(world.vault, 2**256 - 1), trader)

    def ordinary_block(index: int) -> None:
        if index % 10 == 8:  # a trade on the Uniswap pair the pool prices from
            swap_token0_for_token1(w3, uniswap, tokens[0], ALICE, 5_000 * TOKEN)
            return
        if index % 6 == 5:  # someone's flash loan, repaid in the same call
            borrower.functions.borrow(world.weth, 500 * TOKEN).transact({"from": CAROL})
            return
        trader = (ALICE, BOB)[index % 2]
        token_in, token_out = (uniswap.token0, uniswap.token1) if index % 3 else (uniswap.token1, uniswap.token0)
        swap_given_in(w3, world, trader, token_in, token_out, (index + 1) * 100 * TOKEN).transact({"from": trader})

    assert_quiet(follow_ordinary_use(w3, balancer_config(protocols, tmp_path), ordinary_block))
    assert world.vault_contract(w3).functions.getPausedState().call()[0] is False
    assert borrower.functions.loans().call() == BENIGN_HOUR // 6


def test_balancer_a_mined_manipulation_of_the_price_source_pauses_the_vault_on_the_block_path(
        protocols: ProtocolsChain, tmp_path: Path) -> None:
    """The attack in two transactions: the first, moving the Uniswap pair, is mined; the delta policy on the pair's
    reserves trips on that block and the Vault is paused before the second can sell into the pool."""
    w3, world, uniswap = protocols.w3, protocols.worlds.balancer, protocols.worlds.uniswap
    token0, token1 = contract(w3, "TestToken", uniswap.token0), contract(w3, "TestToken", uniswap.token1)
    transact(w3, token0.functions.mint(ATTACKER, SPOT_DUMP), ATTACKER)

    async def scenario() -> list[str]:
        guardian = make_guardian(balancer_config(protocols, tmp_path))
        try:
            await guardian.start()
            await guardian.step()
            await asyncio.to_thread(swap_token0_for_token1, w3, uniswap, token0, ATTACKER, SPOT_DUMP)
            decisions = await guardian.step()
            await guardian.drain_responses(timeout=10)
            return [decision.finding.policy.id for decision in decisions]
        finally:
            await guardian.close()

    assert asyncio.run(scenario()) == ["price-source-jump"]
    assert world.vault_contract(w3).functions.getPausedState().call()[0] is True
    bought = token1.functions.balanceOf(ATTACKER).call()
    sell = swap_given_in(w3, world, ATTACKER, uniswap.token1, uniswap.token0, bought // 100)
    with pytest.raises(ContractLogicError, match="BAL#402"):
        sell.call({"from": ATTACKER})
    assert token0.functions.balanceOf(world.vault).call() == POOL_LIQUIDITY[0] * TOKEN


@pytest.mark.parametrize("protocol", ["balancer", "token"])
def test_onguard_encodes_exactly_the_calldata_the_owners_allowlisted(protocols: ProtocolsChain, tmp_path: Path,
                                                                     protocol: str) -> None:
    """Two independent encodings agree: the fixture's (web3, when the owners allowlisted it) and onguard's (from
    the action in onguard.toml), call by call, and the module holds that hash."""
    if protocol == "balancer":
        config, governance = balancer_config(protocols, tmp_path), protocols.worlds.balancer.governance
        allowlisted = (protocols.worlds.balancer.pause,)
    else:
        config, governance = token_config(protocols, tmp_path), protocols.worlds.token.governance
        allowlisted = protocols.worlds.token.emergency
    calls = [call for action in load_config(config).actions.values() for call in action.calls]
    module = guardian_module(protocols.w3, governance)
    assert [(call.target, call.calldata) for call in calls] == [(a.target, a.calldata) for a in allowlisted]
    for call, action in zip(calls, allowlisted, strict=True):
        assert call.calldata_hash == "0x" + action.calldata_hash.hex()
        assert module.functions.getAction(call.target, call.selector).call()[3] == action.calldata_hash
