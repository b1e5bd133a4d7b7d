"""`onguard proposals create|list|show|sign|execute|reject`: Safe transactions that need the full threshold
(unpause, parameter changes, rescues), reviewed, signed and executed by the Safe's owners (files and the Safe
Transaction Service: `proposal_files`)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from eth_abi import decode as abi_decode

from onguard.chain.abi import FunctionAbi
from onguard.cli import proposal_files
from onguard.cli.common import add_config_argument
from onguard.cli.proposal_session import ProposalSession, SafeView, create_proposal, refuse_exhausting, session
from onguard.cli.signing import accept_signature, add_external_signature_arguments, add_key_arguments, confirm, \
    describe, given_signature, ladder_effects, ladders, load_signer, print_typed_data
from onguard.config import Config, WatchedContract
from onguard.errors import ChainError, InputError
from onguard.store.audit import AuditKind
from onguard.store.safetxs import SafeTxRecord, TxKind, TxStatus
from onguard.safe.chain import SafeOnChain, SafeState
from onguard.safe.tx import CALL, OwnerSignature, SafeTxData, SignatureKind, approved_hash, encode_signatures, \
    external_signature_over, nested_message_hash, nested_message_typed_data, parse_signatures_over, sign
from onguard.units import parse_address


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("proposals", help="Safe transactions for the owners to review, sign and execute")
    add_config_argument(parser)
    actions = parser.add_subparsers(dest="proposals_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="propose a Safe transaction")
    create.add_argument("--contract", help="a configured contract name (with --call)")
    create.add_argument("--call", help='a function signature, e.g. "unpause()"')
    create.add_argument("--arg", action="append", default=[], help="an argument of --call, in order (repeat)")
    create.add_argument("--to", help="a raw target address (with --data)")
    create.add_argument("--data", default="0x", help="raw calldata (with --to)")
    create.add_argument("--purpose", required=True, help="why: shown to every signer")
    create.add_argument("--incident", type=int, help="the incident this proposal belongs to")
    create.add_argument("--by", default=None, help="who proposes it (default: the login name)")
    _add_placement(create)
    create.set_defaults(handler=handle_create)
    listed = actions.add_parser("list", help="every proposal")
    _add_json(listed)
    listed.set_defaults(handler=handle_list)
    for name, handler, text in (("show", handle_show, "decode, simulate and show the Safe tx hash"),
                                ("sign", handle_sign, "sign with an owner's key after the summary"),
                                ("execute", handle_execute, "send it once threshold signatures are held"),
                                ("reject", handle_reject, "reject it on chain, as Safe{Wallet} does: a zero-value "
                                                          "Safe transaction to the Safe itself at the same nonce, "
                                                          "signed (now, by this owner) and executed like any "
                                                          "proposal")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", type=int)
        if name in ("sign", "execute", "reject"):
            add_key_arguments(sub)
        if name in ("sign", "reject"):
            add_external_signature_arguments(sub)
        if name == "show":
            _add_json(sub)
        if name == "sign":
            sub.add_argument("--for-safe", metavar="OWNER_SAFE",
                             help="sign as an owner of OWNER_SAFE, a Safe that owns this one: its owners' "
                                  "signatures become its EIP-1271 signature (it needs Safe's "
                                  "CompatibilityFallbackHandler)")
            sub.add_argument("--approved-by", metavar="OWNER",
                             help="record the approval of an owner that approved the hash on chain (approveHash), "
                                  "e.g. a nested Safe: checked on chain")
        if name == "execute":
            sub.add_argument("--force", action="store_true",
                             help="execute it even though it spends the last pre-signed nonce of an action")
        if name == "reject":
            sub.add_argument("--reason", default="rejected by an owner")
        sub.set_defaults(handler=handler)
    proposal_files.register(actions)


def _add_placement(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nonce", type=int, help="the Safe nonce (default: the next one after the pending "
                                                  "proposals, from the Safe's live nonce)")
    parser.add_argument("--force", action="store_true",
                        help="create it even though executing it would leave a pre-signed action with no "
                             "pre-signature for the next nonce")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document on standard output, for scripts")


def _argument(type_: str, value: str) -> Any:
    try:
        if type_ == "address":
            return parse_address(value)
        if type_.startswith(("uint", "int")):
            return int(value, 0)
        if type_ == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if type_.startswith("bytes"):
            return bytes.fromhex(value.removeprefix("0x"))
        if type_ == "string":
            return value
    except ValueError:
        pass
    raise InputError(f"{value!r} is not a valid {type_}", field="--arg")


@session
def handle_create(args: argparse.Namespace, s: ProposalSession) -> int:
    if args.contract:
        contract = s.config.contracts.get(args.contract)
        if contract is None:
            raise InputError(f"no contract named {args.contract!r}", field="--contract",
                             hint=f"configured contracts: {', '.join(s.config.contracts)}")
        if not args.call or not contract.abi.has_function(args.call):
            raise InputError(f"{args.contract} has no function {args.call}", field="--call",
                             hint=f"functions: {', '.join(contract.abi.function_signatures())}")
        function = contract.abi.function(args.call)
        if len(args.arg) != len(function.input_types):
            raise InputError(f"{args.call} takes {len(function.input_types)} argument(s), got {len(args.arg)}",
                             field="--arg")
        to = contract.address
        data = contract.abi.encode_call(args.call, *(_argument(t, v) for t, v in zip(function.input_types,
                                                                                      args.arg, strict=True)))
    elif args.to:
        to = _address(args.to, "--to")
        try:
            data = bytes.fromhex(args.data.removeprefix("0x"))
        except ValueError:
            raise InputError("not hex calldata", field="--data") from None
    else:
        raise InputError("say what to call", hint="--contract NAME --call \"unpause()\", or --to ADDRESS --data 0x…")
    if args.incident is not None:
        try:
            s.store.incident(args.incident)
        except LookupError:
            raise InputError(f"no incident with id {args.incident}", field="--incident") from None
    create_proposal(s, lambda nonce: SafeTxData.call(s.config.safe.address, s.config.chain.chain_id, to, data, nonce),
                    purpose=args.purpose, by=args.by or getpass.getuser(), incident=args.incident, asked=args.nonce,
                    force=args.force)
    return 0


def _address(value: str, field: str) -> str:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise InputError(str(exc), field=field) from None


@session
def handle_list(args: argparse.Namespace, s: ProposalSession) -> int:
    records = s.txs.list(TxKind.PROPOSAL)
    safe = s.safe_if_reachable
    live = safe.retrieve_state().nonce if safe is not None else None
    if args.json:
        print(json.dumps({"safeNonce": live, "proposals": [_record_json(r, live) for r in records]}, indent=2))
        return 0
    if not records:
        print("no proposals")
        return 0
    print(f"{'ID':>4}  {'NONCE':>5}  {'STATUS':<9}  {'SIGS':>4}  {'INCIDENT':>8}  PURPOSE")
    for r in records:
        print(f"{r.id:>4}  {r.tx.nonce:>5}  {shown_status(r, live):<9}  {len(r.signatures):>4}  "
              f"{r.incident_id or '-':>8}  {r.purpose}")
    if live is None:
        print("(no node: whether pending proposals' nonces are spent is not known)")
    return 0


def shown_status(record: SafeTxRecord, live: int | None) -> str:
    """A pending proposal whose nonce the Safe has used (by another transaction) can never execute: "spent"."""
    if record.status == TxStatus.PENDING and live is not None and record.tx.nonce < live:
        return "spent"
    return record.status


def _record_json(record: SafeTxRecord, live: int | None) -> dict[str, Any]:
    tx = record.tx
    return {"id": record.id, "nonce": tx.nonce, "status": shown_status(record, live),
            "safeTxHash": record.safe_tx_hash, "purpose": record.purpose, "proposer": record.proposer,
            "incident": record.incident_id, "createdAt": record.created_at, "txHash": record.tx_hash,
            "to": tx.to, "value": str(tx.value), "data": "0x" + tx.data.hex(), "operation": tx.operation,
            "signatures": [{"owner": sig.owner, "kind": sig.kind} for sig in record.signatures]}


def _review(s: ProposalSession, record: SafeTxRecord, *, quiet: bool = False) -> tuple[SafeView, dict[str, Any]]:
    """Everything a signer should see, printed (unless quiet) and as JSON: the decoded call, the Safe tx hash,
    what it does to the pre-signed ladder, the simulation and the watched changes."""
    view = s.view(record)
    state = view.state
    lines = [f"proposal {record.id}: {record.purpose}",
             f"  proposed by  {record.proposer} at {record.created_at}"
             + (f" for incident {record.incident_id}" if record.incident_id else "")
             + f"; status {shown_status(record, state.nonce if view.live else None)}",
             *describe(s.config, record.tx, state, record)]
    if not view.live:
        lines.append(view.offline_note)
    effects: list[str] = []
    if record.status == TxStatus.PENDING and record.tx.nonce >= state.nonce:
        effects = ladder_effects(ladders(s.config, s.txs, state, s.safe if view.live else None), record.tx.nonce)
        lines.extend(effects)
    simulation: dict[str, Any] | None = None
    if view.live:
        simulation = _simulate(s, record.tx)
        lines.append(f"  simulation   {'succeeds' if simulation['ok'] else 'REVERTS: ' + str(simulation['error'])} "
                     "(as the Safe, on the current state)")
        lines.extend(f"  change       {change}" for change in simulation["changes"])
    if not quiet:
        print("\n".join(lines))
    document = {**_record_json(record, state.nonce if view.live else None),
                "domainHash": "0x" + record.tx.domain_hash.hex(), "messageHash": "0x" + record.tx.message_hash.hex(),
                "calls": [{"to": c.to, "value": str(c.value), "data": "0x" + c.data.hex()} for c in record.tx.calls],
                "safe": {"address": state.address, "nonce": state.nonce, "threshold": state.threshold,
                         "owners": list(state.owners), "version": state.version, "source": view.source,
                         "live": view.live},
                "preSigned": [e.strip().removeprefix("pre-signed").strip() for e in effects],
                "simulation": simulation}
    return view, document


def _simulate(s: ProposalSession, tx: SafeTxData) -> dict[str, Any]:
    views = _change_views(s.config, tx)
    ok, error, before, after = s.safe.simulate_call(tx, [(c.address, f.selector) for c, f in views])
    changes = []
    for (contract, function), old, new in zip(views, before, after, strict=True):
        if old is not None and new is not None and old != new:
            (a,), (b,) = abi_decode([function.output_types[0]], old), abi_decode([function.output_types[0]], new)
            show = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
            prefix = f"{contract.name}." if len({c.name for c, _ in views}) > 1 else ""
            changes.append(f"{prefix}{function.name}: {show(a)} -> {show(b)}")
    return {"ok": ok, "error": error, "changes": changes}


def _change_views(config: Config, tx: SafeTxData) -> list[tuple[WatchedContract, FunctionAbi]]:
    """The simple no-argument views of every configured contract the transaction calls: read before and after
    the simulation, so signers see what changes (paused: true -> false)."""
    named = {c.name: c for c in (config.contract_at(call.to) for call in tx.calls) if c is not None}
    return [(target, f) for target in named.values() for f in target.abi.functions_by_signature.values()
            if f.is_view and not f.input_types and len(f.output_types) == 1
            and f.output_types[0] in ("bool", "uint256", "address", "uint8", "uint64")]


@session
def handle_show(args: argparse.Namespace, s: ProposalSession) -> int:
    _, document = _review(s, s.proposal(args.id), quiet=args.json)
    if args.json:
        print(json.dumps(document, indent=2))
    return 0


@session
def handle_sign(args: argparse.Namespace, s: ProposalSession) -> int:
    record = s.proposal(args.id)
    _check_chain(s, record)
    if args.for_safe:
        return _sign_for_owner_safe(args, s, record)
    if args.typed_data:
        print_typed_data(record.tx)
        return 0
    view, _ = _review(s, record)
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: nothing to sign")
    state = view.state
    if record.tx.nonce < state.nonce:
        raise InputError(f"nonce {record.tx.nonce} is already used (the Safe is at {state.nonce}): this proposal "
                         "can never execute", hint="create it again at the current nonce")
    if args.approved_by:
        signature = _approval_on_chain(s, record, state, args.approved_by)
    else:
        signature = _signature(args, record, state, f"Safe tx {record.safe_tx_hash}")
    added = _store_signature(s, record, signature, made_elsewhere=given_signature(args) is not None)
    count = len(s.txs.get(record.id).signatures)
    print(f"{'signed' if added else 'already signed'} by {signature.owner}: {count} of {state.threshold}"
          + ("" if view.live else f" (owners checked against the Safe's state {view.source})"))
    return 0


def _sign_for_owner_safe(args: argparse.Namespace, s: ProposalSession, record: SafeTxRecord) -> int:
    """One owner of a Safe that owns this one signs the SafeMessage by which that Safe vouches for the transaction
    (EIP-1271); its owners' signatures accumulate into the Safe's one contract signature, which execTransaction
    checks by asking it."""
    owner_safe = _address(args.for_safe, "--for-safe")
    signed_hash = nested_message_hash(owner_safe, record.tx)
    if args.typed_data:
        print(json.dumps(nested_message_typed_data(owner_safe, record.tx), indent=2))
        print(f"message hash 0x{signed_hash.hex()} (a SafeMessage of {owner_safe}, vouching for Safe tx "
              f"{record.safe_tx_hash})", file=sys.stderr)
        return 0
    view, _ = _review(s, record)
    state = view.state
    if record.status != TxStatus.PENDING or record.tx.nonce < state.nonce:
        raise InputError(f"proposal {record.id} cannot execute any more: nothing to sign")
    if not state.is_owner(owner_safe):
        raise InputError(f"{owner_safe} is not an owner of the Safe {state.address}", field="--for-safe",
                         hint="owners: " + ", ".join(state.owners))
    inner_state = SafeOnChain(s.config.chain.http_url, owner_safe).retrieve_state()
    given = given_signature(args)
    if given is not None:
        signature = external_signature_over(signed_hash, given[0], given[1])
    else:
        account = load_signer(args)
        signed = account.unsafe_sign_hash(signed_hash)
        signature = OwnerSignature(owner=account.address, kind=SignatureKind.EOA,
                                   signature=signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big")
                                   + bytes([signed.v]))
    if not inner_state.is_owner(signature.owner):
        raise InputError(f"{signature.owner} is not an owner of the owner Safe {owner_safe}", field="--for-safe",
                         hint="its owners: " + ", ".join(inner_state.owners))
    confirm(args, f"sign for the owner Safe {owner_safe} as {signature.owner}?")
    held = next((x for x in record.signatures if x.owner.lower() == owner_safe.lower()
                 and x.kind == SignatureKind.CONTRACT), None)
    inner = {x.owner.lower(): x for x in (parse_signatures_over(signed_hash, held.signature) if held else [])}
    inner[signature.owner.lower()] = signature
    s.txs.replace_signature(record, OwnerSignature(owner=owner_safe, kind=SignatureKind.CONTRACT,
                                                   signature=encode_signatures(inner.values())))
    s.audit.append(AuditKind.SIGNATURE, signature.owner, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                         "signature_kind": SignatureKind.CONTRACT,
                                                         "for_safe": owner_safe})
    print(f"signed for the owner Safe {owner_safe} by {signature.owner}: {len(inner)} of its "
          f"{inner_state.threshold} signature(s)"
          + ("; its signature is complete" if len(inner) >= inner_state.threshold else ""))
    return 0


def _approval_on_chain(s: ProposalSession, record: SafeTxRecord, state: SafeState, owner: str) -> OwnerSignature:
    """An owner (a contract such as a nested Safe, or an EOA) that called approveHash on the Safe: its slot holds
    no signature, the Safe reads approvedHashes; stored only once that is so on chain."""
    owner = _address(owner, "--approved-by")
    if not state.is_owner(owner):
        raise InputError(f"{owner} is not an owner of the Safe {state.address}", field="--approved-by",
                         hint="owners: " + ", ".join(state.owners))
    if not s.safe.is_approved(owner, record.tx.safe_tx_hash):
        raise InputError(f"{owner} has not approved Safe tx {record.safe_tx_hash} on chain (yet)",
                         field="--approved-by",
                         hint=f"the owner calls approveHash({record.safe_tx_hash}) on the Safe; for a nested Safe, "
                              f"`onguard proposals approval-batch {record.id} --out FILE` writes that call as a "
                              "Transaction Builder batch for Safe{Wallet} or `onguard proposals import`")
    return approved_hash(owner)


def _signature(args: argparse.Namespace, record: SafeTxRecord, state: SafeState, what: str) -> OwnerSignature:
    """An owner's signature of the record: made elsewhere and given, or made here with the owner's key."""
    given = given_signature(args)
    if given is not None:
        signature = accept_signature(record.tx, given, state)
        confirm(args, f"store this signature of {what} by {signature.owner}?")
        return signature
    account = load_signer(args)
    if not state.is_owner(account.address):
        raise InputError(f"{account.address} is not an owner of the Safe {state.address}: signature refused",
                         hint="sign with one of its owners' keys: " + ", ".join(state.owners))
    confirm(args, f"sign {what} as {account.address}?")
    return sign(record.tx, account)


def _store_signature(s: ProposalSession, record: SafeTxRecord, signature: OwnerSignature, **details: Any) -> bool:
    added = s.txs.add_signature(record, signature)
    s.audit.append(AuditKind.SIGNATURE, signature.owner, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                         "signature_kind": signature.kind, "new": added, **details})
    return added


def _check_chain(s: ProposalSession, record: SafeTxRecord) -> None:
    if record.tx.chain_id != s.config.chain.chain_id or record.tx.safe.lower() != s.config.safe.address.lower():
        raise InputError(f"proposal {record.id} is for chain {record.tx.chain_id}, Safe {record.tx.safe}; the config "
                         f"is chain {s.config.chain.chain_id}, Safe {s.config.safe.address}")


@session
def handle_execute(args: argparse.Namespace, s: ProposalSession) -> int:
    record = s.proposal(args.id)
    _check_chain(s, record)
    s.safe  # executing needs the chain: say so before reviewing from a recorded state
    view, _ = _review(s, record)
    state = view.state
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: not executed")
    if record.tx.nonce != state.nonce:
        raise InputError(f"proposal {record.id} is for nonce {record.tx.nonce}, the Safe is at {state.nonce}",
                         hint="only the transaction at the Safe's current nonce can execute")
    valid = s.safe.check_signatures(record.tx, record.signatures, state)
    if len(valid) < state.threshold:
        raise InputError(f"{len(valid)} valid owner signature(s), the Safe needs {state.threshold}",
                         hint=f"more owners run `onguard proposals sign {record.id}`")
    refuse_exhausting(ladders(s.config, s.txs, state, s.safe), record.tx.nonce, args.force, "execute it")
    relayer = load_signer(args)
    problem = s.safe.simulate(record.tx, valid, relayer.address)
    if problem is not None:
        raise InputError(f"execTransaction would fail: {problem}")
    confirm(args, f"execute Safe tx {record.safe_tx_hash} from {relayer.address}?")
    receipt = s.safe.execute(record.tx, valid, relayer)
    tx_hash, block = receipt["transactionHash"].to_0x_hex(), int(receipt["blockNumber"])
    if receipt["status"] != 1:
        raise ChainError(f"execTransaction {tx_hash} reverted in block {block}: the nonce is not spent")
    s.txs.set_status(record, TxStatus.EXECUTED, tx_hash=tx_hash, block_number=block)
    signers = [v.owner for v in valid]
    s.audit.append(AuditKind.EXECUTION, relayer.address, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                         "tx_hash": tx_hash, "block": block, "signers": signers})
    print(f"executed in {tx_hash} (block {block}, gas {receipt['gasUsed']})")
    if is_rejection(record.tx):
        _rejected_on_chain(s, record, tx_hash, block, signers)
    return 0


def is_rejection(tx: SafeTxData) -> bool:
    """Safe{Wallet}'s on-chain rejection: a zero-value CALL from the Safe to itself with no data."""
    return tx.to.lower() == tx.safe.lower() and tx.value == 0 and not tx.data and tx.operation == CALL


def _rejected_on_chain(s: ProposalSession, rejection: SafeTxRecord, tx_hash: str, block: int,
                       signers: list[str]) -> None:
    for other in s.txs.list(TxKind.PROPOSAL, TxStatus.PENDING):
        if other.tx.nonce == rejection.tx.nonce and other.id != rejection.id:
            s.txs.set_status(other, TxStatus.REJECTED, tx_hash=tx_hash, block_number=block,
                             note=f"rejected on chain by proposal {rejection.id}")
            s.audit.append(AuditKind.REJECTION, ",".join(signers), {
                "proposal": other.id, "safe_tx_hash": other.safe_tx_hash, "rejection": rejection.id,
                "tx_hash": tx_hash, "block": block, "signers": signers})
            print(f"proposal {other.id} is rejected: nonce {other.tx.nonce} is spent by the rejection")


@session
def handle_reject(args: argparse.Namespace, s: ProposalSession) -> int:
    """The rejection is a Safe transaction of its own, at the rejected one's nonce; the owner rejecting signs it
    now. Once threshold owners have signed it, executing it spends the nonce: the rejected proposal can never
    execute, whatever signatures exist for it anywhere."""
    record = s.proposal(args.id)
    _check_chain(s, record)
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: nothing to reject")
    state = s.safe.retrieve_state()
    if record.tx.nonce < state.nonce:
        raise InputError(f"nonce {record.tx.nonce} is already spent (the Safe is at {state.nonce}): proposal "
                         f"{record.id} can never execute; nothing to reject")
    tx = SafeTxData.call(s.config.safe.address, s.config.chain.chain_id, s.config.safe.address, b"",
                         record.tx.nonce)
    rejection = s.txs.by_hash(TxKind.PROPOSAL, tx.safe_tx_hash_hex)
    print(f"rejecting proposal {record.id} on chain: a zero-value Safe transaction to the Safe itself at nonce "
          f"{tx.nonce} ({args.reason})")
    print("\n".join(describe(s.config, tx, state, rejection)))
    for line in ladder_effects(ladders(s.config, s.txs, state, s.safe), tx.nonce):
        print(line)
    draft = rejection or SafeTxRecord(id=0, kind=TxKind.PROPOSAL, tx=tx, safe_tx_hash=tx.safe_tx_hash_hex,
                                      action=None, purpose="", incident_id=None, proposer="", status=TxStatus.PENDING,
                                      tx_hash=None, block_number=None, note=None, created_at="", signatures=())
    signature = _signature(args, draft, state, f"the rejection of proposal {record.id}")
    if rejection is None:
        rejection = s.txs.add(TxKind.PROPOSAL, tx, purpose=f"reject proposal {record.id}: {args.reason}",
                              proposer=signature.owner, incident_id=record.incident_id)
        s.audit.append(AuditKind.PROPOSAL, signature.owner, {
            "proposal": rejection.id, "rejects": record.id, "reason": args.reason,
            "safe_tx_hash": rejection.safe_tx_hash, "nonce": tx.nonce})
    _store_signature(s, rejection, signature, rejects=record.id)
    count = len(s.txs.get(rejection.id).signatures)
    print(f"rejection is proposal {rejection.id}, signed by {signature.owner}: {count} of {state.threshold}; "
          f"other owners run `onguard proposals sign {rejection.id}`, then `onguard proposals execute "
          f"{rejection.id}`")
    return 0
