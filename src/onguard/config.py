"""Loads onguard.toml into frozen, validated settings; every problem names the file and the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
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
    via: str = "module"  # "module": the GuardianModule; "presigned": owners' pre-signed Safe transaction


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where response transactions are sent. A private endpoint (a builder or protect RPC) does not gossip
    to the public mempool, so an attacker watching it cannot see the pause coming."""

    url: str
    private: bool


@dataclass(frozen=True, slots=True)
class ResponseSettings:
    receipt_timeout: float
    max_fee_per_gas: int        # ceiling, in wei, of what the guardian pays per gas
    priority_fee: int           # minimum tip, in wei
    outbid_factor: Fraction     # the pause's tip is at least the threat's effective tip times this …
    outbid_margin: int          # … plus this, in wei
    bump_after: float           # seconds without a receipt before the pause is replaced with higher fees
    bump_factor: Fraction       # each replacement multiplies both fees by this (nodes want >= 1.1)
    endpoints: tuple[Endpoint, ...]
    public_fallback_after: float | None  # with private endpoints: also send publicly after this; None: never
    block_path_min_tip: int = 10 * 10**9  # wei: the least tip of a pause decided on a mined block (a drain is on)
    retry_backoff: float = 2.0            # seconds before a failed response is tried again, doubled each time …
    retry_backoff_max: float = 30.0       # … up to this, for as long as the incident is not safe


@dataclass(frozen=True, slots=True)
class MempoolSettings:
    enabled: bool
    ws_url: str | None
    simulate: bool
    max_concurrent_simulations: int
    simulation_timeout: float
    simulations_per_second: int


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
    mempool: MempoolSettings

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
        response=_response(root.table("response", required=False), rpc_url=data.get("chain", {}).get("rpc_url")),
        mempool=_mempool(root.table("mempool", required=False)),
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
        via = entry.get("via", str, default="module")
        if via not in ("module", "presigned"):
            raise entry.fail("via", f"{via!r} is neither \"module\" nor \"presigned\"",
                             "module: the guardian key calls the GuardianModule; presigned: the daemon executes "
                             "the owners' pre-signed Safe transaction (`onguard presign`)")
        actions[name] = ActionSettings(name=name, contract=contract_name, call=call, done_when=done_when, via=via)
        entry.finish()
    return MappingProxyType(actions)


def _database(root: Table) -> str:
    table = root.table("state", required=False)
    if table is None:
        return "onguard.db"
    value = table.get("database", str, default="onguard.db")
    table.finish()
    return value


def _response(table: Table | None, rpc_url: str) -> ResponseSettings:
    if table is None:
        table = Table({}, file="", prefix="response", error=ConfigError)
    endpoints = _endpoints(table, rpc_url)
    fallback = table.get("public_fallback_after", (str, int, float, bool), default="2s")
    if fallback is False:
        public_fallback_after = None
    else:
        public_fallback_after = table.parsed("public_fallback_after", parse_duration, default=2.0)
    bump_factor = table.parsed("bump_factor", _factor, default=Fraction(5, 4))
    if bump_factor < Fraction(11, 10):
        raise table.fail("bump_factor", "must be at least 1.1", "nodes refuse a replacement that raises fees less")
    settings = ResponseSettings(
        receipt_timeout=table.parsed("receipt_timeout", parse_duration, default=60.0),
        max_fee_per_gas=table.parsed("max_fee_per_gas", parse_amount, default=500 * 10**9),
        priority_fee=table.parsed("priority_fee", parse_amount, default=2 * 10**9),
        outbid_factor=table.parsed("outbid_factor", _factor, default=Fraction(5, 4)),
        outbid_margin=table.parsed("outbid_margin", parse_amount, default=10**9),
        bump_after=table.parsed("bump_after", parse_duration, default=3.0),
        bump_factor=bump_factor,
        endpoints=endpoints,
        public_fallback_after=public_fallback_after,
        block_path_min_tip=table.parsed("block_path_min_tip", parse_amount, default=10 * 10**9),
        retry_backoff=table.parsed("retry_backoff", parse_duration, default=2.0),
        retry_backoff_max=table.parsed("retry_backoff_max", parse_duration, default=30.0),
    )
    if settings.retry_backoff <= 0:
        raise table.fail("retry_backoff", "must be above zero", "e.g. \"2s\": the first wait before a retry")
    if settings.retry_backoff_max < settings.retry_backoff:
        raise table.fail("retry_backoff_max", "is below retry_backoff",
                         "the longest wait between retries, e.g. \"30s\"")
    if settings.block_path_min_tip > settings.max_fee_per_gas:
        raise table.fail("block_path_min_tip", "is above max_fee_per_gas",
                         "the block-path tip floor must fit under the fee ceiling")
    table.finish()
    return settings


def _factor(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number such as 1.25, got {value!r}")
    factor = Fraction(str(value))
    if factor < 1:
        raise ValueError(f"{value!r} is below 1")
    return factor


def _endpoints(table: Table, rpc_url: str) -> tuple[Endpoint, ...]:
    entries = table.get("endpoints", list, default=None)
    if entries is None:
        return (Endpoint(url=rpc_url, private=False),)
    endpoints = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise table.fail("endpoints", f"entry {index} is not a table",
                             "write [[response.endpoints]] tables with url and private")
        item = Table(entry, file=table.file, prefix=f"response.endpoints[{index}]", error=ConfigError)
        url = item.get("url", str)
        if not url.startswith(("http://", "https://")):
            raise item.fail("url", f"{url!r} is not an http(s) URL")
        endpoints.append(Endpoint(url=url, private=item.get("private", bool, default=False)))
        item.finish()
    if not endpoints:
        raise table.fail("endpoints", "is empty", "remove it to send to chain.rpc_url, or list endpoints")
    return tuple(endpoints)


def _mempool(table: Table | None) -> MempoolSettings:
    if table is None:
        table = Table({}, file="", prefix="mempool", error=ConfigError)
    ws_url = table.get("ws_url", str, default=None)
    if ws_url is not None and not ws_url.startswith(("ws://", "wss://")):
        raise table.fail("ws_url", f"{ws_url!r} is not a ws:// or wss:// URL",
                         "the node's WebSocket endpoint; leave it out to poll a pending-transaction filter")
    settings = MempoolSettings(
        enabled=table.get("enabled", bool, default=False),
        ws_url=ws_url,
        simulate=table.get("simulate", bool, default=True),
        max_concurrent_simulations=table.get("max_concurrent_simulations", int, default=8),
        simulation_timeout=table.parsed("simulation_timeout", parse_duration, default=0.5),
        simulations_per_second=table.get("simulations_per_second", int, default=500),
    )
    if settings.max_concurrent_simulations < 1 or settings.simulations_per_second < 1:
        raise table.fail("max_concurrent_simulations", "must be at least 1")
    table.finish()
    return settings
