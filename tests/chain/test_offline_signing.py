"""Offline signing, on real Anvil with the real Safe v1.4.1: a proposal exported where there is a node carries the
Safe's state; on a machine with no node it is imported, reviewed and signed (saying what was not checked), and
its signature comes back and executes. With no node and no recorded state, commands say so instead of failing."""

from __future__ import annotations

import json
import socket

import pytest

from onguard.demo.world import Roles, dev_account, write_config

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import is_paused
from .test_proposals import as_signer, create_unpause, paused, run  # noqa: F401 (paused: fixture)

pytestmark = [pytest.mark.chain, pytest.mark.parametrize("multisig", ["2-of-3"], indirect=True)]


def dead_endpoint() -> str:
    """An address where nothing listens (a port bound and closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_proposal_is_reviewed_and_signed_with_no_node_and_its_signature_executes(multisig, paused, capsys,  # noqa: F811
                                                                                  monkeypatch, tmp_path):
    world = multisig.chain.world
    online = str(paused)
    create_unpause(capsys, paused)
    first, second = multisig.owners[:2]
    assert run(capsys, "proposals", "--config", online, "sign", "1", *as_signer(monkeypatch, first))[0] == 0
    carried = tmp_path / "to-offline.json"
    assert run(capsys, "proposals", "--config", online, "export", "1", "--out", str(carried))[0] == 0
    assert json.loads(carried.read_text())["onguard"]["safeState"]["threshold"] == multisig.threshold

    offline_world = world.at(dead_endpoint())
    offline = str(write_config(offline_world, tmp_path / "offline", key_env=GUARDIAN_KEY_ENV))
    # Nothing recorded yet: said, not an internal error.
    code, _, err = run(capsys, "proposals", "--config", offline, "show", "1")
    assert code == 2 and "no proposal with id 1" in err
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({k: v for k, v in json.loads(carried.read_text()).items() if k != "onguard"}))
    code, _, err = run(capsys, "proposals", "--config", offline, "import", str(bare))
    assert code == 1 and "no answer from the node" in err and "internal error" not in err

    code, out, err = run(capsys, "proposals", "--config", offline, "import", str(carried))
    assert code == 0, err
    assert "1 new signature(s) imported" in out and "owners checked against the Safe's state as to-offline.json" in out
    code, out, err = run(capsys, "proposals", "--config", offline, "show", "1")
    assert code == 0, err
    assert "offline      no node" in out and "NOT read from the chain" in out and "simulation" not in out
    assert "call         unpause()" in out and "Safe tx hash 0x" in out
    code, out, err = run(capsys, "proposals", "--config", offline, "sign", "1", *as_signer(monkeypatch, second))
    assert code == 0, err
    assert f"signed by {second.address}: 2 of 2 (owners checked against the Safe's state" in out
    code, out, _ = run(capsys, "proposals", "--config", offline, "list")
    assert "no node: whether pending proposals' nonces are spent is not known" in out
    code, _, err = run(capsys, "proposals", "--config", offline, "execute", "1",
                       *as_signer(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 1 and "no answer from the node" in err
    # A stranger's key is refused offline too: the recorded owners are checked.
    code, _, err = run(capsys, "proposals", "--config", offline, "sign", "1",
                       *as_signer(monkeypatch, dev_account(Roles.ATTACKER)))
    assert code == 2 and "is not an owner" in err

    back = tmp_path / "back.json"
    assert run(capsys, "proposals", "--config", offline, "export", "1", "--out", str(back))[0] == 0
    code, out, err = run(capsys, "proposals", "--config", online, "import", str(back))
    assert code == 0, err
    assert "1 new signature(s) imported" in out
    code, _, err = run(capsys, "proposals", "--config", online, "execute", "1",
                       *as_signer(monkeypatch, dev_account(Roles.DEPLOYER)))
    assert code == 0, err
    assert not is_paused(multisig.chain.w3, world)
