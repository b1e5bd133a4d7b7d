"""Preflight: proves, on the current chain state, that the guardian could act now — the module is enabled, the key
is a guardian, every action is allowlisted with exactly the calldata onguard sends, every action succeeds when
simulated from the guardian key (through the module, or the Safe for pre-signed ones), the key can pay for K
responses at the fee ceiling, and pre-signatures are for the live Safe nonce. Each check is a frozen result with
plain words and a fix; the gas limits come from the simulations."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import function_signature_to_4byte_selector

from onguard.allowlist import Entry, EntryState, ModuleReader, PlannedCall, action_calls, hex32, raw_read
from onguard.chain.module import ModuleCall, encode_execute, encode_execute_batch, module_abi, safe_abi
from onguard.chain.rpc import Rpc
from onguard.actions import ActionSettings
from onguard.chain.view import BatchStateReader, ReadFailure, decode_read
from onguard.config import Config
from onguard.errors import ChainError, NotAuthorised
from onguard.store.safetxs import SafeTxRecord, SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.policies.reads import ReadSpec
from onguard.safe.tx import OwnerSignature, exec_calldata

DEFAULT_RESPONSES = 3   # K: responses the guardian's balance must pay for at the fee ceiling
GAS_HEADROOM = 2        # gas limit = the simulation's estimate x this (state can change between now and a trip)
WEI_PER_ETH = 10**18


class Check(enum.Enum):
    MODULE_ENABLED = "module enabled"
    GUARDIAN = "guardian registered"
    TARGET = "target deployed"
    ALLOWLISTED = "allowlisted"
    DONE_WHEN = "done_when readable"
    PRESIGNED = "pre-signed"
    SIMULATION = "simulation"
    BALANCE = "balance"


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: Check
    passed: bool
    detail: str              # what was found, in plain words
    fix: str | None = None   # what to do about a failure
    action: str | None = None

    @property
    def line(self) -> str:
        subject = f"{self.check.value}" + (f" [{self.action}]" if self.action else "")
        text = f"{'✓' if self.passed else '✗'} {subject}: {self.detail}"
        return text if self.passed or not self.fix else f"{text}\n    fix: {self.fix}"


@dataclass(frozen=True, slots=True)
class PreflightReport:
    block: int
    results: tuple[CheckResult, ...]
    gas_estimates: Mapping[str, int]   # per action simulated successfully: eth_estimateGas of its transaction
    gas_limits: Mapping[str, int]      # the estimate x GAS_HEADROOM: what a response should carry
    guardian: str | None = None        # the account that pays for responses
    balance_wei: int | None = None     # its balance at `block`
    balance_floor_wei: int | None = None  # what K responses cost at the fee ceiling (None: not known yet)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def summary(self) -> str:
        """Every failure (action, what, fix) on one line: for a refusal to start or an incident."""
        return "; ".join(f"{r.check.value}{f' [{r.action}]' if r.action else ''}: {r.detail} (fix: {r.fix})"
                         for r in self.failures)

    def refusal(self) -> NotAuthorised:
        """The error that refuses to start (exit 2), naming each failing check, its action and the fix."""
        return NotAuthorised(f"preflight failed at block {self.block}: {self.summary()}",
                             hint="`onguard preflight` shows every check; fix them, then start again")

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "ok": self.ok, "gas_estimates": dict(self.gas_estimates),
                "gas_limits": dict(self.gas_limits),
                "checks": [{"check": r.check.value, "action": r.action, "passed": r.passed, "detail": r.detail,
                            "fix": r.fix} for r in self.results]}


async def run_preflight(config: Config, account_address: str, rpc: Rpc, *, store: IncidentStore | None = None,
                        responses: int = DEFAULT_RESPONSES) -> PreflightReport:
    """Every check against the latest block. `store` holds the pre-signed transactions (default: the config's
    database, opened and closed here)."""
    own_store = store is None
    store = store or IncidentStore(config.state)
    try:
        return await _Preflight(config, account_address, rpc, store).run(responses)
    finally:
        if own_store:
            store.close()


class _Preflight:
    def __init__(self, config: Config, guardian: str, rpc: Rpc, store: IncidentStore) -> None:
        self.config = config
        self.guardian = guardian
        self.rpc = rpc
        self.txs = SafeTxStore(store.database)
        self.reader = ModuleReader(rpc, config) if config.safe.guardian_module else None
        self.state = BatchStateReader(rpc)
        self.results: list[CheckResult] = []
        self.estimates: dict[str, int] = {}
        self.balance: int | None = None
        self.floor: int | None = None
        self.module_deployed = False

    def _module(self) -> ModuleReader:
        assert self.reader is not None  # the config requires a module as soon as one action goes through it
        return self.reader

    def add(self, check: Check, passed: bool, detail: str, fix: str | None = None, action: str | None = None) -> None:
        self.results.append(CheckResult(check=check, passed=passed, detail=detail, fix=fix, action=action))

    async def run(self, responses: int) -> PreflightReport:
        block = await self.rpc.head()
        module_actions = [a for a in self.config.actions.values() if a.via == "module"]
        presigned = [a for a in self.config.actions.values() if a.via == "presigned"]
        await self.check_targets()
        if module_actions:
            await self.check_module(module_actions)
        for action in module_actions:
            await self.simulate_module_action(action)
        if presigned:
            await self.check_presigned(presigned)
        await self.check_balance(responses)
        return PreflightReport(block=block, results=tuple(self.results),
                               gas_estimates=MappingProxyType(dict(self.estimates)),
                               gas_limits=MappingProxyType({a: g * GAS_HEADROOM for a, g in self.estimates.items()}),
                               guardian=self.guardian, balance_wei=self.balance, balance_floor_wei=self.floor)

    async def check_targets(self) -> None:
        """A call to an address without code succeeds and does nothing: every target must hold a contract."""
        targets = {c.target: c for a in self.config.actions.values() for c in action_calls(a)}
        for target, call in targets.items():
            if not await self._has_code(target):
                self.add(Check.TARGET, False, f"no contract at {call.contract} ({target}): a call to it would "
                                              "succeed and do nothing",
                         f"put the contract's current address in contracts.{call.contract}.address (did it move?)")

    async def _has_code(self, address: str) -> bool:
        return (await raw_read(self.rpc, "eth_getCode", address, "latest")) not in ("0x", "0x0")

    # ---- the module path ----

    async def check_module(self, actions: list[ActionSettings]) -> None:
        module, safe = self._module().module, self._module().safe
        propose = "the Safe's owners execute the set-up proposal: `onguard module propose`, then `onguard proposals " \
                  "sign` / `execute`"
        self.module_deployed = await self._has_code(module)
        if not self.module_deployed:
            self.add(Check.MODULE_ENABLED, False, f"no contract at safe.guardian_module {module}",
                     f"deploy it (`onguard module deploy --safe {safe}`) and put its address in onguard.toml")
            return
        enabled = await self._module().module_enabled()
        self.add(Check.MODULE_ENABLED, enabled, f"the module {module} is {'' if enabled else 'NOT '}enabled on the "
                                                f"Safe {safe}", propose)
        registered = await self._module().is_guardian(self.guardian)
        self.add(Check.GUARDIAN, registered, f"the key {self.guardian} is {'' if registered else 'NOT '}a registered "
                                             "guardian of the module", propose)
        for action in actions:
            for call in action_calls(action):
                state = (await self._entry(call)).state
                passed = state in (EntryState.MATCHES, EntryState.ANY_ARGUMENTS)
                detail = f"{call.text}: {state.value}"
                if state != EntryState.ANY_ARGUMENTS:
                    detail += f" (onguard sends calldata hash {hex32(call.calldata_hash)})"
                self.add(Check.ALLOWLISTED, passed, detail, propose, action=action.name)

    async def _entry(self, call: PlannedCall) -> Entry:
        return Entry(call, await self._module().get_action(call.target, call.selector))

    async def simulate_module_action(self, action: ActionSettings) -> None:
        if not self.module_deployed:
            return  # said once already: there is no module to simulate through
        calls = action_calls(action)
        done = await self._done(action)
        if done is None:
            return
        if done:
            self.add(Check.SIMULATION, True, "already in effect (its done_when holds): not simulated, since it "
                                             "would revert now; it is checked again once it no longer holds",
                     action=action.name)
            return
        data = module_calldata(calls)
        await self._simulate(action, self._module().module, data, calls, "through the module")

    async def _simulate(self, action: ActionSettings, to: str, data: bytes, calls: tuple[PlannedCall, ...],
                        route: str) -> None:
        """The guardian's transaction on the current state: it must succeed, and done_when must hold after it."""
        tx = {"from": self.guardian, "to": to, "data": data}
        what = f"{_texts(calls)} {route} from the guardian key"
        try:
            await self.rpc.call(to, data, sender=self.guardian)
            estimate = await self.rpc.estimate_gas(tx)
        except ChainError as exc:
            detail, fix = explain_revert(self.config, calls, exc)
            self.add(Check.SIMULATION, False, f"{what} REVERTS: {detail}", fix, action=action.name)
            return
        self.estimates[action.name] = estimate
        try:
            holds_after = await action.done_when.holds(await self._state_after(tx, action.done_when.reads))
        except ChainError as exc:
            self.add(Check.SIMULATION, False, f"{what} succeeds, but its done_when cannot be read afterwards "
                                              f"({exc.message})",
                     "correct done_when (or the action) so that it reads the state the action changes",
                     action=action.name)
            return
        if not holds_after:
            self.add(Check.SIMULATION, False, f"{what} succeeds, but done_when ({action.done_when.source}) does not "
                                              "hold afterwards: the action does not reach the safe state",
                     "check the action's target, function and arguments against done_when", action=action.name)
            return
        self.add(Check.SIMULATION, True, f"{what} succeeds and done_when holds afterwards; gas {estimate} "
                                         f"(limit {estimate * GAS_HEADROOM})", action=action.name)

    async def _state_after(self, tx: dict[str, Any], reads: tuple[ReadSpec, ...]) -> _StateAfter:
        """The done_when reads right after `tx`, in one eth_simulateV1 on the latest state (nothing is sent)."""
        call = {"from": tx["from"], "to": tx["to"], "data": "0x" + bytes(tx["data"]).hex()}
        read_calls = [{"to": spec.address, "data": "0x" + spec.calldata.hex()} for spec in reads]
        payload = {"blockStateCalls": [{"calls": [call, *read_calls]}], "validation": False}
        (response,) = await self.rpc.batch([("eth_simulateV1", [payload, "latest"])])
        if "error" in response:
            raise ChainError(f"eth_simulateV1 refused: {response['error']}")
        results = response["result"][0]["calls"]
        if int(results[0]["status"], 16) != 1:
            raise ChainError("the transaction reverted when simulated with the reads")
        return _StateAfter({spec: _read_value(spec, result) for spec, result in zip(reads, results[1:],
                                                                                      strict=True)})

    async def _done(self, action: ActionSettings) -> bool | None:
        """Whether the action already holds; None (a failed check recorded) when done_when cannot be read."""
        try:
            return await action.done_when.holds(self.state, "latest")
        except ChainError as exc:
            self.add(Check.DONE_WHEN, False, f"done_when ({action.done_when.source}) cannot be read now: "
                                             f"{exc.message}",
                     "correct done_when, or the address of the contract it reads", action=action.name)
            return None

    # ---- the pre-signed path ----

    async def check_presigned(self, actions: list[ActionSettings]) -> None:
        safe = self.config.safe.address
        (nonce,) = await self._safe_read("nonce()")
        (threshold,) = await self._safe_read("getThreshold()")
        (owners,) = await self._safe_read("getOwners()")
        owner_set = {o.lower() for o in owners}
        for action in actions:
            usable = self._usable(action.name, nonce, threshold, owner_set)
            if usable is None:
                held = sorted({r.tx.nonce for r in self.txs.list(TxKind.PRESIGNED) if r.action == action.name})
                seen = f" (signatures are held for nonce {', '.join(map(str, held))})" if held else ""
                self.add(Check.PRESIGNED, False, f"no pre-signature with {threshold} owners' signatures for the Safe's "
                                                 f"live nonce {nonce}{seen}",
                         f"{threshold} owners run `onguard presign {action.name}`", action=action.name)
                continue
            record, signatures = usable
            self.add(Check.PRESIGNED, True, f"{len(signatures)} owners' signatures for the live nonce {nonce} "
                                            f"(Safe tx {record.safe_tx_hash})", action=action.name)
            calls = action_calls(action)
            done = await self._done(action)
            if done is None:
                continue
            if done:
                self.add(Check.SIMULATION, True, "already in effect (its done_when holds): not simulated",
                         action=action.name)
                continue
            await self._simulate(action, safe, exec_calldata(record.tx, signatures), calls,
                                 "through the Safe's execTransaction (pre-signed)")

    async def _safe_read(self, signature: str) -> tuple[Any, ...]:
        abi = safe_abi()
        return abi.decode_result(signature, await self.rpc.call(self.config.safe.address, abi.encode_call(signature)))

    def _usable(self, action: str, nonce: int, threshold: int,
                owners: set[str]) -> tuple[SafeTxRecord, list[OwnerSignature]] | None:
        best: tuple[SafeTxRecord, list[OwnerSignature]] | None = None
        for record in self.txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            if record.action != action or record.tx.nonce != nonce:
                continue
            signatures = [s for s in record.signatures if s.owner.lower() in owners]
            if len(signatures) >= threshold and (best is None or len(signatures) > len(best[1])):
                best = (record, signatures)
        return best

    # ---- paying for it ----

    async def check_balance(self, responses: int) -> None:
        balance = self.balance = int(await raw_read(self.rpc, "eth_getBalance", self.guardian, "latest"), 16)
        if not self.estimates:
            self.add(Check.BALANCE, balance > 0, f"the guardian key {self.guardian} holds {_eth(balance)} ETH; no "
                                                 "action was simulated successfully, so what a response costs is not "
                                                 "known yet", f"send ETH to {self.guardian}")
            return
        gas = max(self.estimates.values()) * GAS_HEADROOM
        ceiling = self.config.response.max_fee_per_gas
        needed = self.floor = responses * gas * ceiling
        self.add(Check.BALANCE, balance >= needed,
                 f"the guardian key {self.guardian} holds {_eth(balance)} ETH; {responses} responses of {gas} gas at "
                 f"the fee ceiling {ceiling / 1e9:g} gwei cost {_eth(needed)} ETH",
                 f"send at least {_eth(needed - balance)} ETH to {self.guardian}, or lower response.max_fee_per_gas")


class _StateAfter:
    """A StateReader over values already read (the state right after a simulated transaction)."""

    def __init__(self, values: Mapping[ReadSpec, Any]) -> None:
        self._values = values

    async def read(self, specs: Iterable[ReadSpec], block: int | str) -> dict[ReadSpec, Any]:
        return {spec: self._values[spec] for spec in specs}


def _read_value(spec: ReadSpec, result: Mapping[str, Any]) -> Any:
    if int(result["status"], 16) != 1:
        return ReadFailure(spec, (result.get("error") or {}).get("message", "reverted"))
    return decode_read(spec, result["returnData"])


def module_calldata(calls: tuple[PlannedCall, ...]) -> bytes:
    """What the guardian sends the module for an action: execute for one call, executeBatch for several (in order,
    all or nothing). Preflight simulates exactly this; the module responder should send exactly this."""
    if len(calls) == 1:
        return encode_execute(calls[0].target, calls[0].calldata)
    return encode_execute_batch([ModuleCall(target=c.target, data=c.calldata) for c in calls])


def _texts(calls: tuple[PlannedCall, ...]) -> str:
    return ", then ".join(c.text for c in calls)


def _eth(wei: int) -> str:
    return f"{wei / WEI_PER_ETH:.6f}"


# ---- revert reasons in plain words ----

_ERROR_STRING = function_signature_to_4byte_selector("Error(string)")
_SAFE_ERRORS = {
    "GS013": ("the Safe's call reverted (execTransaction with no safeTxGas fails as a whole)",
              "check that the Safe may make this call (its role on the target), and that the target is right"),
    "GS026": ("the signatures are not valid owners' signatures in ascending order", "owners pre-sign again"),
    "GS025": ("the pre-signed transaction's hash is not what the owners signed", "owners pre-sign again"),
    "GS104": ("the module is not enabled on the Safe", "the Safe's owners enable it: `onguard module propose`"),
}


def _errors(abi_items: tuple[Mapping[str, Any], ...]) -> dict[bytes, tuple[str, list[str], list[str]]]:
    errors = {}
    for item in abi_items:
        if item.get("type") == "error":
            types = [i["type"] for i in item.get("inputs", [])]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            errors[selector] = (item["name"], types, [i.get("name") or f"arg{n}" for n, i in
                                                      enumerate(item.get("inputs", []))])
    return errors


def _revert_data(exc: ChainError) -> bytes | None:
    cause: Any = exc.__cause__
    data = getattr(cause, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, dict) and isinstance(data.get("data"), str):
        return bytes.fromhex(data["data"][2:])
    return None


def _decode_error(data: bytes, abis: list[tuple[Mapping[str, Any], ...]]) -> tuple[str, dict[str, Any]] | None:
    if data[:4] == _ERROR_STRING:
        try:
            return "Error", {"reason": abi_decode(["string"], data[4:])[0]}
        except DecodingError:
            return None
    for raw in abis:
        known = _errors(raw).get(data[:4])
        if known is not None:
            name, types, names = known
            try:
                return name, dict(zip(names, abi_decode(types, data[4:]), strict=True))
            except DecodingError:
                return None
    return None


def explain_revert(config: Config, calls: tuple[PlannedCall, ...], exc: ChainError) -> tuple[str, str]:
    """(what went wrong, how to fix it) for a reverting guardian transaction, from the module's and the targets'
    own errors."""
    propose = "run `onguard module propose` and have the owners sign and execute it"
    data = _revert_data(exc)
    target_abis = [c.abi.raw for c in (config.contract_at(call.target) for call in calls) if c is not None]
    decoded = _decode_error(data, [module_abi().raw, *target_abis]) if data else None
    if decoded is None:
        return str(exc.message), "read the revert reason above; check the action's target and the Safe's rights on it"
    name, values = decoded
    if name == "Error" and values["reason"] in _SAFE_ERRORS:
        return _SAFE_ERRORS[values["reason"]]
    if name == "NotGuardian":
        return f"{values['caller']} is not a registered guardian", propose
    if name == "ActionNotAllowed":
        return f"the module does not allow selector 0x{values['selector'].hex()} on {values['target']}", propose
    if name == "CalldataMismatch":
        return (f"CalldataMismatch: the module pins calldata hash 0x{values['expected'].hex()}, onguard sends "
                f"0x{values['actual'].hex()}", f"{propose} (it re-allows the action with the hash onguard sends), "
                                               "or correct the action's arguments")
    if name == "CoolingDown":
        ready = datetime.fromtimestamp(values["readyAt"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"a call of this action is cooling down until {ready} (it was executed less than its cooldown ago)",
                "wait, or the Safe's owners call resetCooldown(target, selector) on the module")
    if name in ("ExecutionFailed", "BatchCallFailed"):
        index = values.get("index", 0)
        call = calls[index] if index < len(calls) else calls[0]
        inner = _decode_error(bytes(values["returnData"]), [module_abi().raw, *target_abis])
        reason = _render(inner) if inner else f"0x{bytes(values['returnData']).hex() or '(no reason)'}"
        return (f"the Safe's call {call.text} reverts: {reason}",
                f"give the Safe the right to make this call on {call.contract} (e.g. its pauser role), or correct "
                "the action's target and function")
    return _render(decoded), "correct the action, or the Safe's rights on its target"


def _render(decoded: tuple[str, dict[str, Any]]) -> str:
    name, values = decoded
    shown = ", ".join(f"{k}={('0x' + v.hex()) if isinstance(v, bytes) else v}" for k, v in values.items())
    return f"{name}({shown})"
