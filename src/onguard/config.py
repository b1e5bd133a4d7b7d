"""Loads onguard.toml into frozen, validated settings; every problem names the file and the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any


from onguard.chain.abi import ContractAbi, load_abi
from onguard.errors import ConfigError, InputError
from onguard.tomlfields import Table, read_toml
from onguard.units import parse_address, parse_amount, parse_duration

SECRET_FIELDS = ("private_key", "key", "password", "mnemonic", "secret")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True, slots=True)
class ChainSettings:
    rpc_url: str
    chain_id: int
    poll_interval: float
    start_block: int | None  # None: start at the chain head when there is no checkpoint
    max_block_range: int


@dataclass(frozen=True, slots=True)
class SafeSettings:
    address: str
    guardian_module: str


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where the guardian key comes from: an encrypted keystore (password in an env var) or an env var."""

    keystore: Path | None
    password_env: str
    key_env: str | None


@dataclass(frozen=True, slots=True)
class WatchedContract:
    name: str
    address: str
    abi: ContractAbi


@dataclass(frozen=True, slots=True)
class ActionSettings:
    """A pre-authorised call the guardian may make through the module, and how to tell it already holds."""

    name: str
    contract: str
    call: str        # a no-argument function signature, e.g. "pause()"
    done_when: str   # a no-argument view returning bool, e.g. "paused()"


@dataclass(frozen=True, slots=True)
class ResponseSettings:
    receipt_timeout: float
    max_fee_per_gas: int        # ceiling, in wei, of what the guardian pays per gas
    priority_fee: int           # minimum tip, in wei


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    chain: ChainSettings
    safe: SafeSettings
    guardian_key: KeySource
    contracts: Mapping[str, WatchedContract]
    actions: Mapping[str, ActionSettings]
    policies_dir: Path
    database: Path
    response: ResponseSettings

    def contract_at(self, address: str) -> WatchedContract | None:
        wanted = address.lower()
        return next((c for c in self.contracts.values() if c.address.lower() == wanted), None)


def load_config(path: Path | str) -> Config:
    path = Path(path)
    data = read_toml(path, ConfigError)
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    root = Table(data, file=str(path), prefix="", error=ConfigError)
    base = path.parent
    contracts = _contracts(root, base)
    config = Config(
        path=path,
        chain=_chain(root.table("chain")),
        safe=_safe(root.table("safe")),
        guardian_key=_guardian(root.table("guardian"), base),
        contracts=contracts,
        actions=_actions(root.table("actions"), contracts),
        policies_dir=_resolve(base, root.table("policies").get("dir", str, default="policies")),
        database=_resolve(base, _database(root)),
        response=_response(root.table("response", required=False)),
    )
    root.finish()
    return config


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def _address(table: Table, key: str) -> str:
    return table.parsed(key, parse_address, hint="write a 0x-prefixed 20-byte hex address, as shown by a "
                                                  "block explorer or your deployment records")


def _chain(table: Table) -> ChainSettings:
    rpc_url = table.get("rpc_url", str)
    if not rpc_url.startswith(("http://", "https://")):
        raise table.fail("rpc_url", f"{rpc_url!r} is not an http(s) URL",
                         "the block source polls over HTTP(S): give the node's http:// or https:// endpoint")
    chain_id = table.get("chain_id", int, hint="the chain's id, e.g. 1 for Ethereum mainnet, 31337 for Anvil")
    start = table.get("start_block", (int, str), default="latest")
    if start != "latest" and not (isinstance(start, int) and start >= 0):
        raise table.fail("start_block", f"{start!r} is neither \"latest\" nor a block number")
    max_range = table.get("max_block_range", int, default=500)
    if max_range < 1:
        raise table.fail("max_block_range", "must be at least 1")
    settings = ChainSettings(
        rpc_url=rpc_url,
        chain_id=chain_id,
        poll_interval=table.parsed("poll_interval", parse_duration, default=1.0),
        start_block=None if start == "latest" else start,
        max_block_range=max_range,
    )
    table.finish()
    return settings


def _safe(table: Table) -> SafeSettings:
    settings = SafeSettings(address=_address(table, "address"), guardian_module=_address(table, "guardian_module"))
    table.finish()
    return settings


def _guardian(table: Table, base: Path) -> KeySource:
    for secret in SECRET_FIELDS:
        if table.has(secret):
            raise table.fail(secret, "a key or password must never be written in the config file",
                             "use keystore = \"guardian.json\" (password in an environment variable) "
                             "or key_env = \"ONGUARD_GUARDIAN_KEY\"")
    keystore = table.get("keystore", str, default=None)
    key_env = table.get("key_env", str, default=None)
    if key_env is not None and not ENV_NAME.match(key_env):
        # Never echo it: a value here that is not a variable name is most likely a pasted key.
        raise table.fail("key_env", "must be the NAME of an environment variable (e.g. ONGUARD_GUARDIAN_KEY), "
                                    "not a key", "put the key in that variable, never in the config file")
    password_env = table.get("password_env", str, default="ONGUARD_KEYSTORE_PASSWORD")
    if not ENV_NAME.match(password_env):
        raise table.fail("password_env", "must be the NAME of an environment variable, not a password",
                         "e.g. password_env = \"ONGUARD_KEYSTORE_PASSWORD\"")
    if (keystore is None) == (key_env is None):
        raise table.fail("keystore", "give exactly one of keystore or key_env",
                         "keystore = \"guardian.json\" for an encrypted keystore, or key_env = \"VAR\"")
    source = KeySource(
        keystore=_resolve(base, keystore) if keystore else None,
        password_env=password_env,
        key_env=key_env,
    )
    table.finish()
    return source


def _contracts(root: Table, base: Path) -> Mapping[str, WatchedContract]:
    table = root.table("contracts")
    contracts: dict[str, WatchedContract] = {}
    for name in table.keys():
        entry = table.table(name)
        assert entry is not None
        abi_path = _resolve(base, entry.get("abi", str, hint="a JSON ABI file or a forge artifact"))
        try:
            abi = load_abi(abi_path)
        except InputError as exc:
            raise entry.fail("abi", exc.message, exc.hint) from None
        contracts[name] = WatchedContract(name=name, address=_address(entry, "address"), abi=abi)
        entry.finish()
    if not contracts:
        raise root.fail("contracts", "no contract is watched", "add a [contracts.NAME] table with address and abi")
    return MappingProxyType(contracts)


def _actions(table: Table, contracts: Mapping[str, WatchedContract]) -> Mapping[str, ActionSettings]:
    actions: dict[str, ActionSettings] = {}
    for name in table.keys():
        entry = table.table(name)
        assert entry is not None
        contract_name = entry.get("contract", str)
        contract = contracts.get(contract_name)
        if contract is None:
            raise entry.fail("contract", f"no contract named {contract_name!r}",
                             f"known contracts: {', '.join(contracts)}")
        call = entry.get("call", str, hint="a function signature such as \"pause()\"")
        done_when = entry.get("done_when", str, hint="a view returning bool, such as \"paused()\"")
        for key, signature in (("call", call), ("done_when", done_when)):
            if not contract.abi.has_function(signature):
                raise entry.fail(key, f"{contract_name} has no function {signature}",
                                 f"functions: {', '.join(contract.abi.function_signatures())}")
            if not signature.endswith("()"):
                raise entry.fail(key, f"{signature} takes arguments; only no-argument calls are supported")
        actions[name] = ActionSettings(name=name, contract=contract_name, call=call, done_when=done_when)
        entry.finish()
    return MappingProxyType(actions)


def _database(root: Table) -> str:
    table = root.table("state", required=False)
    if table is None:
        return "onguard.db"
    value = table.get("database", str, default="onguard.db")
    table.finish()
    return value


def _response(table: Table | None) -> ResponseSettings:
    if table is None:
        table = Table({}, file="", prefix="response", error=ConfigError)
    settings = ResponseSettings(
        receipt_timeout=table.parsed("receipt_timeout", parse_duration, default=60.0),
        max_fee_per_gas=table.parsed("max_fee_per_gas", parse_amount, default=500 * 10**9),
        priority_fee=table.parsed("priority_fee", parse_amount, default=2 * 10**9),
    )
    table.finish()
    return settings
