"""ws:// endpoints on a real Anvil fork through the fault proxy (a TCP pipe, so it carries the WebSocket): an
endpoint whose socket drops while a call waits on it fails that call at once, and the call goes on to the next
endpoint (reads and simulation batches alike); the next call on the dropped endpoint opens a new socket."""

from __future__ import annotations

import asyncio

import pytest

from onguard.chain.transport import Role, Transport

from ..chain.helpers import until
from .proxy import Mode

pytestmark = pytest.mark.chain

HELD = 2.0  # seconds the proxy holds each chunk from the client: the handshake, then the call, wait this long
BOUND = 20.0  # a bound on the whole call, only so that a broken build fails instead of hanging (never a timing)


def on_the_socket(transport: Transport, url: str) -> bool:
    """A call is waiting on the endpoint's open socket (its message sent, its answer not come)."""
    socket = transport._sockets.get(url)
    link = socket._link if socket is not None else None
    return link is not None and bool(link.waiting)


@pytest.mark.parametrize("role", [Role.READ, Role.SIMULATE])
def test_a_socket_dropped_mid_call_fails_over_to_the_next_endpoint_at_once(chain, fault_proxy, role):
    proxy = fault_proxy(chain.node.rpc_url)
    proxy.set_mode(Mode.LATENCY, latency=HELD)
    first, second = proxy.ws_url, chain.node.ws_url
    # A deadline far beyond the bound: a call that waited for it instead of failing at the drop breaks the bound.
    if role == Role.READ:
        transport = Transport.from_urls([first, second], request_timeout=60)
    else:
        transport = Transport.from_urls([second], simulate=[first, second], request_timeout=60)

    async def scenario() -> None:
        try:
            if role == Role.READ:
                call = asyncio.ensure_future(transport.request("eth_chainId", []))
            else:
                call = asyncio.ensure_future(transport.spread_batch([("eth_chainId", []), ("eth_blockNumber", [])]))
            await until(lambda: on_the_socket(transport, first), "the call is waiting on the proxied socket", task=call)
            proxy.set_mode(Mode.PASS)  # closes every connection through the proxy: the socket drops mid-call
            async with asyncio.timeout(BOUND):
                answer = await call
            answers = answer if isinstance(answer, list) else [answer]
            assert answers[0]["result"] == hex(31337)
            dropped, answered = transport.health(role)
            assert "the WebSocket dropped" in (dropped.last_error or "") and dropped.consecutive_failures == 1
            assert answered.healthy and answered.answered == 1
            # The next call on the dropped endpoint opens a new socket through the (now passing) proxy.
            connections = proxy.connections
            (await transport.batch_on(dropped.label, [("eth_chainId", [])]))
            assert proxy.connections == connections + 1
            assert transport.health(role)[0].healthy
        finally:
            await transport.close()

    asyncio.run(scenario())
