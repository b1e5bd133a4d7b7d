"""The call kind: a transaction calls a watched contract's function (e.g. transferOwnership, upgradeTo,
setPrice) from a sender it should not come from, or with arguments it should not have. Judged on mined
transactions here, and on pending ones once the mempool source feeds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onguard.chain.abi import FunctionAbi
from onguard.config import WatchedContract
from onguard.observations import BlockBatch, BlockObservation, TransactionObservation
from onguard.policies.expr import Expression
from onguard.policies.kinds.base import (
    BLOCK_SCHEMA,
    MemorylessEvaluator,
    NamedReads,
    PolicyEnv,
    StateValues,
    condition,
)
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.policies.reads import expression_type
from onguard.tomlfields import Table
from onguard.units import parse_address

TX_SCHEMA = {"tx.from": "address", "tx.to": "address", "tx.value": "number"}


@dataclass(frozen=True, slots=True)
class CallPolicy:
    common: PolicyCommon
    contract: str
    functions: frozenset[str]           # signatures
    allow_from: frozenset[str] | None   # lower-case addresses; None: no allow list
    deny_from: frozenset[str] | None
    where: Expression | None
    reads: NamedReads
    contracts_context: dict[str, Any]

    def evaluator(self) -> CallEvaluator:
        return CallEvaluator(self)

    def explain(self) -> list[str]:
        lines = [f"Watches transactions calling {' or '.join(sorted(self.functions))} on {self.contract}."]
        if self.allow_from is not None:
            lines.append(f"Only these senders may: {', '.join(sorted(self.allow_from))}; any other sender fires it.")
        if self.deny_from is not None:
            lines.append(f"It fires when the sender is one of: {', '.join(sorted(self.deny_from))}.")
        if self.where is not None:
            lines.append(f"It fires only when {self.where.describe()}.")
        if self.allow_from is None and self.deny_from is None and self.where is None:
            lines.append("Every such call fires it.")
        return lines

    def trips(self, tx: TransactionObservation, context: dict[str, Any]) -> bool:
        if tx.contract != self.contract or tx.function not in self.functions:
            return False
        if self.allow_from is not None and tx.sender.lower() in self.allow_from:
            return False
        if self.deny_from is not None and tx.sender.lower() not in self.deny_from:
            return False
        if self.where is None:
            return True
        tx_values = {"from": tx.sender, "to": tx.to, "value": tx.value}
        return bool(self.where.evaluate({**context, "tx": tx_values, "args": tx.args}))


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> CallPolicy:
    match = table.table("match", hint="[match] contract = \"…\", function = \"…\"")
    assert match is not None
    contract = env.contract(match, "contract")
    functions = _functions(match, contract)
    allow_from = _senders(match, "allow_from", env)
    deny_from = _senders(match, "deny_from", env)
    reads = NamedReads.parse(table.table("reads", required=False), env)
    where = None
    if match.get("where", str, default=None) is not None:
        schema = {**TX_SCHEMA, **reads.schema(), **BLOCK_SCHEMA, **env.address_schema()}
        if len(functions) == 1:
            schema.update(_args_schema(functions[0]))
        where = condition(match, "where", schema, hint="e.g. \"tx.from != contracts.timelock\"")
    match.finish()
    return CallPolicy(common=common, contract=contract.name, functions=frozenset(f.signature for f in functions),
                      allow_from=allow_from, deny_from=deny_from, where=where, reads=reads,
                      contracts_context=env.address_context())


def _functions(match: Table, contract: WatchedContract) -> list[FunctionAbi]:
    if match.has("functions"):
        names = match.get("functions", list)
    else:
        names = [match.get("function", str, hint="a signature such as \"setPrice(uint256)\", or a function name")]
    if not names:
        raise match.fail("functions", "is empty", "name at least one function")
    functions = []
    for name in names:
        if not isinstance(name, str):
            raise match.fail("functions", f"expected function names, got {name!r}")
        if contract.abi.has_function(name):
            functions.append(contract.abi.function(name))
            continue
        named = contract.abi.functions_named(name)
        if not named:
            mutating = sorted(f.signature for f in contract.abi.functions_by_signature.values() if not f.is_view)
            raise match.fail("functions" if match.has("functions") else "function",
                             f"{contract.name} has no function {name!r}", f"its functions: {', '.join(mutating)}")
        functions.extend(named)
    return functions


def _senders(match: Table, key: str, env: PolicyEnv) -> frozenset[str] | None:
    entries = match.get(key, list, default=None)
    if entries is None:
        return None
    addresses = set()
    for entry in entries:
        if isinstance(entry, str) and entry in env.contracts:
            addresses.add(env.contracts[entry].address.lower())
            continue
        try:
            addresses.add(parse_address(entry).lower())
        except ValueError as exc:
            raise match.fail(key, f"{entry!r} is neither a watched contract's name nor a valid address ({exc})",
                             "write 0x-addresses, or names from onguard.toml [contracts]") from None
    return frozenset(addresses)


def _args_schema(function: FunctionAbi) -> dict[str, str]:
    schema = {}
    for name, type_ in zip(function.input_names, function.input_types, strict=True):
        kind = expression_type(type_)
        if kind is not None:
            schema[f"args.{name}"] = kind
    return schema


class CallEvaluator(MemorylessEvaluator):
    policy: CallPolicy
    # `state.*` next to `args.*` means the state the call ran on: the parent block's for a mined call, the head's
    # for a pending one (observe_pending). Read after the block, it would already include the call's own effect.
    reads_parent_state = True

    def __init__(self, policy: CallPolicy) -> None:
        super().__init__(policy)
        # The pending path judges many calls on one head: what a condition sees besides the call is built once per
        # head (the state, the block, the contracts), not once per call. Keyed by identity: a head's state, once
        # read, is not changed.
        self._head: tuple[StateValues, BlockObservation, dict[str, Any]] | None = None

    @property
    def contract(self) -> str:
        return self.policy.contract

    @property
    def functions(self) -> frozenset[str]:
        return self.policy.functions

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        """Mined calls, judged on the state of the block before theirs (the engine reads it there)."""
        candidates = [tx for tx in batch.transactions if tx.contract == self.policy.contract]
        if not candidates:
            return None
        context = self._context(state, batch.block)
        tripped = [tx for tx in candidates if self.policy.trips(tx, context)]
        return self._finding(tripped, batch.block, path="block") if tripped else None

    def observe_pending(self, tx: TransactionObservation, state: StateValues, head: BlockObservation) -> Finding | None:
        """The same judgement on a transaction still in the mempool (state read at the latest block)."""
        if tx.contract != self.policy.contract:
            return None
        if not self.policy.trips(tx, self.head_context(state, head)):
            return None
        return self._finding([tx], head, path="mempool")

    def head_context(self, state: StateValues, head: BlockObservation) -> dict[str, Any]:
        """What the condition sees besides the call, on `head` and its state; built once per head. Raises when a
        read the condition needs failed: then judging any call to the contract reports that failure."""
        cached = self._head
        if cached is not None and cached[0] is state and cached[1] is head:
            return cached[2]
        context = self._context(state, head)
        self._head = (state, head, context)
        return context

    def _context(self, state: StateValues, block: BlockObservation) -> dict[str, Any]:
        return {"state": self.policy.reads.context(state) if self.policy.where else {},
                "block": {"number": block.number, "timestamp": block.timestamp}, **self.policy.contracts_context}

    def _finding(self, tripped: Sequence[TransactionObservation], block: BlockObservation, path: str) -> Finding:
        first = tripped[0]
        summary = f"{first.function} called on {self.policy.contract} by {first.sender} (tx {first.hash})"
        evidence = {
            "path": path,
            "calls": [{"tx_hash": tx.hash, "from": tx.sender, "function": tx.function, "args": dict(tx.args),
                       "value": tx.value} for tx in tripped],
            "note": ("pending transaction: not mined yet" if path == "mempool"
                     else "mined transaction: it may have reverted; the attempt is the signal"),
        }
        if path == "mempool":
            evidence["threat_tx"] = first.hash
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=summary,
                       block_number=block.number, block_time=block.timestamp, evidence=evidence)
