"""What one `onguard proposals …` command works with: the config, the database, the chain when there is a node,
and otherwise the Safe's state as a file recorded it (said as such, never passed off as the chain's); where a new
proposal goes and when it would spend an emergency action's last pre-signed nonce."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from onguard.cli.signing import connect, exhausts, ladder_effects, ladders
from onguard.config import Config, load_config
from onguard.errors import ChainError, InputError, OnguardError
from onguard.store.audit import AuditKind, AuditLog
from onguard.store.safetxs import SafeTxRecord, SafeTxStore, TxKind, TxStatus
from onguard.incidents.store import IncidentStore
from onguard.safe.chain import SafeOnChain, SafeState
from onguard.safe.interop import SafeSnapshot
from onguard.safe.ladder import Ladder
from onguard.safe.tx import SafeTxData


@dataclass(frozen=True, slots=True)
class SafeView:
    """The Safe's state a command goes by, and whether it is the chain's now."""

    state: SafeState
    live: bool
    source: str       # "the chain", or which file recorded it and when

    @property
    def offline_note(self) -> str:
        return (f"  offline      no node: the Safe's owners, threshold and nonce are {self.source}, NOT read from "
                "the chain; not simulated; approved hashes not checked")


class ProposalSession:
    def __init__(self, args: argparse.Namespace) -> None:
        self.config: Config = load_config(args.config)
        self.store = IncidentStore(self.config.state)
        self.txs = SafeTxStore(self.store.database)
        self.audit = AuditLog(self.store.database)
        self._safe: SafeOnChain | None = None
        self._unreachable: ChainError | None = None

    @property
    def safe(self) -> SafeOnChain:
        """The chain (a ChainError when there is no node: asked once per command)."""
        if self._unreachable is not None:
            raise self._unreachable
        if self._safe is None:
            try:
                self._safe = connect(self.config)
            except ChainError as exc:
                self._unreachable = exc
                raise
        return self._safe

    @property
    def safe_if_reachable(self) -> SafeOnChain | None:
        try:
            return self.safe
        except ChainError:
            return None

    def view(self, record: SafeTxRecord | None = None, snapshot: tuple[SafeSnapshot, str] | None = None) -> SafeView:
        """The chain's state of the Safe; with no node, the one a file carried (given, or recorded with `record`)."""
        try:
            return SafeView(self.safe.retrieve_state(), True, "the chain")
        except ChainError as exc:
            recorded = snapshot or self._recorded(record)
            if recorded is None:
                raise ChainError(f"{exc.message}; and no state of the Safe was recorded for this proposal to work "
                                 "offline", hint="on a machine with a node, `onguard proposals export ID` writes a "
                                                 "file carrying the Safe's state; import it here") from None
            state, source = recorded
            if state.chain_id != self.config.chain.chain_id:
                raise InputError(f"the recorded state is for chain {state.chain_id}, the config for chain "
                                 f"{self.config.chain.chain_id}", field="chainId")
            return SafeView(SafeState(address=self.config.safe.address, nonce=state.nonce,
                                      threshold=state.threshold, owners=state.owners, version=state.version),
                            False, source)

    def _recorded(self, record: SafeTxRecord | None) -> tuple[SafeSnapshot, str] | None:
        found = self.txs.snapshot(record) if record is not None else None
        if found is None:
            return None
        state, source, at = found
        return state, f"as {source} recorded them ({at})"

    def proposal(self, proposal_id: int) -> SafeTxRecord:
        try:
            record = self.txs.get(proposal_id)
        except LookupError:
            record = None
        if record is None or record.kind != TxKind.PROPOSAL:
            raise InputError(f"no proposal with id {proposal_id}", hint="`onguard proposals list` shows the ids")
        return record

    def place(self, state: SafeState, asked: int | None) -> int:
        """The nonce of a new proposal: the one asked for (never a spent one), else the next after the pending
        proposals still ahead of the Safe, as Safe{Wallet} queues them."""
        if asked is not None:
            if asked < state.nonce:
                raise InputError(f"nonce {asked} is spent (the Safe is at {state.nonce}): a proposal for it could "
                                 "never execute", field="--nonce",
                                 hint=f"leave --nonce out, or give {state.nonce} or later")
            return asked
        queued = [r.tx.nonce for r in self.txs.list(TxKind.PROPOSAL, TxStatus.PENDING) if r.tx.nonce >= state.nonce]
        return max(queued) + 1 if queued else state.nonce

    def close(self) -> None:
        self.store.close()


def session(handler: Callable[[argparse.Namespace, ProposalSession], int | None]) -> Callable[[argparse.Namespace],
                                                                                              int]:
    def run(args: argparse.Namespace) -> int:
        opened = ProposalSession(args)
        try:
            return int(handler(args, opened) or 0)
        finally:
            opened.close()
    return run


def create_proposal(s: ProposalSession, build: Callable[[int], SafeTxData], *, purpose: str, by: str,
                    incident: int | None, asked: int | None, force: bool, source: str | None = None) -> SafeTxRecord:
    """Places, guards (the pre-signed ladder), records and audits a new proposal built for its nonce."""
    state = s.safe.retrieve_state()
    nonce = s.place(state, asked)
    now = ladders(s.config, s.txs, state, s.safe)
    refuse_exhausting(now, nonce, force, "create it")
    tx = build(nonce)
    record = s.txs.add(TxKind.PROPOSAL, tx, purpose=purpose, proposer=by, incident_id=incident)
    s.audit.append(AuditKind.PROPOSAL, by, {"proposal": record.id, "purpose": purpose, "incident_id": incident,
                                           "safe_tx_hash": record.safe_tx_hash, "to": tx.to, "data": tx.data,
                                           "operation": tx.operation, "nonce": nonce,
                                           **({"imported_from": source} if source else {})})
    print(f"proposal {record.id} created: Safe tx {record.safe_tx_hash} at nonce {nonce}"
          + (f" (the Safe is at {state.nonce}; proposals queued before it)" if nonce > state.nonce else ""))
    for line in ladder_effects(now, nonce):
        print(line)
    return record


def refuse_exhausting(now: dict[str, Ladder], nonce: int, force: bool, doing: str) -> None:
    """A routine transaction that would leave a protected emergency action with no pre-signed transaction for the
    nonce after it is refused unless forced: the protocol would silently lose its pause (exit 1: a human
    decides)."""
    emptied = exhausts(now, nonce)
    if emptied and not force:
        raise OnguardError(
            f"executing a Safe transaction at nonce {nonce} spends the last pre-signed nonce of "
            f"{', '.join(emptied)}: afterwards the daemon could not execute it",
            hint=f"extend the ladder first (`onguard presign {emptied[0]} --depth K` by the owners), or {doing} "
                 "anyway with --force")
