"""Executes actions through owners' pre-signed Safe transactions: the daemon holds signatures, never owner keys,
and relays execTransaction with its own key once threshold signatures for the Safe's current nonce are held. A
nonce move voids them; the daemon notices within a block, says so at error level and records it."""

from __future__ import annotations

import asyncio
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount

from onguard.chain.rpc import Rpc
from onguard.chain.view import BatchStateReader
from onguard.config import Config
from onguard.errors import ChainError
from onguard.incidents.audit import AuditKind, AuditLog
from onguard.incidents.safetxs import SafeTxRecord, SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStatus, IncidentStore, ResponseRecord, ResponseStatus
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.responders.fees import Threat, initial_fees
from onguard.responders.module import send_everywhere, encode_call
from onguard.safe.tx import OwnerSignature, SignatureKind, exec_calldata

GAS_HEADROOM = 60_000


class PresignedResponder:
    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount, store: IncidentStore) -> None:
        self._rpc = rpc
        self._config = config
        self._settings = config.response
        self._account = account
        self._store = store
        self._txs = SafeTxStore(store)
        self._audit = AuditLog(store)
        self._safe = config.safe.address
        self._reader = BatchStateReader(rpc)
        self._actions = {name: a for name, a in config.actions.items() if a.via == "presigned"}
        self._endpoints = [Rpc(e.url) for e in config.response.endpoints if e.private] or \
                          [Rpc(e.url) for e in config.response.endpoints if not e.private]
        self._nonce: int | None = None       # the Safe's nonce as last read
        self._threshold = 0
        self._owners: frozenset[str] = frozenset()
        self._base_fee = 0
        self._lock = asyncio.Lock()          # one relayer key, one Safe nonce: one execution at a time
        self._log = get_logger(component="presigned-responder", chain_id=config.chain.chain_id,
                               safe=self._safe, relayer=account.address)

    def handles(self, action: str) -> bool:
        return action in self._actions

    def in_flight(self, action: str) -> bool:
        return False

    async def prepare(self) -> None:
        if not self._actions and not self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            return
        self._base_fee = await self._rpc.latest_base_fee()
        await self._refresh_safe()
        for name in self._actions:
            usable = self._usable(name)
            if usable is None:
                self._log.error("no usable pre-signed transaction for this action: it cannot be executed until "
                                "owners pre-sign it (`onguard presign`)", action=name, safe_nonce=self._nonce,
                                threshold=self._threshold)
            else:
                self._log.info("pre-signed transaction ready", action=name, safe_nonce=self._nonce,
                               safe_tx_hash=usable[0].safe_tx_hash, signatures=len(usable[1]))

    async def on_block(self, block: BlockObservation) -> None:
        """One read of the Safe's nonce per block: a move voids every pre-signature for an older nonce."""
        if block.base_fee is not None:
            self._base_fee = block.base_fee
        if self._actions or self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            await self._refresh_safe()

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.close()

    async def _view(self, data: bytes, types: list[str]) -> Any:
        return abi_decode(types, await self._rpc.call(self._safe, data))[0]

    async def _refresh_safe(self) -> None:
        nonce = int(await self._view(encode_call("nonce()", [], []), ["uint256"]))
        if nonce != self._nonce:
            # Owners and threshold only change through a Safe transaction, which moves the nonce.
            self._threshold = int(await self._view(encode_call("getThreshold()", [], []), ["uint256"]))
            self._owners = frozenset(a.lower() for a in await self._view(encode_call("getOwners()", [], []),
                                                                         ["address[]"]))
            self._nonce = nonce
        self._mark_stale(nonce)

    def _mark_stale(self, nonce: int) -> None:
        for record in self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            if record.tx.nonce < nonce:
                self._txs.set_status(record, TxStatus.STALE, note=f"the Safe's nonce moved to {nonce}")
                self._audit.append(AuditKind.PRESIGNED_STALE, "daemon", {
                    "presigned": record.id, "action": record.action, "nonce": record.tx.nonce,
                    "safe_nonce": nonce, "safe_tx_hash": record.safe_tx_hash})
                self._log.error("pre-signed transaction is STALE: the Safe's nonce moved past it, its signatures "
                                "are void; owners must re-sign (`onguard presign`)", action=record.action,
                                presigned=record.id, signed_nonce=record.tx.nonce, safe_nonce=nonce,
                                safe_tx_hash=record.safe_tx_hash)

    def _usable(self, action: str) -> tuple[SafeTxRecord, list[OwnerSignature]] | None:
        """The pre-signed transaction for `action` at the current nonce with the most owners' signatures, if it
        reaches the threshold. Alternatives at one nonce exclude each other: the one asked for is picked."""
        best: tuple[SafeTxRecord, list[OwnerSignature]] | None = None
        for record in self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            if record.action != action or record.tx.nonce != self._nonce:
                continue
            signatures = [s for s in record.signatures if s.owner.lower() in self._owners]
            if len(signatures) >= self._threshold and (best is None or len(signatures) > len(best[1])):
                best = (record, signatures)
        return best

    async def _approved(self, owner: str, safe_tx_hash: str) -> bool:
        data = encode_call("approvedHashes(address,bytes32)", ["address", "bytes32"],
                           [owner, bytes.fromhex(safe_tx_hash[2:])])
        return int(await self._view(data, ["uint256"])) == 1

    async def is_done(self, action: str) -> bool:
        return await self._actions[action].done_when.holds(self._reader)

    async def respond(self, incident_id: int, action: str, threat: Threat | None = None) -> None:
        if not self._store.claim_response(incident_id, action):
            self._log.info("response already claimed for this incident: not sending again",
                           incident_id=incident_id, action=action)
            return
        async with self._lock:
            await self._carry_out(incident_id, action, threat)

    async def resume(self, record: ResponseRecord) -> None:
        if record.status == ResponseStatus.SENT and record.tx_hash:
            receipt = await self._rpc.wait_for_receipt(record.tx_hash, timeout=self._settings.receipt_timeout)
            if receipt is not None and receipt["status"] == 1:
                self._finish(record.incident_id, record.action, receipt, None)
                return
        async with self._lock:
            await self._carry_out(record.incident_id, record.action, None)

    async def _carry_out(self, incident_id: int, action: str, threat: Threat | None) -> None:
        log = self._log.bind(incident_id=incident_id, action=action)
        try:
            if await self.is_done(action):
                self._store.update_response(incident_id, action, ResponseStatus.ALREADY_DONE)
                self._finish_incident(incident_id)
                log.info("protocol already in the safe state: nothing sent")
                return
            await self._refresh_safe()
            usable = self._usable(action)
            if usable is not None:
                record, signatures = usable
                approved = [s for s in signatures if s.kind == SignatureKind.APPROVED]
                for signature in approved:
                    if not await self._approved(signature.owner, record.safe_tx_hash):
                        signatures.remove(signature)
                if len(signatures) < self._threshold:
                    usable = None
            if usable is None:
                self._fail(incident_id, action, f"no pre-signed transaction with {self._threshold} owners' "
                                                f"signatures for the Safe's nonce {self._nonce}")
                return
            record, signatures = usable
            # exec calldata is pure encoding (no safe-eth-py, no hashing): cheap enough for the hot path.
            calldata = exec_calldata(record.tx, signatures)
            tx: dict[str, Any] = {"from": self._account.address, "to": self._safe, "data": calldata}
            gas = await self._rpc.estimate_gas(tx) + GAS_HEADROOM
            fees = initial_fees(self._settings, self._base_fee, threat)
            signed = self._account.sign_transaction({
                "chainId": self._config.chain.chain_id, "to": self._safe, "data": calldata, "value": 0, "gas": gas,
                "nonce": await self._rpc.nonce(self._account.address, "pending"), "type": 2,
                "maxPriorityFeePerGas": fees.max_priority_fee_per_gas, "maxFeePerGas": fees.max_fee_per_gas})
            tx_hash = await send_everywhere(self._endpoints, signed.raw_transaction)
            self._store.update_response(incident_id, action, ResponseStatus.SENT, tx_hash=tx_hash)
            self._store.add_timeline(incident_id, "response-broadcast", {
                "action": action, "tx_hash": tx_hash, "via": "presigned", "presigned": record.id,
                "safe_tx_hash": record.safe_tx_hash, "signers": [s.owner for s in signatures]})
            log.warning("pre-signed Safe transaction sent", tx_hash=tx_hash, safe_tx_hash=record.safe_tx_hash)
            receipt = await self._rpc.wait_for_receipt(tx_hash, timeout=self._settings.receipt_timeout)
        except ChainError as exc:
            self._fail(incident_id, action, exc.message)
            return
        if receipt is None:
            self._fail(incident_id, action, f"not mined within {self._settings.receipt_timeout}s")
            return
        if receipt["status"] != 1:
            self._store.update_response(incident_id, action, ResponseStatus.REVERTED, tx_hash=tx_hash,
                                        block_number=int(receipt["blockNumber"]), gas_used=int(receipt["gasUsed"]))
            self._store.set_status(incident_id, IncidentStatus.FAILED)
            log.critical("pre-signed Safe transaction REVERTED: the protocol is NOT in the safe state")
            return
        self._finish(incident_id, action, receipt, record)

    def _finish(self, incident_id: int, action: str, receipt: Any, record: SafeTxRecord | None) -> None:
        tx_hash = receipt["transactionHash"]
        tx_hash = tx_hash if isinstance(tx_hash, str) else tx_hash.to_0x_hex()
        block = int(receipt["blockNumber"])
        self._store.update_response(incident_id, action, ResponseStatus.MINED, tx_hash=tx_hash, block_number=block,
                                    gas_used=int(receipt["gasUsed"]))
        if record is not None:
            self._txs.set_status(record, TxStatus.EXECUTED, tx_hash=tx_hash, block_number=block)
            self._audit.append(AuditKind.EXECUTION, f"daemon:{self._account.address}", {
                "presigned": record.id, "action": action, "incident_id": incident_id, "tx_hash": tx_hash,
                "block": block, "safe_tx_hash": record.safe_tx_hash, "nonce": record.tx.nonce})
        self._finish_incident(incident_id)
        self._log.warning("pre-signed Safe transaction mined: protocol in the safe state", incident_id=incident_id,
                          action=action, tx_hash=tx_hash, block=block)

    def _fail(self, incident_id: int, action: str, error: str) -> None:
        self._store.update_response(incident_id, action, ResponseStatus.FAILED, error=error)
        self._store.set_status(incident_id, IncidentStatus.FAILED)
        self._log.critical("response FAILED: the protocol is NOT in the safe state; act by hand now",
                           incident_id=incident_id, action=action, error=error)

    def _finish_incident(self, incident_id: int) -> None:
        records = self._store.responses(incident_id)
        if records and all(r.status in (ResponseStatus.MINED, ResponseStatus.ALREADY_DONE) for r in records):
            self._store.set_status(incident_id, IncidentStatus.MITIGATED)
