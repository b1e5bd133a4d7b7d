"""The outflow kind: net outflow of a token from the protocol over a rolling window, from its Transfer events,
against its holdings (in the spirit of ERC-7265 rate limits)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from onguard.observations import BlockBatch
from onguard.policies.expr import Expression
from onguard.policies.kinds.base import BLOCK_SCHEMA, NamedReads, PolicyEnv, StateValues, block_context, condition
from onguard.policies.kinds.event import Window, parse_window
from onguard.policies.model import Finding, PolicyCommon, Verdict
from onguard.policies.reads import ReadSpec, parse_read
from onguard.tomlfields import Table

TRANSFER = "Transfer"
NAMES = ("outflow", "inflow", "net_outflow", "holdings", "holdings_before")


@dataclass(frozen=True, slots=True)
class OutflowPolicy:
    common: PolicyCommon
    token: str
    holder: str                  # checksummed address
    holder_name: str
    window: Window
    holdings: ReadSpec           # token.balanceOf(holder)
    condition: Expression
    reads: NamedReads
    contracts_context: dict[str, Any]

    def evaluator(self) -> OutflowEvaluator:
        return OutflowEvaluator(self)

    def explain(self) -> list[str]:
        return [f"Adds up {self.token} Transfer events into and out of {self.holder_name} over the last "
                f"{self.window.describe()} (outflow, inflow, net_outflow = outflow - inflow), and reads "
                f"{self.holdings.text} as holdings (holdings_before = holdings + net_outflow).",
                f"It fires when {self.condition.describe()}."]


def parse(table: Table, common: PolicyCommon, env: PolicyEnv) -> OutflowPolicy:
    spec = table.table("outflow", hint="[outflow] token, holder, window_blocks")
    assert spec is not None
    token = env.contract(spec, "token")
    transfer = token.abi.event(TRANSFER)
    if transfer is None or [transfer.type_of(n) for n in transfer.names] != ["address", "address", "uint256"]:
        raise spec.fail("token", f"{token.name} has no ERC-20 Transfer(address,address,uint256) event",
                        "name a watched ERC-20 token contract")
    holder_name = spec.get("holder", str, hint="the protocol contract whose holdings are measured, e.g. \"vault\"")
    try:
        holdings = parse_read(f"{token.name}.balanceOf({holder_name})", env.contracts)
    except ValueError as exc:
        raise spec.fail("holder", str(exc).replace(" — ", "; ")) from None
    window = parse_window(spec)
    spec.finish()
    reads = NamedReads.parse(table.table("reads", required=False), env)
    trigger = table.table("trigger", hint="[trigger] condition = \"…\"")
    assert trigger is not None
    schema = {**{name: "number" for name in NAMES}, **reads.schema(), **BLOCK_SCHEMA, **env.address_schema()}
    policy_condition = condition(trigger, "condition", schema, hint="e.g. \"net_outflow > 30% * holdings_before\"")
    trigger.finish()
    holder = env.contracts[holder_name].address if holder_name in env.contracts else to_checksum_address(holder_name)
    return OutflowPolicy(common=common, token=token.name, holder=holder, holder_name=holder_name, window=window,
                         holdings=holdings, condition=policy_condition, reads=reads,
                         contracts_context=env.address_context())


@dataclass(frozen=True, slots=True)
class _Movement:
    block_number: int
    timestamp: int
    observation_id: str
    amount: int  # positive: out of the holder; negative: into it


class OutflowEvaluator:
    def __init__(self, policy: OutflowPolicy) -> None:
        self.policy = policy
        self.common = policy.common
        self._holder = policy.holder.lower()
        self._movements: deque[_Movement] = deque()
        self._seen: set[str] = set()

    @property
    def history_blocks(self) -> int:
        """How many past blocks it must see again after a restart to judge the next one as if never stopped."""
        window = self.policy.window
        return window.blocks if window.blocks is not None else window.seconds  # type: ignore[return-value]

    @property
    def reads(self) -> frozenset[ReadSpec]:
        return frozenset({self.policy.holdings, *self.policy.reads.specs.values()})

    def forget_from(self, block_number: int) -> None:
        for movement in self._movements:
            if movement.block_number >= block_number:
                self._seen.discard(movement.observation_id)
        self._movements = deque(m for m in self._movements if m.block_number < block_number)

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        self._take(batch)
        outflow = sum(m.amount for m in self._movements if m.amount > 0)
        inflow = -sum(m.amount for m in self._movements if m.amount < 0)
        holdings = NamedReads({"holdings": self.policy.holdings}).context(state)["holdings"]
        values = {"outflow": outflow, "inflow": inflow, "net_outflow": outflow - inflow, "holdings": holdings,
                  "holdings_before": holdings + outflow - inflow}
        context = {**values, "state": self.policy.reads.context(state), "block": block_context(batch),
                   **self.policy.contracts_context}
        if not self.policy.condition.evaluate(context):
            return None
        summary = (f"net outflow of {self.policy.token} from {self.policy.holder_name} over "
                   f"{self.policy.window.describe()} is {values['net_outflow']} of {values['holdings_before']}: "
                   f"{self.policy.condition.describe()}")
        evidence = {**values, "window": self.policy.window.describe(), "state": context["state"],
                    "condition": self.policy.condition.describe()}
        return Finding(policy=self.common, verdict=Verdict.CONDITION_MET, summary=summary,
                       block_number=batch.block.number, block_time=batch.block.timestamp, evidence=evidence)

    def _take(self, batch: BlockBatch) -> None:
        for log in batch.logs:
            if log.contract != self.policy.token or log.event != TRANSFER or log.id in self._seen:
                continue
            sender, receiver = str(log.args["from"]).lower(), str(log.args["to"]).lower()
            if (sender == self._holder) == (receiver == self._holder):
                continue  # not the holder's, or to itself
            amount = int(log.args["value"])
            self._movements.append(_Movement(batch.block.number, batch.block.timestamp, log.id,
                                             amount if sender == self._holder else -amount))
            self._seen.add(log.id)
        window = self.policy.window
        while self._movements and window.has_left(self._movements[0].block_number, self._movements[0].timestamp,
                                                   batch):
            self._seen.discard(self._movements.popleft().observation_id)
