"""Every JSON-RPC call onguard makes goes through one Transport: endpoints with roles and health, failover across
the read endpoints (healthy first, a clearly slower one after the others), a deadline around each call, an
explicit retry policy (nothing below it retries on its own), one throttle per endpoint, simulation batches spread
over several endpoints at once, and raw transactions sent to several endpoints at once. An endpoint is asked
over HTTP(S), or over one persistent WebSocket when its URL is ws:// or wss:// (onguard.chain.wsrpc: opened on first
use, reopened on the call after a drop, several calls in flight on it): the same deadline, throttle, health and
faults either way.

Answers are returned as the node sent them (a JSON-RPC response object); `onguard.chain.rpc.Rpc` puts web3's
result formatting on top. An endpoint that gives no usable answer (no connection, no answer before the
deadline, HTTP 429/5xx, a body that is not JSON-RPC, a rate-limit error) is a fault of that endpoint: it is
recorded in its health, logged, and the call moves on to the next endpoint. An answer with a JSON-RPC error
(a revert, an unknown method) is the chain's answer and is returned, not failed over — except a simulation
endpoint refusing eth_simulateV1 itself: it is marked unable to simulate and simulations go to the others.

Each endpoint keeps a moving estimate of its latency (an EWMA of its successful calls). An endpoint whose estimate
is clearly above the fastest healthy one of its role (SLOWER_BY times and SLOWER_BY_MS more) is demoted for
slowness: it is asked after the others until its estimate comes back within BACK_WITHIN times (or SLOWER_BY_MS) of
the fastest — two thresholds, so two similar endpoints do not swap places, and among similar ones the configured
order wins. An estimate older than MEASURE_EVERY seconds is stale: a demoted endpoint with a stale estimate is given
one call in its configured place (the fresh sample replaces the estimate, so it can come back), and so is a healthy
endpoint never measured while the first one is slow enough to be beaten. In the daemon, the chain watch's probes
keep every estimate fresh, so this rarely costs a real call.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from asyncio_throttle import Throttler
from hexbytes import HexBytes
from web3.providers.async_base import AsyncJSONBaseProvider

from onguard.chain.wsrpc import WebSocketFault, WebSocketRpc
from onguard.errors import ChainError, ChainUnavailable, SimulationUnsupported
from onguard.log import get_logger

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_REQUESTS_PER_SECOND = 500
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_TRANSIENT_CODES = frozenset({-32005, 429})  # "limit exceeded" / rate limited: the node is there but not for us
_MAX_ERROR_TEXT = 200
LATENCY_WEIGHT = 0.3  # the newest sample's weight in an endpoint's latency estimate
SLOWER_BY = 3.0  # demoted for slowness above this many times the fastest healthy endpoint's estimate ...
SLOWER_BY_MS = 50.0  # ... and at least this many milliseconds above it (a few ms either way is noise)
BACK_WITHIN = 1.5  # promoted again within this many times the fastest (or within SLOWER_BY_MS of it)
MEASURE_EVERY = 30.0  # seconds after which an estimate is stale (a demoted endpoint is then tried again)
RECHECK_SIMULATION_EVERY = 300.0  # seconds before an endpoint that refused eth_simulateV1 is asked again
SIMULATE_METHOD = "eth_simulateV1"
# How nodes say they do not serve a method: -32601 (JSON-RPC "method not found"), -32004 (EIP-1474 "method not
# supported"), or words to that effect under another code (providers that disabled it).
_UNSUPPORTED_CODES = frozenset({-32601, -32004})
_UNSUPPORTED_TEXT = re.compile(r"method not (found|supported|allowed|available)|unsupported method"
                               r"|eth_simulateV1\b.{0,40}\b(not found|not supported|unsupported|does not exist"
                               r"|not available|disabled)", re.IGNORECASE)


class Role(StrEnum):
    """What an endpoint is used for. Reads fail over between READ endpoints; simulation batches are spread over
    the SIMULATE ones (each batch on the least busy healthy one); transactions go to SEND ones (PRIVATE_SEND: a
    builder or protect RPC that does not gossip to the public mempool)."""

    READ = "read"
    SIMULATE = "simulate"
    SEND = "send"
    PRIVATE_SEND = "private-send"


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    url: str
    role: Role = Role.READ


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call tries: `rounds` passes over the endpoints of its role (healthy first, each endpoint
    once per pass), `backoff` seconds between passes. The default, one pass, never asks the same endpoint twice:
    the daemon's own loop is the retry."""

    rounds: int = 1
    backoff: float = 0.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.backoff < 0:
            raise ValueError(f"a retry policy needs rounds >= 1 and backoff >= 0, not {self}")


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """One endpoint as the transport has found it. Times are Unix seconds."""

    label: str
    role: Role
    consecutive_failures: int
    last_error: str | None
    last_success_at: float | None
    last_failure_at: float | None
    last_head: int | None
    latency_ms: float | None  # the last successful call
    latency_estimate_ms: float | None = None  # the moving estimate the failover order uses
    slow: bool = False  # demoted for slowness: asked after the healthy endpoints that are clearly faster
    answered: int = 0  # successful calls so far
    cannot_simulate: str | None = None  # why it was found unable to run eth_simulateV1 (simulation endpoints)

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0

    def brief(self) -> str:
        """A few words for the heartbeat log: ok or failing, the latency estimate, slow, cannot simulate."""
        words = ["ok" if self.healthy else f"failing x{self.consecutive_failures}"]
        if self.latency_estimate_ms is not None:
            words.append(f"~{self.latency_estimate_ms:g} ms")
        if self.slow:
            words.append("slow")
        if self.cannot_simulate:
            words.append("cannot simulate")
        return ", ".join(words)


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A raw transaction sent to several endpoints: the hash the first acceptance returned, who took it and who
    refused it (label, reason)."""

    tx_hash: str
    accepted: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]


class EndpointFault(Exception):
    """This endpoint gave no usable answer; another one may."""


class _CannotSimulate(EndpointFault):
    """This endpoint answered, but does not serve eth_simulateV1."""


def endpoint_label(url: str, role: Role, index: int) -> str:
    """How an endpoint is named in logs and status: role, position and host only. A URL's path and query often
    hold an API key, so they never appear."""
    return f"{role.value}#{index} {_origin(url)}"


def redacted_url(url: str) -> str:
    """A node's URL as messages, logs and reports may show it: scheme, host and port, with "/…" standing for a path
    or query (providers put the API key there: https://eth-mainnet.example/v2/KEY), and user and password dropped."""
    parts = urlsplit(url)
    hidden = (parts.path not in ("", "/")) or bool(parts.query) or bool(parts.fragment)
    return _origin(url) + ("/…" if hidden else "")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: said as "?" rather than raising in an error path
        port = ":?"
    return f"{parts.scheme}://{host}{port}"


class _Endpoint:
    """The mutable record behind an EndpointHealth, owned by the transport."""

    def __init__(self, spec: EndpointSpec, index: int, requests_per_second: int,
                 clock: Callable[[], float]) -> None:
        self.url = spec.url
        self.role = spec.role
        self.index = index
        self.label = endpoint_label(spec.url, spec.role, index)
        self.over_socket = urlsplit(spec.url).scheme in ("ws", "wss")
        self.throttler = Throttler(rate_limit=requests_per_second, period=1.0)
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self.last_head: int | None = None
        self.latency_ms: float | None = None
        self.in_flight = 0  # spread batches under way on it
        self.spread_uses = 0  # spread batches given to it so far (ties between idle endpoints go round)
        self.clock = clock
        self.estimate_ms: float | None = None
        self.measured_at: float | None = None  # clock() of the last sample
        self.tried_at: float | None = None  # clock() when it was last put first to be measured again
        self.slow = False
        self.answered = 0
        self.cannot_simulate: str | None = None
        self.cannot_simulate_since: float | None = None  # clock() of the refusal (or of the last recheck)

    def succeeded(self, latency: float) -> None:
        self.consecutive_failures = 0
        self.last_success_at = time.time()
        self.latency_ms = round(latency * 1000, 2)
        self.answered += 1
        now = self.clock()
        if self.estimate_ms is None or self.measured_at is None or now - self.measured_at >= MEASURE_EVERY:
            self.estimate_ms = self.latency_ms  # an old estimate says nothing of the node now: replaced
        else:
            self.estimate_ms = round(self.estimate_ms + LATENCY_WEIGHT * (self.latency_ms - self.estimate_ms), 2)
        self.measured_at = now

    def stale(self) -> bool:
        """No sample (nor a try to get one) for MEASURE_EVERY seconds."""
        last = max((t for t in (self.measured_at, self.tried_at) if t is not None), default=None)
        return last is None or self.clock() - last >= MEASURE_EVERY

    def can_simulate(self) -> bool:
        """Not known to refuse eth_simulateV1, or refused long enough ago to be asked again."""
        return self.cannot_simulate_since is None or \
            self.clock() - self.cannot_simulate_since >= RECHECK_SIMULATION_EVERY

    def failed(self, error: str) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        self.last_failure_at = time.time()

    def snapshot(self) -> EndpointHealth:
        return EndpointHealth(label=self.label, role=self.role, consecutive_failures=self.consecutive_failures,
                              last_error=self.last_error, last_success_at=self.last_success_at,
                              last_failure_at=self.last_failure_at, last_head=self.last_head,
                              latency_ms=self.latency_ms, latency_estimate_ms=self.estimate_ms, slow=self.slow,
                              answered=self.answered, cannot_simulate=self.cannot_simulate)


class Transport:
    """The endpoints of one chain. Safe to share between tasks; HTTP sessions and WebSockets are made per event
    loop."""

    def __init__(self, endpoints: Iterable[EndpointSpec], *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 retry: RetryPolicy = RetryPolicy(), requests_per_second: int = DEFAULT_REQUESTS_PER_SECOND,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`clock` times calls and ages latency estimates (tests pass a scripted one)."""
        specs = list(endpoints)
        if not any(spec.role == Role.READ for spec in specs):
            raise ValueError("a transport needs at least one read endpoint")
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, not {request_timeout}")
        counters = {role: itertools.count(1) for role in Role}
        self._endpoints = [_Endpoint(spec, next(counters[spec.role]), requests_per_second, clock) for spec in specs]
        self._clock = clock
        self.request_timeout = request_timeout
        self.retry = retry
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._sockets: dict[str, WebSocketRpc] = {}  # by URL: one socket per ws:// endpoint
        self._sockets_loop: asyncio.AbstractEventLoop | None = None
        self._log = get_logger(component="transport")

    @classmethod
    def from_urls(cls, read_urls: Sequence[str], *, send: Sequence[tuple[str, bool]] = (),
                  simulate: Sequence[str] = (), request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                  retry: RetryPolicy = RetryPolicy(), requests_per_second: int = DEFAULT_REQUESTS_PER_SECOND,
                  clock: Callable[[], float] = time.perf_counter) -> Transport:
        """Read endpoints in failover order; send endpoints as (url, private) pairs; simulation endpoints."""
        specs = [EndpointSpec(url, Role.READ) for url in read_urls]
        specs += [EndpointSpec(url, Role.SIMULATE) for url in simulate]
        specs += [EndpointSpec(url, Role.PRIVATE_SEND if private else Role.SEND) for url, private in send]
        return cls(specs, request_timeout=request_timeout, retry=retry, requests_per_second=requests_per_second,
                   clock=clock)

    @classmethod
    def from_config(cls, config: Any) -> Transport:
        """The chain's read endpoints ([chain] rpc_url, rpc_urls), the simulation endpoints ([mempool]
        simulation_urls) and the response's send endpoints ([response.endpoints], private first)."""
        chain = config.chain
        sends = sorted(((e.url, e.private) for e in config.response.endpoints), key=lambda pair: not pair[1])
        return cls.from_urls(chain.read_urls, send=sends, simulate=config.mempool.simulation_urls,
                             request_timeout=chain.request_timeout, requests_per_second=chain.requests_per_second)

    # ---- what the transport knows ----------------------------------------------------------------------------

    def health(self, role: Role | None = None) -> tuple[EndpointHealth, ...]:
        return tuple(e.snapshot() for e in self._endpoints if role is None or e.role == role)

    def labels(self, role: Role) -> tuple[str, ...]:
        return tuple(e.label for e in self._endpoints if e.role == role)

    def urls(self, role: Role) -> tuple[str, ...]:
        return tuple(e.url for e in self._endpoints if e.role == role)

    def note_head(self, label: str, head: int) -> None:
        self._by_label(label).last_head = head

    def demote(self, label: str, reason: str) -> None:
        """Counts a failure the transport could not see (an endpoint that answers, but for another chain):
        reads go to the other endpoints first until it answers well again."""
        self._by_label(label).failed(reason)

    def _by_label(self, label: str) -> _Endpoint:
        for endpoint in self._endpoints:
            if endpoint.label == label:
                return endpoint
        raise KeyError(label)

    def _in_order(self, role: Role) -> list[_Endpoint]:
        """Healthy endpoints first in configured order, those demoted for slowness after the others, then the
        failing ones, fewest failures first. One healthy endpoint whose estimate is stale goes first for this call,
        to be measured again: a demoted one (so it can come back), or one never measured while the first is slow
        enough that another could beat it."""
        mine = [e for e in self._endpoints if e.role == role]
        order = sorted(mine, key=lambda e: (e.consecutive_failures > 0, e.consecutive_failures, e.slow, e.index))
        first = order[0] if order else None
        beatable = first is not None and first.estimate_ms is not None and first.estimate_ms > SLOWER_BY_MS
        for endpoint in order[1:]:
            if endpoint.consecutive_failures == 0 and endpoint.stale() and \
                    (endpoint.slow or (beatable and endpoint.estimate_ms is None)):
                endpoint.tried_at = self._clock()  # this call measures it; the calls meanwhile keep the order
                order.remove(endpoint)
                order.insert(0, endpoint)
                break
        return order

    def _rank(self, role: Role) -> None:
        """Demotes an endpoint clearly slower than the fastest healthy one of its role, and promotes it back once
        it is close again (two thresholds: no flapping between similar endpoints)."""
        mine = [e for e in self._endpoints if e.role == role and e.estimate_ms is not None]
        peers = [e.estimate_ms for e in mine if e.consecutive_failures == 0 and e.cannot_simulate is None]
        if not peers:
            return
        fastest = min(peers)  # type: ignore[type-var]
        for endpoint in mine:
            estimate = endpoint.estimate_ms
            assert estimate is not None
            if not endpoint.slow and estimate > fastest * SLOWER_BY and estimate - fastest > SLOWER_BY_MS:
                endpoint.slow = True
                self._log.warning("endpoint demoted for slowness: asked after the faster ones",
                                  endpoint=endpoint.label, estimate_ms=estimate, fastest_ms=fastest)
            elif endpoint.slow and (estimate <= fastest * BACK_WITHIN or estimate - fastest <= SLOWER_BY_MS):
                endpoint.slow = False
                self._log.info("endpoint back in its configured place: no longer slow", endpoint=endpoint.label,
                               estimate_ms=estimate, fastest_ms=fastest)

    # ---- calls -----------------------------------------------------------------------------------------------

    async def request(self, method: str, params: Any, *, retry: RetryPolicy | None = None) -> dict[str, Any]:
        """One JSON-RPC call on the read endpoints; the response object of the first endpoint that answers."""
        answer = await self._fail_over(method, [(method, params)], batch=False, retry=retry)
        assert isinstance(answer, dict)
        return answer

    async def batch(self, requests: Sequence[tuple[str, Any]], *,
                    retry: RetryPolicy | None = None) -> list[dict[str, Any]] | dict[str, Any]:
        """Several calls in one round trip on one read endpoint: the responses in request order, or the single
        error object of a node that refuses batches."""
        return await self._fail_over(f"batch of {len(requests)}", list(requests), batch=True, retry=retry)

    async def spread_batch(self, requests: Sequence[tuple[str, Any]], *, deadline: float | None = None,
                           hedge: int = 1) -> list[dict[str, Any]] | dict[str, Any]:
        """A simulation batch on the least busy healthy SIMULATE endpoint, failing over to the others in turn (on
        the read endpoints, as `batch`, when none is configured). Concurrent batches land on different endpoints,
        so a slow or failing one holds only the batch it was given. `deadline` (time.perf_counter()) bounds the
        whole batch: an attempt gets at most half of what is left while another endpoint could still answer.
        `hedge` > 1 sends the batch to that many healthy endpoints at once and takes the first answer (for what
        must not wait on a slow node: the first transaction of a shape, what an attack looks like).

        An endpoint that answers that it does not serve eth_simulateV1 is marked unable to simulate (said once) and
        the batch goes on to the next one; it is asked again after RECHECK_SIMULATION_EVERY seconds. When none is
        left that can simulate, SimulationUnsupported."""
        if not any(e.role == Role.SIMULATE for e in self._endpoints):
            answer = await self.batch(requests)
            refusal = _simulation_refused(answer, requests)
            if refusal is not None:
                raise SimulationUnsupported(f"the read endpoint does not serve {SIMULATE_METHOD} ({refusal})",
                                            hint="list nodes that serve eth_simulateV1 (geth 1.14+, reth, Anvil) in "
                                                 "[mempool] simulation_urls")
            return answer
        what = f"simulation batch of {len(requests)}"
        order = [e for e in self._least_busy(Role.SIMULATE) if e.can_simulate()]
        if not order:
            raise self._no_simulation_endpoint()
        recheck = next((e for e in order if e.cannot_simulate_since is not None), None)
        if recheck is not None:  # it refused long ago: this batch asks it first, the next ones wait for its answer
            recheck.cannot_simulate_since = self._clock()
            order.remove(recheck)
            order.insert(0, recheck)
        width = max(1, min(hedge, sum(1 for e in order if e.consecutive_failures == 0)))
        groups = [order[:width], *([e] for e in order[width:])]
        failures: list[str] = []
        for position, group in enumerate(groups):
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                break
            timeout = None if left is None else (left if position + 1 == len(groups) else left / 2)
            answer = await self._first_answer(group, what, list(requests), timeout, failures)
            if answer is not None:
                return answer
        if not any(e.can_simulate() for e in self._endpoints if e.role == Role.SIMULATE):
            raise self._no_simulation_endpoint()
        tried = "; ".join(failures) or "no time left"
        raise ChainUnavailable(f"{what}: no simulation endpoint answered in time ({tried})",
                               hint="check the nodes of [mempool] simulation_urls")

    async def _first_answer(self, group: list[_Endpoint], what: str, requests: list[tuple[str, Any]],
                            timeout: float | None, failures: list[str]) -> Any:
        """The batch on every endpoint of `group` at once: the first answer (the other attempts cancelled), or
        None when each failed (its failure added to `failures`)."""
        if len(group) == 1:  # the usual case, without a task of its own
            try:
                return await self._spread_attempt(group[0], what, requests, timeout)
            except EndpointFault as exc:
                failures.append(f"{group[0].label}: {exc}")
                return None
        attempts = {asyncio.ensure_future(self._spread_attempt(e, what, requests, timeout)): e for e in group}
        try:
            waiting = set(attempts)
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for attempt in done:
                    error = attempt.exception()
                    if error is None:
                        return attempt.result()
                    if not isinstance(error, EndpointFault):
                        raise error
                    failures.append(f"{attempts[attempt].label}: {error}")
            return None
        finally:
            for attempt in attempts:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    async def _spread_attempt(self, endpoint: _Endpoint, what: str, requests: list[tuple[str, Any]],
                              timeout: float | None) -> Any:
        endpoint.in_flight += 1
        endpoint.spread_uses += 1
        try:
            answer = await self._attempt(endpoint, what, requests, batch=True, timeout=timeout)
        except EndpointFault as exc:
            self._log.error("simulation endpoint failed", endpoint=endpoint.label, call=what, error=str(exc),
                            consecutive_failures=endpoint.consecutive_failures)
            raise
        finally:
            endpoint.in_flight -= 1
        refusal = _simulation_refused(answer, requests)
        if refusal is not None:
            if endpoint.cannot_simulate is None:  # said once, not once per batch
                self._log.error("simulation endpoint does not serve eth_simulateV1: simulations go to the other "
                                "simulation endpoints", endpoint=endpoint.label, answer=refusal,
                                asked_again_in=f"{RECHECK_SIMULATION_EVERY:g}s")
            endpoint.cannot_simulate = refusal
            endpoint.cannot_simulate_since = self._clock()
            raise _CannotSimulate(f"does not serve {SIMULATE_METHOD}: {refusal}")
        if endpoint.cannot_simulate is not None:
            self._log.info("simulation endpoint serves eth_simulateV1 again", endpoint=endpoint.label)
            endpoint.cannot_simulate = endpoint.cannot_simulate_since = None
            self._rank(endpoint.role)
        return answer

    def _no_simulation_endpoint(self) -> SimulationUnsupported:
        refusing = "; ".join(f"{e.label}: {e.cannot_simulate}" for e in self._endpoints
                             if e.role == Role.SIMULATE and e.cannot_simulate)
        return SimulationUnsupported(f"no simulation endpoint serves {SIMULATE_METHOD} ({refusing})",
                                     hint="list nodes that serve eth_simulateV1 (geth 1.14+, reth, Anvil) in "
                                          "[mempool] simulation_urls")

    def _least_busy(self, role: Role) -> list[_Endpoint]:
        """Healthy endpoints first, the least busy of them first (ties: those not demoted for slowness, then the
        least used, then configured order); the failing ones after them, fewest failures first."""
        mine = [e for e in self._endpoints if e.role == role]
        return sorted(mine, key=lambda e: (e.consecutive_failures > 0, e.consecutive_failures, e.in_flight,
                                           e.slow and not e.stale(), e.spread_uses, e.index))

    async def batch_on(self, label: str, requests: Sequence[tuple[str, Any]]) -> list[dict[str, Any]] | dict[str, Any]:
        """A batch on one named endpoint, without failover (health probes). Raises EndpointFault."""
        endpoint = self._by_label(label)
        return await self._attempt(endpoint, f"batch of {len(requests)}", list(requests), batch=True)

    async def send_raw(self, raw: bytes, *, private: bool | None = None, required: bool = True) -> Broadcast:
        """Sends a signed transaction to every send endpoint at once (private ones only, public ones only, or all
        when `private` is None), each exactly once: this is the hot path, there is no retry here. Raises
        ChainError when none accepted it and `required` is set (or there is no such endpoint)."""
        roles = {True: (Role.PRIVATE_SEND,), False: (Role.SEND,), None: (Role.PRIVATE_SEND, Role.SEND)}[private]
        targets = [e for role in roles for e in self._in_order(role)]
        if not targets:
            if required:
                raise ChainError(f"no {'/'.join(r.value for r in roles)} endpoint is configured",
                                 hint="list the endpoints in [[response.endpoints]]")
            return Broadcast(tx_hash="", accepted=(), refused=())
        params = [HexBytes(raw).to_0x_hex()]
        results = await asyncio.gather(*(self._attempt(e, "eth_sendRawTransaction", [("eth_sendRawTransaction",
                                                                                       params)], batch=False)
                                         for e in targets), return_exceptions=True)
        accepted: list[tuple[str, str]] = []
        refused: list[tuple[str, str]] = []
        for endpoint, result in zip(targets, results, strict=True):
            if isinstance(result, dict) and isinstance(result.get("result"), str):
                accepted.append((endpoint.label, result["result"]))
            elif isinstance(result, dict):
                refused.append((endpoint.label, _error_text(result.get("error"))))
            elif isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            else:
                refused.append((endpoint.label, str(result)))
        if not accepted and required:
            raise ChainError("every endpoint refused the transaction: "
                             + "; ".join(f"{label}: {reason}" for label, reason in refused))
        return Broadcast(tx_hash=accepted[0][1] if accepted else "", accepted=tuple(a for a, _ in accepted),
                         refused=tuple(refused))

    async def _fail_over(self, what: str, requests: list[tuple[str, Any]], *, batch: bool,
                         retry: RetryPolicy | None) -> Any:
        policy = retry or self.retry
        failures: list[str] = []
        for round_number in range(policy.rounds):
            if round_number and policy.backoff:
                await asyncio.sleep(policy.backoff)
            order = self._in_order(Role.READ)
            for position, endpoint in enumerate(order):
                try:
                    return await self._attempt(endpoint, what, requests, batch=batch)
                except EndpointFault as exc:
                    failures.append(f"{endpoint.label}: {exc}")
                    following = order[position + 1].label if position + 1 < len(order) else None
                    self._log.error("rpc endpoint failed", endpoint=endpoint.label, call=what, error=str(exc),
                                    consecutive_failures=endpoint.consecutive_failures, trying_next=following)
        raise ChainUnavailable(f"{what}: no read endpoint answered ({'; '.join(failures[-len(order):])})",
                               hint="check that the nodes are running and [chain] rpc_url / rpc_urls are right")

    async def _attempt(self, endpoint: _Endpoint, what: str, requests: list[tuple[str, Any]], *,
                       batch: bool, timeout: float | None = None) -> Any:
        """One try on one endpoint within the deadline (the transport's, or a shorter `timeout`); its health
        updated either way."""
        deadline = self.request_timeout if timeout is None else min(timeout, self.request_timeout)
        ids = [next(self._ids) for _ in requests]
        payloads = [{"jsonrpc": "2.0", "id": i, "method": m, "params": [] if p is None else p}
                    for i, (m, p) in zip(ids, requests, strict=True)]
        body = (b"[" + b",".join(AsyncJSONBaseProvider.encode_rpc_dict(p) for p in payloads) + b"]") if batch \
            else AsyncJSONBaseProvider.encode_rpc_dict(payloads[0])  # type: ignore[arg-type]
        started = self._clock()
        try:
            async with asyncio.timeout(deadline):
                async with endpoint.throttler:
                    answer = await self._exchange(endpoint, body, ids, batch)
        except TimeoutError:
            fault = EndpointFault(f"no answer within {deadline:.3g}s")
        except (aiohttp.ClientError, OSError) as exc:
            fault = EndpointFault(f"{type(exc).__name__}: {_short(str(exc))}")
        except WebSocketFault as exc:
            fault = EndpointFault(str(exc))
        except EndpointFault as exc:
            fault = exc
        else:
            endpoint.succeeded(self._clock() - started)
            self._rank(endpoint.role)
            return answer
        endpoint.failed(str(fault))
        raise fault

    async def _exchange(self, endpoint: _Endpoint, body: bytes, ids: list[int], batch: bool) -> Any:
        """The body sent to the endpoint and its JSON-RPC answer: over its WebSocket (ws://, wss://), where the
        answer is the message with the body's ids, or as an HTTP POST."""
        if endpoint.over_socket:
            message = await self._socket_for_this_loop(endpoint.url).call(body, ids)
            return _checked(message, ids if batch else None, "a WebSocket message")
        status, raw = await self._post(endpoint.url, body)
        return _answer(status, raw, ids if batch else None)

    def _socket_for_this_loop(self, url: str) -> WebSocketRpc:
        loop = asyncio.get_running_loop()
        if self._sockets_loop is not loop:  # as sessions: a socket belongs to the loop it was opened in
            self._sockets, self._sockets_loop = {}, loop
        socket = self._sockets.get(url)
        if socket is None:
            socket = self._sockets[url] = WebSocketRpc(url)
        return socket

    async def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        session = self._session_for_this_loop()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.read()

    def _session_for_this_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # A session belongs to the loop it was made in (CLI commands and tests run several loops in turn).
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            self._session_loop = loop
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._session_loop is asyncio.get_running_loop():
            await session.close()
        sockets, self._sockets = self._sockets, {}
        if self._sockets_loop is asyncio.get_running_loop():
            await asyncio.gather(*(socket.close() for socket in sockets.values()))


def _answer(status: int, raw: bytes, batch_ids: list[int] | None) -> Any:
    """The JSON-RPC answer in a body, or EndpointFault when the body is not one."""
    if status in _TRANSIENT_STATUSES or status >= 500:
        raise EndpointFault(f"HTTP {status}")
    try:
        body = json.loads(raw)
    except ValueError:
        raise EndpointFault(f"HTTP {status} with a body that is not JSON: {_short(raw.decode('utf-8', 'replace'))!r}")
    return _checked(body, batch_ids, f"HTTP {status} with a body")


def _checked(body: Any, batch_ids: list[int] | None, what: str) -> Any:
    """A parsed answer if it is a JSON-RPC answer (a batch's: its responses in request order), or EndpointFault.
    `what` names where it came from in the fault's words."""
    if batch_ids is not None and isinstance(body, list):
        if not all(_is_response(item) for item in body):
            raise EndpointFault("a batch answer holds something that is not a JSON-RPC response")
        by_id = {item.get("id"): item for item in body}
        if set(by_id) != set(batch_ids):
            raise EndpointFault(f"a batch of {len(batch_ids)} was answered with {len(body)} responses")
        return [by_id[i] for i in batch_ids]
    if not _is_response(body):
        raise EndpointFault(f"{what} that is not a JSON-RPC response: {_short(str(body))!r}")
    error = body.get("error")
    if isinstance(error, Mapping) and error.get("code") in _TRANSIENT_CODES:
        raise EndpointFault(f"rate limited: {_error_text(error)}")
    return body


def _simulation_refused(answer: Any, requests: Sequence[tuple[str, Any]]) -> str | None:
    """The error text when a batch of eth_simulateV1 calls was answered "no such method" (per call, or for the
    whole batch); None when the node ran them (a call's own revert is inside its result, not here)."""
    if not any(method == SIMULATE_METHOD for method, _ in requests):
        return None
    for response in answer if isinstance(answer, list) else [answer]:
        error = response.get("error") if isinstance(response, Mapping) else None
        if error is None:
            continue
        code = error.get("code") if isinstance(error, Mapping) else None
        text = str(error.get("message", "")) if isinstance(error, Mapping) else str(error)
        if code in _UNSUPPORTED_CODES or _UNSUPPORTED_TEXT.search(text):
            return _error_text(error)
    return None


def _is_response(body: Any) -> bool:
    return isinstance(body, dict) and ("result" in body or isinstance(body.get("error"), (dict, str)))


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        return _short(f"{error.get('message', error)} (code {error.get('code')})")
    return _short(str(error))


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


class TransportProvider(AsyncJSONBaseProvider):
    """A web3 provider over a Transport, so AsyncWeb3 formats results exactly as it does over HTTP."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self.transport = transport

    async def make_request(self, method: Any, params: Any) -> Any:
        return await self.transport.request(method, params)

    async def make_batch_request(self, requests: list[tuple[Any, Any]]) -> Any:
        return await self.transport.batch(requests)

    async def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            answer = await self.transport.request("web3_clientVersion", [])
        except ChainError:
            if show_traceback:
                raise
            return False
        return "result" in answer

    async def disconnect(self) -> None:
        await self.transport.close()
