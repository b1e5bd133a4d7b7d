"""The pre-signed pause as a ladder, on real Anvil with the real Safe v1.4.1: owners pre-sign it for the next three
nonces; two routine proposals execute and it is still executable; a third that would spend its last nonce is
refused unless forced; an attack → the daemon relays the pause for the live nonce and it is mined before the forced
proposal can run; with the daemon stopped, `status` reads the Safe's nonce from the chain and says the pause is
stale (exit 1)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector

from onguard.cli.main import main
from onguard.demo.world import Roles, dev_account
from onguard.store.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import ResponseStatus

from .helpers import is_paused
from .test_presigned import config_path, presign, safe_nonce, started, trip  # noqa: F401 (config_path: fixture)

pytestmark = pytest.mark.chain

KEY_ENV = "ONGUARD_TEST_SIGNER_KEY"
RELAYER = dev_account(Roles.DEPLOYER)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def key(monkeypatch, account) -> list[str]:
    monkeypatch.setenv(KEY_ENV, account.key.to_0x_hex())
    return ["--key-env", KEY_ENV, "--yes"]


def routine(multisig, capsys, config, *extra: str) -> tuple[int, str, str]:
    """A harmless routine Safe transaction: the Safe re-sets its threshold to itself."""
    data = function_signature_to_4byte_selector("changeThreshold(uint256)") + abi_encode(["uint256"],
                                                                                         [multisig.threshold])
    return run(capsys, "proposals", "--config", config, "create", "--to", multisig.chain.world.safe,
               "--data", "0x" + data.hex(), "--purpose", "routine", *extra)


def created_id(out: str) -> int:
    return int(out.split("proposal ", 1)[1].split(" created", 1)[0])


def sign_all(multisig, capsys, monkeypatch, config: str, proposal: int) -> None:
    for owner in multisig.owners[: multisig.threshold]:
        code, _, err = run(capsys, "proposals", "--config", config, "sign", str(proposal), *key(monkeypatch, owner))
        assert code == 0, err


@pytest.fixture(params=["sqlite", "postgresql"])
def state_config_path(config_path, request) -> Iterator[Path]:  # noqa: F811
    """config_path with its state in the SQLite file, or in a fresh PostgreSQL database: the owners' CLI, `status`
    and the daemon share it either way."""
    if request.param == "sqlite":
        yield config_path
        return
    text = config_path.read_text()
    database = next(line for line in text.splitlines() if line.startswith("database = "))
    config_path.write_text(text.replace(database, f'database_url = "{request.getfixturevalue("postgres_url")}"'))
    yield config_path
    assert not list(config_path.parent.glob("*.db")), "a SQLite file was written though the state is in PostgreSQL"


@pytest.mark.parametrize("multisig", ["2-of-3"], indirect=True)
def test_a_depth_3_ladder_survives_two_routine_transactions_and_the_pause_is_mined_first(
        multisig, state_config_path, monkeypatch, capsys):
    config_path = state_config_path  # noqa: F811
    config = str(config_path)
    start = safe_nonce(multisig)
    for owner in multisig.owners[: multisig.threshold]:
        assert presign(config_path, owner, monkeypatch, "--depth", "3") == 0
    out = capsys.readouterr().out
    assert f"for nonces {start}..{start + 2} (3)" in out
    code, out, _ = run(capsys, "status", "--config", config)
    assert f"pause_vault: ready for the Safe's nonce {start}, pre-signed through nonce {start + 2}" in out
    assert "2 routine Safe transaction(s) can execute" in out
    code, out, _ = run(capsys, "presign", "--config", config, "--status", "--json")
    ladder = json.loads(out)
    assert code == 0 and not ladder["needsAttention"] and ladder["safeNonce"] == start
    assert ladder["actions"]["pause_vault"]["signedNonces"] == [start, start + 1, start + 2]

    # Two routine proposals: queued at consecutive nonces, the second warned that it leaves only the last rung.
    code, out, err = routine(multisig, capsys, config)
    assert code == 0, err
    assert f"at nonce {start}" in out and f"pre-signed nonces {start + 1}..{start + 2} remain (2)" in out
    first = created_id(out)
    code, out, err = routine(multisig, capsys, config)
    assert code == 0, err
    assert f"at nonce {start + 1}" in out and f"after it only nonce {start + 2} stays pre-signed" in out
    for offset, proposal in enumerate((first, created_id(out))):
        sign_all(multisig, capsys, monkeypatch, config, proposal)
        code, out, err = run(capsys, "proposals", "--config", config, "show", str(proposal))
        assert f"executing it voids the pre-signed pause_vault for nonce {start + offset}" in out
        code, out, err = run(capsys, "proposals", "--config", config, "execute", str(proposal),
                             *key(monkeypatch, RELAYER))
        assert code == 0, err
    assert safe_nonce(multisig) == start + 2

    # The third would spend the last pre-signed nonce: refused (needs a human, exit 1) unless forced.
    code, _, err = routine(multisig, capsys, config)
    assert code == 1 and "spends the last pre-signed nonce of pause_vault" in err and "--force" in err
    code, out, err = routine(multisig, capsys, config, "--force")
    assert code == 0, err
    assert f"AFTER IT NO PRE-SIGNED PAUSE_VAULT REMAINS for nonce {start + 3}" in out
    third = created_id(out)
    sign_all(multisig, capsys, monkeypatch, config, third)
    code, _, err = run(capsys, "proposals", "--config", config, "execute", str(third), *key(monkeypatch, RELAYER))
    assert code == 1 and "spends the last pre-signed nonce" in err
    assert safe_nonce(multisig) == start + 2

    async def attack() -> None:
        guardian = await started(config_path)
        try:
            incident_id = await trip(multisig, guardian)
            (response,) = guardian.store.responses(incident_id)
            assert response.status == ResponseStatus.MINED, response
            executed = [r for r in SafeTxStore(guardian.store.database).list(TxKind.PRESIGNED)
                        if r.status == TxStatus.EXECUTED]
            assert [r.tx.nonce for r in executed] == [start + 2]
        finally:
            await guardian.close()

    asyncio.run(attack())
    assert is_paused(multisig.chain.w3, multisig.chain.world) and safe_nonce(multisig) == start + 3
    # The forced routine proposal lost the race for its nonce: shown as spent, never as pending.
    code, out, _ = run(capsys, "proposals", "--config", config, "list")
    (row,) = [line for line in out.splitlines() if line.split()[:1] == [str(third)]]
    assert "spent" in row and "pending" not in row
    # The daemon is stopped: status reads the Safe's nonce from the chain and says the pause is gone.
    code, out, _ = run(capsys, "status", "--config", config)
    assert code == 1
    assert f"pause_vault: STALE — no pre-signature with {multisig.threshold} owners for the Safe's nonce {start + 3}" \
        in out
    code, out, _ = run(capsys, "presign", "--config", config, "--status")
    assert code == 1 and "pause_vault: STALE" in out
    code, out, _ = run(capsys, "status", "--config", config, "--json")
    report = json.loads(out)
    assert code == 1 and report["needsAttention"]
    assert report["presigned"]["safeNonce"] == start + 3
    assert report["presigned"]["actions"]["pause_vault"] == {
        "ready": False, "depth": 0, "through": None, "signedNonces": [], "partialNonces": [],
        "spentNonces": [start, start + 1]}  # voided by the routine transactions; start + 2 the daemon executed
    assert any("pause_vault has no valid pre-signature" in reason for reason in report["attention"])
