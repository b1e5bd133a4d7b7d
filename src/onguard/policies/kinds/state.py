"""The state kind: an invariant over values read from contracts at every block; it fires when it no longer
holds (e.g. `state.assets >= state.supply`, `not state.paused`, the vault's cash above a floor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onguard.observations import BlockBatch
from onguard.policies.expr import Expression
from onguard.policies.kinds.base import (
    BLOCK_SCHEMA,
    MemorylessEvaluator,
    NamedReads,
    PolicyEnv,
    StateValues,
    block_context,
    condition,
)
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.tomlfields import Table


@dataclass(frozen=True, slots=True)
class StatePolicy:
    common: PolicyCommon
    invariant: Expression
    reads: NamedReads
    contracts_context: dict[str, Any]

    def evaluator(self) -> StateEvaluator:
        return StateEvaluator(self)

    def explain(self) -> list[str]:
        reads = "; ".join(f"state.{name} = {text}" for name, text in self.reads.texts().items())
        return [f"At every block it reads {reads}.",
                f"It fires when this invariant stops holding: {self.invariant.describe()}."]


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> StatePolicy:
    reads = NamedReads.parse(table.table("reads", hint="e.g. [reads] assets = \"vault.totalAssets()\""), env)
    if not reads.specs:
        raise table.fail("reads", "a state policy needs at least one read", "e.g. assets = \"vault.totalAssets()\"")
    trigger = table.table("trigger", hint="[trigger] invariant = \"…\"")
    assert trigger is not None
    invariant = condition(trigger, "invariant", {**reads.schema(), **BLOCK_SCHEMA, **env.address_schema()},
                          hint="what must hold, e.g. \"state.assets >= state.supply\"")
    trigger.finish()
    return StatePolicy(common=common, invariant=invariant, reads=reads, contracts_context=env.address_context())


class StateEvaluator(MemorylessEvaluator):
    policy: StatePolicy

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        values = self.policy.reads.context(state)
        context = {"state": values, "block": block_context(batch), **self.policy.contracts_context}
        if self.policy.invariant.evaluate(context):
            return None
        return Finding(policy=self.common, verdict=Verdict.INVARIANT_BROKEN,
                       summary=f"invariant broken at block {batch.block.number}: {self.policy.invariant.describe()}",
                       block_number=batch.block.number, block_time=batch.block.timestamp,
                       evidence={"state": values, "reads": self.policy.reads.texts(),
                                 "invariant": self.policy.invariant.describe()})
