"""Proposals on real Anvil with the real Safe v1.4.1: owners review (decoded, simulated: paused true -> false),
sign and execute an unpause; non-owners, used nonces, tampered files and other chains' signatures are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safe_eth.eth import EthereumClient

from onguard.cli.main import main
from onguard.demo.world import Roles, contract, dev_account, exec_as_owners, write_config
from onguard.store.audit import AuditLog
from onguard.incidents.store import IncidentStore
from onguard.safe.tx import SafeTxData, sign

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import is_paused

pytestmark = pytest.mark.chain

KEY_ENV = "ONGUARD_TEST_SIGNER_KEY"


@pytest.fixture
def paused(multisig, tmp_path, monkeypatch) -> Path:
    """A config for the forked world, whose vault the owners have paused."""
    monkeypatch.setenv(GUARDIAN_KEY_ENV, dev_account(Roles.GUARDIAN).key.to_0x_hex())
    world = multisig.chain.world
    client = EthereumClient(world.rpc_url)
    vault = contract(client.w3, "Vault", world.vault)
    indexes = tuple(i for i in range(20) if dev_account(i).address in world.owners)[: multisig.threshold]
    exec_as_owners(client, world.safe, world.vault, vault.encode_abi("pause", []), indexes)
    assert is_paused(multisig.chain.w3, world)
    return write_config(world, tmp_path / "cfg", key_env=GUARDIAN_KEY_ENV)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_signer(monkeypatch, account) -> list[str]:
    monkeypatch.setenv(KEY_ENV, account.key.to_0x_hex())
    return ["--key-env", KEY_ENV, "--yes"]


def create_unpause(capsys, config: Path, *extra: str) -> None:
    code, out, err = run(capsys, "proposals", "--config", str(config), "create", "--contract", "vault", "--call",
                         "unpause()", "--purpose", "unpause after the incident", *extra)
    assert code == 0, err
    assert "proposal 1 created" in out


def test_a_proposal_signed_by_threshold_owners_executes_and_unpauses(multisig, paused, capsys, monkeypatch):
    config = str(paused)
    store = IncidentStore(load_db(paused))
    incident = store.open_incident(chain_id=multisig.chain.world.chain_id, policy_id="vault-drain",
                                   severity="critical", title="drain", dry_run=False, block=1, block_time=1,
                                   evidence={})
    create_unpause(capsys, paused, "--incident", str(incident.id), "--by", "alice")
    code, out, _ = run(capsys, "proposals", "--config", config, "show", "1")
    assert code == 0
    assert "call         unpause()" in out and "(vault)" in out
    assert "simulation   succeeds" in out and "paused: true -> false" in out
    assert "Safe tx hash 0x" in out
    # Below threshold, execute refuses.
    run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, multisig.owners[0]))
    code, _, err = run(capsys, "proposals", "--config", config, "execute", "1",
                       *as_signer(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 2 and f"1 valid owner signature(s), the Safe needs {multisig.threshold}" in err
    # Owners sign in descending address order: execute must sort them.
    for owner in sorted(multisig.owners[1: multisig.threshold], key=lambda a: a.address.lower(), reverse=True):
        code, out, err = run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch, owner))
        assert code == 0, err
    code, out, err = run(capsys, "proposals", "--config", config, "execute", "1",
                         *as_signer(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 0, err
    assert "executed in 0x" in out
    assert not is_paused(multisig.chain.w3, multisig.chain.world)
    kinds = [e.kind for e in store.timeline(incident.id)]
    assert kinds[1:] == ["proposed"] + ["signed"] * multisig.threshold + ["executed"]
    code, out, _ = run(capsys, "incidents", "--config", config, "show", str(incident.id))
    assert f"owner={multisig.owners[0].address}" in out and "executed" in out
    # The Safe's nonce moved: the proposal's nonce is now used, signing it again is refused.
    code, _, err = run(capsys, "proposals", "--config", config, "sign", "1", *as_signer(monkeypatch,
                                                                                         multisig.owners[-1]))
    assert code == 2 and "executed" in err
    assert AuditLog(store.database).verify()[1] is None
    assert [e.kind for e in AuditLog(store.database).entries()].count("signature") == multisig.threshold
    store.close()


def load_db(config: Path) -> Path:
    from onguard.config import load_config
    return load_config(config).database


def test_a_non_owner_signature_and_a_used_nonce_are_refused(multisig, paused, capsys, monkeypatch):
    # nonce 0 was spent when the Safe was set up: create refuses it outright.
    code, _, err = run(capsys, "proposals", "--config", str(paused), "create", "--contract", "vault", "--call",
                       "unpause()", "--purpose", "long spent", "--nonce", "0")
    assert code == 2 and "--nonce: nonce 0 is spent" in err and "Traceback" not in err
    create_unpause(capsys, paused)
    code, out, _ = run(capsys, "proposals", "--config", str(paused), "list")
    assert "pending" in out
    # Another Safe transaction spends the proposal's nonce: signing it is refused, list says spent.
    world = multisig.chain.world
    client = EthereumClient(world.rpc_url)
    vault = contract(client.w3, "Vault", world.vault)
    indexes = tuple(i for i in range(20) if dev_account(i).address in world.owners)[: multisig.threshold]
    exec_as_owners(client, world.safe, world.vault, vault.encode_abi("unpause", []), indexes)
    code, _, err = run(capsys, "proposals", "--config", str(paused), "sign", "1",
                       *as_signer(monkeypatch, multisig.owners[0]))
    assert code == 2 and "is already used" in err
    code, out, _ = run(capsys, "proposals", "--config", str(paused), "list")
    assert "spent" in out and "pending" not in out
    assert run(capsys, "proposals", "--config", str(paused), "create", "--contract", "vault", "--call", "pause()",
               "--purpose", "again")[0] == 0
    code, _, err = run(capsys, "proposals", "--config", str(paused), "sign", "2",
                       *as_signer(monkeypatch, dev_account(Roles.ATTACKER)))
    assert code == 2 and "is not an owner of the Safe" in err and "Traceback" not in err


def test_export_import_round_trip_and_tampered_or_foreign_files_are_refused(multisig, paused, capsys, monkeypatch,
                                                                           tmp_path):
    config = str(paused)
    create_unpause(capsys, paused)
    assert run(capsys, "proposals", "--config", config, "sign", "1",
               *as_signer(monkeypatch, multisig.owners[0]))[0] == 0
    exported = tmp_path / "proposal.json"
    assert run(capsys, "proposals", "--config", config, "export", "1", "--out", str(exported))[0] == 0
    payload = json.loads(exported.read_text())
    assert {"to", "value", "data", "operation", "safeTxGas", "baseGas", "gasPrice", "gasToken", "refundReceiver",
            "nonce", "contractTransactionHash", "sender", "signature"} <= set(payload)

    # An offline signer adds a signature to the file; the import brings it into another database.
    world = multisig.chain.world
    tx = SafeTxData.call(world.safe, world.chain_id, world.vault, bytes.fromhex(payload["data"][2:]),
                         payload["nonce"])
    second = sign(tx, multisig.owners[1])
    payload["signature"] += second.signature.hex()
    exported.write_text(json.dumps(payload))
    other = write_config(world, tmp_path / "other", key_env=GUARDIAN_KEY_ENV)
    code, out, err = run(capsys, "proposals", "--config", str(other), "import", str(exported))
    assert code == 0, err
    assert "2 new signature(s)" in out

    def refused(changed: dict, field: str) -> str:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({**payload, **changed}))
        code, _, err = run(capsys, "proposals", "--config", str(other), "import", str(path))
        assert code == 2 and field in err and "Traceback" not in err
        return err

    assert "altered" in refused({"data": "0x3f4ba83a" + "00" * 4}, "contractTransactionHash")
    assert "altered" in refused({"to": world.breaker}, "contractTransactionHash")
    # Another chain: said openly (chainId), or not (the signature then recovers to a stranger).
    refused({"chainId": 1}, "chainId")
    foreign = sign(SafeTxData.call(world.safe, 1, world.vault, tx.data, tx.nonce), multisig.owners[2])
    assert "not an owner" in refused({"signature": "0x" + foreign.signature.hex()}, "signature")
