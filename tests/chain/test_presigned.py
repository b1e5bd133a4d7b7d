"""Pre-signed emergency transactions on real Anvil with the real Safe v1.4.1 (2-of-3 and 3-of-5): owners pre-sign,
a drain trips the policy, the daemon executes the Safe transaction itself; a nonce move makes the signatures
stale and the daemon says so within a block; EOA and approveHash signatures mix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onguard.cli.main import main
from onguard.config import load_config
from onguard.demo.world import Roles, dev_account, write_config
from onguard.errors import NotAuthorised
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStatus, ResponseStatus
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import ALICE, drain_slice, is_paused, make_guardian, started, tokens

pytestmark = pytest.mark.chain

GUARDIAN = dev_account(Roles.GUARDIAN)
SIGNER_ENV = "ONGUARD_TEST_SIGNER_KEY"


@pytest.fixture
def config_path(multisig, tmp_path, monkeypatch) -> Path:
    """The demo config with pause_vault executed through pre-signed Safe transactions."""
    monkeypatch.setenv(GUARDIAN_KEY_ENV, GUARDIAN.key.to_0x_hex())
    path = write_config(multisig.chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV, poll_interval="50ms")
    text = path.read_text().replace('done_when = "paused()"\n', 'done_when = "paused()"\nvia = "presigned"\n', 1)
    path.write_text(text)
    return path


def presign(config_path: Path, owner, monkeypatch, *extra: str, action: str = "pause_vault") -> int:
    monkeypatch.setenv(SIGNER_ENV, owner.key.to_0x_hex())
    return main(["presign", "--config", str(config_path), action, "--key-env", SIGNER_ENV, "--yes", *extra])


def safe_nonce(multisig) -> int:
    w3, world = multisig.chain.w3, multisig.chain.world
    return w3.eth.contract(
        address=world.safe, abi=[{"name": "nonce", "type": "function", "inputs": [], "stateMutability": "view",
                                  "outputs": [{"name": "", "type": "uint256"}]}]).functions.nonce().call()


async def trip(multisig, guardian: Guardian):
    for _ in range(3):
        drain_slice(multisig.chain.w3, multisig.chain.world, ALICE, tokens(100_000))
    decisions = await guardian.step()
    await guardian.drain_responses()
    assert [d.actions for d in decisions] == [("pause_vault",)]
    return decisions[0].incident.id


def test_presigned_pause_is_executed_by_the_daemon(multisig, config_path, monkeypatch, capsys):
    w3, world = multisig.chain.w3, multisig.chain.world
    nonce = safe_nonce(multisig)
    for owner in multisig.owners[: multisig.threshold]:
        assert presign(config_path, owner, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "call         pause()" in out and "(vault)" in out and "Safe tx hash 0x" in out
    assert f"{multisig.threshold} of {multisig.threshold} for pause_vault at nonce {nonce}" in out

    async def scenario() -> None:
        guardian = await started(config_path)
        try:
            incident_id = await trip(multisig, guardian)
            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED, response
            assert guardian.store.incident(incident_id).status == IncidentStatus.SAFE
            tx = w3.eth.get_transaction(response.tx_hash)
            # The relayer is the guardian key, the call goes to the Safe (execTransaction), not the module.
            assert tx["from"] == GUARDIAN.address and tx["to"] == world.safe
            (record,) = SafeTxStore(guardian.store.database).list(TxKind.PRESIGNED)
            assert record.status == TxStatus.EXECUTED and record.tx_hash == response.tx_hash
            audit = AuditLog(guardian.store.database)
            kinds = [e.kind for e in audit.entries()]
            assert kinds.count(AuditKind.SIGNATURE) == multisig.threshold
            assert AuditKind.DECISION in kinds and AuditKind.CONFIG in kinds
            # The execution, then the incident's move to the safe state (every status change is audited).
            assert kinds[-2:] == [AuditKind.EXECUTION, "incident-status"]
            assert list(audit.entries())[-1].details["to"] == IncidentStatus.SAFE
            assert audit.verify()[1] is None
        finally:
            await guardian.close()

    asyncio.run(scenario())
    assert is_paused(w3, world) and safe_nonce(multisig) == nonce + 1


def test_below_threshold_the_daemon_refuses_to_start_and_sends_nothing(multisig, config_path, monkeypatch):
    """Preflight: an action whose pre-signature lacks the threshold is named at start (exit 2), before any trip."""
    for owner in multisig.owners[: multisig.threshold - 1]:
        assert presign(config_path, owner, monkeypatch) == 0
    sent_before = multisig.chain.w3.eth.get_transaction_count(GUARDIAN.address)

    async def scenario() -> None:
        guardian = make_guardian(config_path)
        try:
            with pytest.raises(NotAuthorised, match=r"pre-signed \[pause_vault\]: no pre-signature with "
                                                    rf"{multisig.threshold} owners' signatures"):
                await guardian.start()
        finally:
            await guardian.close()

    asyncio.run(scenario())
    assert multisig.chain.w3.eth.get_transaction_count(GUARDIAN.address) == sent_before
    assert not is_paused(multisig.chain.w3, multisig.chain.world)


def test_the_pre_signed_path_needs_no_module(multisig, config_path, monkeypatch):
    """Every action pre-signed, and no guardian_module in the config at all: it loads, starts and pauses."""
    text = config_path.read_text()
    module_line = f'guardian_module = "{multisig.chain.world.module}"\n'
    assert module_line in text
    config_path.write_text(text.replace(module_line, "").replace('done_when = "tripped()"\n',
                                                                 'done_when = "tripped()"\nvia = "presigned"\n'))
    assert load_config(config_path).safe.guardian_module is None
    for owner in multisig.owners[: multisig.threshold]:
        for action in ("pause_vault", "trip_breaker"):  # preflight wants every action pre-signed
            assert presign(config_path, owner, monkeypatch, action=action) == 0

    async def scenario() -> None:
        guardian = await started(config_path)
        try:
            incident_id = await trip(multisig, guardian)
            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED, response
            assert multisig.chain.w3.eth.get_transaction(response.tx_hash)["to"] == multisig.chain.world.safe
        finally:
            await guardian.close()

    asyncio.run(scenario())
    assert is_paused(multisig.chain.w3, multisig.chain.world)


def test_a_nonce_move_makes_presignatures_stale_within_a_block(multisig, config_path, monkeypatch, capsys):
    from onguard.demo.world import exec_as_owners
    from safe_eth.eth import EthereumClient

    for owner in multisig.owners[: multisig.threshold]:
        assert presign(config_path, owner, monkeypatch) == 0
    assert main(["status", "--config", str(config_path)]) == 0
    assert "STALE" not in capsys.readouterr().out
    world = multisig.chain.world
    indexes = [i for i in range(20) if dev_account(i).address in world.owners][: multisig.threshold]

    async def scenario() -> None:
        guardian = await started(config_path)
        try:
            # Any other Safe transaction spends the nonce: here, the owners re-set the threshold to itself.
            client = EthereumClient(world.rpc_url)
            safe = client.w3.eth.contract(address=world.safe, abi=[{
                "name": "changeThreshold", "type": "function", "stateMutability": "nonpayable", "outputs": [],
                "inputs": [{"name": "t", "type": "uint256"}]}])
            exec_as_owners(client, world.safe, world.safe,
                           safe.encode_abi("changeThreshold", [multisig.threshold]), tuple(indexes))
            await guardian.step()  # the one block that moved the nonce
            (record,) = SafeTxStore(guardian.store.database).list(TxKind.PRESIGNED)
            assert record.status == TxStatus.STALE
            stale = list(AuditLog(guardian.store.database).entries(AuditKind.PRESIGNED_STALE))
            assert len(stale) == 1 and stale[0].details["action"] == "pause_vault"
        finally:
            await guardian.close()

    asyncio.run(scenario())
    capsys.readouterr()
    assert main(["status", "--config", str(config_path)]) == 1
    assert "pause_vault: STALE" in capsys.readouterr().out
    # Re-signing at the new nonce fixes it.
    for owner in multisig.owners[: multisig.threshold]:
        assert presign(config_path, owner, monkeypatch) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config_path)]) == 0
    assert "STALE" not in capsys.readouterr().out


def test_mixed_ecdsa_and_approved_hash_signatures_execute(multisig, config_path, monkeypatch):
    w3 = multisig.chain.w3
    first, *rest = multisig.owners[: multisig.threshold]
    assert presign(config_path, first, monkeypatch) == 0
    for owner in rest:
        w3.provider.make_request("anvil_setBalance", [owner.address, hex(10**18)])  # approveHash costs gas
        assert presign(config_path, owner, monkeypatch, "--approve-hash") == 0

    async def scenario() -> None:
        guardian = await started(config_path)
        try:
            (record,) = SafeTxStore(guardian.store.database).list(TxKind.PRESIGNED)
            assert sorted(s.kind for s in record.signatures) == ["approved"] * len(rest) + ["eoa"]
            incident_id = await trip(multisig, guardian)
            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED, response
        finally:
            await guardian.close()

    asyncio.run(scenario())
    assert is_paused(w3, multisig.chain.world)


def test_presign_refuses_a_key_that_is_not_an_owner(multisig, config_path, monkeypatch, capsys):
    assert presign(config_path, dev_account(Roles.ATTACKER), monkeypatch) == 2
    assert "is not an owner of the Safe" in capsys.readouterr().err
