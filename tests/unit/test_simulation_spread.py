"""Simulation batches spread over several endpoints (Transport.spread_batch, through the Simulator), against
scripted JSON-RPC nodes in the test's loop and the fault proxy: concurrent batches on different endpoints, a held
or black-holed endpoint holding only its own batch, failover per batch within the batch's deadline, the failed
endpoint put last until a probe finds it well, and results still cached per (transaction hash, head)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from onguard.chain.health import ChainWatch
from onguard.chain.rpc import Rpc
from onguard.chain.simulate import Head, Simulation, Simulator
from onguard.chain.transport import Role, Transport
from onguard.errors import ChainUnavailable
from onguard.store.blocklog import BlockLog
from onguard.incidents.store import IncidentStore
from tests.faults.proxy import FaultProxy, Mode
from served import served

SIMULATED = [{"calls": [{"status": "0x1", "returnData": "0x", "logs": []}]}]
GENESIS = "0x" + "11" * 32


class SimulationNode:
    """Answers eth_simulateV1 (a success), eth_chainId and eth_getBlockByNumber; `gate` (awaited before each
    answer) holds the node as long as a test wants."""

    def __init__(self, gate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.gate = gate
        self.batches: list[list[dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        items = body if isinstance(body, list) else [body]
        self.batches.append(items)
        self.arrived.set()
        if self.gate is not None:
            await self.gate()
        answers = [{"jsonrpc": "2.0", "id": item["id"], "result": _result(item)} for item in items]
        return web.json_response(answers if isinstance(body, list) else answers[0])

    @property
    def simulations(self) -> int:
        return sum(1 for batch in self.batches for item in batch if item["method"] == "eth_simulateV1")


def _result(item: dict[str, Any]) -> Any:
    if item["method"] == "eth_chainId":
        return "0x7a69"
    if item["method"] == "eth_getBlockByNumber":
        return {"number": "0x5", "hash": GENESIS}
    return SIMULATED


@asynccontextmanager
async def simulation_node(gate: Callable[[], Awaitable[None]] | None = None
                          ) -> AsyncIterator[tuple[SimulationNode, str]]:
    node = SimulationNode(gate)
    async with served(node.handle) as url:
        yield node, url


def requests(count: int, first: int = 0) -> list[tuple[str, Any]]:
    return [("eth_simulateV1", [{"blockStateCalls": [{"calls": [{"to": "0x" + f"{n:040x}"}]}]}, "latest"])
            for n in range(first, first + count)]


def pending(n: int) -> dict[str, Any]:
    return {"from": "0x" + "aa" * 20, "to": "0x" + "bb" * 20, "input": "0x", "value": 0, "gas": 100_000,
            "hash": "0x" + f"{n:064x}"}


def test_two_batches_at_once_go_to_two_endpoints_each_waiting_for_the_other() -> None:
    async def scenario() -> None:
        both = asyncio.Event()
        nodes: list[SimulationNode] = []

        async def until_both_arrived() -> None:  # each answers only once the other has its batch: true parallel
            if all(node.batches for node in nodes):
                both.set()
            await both.wait()

        async with simulation_node(until_both_arrived) as (one, first_url), \
                simulation_node(until_both_arrived) as (two, second_url):
            nodes.extend([one, two])
            transport = Transport.from_urls([first_url], simulate=[first_url, second_url], request_timeout=30)
            try:
                answers = await asyncio.wait_for(asyncio.gather(transport.spread_batch(requests(8)),
                                                                transport.spread_batch(requests(8, 8))), 30)
                assert [len(answer) for answer in answers] == [8, 8]
                assert one.simulations == two.simulations == 8
                assert all(e.healthy for e in transport.health(Role.SIMULATE))
            finally:
                await transport.close()

    asyncio.run(scenario())


def test_a_held_endpoint_holds_only_its_own_batch() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def held() -> None:
            await release.wait()

        async with simulation_node(held) as (slow, slow_url), simulation_node() as (quick, quick_url):
            transport = Transport.from_urls([quick_url], simulate=[slow_url, quick_url], request_timeout=30)
            try:
                stuck = asyncio.create_task(transport.spread_batch(requests(4)))
                await slow.arrived.wait()
                # While the first batch waits on the held endpoint, the next ones are answered by the other.
                for round_number in range(3):
                    answer = await asyncio.wait_for(transport.spread_batch(requests(4, 4 * (round_number + 1))), 30)
                    assert len(answer) == 4
                assert quick.simulations == 12 and len(slow.batches) == 1 and not stuck.done()
                release.set()
                assert len(await stuck) == 4
            finally:
                release.set()
                await transport.close()

    asyncio.run(scenario())


def test_a_hedged_batch_takes_the_first_answer_while_the_other_endpoint_is_held() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def held() -> None:
            await release.wait()

        async with simulation_node(held) as (slow, slow_url), simulation_node() as (quick, quick_url):
            transport = Transport.from_urls([quick_url], simulate=[slow_url, quick_url], request_timeout=30)
            try:
                answer = await asyncio.wait_for(transport.spread_batch(requests(1), hedge=2), 30)
                assert len(answer) == 1 and quick.simulations == 1
                await slow.arrived.wait()  # it was asked too; its attempt was given up, not counted a failure
                assert all(e.healthy for e in transport.health(Role.SIMULATE))
                # The abandoned attempt no longer counts as busy: the idle endpoints take turns again.
                release.set()
                await transport.spread_batch(requests(1, 1))
                await transport.spread_batch(requests(1, 2))
                assert {quick.simulations, slow.simulations} == {2, 2}
            finally:
                release.set()
                await transport.close()

    asyncio.run(scenario())


def test_a_hedge_is_never_wider_than_the_healthy_endpoints() -> None:
    async def scenario() -> None:
        async with simulation_node() as (node, url):
            with FaultProxy(url) as broken:
                broken.set_mode(Mode.HTTP_500)
                transport = Transport.from_urls([url], simulate=[broken.url, url], request_timeout=30)
                try:
                    await transport.spread_batch(requests(1))  # the broken one fails once and goes last
                    connections = broken.connections
                    await transport.spread_batch(requests(1, 1), hedge=2)
                    assert broken.connections == connections and node.simulations == 2
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_a_black_holed_endpoint_fails_over_per_batch_within_the_deadline_and_goes_last() -> None:
    async def scenario() -> None:
        async with simulation_node() as (node, url):
            with FaultProxy(url) as hole:
                hole.set_mode(Mode.BLACKHOLE)
                transport = Transport.from_urls([url], simulate=[hole.url, url], request_timeout=30)
                try:
                    deadline = time.perf_counter() + 1.0
                    answer = await transport.spread_batch(requests(3), deadline=deadline)
                    assert len(answer) == 3 and node.simulations == 3
                    blackholed, healthy = transport.health(Role.SIMULATE)
                    # Half of the second left is what the first endpoint was given, not the 30 s request timeout.
                    assert blackholed.consecutive_failures == 1
                    assert "no answer within 0." in (blackholed.last_error or "")
                    assert healthy.healthy
                    await transport.spread_batch(requests(3, 3), deadline=time.perf_counter() + 1.0)
                    assert hole.connections == 1 and node.simulations == 6, "the failed endpoint was asked again"
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_every_endpoint_failing_is_chain_unavailable_naming_each() -> None:
    async def scenario() -> None:
        async with simulation_node() as (_, url):
            with FaultProxy(url) as hole, FaultProxy(url) as broken:
                hole.set_mode(Mode.BLACKHOLE)
                broken.set_mode(Mode.HTTP_500)
                transport = Transport.from_urls([url], simulate=[hole.url, broken.url], request_timeout=30)
                try:
                    with pytest.raises(ChainUnavailable) as caught:
                        await transport.spread_batch(requests(2), deadline=time.perf_counter() + 0.5)
                    assert "simulate#1" in caught.value.message and "simulate#2" in caught.value.message
                    assert "HTTP 500" in caught.value.message
                    assert "simulation_urls" in (caught.value.hint or "")
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_without_simulation_endpoints_batches_fail_over_on_the_read_endpoints() -> None:
    async def scenario() -> None:
        async with simulation_node() as (node, url):
            with FaultProxy(url) as hole:
                hole.set_mode(Mode.DROP)
                transport = Transport.from_urls([hole.url, url], request_timeout=5)
                try:
                    assert len(await transport.spread_batch(requests(2))) == 2 and node.simulations == 2
                    assert transport.health(Role.READ)[0].consecutive_failures == 1
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_a_probe_that_finds_a_failed_simulation_endpoint_well_puts_it_back_in_turn(tmp_path) -> None:
    async def scenario() -> None:
        async with simulation_node() as (back, back_url), simulation_node() as (other, other_url):
            with FaultProxy(back_url) as flaky:
                flaky.set_mode(Mode.DROP)
                transport = Transport.from_urls([other_url], simulate=[flaky.url, other_url], request_timeout=5)
                store = IncidentStore(tmp_path / "state.db")
                watch = ChainWatch(transport, BlockLog(store.database, 31337), 31337, stall_after=60)
                try:
                    await transport.spread_batch(requests(1))
                    assert transport.health(Role.SIMULATE)[0].consecutive_failures == 1
                    flaky.set_mode(Mode.PASS)
                    health = await watch.check(None)
                    assert transport.health(Role.SIMULATE)[0].healthy and not health.blind
                    await transport.spread_batch(requests(1, 1))
                    assert back.simulations == 1, "the endpoint found well takes batches again"
                finally:
                    await transport.close()

    asyncio.run(scenario())


def test_the_simulator_spreads_and_still_caches_per_transaction_and_head() -> None:
    async def scenario() -> None:
        async with simulation_node() as (one, first_url), simulation_node() as (two, second_url):
            rpc = Rpc(transport=Transport.from_urls([first_url], simulate=[first_url, second_url]))
            simulator = Simulator(rpc)
            head = Head(5, "0x" + "22" * 32)
            try:
                first = await simulator.simulate_many([pending(n) for n in range(4)], [], head)
                assert all(isinstance(outcome, Simulation) and not outcome.reverted for outcome in first)
                asked = one.simulations + two.simulations
                again = await simulator.simulate_many([pending(n) for n in range(4)], [], head)
                assert again == first and one.simulations + two.simulations == asked == 4
                other_head = Head(6, "0x" + "33" * 32)
                await simulator.simulate_many([pending(0)], [], other_head)
                assert one.simulations + two.simulations == 5, "a new head is a new state: simulated again"
            finally:
                await rpc.close()

    asyncio.run(scenario())
