"""Turns replay reports into what people read: one scenario in detail, a corpus table with its figures, Markdown
and JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from onguard.replay.runner import NO_TRIP, STOPPED, STOPPED_BEFORE, ReplayReport


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


def table(reports: Sequence[ReplayReport]) -> str:
    rows = [HEADERS, *(row(r) for r in reports)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
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
    for response in report.responses:
        gas = f", gas {response.gas_used:,}" if response.gas_used else ""
        lines.append(f"response     {response.action}: {response.status}{gas}, sent {_ms(response.sent_ms)} after "
                     f"the attack was first visible; {response.landed}")
    attempts = len(report.attack_txs)
    succeeded = sum(t.succeeded for t in report.attack_txs)
    lines.append(f"transactions {attempts} of the scenario: {succeeded} succeeded, {attempts - succeeded} reverted")
    if not report.benign:
        lines.append(f"value        at risk {usd(report.at_risk_usd)} (what the attack takes unopposed); lost "
                     f"{usd(report.lost_usd)}; saved {usd(report.saved_usd)}")
    lines.append(f"outcome      {report.outcome}; expected {report.expect}: "
                 f"{'held' if report.expectation_held else 'NOT held'}")
    return "\n".join(lines)


def markdown(reports: Sequence[ReplayReport]) -> str:
    f = figures(reports)
    out = ["# onguard replay report", "", "| " + " | ".join(HEADERS) + " |",
           "|" + "|".join("---" for _ in HEADERS) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row(r)) + " |" for r in reports]
    out += ["", "```", *figure_lines(f), "```", "", "## Scenarios", ""]
    for report in reports:
        out += ["```", detail(report), "```", ""]
    return "\n".join(out)


def as_json(reports: Sequence[ReplayReport]) -> str:
    data: dict[str, Any] = {"figures": asdict(figures(reports)), "scenarios": [r.to_dict() for r in reports]}
    return json.dumps(data, indent=2, default=str)
