"""State reads a policy declares ("vault.totalAssets()", "asset.balanceOf(vault)"): parsed and resolved
against the watched contracts' ABIs at load time, so that at run time they are plain calldata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from eth_abi import encode as abi_encode

from onguard.chain.abi import FunctionAbi
from onguard.config import WatchedContract
from onguard.units import parse_address, parse_amount, parse_integer

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
    candidates = [f for f in contract.abi.functions_named(function_name) if len(f.input_types) == len(args)]
    if not candidates:
        views = sorted(f.signature for f in contract.abi.functions_by_signature.values() if f.is_view)
        raise ValueError(f"{contract_name} has no function {function_name} taking {len(args)} argument(s) — "
                         f"its views: {', '.join(views)}")
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
    if abi_type == "address":
        if text in contracts:
            return contracts[text].address
        try:
            return parse_address(text)
        except ValueError as exc:
            raise ValueError(f"argument {text!r} is neither a watched contract's name nor an address "
                             f"({exc})") from None
    if abi_type.startswith(("uint", "int")):
        value = parse_amount(text) if abi_type.startswith("uint") else parse_integer(text)
        bits = int(abi_type.lstrip("uint") or 256)
        low, high = (0, 2**bits - 1) if abi_type.startswith("uint") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if not low <= value <= high:
            raise ValueError(f"argument {text} is out of range for {abi_type} ({low}..{high})")
        return value
    if abi_type == "bool" and text in ("true", "false"):
        return text == "true"
    raise ValueError(f"argument {text!r} of type {abi_type} is not supported in reads (numbers, addresses "
                     "and true/false are)")
