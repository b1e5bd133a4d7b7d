"""Real local receivers for the notification tests, all on 127.0.0.1: an HTTP server (aiohttp) playing the
generic webhook (it checks the HMAC signature), Slack, Discord and PagerDuty, with endpoints that fail on purpose;
a black hole that accepts connections and never answers; and an SMTP server (aiosmtpd) that keeps the mail."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every request per path. /webhook answers 401 to a bad signature; /flaky answers 500 `flaky_failures`
    times, then 200; /down always 503; /gone always 404; every other path 200 (PagerDuty's path 202). While
    `refusing`, every request is answered 503 and kept in `refused` (not in `requests`)."""

    secret: str
    flaky_failures: int = 1
    refusing: bool = False
    refused: list[Received] = field(default_factory=list)
    requests: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    rejected: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(headers=dict(request.headers), body=await request.read())
        path = request.path
        if path.startswith("/webhook"):
            expected = "sha256=" + hmac.new(self.secret.encode(), received.body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(received.headers.get("X-Onguard-Signature", ""), expected):
                self.rejected.append(received)
                return web.Response(status=401, text="bad signature")
        if self.refusing:
            self.refused.append(received)
            return web.Response(status=503, text="not now")
        self.requests[path].append(received)
        if path == "/flaky" and len(self.requests[path]) <= self.flaky_failures:
            return web.Response(status=500, text="try again")
        if path == "/down":
            return web.Response(status=503, text="down for maintenance")
        if path == "/gone":
            return web.Response(status=404, text="no_service")
        if path == "/pagerduty":
            return web.json_response({"status": "success", "message": "Event processed"}, status=202)
        return web.Response(status=200, text="ok")


class ThreadedHttpReceiver:
    """An HttpReceiver on its own event loop in another thread: for code that runs its own asyncio.run (the CLI),
    or to keep the receiver's work off the loop being measured (the benchmarks)."""

    def __init__(self, secret: str) -> None:
        self.receiver = HttpReceiver(secret=secret)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.__aenter__(), self._loop).result(timeout=30)
        return self.receiver

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.__aexit__(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


class BlackHole:
    """Accepts TCP connections, reads what is sent and never answers (a receiver that hangs)."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[None] = asyncio.Queue()  # one item per connection accepted
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> BlackHole:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def connections(self, count: int) -> None:
        """Returns once `count` connections have been accepted (each then hangs)."""
        for _ in range(count):
            await self.accepted.get()

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._writers:  # closing them ends clients blocked in a thread (smtplib) at once
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted.put_nowait(None)
        while await reader.read(65536):
            pass


class _MailKeeper:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), mail))
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 (its own thread) accepting one login; `messages` holds (from, to, parsed mail)."""

    def __init__(self, username: str, password: str, *, starttls: ssl.SSLContext | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        """`starttls`: STARTTLS is required before any mail or login; `tls`: TLS from the first byte."""
        self._keeper = _MailKeeper()
        self._credentials = (username.encode(), password.encode())
        self.logins: list[bytes] = []
        self.port = _free_port()
        # With `tls` every byte is already encrypted, but aiosmtpd only counts STARTTLS as TLS when it decides
        # whether to offer AUTH: so it is told to require TLS for logins only in the STARTTLS case.
        self._controller = Controller(self._keeper, hostname="127.0.0.1", port=self.port, ssl_context=tls,
                                      authenticator=self._authenticate, auth_require_tls=starttls is not None,
                                      tls_context=starttls, require_starttls=starttls is not None)

    @property
    def messages(self) -> list[tuple[str, list[str], EmailMessage]]:
        return self._keeper.messages

    def _authenticate(self, server: object, session: object, envelope: object, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == self._credentials:
            self.logins.append(auth_data.login)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
