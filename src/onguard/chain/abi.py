"""Contract ABIs: load them from JSON or forge artifacts, encode calls, decode events into plain values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import TupleType
from eth_abi.grammar import parse as parse_abi_type
from eth_utils import (
    collapse_if_tuple,
    event_abi_to_log_topic,
    function_abi_to_4byte_selector,
)
from hexbytes import HexBytes

from onguard.chain.checksum import checksum
from onguard.errors import ConfigError


@dataclass(frozen=True, slots=True)
class EventAbi:
    name: str
    topic: bytes
    indexed: tuple[tuple[str, str], ...]      # (name, type) in topic order
    unindexed: tuple[tuple[str, str], ...]    # (name, type) in data order
    names: tuple[str, ...]                    # every argument, in declaration order

    def type_of(self, name: str) -> str:
        return next(t for n, t in self.indexed + self.unindexed if n == name)


@dataclass(frozen=True, slots=True)
class FunctionAbi:
    name: str
    signature: str
    selector: bytes
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    input_names: tuple[str, ...] = ()   # unnamed inputs get arg0, arg1, …
    mutability: str = "nonpayable"

    @property
    def is_view(self) -> bool:
        return self.mutability in ("view", "pure")


@dataclass(frozen=True, slots=True)
class ContractAbi:
    """A contract's ABI indexed for the hot path: events by topic, functions by signature and selector."""

    raw: tuple[Mapping[str, Any], ...]
    events_by_topic: Mapping[bytes, EventAbi] = field(repr=False)
    functions_by_signature: Mapping[str, FunctionAbi] = field(repr=False)
    _by_selector: Mapping[bytes, FunctionAbi] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, abi: Sequence[Mapping[str, Any]]) -> ContractAbi:
        events: dict[bytes, EventAbi] = {}
        functions: dict[str, FunctionAbi] = {}
        for item in abi:
            if item.get("type") == "event" and not item.get("anonymous"):
                inputs = item.get("inputs", [])
                events[event_abi_to_log_topic(item)] = EventAbi(
                    name=item["name"],
                    topic=event_abi_to_log_topic(item),
                    indexed=tuple((_arg_name(i, n), collapse_if_tuple(i))
                                  for n, i in enumerate(inputs) if i.get("indexed")),
                    unindexed=tuple((_arg_name(i, n), collapse_if_tuple(i))
                                    for n, i in enumerate(inputs) if not i.get("indexed")),
                    names=tuple(_arg_name(i, n) for n, i in enumerate(inputs)),
                )
            elif item.get("type") == "function":
                types = tuple(collapse_if_tuple(i) for i in item.get("inputs", []))
                signature = f"{item['name']}({','.join(types)})"
                functions[signature] = FunctionAbi(
                    name=item["name"],
                    signature=signature,
                    selector=function_abi_to_4byte_selector(item),
                    input_types=types,
                    output_types=tuple(collapse_if_tuple(o) for o in item.get("outputs", [])),
                    input_names=tuple(_arg_name(i, n) for n, i in enumerate(item.get("inputs", []))),
                    mutability=item.get("stateMutability", "nonpayable"),
                )
        return cls(raw=tuple(abi), events_by_topic=MappingProxyType(events),
                   functions_by_signature=MappingProxyType(functions),
                   _by_selector=MappingProxyType({f.selector: f for f in functions.values()}))

    def functions_named(self, name: str) -> list[FunctionAbi]:
        return [f for f in self.functions_by_signature.values() if f.name == name]

    def decode_call(self, data: bytes) -> tuple[FunctionAbi, dict[str, Any]] | None:
        """Decodes calldata of this contract; None when the selector is not one of its functions or the
        arguments do not fit."""
        function = self._by_selector.get(bytes(data[:4]))
        if function is None:
            return None
        try:
            values = abi_decode(list(function.input_types), bytes(data[4:]))
        except DecodingError:
            return None
        return function, {name: normalise(type_, value) for name, type_, value
                          in zip(function.input_names, function.input_types, values, strict=True)}

    def has_function(self, signature: str) -> bool:
        return signature in self.functions_by_signature

    def function(self, signature: str) -> FunctionAbi:
        return self.functions_by_signature[signature]

    def function_signatures(self) -> list[str]:
        return sorted(self.functions_by_signature)

    def event(self, name: str) -> EventAbi | None:
        return next((e for e in self.events_by_topic.values() if e.name == name), None)

    def event_names(self) -> list[str]:
        return sorted({e.name for e in self.events_by_topic.values()})

    def encode_call(self, signature: str, *args: Any) -> bytes:
        function = self.function(signature)
        return function.selector + abi_encode(list(function.input_types), list(args))

    def decode_result(self, signature: str, data: bytes) -> tuple[Any, ...]:
        function = self.function(signature)
        decoded = abi_decode(list(function.output_types), data)
        return tuple(normalise(t, v) for t, v in zip(function.output_types, decoded, strict=True))

    def decode_log(self, topics: Sequence[bytes], data: bytes) -> tuple[EventAbi, dict[str, Any]] | None:
        """Decodes a log of this contract; None when the topic is not one of its events, ValueError when the
        topic is known but the log does not fit the event's layout."""
        if not topics:
            return None
        event = self.events_by_topic.get(bytes(topics[0]))
        if event is None:
            return None
        if len(topics) != len(event.indexed) + 1:
            raise ValueError(f"{event.name} has {len(event.indexed)} indexed arguments, the log {len(topics) - 1}")
        values: dict[str, Any] = {}
        try:
            for (name, type_), topic in zip(event.indexed, topics[1:], strict=True):
                # Dynamic indexed values are stored as their hash: keep the hash.
                values[name] = HexBytes(topic).to_0x_hex() if is_dynamic(type_) else normalise(
                    type_, abi_decode([type_], bytes(topic))[0])
            decoded = abi_decode([t for _, t in event.unindexed], bytes(data))
        except DecodingError as exc:
            raise ValueError(f"{event.name}: the log's data does not match the ABI ({exc})") from None
        for (name, type_), value in zip(event.unindexed, decoded, strict=True):
            values[name] = normalise(type_, value)
        return event, {name: values[name] for name in event.names}


def normalise(type_: str, value: Any) -> Any:
    """Plain, comparable Python values: checksummed addresses, 0x-hex bytes, ints, tuples."""
    return _normalise(parse_abi_type(type_), value)


def _normalise(abi_type: Any, value: Any) -> Any:
    if abi_type.is_array:
        return tuple(_normalise(abi_type.item_type, v) for v in value)
    if isinstance(abi_type, TupleType):
        return tuple(_normalise(t, v) for t, v in zip(abi_type.components, value, strict=True))
    if abi_type.base == "address":
        return checksum(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value


def _arg_name(item: Mapping[str, Any], position: int) -> str:
    """Argument names as policies write them: Solidity's leading underscores dropped (`_amount` is `amount`),
    unnamed ones as arg0, arg1, …"""
    return str(item.get("name") or "").lstrip("_") or f"arg{position}"


def is_dynamic(type_: str) -> bool:
    return type_ in ("string", "bytes") or type_.endswith("]") or type_.startswith("(")


def load_abi(path: Path) -> ContractAbi:
    """Reads a plain JSON ABI (a list) or a forge/hardhat artifact (an object with an "abi" list)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("ABI file not found", file=str(path),
                          hint="build the contracts (forge build) or point at an existing ABI JSON") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ABI file is not valid JSON ({exc})", file=str(path)) from None
    abi = document.get("abi") if isinstance(document, dict) else document
    if not isinstance(abi, list):
        raise ConfigError("not an ABI: expected a JSON list or an artifact with an \"abi\" list", file=str(path))
    return ContractAbi.from_json(abi)
