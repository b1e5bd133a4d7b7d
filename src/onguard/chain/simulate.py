"""Predicts what a pending transaction would do: executes it on top of the head's state with eth_simulateV1,
reading the policies' views just before and just after it, changing nothing on chain. Probes (calls from a given
sender, e.g. the guardian's own pause) are made once on the head's state and once right after the transaction, to
tell what an account could do before and after it; the head's probes are made once per head, warmed when the
head arrives (warm_probes) rather than inside the first pending transaction's batch. Several transactions go in
one JSON-RPC batch (one eth_simulateV1 each, every one against the same head state, not one after another), and
results are remembered per (transaction hash, head hash): a transaction is never simulated twice on one state.
Batches go to the simulation endpoints (spread over them, each batch failing over on its own)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.chain.view import ReadFailure, decode_read, read_call
from onguard.errors import ChainError
from onguard.policies.reads import ReadSpec

SIMULATION_GAS_CAP = 30_000_000
CACHE_SIZE = 8192   # simulations remembered, per (transaction hash, head hash)


@dataclass(frozen=True, slots=True)
class SimulatedLog:
    """An event the simulated transaction emitted."""

    address: str                     # lower-case
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Simulation:
    before: Mapping[ReadSpec, Any]   # value or ReadFailure, at the latest block
    after: Mapping[ReadSpec, Any]    # the same reads once the pending transaction has run
    reverted: bool
    error: str | None
    touched: frozenset[str]          # lower-case addresses that emitted logs during the transaction
    logs: tuple[SimulatedLog, ...] = ()
    # The probes, in order, each on the state the previous one left: on the head's state, and after the transaction.
    probed_before: Mapping[ReadSpec, Any] = field(default_factory=dict)
    probed_after: Mapping[ReadSpec, Any] = field(default_factory=dict)


def as_call(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The pending transaction as an eth_simulateV1 call (fees dropped: validation is off)."""
    call: dict[str, Any] = {"from": raw["from"], "data": HexBytes(raw.get("input", b"")).to_0x_hex(),
                            "value": hex(int(raw.get("value", 0))),
                            "gas": hex(min(int(raw.get("gas", SIMULATION_GAS_CAP)), SIMULATION_GAS_CAP))}
    if raw.get("to"):
        call["to"] = raw["to"]
    return call


@dataclass(frozen=True, slots=True)
class Head:
    """The state simulations run against: a block, by number (what eth_simulateV1 takes) and hash (the cache's key:
    a reorg changes it)."""

    number: int
    hash: str


class Simulator:
    def __init__(self, rpc: Rpc, cache_size: int = CACHE_SIZE) -> None:
        self._rpc = rpc
        self._cache: OrderedDict[tuple[Any, ...], Simulation] = OrderedDict()
        self._cache_size = cache_size
        self._probed: tuple[tuple[Any, ...], Mapping[ReadSpec, Any]] | None = None  # per (head hash, probes)
        self._warming: tuple[tuple[Any, ...], asyncio.Future[Mapping[ReadSpec, Any] | ChainError]] | None = None

    def warm_probes(self, head: Head, probes: Sequence[ReadSpec]) -> None:
        """Makes the probes on `head`'s state now, in the background (once per head): a pending transaction then
        finds them read instead of carrying them in its own batch."""
        probes = tuple(probes)
        key = (head.hash, probes)
        if not probes or (self._probed is not None and self._probed[0] == key) or \
                (self._warming is not None and self._warming[0] == key):
            return
        self._warming = (key, asyncio.ensure_future(self._probe_head(head, probes)))

    async def _probe_head(self, head: Head, probes: tuple[ReadSpec, ...]) -> Mapping[ReadSpec, Any] | ChainError:
        request = ("eth_simulateV1", [{"blockStateCalls": [{"calls": [read_call(spec) for spec in probes]}],
                                      "validation": False}, hex(head.number)])
        try:
            (response,) = await self._rpc.simulation_batch([request])
        except ChainError as exc:
            return exc
        probed = _probed(probes, response)
        if not isinstance(probed, ChainError):
            self._probed = ((head.hash, probes), probed)
        return probed

    def _head_probes(self, key: tuple[Any, ...] | None) -> Awaitable[Mapping[ReadSpec, Any] | ChainError] | None:
        """The head's probes when read or being read (warm_probes); None: the caller's batch makes them."""
        if key is None:
            return None
        if self._probed is not None and self._probed[0] == key:
            done: asyncio.Future[Mapping[ReadSpec, Any] | ChainError] = asyncio.get_running_loop().create_future()
            done.set_result(self._probed[1])
            return done
        warming = self._warming
        if warming is None or warming[0] != key or (warming[1].done() and isinstance(warming[1].result(), ChainError)):
            return None  # a warming that failed is not trusted: the caller's batch probes again
        return asyncio.shield(warming[1])

    async def simulate(self, raw: Mapping[str, Any], specs: Iterable[ReadSpec], head: Head | None = None,
                       probes: Sequence[ReadSpec] = ()) -> Simulation:
        """One transaction, on `head` (None: the node's latest block, not cached)."""
        (outcome,) = await self.simulate_many([raw], specs, head, probes)
        if isinstance(outcome, ChainError):
            raise outcome
        return outcome

    async def simulate_many(self, raws: Sequence[Mapping[str, Any]], specs: Iterable[ReadSpec],
                            head: Head | None = None, probes: Sequence[ReadSpec] = (), *,
                            deadline: float | None = None, hedge: int = 1) -> list[Simulation | ChainError]:
        """Each transaction on its own against `head`, in one batch round trip answered by `deadline`
        (time.perf_counter()), sent to `hedge` simulation endpoints at once; each outcome a Simulation or the
        ChainError that one simulation met (the others still count). `probes` run in order after the transaction's
        reads, and once on the head's state (read once per head)."""
        reads = list(dict.fromkeys(specs))
        probes = tuple(probes)
        keys = [_key(raw, head, probes) for raw in raws]
        outcomes: list[Simulation | ChainError | None] = [self._cached(key) for key in keys]
        missing = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if missing:
            block = hex(head.number) if head is not None else "latest"
            read_calls = [read_call(spec) for spec in reads]
            probe_calls = [read_call(spec) for spec in probes]
            requests = [("eth_simulateV1", [{"blockStateCalls": [{"calls": [*read_calls, as_call(raws[i]),
                                                                            *read_calls, *probe_calls]}],
                                             "validation": False}, block]) for i in missing]
            probe_key = None if head is None else (head.hash, probes)
            warming = self._head_probes(probe_key) if probes else None
            in_batch = bool(probes) and warming is None
            if in_batch:
                requests.append(("eth_simulateV1", [{"blockStateCalls": [{"calls": probe_calls}],
                                                     "validation": False}, block]))
            batch = self._rpc.simulation_batch(requests, deadline=deadline, hedge=hedge)
            if warming is None:
                responses, probed = await batch, None
            else:  # read already, or being read: awaited alongside this batch, not before it
                responses, probed = await asyncio.gather(batch, warming)
            if in_batch:
                probed = _probed(probes, responses.pop())
                if probe_key is not None and not isinstance(probed, ChainError):
                    self._probed = (probe_key, probed)
            for index, response in zip(missing, responses, strict=True):
                outcome = _simulation(reads, response, probes, probed or {})
                outcomes[index] = outcome
                if isinstance(outcome, Simulation) and keys[index] is not None:
                    self._remember(keys[index], outcome)
        return [outcome for outcome in outcomes if outcome is not None]

    def _cached(self, key: tuple[Any, ...] | None) -> Simulation | None:
        if key is None or key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def _remember(self, key: tuple[Any, ...], simulation: Simulation) -> None:
        self._cache[key] = simulation
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _key(raw: Mapping[str, Any], head: Head | None, probes: tuple[ReadSpec, ...]) -> tuple[Any, ...] | None:
    tx_hash = raw.get("hash")
    if head is None or tx_hash is None:
        return None
    return HexBytes(tx_hash).to_0x_hex(), head.hash, probes


def _refused(response: Mapping[str, Any]) -> ChainError:
    return ChainError(f"eth_simulateV1 refused: {response['error']}",
                      hint="the node must support eth_simulateV1 (Anvil, geth 1.14+, reth)")


def _probed(probes: tuple[ReadSpec, ...], response: Mapping[str, Any]) -> Mapping[ReadSpec, Any] | ChainError:
    if "error" in response:
        return _refused(response)
    calls = response["result"][0]["calls"]
    return {spec: _value(spec, call) for spec, call in zip(probes, calls, strict=True)}


def _simulation(reads: list[ReadSpec], response: Mapping[str, Any], probes: tuple[ReadSpec, ...] = (),
                probed: Mapping[ReadSpec, Any] | ChainError | None = None) -> Simulation | ChainError:
    if "error" in response:
        return _refused(response)
    if isinstance(probed, ChainError):
        probed = None  # the transaction is still judged; the judges that need the probes say they are missing
    calls = response["result"][0]["calls"]
    before = {spec: _value(spec, call) for spec, call in zip(reads, calls[: len(reads)], strict=True)}
    target = calls[len(reads)]
    after = {spec: _value(spec, call) for spec, call in zip(reads, calls[len(reads) + 1: 2 * len(reads) + 1],
                                                            strict=True)}
    probed_after = {spec: _value(spec, call) for spec, call in zip(probes, calls[2 * len(reads) + 1:], strict=True)}
    reverted = int(target["status"], 16) != 1
    error = (target.get("error") or {}).get("message") if reverted else None
    raw_logs = target.get("logs", [])
    logs = tuple(SimulatedLog(address=str(log["address"]).lower(),
                              topics=tuple(bytes(HexBytes(t)) for t in log.get("topics", [])),
                              data=bytes(HexBytes(log.get("data") or "0x"))) for log in raw_logs)
    touched = frozenset(log.address for log in logs)
    return Simulation(before=before, after=after, reverted=reverted, error=error, touched=touched, logs=logs,
                      probed_before=dict(probed or {}), probed_after=probed_after)


def _value(spec: ReadSpec, call: Mapping[str, Any]) -> Any:
    if int(call["status"], 16) != 1:
        message = (call.get("error") or {}).get("message", "reverted")
        return ReadFailure(spec, message)
    return decode_read(spec, call["returnData"])
