"""Signers' commands on bad input, with no node anywhere: exit 2 and one line naming the field, before any chain
access; no node where one is needed: said plainly (exit 1), never an internal error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onguard.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(write_toml, config_data, unused_port) -> str:
    config_data["chain"]["rpc_url"] = f"http://127.0.0.1:{unused_port}"
    config_data["actions"]["pause_vault"]["via"] = "presigned"
    return str(write_toml(config_data))


@pytest.fixture
def unused_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("argv, field", [
    (["--depth", "0"], "--depth"),
    (["--depth", "40"], "--depth"),
    (["--depth", "2", "--nonce", "5"], "--nonce"),
    (["--depth", "2", "--signature", "0x" + "11" * 65], "--depth"),
    (["--depth", "2", "--typed-data"], "--depth"),
    (["--approve-hash", "--signature", "0x" + "11" * 65], "--approve-hash"),
])
def test_presign_arguments_are_checked_before_the_chain(capsys, config, argv, field):
    code, _, err = run(capsys, "presign", "--config", config, "pause_vault", *argv)
    assert code == 2 and err.startswith(f"error: {field}: ") and "Traceback" not in err


def test_presign_without_an_action_or_with_an_unknown_one(capsys, config):
    code, _, err = run(capsys, "presign", "--config", config)
    assert code == 2 and "ACTION" in err and "--status" in err
    code, _, err = run(capsys, "presign", "--config", config, "nope")
    assert code == 2 and "no action named 'nope'" in err


def test_no_node_is_said_not_crashed(capsys, config):
    code, _, err = run(capsys, "presign", "--config", config, "pause_vault")
    assert code == 1 and "no answer from the node" in err and "internal error" not in err
    code, out, _ = run(capsys, "presign", "--config", config, "--status", "--json")
    assert code == 1 and "error" in json.loads(out) and json.loads(out)["needsAttention"]


@pytest.mark.parametrize("content, words", [
    (None, "file not found"),
    ("not json", "not a JSON file"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"version": "1.0", "chainId": "1", "meta": {"name": "x"}, "transactions": []}), "chainId"),
    (json.dumps({"to": "0x" + "22" * 20, "nonce": "x", "safeTxHash": "0x" + "00" * 32}), "nonce"),
])
def test_import_names_the_file_and_field(capsys, config, tmp_path: Path, content, words):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run(capsys, "proposals", "--config", config, "import", str(path))
    assert code == 2 and str(path) in err and words in err and "Traceback" not in err


def test_proposal_commands_on_an_unknown_id_or_with_no_node(capsys, config):
    for argv in (["show", "7"], ["sign", "7", "--signature", "0x00"], ["push", "7", "--service", "http://x"],
                 ["export", "7"], ["approval-batch", "7", "--out", "x.json"]):
        code, _, err = run(capsys, "proposals", "--config", config, *argv)
        assert code == 2 and "no proposal with id 7" in err, argv
    code, out, _ = run(capsys, "proposals", "--config", config, "list", "--json")
    assert code == 0 and json.loads(out) == {"safeNonce": None, "proposals": []}
    code, _, err = run(capsys, "proposals", "--config", config, "create", "--to", "0x" + "22" * 20,
                       "--purpose", "x")
    assert code == 1 and "no answer from the node" in err
