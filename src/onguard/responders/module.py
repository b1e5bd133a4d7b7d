"""Executes pre-authorised actions through the GuardianModule with the guardian key. Everything but the fees is
prepared before any threat (calldata, gas limit, the key's nonce, the base fee), so that at trip time the
transaction is only priced, signed and sent — to private endpoints first. A pause that is not mined is
replaced with higher fees; one action is never in flight twice; every step is recorded so a restart finishes
what a crash began."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector

from onguard.actions import ActionSettings, DoneCondition
from onguard.chain.rpc import Rpc
from onguard.chain.view import BatchStateReader
from onguard.config import Config
from onguard.errors import ChainError, ConfigError, NotAuthorised
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseRecord, ResponseStatus
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.responders.fees import Fees, Threat, bumped, initial_fees, outbid

FALLBACK_GAS_LIMIT = 300_000
SEND_ATTEMPTS = 3
RECEIPT_POLL = 0.05


def encode_call(signature: str, types: list[str], args: list[object]) -> bytes:
    return function_signature_to_4byte_selector(signature) + abi_encode(types, args)


@dataclass(frozen=True, slots=True)
class PreparedAction:
    """Everything an action needs at trip time except the fees and the nonce."""

    name: str
    target: str
    calldata: bytes          # the protocol call, e.g. pause()
    module_calldata: bytes   # GuardianModule.execute(target, 0, calldata, CALL)
    done_when: DoneCondition  # tells whether the action already holds, e.g. paused()
    gas_limit: int


@dataclass(slots=True)
class InFlight:
    """A response transaction sent and not yet final: the nonce it holds and every hash sent for it."""

    incident_id: int
    nonce: int
    fees: Fees
    hashes: list[str] = field(default_factory=list)
    threat: Threat | None = None
    sent_at: float = 0.0
    public_sent: bool = False


class ModuleResponder:
    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount, store: IncidentStore) -> None:
        self._rpc = rpc
        self._config = config
        self._settings = config.response
        self._account = account
        self._store = store
        self._module = config.safe.guardian_module
        self._reader = BatchStateReader(rpc)
        self._private = [Rpc(e.url) for e in config.response.endpoints if e.private]
        self._public = [Rpc(e.url) for e in config.response.endpoints if not e.private]
        self._prepared: dict[str, PreparedAction] = {}
        self._inflight: dict[str, InFlight] = {}
        self._nonce: int | None = None
        self._base_fee = 0
        self._send_lock = asyncio.Lock()  # one guardian key, one nonce sequence
        self._log = get_logger(component="module-responder", chain_id=config.chain.chain_id,
                               guardian=account.address)

    @property
    def prepared(self) -> Mapping[str, PreparedAction]:
        return self._prepared

    def in_flight(self, action: str) -> bool:
        return action in self._inflight

    async def prepare(self) -> None:
        """Checks on chain that the guardian can act at all, then prepares each action's transaction."""
        # Actions executed through pre-signed Safe transactions need nothing of the module.
        actions = [a for a in self._config.actions.values() if a.via == "module"]
        for action in actions:
            if len(action.calls) != 1:
                raise ConfigError(f"action {action.name} makes {len(action.calls)} calls in one transaction, which "
                                  "this GuardianModule cannot execute", file=str(self._config.path),
                                  field=f"actions.{action.name}.calls",
                                  hint="deploy GuardianModule v2 (executeBatch), or split the action")
        if actions:
            await self._check_authorised()
        for action in actions:
            self._prepared[action.name] = await self._prepare(action)
        self._nonce = await self._rpc.nonce(self._account.address, "pending")
        self._base_fee = await self._rpc.latest_base_fee()
        self._log.info("responses prepared", actions={name: p.gas_limit for name, p in self._prepared.items()},
                       nonce=self._nonce, private_endpoints=len(self._private), public_endpoints=len(self._public))

    async def on_block(self, block: BlockObservation) -> None:
        """Keeps the hot path's inputs current: the base fee, and the nonce when nothing of ours is in flight."""
        if block.base_fee is not None:
            self._base_fee = block.base_fee
        if not self._inflight and not self._send_lock.locked():
            self._nonce = await self._rpc.nonce(self._account.address, "pending")

    async def close(self) -> None:
        for endpoint in (*self._private, *self._public):
            await endpoint.close()

    async def _check_authorised(self) -> None:
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
        for action in self._config.actions.values():
            if action.via != "module":
                continue
            call = action.calls[0]
            raw = await self._rpc.call(self._module, encode_call(
                "getAction(address,bytes4)", ["address", "bytes4"], [call.target, call.selector]))
            ((allowed, _cooldown, _last, _hash),) = abi_decode(["(bool,uint64,uint64,bytes32)"], raw)
            if not allowed:
                raise NotAuthorised(
                    f"action {action.name} ({call.text}) is not allowlisted on the module",
                    hint=f"the Safe's owners must call allowAction({call.target}, 0x{call.selector.hex()}, "
                         f"{call.calldata_hash}, cooldown) on the module (the hash pins this exact calldata)")

    async def _prepare(self, action: ActionSettings) -> PreparedAction:
        (call,) = action.calls  # prepare() refused actions of several calls
        calldata = call.calldata
        module_calldata = encode_call("execute(address,uint256,bytes,uint8)", ["address", "uint256", "bytes", "uint8"],
                                      [call.target, 0, calldata, 0])
        try:
            estimate = await self._rpc.estimate_gas(
                {"from": self._account.address, "to": self._module, "data": module_calldata})
            gas_limit = max(estimate * 2, 100_000)
        except ChainError:
            # It reverts when the action already holds (e.g. already paused): keep a safe fixed limit.
            gas_limit = FALLBACK_GAS_LIMIT
        return PreparedAction(name=action.name, target=call.target, calldata=calldata,
                              module_calldata=module_calldata, done_when=action.done_when, gas_limit=gas_limit)

    async def is_done(self, action: str) -> bool:
        return await self._prepared[action].done_when.holds(self._reader)

    async def _view_bool(self, to: str, data: bytes) -> bool:
        raw = await self._rpc.call(to, data)
        return bool(int.from_bytes(raw[:32], "big")) if raw else False

    # ---- responding ----

    async def respond(self, incident_id: int, action: str, threat: Threat | None = None) -> None:
        """Puts `action` in effect for the incident, at most once: the store's claim is the idempotency key,
        and an action already in flight for another incident is outbid, not sent twice."""
        if not self._store.claim_response(incident_id, action):
            self._log.info("response already claimed for this incident: not sending again",
                           incident_id=incident_id, action=action)
            return
        inflight = self._inflight.get(action)
        if inflight is not None:
            self._store.update_response(incident_id, action, ResponseStatus.SENT, tx_hash=inflight.hashes[-1])
            self._store.add_timeline(incident_id, "response-shared",
                                     {"action": action, "with_incident": inflight.incident_id})
            if threat is not None:
                await self.outbid(action, threat)
            return
        await self._carry_out(incident_id, action, threat)

    async def outbid(self, action: str, threat: Threat) -> None:
        """A new threat paying more than the pause in flight: replace the pause with fees that outbid it."""
        inflight = self._inflight.get(action)
        if inflight is None:
            return
        fees = outbid(self._settings, inflight.fees, self._base_fee, threat)
        if fees is not None:
            self._log.warning("a richer threat arrived: replacing the pause in flight", action=action,
                              threat_tx=threat.tx_hash, tip=fees.max_priority_fee_per_gas)
            inflight.threat = threat
            await self._replace(action, inflight, fees)

    async def resume(self, record: ResponseRecord) -> None:
        """Finishes a response a crash interrupted: wait for what was sent, otherwise send it now."""
        log = self._log.bind(incident_id=record.incident_id, action=record.action)
        if record.action not in self._prepared:
            log.error("an interrupted response names an action that is no longer configured; left as it is")
            return
        if record.status == ResponseStatus.SENT and record.tx_hash:
            log.warning("resuming: waiting for the response sent before the restart", tx_hash=record.tx_hash)
            receipt = await self._rpc.wait_for_receipt(record.tx_hash, timeout=self._settings.receipt_timeout)
            if receipt is not None and self._record_receipt(record.incident_id, record.action, receipt, None):
                return
        else:
            log.warning("resuming a response claimed before the restart")
        await self._carry_out(record.incident_id, record.action, None)

    async def _carry_out(self, incident_id: int, action: str, threat: Threat | None) -> None:
        log = self._log.bind(incident_id=incident_id, action=action)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                if await self.is_done(action):
                    self._store.update_response(incident_id, action, ResponseStatus.ALREADY_DONE)
                    self._finish_incident(incident_id)
                    log.info("protocol already in the safe state: nothing sent")
                    return
                inflight = await self._send_new(incident_id, action, threat)
                if await self._watch(action, inflight):
                    return
            except ChainError as exc:
                log.error("response attempt failed", attempt=attempt, error=exc.message)
                self._inflight.pop(action, None)
                self._nonce = None
                await asyncio.sleep(0.2 * attempt)
        self._store.update_response(incident_id, action, ResponseStatus.FAILED,
                                    error=f"not in effect after {SEND_ATTEMPTS} attempts")
        self._store.set_status(incident_id, IncidentStatus.FAILED)
        log.critical("response FAILED: the protocol is NOT in the safe state; act by hand now")

    async def _send_new(self, incident_id: int, action: str, threat: Threat | None) -> InFlight:
        async with self._send_lock:
            if self._nonce is None:
                self._nonce = await self._rpc.nonce(self._account.address, "pending")
            fees = initial_fees(self._settings, self._base_fee, threat)
            inflight = InFlight(incident_id=incident_id, nonce=self._nonce, fees=fees, threat=threat)
            self._inflight[action] = inflight
            tx_hash, signed_at = await self._sign_and_send(action, inflight)
            self._nonce += 1
        broadcast_at = time.perf_counter()
        timings = _timings(threat, signed=signed_at, broadcast=broadcast_at)
        self._store.update_response(incident_id, action, ResponseStatus.SENT, tx_hash=tx_hash)
        self._store.add_timeline(incident_id, "response-broadcast",
                                 {"action": action, "tx_hash": tx_hash, "nonce": inflight.nonce,
                                  "tip": fees.max_priority_fee_per_gas, "max_fee": fees.max_fee_per_gas,
                                  "endpoints": "private" if self._private else "public",
                                  "threat_tx": threat.tx_hash if threat else None, **timings})
        self._log.warning("response sent", incident_id=incident_id, action=action, tx_hash=tx_hash,
                          tip=fees.max_priority_fee_per_gas, **timings)
        return inflight

    async def _replace(self, action: str, inflight: InFlight, fees: Fees) -> None:
        async with self._send_lock:
            inflight.fees = fees
            tx_hash, _ = await self._sign_and_send(action, inflight)
        self._store.add_timeline(inflight.incident_id, "response-replaced",
                                 {"action": action, "tx_hash": tx_hash, "tip": fees.max_priority_fee_per_gas,
                                  "max_fee": fees.max_fee_per_gas})

    async def _sign_and_send(self, action: str, inflight: InFlight) -> tuple[str, float]:
        prepared = self._prepared[action]
        tx = {
            "chainId": self._config.chain.chain_id,
            "to": self._module,
            "data": prepared.module_calldata,
            "value": 0,
            "gas": prepared.gas_limit,
            "nonce": inflight.nonce,
            "maxPriorityFeePerGas": inflight.fees.max_priority_fee_per_gas,
            "maxFeePerGas": inflight.fees.max_fee_per_gas,
            "type": 2,
        }
        raw = self._account.sign_transaction(tx).raw_transaction
        signed_at = time.perf_counter()
        first = self._private or self._public
        tx_hash = await send_everywhere(first, raw)
        inflight.hashes.append(tx_hash)
        inflight.sent_at = inflight.sent_at or time.perf_counter()
        if self._private and self._public and self._settings.public_fallback_after == 0:
            await send_everywhere(self._public, raw, required=False)
            inflight.public_sent = True
        return tx_hash, signed_at

    async def _watch(self, action: str, inflight: InFlight) -> bool:
        """Waits for the pause to be mined, replacing it when it lingers; True once the outcome is final."""
        deadline = time.monotonic() + self._settings.receipt_timeout
        next_bump = time.monotonic() + self._settings.bump_after
        fallback = self._settings.public_fallback_after
        while time.monotonic() < deadline:
            for tx_hash in reversed(inflight.hashes):
                receipt = await self._rpc.receipt(tx_hash)
                if receipt is not None:
                    self._inflight.pop(action, None)
                    if inflight.threat is not None:
                        await self._record_order(inflight.incident_id, receipt, inflight.threat)
                    return self._record_receipt(inflight.incident_id, action, receipt, inflight.threat)
            if (self._private and self._public and not inflight.public_sent and fallback is not None
                    and time.perf_counter() - inflight.sent_at >= fallback):
                self._log.warning("not mined through the private endpoints: sending publicly too", action=action)
                await self._resend_public(action, inflight)
            if time.monotonic() >= next_bump:
                next_bump = time.monotonic() + self._settings.bump_after
                if await self.is_done(action):
                    continue  # done by someone else, or ours is about to show: keep looking for the receipt
                fees = bumped(self._settings, inflight.fees)
                if fees is not None:
                    self._log.warning("response not mined yet: replacing it with higher fees", action=action,
                                      tip=fees.max_priority_fee_per_gas)
                    await self._replace(action, inflight, fees)
            await asyncio.sleep(RECEIPT_POLL)
        self._inflight.pop(action, None)
        self._log.error("response not mined in time", action=action, timeout=self._settings.receipt_timeout)
        return False

    async def _resend_public(self, action: str, inflight: InFlight) -> None:
        inflight.public_sent = True
        async with self._send_lock:
            private, self._private = self._private, []
            try:
                await self._sign_and_send(action, inflight)
            finally:
                self._private = private

    def _record_receipt(self, incident_id: int, action: str, receipt: Any, threat: Threat | None) -> bool:
        block, gas, tx_hash = int(receipt["blockNumber"]), int(receipt["gasUsed"]), receipt["transactionHash"]
        tx_hash = tx_hash if isinstance(tx_hash, str) else tx_hash.to_0x_hex()
        if receipt["status"] != 1:
            self._store.update_response(incident_id, action, ResponseStatus.REVERTED, tx_hash=tx_hash,
                                        block_number=block, gas_used=gas)
            self._log.error("response reverted", incident_id=incident_id, action=action, block=block)
            return False
        self._store.update_response(incident_id, action, ResponseStatus.MINED, tx_hash=tx_hash,
                                    block_number=block, gas_used=gas)
        included = {"included_ms": round((time.perf_counter() - threat.seen_at) * 1000, 2)} if threat else {}
        self._store.add_timeline(incident_id, "response-included",
                                 {"action": action, "tx_hash": tx_hash, "block": block,
                                  "position": int(receipt["transactionIndex"]), **included})
        self._finish_incident(incident_id)
        self._log.warning("response mined: protocol in the safe state", incident_id=incident_id, action=action,
                          block=block, gas_used=gas)
        return True

    async def _record_order(self, incident_id: int, receipt: Any, threat: Threat) -> None:
        """Whether the pause landed before the transaction it raced."""
        attack = await self._rpc.receipt(threat.tx_hash)
        ours = (int(receipt["blockNumber"]), int(receipt["transactionIndex"]))
        if attack is None:
            first, where = True, "not mined yet"
        else:
            theirs = (int(attack["blockNumber"]), int(attack["transactionIndex"]))
            first, where = ours < theirs, f"block {theirs[0]} position {theirs[1]}"
            where += ", reverted" if attack["status"] != 1 else ", succeeded"
        self._store.add_timeline(incident_id, "race", {"threat_tx": threat.tx_hash, "pause_first": first,
                                                       "pause": f"block {ours[0]} position {ours[1]}",
                                                       "threat": where})
        log = self._log.warning if first else self._log.error
        log("race with the threat settled", incident_id=incident_id, pause_first=first, threat=where)

    def _finish_incident(self, incident_id: int) -> None:
        records = self._store.responses(incident_id)
        if records and all(r.status in (ResponseStatus.MINED, ResponseStatus.ALREADY_DONE) for r in records):
            self._store.set_status(incident_id, IncidentStatus.MITIGATED)


async def send_everywhere(endpoints: list[Rpc], raw: bytes, required: bool = True) -> str:
    """Sends to every endpoint at once; the first acceptance wins. Fails only if every endpoint refused."""
    results = await asyncio.gather(*(endpoint.send_raw(raw) for endpoint in endpoints), return_exceptions=True)
    accepted = [r for r in results if isinstance(r, str)]
    if accepted or not required:
        return accepted[0] if accepted else ""
    errors = "; ".join(str(getattr(r, "message", r)) for r in results)
    raise ChainError(f"every endpoint refused the response: {errors}")


def _timings(threat: Threat | None, **stages: float) -> dict[str, float]:
    """Milliseconds from the threat's arrival to each stage (nothing when there is no pending threat)."""
    if threat is None:
        return {}
    return {f"{name}_ms": round((at - threat.seen_at) * 1000, 2) for name, at in stages.items()}
