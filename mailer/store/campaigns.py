"""Campaign SQL: the campaigns table, the per-recipient ledger and the sending leases.

The ledger (`campaign_recipients`) is the truth about who has been mailed. A row moves
pending -> sending -> sent | failed | skipped: `claim_batch` marks a batch 'sending' before
any of it goes out, `record_results` marks each row after its SMTP transaction ended, and
`requeue_in_flight` returns 'sending' rows to pending, which only the lease holder may do.

Leases (`leases`) make sure only one process sends a campaign: a row per name with a holder
and an expiry (unix seconds), taken with one conditional upsert inside BEGIN IMMEDIATE, so two
processes can never both see it free.

Two access paths: the async functions take an aiosqlite connection (the caller owns the
transaction where one is needed); `read_recipient` takes a plain `sqlite3` connection, for the
sender's consent check, a primary-key read done synchronously just before each SMTP send.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from mailer.campaigns.model import KINDS, Campaign, Counts
from mailer.store.db import utcnow

_COLUMNS = (
    "id, kind, template, subject, status, scheduled_at, created_at, started_at, finished_at, "
    "status_reason, audience_at"
)


@dataclass(frozen=True)
class RecipientResult:
    """How one recipient's send ended: 'sent', 'failed' or 'skipped'."""

    customer_id: int
    status: str
    attempts: int
    reply: str


@dataclass(frozen=True)
class Recipient:
    """What the sender needs about one customer at the moment of sending."""

    customer_id: int
    email: str
    name: str
    company: str
    opted_in: bool
    campaign_status: str


def _campaign(row: aiosqlite.Row) -> Campaign:
    return Campaign(
        id=row["id"], kind=row["kind"], template=row["template"], subject=row["subject"],
        status=row["status"], scheduled_at=row["scheduled_at"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        status_reason=row["status_reason"], audience_at=row["audience_at"],
    )


def _kind_column(kind: str) -> str:
    # The kind names a column of customers; never interpolate anything else.
    if kind not in KINDS:
        raise ValueError(f"unknown campaign kind {kind!r}")
    return kind


# --- campaigns ------------------------------------------------------------------------------


async def insert_campaign(
    conn: aiosqlite.Connection, *, kind: str, template: str, subject: str,
    scheduled_at: str | None,
) -> int:
    status = "draft" if scheduled_at is None else "scheduled"
    async with conn.execute(
        "INSERT INTO campaigns (kind, template, subject, status, scheduled_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (_kind_column(kind), template, subject, status, scheduled_at, utcnow()),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def get_campaign(conn: aiosqlite.Connection, campaign_id: int) -> Campaign | None:
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM campaigns WHERE id = ?", (campaign_id,)
    ) as cur:
        row = await cur.fetchone()
    return _campaign(row) if row else None


async def list_campaigns(conn: aiosqlite.Connection) -> list[Campaign]:
    async with conn.execute(f"SELECT {_COLUMNS} FROM campaigns ORDER BY id") as cur:
        return [_campaign(r) for r in await cur.fetchall()]


async def due_campaigns(conn: aiosqlite.Connection, now: str) -> list[Campaign]:
    """Scheduled campaigns whose time has come, and campaigns left 'sending' (by a stopped or
    crashed process; whether they are free to take is the lease's business)."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM campaigns WHERE (status = 'scheduled' AND scheduled_at <= ?) "
        "OR status = 'sending' ORDER BY scheduled_at, id",
        (now,),
    ) as cur:
        return [_campaign(r) for r in await cur.fetchall()]


async def set_status(
    conn: aiosqlite.Connection, campaign_id: int, status: str, *, reason: str,
    expected: Sequence[str], scheduled_at: str | None = None, finished: bool = False,
) -> bool:
    """Move the campaign to `status` if it is in one of `expected`; True if it moved."""
    marks = ",".join("?" * len(expected))
    now = utcnow()
    cur = await conn.execute(
        f"UPDATE campaigns SET status = ?, status_reason = ?, "
        f"scheduled_at = coalesce(?, scheduled_at), "
        f"finished_at = CASE WHEN ? THEN ? ELSE finished_at END "
        f"WHERE id = ? AND status IN ({marks})",
        (status, reason, scheduled_at, int(finished), now, campaign_id, *expected),
    )
    changed = cur.rowcount == 1
    await cur.close()
    return changed


async def mark_started(conn: aiosqlite.Connection, campaign_id: int) -> None:
    await conn.execute(
        "UPDATE campaigns SET status = 'sending', status_reason = '', "
        "started_at = coalesce(started_at, ?) WHERE id = ?",
        (utcnow(), campaign_id),
    )


# --- the ledger -----------------------------------------------------------------------------


async def snapshot_audience(conn: aiosqlite.Connection, campaign: Campaign) -> int:
    """Write one pending row per customer opted in to the campaign's kind, once per campaign.

    One INSERT ... SELECT, so 100,000 customers take a fraction of a second and no memory.
    Returns the rows added (0 if the audience was already taken).
    """
    if campaign.audience_at is not None:
        return 0
    now = utcnow()
    column = _kind_column(campaign.kind)
    cur = await conn.execute(
        "INSERT OR IGNORE INTO campaign_recipients (campaign_id, customer_id, status, "
        f"updated_at) SELECT ?, id, 'pending', ? FROM customers WHERE {column} = 1 ORDER BY id",
        (campaign.id, now),
    )
    added = cur.rowcount
    await cur.close()
    await conn.execute("UPDATE campaigns SET audience_at = ? WHERE id = ?", (now, campaign.id))
    return added


async def counts(conn: aiosqlite.Connection, campaign_id: int) -> Counts:
    async with conn.execute(
        "SELECT status, count(*) FROM campaign_recipients WHERE campaign_id = ? GROUP BY status",
        (campaign_id,),
    ) as cur:
        by_status = {r[0]: int(r[1]) for r in await cur.fetchall()}
    return Counts(
        audience=sum(by_status.values()),
        sent=by_status.get("sent", 0),
        failed=by_status.get("failed", 0),
        skipped=by_status.get("skipped", 0),
        pending=by_status.get("pending", 0) + by_status.get("sending", 0),
    )


async def opted_in_count(conn: aiosqlite.Connection, kind: str) -> int:
    async with conn.execute(
        f"SELECT count(*) FROM customers WHERE {_kind_column(kind)} = 1"
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def claim_batch(conn: aiosqlite.Connection, campaign_id: int, limit: int) -> list[int]:
    """Mark up to `limit` pending rows 'sending' (lowest customer id first); their ids.

    One statement, so it is its own transaction when no other is open.
    """
    rows = await conn.execute_fetchall(
        "UPDATE campaign_recipients SET status = 'sending', updated_at = ? "
        "WHERE campaign_id = ? AND status = 'pending' AND customer_id IN ("
        "  SELECT customer_id FROM campaign_recipients WHERE campaign_id = ? "
        "  AND status = 'pending' ORDER BY customer_id LIMIT ?) "
        "RETURNING customer_id",
        (utcnow(), campaign_id, campaign_id, limit),
    )
    return sorted(int(r[0]) for r in rows)


# SQLite allows 32766 parameters per statement; four per result, and some headroom.
_RESULTS_PER_STATEMENT = 1000


def _results_statements(
    campaign_id: int, results: Sequence[RecipientResult]
) -> list[tuple[str, tuple[object, ...]]]:
    now = utcnow()
    statements = []
    for start in range(0, len(results), _RESULTS_PER_STATEMENT):
        chunk = results[start : start + _RESULTS_PER_STATEMENT]
        values = ",".join("(?, ?, ?, ?)" for _ in chunk)
        parameters: list[object] = []
        for r in chunk:
            parameters += (r.customer_id, r.status, r.attempts, r.reply)
        statements.append((
            f"WITH r (customer_id, status, attempts, reply) AS (VALUES {values}) "
            "UPDATE campaign_recipients SET status = r.status, "
            "attempts = campaign_recipients.attempts + r.attempts, last_reply = r.reply, "
            "updated_at = ? FROM r WHERE campaign_recipients.campaign_id = ? "
            "AND campaign_recipients.customer_id = r.customer_id "
            "AND campaign_recipients.status = 'sending'",
            (*parameters, now, campaign_id),
        ))
    return statements


async def record_results(
    conn: aiosqlite.Connection, campaign_id: int, results: Sequence[RecipientResult]
) -> None:
    """Settle claimed rows ('sent', 'failed', 'skipped', or back to 'pending').

    One UPDATE ... FROM (VALUES ...) statement per thousand results: each is atomic on its
    own (an implicit transaction outside an explicit one) and costs one round trip to the
    database thread.
    """
    for sql, parameters in _results_statements(campaign_id, results):
        await conn.execute_fetchall(sql, parameters)


def record_results_now(
    conn: sqlite3.Connection, campaign_id: int, results: Sequence[RecipientResult]
) -> None:
    """`record_results` on a plain sqlite3 connection, for the sender's fast path; raises
    sqlite3.OperationalError (SQLITE_BUSY) at once if another writer holds the lock and the
    connection's busy timeout is 0."""
    for sql, parameters in _results_statements(campaign_id, results):
        conn.execute(sql, parameters).fetchall()


async def requeue_in_flight(conn: aiosqlite.Connection, campaign_id: int) -> int:
    """Return every 'sending' row to pending; only the lease holder may call this."""
    cur = await conn.execute(
        "UPDATE campaign_recipients SET status = 'pending', updated_at = ? "
        "WHERE campaign_id = ? AND status = 'sending'",
        (utcnow(), campaign_id),
    )
    count = cur.rowcount
    await cur.close()
    return count


async def unsettled(conn: aiosqlite.Connection, campaign_id: int) -> int:
    async with conn.execute(
        "SELECT count(*) FROM campaign_recipients WHERE campaign_id = ? "
        "AND status IN ('pending', 'sending')",
        (campaign_id,),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def read_recipient(
    conn: sqlite3.Connection, campaign_id: int, kind: str, customer_id: int
) -> Recipient | None:
    """The customer as of now, with their consent to `kind` and the campaign's status.

    Two primary-key lookups in one statement, a few microseconds: the consent check made
    just before each message goes out. fetchall() runs the statement to completion, so no
    read transaction stays open and the next call sees every commit made since.
    """
    rows = conn.execute(
        f"SELECT c.email, c.name, c.company, c.{_kind_column(kind)}, p.status "
        "FROM customers c, campaigns p WHERE c.id = ? AND p.id = ?",
        (customer_id, campaign_id),
    ).fetchall()
    if not rows:
        return None
    email, name, company, opted_in, status = rows[0]
    return Recipient(customer_id=customer_id, email=email, name=name, company=company,
                     opted_in=bool(opted_in), campaign_status=status)


# --- leases ---------------------------------------------------------------------------------


async def acquire_lease(
    conn: aiosqlite.Connection, name: str, holder: str, *, now_s: float, ttl_s: float
) -> bool:
    """Take the lease if it is free, expired or already ours; run inside BEGIN IMMEDIATE."""
    await conn.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "expires_at = excluded.expires_at "
        "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder",
        (name, holder, now_s + ttl_s, now_s),
    )
    async with conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    return row is not None and row[0] == holder


async def renew_lease(
    conn: aiosqlite.Connection, name: str, holder: str, *, now_s: float, ttl_s: float
) -> bool:
    """Extend our lease; False if someone else holds it now (ours expired and was taken)."""
    cur = await conn.execute(
        "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
        (now_s + ttl_s, name, holder),
    )
    renewed = cur.rowcount == 1
    await cur.close()
    return renewed


async def holds_lease(conn: aiosqlite.Connection, name: str, holder: str) -> bool:
    """True if `holder` still holds the lease: not taken over, even if it has just expired
    (taking it over is the only way another process can act on it)."""
    async with conn.execute(
        "SELECT 1 FROM leases WHERE name = ? AND holder = ?", (name, holder)
    ) as cur:
        return await cur.fetchone() is not None


async def release_lease(conn: aiosqlite.Connection, name: str, holder: str) -> None:
    await conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


async def lease_of(conn: aiosqlite.Connection, name: str) -> tuple[str, float] | None:
    async with conn.execute(
        "SELECT holder, expires_at FROM leases WHERE name = ?", (name,)
    ) as cur:
        row = await cur.fetchone()
    return (str(row[0]), float(row[1])) if row else None
