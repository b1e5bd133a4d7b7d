"""What signers' commands share: loading a signer's key (never logged, never on disk in clear), showing exactly
what is signed, and asking before signing."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from onguard.chain.abi import ContractAbi
from onguard.chain.module import module_abi, safe_abi
from onguard.config import Config
from onguard.errors import ConfigError, KeyLoadError
from onguard.incidents.safetxs import SafeTxRecord
from onguard.safe.chain import SafeOnChain, SafeState
from onguard.safe.tx import BatchCall, SafeTxData


def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keystore", type=Path, help="the signer's encrypted keystore (prompted when omitted)")
    parser.add_argument("--password-env", metavar="VAR",
                        help="environment variable holding the keystore password (prompted when omitted)")
    parser.add_argument("--key-env", metavar="VAR", help="environment variable holding the signer's private key")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def load_signer(args: argparse.Namespace) -> LocalAccount:
    if args.key_env:
        value = os.environ.get(args.key_env)
        if not value:
            raise KeyLoadError(f"environment variable {args.key_env} is not set", field="--key-env")
        try:
            return Account.from_key(value.strip())
        except Exception:
            # Never echo it: it is, or is close to, a private key.
            raise KeyLoadError(f"environment variable {args.key_env} does not hold a valid private key",
                               field="--key-env", hint="expected 0x followed by 64 hex digits") from None
    path = args.keystore
    if path is None:
        if not sys.stdin.isatty():
            raise KeyLoadError("no key given", field="--keystore",
                               hint="pass --keystore PATH (password in --password-env VAR) or --key-env VAR")
        path = Path(input("signer keystore file: ").strip())
    try:
        keystore = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KeyLoadError("keystore file not found", file=str(path), field="--keystore") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        raise KeyLoadError("not a JSON keystore file", file=str(path), field="--keystore") from None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise KeyLoadError(f"environment variable {args.password_env} is not set", field="--password-env")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {path}: ")
    else:
        raise KeyLoadError("no terminal to ask for the keystore password", field="--password-env",
                           hint="pass --password-env VAR with the password in that environment variable")
    try:
        return Account.from_key(Account.decrypt(keystore, password))
    except (ValueError, KeyError, TypeError):
        raise KeyLoadError("could not decrypt the keystore: wrong password or damaged file", file=str(path),
                           field="--keystore") from None


def connect(config: Config) -> SafeOnChain:
    safe = SafeOnChain(config.chain.rpc_url, config.safe.address)
    actual = safe.chain_id()
    if actual != config.chain.chain_id:
        raise ConfigError(f"the node is on chain {actual}, the config says {config.chain.chain_id}",
                          file=str(config.path), field="chain.chain_id")
    return safe


def describe_call(config: Config, tx: SafeTxData) -> list[str]:
    """The call decoded with the configured ABIs (and the Safe's and the module's): target's name, function,
    named arguments; each call of a MultiSend batch in order; a DELEGATECALL anywhere else flagged loudly."""
    calls = tx.calls
    if not calls:
        return [f"  to           {tx.to} (not a known MultiSendCallOnly)",
                "  operation    DELEGATECALL (!): the code at that address runs with the Safe's full authority "
                "(owners, modules, funds); do not sign unless you know exactly what it is",
                f"  data         0x{tx.data.hex()} (not decoded)"]
    if not tx.is_batch:
        return [*_describe_one(config, calls[0], "  "), f"  value        {tx.value} wei"]
    lines = [f"  batch        {len(calls)} calls, in order, all or none: DELEGATECALL to Safe's MultiSendCallOnly "
             f"{tx.to}, which CALLs each target from the Safe"]
    for number, call in enumerate(calls, 1):
        lines.append(f"  call {number}/{len(calls)}")
        lines.extend(_describe_one(config, call, "    "))
        if call.value:
            lines.append(f"    value        {call.value} wei")
    return lines


def _describe_one(config: Config, call: BatchCall, indent: str) -> list[str]:
    name, abi = _known_contract(config, call.to)
    lines = [f"{indent}to           {call.to}" + (f" ({name})" if name else " (not a configured contract)")]
    decoded = abi.decode_call(call.data) if abi else None
    if decoded is None:
        lines.append(f"{indent}data         0x{call.data.hex()} (not decoded)")
    else:
        function, values = decoded
        lines.append(f"{indent}call         {function.name}({', '.join(f'{k}={v}' for k, v in values.items())})")
    return lines


def _known_contract(config: Config, address: str) -> tuple[str | None, ContractAbi | None]:
    """The name and ABI of a configured contract, the Safe itself or the guardian module."""
    target = config.contract_at(address)
    if target is not None:
        return target.name, target.abi
    if address.lower() == config.safe.address.lower():
        return "the Safe", safe_abi()
    if config.safe.guardian_module and address.lower() == config.safe.guardian_module.lower():
        try:
            return "the guardian module", module_abi()
        except ConfigError:
            return "the guardian module", None
    return None, None


def describe(config: Config, tx: SafeTxData, state: SafeState, record: SafeTxRecord | None = None) -> list[str]:
    lines = [f"  Safe         {tx.safe} on chain {tx.chain_id}, {state.threshold} of {len(state.owners)} owners",
             *describe_call(config, tx),
             f"  nonce        {tx.nonce} (the Safe is at {state.nonce})"
             + ("   USED: this nonce is spent" if tx.nonce < state.nonce else ""),
             f"  Safe tx hash {tx.safe_tx_hash_hex}   <- compare it on your signing device"]
    if record is not None:
        signers = ", ".join(f"{s.owner} ({s.kind})" for s in record.signatures) or "none"
        lines.append(f"  signatures   {len(record.signatures)} of {state.threshold}: {signers}")
    return lines


def confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise KeyLoadError("no terminal to confirm on", field="--yes",
                           hint="review the summary above, then run again with --yes")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise KeyLoadError("not confirmed: nothing signed")
