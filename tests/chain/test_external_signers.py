"""Signers other than a raw key, on real Anvil with the real Safe v1.4.1: the typed data onguard prints is signed
by `cast wallet sign --data` (as with `--ledger`/`--trezor`), the signature is passed back with --signature or
--signature-file, checked against the owners, stored, and the proposal executes; eth_sign signatures are taken
with v + 4; a signature over other typed data is refused before it is stored."""

from __future__ import annotations

import json
import subprocess

import pytest

from onguard.chain.anvil import PROJECT_ROOT
from onguard.demo.world import Roles, dev_account
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStore

from .helpers import is_paused
from .test_proposals import as_signer, create_unpause, load_db, paused, run  # noqa: F401 (paused: fixture)
from .test_presigned import config_path, safe_nonce  # noqa: F401 (config_path: fixture)

pytestmark = pytest.mark.chain

CAST = str(PROJECT_ROOT / "node_modules" / ".bin" / "cast")


def cast_sign(*argv: str) -> str:
    done = subprocess.run([CAST, "wallet", "sign", *argv], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


@pytest.mark.parametrize("multisig", ["3-of-5"], indirect=True)
def test_signatures_made_by_cast_on_the_printed_typed_data_are_accepted_and_the_proposal_executes(
        multisig, paused, capsys, monkeypatch, tmp_path):  # noqa: F811
    config = str(paused)
    create_unpause(capsys, paused)
    code, typed, err = run(capsys, "proposals", "--config", config, "sign", "1", "--typed-data")
    assert code == 0, err
    assert json.loads(typed)["primaryType"] == "SafeTx" and "domain hash  0x" in err and "message hash 0x" in err
    (record,) = SafeTxStore(IncidentStore(load_db(paused)).database).list(TxKind.PROPOSAL)
    typed_file = tmp_path / "typed.json"
    typed_file.write_text(typed)
    first, second, third = multisig.owners[:3]

    # EIP-712 through cast (a hardware wallet: the same command with --ledger), given inline.
    signature = cast_sign("--data", "--from-file", str(typed_file), "--private-key", first.key.to_0x_hex())
    code, out, err = run(capsys, "proposals", "--config", config, "sign", "1", "--signature", signature, "--yes")
    assert code == 0, err
    assert f"signed by {first.address}: 1 of 3" in out
    # eth_sign: the Safe tx hash signed as a message, as cast prints it (v 27/28), from a file.
    signature_file = tmp_path / "sig.txt"
    signature_file.write_text(cast_sign(record.safe_tx_hash, "--private-key", second.key.to_0x_hex()) + "\n")
    code, out, err = run(capsys, "proposals", "--config", config, "sign", "1", "--signature-file",
                         str(signature_file), "--yes")
    assert code == 0, err
    assert "eth_sign" in out and f"signed by {second.address}: 2 of 3" in out
    # Over other typed data (another nonce): recovers to a stranger, refused before anything is stored.
    other = json.loads(typed)
    other["message"]["nonce"] = str(int(other["message"]["nonce"]) + 1)
    typed_file.write_text(json.dumps(other))
    wrong = cast_sign("--data", "--from-file", str(typed_file), "--private-key", third.key.to_0x_hex())
    code, _, err = run(capsys, "proposals", "--config", config, "sign", "1", "--signature", wrong, "--yes")
    assert code == 2 and "--signature" in err and "not an owner of the Safe" in err and "Traceback" not in err
    code, _, err = run(capsys, "proposals", "--config", config, "sign", "1", "--signature", "0x1234", "--yes")
    assert code == 2 and "65 bytes" in err
    typed_file.write_text(typed)
    signature = cast_sign("--data", "--from-file", str(typed_file), "--private-key", third.key.to_0x_hex())
    assert run(capsys, "proposals", "--config", config, "sign", "1", "--signature", signature, "--yes")[0] == 0
    code, out, err = run(capsys, "proposals", "--config", config, "execute", "1",
                         *as_signer(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 0, err
    assert not is_paused(multisig.chain.w3, multisig.chain.world)


@pytest.mark.parametrize("multisig", ["2-of-3"], indirect=True)
def test_presign_takes_a_signature_made_elsewhere_for_one_nonce(multisig, config_path, capsys, monkeypatch,  # noqa: F811
                                                                tmp_path):
    config = str(config_path)
    nonce = safe_nonce(multisig)
    code, _, err = run(capsys, "presign", "--config", config, "pause_vault", "--depth", "2", "--signature", "0x00")
    assert code == 2 and "--depth" in err
    code, typed, err = run(capsys, "presign", "--config", config, "pause_vault", "--nonce", str(nonce + 1),
                           "--typed-data")
    assert code == 0, err
    typed_file = tmp_path / "typed.json"
    typed_file.write_text(typed)
    owner = multisig.owners[0]
    signature = cast_sign("--data", "--from-file", str(typed_file), "--private-key", owner.key.to_0x_hex())
    code, out, err = run(capsys, "presign", "--config", config, "pause_vault", "--nonce", str(nonce + 1),
                         "--signature", signature, "--yes")
    assert code == 0, err
    assert f"signature stored: 1 of 2 for pause_vault at nonce {nonce + 1}" in out
    # The same signature offered for another nonce recovers to a stranger: refused.
    code, _, err = run(capsys, "presign", "--config", config, "pause_vault", "--signature", signature, "--yes")
    assert code == 2 and "not an owner" in err
