"""`onguard incidents list | show ID`: what the guardian saw and did, from its database."""

from __future__ import annotations

import argparse
import json

from onguard.cli.common import add_config_argument
from onguard.config import load_config
from onguard.errors import InputError
from onguard.incidents.store import IncidentStore


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
    try:
        incident = store.incident(args.id)
    except LookupError:
        raise InputError(f"no incident with id {args.id}", hint="`onguard incidents list` shows the ids") from None
    print(f"incident {incident.id}: {incident.title}")
    print(f"  policy    {incident.policy_id}  severity {incident.severity}  status {incident.status}"
          + ("  (dry run)" if incident.dry_run else ""))
    print(f"  opened    {incident.opened_at} at block {incident.opened_block}; "
          f"last seen at block {incident.last_seen_block}")
    print("  evidence")
    for key, value in incident.evidence.items():
        print(f"    {key}: {json.dumps(value) if not isinstance(value, str) else value}")
    print("  timeline")
    for entry in store.timeline(incident.id):
        detail = ", ".join(f"{k}={v}" for k, v in entry.detail.items() if k in ("block", "action", "tx_hash",
                                                                               "gas_used", "error", "proposal",
                                                                               "owner", "by"))
        print(f"    {entry.at}  {entry.kind:<18} {detail}")
    responses = store.responses(incident.id)
    if responses:
        print("  responses")
        for response in responses:
            print(f"    {response.action:<14} {response.status:<12} tx {response.tx_hash or '-'}"
                  f"  block {response.block_number or '-'}  gas {response.gas_used or '-'}"
                  + (f"  error: {response.error}" if response.error else ""))
    return 0
