"""Turns replay reports into what people read: one scenario in detail (trips, pauses and where they landed,
traces with revert reasons, balance changes), a corpus table narrow enough for a 120-column terminal with its
figures, Markdown (linking each scenario's chart) and JSON (with the versions and fork it ran on)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from onguard import __version__
from onguard.replay.evidence import TxTrace, amount
from onguard.replay.runner import NO_TRIP, STOPPED, STOPPED_BEFORE, ReplayReport

TRACE_LINES = 25  # calls of one transaction shown in the detail (the JSON has them all, up to MAX_CALLS)


@dataclass(frozen=True, slots=True)
class CorpusFigures:
    attacks: int
    stopped_before_inclusion: int
    caught_after_inclusion: int
    missed: int                    # attacks not stopped (no trip, no response mined, or the replay failed)
    benign: int
    false_alarms: int              # benign scenarios that tripped a policy (or could not be replayed)
    errors: int
    expectations_held: int
    scenarios: int
    median_lead_ms: float | None   # first visible -> first response sent, over attacks with a response
    worst_lead_ms: float | None
    at_risk_usd: float
    saved_usd: float
    lost_usd: float


def figures(reports: Sequence[ReplayReport]) -> CorpusFigures:
    attacks = [r for r in reports if not r.benign]
    benign = [r for r in reports if r.benign]
    leads = [r.lead_ms for r in attacks if r.lead_ms is not None]
    return CorpusFigures(
        attacks=len(attacks),
        stopped_before_inclusion=sum(r.outcome == STOPPED_BEFORE for r in attacks),
        caught_after_inclusion=sum(r.outcome == STOPPED for r in attacks),
        missed=sum(r.outcome not in (STOPPED_BEFORE, STOPPED) for r in attacks),
        benign=len(benign), false_alarms=sum(r.outcome != NO_TRIP for r in benign),
        errors=sum(r.error is not None for r in reports), expectations_held=sum(r.expectation_held for r in reports),
        scenarios=len(reports),
        median_lead_ms=round(statistics.median(leads), 1) if leads else None,
        worst_lead_ms=round(max(leads), 1) if leads else None,
        at_risk_usd=round(sum(r.at_risk_usd for r in attacks), 2),
        saved_usd=round(sum(r.saved_usd for r in attacks), 2),
        lost_usd=round(sum(r.lost_usd for r in attacks), 2))


def usd(value: float) -> str:
    return f"${value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _first_trip(report: ReplayReport) -> str:
    if not report.trips:
        return "-"
    trip = report.trips[0]
    # A negative offset: the trip came while the attack was still pending, before its block was mined.
    where = "pending" if trip.block_offset < 0 else f"block +{trip.block_offset}"
    if trip.step is not None and trip.path == "mempool":
        # Named by the step it judged: a later step of a staged attack may be pending while earlier ones are mined.
        where = f"pending {trip.step}, block +{trip.step_block}"
    return f"{trip.policy_id} ({trip.path}, {where})"


def row(report: ReplayReport) -> list[str]:
    value = "-" if report.benign else f"{usd(report.saved_usd)} of {usd(report.at_risk_usd)}"
    return [report.scenario, "benign" if report.benign else "attack", report.expect,
            report.outcome if report.error is None else "error", "yes" if report.expectation_held else "NO",
            _first_trip(report), _ms(report.lead_ms), value, f"{report.gas_used:,}" if report.gas_used else "-"]


HEADERS = ["scenario", "kind", "expected", "outcome", "held", "first trip", "lead", "saved of at risk", "gas"]
# The terminal's table: the widest a cell may be, per column (details are in the report).
NARROW = [("scenario", 26), ("outcome", 24), ("held", 4), ("first trip", 36), ("lead", 8), ("saved/risk", 11)]


def narrow_row(report: ReplayReport) -> list[str]:
    trip = "-"
    if report.trips:
        first = report.trips[0]
        # "@attack[1]": on that step while it was pending; "@block+10": on a mined block, 10 after the first attack's
        where = first.step if first.step is not None and first.path == "mempool" else (
            "pending" if first.block_offset < 0 else f"block+{first.block_offset}")
        trip = f"{first.policy_id} @{where}"
    value = "benign" if report.benign else f"{_k(report.saved_usd)}/{_k(report.at_risk_usd)}"
    outcome = report.outcome if report.error is None else "error"
    lead = report.lead_ms
    short_lead = "-" if lead is None else f"{lead:.1f} ms" if lead < 1000 else f"{lead / 1000:.1f} s"
    return [report.scenario, outcome, "yes" if report.expectation_held else "NO", trip, short_lead, value]


def _k(value: float) -> str:
    if value >= 999_500:
        return f"${value / 1_000_000:,.1f}M"
    return f"${value / 1000:,.0f}k" if value >= 1000 else f"${value:,.0f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def table(reports: Sequence[ReplayReport]) -> str:
    """At most 120 columns: long names are cut with "…" (the Markdown and JSON reports have them whole)."""
    rows = [[h for h, _ in NARROW], *([_cut(c, w) for c, (_, w) in zip(narrow_row(r), NARROW, strict=True)]
                                      for r in reports)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(NARROW))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def figure_lines(f: CorpusFigures) -> list[str]:
    share = f"{f.saved_usd / f.at_risk_usd:.0%}" if f.at_risk_usd else "-"
    return [
        (f"attacks        {f.attacks}: {f.stopped_before_inclusion} stopped before inclusion, "
        f"{f.caught_after_inclusion} caught after inclusion, {f.missed} missed"),
        f"benign         {f.benign}: {f.false_alarms} false alarm(s)",
        (f"lead time      median {_ms(f.median_lead_ms)}, worst {_ms(f.worst_lead_ms)} "
        "(attack first visible -> response sent)"),
        (f"value          {usd(f.saved_usd)} saved of {usd(f.at_risk_usd)} at risk ({share}); "
        f"{usd(f.lost_usd)} lost"),
        f"expectations   {f.expectations_held} of {f.scenarios} held" + (f"; {f.errors} error(s)" if f.errors else ""),
    ]


def detail(report: ReplayReport) -> str:
    lines = [f"scenario     {report.scenario} ({report.file})"]
    if report.modelled_on:
        lines.append(f"modelled on  {report.modelled_on}")
    if report.error:
        lines += [f"error        {report.error}", "expectation  NOT held (the scenario could not be replayed)"]
        return "\n".join(lines)
    for trip in report.trips:
        when = (f"while the attack was pending (block {trip.block})" if trip.block_offset < 0
                else f"at block {trip.block} (attack block +{trip.block_offset})")
        if trip.step is not None and trip.path == "mempool":
            call = next((t.call for t in report.attack_txs if t.step == trip.step), "")
            when = f"on {trip.step} {call} while it was pending (attack block +{trip.step_block}, head {trip.block})"
        lines.append(f"tripped      {trip.policy_id} ({trip.severity}) {when}, on the {trip.path} path, "
                     f"{_ms(trip.detected_ms)} after the attack was first visible")
    if not report.trips:
        lines.append("tripped      nothing")
    lines.append("built in     " + (", ".join(report.built_in_policies) or "none (self-defence turned off)"))
    for response in report.responses:
        gas = f", gas {response.gas_used:,}" if response.gas_used else ""
        why = f" ({response.error})" if response.error else ""
        lines.append(f"response     {response.action}: {response.status}{why}{gas}, sent {_ms(response.sent_ms)} "
                     f"after the attack was first visible; {response.landed}")
    attempts = len(report.attack_txs)
    succeeded = sum(t.succeeded for t in report.attack_txs)
    lines.append(f"transactions {attempts} of the scenario: {succeeded} succeeded, {attempts - succeeded} reverted")
    if report.rebuilt_blocks:
        lines.append(f"rebuilt      blocks {report.rebuilt_blocks[0]}..{report.rebuilt_blocks[-1]} of the fork source, "
                     f"with {report.rebuilt_txs} of their transactions besides the scenario's")
    for tx in report.attack_txs:
        if tx.original_block is not None:
            lines.append(f"replayed     {tx.step} {tx.call} at block {tx.block} position {tx.position}; the fork "
                         f"source mined it at block {tx.original_block} position {tx.original_position}")
    if not report.benign:
        lines.append(f"value        at risk {usd(report.at_risk_usd)} (what the attack takes unopposed); lost "
                     f"{usd(report.lost_usd)}; saved {usd(report.saved_usd)}")
    for change in report.balances:
        lines.append(f"balance      {change.holder} {change.token}: {amount(change.before, change.decimals)} -> "
                     f"{amount(change.after, change.decimals)} ({'+' if change.change > 0 else ''}"
                     f"{amount(change.change, change.decimals)})")
    for traced in report.traces:
        lines += trace_lines(traced)
    lines.append(f"outcome      {report.outcome}; expected {report.expect}: "
                 f"{'held' if report.expectation_held else 'NOT held'}")
    if report.chart:
        lines.append(f"chart        {report.chart}")
    return "\n".join(lines)


def trace_lines(traced: TxTrace) -> list[str]:
    verdict = "succeeded" if traced.succeeded else f"REVERTED: {traced.revert_reason}"
    lines = [f"trace        {traced.label}: {traced.tx_hash} block {traced.block} position {traced.position}, "
             f"{verdict}"]
    for call in traced.calls[:TRACE_LINES]:
        value = f" value {call.value}" if call.value else ""
        error = f"  -> reverted: {call.error}" if call.error else ""
        lines.append(f"               {'  ' * call.depth}{call.kind} {call.target}.{call.function}{value}{error}")
    if len(traced.calls) > TRACE_LINES:
        lines.append(f"               … {len(traced.calls) - TRACE_LINES} more calls (in the JSON report)")
    return lines


def markdown(reports: Sequence[ReplayReport]) -> str:
    f = figures(reports)
    out = ["# onguard replay report", "", "| " + " | ".join(HEADERS) + " |",
           "|" + "|".join("---" for _ in HEADERS) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row(r)) + " |" for r in reports]
    out += ["", "```", *figure_lines(f), "```", "", "## Scenarios", ""]
    for report in reports:
        out += [f"### {report.scenario}", ""]
        if report.chart:
            out += [f"![holdings of {report.scenario} over blocks]({report.chart})", ""]
        out += ["```", detail(report), "```", ""]
    return "\n".join(out)


def as_json(reports: Sequence[ReplayReport]) -> str:
    data: dict[str, Any] = {"onguard": __version__, "figures": asdict(figures(reports)),
                            "scenarios": [r.to_dict() for r in reports]}
    return json.dumps(data, indent=2, default=str)
