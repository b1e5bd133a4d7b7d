"""transport.py over ws:// endpoints (chain/wsrpc.py) against a scripted JSON-RPC node on a local websockets
server: answers matched by id when they come out of order, batches answered by an array, notifications and stray
answers ignored, a drop failing every call in flight at once, a new socket on the next call, the deadline, the
health record, and a socket per event loop closed by Transport.close()."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from onguard.chain.transport import Role, Transport
from onguard.errors import ChainUnavailable, SimulationUnsupported


class WsNode:
    """Answers each JSON-RPC message (a call, or a batch as an array) with `result(call)` for each call, as
    scripted: `hold` messages gathered and then answered in reverse order, `silent` (never answers), or
    `drop_at` (the connection closed, nothing answered, once that many messages have arrived)."""

    def __init__(self, result: Callable[[dict[str, Any]], Any] = lambda call: call["method"]) -> None:
        self.result = result
        self.received: list[Any] = []
        self.connections = 0
        self.open = 0
        self.hold = 1
        self.silent = False
        self.drop_at: int | None = None
        self.before_answers: list[Any] = []  # sent on the socket before each round of answers

    def answer(self, message: Any) -> Any:
        calls = message if isinstance(message, list) else [message]
        out = []
        for call in calls:
            result = self.result(call)
            out.append({"jsonrpc": "2.0", "id": call["id"], **(result if isinstance(result, dict) and "error"
                                                                 in result else {"result": result})})
        return out[::-1] if isinstance(message, list) else out[0]  # a batch's answers out of order too

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.open += 1
        pending: list[Any] = []
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.received.append(message)
                if self.drop_at is not None and len(self.received) >= self.drop_at:
                    self.drop_at = None
                    ws.transport.abort()  # as a node that dies: no closing handshake
                    return
                if self.silent:
                    continue
                pending.append(message)
                if len(pending) < self.hold:
                    continue
                for extra in self.before_answers:
                    await ws.send(json.dumps(extra))
                for message in reversed(pending):
                    await ws.send(json.dumps(self.answer(message)))
                pending = []
        finally:
            self.open -= 1


@asynccontextmanager
async def ws_node(node: WsNode, port: int = 0, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(node.handle, "127.0.0.1", port, compression=None, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v2/SECRETKEY"


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


def test_calls_in_flight_on_one_socket_get_their_own_answers_out_of_order_and_notifications_are_ignored() -> None:
    async def scenario() -> None:
        node = WsNode(lambda call: call["params"][0])
        node.hold = 3  # three calls arrive before any answer; the answers go back last first
        node.before_answers = [
            {"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": "0x1", "result": "0xab"}},
            {"jsonrpc": "2.0", "id": 987654, "result": "an answer to no call"},
            {"jsonrpc": "2.0", "id": True, "result": "not an id of ours"},
        ]
        async with ws_node(node) as url:
            transport = Transport.from_urls([url], request_timeout=5)
            try:
                answers = await asyncio.gather(*(transport.request("echo", [word]) for word in ("a", "b", "c")))
                assert [a["result"] for a in answers] == ["a", "b", "c"]
                assert node.connections == 1  # one socket for the three
                health = transport.health(Role.READ)[0]
                assert health.answered == 3 and health.healthy and health.latency_estimate_ms is not None
                assert health.label.startswith("read#1 ws://127.0.0.1:") and "SECRETKEY" not in health.label
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_batch_goes_as_one_array_and_its_answers_come_back_in_request_order() -> None:
    async def scenario() -> None:
        node = WsNode(lambda call: call["method"])
        async with ws_node(node) as url:
            transport = Transport.from_urls([url], request_timeout=5)
            try:
                answers = await transport.batch([("first", []), ("second", []), ("third", [])])
                assert isinstance(answers, list)
                assert [a["result"] for a in answers] == ["first", "second", "third"]
                assert len(node.received) == 1 and isinstance(node.received[0], list)
                # A batch and a call in flight together, answered in reverse order: each gets its own.
                node.hold = 2
                batch, single = await asyncio.gather(transport.batch([("x", []), ("y", [])]),
                                                     transport.request("z", []))
                assert [a["result"] for a in batch] == ["x", "y"] and single["result"] == "z"  # type: ignore[index]
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_drop_fails_every_call_in_flight_at_once_and_the_next_call_opens_a_new_socket() -> None:
    async def scenario() -> None:
        node = WsNode()
        node.silent = True
        node.drop_at = 3  # two calls wait on the socket; the third message kills it
        async with ws_node(node) as url:
            # A deadline the test would notice: a call that waited for it would make this test take a minute.
            transport = Transport.from_urls([url], request_timeout=60)
            try:
                waiting = [asyncio.ensure_future(transport.request("first", [])),
                           asyncio.ensure_future(transport.request("second", []))]
                await until(lambda: len(node.received) == 2, "both calls are on the socket")
                async with asyncio.timeout(10):
                    third = await asyncio.gather(transport.request("third", []), *waiting, return_exceptions=True)
                for error in third:
                    assert isinstance(error, ChainUnavailable)
                    assert "the WebSocket dropped" in str(error) and "no answer within" not in str(error)
                health = transport.health(Role.READ)[0]
                assert health.consecutive_failures == 3 and "the WebSocket dropped" in (health.last_error or "")
                node.silent = False
                assert (await transport.request("eth_chainId", []))["result"] == "eth_chainId"
                assert node.connections == 2
                assert transport.health(Role.READ)[0].healthy
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_node_that_never_answers_costs_the_deadline_and_its_late_answer_is_dropped() -> None:
    async def scenario() -> None:
        node = WsNode()
        node.silent = True
        async with ws_node(node) as url:
            transport = Transport.from_urls([url], request_timeout=0.2)
            try:
                with pytest.raises(ChainUnavailable, match=r"no answer within 0\.2s"):
                    await transport.request("eth_blockNumber", [])
                late = node.received[0]
                node.silent = False
                # The answer to the call given up on arrives first, then the next call's: it gets its own.
                node.before_answers = [node.answer(late)]
                answer = await transport.request("eth_chainId", [])
                assert answer["result"] == "eth_chainId" and answer["id"] != late["id"]
                assert node.connections == 1  # the socket outlived the deadline
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_refused_upgrade_or_a_closed_port_is_an_endpoint_fault_and_the_read_fails_over() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return Response(503, "Service Unavailable", Headers(), b"busy")

    async def scenario() -> None:
        refusing, answering = WsNode(), WsNode()
        async with ws_node(refusing, process_request=refuse) as refused_url, ws_node(answering) as url:
            closed = "ws://127.0.0.1:1/key"
            transport = Transport.from_urls([closed, refused_url, url], request_timeout=5)
            try:
                assert (await transport.request("eth_blockNumber", []))["result"] == "eth_blockNumber"
                port_closed, upgrade_refused, good = transport.health(Role.READ)
                assert "ConnectionRefusedError" in (port_closed.last_error or "")
                assert "HTTP 503" in (upgrade_refused.last_error or "")
                assert good.healthy and refusing.connections == 0
                for health in (port_closed, upgrade_refused):
                    assert "key" not in (health.last_error or "").lower()
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_simulation_endpoint_refusing_eth_simulate_over_a_socket_is_marked_as_over_http() -> None:
    async def scenario() -> None:
        node = WsNode(lambda call: {"error": {"code": -32601, "message": "the method eth_simulateV1 does not exist"}})
        async with ws_node(node) as sim_url, ws_node(WsNode()) as read_url:
            transport = Transport.from_urls([read_url], simulate=[sim_url], request_timeout=5)
            try:
                with pytest.raises(SimulationUnsupported):
                    await transport.spread_batch([("eth_simulateV1", [{}, "latest"])])
                assert transport.health(Role.SIMULATE)[0].cannot_simulate is not None
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_raw_sends_go_over_the_socket_of_each_send_endpoint() -> None:
    async def scenario() -> None:
        accepting = WsNode(lambda call: "0x" + "11" * 32)
        refusing = WsNode(lambda call: {"error": {"code": -32000, "message": "nonce too low"}})
        async with ws_node(accepting) as good, ws_node(refusing) as bad, ws_node(WsNode()) as read_url:
            transport = Transport.from_urls([read_url], send=[(good, True), (bad, False)], request_timeout=5)
            try:
                sent = await transport.send_raw(b"\x02\xf8")
                assert sent.tx_hash == "0x" + "11" * 32
                assert len(sent.accepted) == 1 and "nonce too low" in sent.refused[0][1]
                assert accepting.received[0]["method"] == "eth_sendRawTransaction"
                assert accepting.received[0]["params"] == ["0x02f8"]
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_socket_belongs_to_its_event_loop_and_close_closes_it() -> None:
    node = WsNode()
    port = 0

    async def serve_and(test: Callable[[str], Any]) -> None:
        nonlocal port
        async with ws_node(node, port) as url:
            port = int(url.split(":")[2].split("/")[0])  # the second loop serves on the same port
            await test(url)

    transport: Transport | None = None

    async def first(url: str) -> None:
        nonlocal transport
        transport = Transport.from_urls([url], request_timeout=5)
        await transport.request("eth_chainId", [])
        assert node.open == 1
        await transport.close()
        await until(lambda: node.open == 0, "Transport.close() closed the socket")

    async def second(url: str) -> None:
        assert transport is not None
        # A new loop (a CLI command after another): the transport opens a socket in it instead of using the old.
        assert (await transport.request("eth_chainId", []))["result"] == "eth_chainId"
        await transport.close()

    asyncio.run(serve_and(first))
    asyncio.run(serve_and(second))
    assert node.connections == 2
