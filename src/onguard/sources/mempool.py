"""Follows pending transactions and hands each one, once, to the caller as fast as possible.

This is the hot path of pre-emption: a guardian that sees an attack pending can land its pause before the attack
is mined. Three ways to follow the pool, best first (the source falls back when a node refuses one):

* ``subscription``: a WebSocket ``eth_subscribe("newPendingTransactions", true)``, full transaction objects pushed
  by the node (Anvil, geth, reth, Erigon, Nethermind). A node that ignores the ``true`` and pushes bare hashes is
  handled too: each hash is fetched over HTTP.
* ``filter``: ``eth_newPendingTransactionFilter`` polled with ``eth_getFilterChanges`` every ``poll_interval``,
  each new hash fetched with ``eth_getTransactionByHash`` (concurrently).
* ``txpool``: ``txpool_content`` polled every ``poll_interval`` (heavy on a busy node: the last resort).

WebSocket client: the ``websockets`` library directly, with a raw JSON-RPC subscription, rather than web3.py's
``AsyncWeb3(WebSocketProvider)`` subscription API. Measured on a loopback stand-in node (a separate process
pushing full EIP-1559 pending-transaction notifications with 1 KiB of calldata; websockets 17.4, web3 8.0,
CPython 3.11, compression off on both):

* latency, socket write to handler, one message every 2 ms: this source median 131-142 µs (p99 197-265 µs),
  web3's subscription manager median 243-277 µs (p99 350-771 µs): ~0.1 ms more, inside the ~0.2 ms allowed;
* CPU per message in a burst of 20,000: this source 24 µs (read, parse, dedupe, normalise, decode, task),
  web3 115 µs up to its handler, before any of our own work;
* correctness: with web3's documented pattern (subscribe, then handle_subscriptions) the two notifications that
  arrived right behind the subscription's answer were never handed to the handler (3 runs out of 3).

The latency alone would have allowed web3; the lost notifications would not (right after a reconnect is exactly
when an attack may already be in the pool), and the raw path also makes a refused subscription, a refused
upgrade and a dropped socket plain to tell apart. The message is read, timestamped, deduplicated and filtered by
sender before anything is decoded; only then are the quantities normalised (as web3 would) and the calldata of
transactions to watched contracts decoded.

Each transaction is handed to the caller's handler; what it returns is awaited in a task of its own (references
kept; a failure is logged at error), so a slow handler never stalls the socket reader; delivery order is therefore
not guaranteed. A handler that does its work on the spot returns a future instead (the daemon's triage does): no
task is made for it, which matters under a flood of thousands of transactions a second.
Hashes are remembered (the last ``DEDUPE_MEMORY``), across reconnects and modes, so each is delivered once.
When the socket drops the source reconnects with a doubling back-off; transactions that enter the pool
during the gap are not seen here (the block source still sees them when they are mined).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import websockets
from eth_utils import is_address
from hexbytes import HexBytes
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

from onguard.chain.checksum import checksum, plain_hex_address
from onguard.chain.rpc import Rpc
from onguard.config import WatchedContract
from onguard.errors import ChainError
from onguard.log import get_logger
from onguard.observations import TransactionObservation
from onguard.sources.blocks import decode_transaction

DEDUPE_MEMORY = 50_000          # hashes remembered to deliver each transaction once
FETCH_CONCURRENCY = 32          # eth_getTransactionByHash requests in flight at once
REQUEST_TIMEOUT = 10.0          # seconds, any single HTTP request or the subscription handshake
PING_INTERVAL = 5.0             # seconds between WebSocket pings: a silently dead link is noticed within ~10 s
CLOSE_TIMEOUT = 0.5             # seconds allowed for the closing handshake, so stopping stays prompt
MAX_FILTER_LOSSES = 3           # filters lost in a row before filters count as refused
YIELD_EVERY = 32               # messages read in a row before the reader lets other tasks run
MAX_MESSAGE = 2**24             # bytes; a pending transaction with a lot of calldata must not kill the socket

SUBSCRIPTION, FILTER, TXPOOL = "subscription", "filter", "txpool"

# JSON-RPC error codes that mean "try again later" rather than "this node will not do that".
_TRANSIENT_CODES = frozenset({-32005, 429})
# HTTP statuses that mean the same for a WebSocket upgrade or an HTTP call.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class PendingTransaction:
    raw: Mapping[str, Any]            # the node's transaction object, normalised as web3 would (normalise_transaction)
    observation: TransactionObservation | None   # decoded when `to` is a watched contract, else None
    seen_at: float                    # time.perf_counter() when it arrived on the socket (or was polled)
    hash: str                         # 0x-hex


PendingHandler = Callable[[PendingTransaction], Awaitable[None]]  # a coroutine (run in a task) or a future


# ---- normalisation: the node's hex strings to what web3.py returns for a transaction ------------------------

def _to(value: Any) -> Any:
    if isinstance(value, str) and (plain_hex_address(value) or is_address(value)):
        return checksum(value)
    return value


def _int(value: Any) -> Any:
    """web3's to_integer_if_hex: a hex string becomes an int, anything else is left alone."""
    return int(value, 16) if isinstance(value, str) else value


def _int_or_none(value: Any) -> Any:
    return None if value is None else _int(value)


def _hexbytes(num_bytes: int, variable_length: bool = False) -> Callable[[Any], Any]:
    """web3's to_hexbytes: exactly num_bytes (leading zero bytes trimmed), or at most num_bytes if variable."""
    def convert(value: Any) -> HexBytes:
        if not isinstance(value, str | int | bytes):
            raise TypeError(f"cannot convert {value!r} to bytes")
        result = HexBytes(value)
        extra = len(result) - num_bytes
        if extra == 0 or (variable_length and extra < 0):
            return result
        if all(byte == 0 for byte in result[:extra]):
            return HexBytes(result[extra:])
        raise ValueError(f"{result.to_0x_hex()} is {len(result)} bytes, expected {num_bytes}")
    return convert


def _if_not_none(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _storage_key(value: Any) -> str:
    if isinstance(value, str):
        if value.startswith("0x") and len(value) == 66:
            return value
        if len(value) == 64:
            return "0x" + value
    elif isinstance(value, bytes):
        if len(value) == 32:
            return HexBytes(value).to_0x_hex()
    elif isinstance(value, int):
        return _storage_key(hex(value))
    raise ValueError(f"a storage key must be 32 bytes, got {value!r}")


def _formatted(formatters: Mapping[str, Callable[[Any], Any]], item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    return {key: formatters[key](value) if key in formatters else value for key, value in item.items()}


_ACCESS_ENTRY = {"address": checksum, "storageKeys": lambda keys: [_storage_key(k) for k in keys]}
_AUTHORISATION = {"chainId": _int, "address": checksum, "nonce": _int, "yParity": _int, "r": _int, "s": _int}

_TRANSACTION: dict[str, Callable[[Any], Any]] = {
    "blockHash": _if_not_none(_hexbytes(32)),
    "blockNumber": _int_or_none,
    "transactionIndex": _int_or_none,
    "nonce": _int,
    "gas": _int,
    "gasPrice": _int,
    "maxFeePerGas": _int,
    "maxPriorityFeePerGas": _int,
    "value": _int,
    "from": checksum,
    "publicKey": _if_not_none(_hexbytes(64)),
    "r": _if_not_none(_hexbytes(32, variable_length=True)),
    "raw": HexBytes,
    "s": _if_not_none(_hexbytes(32, variable_length=True)),
    "to": _to,
    "hash": _hexbytes(32),
    "v": _int_or_none,
    "yParity": _int_or_none,
    "standardV": _int_or_none,
    "type": _int_or_none,
    "chainId": _int_or_none,
    "accessList": _if_not_none(lambda entries: [_formatted(_ACCESS_ENTRY, e) for e in entries]),
    "input": HexBytes,
    "data": HexBytes,  # Nethermind sends both `input` and `data`
    "maxFeePerBlobGas": _int,
    "blobVersionedHashes": _if_not_none(lambda hashes: [_hexbytes(32)(h) for h in hashes]),
    "authorizationList": _if_not_none(lambda entries: [_formatted(_AUTHORISATION, e) for e in entries]),
}


def normalise_transaction(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-RPC transaction object as web3.py's eth.get_transaction returns it (a plain dict, not an
    AttributeDict): ints for quantities, HexBytes for hashes, signatures and input, checksummed addresses. Keys
    web3 does not know are kept as sent."""
    return {key: _TRANSACTION[key](value) if key in _TRANSACTION else value for key, value in raw.items()}


# ---- the source -----------------------------------------------------------------------------------------------

class RecentHashes:
    """The last `capacity` transaction hashes seen (lower-case 0x-hex), oldest forgotten first."""

    def __init__(self, capacity: int = DEDUPE_MEMORY) -> None:
        self._capacity = capacity
        self._set: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, key: str) -> bool:
        return key in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, key: str) -> bool:
        """Remembers the hash; False when it was already remembered."""
        if key in self._set:
            return False
        self._set.add(key)
        self._order.append(key)
        if len(self._order) > self._capacity:
            self._set.discard(self._order.popleft())
        return True


class _Refused(Exception):
    """The node answered, and the answer is no (an error response, a 4xx, a refused upgrade)."""


class _Unavailable(Exception):
    """No usable answer this time (transport failure, timeout, 5xx, rate limit): try again later."""


class _JsonRpc:
    """Raw JSON-RPC through the transport (results as the node sent them), failures sorted into the two kinds the
    source acts on: the transport's faults (no answer, timeout, 5xx, rate limits) are _Unavailable, an error
    answer is _Refused."""

    def __init__(self, rpc: Rpc) -> None:
        self._rpc = rpc

    async def call(self, method: str, params: list[Any]) -> Any:
        try:
            answer = await self._rpc.request(method, params)
        except ChainError as exc:
            raise _Unavailable(exc.message) from exc
        error = answer.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            if code in _TRANSIENT_CODES:
                raise _Unavailable(f"{method}: {message} (code {code})")
            raise _Refused(f"{method}: {message} (code {code})")
        return answer.get("result")


class MempoolSource:
    """Delivers every new pending transaction, once, to a coroutine; see the module docstring."""

    def __init__(self, ws_url: str | None, rpc: Rpc | str, chain_id: int, contracts: Mapping[str, WatchedContract], *,
                 poll_interval: float = 0.2, reconnect_delay: float = 0.5, max_reconnect_delay: float = 10.0,
                 ignore_senders: Iterable[str] = (), yield_each_while: Callable[[], bool] | None = None) -> None:
        """`yield_each_while`: while it answers True (the guardian's pause being sent), the reader lets other
        tasks run after every message rather than every YIELD_EVERY: under a flood, each step of the send (the
        request written, the answer read) otherwise waits behind up to YIELD_EVERY messages being read."""
        self._ws_url = ws_url
        # A URL (tests, the CLI) gets a one-endpoint Rpc of its own; the daemon passes its transport's.
        self._owns_rpc = isinstance(rpc, str)
        self._rpc = Rpc(rpc, request_timeout=REQUEST_TIMEOUT) if isinstance(rpc, str) else rpc
        self._chain_id = chain_id
        self._by_address = {c.address.lower(): c for c in contracts.values()}
        self._poll_interval = poll_interval
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max(max_reconnect_delay, reconnect_delay)
        self._ignore = frozenset(address.lower() for address in ignore_senders)
        self._yield_each_while = yield_each_while or (lambda: False)
        self._seen = RecentHashes()
        self._mode = SUBSCRIPTION if ws_url is not None else FILTER
        self._live = False
        self._handlers: set[asyncio.Future[Any]] = set()   # the caller's coroutines in flight
        self._fetches: set[asyncio.Task[None]] = set()     # hash-only notifications being fetched
        self._fetch_slots: asyncio.Semaphore | None = None
        self._on_pending: PendingHandler | None = None
        self._http: _JsonRpc | None = None
        self._log = get_logger(component="mempool-source", chain_id=chain_id)

    @property
    def mode(self) -> str:
        """"subscription", "filter" or "txpool": what the source is using (or trying to use) now."""
        return self._mode

    @property
    def live(self) -> bool:
        """True while the current mode delivers: subscription confirmed, filter installed, or the last txpool
        poll answered. False before run(), while reconnecting, and after run() returned."""
        return self._live

    async def run(self, on_pending: PendingHandler, stop: asyncio.Event) -> None:
        """Delivers every new pending transaction to on_pending (each in a task of its own, so not in order)
        until stop is set. Transient failures are logged and retried, never raised; raises ChainError only when
        the node refuses all three ways of following its pool. Handlers still running when it returns are left
        to finish (they may be sending a pause)."""
        self._on_pending = on_pending
        self._fetch_slots = asyncio.Semaphore(FETCH_CONCURRENCY)  # made here: bound to run()'s event loop
        self._http = _JsonRpc(self._rpc)
        try:
            follower = asyncio.ensure_future(self._follow())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._live = False
                for task in (follower, stopper, *self._fetches):
                    task.cancel()
                await asyncio.gather(follower, stopper, *self._fetches, return_exceptions=True)
                self._http = None
            if not stop.is_set():
                follower.result()  # the follower only ends on its own by raising
        finally:
            if self._owns_rpc:
                await self._rpc.close()

    # ---- modes ------------------------------------------------------------------------------------------------

    async def _follow(self) -> None:
        if self._ws_url is not None:
            reason = await self._follow_subscription(self._ws_url)
            self._log.warning("the node refused the pending-transaction subscription; falling back",
                              from_mode=SUBSCRIPTION, to_mode=FILTER, reason=reason)
        self._mode = FILTER
        reason = await self._follow_filter()
        self._log.warning("the node refused a pending-transaction filter; falling back",
                          from_mode=FILTER, to_mode=TXPOOL, reason=reason)
        self._mode = TXPOOL
        reason = await self._follow_txpool()
        self._log.error("the node refuses every way of following pending transactions", reason=reason)
        raise ChainError(f"the node serves neither newPendingTransactions subscriptions, "
                         f"pending-transaction filters nor txpool_content ({reason})",
                         hint="point the mempool source at a node that exposes its pending pool (geth, reth, "
                              "Erigon, Nethermind, Anvil; a ws:// URL for the fastest path)")

    async def _follow_subscription(self, url: str) -> str:
        """Follows the subscription, reconnecting for ever; returns (the reason) only when it is refused."""
        delay = self._reconnect_delay
        interrupted = False  # a session was lost or an attempt failed since the last good subscription
        while True:
            established = False
            try:
                async with websockets.connect(url, open_timeout=REQUEST_TIMEOUT, ping_interval=PING_INTERVAL,
                                              ping_timeout=PING_INTERVAL, close_timeout=CLOSE_TIMEOUT,
                                              max_size=MAX_MESSAGE, compression=None) as ws:
                    subscription = await self._subscribe(ws)
                    established = True
                    self._mode, self._live = SUBSCRIPTION, True
                    if interrupted:
                        self._log.info("mempool subscription restored", mode=SUBSCRIPTION)
                    else:
                        self._log.info("following pending transactions", mode=SUBSCRIPTION, url=url)
                    interrupted, delay = False, self._reconnect_delay
                    await self._read(ws, subscription)
            except _Refused as exc:
                self._live = False
                return str(exc)
            except InvalidURI as exc:
                self._live = False
                return f"{type(exc).__name__}: {exc}"
            except InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status not in _TRANSIENT_STATUSES:
                    self._live = False
                    return f"the WebSocket upgrade was answered with HTTP {status}"
                error = f"{type(exc).__name__}: {exc}"
            except (WebSocketException, OSError, asyncio.TimeoutError, _Unavailable, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._live = False
            interrupted = True
            if established:
                self._log.warning("mempool subscription lost; reconnecting", delay=delay, error=error)
            else:
                self._log.warning("mempool subscription could not be established; retrying", delay=delay,
                                  error=error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_reconnect_delay)

    async def _subscribe(self, ws: ClientConnection) -> str:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                  "params": ["newPendingTransactions", True]}))
        async with asyncio.timeout(REQUEST_TIMEOUT):
            while True:
                answer = json.loads(await ws.recv())
                if not isinstance(answer, dict) or answer.get("id") != 1:
                    continue  # nothing else is expected before the answer; whatever it is, it is not ours
                if answer.get("error") is not None:
                    error = answer["error"]
                    code = error.get("code") if isinstance(error, dict) else None
                    if code in _TRANSIENT_CODES:
                        raise _Unavailable(f"eth_subscribe: {error}")
                    raise _Refused(f"eth_subscribe(newPendingTransactions, true): "
                                   f"{error.get('message') if isinstance(error, dict) else error}")
                subscription = answer.get("result")
                if not isinstance(subscription, str):
                    raise _Refused(f"eth_subscribe answered {subscription!r}, not a subscription id")
                return subscription

    async def _read(self, ws: ClientConnection, subscription: str) -> None:
        """The hot loop: read, timestamp, hand over. Raises ConnectionClosed when the socket goes."""
        unyielded = 0
        while True:
            if unyielded >= YIELD_EVERY or (unyielded and self._yield_each_while()):
                # recv() does not give the loop away while messages are buffered: under a flood the handlers'
                # work (a pause to send) would wait for the whole backlog to be read.
                await asyncio.sleep(0)
                unyielded = 0
            message = await ws.recv()
            unyielded += 1
            seen_at = time.perf_counter()
            try:
                params = json.loads(message)["params"]
                if params["subscription"] != subscription:
                    continue
                item = params["result"]
            except (ValueError, KeyError, TypeError):
                continue  # not a notification of ours (a stray answer, a ping payload): nothing to deliver
            if isinstance(item, dict):
                self._accept(item, seen_at)
            elif isinstance(item, str):
                self._fetch_later(item, seen_at)

    async def _follow_filter(self) -> str:
        """Polls a pending-transaction filter for ever; returns (the reason) only when creating one is refused."""
        http = self._http
        assert http is not None
        filter_id: str | None = None
        delay = self._reconnect_delay
        announced = False
        losses = 0  # filters lost in a row, without one successful poll
        while True:
            try:
                if filter_id is None:
                    try:
                        filter_id = await http.call("eth_newPendingTransactionFilter", [])
                    except _Refused as exc:
                        return str(exc)
                    self._live = True
                    if not announced:
                        self._log.info("following pending transactions", mode=FILTER)
                        announced = True
                try:
                    hashes = await http.call("eth_getFilterChanges", [filter_id])
                except _Refused as exc:
                    # Filters expire on most nodes when not polled for a while (a long pause, a suspend); one
                    # lost every time is a load-balanced endpoint whose backends do not share filters.
                    filter_id, self._live = None, False
                    losses += 1
                    if losses >= MAX_FILTER_LOSSES:
                        return f"{losses} filters in a row were unknown at their first poll ({exc})"
                    self._log.warning("the pending-transaction filter was dropped by the node; installing another",
                                      error=str(exc))
                    await asyncio.sleep(self._poll_interval)
                    continue
                seen_at = time.perf_counter()
                delay, losses = self._reconnect_delay, 0
                new = [h for h in hashes or () if isinstance(h, str) and h.lower() not in self._seen]
                if new:
                    await asyncio.gather(*(self._fetch(h, seen_at) for h in new))
            except _Unavailable as exc:
                self._live = False
                self._log.warning("mempool filter poll failed; retrying", delay=delay, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)
                continue
            self._live = filter_id is not None
            await asyncio.sleep(self._poll_interval)

    async def _follow_txpool(self) -> str:
        """Polls txpool_content for ever; returns (the reason) only when it is refused from the start."""
        http = self._http
        assert http is not None
        delay = self._reconnect_delay
        announced = False
        while True:
            try:
                content = await http.call("txpool_content", [])
            except _Refused as exc:
                if not announced:
                    return str(exc)
                self._log.warning("txpool_content failed; retrying", delay=delay, error=str(exc))
                content = None
            except _Unavailable as exc:
                self._log.warning("txpool_content failed; retrying", delay=delay, error=str(exc))
                content = None
            if content is None:
                self._live = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_reconnect_delay)
                continue
            seen_at = time.perf_counter()
            delay = self._reconnect_delay
            self._live = True
            if not announced:
                self._log.info("following pending transactions", mode=TXPOOL)
                announced = True
            pending = content.get("pending") if isinstance(content, dict) else None
            for by_nonce in (pending or {}).values():
                items = by_nonce.values() if isinstance(by_nonce, dict) else ()
                for item in sorted(items, key=_nonce_of):
                    if isinstance(item, dict):
                        self._accept(item, seen_at)
            await asyncio.sleep(self._poll_interval)

    # ---- delivery ---------------------------------------------------------------------------------------------

    def _fetch_later(self, tx_hash: str, seen_at: float) -> None:
        """A bare hash on the subscription (a node that ignored `true`): fetched without blocking the reader."""
        if tx_hash.lower() in self._seen:
            return
        task = asyncio.ensure_future(self._fetch(tx_hash, seen_at))
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)

    async def _fetch(self, tx_hash: str, seen_at: float) -> None:
        http, slots = self._http, self._fetch_slots
        assert http is not None and slots is not None
        item: Any = None
        async with slots:
            for attempt in (1, 2):
                try:
                    item = await http.call("eth_getTransactionByHash", [tx_hash])
                    break
                except (_Refused, _Unavailable) as exc:
                    if attempt == 2:
                        self._log.warning("a pending transaction could not be fetched; skipped", tx_hash=tx_hash,
                                          error=str(exc))
        if isinstance(item, dict):
            self._accept(item, seen_at)
        # None: mined or dropped between the announcement and the fetch; the block source sees it if it was mined

    def _accept(self, item: Mapping[str, Any], seen_at: float) -> None:
        """Dedupe, filter by sender, normalise, decode, hand over in a task. Never raises."""
        tx_hash = item.get("hash")
        if not isinstance(tx_hash, str) or not self._seen.add(tx_hash.lower()):
            return
        sender = item.get("from")
        if isinstance(sender, str) and sender.lower() in self._ignore:
            return
        try:
            raw = normalise_transaction(item)
        except (ValueError, TypeError) as exc:
            self._log.warning("a pending transaction could not be read; skipped", tx_hash=tx_hash, error=str(exc))
            return
        try:
            observation = decode_transaction(raw, self._chain_id, self._by_address)
        except Exception as exc:  # noqa: BLE001 - delivered undecoded rather than lost
            self._log.warning("a pending transaction could not be decoded; delivered undecoded", tx_hash=tx_hash,
                              to=item.get("to"), error=f"{type(exc).__name__}: {exc}")
            observation = None
        pending = PendingTransaction(raw=MappingProxyType(raw), observation=observation, seen_at=seen_at,
                                     hash=raw["hash"].to_0x_hex())
        assert self._on_pending is not None
        try:
            handler = asyncio.ensure_future(self._on_pending(pending))
        except Exception as exc:  # noqa: BLE001 - a handler that fails before it is even awaitable
            self._log.error("the pending-transaction handler failed", tx_hash=pending.hash,
                            error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            return
        if isinstance(handler, asyncio.Task):
            handler.set_name(f"mempool:{pending.hash}")
        self._handlers.add(handler)
        handler.add_done_callback(self._handler_done)

    def _handler_done(self, handler: asyncio.Future[Any]) -> None:
        self._handlers.discard(handler)
        if handler.cancelled():
            return
        exc = handler.exception()
        if exc is not None:
            name = handler.get_name() if isinstance(handler, asyncio.Task) else ""
            self._log.error("the pending-transaction handler failed", tx_hash=name.removeprefix("mempool:"),
                            error=f"{type(exc).__name__}: {exc}", exc_info=exc)


def _nonce_of(item: Any) -> int:
    try:
        return int(item.get("nonce"), 16) if isinstance(item.get("nonce"), str) else int(item.get("nonce", 0))
    except (AttributeError, TypeError, ValueError):
        return 0
