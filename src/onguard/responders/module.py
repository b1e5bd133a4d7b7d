"""The guardian-module path: wraps an action's calls in GuardianModule `execute` (one call) or `executeBatch`
(several, in order, all or nothing), sent with the guardian key. At start it checks through the module's compiled
ABI that the module is enabled on the Safe, the key registered and every call allowlisted for its exact calldata,
and prepares the calldata and gas limit before any threat, so at trip time only the fees are left to fill in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eth_account.signers.local import LocalAccount

from onguard.actions import Via
from onguard.allowlist import action_calls
from onguard.chain.module import GuardianModuleClient, encode_execute, encode_execute_batch
from onguard.chain.rpc import Rpc
from onguard.config import Config
from onguard.errors import ChainError, NotAuthorised
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.preflight import explain_revert
from onguard.responders.actions import PreparedAction, is_done
from onguard.responders.lifecycle import BuiltTx, ResponseImpossible

GAS_HEADROOM = 2           # the limit is twice the estimate: state may change between preparing and sending
MIN_GAS_LIMIT = 100_000


def module_calldata(action: PreparedAction) -> bytes:
    """What the guardian sends the module for an action (preflight simulates exactly this)."""
    if len(action.calls) == 1:
        return encode_execute(action.calls[0].target, action.calls[0].data)
    return encode_execute_batch(action.calls)


class ModulePath:
    via = Via.MODULE

    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount) -> None:
        self._rpc = rpc
        self._config = config
        self._account = account
        self._module = config.safe.guardian_module
        self._client = GuardianModuleClient(rpc, self._module) if self._module else None
        self._data: dict[str, bytes] = {}
        self._gas: dict[str, int] = {}   # an action missing here had no estimate yet (it held at preparation)
        self._log = get_logger(component="module-path", chain_id=config.chain.chain_id, guardian=account.address)

    async def prepare(self, actions: Sequence[PreparedAction]) -> None:
        """Checks on chain that the guardian can act at all, then builds each action's transaction."""
        if not actions:
            return
        await self._check_authorised(actions)
        for action in actions:
            self._data[action.name] = module_calldata(action)
            await self._estimate(action, at_start=True)
        self._log.info("module transactions prepared", gas_limits=dict(self._gas),
                       not_estimated=sorted(set(self._data) - set(self._gas)) or None)

    def use_gas_limits(self, limits: Mapping[str, int]) -> None:
        """Gas limits from a preflight's simulation of exactly these transactions."""
        self._gas.update({name: gas for name, gas in limits.items() if name in self._data})

    async def on_block(self, block: BlockObservation) -> None:
        return None

    async def build(self, action: PreparedAction) -> BuiltTx:
        if action.name not in self._gas:
            await self._estimate(action, at_start=False)
        built = self.ready(action)
        assert built is not None  # estimated, or _estimate raised
        return built

    def ready(self, action: PreparedAction) -> BuiltTx | None:
        if action.name not in self._gas:
            return None
        return BuiltTx(to=self._module, data=self._data[action.name], gas_limit=self._gas[action.name],
                       note={"via": "module"})

    async def prebuild(self, action: PreparedAction) -> BuiltTx | None:
        return self.ready(action)  # an action with no estimate yet is estimated at its trip, never every block

    def on_mined(self, action: str, incident_ids: Sequence[int], tx_hash: str, block: int, built: BuiltTx) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _estimate(self, action: PreparedAction, *, at_start: bool) -> None:
        """Sets the action's gas limit from an estimate of its transaction from the guardian key. An estimate that
        reverts is only acceptable while the action already holds (a paused target refuses to pause again); then
        it is estimated again when needed. Never a made-up limit: a pause that cannot run must be said."""
        try:
            estimate = await self._rpc.estimate_gas(
                {"from": self._account.address, "to": self._module, "data": self._data[action.name]})
        except ChainError as exc:
            reason, fix = explain_revert(self._config, action_calls(self._config.actions[action.name]), exc)
            if await is_done(self._rpc, action):
                self._log.info("action already in effect: its gas is estimated when it is next needed",
                               action=action.name)
                return
            message = f"action {action.name} ({action.text}) would revert through the module: {reason}"
            if at_start:
                raise NotAuthorised(message, hint=fix) from None
            raise ResponseImpossible(f"{message} (fix: {fix})") from None
        self._gas[action.name] = max(estimate * GAS_HEADROOM, MIN_GAS_LIMIT)

    async def _check_authorised(self, actions: Sequence[PreparedAction]) -> None:
        safe = self._config.safe.address
        if self._client is None:
            raise NotAuthorised("actions go through the guardian module, but safe.guardian_module is not set",
                                hint="deploy one (`onguard module deploy`) and set safe.guardian_module")
        if not await self._client.is_module_enabled(safe):
            raise NotAuthorised(f"the guardian module {self._module} is not enabled on the Safe {safe}",
                                hint="`onguard module propose` prepares the Safe transaction that enables it")
        if not await self._client.is_guardian(self._account.address):
            raise NotAuthorised(
                f"the guardian key {self._account.address} is not registered on the module {self._module}",
                hint="`onguard module propose` prepares the Safe transaction that adds it")
        for action in actions:
            for call in action.calls:
                entry = await self._client.get_action(call.target, call.data[:4])
                if not entry.admits(call.data):
                    state = "not allowlisted" if not entry.allowed else "pinned to other calldata"
                    raise NotAuthorised(
                        f"action {action.name}: the call 0x{call.data[:4].hex()} on {call.target} is {state} on "
                        f"the module", hint="`onguard module plan` shows the difference and `onguard module "
                                            "propose` prepares the Safe transaction that fixes it")

