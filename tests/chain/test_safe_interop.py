"""The Safe ecosystem's formats and tools, on real Anvil with the real Safe v1.4.1 (and a Safe 1.3.0): a transaction
as the Safe Transaction Service returns it (confirmations, string numbers) and a Transaction Builder batch are
imported and executed; push and pull go through safe-eth-py's TransactionServiceApi to a local service that checks
each body as the real one does, and an exported file is accepted by it; a rejection is a Safe transaction at the
same nonce whose actor is the signing owner; Safe 1.3.0 works and an older Safe is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from eth_abi import encode as abi_encode
from eth_account.messages import encode_defunct
from eth_utils import function_signature_to_4byte_selector
from safe_eth.eth import EthereumClient
from safe_eth.eth.constants import NULL_ADDRESS
from safe_eth.eth.contracts import get_safe_V1_3_0_contract
from safe_eth.safe.proxy_factory import ProxyFactoryV141
from safe_eth.safe.safe import SafeV111, SafeV130

from onguard.demo.world import Roles, contract, dev_account, write_config
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.safe.chain import SafeOnChain
from onguard.safe.tx import MULTISEND_CALL_ONLY, SafeTxData, sign

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import is_paused
from .safe_service import TransactionService, running
from .test_proposals import as_signer, load_db, paused, run  # noqa: F401 (paused: fixture)

pytestmark = [pytest.mark.chain, pytest.mark.parametrize("multisig", ["2-of-3"], indirect=True)]

RELAYER = dev_account(Roles.DEPLOYER)
UNPAUSE = function_signature_to_4byte_selector("unpause()")


def unpause_tx(multisig) -> SafeTxData:
    world = multisig.chain.world
    nonce = SafeOnChain(world.rpc_url, world.safe).retrieve_state().nonce
    return SafeTxData.call(world.safe, world.chain_id, world.vault, UNPAUSE, nonce)


def as_the_service_returns_it(tx: SafeTxData, confirmations: list[dict]) -> dict:
    """GET /api/v2/multisig-transactions/{safeTxHash}/ for a transaction proposed in Safe{Wallet}."""
    return {"safe": tx.safe, "to": tx.to, "value": str(tx.value), "data": "0x" + tx.data.hex(),
            "operation": tx.operation, "gasToken": tx.gas_token, "safeTxGas": str(tx.safe_tx_gas),
            "baseGas": str(tx.base_gas), "gasPrice": str(tx.gas_price), "refundReceiver": tx.refund_receiver,
            "nonce": str(tx.nonce), "executionDate": None, "submissionDate": "2026-12-01T10:00:00Z",
            "modified": "2026-12-01T10:05:00Z", "blockNumber": None, "transactionHash": None,
            "safeTxHash": tx.safe_tx_hash_hex, "proposer": confirmations[0]["owner"], "proposedByDelegate": None,
            "executor": None, "isExecuted": False, "isSuccessful": None, "ethGasPrice": None, "maxFeePerGas": None,
            "maxPriorityFeePerGas": None, "gasUsed": None, "fee": None,
            "origin": '{"url": "https://app.safe.global", "name": "Unpause after review"}',
            "dataDecoded": {"method": "unpause", "parameters": []}, "confirmationsRequired": 2,
            "confirmations": confirmations, "trusted": True, "signatures": None}


def confirmation(owner, signature: bytes, kind: str) -> dict:
    return {"owner": owner.address, "submissionDate": "2026-12-01T10:00:00Z", "transactionHash": None,
            "signature": "0x" + signature.hex(), "signatureType": kind}


def test_a_safe_wallet_transaction_with_confirmations_is_imported_and_executed(multisig, paused, capsys, monkeypatch,  # noqa: F811
                                                                              tmp_path):
    config = str(paused)
    tx = unpause_tx(multisig)
    first, second = multisig.owners[:2]
    by_message = second.sign_message(encode_defunct(primitive=tx.safe_tx_hash))  # eth_sign: v + 4 in the Safe
    eth_sign = by_message.r.to_bytes(32, "big") + by_message.s.to_bytes(32, "big") + bytes([by_message.v + 4])
    item = as_the_service_returns_it(tx, [confirmation(first, sign(tx, first).signature, "EOA"),
                                          confirmation(second, eth_sign, "ETH_SIGN")])
    path = tmp_path / "from-service.json"

    # A confirmation that does not recover to the owner it names is refused, naming it.
    forged = {**item, "confirmations": [{**item["confirmations"][0], "owner": multisig.owners[2].address}]}
    path.write_text(json.dumps(forged))
    code, _, err = run(capsys, "proposals", "--config", config, "import", str(path))
    assert code == 2 and "confirmations[0].signature" in err and "Traceback" not in err

    path.write_text(json.dumps(item))
    code, out, err = run(capsys, "proposals", "--config", config, "import", str(path))
    assert code == 0, err
    assert "2 new signature(s) imported" in out
    code, out, _ = run(capsys, "proposals", "--config", config, "show", "1", "--json")
    shown = json.loads(out)
    assert shown["purpose"] == "from Safe{Wallet}: Unpause after review" and shown["safeTxHash"] == item["safeTxHash"]
    assert sorted(s["kind"] for s in shown["signatures"]) == ["eoa", "eth_sign"]
    assert shown["simulation"]["ok"] and "paused: true -> false" in shown["simulation"]["changes"]
    code, out, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    assert not is_paused(multisig.chain.w3, multisig.chain.world)


def test_a_transaction_builder_batch_is_imported_as_one_multisend_proposal_and_executed(multisig, tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    world = multisig.chain.world
    config = str(write_config(world, tmp_path, key_env=GUARDIAN_KEY_ENV))
    vault = contract(multisig.chain.w3, "Vault", world.vault)
    batch = {
        "version": "1.0", "chainId": str(world.chain_id), "createdAt": 1764662400000,
        "meta": {"name": "Emergency drill", "description": "pause, trip, re-affirm the threshold",
                 "txBuilderVersion": "1.18.0", "createdFromSafeAddress": world.safe,
                 "createdFromOwnerAddress": "", "checksum": "0x" + "ab" * 32},
        "transactions": [
            {"to": world.vault, "value": "0", "data": vault.encode_abi("pause", []), "contractMethod": None,
             "contractInputsValues": None},
            {"to": world.breaker, "value": "0", "data": None,
             "contractMethod": {"inputs": [], "name": "trip", "payable": False}, "contractInputsValues": {}},
            {"to": world.safe, "value": "0", "data": None,
             "contractMethod": {"inputs": [{"internalType": "uint256", "name": "_threshold", "type": "uint256"}],
                                "name": "changeThreshold", "payable": False},
             "contractInputsValues": {"_threshold": str(multisig.threshold)}}]}
    path = tmp_path / "batch.json"
    for broken, field in (({"chainId": "1"}, "chainId"),
                          ({"transactions": [{**batch["transactions"][2], "contractInputsValues": {}}]},
                           "transactions[0].contractInputsValues._threshold")):
        path.write_text(json.dumps({**batch, **broken}))
        code, _, err = run(capsys, "proposals", "--config", config, "import", str(path))
        assert code == 2 and field in err and "Traceback" not in err, err
    path.write_text(json.dumps(batch))
    code, out, err = run(capsys, "proposals", "--config", config, "import", str(path), "--by", "ops")
    assert code == 0, err
    assert "3 call(s) from the Transaction Builder batch" in out and MULTISEND_CALL_ONLY in out
    code, out, _ = run(capsys, "proposals", "--config", config, "show", "1")
    assert "batch        3 calls" in out and "call         trip()" in out
    assert f"call         changeThreshold(threshold={multisig.threshold})" in out
    assert "Emergency drill: pause, trip, re-affirm the threshold" in out
    for owner in multisig.owners[: multisig.threshold]:
        assert run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, owner))[0] == 0
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    breaker = contract(multisig.chain.w3, "CircuitBreaker", world.breaker)
    assert is_paused(multisig.chain.w3, world) and breaker.functions.tripped().call()


def test_push_pull_and_export_through_a_local_transaction_service(multisig, paused, capsys, monkeypatch,  # noqa: F811
                                                                  tmp_path):
    world = multisig.chain.world
    config = str(paused)
    reader = SafeOnChain(world.rpc_url, world.safe)
    service = TransactionService(world.chain_id, owners=lambda safe: list(reader.retrieve_state().owners))
    first, second = multisig.owners[:2]
    with running(service):
        code, out, err = run(capsys, "proposals", "--config", config, "create", "--contract", "vault", "--call",
                             "unpause()", "--purpose", "unpause: " + "the root cause is fixed; " * 20)
        assert code == 0, err
        code, _, err = run(capsys, "proposals", "--config", config, "push", "1", "--service", service.url)
        assert code == 2 and "no signature" in err
        assert run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, first))[0] == 0

        # The exported file is what the service's proposal endpoint takes, posted as is.
        exported = tmp_path / "proposal.json"
        assert run(capsys, "proposals", "--config", config, "export", "1", "--out", str(exported))[0] == 0
        body = json.loads(exported.read_text())
        assert body["sender"] == first.address and len(body["origin"]) <= 200
        assert body["onguard"]["purpose"].startswith("unpause: the root cause")
        assert body["onguard"]["safeState"]["owners"] == list(world.owners)
        answer = requests.post(f"{service.url}/api/v2/safes/{world.safe}/multisig-transactions/", json=body,
                               timeout=30)
        assert answer.status_code == 201, answer.text

        # push: through safe-eth-py's TransactionServiceApi, accepted by the same checks.
        code, out, err = run(capsys, "proposals", "--config", config, "push", "1", "--service", service.url)
        assert code == 0, err
        assert "proposed to" in out and service.received[-1]["sender"] == first.address
        (listed,) = service.transactions.values()
        assert [c["owner"] for c in listed["confirmations"]] == [first.address]

        # pull into another database: the confirmation comes along; a second owner signs there and executes.
        other = str(write_config(world, tmp_path / "other", key_env=GUARDIAN_KEY_ENV))
        code, out, err = run(capsys, "proposals", "--config", other, "pull", "--service", service.url)
        assert code == 0, err
        assert "1 pending transaction(s) pulled" in out and "1 new signature(s) imported" in out
    (record,) = SafeTxStore(IncidentStore(load_db(Path(other))).database).list(TxKind.PROPOSAL)
    assert record.safe_tx_hash == listed["safeTxHash"]
    assert run(capsys, "proposals", "--config", other, "sign", str(record.id), *as_signer(monkeypatch, second))[0] == 0
    code, _, err = run(capsys, "proposals", "--config", other, "execute", str(record.id),
                       *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    assert not is_paused(multisig.chain.w3, world)
    code, _, err = run(capsys, "proposals", "--config", other, "pull", "--service", "safe.example")
    assert code == 2 and "--service" in err and "not an http(s) URL" in err
    # The service is gone: a clear error, exit 1.
    code, _, err = run(capsys, "proposals", "--config", other, "pull", "--service", service.url)
    assert code == 1 and "no answer from the Safe Transaction Service" in err


def test_a_rejection_is_a_safe_transaction_at_the_same_nonce_and_its_actor_is_the_signing_owner(
        multisig, paused, capsys, monkeypatch):  # noqa: F811
    config = str(paused)
    first, second = multisig.owners[:2]
    assert run(capsys, "proposals", "--config", config, "create", "--contract", "vault", "--call", "unpause()",
               "--purpose", "unpause too early")[0] == 0
    assert run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, first))[0] == 0
    code, out, err = run(capsys, "proposals", "--config", config, "reject", "1", "--reason", "not yet",
                         *as_signer(monkeypatch, second))
    assert code == 0, err
    assert "rejection is proposal 2" in out and f"signed by {second.address}: 1 of 2" in out
    store = IncidentStore(load_db(paused))
    rejection = SafeTxStore(store.database).get(2)
    assert rejection.tx.to == multisig.chain.world.safe and rejection.tx.data == b"" and rejection.tx.value == 0
    assert rejection.tx.nonce == SafeTxStore(store.database).get(1).tx.nonce
    assert run(capsys, "proposals", "--config", config, "sign", "2", *as_signer(monkeypatch, first))[0] == 0
    code, out, err = run(capsys, "proposals", "--config", config, "execute", "2", *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    assert "proposal 1 is rejected" in out
    assert SafeTxStore(store.database).get(1).status == TxStatus.REJECTED
    (entry,) = AuditLog(store.database).entries(AuditKind.REJECTION)
    assert set(entry.actor.split(",")) == {first.address, second.address}
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 2 and "rejected" in err
    assert is_paused(multisig.chain.w3, multisig.chain.world)
    store.close()


def test_a_safe_1_3_0_signs_and_executes_and_an_older_safe_is_refused(multisig, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    world = multisig.chain.world
    client = EthereumClient(world.rpc_url)
    deployer = dev_account(Roles.DEPLOYER)
    singleton = SafeV130.deploy_contract(client, deployer).contract_address
    factory = ProxyFactoryV141.deploy_contract(client, deployer).contract_address
    setup = get_safe_V1_3_0_contract(client.w3, NULL_ADDRESS).encode_abi(
        "setup", [list(world.owners), 2, NULL_ADDRESS, b"", NULL_ADDRESS, NULL_ADDRESS, 0, NULL_ADDRESS])
    created = ProxyFactoryV141(factory, client).deploy_proxy_contract_with_nonce(  # type: ignore[abstract]
        deployer, singleton, initializer=bytes.fromhex(setup[2:]), salt_nonce=7)
    client.w3.eth.wait_for_transaction_receipt(created.tx_hash, timeout=30)
    safe130 = created.contract_address
    base = write_config(world, tmp_path / "base", key_env=GUARDIAN_KEY_ENV).read_text()
    config_path = tmp_path / "v130.toml"
    config_path.write_text(base.replace(f'address = "{world.safe}"', f'address = "{safe130}"'))
    config = str(config_path)
    assert SafeOnChain(world.rpc_url, safe130).retrieve_state().version == "1.3.0"

    data = function_signature_to_4byte_selector("changeThreshold(uint256)") + abi_encode(["uint256"], [2])
    code, out, err = run(capsys, "proposals", "--config", config, "create", "--to", safe130, "--data",
                         "0x" + data.hex(), "--purpose", "re-affirm the threshold")
    assert code == 0, err
    for owner in multisig.owners[:2]:
        assert run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, owner))[0] == 0
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    assert SafeOnChain(world.rpc_url, safe130).retrieve_state().nonce == 1

    old = SafeV111.deploy_contract(client, deployer).contract_address
    old_config = tmp_path / "v111.toml"
    old_config.write_text(base.replace(f'address = "{world.safe}"', f'address = "{old}"'))
    code, _, err = run(capsys, "proposals", "--config", str(old_config), "create", "--to", old, "--data", "0x",
                       "--purpose", "x")
    assert code == 2 and "version 1.1.1" in err and "safe.address" in err and "Traceback" not in err


def test_a_nested_safe_owner_approves_through_its_own_safe_transaction_and_the_proposal_executes(
        multisig, paused, capsys, monkeypatch, tmp_path):  # noqa: F811
    """The parent Safe gets a Safe as a further owner (2 of its own owners). The parent's proposal is approved by
    one EOA owner and by the nested Safe, which runs approveHash through onguard configured for it: the approval
    batch onguard writes is imported, signed and executed there, then recorded on the parent with --approved-by."""
    from safe_eth.eth.contracts import get_safe_V1_4_1_contract
    from safe_eth.safe.safe import SafeV141

    from onguard.demo.world import exec_as_owners

    world = multisig.chain.world
    client = EthereumClient(world.rpc_url)
    deployer = dev_account(Roles.DEPLOYER)
    first, second, third = multisig.owners[:3]
    singleton = SafeV141.deploy_contract(client, deployer).contract_address
    factory = ProxyFactoryV141.deploy_contract(client, deployer).contract_address
    setup = get_safe_V1_4_1_contract(client.w3, NULL_ADDRESS).encode_abi(
        "setup", [[second.address, third.address], 2, NULL_ADDRESS, b"", NULL_ADDRESS, NULL_ADDRESS, 0,
                  NULL_ADDRESS])
    created = ProxyFactoryV141(factory, client).deploy_proxy_contract_with_nonce(  # type: ignore[abstract]
        deployer, singleton, initializer=bytes.fromhex(setup[2:]), salt_nonce=11)
    client.w3.eth.wait_for_transaction_receipt(created.tx_hash, timeout=30)
    nested = created.contract_address
    parent = client.w3.eth.contract(address=world.safe, abi=get_safe_V1_4_1_contract(client.w3).abi)
    indexes = tuple(i for i in range(20) if dev_account(i).address in world.owners)[:2]
    exec_as_owners(client, world.safe, world.safe, parent.encode_abi("addOwnerWithThreshold", [nested, 2]), indexes)
    assert nested in SafeOnChain(world.rpc_url, world.safe).retrieve_state().owners

    config = str(paused)
    assert run(capsys, "proposals", "--config", config, "create", "--contract", "vault", "--call", "unpause()",
               "--purpose", "unpause, approved by the treasury Safe")[0] == 0
    assert run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, first))[0] == 0
    code, _, err = run(capsys, "proposals", "--config", config, "sign", "1", "--approved-by", nested)
    assert code == 2 and "has not approved" in err and "approval-batch" in err
    batch = tmp_path / "approve.json"
    code, out, err = run(capsys, "proposals", "--config", config, "approval-batch", "1", "--owner-safe", nested,
                         "--out", str(batch))
    assert code == 0, err

    # onguard, configured for the nested Safe, runs the approval as one of its own proposals.
    base = write_config(world, tmp_path / "nested", key_env=GUARDIAN_KEY_ENV)
    base.write_text(base.read_text().replace(f'address = "{world.safe}"', f'address = "{nested}"'))
    nested_config = str(base)
    code, out, err = run(capsys, "proposals", "--config", nested_config, "import", str(batch), "--by", "treasury")
    assert code == 0, err
    code, out, _ = run(capsys, "proposals", "--config", nested_config, "show", "1")
    parent_hash = SafeTxStore(IncidentStore(load_db(paused)).database).get(1).safe_tx_hash
    assert f"to           {world.safe}" in out and parent_hash[2:] in out  # approveHash(the parent's Safe tx hash)
    assert "simulation   succeeds" in out
    for owner in (second, third):
        assert run(capsys, "proposals", "--config", nested_config, "sign", "1", *as_signer(monkeypatch, owner))[0] == 0
    code, _, err = run(capsys, "proposals", "--config", nested_config, "execute", "1",
                       *as_signer(monkeypatch, RELAYER))
    assert code == 0, err

    code, out, err = run(capsys, "proposals", "--config", config, "sign", "1", "--approved-by", nested)
    assert code == 0, err
    assert f"signed by {nested}: 2 of 2" in out
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    assert not is_paused(multisig.chain.w3, world)


def test_a_nested_safe_owner_signs_off_chain_through_eip_1271_and_the_proposal_executes(
        multisig, paused, capsys, monkeypatch):  # noqa: F811
    """The nested Safe has Safe's CompatibilityFallbackHandler: its two owners sign a SafeMessage of the parent's
    transaction with `sign --for-safe`; with one of them the parent does not count it, with both it executes."""
    from safe_eth.eth.contracts import get_compatibility_fallback_handler_V1_4_1_contract, get_safe_V1_4_1_contract
    from safe_eth.safe.safe import SafeV141

    from onguard.demo.world import exec_as_owners

    world = multisig.chain.world
    client = EthereumClient(world.rpc_url)
    w3 = client.w3
    deployer = dev_account(Roles.DEPLOYER)
    first, second, third = multisig.owners[:3]
    handler_contract = get_compatibility_fallback_handler_V1_4_1_contract(w3)
    sent = w3.eth.send_transaction({"from": deployer.address, "data": handler_contract.bytecode})
    handler = w3.eth.wait_for_transaction_receipt(sent, timeout=30)["contractAddress"]
    singleton = SafeV141.deploy_contract(client, deployer).contract_address
    factory = ProxyFactoryV141.deploy_contract(client, deployer).contract_address
    setup = get_safe_V1_4_1_contract(w3, NULL_ADDRESS).encode_abi(
        "setup", [[second.address, third.address], 2, NULL_ADDRESS, b"", handler, NULL_ADDRESS, 0, NULL_ADDRESS])
    created = ProxyFactoryV141(factory, client).deploy_proxy_contract_with_nonce(  # type: ignore[abstract]
        deployer, singleton, initializer=bytes.fromhex(setup[2:]), salt_nonce=13)
    w3.eth.wait_for_transaction_receipt(created.tx_hash, timeout=30)
    nested = created.contract_address
    parent = w3.eth.contract(address=world.safe, abi=get_safe_V1_4_1_contract(w3).abi)
    indexes = tuple(i for i in range(20) if dev_account(i).address in world.owners)[:2]
    exec_as_owners(client, world.safe, world.safe, parent.encode_abi("addOwnerWithThreshold", [nested, 2]), indexes)

    config = str(paused)
    assert run(capsys, "proposals", "--config", config, "create", "--contract", "vault", "--call", "unpause()",
               "--purpose", "unpause, vouched for by the treasury Safe")[0] == 0
    assert run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, first))[0] == 0
    code, out, err = run(capsys, "proposals", "--config", config, "sign", "1", "--for-safe", nested,
                         *as_signer(monkeypatch, second))
    assert code == 0, err
    assert f"signed for the owner Safe {nested} by {second.address}: 1 of its 2 signature(s)" in out
    # Half of the nested Safe's owners: the nested Safe refuses, the parent counts one signature.
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 2 and "1 valid owner signature(s), the Safe needs 2" in err
    code, _, err = run(capsys, "proposals", "--config", config, "sign", "1", "--for-safe", nested,
                       *as_signer(monkeypatch, first))
    assert code == 2 and "not an owner of the owner Safe" in err
    code, out, err = run(capsys, "proposals", "--config", config, "sign", "1", "--for-safe", nested,
                         *as_signer(monkeypatch, third))
    assert code == 0, err
    assert "2 of its 2 signature(s); its signature is complete" in out
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1", *as_signer(monkeypatch, RELAYER))
    assert code == 0, err
    assert not is_paused(multisig.chain.w3, world)
