"""Plays one scenario on a fresh Anvil fork with the daemon's own Guardian in-process, and reports what it did.

The guardian is built by the daemon's composition root (`build_guardian`) from the team's config, pointed at the
fork, and runs the daemon's own loop (`Guardian.run`). Only the clock differs: the replay's head source
(ReplayHeads) announces each block once the replay has mined it, and the replay mines the next one only when the
guardian has handled it, has judged every pending transaction of the block (the mempool source feeds
`Guardian.on_pending` as in production) and has sent whatever it decided to send. So a replay gives the same answer
on a slow machine as on a fast one. In interval mode the chain mines on its own clock and the guardian follows it
exactly as the daemon does.

Value at risk is measured, not guessed: after the setup the chain is snapshotted, the attack is played once with
no guardian (what it takes unopposed is what was at risk), the chain is reverted, and the attack is played again
with the guardian watching.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import rlp
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from safe_eth.eth.contracts import get_safe_V1_4_1_contract
from web3 import Web3

from onguard.chain.abi import ContractAbi
from onguard.chain.anvil import AnvilNode, start_anvil
from onguard.chain.keys import load_guardian_account
from onguard.config import Config, Endpoint, WatchedContract, load_config
from onguard.errors import ChainUnavailable, OnguardError, PolicyError, ReplayFailed
from onguard.incidents.store import IncidentStore, ResponseStatus
from onguard.policies.kinds.base import Policy, PolicyEnv
from onguard.policies.loader import load_policies, load_policy
from onguard.policies.selfdefence import builtin_policies
from onguard.replay.evidence import BalanceChange, Decoder, HoldingsPoint, TxTrace, trace
from onguard.replay.heads import ReplayHeads
from onguard.replay.originals import OriginalTx, Originals, fetch_originals, json_rpc
from onguard.replay.scenario import Scenario, ScenarioError, Step
from onguard.replay.world import ERC20_ABI, Deployment, dev_key, forge_artifact
from onguard.runtime import Guardian, build_guardian
from onguard.safe.tx import SafeTxData, exec_calldata, sign
from onguard.units import parse_amount

SETTLE_TIMEOUT = 15.0      # seconds allowed for the guardian to judge a block's transactions and send its response
EXTRA_BLOCKS = 5           # at most this many blocks are mined after the scenario's own, for responses still out
GAS_MONEY = 10**18         # an impersonated sender with less than this is given 100 ETH to pay for gas
STOPPED_BEFORE, STOPPED, MISSED, NO_TRIP, FALSE_ALARM = (
    "stopped-before-inclusion", "stopped", "missed", "no-trip", "false-alarm")


@dataclass(frozen=True, slots=True)
class AttackTx:
    step: str            # "attack[2]"
    call: str
    tx_hash: str
    block: int
    position: int
    succeeded: bool
    original_block: int | None = None     # a transaction by hash: where the fork source mined it
    original_position: int | None = None


@dataclass(frozen=True, slots=True)
class Trip:
    policy_id: str
    severity: str
    path: str                     # "mempool" (judged while pending) or "block" (judged once mined)
    block: int                    # the block the incident was opened at
    block_offset: int             # relative to the first attack block (0: the block the attack entered)
    detected_ms: float | None     # after the attack was first visible: the decision
    step: str | None = None       # the attack step whose pending transaction it judged: "attack[1]" (mempool path)
    step_block: int | None = None  # that step's attack block (its offset in the scenario)


@dataclass(frozen=True, slots=True)
class ResponseOutcome:
    action: str
    status: str
    tx_hash: str | None
    block: int | None
    position: int | None
    gas_used: int | None
    sent_ms: float | None         # after the attack was first visible: the response broadcast
    landed: str                   # where it landed relative to the attack, in words
    error: str | None = None      # why it failed, as the responder recorded it (a reverted one: see its trace)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    scenario: str
    file: str
    modelled_on: str | None
    benign: bool
    expect: str
    outcome: str                  # stopped-before-inclusion, stopped, missed, no-trip, false-alarm
    expectation_held: bool
    trips: tuple[Trip, ...]
    responses: tuple[ResponseOutcome, ...]
    attack_txs: tuple[AttackTx, ...]
    first_attack_block: int | None
    held_before_usd: float        # the protocol's watched tokens after the setup, priced
    at_risk_usd: float            # what the attack takes when no guardian watches
    lost_usd: float               # what it took with the guardian watching
    saved_usd: float              # at risk - lost
    gas_used: int                 # by the guardian's responses
    error: str | None = None
    traces: tuple[TxTrace, ...] = ()            # the attack's and the pauses' transactions, call by call
    balances: tuple[BalanceChange, ...] = ()    # per holder and token, from before the attack to the end
    holdings: tuple[HoldingsPoint, ...] = ()    # the holders' value, block by block, with the guardian watching
    fork_source: str = ""
    fork_block: int | None = None
    anvil_version: str | None = None
    policy_files: Mapping[str, str] = field(default_factory=dict)  # path -> sha256 of the policies it ran
    built_in_policies: tuple[str, ...] = ()     # generated from the config, not from a file (self-defence)
    chart: str | None = None                    # the holdings chart's file, once written
    rebuilt_blocks: tuple[int, ...] = ()        # blocks of the fork source rebuilt for transactions by hash
    rebuilt_txs: int = 0                        # their transactions besides the scenario's own

    @property
    def lead_ms(self) -> float | None:
        """From the attack's first visibility to the first response sent."""
        times = [r.sent_ms for r in self.responses if r.sent_ms is not None]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lead_ms"] = self.lead_ms
        return data


def built_in_policy_ids(config: Config) -> tuple[str, ...]:
    """The ids of the policies the guardian generates from the config (none when self-defence is off)."""
    return tuple(id_ for policy in builtin_policies(config, None) for id_ in (policy.common.id, policy.routine.id))


def failed_report(scenario: Scenario | None, path: Path, error: OnguardError) -> ReplayReport:
    """A scenario that could not be played: it counts as not holding its expectation, with the reason."""
    return ReplayReport(
        scenario=scenario.name if scenario else path.stem, file=str(path),
        modelled_on=scenario.modelled_on if scenario else None, benign=scenario.benign if scenario else False,
        expect=scenario.expect if scenario else "?", outcome="error", expectation_held=False, trips=(), responses=(),
        attack_txs=(), first_attack_block=None, held_before_usd=0.0, at_risk_usd=0.0, lost_usd=0.0, saved_usd=0.0,
        gas_used=0, error=error.render().removeprefix("error: "),
        fork_source=scenario.fork.source if scenario else "", fork_block=scenario.fork.block if scenario else None)


def replay(scenario: Scenario) -> ReplayReport:
    """Plays the scenario on a fresh chain, stopped on every exit path."""
    originals = fetch_originals(scenario)  # before any chain starts: an unknown hash is a bad scenario file
    scenario = originals.placed(scenario)
    with tempfile.TemporaryDirectory(prefix="onguard-replay-") as folder, \
            _ForkContext(scenario, Path(folder)) as (node, deployment):
        return asyncio.run(_Replay(scenario, node, deployment, Path(folder), originals).run())


class _ForkContext:
    """A fresh Anvil for the scenario: the fixture's protocol built on it, or a state file, or a fork."""

    def __init__(self, scenario: Scenario, folder: Path) -> None:
        self.scenario = scenario
        self.folder = folder
        self.node: AnvilNode | None = None

    def __enter__(self) -> tuple[AnvilNode, Deployment]:
        fork = self.scenario.fork
        if fork.fixture is not None:
            self.node = start_anvil()
            try:
                return self.node, fork.fixture.build(self.node.rpc_url, self.folder)
            except BaseException:
                self.node.stop()
                raise
        assert self.scenario.config is not None  # the scenario reader requires it without a fixture
        chain_id = load_config(self.scenario.config).chain.chain_id
        if fork.rpc_url is not None:
            json_rpc(fork.rpc_url, "eth_chainId", [])  # fail now with the reason, not after anvil's own retries
            args = ("--fork-url", fork.rpc_url, "--fork-block-number", str(fork.block))
        else:
            args = ("--load-state", str(fork.state_file))
        try:
            self.node = start_anvil(*args, chain_id=chain_id)
        except ChainUnavailable as exc:
            raise ReplayFailed(f"the fork of {fork.source} could not be started: {exc.message}",
                               hint="check the fork source (a state file from anvil --dump-state, or a node "
                                    "that serves the block)") from None
        return self.node, Deployment(config=self.scenario.config, addresses=fork.addresses)

    def __exit__(self, *exc: object) -> None:
        if self.node is not None:
            self.node.stop()


class _Replay:
    def __init__(self, scenario: Scenario, node: AnvilNode, deployment: Deployment, folder: Path,
                 originals: Originals) -> None:
        self.scenario = scenario
        self.node = node
        self.folder = folder
        self.originals = originals
        self.w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 30}))
        self.team_config = load_config(deployment.config)
        self.abis: dict[str, tuple[dict[str, Any], ...]] = {
            **{n: tuple(c.abi.raw) for n, c in self.team_config.contracts.items()}, **scenario.abis}
        self.addresses = self._addresses(deployment)
        self.aliases: dict[str, tuple[str, str]] = {}   # deployed by a step: name -> (address, artifact)
        self.safe_txs_sent: list[str] = []   # Safe transactions of signed steps, until mined (the next nonce)
        self.guardian_account = self._guardian_account()
        self.policies: dict[str, Policy] = {}

    def _addresses(self, deployment: Deployment) -> dict[str, str]:
        config = self.team_config
        known: dict[str, str] = {"safe": config.safe.address}
        if config.safe.guardian_module:
            known["module"] = config.safe.guardian_module
        known.update({n: c.address for n, c in config.contracts.items()})
        known.update(deployment.addresses)
        for name, account in self.scenario.accounts.items():
            known[name] = dev_key(account).address if isinstance(account, int) else account
        for name, contract in self.scenario.contracts.items():
            address = contract.address or known.get(name)
            if address is None:
                raise ScenarioError(f"no address for the contract {name!r}", file=str(self.scenario.path),
                                    field=f"contracts.{name}.address",
                                    hint="give address = \"0x…\" (or name it in the fixture or addresses file)")
            known[name] = address
        return {n: to_checksum_address(a) for n, a in known.items()}

    def _guardian_account(self) -> LocalAccount:
        if self.scenario.guardian_key is not None:
            return dev_key(self.scenario.guardian_key)
        return load_guardian_account(self.team_config.guardian_key)

    # ---- chain helpers (synchronous web3: called through a thread while the guardian runs) ----

    def rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise ReplayFailed(f"{method} failed: {response['error']}")
        return response.get("result")

    def address_of(self, name: str) -> str:
        if name in self.aliases:
            return self.aliases[name][0]
        if name in self.addresses:
            return self.addresses[name]
        return to_checksum_address(name)

    def contract(self, name: str, abi: Any = None) -> Any:
        if abi is None:
            abi = forge_artifact(self.aliases[name][1])["abi"] if name in self.aliases else self.abis[name]
        return self.w3.eth.contract(address=self.address_of(name), abi=list(abi))

    def resolve(self, step: Step, text: str) -> Any:
        text = text.strip()
        where = "call" if step.contract else "deploy"
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if text in self.aliases or text in self.addresses:
            return self.address_of(text)
        if text.startswith("0x") and len(text) == 42:
            return to_checksum_address(text)
        if text.startswith("0x") and len(text) == 66:
            return bytes.fromhex(text[2:])
        if text.startswith("keccak(") and text.endswith(")"):
            return keccak(text=text[7:-1].strip().strip("'\""))
        if text.startswith("balance(") and text.endswith(")"):
            token, holder = (a.strip() for a in text[8:-1].split(",", 1))
            return int(self.contract(token, ERC20_ABI).functions.balanceOf(self.resolve(step, holder)).call())
        try:
            return parse_amount(text)
        except ValueError:
            raise ScenarioError(f"cannot resolve the argument {text!r}", file=str(self.scenario.path),
                                field=f"{step.field}.{where}",
                                hint="an account, a contract, a number like 400_000e18, an address, true/false, "
                                     "balance(token, holder) or keccak('TEXT')") from None

    def send(self, step: Step) -> str:
        """Sends one step (from an impersonated sender unless it is one of Anvil's keys); returns its hash."""
        if step.tx_hash is not None:
            return self.send_original(self.originals.by_hash[step.tx_hash])
        sender = self.address_of(step.sender)
        args = [self.resolve(step, a) for a in step.args]
        tx = {"from": sender, "gas": step.gas, "value": step.value}
        try:
            if step.calldata is not None:
                tx_hash = self.w3.eth.send_transaction({**tx, "to": self.address_of(step.to or ""),
                                                        "data": step.calldata})  # type: ignore[typeddict-item]
            elif step.signed_by:
                by_safe = {"to": self.address_of("safe"), "data": self.safe_exec_calldata(step, args)}
                tx_hash = self.w3.eth.send_transaction({**tx, **by_safe})  # type: ignore[typeddict-item]
            elif step.deploy:
                build = forge_artifact(step.deploy)
                nonce = self.w3.eth.get_transaction_count(sender, "pending")
                address = to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])
                factory = self.w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"])
                tx_hash = factory.constructor(*args).transact(tx)  # type: ignore[arg-type]
                self.aliases[step.alias or ""] = (address, step.deploy)
            else:
                function = self.contract(step.contract or "").functions[step.function]
                tx_hash = function(*args).transact(tx)
            if step.signed_by:
                self.safe_txs_sent.append(tx_hash.to_0x_hex())
        except OnguardError:
            raise
        except Exception as exc:  # noqa: BLE001 (web3 refusing the arguments, or the node refusing the transaction)
            raise ScenarioError(f"{step.text} could not be sent: {exc}", file=str(self.scenario.path),
                                field=step.field, hint="check the arguments against the function's ABI") from None
        return tx_hash.to_0x_hex()

    def safe_exec_calldata(self, step: Step, args: list[Any]) -> bytes:
        """The step's call made by the Safe: execTransaction at its next nonce (after the Safe transactions this
        replay sent that are not mined yet), signed by the step's signers' Anvil keys."""
        inner = self.contract(step.contract or "").encode_abi(step.function, args=args)
        safe = self.contract("safe", get_safe_V1_4_1_contract(self.w3).abi)
        self.safe_txs_sent = [h for h in self.safe_txs_sent if self.rpc("eth_getTransactionReceipt", [h]) is None]
        nonce = int(safe.functions.nonce().call()) + len(self.safe_txs_sent)
        safe_tx = SafeTxData.call(safe.address, int(self.rpc("eth_chainId", []), 16),
                                  to=self.address_of(step.contract or ""), data=bytes.fromhex(inner[2:]), nonce=nonce)
        keys = []
        for signer in step.signed_by:
            index = self.scenario.accounts.get(signer)
            if not isinstance(index, int):
                raise ScenarioError(f"signer {signer!r} has no key: it is an impersonated address",
                                    file=str(self.scenario.path), field=f"{step.field}.signed_by",
                                    hint=f"give {signer} one of Anvil's keys in [accounts] (an index 0..9)")
            keys.append(dev_key(index))
        return exec_calldata(safe_tx, [sign(safe_tx, key) for key in keys])

    def send_original(self, tx: OriginalTx) -> str:
        """The transaction as it was (see OriginalTx), from its sender impersonated, with the sender's next nonce."""
        self.rpc("anvil_impersonateAccount", [tx.sender])
        return str(self.rpc("eth_sendTransaction", [dict(tx.request)]))

    def prepare_block(self, offset: int) -> None:
        """The next block as the fork source's: its base fee, and its timestamp when that is still ahead of the
        head's (the setup's blocks may have passed it)."""
        block = self.originals.blocks.get(offset)
        if block is None:
            return
        if block.base_fee is not None:
            self.rpc("anvil_setNextBlockBaseFeePerGas", [hex(block.base_fee)])
        if block.timestamp > int(self.w3.eth.get_block("latest")["timestamp"]):
            self.rpc("evm_setNextBlockTimestamp", [hex(block.timestamp)])

    def impersonate(self, steps: tuple[Step, ...]) -> None:
        unlocked = {a.lower() for a in self.rpc("eth_accounts", [])}
        for step in steps:
            if step.tx_hash is not None:
                continue
            address = self.address_of(step.sender)
            if address.lower() in unlocked:
                continue
            self.rpc("anvil_impersonateAccount", [address])
            if int(self.rpc("eth_getBalance", [address, "latest"]), 16) < GAS_MONEY:
                self.rpc("anvil_setBalance", [address, hex(100 * GAS_MONEY)])

    def mine(self) -> None:
        self.rpc("evm_mine", [])

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber", []), 16)

    def balances(self, block: int | str = "latest") -> dict[tuple[str, str], int]:
        """(holder, token) -> balance, in the token's base units, for every holder and token that counts."""
        return {(holder, token): int(self.contract(token, ERC20_ABI).functions.balanceOf(
                    self.address_of(holder)).call(block_identifier=block))
                for token in self.scenario.tokens for holder in self.scenario.holders}

    def token_info(self) -> dict[str, tuple[str, int]]:
        """token -> (symbol, decimals)."""
        info = {}
        for token in self.scenario.tokens:
            erc20 = self.contract(token, ERC20_ABI)
            info[token] = (str(erc20.functions.symbol().call()), int(erc20.functions.decimals().call()))
        return info

    def holdings(self) -> Fraction:
        """What the holders hold of the tokens that count, in USD."""
        return self.value_of(self.balances())

    def value_of(self, balances: Mapping[tuple[str, str], int]) -> Fraction:
        info = self.token_info()
        total = Fraction(0)
        for (_holder, token), balance in balances.items():
            symbol, decimals = info[token]
            if symbol not in self.scenario.prices:
                raise ScenarioError(f"no price for {symbol}, a token the protocol holds", file=str(self.scenario.path),
                                    field=f"prices.{symbol}", hint=f"add {symbol} = <USD per token> to [prices]")
            total += Fraction(balance, 10**decimals) * self.scenario.prices[symbol]
        return total

    def receipt(self, tx_hash: str) -> Any:
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)  # type: ignore[arg-type]

    # ---- the replay ----

    async def run(self) -> ReplayReport:
        scenario = self.scenario
        self.config()  # before any chain work: a bad policy is bad input
        self.impersonate(scenario.setup + scenario.attack)
        self.rpc("evm_setAutomine", [True])
        for step in scenario.setup:
            receipt = self.receipt(self.send(step))
            if receipt["status"] != 1:
                raise ScenarioError(f"setup step {step.text} reverted", file=str(scenario.path), field=step.field,
                                    hint="setup steps must succeed: they build the state the attack starts from")
        config = self.config()  # contracts the setup deployed are watched under their `as` names, at their address
        held_before = self.holdings()
        at_risk = Fraction(0)
        if not scenario.benign:  # honest outflows are not losses: nothing is at risk in a benign scenario
            snapshot = self.rpc("evm_snapshot", [])
            aliases = dict(self.aliases)
            _, _, held_at_attack = await self.play(None)
            start = held_before if held_at_attack is None else held_at_attack
            at_risk = max(start - self.holdings(), Fraction(0))
            if not self.rpc("evm_revert", [snapshot]):
                raise ReplayFailed("the chain could not be reverted to the snapshot taken after the setup")
            self.aliases = aliases
            self.safe_txs_sent = []  # those of the unopposed run are gone with it
        judged: set[str] = set()
        heads = None if scenario.mining == "interval" else ReplayHeads()
        guardian = build_guardian(config, self.guardian_account, policies=list(self.policies.values()),
                                  store=IncidentStore(config.state), heads=heads,
                                  on_judged=lambda pending: judged.add(pending.hash))
        try:
            before, first_block = self.balances(), self.head()
            attack_txs, first_visible, held_at_attack = await self.play(
                _Watching(guardian, heads, judged, guardian.policies))
            # Blocks of the fork source rebuilt before the attack's are its context, not its loss.
            held_before = held_before if held_at_attack is None else held_at_attack
            lost = Fraction(0) if scenario.benign else max(held_before - self.holdings(), Fraction(0))
            report = self.report(guardian, attack_txs, first_visible, held_before, at_risk, lost)
            return replace(report, **self.evidence(report, before, first_block, config))
        finally:
            await guardian.close()

    def evidence(self, report: ReplayReport, before: Mapping[tuple[str, str], int], first_block: int,
                 config: Config) -> dict[str, Any]:
        """Traces, balance changes, holdings block by block, and what the replay ran on."""
        decoder = self.decoder(config)
        traces = [self.trace(decoder, f"{t.step} {t.call}", t.tx_hash) for t in report.attack_txs]
        for response in report.responses:  # a pause that was mined, succeeded or reverted (never one dropped)
            if response.tx_hash and self.rpc("eth_getTransactionReceipt", [response.tx_hash]) is not None:
                traces.append(self.trace(decoder, f"pause {response.action}", response.tx_hash))
        info = self.token_info()
        after = self.balances()
        changes = tuple(BalanceChange(holder=holder, address=self.address_of(holder), token=info[token][0],
                                      decimals=info[token][1], before=before[holder, token],
                                      after=after[holder, token]) for holder, token in before)
        holdings = tuple(HoldingsPoint(block=b, usd=_usd(self.value_of(self.balances(b))))
                         for b in range(first_block, self.head() + 1))
        policies = self.scenario.policies or tuple(sorted(config.policies_dir.glob("*.toml")))
        rebuilt = self.originals.blocks.values()
        return {"traces": tuple(traces), "balances": changes, "holdings": holdings,
                "rebuilt_blocks": tuple(b.number for b in rebuilt),
                "rebuilt_txs": sum(len(b.txs) for b in rebuilt) - len(self.originals.by_hash),
                "fork_source": self.scenario.fork.source, "fork_block": self.scenario.fork.block,
                "anvil_version": str(self.rpc("web3_clientVersion", [])),
                "policy_files": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in policies},
                "built_in_policies": built_in_policy_ids(config)}

    def decoder(self, config: Config) -> Decoder:
        named: dict[str, tuple[str, Any]] = {}
        if config.safe.guardian_module:
            named[config.safe.guardian_module] = ("module", forge_artifact("GuardianModule")["abi"])
        named[config.safe.address] = ("safe", get_safe_V1_4_1_contract(self.w3).abi)
        for name, address in self.addresses.items():
            named[address] = (name, self.abis.get(name) or named.get(address, (name, None))[1])
        for alias, (address, artifact_name) in self.aliases.items():
            named[address] = (alias, forge_artifact(artifact_name)["abi"])
        return Decoder(named)

    def trace(self, decoder: Decoder, label: str, tx_hash: str) -> TxTrace:
        receipt = self.receipt(tx_hash)
        output = self.rpc("debug_traceTransaction", [tx_hash, {"tracer": "callTracer"}])
        return trace(output, decoder, label=label, tx_hash=tx_hash, block=int(receipt["blockNumber"]),
                     position=int(receipt["transactionIndex"]))

    def config(self) -> Config:
        """The team's config pointed at the fork: the same contracts, actions and Safe, this chain's endpoints, a
        scratch database, the scenario's mempool setting, and the contracts the scenario adds or deploys watched
        by name. Loads the scenario's policies against it."""
        team = self.team_config
        chain_id = int(self.rpc("eth_chainId", []), 16)
        extra = {name: WatchedContract(name=name, address=self.address_of(name), abi=ContractAbi.from_json(abi))
                 for name, abi in self.abis.items() if name not in team.contracts and name in self.addresses}
        for step in (*self.scenario.setup, *self.scenario.attack):
            if step.deploy is None or step.alias is None:
                continue
            # Before the step has run, its address is a placeholder that lets the policies load.
            address = self.aliases[step.alias][0] if step.alias in self.aliases else to_checksum_address(
                keccak(text=f"onguard-replay:{step.alias}")[12:])
            extra[step.alias] = WatchedContract(name=step.alias, address=address,
                                                abi=ContractAbi.from_json(forge_artifact(step.deploy)["abi"]))
        config = replace(
            team, database=self.folder / "replay.db",
            chain=replace(team.chain, rpc_url=self.node.rpc_url, rpc_urls=(), chain_id=chain_id, start_block=None,
                          ws_url=self.node.ws_url if self.scenario.mining == "interval" else None),
            response=replace(team.response, endpoints=(Endpoint(url=self.node.rpc_url, private=False),),
                             public_fallback_after=None),
            mempool=replace(team.mempool, enabled=self.scenario.mempool, ws_url=self.node.ws_url),
            contracts=MappingProxyType({**team.contracts, **extra}))
        self.policies = {p.common.id: p for p in self.load_policies(config)}
        return config

    def load_policies(self, config: Config) -> list[Policy]:
        if self.scenario.policies is None:
            return load_policies(config.policies_dir, config.contracts, config.actions)
        env = PolicyEnv(contracts=config.contracts, actions=config.actions)
        policies, seen = [], set()
        for path in self.scenario.policies:
            policy = load_policy(path, env)
            if policy.common.id in seen:
                raise PolicyError(f"id {policy.common.id!r} is used twice in this scenario", file=str(path),
                                  field="id", hint="list each policy once")
            seen.add(policy.common.id)
            if policy.common.enabled:
                policies.append(policy)
        return policies

    async def play(self, watching: _Watching | None) -> tuple[list[AttackTx], float | None, Fraction | None]:
        """Plays the attack steps, block by block; with a guardian, it watches and answers as the daemon would.
        Returns the attack's transactions, when the first was sent, and the holdings just before the first block
        with a step of the scenario (manual and automine modes)."""
        if watching is not None:
            await watching.start()
        try:
            held_at_attack = None
            if self.scenario.mining == "interval":
                sent, first_visible = await self.play_interval(watching)
            else:
                sent, first_visible, held_at_attack = await self.play_blocks(watching)
        finally:
            if watching is not None:
                await watching.stop()
            await asyncio.to_thread(self.rpc, "evm_setIntervalMining", [0])
            await asyncio.to_thread(self.rpc, "evm_setAutomine", [True])
        txs = []
        for step, tx_hash in sent:
            receipt = await asyncio.to_thread(self.receipt, tx_hash)
            original = self.originals.by_hash.get(step.tx_hash or "")
            txs.append(AttackTx(step=step.field, call=step.text, tx_hash=tx_hash, block=int(receipt["blockNumber"]),
                                position=int(receipt["transactionIndex"]), succeeded=receipt["status"] == 1,
                                original_block=original.block if original else None,
                                original_position=original.position if original else None))
        return txs, first_visible, held_at_attack

    def by_block(self) -> tuple[dict[int, list[Step]], int]:
        by_block: dict[int, list[Step]] = {}
        for step in self.scenario.attack:
            by_block.setdefault(step.block, []).append(step)
        return by_block, max(by_block) + self.scenario.after_blocks

    async def play_blocks(self, watching: _Watching | None
                          ) -> tuple[list[tuple[Step, str]], float | None, Fraction | None]:
        """Manual mining (one block per attack block, ordered by fee) or automine (each transaction mined as
        sent). A block of the fork source is rebuilt in its attack block (Originals.plan), with its base fee and
        timestamp. With a guardian: every block is announced to its loop and waited on."""
        manual = self.scenario.mining == "manual"
        sent: list[tuple[Step, str]] = []
        first_visible: float | None = None
        held_at_attack: Fraction | None = None
        await asyncio.to_thread(self.rpc, "evm_setAutomine", [not manual])
        by_block, last = self.by_block()
        offset = 0
        # Past the scenario's blocks, a few more while a response is still out, so that it lands.
        while offset <= last or (watching is not None and watching.responses_out() and offset <= last + EXTRA_BLOCKS):
            if offset == min(by_block):
                held_at_attack = await asyncio.to_thread(self.holdings)
            hashes = []
            for item in self.originals.plan(offset, by_block.get(offset, [])):
                if isinstance(item, OriginalTx):  # the fork source's own transaction, around the scenario's
                    hashes.append(await asyncio.to_thread(self.send_original, item))
                    continue
                step = item
                if first_visible is None:
                    first_visible = time.time()
                tx_hash = await asyncio.to_thread(self.send, step)
                hashes.append(tx_hash)
                sent.append((step, tx_hash))
                if not manual:
                    await asyncio.to_thread(self.receipt, tx_hash)
                    if watching is not None:
                        await watching.settle(await asyncio.to_thread(self.head))
            if manual and watching is not None:
                await watching.judged_all(hashes)   # a pause decided on a pending attack is now in the pool
            if manual or not hashes:
                await asyncio.to_thread(self.prepare_block, offset)
                await asyncio.to_thread(self.mine)
                if watching is not None:
                    await watching.settle(await asyncio.to_thread(self.head))
            offset += 1
        return sent, first_visible, held_at_attack

    async def play_interval(self, watching: _Watching | None) -> tuple[list[tuple[Step, str]], float | None]:
        """Interval mining: Anvil mines a block every `block_time` seconds on its own clock. The attack steps of
        offset k are sent as soon as the chain reaches the k-th block after the interval began; the guardian runs
        as the daemon runs it (its own head follower, pending transactions judged as they arrive), with no
        waiting on it before a block: whatever it has not sent when Anvil mines is too late for that block."""
        block_time = self.scenario.block_time or 1
        sent: list[tuple[Step, str]] = []
        first_visible: float | None = None

        async def wait_for_block(number: int) -> None:
            deadline = time.monotonic() + block_time * 3 + SETTLE_TIMEOUT
            while await asyncio.to_thread(self.head) < number:
                if time.monotonic() > deadline:
                    raise ReplayFailed(f"the chain did not reach block {number} in interval mode")
                if watching is not None:
                    watching.check()
                await asyncio.sleep(0.02)

        await asyncio.to_thread(self.rpc, "evm_setAutomine", [False])
        start = await asyncio.to_thread(self.head)
        await asyncio.to_thread(self.rpc, "evm_setIntervalMining", [block_time])
        by_block, last = self.by_block()
        offset = 0
        while offset <= last or (watching is not None and watching.responses_out() and offset <= last + EXTRA_BLOCKS):
            # Offset k: sent once block start + k is mined, so they wait in the pool for block start + k + 1.
            await wait_for_block(start + offset)
            for step in by_block.get(offset, []):
                if first_visible is None:
                    first_visible = time.time()
                sent.append((step, await asyncio.to_thread(self.send, step)))
            offset += 1
        await wait_for_block(start + offset)
        if watching is not None:
            head = await asyncio.to_thread(self.head)
            await watching.until(lambda: (watching.guardian.source.last_committed or 0) >= head,
                                 "the guardian did not catch up with the chain")
        return sent, first_visible

    # ---- the report ----

    def report(self, guardian: Guardian, attack_txs: list[AttackTx], first_visible: float | None,
               held_before: Fraction, at_risk: Fraction, lost: Fraction) -> ReplayReport:
        scenario, store = self.scenario, guardian.store
        first_attack = min(((t.block, t.position) for t in attack_txs), default=None)
        step_of = {t.tx_hash.lower(): t.step for t in attack_txs}
        block_of = {s.field: s.block for s in scenario.attack}
        trips, responses = [], []
        for incident in sorted(store.incidents(), key=lambda i: i.id):
            timeline = store.timeline(incident.id)
            decided = next((e for e in timeline if e.kind == "decided"), None)
            detected_ms = decided.detail.get("decided_ms") if decided else _since(first_visible, timeline[0].at)
            path = decided.detail.get("path", "mempool") if decided else incident.evidence.get("path", "block")
            threat = incident.evidence.get("threat_tx") or (decided.detail.get("threat_tx") if decided else None)
            step = step_of.get(str(threat).lower()) if threat else None
            trips.append(Trip(policy_id=incident.policy_id, severity=incident.severity, path=path,
                              block=incident.opened_block,
                              block_offset=incident.opened_block - first_attack[0] if first_attack else 0,
                              detected_ms=detected_ms, step=step,
                              step_block=block_of.get(step) if step else None))
            for record in store.responses(incident.id):
                broadcast = next((e for e in timeline if e.kind == "response-broadcast"
                                  and e.detail.get("action") == record.action), None)
                included = next((e for e in timeline if e.kind == "response-included"
                                 and e.detail.get("action") == record.action), None)
                sent_ms = None
                if broadcast is not None:
                    sent_ms = broadcast.detail.get("broadcast_ms") or _since(first_visible, broadcast.at)
                block, position = record.block_number, int(included.detail["position"]) if included else None
                if position is None and record.tx_hash:  # a failed one may still be mined (reverted): say where
                    receipt = self.rpc("eth_getTransactionReceipt", [record.tx_hash])
                    if receipt is not None:
                        block, position = int(receipt["blockNumber"], 16), int(receipt["transactionIndex"], 16)
                responses.append(ResponseOutcome(
                    action=record.action, status=record.status, tx_hash=record.tx_hash, block=block,
                    position=position, gas_used=record.gas_used, sent_ms=sent_ms,
                    landed=_landed(block, position, attack_txs), error=record.error))
        mined = [(r.block, r.position) for r in responses if r.status == ResponseStatus.MINED and r.block is not None]
        if not trips:
            outcome = NO_TRIP
        elif scenario.benign:
            outcome = FALSE_ALARM
        elif not mined:
            outcome = MISSED
        elif first_attack is None or min(mined) < first_attack:
            outcome = STOPPED_BEFORE
        else:
            outcome = STOPPED
        held = {"no-trip": outcome == NO_TRIP, "stopped-before-inclusion": outcome == STOPPED_BEFORE,
                "stopped": outcome in (STOPPED, STOPPED_BEFORE)}[scenario.expect]
        return ReplayReport(
            scenario=scenario.name, file=str(scenario.path), modelled_on=scenario.modelled_on, benign=scenario.benign,
            expect=scenario.expect, outcome=outcome, expectation_held=held, trips=tuple(trips),
            responses=tuple(responses), attack_txs=tuple(attack_txs),
            first_attack_block=first_attack[0] if first_attack else None, held_before_usd=_usd(held_before),
            at_risk_usd=_usd(at_risk), lost_usd=_usd(lost), saved_usd=_usd(max(at_risk - lost, Fraction(0))),
            gas_used=sum(r.gas_used or 0 for r in responses))


class _Watching:
    """The guardian running the daemon's loop (`Guardian.run`) while the replay plays, and the conditions the
    replay waits on. Every wait also fails at once if the daemon itself stopped (a refused preflight…)."""

    def __init__(self, guardian: Guardian, heads: ReplayHeads | None, judged: set[str],
                 policies: Mapping[str, Policy]) -> None:
        self.guardian = guardian
        self.heads = heads
        self.judged = judged
        self.policies = policies
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._running = asyncio.create_task(self.guardian.run(self._stop))
        await self.until(self.guardian.ready.is_set, "the guardian did not start")
        if self.heads is not None:
            await self.until(self.heads.idle, "the guardian's block loop did not start")
        mempool = self.guardian.mempool
        if mempool is not None:
            await self.until(lambda: mempool.live, "the mempool subscription did not come up")

    async def settle(self, head: int) -> None:
        """Announces the head to the block loop, waits until it has handled it, then until every response the
        guardian decided on has been sent."""
        assert self.heads is not None
        self.heads.advance(head)
        await self.until(self.heads.idle, "the guardian did not handle the block in time")
        await self.until(lambda: not self.responses_unsent(), "the guardian's response was not sent in time")

    async def judged_all(self, hashes: list[str]) -> None:
        if self.guardian.mempool is not None:
            await self.until(lambda: all(h in self.judged for h in hashes),
                             "the guardian did not judge the pending transactions in time")
        await self.until(lambda: not self.responses_unsent(), "the guardian's response was not sent in time")

    async def stop(self) -> None:
        if self._running is None:
            return
        if not self._running.done():
            await self.guardian.drain_responses(timeout=SETTLE_TIMEOUT)
        self._stop.set()
        await self._running   # run() finishes responses under way, then returns (or raises why it stopped)

    def check(self) -> None:
        """Raises what stopped the daemon, if it stopped."""
        if self._running is not None and self._running.done():
            error = self._running.exception()
            if error is not None:
                raise error
            raise ReplayFailed("the guardian stopped while the replay was playing")

    async def until(self, condition: Callable[[], bool], failure: str, timeout: float = SETTLE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check()
            if time.monotonic() > deadline:
                raise ReplayFailed(failure, hint="the machine may be overloaded; run the scenario again")
            await asyncio.sleep(0.01)

    def responses_unsent(self) -> bool:
        """An incident with an action decided and not yet sent (nor found already done, nor failed)."""
        store = self.guardian.store
        for incident in store.incidents():
            policy = self.policies.get(incident.policy_id)
            if incident.dry_run or policy is None:
                continue
            records = {r.action: r.status for r in store.responses(incident.id)}
            if any(records.get(a, ResponseStatus.CLAIMED) == ResponseStatus.CLAIMED
                   for a in policy.common.response if a in self.guardian.config.actions):
                return True
        return False

    def responses_out(self) -> bool:
        store = self.guardian.store
        return any(r.status == ResponseStatus.SENT for i in store.incidents() for r in store.responses(i.id))


def _since(start: float | None, at: str) -> float | None:
    if start is None:
        return None
    return round(max(datetime.fromisoformat(at).timestamp() - start, 0.0) * 1000, 1)


def _usd(value: Fraction) -> float:
    return round(float(value), 2)


def _landed(block: int | None, position: int | None, attack_txs: list[AttackTx]) -> str:
    if block is None or position is None:
        return "not mined"
    before = [t for t in attack_txs if (t.block, t.position) < (block, position)]
    after = [t for t in attack_txs if (t.block, t.position) > (block, position)]
    if not before:
        return f"block {block} position {position}: before every attack transaction"
    succeeded = sum(t.succeeded for t in before)
    reverted = sum(not t.succeeded for t in after)
    return (f"block {block} position {position}: after {len(before)} attack transaction(s) "
            f"({succeeded} succeeded); {len(after)} came after it ({reverted} reverted)")

