"""`onguard audit verify | export FILE`: checks the hash chain of the audit log and hands it to others."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from onguard.cli.common import add_config_argument
from onguard.config import load_config
from onguard.errors import InputError
from onguard.store.audit import AuditLog, Break, contains_head, read_export, verify_entries
from onguard.incidents.store import IncidentStore

_HASH = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("audit", help="verify or export the hash-chained audit log")
    add_config_argument(parser)
    parser.add_argument("--db", help="the state database, a SQLite file or a postgresql:// URL (default: the "
                                          "one named in the config)")
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check every entry's hash and link, and that the log reaches its "
                                               "head; exit 1 at the first break")
    verify.add_argument("--file", type=Path, help="verify an exported file (JSON lines) instead of the database")
    verify.add_argument("--head", metavar="HASH", help="a head hash printed by `onguard audit export` and kept apart: "
                                                       "the log must still hold that entry (a file or database cut "
                                                       "short, head record and all, is caught)")
    verify.set_defaults(handler=handle_verify)
    export = actions.add_parser("export", help="write the log as JSON lines that anyone can verify; prints the head "
                                               "hash to keep apart from the file")
    export.add_argument("file", type=Path)
    export.set_defaults(handler=handle_export)


def _store(args: argparse.Namespace) -> IncidentStore:
    return IncidentStore(args.db or load_config(args.config).state)


def handle_verify(args: argparse.Namespace) -> int:
    head = _head_hash(args.head) if args.head is not None else None
    if args.file is None:
        return _verify_database(args, head)
    entries = read_export(args.file)
    count, broken = verify_entries(entries)
    if broken is None and head is not None:
        broken = contains_head(entries, head)
    if broken is not None:
        return _broken(broken, str(args.file))
    if head is None:
        print(f"intact: {count} entries, every hash and link verified ({args.file})")
        print("not checked: whether entries were cut off the end; pass --head HASH (printed by `onguard audit "
              "export`) to check that too")
    else:
        at = next(e.seq for e in entries if e.hash == head)
        newer = f"; {count - at} newer entries after it" if count > at else ""
        print(f"intact: {count} entries, every hash and link verified, head {head[:16]}… is entry {at}{newer} "
              f"({args.file})")
    return 0


def _verify_database(args: argparse.Namespace, head: str | None) -> int:
    """The database against its own head record and, given one, a head handed out earlier: someone able to
    rewrite the file can rewrite its head record too, but not the hash you kept elsewhere."""
    store = _store(args)
    try:
        audit = AuditLog(store.database)
        count, broken = audit.verify()
        if broken is None and head is not None:
            broken = contains_head(audit.entries(), head)
    finally:
        store.close()
    if broken is not None:
        return _broken(broken, str(store.name))
    print(f"intact: {count} entries, every hash and link verified, the last one is the recorded head "
          f"({store.name})" + (f"; it holds the given head {head[:16]}…" if head else ""))
    return 0


def _broken(broken: Break, where: str) -> int:
    print(f"BROKEN at entry {broken.seq}: {broken.reason} ({where})")
    print("entries from this one on cannot be trusted; the ones before it are intact")
    return 1


def _head_hash(value: str) -> str:
    if not _HASH.match(value.strip()):
        raise InputError(f"{value!r} is not a head hash", field="--head",
                         hint="64 hex digits, as printed by `onguard audit export`")
    return value.strip().lower().removeprefix("0x")


def handle_export(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        audit = AuditLog(store.database)
        count, last = audit.export(args.file)
        recorded = audit.head()
    finally:
        store.close()
    print(f"{count} entries written to {args.file}")
    print(f"head: entry {last.seq} {last.hash}")
    print(f"keep the head apart from the file; check both with "
          f"`onguard audit verify --file {args.file} --head {last.hash}`")
    if recorded != last:
        print(f"warning: the database's log does not end at its recorded head "
              f"({f'entry {recorded.seq}' if recorded else 'deleted'}): run `onguard audit verify`", file=sys.stderr)
        return 1
    return 0
