"""What an auditor reads of a played scenario, taken from the chain: call traces of the attack and pause
transactions (Anvil's `debug_traceTransaction` call tracer) with functions and revert reasons decoded by the
configured ABIs, balance changes per holder and token, and the protocol's holdings block by block."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_utils import function_abi_to_4byte_selector, to_checksum_address

ERROR_STRING = bytes.fromhex("08c379a0")   # Error(string)
PANIC = bytes.fromhex("4e487b71")          # Panic(uint256)
MAX_CALLS = 200                            # per trace: an attack contract looping over thousands of calls is cut


@dataclass(frozen=True, slots=True)
class Call:
    depth: int
    kind: str                     # CALL, DELEGATECALL, STATICCALL, CREATE…
    target: str                   # "vault" when the address is named, else the address
    function: str                 # "redeemFor", or the 4-byte selector when no ABI names it
    value: int
    error: str | None             # the revert reason, decoded


@dataclass(frozen=True, slots=True)
class TxTrace:
    label: str                    # "attack[0] vault.redeemFor(…)" or "pause pause_vault"
    tx_hash: str
    block: int
    position: int
    succeeded: bool
    revert_reason: str | None
    calls: tuple[Call, ...]


@dataclass(frozen=True, slots=True)
class BalanceChange:
    holder: str
    address: str
    token: str                    # the token's symbol
    decimals: int
    before: int                   # base units, before the first attack block
    after: int                    # base units, once the replay ended

    @property
    def change(self) -> int:
        return self.after - self.before


@dataclass(frozen=True, slots=True)
class HoldingsPoint:
    block: int
    usd: float


class Decoder:
    """Names addresses, functions, errors by every ABI the scenario and the config know."""

    def __init__(self, named: Mapping[str, tuple[str, Iterable[Mapping[str, Any]] | None]]) -> None:
        """`named`: address → (name, ABI or None)."""
        self._names = {address.lower(): name for address, (name, _abi) in named.items()}
        self._functions: dict[str, dict[bytes, str]] = {}
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for address, (_name, abi) in named.items():
            functions = self._functions.setdefault(address.lower(), {})
            for item in abi or ():
                if item.get("type") == "function":
                    functions[function_abi_to_4byte_selector(item)] = item["name"]
                elif item.get("type") == "error":
                    types = [i["type"] for i in item.get("inputs", [])]
                    selector = function_abi_to_4byte_selector({**item, "type": "function"})
                    self._errors[selector] = (item["name"], types)

    def name(self, address: str | None) -> str:
        if not address:
            return "(new contract)"
        return self._names.get(address.lower(), to_checksum_address(address))

    def function(self, address: str | None, data: bytes) -> str:
        if len(data) < 4:
            return "(transfer)" if not data else "0x" + data.hex()
        known = self._functions.get((address or "").lower(), {})
        return known.get(data[:4]) or next((f[data[:4]] for f in self._functions.values() if data[:4] in f),
                                           "0x" + data[:4].hex())

    def revert(self, output: bytes, error: str | None) -> str | None:
        if error is None:
            return None
        if output[:4] == ERROR_STRING:
            try:
                return str(decode(["string"], output[4:])[0])
            except Exception:  # noqa: BLE001 - a malformed reason is shown raw below
                pass
        if output[:4] == PANIC and len(output) >= 36:
            return f"Panic(0x{int.from_bytes(output[4:36], 'big'):02x})"
        if output[:4] in self._errors:
            name, types = self._errors[output[:4]]
            try:
                args = decode(types, output[4:])
                return f"{name}({', '.join(_show(a) for a in args)})"
            except Exception:  # noqa: BLE001
                return f"{name}(…)"
        if output:
            return f"{error} (0x{output.hex()})"
        return error


def trace(tracer_output: Mapping[str, Any], decoder: Decoder, *, label: str, tx_hash: str, block: int,
          position: int) -> TxTrace:
    """Flattens the call tracer's tree, depth first."""
    calls: list[Call] = []

    def visit(frame: Mapping[str, Any], depth: int) -> None:
        if len(calls) >= MAX_CALLS:
            return
        data = _bytes(frame.get("input"))
        target = frame.get("to")
        kind = str(frame.get("type", "CALL"))
        function = "constructor" if kind.startswith("CREATE") else decoder.function(target, data)
        calls.append(Call(depth=depth, kind=kind, target=decoder.name(target), function=function,
                          value=int(frame.get("value") or "0x0", 16),
                          error=decoder.revert(_bytes(frame.get("output")), frame.get("error"))))
        for child in frame.get("calls") or ():
            visit(child, depth + 1)

    visit(tracer_output, 0)
    top = calls[0] if calls else None
    return TxTrace(label=label, tx_hash=tx_hash, block=block, position=position,
                   succeeded=top is not None and top.error is None,
                   revert_reason=top.error if top is not None else None, calls=tuple(calls))


def _bytes(value: object) -> bytes:
    text = str(value or "0x")
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def amount(value: int, decimals: int) -> str:
    """Base units as a readable token amount: 400000000000000000000000, 18 → 400,000."""
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**decimals)
    text = f"{whole:,}"
    if fraction:
        text += "." + f"{fraction:0{decimals}d}".rstrip("0")[:6]
    return sign + text
