"""The built-in guardian self-defence policy, generated from the config itself (the Safe, the module, the guardian
key, each action's calls), so that no team can forget or mis-type it: a pending transaction — or a mined block —
that would strip the guardian of its power to act (the module disabled, the guardian removed, an action revoked,
the pauser role moved, anything that makes the guardian's own pause fail) or change who governs the Safe (owners,
threshold) trips it, and the guardian pauses first, while it still can.

The most general test is a probe: the guardian's own pause (the module's execute/executeBatch from the guardian key,
exactly as the responder sends it) is simulated on the head's state and again right after the pending transaction;
an action that would succeed before and fail after (its done_when not already holding) is power about to be lost,
whatever the wrapper (execTransaction, MultiSend, an exploit contract, an upgrade removing the pause). Explicit reads
name the cause (module, guardian, allowlist) and catch what a probe cannot (owners, threshold; an action already in
effect). A Safe transaction whose safeTxHash is a proposal the team recorded (`onguard proposals`) and that only
changes owners or threshold is a routine rotation: it alerts under its own id and pauses nothing."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address

from onguard.actions import ActionSettings, DoneCondition, Via
from onguard.allowlist import PlannedCall, action_calls
from onguard.chain.module import calldata_hash, module_abi, safe_abi
from onguard.chain.simulate import Simulation
from onguard.chain.view import ReadFailure
from onguard.config import Config, WatchedContract
from onguard.errors import ChainError
from onguard.observations import BlockBatch, BlockObservation
from onguard.policies.expr import EvaluationError
from onguard.policies.kinds.base import NamedReads, StateValues
from onguard.policies.model import ROUTINE_ID, SELF_DEFENCE_ID, Finding, PolicyCommon, Severity, Verdict
from onguard.policies.reads import ReadSpec, parse_read
from onguard.preflight import module_calldata

BUILT_IN_KIND = "self-defence"
COOLDOWN = 3600.0
EXPECTED_ROUTINE_STATES = 16   # routine changes seen pending, remembered so that their mined block only alerts
EXECUTION_SUCCESS = keccak(text="ExecutionSuccess(bytes32,uint256)")
UNREADABLE = "unreadable"      # a read that failed: never taken for "the guardian still has its power"

RecordedProposal = Callable[[str], bool]  # is this safeTxHash a proposal the team recorded through onguard?


class ChangeKind(StrEnum):
    MODULE_DISABLED = "module-disabled"
    GUARDIAN_REMOVED = "guardian-removed"
    ACTION_REVOKED = "action-revoked"
    POWER_LOST = "power-lost"
    OWNERS_CHANGED = "owners-changed"
    THRESHOLD_CHANGED = "threshold-changed"


GOVERNANCE = frozenset({ChangeKind.OWNERS_CHANGED, ChangeKind.THRESHOLD_CHANGED})


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    text: str


@dataclass(frozen=True, slots=True)
class Power:
    """One action the guardian can take now: its transaction as a call from the guardian key, and its done_when
    (an action already in effect cannot be taken again, and that is no loss of power)."""

    action: str
    text: str
    probe: ReadSpec
    done_when: DoneCondition


@dataclass(frozen=True, slots=True)
class Allowed:
    """One allowlist entry the guardian relies on: allowed, and pinned to the calldata onguard sends (or to none);
    and its cooldown, which the guardian's own last execution started."""

    action: str
    text: str
    allowed: ReadSpec
    pinned: ReadSpec
    last_executed: ReadSpec
    cooldown: ReadSpec
    calldata_hash: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The guardian's authority at one point (values, or UNREADABLE)."""

    module_enabled: Any
    guardian: Any
    allowed: Mapping[str, Any]      # entry text -> admits onguard's calldata (bool or UNREADABLE)
    powers: Mapping[str, str]       # action -> "can", "done", "cooling" (its own last execution) or "cannot"
    owners: Any                     # frozenset of checksummed addresses, or UNREADABLE
    threshold: Any


@dataclass(frozen=True, slots=True)
class Authority:
    """What the guardian's authority is made of, as reads of the Safe and the module and probes of its actions."""

    safe: str
    module: str | None
    guardian: str | None
    module_enabled: ReadSpec | None
    registered: ReadSpec | None
    allowlist: tuple[Allowed, ...]
    powers: tuple[Power, ...]
    owners: ReadSpec
    threshold: ReadSpec

    @property
    def reads(self) -> frozenset[ReadSpec]:
        """Every read but the probes (those change the state they run on)."""
        specs = {self.owners, self.threshold, *(s for s in (self.module_enabled, self.registered) if s is not None)}
        specs.update(spec for entry in self.allowlist
                     for spec in (entry.allowed, entry.pinned, entry.last_executed, entry.cooldown))
        specs.update(spec for power in self.powers for spec in power.done_when.reads)
        return frozenset(specs)

    @property
    def probes(self) -> tuple[ReadSpec, ...]:
        return tuple(power.probe for power in self.powers)

    def named(self) -> NamedReads:
        """The reads by name, for `onguard policies explain`."""
        specs = {"owners": self.owners, "threshold": self.threshold}
        if self.module_enabled is not None and self.registered is not None:
            specs.update(module_enabled=self.module_enabled, guardian_registered=self.registered)
        for index, entry in enumerate(self.allowlist):
            specs[f"allowed_{index}"] = entry.allowed
        for power in self.powers:
            specs[f"probe_{power.action}"] = power.probe
        return NamedReads(MappingProxyType(specs))

    def snapshot(self, values: StateValues, probed: StateValues, now: int) -> Snapshot:
        """The authority as `values` and `probed` show it, at chain time `now` (for the cooldowns)."""
        return Snapshot(
            module_enabled=_value(values, self.module_enabled),
            guardian=_value(values, self.registered),
            allowed={entry.text: _admits(values, entry) for entry in self.allowlist},
            powers={power.action: _power(values, probed, power, self._cooling(values, power.action, now))
                    for power in self.powers},
            owners=_owners(values, self.owners),
            threshold=_value(values, self.threshold))


    def _cooling(self, values: StateValues, action: str, now: int) -> bool:
        """Whether the guardian's own last execution of the action keeps it cooling down: a pause that fails for
        that reason is the guardian's own doing, not power taken from it (only the guardian key starts a cooldown)."""
        for entry in self.allowlist:
            last, cooldown = _value(values, entry.last_executed), _value(values, entry.cooldown)
            if entry.action == action and UNREADABLE not in (last, cooldown) and last and last + cooldown > now:
                return True
        return False


def compare(before: Snapshot, after: Snapshot, authority: Authority) -> list[Change]:
    """What a transaction (or a block) changed of the guardian's authority, in plain words."""
    if UNREADABLE in (before.owners, before.threshold):
        raise EvaluationError("the Safe's owners or threshold cannot be read: the guardian's authority is NOT known")
    changes: list[Change] = []
    if before.module_enabled is True and after.module_enabled is not True:
        changes.append(Change(ChangeKind.MODULE_DISABLED, f"the guardian's module {authority.module} would no longer "
                                                          f"be enabled on the Safe {authority.safe}"))
    if before.guardian is True and after.guardian is not True:
        changes.append(Change(ChangeKind.GUARDIAN_REMOVED, f"the guardian key {authority.guardian} would no longer be "
                                                           "a guardian of the module"))
    for text, admits in before.allowed.items():
        if admits is True and after.allowed.get(text) is not True:
            changes.append(Change(ChangeKind.ACTION_REVOKED, f"the module would no longer allow {text}"))
    for power in authority.powers:
        if before.powers[power.action] == "can" and after.powers[power.action] == "cannot":
            changes.append(Change(ChangeKind.POWER_LOST, f"action {power.action} ({power.text}) succeeds from the "
                                                         "guardian key now and would FAIL after it"))
    if after.owners != before.owners:
        changes.append(Change(ChangeKind.OWNERS_CHANGED, _owners_change(before.owners, after.owners)))
    if after.threshold != before.threshold:
        changes.append(Change(ChangeKind.THRESHOLD_CHANGED, f"the Safe's threshold would change from "
                                                            f"{before.threshold} to {after.threshold}"))
    return changes


def _owners_change(before: frozenset[str], after: Any) -> str:
    if after == UNREADABLE:
        return "the Safe's owners could no longer be read"
    removed, added = sorted(before - after), sorted(after - before)
    parts = ([f"removed {', '.join(removed)}"] if removed else []) + ([f"added {', '.join(added)}"] if added else [])
    return f"the Safe's owners would change: {'; '.join(parts)}"


def _value(values: StateValues, spec: ReadSpec | None) -> Any:
    if spec is None:
        return None
    value = values[spec]
    return UNREADABLE if isinstance(value, ReadFailure) else value


def _owners(values: StateValues, spec: ReadSpec) -> Any:
    value = _value(values, spec)
    return value if value == UNREADABLE else frozenset(to_checksum_address(o) for o in value)


def _admits(values: StateValues, entry: Allowed) -> Any:
    allowed, pinned = _value(values, entry.allowed), _value(values, entry.pinned)
    if UNREADABLE in (allowed, pinned):
        return UNREADABLE
    return bool(allowed) and pinned in ("0x" + "00" * 32, entry.calldata_hash)


def _power(values: StateValues, probed: StateValues, power: Power, cooling: bool) -> str:
    if not isinstance(probed.get(power.probe, ReadFailure(power.probe, "not probed")), ReadFailure):
        return "can"
    try:
        if power.done_when.holds_in(values):
            return "done"
    except ChainError:
        pass
    return "cooling" if cooling else "cannot"


# ---- generation from the config ----


def authority_of(config: Config, guardian: str | None) -> Authority:
    """The reads and probes of the guardian's authority, from the config (`guardian`: the key's address; None when
    it is not known, e.g. `policies check` without the key: then nothing is probed and the registration is not
    read)."""
    safe = config.safe.address
    module = config.safe.guardian_module
    contracts: dict[str, WatchedContract] = {"safe": WatchedContract("safe", safe, safe_abi())}
    if module is not None:
        contracts["module"] = WatchedContract("module", module, module_abi())
    owners_fn = safe_abi().functions_by_signature["getOwners()"]
    owners = ReadSpec(address=safe, calldata=owners_fn.selector, text="safe.getOwners()", contract="safe",
                      function=owners_fn)
    threshold = parse_read("safe.getThreshold()", contracts)
    if module is None:
        return Authority(safe=safe, module=None, guardian=guardian, module_enabled=None, registered=None,
                         allowlist=(), powers=(), owners=owners, threshold=threshold)
    module_actions = [a for a in config.actions.values() if a.via == Via.MODULE]
    allowlist = tuple(_allowed(action, call, contracts) for action in module_actions for call in action_calls(action))
    powers = () if guardian is None else tuple(_probe(action, module, guardian) for action in module_actions)
    registered = None if guardian is None else parse_read(f"module.isGuardian({guardian})", contracts)
    return Authority(safe=safe, module=module, guardian=guardian,
                     module_enabled=parse_read(f"safe.isModuleEnabled({module})", contracts),
                     registered=registered, allowlist=allowlist, powers=powers, owners=owners, threshold=threshold)


def _allowed(action: ActionSettings, call: PlannedCall, contracts: Mapping[str, WatchedContract]) -> Allowed:
    entry = f"module.getAction({call.target}, 0x{call.selector.hex()})"
    return Allowed(action=action.name, text=f"{call.text} for action {action.name}",
                   allowed=parse_read(f"{entry}.allowed", contracts),
                   pinned=parse_read(f"{entry}.calldataHash", contracts),
                   last_executed=parse_read(f"{entry}.lastExecutedAt", contracts),
                   cooldown=parse_read(f"{entry}.cooldown", contracts),
                   calldata_hash="0x" + calldata_hash(call.calldata).hex())


def _probe(action: ActionSettings, module: str, guardian: str) -> Power:
    calls = action_calls(action)
    data = module_calldata(calls)
    decoded = module_abi().decode_call(data)
    assert decoded is not None  # module_calldata encodes one of the module's own functions
    function = decoded[0]
    text = ", then ".join(call.text for call in calls)
    probe = ReadSpec(address=module, calldata=data, text=f"module.{function.name}({text}) from {guardian}",
                     contract="module", function=function, sender=guardian)
    return Power(action=action.name, text=text, probe=probe, done_when=action.done_when)


def builtin_policies(config: Config, guardian: str | None,
                     recorded: RecordedProposal | None = None) -> list[SelfDefencePolicy]:
    """The built-in policies of this config: the self-defence policy, or none when the config turns it off."""
    settings = config.self_defence
    if not settings.enabled:
        return []
    response = settings.actions if settings.actions is not None else tuple(config.actions)
    common = PolicyCommon(
        id=SELF_DEFENCE_ID, kind=BUILT_IN_KIND, severity=Severity.CRITICAL, response=tuple(response),
        description="A pending transaction or a mined block would strip the guardian of its power to act (module "
                    "disabled, guardian removed, an action revoked, the pauser role moved: its own pause would "
                    "fail) or change the Safe's owners or threshold: pause first, while it still can",
        cooldown=COOLDOWN, enabled=True, dry_run=False, confirmations=0, file=config.path)
    routine = replace(common, id=ROUTINE_ID, severity=Severity.HIGH, response=(),
                      description="A proposal the team recorded through `onguard proposals` changes the Safe's owners "
                                  "or threshold (a routine rotation): alert only")
    return [SelfDefencePolicy(common=common, routine=routine, authority=authority_of(config, guardian),
                              recorded=recorded)]


def configured_guardian(config: Config) -> str | None:
    """The guardian key's address as far as it can be known without unlocking it: the keystore's `address` field,
    or the key in `key_env` when that variable is set. None otherwise."""
    source = config.guardian_key
    if source.keystore is not None:
        try:
            address = json.loads(Path(source.keystore).read_text()).get("address")
        except (OSError, ValueError, AttributeError):
            return None
        return to_checksum_address(address) if isinstance(address, str) and address else None
    value = os.environ.get(source.key_env or "")
    if not value:
        return None
    try:
        return str(Account.from_key(value).address)
    except (ValueError, TypeError):
        return None


# ---- the policy and its evaluator ----


@dataclass(frozen=True, slots=True)
class SelfDefencePolicy:
    common: PolicyCommon
    routine: PolicyCommon            # the alert-only policy a recorded proposal's owner/threshold change trips
    authority: Authority
    recorded: RecordedProposal | None = field(default=None, compare=False)

    @property
    def reads(self) -> NamedReads:
        return self.authority.named()

    def evaluator(self) -> SelfDefenceEvaluator:
        return SelfDefenceEvaluator(self)

    def explain(self) -> list[str]:
        authority = self.authority
        lines = ["Built in: generated from onguard.toml (the Safe, the module, the guardian key, each action's "
                 "calls); `[self_defence] enabled = false` turns it off (logged at critical level at every start)."]
        if authority.module is not None:
            probed = (", ".join(p.action for p in authority.powers) if authority.powers
                      else "each module action (the guardian key's address is not known here: given at run time)")
            lines.append(f"Every pending transaction is simulated on the latest state, then the guardian's own "
                         f"pause ({probed}, through the module {authority.module}) right after it: an action that "
                         "succeeds now and would fail after it (its done_when not already holding) trips it.")
            lines.append("It also reads, before and after: the module enabled on the Safe, the guardian registered, "
                         "each allowlist entry admitting the calldata onguard sends.")
        lines.append(f"It trips on any change of the Safe's owners ({authority.owners.text}) or threshold "
                     f"({authority.threshold.text}).")
        lines.append("On every mined block it compares the same reads and probes with the block before: a change "
                     "mined without being seen pending opens a critical incident at once.")
        lines.append(f"A Safe transaction whose safeTxHash is a proposal recorded through `onguard proposals` and "
                     f"that only changes owners or threshold is a routine rotation: it opens an alert-only incident "
                     f"({ROUTINE_ID}, {self.routine.severity.value}) and pauses nothing. Anything that strips the "
                     "guardian's power pauses, recorded or not.")
        return lines


class SelfDefenceEvaluator:
    """Judges pending transactions (a simulation and the probes) and mined blocks (the reads and probes compared
    with the block before). Keeps the previous block's snapshot and the routine changes seen pending."""

    def __init__(self, policy: SelfDefencePolicy) -> None:
        self.policy = policy
        self.common = policy.common
        self._previous: tuple[int, Snapshot] | None = None
        self._expected: deque[tuple[Any, Any]] = deque(maxlen=EXPECTED_ROUTINE_STATES)

    @property
    def history_blocks(self) -> int:
        return 1  # after a restart the block before the checkpoint is read again: the comparison has a baseline

    @property
    def reads(self) -> frozenset[ReadSpec]:
        """On mined blocks: the probes too, each an eth_call from the guardian key (isolated, changing nothing)."""
        return self.policy.authority.reads | frozenset(self.policy.authority.probes)

    @property
    def simulation_reads(self) -> frozenset[ReadSpec]:
        return self.policy.authority.reads

    @property
    def simulation_probes(self) -> tuple[ReadSpec, ...]:
        return self.policy.authority.probes

    def forget_from(self, block_number: int) -> None:
        if self._previous is not None and self._previous[0] >= block_number:
            self._previous = None

    def observe(self, batch: BlockBatch, state: StateValues) -> Finding | None:
        authority = self.policy.authority
        snapshot = authority.snapshot(state, state, batch.block.timestamp)
        previous, self._previous = self._previous, (batch.block.number, snapshot)
        if previous is None or previous[0] >= batch.block.number:
            return None
        changes = compare(previous[1], snapshot, authority)
        if not changes:
            return None
        routine = _governance_only(changes) and (snapshot.owners, snapshot.threshold) in self._expected
        where = f"block {batch.block.number}"
        evidence = {"path": "block", "changes": _changes_json(changes), "routine": routine,
                    "compared_with_block": previous[0]}
        return self._finding(changes, routine, where, evidence, batch.block, Verdict.INVARIANT_BROKEN)

    def observe_simulation(self, raw: Any, simulation: Simulation, head: BlockObservation) -> Finding | None:
        if simulation.reverted:
            return None
        authority = self.policy.authority
        before = authority.snapshot(simulation.before, simulation.probed_before, head.timestamp)
        after = authority.snapshot(simulation.after, simulation.probed_after, head.timestamp)
        changes = compare(before, after, authority)
        if not changes and authority.probes and not simulation.probed_before:
            raise EvaluationError("the guardian's own actions could not be probed on the head's state: whether this "
                                  "transaction strips its power is NOT known")
        if not changes:
            return None
        executed = _executed_safe_txs(simulation, authority.safe)
        recorded = [h for h in executed if self.policy.recorded is not None and self.policy.recorded(h)]
        routine = _governance_only(changes) and bool(executed) and len(recorded) == len(executed)
        if routine:
            self._expected.append((after.owners, after.threshold))
        tx_hash = raw["hash"] if isinstance(raw["hash"], str) else "0x" + bytes(raw["hash"]).hex()
        evidence = {"path": "mempool", "threat_tx": tx_hash, "threat_from": raw["from"], "threat_to": raw.get("to"),
                    "changes": _changes_json(changes), "routine": routine, "safe_tx_hashes": executed,
                    "recorded_proposals": recorded}
        return self._finding(changes, routine, f"pending tx {tx_hash} from {raw['from']}", evidence, head,
                             Verdict.SIMULATION_PREDICTS_BREACH)

    def _finding(self, changes: list[Change], routine: bool, where: str, evidence: dict[str, Any],
                 block: BlockObservation, verdict: Verdict) -> Finding:
        said = "; ".join(change.text for change in changes)
        if routine:
            summary = f"{where}: a recorded proposal changes who governs the Safe: {said} (routine: alert only)"
            policy = self.policy.routine
        else:
            summary = (f"GUARDIAN SELF-DEFENCE: {where}: the guardian's authority is under attack: {said} — "
                       "pausing first")
            policy = self.common
        return Finding(policy=policy, verdict=verdict, summary=summary, block_number=block.number,
                       block_time=block.timestamp, evidence={**evidence, "self_defence": True})


def _governance_only(changes: list[Change]) -> bool:
    return all(change.kind in GOVERNANCE for change in changes)


def _changes_json(changes: list[Change]) -> list[dict[str, str]]:
    return [{"kind": change.kind.value, "text": change.text} for change in changes]


def _executed_safe_txs(simulation: Simulation, safe: str) -> list[str]:
    """The safeTxHashes the Safe executed in the transaction (its ExecutionSuccess events), however it was wrapped."""
    return ["0x" + log.topics[1].hex() for log in simulation.logs
            if log.address == safe.lower() and len(log.topics) > 1 and log.topics[0] == EXECUTION_SUCCESS]

