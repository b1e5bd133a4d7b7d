"""Wakes the block loop when a new head arrives: by an `eth_subscribe("newHeads")` WebSocket subscription when a
ws_url is configured (raw `websockets`, as the mempool source reads pending transactions), and by polling the
head through the transport when there is none or while the subscription is down."""

from __future__ import annotations

import asyncio
import contextlib
import json
from enum import StrEnum
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

from onguard.chain.rpc import Rpc
from onguard.errors import ChainError
from onguard.log import get_logger

OPEN_TIMEOUT = 5.0
PING_INTERVAL = 10.0


class HeadMode(StrEnum):
    SUBSCRIPTION = "subscription"
    POLL = "poll"


class HeadFollower:
    """`run()` follows the head until stopped; `wait()` returns as soon as a head newer than the last one the
    caller saw has arrived (or the timeout passes)."""

    def __init__(self, ws_url: str | None, rpc: Rpc, *, poll_interval: float, chain_id: int,
                 reconnect_delay: float = 0.5, max_reconnect_delay: float = 10.0) -> None:
        self._ws_url = ws_url
        self._rpc = rpc
        self._poll_interval = poll_interval
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max(reconnect_delay, max_reconnect_delay)
        self._arrived = asyncio.Event()
        self._subscribed = False
        self.latest: int | None = None
        self.notifications = 0  # heads delivered by the subscription (how new heads are really arriving)
        self._log = get_logger(component="heads", chain_id=chain_id)

    @property
    def mode(self) -> HeadMode:
        return HeadMode.SUBSCRIPTION if self._subscribed else HeadMode.POLL

    async def wait(self, stop: asyncio.Event, timeout: float) -> bool:
        """True when a new head arrived since the last wait() (possibly while the caller was busy), False after
        `timeout` or once `stop` is set."""
        return await take_event(self._arrived, stop, timeout)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.ensure_future(self._poll_while_unsubscribed())]
        if self._ws_url is not None:
            tasks.append(asyncio.ensure_future(self._subscribe_for_ever(self._ws_url)))
        else:
            self._log.info("following new heads", mode=HeadMode.POLL, interval=self._poll_interval)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._subscribed = False

    def _saw(self, head: int) -> None:
        if self.latest is None or head != self.latest:
            self.latest = head
            self._arrived.set()

    async def _poll_while_unsubscribed(self) -> None:
        while True:
            if not self._subscribed:
                with contextlib.suppress(ChainError):  # the block loop reports an unreachable chain
                    self._saw(await self._rpc.head())
            await asyncio.sleep(self._poll_interval)

    async def _subscribe_for_ever(self, url: str) -> None:
        delay = self._reconnect_delay
        announced_failure = False
        while True:
            try:
                async with websockets.connect(url, open_timeout=OPEN_TIMEOUT, ping_interval=PING_INTERVAL,
                                              ping_timeout=PING_INTERVAL, compression=None) as ws:
                    subscription = await _subscribe(ws)
                    self._subscribed, delay = True, self._reconnect_delay
                    self._log.info("following new heads", mode=HeadMode.SUBSCRIPTION,
                                   restored=announced_failure)
                    announced_failure = False
                    await self._read(ws, subscription)
            except (WebSocketException, InvalidURI, OSError, TimeoutError, ValueError, KeyError,
                    TypeError) as exc:
                error = _describe(exc)
            was_subscribed, self._subscribed = self._subscribed, False
            if was_subscribed or not announced_failure:
                self._log.warning("new-heads subscription down: polling the head meanwhile", error=error,
                                  poll_interval=self._poll_interval, retry_in=delay)
                announced_failure = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_reconnect_delay)

    async def _read(self, ws: ClientConnection, subscription: str) -> None:
        while True:
            message = json.loads(await ws.recv())
            params = message.get("params") if isinstance(message, dict) else None
            if not isinstance(params, dict) or params.get("subscription") != subscription:
                continue
            header = params.get("result")
            if isinstance(header, dict) and isinstance(header.get("number"), str):
                self.notifications += 1
                self._saw(int(header["number"], 16))


async def _subscribe(ws: ClientConnection) -> str:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
    async with asyncio.timeout(OPEN_TIMEOUT):
        while True:
            answer: Any = json.loads(await ws.recv())
            if not isinstance(answer, dict) or answer.get("id") != 1:
                continue
            if answer.get("error") is not None or not isinstance(answer.get("result"), str):
                raise ValueError(f"eth_subscribe(newHeads) refused: {answer.get('error')}")
            return answer["result"]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"the WebSocket upgrade was answered with HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"


async def take_event(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> bool:
    """Waits until `event` is set, `stop` is set or `timeout` passes; True (and `event` cleared) when it was set,
    even before the call."""
    if not event.is_set():
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    arrived = event.is_set()
    event.clear()
    return arrived
