"""The `onguard` command on bad input: exit code 2, one 'error:' line naming what to fix, never a traceback.

Nothing here reaches a chain: every case stops before the daemon would connect.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onguard.cli.main import main
from onguard.incidents.daemonlock import daemon_lock
from onguard.incidents.store import IncidentStore

WriteToml = Callable[..., Path]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_with_a_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    code, _, err = run_cli(capsys, "run", "--config", str(missing))
    assert code == 2
    assert err.startswith("error: ")
    assert f"{missing}: file not found" in err
    assert "Traceback" not in err


def test_run_with_an_invalid_config_field(write_toml: WriteToml, config_data: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config_data["chain"]["chain_id"] = "mainnet"
    path = write_toml(config_data)
    code, _, err = run_cli(capsys, "run", "--config", str(path))
    assert code == 2
    assert err.startswith(f"error: {path}: chain.chain_id: expected an integer")
    assert "  hint: " in err
    assert "Traceback" not in err


def test_run_with_a_malformed_policy_names_the_policy_file_and_field(
        write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    policy_data["match"]["event"] = "Drained"
    policy_path = write_toml(policy_data, "policies/drain.toml")

    code, _, err = run_cli(capsys, "run", "--config", str(config_path))

    assert code == 2
    # file:line: field: message, as compilers print them, then the verdict.
    assert re.match(rf"{re.escape(str(policy_path))}:\d+: match\.event: vault has no event 'Drained'\n", err), err
    assert "hint: its events: " in err
    assert err.endswith("error: 1 invalid policy file(s): the guardian does not start with a policy it cannot "
                        "evaluate\n")
    assert "Traceback" not in err


def test_run_lists_every_invalid_policy_before_refusing_to_start(
        write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    write_toml(dict(policy_data, severity="urgent"), "policies/a.toml")
    policy_data["aggregate"]["of"] = "owner"
    write_toml(dict(policy_data, id="b"), "policies/b.toml")

    code, _, err = run_cli(capsys, "run", "--config", str(config_path))

    assert code == 2
    assert re.search(r"a\.toml:\d+: severity: unknown severity 'urgent'", err), err
    assert re.search(r"b\.toml:\d+: aggregate\.of: Withdraw has no numeric argument 'owner'", err), err
    assert "error: 2 invalid policy file(s)" in err
    assert "Traceback" not in err


def test_run_with_an_empty_policies_folder(tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    (tmp_path / "policies").mkdir()
    code, _, err = run_cli(capsys, "run", "--config", str(config_path))
    assert code == 2
    assert err.startswith(f"{tmp_path / 'policies'}: no policy files")
    assert "error: 1 invalid policy file(s)" in err


def test_run_without_the_guardian_key_stops_before_starting(
        write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    key_env = config_data["guardian"]["key_env"]
    monkeypatch.delenv(key_env, raising=False)
    config_path = write_toml(config_data)
    write_toml(policy_data, "policies/drain.toml")

    code, _, err = run_cli(capsys, "run", "--config", str(config_path))

    assert code == 2
    assert err.startswith(f"error: guardian.key_env: environment variable {key_env} is not set")


def test_incidents_show_unknown_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "onguard.db"
    code, out, err = run_cli(capsys, "incidents", "--db", str(db), "show", "99")
    assert code == 2
    assert err.startswith("error: no incident with id 99")
    assert "hint: `onguard incidents list` shows the ids" in err
    assert out == ""


def test_incidents_list_on_an_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "incidents", "--db", str(tmp_path / "onguard.db"), "list")
    assert code == 0
    assert out.strip() == "no incidents"
    assert "error" not in err


def test_incidents_list_and_show_an_incident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "onguard.db"
    store = IncidentStore(db)
    incident = store.open_incident(chain_id=31337, policy_id="vault-drain", severity="critical",
                                   title="sum(Withdraw.assets) is 300", dry_run=False, block=1234,
                                   block_time=1_700_000_000, evidence={"value": 10**30, "measured": "sum"})
    store.claim_response(incident.id, "pause_vault")
    store.update_response(incident.id, "pause_vault", "mined", tx_hash="0xbeef", block_number=1235, gas_used=50_000)
    store.close()

    code, out, _ = run_cli(capsys, "incidents", "--db", str(db), "list")
    assert code == 0
    [header, row] = out.strip().splitlines()
    assert header.split()[:2] == ["ID", "OPENED"]
    assert row.split()[0] == str(incident.id)
    assert row.split()[-4:] == ["1234", "critical", "open", "vault-drain"]

    code, out, _ = run_cli(capsys, "incidents", "--db", str(db), "show", str(incident.id))
    assert code == 0
    assert out.startswith(f"incident {incident.id}: sum(Withdraw.assets) is 300")
    assert f"value: {10**30}" in out  # the exact integer, not 1e+30
    assert "response-mined" in out
    assert "pause_vault" in out and "0xbeef" in out and "block 1235" in out


def test_incidents_without_db_uses_the_database_named_in_the_config(
        tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_data["state"]["database"] = "state/guardian.db"
    config_path = write_toml(config_data)
    code, out, _ = run_cli(capsys, "incidents", "--config", str(config_path), "list")
    assert code == 0
    assert out.strip() == "no incidents"
    assert (tmp_path / "state" / "guardian.db").exists()


def test_incidents_on_a_file_that_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_db = tmp_path / "onguard.toml"
    not_a_db.write_text("[chain]\n" + "# padding so SQLite reads a full header\n" * 10)
    code, _, err = run_cli(capsys, "incidents", "--db", str(not_a_db), "list")
    assert code == 2
    assert err.startswith(f"error: {not_a_db}")


def test_run_with_an_infinite_threshold_is_an_input_error(
        write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    policy_data["trigger"]["condition"] = "value > 1e999"  # a threshold no uint256 can reach
    policy_path = write_toml(policy_data, "policies/drain.toml")
    code, _, err = run_cli(capsys, "run", "--config", str(config_path))
    assert code == 2
    assert re.match(rf"{re.escape(str(policy_path))}:\d+: trigger\.condition: .*out of range", err), err
    assert "Traceback" not in err


def test_run_with_an_infinite_read_argument_is_an_input_error(
        write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    policy_data["reads"]["worth"] = "vault.convertToAssets(inf)"
    policy_path = write_toml(policy_data, "policies/drain.toml")
    code, _, err = run_cli(capsys, "run", "--config", str(config_path))
    assert code == 2
    assert re.match(rf"{re.escape(str(policy_path))}:\d+: reads\.worth: 'inf' is not an amount", err), err


def test_unknown_subcommand_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["guard"])
    assert caught.value.code == 2
    assert "invalid choice: 'guard'" in capsys.readouterr().err


def test_policies_check_lists_every_unreadable_policy_file_and_checks_the_others(
        tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    write_toml(policy_data, "policies/good.toml")
    latin1 = tmp_path / "policies" / "latin1.toml"
    latin1.write_bytes(b'id = "x"\ndescription = "r\xe9serve"\n')  # "réserve" saved as Latin-1
    folder = tmp_path / "policies" / "folder.toml"
    folder.mkdir()

    code, out, err = run_cli(capsys, "policies", "--config", str(config_path), "check")

    assert code == 2
    assert f"{latin1}: not UTF-8 text (byte 0xe9 at line 2)\n  hint: TOML files are UTF-8" in err
    assert f"{folder}: cannot read the file (Is a directory)\n  hint: " in err
    assert "ok  vault-drain (event, critical)" in out
    assert out.strip().endswith("1 valid, 2 invalid")
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_policies_check_names_a_policy_file_it_may_not_read(
        tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_toml(config_data)
    locked = write_toml(policy_data, "policies/locked.toml")
    locked.chmod(0)
    code, _, err = run_cli(capsys, "policies", "--config", str(config_path), "check")
    assert code == 2
    assert f"{locked}: cannot read the file (Permission denied)" in err


def test_a_config_that_is_not_utf8_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "onguard.toml"
    config_path.write_bytes(b"# \xff\n[chain]\n")
    code, _, err = run_cli(capsys, "status", "--config", str(config_path))
    assert code == 2
    assert err.startswith(f"error: {config_path}: not UTF-8 text (byte 0xff at line 1)")
    assert "Traceback" not in err


@pytest.mark.parametrize(("section", "key", "value"), [
    ("response", "receipt_timeout", "0s"),
    ("response", "receipt_timeout", "100000000000h"),
    ("response", "max_fee_per_gas", 1),
    ("mempool", "simulation_timeout", "9" * 400 + "s"),
])
def test_run_refuses_an_out_of_range_number_in_one_line(
        write_toml: WriteToml, config_data: dict[str, Any], capsys: pytest.CaptureFixture[str],
        section: str, key: str, value: object) -> None:
    config_data[section] = {key: value}
    path = write_toml(config_data)
    code, _, err = run_cli(capsys, "run", "--config", str(path))
    assert code == 2
    first, hint = err.rstrip("\n").split("\n")
    assert first.startswith(f"error: {path}: {section}.{key}: ")
    assert hint.startswith("  hint: ")
    assert "Traceback" not in err


def test_run_refuses_a_database_another_daemon_holds(
        tmp_path: Path, write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(config_data["guardian"]["key_env"], "0x" + "11" * 32)
    config_path = write_toml(config_data)
    write_toml(policy_data, "policies/drain.toml")
    with daemon_lock(tmp_path / "onguard.db"):
        code, out, err = run_cli(capsys, "run", "--config", str(config_path))
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'onguard.db.lock'}: another onguard daemon (pid {os.getpid()} ")
    assert "hint: one daemon per database" in err
    assert out == "" and "Traceback" not in err

@pytest.mark.parametrize(("action", "field", "message"), [
    ({"contract": "vault", "call": "revokeRole", "args": ["keccak256:PAUSER_ROLE"], "done_when": "paused()"},
     "actions.pause_vault.args", "vault.revokeRole(bytes32,address) takes 2 argument(s), got 1"),
    ({"contract": "vault", "call": "revokeRole", "args": ["PAUSER_ROLE", "vault"], "done_when": "paused()"},
     "actions.pause_vault.args[0]", "role (bytes32) of revokeRole(bytes32,address): argument 'PAUSER_ROLE' is not "
                                    "bytes32"),
    ({"contract": "vault", "call": "pause()", "done_when": "totalAssets()"},
     "actions.pause_vault.done_when", "a condition must be true or false, but this expression is a number"),
    ({"contract": "vualt", "call": "pause()", "done_when": "paused()"},
     "actions.pause_vault.contract", "no contract named 'vualt'; did you mean 'vault'?"),
])
def test_run_with_a_bad_action_is_an_input_error(write_toml: WriteToml, config_data: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str], action: dict[str, Any],
                                                 field: str, message: str) -> None:
    config_data["actions"]["pause_vault"] = action
    path = write_toml(config_data)
    code, _, err = run_cli(capsys, "run", "--config", str(path))
    assert code == 2
    assert err.startswith(f"error: {path}: {field}: {message}"), err
    assert "  hint: " in err
    assert "Traceback" not in err


def test_run_refuses_a_notification_route_naming_a_policy_that_is_not_there(
        write_toml: WriteToml, config_data: dict[str, Any], policy_data: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    config_data["notifications"] = {"channels": {"hook": {"type": "webhook", "url_env": "H", "secret_env": "S"}},
                                    "routes": [{"channels": ["hook"], "policies": ["vault-drian"]}]}
    config_path = write_toml(config_data)
    write_toml(dict(policy_data, enabled=False), "policies/drain.toml")  # disabled, but there: not the problem

    code, _, err = run_cli(capsys, "run", "--config", str(config_path))

    assert code == 2
    assert f"{config_path}: notifications.routes[0].policies: no policy 'vault-drian' is loaded" in err
    assert "hint: loaded policies: " in err and "Traceback" not in err
