"""The event kind: a watched contract's event matches a condition on its arguments, either event by event or
as an aggregate (count, sum, max, min) over a window of blocks or seconds, optionally per group."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from onguard.chain.abi import EventAbi, is_dynamic
from onguard.observations import BlockBatch, LogObservation
from onguard.policies.expr import Expression
from onguard.policies.kinds.base import (
    BLOCK_SCHEMA,
    NamedReads,
    PolicyEnv,
    StateValues,
    block_context,
    condition,
)
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.policies.reads import ReadSpec, expression_type
from onguard.tomlfields import Table

AGGREGATES = ("count", "sum", "max", "min")
Aggregate = Literal["count", "sum", "max", "min"]
MAX_EVIDENCE_TRANSACTIONS = 20


@dataclass(frozen=True, slots=True)
class Window:
    blocks: int | None
    seconds: int | None

    def describe(self) -> str:
        return f"{self.blocks} blocks" if self.blocks is not None else f"{self.seconds} seconds"

    def has_left(self, block_number: int, timestamp: int, now: BlockBatch) -> bool:
        """Whether something seen at (block_number, timestamp) is outside the window ending at `now`."""
        if self.blocks is not None:
            return block_number <= now.block.number - self.blocks
        return timestamp <= now.block.timestamp - self.seconds  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    function: Aggregate
    of: str | None               # the event argument aggregated (None for count)
    window: Window
    group_by: str | None         # an event argument: one aggregate per distinct value


@dataclass(frozen=True, slots=True)
class EventPolicy:
    common: PolicyCommon
    contract: str
    event: str
    where: Expression | None     # per event: which events count
    aggregate: AggregateSpec | None
    condition: Expression
    reads: NamedReads
    contracts_context: dict[str, Any]

    def evaluator(self) -> EventEvaluator:
        return EventEvaluator(self)

    def explain(self) -> list[str]:
        lines = [f"Watches {self.event} events of {self.contract}"
                 + (f" where {self.where.describe()}" if self.where else "") + "."]
        if self.aggregate:
            spec = self.aggregate
            measured = f"the {spec.function} of {spec.of}" if spec.of else "the number of such events"
            per = f", separately for each {spec.group_by}" if spec.group_by else ""
            lines.append(f"At each block it computes {measured} over the last {spec.window.describe()}{per} "
                         "(as `value`, with `events` = how many).")
        lines.append(f"It fires when {self.condition.describe()}.")
        return lines


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> EventPolicy:
    match = table.table("match", hint="[match] contract = \"…\", event = \"…\"")
    assert match is not None
    contract = env.contract(match, "contract")
    event_name = match.get("event", str)
    event = contract.abi.event(event_name)
    if event is None:
        raise match.fail("event", f"{contract.name} has no event {event_name!r}",
                         f"its events: {', '.join(contract.abi.event_names())}")
    reads = NamedReads.parse(table.table("reads", required=False), env)
    args_schema = _args_schema(event)
    where = None
    if match.get("where", str, default=None) is not None:
        where = condition(match, "where", {**args_schema, **env.address_schema()}, hint="e.g. \"args.assets > 0\"")
    match.finish()

    aggregate = _aggregate_spec(table.table("aggregate", required=False), event, args_schema)
    trigger = table.table("trigger", hint="[trigger] condition = \"…\"")
    assert trigger is not None
    schema = {**reads.schema(), **BLOCK_SCHEMA, **env.address_schema()}
    if aggregate is None:
        schema.update(args_schema)
    else:
        schema.update({"value": "number", "events": "number"})
        if aggregate.group_by:
            schema["group"] = args_schema[f"args.{aggregate.group_by}"]
    policy_condition = condition(trigger, "condition", schema,
                                 hint="e.g. \"value > 25% * state.assets\"" if aggregate else
                                 "e.g. \"args.assets > 100_000e18\"")
    trigger.finish()
    return EventPolicy(common=common, contract=contract.name, event=event.name, where=where, aggregate=aggregate,
                       condition=policy_condition, reads=reads, contracts_context=env.address_context())


def _args_schema(event: EventAbi) -> dict[str, str]:
    schema = {}
    hashed = {name for name, type_ in event.indexed if is_dynamic(type_)}
    for name in event.names:
        # An indexed string or bytes is only its keccak hash in the log: compare it as bytes, never as text.
        type_ = "bytes" if name in hashed else expression_type(event.type_of(name))
        if type_ is not None:
            schema[f"args.{name}"] = type_
    return schema


def _aggregate_spec(table: Table | None, event: EventAbi, args_schema: dict[str, str]) -> AggregateSpec | None:
    if table is None:
        return None
    function = table.get("function", str, hint=", ".join(AGGREGATES))
    if function not in AGGREGATES:
        raise table.fail("function", f"unknown aggregate {function!r}", f"one of: {', '.join(AGGREGATES)}")
    of = table.get("of", str, default=None)
    numeric = [p.removeprefix("args.") for p, t in args_schema.items() if t == "number"]
    if function == "count":
        if of is not None:
            raise table.fail("of", "count takes no argument", "remove `of`")
    elif of is None:
        raise table.fail("of", f"{function} needs the event argument to aggregate",
                         f"numeric arguments of {event.name}: {', '.join(numeric)}")
    else:
        of = of.removeprefix("args.")
        if of not in numeric:
            raise table.fail("of", f"{event.name} has no numeric argument {of!r}",
                             f"numeric arguments: {', '.join(numeric) or '(none)'}")
    group_by = table.get("group_by", str, default=None)
    if group_by is not None:
        group_by = group_by.removeprefix("args.")
        if f"args.{group_by}" not in args_schema:
            raise table.fail("group_by", f"{event.name} has no argument {group_by!r}",
                             f"its arguments: {', '.join(event.names)}")
    window = parse_window(table)
    table.finish()
    return AggregateSpec(function=function, of=of, window=window, group_by=group_by)  # type: ignore[arg-type]


def parse_window(table: Table) -> Window:
    blocks = table.get("window_blocks", int, default=None)
    seconds = table.get("window_seconds", int, default=None)
    if (blocks is None) == (seconds is None):
        raise table.fail("window_blocks", "give exactly one of window_blocks or window_seconds",
                         "e.g. window_blocks = 5, or window_seconds = 600")
    if (blocks if blocks is not None else seconds) < 1:  # type: ignore[operator]
        raise table.fail("window_blocks" if blocks is not None else "window_seconds", "must be at least 1")
    return Window(blocks=blocks, seconds=seconds)


@dataclass(frozen=True, slots=True)
class _Entry:
    block_number: int
    timestamp: int
    observation_id: str
    transaction_hash: str
    group: Any
    value: int


class EventEvaluator:
    def __init__(self, policy: EventPolicy) -> None:
        self.policy = policy
        self.common = policy.common
        self._window: deque[_Entry] = deque()
        self._seen: set[str] = set()

    @property
    def history_blocks(self) -> int:
        """How many past blocks it must see again after a restart to judge the next one as if never stopped."""
        spec = self.policy.aggregate
        if spec is None:
            return 0
        return spec.window.blocks if spec.window.blocks is not None else spec.window.seconds  # >= 1 s a block

    @property
    def reads(self) -> frozenset[ReadSpec]:
        return frozenset(self.policy.reads.specs.values())

    def forget_from(self, block_number: int) -> None:
        for entry in self._window:
            if entry.block_number >= block_number:
                self._seen.discard(entry.observation_id)
        self._window = deque(e for e in self._window if e.block_number < block_number)

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        matching = [log for log in batch.logs if self._matches(log)]
        if self.policy.aggregate is None:
            return self._per_event(batch, matching, state) if matching else None
        self._take(batch, matching)
        return self._per_window(batch, state) if self._window else None

    def _matches(self, log: LogObservation) -> bool:
        policy = self.policy
        if log.contract != policy.contract or log.event != policy.event:
            return False
        return policy.where is None or policy.where.evaluate({"args": log.args, **policy.contracts_context})

    def _context(self, batch: BlockBatch, state: StateValues) -> dict[str, Any]:
        return {"state": self.policy.reads.context(state), "block": block_context(batch),
                **self.policy.contracts_context}

    def _per_event(self, batch: BlockBatch, logs: list[LogObservation], state: StateValues) -> Finding | None:
        context = self._context(batch, state)
        tripped = [log for log in logs if self.policy.condition.evaluate({**context, "args": log.args})]
        if not tripped:
            return None
        first = tripped[0]
        summary = (f"{self.policy.event} on {self.policy.contract} in tx {first.transaction_hash} met "
                   f"{self.policy.condition.describe()}")
        evidence = {
            "events": [{"tx_hash": log.transaction_hash, "log_index": log.log_index, "args": dict(log.args)}
                       for log in tripped[:MAX_EVIDENCE_TRANSACTIONS]],
            "state": context["state"],
            "reads": self.policy.reads.texts(),
            "condition": self.policy.condition.describe(),
        }
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=summary,
                       block_number=batch.block.number, block_time=batch.block.timestamp, evidence=evidence)

    def _take(self, batch: BlockBatch, logs: list[LogObservation]) -> None:
        spec = self.policy.aggregate
        assert spec is not None
        for log in logs:
            if log.id in self._seen:
                continue
            value = 1 if spec.of is None else int(log.args[spec.of])
            group = log.args[spec.group_by] if spec.group_by else None
            self._window.append(_Entry(log.block_number, batch.block.timestamp, log.id, log.transaction_hash,
                                       group, value))
            self._seen.add(log.id)
        while self._window and spec.window.has_left(self._window[0].block_number, self._window[0].timestamp, batch):
            self._seen.discard(self._window.popleft().observation_id)

    def _per_window(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        spec = self.policy.aggregate
        assert spec is not None
        groups: dict[Any, list[_Entry]] = {}
        for entry in self._window:
            groups.setdefault(entry.group, []).append(entry)
        context = self._context(batch, state)
        tripped = []
        for group, entries in groups.items():
            value = _combine(spec.function, [e.value for e in entries])
            if self.policy.condition.evaluate({**context, "value": value, "events": len(entries), "group": group}):
                tripped.append((group, value, entries))
        if not tripped:
            return None
        group, value, entries = max(tripped, key=lambda item: item[1])
        measured = f"{spec.function}({spec.of})" if spec.of else "count"
        where = f" for {spec.group_by} {group}" if spec.group_by else ""
        summary = (f"{measured} of {self.policy.event} on {self.policy.contract} over {spec.window.describe()}"
                   f"{where} is {value}: {self.policy.condition.describe()}")
        evidence = {
            "measured": measured,
            "value": value,
            "events": len(entries),
            "group": group,
            "groups_tripped": len(tripped),
            "window": {"from_block": entries[0].block_number, "to_block": batch.block.number},
            "transactions": sorted({e.transaction_hash for e in entries})[:MAX_EVIDENCE_TRANSACTIONS],
            "state": context["state"],
            "reads": self.policy.reads.texts(),
            "condition": self.policy.condition.describe(),
        }
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=summary,
                       block_number=batch.block.number, block_time=batch.block.timestamp, evidence=evidence)


def _combine(function: str, values: list[int]) -> int:
    if function == "sum":
        return sum(values)
    if function == "max":
        return max(values)
    if function == "min":
        return min(values)
    return len(values)
