"""`onguard notify-test`: a test notice to each channel, with a line per channel saying whether it arrived."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from receivers import HttpReceiver, ThreadedHttpReceiver

from onguard.cli.main import main

SECRET = "hmac-secret-for-tests"


def write_config(tmp_path: Path, receiver: HttpReceiver, slack_path: str = "/slack") -> Path:
    path = tmp_path / "onguard.toml"
    path.write_text(f"""
[chain]
rpc_url = "http://127.0.0.1:8545"
chain_id = 10

[notifications]
max_attempts = 2
first_retry = "10ms"
max_retry = "10ms"
[notifications.channels.hook]
type = "webhook"
url_env = "T_HOOK_URL"
secret_env = "T_HOOK_SECRET"
[notifications.channels.team]
type = "slack"
url_env = "T_SLACK_URL"
[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "T_PD_KEY"
events_url = "{receiver.url('/pagerduty')}"
[[notifications.routes]]
channels = ["pager"]
severities = ["critical"]
[[notifications.routes]]
channels = ["hook", "team"]
policies = ["vault-drain"]
""")
    return path


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    with ThreadedHttpReceiver(SECRET) as running:
        monkeypatch.setenv("T_HOOK_URL", running.url("/webhook"))
        monkeypatch.setenv("T_HOOK_SECRET", SECRET)
        monkeypatch.setenv("T_SLACK_URL", running.url("/slack"))
        monkeypatch.setenv("T_PD_KEY", "routing-key-for-tests")
        yield running


def test_every_channel_but_pagerduty_gets_a_test_notice_whatever_the_routes(
        receiver: HttpReceiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify-test", "--config", str(write_config(tmp_path, receiver))]) == 0
    assert capsys.readouterr().out.splitlines() == ["hook  delivered", "team  delivered"]
    [hook] = receiver.requests["/webhook"]
    assert (hook.json()["kind"], hook.json()["severity"], hook.json()["chain_id"]) == ("test", "info", 10)
    assert receiver.requests["/slack"][0].json()["text"].startswith("INFO · Test · test notice")
    assert receiver.requests["/pagerduty"] == []


def test_a_named_pagerduty_channel_is_paged_and_the_page_resolved_at_once(
        receiver: HttpReceiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify-test", "--config", str(write_config(tmp_path, receiver)), "--channel", "pager"]) == 0
    assert capsys.readouterr().out.splitlines() == ["pager  delivered"]
    events = [received.json() for received in receiver.requests["/pagerduty"]]
    assert [event["event_action"] for event in events] == ["trigger", "resolve"]
    assert events[0]["dedup_key"] == events[1]["dedup_key"] == "onguard/10/test/daemon"


def test_a_channel_that_fails_is_reported_with_its_reason_and_exit_code_1(
        receiver: HttpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("T_SLACK_URL", receiver.url("/down"))
    assert main(["notify-test", "--config", str(write_config(tmp_path, receiver))]) == 1
    assert capsys.readouterr().out.splitlines() == ["hook  delivered",
                                                    "team  FAILED: HTTP 503: down for maintenance"]
    assert len(receiver.requests["/down"]) == 2  # max_attempts


def test_a_missing_secret_or_an_unknown_channel_is_bad_input(
        receiver: HttpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, receiver)
    assert main(["notify-test", "--config", str(config), "--channel", "pagr"]) == 2
    assert "no channel named 'pagr'" in capsys.readouterr().err
    monkeypatch.delenv("T_HOOK_SECRET")
    assert main(["notify-test", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "notifications.channels.hook.secret_env: environment variable T_HOOK_SECRET is not set" in error
    assert "Traceback" not in error
