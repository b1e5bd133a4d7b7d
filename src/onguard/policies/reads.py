"""State reads a policy declares ("vault.totalAssets()", "asset.balanceOf(vault)"): parsed and resolved
against the watched contracts' ABIs at load time, so that at run time they are plain calldata."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eth_abi import encode as abi_encode
from eth_utils import keccak

from onguard.chain.abi import FunctionAbi
from onguard.units import parse_address, parse_amount, parse_integer

if TYPE_CHECKING:  # config.py compiles actions, whose done_when conditions are made of reads: no import back
    from onguard.config import WatchedContract

_READ = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """One view call: where, what, and how to decode its single result. Equal specs are read once."""

    address: str
    calldata: bytes
    text: str = field(compare=False)
    contract: str = field(compare=False)
    function: FunctionAbi = field(compare=False)

    @property
    def output_type(self) -> str:
        return self.function.output_types[0]


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
    contract_name, function_name, raw_args = match.groups()
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
    if len(function.output_types) != 1 or expression_type(function.output_types[0]) is None:
        raise ValueError(f"{contract_name}.{function.signature} must return one number, address, bool, "
                         f"string or bytes value (it returns {', '.join(function.output_types) or 'nothing'})")
    values = [_argument(arg, type_, contracts) for arg, type_ in zip(args, function.input_types, strict=True)]
    canonical = f"{contract_name}.{function_name}({', '.join(args)})"
    return ReadSpec(address=contract.address, calldata=function.selector + abi_encode(list(function.input_types),
                                                                                       values),
                    text=canonical, contract=contract_name, function=function)


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


def _array(value: object, abi_type: str, contracts: Mapping[str, WatchedContract]) -> list[object]:
    item_type, _, length = abi_type[:-1].rpartition("[")
    if not isinstance(value, list):
        raise ValueError(f"argument {value!r} is not a list ({abi_type}) — write [a, b, …]")
    if length and len(value) != int(length):
        raise ValueError(f"argument has {len(value)} items, {abi_type} takes exactly {length} — list them all")
    return [argument_value(item, item_type, contracts) for item in value]
