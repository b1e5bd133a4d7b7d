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
from onguard.errors import ConfigError, InputError, KeyLoadError
from onguard.store.safetxs import SafeTxRecord, SafeTxStore, TxKind
from onguard.safe.chain import SafeOnChain, SafeState
from onguard.safe.ladder import Ladder, build_ladders
from onguard.safe.tx import BatchCall, OwnerSignature, SafeTxData, SignatureKind, external_signature


def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keystore", type=Path, help="the signer's encrypted keystore (prompted when omitted)")
    parser.add_argument("--password-env", metavar="VAR",
                        help="environment variable holding the keystore password (prompted when omitted)")
    parser.add_argument("--key-env", metavar="VAR", help="environment variable holding the signer's private key")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def add_external_signature_arguments(parser: argparse.ArgumentParser) -> None:
    """A signature made elsewhere (hardware wallet through `cast wallet sign --ledger`, Safe{Wallet}, another
    machine), and the typed data to make it from."""
    parser.add_argument("--typed-data", action="store_true",
                        help="print the EIP-712 typed data (JSON, for `cast wallet sign --data` or a hardware "
                             "wallet) and stop: nothing is signed or stored")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--signature", metavar="0x…", help="an owner's signature made elsewhere over the printed "
                                                          "typed data (EIP-712, or eth_sign with v+4)")
    given.add_argument("--signature-file", metavar="FILE", type=Path,
                       help="a file holding such a signature (0x… hex, as `cast wallet sign` prints it)")


def given_signature(args: argparse.Namespace) -> tuple[str, str] | None:
    """(hex, field) of a signature made elsewhere, or None when a key signs here."""
    if args.signature:
        return args.signature.strip(), "--signature"
    if args.signature_file:
        try:
            return args.signature_file.read_text().strip(), f"{args.signature_file}: --signature-file"
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the signature file: {exc.strerror if isinstance(exc, OSError) else exc}",
                             file=str(args.signature_file), field="--signature-file") from None
    return None


def accept_signature(tx: SafeTxData, given: tuple[str, str], state: SafeState) -> OwnerSignature:
    """A signature made elsewhere, checked before it is stored: it must recover, over this very transaction, to an
    owner of the Safe (one made for another nonce, chain or content recovers to a stranger)."""
    text, field = given
    signature = external_signature(tx, text, field)
    if not state.is_owner(signature.owner) and signature.kind == SignatureKind.EOA:
        # `cast wallet sign HASH`, a wallet's personal_sign: the hash signed as a message, v left at 27/28. The Safe
        # takes that as eth_sign with v + 4; accepted only if it then recovers to an owner.
        as_eth_sign = external_signature(tx, signature.signature[:64] + bytes([signature.signature[64] + 4]), field)
        if state.is_owner(as_eth_sign.owner):
            print("  note         a signature of the hash as a message (eth_sign): stored with v + 4, as the Safe "
                  "reads it")
            signature = as_eth_sign
    if not state.is_owner(signature.owner):
        raise InputError(f"the signature recovers to {signature.owner}, not an owner of the Safe {state.address}: "
                         "made over other typed data (another nonce, chain, Safe or content) or by another key",
                         field=field, hint=f"sign exactly the typed data printed by --typed-data (Safe tx hash "
                                           f"{tx.safe_tx_hash_hex}) with an owner's key")
    return signature


def print_typed_data(tx: SafeTxData) -> None:
    """The typed data on standard output (JSON only, so it can be piped to a file); the hashes on stderr."""
    print(json.dumps(tx.typed_data, indent=2))
    print(f"domain hash  0x{tx.domain_hash.hex()}\nmessage hash 0x{tx.message_hash.hex()}\n"
          f"Safe tx hash {tx.safe_tx_hash_hex}\nsign it with e.g. `cast wallet sign --ledger --data --from-file "
          "FILE`, then pass the signature with --signature 0x…", file=sys.stderr)


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
    safe = SafeOnChain(config.chain.http_url, config.safe.address)
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
             f"  domain hash  0x{tx.domain_hash.hex()}   <- a hardware wallet shows these two",
             f"  message hash 0x{tx.message_hash.hex()}",
             f"  Safe tx hash {tx.safe_tx_hash_hex}   <- Safe{{Wallet}} and the Transaction Service show this one"]
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


def presigned_actions(config: Config) -> list[str]:
    return [a.name for a in config.actions.values() if a.via == "presigned"]


def ladders(config: Config, txs: SafeTxStore, state: SafeState, safe: SafeOnChain | None) -> dict[str, Ladder]:
    """Every pre-signed action's ladder from the live state (approved hashes checked on chain when a node is
    there)."""
    approved = safe.is_approved if safe is not None else None
    return build_ladders(presigned_actions(config), txs.list(TxKind.PRESIGNED), state.nonce, state.threshold,
                         state.owners, approved)


def ladder_effects(ladders_now: dict[str, Ladder], nonce: int) -> list[str]:
    """What executing a routine transaction at `nonce` does to each pre-signed action, one line each."""
    return [f"  pre-signed   {effect}" for ladder in ladders_now.values()
            if (effect := ladder.effect_of_executing(nonce)) is not None]


def exhausts(ladders_now: dict[str, Ladder], nonce: int) -> list[str]:
    """The protected actions a transaction at `nonce` would leave with no pre-signed transaction."""
    return [name for name, ladder in ladders_now.items()
            if ladder.protected and ladder.remaining_after(nonce) == 0]
