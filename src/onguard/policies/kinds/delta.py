"""The delta kind: how a numeric state value moved between blocks (a share price jumping within one block, TVL
falling by a third within ten), measured exactly: `change` and `drawdown` are fractions, never floats."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from onguard.chain.view import ReadFailure
from onguard.observations import BlockBatch
from onguard.policies.expr import Expression
from onguard.policies.kinds.base import BLOCK_SCHEMA, NamedReads, PolicyEnv, StateValues, block_context, condition
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.policies.reads import ReadSpec, expression_type
from onguard.tomlfields import Table

MEASURES = ("current", "previous", "peak", "trough", "change", "drawdown")
# The relative measures, and what they divide by: undefined (and so silent, if the condition uses them) at 0.
RELATIVE = {"change": "previous", "drawdown": "peak"}

Number = int | Fraction


@dataclass(frozen=True, slots=True)
class DeltaPolicy:
    common: PolicyCommon
    of: str                      # a name from [reads]
    blocks: int                  # the look-back: `previous` is the value this many blocks ago
    condition: Expression
    reads: NamedReads
    contracts_context: dict[str, Any]

    @property
    def spec(self) -> ReadSpec:
        return self.reads.specs[self.of]

    def evaluator(self) -> DeltaEvaluator:
        return DeltaEvaluator(self)

    def explain(self) -> list[str]:
        reads = "; ".join(f"state.{name} = {text}" for name, text in self.reads.texts().items())
        earlier = f"{self.blocks} block{'s' if self.blocks != 1 else ''}"
        return [f"At every block it reads {reads}.",
                f"It compares {self.of} with its value {earlier} earlier: `current`, `previous`, and `peak` and "
                f"`trough` over the last {self.blocks + 1} blocks; `change` = (current - previous) / previous and "
                "`drawdown` = (peak - current) / peak, as exact fractions.",
                f"It stays silent until it has seen the {earlier} before, and at a block where a measure the "
                "condition uses would divide by zero.",
                f"It fires when {self.condition.describe()}."]


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> DeltaPolicy:
    reads = NamedReads.parse(table.table("reads", hint="e.g. [reads] tvl = \"vault.totalAssets()\""), env)
    delta = table.table("delta", hint="[delta] of = \"tvl\", blocks = 10")
    assert delta is not None
    numeric = [name for name, spec in reads.specs.items() if expression_type(spec.output_type) == "number"]
    of = delta.get("of", str, hint="the name of a numeric read from [reads], e.g. of = \"tvl\"").removeprefix("state.")
    if of not in reads.specs:
        raise delta.fail("of", f"no read named {of!r} in [reads]",
                         f"numeric reads: {', '.join(numeric) or '(none)'}")
    if of not in numeric:
        raise delta.fail("of", f"{of} = {reads.specs[of].text} returns {reads.specs[of].output_type}, not a number",
                         f"a delta measures a number; numeric reads: {', '.join(numeric) or '(none)'}")
    blocks = delta.get("blocks", int, hint="the look-back in blocks, e.g. blocks = 10")
    if blocks < 1:
        raise delta.fail("blocks", "must be at least 1", "blocks = 1 compares each block with the one before")
    delta.finish()
    trigger = table.table("trigger", hint="[trigger] condition = \"drawdown > 30%\"")
    assert trigger is not None
    schema = {**{name: "number" for name in MEASURES}, **reads.schema(), **BLOCK_SCHEMA, **env.address_schema()}
    policy_condition = condition(trigger, "condition", schema)
    trigger.finish()
    return DeltaPolicy(common=common, of=of, blocks=blocks, condition=policy_condition, reads=reads,
                       contracts_context=env.address_context())


class DeltaEvaluator:
    def __init__(self, policy: DeltaPolicy) -> None:
        self.policy = policy
        self.common = policy.common
        self._samples: dict[int, int] = {}  # block number -> the value of `of` there, in block order
        self._relative_used = sorted(set(RELATIVE) & policy.condition.references)

    @property
    def history_blocks(self) -> int:
        """How many past blocks it must see again after a restart to judge the next one as if never stopped."""
        return self.policy.blocks

    @property
    def reads(self) -> frozenset[ReadSpec]:
        return frozenset(self.policy.reads.specs.values())

    def forget_from(self, block_number: int) -> None:
        self._samples = {number: value for number, value in self._samples.items() if number < block_number}

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        policy = self.policy
        number = batch.block.number
        if self._samples and next(reversed(self._samples)) >= number:
            self.forget_from(number)  # a block seen again replaces what was seen from it on
        value = state.get(policy.spec)
        if value is not None and not isinstance(value, ReadFailure):
            self._samples[number] = value
        horizon = number - policy.blocks
        for old in [n for n in self._samples if n < horizon]:
            del self._samples[old]
        values = policy.reads.context(state)  # a failed read is an evaluation error, never "nothing happened"
        previous = self._samples.get(horizon)
        if previous is None:
            return None  # not enough history yet
        current = values[policy.of]
        window = list(self._samples.values())  # blocks horizon..number
        peak, trough = max(window), min(window)
        measures: dict[str, Number | None] = {
            "current": current, "previous": previous, "peak": peak, "trough": trough,
            "change": _ratio(current - previous, previous), "drawdown": _ratio(peak - current, peak),
        }
        if any(measures[name] is None for name in self._relative_used):
            return None
        defined = {name: measure for name, measure in measures.items() if measure is not None}
        context = {"state": values, "block": block_context(batch), **policy.contracts_context, **defined}
        if not policy.condition.evaluate(context):
            return None
        summary = (f"{policy.of} went from {previous} to {current} over {policy.blocks} block(s) (change "
                   f"{_percent(measures['change'])}, drawdown {_percent(measures['drawdown'])}): "
                   f"{policy.condition.describe()}")
        evidence = {
            "of": policy.of,
            "read": policy.spec.text,
            "blocks": policy.blocks,
            **measures,
            "window": {"from_block": horizon, "to_block": number},
            "state": values,
            "reads": policy.reads.texts(),
            "condition": policy.condition.describe(),
        }
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=summary, block_number=number,
                       block_time=batch.block.timestamp, evidence=evidence)


def _ratio(numerator: int, denominator: int) -> Number | None:
    """numerator / denominator exactly (an int when whole); None when the denominator is 0."""
    if not denominator:
        return None
    ratio = Fraction(numerator, denominator)
    return ratio.numerator if ratio.denominator == 1 else ratio


def _percent(value: Number | None) -> str:
    """For summaries only: the exact value stays in the evidence."""
    return "undefined" if value is None else f"{float(value * 100):.4g}%"
