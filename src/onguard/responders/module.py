"""Executes pre-authorised actions through the GuardianModule with the guardian key: prepared before any threat,
checked for "already in effect" before sending, recorded at every step so a restart finishes what a crash began."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector

from onguard.chain.rpc import Rpc
from onguard.config import ActionSettings, Config
from onguard.errors import ChainError, NotAuthorised
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseRecord, ResponseStatus
from onguard.log import get_logger

FALLBACK_GAS_LIMIT = 300_000
SEND_ATTEMPTS = 3


def encode_call(signature: str, types: list[str], args: list[object]) -> bytes:
    return function_signature_to_4byte_selector(signature) + abi_encode(types, args)


@dataclass(frozen=True, slots=True)
class PreparedAction:
    """Everything an action needs at trip time except the fee and the nonce."""

    name: str
    target: str
    calldata: bytes          # the protocol call, e.g. pause()
    module_calldata: bytes   # GuardianModule.execute(target, 0, calldata, CALL)
    done_check: bytes        # the view telling whether the action already holds, e.g. paused()
    gas_limit: int


class ModuleResponder:
    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount, store: IncidentStore) -> None:
        self._rpc = rpc
        self._config = config
        self._account = account
        self._store = store
        self._module = config.safe.guardian_module
        self._prepared: dict[str, PreparedAction] = {}
        self._send_lock = asyncio.Lock()  # one guardian key, one nonce sequence
        self._log = get_logger(component="module-responder", chain_id=config.chain.chain_id,
                               guardian=account.address)

    @property
    def prepared(self) -> Mapping[str, PreparedAction]:
        return self._prepared

    async def prepare(self) -> None:
        """Checks on chain that the guardian can act at all, then prepares each action's transaction."""
        await self._check_authorised()
        for action in self._config.actions.values():
            self._prepared[action.name] = await self._prepare(action)
        self._log.info("responses prepared", actions={name: p.gas_limit for name, p in self._prepared.items()})

    async def _check_authorised(self) -> None:
        safe = self._config.safe.address
        enabled = await self._view_bool(safe, encode_call("isModuleEnabled(address)", ["address"], [self._module]))
        if not enabled:
            raise NotAuthorised(f"the guardian module {self._module} is not enabled on the Safe {safe}",
                       hint="the Safe's owners must call enableModule(module) in a multisig transaction")
        registered = await self._view_bool(
            self._module, encode_call("isGuardian(address)", ["address"], [self._account.address]))
        if not registered:
            raise NotAuthorised(f"the guardian key {self._account.address} is not registered on the module {self._module}",
                       hint="the Safe's owners must call addGuardian(key) on the module in a multisig transaction")
        for action in self._config.actions.values():
            contract = self._config.contracts[action.contract]
            selector = contract.abi.function(action.call).selector
            raw = await self._rpc.call(self._module, encode_call(
                "getAction(address,bytes4)", ["address", "bytes4"], [contract.address, selector]))
            ((allowed, _cooldown, _last, _hash),) = abi_decode(["(bool,uint64,uint64,bytes32)"], raw)
            if not allowed:
                raise NotAuthorised(f"action {action.name} ({action.contract}.{action.call}) is not allowlisted on the module",
                           hint="the Safe's owners must call allowAction(target, selector, 0, cooldown) on the module")

    async def _prepare(self, action: ActionSettings) -> PreparedAction:
        contract = self._config.contracts[action.contract]
        calldata = contract.abi.encode_call(action.call)
        module_calldata = encode_call("execute(address,uint256,bytes,uint8)", ["address", "uint256", "bytes", "uint8"],
                                      [contract.address, 0, calldata, 0])
        try:
            estimate = await self._rpc.estimate_gas(
                {"from": self._account.address, "to": self._module, "data": module_calldata})
            gas_limit = max(estimate * 2, 100_000)
        except ChainError:
            # It reverts when the action already holds (e.g. already paused): keep a safe fixed limit.
            gas_limit = FALLBACK_GAS_LIMIT
        return PreparedAction(name=action.name, target=contract.address, calldata=calldata,
                              module_calldata=module_calldata, done_check=contract.abi.encode_call(action.done_when),
                              gas_limit=gas_limit)

    async def is_done(self, action: str) -> bool:
        prepared = self._prepared[action]
        return await self._view_bool(prepared.target, prepared.done_check)

    async def _view_bool(self, to: str, data: bytes) -> bool:
        raw = await self._rpc.call(to, data)
        return bool(int.from_bytes(raw[:32], "big")) if raw else False

    async def respond(self, incident_id: int, action: str) -> None:
        """Puts `action` in effect for the incident, at most once: the store's claim is the idempotency key."""
        if not self._store.claim_response(incident_id, action):
            self._log.info("response already claimed for this incident: not sending again",
                           incident_id=incident_id, action=action)
            return
        await self._carry_out(incident_id, action)

    async def resume(self, record: ResponseRecord) -> None:
        """Finishes a response a crash interrupted: wait for what was sent, otherwise send it now."""
        log = self._log.bind(incident_id=record.incident_id, action=record.action)
        if record.action not in self._prepared:
            log.error("an interrupted response names an action that is no longer configured; left as it is")
            return
        if record.status == ResponseStatus.SENT and record.tx_hash:
            log.warning("resuming: waiting for the response sent before the restart", tx_hash=record.tx_hash)
            if await self._await_receipt(record.incident_id, record.action, record.tx_hash):
                return
        else:
            log.warning("resuming a response claimed before the restart")
        await self._carry_out(record.incident_id, record.action)

    async def _carry_out(self, incident_id: int, action: str) -> None:
        log = self._log.bind(incident_id=incident_id, action=action)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                if await self.is_done(action):
                    self._store.update_response(incident_id, action, ResponseStatus.ALREADY_DONE)
                    self._finish_incident(incident_id)
                    log.info("protocol already in the safe state: nothing sent")
                    return
                tx_hash = await self._send(action)
                self._store.update_response(incident_id, action, ResponseStatus.SENT, tx_hash=tx_hash)
                log.warning("response sent", tx_hash=tx_hash)
                if await self._await_receipt(incident_id, action, tx_hash):
                    return
            except ChainError as exc:
                log.error("response attempt failed", attempt=attempt, error=exc.message)
                await asyncio.sleep(0.5 * attempt)
        self._store.update_response(incident_id, action, ResponseStatus.FAILED,
                                    error=f"not in effect after {SEND_ATTEMPTS} attempts")
        self._store.set_status(incident_id, IncidentStatus.FAILED)
        log.critical("response FAILED: the protocol is NOT in the safe state; act by hand now")

    async def _await_receipt(self, incident_id: int, action: str, tx_hash: str) -> bool:
        """True once the outcome is final (mined, or reverted because it already holds)."""
        receipt = await self._rpc.wait_for_receipt(tx_hash, timeout=self._config.response.receipt_timeout)
        log = self._log.bind(incident_id=incident_id, action=action, tx_hash=tx_hash)
        if receipt is None:
            log.error("response not mined in time", timeout=self._config.response.receipt_timeout)
            return False
        block, gas = int(receipt["blockNumber"]), int(receipt["gasUsed"])
        if receipt["status"] == 1:
            self._store.update_response(incident_id, action, ResponseStatus.MINED, tx_hash=tx_hash,
                                        block_number=block, gas_used=gas)
            self._finish_incident(incident_id)
            log.warning("response mined: protocol in the safe state", block=block, gas_used=gas)
            return True
        self._store.update_response(incident_id, action, ResponseStatus.REVERTED, tx_hash=tx_hash,
                                    block_number=block, gas_used=gas)
        log.error("response reverted", block=block)
        return False

    async def _send(self, action: str) -> str:
        prepared = self._prepared[action]
        async with self._send_lock:
            nonce = await self._rpc.nonce(self._account.address, "pending")
            base_fee = await self._rpc.latest_base_fee()
            ceiling = self._config.response.max_fee_per_gas
            priority = min(self._config.response.priority_fee, ceiling)
            tx = {
                "chainId": self._config.chain.chain_id,
                "to": self._module,
                "data": prepared.module_calldata,
                "value": 0,
                "gas": prepared.gas_limit,
                "nonce": nonce,
                "maxPriorityFeePerGas": priority,
                "maxFeePerGas": min(2 * base_fee + priority, ceiling),
                "type": 2,
            }
            signed = self._account.sign_transaction(tx)
            return await self._rpc.send_raw(signed.raw_transaction)

    def _finish_incident(self, incident_id: int) -> None:
        records = self._store.responses(incident_id)
        if records and all(r.status in (ResponseStatus.MINED, ResponseStatus.ALREADY_DONE) for r in records):
            self._store.set_status(incident_id, IncidentStatus.MITIGATED)
