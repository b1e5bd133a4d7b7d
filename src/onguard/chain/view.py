"""Reads chain state for the policy engine: every declared view call of a block in one JSON-RPC batch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi import decode as abi_decode
from hexbytes import HexBytes

from onguard.chain.abi import normalise
from onguard.chain.rpc import Rpc
from onguard.policies.reads import ReadSpec


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """A read that did not give a value (it reverted, or the node refused it): the policies that need it
    record an evaluation error instead of treating the state as safe."""

    spec: ReadSpec
    reason: str


class StateReader(Protocol):
    async def read(self, specs: Iterable[ReadSpec], block: int | str) -> dict[ReadSpec, Any]: ...


class BatchStateReader:
    def __init__(self, rpc: Rpc) -> None:
        self._rpc = rpc

    async def read(self, specs: Iterable[ReadSpec], block: int | str) -> dict[ReadSpec, Any]:
        """The values at a block number, or at a tag such as "latest"."""
        unique = list(dict.fromkeys(specs))
        if not unique:
            return {}
        tag = hex(block) if isinstance(block, int) else block
        requests = [("eth_call", [read_call(spec), tag]) for spec in unique]
        responses = await self._rpc.batch(requests)
        return {spec: _decode(spec, response) for spec, response in zip(unique, responses, strict=True)}


def read_call(spec: ReadSpec) -> dict[str, str]:
    """A read as a JSON-RPC call object (with its sender, for a read that probes what an account could do)."""
    call = {"to": spec.address, "data": HexBytes(spec.calldata).to_0x_hex()}
    if spec.sender is not None:
        call["from"] = spec.sender
    return call


def _decode(spec: ReadSpec, response: Any) -> Any:
    if "error" in response:
        error = response["error"]
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        return ReadFailure(spec, message)
    return decode_read(spec, response["result"])


def decode_read(spec: ReadSpec, result: Any) -> Any:
    """A read's raw return data as a value, or a ReadFailure when it does not decode (e.g. no code)."""
    raw = bytes(HexBytes(result))
    try:
        value = spec.select(abi_decode(list(spec.function.output_types), raw))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a failed read, reported as such
        return ReadFailure(spec, f"cannot decode the result as {', '.join(spec.function.output_types)} ({exc})")
    return normalise(spec.output_type, value)
