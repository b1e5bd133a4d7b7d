"""`onguard replay`: plays attack scenarios on fresh forks with the guardian watching, and reports what it did."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from dataclasses import replace
from pathlib import Path

from onguard.chain.rpc import Rpc
from onguard.cli.common import Exit, add_config_argument
from onguard.config import Config, load_config
from onguard.errors import InputError, OnguardError
from onguard.log import configure_logging
from onguard.policies.loader import load_policies
from onguard.replay.chart import holdings_chart
from onguard.replay.recording import record
from onguard.replay.report import (
    as_json,
    detail,
    figure_lines,
    figures,
    markdown,
    table,
)
from onguard.replay.originals import transaction_block
from onguard.replay.runner import ReplayReport, failed_report, replay
from onguard.replay.scenario import Scenario, load_scenario, one_shot_scenario, scenario_files


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "replay", help="replay attack scenarios on a fork: would the guardian have stopped them?",
        description="Plays a scenario file (or every *.toml of a folder) on a fresh Anvil fork with the guardian "
                    "running in-process, and reports what tripped, when, what was sent and what it saved. Or, "
                    "without a file: --fork-url URL --block N --tx HASH [--tx HASH …] --config onguard.toml "
                    "re-executes real transactions by hash with the team's own config and policies. "
                    "Exit 0 when every expectation holds, 1 when one does not, 2 on a bad scenario file, 3 when "
                    "an error prevented a scenario from being played.")
    parser.add_argument("path", type=Path, nargs="?", metavar="SCENARIO|DIR",
                        help="a scenario file, or a folder of them")
    parser.add_argument("--fork-url", metavar="URL", help="one-shot: the node to fork and take --tx from")
    parser.add_argument("--block", type=int, metavar="N",
                        help="one-shot: the block to fork at (default: the one before the earliest --tx's)")
    parser.add_argument("--tx", action="append", default=[], metavar="HASH",
                        help="one-shot: a transaction to re-execute at its original position, from its original "
                             "sender (repeatable); the blocks from --block on are rebuilt up to it")
    parser.add_argument("--holder", action="append", default=[], metavar="NAME|ADDRESS",
                        help="one-shot: whose token balances are the protocol's holdings (repeatable)")
    parser.add_argument("--token", action="append", default=[], metavar="NAME|ADDRESS",
                        help="one-shot: a token whose value counts (repeatable)")
    parser.add_argument("--price", action="append", default=[], metavar="SYMBOL=USD",
                        help="one-shot: a token's USD price (repeatable)")
    parser.add_argument("--record", type=Path, metavar="OUT.jsonl",
                        help="instead of playing scenarios: record blocks --from-block..--to-block of the chain in "
                             "--config (logs, transactions, and the reads of its policies) for offline judging with "
                             "`onguard policies test FILE --observations OUT.jsonl`")
    add_config_argument(parser)
    parser.add_argument("--from-block", type=int, help="with --record: the first block")
    parser.add_argument("--to-block", type=int, help="with --record: the last block (default: the head)")
    parser.add_argument("--report", type=Path, metavar="OUT.md", help="also write the full report as Markdown")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the full report as JSON")
    parser.add_argument("--verbose", action="store_true", help="show the guardian's own log while it plays")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.record is not None:
        return _record(args)
    if not args.verbose:
        # The guardian logs every trip and response as a daemon should; here the report says it once, readably.
        configure_logging(args.log_format, "error")
    if args.tx or args.fork_url:
        return _one(_one_shot(args), args)
    if args.path is None:
        raise InputError("which scenario?", field="SCENARIO|DIR", hint="give a scenario file or a folder of them, "
                                                                        "--fork-url URL --tx HASH to replay real "
                                                                        "transactions, or --record OUT.jsonl")
    path: Path = args.path
    if path.is_dir():
        return _folder(path, args)
    return _one(load_scenario(path), args)


def _one(scenario: Scenario, args: argparse.Namespace) -> int:
    try:
        report = replay(scenario)
    except InputError:
        raise  # the scenario names something the chain does not have: the file is to fix (exit 2)
    except OnguardError as exc:
        report = failed_report(scenario, scenario.path, exc)
    (report,) = _write(args, [report])
    print(detail(report))
    return exit_code([report])


def exit_code(reports: list[ReplayReport]) -> int:
    """3 when an error prevented a scenario from being played, else 1 when an expectation did not hold, else 0."""
    if any(r.error is not None for r in reports):
        return Exit.INTERNAL_ERROR
    return Exit.OK if all(r.expectation_held for r in reports) else Exit.NEEDS_A_HUMAN


def _one_shot(args: argparse.Namespace) -> Scenario:
    if not args.fork_url or not args.tx:
        raise InputError("replaying transactions needs a node and their hashes", field="--fork-url/--tx",
                         hint="onguard replay --fork-url URL --tx HASH [--tx HASH …] --config onguard.toml")
    if args.path is not None:
        raise InputError("give a scenario file or --tx, not both", field="SCENARIO|DIR")
    prices = {}
    for text in args.price:
        symbol, _, value = text.partition("=")
        try:
            prices[symbol.strip()] = Fraction(Decimal(value.strip()))
        except (InvalidOperation, ValueError):
            raise InputError(f"{text!r} is not SYMBOL=USD", field="--price", hint="e.g. --price USDC=1.0") from None
    block = args.block
    if block is None:  # the state the earliest of them started from
        block = min(transaction_block(args.fork_url, tx_hash) for tx_hash in args.tx) - 1
    return one_shot_scenario(Path(args.config), args.fork_url, block, args.tx, holders=tuple(args.holder),
                             tokens=tuple(args.token), prices=prices)


def _record(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.from_block is None:
        raise InputError("recording needs a first block", field="--from-block", hint="--from-block N")
    policies = load_policies(config.policies_dir, config.contracts, config.actions)
    return asyncio.run(_record_range(config, policies, args.from_block, args.to_block, args.record))


async def _record_range(config: Config, policies: list, first: int, last: int | None, out: Path) -> int:
    if last is None:
        rpc = Rpc.from_config(config)
        try:
            last = await rpc.head()
        finally:
            await rpc.close()
    if last < first:
        raise InputError(f"the range {first}..{last} is empty", field="--to-block")

    def progress(done: int) -> None:
        if done % 100 == 0:
            print(f"  … {done} of {last - first + 1} blocks recorded", file=sys.stderr)

    written = await record(config, policies, first, last, out, progress)
    print(f"recorded blocks {first}..{last} ({written} blocks, with the reads of {len(policies)} policies) to {out}")
    return 0


def _folder(folder: Path, args: argparse.Namespace) -> int:
    files = scenario_files(folder)
    scenarios: list[Scenario] = []
    errors: list[InputError] = []
    for file in files:  # every file is checked before anything runs: a typo should not cost a whole batch
        try:
            scenarios.append(load_scenario(file))
        except InputError as exc:
            errors.append(exc)
    if errors:
        for error in errors:
            print(error.render(), file=sys.stderr)
        print(f"{len(errors)} of {len(files)} scenario files are invalid: nothing replayed", file=sys.stderr)
        return 2
    reports: list[ReplayReport] = []
    bad_files: list[InputError] = []
    started = time.monotonic()
    for index, scenario in enumerate(scenarios, start=1):
        print(f"[{index}/{len(scenarios)}] {scenario.path.name}: {scenario.name} ... ({_elapsed(started)} elapsed)",
              file=sys.stderr, flush=True)
        try:
            report = replay(scenario)
        except OnguardError as exc:  # one scenario's failure (unreachable fork, a setup revert) is its row
            report = failed_report(scenario, scenario.path, exc)
            if isinstance(exc, InputError):
                bad_files.append(exc)
        reports.append(report)
        verdict = "held" if report.expectation_held else "NOT held"
        print(f"[{index}/{len(scenarios)}] {scenario.path.name}: {report.outcome}, expectation {verdict}"
              + (f" ({report.error})" if report.error else "") + f" ({_elapsed(started)} elapsed)",
              file=sys.stderr, flush=True)
    reports = _write(args, reports)
    print(table(reports))
    print()
    print("\n".join(figure_lines(figures(reports))))
    for error in bad_files:
        print(error.render(), file=sys.stderr)
    return Exit.BAD_INPUT if bad_files else exit_code(reports)


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _write(args: argparse.Namespace, reports: list[ReplayReport]) -> list[ReplayReport]:
    """Writes the reports asked for; with --report, each scenario's chart beside it (linked from it)."""
    if args.report:
        reports = [_charted(report, args.report, index) for index, report in enumerate(reports, start=1)]
        args.report.write_text(markdown(reports))
    if args.json:
        args.json.write_text(as_json(reports))
    return reports


def _charted(report: ReplayReport, markdown_path: Path, index: int) -> ReplayReport:
    slug = re.sub(r"[^a-z0-9]+", "-", Path(report.file).stem.lower()).strip("-") or f"scenario-{index}"
    chart = markdown_path.with_name(f"{markdown_path.stem}-{index:02d}-{slug}.png")
    if not holdings_chart(report, chart):
        return report
    return replace(report, chart=chart.name)
