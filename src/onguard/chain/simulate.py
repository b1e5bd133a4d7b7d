"""Predicts what a pending transaction would do: executes it on top of the head's state with eth_simulateV1,
reading the policies' views just before and just after it, changing nothing on chain. Probes (calls from a given
sender, e.g. the guardian's own pause) are made once on the head's state and once right after the transaction, to
tell what an account could do before and after it. What the head's own state shows (the reads before any
transaction, the probes on it) is the same for every transaction on that head: it is read once per head, warmed
when the head arrives (warm_head) rather than in each transaction's simulation. Several transactions go in
one JSON-RPC batch (one eth_simulateV1 each, every one against the same head state, not one after another), and
results are remembered per (transaction hash, head hash): a transaction is never simulated twice on one state.
Batches go to the simulation endpoints (spread over them, each batch failing over on its own)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
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


@dataclass(slots=True)
class _HeadState:
    """What one head's own state shows, read once per head: the reads' values and the probes' outcomes (per list
    of probes: each probe runs on the state the previous one left)."""

    hash: str
    values: dict[ReadSpec, Any] = field(default_factory=dict)
    probed: dict[tuple[ReadSpec, ...], Mapping[ReadSpec, Any]] = field(default_factory=dict)
    warming: asyncio.Future[None] | None = None

    def has(self, reads: Sequence[ReadSpec], probes: tuple[ReadSpec, ...]) -> bool:
        return all(spec in self.values for spec in reads) and (not probes or probes in self.probed)

    def store(self, reads: Sequence[ReadSpec], probes: tuple[ReadSpec, ...],
              response: Mapping[str, Any]) -> ChainError | None:
        if "error" in response:
            return _refused(response)
        calls = response["result"][0]["calls"]
        self.values.update((spec, _value(spec, call)) for spec, call in zip(reads, calls[: len(reads)], strict=True))
        if probes:
            self.probed[probes] = {spec: _value(spec, call)
                                   for spec, call in zip(probes, calls[len(reads):], strict=True)}
        return None


def _request(calls: list[dict[str, Any]], block: str) -> tuple[str, list[Any]]:
    return "eth_simulateV1", [{"blockStateCalls": [{"calls": calls}], "validation": False}, block]


class Simulator:
    def __init__(self, rpc: Rpc, cache_size: int = CACHE_SIZE) -> None:
        self._rpc = rpc
        self._cache: OrderedDict[tuple[Any, ...], Simulation] = OrderedDict()
        self._cache_size = cache_size
        self._head: _HeadState | None = None  # the latest head's own state, as far as it is read

    def warm_head(self, head: Head, specs: Iterable[ReadSpec], probes: Sequence[ReadSpec] = ()) -> asyncio.Future[None]:
        """Reads `specs` and makes `probes` on `head`'s state now, in the background, once per head (the daemon
        calls it when a head arrives): a pending transaction's simulation then carries neither. Returns the
        warming, for a caller that wants to wait for it (the daemon does not: until it is done, a transaction's
        batch reads the head itself)."""
        reads, probes = list(dict.fromkeys(specs)), tuple(probes)
        state = self._state_of(head)
        if state.warming is None or (state.warming.done() and not state.has(reads, probes)):
            state.warming = asyncio.ensure_future(self._warm(head, state, reads, probes))
        return state.warming

    async def _warm(self, head: Head, state: _HeadState, reads: list[ReadSpec], probes: tuple[ReadSpec, ...]) -> None:
        if state.has(reads, probes):
            return
        read_calls = [read_call(spec) for spec in reads]
        try:
            (response,) = await self._rpc.simulation_batch(
                [_request([*read_calls, *(read_call(spec) for spec in probes)], hex(head.number))])
        except ChainError:
            return  # not warmed: the transactions' batches read the head themselves
        state.store(reads, probes, response)

    def _state_of(self, head: Head) -> _HeadState:
        if self._head is None or self._head.hash != head.hash:
            self._head = _HeadState(head.hash)
        return self._head

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
        ChainError that one simulation met (the others still count). The reads are taken after each transaction,
        and `probes` made in order after them; before any transaction, on the head's own state, both are read once
        per head (warm_head, or a request of their own in the first batch of the head). On the node's latest block
        (`head` None) the reads go before and after the transaction in its own simulation."""
        reads = list(dict.fromkeys(specs))
        probes = tuple(probes)
        keys = [_key(raw, head, reads, probes) for raw in raws]
        outcomes: list[Simulation | ChainError | None] = [self._cached(key) for key in keys]
        missing = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if not missing:
            return [outcome for outcome in outcomes if outcome is not None]
        block = hex(head.number) if head is not None else "latest"
        state = None if head is None else self._state_of(head)
        read_calls = [read_call(spec) for spec in reads]
        probe_calls = [read_call(spec) for spec in probes]
        leading = read_calls if state is None else []
        requests = [_request([*leading, as_call(raws[i]), *read_calls, *probe_calls], block) for i in missing]
        head_request = (state is None and bool(probes)) or (state is not None and not state.has(reads, probes))
        if head_request:
            requests.append(_request([*([] if state is None else read_calls), *probe_calls], block))
        responses = await self._rpc.simulation_batch(requests, deadline=deadline, hedge=hedge)
        refused: ChainError | None = None
        probed: Mapping[ReadSpec, Any] | ChainError | None = None
        if state is None:
            if head_request:
                probed = _probed(probes, responses.pop())
        else:
            if head_request:
                refused = state.store(reads, probes, responses.pop())
            if refused is None:
                probed = state.probed.get(probes, {})
        for index, response in zip(missing, responses, strict=True):
            if state is not None and refused is not None:
                outcomes[index] = refused
                continue
            before = None if state is None else {spec: state.values[spec] for spec in reads}
            outcome = _simulation(reads, response, probes, probed or {}, before)
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


def _key(raw: Mapping[str, Any], head: Head | None, reads: list[ReadSpec],
         probes: tuple[ReadSpec, ...]) -> tuple[Any, ...] | None:
    tx_hash = raw.get("hash")
    if head is None or tx_hash is None:
        return None
    return HexBytes(tx_hash).to_0x_hex(), head.hash, frozenset(reads), probes


def _refused(response: Mapping[str, Any]) -> ChainError:
    return ChainError(f"eth_simulateV1 refused: {response['error']}",
                      hint="the node must support eth_simulateV1 (Anvil, geth 1.14+, reth)")


def _probed(probes: tuple[ReadSpec, ...], response: Mapping[str, Any]) -> Mapping[ReadSpec, Any] | ChainError:
    if "error" in response:
        return _refused(response)
    calls = response["result"][0]["calls"]
    return {spec: _value(spec, call) for spec, call in zip(probes, calls, strict=True)}


def _simulation(reads: list[ReadSpec], response: Mapping[str, Any], probes: tuple[ReadSpec, ...] = (),
                probed: Mapping[ReadSpec, Any] | ChainError | None = None,
                before: Mapping[ReadSpec, Any] | None = None) -> Simulation | ChainError:
    """One transaction's simulation: its calls are [reads (unless `before` is given: read on the head), the
    transaction, reads, probes]."""
    if "error" in response:
        return _refused(response)
    if isinstance(probed, ChainError):
        probed = None  # the transaction is still judged; the judges that need the probes say they are missing
    calls = response["result"][0]["calls"]
    if before is None:
        before = {spec: _value(spec, call) for spec, call in zip(reads, calls[: len(reads)], strict=True)}
        calls = calls[len(reads):]
    target = calls[0]
    after = {spec: _value(spec, call) for spec, call in zip(reads, calls[1: len(reads) + 1], strict=True)}
    probed_after = {spec: _value(spec, call) for spec, call in zip(probes, calls[len(reads) + 1:], strict=True)}
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
