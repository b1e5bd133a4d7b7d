"""The daemon's tasks run supervised in one task group: a task that dies is logged and restarted while the others
go on; one that keeps dying halts the daemon loudly (DaemonHalted), after the responses under way are finished."""

from __future__ import annotations

import asyncio

import pytest

from onguard import runtime
from onguard.runtime import DaemonHalted, Guardian

from .helpers import make_guardian

pytestmark = pytest.mark.chain


def test_a_task_that_dies_once_is_restarted_and_the_daemon_goes_on(chain, guardian_config, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "RESTART_DELAY", 0.01)
    calls: list[int] = []

    async def heartbeat_dying_once(self: Guardian, stop: asyncio.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the heartbeat")
        stop.set()  # the restarted task runs: stop the daemon here

    monkeypatch.setattr(Guardian, "_heartbeat", heartbeat_dying_once)

    async def scenario() -> None:
        guardian = make_guardian(guardian_config)
        try:
            await asyncio.wait_for(guardian.run(asyncio.Event()), timeout=60)
        finally:
            await guardian.close()

    asyncio.run(scenario())
    assert len(calls) == 2
    out = capsys.readouterr().out
    assert "a daemon task died: restarting it" in out and "heartbeat" in out


def test_a_task_that_keeps_dying_halts_the_daemon_loudly(chain, guardian_config, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "RESTART_DELAY", 0.01)
    deaths: list[int] = []

    async def heartbeat_always_dying(self: Guardian, stop: asyncio.Event) -> None:
        deaths.append(1)
        raise RuntimeError("a bug in the heartbeat")

    monkeypatch.setattr(Guardian, "_heartbeat", heartbeat_always_dying)

    async def scenario() -> None:
        guardian = make_guardian(guardian_config)
        try:
            await asyncio.wait_for(guardian.run(asyncio.Event()), timeout=60)
        finally:
            await guardian.close()

    with pytest.raises(DaemonHalted, match="heartbeat"):
        asyncio.run(scenario())
    assert len(deaths) == runtime.MAX_RESTARTS + 1
    assert "HALTING the daemon" in capsys.readouterr().out
