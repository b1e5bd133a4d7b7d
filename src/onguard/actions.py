"""Emergency actions from onguard.toml: the pre-authorised calls the guardian may make (arguments normalised by
their ABI types and encoded once, at load) and the condition that tells the protocol is already in the safe state.

An action is one or more calls made in order in one transaction:

    [actions.freeze_pool]                      # the short form: one call on one contract
    contract = "pool"
    call = "setPoolPause(bool)"                # a full signature, or a name that is not overloaded
    args = [true]
    done_when = "paused()"                     # a bare call reads the action's own contract

    [actions.freeze_reserve]                   # the long form: several calls, on any watched contracts
    done_when = "pool.paused() and pool.getPaused(usdc)"
    [[actions.freeze_reserve.calls]]
    contract = "pool"
    function = "setReservePause(address,bool)"
    args = ["usdc", true]

`undo` (optional) is the way back, made by the Safe's owners, never by the guardian: `undo = "unpause()"` on the
action's own contract, or [[actions.NAME.undo]] tables shaped like [[calls]]. `onguard recover` proposes it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from eth_abi import encode as abi_encode
from eth_utils import keccak

from onguard.chain.abi import FunctionAbi
from onguard.chain.view import ReadFailure, StateReader
from onguard.errors import ChainError, ConfigError
from onguard.policies.expr import READ_VALUES, EvaluationError, Expression, ExpressionError, compile_condition
from onguard.policies.reads import ReadSpec, argument_value, expression_type, parse_read
from onguard.tomlfields import Table

if TYPE_CHECKING:
    from onguard.config import WatchedContract

_CALL_FIELDS_HINT = "contract = \"pool\", function = \"setPoolPause(bool)\", args = [true]"


class Via(StrEnum):
    """How an action reaches the chain."""

    MODULE = "module"          # the guardian key calls the GuardianModule
    PRESIGNED = "presigned"    # the daemon relays the owners' pre-signed Safe transaction


@dataclass(frozen=True, slots=True)
class ActionCall:
    """One call of an action: a watched contract's function and its arguments, encoded once at load."""

    contract: str                 # the watched contract's name
    target: str                   # its checksummed address
    function: FunctionAbi
    args: tuple[Any, ...]         # as the ABI encoder takes them
    calldata: bytes
    shown_args: tuple[str, ...] = field(default=(), compare=False)  # as the user wrote them, for people

    @property
    def text(self) -> str:
        """e.g. `pool.setReservePause(usdc, true)`."""
        return f"{self.contract}.{self.function.name}({', '.join(self.shown_args)})"

    @property
    def selector(self) -> bytes:
        return self.function.selector

    @property
    def calldata_hash(self) -> str:
        """What the GuardianModule's allowlist pins for this call: keccak256 of the exact calldata, 0x-hex."""
        return calldata_hash(self.calldata)


def calldata_hash(calldata: bytes) -> str:
    """keccak256 of the exact calldata (selector and ABI-encoded arguments), as 0x-hex: the allowlist's pin."""
    return "0x" + keccak(calldata).hex()


@dataclass(frozen=True, slots=True)
class DoneCondition:
    """When an action already holds: a condition over views of watched contracts written inline
    (`pool.paused() and pool.getPaused(usdc)`), compiled at load; its reads are made in one batch."""

    source: str
    reads: tuple[ReadSpec, ...]
    expression: Expression = field(repr=False, compare=False)
    _by_text: Mapping[str, ReadSpec] = field(repr=False, compare=False)  # each read as written -> its spec

    async def holds(self, reader: StateReader, block: int | str = "latest") -> bool:
        """Whether the protocol is in this action's safe state at `block`. A read or an evaluation that fails
        raises ChainError: a failure is never taken for "done"."""
        return self.holds_in(await reader.read(self.reads, block))

    def holds_in(self, values: Mapping[ReadSpec, Any]) -> bool:
        """Whether it holds on values already read (each of its reads: a value or a ReadFailure). Raises
        ChainError as holds() does."""
        context: dict[str, Any] = {}
        for text, spec in self._by_text.items():
            value = values[spec]
            if isinstance(value, ReadFailure):
                raise ChainError(f"done_when {self.source!r}: the read {spec.text} failed ({value.reason})")
            context[text] = value
        try:
            return bool(self.expression.evaluate({READ_VALUES: context}))
        except EvaluationError as exc:
            raise ChainError(f"done_when {self.source!r} cannot be evaluated: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class ActionSettings:
    """A pre-authorised action: its calls, made in order in one transaction, and how to tell it already holds."""

    name: str
    calls: tuple[ActionCall, ...]
    done_when: DoneCondition
    via: Via = Via.MODULE
    undo: tuple[ActionCall, ...] = ()  # the owners' way back (unpause), proposed by `onguard recover`

    @property
    def text(self) -> str:
        """e.g. `pool.setPoolPause(true); pool.setReservePause(usdc, true)`."""
        return "; ".join(call.text for call in self.calls)

    @property
    def calldata_hashes(self) -> tuple[str, ...]:
        """What the module's allowlist pins, call by call: keccak256 of each call's exact calldata."""
        return tuple(call.calldata_hash for call in self.calls)


def compile_done_when(source: str, contracts: Mapping[str, WatchedContract],
                      own_contract: str | None = None) -> DoneCondition:
    """Compiles a done_when condition; a bare `paused()` reads `own_contract`. Raises ExpressionError."""
    specs: dict[str, ReadSpec] = {}

    def resolve(text: str) -> str:
        if "." not in text.split("(", 1)[0]:
            if own_contract is None:
                raise ValueError(f"{text} does not say which contract to read: this action calls several — "
                                 f"write contract.{text}")
            spec = parse_read(f"{own_contract}.{text}", contracts)
        else:
            spec = parse_read(text, contracts)
        specs[text] = spec
        kind = expression_type(spec.output_type)
        assert kind is not None  # parse_read refuses results an expression cannot hold
        return kind

    expression = compile_condition(source, {}, reads=resolve)
    return DoneCondition(source=source, reads=tuple(dict.fromkeys(specs.values())), expression=expression,
                         _by_text=specs)


def parse_action(name: str, entry: Table, contracts: Mapping[str, WatchedContract]) -> ActionSettings:
    """[actions.NAME] → ActionSettings; every problem is a ConfigError naming the field."""
    calls = _calls(entry, contracts)
    touched = {call.contract for call in calls}
    done_when = _done_when(entry, contracts, own_contract=next(iter(touched)) if len(touched) == 1 else None)
    written = entry.get("via", str, default=Via.MODULE.value)
    if written not in set(Via):
        raise entry.fail("via", f"{written!r} is neither \"module\" nor \"presigned\"",
                         "module: the guardian key calls the GuardianModule; presigned: the daemon executes "
                         "the owners' pre-signed Safe transaction (`onguard presign`)")
    via = Via(written)
    if via == Via.PRESIGNED and len(calls) > 1:
        raise entry.fail("via", f"a pre-signed action makes one call, this one makes {len(calls)}",
                         "use via = \"module\" for several calls in one transaction, or split the action")
    undo = _undo(entry, contracts, own_contract=next(iter(touched)) if len(touched) == 1 else None)
    entry.finish()
    return ActionSettings(name=name, calls=calls, done_when=done_when, via=via, undo=undo)


def _undo(entry: Table, contracts: Mapping[str, WatchedContract], own_contract: str | None) -> tuple[ActionCall, ...]:
    """The optional way back: `undo = "unpause()"` on the action's own contract, or [[undo]] tables."""
    if not entry.has("undo"):
        return ()
    value = entry.get("undo", (str, list), hint=f"\"unpause()\", or [[{entry.field_name('undo')}]] tables: "
                                               f"{_CALL_FIELDS_HINT}")
    if isinstance(value, str):
        if own_contract is None:
            raise entry.fail("undo", "this action calls several contracts: say which one each undo call is on",
                             f"write [[{entry.field_name('undo')}]] tables: {_CALL_FIELDS_HINT}")
        # Read like the short form of calls, so that a mistake names the field the user wrote: ….undo
        prefix = entry.field_name("undo").rpartition(".")[0]
        table = Table({"contract": own_contract, "undo": value}, file=entry.file, prefix=prefix, error=ConfigError)
        return (_call(table, "undo", contracts),)
    if not value:
        raise entry.fail("undo", "is empty", "leave it out, or give the calls that undo the action")
    return _call_tables(entry, "undo", value, contracts)


def _call_tables(entry: Table, key: str, items: list, contracts: Mapping[str, WatchedContract]
                 ) -> tuple[ActionCall, ...]:
    """The [[key]] tables of an action, each one call."""
    calls = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise entry.fail(f"{key}[{index}]", f"expected a table, got {item!r}",
                             f"write [[{entry.field_name(key)}]] tables: {_CALL_FIELDS_HINT}")
        table = Table(item, file=entry.file, prefix=entry.field_name(f"{key}[{index}]"), error=ConfigError)
        calls.append(_call(table, "function", contracts))
        table.finish()
    return tuple(calls)


def _calls(entry: Table, contracts: Mapping[str, WatchedContract]) -> tuple[ActionCall, ...]:
    if entry.has("calls"):
        for short in ("contract", "call", "args"):
            if entry.has(short):
                raise entry.fail(short, "give either contract/call/args (one call) or [[calls]] tables, not both",
                                 "move it into a [[calls]] table")
        items = entry.get("calls", list, hint=f"[[{entry.field_name('calls')}]] tables: {_CALL_FIELDS_HINT}")
        if not items:
            raise entry.fail("calls", "is empty", f"add a [[{entry.field_name('calls')}]] table")
        return _call_tables(entry, "calls", items, contracts)
    if not entry.has("contract") and not entry.has("call"):
        raise entry.fail("calls", "is required but missing",
                         f"one call: contract = \"vault\", call = \"pause()\"; several: [[{entry.field_name('calls')}]]"
                         f" tables with {_CALL_FIELDS_HINT}")
    return (_call(entry, "call", contracts),)


def _call(table: Table, function_key: str, contracts: Mapping[str, WatchedContract]) -> ActionCall:
    contract_name = table.get("contract", str)
    contract = contracts.get(contract_name)
    if contract is None:
        close = difflib.get_close_matches(contract_name, list(contracts), n=1)
        raise table.fail("contract", f"no contract named {contract_name!r}"
                         + (f"; did you mean {close[0]!r}?" if close else ""),
                         f"known contracts: {', '.join(contracts)}")
    function = _function(table, function_key, contract)
    raw_args = table.get("args", list, default=[], hint="a list of the function's arguments, e.g. [\"usdc\", true]")
    if len(raw_args) != len(function.input_types):
        raise table.fail("args", f"{contract_name}.{function.signature} takes {len(function.input_types)} "
                                 f"argument(s), got {len(raw_args)}", f"args = [{_parameters(function)}]")
    args = []
    for index, (raw, abi_type) in enumerate(zip(raw_args, function.input_types, strict=True)):
        try:
            args.append(argument_value(raw, abi_type, contracts))
        except ValueError as exc:
            message, _, hint = str(exc).partition(" — ")
            parameter = function.input_names[index]
            raise table.fail(f"args[{index}]", f"{parameter} ({abi_type}) of {function.signature}: {message}",
                             hint or None) from None
    return ActionCall(contract=contract_name, target=contract.address, function=function, args=tuple(args),
                      calldata=function.selector + abi_encode(list(function.input_types), args),
                      shown_args=tuple(_shown(raw, abi_type) for raw, abi_type in zip(raw_args, function.input_types,
                                                                                       strict=True)))


def _function(table: Table, key: str, contract: WatchedContract) -> FunctionAbi:
    text = table.get(key, str, hint="a function signature such as \"setPaused(bool)\", or its name")
    signature = re.sub(r"\s+", "", text)
    if contract.abi.has_function(signature):
        function = contract.abi.function(signature)
    else:
        named = contract.abi.functions_named(signature) if "(" not in signature else []
        if len(named) > 1:
            raise table.fail(key, f"{contract.name}.{signature} is overloaded",
                             f"write the full signature, one of: {', '.join(sorted(f.signature for f in named))}")
        if not named:
            everything = contract.abi.function_signatures()
            names = sorted({f.name for f in contract.abi.functions_by_signature.values()})
            close = difflib.get_close_matches(signature, everything, n=1) or difflib.get_close_matches(
                signature.split("(")[0], names, n=1)
            raise table.fail(key, f"{contract.name} has no function {text}"
                             + (f"; did you mean {close[0]}?" if close else ""),
                             f"functions: {', '.join(everything)}")
        function = named[0]
    if function.is_view:
        raise table.fail(key, f"{contract.name}.{function.signature} is a view: calling it changes nothing",
                         "name the function that puts the protocol in its safe state (pause, setPaused, …)")
    return function


def _parameters(function: FunctionAbi) -> str:
    return ", ".join(f"{name}: {type_}" for name, type_ in zip(function.input_names, function.input_types,
                                                               strict=True))


def _shown(raw: Any, abi_type: str) -> str:
    """An argument as the user wrote it (a contract's name stays a name), for logs and plans."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, list):
        item_type = abi_type[:abi_type.rfind("[")]
        return "[" + ", ".join(_shown(item, item_type) for item in raw) + "]"
    if abi_type == "string":
        return f'"{raw}"'
    return str(raw)


def _done_when(entry: Table, contracts: Mapping[str, WatchedContract], own_contract: str | None) -> DoneCondition:
    source = entry.get("done_when", str, hint="a condition over views, e.g. \"paused()\" or "
                                              "\"pool.paused() and pool.getPaused(usdc)\"")
    try:
        condition = compile_done_when(source, contracts, own_contract)
    except ExpressionError as exc:
        raise entry.fail("done_when", exc.message, exc.hint) from None
    if not condition.reads:
        # A constant "done" would never act; a constant "not done" would pause a paused protocol again and again.
        raise entry.fail("done_when", f"{source.strip()!r} reads nothing from the chain",
                         "write a view of the protocol that tells it is in the safe state, e.g. \"paused()\"")
    return condition
