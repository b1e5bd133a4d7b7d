"""The daemon under test in the fault suites: the demo world's config pointed at given endpoints, the daemon run
around a body, and a bounded wait on a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onguard.chain.keys import load_guardian_account
from onguard.config import load_config
from onguard.demo.world import write_config
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV

LIMIT = 60.0  # seconds: a bound on waiting for a condition, only so a broken build fails instead of hanging


def configure(chain, tmp_path: Path, rpc_url: str, **chain_fields: str) -> Path:
    """The demo world's onguard.toml with rpc_url and further [chain] fields (TOML values, as written)."""
    path = write_config(chain.world.at(rpc_url), tmp_path, key_env=GUARDIAN_KEY_ENV, poll_interval="50ms")
    extra = "".join(f"{key} = {value}\n" for key, value in chain_fields.items())
    path.write_text(path.read_text().replace('start_block = "latest"\n', f'start_block = "latest"\n{extra}', 1))
    return path


async def until(condition: Callable[[], Any], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def running(config_path: Path, body: Callable[[Guardian], Any]) -> Guardian:
    """Runs the daemon on config_path around `body(guardian)`, then stops it cleanly."""
    config = load_config(config_path)
    guardian = Guardian(config, load_guardian_account(config.guardian_key))
    stop = asyncio.Event()
    daemon = asyncio.create_task(guardian.run(stop))
    try:
        await until(lambda: guardian.ready.is_set() or daemon.done(), "the daemon started")
        if daemon.done():
            daemon.result()
        await body(guardian)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, LIMIT)
        await guardian.close()
    return guardian
