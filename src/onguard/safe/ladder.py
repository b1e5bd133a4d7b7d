"""The pre-signed ladder: for each emergency action, which of the Safe's next nonces hold a pre-signed transaction
with threshold signatures, and what executing some other Safe transaction at a given nonce leaves of it.

Any Safe transaction spends one nonce and voids every signature made for it: an action pre-signed for the nonces
N..N+K-1 survives K-1 routine transactions, and the K-th leaves the daemon unable to act."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from onguard.store.safetxs import SafeTxRecord, TxStatus
from onguard.safe.tx import OwnerSignature, SignatureKind

# (owner, safe tx hash) -> approved on chain. Offline nobody can say: None then, and approved hashes are counted.
ApprovedCheck = Callable[[str, bytes], bool]


@dataclass(frozen=True, slots=True)
class Ladder:
    """One action's rungs seen from the Safe's live nonce."""

    action: str
    live_nonce: int
    threshold: int
    rungs: frozenset[int]            # nonces >= live_nonce whose pre-signed transaction reaches the threshold
    partial: frozenset[int]          # nonces >= live_nonce signed by some owners, below the threshold
    spent: frozenset[int]            # nonces below live_nonce that had been pre-signed: void

    @property
    def protected(self) -> bool:
        """The daemon can execute the action now."""
        return self.live_nonce in self.rungs

    @property
    def depth(self) -> int:
        """How many consecutive nonces from the live one are covered: depth - 1 routine transactions can execute
        and the action still can."""
        return self.remaining_after(self.live_nonce - 1)

    @property
    def top(self) -> int | None:
        return self.live_nonce + self.depth - 1 if self.depth else None

    def remaining_after(self, nonce: int) -> int:
        """Consecutive rungs left once the transaction at `nonce` has executed (the Safe is then at nonce + 1)."""
        count = 0
        while nonce + 1 + count in self.rungs:
            count += 1
        return count

    def effect_of_executing(self, nonce: int) -> str | None:
        """What executing another Safe transaction at `nonce` does to this action, in words; None when nothing
        (the action was not protected anyway and this nonce was never pre-signed)."""
        left = self.remaining_after(nonce)
        voided = nonce in self.rungs or nonce in self.partial
        if not self.protected and not voided:
            return None
        head = (f"executing it voids the pre-signed {self.action} for nonce {nonce}" if voided
                else f"executing it leaves {self.action}")
        if not self.protected:
            return f"{head} (not executable now anyway: no threshold pre-signature at nonce {self.live_nonce})"
        if left == 0:
            return (f"{head}; AFTER IT NO PRE-SIGNED {self.action.upper()} REMAINS for nonce {nonce + 1}: the daemon "
                    f"could not execute it until the owners pre-sign again (`onguard presign {self.action} "
                    "--depth K`)")
        if left == 1:
            return (f"{head}; after it only nonce {nonce + 1} stays pre-signed: the next Safe transaction would "
                    f"exhaust the ladder (extend it: `onguard presign {self.action} --depth K`)")
        return f"{head}; pre-signed nonces {nonce + 1}..{nonce + left} remain ({left})"


def count_valid(signatures: Iterable[OwnerSignature], owners: Iterable[str], safe_tx_hash: bytes,
                approved: ApprovedCheck | None) -> int:
    """Signatures from current owners; an approveHash counts only if approved on chain (when that can be read)."""
    current = {o.lower() for o in owners}
    return sum(1 for s in signatures if s.owner.lower() in current and (
        s.kind != SignatureKind.APPROVED or approved is None or approved(s.owner, safe_tx_hash)))


def build_ladders(actions: Iterable[str], records: Iterable[SafeTxRecord], live_nonce: int, threshold: int,
                  owners: Iterable[str], approved: ApprovedCheck | None = None) -> dict[str, Ladder]:
    """Each action's ladder from its pre-signed records (SafeTxRecord, any status but rejected)."""
    owners = tuple(owners)
    found: dict[str, tuple[set[int], set[int], set[int]]] = {name: (set(), set(), set()) for name in actions}
    for record in records:
        if record.action not in found or record.status in (TxStatus.REJECTED, TxStatus.EXECUTED):
            continue
        rungs, partial, spent = found[record.action]
        nonce = record.tx.nonce
        if nonce < live_nonce:
            spent.add(nonce)
        elif count_valid(record.signatures, owners, record.tx.safe_tx_hash, approved) >= threshold:
            rungs.add(nonce)
        elif record.signatures:
            partial.add(nonce)
    return {name: Ladder(action=name, live_nonce=live_nonce, threshold=threshold, rungs=frozenset(r),
                         partial=frozenset(p - r), spent=frozenset(s))
            for name, (r, p, s) in found.items()}
