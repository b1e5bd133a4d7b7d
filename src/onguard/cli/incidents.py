"""`onguard incidents list | show ID | resolve ID`: what the guardian saw and did, from its database, and the
human's word that an incident is over (the guardian stops keeping its actions in effect)."""

from __future__ import annotations

import argparse
import getpass
import json

from onguard.cli.common import add_config_argument
from onguard.config import load_config
from onguard.errors import InputError
from onguard.incidents.store import Incident, IncidentStatus, IncidentStore

# What the timeline shows of each entry's detail, in this order.
_SHOWN = ("block", "action", "path", "tx_hash", "nonce", "tip", "replaces", "gas_used", "error", "proposal", "owner",
          "by", "from", "to", "reason", "threat_tx", "pause_first", "pause", "threat", "outcome", "landed",
          "harm_before", "loss", "was_in_block")
_STAGES = (("decided", "decided_ms"), ("response-broadcast", "signed_ms"), ("response-broadcast", "broadcast_ms"),
           ("response-included", "included_ms"))


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("incidents", help="list and inspect incidents")
    add_config_argument(parser)
    parser.add_argument("--db", help="the state database (default: the one named in the config)")
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


def _store(args: argparse.Namespace) -> IncidentStore:
    path = args.db or load_config(args.config).database
    return IncidentStore(path)


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
    print("  unpausing is the owners' multisig transaction; a new trip opens a new incident and pauses again.")
    return 0


def _incident(store: IncidentStore, incident_id: int) -> Incident:
    try:
        return store.incident(incident_id)
    except LookupError:
        raise InputError(f"no incident with id {incident_id}",
                         hint="`onguard incidents list` shows the ids") from None
