"""A JSON-RPC proxy for tests that stands in for a node without some methods: it answers -32601 ("method not
found", as geth does) to the methods it refuses and forwards every other call, single or batched, to a real node.

    with MethodRefusingProxy(anvil.rpc_url, refuse={"eth_simulateV1"}) as proxy:
        url = proxy.url           # "http://127.0.0.1:PORT", served from a thread of its own
        proxy.refused             # calls it refused so far; proxy.forwarded: calls it passed on

It binds to 127.0.0.1 only and stops itself after `max_lifetime` seconds, so a forgotten one cannot linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterable
from typing import Any

import aiohttp
from aiohttp import web


class MethodRefusingProxy:
    def __init__(self, upstream_url: str, *, refuse: Iterable[str], max_lifetime: float = 120.0) -> None:
        self._upstream = upstream_url
        self._refuse = frozenset(refuse)
        self._max_lifetime = max_lifetime
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="refusing-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self.refused = 0
        self.forwarded = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MethodRefusingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> MethodRefusingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()
        self._loop.call_later(self._max_lifetime, lambda: self._loop.create_task(self._shutdown()))

    async def _shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        items = body if isinstance(body, list) else [body]
        answers: dict[Any, dict[str, Any]] = {}
        passed = []
        for item in items:
            if item.get("method") in self._refuse:
                self.refused += 1
                answers[item.get("id")] = {"jsonrpc": "2.0", "id": item.get("id"), "error": {
                    "code": -32601, "message": f"the method {item['method']} does not exist/is not available"}}
            else:
                passed.append(item)
        if passed:
            self.forwarded += len(passed)
            assert self._session is not None
            async with self._session.post(self._upstream, json=passed) as upstream:
                for answer in await upstream.json(content_type=None):
                    answers[answer.get("id")] = answer
        ordered = [answers[item.get("id")] for item in items]
        return web.json_response(ordered if isinstance(body, list) else ordered[0])
