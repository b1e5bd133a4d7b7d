"""The oracle kind: a price feed against a reference (its own time-weighted average, a fixed band, or another
feed), with its jump since the previous block and, when it publishes an update time, its staleness."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from onguard.chain.view import ReadFailure
from onguard.observations import BlockBatch
from onguard.policies.expr import EvaluationError, Expression
from onguard.policies.kinds.base import (
    BLOCK_SCHEMA,
    NamedReads,
    PolicyEnv,
    StateValues,
    block_context,
    condition,
    read_from_policy,
)
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.policies.reads import ReadSpec, expression_type
from onguard.tomlfields import Table
from onguard.units import parse_amount

REFERENCE_HINT = ("\"twap\" (with twap_blocks), \"band\" (with band = [low, high]) or a read such as "
                  "\"oracle2.price()\"")
# The measures that divide, and so are undefined (silent, if the condition uses them) when the divisor is 0.
RELATIVE = ("deviation", "jump")

Number = int | Fraction


@dataclass(frozen=True, slots=True)
class Reference:
    mode: Literal["twap", "band", "read"]
    twap_blocks: int | None = None
    band: tuple[int, int] | None = None
    read: ReadSpec | None = None

    def describe(self) -> str:
        if self.mode == "twap":
            return f"its time-weighted average over the previous {self.twap_blocks} blocks"
        if self.mode == "band":
            low, high = self.band  # type: ignore[misc]
            return f"the midpoint of the band [{low}, {high}]"
        return self.read.text  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class OraclePolicy:
    common: PolicyCommon
    price: ReadSpec
    updated_at: ReadSpec | None
    reference: Reference
    condition: Expression
    reads: NamedReads
    contracts_context: dict[str, Any]

    def evaluator(self) -> OracleEvaluator:
        return OracleEvaluator(self)

    def explain(self) -> list[str]:
        lines = [f"At every block it reads the price {self.price.text}"
                 + (f" and its update time {self.updated_at.text}" if self.updated_at else "")
                 + "".join(f"; state.{name} = {text}" for name, text in self.reads.texts().items()) + "."]
        lines.append(f"It compares the price with {self.reference.describe()} (`reference`): `deviation` = "
                     "|price - reference| / reference; `jump` = |price - previous price| / previous price, the "
                     "previous price being the one at the previous block it saw.")
        if self.updated_at:
            lines.append(f"`staleness` = block.timestamp - {self.updated_at.text}, in seconds.")
        if self.reference.mode == "band":
            lines.append("`in_band` is true while the price lies within the band (bounds included).")
        if self.reference.mode == "twap":
            lines.append("It stays silent until it has seen at least one earlier block.")
        lines.append("A measure the condition uses that would divide by zero (or a jump at the first block it "
                     "sees) keeps it silent for that block.")
        lines.append(f"It fires when {self.condition.describe()}.")
        return lines


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> OraclePolicy:
    oracle = table.table("oracle", hint="[oracle] price = \"oracle.price()\", reference = \"twap\"")
    assert oracle is not None
    price = _numeric_read(oracle, "price", env)
    updated_at = _numeric_read(oracle, "updated_at", env) if oracle.has("updated_at") else None
    reference = _reference(oracle, env)
    oracle.finish()
    reads = NamedReads.parse(table.table("reads", required=False), env)
    trigger = table.table("trigger", hint="[trigger] condition = \"deviation > 5%\"")
    assert trigger is not None
    schema = {"price": "number", "reference": "number", "deviation": "number", "jump": "number"}
    if updated_at is not None:
        schema["staleness"] = "number"
    if reference.mode == "band":
        schema["in_band"] = "bool"
    policy_condition = condition(trigger, "condition", {**schema, **reads.schema(), **BLOCK_SCHEMA,
                                                        **env.address_schema()})
    trigger.finish()
    return OraclePolicy(common=common, price=price, updated_at=updated_at, reference=reference,
                        condition=policy_condition, reads=reads, contracts_context=env.address_context())


def _numeric_read(table: Table, key: str, env: PolicyEnv) -> ReadSpec:
    spec = table.parsed(key, lambda text: read_from_policy(text, env), hint="a read such as \"oracle.price()\"")
    if expression_type(spec.output_type) != "number":
        raise table.fail(key, f"{spec.text} returns {spec.output_type}, not a number",
                         "the oracle kind compares prices and times: name a view returning a number")
    return spec


def _reference(table: Table, env: PolicyEnv) -> Reference:
    text = table.get("reference", str, hint=REFERENCE_HINT)
    if text == "twap":
        reference = Reference("twap", twap_blocks=table.get("twap_blocks", int, hint="reference = \"twap\" needs "
                                                            "the window, e.g. twap_blocks = 20"))
        if reference.twap_blocks < 1:  # type: ignore[operator]
            raise table.fail("twap_blocks", "must be at least 1", "e.g. twap_blocks = 20")
    elif text == "band":
        reference = Reference("band", band=table.parsed("band", _band, hint="reference = \"band\" needs the band, "
                                                                           "e.g. band = [\"0.9e18\", \"1.1e18\"]"))
    else:
        try:
            spec = read_from_policy(text, env)
        except ValueError as exc:
            raise table.fail("reference", f"{text!r} is neither \"twap\", \"band\" nor a valid read: {exc}",
                             f"write {REFERENCE_HINT}") from None
        if expression_type(spec.output_type) != "number":
            raise table.fail("reference", f"{spec.text} returns {spec.output_type}, not a number",
                             "the reference is a price: name a view returning a number")
        reference = Reference("read", read=spec)
    for key, mode in (("twap_blocks", "twap"), ("band", "band")):
        if reference.mode != mode and table.has(key):
            raise table.fail(key, f"is only used with reference = \"{mode}\"",
                             f"remove it, or set reference = \"{mode}\"")
    return reference


def _band(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected two amounts [low, high], got {value!r}")
    low, high = (parse_amount(bound) for bound in value)
    if low > high:
        raise ValueError(f"the low bound {low} is above the high bound {high}")
    if high == 0:
        raise ValueError("the band is [0, 0]: its midpoint, the reference, would be 0")
    return low, high


@dataclass(frozen=True, slots=True)
class _Sample:
    block_number: int
    timestamp: int
    price: int


class OracleEvaluator:
    def __init__(self, policy: OraclePolicy) -> None:
        self.policy = policy
        self.common = policy.common
        self._samples: deque[_Sample] = deque()  # in block order; the last one is the newest block seen
        self._relative_used = [name for name in RELATIVE if name in policy.condition.references]

    @property
    def history_blocks(self) -> int:
        """How many past blocks it must see again after a restart to judge the next one as if never stopped."""
        return (self.policy.reference.twap_blocks or 0) + 1

    @property
    def reads(self) -> frozenset[ReadSpec]:
        policy = self.policy
        extra = [spec for spec in (policy.price, policy.updated_at, policy.reference.read) if spec is not None]
        return frozenset([*policy.reads.specs.values(), *extra])

    def forget_from(self, block_number: int) -> None:
        while self._samples and self._samples[-1].block_number >= block_number:
            self._samples.pop()

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        policy = self.policy
        number, timestamp = batch.block.number, batch.block.timestamp
        self.forget_from(number)  # a block seen again replaces what was seen from it on
        price = _value(state, policy.price, "price")
        earlier = list(self._samples)
        self._samples.append(_Sample(number, timestamp, price))
        self._prune(number)
        values = policy.reads.context(state)
        updated_at = _value(state, policy.updated_at, "updated_at") if policy.updated_at is not None else None
        reference, window = self._reference(batch, state, earlier)
        if reference is None:
            return None  # a twap without any earlier block yet
        previous_price = earlier[-1].price if earlier else None
        measures: dict[str, Any] = {
            "price": price,
            "reference": reference,
            "deviation": _ratio(abs(price - reference), reference),
            "jump": None if previous_price is None else _ratio(abs(price - previous_price), previous_price),
        }
        if updated_at is not None:
            measures["staleness"] = timestamp - updated_at
        band = policy.reference.band
        if band is not None:
            measures["in_band"] = band[0] <= price <= band[1]
        if any(measures[name] is None for name in self._relative_used):
            return None
        defined = {name: measure for name, measure in measures.items() if measure is not None}
        context = {"state": values, "block": block_context(batch), **policy.contracts_context, **defined}
        if not policy.condition.evaluate(context):
            return None
        summary = (f"{policy.price.text} = {price} against {policy.reference.describe()} = {_shown(reference)} "
                   f"(deviation {_percent(measures['deviation'])}, jump {_percent(measures['jump'])}"
                   + (f", {measures['staleness']} s since its update" if updated_at is not None else "")
                   + f"): {policy.condition.describe()}")
        feed = {"price": policy.price.text, "reference": policy.reference.read.text if policy.reference.read
                else policy.reference.mode}
        if policy.updated_at is not None:
            feed["updated_at"] = policy.updated_at.text
        evidence: dict[str, Any] = {
            **measures,
            "previous_price": previous_price,
            "updated_at": updated_at,
            "reference_kind": policy.reference.mode,
            "feed": feed,
            "state": values,
            "reads": policy.reads.texts(),
            "condition": policy.condition.describe(),
        }
        if policy.reference.mode == "twap":
            evidence["twap"] = {"blocks": policy.reference.twap_blocks, "from_block": window[0].block_number,
                                "to_block": window[-1].block_number}
        if band is not None:
            evidence["band"] = list(band)
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=summary, block_number=number,
                       block_time=timestamp, evidence=evidence)

    def _prune(self, number: int) -> None:
        """Keeps what the next block needs: its twap window, or (for `jump`) the newest sample."""
        horizon = number + 1 - (self.policy.reference.twap_blocks or 1)
        while self._samples[0].block_number < horizon:
            self._samples.popleft()

    def _reference(self, batch: BlockBatch, state: StateValues,
                   earlier: list[_Sample]) -> tuple[Number | None, list[_Sample]]:
        reference = self.policy.reference
        if reference.mode == "band":
            low, high = reference.band  # type: ignore[misc]
            return _whole(Fraction(low + high, 2)), []
        if reference.mode == "read":
            return _value(state, reference.read, "reference"), []  # type: ignore[arg-type]
        start = batch.block.number - reference.twap_blocks  # type: ignore[operator]
        window = [sample for sample in earlier if sample.block_number >= start]
        if not window:
            return None, []
        return twap(window, batch.block.timestamp), window


def twap(window: list[_Sample], now: int) -> Number:
    """The time-weighted average price: each block's price holds from its timestamp until the next block's
    (the last until `now`, the current block's). When no time passes at all, the plain mean of the blocks."""
    ends = [sample.timestamp for sample in window[1:]] + [now]
    weights = [max(end - sample.timestamp, 0) for sample, end in zip(window, ends, strict=True)]
    total = sum(weights)
    if total == 0:
        return _whole(Fraction(sum(sample.price for sample in window), len(window)))
    return _whole(Fraction(sum(sample.price * weight for sample, weight in zip(window, weights, strict=True)),
                           total))


def _value(state: StateValues, spec: ReadSpec, label: str) -> int:
    value = state[spec]
    if isinstance(value, ReadFailure):
        raise EvaluationError(f"read {label} = {spec.text} failed: {value.reason}")
    return value  # type: ignore[no-any-return]


def _whole(value: Fraction) -> Number:
    return value.numerator if value.denominator == 1 else value


def _ratio(numerator: Number, denominator: Number) -> Number | None:
    """numerator / denominator exactly (an int when whole); None when the denominator is 0."""
    if not denominator:
        return None
    return _whole(Fraction(numerator) / denominator)


def _percent(value: Number | None) -> str:
    """For summaries only: the exact value stays in the evidence."""
    return "undefined" if value is None else f"{float(value * 100):.4g}%"


def _shown(value: Number) -> str:
    return str(value) if isinstance(value, int) else f"~{round(value)}"
