"""`onguard keystore new PATH`: makes the guardian's key as an encrypted keystore, so no clear key is ever on disk."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from eth_account import Account

from onguard.errors import InputError

MIN_PASSWORD_LENGTH = 12


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("keystore", help="create the guardian key as an encrypted keystore")
    actions = parser.add_subparsers(dest="keystore_command", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="generate a new key and write it encrypted to PATH")
    new.add_argument("path", type=Path)
    new.add_argument("--password-env", metavar="VAR",
                     help="read the password from this environment variable instead of prompting")
    new.set_defaults(handler=handle_new)


def handle_new(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.exists():
        raise InputError("already exists: refusing to overwrite a key", file=str(path),
                         hint="choose another path, or move the old keystore away first")
    password = _password(args.password_env)
    account = Account.create()
    keystore = Account.encrypt(account.key, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: never readable by others, not even for an instant.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(keystore, handle)
    print(f"guardian key {account.address} written to {path} (encrypted)")
    print("next: the Safe's owners register it with GuardianModule.addGuardian(address) in a multisig transaction;")
    print(f"then set guardian.keystore = \"{path}\" in onguard.toml and the password in ONGUARD_KEYSTORE_PASSWORD")
    return 0


def _password(variable: str | None) -> str:
    if variable:
        password = os.environ.get(variable)
        if not password:
            raise InputError(f"environment variable {variable} is not set", field="--password-env")
    elif sys.stdin.isatty():
        password = getpass.getpass("password for the new keystore: ")
        if getpass.getpass("again: ") != password:
            raise InputError("the two passwords differ", hint="run the command again")
    else:
        raise InputError("no terminal to ask for a password", field="--password-env",
                         hint="pass --password-env VAR with the password in that environment variable")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"the password is shorter than {MIN_PASSWORD_LENGTH} characters",
                         hint="a guardian key guards a protocol: use a long password")
    return password
