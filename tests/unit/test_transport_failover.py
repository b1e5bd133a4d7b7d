"""The transport's failover order by speed and its failover for simulations, against scripted JSON-RPC nodes: a
slow-but-answering read endpoint is demoted once a clearly faster one is measured, similar endpoints keep the
configured order (hysteresis), a demoted endpoint is tried again once its estimate is stale and can come back, and a
simulation endpoint that refuses eth_simulateV1 is marked unable to simulate (said once) while simulations go to
the next one. Latency is scripted: each node moves the transport's clock forward by its latency as it answers, so
nothing here sleeps or depends on the machine's speed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from onguard.chain.transport import MEASURE_EVERY, RECHECK_SIMULATION_EVERY, Role, Transport
from onguard.errors import ChainUnavailable, SimulationUnsupported
from tests.unit.test_simulation_spread import SIMULATED, requests
from tests.unit.test_transport import FakeNode, fake_node


class Clock:
    """The transport's clock, moved by the nodes as they answer (and by the test to age estimates)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answering(clock: Clock, latency_ms: dict[str, float], name: str, result: Any = "0x1") -> Callable[[dict], Any]:
    """A node that takes latency_ms[name] (changed by the test at will) to answer `result`."""

    def answer(request: dict[str, Any]) -> Any:
        clock.now += latency_ms[name] / 1000
        return result(request) if callable(result) else result
    return answer


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def served(*nodes: FakeNode) -> tuple[int, ...]:
    return tuple(len(node.requests) for node in nodes)


def test_a_slow_first_read_endpoint_is_demoted_once_a_clearly_faster_one_is_measured() -> None:
    clock, latency = Clock(), {"slow": 2000.0, "fast": 5.0}

    async def scenario() -> None:
        async with fake_node(answering(clock, latency, "slow")) as (slow, url1), \
                fake_node(answering(clock, latency, "fast")) as (fast, url2):
            transport = Transport.from_urls([url1, url2], clock=clock)
            try:
                await transport.request("eth_blockNumber", [])
                assert served(slow, fast) == (1, 0)  # the configured order first
                await transport.request("eth_blockNumber", [])
                assert served(slow, fast) == (1, 1)  # the first is slow enough to be beaten: the other is measured
                for _ in range(5):
                    await transport.request("eth_blockNumber", [])
                assert served(slow, fast) == (1, 6)
                first, second = transport.health(Role.READ)
                assert first.slow and first.healthy and first.latency_estimate_ms == 2000.0
                assert not second.slow and second.latency_estimate_ms == 5.0
                assert "slow" in first.brief() and "~2000 ms" in first.brief()
            finally:
                await transport.close()

    run(scenario)


def test_similar_endpoints_keep_the_configured_order_and_a_demoted_one_needs_to_come_close_to_return() -> None:
    clock, latency = Clock(), {"a": 100.0, "b": 40.0}

    async def scenario() -> None:
        async with fake_node(answering(clock, latency, "a")) as (a, url1), \
                fake_node(answering(clock, latency, "b")) as (b, url2):
            transport = Transport.from_urls([url1, url2], clock=clock)
            try:
                for _ in range(6):
                    await transport.request("eth_blockNumber", [])
                assert served(a, b) == (5, 1)  # b measured once, 2.5x faster: not clearly faster, a stays first
                assert not transport.health(Role.READ)[0].slow

                latency["a"] = 300.0  # now clearly slower (over 3x and 50 ms more): demoted
                for _ in range(5):
                    await transport.request("eth_blockNumber", [])
                assert transport.health(Role.READ)[0].slow
                before = served(a, b)
                await transport.request("eth_blockNumber", [])
                assert served(a, b) == (before[0], before[1] + 1)

                latency["a"] = 110.0  # would not be demoted at this speed, but is not close enough to come back
                clock.now += MEASURE_EVERY
                await transport.request("eth_blockNumber", [])  # the stale estimate is measured again: on a
                assert served(a, b) == (before[0] + 1, before[1] + 1)
                assert transport.health(Role.READ)[0].slow and transport.health(Role.READ)[0].latency_estimate_ms == 110
                await transport.request("eth_blockNumber", [])
                assert served(a, b) == (before[0] + 1, before[1] + 2)  # one try per stale estimate, not more

                latency["a"] = 55.0  # within 1.5x of b: back in its configured place, first again
                clock.now += MEASURE_EVERY
                for _ in range(3):
                    await transport.request("eth_blockNumber", [])
                assert served(a, b) == (before[0] + 4, before[1] + 2)
                assert not transport.health(Role.READ)[0].slow
            finally:
                await transport.close()

    run(scenario)


def test_a_demoted_endpoint_still_answers_when_the_faster_one_fails() -> None:
    clock, latency = Clock(), {"slow": 2000.0, "fast": 5.0}
    broken = {"fast": False}

    def fast_answer(request: dict[str, Any]) -> Any:
        from aiohttp import web
        if broken["fast"]:
            return web.Response(status=503)
        return answering(clock, latency, "fast")(request)

    async def scenario() -> None:
        async with fake_node(answering(clock, latency, "slow")) as (slow, url1), \
                fake_node(fast_answer) as (fast, url2):
            transport = Transport.from_urls([url1, url2], clock=clock)
            try:
                for _ in range(3):
                    await transport.request("eth_blockNumber", [])
                assert transport.health(Role.READ)[0].slow
                broken["fast"] = True
                before = served(slow, fast)
                assert (await transport.request("eth_blockNumber", []))["result"] == "0x1"
                assert served(slow, fast) == (before[0] + 1, before[1] + 1)  # the fast one failed, the slow answered
                await transport.request("eth_blockNumber", [])
                assert served(slow, fast) == (before[0] + 2, before[1] + 1)  # the failing one goes last
            finally:
                await transport.close()

    run(scenario)


def refusing(code: int = -32601, message: str = "the method eth_simulateV1 does not exist/is not available"):
    return lambda request: {"error": {"code": code, "message": message}}


def simulating(request: dict[str, Any]) -> Any:
    return SIMULATED


@pytest.mark.parametrize("code,message", [(-32601, "Method not found"), (-32004, "method not supported"),
                                          (-32600, "Unsupported method: eth_simulateV1 on this plan")])
def test_a_simulation_endpoint_refusing_eth_simulate_is_marked_once_and_the_next_one_simulates(code: int,
                                                                                               message: str) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with fake_node(refusing(code, message)) as (refuser, url1), fake_node(simulating) as (good, url2):
            transport = Transport.from_urls(["http://127.0.0.1:9/read?key=SECRET"], simulate=[url1, url2],
                                            clock=clock)
            try:
                with capture_logs() as logs:
                    for batch in range(4):
                        answer = await transport.spread_batch(requests(2, 2 * batch))
                        assert [item["result"] for item in answer] == [SIMULATED, SIMULATED]
                assert len(refuser.requests) == 2 and len(good.requests) == 8  # asked once, then left alone
                said = [log for log in logs if "does not serve eth_simulateV1" in log["event"]]
                assert len(said) == 1 and said[0]["endpoint"] == f"simulate#1 {url1}"
                assert said[0]["log_level"] == "error"
                refused, fine = transport.health(Role.SIMULATE)
                assert refused.healthy and refused.cannot_simulate and str(code) in refused.cannot_simulate
                assert fine.cannot_simulate is None and "cannot simulate" in refused.brief()

                clock.now += RECHECK_SIMULATION_EVERY  # asked again after a while (a provider may enable it)
                await transport.spread_batch(requests(2, 8))
                await transport.spread_batch(requests(2, 10))
                assert len(refuser.requests) == 4 and len(good.requests) == 12
            finally:
                await transport.close()

    run(scenario)


def test_an_endpoint_that_serves_eth_simulate_again_is_used_again() -> None:
    clock = Clock()
    serves = {"now": False}

    async def scenario() -> None:
        async with fake_node(lambda r: simulating(r) if serves["now"] else refusing()(r)) as (node, url1), \
                fake_node(simulating) as (other, url2):
            transport = Transport.from_urls([url2], simulate=[url1, url2], clock=clock)
            try:
                await transport.spread_batch(requests(1))
                assert transport.health(Role.SIMULATE)[0].cannot_simulate
                serves["now"] = True
                clock.now += RECHECK_SIMULATION_EVERY
                with capture_logs() as logs:
                    await transport.spread_batch(requests(1, 1))
                assert transport.health(Role.SIMULATE)[0].cannot_simulate is None
                assert any(log["event"] == "simulation endpoint serves eth_simulateV1 again" for log in logs)
                asked = len(node.requests)
                for n in range(2, 6):
                    await transport.spread_batch(requests(1, n))
                assert len(node.requests) > asked  # back in the rotation
            finally:
                await transport.close()

    run(scenario)


@pytest.mark.parametrize("code,message", [(3, "execution reverted"), (-32000, "header not found"),
                                          (-32602, "invalid params: method handler crashed")])
def test_a_revert_or_other_error_in_a_simulation_is_not_a_refusal(code: int, message: str) -> None:
    async def scenario() -> None:
        async with fake_node(refusing(code, message)) as (first, url1), fake_node(simulating) as (second, url2):
            transport = Transport.from_urls([url1], simulate=[url1, url2])
            try:
                answer = await transport.spread_batch(requests(1))
                assert answer[0]["error"]["message"] == message
                assert transport.health(Role.SIMULATE)[0].cannot_simulate is None and second.requests == []
            finally:
                await transport.close()

    run(scenario)


def test_when_no_simulation_endpoint_can_simulate_it_says_so_without_asking_again() -> None:
    async def scenario() -> None:
        async with fake_node(refusing()) as (first, url1), fake_node(refusing(-32004, "not supported")) as (
                second, url2):
            transport = Transport.from_urls([url1], simulate=[url1, url2])
            try:
                with pytest.raises(SimulationUnsupported, match="no simulation endpoint serves eth_simulateV1"):
                    await transport.spread_batch(requests(1))
                asked = served(first, second)
                assert asked == (1, 1)
                with pytest.raises(SimulationUnsupported) as raised:
                    await transport.spread_batch(requests(1, 1))
                assert served(first, second) == asked
                assert isinstance(raised.value, ChainUnavailable) and "simulation_urls" in (raised.value.hint or "")
            finally:
                await transport.close()

    run(scenario)


def test_a_read_endpoint_refusing_eth_simulate_without_simulation_endpoints_is_simulation_unsupported() -> None:
    async def scenario() -> None:
        async with fake_node(refusing()) as (_, url):
            transport = Transport.from_urls([url])
            try:
                with pytest.raises(SimulationUnsupported, match="read endpoint does not serve eth_simulateV1"):
                    await transport.spread_batch(requests(1))
                assert transport.health(Role.READ)[0].healthy  # reads are fine: only simulations are refused
            finally:
                await transport.close()

    run(scenario)


def test_an_idle_simulation_endpoint_demoted_for_slowness_gets_batches_only_when_the_fast_one_is_busy() -> None:
    clock, latency = Clock(), {"slow": 2000.0, "fast": 5.0}

    async def scenario() -> None:
        async with fake_node(answering(clock, latency, "slow", simulating)) as (slow, url1), \
                fake_node(answering(clock, latency, "fast", simulating)) as (fast, url2):
            transport = Transport.from_urls([url2], simulate=[url1, url2], clock=clock)
            try:
                await transport.spread_batch(requests(1))
                await transport.spread_batch(requests(1, 1))
                assert served(slow, fast) == (1, 1)  # each idle endpoint in turn, until both are measured
                assert transport.health(Role.SIMULATE)[0].slow
                for n in range(2, 6):
                    await transport.spread_batch(requests(1, n))
                assert served(slow, fast) == (1, 5)  # idle both, the fast one first every time
            finally:
                await transport.close()

    run(scenario)
