"""The post-incident report (`onguard incidents report ID --out report.md`): one Markdown document from the
database — what tripped, the evidence, the timeline, each stage's milliseconds, the race and where the pause
landed, the value at risk and lost where known, what people and the Safe's owners did, and the recovery."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxRecord, SafeTxStore, TxKind
from onguard.incidents.store import Incident, IncidentStore, ResponseRecord, TimelineEntry

# Stage → (timeline entry, field): milliseconds from the threat's arrival (the mempool path records them).
STAGES = (("decided", "decided", "decided_ms"), ("signed", "response-broadcast", "signed_ms"),
          ("broadcast", "response-broadcast", "broadcast_ms"), ("included", "response-included", "included_ms"))
_RISK_KEYS = ("value", "net_outflow", "outflow", "drained", "amount")  # the evidence's measure of what was at stake
_PEOPLE = ("acknowledged", "note", "status", "recovery-proposed")
_OWNER_AUDIT = (AuditKind.PROPOSAL, AuditKind.SIGNATURE, AuditKind.EXECUTION, AuditKind.REJECTION,
                AuditKind.RECOVERY)


def stage_milliseconds(timeline: Iterable[TimelineEntry]) -> list[tuple[str, Any]]:
    """Each stage's milliseconds from the threat's arrival, as the first entry recording it says."""
    entries = list(timeline)
    found = []
    for stage, kind, field in STAGES:
        entry = next((e for e in entries if e.kind == kind and field in e.detail), None)
        if entry is not None:
            found.append((stage, entry.detail[field]))
    return found


def race_lines(timeline: Iterable[TimelineEntry]) -> list[str]:
    """One line per race the pause ran against a pending threat: who landed first."""
    return [f"pause {'FIRST' if e.detail.get('pause_first') else 'SECOND'}: pause at {e.detail.get('pause')}, "
            f"threat {e.detail.get('threat_tx')} at {e.detail.get('threat')}"
            for e in timeline if e.kind == "race"]


def build_report(store: IncidentStore, incident_id: int) -> str:
    incident = store.incident(incident_id)
    timeline = store.timeline(incident_id)
    responses = store.responses(incident_id)
    proposals = [r for r in SafeTxStore(store.database).list(TxKind.PROPOSAL) if r.incident_id == incident_id]
    audit = [e for e in AuditLog(store.database).entries() if e.details.get("incident_id") == incident_id
             or (e.kind in _OWNER_AUDIT and e.details.get("proposal") in {p.id for p in proposals})]
    parts = [
        f"# Incident {incident.id}: {incident.title}\n",
        _summary(incident),
        "## Evidence\n\n```json\n" + json.dumps(dict(incident.evidence), indent=2, default=str, sort_keys=True)
        + "\n```\n",
        _response_section(responses, timeline),
        _value_section(incident, responses),
        _timeline_section(timeline),
        _people_section(timeline, audit),
        _recovery_section(proposals, timeline),
    ]
    return "\n".join(parts)


def _summary(incident: Incident) -> str:
    rows = [("Policy", incident.policy_id), ("Severity", incident.severity), ("Status", str(incident.status)),
            ("Chain", str(incident.chain_id)), ("Opened", f"{incident.opened_at} (block {incident.opened_block})"),
            ("Last seen", f"block {incident.last_seen_block}"), ("Dry run", "yes" if incident.dry_run else "no")]
    return _table(("", ""), rows)


def _response_section(responses: list[ResponseRecord], timeline: list[TimelineEntry]) -> str:
    lines = ["## Response\n"]
    if not responses:
        lines.append("No action was taken (alert-only or dry-run policy).\n")
    else:
        lines.append(_table(("action", "status", "transaction", "block", "gas", "outcome"), [
            (r.action, str(r.status), r.tx_hash or "-", str(r.block_number or "-"), str(r.gas_used or "-"),
             str(r.outcome or "-")) for r in responses]))
        for r in responses:
            if r.outcome_detail:
                landed = ", ".join(f"{k}: {_text(v)}" for k, v in r.outcome_detail.items()
                                   if v not in (None, "", []))
                lines.append(f"- **{r.action}** landed: {landed}")
        lines.append("")
    stages = stage_milliseconds(timeline)
    lines.append("### Stages (milliseconds from the threat's arrival)\n")
    lines.append(_table(("stage", "ms"), [(name, str(ms)) for name, ms in stages]) if stages else
                 "Not recorded: the trip came from a mined block, not a pending transaction.\n")
    races = race_lines(timeline)
    lines.append("### Race\n")
    lines.append("\n".join(f"- {line}" for line in races) + "\n" if races else
                 "No pending threat was raced (block path).\n")
    return "\n".join(lines)


def _value_section(incident: Incident, responses: list[ResponseRecord]) -> str:
    at_risk = next((incident.evidence[k] for k in _RISK_KEYS if k in incident.evidence), None)
    lost = [(r.action, r.outcome_detail["loss"]) for r in responses if r.outcome_detail and "loss" in r.outcome_detail]
    stopped = [r.action for r in responses if r.outcome_detail
               and r.outcome_detail.get("landed") == "stopped-before-attack"]
    risk = _text(at_risk) if at_risk is not None else "not known"
    lines = ["## Value at risk and lost\n", f"- At risk (the policy's measure when it tripped): {risk}"]
    if lost:
        lines += [f"- Lost before {action} landed: {_text(amount)}" for action, amount in lost]
    elif stopped:
        lines.append("- Lost: nothing — the pause landed before any harmful transaction")
    else:
        lines.append("- Lost: not known from the chain")
    return "\n".join(lines) + "\n"


def _timeline_section(timeline: list[TimelineEntry]) -> str:
    return "## Timeline (UTC)\n\n" + _table(("at", "what", "detail"), [
        (e.at, e.kind, "; ".join(f"{k}={_text(v)}" for k, v in e.detail.items() if v not in (None, "", [])))
        for e in timeline])


def _people_section(timeline: list[TimelineEntry], audit: list[Any]) -> str:
    people = [(e.at, e.kind, str(e.detail.get("by", "-")), _what(e.detail))
              for e in timeline if e.kind in _PEOPLE and e.detail.get("by") not in (None, "daemon")]
    owners = [(e.at, e.kind, e.actor, _owner_detail(e.details)) for e in audit if e.kind in _OWNER_AUDIT]
    lines = ["## What people and the signers did\n"]
    lines.append(_table(("at", "what", "who", "why / what"), people) if people else "Nobody acted on it yet.\n")
    lines.append("### The Safe's owners\n")
    lines.append(_table(("at", "what", "who", "detail"), owners) if owners else
                 "No proposal, signature or execution linked to this incident.\n")
    return "\n".join(lines)


def _what(detail: Mapping[str, Any]) -> str:
    if "proposal" in detail:
        return f"proposal {detail['proposal']}: " + "; ".join(map(str, detail.get("calls", [])))
    return str(detail.get("reason") or detail.get("to") or "")


def _owner_detail(details: Mapping[str, Any]) -> str:
    keys = ("proposal", "purpose", "safe_tx_hash", "owner", "tx_hash", "reason")
    return "; ".join(f"{k}={_text(details[k])}" for k in keys if details.get(k) not in (None, ""))


def _recovery_section(proposals: list[SafeTxRecord], timeline: list[TimelineEntry]) -> str:
    lines = ["## Recovery\n"]
    if not proposals:
        lines.append("No recovery proposal yet: `onguard recover ID` prepares one.\n")
    for p in proposals:
        lines.append(f"- Proposal {p.id} ({p.purpose}): Safe tx {p.safe_tx_hash} at nonce {p.tx.nonce}, "
                     f"status **{p.status}**, {len(p.signatures)} signature(s)"
                     + (f", executed in {p.tx_hash} (block {p.block_number})" if p.tx_hash else ""))
    checklist = [e for e in timeline if e.kind == "recovery-checklist"]
    for entry in checklist:
        lines.append(f"- Checklist confirmed by {entry.detail.get('by')} at {entry.at}:")
        lines += [f"  - [x] {item}: {answer}" for item, answer in dict(entry.detail.get("items", {})).items()]
    return "\n".join(lines) + "\n"


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
