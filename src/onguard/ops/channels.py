"""Delivering one notice to one place: a signed generic webhook, Slack, Discord, PagerDuty Events v2, SMTP e-mail.

A channel makes one attempt; retries belong to the notifier. A failed attempt raises DeliveryError, whose
reason never contains a secret (URLs of chat webhooks are secrets: their text is scrubbed from every error).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from onguard import __version__
from onguard.errors import ConfigError
from onguard.ops.messages import discord_message, email_message, pagerduty_event, slack_message, webhook_body
from onguard.ops.notice import SCHEMA, Notice
from onguard.ops.settings import (
    ChannelSpec,
    ChannelType,
    ChatSpec,
    EmailSpec,
    NotificationSettings,
    PagerDutySpec,
    SmtpSecurity,
    WebhookSpec,
)

SIGNATURE_HEADER = "X-Onguard-Signature"
RETRYABLE_STATUSES = frozenset({408, 425, 429})  # and every 5xx
USER_AGENT = f"onguard/{__version__}"


class DeliveryError(Exception):
    """One attempt failed. `retryable`: a later attempt may succeed (network, 5xx, 429); otherwise the receiver
    refused the message itself (bad URL, bad key, 4xx) and repeating it would not help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    name: str

    async def deliver(self, notice: Notice) -> None: ...

    async def close(self) -> None: ...


def sign(body: bytes, secret: str) -> str:
    """The X-Onguard-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Scrubber:
    """Removes secrets (and the path of secret URLs, where chat webhooks keep their token) from error text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        parts: set[str] = set()
        for secret in secrets:
            parts.add(secret)
            split = urlsplit(secret)
            if split.scheme and split.path not in ("", "/"):
                parts.add(split.path + (f"?{split.query}" if split.query else ""))
        self._parts = sorted((part for part in parts if len(part) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for part in self._parts:
            text = text.replace(part, "***")
        return text


class HttpChannel:
    """POSTs a JSON body and accepts any 2xx; the shape of the body is the subclass's business."""

    content_type = "application/json"

    def __init__(self, name: str, url: str, *, timeout: float, secrets: Iterable[str] = ()) -> None:
        self.name = name
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._scrub = Scrubber([url, *secrets])
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # the URL is a secret for chat webhooks: never in a repr
        return f"{type(self).__name__}({self.name!r})"

    def body(self, notice: Notice) -> bytes:
        raise NotImplementedError

    def headers(self, notice: Notice, body: bytes) -> dict[str, str]:
        return {}

    async def deliver(self, notice: Notice) -> None:
        body = self.body(notice)
        headers = {"Content-Type": self.content_type, "User-Agent": USER_AGENT, **self.headers(notice, body)}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._url, data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return
                answer = (await response.text(errors="replace"))[:200].strip()
                raise DeliveryError(
                    self._scrub(f"HTTP {response.status}" + (f": {answer}" if answer else "")),
                    retryable=response.status >= 500 or response.status in RETRYABLE_STATUSES,
                    retry_after=_seconds(response.headers.get("Retry-After")))
        except TimeoutError:
            raise DeliveryError(f"no answer within {self._timeout.total:g}s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(self._scrub(f"{type(exc).__name__}: {exc}"), retryable=True) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class WebhookChannel(HttpChannel):
    """The generic webhook: schema onguard.notice.v1, signed with HMAC-SHA256 so the receiver can trust it."""

    def __init__(self, name: str, url: str, secret: str, *, timeout: float) -> None:
        super().__init__(name, url, timeout=timeout, secrets=[secret])
        self._secret = secret

    def body(self, notice: Notice) -> bytes:
        return webhook_body(notice)

    def headers(self, notice: Notice, body: bytes) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(body, self._secret), "X-Onguard-Schema": SCHEMA,
                "X-Onguard-Notice": notice.id}


class SlackChannel(HttpChannel):
    def body(self, notice: Notice) -> bytes:
        return json.dumps(slack_message(notice), ensure_ascii=False).encode()


class DiscordChannel(HttpChannel):
    def body(self, notice: Notice) -> bytes:
        return json.dumps(discord_message(notice), ensure_ascii=False).encode()


class PagerDutyChannel(HttpChannel):
    def __init__(self, name: str, events_url: str, routing_key: str, source: str, *, timeout: float) -> None:
        super().__init__(name, events_url, timeout=timeout, secrets=[routing_key])
        self._routing_key = routing_key
        self._source = source

    def body(self, notice: Notice) -> bytes:
        event = pagerduty_event(notice, routing_key=self._routing_key, source=self._source)
        return json.dumps(event, ensure_ascii=False).encode()


class EmailChannel:
    """SMTP with the standard library, in a worker thread so the event loop never waits on the mail server."""

    def __init__(self, spec: EmailSpec, password: str | None, *, timeout: float) -> None:
        self.name = spec.name
        self._spec = spec
        self._password = password
        self._timeout = timeout
        self._scrub = Scrubber([password] if password else [])

    def __repr__(self) -> str:
        return f"EmailChannel({self.name!r})"

    async def deliver(self, notice: Notice) -> None:
        message = email_message(notice, sender=self._spec.sender, recipients=self._spec.recipients)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: object) -> None:
        spec = self._spec
        try:
            if spec.security is SmtpSecurity.TLS:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(spec.host, spec.port, timeout=self._timeout,
                                                      context=self._tls())
            else:
                smtp = smtplib.SMTP(spec.host, spec.port, timeout=self._timeout)
            with smtp:
                if spec.security is SmtpSecurity.STARTTLS:
                    smtp.starttls(context=self._tls())
                if spec.username is not None:
                    smtp.login(spec.username, self._password or "")
                smtp.send_message(message)  # type: ignore[arg-type]
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"every recipient refused: {', '.join(exc.recipients)}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise DeliveryError(self._scrub(f"SMTP {exc.smtp_code}: {text}"),
                                retryable=400 <= exc.smtp_code < 500) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(self._scrub(f"{type(exc).__name__}: {exc}"), retryable=True) from None

    def _tls(self) -> ssl.SSLContext:
        ca_file = self._spec.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)

    async def close(self) -> None:
        return None


def build_channels(settings: NotificationSettings, environ: Mapping[str, str]) -> dict[str, Channel]:
    """Channels with their secrets read from the environment; a missing variable is a ConfigError naming it."""
    return {name: _build(spec, settings, environ) for name, spec in settings.channels.items()}


def _build(spec: ChannelSpec, settings: NotificationSettings, environ: Mapping[str, str]) -> Channel:
    def secret(field: str, variable: str) -> str:
        value = environ.get(variable, "")
        if not value:
            raise ConfigError(f"environment variable {variable} is not set", file=settings.file,
                              field=f"notifications.channels.{spec.name}.{field}",
                              hint=f"export {variable} before starting onguard (it holds a secret, so it is "
                                   "never written in the config file)")
        return value

    timeout = settings.timeout
    if isinstance(spec, WebhookSpec):
        return WebhookChannel(spec.name, _url(secret("url_env", spec.url_env), spec, settings),
                              secret("secret_env", spec.secret_env), timeout=timeout)
    if isinstance(spec, ChatSpec):
        url = _url(secret("url_env", spec.url_env), spec, settings)
        chat = SlackChannel if spec.type is ChannelType.SLACK else DiscordChannel
        return chat(spec.name, url, timeout=timeout)
    if isinstance(spec, PagerDutySpec):
        return PagerDutyChannel(spec.name, spec.events_url, secret("routing_key_env", spec.routing_key_env),
                                spec.source, timeout=timeout)
    password = secret("password_env", spec.password_env) if spec.password_env else None
    if spec.ca_file is not None and not spec.ca_file.is_file():
        raise ConfigError(f"CA file {spec.ca_file} not found", file=settings.file,
                          field=f"notifications.channels.{spec.name}.ca_file",
                          hint="give the PEM file of the CA that signed the SMTP server's certificate")
    return EmailChannel(spec, password, timeout=timeout)


def _url(value: str, spec: WebhookSpec | ChatSpec, settings: NotificationSettings) -> str:
    if not value.startswith(("https://", "http://")):
        raise ConfigError(f"environment variable {spec.url_env} does not hold an http(s) URL", file=settings.file,
                          field=f"notifications.channels.{spec.name}.url_env",
                          hint="set it to the webhook URL the service gave you")
    return value


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the back-off applies instead
