"""`onguard presign ACTION`: an owner pre-signs a configured emergency action's Safe transaction at the Safe's
current nonce; the signature (never the key) is stored for the daemon to execute when a policy trips."""

from __future__ import annotations

import argparse

from onguard.cli.signing import add_key_arguments, confirm, connect, describe, load_signer
from onguard.config import load_config
from onguard.errors import InputError
from onguard.incidents.audit import AuditKind, AuditLog
from onguard.incidents.safetxs import SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.safe.tx import SafeTxData, approved_hash, sign


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("presign", help="pre-sign an emergency action's Safe transaction")
    parser.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
    parser.add_argument("action", help="a configured [actions.NAME]")
    parser.add_argument("--approve-hash", action="store_true",
                        help="approve the hash on chain (approveHash, from the signer's key) instead of signing it")
    add_key_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    action = config.actions.get(args.action)
    if action is None:
        raise InputError(f"no action named {args.action!r}", file=str(config.path), field="actions",
                         hint=f"configured actions: {', '.join(config.actions) or 'none'}")
    (call,) = action.calls  # the config allows one call per pre-signed action
    safe = connect(config)
    state = safe.retrieve_state()
    tx = SafeTxData.call(config.safe.address, config.chain.chain_id, call.target, call.calldata, state.nonce)
    store = IncidentStore(config.database)
    try:
        txs = SafeTxStore(store)
        record = txs.by_hash(TxKind.PRESIGNED, tx.safe_tx_hash_hex)
        print(f"pre-signing emergency action {action.name} ({call.text}):")
        print("\n".join(describe(config, tx, state, record)))
        others = [r for r in txs.list(TxKind.PRESIGNED, TxStatus.PENDING)
                  if r.tx.nonce == tx.nonce and r.safe_tx_hash != tx.safe_tx_hash_hex]
        for other in others:
            print(f"  alternative  {other.action} is also signed for nonce {tx.nonce}: only one of them can ever "
                  "execute; the daemon runs the one the tripped policy asks for")
        if action.via != "presigned":
            print(f"  note         actions.{action.name} has via = \"{action.via}\": the daemon uses the module; "
                  "set via = \"presigned\" to use this signature")
        account = load_signer(args)
        if not state.is_owner(account.address):
            raise InputError(f"{account.address} is not an owner of the Safe {state.address}",
                             hint="sign with one of its owners' keys: " + ", ".join(state.owners))
        confirm(args, f"sign this as {account.address}?")
        if args.approve_hash:
            sent = safe.approve_hash(account, tx.safe_tx_hash)
            signature = approved_hash(account.address)
            print(f"approveHash sent in {sent}")
        else:
            signature = sign(tx, account)
        record = txs.add(TxKind.PRESIGNED, tx, purpose=f"emergency action {action.name}",
                         proposer=account.address, action=action.name)
        added = txs.add_signature(record, signature)
        audit = AuditLog(store)
        audit.append(AuditKind.SIGNATURE, account.address, {
            "presigned": record.id, "action": action.name, "safe_tx_hash": record.safe_tx_hash,
            "nonce": tx.nonce, "signature_kind": signature.kind, "new": added})
        count = len(txs.get(record.id).signatures)
        print(f"{'signature stored' if added else 'already signed by this owner'}: {count} of {state.threshold} "
              f"for {action.name} at nonce {tx.nonce}"
              + ("" if count >= state.threshold else f"; {state.threshold - count} more owner(s) needed"))
        return 0
    finally:
        store.close()
