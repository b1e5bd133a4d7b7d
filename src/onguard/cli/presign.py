"""`onguard presign ACTION`: an owner pre-signs a configured emergency action's Safe transaction for the Safe's
next nonces (a ladder, `--depth K`, so that routine transactions can execute and the action still can); the
signatures (never the key) are stored for the daemon to execute the one for the live nonce when a policy trips."""

from __future__ import annotations

import argparse
import json

from onguard.cli.common import add_config_argument
from onguard.cli.status import Report, presigned_section
from onguard.cli.signing import accept_signature, add_external_signature_arguments, add_key_arguments, confirm, \
    connect, describe, given_signature, load_signer, print_typed_data
from onguard.actions import ActionSettings
from onguard.config import Config, load_config
from onguard.errors import InputError
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.safe.chain import SafeState
from onguard.safe.tx import OwnerSignature, SafeTxData, approved_hash, sign

MAX_DEPTH = 32


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("presign", help="pre-sign an emergency action's Safe transaction")
    add_config_argument(parser)
    parser.add_argument("action", nargs="?", help="a configured [actions.NAME]")
    parser.add_argument("--status", action="store_true",
                        help="show each pre-signed action's ladder against the Safe's live nonce instead (exit 1 "
                             "when one has no valid pre-signature)")
    parser.add_argument("--json", action="store_true", help="with --status: one JSON document")
    parser.add_argument("--depth", type=int, default=1,
                        help="sign for the Safe's next K nonces (default 1): K-1 routine Safe transactions can then "
                             "execute and the action still can")
    parser.add_argument("--nonce", type=int,
                        help="sign for this one nonce (the live one or later) instead, e.g. to extend a ladder or "
                             "with a signature made elsewhere")
    parser.add_argument("--approve-hash", action="store_true",
                        help="approve the hash on chain (approveHash, from the signer's key) instead of signing it")
    add_key_arguments(parser)
    add_external_signature_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.status:
        return _status(config, as_json=args.json)
    if args.action is None:
        raise InputError("say which action to pre-sign", field="ACTION",
                         hint=f"configured actions: {', '.join(config.actions) or 'none'}; or --status")
    action = _action(config, args.action)
    (call,) = action.calls  # the config allows one call per pre-signed action
    _check_arguments(args)  # before any chain access: bad arguments need no node to be told
    safe = connect(config)
    state = safe.retrieve_state()
    nonces = _nonces(args, state)
    txs_to_sign = [SafeTxData.call(config.safe.address, config.chain.chain_id, call.target, call.calldata, n)
                   for n in nonces]
    if args.typed_data:
        print_typed_data(txs_to_sign[0])
        return 0
    store = IncidentStore(config.state)
    try:
        txs = SafeTxStore(store.database)
        print(f"pre-signing emergency action {action.name} ({call.text}) for nonce"
              + (f" {nonces[0]}:" if len(nonces) == 1 else f"s {nonces[0]}..{nonces[-1]} ({len(nonces)}):"))
        print("\n".join(describe(config, txs_to_sign[0], state, txs.by_hash(TxKind.PRESIGNED,
                                                                             txs_to_sign[0].safe_tx_hash_hex))))
        for tx in txs_to_sign[1:]:
            print(f"  nonce {tx.nonce:<6} Safe tx hash {tx.safe_tx_hash_hex}")
        _say_alternatives(txs, txs_to_sign)
        if action.via != "presigned":
            print(f"  note         actions.{action.name} has via = \"{action.via}\": the daemon uses the module; "
                  "set via = \"presigned\" to use these signatures")
        given = given_signature(args)
        if given is not None:
            signatures = [accept_signature(txs_to_sign[0], given, state)]
            signer = signatures[0].owner
            confirm(args, f"store this signature by {signer}?")
        else:
            account = load_signer(args)
            _require_owner(state, account.address)
            signer = account.address
            confirm(args, f"sign {'this' if len(nonces) == 1 else f'these {len(nonces)}'} as {signer}?")
            signatures = []
            for tx in txs_to_sign:
                if args.approve_hash:
                    print(f"approveHash for nonce {tx.nonce} sent in {safe.approve_hash(account, tx.safe_tx_hash)}")
                    signatures.append(approved_hash(account.address))
                else:
                    signatures.append(sign(tx, account))
        for tx, signature in zip(txs_to_sign, signatures, strict=True):
            _store(store, txs, action, tx, signature, state)
        return 0
    finally:
        store.close()


def _status(config: Config, *, as_json: bool) -> int:
    store = IncidentStore(config.state)
    try:
        report = Report()
        presigned_section(config, store, report)
    finally:
        store.close()
    if as_json:
        print(json.dumps({"needsAttention": bool(report.reasons), "reasons": report.reasons,
                          **report.doc["presigned"]}, indent=2))
    else:
        print("\n".join(report.lines) or "no action has via = \"presigned\"")
    return 1 if report.reasons else 0


def _action(config: Config, name: str) -> ActionSettings:
    action = config.actions.get(name)
    if action is None:
        raise InputError(f"no action named {name!r}", file=str(config.path), field="actions",
                         hint=f"configured actions: {', '.join(config.actions) or 'none'}")
    return action


def _check_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.depth <= MAX_DEPTH:
        raise InputError(f"--depth {args.depth} is out of range", field="--depth",
                         hint=f"1 to {MAX_DEPTH}: how many routine Safe transactions (plus one) may execute before "
                              "the owners pre-sign again")
    if args.nonce is not None and args.depth != 1:
        raise InputError("--nonce signs one nonce; --depth signs several from the live one", field="--nonce",
                         hint="give one of them")
    if args.depth > 1 and (args.signature or args.signature_file or args.typed_data):
        raise InputError("a signature made elsewhere covers one nonce", field="--depth",
                         hint="run once per nonce with --nonce N (--typed-data, then --signature)")
    if (args.signature or args.signature_file) and args.approve_hash:
        raise InputError("--approve-hash sends a transaction from the owner's key; --signature brings a signature "
                         "made elsewhere", field="--approve-hash", hint="give one of them")


def _nonces(args: argparse.Namespace, state: SafeState) -> list[int]:
    if args.nonce is not None:
        if args.nonce < state.nonce:
            raise InputError(f"nonce {args.nonce} is spent (the Safe is at {state.nonce}): a signature for it could "
                             "never execute", field="--nonce", hint=f"use {state.nonce} or later")
        return [args.nonce]
    return list(range(state.nonce, state.nonce + args.depth))


def _require_owner(state: SafeState, address: str) -> None:
    if not state.is_owner(address):
        raise InputError(f"{address} is not an owner of the Safe {state.address}",
                         hint="sign with one of its owners' keys: " + ", ".join(state.owners))


def _say_alternatives(txs: SafeTxStore, signing: list[SafeTxData]) -> None:
    hashes = {tx.safe_tx_hash_hex for tx in signing}
    for other in txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
        if other.safe_tx_hash not in hashes and other.tx.nonce in {tx.nonce for tx in signing}:
            print(f"  alternative  {other.action} is also signed for nonce {other.tx.nonce}: only one of them can "
                  "ever execute; the daemon runs the one the tripped policy asks for")


def _store(store: IncidentStore, txs: SafeTxStore, action: ActionSettings, tx: SafeTxData,
           signature: OwnerSignature, state: SafeState) -> None:
    record = txs.add(TxKind.PRESIGNED, tx, purpose=f"emergency action {action.name}", proposer=signature.owner,
                     action=action.name)
    added = txs.add_signature(record, signature)
    AuditLog(store.database).append(AuditKind.SIGNATURE, signature.owner, {
        "presigned": record.id, "action": action.name, "safe_tx_hash": record.safe_tx_hash,
        "nonce": tx.nonce, "signature_kind": signature.kind, "new": added})
    count = len(txs.get(record.id).signatures)
    print(f"{'signature stored' if added else 'already signed by this owner'}: {count} of {state.threshold} "
          f"for {action.name} at nonce {tx.nonce}"
          + ("" if count >= state.threshold else f"; {state.threshold - count} more owner(s) needed"))
