"""`onguard incidents list | show ID | ack ID | note ID | resolve ID | report ID`: what the guardian saw and did,
from its database; a person's acknowledgement, notes and word that an incident is over (the guardian stops keeping
its actions in effect), each audited and told to the notification channels; the post-incident report."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from pathlib import Path

from onguard.cli.common import add_config_argument
from onguard.config import Config, load_config
from onguard.errors import ConfigError, InputError
from onguard.incidents.handling import ACKNOWLEDGED, acknowledge, add_note
from onguard.incidents.report import build_report, race_lines
from onguard.incidents.store import Incident, IncidentStatus, IncidentStore
from onguard.ops.notify import deliver_now
from onguard.ops.reporting import status_notice
from onguard.policies.model import Severity

# What the timeline shows of each entry's detail, in this order.
_SHOWN = ("block", "action", "path", "tx_hash", "nonce", "tip", "replaces", "gas_used", "error", "proposal", "owner",
          "by", "from", "to", "reason", "threat_tx", "pause_first", "pause", "threat", "outcome", "landed",
          "harm_before", "loss", "was_in_block")
_STAGES = (("decided", "decided_ms"), ("response-broadcast", "signed_ms"), ("response-broadcast", "broadcast_ms"),
           ("response-included", "included_ms"))


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("incidents", help="list and inspect incidents")
    add_config_argument(parser)
    parser.add_argument("--db", help="the state database, a SQLite file or a postgresql:// URL (default: the "
                                          "one named in the config)")
    actions = parser.add_subparsers(dest="incidents_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="most recent incidents first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=handle_list)
    show = actions.add_parser("show", help="one incident with its evidence, timeline and responses")
    show.add_argument("id", type=int)
    show.set_defaults(handler=handle_show)
    resolve = actions.add_parser(
        "resolve", help="end an incident: the guardian stops keeping its actions in effect (resolve BEFORE "
                        "unpausing, or the guardian pauses again)")
    resolve.add_argument("id", type=int)
    resolve.add_argument("--reason", required=True, help="why it is over (recorded in the audit log)")
    resolve.add_argument("--by", default=None, help="who resolves it (default: the login name)")
    resolve.set_defaults(handler=handle_resolve)
    ack = actions.add_parser("ack", help="take an incident in hand (who, why; audited; pages are acknowledged)")
    ack.add_argument("id", type=int)
    ack.add_argument("--reason", required=True, help="what you are doing about it")
    ack.add_argument("--by", default=None, help="who (default: the login name)")
    ack.set_defaults(handler=handle_ack)
    note = actions.add_parser("note", help="add a note to an incident's timeline (audited)")
    note.add_argument("id", type=int)
    note.add_argument("text", help="what was found or done")
    note.add_argument("--by", default=None, help="who (default: the login name)")
    note.set_defaults(handler=handle_note)
    report = actions.add_parser("report", help="write the post-incident report (Markdown)")
    report.add_argument("id", type=int)
    report.add_argument("--out", type=Path, default=None, help="the file to write (default: print it)")
    report.set_defaults(handler=handle_report)


def _store(args: argparse.Namespace) -> IncidentStore:
    path = args.db or load_config(args.config).state
    return IncidentStore(path)


def _config(args: argparse.Namespace) -> Config | None:
    """The config when there is one (with --db alone there may be none: nobody is notified then)."""
    if args.db and not Path(args.config).exists():
        return None
    return load_config(args.config)


def handle_list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = store.incidents(args.limit)
    if not rows:
        print("no incidents")
        return 0
    print(f"{'ID':>4}  {'OPENED (UTC)':<23}  {'BLOCK':>8}  {'SEVERITY':<8}  {'STATUS':<9}  POLICY")
    for incident in rows:
        print(f"{incident.id:>4}  {incident.opened_at[:23]:<23}  {incident.opened_block:>8}  "
              f"{incident.severity:<8}  {incident.status:<9}  {incident.policy_id}")
    return 0


def handle_show(args: argparse.Namespace) -> int:
    store = _store(args)
    incident = _incident(store, args.id)
    print(f"incident {incident.id}: {incident.title}")
    print(f"  policy    {incident.policy_id}  severity {incident.severity}  status {incident.status}"
          + ("  (dry run)" if incident.dry_run else ""))
    print(f"  opened    {incident.opened_at} at block {incident.opened_block}; "
          f"last seen at block {incident.last_seen_block}")
    print("  evidence")
    for key, value in incident.evidence.items():
        print(f"    {key}: {json.dumps(value) if not isinstance(value, str) else value}")
    timeline = store.timeline(incident.id)
    stages = [(field[:-3], first.detail[field]) for kind, field in _STAGES
              if (first := next((e for e in timeline if e.kind == kind and field in e.detail), None)) is not None]
    if stages:
        print("  stages    " + "  ".join(f"{name} {value} ms" for name, value in stages)
              + "  (from the threat's arrival)")
    for line in race_lines(timeline):
        print(f"  race      {line}")
    acked = next((e for e in timeline if e.kind == ACKNOWLEDGED), None)
    if acked is not None:
        print(f"  acked     by {acked.detail.get('by')} at {acked.at}: {acked.detail.get('reason')}")
    print("  timeline")
    for entry in timeline:
        detail = ", ".join(f"{k}={entry.detail[k]}" for k in _SHOWN if entry.detail.get(k) not in (None, "", []))
        print(f"    {entry.at}  {entry.kind:<18} {detail}")
    responses = store.responses(incident.id)
    if responses:
        print("  responses")
        for response in responses:
            print(f"    {response.action:<14} {response.status:<12} tx {response.tx_hash or '-'}"
                  f"  block {response.block_number or '-'}  gas {response.gas_used or '-'}"
                  + (f"  orphaned {response.orphaned}x" if response.orphaned else "")
                  + (f"  error: {response.error}" if response.error else ""))
            if response.outcome is not None:
                detail = response.outcome_detail or {}
                print(f"      outcome {response.outcome}: " + "; ".join(
                    f"{k} {json.dumps(detail[k]) if not isinstance(detail[k], str) else detail[k]}"
                    for k in ("landed", "pause", "harm_before", "loss", "harm_before_note", "after_pause",
                              "error") if detail.get(k) not in (None, "", [])))
    return 0


def handle_resolve(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not reason:
        raise InputError("--reason is empty", field="--reason", hint="say why the incident is over")
    store = _store(args)
    incident = _incident(store, args.id)
    if incident.status == IncidentStatus.RESOLVED:
        raise InputError(f"incident {incident.id} is already resolved", hint="`onguard incidents show ID`")
    actor = args.by or getpass.getuser()
    store.set_status(incident.id, IncidentStatus.RESOLVED, actor=actor, reason=reason)
    store.close()
    print(f"incident {incident.id} resolved by {actor}: the guardian no longer keeps its actions in effect.")
    print("  unpausing is the owners' multisig transaction (`onguard recover ID` prepares it); a new trip opens a "
          "new incident and pauses again.")
    _tell(args, incident, "resolved", by=actor, reason=reason)
    return 0


def handle_ack(args: argparse.Namespace) -> int:
    store = _store(args)
    incident = _incident(store, args.id)
    actor = args.by or getpass.getuser()
    try:
        acknowledge(store, incident, by=actor, reason=args.reason)
    finally:
        store.close()
    print(f"incident {incident.id} acknowledged by {actor}. The guardian still keeps its actions in effect until "
          "it is resolved.")
    _tell(args, incident, ACKNOWLEDGED, by=actor, reason=args.reason.strip())
    return 0


def handle_note(args: argparse.Namespace) -> int:
    store = _store(args)
    incident = _incident(store, args.id)
    actor = args.by or getpass.getuser()
    try:
        add_note(store, incident, by=actor, text=args.text)
    finally:
        store.close()
    print(f"note added to incident {incident.id} by {actor}")
    return 0


def handle_report(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        _incident(store, args.id)
        text = build_report(store, args.id)
    finally:
        store.close()
    if args.out is None:
        print(text)
        return 0
    try:
        args.out.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write {args.out}: {exc.strerror}", field="--out",
                         hint="give a writable path") from None
    print(f"report for incident {args.id} written to {args.out}")
    return 0


def _tell(args: argparse.Namespace, incident: Incident, status: str, *, by: str, reason: str) -> None:
    """Tells the channels the routes choose (PagerDuty acknowledges or resolves the page). What a person did is
    recorded whatever happens here: a channel that cannot be reached is reported, not an error."""
    config = _config(args)
    if config is None or not config.notifications.enabled:
        return
    notice = status_notice(incident.id, incident.policy_id, Severity(incident.severity), incident.title, status,
                           by=by, reason=reason, chain_id=incident.chain_id)
    try:
        told, failures = asyncio.run(deliver_now(config.notifications, notice))
    except ConfigError as exc:
        print(f"  NOT notified: {exc.message} ({exc.hint})" if exc.hint else f"  NOT notified: {exc.message}")
        return
    failed = {failure.channel: failure.reason for failure in failures}
    for channel in told:
        print(f"  {channel}: {'NOT notified: ' + failed[channel] if channel in failed else 'notified'}")


def _incident(store: IncidentStore, incident_id: int) -> Incident:
    try:
        return store.incident(incident_id)
    except LookupError:
        raise InputError(f"no incident with id {incident_id}",
                         hint="`onguard incidents list` shows the ids") from None
