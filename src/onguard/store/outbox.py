"""The notification outbox: every notice the daemon publishes, once per notice id however many replicas record it,
and per channel whether it is still to be delivered, was delivered, or failed (the leader delivers, in order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from onguard.store.database import Database
from onguard.store.records import now


class DeliveryStatus(StrEnum):
    PENDING = "pending"      # recorded, not delivered yet (or in flight: a leader that died may have sent it)
    DELIVERED = "delivered"  # the channel accepted it
    FAILED = "failed"        # every attempt failed, or the receiver refused it (audited as notification-failed)


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """One notice still to be delivered to one channel; `seq` orders the notices as they were first recorded."""

    seq: int
    notice_id: str
    channel: str
    document: str   # the notice's JSON document (onguard.ops.notice.notice_document)


@dataclass(frozen=True, slots=True)
class Delivery:
    notice_id: str
    channel: str
    status: DeliveryStatus
    attempts: int
    delivered_by: str | None
    reason: str | None
    updated_at: str


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, *, notice_id: str, chain_id: int, kind: str, incident_id: int | None, document: str,
            channels: Sequence[str], by: str) -> bool:
        """Records a notice for `channels`, in one transaction. The same notice id recorded again (another replica
        told of the same event) adds nothing but the channels it lacks. True when the notice was new."""
        at = now()
        with self._db.transaction():
            new = self._db.execute(
                "INSERT INTO notices (notice_id, chain_id, kind, incident_id, document, recorded_by, recorded_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (notice_id) DO NOTHING",
                (notice_id, chain_id, kind, incident_id, document, by, at)) == 1
            for channel in channels:
                self._db.execute(
                    "INSERT INTO notice_deliveries (notice_id, channel, status, attempts, updated_at) "
                    "VALUES (?,?,?,0,?) ON CONFLICT (notice_id, channel) DO NOTHING",
                    (notice_id, channel, DeliveryStatus.PENDING, at))
        return new

    def pending(self, chain_id: int, channels: Sequence[str], limit: int) -> list[PendingDelivery]:
        """The oldest `limit` deliveries still pending on `channels` for this chain, in the order recorded."""
        if not channels:
            return []
        marks = ",".join("?" * len(channels))
        rows = self._db.fetch_all(
            "SELECT n.id, n.notice_id, d.channel, n.document FROM notice_deliveries d "
            "JOIN notices n ON n.notice_id = d.notice_id "
            f"WHERE d.status = ? AND n.chain_id = ? AND d.channel IN ({marks}) ORDER BY n.id, d.channel LIMIT ?",
            (DeliveryStatus.PENDING, chain_id, *channels, limit))
        return [PendingDelivery(seq=int(r[0]), notice_id=r[1], channel=r[2], document=r[3]) for r in rows]

    def finish(self, notice_id: str, channel: str, status: DeliveryStatus, *, attempts: int, by: str,
               reason: str | None = None) -> bool:
        """Marks a pending delivery delivered or failed. False when it was not pending any more (another leader
        finished it first)."""
        assert status != DeliveryStatus.PENDING
        return self._db.execute(
            "UPDATE notice_deliveries SET status=?, attempts=?, delivered_by=?, reason=?, updated_at=? "
            "WHERE notice_id=? AND channel=? AND status=?",
            (status, attempts, by, reason, now(), notice_id, channel, DeliveryStatus.PENDING)) == 1

    def deliveries(self, notice_id: str) -> list[Delivery]:
        rows = self._db.fetch_all("SELECT * FROM notice_deliveries WHERE notice_id=? ORDER BY channel", (notice_id,))
        return [Delivery(notice_id=r["notice_id"], channel=r["channel"], status=DeliveryStatus(r["status"]),
                         attempts=int(r["attempts"]), delivered_by=r["delivered_by"], reason=r["reason"],
                         updated_at=r["updated_at"]) for r in rows]

    def count_pending(self, chain_id: int) -> int:
        return int(self._db.scalar(
            "SELECT COUNT(*) FROM notice_deliveries d JOIN notices n ON n.notice_id = d.notice_id "
            "WHERE d.status = ? AND n.chain_id = ?", (DeliveryStatus.PENDING, chain_id)))
