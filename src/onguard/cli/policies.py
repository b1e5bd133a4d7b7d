"""`onguard policies check | explain | test`: validate policy files, say what one does, try it on past blocks."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from onguard.chain.rpc import Rpc
from onguard.chain.view import BatchStateReader, ReadFailure
from onguard.cli.common import add_config_argument
from onguard.config import Config, load_config
from onguard.errors import InputError, PolicyError
from onguard.incidents.store import IncidentStore
from onguard.observations import TransactionObservation
from onguard.policies.engine import PolicyEngine
from onguard.policies.kinds.base import Policy, PolicyEnv
from onguard.policies.loader import check_policies, load_policy
from onguard.policies.model import BUILT_IN_IDS, SELF_DEFENCE_ID
from onguard.policies.selfdefence import builtin_policies, configured_guardian
from onguard.replay.recording import RecordedBlock, load_recording
from onguard.sources.blocks import BlockSource
from onguard.tomlfields import field_line
from onguard.chain.transport import redacted_url

PROGRESS_EVERY = 500


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("policies", help="check, explain and try policy files")
    add_config_argument(parser)
    actions = parser.add_subparsers(dest="policies_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate every policy file; exit 0 when all are valid, else 2")
    check.add_argument("dir", nargs="?", type=Path, help="the folder (default: policies.dir of the config)")
    check.set_defaults(handler=handle_check)
    explain = actions.add_parser("explain", help="say in plain words what a policy watches, when it fires, "
                                                 "what it does")
    explain.add_argument("file", type=Path, help="a policy file, or a built-in policy's id (guardian-self-defence)")
    explain.set_defaults(handler=handle_explain)
    test = actions.add_parser("test", help="evaluate a policy over past blocks of the connected chain; "
                                           "prints what would have fired, acts on nothing")
    test.add_argument("file", type=Path)
    test.add_argument("--block", type=int, help="a single block")
    test.add_argument("--from-block", type=int, help="first block of a range")
    test.add_argument("--to-block", type=int, help="last block of a range (default: the head)")
    test.add_argument("--observations", type=Path, metavar="FILE.jsonl",
                      help="judge a recording (`onguard replay --record`) instead of the chain: no node needed")
    test.set_defaults(handler=handle_test)


def describe_error(error: InputError) -> str:
    """`file:line: field: message` and the hint, as compilers print them."""
    line = field_line(Path(error.file), error.field) if error.file else None
    where = f"{error.file}:{line}" if line else (error.file or "")
    text = f"{where}: {error.field}: " if error.field else f"{where}: "
    text += error.message.split(": ", 2)[-1] if error.file else error.message
    if error.hint:
        text += f"\n  hint: {error.hint}"
    return text


def handle_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    folder = args.dir or config.policies_dir
    result = check_policies(folder, config.contracts, config.actions)
    for error in result.errors:
        print(describe_error(error), file=sys.stderr)
    for policy in result.policies:
        state = "" if policy.common.enabled else " (disabled)"
        print(f"ok  {policy.common.id} ({policy.common.kind}, {policy.common.severity.value}){state}  "
              f"{policy.common.file}")
    _print_builtin(config)
    print(f"{len(result.policies)} valid, {len(result.errors)} invalid")
    return 2 if result.errors else 0


def _print_builtin(config: Config) -> None:
    """The built-in policies: generated from the config, never from a file of the folder."""
    if not config.self_defence.enabled:
        print(f"OFF {SELF_DEFENCE_ID} (built-in): turned off by [self_defence] enabled = false in {config.path}; a "
              "transaction stripping the guardian's authority will not be paused first")
        return
    for policy in builtin_policies(config, configured_guardian(config)):
        actions = ", ".join(policy.common.response) or "alert"
        print(f"ok  {policy.common.id} (built-in, {policy.common.severity.value}) -> {actions}; routine owner "
              f"rotations: {policy.routine.id} (alert only)  generated from {config.path}")


def _load_one(config: Config, file: Path) -> Policy:
    if str(file) in BUILT_IN_IDS:
        return _builtin(config, str(file))
    try:
        return load_policy(file, PolicyEnv(contracts=config.contracts, actions=config.actions))
    except PolicyError as exc:
        raise _Reported(describe_error(exc)) from None


def _builtin(config: Config, policy_id: str) -> Policy:
    policies = builtin_policies(config, configured_guardian(config))
    if not policies:
        raise InputError(f"{policy_id} is turned off by [self_defence] enabled = false", file=str(config.path),
                         field="self_defence.enabled", hint="remove the setting to turn the guardian's "
                                                            "self-defence back on")
    return policies[0]


class _Reported(InputError):
    """An input error already formatted with its line: printed as it is."""

    def render(self) -> str:
        return f"error: {self.message}"


def handle_explain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    policy = _load_one(config, args.file)
    common = policy.common
    print(f"{common.id}: {common.description}")
    print(f"  kind {common.kind}, severity {common.severity.value}"
          + ("" if common.enabled else ", DISABLED (checked, never evaluated)"))
    lines = policy.explain()
    for line in lines:
        print(f"  {line}")
    for name, text in policy.reads.texts().items():
        if not any(f"state.{name} = " in line for line in lines):
            print(f"  state.{name} is read at each block as {text}.")
    if common.confirmations:
        print(f"  It acts only on evidence at least {common.confirmations} blocks deep.")
    if common.dry_run:
        print("  DRY RUN: it records incidents and never acts.")
    elif common.alert_only:
        print("  Then it only alerts: it opens an incident and logs it; nothing is sent on chain.")
    else:
        for name in common.response:
            action = config.actions[name]
            how = "the Safe's guardian module" if action.via == "module" else "the owners' pre-signed Safe transaction"
            print(f"  Then it sends {name}: {action.text} through {how} "
                  f"(unless {action.done_when.source} is already true).")
    print(f"  Trips within {_duration(common.cooldown)} of the first join the same incident: no second response.")
    return 0


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def handle_test(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    policy = _load_one(config, args.file)
    if args.observations is not None:
        return _test_recording(policy, args.observations)
    if args.block is not None and (args.from_block is not None or args.to_block is not None):
        raise InputError("give either --block or --from-block/--to-block", field="--block")
    first = args.block if args.block is not None else args.from_block
    if first is None:
        raise InputError("which blocks?", field="--block", hint="--block N, or --from-block A [--to-block B]")
    last = args.block if args.block is not None else args.to_block
    return asyncio.run(_test(config, policy, first, last))


def _test_recording(policy: Policy, path: Path) -> int:
    header, items = load_recording(path)
    blocks = [item for item in items if isinstance(item, RecordedBlock)]
    by_number = {recorded.batch.block.number: recorded for recorded in blocks}
    engine = PolicyEngine([policy])
    fired = failures = 0
    print(f"testing {policy.common.id} on the recording {path} (blocks {header['from_block']}..{header['to_block']}"
          f"; no node, no action)")
    head: RecordedBlock | None = None
    for index, item in enumerate(items):
        if isinstance(item, RecordedBlock):
            head = item
            continue
        # A pending transaction, judged as the daemon would have at the block before it (call policies; a
        # simulation needs the chain and is not replayed from a recording). Before the first recorded block,
        # the first block's state stands in for the one before it.
        head = head or next((b for b in items[index:] if isinstance(b, RecordedBlock)), None)
        if head is None:
            continue
        result = asyncio.run(engine.evaluate_pending(_Pending(item), head.batch.block, _RecordedReader(head), None))
        for finding in result.findings:
            fired += 1
            print(f"pending {item.hash}: FIRES  {finding.summary}")
        for failure in result.failures:
            failures += 1
            print(f"pending {item.hash}: ERROR  {failure.message}")
    for recorded in blocks:
        plan = engine.plan(recorded.batch)
        # A call policy reads the block before (the state its calls ran on): before the first recorded block,
        # that state was not recorded, and a read that is not there fails rather than being guessed.
        states = {number: (by_number[number].state_for(list(specs)) if number in by_number
                           else {spec: ReadFailure(spec, f"block {number} is not in the recording") for spec in specs})
                  for number, specs in engine.reads_needed(plan).items()}
        result = engine.evaluate_offline(recorded.batch, states)
        for finding in result.findings:
            fired += 1
            print(f"block {finding.block_number}: FIRES  {finding.summary}")
        for failure in result.failures:
            failures += 1
            print(f"block {failure.block_number}: ERROR  {failure.message}")
    print(f"{len(blocks)} blocks evaluated: fired at {fired}, could not evaluate at {failures}")
    return 0


@dataclass(frozen=True, slots=True)
class _Pending:
    observation: TransactionObservation

    @property
    def raw(self) -> dict[str, object]:
        return {"to": self.observation.to, "input": self.observation.input}


class _RecordedReader:
    def __init__(self, recorded: RecordedBlock) -> None:
        self._recorded = recorded

    async def read(self, specs: object, block: int) -> object:
        return self._recorded.state_for(list(specs))  # type: ignore[call-overload]


async def _test(config: Config, policy: Policy, first: int, last: int | None) -> int:
    rpc = Rpc.from_config(config)
    store = IncidentStore(":memory:")  # a scratch checkpoint: the daemon's database is never touched
    try:
        last = last if last is not None else await rpc.head()
        if last < first:
            raise InputError(f"the range {first}..{last} is empty", field="--to-block")
        source = BlockSource(rpc, store, config.chain.chain_id, config.contracts, start_block=first,
                             max_block_range=config.chain.max_block_range, end_block=last)
        engine = PolicyEngine([policy])
        reader = BatchStateReader(rpc)
        fired = failures = evaluated = 0
        print(f"testing {policy.common.id} on blocks {first}..{last} of {redacted_url(config.chain.rpc_url)} "
              "(no action is taken; cooldowns are ignored, every firing block is shown)")
        while source.last_committed is None or source.last_committed < last:
            poll = await source.next_batches()
            for batch in poll.batches:
                result = await engine.evaluate(batch, reader)
                evaluated += 1
                for finding in result.findings:
                    fired += 1
                    print(f"block {finding.block_number}: FIRES  {finding.summary}")
                for failure in result.failures:
                    failures += 1
                    print(f"block {failure.block_number}: ERROR  {failure.message}")
                source.commit(batch)
                if evaluated % PROGRESS_EVERY == 0:
                    print(f"  … {evaluated} of {last - first + 1} blocks", file=sys.stderr)
        print(f"{evaluated} blocks evaluated: fired at {fired}, could not evaluate at {failures}")
        return 0
    finally:
        store.close()
        await rpc.close()
