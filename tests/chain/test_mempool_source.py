"""The mempool source against real Anvil nodes that do not mine (so transactions stay pending), a TCP proxy that
drops the WebSocket under it, and a scriptable stand-in node for what Anvil will not do (refuse a method, push a
transaction twice, push bare hashes).

Every wait below is a safety net for a hung test, never a speed requirement: the assertions are about what
arrives, how often, and what is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs
from web3 import Web3

from onguard.chain.abi import load_abi
from onguard.chain.anvil import AnvilNode, free_port, start_anvil
from onguard.config import WatchedContract
from onguard.errors import ChainError
from onguard.paths import ARTIFACTS_DIR
from onguard.sources.mempool import YIELD_EVERY, MempoolSource, PendingTransaction

from ..conftest import Chain
from .helpers import ALICE, ATTACKER, BOB, until

pytestmark = pytest.mark.chain

CHAIN_ID = 31337
SAFETY = 10.0          # seconds before a wait gives up and fails the test (a hang, not a slow path)
SETTLE = 0.3           # seconds given to a duplicate to show up before "exactly once" is asserted
STOP_BOUND = 3.0       # seconds run() may take to return once stop is set (the back-off test sleeps 30 s)
FAST = {"poll_interval": 0.05, "reconnect_delay": 0.05, "max_reconnect_delay": 0.2}


# ---- helpers ------------------------------------------------------------------------------------------------

class Collector:
    """The on_pending coroutine: records what arrives."""

    def __init__(self) -> None:
        self.items: list[PendingTransaction] = []

    async def __call__(self, pending: PendingTransaction) -> None:
        self.items.append(pending)

    def hashes(self) -> list[str]:
        return [item.hash for item in self.items]

    def by_hash(self, tx_hash: str) -> PendingTransaction:
        [item] = [item for item in self.items if item.hash == tx_hash]
        return item

    async def wait_for(self, *hashes: str) -> None:
        await until(lambda: set(hashes) <= set(self.hashes()), f"transactions {hashes}; got {self.hashes()}")


@contextlib.asynccontextmanager
async def running(source: MempoolSource, on_pending: Any = None) -> AsyncIterator[Collector]:
    """Runs the source until the block ends, then stops it and insists that run() returns (and did not raise)."""
    collector = Collector()
    stop = asyncio.Event()
    task = asyncio.ensure_future(source.run(on_pending or collector, stop))
    try:
        await until(lambda: source.live or task.done(), "the source to go live")
        if task.done():
            task.result()
        yield collector
    finally:
        stop.set()
        await asyncio.wait_for(task, STOP_BOUND)


def web3_of(node: AnvilNode) -> Web3:
    return Web3(Web3.HTTPProvider(node.rpc_url))


async def send(w3: Web3, sender: str, to: str, value: int = 1, data: bytes = b"") -> str:
    """eth_sendTransaction from an unlocked dev account; returns the hash at once (nothing is mined)."""
    tx = {"from": sender, "to": to, "value": value, "gas": 500_000, "data": data}
    tx_hash = await asyncio.to_thread(w3.eth.send_transaction, tx)  # type: ignore[arg-type]
    return tx_hash.to_0x_hex()


def logged(logs: list[dict[str, Any]], event: str, level: str | None = None) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event and (level is None or e["log_level"] == level)]


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    with start_anvil("--no-mining") as anvil:
        yield anvil


@pytest.fixture
def accounts(node: AnvilNode) -> list[str]:
    return web3_of(node).eth.accounts


class TcpProxy:
    """Sits between the source and Anvil's WebSocket; drop() cuts every link at once (no closing handshake),
    and can turn the next few connections away, as a node restarting would."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._links: list[asyncio.StreamWriter] = []
        self._refuse = 0
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        assert self._server is not None
        self._server.close()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def drop(self, refuse_next: int = 0) -> None:
        self._refuse = refuse_next
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refuse > 0:
            self._refuse -= 1
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        self._links += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


DROP = object()  # in a FakeNode session script: close the socket there (with an error code)


class FakeNode:
    """A stand-in node. WebSocket (`ws`): "subscribe" answers eth_subscribe and pushes a script per connection
    (full objects, bare hashes, DROP), "refuse" answers it with an error, "absent" serves no WebSocket at all
    (the upgrade gets HTTP 405). HTTP: the methods in `refuse` get "method not found", eth_getTransactionByHash
    is answered from `transactions`, anything else is forwarded to `upstream`."""

    SUBSCRIPTION = "0x9e7b3c1d2a4f5e6b"

    def __init__(self, *, ws: str = "subscribe", upstream: str | None = None, refuse: Sequence[str] = (),
                 sessions: Sequence[Sequence[Any]] = (), transactions: dict[str, dict[str, Any]] | None = None):
        self.ws = ws
        self.upstream = upstream
        self.refuse = set(refuse)
        self.sessions = list(sessions)
        self.transactions = transactions or {}
        self.connections = 0
        self.calls: list[str] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> FakeNode:
        app = web.Application()
        app.router.add_post("/", self._http)
        if self.ws != "absent":
            app.router.add_get("/", self._websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._client = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._client is not None
        await self._client.close()
        await self._runner.cleanup()

    async def _http(self, request: web.Request) -> web.Response:
        body = await request.json()
        method, params = body["method"], body.get("params", [])
        self.calls.append(method)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": body["id"]}
        if method in self.refuse:
            answer["error"] = {"code": -32601, "message": f"the method {method} does not exist/is not available"}
        elif method == "eth_getTransactionByHash" and params[0] in self.transactions:
            answer["result"] = self.transactions[params[0]]
        elif self.upstream is not None:
            assert self._client is not None
            async with self._client.post(self.upstream, json=body) as response:
                return web.json_response(await response.json())
        else:
            answer["error"] = {"code": -32601, "message": f"the method {method} does not exist/is not available"}
        return web.json_response(answer)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = self.sessions[self.connections] if self.connections < len(self.sessions) else ()
        self.connections += 1
        async for message in ws:
            call = json.loads(message.data)
            if call["method"] != "eth_subscribe":
                await ws.send_json({"jsonrpc": "2.0", "id": call["id"], "result": True})
                continue
            if self.ws == "refuse":
                await ws.send_json({"jsonrpc": "2.0", "id": call["id"],
                                    "error": {"code": -32602, "message": "invalid params: full transactions "
                                                                         "are not supported"}})
                continue
            await ws.send_json({"jsonrpc": "2.0", "id": call["id"], "result": self.SUBSCRIPTION})
            for item in session:
                if item is DROP:
                    await ws.close(code=1011, message=b"going away")
                    return ws
                await ws.send_json({"jsonrpc": "2.0", "method": "eth_subscription",
                                    "params": {"subscription": self.SUBSCRIPTION, "result": item}})
        return ws


def fake_transaction(n: int, sender: str = "0x" + "11" * 20) -> dict[str, Any]:
    return {"type": "0x2", "chainId": hex(CHAIN_ID), "nonce": hex(n), "gas": "0x5208", "maxFeePerGas": "0x3b9aca00",
            "maxPriorityFeePerGas": "0x1", "to": "0x" + "22" * 20, "value": hex(n), "accessList": [],
            "input": "0x", "r": "0x" + "33" * 32, "s": "0x" + "44" * 32, "yParity": "0x0", "v": "0x0",
            "hash": f"0x{n:064x}", "blockHash": None, "blockNumber": None, "transactionIndex": None,
            "from": sender, "gasPrice": "0x3b9aca00"}


# ---- the subscription -----------------------------------------------------------------------------------------

def test_pending_transactions_arrive_once_decoded_when_sent_to_a_watched_contract(chain: Chain) -> None:
    chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    vault_abi = load_abi(ARTIFACTS_DIR / "Vault.sol" / "Vault.json")
    watched = {"vault": WatchedContract(name="vault", address=chain.world.vault, abi=vault_abi)}
    shares = 123 * 10**18
    calldata = vault_abi.encode_call("redeemFor(address,address,uint256)", ALICE, ATTACKER, shares)

    async def scenario() -> None:
        source = MempoolSource(chain.node.ws_url, chain.node.rpc_url, CHAIN_ID, watched, **FAST)
        async with running(source) as got:
            before = time.perf_counter()
            drain = await send(chain.w3, ATTACKER, chain.world.vault, value=0, data=calldata)
            transfer = await send(chain.w3, BOB, ALICE, value=7)
            await got.wait_for(drain, transfer)
            await asyncio.sleep(SETTLE)
            assert source.mode == "subscription"

        assert sorted(got.hashes()) == sorted([drain, transfer])  # each exactly once, nothing else

        attack = got.by_hash(drain)
        assert attack.raw["from"] == ATTACKER and attack.raw["to"] == chain.world.vault
        assert bytes(attack.raw["input"]) == calldata and attack.raw["value"] == 0
        assert isinstance(attack.raw["nonce"], int) and isinstance(attack.raw["gas"], int)
        assert attack.raw["blockNumber"] is None
        observation = attack.observation
        assert observation is not None
        assert (observation.contract, observation.hash, observation.block_number) == ("vault", drain, None)
        assert observation.function == "redeemFor(address,address,uint256)"
        assert dict(observation.args) == {"owner": ALICE, "receiver": ATTACKER, "shares": shares}
        assert observation.sender == ATTACKER and observation.max_priority_fee is not None

        plain = got.by_hash(transfer)
        assert plain.observation is None
        assert plain.raw["from"] == BOB and plain.raw["to"] == ALICE and plain.raw["value"] == 7
        for item in got.items:
            assert before < item.seen_at < time.perf_counter()

    asyncio.run(scenario())


def test_a_dropped_subscription_reconnects_with_back_off_and_later_transactions_arrive_once(
        node: AnvilNode, accounts: list[str]) -> None:
    w3 = web3_of(node)

    async def scenario() -> None:
        async with TcpProxy(node.port) as proxy:
            with capture_logs() as logs:
                source = MempoolSource(proxy.ws_url, node.rpc_url, CHAIN_ID, {}, **FAST)
                async with running(source) as got:
                    first = await send(w3, accounts[1], accounts[0])
                    await got.wait_for(first)

                    proxy.drop(refuse_next=3)  # the link dies, and the node turns three attempts away
                    await until(lambda: proxy.accepted == 2 and source.live, "the source to resubscribe")
                    assert source.mode == "subscription"

                    later = [await send(w3, accounts[i], accounts[0]) for i in (2, 3)]
                    await got.wait_for(*later)
                    await asyncio.sleep(SETTLE)

        assert sorted(got.hashes()) == sorted([first, *later])
        assert proxy.refused == 3
        assert len(logged(logs, "mempool subscription lost; reconnecting", "warning")) == 1
        attempts = logged(logs, "mempool subscription could not be established; retrying", "warning")
        assert len(attempts) == 3
        delays = [e["delay"] for e in (*logged(logs, "mempool subscription lost; reconnecting"), *attempts)]
        assert delays == [0.05, 0.1, 0.2, 0.2]  # doubling, up to max_reconnect_delay
        assert len(logged(logs, "mempool subscription restored", "info")) == 1

    asyncio.run(scenario())


def test_each_hash_is_delivered_once_across_reconnects_and_bare_hashes_are_fetched() -> None:
    x, y, z = fake_transaction(1), fake_transaction(2), fake_transaction(3)

    async def scenario() -> None:
        fake = FakeNode(sessions=[[x, DROP], [x, y, z["hash"], x]], transactions={z["hash"]: z})
        async with fake:
            source = MempoolSource(fake.ws_url, fake.rpc_url, CHAIN_ID, {}, **FAST)
            async with running(source) as got:
                await got.wait_for(x["hash"], y["hash"], z["hash"])
                await asyncio.sleep(SETTLE)
        assert fake.connections == 2
        assert sorted(got.hashes()) == [x["hash"], y["hash"], z["hash"]]
        assert got.by_hash(z["hash"]).raw["value"] == 3  # fetched over HTTP, normalised like the pushed ones
        assert fake.calls.count("eth_getTransactionByHash") == 1

    asyncio.run(scenario())


class BufferedSocket:
    """A socket whose every message is already buffered: recv() returns at once and never gives the loop away, as
    the websockets library's does while messages wait in its buffer. Runs out with EOFError."""

    def __init__(self, messages: Sequence[str]) -> None:
        self._messages = list(messages)

    async def recv(self) -> str:
        if not self._messages:
            raise EOFError
        return self._messages.pop(0)


@pytest.mark.parametrize("sending", [False, True])
def test_while_a_pause_is_being_sent_the_reader_lets_other_tasks_run_after_every_message(sending: bool) -> None:
    """A burst of 200 buffered notifications is read in runs of YIELD_EVERY between two turns of another task —
    unless `yield_each_while` says a pause is being sent, when every message gives the loop away (each step of the
    send would otherwise wait behind a run of junk being read)."""
    subscription = "0x9e7b3c1d2a4f5e6b"
    burst = [json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                         "params": {"subscription": subscription, "result": fake_transaction(n)}})
             for n in range(1, 201)]

    async def scenario() -> tuple[list[int], int]:
        delivered: list[PendingTransaction] = []
        turns: list[int] = []  # deliveries so far, at each turn of the other task

        def on_pending(pending: PendingTransaction) -> asyncio.Future[None]:
            delivered.append(pending)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        async def other_task() -> None:
            while True:
                turns.append(len(delivered))
                await asyncio.sleep(0)

        source = MempoolSource("ws://unused", "http://unused", CHAIN_ID, {}, yield_each_while=lambda: sending)
        source._on_pending = on_pending  # what run() sets before reading; _read is driven directly here
        other = asyncio.ensure_future(other_task())
        await asyncio.sleep(0)  # the other task has had its first turn
        try:
            with pytest.raises(EOFError):
                await source._read(BufferedSocket(burst), subscription)  # type: ignore[arg-type]
        finally:
            other.cancel()
        runs = [later - earlier for earlier, later in zip(turns, turns[1:], strict=False)]
        return runs, len(delivered)

    runs, count = asyncio.run(scenario())
    assert count == len(burst)
    assert max(runs) == (1 if sending else YIELD_EVERY)


# ---- the fallbacks --------------------------------------------------------------------------------------------

def test_without_a_websocket_url_it_polls_a_filter(node: AnvilNode, accounts: list[str]) -> None:
    w3 = web3_of(node)

    async def scenario() -> None:
        with capture_logs() as logs:
            source = MempoolSource(None, node.rpc_url, CHAIN_ID, {}, **FAST)
            assert source.mode == "filter"
            async with running(source) as got:
                hashes = [await send(w3, accounts[i], accounts[0], value=i) for i in (1, 2, 3)]
                await got.wait_for(*hashes)
                await asyncio.sleep(SETTLE)
                assert source.mode == "filter"
        assert sorted(got.hashes()) == sorted(hashes)
        assert [got.by_hash(h).raw["value"] for h in hashes] == [1, 2, 3]
        assert got.by_hash(hashes[0]).raw["from"] == accounts[1]
        assert [e["mode"] for e in logged(logs, "following pending transactions", "info")] == ["filter"]
        assert not [e for e in logs if e["log_level"] in ("warning", "error")]

    asyncio.run(scenario())


@pytest.mark.parametrize(("ws", "refuse", "expected_mode", "fallbacks"), [
    ("refuse", (), "filter", 1),
    ("absent", (), "filter", 1),
    ("refuse", ("eth_newPendingTransactionFilter",), "txpool", 2),
    ("refuse", ("eth_getFilterChanges",), "txpool", 2),
], ids=["subscription refused", "no websocket at all", "filter refused too", "filters never found"])
def test_refusals_fall_back_in_order(node: AnvilNode, accounts: list[str], ws: str, refuse: tuple[str, ...],
                                     expected_mode: str, fallbacks: int) -> None:
    w3 = web3_of(node)

    async def scenario() -> None:
        async with FakeNode(ws=ws, upstream=node.rpc_url, refuse=refuse) as fake:
            with capture_logs() as logs:
                source = MempoolSource(fake.ws_url, fake.rpc_url, CHAIN_ID, {}, **FAST)
                async with running(source) as got:
                    # A refused eth_getFilterChanges shows only at the first poll after the source went live.
                    await until(lambda: source.mode == expected_mode, f"the source to settle on {expected_mode}")
                    tx_hash = await send(w3, accounts[1], accounts[2], value=5)
                    await got.wait_for(tx_hash)
                    await asyncio.sleep(SETTLE)  # several polls; a txpool poll returns it every time
        assert got.hashes() == [tx_hash]
        assert got.by_hash(tx_hash).raw["value"] == 5 and got.by_hash(tx_hash).raw["from"] == accounts[1]
        warnings = [e for e in logs if e["log_level"] == "warning" and "falling back" in e["event"]]
        assert [(e["from_mode"], e["to_mode"]) for e in warnings] == \
            [("subscription", "filter"), ("filter", "txpool")][:fallbacks]
        assert logged(logs, "following pending transactions", "info")[-1]["mode"] == expected_mode
        if expected_mode == "txpool":
            assert fake.calls.count("txpool_content") > 2

    asyncio.run(scenario())


def test_a_node_refusing_every_way_makes_run_raise() -> None:
    async def scenario() -> None:
        async with FakeNode(ws="refuse", refuse=("eth_newPendingTransactionFilter", "txpool_content")) as fake:
            source = MempoolSource(fake.ws_url, fake.rpc_url, CHAIN_ID, {}, **FAST)
            with pytest.raises(ChainError, match="neither"):
                await asyncio.wait_for(source.run(Collector(), asyncio.Event()), SAFETY)

    asyncio.run(scenario())


# ---- senders, handlers, stopping ------------------------------------------------------------------------------

@pytest.mark.parametrize("use_ws", [True, False], ids=["subscription", "filter"])
def test_ignored_senders_are_skipped(node: AnvilNode, accounts: list[str], use_ws: bool) -> None:
    w3 = web3_of(node)

    async def scenario() -> None:
        source = MempoolSource(node.ws_url if use_ws else None, node.rpc_url, CHAIN_ID, {},
                               ignore_senders=[accounts[1].lower()], **FAST)
        async with running(source) as got:
            own = await send(w3, accounts[1], accounts[0])
            other = await send(w3, accounts[2], accounts[0])
            await got.wait_for(other)
            await asyncio.sleep(SETTLE)
        assert got.hashes() == [other]
        assert own != other

    asyncio.run(scenario())


def test_a_slow_or_failing_handler_neither_blocks_the_reader_nor_is_lost(node: AnvilNode,
                                                                         accounts: list[str]) -> None:
    w3 = web3_of(node)
    slow_sender, failing_sender = accounts[1], accounts[2]

    async def scenario() -> None:
        gate = asyncio.Event()
        got = Collector()
        finished: list[str] = []

        async def handler(pending: PendingTransaction) -> None:
            if pending.raw["from"] == slow_sender:
                await gate.wait()  # held until the end of the test
                finished.append(pending.hash)
            elif pending.raw["from"] == failing_sender:
                raise RuntimeError("handler bug")
            else:
                await got(pending)

        with capture_logs() as logs:
            source = MempoolSource(node.ws_url, node.rpc_url, CHAIN_ID, {}, **FAST)
            async with running(source, handler):
                slow = await send(w3, slow_sender, accounts[0])
                failing = await send(w3, failing_sender, accounts[0])
                normal = await send(w3, accounts[3], accounts[0])
                await got.wait_for(normal)  # arrives while the first handler is still waiting
                assert finished == []
                await until(lambda: bool(logged(logs, "the pending-transaction handler failed")),
                            "the failure to be logged")
                gate.set()
                await until(lambda: finished == [slow], "the slow handler to finish")
        [failure] = logged(logs, "the pending-transaction handler failed", "error")
        assert failure["tx_hash"] == failing and "handler bug" in failure["error"]
        assert got.hashes() == [normal]

    asyncio.run(scenario())


@pytest.mark.parametrize("state", ["subscribed", "polling a filter", "backing off"])
def test_stop_returns_promptly(node: AnvilNode, state: str) -> None:
    async def scenario() -> None:
        with capture_logs() as logs:
            if state == "backing off":  # nothing listens there: the source sleeps 30 s between attempts
                source = MempoolSource(f"ws://127.0.0.1:{free_port()}", node.rpc_url, CHAIN_ID, {},
                                       reconnect_delay=30.0, max_reconnect_delay=30.0)
            else:
                source = MempoolSource(node.ws_url if state == "subscribed" else None, node.rpc_url, CHAIN_ID, {},
                                       poll_interval=30.0 if state == "polling a filter" else 0.2)
            stop = asyncio.Event()
            task = asyncio.ensure_future(source.run(Collector(), stop))
            if state == "backing off":
                await until(lambda: bool(logs), "a failed attempt")
                assert logs[-1]["event"] == "mempool subscription could not be established; retrying"
            else:
                await until(lambda: source.live, "the source to go live")
            stop.set()
            await asyncio.wait_for(task, STOP_BOUND)  # not 30 s: stop interrupts the sleep
        assert task.result() is None
        assert not source.live

    asyncio.run(scenario())


def test_a_watched_contract_gets_no_observation_for_calls_to_other_addresses(chain: Chain) -> None:
    """The observation is keyed on `to`: a call carrying the Vault's calldata to another address is not it."""
    chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    vault_abi = load_abi(ARTIFACTS_DIR / "Vault.sol" / "Vault.json")
    watched = {"vault": WatchedContract(name="vault", address=chain.world.vault, abi=vault_abi)}
    calldata = vault_abi.encode_call("redeemFor(address,address,uint256)", ALICE, ATTACKER, 1)

    async def scenario() -> None:
        source = MempoolSource(None, chain.node.rpc_url, CHAIN_ID, watched, **FAST)
        async with running(source) as got:
            decoy = await send(chain.w3, ATTACKER, chain.world.asset, value=0, data=calldata)
            real = await send(chain.w3, BOB, chain.world.vault, value=0, data=calldata)
            await got.wait_for(decoy, real)
        assert got.by_hash(decoy).observation is None
        observed = got.by_hash(real).observation
        assert observed is not None and observed.sender == BOB and observed.to == chain.world.vault

    asyncio.run(scenario())
