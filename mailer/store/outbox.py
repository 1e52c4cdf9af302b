"""The confirmation outbox's SQL: queuing, claiming, and settling confirmations.

A row moves `pending -> sent | failed` (or is written `suppressed`, kept for the audit trail
when the customer had one within the window). A sender claims a pending row before sending it:
the claim (owner host, owner pid, expiry) is written in the same transaction that picks the row,
so two processes never hold the same row. Settling a row clears its claim. A claim whose owner
died before settling expires and the row is picked again; `release_claims` frees the claims of
owners the caller knows to be dead at once. Whether an owner is alive is not the store's
business: the caller decides and names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.store.edge import translated
from mailer.store.engine import Connection
from mailer.store.notify import OUTBOX_CHANNEL, notify


def _stamp(when: datetime) -> str:
    # The store's timestamp format (see db.utcnow): ISO 8601 UTC with microseconds.
    return when.isoformat(timespec="microseconds")


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
    message_id: str = ""  # written at the first claim and kept: a resend reuses it


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim: a process on a host."""

    host: str
    pid: int


@translated("outbox: enqueue confirmations")
async def enqueue_confirmations(
    conn: Connection,
    items: Sequence[NewConfirmation],
    *,
    interval_h: float,
    now: datetime,
) -> int:
    """Queue confirmations, at most one per customer within `interval_h` hours before `now`
    (counting those queued or sent before, and earlier items of this same call). A suppressed
    one is still recorded, for the audit trail. Returns how many were queued to send."""
    if not items:
        return 0
    since = _stamp(now - timedelta(hours=interval_h))
    ids = sorted({i.customer_id for i in items})
    recent: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        condition, parameters = conn.one_of("customer_id", chunk)
        rows = await conn.execute_fetchall(
            "SELECT DISTINCT customer_id FROM outbox WHERE status IN ('pending', 'sent') "
            f"AND created_at > ? AND {condition}", (since, *parameters))
        recent.update(r["customer_id"] for r in rows)
    stamp = _stamp(now)
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
    if queued:
        # Delivered when the caller's transaction commits: the outbox of every host looks now.
        await notify(conn, OUTBOX_CHANNEL)
    return queued


@translated("outbox: claim owners")
async def claim_owners(conn: Connection, *, now_s: float) -> list[ClaimOwner]:
    """The owners of live (unexpired) claims on pending rows."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT claim_host, claim_pid FROM outbox WHERE status = 'pending' "
        "AND claim_host IS NOT NULL AND claim_expires_at > ?",
        (now_s,),
    )
    return [ClaimOwner(r["claim_host"], r["claim_pid"]) for r in rows]


@translated("outbox: silent claim owners")
async def silent_owners(conn: Connection, *, now_s: float, silent_since: str
                        ) -> list[ClaimOwner]:
    """Owners of live claims that are daemons (they have a heartbeat row) which stopped, or
    have not beaten since `silent_since` (ISO 8601): on any host, such a daemon is gone, so
    its claims need not wait for their expiry. A process without heartbeats (a command run
    by hand) is never named here: its claims wait for their expiry."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT o.claim_host, o.claim_pid FROM outbox o JOIN daemon_heartbeat h "
        "ON h.host = o.claim_host AND h.pid = o.claim_pid WHERE o.status = 'pending' "
        "AND o.claim_host IS NOT NULL AND o.claim_expires_at > ? "
        "AND (h.stopped_at IS NOT NULL OR h.beat_at < ?)", (now_s, silent_since))
    return [ClaimOwner(r[0], int(r[1])) for r in rows]


@translated("outbox: release claims")
async def release_claims(conn: Connection, owners: Iterable[ClaimOwner]) -> int:
    """Free every claim these (dead) owners hold, so their rows can be picked at once."""
    released = 0
    for owner in owners:
        cursor = await conn.execute(
            "UPDATE outbox SET claim_host = NULL, claim_pid = NULL, claim_expires_at = NULL "
            "WHERE status = 'pending' AND claim_host = ? AND claim_pid = ?",
            (owner.host, owner.pid),
        )
        released += cursor.rowcount
    return released


# PostgreSQL: lock the picked row; one another transaction holds is passed over, not waited on.
_SKIP_LOCKED = {"sqlite": "", "postgresql": " FOR UPDATE SKIP LOCKED"}


@translated("outbox: claim next")
async def claim_next(
    conn: Connection,
    owner: ClaimOwner,
    *,
    now: datetime,
    now_s: float,
    ttl_s: float,
    message_id: str = "",
) -> OutboxItem | None:
    """Claim the oldest due, unclaimed (or expired-claim) pending row for `owner` until
    `now_s + ttl_s`; None when there is none. Run inside a transaction, so the pick and the
    claim are one step no other process can come between: on SQLite BEGIN IMMEDIATE holds the
    one write lock; on PostgreSQL the row is locked as it is picked and rows another host is
    claiming at that moment are skipped, so several hosts claim side by side (a non-exclusive
    transaction is enough). `message_id` is recorded with the claim unless the row has one
    already (a second attempt sends the same message), so a report quoting it is tied to the
    row before the message can leave."""
    async with conn.execute(
        "SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
        "AND (claim_host IS NULL OR claim_expires_at <= ?) ORDER BY id LIMIT 1"
        + _SKIP_LOCKED[conn.engine],
        (_stamp(now), now_s),
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    kept = row["message_id"] or message_id
    await conn.execute(
        "UPDATE outbox SET claim_host = ?, claim_pid = ?, claim_expires_at = ?, "
        "message_id = ? WHERE id = ?",
        (owner.host, owner.pid, now_s + ttl_s, kept or None, row["id"]),
    )
    return OutboxItem(
        id=row["id"], customer_id=row["customer_id"], to_address=row["to_address"],
        to_name=row["to_name"], categories=tuple(c for c in row["categories"].split(",") if c),
        request_subject=row["request_subject"], in_reply_to=row["in_reply_to"],
        refs=tuple(row["refs"].split()), attempts=row["attempts"], message_id=kept or "",
    )


_UNCLAIM = "claim_host = NULL, claim_pid = NULL, claim_expires_at = NULL"


@translated("outbox: mark sent")
async def mark_sent(conn: Connection, item_id: int, *, now: datetime) -> None:
    await conn.execute(
        f"UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, {_UNCLAIM} "
        "WHERE id = ?",
        (_stamp(now), item_id),
    )


@translated("outbox: mark failed")
async def mark_failed(
    conn: Connection, item_id: int, *, error: str, retry_at: datetime | None
) -> None:
    """Record a failed attempt: retry at `retry_at`, or give up (status failed) when None."""
    if retry_at is None:
        await conn.execute(
            f"UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?, "
            f"{_UNCLAIM} WHERE id = ?",
            (error, item_id),
        )
    else:
        await conn.execute(
            f"UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
            f"{_UNCLAIM} WHERE id = ?",
            (error, _stamp(retry_at), item_id),
        )


@translated("outbox: confirmation message ids")
async def confirmation_message_ids(conn: Connection, ids: Iterable[str]) -> set[str]:
    """Which of these Message-IDs are confirmations we sent (or are sending): a reply threaded
    to one is a customer answering it."""
    wanted = sorted({i for i in ids if i})
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = await conn.execute_fetchall(
            f"SELECT message_id FROM outbox WHERE message_id IN ({','.join('?' * len(chunk))})",
            tuple(chunk))
        found.update(r["message_id"] for r in rows)
    return found
