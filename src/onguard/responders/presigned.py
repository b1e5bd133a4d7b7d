"""The pre-signed path: builds Safe.execTransaction from owners' pre-signed emergency transactions (the daemon
holds signatures, never owner keys) and relays it with its own key through the shared response life cycle, once
threshold signatures for the Safe's current nonce are held. A nonce move voids them; the daemon notices within a
block, says so at error level and records it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount

from onguard.chain.module import safe_abi
from onguard.chain.rpc import Rpc
from onguard.config import Config
from onguard.errors import ChainError
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxRecord, SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.responders.actions import PreparedAction
from onguard.responders.lifecycle import BuiltTx, ResponseImpossible
from onguard.safe.tx import OwnerSignature, SignatureKind, exec_calldata

GAS_HEADROOM = 60_000


class PresignedPath:
    via = "presigned"

    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount, store: IncidentStore,
                 on_stale: Callable[[str, int, int], None] | None = None,
                 leads: Callable[[], Awaitable[bool]] | None = None) -> None:
        """`on_stale(action, signed_nonce, safe_nonce)`: told once per pre-signature the Safe's nonce voided (the
        daemon's operations page someone: the guardian can no longer take that action). `leads()`: whether this
        daemon marks them: among replicas the leader does, once, its lease confirmed in the database (fenced); alone
        (None) it always does."""
        self._rpc = rpc
        self._on_stale = on_stale
        self._leads = leads or _always
        self._config = config
        self._account = account
        self._txs = SafeTxStore(store.database)
        self._audit = AuditLog(store.database)
        self._store = store
        self._safe = config.safe.address
        self._actions: set[str] = set()
        self._nonce: int | None = None       # the Safe's nonce as last read
        self._threshold = 0
        self._owners: frozenset[str] = frozenset()
        self._marked_stale: set[int] = set()
        self._built: dict[str, tuple[int, BuiltTx]] = {}   # action → (the Safe nonce it is for, what was built)
        self._unbuildable: dict[str, tuple[int | None, int]] = {}  # action → (Safe nonce, pre-signed txs) it failed at
        self._log = get_logger(component="presigned-path", chain_id=config.chain.chain_id, safe=self._safe,
                               relayer=account.address)

    async def prepare(self, actions: Sequence[PreparedAction]) -> None:
        self._actions = {a.name for a in actions}
        if not self._actions and not self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            return
        await self._refresh_safe()
        for name in sorted(self._actions):
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
        if self._actions or self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING):
            await self._refresh_safe()

    async def close(self) -> None:
        return None

    async def build(self, action: PreparedAction) -> BuiltTx:
        await self._refresh_safe()
        usable = self._usable(action.name)
        if usable is not None:
            record, signatures = usable
            for signature in [s for s in signatures if s.kind == SignatureKind.APPROVED]:
                if not await self._approved(signature.owner, record.safe_tx_hash):
                    signatures.remove(signature)
            if len(signatures) < self._threshold:
                usable = None
        if usable is None:
            raise ResponseImpossible(f"no pre-signed transaction with {self._threshold} owners' signatures for "
                                     f"the Safe's nonce {self._nonce}")
        record, signatures = usable
        # exec calldata is pure encoding (no safe-eth-py, no hashing): cheap enough for the hot path.
        data = exec_calldata(record.tx, signatures)
        tx: dict[str, Any] = {"from": self._account.address, "to": self._safe, "data": data}
        gas = await self._rpc.estimate_gas(tx) + GAS_HEADROOM
        built = BuiltTx(to=self._safe, data=data, gas_limit=gas, note={
            "via": "presigned", "presigned": record.id, "safe_tx_hash": record.safe_tx_hash,
            "signers": [s.owner for s in signatures]})
        self._built[action.name] = (record.tx.nonce, built)
        return built

    def ready(self, action: PreparedAction) -> BuiltTx | None:
        """What was last built for the action, while the Safe's nonce as last read is still the one it was for."""
        nonce, built = self._built.get(action.name, (None, None))
        return built if nonce is not None and nonce == self._nonce else None

    async def prebuild(self, action: PreparedAction) -> BuiltTx | None:
        """Built once per Safe nonce (reads, an estimate); an action without usable pre-signatures is tried again
        when the Safe's nonce moves or owners add pre-signed transactions. (Between a block that moves the nonce
        and its handling, what was built may be void: it then reverts and the trip's retry builds afresh.)"""
        built = self.ready(action)
        attempt = (self._nonce, len(self._txs.list(TxKind.PRESIGNED)))
        if built is not None or self._unbuildable.get(action.name) == attempt:
            return built
        try:
            return await self.build(action)
        except (ResponseImpossible, ChainError):
            self._unbuildable[action.name] = attempt
            return None

    def on_mined(self, action: str, incident_ids: Sequence[int], tx_hash: str, block: int, built: BuiltTx) -> None:
        record = next((r for r in self._txs.list(TxKind.PRESIGNED) if r.id == built.note.get("presigned")), None)
        if record is None:
            return
        self._store.durably("pre-signed executed", lambda: self._txs.set_status(
            record, TxStatus.EXECUTED, tx_hash=tx_hash, block_number=block))
        self._store.durably("audit execution", lambda: self._audit.append(
            AuditKind.EXECUTION, f"daemon:{self._account.address}", {
                "presigned": record.id, "action": action, "incident_id": self._store.saved_id(incident_ids[0]),
                "incidents": [self._store.saved_id(i) for i in incident_ids], "tx_hash": tx_hash, "block": block,
                "safe_tx_hash": record.safe_tx_hash, "nonce": record.tx.nonce}))
        self._log.warning("pre-signed Safe transaction mined", action=action, tx_hash=tx_hash, block=block,
                          safe_tx_hash=record.safe_tx_hash)

    async def _view(self, signature: str, *args: Any) -> Any:
        """A read of the Safe through its v1.4.1 ABI."""
        abi = safe_abi()
        return abi.decode_result(signature, await self._rpc.call(self._safe, abi.encode_call(signature, *args)))[0]

    async def _refresh_safe(self) -> None:
        nonce = int(await self._view("nonce()"))
        if nonce != self._nonce:
            # Owners and threshold only change through a Safe transaction, which moves the nonce.
            self._threshold = int(await self._view("getThreshold()"))
            self._owners = frozenset(a.lower() for a in await self._view("getOwners()"))
            self._nonce = nonce
        await self._mark_stale(nonce)

    async def _mark_stale(self, nonce: int) -> None:
        voided = [record for record in self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING)
                  if record.tx.nonce < nonce and record.id not in self._marked_stale]
        if not voided or not await self._leads():
            return  # among replicas the leader marks them, audits and pages, once for every replica
        for record in voided:
            self._marked_stale.add(record.id)  # once, even while the database holds the write back
            self._store.durably("pre-signed stale", lambda r=record: self._txs.set_status(
                r, TxStatus.STALE, note=f"the Safe's nonce moved to {nonce}"))
            self._store.durably("audit pre-signed stale", lambda r=record: self._audit.append(
                AuditKind.PRESIGNED_STALE, "daemon", {
                    "presigned": r.id, "action": r.action, "nonce": r.tx.nonce, "safe_nonce": nonce,
                    "safe_tx_hash": r.safe_tx_hash}))
            self._log.error("pre-signed transaction is STALE: the Safe's nonce moved past it, its signatures "
                            "are void; owners must re-sign (`onguard presign`)", action=record.action,
                            presigned=record.id, signed_nonce=record.tx.nonce, safe_nonce=nonce,
                            safe_tx_hash=record.safe_tx_hash)
            if self._on_stale is not None and record.action:
                self._on_stale(record.action, record.tx.nonce, nonce)

    def _usable(self, action: str) -> tuple[SafeTxRecord, list[OwnerSignature]] | None:
        """The pre-signed transaction for `action` at the current nonce with the most owners' signatures, if it
        reaches the threshold. Alternatives at one nonce exclude each other: the one asked for is picked. One
        recorded as executed counts again when its nonce is current: a reorganisation undid the execution."""
        best: tuple[SafeTxRecord, list[OwnerSignature]] | None = None
        candidates = [*self._txs.list(TxKind.PRESIGNED, TxStatus.PENDING),
                      *self._txs.list(TxKind.PRESIGNED, TxStatus.EXECUTED)]
        for record in candidates:
            if record.action != action or record.tx.nonce != self._nonce:
                continue
            signatures = [s for s in record.signatures if s.owner.lower() in self._owners]
            if len(signatures) >= self._threshold and (best is None or len(signatures) > len(best[1])):
                best = (record, signatures)
        return best

    async def _approved(self, owner: str, safe_tx_hash: str) -> bool:
        return int(await self._view("approvedHashes(address,bytes32)", owner, bytes.fromhex(safe_tx_hash[2:]))) == 1


async def _always() -> bool:
    return True
