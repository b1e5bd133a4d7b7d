"""A fault-injecting TCP proxy for tests: it stands in front of a node (an Anvil) on 127.0.0.1 and, switched at
run time by the test, passes traffic through or misbehaves as a broken endpoint does.

API (everything is safe to call from the test's thread or from inside an event loop):

    with FaultProxy(anvil.rpc_url) as proxy:      # listens on 127.0.0.1:<free port> in a thread of its own
        url = proxy.url                           # "http://127.0.0.1:PORT" (proxy.ws_url for WebSockets)
        proxy.set_mode(Mode.BLACKHOLE)            # accept, read, never answer
        proxy.set_mode(Mode.LATENCY, latency=0.5) # pass, each client chunk held back 0.5 s
        proxy.retarget(other_anvil.rpc_url)       # the same URL now leads to another node (a "replaced" chain)
        proxy.connections                         # connections accepted so far (for "was it even tried")

Modes: PASS (a byte pipe: HTTP keep-alive and WebSocket upgrades work), DROP (close at once), BLACKHOLE,
HTTP_500 (answer each HTTP request with 500), GARBAGE (answer each HTTP request with 200 and a body that is not
JSON), LATENCY (PASS with a delay). Switching the mode or the target closes every open connection, so the next
request meets the new behaviour instead of riding a kept-alive connection of the old one.

Bounded: at most `max_connections` open at once (more are closed on accept), and the proxy stops itself after
`max_lifetime` seconds, so a test that forgets it cannot leave it running. It binds to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from enum import StrEnum
from urllib.parse import urlsplit

_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024


class Mode(StrEnum):
    PASS = "pass"
    DROP = "drop"
    BLACKHOLE = "blackhole"
    HTTP_500 = "http-500"
    GARBAGE = "garbage"
    LATENCY = "latency"


class FaultProxy:
    def __init__(self, upstream_url: str, *, max_lifetime: float = 120.0, max_connections: int = 256) -> None:
        self._upstream = _host_port(upstream_url)
        self._mode = Mode.PASS
        self._latency = 0.0
        self._max_lifetime = max_lifetime
        self._max_connections = max_connections
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()
        self._lifetime: asyncio.TimerHandle | None = None
        self.port = 0
        self.connections = 0

    # ---- control (from any thread) ----

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def set_mode(self, mode: Mode, *, latency: float = 0.0) -> None:
        self._run(self._switch, mode, latency, None)

    def retarget(self, upstream_url: str) -> None:
        self._run(self._switch, self._mode, self._latency, _host_port(upstream_url))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, function, *args) -> None:  # type: ignore[no-untyped-def]
        async def call() -> None:
            function(*args)
        asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    # ---- inside the proxy's loop ----

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._lifetime = self._loop.call_later(self._max_lifetime, lambda: self._loop.create_task(self._shutdown()))

    def _switch(self, mode: Mode, latency: float, upstream: tuple[str, int] | None) -> None:
        self._mode, self._latency = mode, latency
        if upstream is not None:
            self._upstream = upstream
        for task in list(self._open):
            task.cancel()

    async def _shutdown(self) -> None:
        if self._lifetime is not None:
            self._lifetime.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if len(self._open) >= self._max_connections:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            await self._serve(self._mode, reader, writer)
        except (asyncio.CancelledError, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve(self, mode: Mode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if mode == Mode.DROP:
            return
        if mode == Mode.BLACKHOLE:
            while await reader.read(_CHUNK):
                pass
            return
        if mode in (Mode.HTTP_500, Mode.GARBAGE):
            while await _read_http_request(reader):
                if mode == Mode.HTTP_500:
                    writer.write(_http(500, "Internal Server Error", b'{"error":"upstream failure"}'))
                else:
                    writer.write(_http(200, "OK", b"<html>this is not JSON {\"jsonrpc\":"))
                await writer.drain()
            return
        host, port = self._upstream
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        latency = self._latency if mode == Mode.LATENCY else 0.0
        try:
            await asyncio.gather(_pipe(reader, upstream_writer, latency), _pipe(upstream_reader, writer, 0.0))
        finally:
            upstream_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, latency: float) -> None:
    while chunk := await source.read(_CHUNK):
        if latency:
            await asyncio.sleep(latency)
        sink.write(chunk)
        await sink.drain()
    with contextlib.suppress(OSError):
        sink.write_eof()


async def _read_http_request(reader: asyncio.StreamReader) -> bool:
    """Reads one HTTP request (head and Content-Length body); False when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    if len(head) > _MAX_HEAD:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return True


def _http(status: int, reason: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode() + body


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r} names no host and port")
    return parts.hostname, parts.port
