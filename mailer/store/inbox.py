"""The inbox worker's state: folder high-water marks, decided requests, review queue, outbox.

`inbound` makes processing idempotent: a request is decided once per Message-ID, and the row
remembers where the message must be moved, so a crash between the commit and the IMAP move
is finished on the next pass instead of being decided again. `outbox` holds confirmations
written in the same transaction as the opt-out that caused them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiosqlite

from mailer.store.db import utcnow


@dataclass(frozen=True)
class MailboxState:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class Unmoved:
    id: int
    uid: int
    destination: str


@dataclass(frozen=True)
class ReviewItem:
    id: int
    message_id: str
    sender: str
    subject: str
    reason: str
    status: str
    created_at: str
    settlement: str


@dataclass(frozen=True)
class NewConfirmation:
    """A confirmation to queue: to the customer's address on file, threaded to the request."""

    customer_id: int
    to_address: str
    to_name: str
    categories: tuple[str, ...]
    request_subject: str
    in_reply_to: str
    refs: tuple[str, ...]


@dataclass(frozen=True)
class OutboxItem(NewConfirmation):
    """A queued confirmation as the sender reads it back."""

    id: int
    attempts: int


async def mailbox_state(conn: aiosqlite.Connection, folder: str) -> MailboxState | None:
    rows = list(await conn.execute_fetchall(
        "SELECT uidvalidity, last_uid FROM mailbox_state WHERE folder = ?", (folder,)))
    return MailboxState(rows[0]["uidvalidity"], rows[0]["last_uid"]) if rows else None


async def set_mailbox_state(
    conn: aiosqlite.Connection, folder: str, uidvalidity: int, last_uid: int
) -> None:
    await conn.execute(
        "INSERT INTO mailbox_state (folder, uidvalidity, last_uid) VALUES (?, ?, ?) "
        "ON CONFLICT (folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
        "last_uid = excluded.last_uid",
        (folder, uidvalidity, last_uid),
    )


async def existing_keys(conn: aiosqlite.Connection, keys: Sequence[str]) -> set[str]:
    """Which of these message keys have been decided already."""
    found: set[str] = set()
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await conn.execute_fetchall(
            f"SELECT message_key FROM inbound WHERE message_key IN ({','.join('?' * len(chunk))})",
            tuple(chunk),
        )
        found.update(r["message_key"] for r in rows)
    return found


@dataclass(frozen=True)
class InboundRow:
    message_key: str
    message_id: str
    uid: int
    outcome: str
    destination: str
    detail: str


async def record_inbound_many(
    conn: aiosqlite.Connection, folder: str, uidvalidity: int, rows: Sequence[InboundRow]
) -> None:
    now = utcnow()
    await conn.executemany(
        "INSERT INTO inbound (message_key, message_id, folder, uidvalidity, uid, outcome, "
        "destination, detail, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r.message_key, r.message_id, folder, uidvalidity, r.uid, r.outcome, r.destination,
          r.detail, now) for r in rows],
    )


async def unmoved(conn: aiosqlite.Connection, folder: str, uidvalidity: int) -> list[Unmoved]:
    async with conn.execute(
        "SELECT id, uid, destination FROM inbound WHERE folder = ? AND moved = 0 "
        "AND uidvalidity = ? ORDER BY uid",
        (folder, uidvalidity),
    ) as cur:
        return [Unmoved(r["id"], r["uid"], r["destination"]) for r in await cur.fetchall()]


async def forget_stale_moves(conn: aiosqlite.Connection, folder: str, uidvalidity: int) -> None:
    """Under a new UIDVALIDITY old UIDs mean nothing; those messages are found again by
    Message-ID, recognised as duplicates and moved then."""
    await conn.execute(
        "UPDATE inbound SET moved = 1 WHERE folder = ? AND moved = 0 AND uidvalidity != ?",
        (folder, uidvalidity),
    )


async def mark_moved_uids(
    conn: aiosqlite.Connection, folder: str, uidvalidity: int, uids: Sequence[int]
) -> None:
    await conn.executemany(
        "UPDATE inbound SET moved = 1 WHERE folder = ? AND uidvalidity = ? AND uid = ?",
        [(folder, uidvalidity, uid) for uid in uids],
    )


# --- review queue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewReview:
    message_key: str  # the inbound row it belongs to
    message_id: str
    sender: str
    subject: str
    reason: str


async def add_reviews(conn: aiosqlite.Connection, items: Sequence[NewReview]) -> None:
    now = utcnow()
    await conn.executemany(
        "INSERT INTO review_items (inbound_id, message_id, sender, subject, reason, created_at) "
        "VALUES ((SELECT id FROM inbound WHERE message_key = ?), ?, ?, ?, ?, ?)",
        [(i.message_key, i.message_id, i.sender, i.subject, i.reason, now) for i in items],
    )


def _review(row: aiosqlite.Row) -> ReviewItem:
    return ReviewItem(
        id=row["id"], message_id=row["message_id"], sender=row["sender"],
        subject=row["subject"], reason=row["reason"], status=row["status"],
        created_at=row["created_at"], settlement=row["settlement"],
    )


async def review_items(conn: aiosqlite.Connection, *, include_settled: bool) -> list[ReviewItem]:
    where = "" if include_settled else "WHERE status = 'open'"
    async with conn.execute(f"SELECT * FROM review_items {where} ORDER BY id") as cur:
        return [_review(r) for r in await cur.fetchall()]


async def review_item(conn: aiosqlite.Connection, item_id: int) -> ReviewItem | None:
    async with conn.execute("SELECT * FROM review_items WHERE id = ?", (item_id,)) as cur:
        row = await cur.fetchone()
    return _review(row) if row else None


async def settle_review(
    conn: aiosqlite.Connection, item_id: int, *, status: str, settlement: str
) -> bool:
    """Close an open item; False when it was not open (settled already, or racing another)."""
    cursor = await conn.execute(
        "UPDATE review_items SET status = ?, settlement = ?, settled_at = ? "
        "WHERE id = ? AND status = 'open'",
        (status, settlement, utcnow(), item_id),
    )
    return cursor.rowcount == 1


# --- outbox ---------------------------------------------------------------------------------


async def enqueue_confirmations(
    conn: aiosqlite.Connection, items: Sequence[NewConfirmation], *, interval_h: float
) -> int:
    """Queue confirmations, at most one per customer within `interval_h` hours (counting those
    queued or sent before, and earlier items of this same call). A suppressed one is still
    recorded, for the audit trail. Returns how many were queued to send."""
    if not items:
        return 0
    now = datetime.now(UTC)
    since = (now - timedelta(hours=interval_h)).isoformat(timespec="microseconds")
    ids = sorted({i.customer_id for i in items})
    recent: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await conn.execute_fetchall(
            "SELECT DISTINCT customer_id FROM outbox WHERE status IN ('pending', 'sent') "
            f"AND created_at > ? AND customer_id IN ({','.join('?' * len(chunk))})",
            (since, *chunk),
        )
        recent.update(r["customer_id"] for r in rows)
    stamp = now.isoformat(timespec="microseconds")
    rows_out = []
    queued = 0
    for item in items:
        suppressed = item.customer_id in recent
        recent.add(item.customer_id)
        queued += not suppressed
        rows_out.append((
            item.customer_id, item.to_address, item.to_name, ",".join(item.categories),
            item.request_subject, item.in_reply_to, " ".join(item.refs),
            "suppressed" if suppressed else "pending", stamp, stamp,
        ))
    await conn.executemany(
        "INSERT INTO outbox (customer_id, to_address, to_name, categories, request_subject, "
        "in_reply_to, refs, status, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows_out,
    )
    return queued


async def due_confirmations(conn: aiosqlite.Connection, limit: int = 50) -> list[OutboxItem]:
    async with conn.execute(
        "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
        "ORDER BY id LIMIT ?",
        (utcnow(), limit),
    ) as cur:
        rows = await cur.fetchall()
    return [
        OutboxItem(
            id=r["id"], customer_id=r["customer_id"], to_address=r["to_address"],
            to_name=r["to_name"], categories=tuple(c for c in r["categories"].split(",") if c),
            request_subject=r["request_subject"], in_reply_to=r["in_reply_to"],
            refs=tuple(r["refs"].split()), attempts=r["attempts"],
        )
        for r in rows
    ]


async def mark_confirmation_sent(conn: aiosqlite.Connection, item_id: int) -> None:
    await conn.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id = ?",
        (utcnow(), item_id),
    )


async def mark_confirmation_failed(
    conn: aiosqlite.Connection, item_id: int, *, error: str, retry_at: datetime | None
) -> None:
    """Record a failed attempt: retry at `retry_at`, or give up (status failed) when None."""
    if retry_at is None:
        await conn.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ? "
            "WHERE id = ?",
            (error, item_id),
        )
    else:
        await conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE id = ?",
            (error, retry_at.isoformat(timespec="microseconds"), item_id),
        )
