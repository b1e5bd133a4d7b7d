"""`onguard replay`: plays attack scenarios on fresh forks with the guardian watching, and reports what it did."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onguard.errors import InputError, OnguardError
from onguard.log import configure_logging
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
    parser.add_argument("path", type=Path, metavar="SCENARIO|DIR", help="a scenario file, or a folder of them")
    parser.add_argument("--report", type=Path, metavar="OUT.md", help="also write the full report as Markdown")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the full report as JSON")
    parser.add_argument("--verbose", action="store_true", help="show the guardian's own log while it plays")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if not args.verbose:
        # The guardian logs every trip and response as a daemon should; here the report says it once, readably.
        configure_logging(args.log_format, "error")
    path: Path = args.path
    if path.is_dir():
        return _folder(path, args)
    scenario = load_scenario(path)
    report = replay(scenario)
    print(detail(report))
    _write(args, [report])
    return 0 if report.expectation_held else 1


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
