"""The replay's clock: a head source for `Guardian.run` that announces a block only once the replay has mined it,
and tells the replay when the daemon's block loop has finished handling it (so the next block waits for the
guardian, on a slow machine as on a fast one)."""

from __future__ import annotations

import asyncio

from onguard.sources.heads import HeadMode, take_event


class ReplayHeads:
    """`advance()` announces a new head; `idle()` is true while the block loop waits with every announced head
    handled.

    The block loop steps, then calls `wait()`. A call that finds no announcement pending means every announced
    head has been handled by a step that began after it."""

    def __init__(self) -> None:
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self.latest: int | None = None

    @property
    def mode(self) -> HeadMode:
        return HeadMode.SUBSCRIPTION  # heads are pushed to the loop, never polled for

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def wait(self, stop: asyncio.Event, timeout: float) -> bool:
        if not self._arrived.is_set():
            self._idle.set()
        arrived = await take_event(self._arrived, stop, timeout)
        self._idle.clear()  # the loop steps now
        return arrived

    def advance(self, head: int) -> None:
        self.latest = head
        self._idle.clear()
        self._arrived.set()

    def idle(self) -> bool:
        return self._idle.is_set()
