"""The policy engine: feeds each block to every policy and collects findings and evaluation failures.
Evaluators are pure; the engine's one I/O is reading, in one batch per block, the state the policies declared.

Most kinds read the state a block leaves. A kind that judges a transaction against the state it ran on (call:
`args.newPrice > 2 * state.price`) declares `reads_parent_state = True` and reads the block's parent instead, as a
pending transaction is judged on the head state: the same condition means the same on both paths."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from onguard.chain.simulate import Simulation, Simulator
from onguard.chain.view import StateReader
from onguard.errors import OnguardError
from onguard.observations import BlockBatch, BlockObservation, TransactionObservation
from onguard.policies.kinds.base import Evaluator, Policy, StateValues
from onguard.policies.kinds.call import CallEvaluator
from onguard.policies.model import EvaluationFailure, Finding
from onguard.policies.reads import ReadSpec


@dataclass(slots=True)
class EngineResult:
    findings: list[Finding] = field(default_factory=list)
    failures: list[EvaluationFailure] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list, compare=False)  # each evaluation's policy (for metrics)


class _Delayed:
    """Holds blocks back until they are `confirmations` deep, for policies that ask for it."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.confirmations = evaluator.common.confirmations
        self.pending: deque[BlockBatch] = deque()

    def due(self, batch: BlockBatch) -> list[BlockBatch]:
        """The blocks this policy evaluates once `batch` arrives; nothing changes until advance()."""
        if self.confirmations == 0:
            return [batch]
        waiting = [b for b in self.pending if b.block.number != batch.block.number] + [batch]
        return [b for b in waiting if b.block.number + self.confirmations <= batch.block.number]

    def advance(self, batch: BlockBatch) -> None:
        """Records that `batch` was handled: it waits for its confirmations, and what was due is gone."""
        if self.confirmations == 0:
            return
        waiting = [b for b in self.pending if b.block.number != batch.block.number] + [batch]
        self.pending = deque(b for b in waiting if b.block.number + self.confirmations > batch.block.number)

    def forget_from(self, block_number: int) -> None:
        self.pending = deque(b for b in self.pending if b.block.number < block_number)
        self.evaluator.forget_from(block_number)


@runtime_checkable
class PendingJudge(Protocol):
    """A kind that judges a pending transaction sent to a watched contract (call)."""

    common: Any
    reads: frozenset[ReadSpec]

    def observe_pending(self, tx: TransactionObservation, state: StateValues,
                        head: BlockObservation) -> Finding | None: ...


@runtime_checkable
class SimulationJudge(Protocol):
    """A kind that judges the state a pending transaction would leave (simulate)."""

    common: Any
    simulation_reads: frozenset[ReadSpec]

    def observe_simulation(self, raw: Any, simulation: Simulation, head: BlockObservation) -> Finding | None: ...


@dataclass(frozen=True, slots=True)
class SimulationStage:
    """One simulation of a pending transaction for some of the simulate judges: the reads they take before and
    after it, and the probes made after it (and once on the head's state)."""

    reads: frozenset[ReadSpec]
    probes: tuple[ReadSpec, ...]
    judges: tuple[SimulationJudge, ...]


def _stage(judges: Sequence[SimulationJudge]) -> SimulationStage:
    # Probes change the state they run on: one ordered list, the same before and after every transaction.
    return SimulationStage(reads=frozenset(s for j in judges for s in j.simulation_reads),
                           probes=tuple(dict.fromkeys(p for j in judges for p in getattr(j, "simulation_probes", ()))),
                           judges=tuple(judges))


class PendingLike(Protocol):
    raw: Mapping[str, Any]
    observation: TransactionObservation | None


class PolicyEngine:
    def __init__(self, policies: Sequence[Policy]) -> None:
        self._slots = [_Delayed(policy.evaluator()) for policy in policies]
        evaluators = [slot.evaluator for slot in self._slots]
        self._pending_judges = [e for e in evaluators if isinstance(e, PendingJudge)]
        self._simulation_judges = [e for e in evaluators if isinstance(e, SimulationJudge)]
        whole = _stage(self._simulation_judges)
        self._simulation_reads, self._simulation_probes = whole.reads, whole.probes
        # A pending transaction's simulation for the policies comes first, alone: the guardian's own probes (the
        # built-in self-defence: its pause run after the transaction) are a second simulation, not a wait on it.
        probing = [j for j in self._simulation_judges if getattr(j, "simulation_probes", None) is not None]
        plain = [j for j in self._simulation_judges if getattr(j, "simulation_probes", None) is None]
        self.whole_simulation = whole
        self.simulation_stages = tuple(_stage(judges) for judges in (plain, probing) if judges)
        self._pending_reads = frozenset(s for j in self._pending_judges for s in j.reads)
        self._calls = _CallIndex(self._pending_judges)
        self._failing: tuple[StateValues, BlockObservation, dict[str, frozenset[int]]] | None = None  # per head
        self._pending_state: tuple[str, asyncio.Future[StateValues]] | None = None  # read once per head, not per tx

    @property
    def watches_pending(self) -> bool:
        return bool(self._pending_judges or self._simulation_judges)

    @property
    def judges_calls(self) -> bool:
        return bool(self._pending_judges)

    @property
    def judges_simulations(self) -> bool:
        return bool(self._simulation_judges)

    @property
    def simulation_reads(self) -> frozenset[ReadSpec]:
        return self._simulation_reads

    @property
    def simulation_probes(self) -> tuple[ReadSpec, ...]:
        """Calls from a given sender made after each simulated transaction, and once on the head's state (the
        guardian's own pause: could it still act?)."""
        return self._simulation_probes

    async def evaluate_pending(self, pending: PendingLike, head: BlockObservation, reader: StateReader,
                               simulator: Simulator | None) -> EngineResult:
        """Judges a transaction still in the mempool: call policies on its decoded call, simulate policies on
        the state it would leave. The same findings and failures as for blocks, dated at the head block."""
        result = await self.evaluate_pending_call(pending, head, reader)
        if simulator is not None and self._simulation_judges and worth_simulating(pending):
            simulation = await simulator.simulate(pending.raw, self._simulation_reads,
                                                  probes=self._simulation_probes)
            self._merge(result, self.evaluate_simulation(pending, simulation, head))
        return result

    async def evaluate_pending_call(self, pending: PendingLike, head: BlockObservation,
                                    reader: StateReader) -> EngineResult:
        """The call policies on a pending transaction's decoded call (no simulation: microseconds once the head's
        state is read, which happens once per head)."""
        if pending.observation is None or not self._pending_judges:
            return EngineResult()
        return self.judge_call(pending, await self._state_at(head, reader), head)

    def state_read_at(self, head: BlockObservation) -> StateValues | None:
        """The call policies' state at `head` when it is already read (None: evaluate_pending_call must read it)."""
        if not self._pending_reads:
            return {}
        cached = self._pending_state
        if cached is None or cached[0] != head.hash or not cached[1].done() or cached[1].cancelled() \
                or cached[1].exception() is not None:
            return None
        return cached[1].result()

    def judge_call(self, pending: PendingLike, state: StateValues, head: BlockObservation) -> EngineResult:
        """The call policies on a pending transaction's decoded call and the head's state: pure, no I/O."""
        result = EngineResult()
        tx = pending.observation
        if tx is None:
            return result
        judges = self._calls.judges(tx, self._failing_on(tx.contract, state, head))
        for judge in judges:  # _collect inlined: this loop is the pending path's cost per policy
            result.evaluated.append(judge.common.id)
            try:
                finding = judge.observe_pending(tx, state, head)
            except _JUDGE_ERRORS as exc:
                result.failures.append(_failure(judge, head.number, exc))
                continue
            if finding is not None:
                result.findings.append(finding)
        return result

    def _failing_on(self, contract: str, state: StateValues, head: BlockObservation) -> frozenset[int]:
        """The call policies on `contract` (by id()) whose condition cannot be judged on this head (a read it needs
        failed), found once per head and contract: they are shown every call to their contract, whatever its
        function, and report the failure, as when every policy on a contract judged every call to it."""
        cached = self._failing
        if cached is None or cached[0] is not state or cached[1] is not head:
            cached = self._failing = (state, head, {})
        failing = cached[2].get(contract)
        if failing is None:
            failing = cached[2][contract] = frozenset(
                id(judge) for judge in self._calls.by_function_only.get(contract, ())
                if not _judgeable(judge, state, head))
        return failing

    def evaluate_simulation(self, pending: PendingLike, simulation: Simulation, head: BlockObservation,
                            judges: Sequence[SimulationJudge] | None = None) -> EngineResult:
        """The simulate policies (or `judges`, one stage's) on what a pending transaction would do (simulated
        against `head`)."""
        result = EngineResult()
        for judge in self._simulation_judges if judges is None else judges:
            self._collect(result, judge, head.number,
                          lambda j=judge: j.observe_simulation(pending.raw, simulation, head))
        return result

    @staticmethod
    def _merge(into: EngineResult, other: EngineResult) -> None:
        into.findings.extend(other.findings)
        into.failures.extend(other.failures)

    async def _state_at(self, head: BlockObservation, reader: StateReader) -> StateValues:
        if not self._pending_reads:
            return {}
        # One read per head (the hash: a reorg changes it), shared by every pending transaction that arrives
        # while it is under way: a flood must not turn into a flood of reads.
        if self._pending_state is None or self._pending_state[0] != head.hash:
            self._pending_state = (head.hash, asyncio.ensure_future(reader.read(self._pending_reads, head.number)))
        read = self._pending_state[1]
        try:
            return await asyncio.shield(read)
        except Exception:
            if self._pending_state is not None and self._pending_state[1] is read:
                self._pending_state = None  # a failed read is tried again by the next transaction
            raise

    @staticmethod
    def _collect(result: EngineResult, evaluator: Any, block: int, judge: Any) -> None:
        result.evaluated.append(evaluator.common.id)
        try:
            finding = judge()
        except _JUDGE_ERRORS as exc:
            result.failures.append(_failure(evaluator, block, exc))
            return
        if finding is not None:
            result.findings.append(finding)

    @property
    def policy_ids(self) -> list[str]:
        return [slot.evaluator.common.id for slot in self._slots]

    @property
    def severities(self) -> dict[str, str]:
        """Policy id → severity, for the metrics declared at start."""
        return {slot.evaluator.common.id: slot.evaluator.common.severity.value for slot in self._slots}

    @property
    def history_blocks(self) -> int:
        """Past blocks to replay after a restart so that windows, look-backs and twaps are whole again."""
        return max((s.evaluator.history_blocks + s.confirmations for s in self._slots), default=0)

    def forget_from(self, block_number: int) -> None:
        for slot in self._slots:
            slot.forget_from(block_number)

    def plan(self, batch: BlockBatch) -> list[tuple[Evaluator, BlockBatch]]:
        """Which policy evaluates which block now (blocks wait here for their confirmations)."""
        return [(slot.evaluator, due) for slot in self._slots for due in slot.due(batch)]

    @staticmethod
    def reads_needed(plan: list[tuple[Evaluator, BlockBatch]]) -> dict[int, set[ReadSpec]]:
        """The reads to make, by the block whose state they are taken at (see state_block)."""
        needed: dict[int, set[ReadSpec]] = {}
        for evaluator, due in plan:
            needed.setdefault(state_block(evaluator, due.block.number), set()).update(evaluator.reads)
        return needed

    async def evaluate(self, batch: BlockBatch, reader: StateReader) -> EngineResult:
        plan = self.plan(batch)
        # Read first: if the read fails, the caller retries this block and nothing has moved. The blocks' reads
        # (a block and its parent, when call policies read state) go out together: one round trip, not two.
        needed = sorted((number, specs) for number, specs in self.reads_needed(plan).items() if specs)
        values = await asyncio.gather(*(reader.read(specs, number) for number, specs in needed))
        states = {number: state for (number, _), state in zip(needed, values, strict=True)}
        self.advance(batch)
        return self.run(plan, states)

    def evaluate_offline(self, batch: BlockBatch, states: dict[int, StateValues]) -> EngineResult:
        """evaluate() with state already at hand (benchmarks, recorded observations)."""
        plan = self.plan(batch)
        self.advance(batch)
        return self.run(plan, states)

    def advance(self, batch: BlockBatch) -> None:
        for slot in self._slots:
            slot.advance(batch)

    @classmethod
    def run(cls, plan: list[tuple[Evaluator, BlockBatch]], states: dict[int, StateValues]) -> EngineResult:
        """Evaluates the plan on state already read: pure, no I/O."""
        result = EngineResult()
        for evaluator, batch in plan:
            cls._collect(result, evaluator, batch.block.number,
                         lambda e=evaluator, b=batch: e.observe(b, states.get(state_block(e, b.block.number), {})))
        return result


def state_block(evaluator: Evaluator, block_number: int) -> int:
    """The block whose state `evaluator` reads when it judges block `block_number`: the block itself, or its parent
    for a kind that declares `reads_parent_state` (the state its transactions started from)."""
    if getattr(evaluator, "reads_parent_state", False):
        return max(block_number - 1, 0)
    return block_number


# What a policy raises when it cannot judge (a failed read, a missing value, a division by zero): an evaluation
# failure of that policy, never a pass. Anything else is a bug and propagates.
_JUDGE_ERRORS = (OnguardError, ArithmeticError, KeyError, TypeError, ValueError)


def _failure(evaluator: Any, block: int, exc: Exception) -> EvaluationFailure:
    message = exc.message if isinstance(exc, OnguardError) else f"{type(exc).__name__}: {exc}"
    return EvaluationFailure(evaluator.common.id, block, message)


class _CallIndex:
    """Which pending judges a call is shown to: the call policies on its contract that watch its function, the
    judges on its contract that look at every function, then the judges of any contract, each group in load
    order. Built once, at load: the cost per pending transaction grows with the policies that can trip on it,
    not with every policy loaded (a call policy never trips on a function it does not watch)."""

    def __init__(self, judges: Sequence[PendingJudge]) -> None:
        by_contract: dict[str, list[PendingJudge]] = {}
        for judge in judges:
            contract = _judged_contract(judge)
            if contract is not None:
                by_contract.setdefault(contract, []).append(judge)
        self.anywhere = tuple(j for j in judges if _judged_contract(j) is None)
        self.by_contract = {contract: (*on, *self.anywhere) for contract, on in by_contract.items()}
        self.by_function_only = {contract: tuple(j for j in on if isinstance(j, CallEvaluator))
                                 for contract, on in by_contract.items()}
        self._any_function = {contract: (*(j for j in on if not isinstance(j, CallEvaluator)), *self.anywhere)
                              for contract, on in by_contract.items()}
        self._by_function = {(contract, function): (*(j for j in on if not isinstance(j, CallEvaluator)
                                                      or function in j.functions), *self.anywhere)
                             for contract, on in by_contract.items()
                             for function in {f for j in on if isinstance(j, CallEvaluator) for f in j.functions}}

    def judges(self, tx: TransactionObservation, failing: frozenset[int]) -> tuple[PendingJudge, ...]:
        """The judges to show `tx` to; `failing`: the id()s of call policies shown every call to their contract
        (see PolicyEngine._failing_on). Judges are told apart by identity: a judge need not be hashable."""
        chosen = self._by_function.get((tx.contract, tx.function))
        if chosen is None:
            chosen = self._any_function.get(tx.contract, self.anywhere)
        if not failing:
            return chosen
        shown = {id(j) for j in chosen} | failing
        return tuple(j for j in self.by_contract.get(tx.contract, self.anywhere) if id(j) in shown)


def _judgeable(judge: CallEvaluator, state: StateValues, head: BlockObservation) -> bool:
    try:
        judge.head_context(state, head)
    except Exception:  # noqa: BLE001 - whatever it is, judging a call raises it again and _collect's rules apply
        return False
    return True


def _judged_contract(judge: PendingJudge) -> str | None:
    """The one watched contract (by name) whose calls a pending judge looks at, or None for any."""
    contract = getattr(getattr(judge, "policy", None), "contract", None)
    return contract if isinstance(contract, str) else None


def worth_simulating(pending: PendingLike) -> bool:
    """Filters the harmless traffic out before any simulation: plain transfers to accounts not watched.
    Contract calls are simulated, because an attacker's contract is not a watched one. Contract creations are
    not: Anvil's eth_simulateV1 cannot run them (an exploit that runs entirely in a constructor is left to the
    block path)."""
    raw = pending.raw
    if not raw.get("to"):
        return False
    return pending.observation is not None or len(bytes(raw.get("input") or b"")) >= 4
