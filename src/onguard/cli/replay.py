"""`onguard replay`: plays attack scenarios on fresh forks with the guardian watching, and reports what it did."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from onguard.chain.rpc import Rpc
from onguard.cli.common import add_config_argument
from onguard.config import Config, load_config
from onguard.errors import InputError, OnguardError
from onguard.log import configure_logging
from onguard.policies.loader import load_policies
from onguard.replay.recording import record
from onguard.replay.report import (
    as_json,
    detail,
    figure_lines,
    figures,
    markdown,
    table,
)
from onguard.replay.runner import ReplayReport, failed_report, replay
from onguard.replay.scenario import Scenario, load_scenario, scenario_files


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "replay", help="replay attack scenarios on a fork: would the guardian have stopped them?",
        description="Plays a scenario file (or every *.toml of a folder) on a fresh Anvil fork with the guardian "
                    "running in-process, and reports what tripped, when, what was sent and what it saved. "
                    "Exit 0 when every expectation holds, 1 when one does not, 2 on a bad scenario file.")
    parser.add_argument("path", type=Path, nargs="?", metavar="SCENARIO|DIR",
                        help="a scenario file, or a folder of them")
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
    if args.path is None:
        raise InputError("which scenario?", field="SCENARIO|DIR", hint="give a scenario file or a folder of them, "
                                                                        "or --record OUT.jsonl to record a chain")
    path: Path = args.path
    if path.is_dir():
        return _folder(path, args)
    scenario = load_scenario(path)
    report = replay(scenario)
    print(detail(report))
    _write(args, [report])
    return 0 if report.expectation_held else 1


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
    for index, scenario in enumerate(scenarios, start=1):
        print(f"[{index}/{len(scenarios)}] {scenario.path.name}: {scenario.name} ...", file=sys.stderr, flush=True)
        try:
            report = replay(scenario)
        except OnguardError as exc:  # one scenario's failure (unreachable fork, a setup revert) is its row
            report = failed_report(scenario, scenario.path, exc)
        reports.append(report)
        verdict = "held" if report.expectation_held else "NOT held"
        print(f"[{index}/{len(scenarios)}] {scenario.path.name}: {report.outcome}, expectation {verdict}"
              + (f" ({report.error})" if report.error else ""), file=sys.stderr, flush=True)
    print(table(reports))
    print()
    print("\n".join(figure_lines(figures(reports))))
    _write(args, reports)
    return 0 if all(r.expectation_held for r in reports) else 1


def _write(args: argparse.Namespace, reports: list[ReplayReport]) -> None:
    if args.report:
        args.report.write_text(markdown(reports))
    if args.json:
        args.json.write_text(as_json(reports))
