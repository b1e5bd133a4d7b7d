"""Loads onguard.toml into frozen, validated settings; every problem names the file and the field."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from onguard.actions import ActionSettings, Via, parse_action
from onguard.chain.abi import ContractAbi, load_abi
from onguard.errors import ConfigError, InputError
from onguard.ops.settings import (
    DashboardSettings,
    MetricsSettings,
    NotificationSettings,
    parse_dashboard,
    parse_metrics,
    parse_notifications,
)
from onguard.replicas.settings import ReplicaSettings, default_replicas, parse_replicas
from onguard.store.settings import DatabaseSettings, check_database_url
from onguard.tomlfields import Table, read_toml, seconds
from onguard.units import parse_address, parse_amount, parse_duration

SECRET_FIELDS = ("private_key", "key", "password", "mnemonic", "secret")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChainSettings:
    rpc_url: str
    chain_id: int
    poll_interval: float
    start_block: int | None  # None: start at the chain head when there is no checkpoint
    max_block_range: int
    rpc_urls: tuple[str, ...] = ()  # further read endpoints, tried in this order when rpc_url fails
    ws_url: str | None = None        # new heads by subscription; None: the block loop polls
    request_timeout: float = 10.0    # the deadline of every JSON-RPC call, per endpoint
    stall_after: float = 60.0        # a head that has not advanced for this long is reported as stalled
    max_lag: int = 20                # blocks the checkpoint may trail the head before `status` says behind
    requests_per_second: int = 500   # throttle, per endpoint

    @property
    def read_urls(self) -> tuple[str, ...]:
        """Every read endpoint, in failover order."""
        return (self.rpc_url, *self.rpc_urls)

    @property
    def http_url(self) -> str | None:
        """The first read endpoint over HTTP(S), for clients that speak only HTTP (the CLI's Safe reads through
        safe-eth-py); None when every read endpoint is a WebSocket."""
        return next((url for url in self.read_urls if url.startswith(("http://", "https://"))), None)


@dataclass(frozen=True, slots=True)
class SafeSettings:
    address: str
    guardian_module: str | None  # None: every action is executed through owners' pre-signed transactions


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
    send_timeout: float = 2.0             # seconds a send endpoint gets to accept a response transaction


@dataclass(frozen=True, slots=True)
class MempoolSettings:
    enabled: bool
    ws_url: str | None
    simulate: bool
    max_concurrent_simulations: int
    simulation_timeout: float
    simulations_per_second: int
    simulation_urls: tuple[str, ...] = ()  # simulation batches spread over these; none: the read endpoints'


@dataclass(frozen=True, slots=True)
class SelfDefenceSettings:
    """The built-in guardian self-defence policy (onguard.policies.selfdefence): on unless the config turns it off."""

    enabled: bool = True
    actions: tuple[str, ...] | None = None  # the actions it takes; None: every configured action


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    chain: ChainSettings
    safe: SafeSettings
    guardian_key: KeySource
    contracts: Mapping[str, WatchedContract]
    actions: Mapping[str, ActionSettings]
    policies_dir: Path
    database: Path                      # the SQLite file; unused when database_url names PostgreSQL
    response: ResponseSettings
    mempool: MempoolSettings
    notifications: NotificationSettings = field(default_factory=lambda: parse_notifications(None))
    metrics: MetricsSettings = field(default_factory=lambda: parse_metrics(None))
    dashboard: DashboardSettings = field(default_factory=lambda: parse_dashboard(None))
    replicas: ReplicaSettings = field(default_factory=default_replicas)
    database_url: str | None = None     # postgresql://USER@HOST:PORT/DATABASE (the password from the environment)

    @property
    def state(self) -> DatabaseSettings:
        """Where the state lives, to open it: `IncidentStore(config.state)`."""
        return DatabaseSettings(path=self.database, url=self.database_url, config_file=str(self.path))
    self_defence: SelfDefenceSettings = field(default_factory=SelfDefenceSettings)

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
    database, database_url = _database(root)
    actions = _actions(root.table("actions"), contracts)
    config = Config(
        path=path,
        chain=_chain(root.table("chain")),
        safe=_safe(root.table("safe")),
        guardian_key=_guardian(root.table("guardian"), base),
        contracts=contracts,
        actions=actions,
        policies_dir=_resolve(base, root.table("policies").get("dir", str, default="policies")),
        database=_resolve(base, database),
        database_url=database_url,
        response=_response(root.table("response", required=False), rpc_url=data.get("chain", {}).get("rpc_url")),
        mempool=_mempool(root.table("mempool", required=False)),
        notifications=parse_notifications(root.table("notifications", required=False)),
        metrics=parse_metrics(root.table("metrics", required=False)),
        dashboard=parse_dashboard(root.table("dashboard", required=False)),
        self_defence=_self_defence(root.table("self_defence", required=False), actions),
        replicas=parse_replicas(root.table("replicas", required=False)),
    )
    root.finish()
    _module_needed(root, config.safe, config.actions)
    return config


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def _address(table: Table, key: str) -> str:
    return table.parsed(key, parse_address, hint="write a 0x-prefixed 20-byte hex address, as shown by a "
                                                  "block explorer or your deployment records")


# Sane ranges of the [chain] numbers: outside them a value is a typo (a unit missing, a zero too many).
POLL_INTERVAL_RANGE = (0.01, 60.0)
REQUEST_TIMEOUT_RANGE = (0.1, 120.0)
STALL_AFTER_RANGE = (1.0, 86_400.0)
MAX_BLOCK_RANGE = (1, 10_000)
MAX_LAG_RANGE = (1, 1_000_000)
REQUESTS_PER_SECOND_RANGE = (1, 100_000)


def _chain(table: Table) -> ChainSettings:
    rpc_url = _rpc_url(table, "rpc_url", table.get("rpc_url", str))
    extra = table.get("rpc_urls", list, default=[])
    rpc_urls = tuple(_rpc_url(table, "rpc_urls", url) for url in extra)
    if len({rpc_url, *rpc_urls}) != 1 + len(rpc_urls):
        raise table.fail("rpc_urls", "lists an endpoint twice (or repeats rpc_url)",
                         "each read endpoint once: rpc_url is the first, rpc_urls the ones tried after it")
    ws_url = table.get("ws_url", str, default=None)
    if ws_url is not None and not ws_url.startswith(("ws://", "wss://")):
        raise table.fail("ws_url", f"{ws_url!r} is not a ws:// or wss:// URL",
                         "the node's WebSocket endpoint, for new heads by subscription; leave it out to poll")
    chain_id = table.get("chain_id", int, hint="the chain's id, e.g. 1 for Ethereum mainnet, 31337 for Anvil")
    start = table.get("start_block", (int, str), default="latest")
    if start != "latest" and not (isinstance(start, int) and start >= 0):
        raise table.fail("start_block", f"{start!r} is neither \"latest\" nor a block number")
    settings = ChainSettings(
        rpc_url=rpc_url,
        chain_id=chain_id,
        poll_interval=table.duration_in("poll_interval", 1.0, POLL_INTERVAL_RANGE),
        start_block=None if start == "latest" else start,
        max_block_range=table.int_in("max_block_range", 500, MAX_BLOCK_RANGE),
        rpc_urls=rpc_urls,
        ws_url=ws_url,
        request_timeout=table.duration_in("request_timeout", 10.0, REQUEST_TIMEOUT_RANGE),
        stall_after=table.duration_in("stall_after", 60.0, STALL_AFTER_RANGE),
        max_lag=table.int_in("max_lag", 20, MAX_LAG_RANGE),
        requests_per_second=table.int_in("requests_per_second", 500, REQUESTS_PER_SECOND_RANGE),
    )
    table.finish()
    return settings


RPC_SCHEMES = ("http://", "https://", "ws://", "wss://")  # JSON-RPC over HTTP(S), or over a kept-open WebSocket


def _rpc_url(table: Table, key: str, url: object) -> str:
    if not isinstance(url, str) or not url.startswith(RPC_SCHEMES):
        raise table.fail(key, f"{url!r} is not an http(s) or ws(s) URL",
                         "give the node's JSON-RPC endpoint: http:// or https://, or ws:// or wss:// to keep one "
                         "WebSocket open to it (faster per call)")
    return url


def _safe(table: Table) -> SafeSettings:
    module = _address(table, "guardian_module") if table.has("guardian_module") else None
    settings = SafeSettings(address=_address(table, "address"), guardian_module=module)
    table.finish()
    return settings


def _module_needed(root: Table, safe: SafeSettings, actions: Mapping[str, ActionSettings]) -> None:
    """The pre-signed path needs no module; an action sent through the module needs its address."""
    through_module = [name for name, action in actions.items() if action.via == Via.MODULE]
    if through_module and safe.guardian_module is None:
        raise root.fail("safe.guardian_module", f"is required: action {through_module[0]} is sent through the "
                                                "GuardianModule (via = \"module\", the default)",
                        "give the module's address, or set via = \"presigned\" on every action and have the "
                        "owners pre-sign them (`onguard presign`)")


def _self_defence(table: Table | None, actions: Mapping[str, ActionSettings]) -> SelfDefenceSettings:
    if table is None:
        return SelfDefenceSettings()
    enabled = table.get("enabled", bool, default=True,
                        hint="true (the default): the guardian pauses before its own authority is stripped")
    names = table.get("actions", list, default=None, hint="action names from [actions], e.g. [\"pause_vault\"]")
    if names is not None:
        unknown = [n for n in names if n not in actions]
        if not names or unknown:
            raise table.fail("actions", f"no action named {unknown[0]!r}" if unknown else "is empty",
                             f"known actions: {', '.join(actions)}; leave it out to take every action")
    table.finish()
    return SelfDefenceSettings(enabled=enabled, actions=None if names is None else tuple(names))


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
    """Each [actions.NAME], compiled by onguard.actions (which imports nothing of this module at run time)."""
    actions: dict[str, ActionSettings] = {}
    for name in table.keys():
        entry = table.table(name)
        assert entry is not None
        actions[name] = parse_action(name, entry, contracts)
    return MappingProxyType(actions)


def _database(root: Table) -> tuple[str, str | None]:
    """(SQLite file, PostgreSQL URL or None): a URL moves the state to PostgreSQL, for replicas sharing it."""
    table = root.table("state", required=False)
    if table is None:
        return "onguard.db", None
    value = table.get("database", str, default="onguard.db")
    url = table.get("database_url", str, default=None)
    if url is not None:
        if table.has("database"):
            raise table.fail("database_url", "is given with state.database: the state lives in one place",
                             "keep database (a SQLite file) for one daemon, or database_url (PostgreSQL) for replicas")
        check_database_url(url, file=table.file, field=table.field_name("database_url"))
    table.finish()
    return value, url


# Sane ranges for [response] and [mempool]: a value outside one is a typo or a misread unit, not a tuning choice.
GWEI = 10**9
RECEIPT_TIMEOUT = (1.0, 3600.0)
SEND_TIMEOUT = (0.1, 30.0)
MAX_FEE_PER_GAS = (GWEI, 100_000 * GWEI)
OUTBID_FACTOR = (Fraction(1), Fraction(10))
BUMP_FACTOR = (Fraction(11, 10), Fraction(10))
SIMULATION_TIMEOUT = (0.01, 30.0)
MAX_CONCURRENT_SIMULATIONS = (1, 256)
SIMULATIONS_PER_SECOND = (1, 100_000)
MAX_SIMULATION_URLS = 16


def _wei(value: int) -> str:
    return f"{value} wei" + (f" ({value / GWEI:g} gwei)" if value >= GWEI // 1000 else "")


def _ranged(table: Table, key: str, parse: Callable[[Any], T], default: T, low: T, high: T,
            show: Callable[[Any], str] = str, hint: str | None = None) -> T:
    """The field parsed, when low <= value <= high; else the error naming the field and the range."""
    value = table.parsed(key, parse, default=default, hint=hint)
    if not low <= value <= high:  # type: ignore[operator]
        raise table.fail(key, f"{show(value)} is out of range: must be from {show(low)} to {show(high)}", hint)
    return value


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _response(table: Table | None, rpc_url: str) -> ResponseSettings:
    if table is None:
        table = Table({}, file="", prefix="response", error=ConfigError)
    endpoints = _endpoints(table, rpc_url)
    receipt_timeout = _ranged(table, "receipt_timeout", parse_duration, 60.0, *RECEIPT_TIMEOUT, seconds,
                              "how long to wait for the response's receipt, e.g. \"60s\"")
    max_fee = _ranged(table, "max_fee_per_gas", parse_amount, 500 * GWEI, *MAX_FEE_PER_GAS, _wei,
                      "the most the guardian pays per gas, in wei, e.g. \"500e9\" for 500 gwei")
    priority_fee = _ranged(table, "priority_fee", parse_amount, 2 * GWEI, 0, max_fee, _wei,
                           "the minimum tip in wei, e.g. \"2e9\"; it cannot exceed max_fee_per_gas")
    outbid_factor = _ranged(table, "outbid_factor", _factor, Fraction(5, 4), *OUTBID_FACTOR, _number,
                            "e.g. 1.25: the pause tips a quarter more than the threat")
    outbid_margin = _ranged(table, "outbid_margin", parse_amount, GWEI, 0, max_fee, _wei,
                            "wei added to the outbid tip, e.g. \"1e9\"; at most max_fee_per_gas")
    bump_hint = "the pause is replaced with higher fees when not mined by then, e.g. \"3s\""
    bump_after = table.parsed("bump_after", parse_duration, default=3.0, hint=bump_hint)
    if not 0 < bump_after < receipt_timeout:
        raise table.fail("bump_after", f"{seconds(bump_after)} must be more than 0s and less than receipt_timeout "
                                       f"({seconds(receipt_timeout)})", bump_hint)
    bump_factor = _ranged(table, "bump_factor", _factor, Fraction(5, 4), *BUMP_FACTOR, _number,
                          "e.g. 1.25; nodes refuse a replacement that raises fees by less than 1.1")
    fallback = table.get("public_fallback_after", (str, int, float, bool), default="2s")
    if fallback is False:
        public_fallback_after = None
    else:
        public_fallback_after = table.parsed("public_fallback_after", parse_duration, default=2.0,
                                             hint="e.g. \"2s\", or false to never send publicly")
        if public_fallback_after >= receipt_timeout:
            raise table.fail("public_fallback_after", f"{seconds(public_fallback_after)} is not less than "
                                                      f"receipt_timeout ({seconds(receipt_timeout)})",
                             "the public fallback would never happen: lower it, or write false for never")
    settings = ResponseSettings(
        receipt_timeout=receipt_timeout,
        max_fee_per_gas=max_fee,
        priority_fee=priority_fee,
        outbid_factor=outbid_factor,
        outbid_margin=outbid_margin,
        bump_after=bump_after,
        bump_factor=bump_factor,
        endpoints=endpoints,
        public_fallback_after=public_fallback_after,
        # The default floor never exceeds a lower fee ceiling; one written in the file must fit under it.
        block_path_min_tip=table.parsed("block_path_min_tip", parse_amount, default=min(10 * 10**9, max_fee)),
        retry_backoff=table.parsed("retry_backoff", parse_duration, default=2.0),
        retry_backoff_max=table.parsed("retry_backoff_max", parse_duration, default=30.0),
        send_timeout=_ranged(table, "send_timeout", parse_duration, 2.0, *SEND_TIMEOUT, seconds,
                             "e.g. \"2s\": a send endpoint slower than this is skipped (private ones for the "
                             "public ones)"),
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


def _number(value: Fraction) -> str:
    return f"{float(value):g}"


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
        url = _rpc_url(item, "url", item.get("url", str))
        endpoints.append(Endpoint(url=url, private=item.get("private", bool, default=False)))
        item.finish()
    if not endpoints:
        raise table.fail("endpoints", "is empty", "remove it to send to chain.rpc_url, or list endpoints")
    return tuple(endpoints)


def _simulation_urls(table: Table) -> tuple[str, ...]:
    """The endpoints simulation batches are spread over, each once (they must serve eth_simulateV1)."""
    listed = table.get("simulation_urls", list, default=[],
                       hint='a list of nodes that serve eth_simulateV1, e.g. ["http://10.0.0.2:8545"]')
    urls = tuple(_rpc_url(table, "simulation_urls", url) for url in listed)
    if len(set(urls)) != len(urls):
        raise table.fail("simulation_urls", "lists an endpoint twice",
                         "each simulation endpoint once: batches are spread over distinct nodes")
    if len(urls) > MAX_SIMULATION_URLS:
        raise table.fail("simulation_urls", f"lists {len(urls)} endpoints, more than {MAX_SIMULATION_URLS}",
                         f"list at most {MAX_SIMULATION_URLS} nodes that serve eth_simulateV1")
    return urls


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
        max_concurrent_simulations=_ranged(table, "max_concurrent_simulations", _whole, 8,
                                           *MAX_CONCURRENT_SIMULATIONS,
                                           hint="pending transactions simulated at once, e.g. 8"),
        simulation_timeout=_ranged(table, "simulation_timeout", parse_duration, 0.5, *SIMULATION_TIMEOUT, seconds,
                                   "how long one simulation may take, e.g. \"500ms\""),
        simulations_per_second=_ranged(table, "simulations_per_second", _whole, 500, *SIMULATIONS_PER_SECOND,
                                       hint="the most simulations asked of the node per second, e.g. 500"),
        simulation_urls=_simulation_urls(table),
    )
    if settings.simulation_urls and not settings.simulate:
        raise table.fail("simulation_urls", "is set but simulate = false",
                         "remove simulation_urls, or set simulate = true to use them")
    table.finish()
    return settings
