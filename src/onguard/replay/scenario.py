"""Reads a replay scenario file (TOML) into a frozen Scenario, with errors that name the file and the field.

The format is documented in tests/scenarios/README.md. A scenario names any protocol: its contracts with their
ABIs (from the team's onguard.toml, a fixture, or its own [contracts]), its accounts (Anvil's keys or
impersonated addresses), the holders and tokens whose value counts. Calls are parsed here
(`contract.function(arg, …)`) and checked against those ABIs, so a typo is reported before any chain is started;
argument values are resolved by the runner, on chain.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

from onguard.config import load_config
from onguard.errors import InputError, ToolchainError
from onguard.replay.world import ANVIL_KEYS, Fixture, forge_artifact, load_fixture, read_abi
from onguard.tomlfields import Table, read_toml
from onguard.units import parse_amount
from onguard.chain.transport import redacted_url

EXPECTATIONS = ("stopped-before-inclusion", "stopped", "no-trip")
MINING_MODES = ("manual", "automine", "interval")
ALWAYS_KNOWN = ("safe",)   # the config's Safe: every guarded protocol has one
HELPERS = ("balance", "keccak")  # balance(token, holder), keccak('TEXT')
DEFAULT_GAS = 1_000_000   # fixed, so a refused attack is still mined (and visible) instead of failing estimation
DEFAULT_AFTER_BLOCKS = 3

_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)
_DEPLOY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


class ScenarioError(InputError):
    """A scenario file is malformed or refers to something that does not exist."""


@dataclass(frozen=True, slots=True)
class Fork:
    """Where the replay's chain comes from: exactly one of a fixture, a state file or a node to fork."""

    fixture: Fixture | None      # builds the protocol on a fresh Anvil and hands back its config
    state_file: Path | None      # an `anvil --dump-state` file, loaded into a fresh Anvil
    rpc_url: str | None          # a node to fork (`anvil --fork-url`) ...
    block: int | None            # ... at this block (the state every replayed transaction starts from)
    addresses: Mapping[str, str] = field(default_factory=dict)  # names → addresses (an addresses file)

    @property
    def source(self) -> str:
        if self.fixture:
            return f"fixture {self.fixture.path.name}"
        if self.state_file:
            return f"state file {self.state_file}"
        return f"{redacted_url(self.rpc_url or '')} at block {self.block}"


@dataclass(frozen=True, slots=True)
class ExtraContract:
    """A contract the scenario names beyond the config's: its ABI, and its address unless a fixture or the
    addresses file gives it."""

    name: str
    address: str | None
    abi: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One transaction of the setup or the attack."""

    field: str                    # where it is written, for messages: "attack[2]"
    sender: str                   # an account, a named contract (impersonated) or an address; "" for a tx step
    contract: str | None          # call: a named contract or an earlier `as` name
    function: str | None
    deploy: str | None            # deploy: the artifact name
    args: tuple[str, ...]         # argument expressions, resolved on chain by the runner
    alias: str | None             # deploy: the name later steps use for the new contract
    gas: int
    block: int                    # attack: the block offset at which it enters the mempool (setup: 0)
    to: str | None = None         # raw: a contract name or address the calldata is sent to
    calldata: bytes | None = None  # raw: the transaction's input, as written (e.g. copied from an explorer)
    value: int = 0                # wei sent with it
    tx_hash: str | None = None    # a transaction of the fork source, re-executed from its original sender
    signed_by: tuple[str, ...] = ()  # call: made by the Safe (execTransaction) with these accounts' signatures

    @property
    def text(self) -> str:
        if self.signed_by:
            call = f"{self.contract}.{self.function}({', '.join(self.args)})"
            return f"safe.execTransaction({call}) signed by {', '.join(self.signed_by)}"
        if self.tx_hash is not None:
            return f"tx {self.tx_hash[:10]}…"
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
    config: Path | None           # the team's onguard.toml (None: the fixture's)
    policies: tuple[Path, ...] | None  # None: every policy of the config's policies folder
    guardian_key: int | None      # an Anvil key index for the guardian (None: the config's key source)
    mempool: bool
    prices: dict[str, Fraction]   # token symbol -> USD per whole token
    setup: tuple[Step, ...]
    attack: tuple[Step, ...]
    accounts: Mapping[str, int | str]          # name -> Anvil key index or an (impersonated) address
    contracts: Mapping[str, ExtraContract]     # contracts beyond the config's
    abis: Mapping[str, tuple[dict[str, Any], ...]]  # every contract name a call may use, with its ABI
    holders: tuple[str, ...]      # names or addresses whose token balances are the protocol's holdings
    tokens: tuple[str, ...]       # names or addresses of the ERC-20 tokens whose balances count


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
    fork = _fork(root.table("fork", hint='add [fork] with fixture = "fixtures/…py", state_file or rpc_url'), base)
    mining, block_time, after_blocks = _mining(root.table("mining", required=False))
    config_path, policies, key, mempool = _guardian(root.table("guardian"), base, fork)
    config = load_config(config_path) if config_path is not None else None
    prices = _prices(root)
    accounts = _accounts(root.table("accounts", required=False))
    contracts = _contracts(root.table("contracts", required=False), base)
    abis: dict[str, tuple[dict[str, Any], ...]] = {}
    if fork.fixture is not None:
        abis.update(fork.fixture.abis)
    if config is not None:
        abis.update({n: tuple(c.abi.raw) for n, c in config.contracts.items()})
    abis.update({n: c.abi for n, c in contracts.items()})
    names = Names(accounts=set(accounts), abis=abis, addresses={*fork.addresses, *ALWAYS_KNOWN},
                  deployed={})
    setup = tuple(_step(item, "setup", i, names, fork, attack=False)
                  for i, item in enumerate(_steps(root, "setup", required=False)))
    attack_items = _steps(root, "attack", required=True)
    attack: list[Step] = []
    next_block = 0
    unplaced = []   # attack steps without a `block`: placed after the previous step
    for index, item in enumerate(attack_items):
        if not item.has("block") and not item.has("tx"):
            unplaced.append(item)
        steps = _attack_steps(item, index, names, fork, next_block)
        attack += steps
        next_block = steps[-1].block + 1
    _check_by_hash(root, attack, unplaced, mining)
    holders = _named_list(root, "holders", names, required=True, example='holders = ["vault"]')
    tokens = _named_list(root, "tokens", names, required=True, example='tokens = ["asset", "0x…"]')
    root.finish()
    return Scenario(path=path, name=name, description=description, modelled_on=modelled_on, benign=benign,
                    expect=expect, fork=fork, mining=mining, block_time=block_time, after_blocks=after_blocks,
                    config=config_path, policies=policies, guardian_key=key, mempool=mempool, prices=prices,
                    setup=setup, attack=tuple(attack), accounts=MappingProxyType(accounts),
                    contracts=MappingProxyType(contracts), abis=MappingProxyType({**abis, **names.deployed}),
                    holders=holders, tokens=tokens)


@dataclass(slots=True)
class Names:
    """What a step may name, as the file is read: accounts, contracts with an ABI, addresses known by name, and
    the contracts deployed by earlier steps."""

    accounts: set[str]
    abis: dict[str, tuple[dict[str, Any], ...]]
    addresses: set[str]
    deployed: dict[str, tuple[dict[str, Any], ...]]

    def known(self) -> set[str]:
        return {*self.accounts, *self.abis, *self.addresses, *self.deployed}

    def abi(self, name: str) -> tuple[dict[str, Any], ...] | None:
        return self.deployed.get(name) or self.abis.get(name)


def _check_by_hash(root: Table, attack: list[Step], unplaced: list[Table], mining: str) -> None:
    """Transactions by hash are placed in their original blocks: the scenario's other steps say where they go."""
    hashes = [s.tx_hash for s in attack if s.tx_hash is not None]
    if not hashes:
        return
    if mining != "manual":
        raise root.fail("mining.mode", "transactions by hash are replayed with manual mining",
                        'leave mode out (or "manual"): their blocks are rebuilt as the fork source mined them')
    for index, tx_hash in enumerate(hashes):
        if tx_hash in hashes[:index]:
            raise root.fail("attack", f"transaction {tx_hash} is listed twice", "list each transaction once")
    if unplaced:
        raise unplaced[0].fail("block", "is required beside transactions by hash",
                               "the attack block: 0 is the block after fork.block (a transaction by hash is in "
                               "its original block's)")


def _mining(table: Table | None) -> tuple[str, int | None, int]:
    if table is None:
        return "manual", None, DEFAULT_AFTER_BLOCKS
    mining = table.get("mode", str, default="manual")
    if mining not in MINING_MODES:
        raise table.fail("mode", f"unknown mining mode {mining!r}", f"one of: {', '.join(MINING_MODES)}")
    block_time = table.get("block_time", int, default=None)
    if mining == "interval":
        if block_time is None:
            raise table.fail("block_time", "is required in interval mode",
                             "seconds between blocks, e.g. block_time = 2")
        if not 1 <= block_time <= 60:
            raise table.fail("block_time", "must be between 1 and 60 seconds")
    elif block_time is not None:
        raise table.fail("block_time", "only interval mode has a block time", 'set mode = "interval"')
    after_blocks = table.get("after_blocks", int, default=DEFAULT_AFTER_BLOCKS)
    if after_blocks < 0:
        raise table.fail("after_blocks", "must not be negative")
    table.finish()
    return mining, block_time, after_blocks


def _named_list(root: Table, key: str, names: Names, *, required: bool, example: str) -> tuple[str, ...]:
    items = root.get(key, list, hint=example) if required else root.get(key, list, default=[])
    if not items:
        raise root.fail(key, "is empty", example)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not (item in names.known() or _ADDRESS.match(item)):
            raise root.fail(f"{key}[{index}]", f"{item!r} is neither a 0x address nor a known name",
                            f"a 0x address (40 hex digits) or one of: {', '.join(sorted(names.known()))}")
    return tuple(items)


def scenario_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*.toml") if p.is_file())
    if not files:
        raise ScenarioError("no scenario files (*.toml) in the folder", file=str(folder),
                            hint="point it at a folder of scenarios, e.g. tests/scenarios")
    return files


def _fork(table: Table, base: Path) -> Fork:
    fixture = table.get("fixture", str, default=None)
    state_file = table.get("state_file", str, default=None)
    rpc_url = table.get("rpc_url", str, default=None)
    given = [k for k, v in (("fixture", fixture), ("state_file", state_file), ("rpc_url", rpc_url)) if v is not None]
    if len(given) != 1:
        raise table.fail(given[1] if len(given) > 1 else "fixture", "give exactly one of fixture, state_file, rpc_url",
                         'fixture = "fixtures/demo_world.py" (built fresh), state_file = "x.json" (anvil '
                         '--dump-state), or rpc_url = "https://…" with block = N')
    block = table.get("block", int, default=None)
    if rpc_url is not None:
        if not rpc_url.startswith(("http://", "https://")):
            raise table.fail("rpc_url", f"{rpc_url!r} is not an http(s) URL")
        if block is None or block < 0:
            raise table.fail("block", "is required with rpc_url (a block number)",
                             "replays must be reproducible: fork at a fixed block")
    elif block is not None:
        raise table.fail("block", "only goes with rpc_url")
    addresses_file = table.get("addresses", str, default=None)
    addresses = _addresses(table, _existing(table, "addresses", base, addresses_file)) if addresses_file else {}
    loaded = None
    if fixture is not None:
        loaded = load_fixture(_existing(table, "fixture", base, fixture), file=table.file,
                              field=table.field_name("fixture"))
    state_path = _existing(table, "state_file", base, state_file) if state_file else None
    table.finish()
    return Fork(fixture=loaded, state_file=state_path, rpc_url=rpc_url, block=block,
                addresses=MappingProxyType(addresses))


def _addresses(table: Table, path: Path) -> dict[str, str]:
    """A JSON object of names to addresses (other values, such as a chain id, are not names)."""
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise table.fail("addresses", f"{path} is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise table.fail("addresses", f"{path} is not a JSON object", '{"vault": "0x…", "attacker": "0x…"}')
    return {k: v for k, v in document.items() if isinstance(v, str) and _ADDRESS.match(v)}


def _existing(table: Table, key: str, base: Path, value: str) -> Path:
    path = (base / value).resolve()
    if not path.is_file():
        raise table.fail(key, f"file not found: {path}", "paths are relative to the scenario file")
    return path


def _guardian(table: Table, base: Path, fork: Fork) -> tuple[Path | None, tuple[Path, ...] | None, int | None, bool]:
    config_text = table.get("config", str, default=None)
    if config_text is None and fork.fixture is None:
        raise table.fail("config", "is required without a fixture",
                         'the team\'s own onguard.toml: config = "onguard.toml" (relative to the file)')
    if config_text is not None and fork.fixture is not None:
        raise table.fail("config", "does not go with a fixture (the fixture writes the config it deployed)")
    config = _existing(table, "config", base, config_text) if config_text else None
    names = table.get("policies", list, default=None)
    paths = None
    if names is not None:
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
    key = table.get("key", int, default=None)
    if key is not None and not 0 <= key < ANVIL_KEYS:
        raise table.fail("key", f"{key} is not one of Anvil's keys", f"an index 0..{ANVIL_KEYS - 1}, or leave it out "
                                                                      "to use the config's key source")
    mempool = table.get("mempool", bool, default=True)
    table.finish()
    return config, tuple(paths) if paths is not None else None, key, mempool


def _accounts(table: Table | None) -> dict[str, int | str]:
    accounts: dict[str, int | str] = {}
    for name in table.keys() if table is not None else []:
        assert table is not None
        value = table.get(name, (int, str))
        if isinstance(value, int) and not 0 <= value < ANVIL_KEYS:
            raise table.fail(name, f"{value} is not one of Anvil's keys",
                             f"an index 0..{ANVIL_KEYS - 1} or a 0x address")
        if isinstance(value, str) and not _ADDRESS.match(value):
            raise table.fail(name, f"{value!r} is not an address", "a 0x address (impersonated) or an Anvil key index")
        accounts[name] = value
    if table is not None:
        table.finish()
    return accounts


def _contracts(table: Table | None, base: Path) -> dict[str, ExtraContract]:
    contracts: dict[str, ExtraContract] = {}
    for name in table.keys() if table is not None else []:
        assert table is not None
        entry = table.table(name)
        assert entry is not None
        abi_text = entry.get("abi", str, hint='a forge artifact name (abi = "Vault") or a JSON ABI file '
                                              '(abi = "abis/pool.json")')
        try:
            abi = read_abi(abi_text, base)
        except ValueError as exc:
            raise entry.fail("abi", str(exc), "a forge artifact of contracts/src, or a JSON ABI file") from None
        address = entry.get("address", str, default=None)
        if address is not None and not _ADDRESS.match(address):
            raise entry.fail("address", f"{address!r} is not an address", "a 0x address (40 hex digits)")
        entry.finish()
        contracts[name] = ExtraContract(name=name, address=address, abi=abi)
    if table is not None:
        table.finish()
    return contracts


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
    hint = f"add [[{key}]] tables with from and call (or deploy, calldata, tx)"
    items = root.get(key, list, hint=hint) if required else root.get(key, list, default=[])
    if required and not items:
        raise root.fail(key, "needs at least one step", hint)
    tables = []
    for index, item in enumerate(items or []):
        if not isinstance(item, dict):
            raise root.fail(f"{key}[{index}]", "expected a table", f"write steps as [[{key}]] tables")
        tables.append(Table(item, file=root.file, prefix=f"{key}[{index}]", error=ScenarioError))
    return tables


def _attack_steps(table: Table, index: int, names: Names, fork: Fork, next_block: int) -> list[Step]:
    first = _step(table, "attack", index, names, fork, attack=True, default_block=next_block)
    repeat = table.get("repeat", int, default=1)
    if repeat < 1:
        raise table.fail("repeat", "must be at least 1")
    if repeat > 1 and (first.deploy or first.tx_hash):
        raise table.fail("repeat", "a deployment or a transaction by hash cannot be repeated")
    table.finish()
    # A repeated step enters the mempool once a block, from its `block` on: a slow drain in one line.
    return [replace(first, block=first.block + i) for i in range(repeat)]


def _step(table: Table, section: str, index: int, names: Names, fork: Fork, *, attack: bool,
          default_block: int = 0) -> Step:
    block = default_block
    if attack:
        block = table.get("block", int, default=default_block)
        if block < 0:
            raise table.fail("block", "must not be negative (an offset from the first attack block)")
    elif table.has("block"):
        raise table.fail("block", "only attack steps have a block", "setup steps are mined before the guardian starts")
    value = table.parsed("value", _wei, default=0)
    if table.has("tx"):
        return _tx_step(table, section, index, fork, block, attack)
    sender = table.get("from", str, hint="an account of [accounts], a named contract, or a 0x address")
    if sender not in names.known() and not _ADDRESS.match(sender):
        raise table.fail("from", f"unknown sender {sender!r}",
                         f"an account of [accounts] ({', '.join(sorted(names.accounts)) or 'none'}), a named "
                         "contract, or a 0x address")
    call_text = table.get("call", str, default=None)
    deploy_text = table.get("deploy", str, default=None)
    calldata_text = table.get("calldata", str, default=None)
    if [call_text, deploy_text, calldata_text].count(None) != 2:
        raise table.fail("call", "give exactly one of call, deploy, calldata (with to) or tx",
                         'call = "vault.redeemFor(alice, attacker, balance(vault, alice))", deploy = '
                         '"OracleBorrowAttacker", to = "vault" with calldata = "0x…", or tx = "0x<hash>"')
    gas = table.parsed("gas", _gas, default=DEFAULT_GAS)
    alias = table.get("as", str, default=None)
    contract = function = deploy = None
    if calldata_text is not None:
        return _raw_step(table, section, index, sender, calldata_text, names, gas, block, value, attack)
    if table.has("to"):
        raise table.fail("to", "only a calldata step has `to`", "a call step names its contract in `call`")
    if call_text is not None:
        match = _CALL.match(call_text)
        if not match:
            raise table.fail("call", f"cannot read {call_text!r}", 'write contract.function(arg, …), '
                                                                   'e.g. "vault.withdraw(150_000e18, bob, bob)"')
        contract, function, arg_text = match.groups()
        abi = names.abi(contract)
        if abi is None:
            hint = f"one of: {', '.join(sorted({*names.abis, *names.deployed}))}"
            if contract in names.known():
                hint = f"{contract!r} has no ABI: add [contracts.{contract}] with abi = \"…\""
            raise table.fail("call", f"unknown contract {contract!r}",
                             hint + " (a deployed contract needs `as` in an earlier step)")
        functions = {item["name"] for item in abi if item.get("type") == "function"}
        if function not in functions:
            raise table.fail("call", f"{contract} has no function {function!r}", _closest(function, functions))
        if alias is not None:
            raise table.fail("as", "only a deploy step names a new contract")
    else:
        match = _DEPLOY.match(deploy_text or "")
        if not match:
            raise table.fail("deploy", f"cannot read {deploy_text!r}", 'e.g. deploy = "OracleBorrowAttacker"')
        deploy, arg_text = match.group(1), match.group(2) or ""
        try:
            artifact = forge_artifact(deploy)
        except ToolchainError:
            raise table.fail("deploy", f"no compiled contract named {deploy!r}",
                             "a contract of contracts/src (compiled with ./node_modules/.bin/forge build)") from None
        if alias is None or not _NAME.match(alias):
            raise table.fail("as", "a deploy step must name its contract (lower case)", 'e.g. as = "exploit"')
        if alias in names.known():
            raise table.fail("as", f"{alias!r} is already a name", "pick another name for the deployed contract")
        names.deployed[alias] = tuple(artifact["abi"])
    try:
        args = split_args(arg_text)
    except ValueError as exc:
        raise table.fail("call" if call_text is not None else "deploy", str(exc)) from None
    signed_by = _signers(table, names, call_text is not None)
    if not attack:
        table.finish()
    return Step(field=f"{section}[{index}]", sender=sender, contract=contract, function=function, deploy=deploy,
                args=tuple(args), alias=alias, gas=gas, block=block, value=value, signed_by=signed_by)


def _signers(table: Table, names: Names, is_call: bool) -> tuple[str, ...]:
    """`signed_by = ["owner1", "owner2"]`: the call is made by the Safe, an execTransaction these accounts' keys
    sign (as a compromised Safe's owners would), sent by `from`."""
    signers = table.get("signed_by", list, default=[], hint='accounts of [accounts], e.g. ["owner1", "owner2"]')
    if signers and not is_call:
        raise table.fail("signed_by", "only a call step is made by the Safe with its owners' signatures",
                         'e.g. call = "module.removeGuardian(guardian)" with signed_by = ["owner1", "owner2"]')
    for signer in signers:
        if signer not in names.accounts:
            raise table.fail("signed_by", f"unknown signer {signer!r}",
                             f"an account of [accounts] with an Anvil key: {', '.join(sorted(names.accounts))}")
    return tuple(signers)


def _tx_step(table: Table, section: str, index: int, fork: Fork, block: int, attack: bool) -> Step:
    """A transaction of the fork source, by hash: its sender, target, input, value and gas are the original's."""
    tx_hash = table.get("tx", str)
    if not TX_HASH.match(tx_hash):
        raise table.fail("tx", f"{tx_hash!r} is not a transaction hash", "0x and 64 hex digits")
    if fork.rpc_url is None:
        raise table.fail("tx", "a transaction by hash needs a node to take it from",
                         "fork with [fork] rpc_url and block (the block before the transaction's)")
    if not attack:
        raise table.fail("tx", "a transaction by hash is an attack step",
                         "make it an [[attack]]: the blocks between fork.block and its own are rebuilt before it, "
                         "and its block's earlier transactions with it")
    if table.has("block"):
        raise table.fail("block", "a transaction by hash is played in its own block",
                         "leave block out: its attack block is its block - fork.block - 1")
    for other in ("from", "call", "deploy", "calldata", "to", "gas", "value", "as", "signed_by"):
        if table.has(other):
            raise table.fail(other, "does not go with tx (the original transaction's is used)")
    return Step(field=f"{section}[{index}]", sender="", contract=None, function=None, deploy=None, args=(),
                alias=None, gas=0, block=block, tx_hash=tx_hash.lower())


def _raw_step(table: Table, section: str, index: int, sender: str, calldata_text: str, names: Names,
              gas: int, block: int, value: int, attack: bool) -> Step:
    """A step given as raw calldata: what an explorer shows of a real attack transaction."""
    to = table.get("to", str, hint="the contract the calldata is sent to: a contract name or a 0x address")
    if to not in names.known() and not _ADDRESS.match(to):
        raise table.fail("to", f"unknown target {to!r}",
                         f"one of: {', '.join(sorted(names.known()))}, or a 0x address")
    text = calldata_text.strip()
    if not re.fullmatch(r"0x([0-9a-fA-F]{2})*", text):
        raise table.fail("calldata", f"{text[:20]!r}… is not 0x-prefixed hex of whole bytes",
                         "copy the transaction's input data as shown by an explorer")
    if table.has("as"):
        raise table.fail("as", "only a deploy step names a new contract")
    if not attack:
        table.finish()
    return Step(field=f"{section}[{index}]", sender=sender, contract=None, function=None, deploy=None, args=(),
                alias=None, gas=gas, block=block, to=to, calldata=bytes.fromhex(text[2:]), value=value)


def _gas(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 21_000:
        raise ValueError(f"expected a gas limit of at least 21000, got {value!r}")
    return value


def _wei(value: object) -> int:
    """`value = 1e18`, `value = "2.5e18"`, `value = 1000`: an exact, non-negative number of wei."""
    return parse_amount(repr(value) if isinstance(value, float) else value)


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


def _closest(name: str, names: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(names), n=1)
    return f"did you mean {close[0]!r}?" if close else f"its functions: {', '.join(sorted(names))}"


def one_shot_scenario(config: Path, fork_url: str, block: int, hashes: list[str], *, holders: tuple[str, ...] = (),
                      tokens: tuple[str, ...] = (), prices: Mapping[str, Fraction] | None = None) -> Scenario:
    """`onguard replay --fork-url URL --block N --tx HASH …`: the transactions re-executed by hash on a fork at
    block N, with the team's config and policies; the guardian is expected to stop them."""
    team = load_config(config)
    where = "--tx"
    steps = []
    for index, tx_hash in enumerate(hashes):
        if not TX_HASH.match(tx_hash):
            raise ScenarioError(f"{tx_hash!r} is not a transaction hash", field=where, hint="0x and 64 hex digits")
        steps.append(Step(field=f"--tx[{index}]", sender="", contract=None, function=None, deploy=None, args=(),
                          alias=None, gas=0, block=0, tx_hash=tx_hash.lower()))
    known = {*team.contracts, *ALWAYS_KNOWN}
    for kind, names in (("--holder", holders), ("--token", tokens)):
        for name in names:
            if name not in known and not _ADDRESS.match(name):
                raise ScenarioError(f"{name!r} is neither a 0x address nor a contract of the config", field=kind,
                                    hint=f"a 0x address or one of: {', '.join(sorted(known))}")
    return Scenario(
        path=config, name=f"transaction{'s' if len(hashes) > 1 else ''} {', '.join(h[:10] for h in hashes)}",
        description=f"replayed by hash from {fork_url} on a fork at block {block}",
        modelled_on=f"{', '.join(hashes)} as mined", benign=False, expect="stopped",
        fork=Fork(fixture=None, state_file=None, rpc_url=fork_url, block=block), mining="manual", block_time=None,
        after_blocks=DEFAULT_AFTER_BLOCKS, config=config, policies=None, guardian_key=None, mempool=True,
        prices=dict(prices or {}), setup=(), attack=tuple(steps), accounts=MappingProxyType({}),
        contracts=MappingProxyType({}), abis=MappingProxyType({n: tuple(c.abi.raw) for n, c in team.contracts.items()}),
        holders=holders, tokens=tokens)
