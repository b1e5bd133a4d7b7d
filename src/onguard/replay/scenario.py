"""Reads a replay scenario file (TOML) into a frozen Scenario, with errors that name the file and the field.

The format is documented in tests/scenarios/README.md. Calls are parsed here (`contract.function(arg, …)`) and
their contract and function names checked against the demo protocol's compiled ABIs, so a typo is reported
before any chain is started; argument values (actors, contracts, helpers) are resolved by the runner, on chain.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from onguard.demo.world import artifact
from onguard.errors import InputError, ToolchainError
from onguard.tomlfields import Table, read_toml

EXPECTATIONS = ("stopped-before-inclusion", "stopped", "no-trip")
MINING_MODES = ("manual", "automine", "interval")
ACTORS = ("attacker", "alice", "bob", "carol", "updater", "deployer", "safe")
# The demo protocol's contracts, by the names scenarios (and onguard.toml) use, with their compiled artifact.
WORLD_CONTRACTS = {"vault": "Vault", "asset": "TestToken", "collateral": "TestToken", "oracle": "PriceOracle",
                   "breaker": "CircuitBreaker", "module": "GuardianModule"}
HELPERS = ("shares", "balance", "keccak")  # shares(actor), balance(token, actor), keccak('TEXT')
DEFAULT_GAS = 1_000_000   # fixed, so a refused attack is still mined (and visible) instead of failing estimation
DEFAULT_AFTER_BLOCKS = 3

_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)
_DEPLOY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class ScenarioError(InputError):
    """A scenario file is malformed or refers to something that does not exist."""


@dataclass(frozen=True, slots=True)
class Fork:
    """Where the replay's chain comes from: exactly one of the three sources."""

    world: str | None            # "demo": the demo world, built fresh on a local Anvil (deterministic)
    state_file: Path | None      # an `anvil --dump-state` file, loaded into a fresh Anvil
    rpc_url: str | None          # a node to fork (`anvil --fork-url`) ...
    block: int | None            # ... at this block
    world_file: Path | None      # with state_file or rpc_url: the protocol's addresses (World.to_json)

    @property
    def source(self) -> str:
        if self.world:
            return f"world {self.world}"
        if self.state_file:
            return f"state file {self.state_file}"
        return f"{self.rpc_url} at block {self.block}"


@dataclass(frozen=True, slots=True)
class Step:
    """One transaction of the setup or the attack."""

    field: str                    # where it is written, for messages: "attack[2]"
    sender: str                   # an actor name or an address
    contract: str | None          # call: a world contract or an earlier `as` name
    function: str | None
    deploy: str | None            # deploy: the artifact name
    args: tuple[str, ...]         # argument expressions, resolved on chain by the runner
    alias: str | None             # deploy: the name later steps use for the new contract
    gas: int
    block: int                    # attack: the block offset at which it enters the mempool (setup: 0)
    to: str | None = None         # raw: a contract name or address the calldata is sent to
    calldata: bytes | None = None  # raw: the transaction's input, as written (e.g. copied from an explorer)

    @property
    def text(self) -> str:
        if self.calldata is not None:
            return f"{self.to} <- 0x{self.calldata[:4].hex()}… ({len(self.calldata)} bytes)"
        target = f"{self.contract}.{self.function}" if self.contract else f"deploy {self.deploy}"
        return f"{target}({', '.join(self.args)})"


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    name: str
    description: str
    modelled_on: str | None
    benign: bool
    expect: str
    fork: Fork
    mining: str
    block_time: int | None        # interval: seconds between blocks (anvil's evm_setIntervalMining)
    after_blocks: int             # blocks mined after the last attack step, so a late response can land
    policies: tuple[Path, ...]
    mempool: bool
    prices: dict[str, Fraction]   # token symbol -> USD per whole token
    setup: tuple[Step, ...]
    attack: tuple[Step, ...]
    holders: tuple[str, ...] = ("vault",)   # contracts whose watched-token balances are the protocol's holdings


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    root = Table(read_toml(path, ScenarioError), file=str(path), prefix="", error=ScenarioError)
    base = path.parent
    name = root.get("name", str)
    description = root.get("description", str)
    benign = root.get("benign", bool, default=False)
    modelled_on = root.get("modelled_on", str, default=None)
    if not benign and not (modelled_on or "").strip():
        raise root.fail("modelled_on", "is required for an attack scenario",
                        "name the public incident it is modelled on, e.g. \"Team Finance, October 2022\"")
    expect = root.get("expect", str, hint=f"one of: {', '.join(EXPECTATIONS)}")
    if expect not in EXPECTATIONS:
        raise root.fail("expect", f"unknown expectation {expect!r}", f"one of: {', '.join(EXPECTATIONS)}")
    if benign and expect != "no-trip":
        raise root.fail("expect", "a benign scenario must expect \"no-trip\"",
                        "set benign = false if this is an attack")
    fork = _fork(root.table("fork", hint='add [fork] with world = "demo"'), base)
    mining_table = root.table("mining", required=False)
    mining, after_blocks, block_time = "manual", DEFAULT_AFTER_BLOCKS, None
    if mining_table is not None:
        mining = mining_table.get("mode", str, default="manual")
        if mining not in MINING_MODES:
            raise mining_table.fail("mode", f"unknown mining mode {mining!r}", f"one of: {', '.join(MINING_MODES)}")
        block_time = mining_table.get("block_time", int, default=None)
        if mining == "interval":
            if block_time is None:
                raise mining_table.fail("block_time", "is required in interval mode",
                                        "seconds between blocks, e.g. block_time = 2")
            if not 1 <= block_time <= 60:
                raise mining_table.fail("block_time", "must be between 1 and 60 seconds")
        elif block_time is not None:
            raise mining_table.fail("block_time", "only interval mode has a block time", 'set mode = "interval"')
        after_blocks = mining_table.get("after_blocks", int, default=DEFAULT_AFTER_BLOCKS)
        if after_blocks < 0:
            raise mining_table.fail("after_blocks", "must not be negative")
        mining_table.finish()
    policies, mempool = _guardian(root.table("guardian"), base)
    prices = _prices(root)
    aliases: dict[str, str] = {}
    setup = tuple(_step(item, "setup", i, aliases, attack=False)
                  for i, item in enumerate(_steps(root, "setup", required=False)))
    attack_items = _steps(root, "attack", required=True)
    attack: list[Step] = []
    next_block = 0
    for index, item in enumerate(attack_items):
        steps = _attack_steps(item, index, aliases, next_block)
        attack += steps
        next_block = steps[-1].block + 1
    holders = root.get("holders", list, default=["vault"])
    for index, holder in enumerate(holders):
        if holder not in WORLD_CONTRACTS and holder not in aliases:
            raise root.fail(f"holders[{index}]", f"unknown contract {holder!r}",
                            f"one of: {', '.join(sorted({*WORLD_CONTRACTS, *aliases}))} (a contract deployed in "
                            "[[setup]] is named by its `as`)")
    if not holders:
        raise root.fail("holders", "is empty", 'holders = ["vault"] (the default) or more')
    root.finish()
    return Scenario(path=path, name=name, description=description, modelled_on=modelled_on, benign=benign,
                    expect=expect, fork=fork, mining=mining, block_time=block_time, after_blocks=after_blocks, policies=policies,
                    mempool=mempool, prices=prices, setup=setup, attack=tuple(attack),
                    holders=tuple(holders))


def scenario_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*.toml") if p.is_file())
    if not files:
        raise ScenarioError("no scenario files (*.toml) in the folder", file=str(folder),
                            hint="point it at a folder of scenarios, e.g. tests/scenarios")
    return files


def _fork(table: Table, base: Path) -> Fork:
    world = table.get("world", str, default=None)
    state_file = table.get("state_file", str, default=None)
    rpc_url = table.get("rpc_url", str, default=None)
    given = [k for k, v in (("world", world), ("state_file", state_file), ("rpc_url", rpc_url)) if v is not None]
    if len(given) != 1:
        raise table.fail(given[1] if len(given) > 1 else "world", "give exactly one of world, state_file, rpc_url",
                         'world = "demo" (built fresh), state_file = "x.json" (anvil --dump-state), or '
                         'rpc_url = "https://…" with block = N')
    if world is not None and world != "demo":
        raise table.fail("world", f"unknown world {world!r}", 'the only built-in world is "demo"')
    block = table.get("block", int, default=None)
    if rpc_url is not None:
        if not rpc_url.startswith(("http://", "https://")):
            raise table.fail("rpc_url", f"{rpc_url!r} is not an http(s) URL")
        if block is None or block < 0:
            raise table.fail("block", "is required with rpc_url (a block number)",
                             "replays must be reproducible: fork at a fixed block")
    elif block is not None:
        raise table.fail("block", "only goes with rpc_url")
    world_file = table.get("world_file", str, default=None)
    state_path = _existing(table, "state_file", base, state_file) if state_file else None
    world_path = _existing(table, "world_file", base, world_file) if world_file else None
    if world is None and world_path is None:
        raise table.fail("world_file", f"is required with {given[0]}",
                         "a JSON file of the protocol's addresses, as World.to_json() writes it")
    if world is not None and world_path is not None:
        raise table.fail("world_file", 'does not go with world = "demo" (its addresses are known)')
    table.finish()
    return Fork(world=world, state_file=state_path, rpc_url=rpc_url, block=block, world_file=world_path)


def _existing(table: Table, key: str, base: Path, value: str) -> Path:
    path = (base / value).resolve()
    if not path.is_file():
        raise table.fail(key, f"file not found: {path}", "paths are relative to the scenario file")
    return path


def _guardian(table: Table, base: Path) -> tuple[tuple[Path, ...], bool]:
    names = table.get("policies", list, hint='policies = ["policies/vault-drain.toml", …] (relative to the file)')
    if not names:
        raise table.fail("policies", "is empty", "a guardian without policies watches nothing")
    paths = []
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise table.fail(f"policies[{index}]", f"expected a file name, got {name!r}")
        path = (base / name).resolve()
        if not path.is_file():
            raise table.fail(f"policies[{index}]", f"policy file not found: {path}",
                             "paths are relative to the scenario file")
        paths.append(path)
    mempool = table.get("mempool", bool, default=True)
    table.finish()
    return tuple(paths), mempool


def _prices(root: Table) -> dict[str, Fraction]:
    hint = "give a USD price per watched token symbol, e.g. dUSD = 1.0"
    table = root.table("prices", hint=f"add [prices]: {hint}")
    assert table is not None
    prices = {}
    for symbol in table.keys():  # noqa: SIM118 (a Table, not a dict)
        value = table.get(symbol, (int, float, str))
        try:
            # str() first: a TOML float such as 0.1 is meant as the decimal it was written as.
            price = Fraction(Decimal(str(value).replace("_", "")))
        except (InvalidOperation, ValueError):
            raise table.fail(symbol, f"{value!r} is not a price", "a USD price per whole token, e.g. 1.0") from None
        if price < 0:
            raise table.fail(symbol, "a price must not be negative")
        prices[symbol] = price
    if not prices:
        raise root.fail("prices", "is empty", hint)
    table.finish()
    return prices


def _steps(root: Table, key: str, *, required: bool) -> list[Table]:
    hint = f"add [[{key}]] tables with from and call (or deploy)"
    items = root.get(key, list, hint=hint) if required else root.get(key, list, default=[])
    if required and not items:
        raise root.fail(key, "needs at least one step", hint)
    tables = []
    for index, item in enumerate(items or []):
        if not isinstance(item, dict):
            raise root.fail(f"{key}[{index}]", "expected a table", f"write steps as [[{key}]] tables")
        tables.append(Table(item, file=root.file, prefix=f"{key}[{index}]", error=ScenarioError))
    return tables


def _attack_steps(table: Table, index: int, aliases: dict[str, str], next_block: int) -> list[Step]:
    first = _step(table, "attack", index, aliases, attack=True, default_block=next_block)
    repeat = table.get("repeat", int, default=1)
    if repeat < 1:
        raise table.fail("repeat", "must be at least 1")
    if repeat > 1 and first.deploy:
        raise table.fail("repeat", "a deployment cannot be repeated")
    table.finish()
    # A repeated step enters the mempool once a block, from its `block` on: a slow drain in one line.
    return [replace(first, block=first.block + i) for i in range(repeat)]


def _step(table: Table, section: str, index: int, aliases: dict[str, str], *, attack: bool,
          default_block: int = 0) -> Step:
    sender = table.get("from", str, hint=f"an actor ({', '.join(ACTORS)}) or an address")
    if sender not in ACTORS and not _ADDRESS.match(sender):
        raise table.fail("from", f"unknown sender {sender!r}", f"an actor ({', '.join(ACTORS)}) or a 0x address")
    call_text = table.get("call", str, default=None)
    deploy_text = table.get("deploy", str, default=None)
    calldata_text = table.get("calldata", str, default=None)
    if [call_text, deploy_text, calldata_text].count(None) != 2:
        raise table.fail("call", "give exactly one of call, deploy or calldata (with to)",
                         'call = "vault.redeemFor(alice, attacker, shares(alice))", deploy = "OracleBorrowAttacker", '
                         'or to = "vault" with calldata = "0x…"')
    gas = table.parsed("gas", _gas, default=DEFAULT_GAS)
    block = default_block
    if attack:
        block = table.get("block", int, default=default_block)
        if block < 0:
            raise table.fail("block", "must not be negative (an offset from the first attack block)")
    elif table.has("block"):
        raise table.fail("block", "only attack steps have a block", "setup steps are mined before the guardian starts")
    alias = table.get("as", str, default=None)
    contract = function = deploy = None
    if calldata_text is not None:
        return _raw_step(table, section, index, sender, calldata_text, aliases, gas, block, attack)
    if table.has("to"):
        raise table.fail("to", "only a calldata step has `to`", "a call step names its contract in `call`")
    if call_text is not None:
        match = _CALL.match(call_text)
        if not match:
            raise table.fail("call", f"cannot read {call_text!r}", 'write contract.function(arg, …), '
                                                                   'e.g. "vault.withdraw(150_000e18, bob, bob)"')
        contract, function, arg_text = match.groups()
        artifact_name = WORLD_CONTRACTS.get(contract) or aliases.get(contract)
        if artifact_name is None:
            known = sorted({*WORLD_CONTRACTS, *aliases})
            raise table.fail("call", f"unknown contract {contract!r}",
                             f"one of: {', '.join(known)} (a deployed contract needs `as` in an earlier step)")
        functions = _functions(artifact_name)
        if function not in functions:
            raise table.fail("call", f"{contract} ({artifact_name}) has no function {function!r}",
                             _closest(function, functions))
        if alias is not None:
            raise table.fail("as", "only a deploy step names a new contract")
    else:
        match = _DEPLOY.match(deploy_text or "")
        if not match:
            raise table.fail("deploy", f"cannot read {deploy_text!r}", 'e.g. deploy = "OracleBorrowAttacker"')
        deploy, arg_text = match.group(1), match.group(2) or ""
        _functions(deploy, table)  # the artifact exists
        if alias is None or not _NAME.match(alias):
            raise table.fail("as", "a deploy step must name its contract (lower case)", 'e.g. as = "exploit"')
        if alias in WORLD_CONTRACTS or alias in ACTORS or alias in aliases:
            raise table.fail("as", f"{alias!r} is already a name", "pick another name for the deployed contract")
        aliases[alias] = deploy
    try:
        args = split_args(arg_text)
    except ValueError as exc:
        raise table.fail("call" if call_text is not None else "deploy", str(exc)) from None
    if not attack:
        table.finish()
    return Step(field=f"{section}[{index}]", sender=sender, contract=contract, function=function, deploy=deploy,
                args=tuple(args), alias=alias, gas=gas, block=block)


def _raw_step(table: Table, section: str, index: int, sender: str, calldata_text: str, aliases: dict[str, str],
              gas: int, block: int, attack: bool) -> Step:
    """A step given as raw calldata: what an explorer shows of a real attack transaction."""
    to = table.get("to", str, hint="the contract the calldata is sent to: a contract name or a 0x address")
    if to not in WORLD_CONTRACTS and to not in aliases and not _ADDRESS.match(to):
        raise table.fail("to", f"unknown target {to!r}",
                         f"one of: {', '.join(sorted({*WORLD_CONTRACTS, *aliases}))}, or a 0x address")
    text = calldata_text.strip()
    if not re.fullmatch(r"0x([0-9a-fA-F]{2})*", text):
        raise table.fail("calldata", f"{text[:20]!r}… is not 0x-prefixed hex of whole bytes",
                         "copy the transaction's input data as shown by an explorer")
    if table.has("as"):
        raise table.fail("as", "only a deploy step names a new contract")
    if not attack:
        table.finish()
    return Step(field=f"{section}[{index}]", sender=sender, contract=None, function=None, deploy=None, args=(),
                alias=None, gas=gas, block=block, to=to, calldata=bytes.fromhex(text[2:]))


def _gas(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 21_000:
        raise ValueError(f"expected a gas limit of at least 21000, got {value!r}")
    return value


def split_args(text: str) -> list[str]:
    """Splits `a, f(b, c), 'x,y'` at the commas of the top level."""
    args, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in ({text})")
        elif char == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        current += char
    if quote or depth:
        raise ValueError(f"unbalanced quotes or parentheses in ({text})")
    if current.strip():
        args.append(current.strip())
    if any(not a for a in args):
        raise ValueError(f"an empty argument in ({text})")
    return args


def _functions(artifact_name: str, table: Table | None = None) -> set[str]:
    try:
        abi = artifact(artifact_name)["abi"]
    except ToolchainError:
        if table is None:
            raise
        raise table.fail("deploy", f"no compiled contract named {artifact_name!r}",
                         "a contract of contracts/src (compiled with ./node_modules/.bin/forge build)") from None
    return {item["name"] for item in abi if item.get("type") == "function"}


def _closest(name: str, names: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(names), n=1)
    return f"did you mean {close[0]!r}?" if close else f"its functions: {', '.join(sorted(names))}"
