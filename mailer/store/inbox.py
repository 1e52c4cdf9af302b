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
class OutboxItem:
    id: int
    customer_id: int
    to_address: str
    to_name: str
    categories: tuple[str, ...]
    request_subject: str
    in_reply_to: str
    refs: tuple[str, ...]
    attempts: int


async def mailbox_state(conn: aiosqlite.Connection, folder: str) -> MailboxState | None:
    rows = await conn.execute_fetchall(
        "SELECT uidvalidity, last_uid FROM mailbox_state WHERE folder = ?", (folder,))
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


async def inbound_exists(conn: aiosqlite.Connection, message_key: str) -> bool:
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM inbound WHERE message_key = ?", (message_key,))
    return bool(rows)


async def record_inbound(
    conn: aiosqlite.Connection,
    *,
    message_key: str,
    message_id: str,
    folder: str,
    uidvalidity: int,
    uid: int,
    outcome: str,
    destination: str,
    detail: str,
) -> int:
    cursor = await conn.execute(
        "INSERT INTO inbound (message_key, message_id, folder, uidvalidity, uid, outcome, "
        "destination, detail, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message_key, message_id, folder, uidvalidity, uid, outcome, destination, detail,
         utcnow()),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


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


async def add_review(
    conn: aiosqlite.Connection,
    *,
    inbound_id: int | None,
    message_id: str,
    sender: str,
    subject: str,
    reason: str,
) -> int:
    cursor = await conn.execute(
        "INSERT INTO review_items (inbound_id, message_id, sender, subject, reason, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (inbound_id, message_id, sender, subject, reason, utcnow()),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


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


async def enqueue_confirmation(
    conn: aiosqlite.Connection,
    *,
    customer_id: int,
    to_address: str,
    to_name: str,
    categories: Sequence[str],
    request_subject: str,
    in_reply_to: str,
    refs: Sequence[str],
    interval_h: float,
) -> bool:
    """Queue a confirmation, unless this customer had one within `interval_h` hours.

    Returns True when queued; a suppressed one is still recorded, for the audit trail.
    """
    now = datetime.now(UTC)
    since = (now - timedelta(hours=interval_h)).isoformat(timespec="microseconds")
    recent = bool(await conn.execute_fetchall(
        "SELECT 1 FROM outbox WHERE customer_id = ? AND status IN ('pending', 'sent') "
        "AND created_at > ? LIMIT 1",
        (customer_id, since),
    ))
    stamp = now.isoformat(timespec="microseconds")
    await conn.execute(
        "INSERT INTO outbox (customer_id, to_address, to_name, categories, request_subject, "
        "in_reply_to, refs, status, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (customer_id, to_address, to_name, ",".join(categories), request_subject, in_reply_to,
         " ".join(refs), "suppressed" if recent else "pending", stamp, stamp),
    )
    return not recent


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


async def outbox_counts(conn: aiosqlite.Connection) -> dict[str, int]:
    async with conn.execute("SELECT status, count(*) AS n FROM outbox GROUP BY status") as cur:
        return {r["status"]: r["n"] for r in await cur.fetchall()}
