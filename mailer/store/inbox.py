"""The inbox worker's state: folder high-water marks, decided requests, review queue.

`inbound` makes processing idempotent: a request is decided once per Message-ID, and the row
remembers where the message must be moved, so a crash between the commit and the IMAP move
is finished on the next pass instead of being decided again. The confirmation outbox is
`store.outbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailer.store.db import utcnow
from mailer.store.edge import translated
from mailer.store.engine import Connection, StoredRow


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
    marked: str = ""  # '' or 'opt back in' (see migration 11)


@translated("inbox: mailbox state")
async def mailbox_state(conn: Connection, folder: str) -> MailboxState | None:
    rows = list(await conn.execute_fetchall(
        "SELECT uidvalidity, last_uid FROM mailbox_state WHERE folder = ?", (folder,)))
    return MailboxState(rows[0]["uidvalidity"], rows[0]["last_uid"]) if rows else None


@translated("inbox: set mailbox state")
async def set_mailbox_state(
    conn: Connection, folder: str, uidvalidity: int, last_uid: int
) -> None:
    await conn.execute(
        "INSERT INTO mailbox_state (folder, uidvalidity, last_uid) VALUES (?, ?, ?) "
        "ON CONFLICT (folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
        "last_uid = excluded.last_uid",
        (folder, uidvalidity, last_uid),
    )


@translated("inbox: existing keys")
async def existing_keys(conn: Connection, keys: Sequence[str]) -> set[str]:
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


@translated("inbox: record inbound many")
async def record_inbound_many(
    conn: Connection, folder: str, uidvalidity: int, rows: Sequence[InboundRow]
) -> None:
    # A row whose key is there already is left as it is: two passes (cron beside the daemon)
    # that both find one message already decided both record it as the same duplicate.
    now = utcnow()
    await conn.executemany(
        "INSERT INTO inbound (message_key, message_id, folder, uidvalidity, uid, outcome, "
        "destination, detail, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (message_key) DO NOTHING",
        [(r.message_key, r.message_id, folder, uidvalidity, r.uid, r.outcome, r.destination,
          r.detail, now) for r in rows],
    )


@translated("inbox: unmoved")
async def unmoved(conn: Connection, folder: str, uidvalidity: int) -> list[Unmoved]:
    async with conn.execute(
        "SELECT id, uid, destination FROM inbound WHERE folder = ? AND moved = 0 "
        "AND uidvalidity = ? ORDER BY uid",
        (folder, uidvalidity),
    ) as cur:
        return [Unmoved(r["id"], r["uid"], r["destination"]) for r in await cur.fetchall()]


@translated("inbox: forget stale moves")
async def forget_stale_moves(conn: Connection, folder: str, uidvalidity: int) -> None:
    """Under a new UIDVALIDITY old UIDs mean nothing; those messages are found again by
    Message-ID, recognised as duplicates and moved then."""
    await conn.execute(
        "UPDATE inbound SET moved = 1 WHERE folder = ? AND moved = 0 AND uidvalidity != ?",
        (folder, uidvalidity),
    )


@translated("inbox: mark moved uids")
async def mark_moved_uids(
    conn: Connection, folder: str, uidvalidity: int, uids: Sequence[int]
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
    marked: str = ""


@translated("inbox: add reviews")
async def add_reviews(conn: Connection, items: Sequence[NewReview]) -> None:
    now = utcnow()
    await conn.executemany(
        "INSERT INTO review_items (inbound_id, message_id, sender, subject, reason, marked, "
        "created_at) VALUES ((SELECT id FROM inbound WHERE message_key = ?), ?, ?, ?, ?, ?, ?)",
        [(i.message_key, i.message_id, i.sender, i.subject, i.reason, i.marked, now)
         for i in items],
    )


def _review(row: StoredRow) -> ReviewItem:
    return ReviewItem(
        id=row["id"], message_id=row["message_id"], sender=row["sender"],
        subject=row["subject"], reason=row["reason"], status=row["status"],
        created_at=row["created_at"], settlement=row["settlement"], marked=row["marked"],
    )


@translated("inbox: review items")
async def review_items(conn: Connection, *, include_settled: bool) -> list[ReviewItem]:
    where = "" if include_settled else "WHERE status = 'open'"
    async with conn.execute(f"SELECT * FROM review_items {where} ORDER BY id") as cur:
        return [_review(r) for r in await cur.fetchall()]


@translated("inbox: review item")
async def review_item(conn: Connection, item_id: int) -> ReviewItem | None:
    async with conn.execute("SELECT * FROM review_items WHERE id = ?", (item_id,)) as cur:
        row = await cur.fetchone()
    return _review(row) if row else None


@translated("inbox: settle review")
async def settle_review(
    conn: Connection, item_id: int, *, status: str, settlement: str
) -> bool:
    """Close an open item; False when it was not open (settled already, or racing another)."""
    cursor = await conn.execute(
        "UPDATE review_items SET status = ?, settlement = ?, settled_at = ? "
        "WHERE id = ? AND status = 'open'",
        (status, settlement, utcnow(), item_id),
    )
    return cursor.rowcount == 1
