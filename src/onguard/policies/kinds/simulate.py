"""The simulate kind: a pending transaction is executed against the latest state before it is mined, and the
policy's invariant is judged on the state it would leave (e.g. "the vault would keep less than 70% of its
assets"), so the guardian can act while the attack is still in the mempool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onguard.chain.simulate import Simulation
from onguard.chain.view import ReadFailure
from onguard.observations import BlockBatch, BlockObservation
from onguard.policies.expr import EvaluationError, Expression
from onguard.policies.kinds.base import (
    BLOCK_SCHEMA,
    MemorylessEvaluator,
    NamedReads,
    PolicyEnv,
    StateValues,
    condition,
)
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.policies.reads import ReadSpec
from onguard.tomlfields import Table

ZERO_ADDRESS = "0x" + "00" * 20
TX_SCHEMA = {"tx.from": "address", "tx.to": "address", "tx.value": "number", "reverted": "bool"}


@dataclass(frozen=True, slots=True)
class SimulatePolicy:
    common: PolicyCommon
    condition: Expression
    reads: NamedReads
    contracts_context: dict[str, Any]

    def evaluator(self) -> SimulateEvaluator:
        return SimulateEvaluator(self)

    def explain(self) -> list[str]:
        reads = "; ".join(f"{name} = {text}" for name, text in self.reads.texts().items())
        return ["For every pending transaction that calls a contract, it simulates the transaction on the latest "
                f"state and reads {reads} just before (`before.NAME`) and just after it (`after.NAME`).",
                f"It fires, before the transaction is mined, when {self.condition.describe()}."]


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> SimulatePolicy:
    reads = NamedReads.parse(table.table("reads", hint="e.g. [reads] assets = \"vault.totalAssets()\""), env)
    if not reads.specs:
        raise table.fail("reads", "a simulate policy needs at least one read", "e.g. assets = \"vault.totalAssets()\"")
    trigger = table.table("trigger", hint="[trigger] condition = \"after.assets < 70% * before.assets\"")
    assert trigger is not None
    schema = {**TX_SCHEMA, **BLOCK_SCHEMA, **env.address_schema()}
    for name, type_ in reads.schema().items():
        short = name.removeprefix("state.")
        schema[f"before.{short}"] = type_
        schema[f"after.{short}"] = type_
    policy_condition = condition(trigger, "condition", schema, hint="e.g. \"after.assets < 70% * before.assets\"")
    trigger.finish()
    return SimulatePolicy(common=common, condition=policy_condition, reads=reads,
                          contracts_context=env.address_context())


class SimulateEvaluator(MemorylessEvaluator):
    policy: SimulatePolicy

    @property
    def reads(self) -> frozenset[ReadSpec]:
        """Nothing per block: its reads are made inside each simulation."""
        return frozenset()

    @property
    def simulation_reads(self) -> frozenset[ReadSpec]:
        return frozenset(self.policy.reads.specs.values())

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        """Mined blocks are for the other kinds: this one judges transactions before they are mined."""
        return None

    def observe_simulation(self, raw: Any, simulation: Simulation, head: BlockObservation) -> Finding | None:
        before = self._values(simulation.before, "before")
        after = self._values(simulation.after, "after")
        context = {"before": before, "after": after, "reverted": simulation.reverted,
                   "tx": {"from": raw["from"], "to": raw.get("to") or ZERO_ADDRESS, "value": int(raw.get("value", 0))},
                   "block": {"number": head.number, "timestamp": head.timestamp}, **self.policy.contracts_context}
        if not self.policy.condition.evaluate(context):
            return None
        tx_hash = _hex(raw["hash"])
        summary = f"pending tx {tx_hash} from {raw['from']} would leave {self.policy.condition.describe()}"
        evidence = {"path": "mempool", "threat_tx": tx_hash, "threat_from": raw["from"], "threat_to": raw.get("to"),
                    "before": before, "after": after, "would_revert": simulation.reverted,
                    "reads": self.policy.reads.texts(), "condition": self.policy.condition.describe()}
        return Finding(policy=self.common, verdict=Verdict.SIMULATION_PREDICTS_BREACH, summary=summary,
                       block_number=head.number, block_time=head.timestamp, evidence=evidence)

    def _values(self, values: Any, label: str) -> dict[str, Any]:
        result = {}
        for name, spec in self.policy.reads.specs.items():
            value = values[spec]
            if isinstance(value, ReadFailure):
                raise EvaluationError(f"{label}.{name} = {spec.text} failed in the simulation: {value.reason}")
            result[name] = value
        return result


def _hex(value: Any) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()
