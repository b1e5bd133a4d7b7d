"""`onguard proposals create|list|show|sign|execute|reject|export|import`: Safe transactions that need the full
threshold (unpause, parameter changes, rescues), reviewed, signed and executed by the Safe's owners."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address

from onguard.cli.common import add_config_argument
from onguard.cli.signing import accept_signature, add_external_signature_arguments, add_key_arguments, confirm, \
    connect, describe, exhausts, given_signature, ladder_effects, ladders, load_signer, print_typed_data
from onguard.chain.abi import FunctionAbi
from onguard.config import Config, WatchedContract, load_config
from onguard.errors import ChainError, InputError, OnguardError
from onguard.incidents.audit import AuditKind, AuditLog
from onguard.incidents.safetxs import SafeTxRecord, SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.safe.chain import SafeOnChain, SafeState
from onguard.safe.ladder import Ladder
from onguard.safe.tx import SafeTxData, encode_signatures, parse_signatures, sign
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
    create.add_argument("--nonce", type=int, help="the Safe nonce (default: the next one after the pending "
                                                  "proposals, from the Safe's live nonce)")
    create.add_argument("--force", action="store_true",
                        help="create it even though executing it would leave a pre-signed action with no "
                             "pre-signature for the next nonce")
    create.set_defaults(handler=handle_create)
    actions.add_parser("list", help="every proposal").set_defaults(handler=handle_list)
    for name, handler, text in (("show", handle_show, "decode, simulate and show the Safe tx hash"),
                                ("sign", handle_sign, "sign with an owner's key after the summary"),
                                ("execute", handle_execute, "send it once threshold signatures are held"),
                                ("reject", handle_reject, "mark it never to be executed"),
                                ("export", handle_export, "write it with its signatures (Safe Transaction "
                                                          "Service fields)")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", type=int)
        if name in ("sign", "execute"):
            add_key_arguments(sub)
        if name == "sign":
            add_external_signature_arguments(sub)
        if name == "execute":
            sub.add_argument("--force", action="store_true",
                             help="execute it even though it spends the last pre-signed nonce of an action")
        if name == "reject":
            sub.add_argument("--reason", default="rejected by an operator")
        if name == "export":
            sub.add_argument("--out", type=Path, help="the file to write (default: standard output)")
        sub.set_defaults(handler=handler)
    imported = actions.add_parser("import", help="bring back a file (and its signatures) from `export`")
    imported.add_argument("file", type=Path)
    imported.set_defaults(handler=handle_import)


class _Session:
    """The config, the database and (on first use) the chain, for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.config: Config = load_config(args.config)
        self.store = IncidentStore(self.config.database)
        self.txs = SafeTxStore(self.store)
        self.audit = AuditLog(self.store)
        self._safe: SafeOnChain | None = None

    @property
    def safe(self) -> SafeOnChain:
        if self._safe is None:
            self._safe = connect(self.config)
        return self._safe

    def proposal(self, proposal_id: int) -> SafeTxRecord:
        try:
            record = self.txs.get(proposal_id)
        except LookupError:
            record = None
        if record is None or record.kind != TxKind.PROPOSAL:
            raise InputError(f"no proposal with id {proposal_id}", hint="`onguard proposals list` shows the ids")
        return record

    def close(self) -> None:
        self.store.close()


def _session(handler):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        session = _Session(args)
        try:
            return int(handler(args, session) or 0)
        finally:
            session.close()
    return run


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


@_session
def handle_create(args: argparse.Namespace, s: _Session) -> int:
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
    state = s.safe.retrieve_state()
    nonce = _place(s, state, args.nonce)
    now = ladders(s.config, s.txs, state, s.safe)
    _refuse_exhausting(now, nonce, args.force, "create it")
    tx = SafeTxData.call(s.config.safe.address, s.config.chain.chain_id, to, data, nonce)
    by = args.by or getpass.getuser()
    record = s.txs.add(TxKind.PROPOSAL, tx, purpose=args.purpose, proposer=by, incident_id=args.incident)
    s.audit.append(AuditKind.PROPOSAL, by, {"proposal": record.id, "purpose": args.purpose,
                                           "incident_id": args.incident, "safe_tx_hash": record.safe_tx_hash,
                                           "to": tx.to, "data": tx.data, "nonce": nonce})
    print(f"proposal {record.id} created: Safe tx {record.safe_tx_hash} at nonce {nonce}"
          + (f" (the Safe is at {state.nonce}; proposals queued before it)" if nonce > state.nonce else ""))
    for line in ladder_effects(now, nonce):
        print(line)
    return 0


def _place(s: _Session, state: SafeState, asked: int | None) -> int:
    """The nonce of a new proposal: the one asked for (never a spent one), else the next after the pending
    proposals still ahead of the Safe, as Safe{Wallet} queues them."""
    if asked is not None:
        if asked < state.nonce:
            raise InputError(f"nonce {asked} is spent (the Safe is at {state.nonce}): a proposal for it could never "
                             "execute", field="--nonce", hint=f"leave --nonce out, or give {state.nonce} or later")
        return asked
    queued = [r.tx.nonce for r in s.txs.list(TxKind.PROPOSAL, TxStatus.PENDING) if r.tx.nonce >= state.nonce]
    return max(queued) + 1 if queued else state.nonce


def _refuse_exhausting(now: dict[str, Ladder], nonce: int, force: bool, doing: str) -> None:
    """A routine transaction that would leave a protected emergency action with no pre-signed transaction for the
    nonce after it is refused unless forced: the protocol would silently lose its pause."""
    emptied = exhausts(now, nonce)
    if emptied and not force:
        raise OnguardError(
            f"executing a Safe transaction at nonce {nonce} spends the last pre-signed nonce of "
            f"{', '.join(emptied)}: afterwards the daemon could not execute it",
            hint=f"extend the ladder first (`onguard presign {emptied[0]} --depth K` by the owners), or {doing} "
                 "anyway with --force")


def _address(value: str, field: str) -> str:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise InputError(str(exc), field=field) from None


@_session
def handle_list(args: argparse.Namespace, s: _Session) -> int:
    records = s.txs.list(TxKind.PROPOSAL)
    if not records:
        print("no proposals")
        return 0
    live = _live_nonce(s)
    print(f"{'ID':>4}  {'NONCE':>5}  {'STATUS':<9}  {'SIGS':>4}  {'INCIDENT':>8}  PURPOSE")
    for r in records:
        print(f"{r.id:>4}  {r.tx.nonce:>5}  {_shown_status(r, live):<9}  {len(r.signatures):>4}  "
              f"{r.incident_id or '-':>8}  {r.purpose}")
    if live is None:
        print("(no node: whether pending proposals' nonces are spent is not known)")
    return 0


def _live_nonce(s: _Session) -> int | None:
    try:
        return s.safe.retrieve_state().nonce
    except ChainError:
        return None


def _shown_status(record: SafeTxRecord, live: int | None) -> str:
    """A pending proposal whose nonce the Safe has used (by another transaction) can never execute: "spent"."""
    if record.status == TxStatus.PENDING and live is not None and record.tx.nonce < live:
        return "spent"
    return record.status


def _summary(s: _Session, record: SafeTxRecord) -> SafeState:
    state = s.safe.retrieve_state()
    print(f"proposal {record.id}: {record.purpose}")
    print(f"  proposed by  {record.proposer} at {record.created_at}"
          + (f" for incident {record.incident_id}" if record.incident_id else "") + f"; status {record.status}")
    print("\n".join(describe(s.config, record.tx, state, record)))
    if record.status == TxStatus.PENDING and record.tx.nonce >= state.nonce:
        for line in ladder_effects(ladders(s.config, s.txs, state, s.safe), record.tx.nonce):
            print(line)
    views = _change_views(s.config, record.tx)
    ok, error, before, after = s.safe.simulate_call(record.tx, [(c.address, f.selector) for c, f in views])
    print(f"  simulation   {'succeeds' if ok else f'REVERTS: {error}'} (as the Safe, on the current state)")
    for (contract, function), old, new in zip(views, before, after, strict=True):
        if old is not None and new is not None and old != new:
            (a,), (b,) = abi_decode([function.output_types[0]], old), abi_decode([function.output_types[0]], new)
            show = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
            prefix = f"{contract.name}." if len({c.name for c, _ in views}) > 1 else ""
            print(f"  change       {prefix}{function.name}: {show(a)} -> {show(b)}")
    return state


def _change_views(config: Config, tx: SafeTxData) -> list[tuple[WatchedContract, FunctionAbi]]:
    """The simple no-argument views of every configured contract the transaction calls: read before and after
    the simulation, so signers see what changes (paused: true -> false)."""
    named = {c.name: c for c in (config.contract_at(call.to) for call in tx.calls) if c is not None}
    return [(target, f) for target in named.values() for f in target.abi.functions_by_signature.values()
            if f.is_view and not f.input_types and len(f.output_types) == 1
            and f.output_types[0] in ("bool", "uint256", "address", "uint8", "uint64")]


@_session
def handle_show(args: argparse.Namespace, s: _Session) -> int:
    _summary(s, s.proposal(args.id))
    return 0


@_session
def handle_sign(args: argparse.Namespace, s: _Session) -> int:
    record = s.proposal(args.id)
    _check_chain(s, record)
    if args.typed_data:
        print_typed_data(record.tx)
        return 0
    state = _summary(s, record)
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: nothing to sign")
    if record.tx.nonce < state.nonce:
        raise InputError(f"nonce {record.tx.nonce} is already used (the Safe is at {state.nonce}): this proposal "
                         "can never execute", hint="create it again at the current nonce")
    given = given_signature(args)
    if given is not None:
        signature = accept_signature(record.tx, given, state)
        confirm(args, f"store this signature of Safe tx {record.safe_tx_hash} by {signature.owner}?")
    else:
        account = load_signer(args)
        if not state.is_owner(account.address):
            raise InputError(f"{account.address} is not an owner of the Safe {state.address}: signature refused",
                             hint="sign with one of its owners' keys: " + ", ".join(state.owners))
        confirm(args, f"sign Safe tx {record.safe_tx_hash} as {account.address}?")
        signature = sign(record.tx, account)
    added = s.txs.add_signature(record, signature)
    s.audit.append(AuditKind.SIGNATURE, signature.owner, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                         "signature_kind": signature.kind, "new": added,
                                                         "made_elsewhere": given is not None})
    count = len(s.txs.get(record.id).signatures)
    print(f"{'signed' if added else 'already signed'} by {signature.owner}: {count} of {state.threshold}")
    return 0


def _check_chain(s: _Session, record: SafeTxRecord) -> None:
    if record.tx.chain_id != s.config.chain.chain_id or record.tx.safe.lower() != s.config.safe.address.lower():
        raise InputError(f"proposal {record.id} is for chain {record.tx.chain_id}, Safe {record.tx.safe}; the config "
                         f"is chain {s.config.chain.chain_id}, Safe {s.config.safe.address}")


@_session
def handle_execute(args: argparse.Namespace, s: _Session) -> int:
    record = s.proposal(args.id)
    _check_chain(s, record)
    state = _summary(s, record)
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: not executed")
    if record.tx.nonce != state.nonce:
        raise InputError(f"proposal {record.id} is for nonce {record.tx.nonce}, the Safe is at {state.nonce}",
                         hint="only the transaction at the Safe's current nonce can execute")
    valid = s.safe.check_signatures(record.tx, record.signatures, state)
    if len(valid) < state.threshold:
        raise InputError(f"{len(valid)} valid owner signature(s), the Safe needs {state.threshold}",
                         hint=f"more owners run `onguard proposals sign {record.id}`")
    _refuse_exhausting(ladders(s.config, s.txs, state, s.safe), record.tx.nonce, args.force, "execute it")
    relayer = load_signer(args)
    problem = s.safe.simulate(record.tx, valid, relayer.address)
    if problem is not None:
        raise InputError(f"execTransaction would fail: {problem}")
    confirm(args, f"execute Safe tx {record.safe_tx_hash} from {relayer.address}?")
    receipt = s.safe.execute(record.tx, valid, relayer)
    tx_hash, block = receipt["transactionHash"].to_0x_hex(), int(receipt["blockNumber"])
    s.txs.set_status(record, TxStatus.EXECUTED, tx_hash=tx_hash, block_number=block)
    s.audit.append(AuditKind.EXECUTION, relayer.address, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                         "tx_hash": tx_hash, "block": block,
                                                         "signers": [v.owner for v in valid]})
    print(f"executed in {tx_hash} (block {block}, gas {receipt['gasUsed']})")
    return 0


@_session
def handle_reject(args: argparse.Namespace, s: _Session) -> int:
    record = s.proposal(args.id)
    if record.status != TxStatus.PENDING:
        raise InputError(f"proposal {record.id} is {record.status}: nothing to reject")
    s.txs.set_status(record, TxStatus.REJECTED, note=args.reason)
    s.audit.append(AuditKind.REJECTION, getpass.getuser(), {"proposal": record.id, "reason": args.reason,
                                                            "safe_tx_hash": record.safe_tx_hash})
    print(f"proposal {record.id} rejected (signatures already given stay valid on chain until nonce "
          f"{record.tx.nonce} is used)")
    return 0


def export_payload(record: SafeTxRecord) -> dict[str, Any]:
    """The Safe Transaction Service's multisig-transaction fields, plus safe and chainId so a file cannot be taken
    to another chain unnoticed."""
    tx = record.tx
    return {"safe": tx.safe, "chainId": tx.chain_id, "to": tx.to, "value": str(tx.value), "data": "0x" + tx.data.hex(),
            "operation": tx.operation, "safeTxGas": str(tx.safe_tx_gas), "baseGas": str(tx.base_gas),
            "gasPrice": str(tx.gas_price), "gasToken": tx.gas_token, "refundReceiver": tx.refund_receiver,
            "nonce": tx.nonce, "contractTransactionHash": record.safe_tx_hash,
            "sender": record.signatures[0].owner if record.signatures else None,
            "signature": "0x" + encode_signatures(record.signatures).hex() if record.signatures else None,
            "origin": record.purpose}


@_session
def handle_export(args: argparse.Namespace, s: _Session) -> int:
    text = json.dumps(export_payload(s.proposal(args.id)), indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
        print(f"written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


@_session
def handle_import(args: argparse.Namespace, s: _Session) -> int:
    file = str(args.file)
    try:
        item = json.loads(args.file.read_text())
        if not isinstance(item, dict):
            raise ValueError
    except (OSError, ValueError):
        raise InputError("not a JSON proposal file", file=file,
                         hint="write it with `onguard proposals export`") from None
    config = s.config
    if item.get("chainId", config.chain.chain_id) != config.chain.chain_id:
        raise InputError(f"the file is for chain {item['chainId']}, the config for chain {config.chain.chain_id}: "
                         "refused", file=file, field="chainId")
    if str(item.get("safe", config.safe.address)).lower() != config.safe.address.lower():
        raise InputError(f"the file is for the Safe {item['safe']}, not {config.safe.address}", file=file,
                         field="safe")
    try:
        tx = SafeTxData(safe=config.safe.address, chain_id=config.chain.chain_id, to=to_checksum_address(item["to"]),
                        value=int(item["value"]), data=bytes.fromhex(str(item["data"] or "0x").removeprefix("0x")),
                        operation=int(item["operation"]), safe_tx_gas=int(item["safeTxGas"]),
                        base_gas=int(item["baseGas"]), gas_price=int(item["gasPrice"]),
                        gas_token=to_checksum_address(item["gasToken"]),
                        refund_receiver=to_checksum_address(item["refundReceiver"]), nonce=int(item["nonce"]))
        claimed = str(item["contractTransactionHash"]).lower()
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"a field is missing or malformed ({exc})", file=file,
                         hint="expected the Safe Transaction Service fields written by `onguard proposals export`") \
            from None
    if tx.safe_tx_hash_hex != claimed:
        raise InputError("contractTransactionHash does not match the transaction's fields: the file was altered "
                         "(or made for another Safe or chain); refused", file=file, field="contractTransactionHash")
    signatures = parse_signatures(tx, item["signature"]) if item.get("signature") else []
    state = s.safe.retrieve_state()
    for signature in signatures:
        if not state.is_owner(signature.owner):
            raise InputError(f"a signature recovers to {signature.owner}, not an owner of the Safe: signed for "
                             "another chain id, another Safe or other content; refused", file=file,
                             field="signature")
    valid = s.safe.check_signatures(tx, signatures, state)
    if len(valid) != len(signatures):
        raise InputError("an approved-hash signature is not approved on chain", file=file, field="signature")
    record = s.txs.by_hash(TxKind.PROPOSAL, tx.safe_tx_hash_hex) or s.txs.add(
        TxKind.PROPOSAL, tx, purpose=str(item.get("origin") or "imported"), proposer=f"import:{args.file.name}")
    added = [sig.owner for sig in valid if s.txs.add_signature(record, sig)]
    for owner in added:
        s.audit.append(AuditKind.SIGNATURE, owner, {"proposal": record.id, "safe_tx_hash": record.safe_tx_hash,
                                                   "imported_from": args.file.name})
    print(f"proposal {record.id}: {len(added)} new signature(s) imported"
          + (f" ({', '.join(added)})" if added else ""))
    return 0
