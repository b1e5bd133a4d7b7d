"""The [notifications] and [metrics] sections of onguard.toml → frozen settings; errors name the file and field.

config.py calls `parse_notifications(root.table("notifications", required=False))` and `parse_metrics(...)`.
Secrets (webhook URLs, routing keys, HMAC secrets, SMTP passwords) are never written in the file: the settings
hold the NAMES of environment variables, read when the notifier is built (`onguard.ops.channels.build_channels`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType

from onguard.errors import ConfigError
from onguard.ops.notice import Notice, NoticeKind
from onguard.policies.model import Severity
from onguard.tomlfields import Table
from onguard.units import parse_duration

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_METRICS_PORT = 9478
# Fields that would put a secret in the file; each channel reads its secrets from *_env fields instead.
SECRET_FIELDS = ("url", "webhook_url", "secret", "routing_key", "integration_key", "password", "token")


class ChannelType(str, Enum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    DISCORD = "discord"
    PAGERDUTY = "pagerduty"
    EMAIL = "email"


class SmtpSecurity(str, Enum):
    STARTTLS = "starttls"  # plain connection upgraded with STARTTLS (port 587)
    TLS = "tls"            # TLS from the first byte (port 465)
    NONE = "none"          # no encryption: only for a relay on this machine


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    name: str
    url_env: str
    secret_env: str  # the HMAC-SHA256 key for X-Onguard-Signature


@dataclass(frozen=True, slots=True)
class ChatSpec:
    """A Slack or Discord incoming webhook (the URL is the secret)."""

    name: str
    type: ChannelType
    url_env: str


@dataclass(frozen=True, slots=True)
class PagerDutySpec:
    name: str
    routing_key_env: str
    events_url: str
    source: str  # payload.source: which guardian is speaking (a host or deployment name)


@dataclass(frozen=True, slots=True)
class EmailSpec:
    name: str
    host: str
    port: int
    security: SmtpSecurity
    sender: str
    recipients: tuple[str, ...]
    username: str | None
    password_env: str | None
    ca_file: Path | None  # trust this CA (a private relay's) instead of the system's


ChannelSpec = WebhookSpec | ChatSpec | PagerDutySpec | EmailSpec


@dataclass(frozen=True, slots=True)
class Route:
    """Which notices a set of channels receives; an absent filter matches everything."""

    channels: tuple[str, ...]
    severities: frozenset[Severity] | None
    policies: frozenset[str] | None
    kinds: frozenset[NoticeKind] | None
    field: str  # where it is written (e.g. "notifications.routes[1]"), for errors found later

    def matches(self, notice: Notice) -> bool:
        return ((self.severities is None or notice.severity in self.severities)
                and (self.policies is None or notice.policy_id in self.policies)
                and (self.kinds is None or notice.kind in self.kinds))


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int   # including the first
    first_delay: float  # seconds before the second attempt; doubles each time, with jitter
    max_delay: float


@dataclass(frozen=True, slots=True)
class NotificationSettings:
    file: str
    channels: Mapping[str, ChannelSpec]
    routes: tuple[Route, ...]
    retry: RetrySettings
    timeout: float      # per attempt
    queue_size: int     # notices waiting per channel before new ones are refused (and recorded as failures)

    @property
    def enabled(self) -> bool:
        return bool(self.channels) and bool(self.routes)

    def check_policies(self, policy_ids: set[str] | frozenset[str]) -> None:
        """Raises ConfigError for a route naming a policy that is not loaded (a typo would silence a page)."""
        for route in self.routes:
            for policy in sorted((route.policies or frozenset()) - set(policy_ids)):
                raise ConfigError(f"no policy {policy!r} is loaded", file=self.file, field=f"{route.field}.policies",
                                  hint=f"loaded policies: {', '.join(sorted(policy_ids)) or 'none'}")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool
    host: str
    port: int
    lag_budget: int       # blocks behind the head still counted as following the chain
    stale_after: float    # seconds without a successful head poll before the daemon is not ready
    require_preflight: bool
    alert_after: float = 120.0  # seconds not ready before a chain_health notice is published


def parse_notifications(table: Table | None) -> NotificationSettings:
    """Reads [notifications]; None (no section) gives settings with no channel, which deliver nothing."""
    if table is None:
        table = Table({}, file="", prefix="notifications", error=ConfigError)
    channels = _channels(table)
    routes = _routes(table, channels)
    retry = RetrySettings(
        max_attempts=table.get("max_attempts", int, default=5),
        first_delay=table.parsed("first_retry", parse_duration, default=1.0),
        max_delay=table.parsed("max_retry", parse_duration, default=60.0),
    )
    if retry.max_attempts < 1:
        raise table.fail("max_attempts", "must be at least 1")
    if retry.max_delay < retry.first_delay:
        raise table.fail("max_retry", "is shorter than first_retry")
    settings = NotificationSettings(
        file=table.file, channels=channels, routes=routes, retry=retry,
        timeout=table.parsed("timeout", parse_duration, default=10.0),
        queue_size=table.get("queue_size", int, default=1000),
    )
    if settings.timeout <= 0:
        raise table.fail("timeout", "must be more than 0")
    if settings.queue_size < 1:
        raise table.fail("queue_size", "must be at least 1")
    if channels and not routes:
        raise table.fail("routes", "channels are defined but no route sends anything to them",
                         "add [[notifications.routes]] with channels = [...] (and severities/policies filters)")
    table.finish()
    return settings


def _channels(table: Table) -> Mapping[str, ChannelSpec]:
    section = table.table("channels", required=False)
    if section is None:
        return MappingProxyType({})
    channels: dict[str, ChannelSpec] = {}
    for name in section.keys():
        if not CHANNEL_NAME.match(name):
            raise section.fail(name, "is not a channel name", "use letters, digits, '-' and '_'")
        entry = section.table(name)
        assert entry is not None
        channels[name] = _channel(name, entry)
        entry.finish()
    section.finish()
    return MappingProxyType(channels)


def _channel(name: str, entry: Table) -> ChannelSpec:
    for secret in SECRET_FIELDS:
        if entry.has(secret):
            raise entry.fail(secret, "a secret must never be written in the config file",
                             "put it in an environment variable and name the variable in the matching *_env field "
                             "(url_env, secret_env, routing_key_env or password_env)")
    kind = entry.parsed("type", ChannelType, hint="one of: " + ", ".join(t.value for t in ChannelType))
    if kind is ChannelType.WEBHOOK:
        return WebhookSpec(name=name, url_env=_env(entry, "url_env"), secret_env=_env(entry, "secret_env"))
    if kind in (ChannelType.SLACK, ChannelType.DISCORD):
        return ChatSpec(name=name, type=kind, url_env=_env(entry, "url_env"))
    if kind is ChannelType.PAGERDUTY:
        events_url = entry.get("events_url", str, default=PAGERDUTY_EVENTS_URL)
        if not events_url.startswith(("https://", "http://")):
            raise entry.fail("events_url", f"{events_url!r} is not an http(s) URL")
        return PagerDutySpec(name=name, routing_key_env=_env(entry, "routing_key_env"), events_url=events_url,
                             source=entry.get("source", str, default="onguard"))
    return _email(name, entry)


def _email(name: str, entry: Table) -> EmailSpec:
    security = entry.parsed("security", SmtpSecurity, default=SmtpSecurity.STARTTLS,
                            hint="starttls (port 587), tls (port 465) or none (a relay on this machine only)")
    host = entry.get("host", str, hint="the SMTP server, e.g. smtp.example.com")
    default_port = {SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465, SmtpSecurity.NONE: 25}[security]
    port = entry.get("port", int, default=default_port)
    if not 0 < port < 65536:
        raise entry.fail("port", f"{port} is not a TCP port")
    recipients = entry.get("to", list, hint="a list of addresses, e.g. to = [\"oncall@example.com\"]")
    if not recipients or not all(isinstance(item, str) and "@" in item for item in recipients):
        raise entry.fail("to", "must be a non-empty list of e-mail addresses")
    username = entry.get("username", str, default=None)
    password_env = _env(entry, "password_env") if entry.has("password_env") else None
    if password_env is not None and security is SmtpSecurity.NONE and not is_loopback(host):
        raise entry.fail("security", "a password would cross the network unencrypted",
                         "use security = \"starttls\" or \"tls\"")
    sender = entry.get("from", str, hint="the sender address, e.g. from = \"onguard@example.com\"")
    if "@" not in sender:
        raise entry.fail("from", f"{sender!r} is not an e-mail address")
    ca_file = entry.get("ca_file", str, default=None,
                        hint="a PEM file with the CA that signed the server's certificate")
    if ca_file is not None and security is SmtpSecurity.NONE:
        raise entry.fail("ca_file", "is given but security = \"none\" uses no TLS", "use starttls or tls")
    return EmailSpec(name=name, host=host, port=port, security=security, sender=sender,
                     recipients=tuple(recipients), username=username, password_env=password_env,
                     ca_file=None if ca_file is None else _resolve(entry, ca_file))


def _routes(table: Table, channels: Mapping[str, ChannelSpec]) -> tuple[Route, ...]:
    entries = table.get("routes", list, default=[], hint="write [[notifications.routes]] tables")
    routes = []
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise table.fail("routes", f"entry {index} is not a table", "write [[notifications.routes]] tables")
        entry = Table(raw, file=table.file, prefix=f"{table.field_name('routes')}[{index}]", error=ConfigError)
        names = _strings(entry, "channels", required=True)
        assert names is not None
        for name in names:
            if name not in channels:
                raise entry.fail("channels", f"no channel named {name!r}",
                                 f"channels: {', '.join(channels) or 'none (add [notifications.channels.NAME])'}")
        severities = _strings(entry, "severities")
        kinds = _strings(entry, "kinds")
        policies = _strings(entry, "policies")
        routes.append(Route(
            channels=tuple(dict.fromkeys(names)),
            severities=_members(entry, "severities", severities, Severity),
            policies=frozenset(policies) if policies is not None else None,
            kinds=_members(entry, "kinds", kinds, NoticeKind),
            field=entry.field_name("").rstrip("."),
        ))
        entry.finish()
    return tuple(routes)


def _strings(entry: Table, key: str, *, required: bool = False) -> tuple[str, ...] | None:
    values = entry.get(key, list, **({} if required else {"default": None}))
    if values is None:
        return None
    if not values or not all(isinstance(value, str) for value in values):
        raise entry.fail(key, "must be a non-empty list of strings", "leave it out to match everything")
    return tuple(values)


def _members(entry: Table, key: str, values: tuple[str, ...] | None, enum: type[Enum]) -> frozenset | None:
    if values is None:
        return None
    known = [member.value for member in enum]  # type: ignore[attr-defined]
    for value in values:
        if value not in known:
            raise entry.fail(key, f"{value!r} is not one of {', '.join(known)}")
    return frozenset(enum(value) for value in values)


def _env(entry: Table, key: str) -> str:
    name = entry.get(key, str, hint="the NAME of an environment variable holding the secret")
    if not ENV_NAME.match(name):
        # Never echo it: a value here that is not a variable name is most likely the pasted secret itself.
        raise entry.fail(key, "must be the NAME of an environment variable (e.g. ONGUARD_SLACK_URL), not the secret",
                         "put the secret in that variable, never in the config file")
    return name


def _resolve(entry: Table, value: str) -> Path:
    """A path as written, relative ones from the config file's folder (as config.py does)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(entry.file).parent / path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_metrics(table: Table | None) -> MetricsSettings:
    """Reads [metrics]; None (no section) gives the defaults with the endpoint off; a section turns it on unless
    it says enabled = false."""
    present = table is not None
    if table is None:
        table = Table({}, file="", prefix="metrics", error=ConfigError)
    settings = MetricsSettings(
        enabled=table.get("enabled", bool, default=present),
        host=table.get("host", str, default="127.0.0.1",
                       hint="the address to listen on; 127.0.0.1 keeps it on this machine"),
        port=table.get("port", int, default=DEFAULT_METRICS_PORT),
        lag_budget=table.get("lag_budget", int, default=3),
        stale_after=table.parsed("stale_after", parse_duration, default=60.0),
        require_preflight=table.get("require_preflight", bool, default=True),
        alert_after=table.parsed("alert_after", parse_duration, default=120.0),
    )
    if not 0 <= settings.port < 65536:
        raise table.fail("port", f"{settings.port} is not a TCP port", "0 picks a free port (tests)")
    if settings.lag_budget < 0:
        raise table.fail("lag_budget", "must be 0 or more blocks")
    if settings.stale_after <= 0:
        raise table.fail("stale_after", "must be more than 0")
    table.finish()
    return settings


DEFAULT_DASHBOARD_PORT = 9479


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    enabled: bool
    host: str
    port: int
    token_env: str | None  # the environment variable holding the token a viewer must present (None: no token)
    refresh: float         # seconds between the page's reloads


def parse_dashboard(table: Table | None) -> DashboardSettings:
    """Reads [dashboard]; None (no section) leaves it off; a section turns it on unless it says enabled = false."""
    present = table is not None
    if table is None:
        table = Table({}, file="", prefix="dashboard", error=ConfigError)
    for key in ("token", "password"):
        if table.has(key):
            raise table.fail(key, "secrets are never written in onguard.toml",
                             "put it in an environment variable and name it: token_env = \"ONGUARD_DASHBOARD_TOKEN\"")
    token_env = table.get("token_env", str, default=None)
    if token_env is not None and not ENV_NAME.match(token_env):
        raise table.fail("token_env", f"{token_env!r} is not an environment variable name")
    settings = DashboardSettings(
        enabled=table.get("enabled", bool, default=present),
        host=table.get("host", str, default="127.0.0.1",
                       hint="the address to listen on; 127.0.0.1 keeps it on this machine"),
        port=table.get("port", int, default=DEFAULT_DASHBOARD_PORT),
        token_env=token_env,
        refresh=table.parsed("refresh", parse_duration, default=5.0),
    )
    if not 0 <= settings.port < 65536:
        raise table.fail("port", f"{settings.port} is not a TCP port", "0 picks a free port (tests)")
    if settings.refresh <= 0:
        raise table.fail("refresh", "must be more than 0")
    if settings.enabled and not is_loopback(settings.host) and token_env is None:
        raise table.fail("host", f"{settings.host} is reachable from other machines and no token_env is set",
                         "keep host = \"127.0.0.1\", or set token_env so viewers must present a token")
    table.finish()
    return settings
