"""The guardian-module path: wraps a prepared action in GuardianModule.execute, sent with the guardian key. It
checks at start that the module is enabled on the Safe, the key registered and each action allowlisted, and
prepares the calldata and gas limit before any threat, so at trip time only the fees are left to fill in."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector

from onguard.chain.rpc import Rpc
from onguard.config import Config
from onguard.errors import ChainError, NotAuthorised
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.responders.actions import PreparedAction
from onguard.responders.lifecycle import BuiltTx

FALLBACK_GAS_LIMIT = 300_000


def encode_call(signature: str, types: list[str], args: list[object]) -> bytes:
    return function_signature_to_4byte_selector(signature) + abi_encode(types, args)


class ModulePath:
    via = "module"

    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount) -> None:
        self._rpc = rpc
        self._config = config
        self._account = account
        self._module = config.safe.guardian_module
        self._built: dict[str, BuiltTx] = {}
        self._log = get_logger(component="module-path", chain_id=config.chain.chain_id, guardian=account.address)

    @property
    def built(self) -> dict[str, BuiltTx]:
        return self._built

    async def prepare(self, actions: Sequence[PreparedAction]) -> None:
        """Checks on chain that the guardian can act at all, then builds each action's transaction."""
        if not actions:
            return
        await self._check_authorised(actions)
        for action in actions:
            self._built[action.name] = await self._build(action)
        self._log.info("module transactions prepared", gas_limits={n: b.gas_limit for n, b in self._built.items()})

    async def on_block(self, block: BlockObservation) -> None:
        return None

    async def build(self, action: PreparedAction) -> BuiltTx:
        return self._built[action.name]

    def on_mined(self, action: str, incident_ids: Sequence[int], tx_hash: str, block: int, built: BuiltTx) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _check_authorised(self, actions: Sequence[PreparedAction]) -> None:
        safe = self._config.safe.address
        enabled = await self._view_bool(safe, encode_call("isModuleEnabled(address)", ["address"], [self._module]))
        if not enabled:
            raise NotAuthorised(f"the guardian module {self._module} is not enabled on the Safe {safe}",
                                hint="the Safe's owners must call enableModule(module) in a multisig transaction")
        registered = await self._view_bool(
            self._module, encode_call("isGuardian(address)", ["address"], [self._account.address]))
        if not registered:
            raise NotAuthorised(
                f"the guardian key {self._account.address} is not registered on the module {self._module}",
                hint="the Safe's owners must call addGuardian(key) on the module in a multisig transaction")
        for action in actions:
            raw = await self._rpc.call(self._module, encode_call(
                "getAction(address,bytes4)", ["address", "bytes4"], [action.target, action.data[:4]]))
            ((allowed, _cooldown, _last, _hash),) = abi_decode(["(bool,uint64,uint64,bytes32)"], raw)
            if not allowed:
                raise NotAuthorised(
                    f"action {action.name} (selector 0x{action.data[:4].hex()} on {action.target}) is not "
                    "allowlisted on the module",
                    hint="the Safe's owners must call allowAction(target, selector, 0, cooldown) on the module")

    async def _build(self, action: PreparedAction) -> BuiltTx:
        data = encode_call("execute(address,uint256,bytes,uint8)", ["address", "uint256", "bytes", "uint8"],
                           [action.target, 0, action.data, 0])
        try:
            estimate = await self._rpc.estimate_gas({"from": self._account.address, "to": self._module, "data": data})
            gas_limit = max(estimate * 2, 100_000)
        except ChainError:
            # It reverts when the action already holds (e.g. already paused): keep a safe fixed limit.
            gas_limit = FALLBACK_GAS_LIMIT
        return BuiltTx(to=self._module, data=data, gas_limit=gas_limit, note={"via": "module"})

    async def _view_bool(self, to: str, data: bytes) -> bool:
        raw = await self._rpc.call(to, data)
        return bool(int.from_bytes(raw[:32], "big")) if raw else False
