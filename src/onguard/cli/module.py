"""`onguard module plan|propose|deploy`: set up the GuardianModule from onguard.toml — what will be allowlisted
(each call's exact calldata hash) against what the module holds, one Safe proposal (a MultiSend batch) that makes
the module hold it, and the module's deployment for a Safe."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import Web3Exception

from onguard.allowlist import DEFAULT_COOLDOWN, EntryState, ModuleReader, ModuleView, hex32, planned_calls, \
    selector_text
from onguard.chain.module import MODULE_ARTIFACT, encode_add_guardian, encode_allow_action, encode_remove_guardian, \
    encode_revoke_action, safe_abi
from onguard.chain.keys import load_guardian_account
from onguard.chain.rpc import Rpc
from onguard.cli.signing import add_key_arguments, confirm, connect, load_signer
from onguard.config import Config, load_config
from onguard.errors import ChainError, InputError, ToolchainError
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxStore, TxKind
from onguard.incidents.store import IncidentStore
from onguard.safe.tx import BatchCall, SafeTxData
from onguard.units import parse_address, parse_duration
from onguard.chain.transport import redacted_url


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("module", help="set up the GuardianModule: plan, propose (a Safe transaction), deploy")
    steps = parser.add_subparsers(dest="module_command", metavar="STEP", required=True)
    plan = steps.add_parser("plan", help="what will be allowlisted (exact calldata hashes) and what the module holds")
    propose = steps.add_parser("propose", help="one Safe proposal that makes the module hold the plan")
    for sub in (plan, propose):
        sub.add_argument("--config", default="onguard.toml", help="path to onguard.toml (default: ./onguard.toml)")
        sub.add_argument("--guardian", help="the guardian key's address (default: the key the config names)")
        sub.add_argument("--cooldown", help=f"seconds (or \"1h\") between two executions of an action; default: "
                                            f"what the module holds, else {DEFAULT_COOLDOWN}")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=handle_plan)
    propose.add_argument("--remove-guardian", action="append", default=[], metavar="ADDR",
                         help="also remove this guardian key (repeat)")
    propose.add_argument("--purpose", default="set up the guardian module from onguard.toml",
                         help="why: shown to every signer")
    propose.add_argument("--by", default=None, help="who proposes it (default: the login name)")
    propose.add_argument("--nonce", type=int, help="the Safe nonce (default: the Safe's current nonce)")
    propose.set_defaults(handler=handle_propose)
    deploy = steps.add_parser("deploy", help="deploy a GuardianModule for a Safe from the compiled contract")
    deploy.add_argument("--safe", required=True, help="the Safe the module serves")
    deploy.add_argument("--rpc-url", required=True, help="the node to deploy through (http:// or https://)")
    add_key_arguments(deploy)
    deploy.set_defaults(handler=handle_deploy)


def _address(value: str, field: str) -> str:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise InputError(str(exc), field=field) from None


def _guardian(args: argparse.Namespace, config: Config) -> str:
    if args.guardian:
        return _address(args.guardian, "--guardian")
    return load_guardian_account(config.guardian_key).address


def _cooldown(args: argparse.Namespace) -> int | None:
    if args.cooldown is None:
        return None
    try:
        seconds = parse_duration(args.cooldown)
    except ValueError as exc:
        raise InputError(str(exc), field="--cooldown", hint="seconds, or \"10m\", \"1h\"") from None
    if seconds != int(seconds) or seconds <= 0:
        raise InputError(f"{args.cooldown!r} is not a whole number of seconds", field="--cooldown")
    return int(seconds)


def _read(config: Config, guardian: str) -> ModuleView:
    async def read() -> ModuleView:
        rpc = Rpc(config.chain.rpc_url)
        try:
            chain_id = await rpc.chain_id()
            if chain_id != config.chain.chain_id:
                raise InputError(f"the node is on chain {chain_id}, the config says {config.chain.chain_id}",
                                 file=str(config.path), field="chain.chain_id")
            return await ModuleReader(rpc, config).read(guardian)
        finally:
            await rpc.close()
    return asyncio.run(read())


def _wanted_cooldown(requested: int | None, on_chain: int) -> int:
    return requested if requested is not None else (on_chain or DEFAULT_COOLDOWN)


def _check_cooldown(view: ModuleView, requested: int | None) -> None:
    if requested is not None and view.module_deployed and requested < view.min_cooldown:
        raise InputError(f"{requested} s is below the module's MIN_COOLDOWN ({view.min_cooldown} s)",
                         field="--cooldown", hint=f"give at least {view.min_cooldown}")


def _state(entry_state: EntryState, cooldown_differs: bool) -> str:
    if entry_state == EntryState.MATCHES and cooldown_differs:
        return "allowlisted with this exact calldata, another cooldown"
    return entry_state.value


def plan_document(config: Config, view: ModuleView, cooldown: int | None) -> dict[str, Any]:
    entries = []
    for entry in view.entries:
        call = entry.call
        wanted = _wanted_cooldown(cooldown, entry.on_chain.cooldown)
        entries.append({
            "action": call.action, "contract": call.contract, "target": call.target, "function": call.function,
            "arguments": {name: str(value) for name, value in call.arguments}, "calldata": hex32(call.calldata),
            "calldata_hash": hex32(call.calldata_hash), "cooldown": wanted,
            "on_chain": {"allowed": entry.on_chain.allowed, "calldata_hash": hex32(entry.on_chain.calldata_hash),
                         "cooldown": entry.on_chain.cooldown},
            "state": entry.state.name.lower(),
            "cooldown_differs": entry.on_chain.allowed and entry.on_chain.cooldown != wanted,
        })
    return {
        "safe": view.safe, "module": view.module, "module_deployed": view.module_deployed,
        "module_enabled": view.module_enabled, "min_cooldown": view.min_cooldown,
        "guardian": view.guardian, "guardian_registered": view.guardian_registered,
        "other_guardians": None if view.guardians is None else [g for g in view.guardians
                                                                  if g.lower() != view.guardian.lower()],
        "entries": entries,
        "extra": None if view.extras is None else [
            {"target": e.target, "selector": hex32(e.selector), "function": selector_text(config, e.target, e.selector),
             "calldata_hash": hex32(e.on_chain.calldata_hash), "cooldown": e.on_chain.cooldown}
            for e in view.extras],
        "warnings": list(view.warnings),
    }


def handle_plan(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    cooldown = _cooldown(args)
    view = _read(config, _guardian(args, config))
    _check_cooldown(view, cooldown)
    document = plan_document(config, view, cooldown)
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    mark = lambda ok: "ok " if ok else "-- "  # noqa: E731
    print(f"Safe {view.safe}, guardian module {view.module}")
    if not view.module_deployed:
        print("  -- no contract at the module's address: deploy it (`onguard module deploy --safe ...`)")
    else:
        print(f"  {mark(view.module_enabled)}module {'enabled' if view.module_enabled else 'NOT enabled'} on the Safe")
    print(f"  {mark(view.guardian_registered)}guardian {view.guardian} "
          f"{'registered' if view.guardian_registered else 'NOT registered'}")
    for other in document["other_guardians"] or []:
        print(f"  !! another guardian key is registered: {other} (remove it with --remove-guardian {other})")
    print("allowlist (what onguard will send, and what the module holds):")
    for entry, row in zip(view.entries, document["entries"], strict=True):
        call = entry.call
        print(f"  action {call.action}: {call.text}")
        print(f"    target        {call.target} ({call.contract})")
        print(f"    function      {call.function}")
        if call.arguments:
            print(f"    arguments     {', '.join(f'{n}={v}' for n, v in call.arguments)}")
        print(f"    calldata      {row['calldata']}")
        print(f"    calldata hash {row['calldata_hash']}   (keccak256 of the calldata)")
        print(f"    cooldown      {row['cooldown']} s")
        on_chain = _state(entry.state, row["cooldown_differs"])
        if entry.state == EntryState.DIFFERENT_HASH:
            on_chain += f" (holds {row['on_chain']['calldata_hash']})"
        if entry.on_chain.allowed and row["cooldown_differs"]:
            on_chain += f"; cooldown on chain {entry.on_chain.cooldown} s"
        print(f"    on chain      {on_chain}")
    if document["extra"] is None:
        print("  (entries outside this config could not be listed)")
    for extra in document["extra"] or []:
        print(f"  extra on chain: {extra['function']} at {extra['target']} (hash {extra['calldata_hash']}): no "
              "configured action calls it; `onguard module propose` revokes it")
    for warning in view.warnings:
        print(f"warning: {warning}")
    return 0


def proposal_calls(config: Config, view: ModuleView, cooldown: int | None,
                   remove: list[str]) -> list[tuple[str, BatchCall]]:
    """What the Safe must call so that the module holds the plan: (description, call), in order."""
    module, safe = view.module, view.safe
    calls: list[tuple[str, BatchCall]] = []
    if not view.module_enabled:
        calls.append((f"enable the module {module} on the Safe",
                      BatchCall(safe, safe_abi().encode_call("enableModule(address)", module))))
    if not view.guardian_registered:
        calls.append((f"add the guardian {view.guardian}", BatchCall(module, encode_add_guardian(view.guardian))))
    registered = {g.lower() for g in view.guardians or ()}
    for address in remove:
        if address.lower() == view.guardian.lower():
            raise InputError(f"{address} is the guardian this config uses", field="--remove-guardian",
                             hint="remove another key, or give --guardian the key that replaces it")
        if view.guardians is None or address.lower() in registered:
            calls.append((f"remove the guardian {address}", BatchCall(module, encode_remove_guardian(address))))
    allowed: set[tuple[str, bytes]] = set()
    for entry in view.entries:
        wanted = _wanted_cooldown(cooldown, entry.on_chain.cooldown)
        call = entry.call
        key = (call.target.lower(), call.selector)
        if key in allowed or entry.state == EntryState.MATCHES and entry.on_chain.cooldown == wanted:
            continue  # one entry per (target, selector): actions sharing a call share its allowance
        allowed.add(key)
        calls.append((f"allow {call.text} (hash {hex32(call.calldata_hash)}, cooldown {wanted} s) for action "
                      f"{call.action}",
                      BatchCall(module, encode_allow_action(call.target, call.selector, wanted, call.calldata_hash))))
    for extra in view.extras or ():
        calls.append((f"revoke {selector_text(config, extra.target, extra.selector)} (no configured action calls "
                      "it)", BatchCall(module, encode_revoke_action(extra.target, extra.selector))))
    return calls


def handle_propose(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    cooldown = _cooldown(args)
    remove = [_address(a, "--remove-guardian") for a in args.remove_guardian]
    planned_calls(config)  # refuses conflicting actions before anything is read
    view = _read(config, _guardian(args, config))
    if not view.module_deployed:
        raise InputError(f"no contract at safe.guardian_module ({view.module})", file=str(config.path),
                         field="safe.guardian_module", hint="deploy it: onguard module deploy --safe "
                                                            f"{view.safe} --rpc-url URL")
    _check_cooldown(view, cooldown)
    calls = proposal_calls(config, view, cooldown, remove)
    if not calls:
        print("nothing to propose: the module already holds exactly what onguard.toml needs")
        return 0
    safe = connect(config)
    nonce = args.nonce if args.nonce is not None else safe.retrieve_state().nonce
    multisend = safe.retrieve_multisend() if len(calls) > 1 else None
    tx = SafeTxData.batch(config.safe.address, config.chain.chain_id, [c for _, c in calls], nonce,
                          **({"multisend": multisend} if multisend else {}))
    store = IncidentStore(config.state)
    try:
        by = args.by or getpass.getuser()
        record = SafeTxStore(store.database).add(TxKind.PROPOSAL, tx, purpose=args.purpose, proposer=by)
        AuditLog(store.database).append(AuditKind.PROPOSAL, by, {
            "proposal": record.id, "purpose": args.purpose, "incident_id": None, "safe_tx_hash": record.safe_tx_hash,
            "to": tx.to, "data": tx.data, "nonce": nonce, "operation": tx.operation,
            "steps": [text for text, _ in calls]})
    finally:
        store.close()
    print(f"proposal {record.id} created: Safe tx {record.safe_tx_hash} at nonce {nonce}, "
          + (f"a batch of {len(calls)} calls through MultiSendCallOnly {tx.to}:" if tx.is_batch else "one call:"))
    for number, (text, _) in enumerate(calls, 1):
        print(f"  {number}. {text}")
    print(f"next: owners review and sign it (`onguard proposals show {record.id}`, `onguard proposals sign "
          f"{record.id}`), then `onguard proposals execute {record.id}`; or `onguard proposals export "
          f"{record.id}` for the Safe app")
    return 0


def handle_deploy(args: argparse.Namespace) -> int:
    safe = _address(args.safe, "--safe")
    if not args.rpc_url.startswith(("http://", "https://")):
        raise InputError(f"{args.rpc_url!r} is not an http(s) URL", field="--rpc-url")
    w3 = Web3(Web3.HTTPProvider(args.rpc_url))
    try:
        if not w3.eth.get_code(safe):
            raise InputError(f"no contract at {safe}: not a Safe", field="--safe")
        version = w3.eth.contract(address=safe, abi=safe_abi().raw).functions.VERSION().call()
    except (Web3Exception, ValueError, OSError) as exc:
        raise ChainError(f"reading the Safe {safe} through {redacted_url(args.rpc_url)}: {exc}",
                         hint="check --rpc-url and --safe") from None
    try:
        artifact = json.loads(MODULE_ARTIFACT.read_text())
    except FileNotFoundError:
        raise ToolchainError(f"the compiled GuardianModule is missing ({MODULE_ARTIFACT})",
                             hint="build the contracts: ./onguard or ./run-tests compile them with forge") from None
    deployer = load_signer(args)
    print(f"deploying GuardianModule for the Safe {safe} (version {version}) on chain {w3.eth.chain_id} "
          f"from {deployer.address}")
    confirm(args, "deploy it?")
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"]["object"])
    try:
        tx = factory.constructor(safe).build_transaction({
            "from": deployer.address, "nonce": w3.eth.get_transaction_count(deployer.address, "pending"),
            "chainId": w3.eth.chain_id})
        sent = w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=120)
    except (Web3Exception, ValueError) as exc:
        raise InputError(f"the deployment was refused: {exc}",
                         hint="check the deployer's balance and the node") from None
    if receipt["status"] != 1:
        raise ChainError(f"the deployment {sent.to_0x_hex()} reverted")
    module = to_checksum_address(receipt["contractAddress"])
    print(f"GuardianModule deployed at {module} (tx {sent.to_0x_hex()}, block {receipt['blockNumber']})")
    print("put this in onguard.toml, under [safe]:")
    print(f'guardian_module = "{module}"')
    print("then: onguard module plan, onguard module propose")
    return 0
