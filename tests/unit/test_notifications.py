"""Notifier: every channel delivers to a real local receiver; retries, recorded failures, routing, and a publish
that never waits, even when every receiver hangs."""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path

import aiohttp
import pytest
import structlog
import trustme
from notifykit import notice, notification_settings
from receivers import BlackHole, HttpReceiver, SmtpReceiver

from onguard.errors import ConfigError
from onguard.ops.channels import sign
from onguard.ops.notice import SCHEMA, NoticeKind
from onguard.ops.notify import DeliveryFailure, Notifier
from onguard.ops.settings import RetrySettings

SECRET = "hmac-secret-for-tests"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
SMTP_PASSWORD = "smtp-pass-for-tests"
FAST_RETRY = """
first_retry = "10ms"
max_retry = "20ms"
"""


def all_channels_toml(smtp_port: int) -> str:
    return f"""
[notifications]
max_attempts = 3
{FAST_RETRY}
[notifications.channels.hook]
type = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"
[notifications.channels.slack]
type = "slack"
url_env = "SLACK_URL"
[notifications.channels.discord]
type = "discord"
url_env = "DISCORD_URL"
[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "PD_KEY"
events_url = "ENVENTS_URL"
source = "guardian-eu-1"
[notifications.channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
username = "onguard"
password_env = "SMTP_PASSWORD"
from = "onguard@example.com"
to = ["oncall@example.com", "cto@example.com"]

[[notifications.routes]]
channels = ["hook", "slack", "discord", "pager", "mail"]
"""


def environ(receiver: HttpReceiver) -> dict[str, str]:
    return {"HOOK_URL": receiver.url("/webhook"), "HOOK_SECRET": SECRET, "SLACK_URL": receiver.url("/slack"),
            "DISCORD_URL": receiver.url("/discord"), "PD_KEY": ROUTING_KEY, "SMTP_PASSWORD": SMTP_PASSWORD}


def one_channel(path_env: str = "HOOK_URL", attempts: int = 3, extra: str = "") -> str:
    return f"""
[notifications]
max_attempts = {attempts}
{FAST_RETRY}
{extra}
[notifications.channels.hook]
type = "webhook"
url_env = "{path_env}"
secret_env = "HOOK_SECRET"
[[notifications.routes]]
channels = ["hook"]
"""


def test_every_channel_delivers_a_notice_to_its_real_receiver() -> None:
    sent = notice(NoticeKind.INCIDENT_OPENED)

    async def scenario(mail: SmtpReceiver) -> Notifier:
        async with HttpReceiver(secret=SECRET) as receiver:
            toml = all_channels_toml(mail.port).replace("ENVENTS_URL", receiver.url("/pagerduty"))
            notifier = Notifier.from_settings(notification_settings(toml), environ=environ(receiver))
            notifier.start()
            notifier.publish(sent)
            await notifier.flush()
            await notifier.stop()
            check_http_bodies(receiver)
            return notifier

    def check_http_bodies(receiver: HttpReceiver) -> None:
        assert receiver.rejected == []
        [hook] = receiver.requests["/webhook"]
        assert hook.headers["X-Onguard-Signature"] == sign(hook.body, SECRET)
        assert hook.headers["X-Onguard-Schema"] == SCHEMA
        document = hook.json()
        assert document["schema"] == SCHEMA and document["id"] == sent.id
        assert (document["kind"], document["severity"], document["policy_id"], document["incident_id"]) == (
            "incident_opened", "critical", "vault-drain", 12)
        assert document["details"]["drained_wei"] == str(4_500 * 10**18)  # beyond 2**53: a decimal string
        [slack] = receiver.requests["/slack"]
        assert "vault drained 45% in 3 blocks" in slack.json()["text"]
        assert slack.json()["blocks"][0]["type"] == "header"
        [discord] = receiver.requests["/discord"]
        assert discord.json()["embeds"][0]["title"] == "Incident opened: vault drained 45% in 3 blocks"
        assert discord.json()["allowed_mentions"] == {"parse": []}
        [page] = receiver.requests["/pagerduty"]
        event = page.json()
        assert (event["routing_key"], event["event_action"], event["dedup_key"]) == (
            ROUTING_KEY, "trigger", "onguard/1/incident/12")
        assert event["payload"]["source"] == "guardian-eu-1" and event["payload"]["severity"] == "critical"
        assert event["payload"]["custom_details"]["threat_tx"] == "0x" + "ab" * 32

    with SmtpReceiver("onguard", SMTP_PASSWORD) as mail:
        notifier = asyncio.run(scenario(mail))
        [(sender, recipients, message)] = mail.messages
    assert mail.logins == [b"onguard"]
    assert sender == "onguard@example.com" and recipients == ["oncall@example.com", "cto@example.com"]
    assert message["Subject"] == "[onguard] CRITICAL · Incident opened · vault drained 45% in 3 blocks"
    assert message["In-Reply-To"] == "<onguard.1.incident.12@onguard>"
    assert "the guardian is pausing it" in message.get_content()
    assert dict(notifier.delivered) == {"hook": 1, "slack": 1, "discord": 1, "pager": 1, "mail": 1}
    assert list(notifier.failures) == []


def test_pagerduty_trigger_acknowledge_resolve_share_the_incident_dedup_key() -> None:
    async def scenario() -> list[dict]:
        async with HttpReceiver(secret=SECRET) as receiver:
            toml = f"""
[notifications]
[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "PD_KEY"
events_url = "{receiver.url('/pagerduty')}"
[[notifications.routes]]
channels = ["pager"]
"""
            notifier = Notifier.from_settings(notification_settings(toml), environ={"PD_KEY": ROUTING_KEY})
            notifier.publish(notice(NoticeKind.INCIDENT_OPENED))
            notifier.publish(notice(NoticeKind.RESPONSE_OUTCOME, outcome="mined", tx="0x01"))
            notifier.publish(notice(NoticeKind.INCIDENT_STATUS, status="acknowledged", by="alice"))
            notifier.publish(notice(NoticeKind.INCIDENT_STATUS, status="resolved", by="alice"))
            notifier.start()
            await notifier.stop()
            return [received.json() for received in receiver.requests["/pagerduty"]]

    events = asyncio.run(scenario())
    assert [event["event_action"] for event in events] == ["trigger", "trigger", "acknowledge", "resolve"]
    assert {event["dedup_key"] for event in events} == {"onguard/1/incident/12"}
    assert "payload" not in events[2] and "payload" not in events[3]


def test_routes_send_by_severity_and_policy() -> None:
    toml = """
[notifications]
[notifications.channels.pager]
type = "pagerduty"
routing_key_env = "PD_KEY"
events_url = "EVENTS"
[notifications.channels.team]
type = "slack"
url_env = "SLACK_URL"
[[notifications.routes]]
channels = ["pager"]
severities = ["critical", "high"]
[[notifications.routes]]
channels = ["team"]
policies = ["vault-drain"]
"""

    async def scenario() -> HttpReceiver:
        async with HttpReceiver(secret=SECRET) as receiver:
            settings = notification_settings(toml.replace("EVENTS", receiver.url("/pagerduty")))
            notifier = Notifier.from_settings(settings, environ={"PD_KEY": ROUTING_KEY,
                                                                 "SLACK_URL": receiver.url("/slack")})
            notifier.start()
            notifier.publish(notice(severity="critical", policy_id="oracle-deviation", incident_id=1))
            notifier.publish(notice(severity="low", policy_id="vault-drain", incident_id=2))
            notifier.publish(notice(severity="high", policy_id="vault-drain", incident_id=3))
            notifier.publish(notice(severity="medium", policy_id="oracle-deviation", incident_id=4))
            await notifier.stop()
            return receiver

    receiver = asyncio.run(scenario())
    paged = [received.json()["dedup_key"] for received in receiver.requests["/pagerduty"]]
    told = [received.json()["text"] for received in receiver.requests["/slack"]]
    assert paged == ["onguard/1/incident/1", "onguard/1/incident/3"]
    assert len(told) == 2 and told[0].startswith("LOW") and told[1].startswith("HIGH")


def test_a_server_error_is_retried_and_the_notice_then_arrives_once_accepted() -> None:
    async def scenario() -> tuple[Notifier, HttpReceiver]:
        async with HttpReceiver(secret=SECRET, flaky_failures=1) as receiver:
            notifier = Notifier.from_settings(notification_settings(one_channel()), environ={
                "HOOK_URL": receiver.url("/flaky"), "HOOK_SECRET": SECRET})
            notifier.start()
            notifier.publish(notice())
            await notifier.stop()
            return notifier, receiver

    notifier, receiver = asyncio.run(scenario())
    first, second = receiver.requests["/flaky"]
    assert first.body == second.body and first.headers["X-Onguard-Signature"] == second.headers["X-Onguard-Signature"]
    assert notifier.delivered["hook"] == 1 and notifier.retried["hook"] == 1
    assert list(notifier.failures) == []


def test_a_receiver_that_always_fails_ends_in_a_recorded_failure_after_bounded_attempts() -> None:
    hooked: list[DeliveryFailure] = []

    async def scenario() -> tuple[Notifier, HttpReceiver, list]:
        async with HttpReceiver(secret=SECRET) as receiver:
            with structlog.testing.capture_logs() as logs:
                notifier = Notifier.from_settings(
                    notification_settings(one_channel(attempts=3)), on_failure=[hooked.append],
                    environ={"HOOK_URL": receiver.url("/down"), "HOOK_SECRET": SECRET})
                notifier.start()
                sent = notice()
                notifier.publish(sent)
                await notifier.stop()
            return notifier, receiver, logs

    notifier, receiver, logs = asyncio.run(scenario())
    assert len(receiver.requests["/down"]) == 3
    [failure] = notifier.failures
    assert hooked == [failure]
    assert (failure.channel, failure.attempts, failure.reason) == ("hook", 3, "HTTP 503: down for maintenance")
    assert notifier.failed["hook"] == 1 and notifier.retried["hook"] == 2 and notifier.delivered["hook"] == 0
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in errors] == ["notification NOT delivered"]
    assert errors[0]["notice"] == failure.notice.id


@pytest.mark.parametrize("path, secret, reason", [
    ("/gone", SECRET, "HTTP 404: no_service"),
    ("/webhook", "not-the-receivers-secret", "HTTP 401: bad signature"),
])
def test_a_refused_message_is_recorded_at_once_not_retried(path: str, secret: str, reason: str) -> None:
    async def scenario() -> tuple[Notifier, HttpReceiver]:
        async with HttpReceiver(secret=SECRET) as receiver:
            notifier = Notifier.from_settings(notification_settings(one_channel(attempts=5)), environ={
                "HOOK_URL": receiver.url(path), "HOOK_SECRET": secret})
            notifier.start()
            notifier.publish(notice())
            await notifier.stop()
            return notifier, receiver

    notifier, receiver = asyncio.run(scenario())
    [failure] = notifier.failures
    assert (failure.attempts, failure.reason) == (1, reason)
    assert len(receiver.requests[path]) + len(receiver.rejected) == 1


def test_a_secret_url_never_appears_in_a_failure_or_a_log_line() -> None:
    token = "T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    toml = """
[notifications]
max_attempts = 2
first_retry = "10ms"
max_retry = "10ms"
[notifications.channels.team]
type = "slack"
url_env = "SLACK_URL"
[[notifications.routes]]
channels = ["team"]
"""

    async def scenario() -> tuple[Notifier, list]:
        async with BlackHole() as closed:
            port = closed.port
        # nothing listens on `port` any more: every attempt is refused, and aiohttp's error names the address
        with structlog.testing.capture_logs() as logs:
            notifier = Notifier.from_settings(notification_settings(toml), environ={
                "SLACK_URL": f"http://127.0.0.1:{port}/services/{token}"})
            notifier.start()
            notifier.publish(notice())
            await notifier.stop()
        return notifier, logs

    notifier, logs = asyncio.run(scenario())
    [failure] = notifier.failures
    assert failure.attempts == 2 and failure.reason.startswith("ClientConnectorError")
    assert token not in failure.reason and token not in repr(logs)
    assert "B0000000" not in repr(notifier._channels)


def test_publish_never_waits_even_when_every_receiver_hangs() -> None:
    """Every channel (webhook, Slack, Discord, PagerDuty, SMTP) points at a server that accepts the connection and
    never answers. Publishing goes on, and other work on the loop (a real HTTP round trip, standing in for the
    pause) completes while all five deliveries hang; stopping then records every notice that was not delivered."""

    async def scenario() -> tuple[Notifier, int]:
        async with BlackHole() as hole, HttpReceiver(secret=SECRET) as rpc:
            toml = all_channels_toml(hole.port).replace("ENVENTS_URL", hole.url("/pagerduty"))
            toml = toml.replace("max_attempts = 3", 'max_attempts = 3\ntimeout = "1h"')
            environ = {name: hole.url(f"/{name.lower()}") for name in ("HOOK_URL", "SLACK_URL", "DISCORD_URL")}
            notifier = Notifier.from_settings(notification_settings(toml), environ={
                **environ, "HOOK_SECRET": SECRET, "PD_KEY": ROUTING_KEY, "SMTP_PASSWORD": SMTP_PASSWORD})
            notifier.start()
            notifier.publish(notice(incident_id=0))
            await hole.connections(5)  # every channel's worker is now stuck on its first delivery
            for number in range(1, 100):
                notifier.publish(notice(incident_id=number))
            async with aiohttp.ClientSession() as session, session.post(rpc.url("/rpc"), data=b"{}") as answer:
                status = answer.status
            assert sum(notifier.delivered.values()) == 0 and list(notifier.failures) == []  # all still hanging
            await notifier.stop(timeout=0)
            return notifier, status

    notifier, status = asyncio.run(scenario())
    assert status == 200
    channels = ("hook", "slack", "discord", "pager", "mail")
    assert dict(notifier.failed) == dict.fromkeys(channels, 100)
    for channel in channels:
        failures = [failure for failure in notifier.failures if failure.channel == channel]
        assert [failure.notice.incident_id for failure in failures] == list(range(100))
        assert failures[0].reason.startswith("the notifier stopped during delivery")
        assert {failure.reason for failure in failures[1:]} == {"not delivered before the notifier stopped"}


def test_a_full_queue_or_a_stopped_notifier_records_the_notice_instead_of_dropping_it() -> None:
    async def scenario() -> Notifier:
        notifier = Notifier.from_settings(notification_settings(one_channel(extra="queue_size = 2")), environ={
            "HOOK_URL": "http://127.0.0.1:9/webhook", "HOOK_SECRET": SECRET})
        for number in range(5):  # not started: nothing leaves the queue
            notifier.publish(notice(incident_id=number))
        assert list(notifier.failures) == []  # recorded once the publisher yields, not on its path
        await asyncio.sleep(0)
        queued_full = [failure.notice.incident_id for failure in notifier.failures]
        assert queued_full == [2, 3, 4]
        await notifier.stop(timeout=0)
        notifier.publish(notice(incident_id=99))
        await asyncio.sleep(0)
        return notifier

    notifier = asyncio.run(scenario())
    assert [f.reason for f in notifier.failures] == ["queue full (2 notices waiting)"] * 3 + [
        "not delivered before the notifier stopped"] * 2 + ["the notifier is stopped"]


def test_an_attempt_that_gets_no_answer_times_out_and_is_retried() -> None:
    toml = one_channel(attempts=2, extra='timeout = "100ms"')

    async def scenario() -> Notifier:
        async with BlackHole() as hole:
            notifier = Notifier.from_settings(notification_settings(toml), environ={
                "HOOK_URL": hole.url("/webhook"), "HOOK_SECRET": SECRET})
            notifier.start()
            notifier.publish(notice())
            await notifier.flush()
            await notifier.stop()
            return notifier

    notifier = asyncio.run(scenario())
    [failure] = notifier.failures
    assert (failure.attempts, failure.reason) == (2, "no answer within 0.1s")


def test_backoff_doubles_up_to_the_cap_with_half_of_it_jittered_and_honours_retry_after() -> None:
    notifier = Notifier({}, [], retry=RetrySettings(max_attempts=10, first_delay=1.0, max_delay=30.0),
                        rng=random.Random(7))
    for attempt in range(1, 10):
        ceiling = min(30.0, 2.0 ** (attempt - 1))
        delays = [notifier.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered
    assert notifier.backoff(1, retry_after=12.0) == 12.0
    assert notifier.backoff(1, retry_after=3600.0) == 30.0  # a Retry-After never holds a channel past the cap


def test_a_hook_that_raises_does_not_stop_the_next_deliveries() -> None:
    def broken(failure: DeliveryFailure) -> None:
        raise RuntimeError("audit log unavailable")

    async def scenario() -> tuple[Notifier, HttpReceiver]:
        async with HttpReceiver(secret=SECRET) as receiver:
            notifier = Notifier.from_settings(notification_settings(one_channel(attempts=1)), on_failure=[broken],
                                              environ={"HOOK_URL": receiver.url("/down"), "HOOK_SECRET": SECRET})
            notifier.start()
            notifier.publish(notice(incident_id=1))
            notifier.publish(notice(incident_id=2))
            await notifier.stop()
            return notifier, receiver

    notifier, receiver = asyncio.run(scenario())
    assert len(receiver.requests["/down"]) == 2 and notifier.failed["hook"] == 2


def test_a_missing_secret_variable_is_a_config_error_naming_the_field_and_variable() -> None:
    settings = notification_settings(one_channel(), file="/etc/onguard/onguard.toml")
    with pytest.raises(ConfigError) as caught:
        Notifier.from_settings(settings, environ={"HOOK_URL": "https://example.com/hook"})
    assert caught.value.file == "/etc/onguard/onguard.toml"
    assert caught.value.field == "notifications.channels.hook.secret_env"
    assert "HOOK_SECRET" in caught.value.message


def mail_toml(port: int, security: str, ca_file: str | None) -> str:
    ca_line = f'ca_file = "{ca_file}"' if ca_file else ""
    return f"""
[notifications]
max_attempts = 1
[notifications.channels.mail]
type = "email"
host = "127.0.0.1"
port = {port}
security = "{security}"
{ca_line}
username = "onguard"
password_env = "SMTP_PASSWORD"
from = "onguard@example.com"
to = ["oncall@example.com"]
[[notifications.routes]]
channels = ["mail"]
"""


def send_mail(toml: str) -> Notifier:
    async def scenario() -> Notifier:
        notifier = Notifier.from_settings(notification_settings(toml), environ={"SMTP_PASSWORD": SMTP_PASSWORD})
        notifier.start()
        notifier.publish(notice())
        await notifier.stop()
        return notifier
    return asyncio.run(scenario())


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_mail_travels_encrypted_and_the_password_only_after_encryption(security: str, tmp_path: Path) -> None:
    """The server refuses mail and logins before TLS; the client verifies the server's certificate against the
    configured CA (a private relay's), and without that CA refuses to talk to it."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "relay-ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    tls = {"starttls": server_context} if security == "starttls" else {"tls": server_context}

    with SmtpReceiver("onguard", SMTP_PASSWORD, **tls) as mail:  # type: ignore[arg-type]
        trusted = send_mail(mail_toml(mail.port, security, str(ca_file)))
        untrusted = send_mail(mail_toml(mail.port, security, None))
        received = list(mail.messages)
    assert dict(trusted.delivered) == {"mail": 1} and list(trusted.failures) == []
    assert len(received) == 1 and mail.logins == [b"onguard"]
    [failure] = untrusted.failures
    assert failure.reason.startswith("SSLCertVerificationError")


def test_deliveries_wait_while_a_response_is_under_way_and_go_once_it_is_broadcast() -> None:
    responding = True
    looks = 0
    looked_enough = asyncio.Event()

    def response_under_way() -> bool:
        nonlocal looks
        looks += 1
        if looks == 3:
            looked_enough.set()
        return responding

    async def scenario() -> tuple[int, int]:
        nonlocal responding
        async with HttpReceiver(secret=SECRET) as receiver:
            notifier = Notifier.from_settings(notification_settings(one_channel()), hold_while=response_under_way,
                                              hold_limit=3600.0,
                                              environ={"HOOK_URL": receiver.url("/webhook"), "HOOK_SECRET": SECRET})
            notifier.start()
            notifier.publish(notice())
            await looked_enough.wait()          # the worker has looked three times and is still holding
            while_held = len(receiver.requests["/webhook"])
            responding = False                  # the pause is on the wire
            await notifier.stop()
            return while_held, len(receiver.requests["/webhook"])

    assert asyncio.run(scenario()) == (0, 1)


def test_a_hold_that_never_ends_delays_a_notice_by_at_most_the_hold_limit() -> None:
    async def scenario() -> Notifier:
        async with HttpReceiver(secret=SECRET) as receiver:
            settings = notification_settings(one_channel())
            notifier = Notifier.from_settings(settings, hold_while=lambda: True, hold_limit=0.05,
                                              environ={"HOOK_URL": receiver.url("/webhook"), "HOOK_SECRET": SECRET})
            notifier.start()
            notifier.publish(notice())
            await notifier.flush()
            await notifier.stop()
            return notifier

    assert asyncio.run(scenario()).delivered["hook"] == 1
