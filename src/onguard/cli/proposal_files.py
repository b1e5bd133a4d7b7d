"""`onguard proposals export|import|push|pull`: proposals in and out of onguard, in the Safe ecosystem's formats:
the Safe Transaction Service's (files, and its API through safe-eth-py's TransactionServiceApi) and Safe{Wallet}
Transaction Builder batches. Signatures are checked against the Safe's owners before they are stored; a file that
carries the Safe's state can be imported with no node (and says so)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from eth_utils import to_checksum_address
from safe_eth.eth import EthereumNetwork
from safe_eth.safe.api import SafeAPIException, TransactionServiceApi
from safe_eth.safe.safe_tx import SafeTx

from onguard.cli.proposal_session import ProposalSession, SafeView, create_proposal, session
from onguard.errors import ChainError, InputError
from onguard.store.audit import AuditKind
from onguard.store.safetxs import SafeTxRecord, TxKind, TxStatus
from onguard.safe.interop import ImportedTx, SafeSnapshot, approval_batch, export_tx, is_tx_builder_batch, \
    parse_service_tx, parse_tx_builder, read_json
from onguard.safe.tx import SAFE_VERSION, SafeTxData, SignatureKind, encode_signatures


def register(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = actions.add_parser("export", help="write it with its signatures and the Safe's state (the Safe "
                                               "Transaction Service's fields)")
    export.add_argument("id", type=int)
    export.add_argument("--out", type=Path, help="the file to write (default: standard output)")
    export.set_defaults(handler=handle_export)
    imported = actions.add_parser("import", help="a transaction from `export` or the Safe Transaction Service "
                                                 "(with its confirmations), or a Transaction Builder batch")
    imported.add_argument("file", type=Path)
    imported.add_argument("--by", help="who proposes a Transaction Builder batch (default: the login name)")
    imported.add_argument("--nonce", type=int, help="a batch's Safe nonce (default: after the pending proposals)")
    imported.add_argument("--force", action="store_true",
                          help="import a batch even though executing it would spend the last pre-signed nonce")
    imported.set_defaults(handler=handle_import)
    push = actions.add_parser("push", help="propose it to a Safe Transaction Service with its signatures")
    push.add_argument("id", type=int)
    push.add_argument("--service", required=True, metavar="URL",
                      help="the service's base URL, e.g. https://safe-transaction-mainnet.safe.global")
    push.set_defaults(handler=handle_push)
    batch = actions.add_parser("approval-batch", help="write, as a Transaction Builder batch, the approveHash call "
                                                      "by which a contract owner (a nested Safe) approves it")
    batch.add_argument("id", type=int)
    batch.add_argument("--owner-safe", metavar="ADDRESS", help="the nested Safe that will run it (recorded in the "
                                                                "file, so it is not run by another Safe)")
    batch.add_argument("--out", type=Path, required=True, help="the batch file to write")
    batch.set_defaults(handler=handle_approval_batch)
    pull = actions.add_parser("pull", help="bring in the Safe's pending transactions (and confirmations) from a "
                                           "Safe Transaction Service")
    pull.add_argument("--service", required=True, metavar="URL", help="the service's base URL")
    pull.set_defaults(handler=handle_pull)


@session
def handle_export(args: argparse.Namespace, s: ProposalSession) -> int:
    record = s.proposal(args.id)
    snapshot = _snapshot_for(s, record)
    text = json.dumps(export_tx(record.tx, record.signatures, record.purpose, snapshot), indent=2) + "\n"
    if args.out:
        try:
            args.out.write_text(text)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror}", file=str(args.out), field="--out") from None
        print(f"written to {args.out}")
    else:
        sys.stdout.write(text)
    if not record.signatures:
        print("note: no owner has signed it yet: the Safe Transaction Service takes it once one has (its sender "
              "must be a signing owner)", file=sys.stderr)
    if snapshot is None:
        print("note: no node and no recorded state: the file does not carry the Safe's state, so it cannot be "
              "reviewed offline", file=sys.stderr)
    return 0


@session
def handle_approval_batch(args: argparse.Namespace, s: ProposalSession) -> int:
    record = s.proposal(args.id)
    owner_safe = None
    if args.owner_safe:
        try:
            owner_safe = to_checksum_address(args.owner_safe)
        except ValueError:
            raise InputError(f"{args.owner_safe!r} is not an address", field="--owner-safe") from None
    batch = approval_batch(record.tx, owner_safe)
    try:
        args.out.write_text(json.dumps(batch, indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", file=str(args.out), field="--out") from None
    print(f"written to {args.out}: approveHash({record.safe_tx_hash}) on the Safe {record.tx.safe}; once the owner "
          f"Safe has executed it, `onguard proposals sign {record.id} --approved-by "
          f"{owner_safe or 'OWNER_SAFE'}` records the approval")
    return 0


def _snapshot_for(s: ProposalSession, record: SafeTxRecord) -> SafeSnapshot | None:
    safe = s.safe_if_reachable
    if safe is not None:
        state = safe.retrieve_state()
        return SafeSnapshot(chain_id=s.config.chain.chain_id, nonce=state.nonce, threshold=state.threshold,
                            owners=state.owners, version=state.version)
    recorded = s.txs.snapshot(record)
    return recorded[0] if recorded else None


@session
def handle_import(args: argparse.Namespace, s: ProposalSession) -> int:
    item = read_json(args.file)
    if is_tx_builder_batch(item):
        _import_batch(args, s, item)
        return 0
    imported = parse_service_tx(item, str(args.file), s.config.chain.chain_id, s.config.safe.address)
    record = import_tx(s, imported, str(args.file), args.file.name)
    print(f"proposal {record.id}: Safe tx {record.safe_tx_hash} at nonce {record.tx.nonce}")
    return 0


def _import_batch(args: argparse.Namespace, s: ProposalSession, item: dict[str, Any]) -> None:
    calls, purpose = parse_tx_builder(item, str(args.file), s.config.chain.chain_id, s.config.safe.address)
    multisend = s.safe.retrieve_multisend() if len(calls) > 1 else None
    config = s.config

    def build(nonce: int) -> SafeTxData:
        if multisend is None:
            return SafeTxData.call(config.safe.address, config.chain.chain_id, calls[0].to, calls[0].data, nonce,
                                   value=calls[0].value)
        return SafeTxData.batch(config.safe.address, config.chain.chain_id, calls, nonce, multisend)

    create_proposal(s, build, purpose=purpose, by=args.by or getpass.getuser(), incident=None, asked=args.nonce,
                    force=args.force, source=args.file.name)
    print(f"  {len(calls)} call(s) from the Transaction Builder batch {args.file.name}"
          + (f", in one MultiSendCallOnly batch ({multisend})" if multisend else ""))


def import_tx(s: ProposalSession, imported: ImportedTx, file: str, source: str) -> SafeTxRecord:
    """Stores a transaction and the signatures that count: each from an owner (the chain's owners, or offline the
    ones the file records), approved hashes approved on chain when that can be read."""
    if imported.executed_in:
        raise InputError(f"the transaction was already executed (in {imported.executed_in}): nothing to sign",
                         file=file, field="isExecuted")
    snapshot = (imported.snapshot, f"as {source} recorded them") if imported.snapshot else None
    view = s.view(snapshot=snapshot)
    unchecked = _check_signatures(s, imported, view, file)
    record = s.txs.by_hash(TxKind.PROPOSAL, imported.tx.safe_tx_hash_hex) or s.txs.add(
        TxKind.PROPOSAL, imported.tx, purpose=imported.purpose,
        proposer=f"{imported.proposer} via {source}" if imported.proposer else f"import:{source}")
    if imported.snapshot is not None:
        s.txs.record_snapshot(record, imported.snapshot, source)
    added = [sig.owner for sig in imported.signatures if s.txs.add_signature(record, sig)]
    for owner in added:
        s.audit.append(AuditKind.SIGNATURE, owner, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                   "imported_from": source})
    print(f"proposal {record.id}: {len(added)} new signature(s) imported" + (f" ({', '.join(added)})" if added else ""))
    if not view.live:
        print(f"  offline      owners checked against the Safe's state {view.source}, not the chain"
              + (f"; approved hashes of {', '.join(unchecked)} NOT checked" if unchecked else ""))
    return record


def _check_signatures(s: ProposalSession, imported: ImportedTx, view: SafeView, file: str) -> list[str]:
    unchecked = []
    for signature in imported.signatures:
        if not view.state.is_owner(signature.owner):
            raise InputError(f"a signature recovers to {signature.owner}, not an owner of the Safe: signed for "
                             "another chain id, another Safe or other content; refused", file=file,
                             field="signature")
        if signature.kind != SignatureKind.APPROVED:
            continue
        if not view.live:
            unchecked.append(signature.owner)
        elif not s.safe.is_approved(signature.owner, imported.tx.safe_tx_hash):
            raise InputError(f"{signature.owner}'s approved-hash signature is not approved on chain", file=file,
                             field="signature")
    return unchecked


def _service(s: ProposalSession, url: str) -> TransactionServiceApi:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"{url!r} is not an http(s) URL", field="--service",
                         hint="the service's base URL, e.g. https://safe-transaction-mainnet.safe.global")
    return TransactionServiceApi(EthereumNetwork(s.config.chain.chain_id), base_url=url.rstrip("/"))


def _call_service(url: str, what: str, call: Any) -> Any:
    try:
        return call()
    except SafeAPIException as exc:
        raise ChainError(f"the Safe Transaction Service at {url} refused {what}: {exc}") from None
    except requests.RequestException as exc:
        raise ChainError(f"no answer from the Safe Transaction Service at {url}: {type(exc).__name__}",
                         hint="check --service") from None


@session
def handle_push(args: argparse.Namespace, s: ProposalSession) -> int:
    record = s.proposal(args.id)
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: nothing to propose")
    if not record.signatures:
        raise InputError(f"proposal {record.id} has no signature: the service takes a proposal from a signing owner",
                         hint=f"an owner runs `onguard proposals sign {record.id}` first")
    tx = record.tx
    safe_tx = SafeTx(None, tx.safe, tx.to, tx.value, tx.data, tx.operation,  # type: ignore[arg-type]
                     tx.safe_tx_gas, tx.base_gas, tx.gas_price, tx.gas_token, tx.refund_receiver,
                     signatures=encode_signatures(record.signatures), safe_nonce=tx.nonce, safe_version=SAFE_VERSION,
                     chain_id=tx.chain_id)
    _call_service(args.service, "the proposal", lambda: _service(s, args.service).post_transaction(safe_tx))
    s.audit.append(AuditKind.PROPOSAL, "onguard", {"proposal": record.id, "pushed_to": args.service,
                                                  "safe_tx_hash": record.safe_tx_hash,
                                                  "signers": [sig.owner for sig in record.signatures]})
    print(f"proposal {record.id} proposed to {args.service} with {len(record.signatures)} signature(s): Safe tx "
          f"{record.safe_tx_hash}")
    return 0


@session
def handle_pull(args: argparse.Namespace, s: ProposalSession) -> int:
    service = _service(s, args.service)
    listed = _call_service(args.service, "the transaction list",
                           lambda: service.get_transactions(s.config.safe.address, executed=False))
    live = s.safe.retrieve_state().nonce
    pending = [item for item in listed if not item.get("isExecuted") and int(str(item.get("nonce", -1))) >= live]
    for item in pending:
        imported = parse_service_tx(item, args.service, s.config.chain.chain_id, s.config.safe.address)
        record = import_tx(s, imported, args.service, f"{args.service} ({imported.tx.safe_tx_hash_hex[:10]}…)")
        print(f"  nonce {record.tx.nonce}: Safe tx {record.safe_tx_hash}: {record.purpose}")
    print(f"{len(pending)} pending transaction(s) pulled from {args.service}")
    return 0
