"""Predicts what a pending transaction would do: executes it on top of the head's state with eth_simulateV1,
reading the policies' views just before and just after it, changing nothing on chain. Several transactions go in
one JSON-RPC batch (one eth_simulateV1 each, every one against the same head state, not one after another), and
results are remembered per (transaction hash, head hash): a transaction is never simulated twice on one state.
Batches go to the simulation endpoints (spread over them, each batch failing over on its own)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.chain.view import ReadFailure, decode_read
from onguard.errors import ChainError
from onguard.policies.reads import ReadSpec

SIMULATION_GAS_CAP = 30_000_000
CACHE_SIZE = 8192   # simulations remembered, per (transaction hash, head hash)


@dataclass(frozen=True, slots=True)
class Simulation:
    before: Mapping[ReadSpec, Any]   # value or ReadFailure, at the latest block
    after: Mapping[ReadSpec, Any]    # the same reads once the pending transaction has run
    reverted: bool
    error: str | None
    touched: frozenset[str]          # lower-case addresses that emitted logs during the transaction


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
        self._cache: OrderedDict[tuple[str, str], Simulation] = OrderedDict()
        self._cache_size = cache_size

    async def simulate(self, raw: Mapping[str, Any], specs: Iterable[ReadSpec], head: Head | None = None) -> Simulation:
        """One transaction, on `head` (None: the node's latest block, not cached)."""
        (outcome,) = await self.simulate_many([raw], specs, head)
        if isinstance(outcome, ChainError):
            raise outcome
        return outcome

    async def simulate_many(self, raws: Sequence[Mapping[str, Any]], specs: Iterable[ReadSpec],
                            head: Head | None = None, *, deadline: float | None = None,
                            hedge: int = 1) -> list[Simulation | ChainError]:
        """Each transaction on its own against `head`, in one batch round trip answered by `deadline`
        (time.perf_counter()), sent to `hedge` simulation endpoints at once; each outcome a Simulation or the
        ChainError that one simulation met (the others still count)."""
        reads = list(dict.fromkeys(specs))
        keys = [_key(raw, head) for raw in raws]
        outcomes: list[Simulation | ChainError | None] = [self._cached(key) for key in keys]
        missing = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if missing:
            block = hex(head.number) if head is not None else "latest"
            read_calls = [{"to": spec.address, "data": HexBytes(spec.calldata).to_0x_hex()} for spec in reads]
            requests = [("eth_simulateV1", [{"blockStateCalls": [{"calls": [*read_calls, as_call(raws[i]),
                                                                            *read_calls]}],
                                             "validation": False}, block]) for i in missing]
            responses = await self._rpc.simulation_batch(requests, deadline=deadline, hedge=hedge)
            for index, response in zip(missing, responses, strict=True):
                outcome = _simulation(reads, response)
                outcomes[index] = outcome
                if isinstance(outcome, Simulation) and keys[index] is not None:
                    self._remember(keys[index], outcome)
        return [outcome for outcome in outcomes if outcome is not None]

    def _cached(self, key: tuple[str, str] | None) -> Simulation | None:
        if key is None or key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def _remember(self, key: tuple[str, str], simulation: Simulation) -> None:
        self._cache[key] = simulation
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _key(raw: Mapping[str, Any], head: Head | None) -> tuple[str, str] | None:
    tx_hash = raw.get("hash")
    if head is None or tx_hash is None:
        return None
    return HexBytes(tx_hash).to_0x_hex(), head.hash


def _simulation(reads: list[ReadSpec], response: Mapping[str, Any]) -> Simulation | ChainError:
    if "error" in response:
        return ChainError(f"eth_simulateV1 refused: {response['error']}",
                          hint="the node must support eth_simulateV1 (Anvil, geth 1.14+, reth)")
    calls = response["result"][0]["calls"]
    before = {spec: _value(spec, call) for spec, call in zip(reads, calls[: len(reads)], strict=True)}
    target = calls[len(reads)]
    after = {spec: _value(spec, call) for spec, call in zip(reads, calls[len(reads) + 1:], strict=True)}
    reverted = int(target["status"], 16) != 1
    error = (target.get("error") or {}).get("message") if reverted else None
    touched = frozenset(str(log["address"]).lower() for log in target.get("logs", []))
    return Simulation(before=before, after=after, reverted=reverted, error=error, touched=touched)


def _value(spec: ReadSpec, call: Mapping[str, Any]) -> Any:
    if int(call["status"], 16) != 1:
        message = (call.get("error") or {}).get("message", "reverted")
        return ReadFailure(spec, message)
    return decode_read(spec, call["returnData"])
