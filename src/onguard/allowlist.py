"""What the GuardianModule must hold for a config — every module action's calls, each pinned to the keccak256 of
the exact calldata onguard sends — what it holds on chain, the difference, and the targets through which a
guardian call could reach further than a pause (the Safe's other modules, its guard, proxy admins, timelocks)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak, to_checksum_address

from onguard.actions import ActionSettings
from onguard.chain.abi import ContractAbi
from onguard.chain.module import NO_PIN, GuardianModuleClient, ModuleAction, calldata_hash, module_abi, safe_abi
from onguard.chain.rpc import Rpc
from onguard.config import Config
from onguard.errors import ChainError, InputError

DEFAULT_COOLDOWN = 3600  # seconds: one pause per hour per action at most from a stolen key; >= MIN_COOLDOWN (60)
SENTINEL = "0x0000000000000000000000000000000000000001"
# Safe v1.4.1 GuardManager: keccak256("guard_manager.guard.address")
GUARD_SLOT = 0x4A204F620C8C5CCDCA3FD54D003BADD85BA500436A431F0CBDA4F558C93C34C8
# EIP-1967: bytes32(uint256(keccak256("eip1967.proxy.admin")) - 1)
PROXY_ADMIN_SLOT = 0xB53127684A568B3173AE13B9F8A6016E243E63B6E8EE1178D6A717850B5D6103


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call of a module action, exactly as onguard will send it."""

    action: str
    contract: str        # the configured contract's name
    target: str
    function: str        # its signature, e.g. "setPaused(bool)"
    arguments: tuple[tuple[str, str], ...]  # (parameter, value as written in onguard.toml)
    calldata: bytes

    @property
    def selector(self) -> bytes:
        return self.calldata[:4]

    @property
    def calldata_hash(self) -> bytes:
        return calldata_hash(self.calldata)

    @property
    def text(self) -> str:
        return f"{self.contract}.{self.function.split('(')[0]}({', '.join(v for _, v in self.arguments)})"


def action_calls(action: ActionSettings) -> tuple[PlannedCall, ...]:
    """The calls of one action, in the order the module executes them."""
    return tuple(PlannedCall(action=action.name, contract=call.contract, target=call.target,
                             function=call.function.signature,
                             arguments=tuple(zip(call.function.input_names, call.shown_args, strict=True)),
                             calldata=call.calldata)
                 for call in action.calls)


async def raw_read(rpc: Rpc, method: str, *params: Any) -> Any:
    """One JSON-RPC read the client has no method for (code, storage, balance), its error made a ChainError."""
    (response,) = await rpc.batch([(method, list(params))])
    if "error" in response:
        raise ChainError(f"{method}({', '.join(map(str, params))}): {response['error'].get('message')}")
    return response["result"]


def require_module(config: Config) -> str:
    if config.safe.guardian_module is None:
        raise InputError("no guardian module is configured", file=str(config.path), field="safe.guardian_module",
                         hint="deploy one (`onguard module deploy --safe SAFE --rpc-url URL`) and put its address "
                              "here")
    return config.safe.guardian_module


def module_actions(config: Config) -> list[ActionSettings]:
    return [a for a in config.actions.values() if a.via == "module"]


def planned_calls(config: Config) -> tuple[PlannedCall, ...]:
    """Every module action's calls. The module keeps one calldata hash per (target, selector): two actions
    calling the same function of the same contract with different arguments cannot both be pinned."""
    calls = [call for action in module_actions(config) for call in action_calls(action)]
    seen: dict[tuple[str, bytes], PlannedCall] = {}
    for call in calls:
        key = (call.target.lower(), call.selector)
        other = seen.setdefault(key, call)
        if other.calldata != call.calldata:
            raise InputError(f"actions {other.action} and {call.action} both call {call.contract}.{call.function} "
                             "with different arguments: the module pins one calldata per target and function",
                             file=str(config.path), field=f"actions.{call.action}",
                             hint="keep one of them, or make both send the same arguments")
    return tuple(calls)


class EntryState(enum.Enum):
    MATCHES = "allowlisted with this exact calldata"
    ANY_ARGUMENTS = "allowlisted for any arguments (not pinned to this calldata)"
    DIFFERENT_HASH = "allowlisted with a DIFFERENT calldata hash: this call would revert"
    MISSING = "NOT allowlisted"


@dataclass(frozen=True, slots=True)
class Entry:
    call: PlannedCall
    on_chain: ModuleAction

    @property
    def state(self) -> EntryState:
        if not self.on_chain.allowed:
            return EntryState.MISSING
        if not self.on_chain.pinned:
            return EntryState.ANY_ARGUMENTS
        if self.on_chain.calldata_hash != self.call.calldata_hash:
            return EntryState.DIFFERENT_HASH
        return EntryState.MATCHES


@dataclass(frozen=True, slots=True)
class ExtraEntry:
    """Allowlisted on chain, called by no configured module action."""

    target: str
    selector: bytes
    on_chain: ModuleAction


@dataclass(frozen=True, slots=True)
class ModuleView:
    """The module's state as far as this config is concerned, read at one moment."""

    safe: str
    module: str
    module_deployed: bool
    module_enabled: bool
    min_cooldown: int
    guardian: str
    guardian_registered: bool
    guardians: tuple[str, ...] | None      # from the module's events; None when they could not be read
    entries: tuple[Entry, ...]
    extras: tuple[ExtraEntry, ...] | None  # None when the module's events could not be read
    warnings: tuple[str, ...]


class ModuleReader:
    """Reads the Safe, the module and the targets through one async RPC client."""

    def __init__(self, rpc: Rpc, config: Config) -> None:
        self._rpc = rpc
        self._config = config
        self.safe = config.safe.address
        self.module = require_module(config)
        self.client = GuardianModuleClient(rpc, self.module)

    async def _call(self, to: str, abi: ContractAbi, signature: str, *args: Any) -> tuple[Any, ...]:
        return abi.decode_result(signature, await self._rpc.call(to, abi.encode_call(signature, *args)))

    async def code(self, address: str) -> bytes:
        return bytes.fromhex((await raw_read(self._rpc, "eth_getCode", address, "latest"))[2:])

    async def storage_address(self, address: str, slot: int) -> str:
        """The address held in a storage slot (its low 20 bytes)."""
        word = await raw_read(self._rpc, "eth_getStorageAt", address, hex(slot), "latest")
        return to_checksum_address(bytes.fromhex(word[2:].rjust(64, "0"))[-20:])

    async def module_enabled(self) -> bool:
        return await self.client.is_module_enabled(self.safe)

    async def is_guardian(self, address: str) -> bool:
        return await self.client.is_guardian(address)

    async def min_cooldown(self) -> int:
        return await self.client.min_cooldown()

    async def get_action(self, target: str, selector: bytes) -> ModuleAction:
        return await self.client.get_action(target, selector)

    async def other_modules(self) -> list[str]:
        modules, _next = await self._call(self.safe, safe_abi(), "getModulesPaginated(address,uint256)",
                                          SENTINEL, 50)
        return [m for m in modules if m.lower() != self.module.lower()]

    async def history(self) -> tuple[list[str], list[tuple[str, bytes]]]:
        """Guardians ever added and (target, selector) ever allowed, from the module's events."""
        abi = module_abi()
        head = await self._rpc.head()
        guardians: dict[str, None] = {}
        keys: dict[tuple[str, bytes], None] = {}
        for log in await self._rpc.logs([self.module], 0, head):
            decoded = abi.decode_log([bytes(t) for t in log["topics"]], bytes(log["data"]))
            if decoded is None:
                continue
            event, values = decoded
            if event.name == "GuardianAdded":
                guardians[values["guardian"]] = None
            elif event.name == "ActionAllowed":
                keys[(values["target"], bytes.fromhex(values["selector"][2:]))] = None
        return list(guardians), list(keys)

    async def read(self, guardian: str) -> ModuleView:
        calls = planned_calls(self._config)
        deployed = bool(await self.code(self.module))
        if not deployed:
            return ModuleView(safe=self.safe, module=self.module, module_deployed=False, module_enabled=False,
                              min_cooldown=0, guardian=guardian, guardian_registered=False, guardians=(),
                              entries=tuple(Entry(c, ModuleAction(False, 0, 0, NO_PIN)) for c in calls),
                              extras=(), warnings=())
        entries = tuple([Entry(c, await self.get_action(c.target, c.selector)) for c in calls])
        wanted = {(c.target.lower(), c.selector) for c in calls}
        try:
            ever_guardians, ever_allowed = await self.history()
            guardians: tuple[str, ...] | None = tuple([g for g in ever_guardians if await self.is_guardian(g)])
            extras: tuple[ExtraEntry, ...] | None = tuple([
                ExtraEntry(target, selector, action) for target, selector in ever_allowed
                if (target.lower(), selector) not in wanted
                and (action := await self.get_action(target, selector)).allowed])
            history_warning: list[str] = []
        except ChainError as exc:
            guardians, extras = None, None
            history_warning = [f"the module's events could not be read ({exc.message}): other guardians and "
                               "allowlist entries outside this config are not listed"]
        return ModuleView(safe=self.safe, module=self.module, module_deployed=True,
                          module_enabled=await self.module_enabled(), min_cooldown=await self.min_cooldown(),
                          guardian=guardian, guardian_registered=await self.is_guardian(guardian),
                          guardians=guardians, entries=entries, extras=extras,
                          warnings=tuple(history_warning + await self.authority_warnings(calls)))

    async def authority_warnings(self, calls: tuple[PlannedCall, ...]) -> list[str]:
        """Targets through which a guardian call could act with the Safe's authority, or that the Safe may not
        be able to pause at all."""
        warnings = []
        modules = await self.other_modules()
        for module in modules:
            warnings.append(f"the Safe has another enabled module {module}: it acts with the Safe's full authority, "
                            "outside the guardian's allowlist")
        guard = await self.storage_address(self.safe, GUARD_SLOT)
        targets = {c.target: self._config.contract_at(c.target) for c in calls}
        for target, contract in targets.items():
            label = f"{contract.name} ({target})" if contract else target
            if target.lower() in {m.lower() for m in modules}:
                warnings.append(f"{label} is an enabled module of the Safe: a call to it can make the Safe do "
                                "anything")
            if target.lower() == guard.lower():
                warnings.append(f"{label} is the Safe's guard: a call to it can block or allow the Safe's own "
                                "transactions")
            admin = await self.storage_address(target, PROXY_ADMIN_SLOT)
            if admin.lower() == self.safe.lower():
                warnings.append(f"{label} is a proxy whose EIP-1967 admin is the Safe: calls from the Safe reach its "
                                "admin (upgrade) functions, not the implementation")
            if await self._answers(target, keccak(text="getMinDelay()")[:4]):
                warnings.append(f"{label} looks like a timelock (it answers getMinDelay()): a call to it can schedule "
                                "or execute anything the Safe may")
            if contract is not None:
                try:
                    warnings.extend(await self._pauser_warnings(label, target, contract.abi))
                except ChainError as exc:
                    warnings.append(f"who may act on {label} could not be read ({exc.message})")
        return warnings

    async def _answers(self, to: str, data: bytes) -> bool:
        try:
            return len(await self._rpc.call(to, data)) == 32
        except ChainError:
            return False

    async def _pauser_warnings(self, label: str, target: str, abi: ContractAbi) -> list[str]:
        """Where the target says who may pause (AccessControl roles, Ownable owner), whether the Safe may."""
        roles = [f.signature for f in abi.functions_by_signature.values()
                 if f.name.endswith("_ROLE") and not f.input_types and f.output_types == ("bytes32",)]
        if abi.has_function("hasRole(bytes32,address)") and roles:
            held = []
            for signature in roles:
                (role,) = await self._call(target, abi, signature)
                if (await self._call(target, abi, "hasRole(bytes32,address)", bytes.fromhex(role[2:]),
                                     self.safe))[0]:
                    held.append(signature.removesuffix("()"))
            if "PAUSER_ROLE()" in roles and "PAUSER_ROLE" not in held:
                return [f"the Safe does not hold PAUSER_ROLE on {label}: a pause through the module would revert"]
            if not held:
                return [f"the Safe holds none of the roles of {label} ({', '.join(r[:-2] for r in roles)})"]
            return []
        if abi.has_function("owner()"):
            (owner,) = await self._call(target, abi, "owner()")
            if owner.lower() != self.safe.lower():
                return [f"{label} is owned by {owner}, not the Safe: an owner-only pause through the module would "
                        "revert"]
        return []


def hex32(value: bytes) -> str:
    return "0x" + value.hex()


def selector_text(config: Config, target: str, selector: bytes) -> str:
    contract = config.contract_at(target)
    function = next((f for f in contract.abi.functions_by_signature.values() if f.selector == selector),
                    None) if contract else None
    name = contract.name if contract else target
    return f"{name}.{function.signature}" if function else f"{name} selector 0x{selector.hex()}"
