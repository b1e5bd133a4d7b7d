"""State reads a policy declares ("vault.totalAssets()", "asset.balanceOf(vault)"): parsed and resolved
against the watched contracts' ABIs at load time, so that at run time they are plain calldata."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_abi import encode as abi_encode
from eth_abi.grammar import parse as parse_abi_type
from eth_utils import collapse_if_tuple, keccak

from onguard.chain.abi import FunctionAbi
from onguard.units import parse_address, parse_amount, parse_integer

if TYPE_CHECKING:  # config.py compiles actions, whose done_when conditions are made of reads: no import back
    from onguard.config import WatchedContract

_READ = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)"
                   r"((?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """One view call: where, what, and which of its results to take (the first, or a named output or struct field:
    `feed.latestRoundData().answer`). Equal specs are read once."""

    address: str
    calldata: bytes
    text: str = field(compare=False)
    contract: str = field(compare=False)
    function: FunctionAbi = field(compare=False)
    path: tuple[int, ...] = (0,)  # index among the function's outputs, then of a field in each nested struct
    output_type: str = field(init=False, compare=False)
    sender: str | None = None     # the call's `from` (None: no sender); a probe of what an account could do

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_type", component_type(self.function.output_types, self.path))

    def select(self, outputs: tuple[Any, ...]) -> Any:
        """The value at `path` among all the decoded outputs."""
        value: Any = outputs
        for index in self.path:
            value = value[index]
        return value


def component_type(output_types: tuple[str, ...], path: tuple[int, ...]) -> str:
    """The ABI type at `path` (an output's index, then struct fields' indexes) among a function's outputs."""
    abi_type = output_types[path[0]] if output_types else ""
    for index in path[1:]:
        abi_type = parse_abi_type(abi_type).components[index].to_type_str()
    return abi_type


def expression_type(abi_type: str) -> str | None:
    """The expression language's type for an ABI type; None for types it cannot compare."""
    if abi_type.startswith(("uint", "int")) and not abi_type.endswith("]"):
        return "number"
    if abi_type in ("address", "bool", "string"):
        return abi_type
    if abi_type.startswith("bytes") and not abi_type.endswith("]"):
        return "bytes"
    return None


def parse_read(text: str, contracts: Mapping[str, WatchedContract]) -> ReadSpec:
    """Raises ValueError with a message and hint joined by ' — ' when `text` is not a valid read."""
    match = _READ.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a read — write contract.function(args), e.g. \"vault.totalAssets()\"")
    contract_name, function_name, raw_args, raw_fields = match.groups()
    fields = [f.strip() for f in raw_fields.split(".")[1:]]
    contract = contracts.get(contract_name)
    if contract is None:
        raise ValueError(f"no watched contract named {contract_name!r} — watched: {', '.join(contracts)}")
    args = [a.strip() for a in raw_args.split(",")] if raw_args.strip() else []
    named = contract.abi.functions_named(function_name)
    candidates = [f for f in named if len(f.input_types) == len(args)]
    if not candidates:
        views = sorted(f.signature for f in contract.abi.functions_by_signature.values() if f.is_view)
        close = difflib.get_close_matches(function_name, sorted({f.name for f in contract.abi.functions_by_signature
                                                                 .values() if f.is_view}), n=1)
        missing = (f"{contract_name} has no function {function_name} taking {len(args)} argument(s)" if named
                   else f"{contract_name} has no function {function_name}({raw_args.strip()})"
                   + (f"; did you mean {close[0]}?" if close else ""))
        raise ValueError(f"{missing} — its views: {', '.join(views)}")
    if len(candidates) > 1:
        raise ValueError(f"{contract_name}.{function_name} is overloaded — name the contract's arguments exactly")
    function = candidates[0]
    if not function.is_view:
        raise ValueError(f"{contract_name}.{function.signature} is not a view: reads never change state — "
                         "use a view or pure function")
    path = _path(f"{contract_name}.{function.signature}", _outputs(contract.abi.raw, function), fields)
    output_type = component_type(function.output_types, path)
    if expression_type(output_type) is None or len(function.output_types) > 1 and not fields:
        raise ValueError(f"{contract_name}.{function.signature}{''.join('.' + f for f in fields)} must give one "
                         f"number, address, bool, string or bytes value (it returns "
                         f"{', '.join(function.output_types) or 'nothing'}) — "
                         + _fields_hint(_outputs(contract.abi.raw, function), path))
    values = [_argument(arg, type_, contracts) for arg, type_ in zip(args, function.input_types, strict=True)]
    canonical = f"{contract_name}.{function_name}({', '.join(args)})" + "".join(f".{f}" for f in fields)
    return ReadSpec(address=contract.address, calldata=function.selector + abi_encode(list(function.input_types),
                                                                                       values),
                    text=canonical, contract=contract_name, function=function, path=path)


def _outputs(raw_abi: tuple[Mapping[str, Any], ...], function: FunctionAbi) -> list[Mapping[str, Any]]:
    """The function's outputs as the ABI JSON declares them (with their names and struct components)."""
    for item in raw_abi:
        if item.get("type") == "function" and item.get("name") == function.name and tuple(
                collapse_if_tuple(i) for i in item.get("inputs", [])) == function.input_types:
            return list(item.get("outputs", []))
    return []


def _names(items: list[Mapping[str, Any]]) -> list[str]:
    """Output and field names as conditions write them (as for arguments: `_x` is `x`, unnamed is arg0, …)."""
    return [str(item.get("name") or "").lstrip("_") or f"arg{n}" for n, item in enumerate(items)]


def _level(outputs: list[Mapping[str, Any]], path: tuple[int, ...]) -> list[Mapping[str, Any]] | None:
    """The named items one `.field` can pick from at `path`: the outputs themselves when there are several, the
    components of a struct; None for anything else."""
    if len(outputs) > 1 and path == ():
        return outputs
    node: Mapping[str, Any] | None = None
    items = outputs
    for index in path:
        node = items[index] if index < len(items) else None
        if node is None:
            return None
        items = list(node.get("components") or [])
    return items if node is not None and node.get("type") == "tuple" else None


def _path(function: str, outputs: list[Mapping[str, Any]], fields: list[str]) -> tuple[int, ...]:
    path: tuple[int, ...] = () if len(outputs) > 1 and fields else (0,)
    for name in fields:
        level = _level(outputs, path)
        if level is None:
            raise ValueError(f"{function} gives a single value: it has no field {name!r} — remove .{name}")
        names = _names(level)
        if name not in names:
            raise ValueError(f"{function} has no field {name!r} there — its fields: {', '.join(names)}")
        path += (names.index(name),)
    return path


def _fields_hint(outputs: list[Mapping[str, Any]], path: tuple[int, ...]) -> str:
    level = _level(outputs, () if len(outputs) > 1 and path == (0,) else path)
    if level:
        return f"pick one with .NAME: {', '.join(_names(level))}"
    return "read a view that returns one plain value"


def _argument(text: str, abi_type: str, contracts: Mapping[str, WatchedContract]) -> object:
    if abi_type == "bool" and text in ("true", "false"):
        return text == "true"
    if abi_type == "address" or abi_type.startswith(("uint", "int")) or _FIXED_BYTES.fullmatch(abi_type):
        return argument_value(text, abi_type, contracts)
    raise ValueError(f"argument {text!r} of type {abi_type} is not supported in reads (numbers, addresses, "
                     "true/false and fixed-size bytes are)")


_FIXED_BYTES = re.compile(r"bytes([1-9]|[12][0-9]|3[0-2])")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
ROLE_PREFIX = "keccak256:"  # "keccak256:PAUSER_ROLE": an OpenZeppelin role id, keccak256 of its name


def argument_value(value: object, abi_type: str, contracts: Mapping[str, WatchedContract]) -> object:
    """A function argument as written by a user (a TOML value, or the text of a read's argument) as the value
    the ABI encoder takes. Raises ValueError("message — hint") when it does not fit `abi_type`."""
    if abi_type.endswith("]"):
        return _array(value, abi_type, contracts)
    if abi_type == "address":
        if isinstance(value, str) and value in contracts:
            return contracts[value].address
        try:
            return parse_address(value)
        except ValueError as exc:
            raise ValueError(f"argument {value!r} is neither a watched contract's name nor an address ({exc}) — "
                             f"write a 0x address or one of: {', '.join(contracts)}") from None
    if abi_type.startswith(("uint", "int")):
        return _integer(value, abi_type)
    if abi_type == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"argument {value!r} is not a bool — write true or false, without quotes")
        return value
    if abi_type == "string":
        if not isinstance(value, str):
            raise ValueError(f"argument {value!r} is not a string — write it in quotes")
        return value
    if abi_type == "bytes" or _FIXED_BYTES.fullmatch(abi_type):
        return _bytes(value, abi_type)
    raise ValueError(f"arguments of type {abi_type} are not supported — numbers, addresses, bools, strings, "
                     "bytes and arrays of them are")


def _integer(value: object, abi_type: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"argument {value!r} is not a number ({abi_type}) — write 1000, \"1e18\" or \"1.5e18\"")
    signed = abi_type.startswith("int")
    number = parse_integer(value) if signed else parse_amount(value)  # its errors say how to write one
    bits = int(abi_type.lstrip("uint") or 256)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= number <= high:
        raise ValueError(f"argument {value} is out of range for {abi_type} ({low}..{high}) — check its units")
    return number


def _bytes(value: object, abi_type: str) -> bytes:
    size = None if abi_type == "bytes" else int(abi_type[5:])
    if size == 32 and isinstance(value, str) and value.startswith(ROLE_PREFIX) and len(value) > len(ROLE_PREFIX):
        return keccak(text=value[len(ROLE_PREFIX):])
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        role = f", or \"{ROLE_PREFIX}PAUSER_ROLE\" for a role id" if size == 32 else ""
        raise ValueError(f"argument {value!r} is not {abi_type} — write 0x and hex digits, two per byte{role}")
    data = bytes.fromhex(value[2:])
    if size is not None and len(data) != size:
        raise ValueError(f"argument {value} is {len(data)} bytes, {abi_type} takes exactly {size} — "
                         "write every byte, leading zeros included")
    return data


def _array(value: object, abi_type: str, contracts: Mapping[str, WatchedContract]) -> tuple[object, ...]:
    item_type, _, length = abi_type[:-1].rpartition("[")
    if not isinstance(value, list):
        raise ValueError(f"argument {value!r} is not a list ({abi_type}) — write [a, b, …]")
    if length and len(value) != int(length):
        raise ValueError(f"argument has {len(value)} items, {abi_type} takes exactly {length} — list them all")
    return tuple(argument_value(item, item_type, contracts) for item in value)  # frozen, as settings are
