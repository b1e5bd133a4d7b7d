"""The daemon under test in the fault suites: the demo world's config pointed at given endpoints, and the daemon run
around a body."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onguard.demo.world import write_config
from onguard.runtime import Guardian

from ..chain.helpers import LIMIT, make_guardian, until
from ..conftest import GUARDIAN_KEY_ENV


def configure(chain, tmp_path: Path, rpc_url: str, **chain_fields: str) -> Path:
    """The demo world's onguard.toml with rpc_url and further [chain] fields (TOML values, as written)."""
    path = write_config(chain.world.at(rpc_url), tmp_path, key_env=GUARDIAN_KEY_ENV, poll_interval="50ms")
    extra = "".join(f"{key} = {value}\n" for key, value in chain_fields.items())
    path.write_text(path.read_text().replace('start_block = "latest"\n', f'start_block = "latest"\n{extra}', 1))
    return path


async def running(config_path: Path, body: Callable[[Guardian], Any]) -> Guardian:
    """Runs the daemon on config_path around `body(guardian)`, then stops it cleanly."""
    guardian = make_guardian(config_path)
    stop = asyncio.Event()
    daemon = asyncio.create_task(guardian.run(stop))
    try:
        await until(guardian.ready.is_set, "the daemon started", task=daemon)
        await body(guardian)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, LIMIT)
        await guardian.close()
    return guardian
