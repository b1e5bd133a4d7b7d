"""Predicts what a pending transaction would do: executes it on top of the latest state with eth_simulateV1,
reading the policies' views just before and just after it, in one round trip, changing nothing on chain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.chain.view import ReadFailure, decode_read
from onguard.errors import ChainError
from onguard.policies.reads import ReadSpec

SIMULATION_GAS_CAP = 30_000_000


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


class Simulator:
    def __init__(self, rpc: Rpc) -> None:
        self._rpc = rpc

    async def simulate(self, raw: Mapping[str, Any], specs: Iterable[ReadSpec]) -> Simulation:
        reads = list(dict.fromkeys(specs))
        read_calls = [{"to": spec.address, "data": HexBytes(spec.calldata).to_0x_hex()} for spec in reads]
        payload = {"blockStateCalls": [{"calls": [*read_calls, as_call(raw), *read_calls]}], "validation": False}
        (response,) = await self._rpc.batch([("eth_simulateV1", [payload, "latest"])])
        if "error" in response:
            raise ChainError(f"eth_simulateV1 refused: {response['error']}",
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
