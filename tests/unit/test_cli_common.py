"""cli/common.py: `--config` is accepted before the command, after it and after its action, and from
$ONGUARD_CONFIG; `--db` after the action too; the exit codes are the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from onguard.cli import incidents
from onguard.cli.common import CONFIG_ENV, Exit
from onguard.cli.main import main

# Every command that reads onguard.toml, as [command, action and arguments...].
COMMANDS = [
    ["run"],
    ["status"],
    ["incidents", "list"],
    ["audit", "verify"],
    ["audit", "export", "out.jsonl"],
    ["policies", "check"],
    ["presign", "pause_vault", "--yes"],
    ["proposals", "list"],
    ["replay", "--record", "out.jsonl", "--from-block", "1"],
]


def placements(command: list[str], config: str) -> dict[str, list[str]]:
    return {
        "before the command": ["--config", config, *command],
        "after the command": [command[0], "--config", config, *command[1:]],
        "at the end": [*command, "--config", config],
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_config_is_read_from_wherever_it_is_written(command: list[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    missing = tmp_path / "nowhere" / "guard.toml"  # a config that is not there: the error shows which was read
    for where, argv in placements(command, str(missing)).items():
        assert main(argv) == Exit.BAD_INPUT, where
        assert f"error: {missing}: file not found" in capsys.readouterr().err, where


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_config_comes_from_the_environment_else_the_current_folder(command: list[str], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    from_env = tmp_path / "env" / "onguard.toml"
    monkeypatch.setenv(CONFIG_ENV, str(from_env))
    assert main(command) == Exit.BAD_INPUT
    assert f"error: {from_env}: file not found" in capsys.readouterr().err
    given = tmp_path / "given.toml"  # the command line wins over the environment
    assert main([*command, "--config", str(given)]) == Exit.BAD_INPUT
    assert f"error: {given}: file not found" in capsys.readouterr().err
    monkeypatch.delenv(CONFIG_ENV)
    assert main(command) == Exit.BAD_INPUT
    assert "error: onguard.toml: file not found" in capsys.readouterr().err


def test_db_is_accepted_after_the_action_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["incidents", "--db", str(tmp_path / "a.db"), "list"],
                 ["incidents", "list", "--db", str(tmp_path / "b.db")],
                 ["audit", "verify", "--db", str(tmp_path / "c.db")]):
        assert main(argv) == Exit.OK, argv
    capsys.readouterr()
    assert {p.name for p in tmp_path.glob("*.db")} == {"a.db", "b.db", "c.db"}


def test_an_internal_error_exits_3_and_says_to_report_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def broken(path: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(incidents, "IncidentStore", broken)
    assert main(["incidents", "--db", str(tmp_path / "x.db"), "list"]) == Exit.INTERNAL_ERROR == 3
    err = capsys.readouterr().err
    assert err.startswith("onguard: internal error: RuntimeError: a bug\n  hint: run again with --debug")
    assert "Traceback" not in err
