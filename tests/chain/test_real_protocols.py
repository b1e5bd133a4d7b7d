"""Real protocols on real Anvil, each under its own Safe 2-of-3 with the GuardianModule: Balancer V2's Vault and
Authorizer and a Uniswap V2 pair from the bytecode their npm packages publish, and the team's OpenZeppelin 5
token. Each works as published, the Safe's pause stops it, and the guardian pauses through the module only with
the exact calldata the owners allowlisted."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from onguard.demo.world import TOKEN, Roles, artifact, contract, dev_account, transact

from ..fixtures.protocols.balancer import POOL_LIQUIDITY, swap_given_in
from ..fixtures.protocols.governance import GuardianAction, Governance, as_safe, guardian_module
from ..fixtures.protocols.uniswap import LIQUIDITY, factory_artifact, spot_price, swap_token0_for_token1
from .conftest import ProtocolsChain

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN).address
ATTACKER = dev_account(Roles.ATTACKER).address
ALICE, BOB, CAROL = (dev_account(i).address for i in Roles.DEPOSITORS)
BALANCER_PAUSED = "BAL#402"  # Balancer's Errors.PAUSED
BALANCER_SENDER_NOT_ALLOWED = "BAL#401"  # Errors.SENDER_NOT_ALLOWED
ERC1967_IMPLEMENTATION_SLOT = int.from_bytes(keccak(text="eip1967.proxy.implementation")) - 1
CALL = 0  # Safe operation
SPOT_DUMP = 9_000_000 * TOKEN  # token0 the spot-price attacker pushes into the Uniswap pair


def guardian_execute(w3: Web3, governance: Governance, action: GuardianAction) -> Any:
    module = guardian_module(w3, governance)
    return transact(w3, module.functions.execute(action.target, 0, action.calldata, CALL), GUARDIAN)


def calldata_mismatch(expected: bytes, actual: bytes) -> str:
    """The module's CalldataMismatch(expected, actual) revert data."""
    return "0x" + (keccak(text="CalldataMismatch(bytes32,bytes32)")[:4] + encode(
        ["bytes32", "bytes32"], [expected, actual])).hex()


def assert_guardian_refused_with_mismatch(w3: Web3, governance: Governance, allowed: GuardianAction,
                                          other_calldata: bytes) -> None:
    module = guardian_module(w3, governance)
    with pytest.raises(ContractCustomError) as refused:
        module.functions.execute(allowed.target, 0, other_calldata, CALL).call({"from": GUARDIAN})
    assert refused.value.data == calldata_mismatch(allowed.calldata_hash, keccak(other_calldata))


# ---- Balancer V2: Vault + Authorizer -------------------------------------------------------------------------

def test_balancer_vault_lends_until_the_safe_pauses_it(protocols: ProtocolsChain) -> None:
    w3, balancer = protocols.w3, protocols.worlds.balancer
    vault = balancer.vault_contract(w3)
    borrower = contract(w3, "BalancerFlashBorrower", balancer.borrower)
    held = contract(w3, "WETH9", balancer.weth).functions.balanceOf(balancer.vault).call()
    assert held == 3_000 * TOKEN  # three depositors' internal balances

    transact(w3, borrower.functions.borrow(balancer.weth, held), ATTACKER)
    assert borrower.functions.largestLoan().call() == held

    as_safe(protocols.client, balancer.governance, balancer.vault, vault.encode_abi("setPaused", [True]))
    assert vault.functions.getPausedState().call()[0] is True
    with pytest.raises(ContractLogicError, match=BALANCER_PAUSED):
        borrower.functions.borrow(balancer.weth, TOKEN).call({"from": ATTACKER})
    # Paused, the Vault still lets depositors take their internal balance out (as Balancer documents).
    transact(w3, vault.functions.manageUserBalance([(1, balancer.weth, held // 3, ALICE, ALICE)]), ALICE)
    assert vault.functions.getInternalBalance(ALICE, [balancer.weth]).call() == [0]


def test_balancer_pause_is_an_authorizer_role_only_the_safe_holds(protocols: ProtocolsChain) -> None:
    w3, balancer = protocols.w3, protocols.worlds.balancer
    vault, authorizer = balancer.vault_contract(w3), balancer.authorizer_contract(w3)
    action_id = vault.functions.getActionId(vault.functions.setPaused(True).selector).call()
    assert authorizer.functions.canPerform(action_id, balancer.governance.safe, balancer.vault).call()
    assert authorizer.functions.hasRole(authorizer.functions.DEFAULT_ADMIN_ROLE().call(),
                                        balancer.governance.safe).call()
    with pytest.raises(ContractLogicError, match=BALANCER_SENDER_NOT_ALLOWED):
        vault.functions.setPaused(True).call({"from": GUARDIAN})


def test_balancer_guardian_pauses_through_the_module_with_the_exact_calldata(protocols: ProtocolsChain) -> None:
    w3, balancer = protocols.w3, protocols.worlds.balancer
    vault = balancer.vault_contract(w3)
    assert balancer.pause.calldata == Web3.to_bytes(hexstr=vault.encode_abi("setPaused", [True]))
    action = guardian_module(w3, balancer.governance).functions.getAction(
        balancer.vault, balancer.pause.selector).call()
    assert action[0] is True and action[3] == keccak(balancer.pause.calldata)

    assert_guardian_refused_with_mismatch(w3, balancer.governance, balancer.pause,
                                          Web3.to_bytes(hexstr=vault.encode_abi("setPaused", [False])))
    assert vault.functions.getPausedState().call()[0] is False

    guardian_execute(w3, balancer.governance, balancer.pause)
    assert vault.functions.getPausedState().call()[0] is True
    with pytest.raises(ContractLogicError, match=BALANCER_PAUSED):
        contract(w3, "BalancerFlashBorrower", balancer.borrower).functions.borrow(
            balancer.weth, TOKEN).call({"from": ATTACKER})


def test_balancer_swaps_through_the_vault_until_it_is_paused(protocols: ProtocolsChain) -> None:
    w3, balancer, uniswap = protocols.w3, protocols.worlds.balancer, protocols.worlds.uniswap
    token0, token1 = contract(w3, "TestToken", uniswap.token0), contract(w3, "TestToken", uniswap.token1)
    transact(w3, token1.functions.mint(BOB, 1_000 * TOKEN), BOB)

    transact(w3, swap_given_in(w3, balancer, BOB, uniswap.token1, uniswap.token0, 1_000 * TOKEN), BOB)
    # The pool quotes the pair's spot price: token1 is worth two token0.
    assert token0.functions.balanceOf(BOB).call() == 2_000 * TOKEN
    _, balances, _ = balancer.vault_contract(w3).functions.getPoolTokens(balancer.pool_id).call()
    assert balances == [(POOL_LIQUIDITY[0] - 2_000) * TOKEN, (POOL_LIQUIDITY[1] + 1_000) * TOKEN]

    guardian_execute(w3, balancer.governance, balancer.pause)
    transact(w3, token1.functions.mint(BOB, 1_000 * TOKEN), BOB)
    with pytest.raises(ContractLogicError, match=BALANCER_PAUSED):
        swap_given_in(w3, balancer, BOB, uniswap.token1, uniswap.token0, 1_000 * TOKEN).call({"from": BOB})


def deploy_spot_price_attacker(w3: Web3, protocols: ProtocolsChain) -> Any:
    """The attacker's exploit contract, funded with the token0 it dumps (in real life: flash-borrowed)."""
    balancer, uniswap = protocols.worlds.balancer, protocols.worlds.uniswap
    build = artifact("SpotPriceAttacker")
    factory = w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"])
    receipt = transact(w3, factory.constructor(balancer.vault, balancer.pool), ATTACKER)
    attacker = w3.eth.contract(address=receipt["contractAddress"], abi=build["abi"])
    transact(w3, contract(w3, "TestToken", uniswap.token0).functions.mint(attacker.address, SPOT_DUMP), ATTACKER)
    return attacker


def spot_price_attack(attacker: Any, protocols: ProtocolsChain) -> Any:
    """Dump token0 into the Uniswap pair, then buy all the pool's token0 at the inflated price of token1."""
    uniswap = protocols.worlds.uniswap
    return attacker.functions.attack(uniswap.token0, uniswap.token1, SPOT_DUMP, POOL_LIQUIDITY[0] * TOKEN)


def test_balancer_spot_price_pool_is_drained_in_one_transaction_unless_paused(protocols: ProtocolsChain) -> None:
    w3, balancer, uniswap = protocols.w3, protocols.worlds.balancer, protocols.worlds.uniswap
    token0 = contract(w3, "TestToken", uniswap.token0)
    attacker = deploy_spot_price_attacker(w3, protocols)

    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    transact(w3, spot_price_attack(attacker, protocols), ATTACKER)
    taken = token0.functions.balanceOf(ATTACKER).call()
    assert taken >= POOL_LIQUIDITY[0] * TOKEN * 99 // 100  # the pool's token0, all of it but rounding
    assert token0.functions.balanceOf(balancer.vault).call() == POOL_LIQUIDITY[0] * TOKEN - taken
    w3.provider.make_request("evm_revert", [snapshot])

    guardian_execute(w3, balancer.governance, balancer.pause)
    with pytest.raises(ContractLogicError, match=BALANCER_PAUSED):
        spot_price_attack(attacker, protocols).call({"from": ATTACKER})


# ---- Uniswap V2: factory + pair ------------------------------------------------------------------------------

def test_uniswap_pair_spot_price_moves_with_one_swap(protocols: ProtocolsChain) -> None:
    w3, uniswap = protocols.w3, protocols.worlds.uniswap
    token0 = contract(w3, "TestToken", uniswap.token0)
    assert spot_price(w3, uniswap) == LIQUIDITY[1] / LIQUIDITY[0]
    k_before = LIQUIDITY[0] * LIQUIDITY[1] * TOKEN**2

    transact(w3, token0.functions.mint(ATTACKER, 1_000_000 * TOKEN), ATTACKER)
    received = swap_token0_for_token1(w3, uniswap, token0, ATTACKER, 1_000_000 * TOKEN)

    assert contract(w3, "TestToken", uniswap.token1).functions.balanceOf(ATTACKER).call() == received
    # Doubling the token0 reserve quarters the spot price (less the fee the pool keeps).
    assert spot_price(w3, uniswap) < 0.26 * LIQUIDITY[1] / LIQUIDITY[0]
    reserve0, reserve1, _ = uniswap.pair_contract(w3).functions.getReserves().call()
    assert reserve0 * reserve1 > k_before


def test_uniswap_factory_fee_switch_belongs_to_the_safe(protocols: ProtocolsChain) -> None:
    w3, uniswap = protocols.w3, protocols.worlds.uniswap
    factory = factory_artifact().at(w3, uniswap.factory)
    assert factory.functions.feeToSetter().call() == uniswap.governance.safe
    with pytest.raises(ContractLogicError, match="UniswapV2: FORBIDDEN"):
        factory.functions.setFeeTo(ATTACKER).call({"from": ATTACKER})
    as_safe(protocols.client, uniswap.governance, uniswap.factory,
            factory.encode_abi("setFeeTo", [uniswap.governance.safe]))
    assert factory.functions.feeTo().call() == uniswap.governance.safe


# ---- GuardedToken: OpenZeppelin 5 AccessControl + Pausable + UUPS ----------------------------------------------

def test_token_sits_behind_its_erc1967_proxy_with_the_roles_on_the_safe(protocols: ProtocolsChain) -> None:
    w3, world = protocols.w3, protocols.worlds.token
    token = world.token_contract(w3)
    slot = w3.eth.get_storage_at(world.token, ERC1967_IMPLEMENTATION_SLOT)
    assert Web3.to_checksum_address(slot[-20:]) == world.implementation
    safe = world.governance.safe
    for role in ("DEFAULT_ADMIN_ROLE", "PAUSER_ROLE", "MINTER_ROLE"):
        assert token.functions.hasRole(token.get_function_by_name(role)().call(), safe).call(), role
    assert token.functions.hasRole(token.functions.MINTER_ROLE().call(), world.minter).call()


def test_token_mints_and_transfers_until_the_safe_pauses_it(protocols: ProtocolsChain) -> None:
    w3, world = protocols.w3, protocols.worlds.token
    token = world.token_contract(w3)
    transact(w3, token.functions.mint(BOB, 5 * TOKEN), world.minter)
    transact(w3, token.functions.transfer(CAROL, 2 * TOKEN), BOB)
    assert token.functions.balanceOf(CAROL).call() == 10_002 * TOKEN

    as_safe(protocols.client, world.governance, world.token, token.encode_abi("pause", []))
    enforced_pause = "0x" + keccak(text="EnforcedPause()")[:4].hex()
    for call, sender in ((token.functions.transfer(CAROL, 1), BOB), (token.functions.mint(BOB, 1), world.minter)):
        with pytest.raises(ContractCustomError) as refused:
            call.call({"from": sender})
        assert refused.value.data == enforced_pause


def test_token_guardian_pauses_and_cuts_off_the_minter_with_the_exact_calldata(protocols: ProtocolsChain) -> None:
    w3, world = protocols.w3, protocols.worlds.token
    token = world.token_contract(w3)
    minter_role = token.functions.MINTER_ROLE().call()
    # Revoking another account's role is not what the owners allowlisted: refused.
    assert_guardian_refused_with_mismatch(w3, world.governance, world.revoke_minter,
                                          Web3.to_bytes(hexstr=token.encode_abi("revokeRole", [minter_role, ALICE])))

    guardian_execute(w3, world.governance, world.pause)
    guardian_execute(w3, world.governance, world.revoke_minter)

    assert token.functions.paused().call() is True
    assert token.functions.hasRole(minter_role, world.minter).call() is False
    assert token.functions.hasRole(minter_role, world.governance.safe).call() is True
    with pytest.raises(ContractCustomError):
        token.functions.mint(ATTACKER, 10**9 * TOKEN).call({"from": world.minter})


def test_token_emergency_is_one_transaction_through_execute_batch(protocols: ProtocolsChain) -> None:
    w3, world = protocols.w3, protocols.worlds.token
    token, module = world.token_contract(w3), guardian_module(w3, world.governance)
    minter_role = token.functions.MINTER_ROLE().call()
    calls = [(action.target, action.calldata) for action in world.emergency]

    receipt = transact(w3, module.functions.executeBatch(calls), GUARDIAN)

    assert token.functions.paused().call() is True
    assert token.functions.hasRole(minter_role, world.minter).call() is False
    executed_topic = Web3.keccak(text="ActionExecuted(address,address,bytes4,bytes32)")
    executed = [log["topics"][3][:4] for log in receipt["logs"]
                if log["address"] == world.governance.module and log["topics"][0] == executed_topic]
    assert executed == [action.selector for action in world.emergency]
    # A batch is all or nothing: the same calls again are cooling down and change nothing.
    with pytest.raises(ContractCustomError):
        module.functions.executeBatch(calls).call({"from": GUARDIAN})
