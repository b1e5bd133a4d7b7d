"""transport.py against a scripted JSON-RPC node (aiohttp, in the test's loop) and the fault proxy: failover to
the next read endpoint, a deadline per call, no retry unless the policy asks for one, a throttle per endpoint,
and raw sends to several endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from onguard.chain.transport import Role, RetryPolicy, Transport, endpoint_label, redacted_url
from onguard.errors import ChainError, ChainUnavailable
from tests.faults.proxy import FaultProxy, Mode
from served import served

Answer = Callable[[dict[str, Any]], Any]  # a request → a JSON-RPC result, or web.Response to send as is


class FakeNode:
    """Answers JSON-RPC with `answer` and counts what it was asked."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.arrived_at: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        items = body if isinstance(body, list) else [body]
        out = []
        for item in items:
            self.requests.append(item)
            self.arrived_at.append(time.monotonic())
            result = self.answer(item)
            if isinstance(result, web.Response):
                return result
            out.append(result if isinstance(result, dict) and "error" in result
                       else {"jsonrpc": "2.0", "id": item["id"], "result": result})
        for response, item in zip(out, items):
            response.setdefault("id", item["id"])
            response.setdefault("jsonrpc", "2.0")
        return web.json_response(out if isinstance(body, list) else out[0])


@asynccontextmanager
async def fake_node(answer: Answer) -> AsyncIterator[tuple[FakeNode, str]]:
    node = FakeNode(answer)
    async with served(node.handle) as url:
        yield node, url


def head_is(number: int) -> Answer:
    return lambda request: hex(number)


def test_a_black_holed_first_endpoint_fails_over_within_the_deadline_and_is_demoted() -> None:
    async def scenario() -> None:
        async with fake_node(head_is(7)) as (node, url):
            with FaultProxy(url) as hole:
                hole.set_mode(Mode.BLACKHOLE)
                transport = Transport.from_urls([hole.url, url], request_timeout=0.3)
                try:
                    assert (await transport.request("eth_blockNumber", []))["result"] == "0x7"
                    first, second = transport.health(Role.READ)
                    assert first.consecutive_failures == 1 and "no answer within 0.3s" in (first.last_error or "")
                    assert second.healthy and second.last_success_at is not None
                    # Demoted: the next call goes straight to the healthy endpoint.
                    await transport.request("eth_blockNumber", [])
                    assert hole.connections == 1
                    assert len(node.requests) == 2
                finally:
                    await transport.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", [Mode.DROP, Mode.HTTP_500, Mode.GARBAGE])
def test_a_broken_endpoint_is_a_fault_and_the_next_one_answers(mode: Mode) -> None:
    async def scenario() -> None:
        async with fake_node(head_is(9)) as (_, url):
            with FaultProxy(url) as broken:
                broken.set_mode(mode)
                transport = Transport.from_urls([broken.url, url], request_timeout=5)
                try:
                    assert (await transport.request("eth_blockNumber", []))["result"] == "0x9"
                    assert transport.health(Role.READ)[0].consecutive_failures == 1
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_a_hung_single_endpoint_raises_at_its_deadline_naming_it_not_the_url_path() -> None:
    async def scenario() -> None:
        async with fake_node(head_is(1)) as (_, url):
            with FaultProxy(url) as hole:
                hole.set_mode(Mode.BLACKHOLE)
                transport = Transport.from_urls([hole.url + "/secret-api-key"], request_timeout=0.2)
                try:
                    with pytest.raises(ChainUnavailable) as caught:
                        await transport.request("eth_blockNumber", [])
                    assert "no answer within 0.2s" in caught.value.message
                    assert "secret-api-key" not in caught.value.message
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_a_json_rpc_error_is_the_chains_answer_not_a_reason_to_fail_over() -> None:
    revert = lambda request: {"error": {"code": 3, "message": "execution reverted"}}  # noqa: E731

    async def scenario() -> None:
        async with fake_node(revert) as (first, url1), fake_node(head_is(1)) as (second, url2):
            transport = Transport.from_urls([url1, url2])
            try:
                answer = await transport.request("eth_call", [{}, "latest"])
                assert answer["error"]["message"] == "execution reverted"
                assert len(first.requests) == 1 and second.requests == []
                assert transport.health(Role.READ)[0].healthy
            finally:
                await transport.close()

    asyncio.run(scenario())


def failing_first(times: int, result: Any) -> Answer:
    calls = {"n": 0}

    def answer(request: dict[str, Any]) -> Any:
        calls["n"] += 1
        return web.Response(status=500) if calls["n"] <= times else result
    return answer


def test_no_hidden_retry_one_pass_asks_each_endpoint_once() -> None:
    async def scenario() -> None:
        async with fake_node(failing_first(1, "0x1")) as (node, url):
            transport = Transport.from_urls([url])
            try:
                with pytest.raises(ChainUnavailable):
                    await transport.request("eth_blockNumber", [])
                assert len(node.requests) == 1
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_an_explicit_retry_policy_makes_further_passes() -> None:
    async def scenario() -> None:
        async with fake_node(failing_first(2, "0x5")) as (node, url):
            transport = Transport.from_urls([url], retry=RetryPolicy(rounds=3, backoff=0.01))
            try:
                assert (await transport.request("eth_blockNumber", []))["result"] == "0x5"
                assert len(node.requests) == 3
                assert transport.health(Role.READ)[0].healthy
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(rounds=0)
    with pytest.raises(ValueError):
        RetryPolicy(backoff=-1)


def test_the_endpoint_throttle_holds_requests_to_its_rate() -> None:
    async def scenario() -> None:
        async with fake_node(head_is(1)) as (node, url):
            transport = Transport.from_urls([url], requests_per_second=3)
            started = time.monotonic()
            try:
                await asyncio.gather(*(transport.request("eth_blockNumber", []) for _ in range(7)))
            finally:
                await transport.close()
        # 7 requests at 3 a second: the 7th may leave only in the third second, however fast the machine.
        assert len(node.arrived_at) == 7
        assert max(node.arrived_at) - started >= 2.0

    asyncio.run(scenario())


def test_a_batch_comes_back_in_request_order() -> None:
    async def scenario() -> None:
        async with fake_node(lambda request: request["method"]) as (_, url):
            transport = Transport.from_urls([url])
            try:
                answers = await transport.batch([("a", []), ("b", []), ("c", [])])
                assert [a["result"] for a in answers] == ["a", "b", "c"]  # type: ignore[index]
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_send_raw_goes_to_every_send_endpoint_once_and_reports_who_took_it() -> None:
    tx_hash = "0x" + "ab" * 32
    accept = lambda request: tx_hash  # noqa: E731
    refuse = lambda request: {"error": {"code": -32000, "message": "nonce too low"}}  # noqa: E731

    async def scenario() -> None:
        async with fake_node(head_is(1)) as (reader, read_url), fake_node(accept) as (private, private_url), \
                fake_node(refuse) as (public, public_url):
            transport = Transport.from_urls([read_url], send=[(private_url, True), (public_url, False)])
            try:
                sent = await transport.send_raw(b"\x02\x01")
                assert sent.tx_hash == tx_hash
                assert sent.accepted == (endpoint_label(private_url, Role.PRIVATE_SEND, 1),)
                assert sent.refused[0][0] == endpoint_label(public_url, Role.SEND, 1)
                assert "nonce too low" in sent.refused[0][1]
                only_private = await transport.send_raw(b"\x02\x01", private=True)
                assert only_private.refused == ()
                with pytest.raises(ChainError, match="nonce too low"):
                    await transport.send_raw(b"\x02\x01", private=False)
                assert [r["params"] for r in private.requests] == [["0x0201"], ["0x0201"]]
                assert len(public.requests) == 2 and reader.requests == []
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_labels_never_carry_the_path_or_query() -> None:
    assert endpoint_label("https://mainnet.example.io/v3/KEY?x=1", Role.READ, 2) == "read#2 https://mainnet.example.io"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://eth-mainnet.example/v2/SECRETKEY", "https://eth-mainnet.example/…"),
    ("https://user:SECRET@node.example:8545/?apikey=SECRET", "https://node.example:8545/…"),
    ("wss://node.example/ws/SECRET", "wss://node.example/…"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
])
def test_a_url_shown_in_messages_and_reports_keeps_its_host_and_hides_its_secrets(url: str, shown: str) -> None:
    assert redacted_url(url) == shown and "SECRET" not in redacted_url(url)


def test_a_replay_forked_from_a_keyed_url_names_its_host_only() -> None:
    from onguard.replay.scenario import Fork

    fork = Fork(fixture=None, state_file=None, rpc_url="https://eth-mainnet.example/v2/SECRETKEY", block=17)
    assert fork.source == "https://eth-mainnet.example/… at block 17"
