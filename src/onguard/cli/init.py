"""`onguard init`: scaffolds onguard.toml and a policies/ folder for a protocol from its contracts' ABIs — every
section commented, starter policies on what the ABIs show is privileged or moves value, and a starter action for
each pause function found — so that `onguard policies check` passes on what it writes, before anyone edits it."""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from onguard.chain.abi import ContractAbi, EventAbi, FunctionAbi, load_abi
from onguard.config import ENV_NAME
from onguard.errors import InputError
from onguard.units import parse_address

CONFIG_FILE = "onguard.toml"
POLICIES_DIR = "policies"
DEFAULT_KEY_ENV = "ONGUARD_GUARDIAN_KEY"
CONTRACT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CONTRACT_FORMAT = "NAME=ADDRESS:ABI_PATH, e.g. vault=0x…:abis/Vault.json"

# Functions only an admin should call: roles, ownership, upgrades, pausing and the like.
PRIVILEGED_NAMES = frozenset({
    "grantRole", "revokeRole", "setRoleAdmin", "transferOwnership", "renounceOwnership", "setOwner", "changeAdmin",
    "setAdmin", "upgradeTo", "upgradeToAndCall", "upgrade", "upgradeAndCall", "setImplementation", "setAuthorizer",
    "pause", "unpause", "setPaused", "setPause", "pauseAll", "unpauseAll", "emergencyPause",
})
# Events that move value out, most telling first, and the argument names that carry the amount.
OUTFLOW_EVENTS = tuple(re.compile(word, re.IGNORECASE) for word in ("withdraw", "redeem", "borrow", "transfer"))
AMOUNT_NAMES = ("assets", "amount", "value", "wad", "shares")
GROUP_NAMES = ("receiver", "to", "dst", "recipient", "owner", "from", "src")
# Pause functions a starter action calls: no arguments, or one bool set to true.
PAUSE_NO_ARGS = ("pause", "pauseAll", "emergencyPause")
PAUSE_WITH_BOOL = re.compile(r"^set\w*Paused?$")
# Views that say whether the contract is paused, and the field of a struct result that does.
PAUSED_VIEWS = ("paused()", "isPaused()", "getPausedState()")


@dataclass(frozen=True, slots=True)
class ContractSpec:
    name: str
    address: str
    abi_path: Path
    abi: ContractAbi


@dataclass(frozen=True, slots=True)
class StarterAction:
    name: str
    contract: str
    call: str
    args: str | None  # the TOML array, when the call takes arguments
    done_when: str
    undo: str | None


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("init", help="write a starter onguard.toml and policies/ from your contracts' ABIs")
    parser.add_argument("--rpc-url", required=True, help="the node onguard reads (http:// or https://)")
    parser.add_argument("--chain-id", required=True, help="the chain's id (1 for Ethereum mainnet)")
    parser.add_argument("--safe", required=True, help="the Safe that holds the pauser role on your contracts")
    parser.add_argument("--contract", action="append", required=True, metavar="NAME=ADDRESS:ABI_PATH",
                        help="a contract to watch (repeat): its name in policies, its address, its ABI or artifact")
    parser.add_argument("--guardian-module", metavar="ADDR",
                        help="the GuardianModule (`onguard module deploy` prints it); without it, the starter "
                             "actions are pre-signed until you add it")
    parser.add_argument("--key-env", default=DEFAULT_KEY_ENV,
                        help=f"the environment variable the guardian key is read from (default: {DEFAULT_KEY_ENV})")
    parser.add_argument("--out", type=Path, default=Path("."), help="the folder to write into (default: .)")
    parser.set_defaults(handler=handle_init)


def handle_init(args: argparse.Namespace) -> int:
    rpc_url, chain_id, safe, module = _chain_and_safe(args)
    contracts = _contracts(args.contract)
    if not ENV_NAME.match(args.key_env):
        raise InputError("must be the NAME of an environment variable, not a key", field="--key-env")
    out: Path = args.out
    actions = [action for contract in contracts if (action := _starter_action(contract)) is not None]
    files = {out / CONFIG_FILE: _config_text(out, rpc_url, chain_id, safe, module, args.key_env, contracts,
                                             actions)}
    for contract in contracts:
        for policy_id, text in _starter_policies(contract, safe, actions):
            files[out / POLICIES_DIR / f"{policy_id}.toml"] = text
    for path in files:  # all checked before any is written: a refusal leaves nothing half-written
        if path.exists():
            raise InputError("already exists: onguard init never overwrites a file", file=str(path),
                             hint="move it away, or give another folder with --out")
    (out / POLICIES_DIR).mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path}")
    for contract in contracts:
        if not any(action.contract == contract.name for action in actions):
            print(f"note: no starter action for {contract.name}: its ABI has no pause()/setPaused(bool)-style "
                  f"function with a view that says it is paused ({', '.join(PAUSED_VIEWS)})")
    print(f"next: `onguard policies check --config {out / CONFIG_FILE}`, review every file, then "
          f"`onguard module plan`" + ("" if module else " (after `onguard module deploy --safe " + safe + "`)"))
    return 0


def _chain_and_safe(args: argparse.Namespace) -> tuple[str, int, str, str | None]:
    if not args.rpc_url.startswith(("http://", "https://")):
        raise InputError(f"{args.rpc_url!r} is not an http(s) URL", field="--rpc-url")
    try:
        chain_id = int(args.chain_id)
    except ValueError:
        raise InputError(f"{args.chain_id!r} is not a whole number", field="--chain-id",
                         hint="the chain's id, e.g. 1 for Ethereum mainnet") from None
    if chain_id <= 0:
        raise InputError(f"{chain_id} is not a chain id", field="--chain-id", hint="a positive whole number")
    module = _address(args.guardian_module, "--guardian-module") if args.guardian_module else None
    return args.rpc_url, chain_id, _address(args.safe, "--safe"), module


def _address(value: str, field: str) -> str:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise InputError(str(exc), field=field) from None


def _contracts(texts: list[str]) -> list[ContractSpec]:
    contracts = [_contract(text) for text in texts]
    names = [contract.name for contract in contracts]
    for name in names:
        if names.count(name) > 1:
            raise InputError(f"the name {name!r} is given twice", field="--contract", hint="one name per contract")
    return contracts


def _contract(text: str) -> ContractSpec:
    name, equals, rest = text.partition("=")
    address, colon, abi_path = rest.partition(":")
    if not (equals and colon and abi_path):
        raise InputError(f"{text!r} is not {CONTRACT_FORMAT}", field="--contract")
    if not CONTRACT_NAME.match(name):
        raise InputError(f"{name!r} is not a contract name", field="--contract",
                         hint="lower-case letters, digits and _, starting with a letter (e.g. vault)")
    path = Path(abi_path)
    return ContractSpec(name=name, address=_address(address, "--contract"), abi_path=path, abi=load_abi(path))


# ---- what the ABIs show ------------------------------------------------------------------------------------------

def _privileged(abi: ContractAbi) -> list[FunctionAbi]:
    return [f for f in (abi.function(s) for s in abi.function_signatures())
            if f.name in PRIVILEGED_NAMES and not f.is_view]


def _outflow_event(abi: ContractAbi) -> tuple[EventAbi, str] | None:
    """The most telling value-moving event with an unsigned amount, and that amount's argument name."""
    for pattern in OUTFLOW_EVENTS:
        for name in abi.event_names():
            event = abi.event(name)
            if event is None or not pattern.search(name):
                continue
            amounts = [arg for arg in event.names if re.fullmatch(r"uint\d*", event.type_of(arg))]
            if amounts:
                return event, next((a for a in AMOUNT_NAMES if a in amounts), amounts[0])
    return None


def _starter_action(contract: ContractSpec) -> StarterAction | None:
    done_when = _paused_view(contract.abi)
    if done_when is None:
        return None
    abi, name = contract.abi, f"pause_{contract.name}"
    undo = "unpause()" if abi.has_function("unpause()") else None
    for function in PAUSE_NO_ARGS:
        if abi.has_function(f"{function}()"):
            return StarterAction(name, contract.name, f"{function}()", None, done_when, undo)
    for signature in abi.function_signatures():
        function = abi.function(signature)
        if PAUSE_WITH_BOOL.match(function.name) and function.input_types == ("bool",):
            return StarterAction(name, contract.name, signature, "[true]", done_when, undo)
    return None


def _paused_view(abi: ContractAbi) -> str | None:
    """A read that is true once paused: `paused()`, or a struct result's `paused` field."""
    for signature in PAUSED_VIEWS:
        if not abi.has_function(signature):
            continue
        function = abi.function(signature)
        if function.output_types == ("bool",):
            return signature
        outputs = next((item.get("outputs", []) for item in abi.raw
                        if item.get("type") == "function" and item.get("name") == function.name
                        and not item.get("inputs")), [])
        if any(out.get("name") == "paused" and out.get("type") == "bool" for out in outputs):
            return f"{signature}.paused"
    return None


# ---- the files ---------------------------------------------------------------------------------------------------

def _starter_policies(contract: ContractSpec, safe: str, actions: list[StarterAction]) -> list[tuple[str, str]]:
    """(policy id, TOML) of the contract's starters. They only alert: a starter pauses nothing until a human has
    checked it on past blocks and switched its response to the action."""
    action = next((a.name for a in actions if a.contract == contract.name), "<an action of onguard.toml>")
    response = ('response = ["alert"]   # only recorded and logged; once `onguard policies test` shows it quiet\n'
                f'# response = ["{action}"]   # on ordinary use\n')
    policies = []
    if privileged := _privileged(contract.abi):
        policies.append(_admin_calls_policy(contract.name, privileged, safe, response))
    if outflow := _outflow_event(contract.abi):
        policies.append(_outflow_policy(contract.name, *outflow, response))
    return policies


def _admin_calls_policy(name: str, privileged: list[FunctionAbi], safe: str, response: str) -> tuple[str, str]:
    functions = ",\n             ".join(json.dumps(f.signature) for f in privileged)
    return f"{name}-admin-calls", f"""\
# A call to one of {name}'s admin functions from anyone but the Safe: a stolen admin key,
# or a role granted where it should not be. Add any other legitimate sender (a timelock) to allow_from.
id = "{name}-admin-calls"
description = "An admin function of {name} called by a sender other than the Safe"
kind = "call"
severity = "high"
{response}
[match]
contract = "{name}"
functions = [{functions}]
allow_from = ["{safe}"]   # the Safe
"""


def _outflow_policy(name: str, event: EventAbi, amount: str, response: str) -> tuple[str, str]:
    group = next((g for g in GROUP_NAMES if g in event.names and event.type_of(g) == "address"), None)
    grouping = f'group_by = "{group}"   # one sum per {group}\n' if group else ""
    return f"{name}-large-outflow", f"""\
# Large amounts leaving {name} ({event.name} events) over 5 blocks. The threshold is a
# placeholder: set it to what would be a drain for you (in the token's smallest unit), then
# `onguard policies test` it on past blocks.
id = "{name}-large-outflow"
description = "{event.name} events of {name} sum to more than the threshold within 5 blocks"
kind = "event"
severity = "critical"
{response}cooldown = "1h"

[match]
contract = "{name}"
event = "{event.name}"

[aggregate]
function = "sum"
of = "{amount}"
window_blocks = 5
{grouping}
[trigger]
condition = "value > 1_000_000e18"
"""


def _config_text(out: Path, rpc_url: str, chain_id: int, safe: str, module: str | None, key_env: str,
                 contracts: list[ContractSpec], actions: list[StarterAction]) -> str:
    module_line = (f'guardian_module = "{module}"   # the GuardianModule the guardian key calls' if module else
                   f'# `onguard module deploy --safe {safe}` prints the GuardianModule\'s address:\n'
                   '# put it here, and remove the via = "presigned" lines under [actions]\n'
                   '# guardian_module = "0x…"')
    sections = [f"""# onguard.toml, written by `onguard init`: review every line. Paths are relative to this file.
# The reference of every field: the README's "Guarding your protocol".

[chain]
rpc_url = "{rpc_url}"   # HTTP(S): the node onguard reads
chain_id = {chain_id}
poll_interval = "1s"                      # head polling when there is no ws_url subscription
start_block = "latest"                    # where to begin when there is no checkpoint yet

[safe]
address = "{safe}"   # the Safe that holds the pauser role on your contracts
{module_line}

[guardian]
key_env = "{key_env}"   # the guardian key is read from this environment variable, never from this file
"""]
    for contract in contracts:
        abi = Path(os.path.relpath(contract.abi_path.resolve(), out.resolve())).as_posix()
        sections.append(f"""[contracts.{contract.name}]   # the name policies and actions use
address = "{contract.address}"
abi = {json.dumps(abi)}
""")
    for action in actions:
        lines = [f"[actions.{action.name}]   # a pre-authorised call, and how to tell it already holds",
                 f'contract = "{action.contract}"', f'call = "{action.call}"']
        if action.args:
            lines.append(f"args = {action.args}")
        lines.append(f'done_when = "{action.done_when}"')
        if action.undo:
            lines.append(f'undo = "{action.undo}"   # the owners end it (`onguard recover`), never onguard')
        if module is None:
            lines.append('via = "presigned"   # until the GuardianModule is deployed: the owners pre-sign it '
                         '(`onguard presign`)')
        sections.append("\n".join(lines) + "\n")
    sections.append(f"""[policies]
dir = "{POLICIES_DIR}"   # one policy per file; `onguard policies check` validates them

[state]
database = "onguard.db"   # SQLite: incidents, responses, checkpoint
# database_url = "postgresql://onguard@db-host:5432/onguard"   # instead: PostgreSQL, shared by replicas
#                           (the password in ONGUARD_DATABASE_PASSWORD or PGPASSWORD, never in this file)

# [response]              # optional: fees and timing of the pause transactions (see the README)
# max_fee_per_gas = "500e9"

# [mempool]               # optional: pre-emption, pausing before a pending attack is mined
# enabled = true
# ws_url = "wss://your-node.example"
""")
    return "\n".join(sections)
