"""[notifications] and [metrics] in onguard.toml: valid sections load; every bad one names the file and field,
and no secret can be written in the file."""

from __future__ import annotations

import tomllib

import pytest
from notifykit import notice, notification_settings

from onguard.errors import ConfigError
from onguard.ops.notice import NoticeKind
from onguard.ops.settings import (
    DEFAULT_METRICS_PORT,
    PAGERDUTY_EVENTS_URL,
    ChannelType,
    ChatSpec,
    EmailSpec,
    PagerDutySpec,
    SmtpSecurity,
    WebhookSpec,
    parse_metrics,
)
from onguard.policies.model import Severity
from onguard.tomlfields import Table

FILE = "/srv/onguard/onguard.toml"
VALID = """
[notifications]
max_attempts = 4
first_retry = "2s"
max_retry = "1m"
timeout = "5s"

[notifications.channels.hook]
type = "webhook"
url_env = "ONGUARD_WEBHOOK_URL"
secret_env = "ONGUARD_WEBHOOK_SECRET"

[notifications.channels.team]
type = "discord"
url_env = "ONGUARD_DISCORD_URL"

[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "ONGUARD_PAGERDUTY_KEY"

[notifications.channels.mail]
type = "email"
host = "smtp.example.com"
username = "onguard"
password_env = "ONGUARD_SMTP_PASSWORD"
from = "onguard@example.com"
to = ["oncall@example.com"]

[[notifications.routes]]
channels = ["pager", "mail"]
severities = ["critical", "high"]

[[notifications.routes]]
channels = ["team", "hook"]
policies = ["vault-drain"]
kinds = ["incident_opened", "incident_status"]
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        notification_settings(text, file=FILE)
    assert caught.value.file == FILE
    return caught.value


def test_a_valid_section_loads_into_channel_specs_and_routes() -> None:
    settings = notification_settings(VALID, file=FILE)
    assert settings.enabled and settings.file == FILE
    assert settings.channels["hook"] == WebhookSpec("hook", "ONGUARD_WEBHOOK_URL", "ONGUARD_WEBHOOK_SECRET")
    assert settings.channels["team"] == ChatSpec("team", ChannelType.DISCORD, "ONGUARD_DISCORD_URL")
    assert settings.channels["pager"] == PagerDutySpec("pager", "ONGUARD_PAGERDUTY_KEY", PAGERDUTY_EVENTS_URL,
                                                       "onguard")
    mail = settings.channels["mail"]
    assert isinstance(mail, EmailSpec) and (mail.security, mail.port) == (SmtpSecurity.STARTTLS, 587)
    assert (settings.retry.max_attempts, settings.retry.first_delay, settings.retry.max_delay) == (4, 2.0, 60.0)
    paging, team = settings.routes
    assert paging.severities == {Severity.CRITICAL, Severity.HIGH} and paging.policies is None
    assert team.policies == {"vault-drain"} and team.kinds == {NoticeKind.INCIDENT_OPENED, NoticeKind.INCIDENT_STATUS}
    assert paging.matches(notice(severity="high", policy_id="anything"))
    assert not paging.matches(notice(severity="medium"))
    assert team.matches(notice(severity="info", policy_id="vault-drain"))
    assert not team.matches(notice(NoticeKind.RESPONSE_OUTCOME, policy_id="vault-drain"))


def test_no_section_means_no_channel_and_nothing_sent() -> None:
    settings = notification_settings("")
    assert not settings.enabled and settings.routes == ()


@pytest.mark.parametrize("secret_line", [
    'url = "https://hooks.slack.com/services/T0/B0/XYZ"',
    'password = "hunter2"',
    'routing_key = "abcdef"',
])
def test_a_secret_written_in_the_file_is_refused_without_echoing_it(secret_line: str) -> None:
    text = VALID.replace('type = "discord"', f'type = "discord"\n{secret_line}')
    error = error_of(text)
    field = secret_line.split(" ")[0]
    assert error.field == f"notifications.channels.team.{field}"
    assert "never be written in the config file" in error.message
    assert secret_line.split('"')[1] not in error.render()


def test_an_env_field_holding_a_secret_instead_of_a_variable_name_is_refused_without_echoing_it() -> None:
    pasted = "https://hooks.slack.com/services/T0/B0/XYZ"
    error = error_of(VALID.replace('url_env = "ONGUARD_DISCORD_URL"', f'url_env = "{pasted}"'))
    assert error.field == "notifications.channels.team.url_env"
    assert pasted not in error.render()


@pytest.mark.parametrize("old, new, field, words", [
    ('channels = ["pager", "mail"]', 'channels = ["pager", "mial"]', "notifications.routes[0].channels",
     "no channel named 'mial'"),
    ('severities = ["critical", "high"]', 'severities = ["critical", "urgent"]', "notifications.routes[0].severities",
     "'urgent' is not one of"),
    ('kinds = ["incident_opened", "incident_status"]', 'kinds = ["opened"]', "notifications.routes[1].kinds",
     "'opened' is not one of"),
    ('type = "discord"', 'type = "teams"', "notifications.channels.team.type", "'teams'"),
    ('max_attempts = 4', 'max_attempts = 0', "notifications.max_attempts", "at least 1"),
    ('first_retry = "2s"', 'first_retry = "2 minutes"', "notifications.first_retry", "not a duration"),
    ('to = ["oncall@example.com"]', 'to = []', "notifications.channels.mail.to", "non-empty list"),
    ('timeout = "5s"', 'timout = "5s"', "notifications.timout", "unknown field"),
    ('policies = ["vault-drain"]', 'policies = "vault-drain"', "notifications.routes[1].policies", "a list"),
])
def test_a_bad_section_names_the_field(old: str, new: str, field: str, words: str) -> None:
    assert old in VALID
    error = error_of(VALID.replace(old, new))
    assert error.field == field
    assert words in error.message


def test_channels_without_any_route_are_refused() -> None:
    text = VALID.split("[[notifications.routes]]")[0]
    assert error_of(text).field == "notifications.routes"


def test_a_password_over_an_unencrypted_connection_to_another_host_is_refused() -> None:
    error = error_of(VALID.replace('host = "smtp.example.com"', 'host = "smtp.example.com"\nsecurity = "none"'))
    assert error.field == "notifications.channels.mail.security"
    local = notification_settings(VALID.replace('host = "smtp.example.com"', 'host = "127.0.0.1"\nsecurity = "none"'))
    assert local.channels["mail"].port == 25  # type: ignore[union-attr]


def test_a_route_naming_a_policy_that_is_not_loaded_is_found_by_check_policies() -> None:
    settings = notification_settings(VALID, file=FILE)
    settings.check_policies({"vault-drain", "oracle-deviation"})
    with pytest.raises(ConfigError) as caught:
        settings.check_policies({"vault-drian"})
    assert caught.value.field == "notifications.routes[1].policies"
    assert "vault-drain" in caught.value.message and "vault-drian" in (caught.value.hint or "")


def metrics_settings(text: str):  # type: ignore[no-untyped-def]
    root = Table(tomllib.loads(text), file=FILE, prefix="", error=ConfigError)
    return parse_metrics(root.table("metrics", required=False))


def test_metrics_section_defaults_to_off_and_localhost() -> None:
    absent = metrics_settings("")
    assert not absent.enabled and absent.host == "127.0.0.1" and absent.port == DEFAULT_METRICS_PORT
    on = metrics_settings('[metrics]\nport = 9100\nlag_budget = 5\nstale_after = "2m"\n')
    assert on.enabled and (on.port, on.lag_budget, on.stale_after, on.require_preflight) == (9100, 5, 120.0, True)
    assert metrics_settings("[metrics]\n").enabled
    assert not metrics_settings("[metrics]\nenabled = false\n").enabled


@pytest.mark.parametrize("line, field", [
    ("port = 70000", "metrics.port"),
    ("lag_budget = -1", "metrics.lag_budget"),
    ('stale_after = "soon"', "metrics.stale_after"),
    ("enabled = \"yes\"", "metrics.enabled"),
    ("prot = 9100", "metrics.prot"),
])
def test_a_bad_metrics_section_names_the_field(line: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        metrics_settings(f"[metrics]\n{line}\n")
    assert caught.value.field == field and caught.value.file == FILE


def test_a_ca_file_is_read_from_the_config_folder_and_must_exist_when_the_notifier_is_built() -> None:
    from pathlib import Path

    from onguard.ops.notify import Notifier

    settings = notification_settings(VALID.replace('host = "smtp.example.com"',
                                                   'host = "smtp.example.com"\nca_file = "relay-ca.pem"'), file=FILE)
    assert settings.channels["mail"].ca_file == Path("/srv/onguard/relay-ca.pem")  # type: ignore[union-attr]
    environ = {name: "https://example.com/x" for name in ("ONGUARD_WEBHOOK_URL", "ONGUARD_DISCORD_URL")}
    environ |= {"ONGUARD_WEBHOOK_SECRET": "s", "ONGUARD_PAGERDUTY_KEY": "k", "ONGUARD_SMTP_PASSWORD": "p"}
    with pytest.raises(ConfigError) as caught:
        Notifier.from_settings(settings, environ=environ)
    assert caught.value.field == "notifications.channels.mail.ca_file"
    error = error_of(VALID.replace('host = "smtp.example.com"',
                                   'host = "127.0.0.1"\nsecurity = "none"\nca_file = "relay-ca.pem"'))
    assert error.field == "notifications.channels.mail.ca_file"
