"""MultiSend batches as proposals on real Anvil with the real Safe v1.4.1 and Safe's MultiSendCallOnly v1.4.1 at its
canonical address: `show` decodes and simulates every call, owners sign and execute, all calls take effect in one
Safe transaction; a DELEGATECALL to anything else is flagged and not simulated."""

from __future__ import annotations

from dataclasses import replace

import pytest

from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStore
from onguard.safe.chain import SafeOnChain
from onguard.safe.tx import DELEGATECALL, MULTISEND_CALL_ONLY, BatchCall, SafeTxData

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import is_paused

pytestmark = pytest.mark.chain

KEY_ENV = "ONGUARD_TEST_SIGNER_KEY"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def propose(config_path, tx: SafeTxData, purpose: str) -> int:
    store = IncidentStore(load_config(config_path).database)
    try:
        return SafeTxStore(store.database).add(TxKind.PROPOSAL, tx, purpose=purpose, proposer="test").id
    finally:
        store.close()


@pytest.fixture
def config(chain, tmp_path, monkeypatch):
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    return write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV)


def test_the_canonical_multisend_call_only_is_found_on_the_world_chain(chain):
    assert SafeOnChain(chain.world.rpc_url, chain.world.safe).retrieve_multisend() == MULTISEND_CALL_ONLY


def test_a_batch_is_decoded_call_by_call_signed_and_executed_in_one_safe_transaction(chain, config, capsys,
                                                                                     monkeypatch):
    w3, world = chain.w3, chain.world
    vault, breaker = contract(w3, "Vault", world.vault), contract(w3, "CircuitBreaker", world.breaker)
    nonce = SafeOnChain(world.rpc_url, world.safe).retrieve_state().nonce
    tx = SafeTxData.batch(world.safe, world.chain_id, [
        BatchCall(world.vault, bytes.fromhex(vault.encode_abi("pause", [])[2:])),
        BatchCall(world.breaker, bytes.fromhex(breaker.encode_abi("trip", [])[2:]))], nonce)
    assert tx.operation == DELEGATECALL and tx.to == MULTISEND_CALL_ONLY
    proposal = propose(config, tx, "pause the vault and trip the breaker")

    code, out, err = run(capsys, "proposals", "--config", str(config), "show", str(proposal))
    assert code == 0, err
    assert "batch        2 calls" in out and MULTISEND_CALL_ONLY in out
    assert "call 1/2" in out and f"to           {world.vault} (vault)" in out and "call         pause()" in out
    assert "call 2/2" in out and f"to           {world.breaker} (breaker)" in out and "call         trip()" in out
    assert "simulation   succeeds" in out
    assert "vault.paused: false -> true" in out and "breaker.tripped: false -> true" in out

    for owner in Roles.OWNERS[:2]:
        monkeypatch.setenv(KEY_ENV, dev_account(owner).key.to_0x_hex())
        code, _, err = run(capsys, "proposals", "--config", str(config), "sign", str(proposal), "--key-env", KEY_ENV,
                           "--yes")
        assert code == 0, err
    monkeypatch.setenv(KEY_ENV, dev_account(Roles.DEPLOYER).key.to_0x_hex())
    block_before = w3.eth.block_number
    code, out, err = run(capsys, "proposals", "--config", str(config), "execute", str(proposal), "--key-env", KEY_ENV,
                         "--yes")
    assert code == 0, err
    assert is_paused(w3, world) and breaker.functions.tripped().call()
    assert w3.eth.block_number == block_before + 1  # one Safe transaction for both calls


def test_a_batch_whose_second_call_fails_is_shown_reverting_and_names_the_call(chain, config, capsys):
    w3, world = chain.w3, chain.world
    vault = contract(w3, "Vault", world.vault)
    pause = bytes.fromhex(vault.encode_abi("pause", [])[2:])
    tx = SafeTxData.batch(world.safe, world.chain_id, [BatchCall(world.vault, pause), BatchCall(world.vault, pause)],
                          SafeOnChain(world.rpc_url, world.safe).retrieve_state().nonce)
    proposal = propose(config, tx, "pause twice")
    code, out, err = run(capsys, "proposals", "--config", str(config), "show", str(proposal))
    assert code == 0, err
    assert "simulation   REVERTS: call 2 of 2" in out
    assert not is_paused(w3, world)  # show changes nothing


def test_a_delegatecall_to_an_unknown_contract_is_flagged_and_not_simulated(chain, config, capsys):
    world = chain.world
    nonce = SafeOnChain(world.rpc_url, world.safe).retrieve_state().nonce
    base = SafeTxData.call(world.safe, world.chain_id, world.vault, b"\x8d\x80\xff\x0a", nonce)
    proposal = propose(config, replace(base, operation=DELEGATECALL), "suspicious")
    code, out, err = run(capsys, "proposals", "--config", str(config), "show", str(proposal))
    assert code == 0, err
    assert "DELEGATECALL (!)" in out and "full authority" in out
    assert "not a known MultiSendCallOnly: not simulated" in out


def test_a_batch_survives_export_and_import_and_is_still_decoded(chain, config, tmp_path, capsys):
    w3, world = chain.w3, chain.world
    vault, breaker = contract(w3, "Vault", world.vault), contract(w3, "CircuitBreaker", world.breaker)
    tx = SafeTxData.batch(world.safe, world.chain_id, [
        BatchCall(world.vault, bytes.fromhex(vault.encode_abi("pause", [])[2:])),
        BatchCall(world.breaker, bytes.fromhex(breaker.encode_abi("trip", [])[2:]))],
        SafeOnChain(world.rpc_url, world.safe).retrieve_state().nonce)
    proposal = propose(config, tx, "freeze")
    exported = tmp_path / "batch.json"
    assert run(capsys, "proposals", "--config", str(config), "export", str(proposal), "--out", str(exported))[0] == 0
    other = write_config(world, tmp_path / "other", key_env=GUARDIAN_KEY_ENV)
    code, _, err = run(capsys, "proposals", "--config", str(other), "import", str(exported))
    assert code == 0, err
    code, out, err = run(capsys, "proposals", "--config", str(other), "show", "1")
    assert code == 0, err
    assert f"Safe tx hash {tx.safe_tx_hash_hex}" in out and "batch        2 calls" in out
    assert "call         pause()" in out and "call         trip()" in out
