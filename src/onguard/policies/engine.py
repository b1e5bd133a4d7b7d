"""The policy engine: feeds each block's observations to every policy and collects findings. No I/O of its own;
chain state is read only through the injected view."""

from __future__ import annotations

from collections.abc import Sequence

from onguard.chain.view import StateView
from onguard.observations import BlockBatch
from onguard.policies.event_threshold import EventThresholdEvaluator
from onguard.policies.loader import Policy
from onguard.policies.model import Finding


class PolicyEngine:
    def __init__(self, policies: Sequence[Policy]) -> None:
        self._evaluators = [EventThresholdEvaluator(policy) for policy in policies]

    @property
    def policy_ids(self) -> list[str]:
        return [evaluator.policy.common.id for evaluator in self._evaluators]

    def forget_from(self, block_number: int) -> None:
        for evaluator in self._evaluators:
            evaluator.forget_from(block_number)

    async def evaluate(self, batch: BlockBatch, view: StateView) -> list[Finding]:
        findings = []
        for evaluator in self._evaluators:
            finding = await evaluator.evaluate(batch, view)
            if finding is not None:
                findings.append(finding)
        return findings
