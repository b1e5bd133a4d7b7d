"""One response life cycle for every path: price, sign, store, send to every endpoint (private first, public
fallback), watch, bump, replace at the same nonce, outbid the threat, and record what the chain shows. The paths
(the guardian module, owners' pre-signed Safe transactions) differ only in the transaction they build.

Each action has at most one campaign under way, whichever incidents want it (they join it): one pause per action,
never two. Before any threat, each action's transaction is signed over a fee ladder at the guardian's next nonce
(responders/feeladder.py) and the ladder stored; a trip broadcasts the lowest rung that outbids the threat and
records it after the send (`_send_pre_signed`, the one place that does so). A transaction signed at the trip (no
rung fits, or a replacement) is stored before it is sent. Either way a restart knows the nonce held and replaces it
with higher fees instead of queueing a second pause behind a stuck one. A campaign that fails is recorded as failed
and may be started again (the reconciler does, with back-off)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from onguard.chain.rpc import Rpc
from onguard.config import Config
from onguard.errors import ChainError
from onguard.incidents.store import (
    IncidentStatus,
    IncidentStore,
    Outcome,
    ResponseStatus,
    ResponseTx,
)
from onguard.log import get_logger
from onguard.observations import BlockObservation
from onguard.ops.metrics import Stage
from onguard.responders.actions import PreparedAction, is_done, prepare_action
from onguard.responders.feeladder import FeeLadders, Rung, SignedLadder, rung_hashes
from onguard.responders.fees import Fees, PendingTips, Threat, bumped, initial_fees, outbid
from onguard.responders.outcome import Landing, classify, evidence_transactions, harmful_transactions

RECEIPT_POLL = 0.05
IN_EFFECT = (ResponseStatus.MINED, ResponseStatus.ALREADY_DONE)


class ResponseImpossible(Exception):
    """The path cannot build the transaction now (e.g. no pre-signature for the Safe's nonce)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class BuiltTx:
    """What a path makes of a prepared action: where the guardian key sends it, with what, and notes to record."""

    to: str
    data: bytes
    gas_limit: int
    note: Mapping[str, Any] = field(default_factory=dict)


class ResponseObserver(Protocol):
    """Told of each stage's duration and each campaign's outcome (the daemon's operations: metrics, notices).
    Called after the transaction is on the wire; must never block."""

    def stage(self, stage: Stage, seconds: float) -> None: ...

    def response_outcome(self, incident_ids: list[int], action: str, status: str,
                         detail: Mapping[str, Any]) -> None: ...


class TxPath(Protocol):
    via: str

    async def prepare(self, actions: Sequence[PreparedAction]) -> None: ...

    async def on_block(self, block: BlockObservation) -> None: ...

    async def build(self, action: PreparedAction) -> BuiltTx: ...

    def ready(self, action: PreparedAction) -> BuiltTx | None:
        """What `build` would return now, from what the path last read (no I/O); None when it must read first."""
        ...

    async def prebuild(self, action: PreparedAction) -> BuiltTx | None:
        """Builds ahead of any threat (off the hot path, for the fee ladder); None when it cannot now (a trip
        builds again and says why)."""
        ...

    def on_mined(self, action: str, incident_ids: Sequence[int], tx_hash: str, block: int, built: BuiltTx) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Campaign:
    """One action's response under way: the incidents it serves, the nonce it holds, every hash sent at it."""

    action: str
    incidents: list[int]
    threat: Threat | None            # the richest threat it must get ahead of (None: nothing pending known)
    path: str                        # "mempool" (racing a pending threat) or "block"
    raced: list[str] = field(default_factory=list)   # every threat hash it was priced against
    nonce: int | None = None
    fees: Fees | None = None
    hashes: list[str] = field(default_factory=list)
    built: BuiltTx | None = None
    sent_at: float = 0.0
    public_sent: bool = False
    decided_at: float = field(default_factory=time.perf_counter)  # when the campaign was started (decided)
    after_sent: list[Callable[[], None]] = field(default_factory=list)  # bookkeeping waiting for the broadcast
    on_wire: bool = False            # its first transaction's broadcast returned (or it ended without one)


class NotInEffect(Exception):
    """The campaign ended without the action in effect (not mined in time, or reverted)."""


class ResponseLifecycle:
    def __init__(self, rpc: Rpc, config: Config, account: LocalAccount, store: IncidentStore,
                 paths: Mapping[str, TxPath], tips: PendingTips,
                 spawn: Callable[[Coroutine[Any, Any, None]], None],
                 observer: ResponseObserver | None = None) -> None:
        self._rpc = rpc
        self._config = config
        self._settings = config.response
        self._account = account
        self._store = store
        self._paths = paths
        self._tips = tips
        self._spawn = spawn
        self._observer = observer
        self._prepared = {name: prepare_action(config, action) for name, action in config.actions.items()}
        self._watched = [c.address for c in config.contracts.values()]
        # A send endpoint gets send_timeout to accept: a hung builder must not hold the pause back.
        timeout = config.response.send_timeout
        self._private = [Rpc(e.url, request_timeout=timeout) for e in config.response.endpoints if e.private]
        self._public = [Rpc(e.url, request_timeout=timeout) for e in config.response.endpoints if not e.private]
        self._campaigns: dict[str, Campaign] = {}
        self._quiet_waiters: list[asyncio.Future[None]] = []  # until_sent() callers, woken once nothing is sending
        self.failures = 0   # campaigns that ended without the action in effect, since start
        self._nothing_to_settle: set[tuple[str, int | None, frozenset[str]]] = set()
        self._next_nonce: int | None = None
        self._base_fee = 0
        self._ladders = FeeLadders(account, config.chain.chain_id, config.response,
                                   save=lambda action, ladders: store.save_signed_ladders(account.address, action,
                                                                                          ladders))
        self._not_held_at_head: set[str] = set()  # actions read as not in effect at the latest head
        self._warming: asyncio.Future[Any] | None = None
        self._send_lock = asyncio.Lock()  # one guardian key, one nonce sequence
        self._log = get_logger(component="responder", chain_id=config.chain.chain_id, guardian=account.address)

    @property
    def prepared(self) -> Mapping[str, PreparedAction]:
        return self._prepared

    def in_flight(self, action: str) -> bool:
        return action in self._campaigns

    def serves(self, action: str) -> frozenset[int]:
        """The incidents the campaign under way for `action` records its outcome for (none when none is)."""
        campaign = self._campaigns.get(action)
        return frozenset(campaign.incidents) if campaign is not None else frozenset()

    def sending(self) -> bool:
        """A response is under way and not on the wire yet (notifications and the self-defence's simulations hold
        meanwhile)."""
        return any(not campaign.on_wire for campaign in self._campaigns.values())

    async def until_sent(self, timeout: float) -> None:
        """Waits until no response is being priced, signed or sent (sending() is False), at most `timeout` s."""
        if timeout <= 0 or not self.sending():
            return
        quiet: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._quiet_waiters.append(quiet)
        try:
            await asyncio.wait_for(quiet, timeout)
        except TimeoutError:
            pass
        finally:
            if quiet in self._quiet_waiters:
                self._quiet_waiters.remove(quiet)

    def knows(self, action: str) -> bool:
        return action in self._prepared

    async def prepare(self) -> None:
        """Each path checks what it needs on chain and prepares its transactions; the nonce and base fee are read."""
        for via, path in self._paths.items():
            await path.prepare([p for p in self._prepared.values() if p.via == via])
        self._next_nonce = await self._rpc.nonce(self._account.address, "pending")
        self._base_fee = await self._rpc.latest_base_fee()
        await self._adopt_sent_rungs(self._next_nonce)
        await self._refresh_ladders()
        await self._read_held_at_head()
        self._keep_send_connections_warm()
        self._log.info("responses prepared", actions=sorted(self._prepared), nonce=self._next_nonce,
                       private_endpoints=len(self._private), public_endpoints=len(self._public),
                       fee_ladders=self._ladders.sizes())

    async def on_block(self, block: BlockObservation) -> None:
        """Keeps the hot path's inputs current while no response is under way: the base fee, the paths' reads,
        the nonce, the fee ladders, whether each action holds, warm send connections."""
        if block.base_fee is not None:
            self._base_fee = block.base_fee
        for path in self._paths.values():
            await path.on_block(block)
        if self._campaigns or self._send_lock.locked():
            return  # a response is under way: nothing here may compete with it for the loop or the node
        self._next_nonce = await self._rpc.nonce(self._account.address, "pending")
        await self._refresh_ladders()
        await self._read_held_at_head()
        self._keep_send_connections_warm()

    # ---- the fee ladder (off the hot path) ----

    async def _refresh_ladders(self) -> None:
        """Each action's fee ladder at the next nonce and the current base fee (signed again when either or the
        action's transaction changed; stored before it can be used, so a rung sent and not yet recorded is
        recognised after a crash)."""
        nonce, base_fee = self._next_nonce, self._base_fee
        if nonce is None or self._campaigns:
            return  # a campaign holds the nonce: the ladder follows once it is settled
        for name, prepared in self._prepared.items():
            built = await self._paths[prepared.via].prebuild(prepared)
            if built is None:
                self._ladders.forget(name)
                continue
            await self._ladders.refresh(
                name, nonce=nonce, base_fee=base_fee, to=built.to, data=built.data, gas_limit=built.gas_limit,
                still_wanted=lambda: (self._next_nonce, self._base_fee) == (nonce, base_fee) and not self._campaigns)

    def _ladder_for(self, prepared: PreparedAction, nonce: int) -> tuple[SignedLadder, BuiltTx] | None:
        """The action's ladder when it signs what the path would build now, at `nonce`."""
        built = self._paths[prepared.via].ready(prepared)
        if built is None:
            return None
        ladder = self._ladders.for_trip(prepared.name, nonce=nonce, to=built.to, data=built.data,
                                        gas_limit=built.gas_limit)
        return None if ladder is None else (ladder, built)

    async def _adopt_sent_rungs(self, pending_nonce: int) -> None:
        """After a restart: a rung sent before the crash let it be recorded is found by its hash (pending or mined)
        and recorded as the response transaction of the incident that claimed its action, so the reconciler
        settles it (mined) or replaces it at its nonce (pending): one pause, and the record says which."""
        recorded = {tx.tx_hash.lower() for tx in self._store.response_txs(self._account.address)}
        rungs = [rung for tx_hash, rung in rung_hashes(self._store.signed_ladders(self._account.address)).items()
                 if tx_hash not in recorded and rung.nonce < pending_nonce]
        if not rungs:
            return
        answers = await self._rpc.batch([("eth_getTransactionByHash", [rung.tx_hash]) for rung in rungs])
        for rung, answer in zip(rungs, answers, strict=True):
            if not isinstance(answer, Mapping) or not answer.get("result"):
                continue
            claims = [r for r in self._store.unfinished_responses() if r.action == rung.action]
            if not claims:
                self._log.error("a pre-signed response was sent but no incident claims its action: not adopted",
                                action=rung.action, tx_hash=rung.tx_hash, nonce=rung.nonce)
                continue
            incident_id = claims[-1].incident_id
            signed = rung.signed(self._account, self._config.chain.chain_id)
            self._store.record_response_tx(ResponseTx(
                action=rung.action, incident_id=incident_id, sender=self._account.address, nonce=rung.nonce,
                tx_hash=rung.tx_hash, max_fee_per_gas=rung.fees.max_fee_per_gas,
                max_priority_fee_per_gas=rung.fees.max_priority_fee_per_gas, raw=signed.raw if signed else b""))
            self._store.update_response(incident_id, rung.action, ResponseStatus.SENT, tx_hash=rung.tx_hash)
            self._log.warning("a pre-signed response sent before a restart was found on chain: recorded",
                              action=rung.action, incident_id=incident_id, tx_hash=rung.tx_hash, nonce=rung.nonce)

    async def is_done(self, action: str) -> bool:
        return await is_done(self._rpc, self._prepared[action])

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)  # its cancellation retrieved, not left
        for path in self._paths.values():
            await path.close()
        for endpoint in (*self._private, *self._public):
            await endpoint.close()

    # ---- starting, joining, outbidding ----

    def respond(self, incident_id: int, action: str, threat: Threat | None = None) -> None:
        """Puts `action` in effect for the incident: joins the campaign under way for it (outbidding `threat`
        if it pays more), or starts one. Synchronous, so two trips in one breath make one campaign."""
        if action not in self._prepared:
            self._log.error("an incident names an action that is not configured; nothing sent",
                            incident_id=incident_id, action=action)
            return
        campaign = self._campaigns.get(action)
        if campaign is not None:
            if incident_id not in campaign.incidents:
                campaign.incidents.append(incident_id)
                self._store.add_timeline(incident_id, "response-shared",
                                         {"action": action, "with_incident": campaign.incidents[0],
                                          "tx_hash": campaign.hashes[-1] if campaign.hashes else None})
                if campaign.hashes:
                    self._store.update_response(incident_id, action, ResponseStatus.SENT,
                                                tx_hash=campaign.hashes[-1])
            if threat is not None:
                self._consider_outbidding(campaign, threat)
            return
        path = "mempool" if threat is not None else "block"
        campaign = Campaign(action=action, incidents=[incident_id], threat=threat or self._tips.highest(),
                            path=path)
        self._campaigns[action] = campaign
        self._spawn(self._run(campaign))

    def after_broadcast(self, actions: Sequence[str], bookkeeping: Callable[[], None]) -> None:
        """Runs `bookkeeping` once the campaign of the first of `actions` about to send has its transaction on the
        wire (or ended without one); at once when none is about to send. A decision's audit and timeline writes
        wait for the pause, never the other way round."""
        for action in actions:
            campaign = self._campaigns.get(action)
            if campaign is not None and not campaign.on_wire:
                campaign.after_sent.append(bookkeeping)
                return
        bookkeeping()

    def _run_after_sent(self, campaign: Campaign) -> None:
        campaign.on_wire = True
        if self._quiet_waiters and not self.sending():
            waiters, self._quiet_waiters = self._quiet_waiters, []
            for quiet in waiters:
                if not quiet.done():
                    quiet.set_result(None)
        waiting, campaign.after_sent = campaign.after_sent, []
        for bookkeeping in waiting:
            try:
                bookkeeping()
            except Exception:  # noqa: BLE001 - bookkeeping must never break the response itself
                self._log.exception("could not record a decision after its broadcast", action=campaign.action)

    def outbid_all(self, threat: Threat) -> None:
        """A transaction pending to a watched contract: every pause under way must be ordered before it."""
        for campaign in list(self._campaigns.values()):
            self._consider_outbidding(campaign, threat)

    def _consider_outbidding(self, campaign: Campaign, threat: Threat) -> None:
        """Synchronous, so a flood of pending transactions makes no tasks and none queues for the send lock ahead
        of the pause: a campaign not priced yet takes the richer threat for its pricing; one in flight is replaced
        only when `threat` pays more than it does."""
        if campaign.fees is None:
            if campaign.threat is None or threat.effective_tip > campaign.threat.effective_tip:
                campaign.threat = threat
            return
        if outbid(self._settings, campaign.fees, self._base_fee, threat) is not None:
            self._spawn(self._outbid(campaign, threat))

    async def _outbid(self, campaign: Campaign, threat: Threat) -> None:
        async with self._send_lock:
            if campaign.fees is None:  # not priced yet: it will be priced against the richest threat
                if campaign.threat is None or threat.effective_tip > campaign.threat.effective_tip:
                    campaign.threat = threat
                return
            if self._campaigns.get(campaign.action) is not campaign:
                return  # settled meanwhile
            fees = outbid(self._settings, campaign.fees, self._base_fee, threat)
            if fees is None:
                return
            self._log.warning("a richer transaction is pending: replacing the pause in flight",
                              action=campaign.action, threat_tx=threat.tx_hash, tip=fees.max_priority_fee_per_gas)
            campaign.threat = threat
            campaign.raced.append(threat.tx_hash)
            try:
                await self._replace(campaign, fees)
            except ChainError as exc:
                # Most often the pause was mined a moment ago ("nonce too low"): the campaign's watch settles it
                # from its receipt. Otherwise the watch bumps it as usual; nothing here is lost.
                self._log.info("the pause in flight could not be replaced; its watch goes on",
                               action=campaign.action, error=exc.message)

    async def settle_unrecorded(self, action: str, incident_ids: Sequence[int]) -> None:
        """The action holds but these incidents' responses say otherwise (sent before a crash and mined while the
        daemon was down, or mined after a campaign gave up): record what the chain shows — ours mined, or nothing
        of ours needed."""
        if action in self._campaigns:
            return
        # The hash each response recorded when it was sent (or last mined, before a reorganisation orphaned it):
        # among replicas, perhaps another's (one that died).
        recorded = {r.tx_hash for i in incident_ids for r in self._store.responses(i)
                    if r.action == action and r.status in (ResponseStatus.SENT, ResponseStatus.ORPHANED)
                    and r.tx_hash}
        stored = self._store.response_txs(self._account.address, action)
        nonce = stored[-1].nonce if stored else None
        settled_key = (action, nonce, frozenset(recorded))
        if settled_key in self._nothing_to_settle:
            return
        for tx_hash in [*sorted(recorded), *(tx.tx_hash for tx in reversed(stored) if tx.nonce == nonce)]:
            receipt = await self._rpc.receipt(tx_hash)
            if receipt is not None and receipt["status"] == 1:
                incident = self._store.incident(incident_ids[0])
                path = "mempool" if incident.evidence.get("path") == "mempool" else "block"
                campaign = Campaign(action=action, incidents=list(incident_ids), threat=None, path=path)
                self._log.warning("a response sent earlier is mined: recording it", action=action,
                                  tx_hash=tx_hash, incidents=list(incident_ids))
                await self._settle(campaign, receipt)
                return
        # None of ours is mined (each hash was looked up above), yet the action holds: another hand put it in
        # effect. Claimed, or orphaned by a reorganisation, the response is already done: the record says what
        # the chain shows, not "being sent again".
        for incident_id in incident_ids:
            if any(r.action == action and r.status in (ResponseStatus.CLAIMED, ResponseStatus.ORPHANED)
                   for r in self._store.responses(incident_id)):
                self._store.update_response(incident_id, action, ResponseStatus.ALREADY_DONE)
        if nonce is None or nonce < await self._rpc.nonce(self._account.address, "latest"):
            self._nothing_to_settle.add(settled_key)  # final: none of ours at that nonce can be mined now

    # ---- one campaign ----

    async def _run(self, campaign: Campaign) -> None:
        log = self._log.bind(action=campaign.action, incidents=campaign.incidents)
        try:
            await self._carry_out(campaign)
        except (ChainError, ResponseImpossible, NotInEffect) as exc:
            self._failed(campaign, getattr(exc, "message", None) or str(exc))
        except Exception:
            log.exception("response crashed: the protocol may NOT be in the safe state")
            self._failed(campaign, "internal error (see the log)")
            raise
        finally:
            self._run_after_sent(campaign)  # ended before any broadcast: the decision is recorded all the same
            if self._campaigns.get(campaign.action) is campaign:
                del self._campaigns[campaign.action]

    async def _carry_out(self, campaign: Campaign) -> None:
        prepared = self._prepared[campaign.action]
        if await self._already_done(campaign):
            for incident_id in campaign.incidents:
                self._store.update_response(incident_id, campaign.action, ResponseStatus.ALREADY_DONE)
                self.refresh_status(incident_id, reason="already in the safe state: nothing sent")
            self._not_held_at_head.discard(campaign.action)
            self._log.info("protocol already in the safe state: nothing sent", action=campaign.action)
            self._tell_outcome(campaign, ResponseStatus.ALREADY_DONE, {"sent": False})
            return
        stored = await self._unmined(campaign.action)
        if campaign.threat is not None and campaign.threat.tx_hash not in campaign.raced:
            campaign.raced.append(campaign.threat.tx_hash)
        laddered = (self._ladder_for(prepared, self._next_nonce)
                    if stored is None and self._next_nonce is not None else None)
        campaign.built = laddered[1] if laddered else await self._paths[prepared.via].build(prepared)
        min_tip = self._settings.block_path_min_tip if campaign.path == "block" else None
        rung: Rung | None = None
        async with self._send_lock:
            if stored is None and self._next_nonce is None:
                self._next_nonce = await self._rpc.nonce(self._account.address, "pending")
            # No await from pricing to `campaign.fees`: a threat seen before is priced in, one seen after is
            # outbid against the fees set (_consider_outbidding).
            fees = initial_fees(self._settings, self._base_fee, campaign.threat, min_tip)
            if stored is not None:
                # Ours is still pending at this nonce (sent before a restart, or re-broadcast after a reorg):
                # replace it, never queue a second pause behind it.
                campaign.nonce = stored[0].nonce
                campaign.hashes.extend(tx.tx_hash for tx in stored)
                floor = bumped(self._settings, Fees(max_fee_per_gas=stored[-1].max_fee_per_gas,
                                                    max_priority_fee_per_gas=stored[-1].max_priority_fee_per_gas))
                if floor is not None:
                    fees = Fees(max_fee_per_gas=max(fees.max_fee_per_gas, floor.max_fee_per_gas),
                                max_priority_fee_per_gas=max(fees.max_priority_fee_per_gas,
                                                             floor.max_priority_fee_per_gas))
            else:
                campaign.nonce = self._next_nonce
            if laddered is not None and laddered[0].nonce == campaign.nonce:
                rung = laddered[0].lowest_fitting(fees)
            if rung is not None:
                campaign.fees = fees = rung.fees
                tx_hash, signed_at = await self._send_pre_signed(campaign, rung)
            else:
                campaign.fees = fees
                tx_hash, signed_at = await self._sign_store_send(campaign)
            if stored is None:
                self._next_nonce = campaign.nonce + 1
        broadcast_at = time.perf_counter()
        self._run_after_sent(campaign)
        self._tell_stages((Stage.SIGNED, signed_at - campaign.decided_at), (Stage.BROADCAST, broadcast_at - signed_at))
        timings = _timings(campaign.threat if campaign.path == "mempool" else None,
                           signed=signed_at, broadcast=broadcast_at)
        for incident_id in campaign.incidents:
            self._store.update_response(incident_id, campaign.action, ResponseStatus.SENT, tx_hash=tx_hash)
            self._store.add_timeline(incident_id, "response-broadcast", {
                "action": campaign.action, "tx_hash": tx_hash, "nonce": campaign.nonce, "path": campaign.path,
                "tip": fees.max_priority_fee_per_gas, "max_fee": fees.max_fee_per_gas,
                "replaces": stored[-1].tx_hash if stored else None,
                "endpoints": "private" if self._private else "public", "pre_signed": rung is not None,
                **campaign.built.note,
                "threat_tx": campaign.threat.tx_hash if campaign.threat else None, **timings})
        self._log.warning("response sent", action=campaign.action, incidents=campaign.incidents, tx_hash=tx_hash,
                          nonce=campaign.nonce, tip=fees.max_priority_fee_per_gas,
                          replaces=stored[-1].tx_hash if stored else None, **timings)
        receipt = await self._watch(campaign)
        await self._settle(campaign, receipt)

    async def _already_done(self, campaign: Campaign) -> bool:
        """Whether the action holds already (nothing to send). A race with a pending threat trusts the latest head's
        reading when it said "not in effect" (taken off the hot path, on_block): one round trip fewer. Should another
        hand have put it in effect since, the pause reverts and is recorded so, the action holding."""
        if campaign.path == "mempool" and campaign.action in self._not_held_at_head:
            return False
        return await self.is_done(campaign.action)

    def _keep_send_connections_warm(self) -> None:
        """One cheap call to each send endpoint per head, in the background, so the pause goes out on an open
        keep-alive connection: a cold one costs the trip a TCP (and, to a remote builder, TLS) handshake. A failure
        here is the send's to report, when there is one; a hung endpoint holds only this call."""
        if self._warming is not None and not self._warming.done():
            return
        self._warming = asyncio.ensure_future(asyncio.gather(
            *(endpoint.head() for endpoint in (*self._private, *self._public)), return_exceptions=True))

    async def _read_held_at_head(self) -> None:
        for name, prepared in self._prepared.items():
            try:
                held = await is_done(self._rpc, prepared)
            except ChainError:
                held = True  # unknown: the trip reads it live
            if held:
                self._not_held_at_head.discard(name)
            else:
                self._not_held_at_head.add(name)

    async def _unmined(self, action: str) -> list[ResponseTx] | None:
        """The transactions stored for the action's latest nonce, when that nonce is not mined yet."""
        stored = self._store.response_txs(self._account.address, action)
        if not stored:
            return None
        nonce = stored[-1].nonce
        if nonce < await self._rpc.nonce(self._account.address, "latest"):
            return None
        return [tx for tx in stored if tx.nonce == nonce]

    async def _send_pre_signed(self, campaign: Campaign, rung: Rung) -> tuple[str, float]:
        """THE one place a response is recorded after it is sent rather than before. A rung was stored with its
        ladder when it was signed, so a crash between this send and this record is recognised on restart by its
        hash at its nonce (`_adopt_sent_rungs`); meanwhile the campaign map (one campaign per action) and the nonce
        (one nonce: at most one pause per sender) keep it single. A deployment that must claim in a shared
        database before sending (replicas) claims here, before the broadcast. Returns (hash, when picked)."""
        assert campaign.nonce is not None
        picked_at = time.perf_counter()
        campaign.hashes.append(rung.tx_hash)
        try:
            await self._broadcast(campaign, rung.raw)
        finally:  # refused everywhere or not, it may be in a pool: its nonce is held until the chain says otherwise
            self._store.record_response_tx(ResponseTx(
                action=campaign.action, incident_id=campaign.incidents[0], sender=self._account.address,
                nonce=campaign.nonce, tx_hash=rung.tx_hash, max_fee_per_gas=rung.fees.max_fee_per_gas,
                max_priority_fee_per_gas=rung.fees.max_priority_fee_per_gas, raw=rung.raw))
        return rung.tx_hash, picked_at

    async def _sign_store_send(self, campaign: Campaign, endpoints: list[Rpc] | None = None) -> tuple[str, float]:
        assert campaign.built is not None and campaign.fees is not None and campaign.nonce is not None
        signed = self._account.sign_transaction({
            "chainId": self._config.chain.chain_id, "to": campaign.built.to, "data": campaign.built.data,
            "value": 0, "gas": campaign.built.gas_limit, "nonce": campaign.nonce, "type": 2,
            "maxPriorityFeePerGas": campaign.fees.max_priority_fee_per_gas,
            "maxFeePerGas": campaign.fees.max_fee_per_gas})
        signed_at = time.perf_counter()
        tx_hash = HexBytes(signed.hash).to_0x_hex()
        self._store.record_response_tx(ResponseTx(
            action=campaign.action, incident_id=campaign.incidents[0], sender=self._account.address,
            nonce=campaign.nonce, tx_hash=tx_hash, max_fee_per_gas=campaign.fees.max_fee_per_gas,
            max_priority_fee_per_gas=campaign.fees.max_priority_fee_per_gas, raw=bytes(signed.raw_transaction)))
        campaign.hashes.append(tx_hash)
        await self._broadcast(campaign, bytes(signed.raw_transaction), endpoints)
        return tx_hash, signed_at

    async def _broadcast(self, campaign: Campaign, raw: bytes, endpoints: list[Rpc] | None = None) -> None:
        """Private endpoints first, public as configured (or only `endpoints`)."""
        if endpoints is not None or not (self._private and self._public):
            await send_everywhere(endpoints or self._private or self._public, raw)
        else:
            try:
                await send_everywhere(self._private, raw)
            except ChainError as exc:
                # Better seen by the attacker than not sent at all: every private endpoint failed, go public now.
                self._log.error("no private endpoint took the response: sending it publicly now",
                                action=campaign.action, error=exc.message)
                await send_everywhere(self._public, raw)
                campaign.public_sent = True
            else:
                # Public at once when asked; and a replacement follows an earlier version into the public pool.
                if self._settings.public_fallback_after == 0 or campaign.public_sent:
                    await send_everywhere(self._public, raw, required=False)
                    campaign.public_sent = True
        campaign.sent_at = campaign.sent_at or time.perf_counter()

    async def _replace(self, campaign: Campaign, fees: Fees) -> None:
        """Same nonce, higher fees (the caller holds the send lock)."""
        campaign.fees = fees
        tx_hash, _ = await self._sign_store_send(campaign)
        for incident_id in campaign.incidents:
            self._store.add_timeline(incident_id, "response-replaced",
                                     {"action": campaign.action, "tx_hash": tx_hash, "nonce": campaign.nonce,
                                      "tip": fees.max_priority_fee_per_gas, "max_fee": fees.max_fee_per_gas})

    async def _watch(self, campaign: Campaign) -> Any:
        """Waits for one of the campaign's transactions to be mined, replacing it when it lingers."""
        deadline = time.monotonic() + self._settings.receipt_timeout
        next_bump = time.monotonic() + self._settings.bump_after
        fallback = self._settings.public_fallback_after
        while time.monotonic() < deadline:
            for tx_hash in reversed(campaign.hashes):
                receipt = await self._rpc.receipt(tx_hash)
                if receipt is not None:
                    return receipt
            if (self._private and self._public and not campaign.public_sent and fallback is not None
                    and time.perf_counter() - campaign.sent_at >= fallback):
                self._log.warning("not mined through the private endpoints: sending publicly too",
                                  action=campaign.action)
                campaign.public_sent = True
                async with self._send_lock:
                    await self._sign_store_send(campaign, endpoints=self._public)
            if time.monotonic() >= next_bump:
                next_bump = time.monotonic() + self._settings.bump_after
                if not await self.is_done(campaign.action):  # done: ours is about to show, or someone else's did
                    async with self._send_lock:
                        fees = bumped(self._settings, campaign.fees) if campaign.fees else None
                        if fees is not None:
                            self._log.warning("response not mined yet: replacing it with higher fees",
                                              action=campaign.action, tip=fees.max_priority_fee_per_gas)
                            await self._replace(campaign, fees)
            await asyncio.sleep(RECEIPT_POLL)
        raise NotInEffect(f"not mined within {self._settings.receipt_timeout}s (still pending at nonce "
                          f"{campaign.nonce}: the next attempt replaces it)")

    async def _settle(self, campaign: Campaign, receipt: Any) -> None:
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        block, gas, index = int(receipt["blockNumber"]), int(receipt["gasUsed"]), int(receipt["transactionIndex"])
        if receipt["status"] != 1:
            for incident_id in campaign.incidents:
                self._store.update_response(incident_id, campaign.action, ResponseStatus.REVERTED,
                                            tx_hash=tx_hash, block_number=block, gas_used=gas)
            if await self.is_done(campaign.action):
                self._log.warning("response reverted, but the action holds (done by someone else)",
                                  action=campaign.action, tx_hash=tx_hash)
                for incident_id in campaign.incidents:
                    self.refresh_status(incident_id, reason="the action holds (ours reverted)")
                self._tell_outcome(campaign, ResponseStatus.REVERTED, {"tx_hash": tx_hash, "block": block,
                                                                       "action_holds": True})
                return
            raise NotInEffect(f"reverted in block {block} ({tx_hash})")
        if campaign.built is not None:  # None: a transaction sent before a restart, found mined afterwards
            self._paths[self._prepared[campaign.action].via].on_mined(campaign.action, campaign.incidents, tx_hash,
                                                                      block, campaign.built)
        self._not_held_at_head.discard(campaign.action)  # in effect now: a trip before the next head reads it live
        pause = Landing(block=block, index=index)
        if campaign.sent_at:
            self._tell_stages((Stage.INCLUDED, time.perf_counter() - campaign.sent_at))
        included = ({"included_ms": round((time.perf_counter() - campaign.threat.seen_at) * 1000, 2)}
                    if campaign.path == "mempool" and campaign.threat else {})
        for incident_id in campaign.incidents:
            orphaned = next((r.orphaned for r in self._store.responses(incident_id)
                             if r.action == campaign.action), 0)
            self._store.update_response(incident_id, campaign.action, ResponseStatus.MINED, tx_hash=tx_hash,
                                        block_number=block, gas_used=gas)
            self._store.add_timeline(incident_id, "response-included", {
                "action": campaign.action, "tx_hash": tx_hash, "block": block, "position": index, **included})
            if campaign.path == "mempool" and campaign.threat is not None:
                await self._record_race(incident_id, pause, campaign.threat)
            await self._record_outcome(incident_id, campaign, pause, orphaned=orphaned > 0)
            self.refresh_status(incident_id, reason=f"{campaign.action} mined in block {block}")
        self._log.warning("response mined: the action is in effect", action=campaign.action, tx_hash=tx_hash,
                          block=block, position=index, gas_used=gas)
        self._tell_outcome(campaign, ResponseStatus.MINED, {"tx_hash": tx_hash, "block": block, "position": index,
                                                            "gas_used": gas})

    async def _record_outcome(self, incident_id: int, campaign: Campaign, pause: Landing, *, orphaned: bool) -> None:
        incident = self._store.incident(incident_id)
        seeds = evidence_transactions(incident.evidence) | {h.lower() for h in campaign.raced}
        for entry in self._store.timeline(incident_id):  # later trips name the harm as the chain has it now
            if entry.kind == "tripped-again":
                seeds |= evidence_transactions(entry.detail)
        try:
            harmful = await harmful_transactions(self._rpc, self._watched, seeds, pause)
        except ChainError as exc:
            self._log.error("could not read where the harm landed: outcome not recorded", error=exc.message,
                            incident_id=incident_id)
            return
        record = classify(pause, harmful, evidence=incident.evidence, path=str(incident.evidence.get("path")),
                          tripped_at=incident.opened_block, orphaned=orphaned)
        self._store.record_outcome(incident_id, campaign.action, record.outcome, record.detail)
        log = self._log.warning if record.detail["landed"] == Outcome.STOPPED_BEFORE_ATTACK else self._log.error
        log("response outcome", incident_id=incident_id, action=campaign.action, outcome=str(record.outcome),
            **record.detail)

    async def _record_race(self, incident_id: int, pause: Landing, threat: Threat) -> None:
        """Whether the pause landed before the pending transaction it raced."""
        attack = await self._rpc.receipt(threat.tx_hash)
        if attack is None:
            first, where = True, "not mined yet"
        else:
            theirs = (int(attack["blockNumber"]), int(attack["transactionIndex"]))
            first, where = (pause.block, pause.index) < theirs, f"block {theirs[0]} position {theirs[1]}"
            where += ", reverted" if attack["status"] != 1 else ", succeeded"
        self._store.add_timeline(incident_id, "race", {"threat_tx": threat.tx_hash, "pause_first": first,
                                                       "pause": f"block {pause.block} position {pause.index}",
                                                       "threat": where})

    def _failed(self, campaign: Campaign, error: str) -> None:
        self.failures += 1
        for incident_id in campaign.incidents:
            self._store.update_response(incident_id, campaign.action, ResponseStatus.FAILED, error=error)
            self._store.record_outcome(incident_id, campaign.action, Outcome.FAILED, {"error": error})
            self.refresh_status(incident_id, reason=error)
        self._log.critical("response FAILED: the protocol is NOT in the safe state; the guardian tries again "
                           "with back-off — act by hand if it persists", action=campaign.action,
                           incidents=campaign.incidents, error=error)
        self._tell_outcome(campaign, ResponseStatus.FAILED, {"error": error})

    def _tell_stages(self, *stages: tuple[Stage, float]) -> None:
        if self._observer is not None:
            for stage, seconds in stages:
                self._observer.stage(stage, seconds)

    def _tell_outcome(self, campaign: Campaign, status: ResponseStatus, detail: Mapping[str, Any]) -> None:
        if self._observer is None:
            return
        try:
            self._observer.response_outcome(list(campaign.incidents), campaign.action, str(status), detail)
        except Exception:  # noqa: BLE001 - telling people must never break the response's own bookkeeping
            self._log.exception("could not report the response outcome", action=campaign.action)

    def refresh_status(self, incident_id: int, reason: str) -> None:
        """SAFE when every response of the incident is in effect, FAILED when one failed, OPEN otherwise.
        (The reconciler re-checks `done_when` on chain every block and corrects this when the chain moves.)"""
        statuses = [r.status for r in self._store.responses(incident_id)]
        if self._store.incident(incident_id).status == IncidentStatus.RESOLVED:
            return
        if statuses and all(s in IN_EFFECT for s in statuses):
            status = IncidentStatus.SAFE
        elif any(s in (ResponseStatus.FAILED, ResponseStatus.REVERTED) for s in statuses):
            status = IncidentStatus.FAILED
        else:
            status = IncidentStatus.OPEN
        self._store.set_status(incident_id, status, reason=reason)


async def send_everywhere(endpoints: list[Rpc], raw: bytes, required: bool = True) -> str:
    """Sends to every endpoint at once; the first acceptance wins. Fails only if every endpoint refused."""
    if len(endpoints) == 1:  # the usual case: awaited in place, not in a task of its own (one loop turn less)
        try:
            return await endpoints[0].send_raw(raw)
        except Exception as exc:  # noqa: BLE001 - as in the gather below: any failure is that endpoint's refusal
            if required:
                raise ChainError(f"every endpoint refused the response: {getattr(exc, 'message', exc)}") from exc
            return ""
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
