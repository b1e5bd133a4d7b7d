"""Carries JSON-RPC calls to one endpoint over one persistent WebSocket, several calls in flight at once.

The Transport uses it for ws:// and wss:// endpoints (it picks by scheme); deadlines, throttles, health and
failover stay the Transport's. This module only opens the socket when a call first needs it (and again after it
dropped), sends each call's message, and hands each answer to its caller by JSON-RPC id (a batch is answered by
one array: it goes to the call that holds those ids). A message without a known id is not an answer to anything
waiting here (a subscription notification, or an answer to a call that gave up) and is dropped. When the socket
drops, every call waiting on it fails at once with WebSocketFault; the next call opens a new socket.

Why a socket: on the hot path (the pause's eth_sendRawTransaction, the pending transaction's simulation) an
already-open WebSocket saves the HTTP request framing and connection-pool work of every call (see
bench/transport_ws.py for the figures).

A socket belongs to the event loop it was opened in; the Transport keeps one client per URL per loop. Nothing here
logs, and no error text carries the URL (it may hold an API key): the Transport names the endpoint by its label.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

PING_INTERVAL = 5.0  # seconds between pings, as the mempool source: a silently dead link is noticed within ~10 s
CLOSE_TIMEOUT = 0.5  # seconds allowed for the closing handshake, so closing stays prompt


class WebSocketFault(Exception):
    """The socket could not be opened, or dropped before the answer came: this endpoint gave no answer."""


class _Link:
    """One open socket, its reader, and the calls waiting on it (by JSON-RPC id; a batch under each of its ids)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.lost: str | None = None  # why it closed, once it has
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                try:
                    body = json.loads(message)
                except ValueError:
                    continue  # not JSON: nothing waiting can be its answer (its caller's deadline still runs)
                self._deliver(body)
            self.lost = _closed(self.ws, None)
        except ConnectionClosed as exc:
            self.lost = _closed(self.ws, exc)
        except asyncio.CancelledError:
            self.lost = "the WebSocket was closed by onguard"
            raise
        finally:
            self.lost = self.lost or "the WebSocket reader stopped"
            waiting, self.waiting = self.waiting, {}
            for future in waiting.values():  # a batch is under several ids: set once
                if not future.done():
                    future.set_exception(WebSocketFault(self.lost))

    def _deliver(self, body: Any) -> None:
        if isinstance(body, list):  # a batch's answer: the call that holds any of its ids
            key = next((item.get("id") for item in body
                        if isinstance(item, dict) and _is_id(item.get("id")) and item.get("id") in self.waiting), None)
        elif isinstance(body, dict):
            key = body.get("id")
        else:
            return
        future = self.waiting.get(key) if _is_id(key) else None
        if future is not None and not future.done():
            future.set_result(body)

    async def call(self, message: bytes, ids: Sequence[int]) -> Any:
        if self.lost is not None:
            raise WebSocketFault(self.lost)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        for i in ids:
            self.waiting[i] = future
        try:
            try:
                await self.ws.send(message, text=True)  # UTF-8 JSON as a text frame, as nodes expect
            except ConnectionClosed as exc:
                raise WebSocketFault(_closed(self.ws, exc)) from None
            return await future
        finally:
            for i in ids:
                self.waiting.pop(i, None)  # answered, failed or given up: a late answer finds no one and is dropped
            if future.done() and not future.cancelled():
                future.exception()  # seen: the reader may have failed it while the send was failing too

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


class WebSocketRpc:
    """JSON-RPC over one WebSocket URL, opened on first use and reopened on the first call after a drop."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._link: _Link | None = None
        self._opening = asyncio.Lock()  # calls arriving while the socket opens wait for that one socket

    async def call(self, message: bytes, ids: Sequence[int]) -> Any:
        """Sends one JSON-RPC message (a call, or a batch as an array) and returns the parsed answer: the object
        with the call's id, or the array holding the batch's ids. No deadline here: the caller sets one (a call
        given up on is forgotten; its answer, if it comes, is dropped). Raises WebSocketFault."""
        link = self._link
        if link is None or link.lost is not None:
            link = await self._open()
        return await link.call(message, ids)

    async def _open(self) -> _Link:
        async with self._opening:
            if self._link is not None and self._link.lost is None:
                return self._link  # another call opened it meanwhile
            try:
                # proxy=None as the HTTP path (aiohttp ignores proxy variables unless told); no size limit, as
                # the HTTP path reads any body (a large simulation answer must not kill the socket); no
                # open_timeout: the caller's deadline bounds the opening too.
                ws = await websockets.connect(self._url, compression=None, max_size=None, proxy=None,
                                              open_timeout=None, ping_interval=PING_INTERVAL,
                                              ping_timeout=PING_INTERVAL, close_timeout=CLOSE_TIMEOUT)
            except InvalidURI:
                raise WebSocketFault("the WebSocket URL is not valid") from None  # its text would show the URL
            except WebSocketException as exc:
                raise WebSocketFault(f"the WebSocket could not be opened: {type(exc).__name__}: {exc}") from None
            self._link = _Link(ws)
            return self._link

    async def close(self) -> None:
        """Closes the socket (calls waiting on it fail); a later call opens a new one."""
        link, self._link = self._link, None
        if link is not None:
            await link.close()


def _is_id(value: Any) -> bool:
    return type(value) is int  # the Transport's ids are ints (and JSON true must not pass for id 1)


def _closed(ws: ClientConnection, exc: ConnectionClosed | None) -> str:
    """Why a socket closed, in words without the URL."""
    if exc is None:
        return f"the WebSocket was closed (code {ws.close_code})"
    return f"the WebSocket dropped: {exc}"
