"""The supervised daemon: wires source → engine → arbiter → responders (one life cycle, a reconciler keeping every
open incident's actions in effect), runs its tasks under supervision, shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from asyncio_throttle import Throttler
from eth_account.signers.local import LocalAccount

from onguard.arbiter import Arbiter, Decision
from onguard.chain.health import ChainHealth, ChainWatch
from onguard.chain.rpc import Rpc
from onguard.chain.simulate import Head as SimulationHead
from onguard.chain.simulate import Simulation, Simulator
from onguard.chain.transport import Transport
from onguard.chain.view import BatchStateReader
from onguard.config import Config
from onguard.errors import ChainError, ChainUnavailable, ConfigError, OnguardError, SimulationUnsupported
from onguard.store.audit import AuditLog, record_config
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStatus, IncidentStore
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.ops.metrics import PendingResult
from onguard.ops.reporting import GuardianOps
from onguard.policies.engine import EngineResult, PolicyEngine, SimulationStage, worth_simulating
from onguard.policies.loader import Policy, load_policies
from onguard.policies.model import EvaluationFailure, Finding
from onguard.policies.selfdefence import builtin_policies
from onguard.preflight import PreflightReport, run_preflight
from onguard.replicas.claims import ClaimGate, CutOff
from onguard.replicas.role import ReplicaRole, replica_claimant
from onguard.responders.fees import PendingTips, Threat
from onguard.responders.lifecycle import ResponseLifecycle
from onguard.responders.module import ModulePath
from onguard.responders.presigned import PresignedPath
from onguard.responders.reconciler import Reconciler
from onguard.sources.blocks import BlockSource, block_observation
from onguard.sources.heads import HeadFollower, HeadMode
from onguard.sources.mempool import MempoolSource, PendingTransaction
from onguard.sources.triage import Lane, PendingCounters, PendingQueue, Triage
from onguard.store.database import WRITE_REFUSED
from onguard.chain.transport import redacted_url

MAX_BACKOFF = 10.0
MAX_RESTARTS = 5          # deaths of one task within RESTART_WINDOW before the daemon halts
RESTART_WINDOW = 60.0
RESTART_DELAY = 1.0
DRAIN_TIMEOUT = 30.0
HEARTBEAT_SECONDS = 60.0
FIRST_HEARTBEAT_SECONDS = 5.0
START_BLOCK_SLACK = 64  # blocks a configured start_block may lie beyond the head (an endpoint a little behind)
PREFLIGHT_EVERY_BLOCKS = 50  # the whole preflight again, while running: can the guardian still act?
CANNOT_ACT = "guardian-cannot-act"  # the incident a failed preflight opens while the daemon runs
CANNOT_ACT_COOLDOWN = 3600.0
SIMULATION_BATCH = 8  # pending transactions of a crowded shape simulated in one JSON-RPC batch
NOVEL_HEDGE = 2  # the first of a shape goes to this many simulation endpoints at once: the first answer counts
WARM_UP_LIMIT = 5_000  # blocks; a window in seconds counts one block a second, the most a chain can have


class HeadSource(Protocol):
    """What wakes the block loop: the daemon follows the chain's new heads (HeadFollower); a replay announces each
    block it has mined, and so decides when the guardian looks."""

    @property
    def mode(self) -> HeadMode: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def wait(self, stop: asyncio.Event, timeout: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Queued:
    """A pending transaction waiting for its simulation; `done` is settled once it is judged or missed."""

    pending: PendingTransaction
    threat: Threat
    done: asyncio.Future[None]


def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _resolve_after(done: asyncio.Future[None], *parts: asyncio.Future[None] | None) -> None:
    """Settles `done` once every part is, with the first failure among them (the mempool source logs it)."""
    waiting = [part for part in parts if part is not None]
    remaining = len(waiting)
    if remaining == 0:
        _settle(done)
        return

    def one_done(part: asyncio.Future[None]) -> None:
        nonlocal remaining
        remaining -= 1
        error = None if part.cancelled() else part.exception()
        if error is not None or remaining == 0:
            _settle(done, error)

    for part in waiting:
        part.add_done_callback(one_done)


class DaemonHalted(OnguardError):
    """A daemon task kept dying: the daemon stops rather than run without it."""


class Guardian:
    """One guardian over one chain. `step()` handles every block up to the head; `run()` loops until stopped."""

    def __init__(self, config: Config, account: LocalAccount, *, policies: Sequence[Policy] | None = None,
                 store: IncidentStore | None = None, transport: Transport | None = None,
                 heads: HeadSource | None = None,
                 on_judged: Callable[[PendingTransaction], None] | None = None) -> None:
        """Collaborators not given are the daemon's own, built from the config (see build_guardian). A replay
        gives its own `heads` (the clock of its loop: a head announced once the replay has mined it) and
        `on_judged` (told once each pending transaction has been judged, so it mines only after that)."""
        self.config = config
        self.account = account
        self.transport = transport or Transport.from_config(config)
        self.rpc = Rpc.over(self.transport)
        self.store = store or IncidentStore(config.state, claimant=replica_claimant(config))
        if policies is None:
            policies = load_policies(config.policies_dir, config.contracts, config.actions)
        proposals = SafeTxStore(self.store.database)
        # Built in, whatever policies were given: a team (or a replay) cannot leave the guardian defenceless.
        policies = [*policies, *builtin_policies(
            config, account.address, recorded=lambda safe_tx_hash: proposals.by_hash(TxKind.PROPOSAL,
                                                                                       safe_tx_hash) is not None)]
        self.policies: Mapping[str, Policy] = MappingProxyType({p.common.id: p for p in policies})
        chain_id = config.chain.chain_id
        self.engine = PolicyEngine(policies)
        # Among replicas (state in PostgreSQL): this one's leases and claims; alone (SQLite): it always leads.
        self.replica = ReplicaRole(config.replicas, chain_id, config.database_url)
        self.replica.guard(self.store.database)
        self.ops = GuardianOps.build(config, self.store, mempool_required=config.mempool.enabled,
                                     hold_while=lambda: self.responder.sending(), leads=self.replica.leader.held)
        self.reader = BatchStateReader(self.rpc)
        self.arbiter = Arbiter(self.store, chain_id)
        self.tips = PendingTips()
        self.module_path = ModulePath(self.rpc, config, account)
        self.responder = ResponseLifecycle(
            self.rpc, config, account, self.store,
            paths={"module": self.module_path,
                   "presigned": PresignedPath(self.rpc, config, account, self.store,
                                              on_stale=self.ops.presigned_stale, leads=self.replica.leader.confirm)},
            tips=self.tips, spawn=self._spawn, observer=self.ops)
        self.reconciler = Reconciler(self.store, self.responder, self.rpc, chain_id, config.response,
                                     ClaimGate(self.replica, self.store))
        self.cut_off = CutOff(self.replica, self.responder.is_done, self._act_cut_off, self._spawn)
        self.simulator = Simulator(self.rpc) if config.mempool.simulate else None
        self.head: BlockObservation | None = None  # the newest block handled: pending findings are dated at it
        self._throttle = Throttler(rate_limit=config.mempool.simulations_per_second, period=1.0)
        self.triage = Triage(c.address for c in config.contracts.values())
        self.pending_counters = PendingCounters()  # what became of pending transactions (metrics read it)
        self._simulation_queue: PendingQueue[_Queued] = PendingQueue(
            config.mempool.simulation_timeout, self.pending_counters, on_missed=self._missed_in_queue)
        self._queued = asyncio.Event()  # set while the simulation queue holds something
        self._novel_queued = asyncio.Event()  # set while the first of a shape waits in it
        self._workers: list[asyncio.Task[None]] = []
        self._batch_size = SIMULATION_BATCH
        self._misses_reported, self._next_miss_report = 0, 0.0
        self._cannot_simulate = False  # said once while no simulation endpoint serves eth_simulateV1
        self.source = BlockSource(self.rpc, self.store, chain_id, config.contracts,
                                  start_block=config.chain.start_block, max_block_range=config.chain.max_block_range)
        self.heads: HeadSource = heads or HeadFollower(config.chain.ws_url, self.rpc,
                                                       poll_interval=config.chain.poll_interval, chain_id=chain_id)
        self._on_judged = on_judged
        self.watch = ChainWatch(self.transport, self.source.history, chain_id, stall_after=config.chain.stall_after)
        self.chain_health: ChainHealth | None = None  # the latest look at the chain (run() refreshes it)
        self._responses: set[asyncio.Task[None]] = set()
        self.mempool: MempoolSource | None = None
        self._halted: str | None = None
        self.preflight: PreflightReport | None = None  # the latest preflight (start, then every few blocks)
        self.ready = asyncio.Event()  # set once start() has checked everything and the loop is about to begin
        self._log = get_logger(component="guardian", chain_id=chain_id)

    async def start(self) -> None:
        """Checks the chain and the guardian's authorisation, prepares responses, resumes interrupted ones."""
        await self.replica.start()
        actual = await self.rpc.chain_id()
        if actual != self.config.chain.chain_id:
            raise ConfigError(f"the node at {redacted_url(self.config.chain.rpc_url)} is on chain {actual}, "
                              f"the config says {self.config.chain.chain_id}", file=str(self.config.path),
                              field="chain.chain_id", hint="point chain.rpc_url at the right network, "
                                                           "or fix chain.chain_id")
        await self._check_chain_identity()
        if not self.config.self_defence.enabled:
            self._log.critical("guardian SELF-DEFENCE IS OFF ([self_defence] enabled = false): a transaction that "
                               "strips the guardian's authority (module disabled, guardian removed, action revoked, "
                               "owners changed) will NOT be paused first; remove the setting to turn it back on")
        self._record_config()
        report = await self._preflight()
        if not report.ok:
            raise report.refusal()
        await self.responder.prepare()
        self.store.rehearse_trip(self.config.chain.chain_id, self.account.address, tuple(self.responder.prepared))
        self.module_path.use_gas_limits(report.gas_limits)
        await self._warm_up()
        self.head = block_observation(await self.rpc.block(await self.rpc.head()), actual)
        self.source.start_at_latest(self.head.number)  # "latest" is this head: nothing after "started" is skipped
        self._warm_head()
        # Whatever a crash interrupted or a failure left undone is compared with the chain and put in effect.
        await self.reconciler.reconcile(head=self.head.number)
        self._log.info("guardian started", guardian=self.account.address, policies=self.engine.policy_ids,
                       resume_after_block=self.source.last_committed)
        self.ready.set()

    async def _check_chain_identity(self) -> None:
        """Refuses a node on another chain than the one this database watched, and a start_block far beyond the
        head; records the genesis hash on the first start."""
        health = await self.watch.check(self.source.last_committed)
        self.chain_health = health
        if health.wrong_chain and health.head is None:
            raise ConfigError(f"no read endpoint serves the chain this database watched: {health.wrong_chain}",
                              file=str(self.config.path), field="chain.rpc_url",
                              hint="point the read endpoints at the right chain, or give a new state.database "
                                   "for a new chain")
        start = self.config.chain.start_block
        head = await self.rpc.head()
        if self.source.last_committed is None and start is not None and start > head + START_BLOCK_SLACK:
            raise ConfigError(f"start_block {start} is far beyond the chain's head {head}",
                              file=str(self.config.path), field="chain.start_block",
                              hint="give a block at or below the head, or \"latest\"")

    def _record_config(self) -> None:
        """Audits what the daemon runs with: an entry on the first start and whenever a file changed since."""
        files = [self.config.path, *sorted(self.config.policies_dir.glob("*.toml"))]
        try:
            entry = record_config(AuditLog(self.store.database), f"daemon:{self.account.address}", files,
                                  per_actor=self.replica.shared)
        except WRITE_REFUSED as exc:
            # A full disk must not stop the guardian from starting: it can still pause.
            self._log.critical("the configuration could not be audited: the database refuses writes",
                               error=str(exc))
            return
        if entry is not None and not entry.details["first"]:
            self._log.warning("configuration changed since the last start", changed=entry.details["changed"],
                              audit_seq=entry.seq)

    async def _warm_up(self) -> None:
        """After a restart, replays the blocks before the checkpoint through the engine (findings discarded:
        they were handled before) so that a drain spanning the restart is judged over its whole window."""
        checkpoint = self.source.last_committed
        depth = min(self.engine.history_blocks, WARM_UP_LIMIT)
        if checkpoint is None or depth == 0:
            return
        first = max(checkpoint - depth + 1, 0)
        self._log.info("restoring policy windows from the blocks before the checkpoint", from_block=first,
                       to_block=checkpoint)
        scratch = IncidentStore(":memory:")
        try:
            replay = BlockSource(self.rpc, scratch, self.config.chain.chain_id, self.config.contracts,
                                 start_block=first, max_block_range=self.config.chain.max_block_range,
                                 end_block=checkpoint)
            while replay.last_committed is None or replay.last_committed < checkpoint:
                for batch in (await replay.next_batches()).batches:
                    await self.engine.evaluate(batch, self.reader)
                    replay.commit(batch)
        finally:
            scratch.close()

    async def step(self) -> list[Decision]:
        """Handles every block up to the head, then compares every open incident with the chain and acts."""
        decisions: list[Decision] = []
        poll = await self.source.next_batches()
        if poll.rewound_to is not None:
            self.engine.forget_from(poll.rewound_to)
        for batch in poll.batches:
            self.tips.forget(tx.hash for tx in batch.transactions)
            seen_at = time.perf_counter()
            result = await self.engine.evaluate(batch, self.reader)
            self._record_failures(result.failures)
            for finding in result.findings:
                if self.replica.cut_off():
                    self.cut_off.tripped(finding)
                    continue
                decision = self.arbiter.decide(finding)
                decisions.append(decision)
                for action in decision.actions:
                    self.responder.respond(decision.incident.id, action)
                self.ops.decided(decision, seen_at, path="block")
            self.ops.evaluated(result)
            self.source.commit(batch)
            self.head = batch.block
            self.ops.block_handled(batch.block.number, self.chain_health.head if self.chain_health else None)
        if poll.batches:
            self._warm_head()
            await self.responder.on_block(poll.batches[-1].block)
        if self.replica.cut_off():
            return decisions  # incidents live in the database: compared again once it answers
        if poll.batches or poll.rewound_to is not None or self.reconciler.retry_due():
            await self.reconciler.reconcile(head=self.head.number if self.head else None, rewound_to=poll.rewound_to)
        return decisions

    def _warm_head(self) -> None:
        """What the new head's own state shows (the simulate policies' reads, the guardian's own probes), read now
        in the background, once: a pending transaction seen on this head is then simulated without them."""
        whole = self.engine.whole_simulation
        if self.simulator is not None and self.head is not None and self.config.mempool.enabled and \
                (whole.reads or whole.probes):
            self.simulator.warm_head(SimulationHead(self.head.number, self.head.hash), whole.reads, whole.probes)

    def on_pending(self, pending: PendingTransaction) -> asyncio.Future[None]:
        """The pre-emption path: judge a pending transaction and, if it trips a policy, race it with a pause. Every
        pending transaction to a watched contract also sets the price a pause must beat (see PendingTips).

        Runs on the spot, without a task of its own (a flood must not turn into ten thousand tasks queued ahead of
        the pause): call policies judge the decoded call at once; what simulate policies must see is triaged
        (onguard.sources.triage) into a priority queue, simulated by a few workers under the simulation throttle
        and deadline (counted from when it was seen). Returns a future done once this transaction is judged, left
        to the block path (deadline missed, counted in pending_counters) or found not worth judging."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        head = self.head
        if head is None:
            done.set_result(None)
            return done
        self.pending_counters.seen += 1
        threat = Threat.of(pending.hash, pending.raw, head.base_fee or 0, pending.seen_at)
        if pending.observation is not None:
            self.tips.add(threat)
            self.responder.outbid_all(threat)
        judging_call: asyncio.Future[None] | None = None
        if pending.observation is not None and self.engine.judges_calls:
            state = self.engine.state_read_at(head)
            if state is not None:
                self._act_on_pending(pending, threat, self.engine.judge_call(pending, state, head))
                self.pending_counters.judged += 1
                self.ops.pending_judged(PendingResult.JUDGED)  # counted once a pause is under way, not before
            else:  # the first pending transaction of this head: the state is read once, then judged on the spot
                judging_call = asyncio.ensure_future(self._judge_pending(
                    pending, threat, self.engine.evaluate_pending_call(pending, head, self.reader)))
        lane = self._simulation_lane(pending)
        if lane is None:
            self.pending_counters.ignored += 1
            _resolve_after(done, judging_call)
            return done
        simulated: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._simulation_queue.push(_Queued(pending, threat, simulated), pending.raw, lane, pending.seen_at)
        self._start_simulation_workers()
        self._queued.set()
        if self._simulation_queue.novel_waiting:
            self._novel_queued.set()
        _resolve_after(done, judging_call, simulated)
        return done

    def _simulation_lane(self, pending: PendingTransaction) -> Lane | None:
        if self.simulator is None or not self.engine.judges_simulations or not worth_simulating(pending):
            return None
        return self.triage.lane(pending.raw)

    def _start_simulation_workers(self) -> None:
        if self._workers and not all(worker.done() for worker in self._workers):
            return
        # max_concurrent_simulations counts simulations in flight, not requests: batches of SIMULATION_BATCH
        # share it. One more worker, outside the throttle, waits for the first transaction of a shape only (what
        # an attack looks like), one at a time, so it never waits behind a flood's batches or their throttle.
        limit = self.config.mempool.max_concurrent_simulations
        self._batch_size = min(SIMULATION_BATCH, limit)
        self._workers = [asyncio.ensure_future(self._simulation_worker(novel_only=True)),
                         *(asyncio.ensure_future(self._simulation_worker(novel_only=False))
                           for _ in range(max(limit // self._batch_size, 1)))]

    async def _simulation_worker(self, novel_only: bool) -> None:
        """Simulates the best queued transactions under the throttle for as long as the daemon runs: one at a
        time when it is the first of its shape, else a batch of a crowded shape (one JSON-RPC batch)."""
        queue, wake = self._simulation_queue, self._novel_queued if novel_only else self._queued
        while True:
            await wake.wait()
            if novel_only:  # not throttled: one simulation at a time, and an attack must not wait for a flood's turn
                taken = queue.pop(novel_only=True)
            else:
                async with self._throttle:
                    taken = queue.pop(limit=self._batch_size)
            if not queue:
                self._queued.clear()
            if not queue.novel_waiting:
                self._novel_queued.clear()
            self._report_misses()
            if not taken:
                continue
            for _ in taken[1:]:  # the throttle counts simulations, not batches
                async with self._throttle:
                    pass
            try:
                await self._simulate_batch(taken, hedge=NOVEL_HEDGE if novel_only else 1, staged=novel_only)
            except Exception as exc:  # noqa: BLE001 - the worker carries on; the failure is the items'
                for queued in taken:
                    _settle(queued.done, exc)
            finally:
                for queued in taken:
                    _settle(queued.done)

    def _missed_in_queue(self, queued: _Queued) -> None:
        _settle(queued.done)

    async def _simulate_batch(self, taken: list[_Queued], hedge: int, staged: bool = False) -> None:
        """Simulates the transactions against the head in one batch, within the latest of their deadlines, on
        `hedge` simulation endpoints at once. `staged` (the first of a shape: what an attack looks like): the
        policies' simulation first and acted on, then the guardian's own probes as a simulation of their own;
        else one simulation for every judge (a flood's batches: one request per transaction)."""
        head = self.head
        assert self.simulator is not None and head is not None
        last_deadline = max(q.pending.seen_at for q in taken) + self.config.mempool.simulation_timeout
        failed: set[int] = set()
        reverted: set[int] = set()  # a transaction that reverts on the head's state changes nothing there
        for stage in self.engine.simulation_stages if staged else (self.engine.whole_simulation,):
            if len(reverted) == len(taken):
                break
            if stage.probes:
                # The guardian's probes never compete with its own pause for the node or the CPU: held while a
                # response is being sent, for at most half of what is left of the deadline.
                await self.responder.until_sent((last_deadline - time.perf_counter()) / 2)
            outcomes = await self._simulate_stage(taken, stage, head, hedge, last_deadline)
            if outcomes is None:
                return
            for index, (queued, outcome) in enumerate(zip(taken, outcomes, strict=True)):
                if index in reverted:
                    continue
                if isinstance(outcome, ChainError):
                    if index not in failed and not isinstance(outcome, SimulationUnsupported):  # said once
                        self._log.error("pending transaction could not be judged: left to the block path",
                                        tx=queued.pending.hash, error=outcome.message)
                    failed.add(index)
                else:  # back within the batch's deadline: judged, even if this one's own passed meanwhile
                    self._act_on_pending(queued.pending, queued.threat,
                                         self.engine.evaluate_simulation(queued.pending, outcome, head, stage.judges))
                    if outcome.reverted:
                        reverted.add(index)
        for index in range(len(taken)):
            if index in failed:
                self.pending_counters.failed += 1
                self.ops.pending_judged(PendingResult.FAILED)
            else:
                self.pending_counters.judged += 1
                self.ops.pending_judged(PendingResult.JUDGED)

    async def _simulate_stage(self, taken: list[_Queued], stage: SimulationStage, head: BlockObservation,
                              hedge: int, deadline: float) -> list[Simulation | ChainError] | None:
        """One stage's simulation of the transactions; None when the deadline passed (counted as missed)."""
        assert self.simulator is not None
        try:
            outcomes: list[Simulation | ChainError] = await asyncio.wait_for(
                self.simulator.simulate_many([q.pending.raw for q in taken], stage.reads,
                                             SimulationHead(head.number, head.hash), stage.probes,
                                             deadline=deadline, hedge=hedge),
                timeout=max(deadline - time.perf_counter(), 0.0))
        except TimeoutError:
            self.pending_counters.missed += len(taken)
            for _ in taken:
                self.ops.pending_judged(PendingResult.TIMED_OUT)
            return None
        except SimulationUnsupported as exc:
            self._simulation_unsupported(exc)
            return [exc] * len(taken)
        except ChainError as exc:
            return [exc] * len(taken)
        if self._cannot_simulate:
            self._cannot_simulate = False
            self._log.warning("pending transactions are simulated again")
        return outcomes

    def _simulation_unsupported(self, exc: SimulationUnsupported) -> None:
        """Says once (until simulations work again) that no endpoint can simulate: every simulate policy is blind
        before inclusion, the block path still judges every mined transaction."""
        if self._cannot_simulate:
            return
        self._cannot_simulate = True
        self._log.critical("NO SIMULATION ENDPOINT CAN SIMULATE: simulate policies cannot judge pending "
                           "transactions (the block path still judges every mined one); fix it now",
                           error=exc.message, hint=exc.hint)

    async def _judge_pending(self, pending: PendingTransaction, threat: Threat,
                             judging: Awaitable[EngineResult]) -> None:
        """Awaits one judgement within the transaction's deadline and acts on what it finds."""
        budget = pending.seen_at + self.config.mempool.simulation_timeout - time.perf_counter()
        try:
            if budget <= 0:
                raise TimeoutError
            result = await asyncio.wait_for(judging, timeout=budget)
        except TimeoutError:
            self.pending_counters.missed += 1
            self.ops.pending_judged(PendingResult.TIMED_OUT)
            self._report_misses()
            return
        except ChainError as exc:
            self.pending_counters.failed += 1
            self._log.error("pending transaction could not be judged: left to the block path", tx=pending.hash,
                            error=exc.message)
            self.ops.pending_judged(PendingResult.FAILED)
            return
        finally:
            if asyncio.iscoroutine(judging):
                judging.close()  # never started (deadline already passed): no "never awaited" warning
        self.pending_counters.judged += 1
        self.ops.pending_judged(PendingResult.JUDGED)
        self._act_on_pending(pending, threat, result)

    def _act_on_pending(self, pending: PendingTransaction, threat: Threat, result: EngineResult) -> None:
        judged_at = time.perf_counter()
        self._record_failures(result.failures)
        for finding in result.findings:
            self.triage.suspect(pending.raw.get("from"), pending.raw.get("to"))
            if self.replica.cut_off():
                self.cut_off.tripped(finding, threat)
                continue
            decision = self.arbiter.claim(finding)  # the incident opened atomically: the one claim before the pause
            decided_at = time.perf_counter()
            for action in decision.actions:
                self.responder.respond(decision.incident.id, action, threat)
            if not decision.opened:
                for action in finding.policy.response:
                    if self.responder.in_flight(action):
                        self.responder.respond(decision.incident.id, action, threat)
            self.responder.after_broadcast(finding.policy.response, lambda d=decision, at=(judged_at, decided_at):
                                           self._record_pending_decision(pending, d, *at))

    def _record_pending_decision(self, pending: PendingTransaction, decision: Decision, judged_at: float,
                                 decided_at: float) -> None:
        """What a decision on the pre-emption path writes, once its pause is on the wire: the audit entry, the
        timeline's `decided` (milliseconds from seen to judged — simulated or matched — and to decided), the
        operations' notice."""
        self.arbiter.record(decision)
        judged_ms, decided_ms = (round((at - pending.seen_at) * 1000, 2) for at in (judged_at, decided_at))
        self.store.add_timeline(decision.incident.id, "decided", {
            "path": "mempool", "threat_tx": pending.hash, "judged_ms": judged_ms, "decided_ms": decided_ms,
            "overtook": self._simulation_queue.waiting_before(pending.seen_at)})
        self.ops.decided(decision, pending.seen_at, path="mempool", at=decided_at)

    def _act_cut_off(self, finding: Finding, actions: list[str], threat: Threat | None) -> None:
        """A replica cut off from the database, past its deadline, with `actions` still not in effect on chain:
        decides as a single daemon does (the store keeps what it cannot write) and acts."""
        decision = self.arbiter.decide(finding)
        for action in actions:
            self.responder.respond(decision.incident.id, action, threat)
        self.ops.decided(decision, None, path="cut-off")

    def _report_misses(self) -> None:
        """Says, at most once a second, how many pending transactions missed their deadline (a flood)."""
        missed = self.pending_counters.missed
        now = time.monotonic()
        if missed > self._misses_reported and now >= self._next_miss_report:
            self._log.warning("pending transactions not judged by their deadline: left to the block path",
                              missed=missed - self._misses_reported, missed_total=missed,
                              queued=len(self._simulation_queue),
                              deadline=self.config.mempool.simulation_timeout)
            self._misses_reported, self._next_miss_report = missed, now + 1.0

    async def _judge_then_tell(self, pending: PendingTransaction) -> None:
        try:
            await self.on_pending(pending)
        finally:
            assert self._on_judged is not None
            self._on_judged(pending)

    def mempool_source(self) -> MempoolSource | None:
        """The pending-transaction source the config asks for (None when off). Without call or simulate policies it
        still prices block-path pauses above what is pending to the watched contracts. Replays build theirs here
        too, so they follow pending transactions as the daemon does."""
        if not self.config.mempool.enabled:
            return None
        if not self.engine.watches_pending:
            self._log.info("mempool source started for block-path pricing only: no call or simulate policy judges "
                           "pending transactions")
        return MempoolSource(self.config.mempool.ws_url, self.rpc, self.config.chain.chain_id,
                             self.config.contracts, ignore_senders=[self.account.address],
                             yield_each_while=self.responder.sending)

    def _record_failures(self, failures: list[EvaluationFailure]) -> None:
        for failure in failures:
            self.store.record_evaluation_failure(self.config.chain.chain_id, failure.policy_id,
                                                 failure.block_number, failure.message)
            self._log.error("policy could not be evaluated: this block is NOT known to be safe for it",
                            policy_id=failure.policy_id, block=failure.block_number, error=failure.message)

    def _spawn(self, coroutine: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._responses.add(task)
        task.add_done_callback(self._response_done)

    def _response_done(self, task: asyncio.Task[None]) -> None:
        self._responses.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.critical("a response task crashed: the protocol may NOT be in the safe state",
                               error=repr(task.exception()))

    async def drain_responses(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Waits for responses under way (sent transactions are not abandoned on shutdown)."""
        if self._responses:
            _, pending = await asyncio.wait(set(self._responses), timeout=timeout)
            for task in pending:
                task.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """The daemon: the block loop, the mempool source and the heartbeat in one task group, each supervised
        (a task that dies is logged and restarted; one that keeps dying halts the daemon loudly)."""
        await self.ops.start(policies=self.engine.severities, actions=list(self.config.actions))
        try:
            await self._run(stop)
        finally:
            await self.ops.stop()

    async def _run(self, stop: asyncio.Event) -> None:
        await self.start()
        tasks: dict[str, Callable[[asyncio.Event], Awaitable[None]]] = {
            "block-loop": self._block_loop, "new-heads": self.heads.run, "chain-watch": self._watch_chain,
            "heartbeat": self._heartbeat, "preflight": self._preflight_loop, **self.replica.tasks()}
        self.mempool = self.mempool_source()
        if self.mempool is not None:
            source = self.mempool
            handler = self.on_pending if self._on_judged is None else self._judge_then_tell
            tasks["mempool"] = lambda stop: source.run(handler, stop)
        try:
            async with asyncio.TaskGroup() as group:
                for name, body in tasks.items():
                    group.create_task(self._supervised(name, body, stop))
        finally:
            self._log.info("stopping: finishing responses under way", pending=len(self._responses))
            await self.drain_responses()
        if self._halted is not None:
            raise DaemonHalted(self._halted, hint="see the critical log lines above; the daemon's state is saved, "
                                                  "restart it once the cause is fixed")

    async def _supervised(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]],
                          stop: asyncio.Event) -> None:
        deaths: deque[float] = deque()
        while not stop.is_set():
            try:
                await body(stop)
                if not stop.is_set():
                    raise RuntimeError("returned while the daemon runs")
                return
            except Exception as exc:  # noqa: BLE001 - supervision: every death is logged and handled
                deaths.append(time.monotonic())
                while deaths and deaths[0] < time.monotonic() - RESTART_WINDOW:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    self._halted = f"the daemon task {name} died {len(deaths)} times in {RESTART_WINDOW:.0f}s: {exc!r}"
                    self._log.critical("a daemon task keeps dying: HALTING the daemon", task=name, error=repr(exc))
                    stop.set()
                    return
                self._log.critical("a daemon task died: restarting it", task=name, error=repr(exc),
                                   exc_info=exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RESTART_DELAY)

    async def _block_loop(self, stop: asyncio.Event) -> None:
        backoff = self.config.chain.poll_interval
        # With a subscription the loop wakes on each new head; this bounds the wait if one is ever missed.
        longest_wait = max(self.config.chain.poll_interval, 1.0)
        while not stop.is_set():
            wait = longest_wait
            if self._on_another_chain():
                await self.heads.wait(stop, timeout=wait)
                continue
            try:
                await self.step()
                backoff = self.config.chain.poll_interval
            except ChainUnavailable as exc:
                self._log.error("chain unreachable: retrying", error=exc.message, retry_in=round(backoff, 2))
                wait, backoff = backoff, min(max(backoff, 0.1) * 2, MAX_BACKOFF)
            except ChainError as exc:
                self._log.error("chain error: retrying", error=exc.message, retry_in=round(backoff, 2))
                wait, backoff = backoff, min(max(backoff, 0.1) * 2, MAX_BACKOFF)
            except WRITE_REFUSED as exc:
                if not self.replica.shared:
                    raise
                # A replica cut off from PostgreSQL goes on judging blocks (see replicas/claims.py: CutOff).
                self._log.error("the state database is out of reach: blocks are still judged, incidents compared "
                                "again once it answers", error=str(exc).strip(), retry_in=round(backoff, 2))
                wait, backoff = backoff, min(max(backoff, 0.1) * 2, MAX_BACKOFF)
            await self.heads.wait(stop, timeout=wait)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        wait = FIRST_HEARTBEAT_SECONDS  # soon after start, so `onguard status` shows a running daemon early
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            wait = HEARTBEAT_SECONDS
            if stop.is_set():
                return
            self._log_heartbeat()
            self.ops.heartbeat()

    async def _preflight(self) -> PreflightReport:
        self.preflight = await run_preflight(self.config, self.account.address, self.rpc, store=self.store)
        self.ops.preflight(self.preflight)
        return self.preflight

    async def _preflight_loop(self, stop: asyncio.Event) -> None:
        """Every PREFLIGHT_EVERY_BLOCKS handled blocks, checks again that every action can still be taken (a role
        revoked, the module disabled, the key drained, a pre-signature voided): if not, an incident of its own.
        Among replicas only the leader does (once-only work); the start-up preflight runs on every replica."""
        last = self.source.last_committed or 0
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(self.config.chain.poll_interval, 1.0))
            handled = self.source.last_committed or 0
            if stop.is_set() or handled < last + PREFLIGHT_EVERY_BLOCKS or self._responses:
                continue  # never compete with a response under way for the node
            if not self.replica.leader.held():
                continue
            last = handled
            try:
                report = await self._preflight()
            except WRITE_REFUSED as exc:  # it reads the pre-signed transactions: a database outage is not a death
                self._log.error("preflight skipped: the state database does not answer", error=str(exc).strip())
                continue
            self.module_path.use_gas_limits(report.gas_limits)
            if not report.ok:
                self._cannot_act(report)

    def _cannot_act(self, report: PreflightReport) -> None:
        incident, opened = self.store.open_or_join(
            chain_id=self.config.chain.chain_id, policy_id=CANNOT_ACT, cooldown=CANNOT_ACT_COOLDOWN,
            severity="critical", title=f"the guardian can no longer act: {report.summary()}", dry_run=False,
            block=report.block, block_time=int(time.time()), evidence={"preflight": report.to_json()},
            status=IncidentStatus.FAILED, actions=(), seen={"preflight": report.summary()})
        self._log.critical("preflight FAILED while running: the guardian can no longer act; fix it now",
                           incident_id=incident.id, new_incident=opened, failures=report.summary())
        if opened:
            self.ops.cannot_act(incident.id, report)

    def _on_another_chain(self) -> bool:
        """Every read endpoint serves another chain: its blocks must not move the checkpoint (_watch_chain says
        so loudly; the loop resumes when an endpoint serves the right chain again)."""
        health = self.chain_health
        return health is not None and health.wrong_chain is not None and health.head is None

    def _log_heartbeat(self) -> None:
        health = self.chain_health
        endpoints = {e.label: e.brief() for e in (health.endpoints if health else self.transport.health())}
        mempool = "off" if self.mempool is None else "live" if self.mempool.live else "DOWN"
        self.store.record_heartbeat({"block": self.source.last_committed, "mempool": mempool,
                                     "responses_under_way": len(self._responses)})
        self._log.info("watching", block=self.source.last_committed, head=health.head if health else None,
                       lag=health.lag if health else None, new_heads=self.heads.mode.value,
                       endpoints=endpoints,
                       problems=list(health.problems(max_lag=self.config.chain.max_lag)) if health else [],
                       responses_under_way=len(self._responses),
                       mempool=mempool, unsaved_writes=self.store.unsaved_writes or None)

    async def _watch_chain(self, stop: asyncio.Event) -> None:
        """Looks at the chain every few seconds and says loudly, every time, what is wrong with it."""
        interval = min(max(self.config.chain.stall_after / 4, 0.5), 10.0)
        was_wrong = False
        while not stop.is_set():
            try:
                health = await self.watch.check(self.source.last_committed)
            except Exception as exc:  # noqa: BLE001 - one bad look must not end the watching
                self._log.critical("chain health check failed", error=f"{type(exc).__name__}: {exc}")
            else:
                self.chain_health = health
                self.ops.chain_seen(health, None if self.mempool is None else self.mempool.live)
                problems = health.problems(max_lag=self.config.chain.max_lag)
                for problem in problems:
                    serious = health.blind or health.wrong_chain or health.behind_checkpoint
                    (self._log.critical if serious else self._log.error)(
                        "the guardian cannot trust what it sees", problem=problem, head=health.head,
                        checkpoint=health.checkpoint)
                if was_wrong and not problems:
                    self._log.info("the chain looks right again", head=health.head, checkpoint=health.checkpoint)
                was_wrong = bool(problems)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await self.responder.close()
        await self.replica.stop()
        await self.transport.close()
        self.store.close()


def freeze_start_up_objects() -> None:
    """After one full collection, moves everything alive once the daemon has started (modules, ABIs, config,
    compiled policies, prepared responses) out of the cyclic garbage collector's reach: a collection that falls
    during a race then walks only what was made since, not the start-up's ~150,000 objects. Only in a process that
    is the daemon's alone (`onguard run`, the benches): what is frozen is never collected as a cycle, so a process
    that starts guardian after guardian (tests, replays) must not."""
    gc.collect()
    gc.freeze()


def build_guardian(config: Config, account: LocalAccount, *, policies: Sequence[Policy] | None = None,
                   store: IncidentStore | None = None, heads: HeadSource | None = None,
                   on_judged: Callable[[PendingTransaction], None] | None = None) -> Guardian:
    """The composition root: the transport, store and policies of this config, wired into one Guardian. The
    daemon calls it with the config alone; a replay adds its policies, a scratch store and its own head source."""
    transport = Transport.from_config(config)
    if policies is None:
        policies = load_policies(config.policies_dir, config.contracts, config.actions)
    return Guardian(config, account, policies=policies,
                    store=store or IncidentStore(config.state, claimant=replica_claimant(config)),
                    transport=transport, heads=heads, on_judged=on_judged)
