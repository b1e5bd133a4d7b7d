"""Speaks to the GuardianModule through its compiled ABI: the calldata of the guardian's and the owners' calls, the
module's revert reasons, and the reads of the module and of the Safe that enables it (through the Safe v1.4.1 ABI
safe-eth-py ships)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import collapse_if_tuple, keccak, to_checksum_address
from safe_eth.eth.contracts import get_safe_V1_4_1_contract
from web3 import Web3

from onguard.chain.abi import ContractAbi, FunctionAbi, load_abi, normalise
from onguard.paths import ARTIFACTS_DIR

MODULE_ARTIFACT = ARTIFACTS_DIR / "GuardianModule.sol" / "GuardianModule.json"
NO_PIN = bytes(32)          # an action's calldata hash when any arguments are allowed
CALL_OPERATION = 0          # Enum.Operation.Call: the only operation the module executes


class Caller(Protocol):
    """What the reads need of a chain: an eth_call (`onguard.chain.rpc.Rpc.call` is one)."""

    async def call(self, to: str, data: bytes, block: int | str = "latest") -> bytes: ...


@dataclass(frozen=True, slots=True)
class ModuleCall:
    """One call of a batch: `data` (selector and arguments) sent by the Safe to `target`, without value."""

    target: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ModuleAction:
    """An allowlist entry as `getAction` returns it; all zero when (target, selector) is not allowlisted."""

    allowed: bool
    cooldown: int            # seconds between two executions
    last_executed_at: int    # unix time; 0 when never executed since allowed or since the owners' reset
    calldata_hash: bytes     # NO_PIN, or keccak256 of the only calldata allowed (see calldata_hash())

    @property
    def pinned(self) -> bool:
        return self.calldata_hash != NO_PIN

    @property
    def ready_at(self) -> int:
        """The first timestamp at which a guardian may execute it again (0: now)."""
        return self.last_executed_at + self.cooldown if self.last_executed_at else 0

    def admits(self, calldata: bytes) -> bool:
        """Whether the pin lets this exact calldata through (the cooldown aside)."""
        return self.allowed and (not self.pinned or self.calldata_hash == calldata_hash(calldata))


@dataclass(frozen=True, slots=True)
class ModuleError:
    """A custom error the module reverted with, e.g. CoolingDown(readyAt=…): why a guardian's call was refused."""

    name: str
    args: Mapping[str, Any]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.args.items())})"


@cache
def module_abi() -> ContractAbi:
    """The GuardianModule's ABI, from the forge artifact in contracts/out."""
    return load_abi(MODULE_ARTIFACT)


@cache
def safe_abi() -> ContractAbi:
    """The Safe v1.4.1 ABI that safe-eth-py ships."""
    return ContractAbi.from_json(get_safe_V1_4_1_contract(Web3()).abi)


def calldata_hash(calldata: bytes) -> bytes:
    """keccak256 of the full calldata (selector and arguments): the value `allowAction` takes to pin an action to
    exactly this call, and the one `ActionExecuted` logs."""
    return keccak(bytes(calldata))


# ---- calldata: the guardian's ----


def encode_execute(target: str, calldata: bytes) -> bytes:
    """`execute(target, 0, calldata, Call)`: the guardian's one allowlisted call through the Safe."""
    return _encode(module_abi(), "execute", _address(target), 0, bytes(calldata), CALL_OPERATION)


def encode_execute_batch(calls: Sequence[ModuleCall]) -> bytes:
    """`executeBatch(calls)`: several allowlisted calls in one transaction, executed in order, all or nothing.
    One allowlisted action may appear only once in a batch (the second would be cooling down)."""
    return _encode(module_abi(), "executeBatch", [(_address(c.target), bytes(c.data)) for c in calls])


# ---- calldata: the owners' (sent by the Safe) ----


def encode_allow_action(target: str, selector: bytes, cooldown: int, pinned_hash: bytes = NO_PIN) -> bytes:
    """`allowAction(target, selector, pinnedHash, cooldown)`; `pinned_hash` = calldata_hash(calldata) allows only
    that calldata, NO_PIN any arguments. The module refuses a cooldown below its MIN_COOLDOWN."""
    return _encode(module_abi(), "allowAction", _address(target), _selector(selector), _hash(pinned_hash), cooldown)


def encode_revoke_action(target: str, selector: bytes) -> bytes:
    return _encode(module_abi(), "revokeAction", _address(target), _selector(selector))


def encode_reset_cooldown(target: str, selector: bytes) -> bytes:
    """`resetCooldown(target, selector)`: batched with the unpause, so a second attack can be paused at once."""
    return _encode(module_abi(), "resetCooldown", _address(target), _selector(selector))


def encode_add_guardian(guardian: str) -> bytes:
    return _encode(module_abi(), "addGuardian", _address(guardian))


def encode_remove_guardian(guardian: str) -> bytes:
    return _encode(module_abi(), "removeGuardian", _address(guardian))


# ---- revert data ----


def decode_module_error(revert_data: bytes) -> ModuleError | None:
    """The module's custom error in `revert_data`, decoded through the ABI's error entries; None when the data is
    not one of them (e.g. a Safe's GS-code revert string)."""
    error = _errors_by_selector().get(bytes(revert_data[:4]))
    if error is None:
        return None
    types = [collapse_if_tuple(i) for i in error["inputs"]]
    try:
        values = abi_decode(types, bytes(revert_data[4:]))
    except DecodingError:
        return None
    return ModuleError(name=error["name"], args={i["name"]: normalise(t, v)
                                                 for i, t, v in zip(error["inputs"], types, values, strict=True)})


# ---- reads ----


class GuardianModuleClient:
    """Reads one deployed GuardianModule, and the Safe's view of it, through `caller`."""

    def __init__(self, caller: Caller, module: str) -> None:
        self._caller = caller
        self.address = _address(module)

    async def is_guardian(self, account: str, block: int | str = "latest") -> bool:
        (registered,) = await self._read(self.address, module_abi(), "isGuardian", block, _address(account))
        return bool(registered)

    async def get_action(self, target: str, selector: bytes, block: int | str = "latest") -> ModuleAction:
        (values,) = await self._read(self.address, module_abi(), "getAction", block,
                                     _address(target), _selector(selector))
        return _module_action(dict(zip(_action_field_names(), values, strict=True)))

    async def min_cooldown(self, block: int | str = "latest") -> int:
        (seconds,) = await self._read(self.address, module_abi(), "MIN_COOLDOWN", block)
        return int(seconds)

    async def is_module_enabled(self, safe: str, block: int | str = "latest") -> bool:
        """Whether the Safe at `safe` has enabled this module (its owners' `enableModule`)."""
        (enabled,) = await self._read(_address(safe), safe_abi(), "isModuleEnabled", block, self.address)
        return bool(enabled)

    async def _read(self, to: str, abi: ContractAbi, name: str, block: int | str, *args: Any) -> tuple[Any, ...]:
        function = _function(abi, name)
        raw = await self._caller.call(to, abi.encode_call(function.signature, *args), block)
        return abi.decode_result(function.signature, raw)


# ---- helpers ----


def _encode(abi: ContractAbi, name: str, *args: Any) -> bytes:
    return abi.encode_call(_function(abi, name).signature, *args)


def _function(abi: ContractAbi, name: str) -> FunctionAbi:
    (function,) = abi.functions_named(name)  # none of the functions used here is overloaded
    return function


@cache
def _errors_by_selector() -> Mapping[bytes, Mapping[str, Any]]:
    errors = (i for i in module_abi().raw if i.get("type") == "error")
    return {keccak(text=f"{e['name']}({','.join(collapse_if_tuple(i) for i in e['inputs'])})")[:4]: e for e in errors}


@cache
def _action_field_names() -> tuple[str, ...]:
    """The fields of the struct `getAction` returns, in ABI order, as the ABI names them."""
    item = next(i for i in module_abi().raw if i.get("type") == "function" and i.get("name") == "getAction")
    return tuple(c["name"] for c in item["outputs"][0]["components"])


def _module_action(fields: Mapping[str, Any]) -> ModuleAction:
    return ModuleAction(allowed=bool(fields["allowed"]), cooldown=int(fields["cooldown"]),
                        last_executed_at=int(fields["lastExecutedAt"]),
                        calldata_hash=bytes.fromhex(str(fields["calldataHash"]).removeprefix("0x")))


def _address(value: str) -> str:
    return to_checksum_address(value)


def _selector(value: bytes) -> bytes:
    if len(value) != 4:
        raise ValueError(f"a selector is 4 bytes, got {len(value)}")
    return bytes(value)


def _hash(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"a calldata hash is 32 bytes, got {len(value)}")
    return bytes(value)
