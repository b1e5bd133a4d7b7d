"""`onguard audit verify | export FILE`: checks the hash chain of the audit log and hands it to others."""

from __future__ import annotations

import argparse
from pathlib import Path

from onguard.config import load_config
from onguard.incidents.audit import AuditLog, read_export, verify_entries
from onguard.incidents.store import IncidentStore


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("audit", help="verify or export the hash-chained audit log")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.add_argument("--db", help="the state database (default: the one named in the config)")
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check every entry's hash and link; exit 1 at the first broken one")
    verify.add_argument("--file", type=Path, help="verify an exported file (JSON lines) instead of the database")
    verify.set_defaults(handler=handle_verify)
    export = actions.add_parser("export", help="write the log as JSON lines that anyone can verify")
    export.add_argument("file", type=Path)
    export.set_defaults(handler=handle_export)


def _store(args: argparse.Namespace) -> IncidentStore:
    return IncidentStore(args.db or load_config(args.config).database)


def handle_verify(args: argparse.Namespace) -> int:
    if args.file is not None:
        count, broken = verify_entries(read_export(args.file))
        where = str(args.file)
    else:
        store = _store(args)
        try:
            count, broken = AuditLog(store).verify()
        finally:
            store.close()
        where = str(store.path)
    if broken is not None:
        print(f"BROKEN at entry {broken.seq}: {broken.reason} ({where})")
        print("entries from this one on cannot be trusted; the ones before it are intact")
        return 1
    print(f"intact: {count} entries, every hash and link verified ({where})")
    return 0


def handle_export(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        count = AuditLog(store).export(args.file)
    finally:
        store.close()
    print(f"{count} entries written to {args.file}; check them with `onguard audit verify --file {args.file}`")
    return 0
