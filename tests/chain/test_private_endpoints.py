"""Private submission: with a private endpoint configured (a second Anvil stands in for a builder or protect
RPC), the pause goes there first and does not appear in the public mempool; the public endpoint gets it only as
the configured fallback."""

from __future__ import annotations

import asyncio
import time

import pytest

from onguard.chain.anvil import start_anvil
from onguard.chain.keys import load_guardian_account
from onguard.chain.rpc import Rpc
from onguard.config import load_config
from onguard.demo.world import write_config
from onguard.runtime import Guardian

from ..conftest import GUARDIAN_KEY_ENV
from .helpers import ALICE, drain_slice, is_paused, tokens

pytestmark = pytest.mark.chain


def private_config(chain, tmp_path, private_url: str, fallback: str) -> object:
    path = write_config(chain.world, tmp_path, key_env=GUARDIAN_KEY_ENV)
    path.write_text(path.read_text() + f"""
[response]
public_fallback_after = {fallback}
receipt_timeout = "2s"
bump_after = "1900ms"

[[response.endpoints]]
url = "{private_url}"
private = true

[[response.endpoints]]
url = "{chain.node.rpc_url}"
private = false
""")
    return load_config(path)


def sent_hash(guardian: Guardian) -> str | None:
    for incident in guardian.store.incidents():
        for entry in guardian.store.timeline(incident.id):
            if entry.kind == "response-broadcast":
                return entry.detail["tx_hash"]
    return None


@pytest.mark.parametrize("fallback", ['"1s"', "false"])
def test_the_pause_goes_to_the_private_endpoint_first(chain, guardian_config, tmp_path, fallback):
    w3, world = chain.w3, chain.world
    with start_anvil("--fork-url", chain.node.rpc_url, "--no-mining") as private:
        config = private_config(chain, tmp_path, private.rpc_url, fallback)

        async def scenario() -> None:
            guardian = Guardian(config, load_guardian_account(config.guardian_key))
            try:
                await guardian.start()
                await guardian.step()
                for _ in range(3):
                    drain_slice(w3, world, ALICE, tokens(100_000))
                responding = asyncio.create_task(guardian.step())
                deadline = time.monotonic() + 5
                while sent_hash(guardian) is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                tx_hash = sent_hash(guardian)
                assert tx_hash is not None
                # Private first: the private endpoint holds it, the public chain has never seen it.
                assert await _known(private.rpc_url, tx_hash)
                assert not await _known(chain.node.rpc_url, tx_hash)
                await responding
                await guardian.drain_responses(timeout=10)
            finally:
                await guardian.close()

        asyncio.run(scenario())
    if fallback == "false":
        assert not is_paused(w3, world)  # never sent publicly, and the stand-in builder mines nothing
    else:
        assert is_paused(w3, world)      # the public fallback got it mined


async def _known(url: str, tx_hash: str) -> bool:
    rpc = Rpc(url)
    try:
        (answer,) = await rpc.batch([("eth_getTransactionByHash", [tx_hash])])
        return answer.get("result") is not None
    finally:
        await rpc.close()
