"""Plays one scenario on a fresh Anvil fork with the daemon's Guardian in-process, and reports what it did.

The guardian is the daemon's own code (Guardian.start / step / on_pending, the MempoolSource, the module
responder): only the clock differs. The daemon polls for blocks on a timer; the replay calls `step()` after each
block it mines, and before mining a block waits until the guardian has judged every pending transaction of that
block and sent whatever it decided to send, so a replay gives the same answer on a slow machine as on a fast one.

Value at risk is measured, not guessed: after the setup the chain is snapshotted, the attack is played once with
no guardian (what it takes unopposed is what was at risk), the chain is reverted, and the attack is played again
with the guardian watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import rlp
from eth_utils import keccak, to_checksum_address
from web3 import Web3

from onguard.chain.anvil import AnvilNode, start_anvil
from onguard.config import load_config
from onguard.demo.world import (
    Roles,
    World,
    artifact,
    build_world,
    dev_account,
    write_config,
)
from onguard.errors import ChainUnavailable, OnguardError, PolicyError
from onguard.incidents.store import IncidentStore, ResponseStatus
from onguard.paths import ARTIFACTS_DIR
from onguard.policies.kinds.base import Policy, PolicyEnv
from onguard.policies.loader import load_policy
from onguard.replay.scenario import WORLD_CONTRACTS, Scenario, ScenarioError, Step
from onguard.runtime import Guardian
from onguard.sources.mempool import PendingTransaction
from onguard.units import parse_amount

PROBE_TIMEOUT = 5.0        # seconds a fork source gets to answer eth_chainId before the scenario fails
SETTLE_TIMEOUT = 15.0      # seconds allowed for the guardian to judge a block's transactions and send its response
EXTRA_BLOCKS = 5           # at most this many blocks are mined after the scenario's own, for responses still out
ACTOR_INDEX = {"attacker": Roles.ATTACKER, "alice": Roles.DEPOSITORS[0], "bob": Roles.DEPOSITORS[1],
               "carol": Roles.DEPOSITORS[2], "updater": Roles.ORACLE_UPDATER, "deployer": Roles.DEPLOYER}
WATCHED_TOKENS = ("asset", "collateral")   # the protocol's holdings: the vault's balances of these
STOPPED_BEFORE, STOPPED, MISSED, NO_TRIP, FALSE_ALARM = (
    "stopped-before-inclusion", "stopped", "missed", "no-trip", "false-alarm")


class ReplayFailed(OnguardError):
    """The scenario could not be played to the end (its fork source is unreachable, a setup step reverted…)."""


@dataclass(frozen=True, slots=True)
class AttackTx:
    step: str            # "attack[2]"
    call: str
    tx_hash: str
    block: int
    position: int
    succeeded: bool


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

    @property
    def lead_ms(self) -> float | None:
        """From the attack's first visibility to the first response sent."""
        times = [r.sent_ms for r in self.responses if r.sent_ms is not None]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lead_ms"] = self.lead_ms
        return data


def failed_report(scenario: Scenario | None, path: Path, error: OnguardError) -> ReplayReport:
    """A scenario that could not be played: it counts as not holding its expectation, with the reason."""
    return ReplayReport(
        scenario=scenario.name if scenario else path.stem, file=str(path),
        modelled_on=scenario.modelled_on if scenario else None, benign=scenario.benign if scenario else False,
        expect=scenario.expect if scenario else "?", outcome="error", expectation_held=False, trips=(), responses=(),
        attack_txs=(), first_attack_block=None, held_before_usd=0.0, at_risk_usd=0.0, lost_usd=0.0, saved_usd=0.0,
        gas_used=0, error=error.render().removeprefix("error: "))


def replay(scenario: Scenario) -> ReplayReport:
    """Plays the scenario on a fresh chain, stopped on every exit path."""
    with tempfile.TemporaryDirectory(prefix="onguard-replay-") as folder, _start_fork(scenario) as (node, world):
        return asyncio.run(_Replay(scenario, node, world, Path(folder)).run())


class _ForkContext:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.node: AnvilNode | None = None

    def __enter__(self) -> tuple[AnvilNode, World]:
        fork = self.scenario.fork
        if fork.world == "demo":
            self.node = start_anvil()
            try:
                return self.node, build_world(self.node.rpc_url)
            except BaseException:
                self.node.stop()
                raise
        world = World.from_json(fork.world_file.read_text()) if fork.world_file else None
        if world is None:
            raise ScenarioError("no world file", file=str(self.scenario.path), field="fork.world_file")
        if fork.rpc_url is not None:
            _probe(fork.rpc_url)  # fail now with the reason, not after anvil's own retries
            args = ("--fork-url", fork.rpc_url, "--fork-block-number", str(fork.block))
        else:
            args = ("--load-state", str(fork.state_file))
        try:
            self.node = start_anvil(*args)
        except ChainUnavailable as exc:
            raise ReplayFailed(f"the fork of {fork.source} could not be started: {exc.message}",
                               hint="check the fork source (a state file from anvil --dump-state, or a node "
                                    "that serves the block)") from None
        return self.node, world.at(self.node.rpc_url)

    def __exit__(self, *exc: object) -> None:
        if self.node is not None:
            self.node.stop()


def _start_fork(scenario: Scenario) -> _ForkContext:
    return _ForkContext(scenario)


def _probe(url: str) -> None:
    request = urllib.request.Request(url, data=b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}',
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReplayFailed(f"the fork source {url} is unreachable ({reason})",
                           hint="check fork.rpc_url (and that the node serves historical state at fork.block), "
                                "or replay from a state file (fork.state_file) without any network") from None


class _Replay:
    def __init__(self, scenario: Scenario, node: AnvilNode, world: World, folder: Path) -> None:
        self.scenario = scenario
        self.node = node
        self.world = world
        self.folder = folder
        self.w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 30}))
        self.aliases: dict[str, tuple[str, str]] = {}   # name -> (address, artifact)
        self.guardian_account = dev_account(Roles.GUARDIAN)
        self.policies: dict[str, Policy] = {}

    # ---- chain helpers (synchronous web3: called through a thread while the guardian runs) ----

    def rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise ReplayFailed(f"{method} failed: {response['error']}")
        return response.get("result")

    def address_of(self, name: str) -> str:
        if name in ACTOR_INDEX:
            return dev_account(ACTOR_INDEX[name]).address
        if name == "safe":
            return self.world.safe
        if name in WORLD_CONTRACTS:
            return getattr(self.world, name)
        if name in self.aliases:
            return self.aliases[name][0]
        return to_checksum_address(name)

    def contract(self, name: str) -> Any:
        artifact_name = WORLD_CONTRACTS.get(name) or self.aliases[name][1]
        return self.w3.eth.contract(address=self.address_of(name), abi=artifact(artifact_name)["abi"])

    def resolve(self, step: Step, text: str) -> Any:
        text = text.strip()
        where = "call" if step.contract else "deploy"
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if text in ACTOR_INDEX or text == "safe" or text in WORLD_CONTRACTS or text in self.aliases:
            return self.address_of(text)
        if text.startswith("0x") and len(text) == 42:
            return to_checksum_address(text)
        if text.startswith("0x") and len(text) == 66:
            return bytes.fromhex(text[2:])
        if text.startswith("keccak(") and text.endswith(")"):
            return keccak(text=text[7:-1].strip().strip("'\""))
        if text.startswith("shares(") and text.endswith(")"):
            return int(self.contract("vault").functions.balanceOf(self.resolve(step, text[7:-1])).call())
        if text.startswith("balance(") and text.endswith(")"):
            token, holder = (a.strip() for a in text[8:-1].split(",", 1))
            return int(self.contract(token).functions.balanceOf(self.resolve(step, holder)).call())
        try:
            return parse_amount(text)
        except ValueError:
            raise ScenarioError(f"cannot resolve the argument {text!r}", file=str(self.scenario.path),
                                field=f"{step.field}.{where}",
                                hint="an actor, a contract, a number like 400_000e18, an address, true/false, "
                                     "shares(actor), balance(token, actor) or keccak('TEXT')") from None

    def send(self, step: Step) -> str:
        """Sends one step (an impersonated sender when it is not one of Anvil's keys); returns its hash."""
        sender = self.address_of(step.sender)
        args = [self.resolve(step, a) for a in step.args]
        tx = {"from": sender, "gas": step.gas}
        try:
            if step.calldata is not None:
                tx_hash = self.w3.eth.send_transaction({**tx, "to": self.address_of(step.to or ""),
                                                        "data": step.calldata})  # type: ignore[typeddict-item]
            elif step.deploy:
                build = artifact(step.deploy)
                nonce = self.w3.eth.get_transaction_count(sender, "pending")
                address = to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])
                factory = self.w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"])
                tx_hash = factory.constructor(*args).transact(tx)  # type: ignore[arg-type]
                self.aliases[step.alias or ""] = (address, step.deploy)
            else:
                function = self.contract(step.contract or "").functions[step.function]
                tx_hash = function(*args).transact(tx)
        except OnguardError:
            raise
        except Exception as exc:  # noqa: BLE001 (web3 refusing the arguments, or the node refusing the transaction)
            raise ScenarioError(f"{step.text} could not be sent: {exc}", file=str(self.scenario.path),
                                field=step.field, hint="check the arguments against the function's ABI") from None
        return tx_hash.to_0x_hex()

    def impersonate(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            if step.sender not in ACTOR_INDEX:
                address = self.address_of(step.sender)
                self.rpc("anvil_impersonateAccount", [address])
                self.rpc("anvil_setBalance", [address, hex(10**20)])

    def mine(self) -> None:
        self.rpc("evm_mine", [])

    def holdings(self) -> Fraction:
        """The watched tokens the protocol holds (the vault's, and the scenario's other `holders`), in USD."""
        total = Fraction(0)
        for name in WATCHED_TOKENS:
            token = self.contract(name)
            symbol = token.functions.symbol().call()
            if symbol not in self.scenario.prices:
                raise ScenarioError(f"no price for {symbol}, a token the protocol holds", file=str(self.scenario.path),
                                    field=f"prices.{symbol}", hint=f"add {symbol} = <USD per token> to [prices]")
            decimals = int(token.functions.decimals().call())
            for holder in self.scenario.holders:
                balance = int(token.functions.balanceOf(self.address_of(holder)).call())
                total += Fraction(balance, 10**decimals) * self.scenario.prices[symbol]
        return total

    def receipt(self, tx_hash: str) -> Any:
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.02)  # type: ignore[arg-type]

    # ---- the replay ----

    async def run(self) -> ReplayReport:
        scenario = self.scenario
        policies = self.load_policies()  # before any chain work: a bad policy is bad input
        self.policies = {p.common.id: p for p in policies}
        self.impersonate(scenario.setup + scenario.attack)
        self.rpc("evm_setAutomine", [True])
        for step in scenario.setup:
            receipt = self.receipt(self.send(step))
            if receipt["status"] != 1:
                raise ScenarioError(f"setup step {step.text} reverted", file=str(scenario.path), field=step.field,
                                    hint="setup steps must succeed: they build the state the attack starts from")
        if self.aliases:  # contracts the setup deployed are watched under their `as` names: at their addresses now
            policies = self.load_policies()
            self.policies = {p.common.id: p for p in policies}
        held_before = self.holdings()
        at_risk = Fraction(0)
        if not scenario.benign:  # honest outflows are not losses: nothing is at risk in a benign scenario
            snapshot = self.rpc("evm_snapshot", [])
            aliases = dict(self.aliases)
            await self.play(None)
            at_risk = max(held_before - self.holdings(), Fraction(0))
            if not self.rpc("evm_revert", [snapshot]):
                raise ReplayFailed("the chain could not be reverted to the snapshot taken after the setup")
            self.aliases = aliases
        guardian = Guardian(load_config(self.write_config()), self.guardian_account, policies=policies,
                            store=IncidentStore(self.folder / "onguard.db"))
        try:
            attack_txs, first_visible = await self.play(guardian)
            lost = Fraction(0) if scenario.benign else max(held_before - self.holdings(), Fraction(0))
            return self.report(guardian, attack_txs, first_visible, held_before, at_risk, lost)
        finally:
            await guardian.close()

    def load_policies(self) -> list[Policy]:
        config = load_config(self.write_config())
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

    def write_config(self) -> Path:
        """The demo world's onguard.toml, plus the Safe as a watched contract (call policies name it in
        allow_from) and the mempool settings of the scenario."""
        path = write_config(self.world, self.folder, key_env="ONGUARD_REPLAY_GUARDIAN_KEY",
                            policies_dir=self.scenario.path.parent, database=self.folder / "onguard.db")
        from safe_eth.safe.safe import get_safe_V1_4_1_contract

        safe_abi = self.folder / "Safe.json"
        safe_abi.write_text(json.dumps(get_safe_V1_4_1_contract(self.w3).abi))
        extra = (f'\n[contracts.safe]\naddress = "{self.world.safe}"\nabi = {json.dumps(str(safe_abi))}\n'
                 f'\n[contracts.collateral]\naddress = "{self.world.collateral}"\n'
                 f'abi = {json.dumps(str(ARTIFACTS_DIR / "TestToken.sol" / "TestToken.json"))}\n'
                 + self.deployed_contracts() +
                 f'\n[mempool]\nenabled = {"true" if self.scenario.mempool else "false"}\n'
                 f'ws_url = "{self.node.ws_url}"\n')
        path.write_text(path.read_text() + extra)
        return path

    def deployed_contracts(self) -> str:
        """[contracts.<as>] for every contract the setup deploys (ABI from its forge artifact), so a call policy can
        watch it. Before the setup has run its address is not known yet: a placeholder lets the policies load."""
        text = ""
        for step in self.scenario.setup:
            if step.deploy and step.alias:
                address = self.aliases.get(step.alias, (None,))[0] or to_checksum_address(
                    keccak(text=f"onguard-replay:{step.alias}")[12:])
                abi = ARTIFACTS_DIR / f"{step.deploy}.sol" / f"{step.deploy}.json"
                text += f'\n[contracts.{step.alias}]\naddress = "{address}"\nabi = {json.dumps(str(abi))}\n'
        return text

    async def play(self, guardian: Guardian | None) -> tuple[list[AttackTx], float | None]:
        """Plays the attack steps, block by block; with a guardian, it watches and answers as the daemon would."""
        scenario = self.scenario
        if scenario.mining == "interval":
            return await self.play_interval(guardian)
        manual = scenario.mining == "manual"
        stop = asyncio.Event()
        judged: set[str] = set()
        listening: asyncio.Task[None] | None = None
        sent: list[tuple[Step, str]] = []
        first_visible: float | None = None
        try:
            if guardian is not None:
                await guardian.start()
                await guardian.step()
                source = guardian.mempool_source()  # the daemon's own wiring
                if source is not None:

                    async def on_pending(pending: PendingTransaction) -> None:
                        try:
                            await guardian.on_pending(pending)
                        finally:
                            judged.add(pending.hash)

                    listening = asyncio.create_task(source.run(on_pending, stop))
                    await _until(lambda: source.live, "the mempool subscription did not come up")
            await asyncio.to_thread(self.rpc, "evm_setAutomine", [not manual])
            by_block: dict[int, list[Step]] = {}
            for step in scenario.attack:
                by_block.setdefault(step.block, []).append(step)
            last = max(by_block) + scenario.after_blocks
            offset = 0
            # Past the scenario's blocks, a few more while a response is still out, so that it lands.
            while offset <= last or (guardian is not None and self.responses_out(guardian)
                                     and offset <= last + EXTRA_BLOCKS):
                hashes = []
                for step in by_block.get(offset, []):
                    if first_visible is None:
                        first_visible = time.time()
                    tx_hash = await asyncio.to_thread(self.send, step)
                    hashes.append(tx_hash)
                    sent.append((step, tx_hash))
                    if not manual and guardian is not None:
                        # Automine: mined as sent; the guardian sees it as the daemon would, in a block.
                        await asyncio.to_thread(self.receipt, tx_hash)
                        await self.settle(guardian)
                if manual and guardian is not None:
                    if listening is not None:
                        await _until(lambda hashes=hashes: all(h in judged for h in hashes),
                                     "the guardian did not judge the pending transactions in time")
                    await self.settle(guardian)   # a pause decided on a pending attack is now in the pool
                if manual or not hashes:
                    await asyncio.to_thread(self.mine)
                    if guardian is not None:
                        await self.settle(guardian)
                offset += 1
            if guardian is not None:
                await guardian.drain_responses(timeout=SETTLE_TIMEOUT)
        finally:
            stop.set()
            if listening is not None:
                await listening
            await asyncio.to_thread(self.rpc, "evm_setAutomine", [True])
        txs = []
        for step, tx_hash in sent:
            receipt = await asyncio.to_thread(self.receipt, tx_hash)
            txs.append(AttackTx(step=step.field, call=step.text, tx_hash=tx_hash, block=int(receipt["blockNumber"]),
                                position=int(receipt["transactionIndex"]), succeeded=receipt["status"] == 1))
        return txs, first_visible

    async def play_interval(self, guardian: Guardian | None) -> tuple[list[AttackTx], float | None]:
        """Interval mining: Anvil mines a block every `block_time` seconds on its own clock. The attack steps of
        offset k are sent as soon as the chain reaches the k-th block after the interval began; the guardian runs
        as the daemon runs it (a step every poll interval, pending transactions judged as they arrive), with no
        waiting on it before a block: whatever it has not sent when Anvil mines is too late for that block."""
        scenario = self.scenario
        block_time = scenario.block_time or 1
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        sent: list[tuple[Step, str]] = []
        first_visible: float | None = None

        async def head() -> int:
            return int(await asyncio.to_thread(lambda: self.w3.eth.block_number))

        async def wait_for_block(number: int) -> None:
            deadline = time.monotonic() + block_time * 3 + SETTLE_TIMEOUT
            while await head() < number:
                if time.monotonic() > deadline:
                    raise ReplayFailed(f"the chain did not reach block {number} in interval mode")
                await asyncio.sleep(0.02)

        try:
            if guardian is not None:
                await guardian.start()
                await guardian.step()
                source = guardian.mempool_source()
                if source is not None:
                    tasks.append(asyncio.create_task(source.run(guardian.on_pending, stop)))
                    await _until(lambda: source.live, "the mempool subscription did not come up")

                async def daemon_loop() -> None:   # the daemon's block loop, at its own poll interval
                    while not stop.is_set():
                        await guardian.step()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=guardian.config.chain.poll_interval)

                tasks.append(asyncio.create_task(daemon_loop()))
            await asyncio.to_thread(self.rpc, "evm_setAutomine", [False])
            start = await head()
            await asyncio.to_thread(self.rpc, "evm_setIntervalMining", [block_time])
            by_block: dict[int, list[Step]] = {}
            for step in scenario.attack:
                by_block.setdefault(step.block, []).append(step)
            last = max(by_block) + scenario.after_blocks
            offset = 0
            while offset <= last or (guardian is not None and self.responses_out(guardian)
                                     and offset <= last + EXTRA_BLOCKS):
                # Offset k: sent once block start + k is mined, so they wait in the pool for block start + k + 1.
                await wait_for_block(start + offset)
                for step in by_block.get(offset, []):
                    if first_visible is None:
                        first_visible = time.time()
                    sent.append((step, await asyncio.to_thread(self.send, step)))
                offset += 1
            await wait_for_block(start + offset)
            if guardian is not None:
                await guardian.step()
                await guardian.drain_responses(timeout=SETTLE_TIMEOUT)
        finally:
            stop.set()
            for task in tasks:
                await task
            await asyncio.to_thread(self.rpc, "evm_setIntervalMining", [0])
            await asyncio.to_thread(self.rpc, "evm_setAutomine", [True])
        txs = []
        for step, tx_hash in sent:
            receipt = await asyncio.to_thread(self.receipt, tx_hash)
            txs.append(AttackTx(step=step.field, call=step.text, tx_hash=tx_hash, block=int(receipt["blockNumber"]),
                                position=int(receipt["transactionIndex"]), succeeded=receipt["status"] == 1))
        return txs, first_visible

    async def settle(self, guardian: Guardian) -> None:
        """Lets the guardian handle the blocks up to the head and send every response it decided on. Waits on
        those conditions, not on a clock (the timeout only guards against a hang)."""
        await guardian.step()
        await _until(lambda: not self.responses_unsent(guardian), "the guardian's response was not sent in time")

    def responses_unsent(self, guardian: Guardian) -> bool:
        """An incident with an action decided and not yet sent (nor found already done, nor failed)."""
        store = guardian.store
        for incident in store.incidents():
            policy = self.policies.get(incident.policy_id)
            if incident.dry_run or policy is None:
                continue
            records = {r.action: r.status for r in store.responses(incident.id)}
            if any(records.get(a, ResponseStatus.CLAIMED) == ResponseStatus.CLAIMED
                   for a in policy.common.response if a in guardian.config.actions):
                return True
        return False

    def responses_out(self, guardian: Guardian) -> bool:
        return any(r.status == ResponseStatus.SENT for i in guardian.store.incidents()
                   for r in guardian.store.responses(i.id))

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
                position = int(included.detail["position"]) if included else None
                responses.append(ResponseOutcome(
                    action=record.action, status=record.status, tx_hash=record.tx_hash, block=record.block_number,
                    position=position, gas_used=record.gas_used, sent_ms=sent_ms,
                    landed=_landed(record.block_number, position, attack_txs)))
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


async def _until(condition: Callable[[], bool], failure: str, timeout: float = SETTLE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ReplayFailed(failure, hint="the machine may be overloaded; run the scenario again")
        await asyncio.sleep(0.01)


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

