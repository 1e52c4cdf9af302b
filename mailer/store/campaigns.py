"""Campaign SQL: the campaigns table and the per-recipient ledger's rows, and the records
they are read into.

The ledger (`campaign_recipients`) is the truth about who has been mailed. A row moves
pending -> sending -> sent | failed | skipped: `claim_batch` marks a batch 'sending' before
any of it goes out, naming the sender that claimed it (`claimed_by`, several may send one
campaign), `store.ledger` settles each row after its SMTP transaction ended (with the
Message-ID it went out with), `requeue_own` gives back a sender's unsent claims when it stops,
and `requeue_claims_of` returns a dead sender's rows to pending, behind the fresh ones.

The records (`Campaign`, `Counts`, `Recipient`, `RecipientResult`) live here, below the
campaigns package that decides about them, so the store imports nothing above itself. The
async functions take the store's connection (the caller owns the transaction where one is
needed) and raise StoreError, never a sqlite3 exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailer.categories import CATEGORIES
from mailer.store.db import utcnow
from mailer.store.edge import translated
from mailer.store.engine import Connection, StoredRow

_COLUMNS = (
    "id, kind, template, subject, status, scheduled_at, created_at, started_at, finished_at, "
    "status_reason, audience_at, paused_by"
)

# Why a campaign is paused ("" while it is not), for the code to decide on (`status_reason` is
# for people): a person (`operator`), Ctrl-C on `campaign send` (`interrupted`), settings or a
# template a send needs (`settings`: a person must mend them, and `mailer status` warns), the
# SMTP server refusing us or staying unreachable (`smtp-refused`, `smtp-unavailable`: the
# daemon resumes the latter by itself), too many failed recipients (`failures`), its own bounce
# or complaint rate (`reports`), or the sender-wide complaint rate of the last day, which the
# daemon checks on each round and which holds every campaign in progress (`complaint-rate`:
# a person decides when to resume, and `mailer status` warns).
PauseCause = Literal["", "operator", "interrupted", "settings", "smtp-refused",
                     "smtp-unavailable", "failures", "reports", "complaint-rate"]


@dataclass(frozen=True)
class Campaign:
    id: int
    kind: str
    template: str
    subject: str
    status: str
    scheduled_at: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    status_reason: str
    audience_at: str | None
    paused_by: PauseCause = ""


@dataclass(frozen=True)
class Counts:
    """The ledger in numbers. `pending` includes rows claimed ('sending') but not settled."""

    audience: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0

    @property
    def attempted(self) -> int:
        return self.sent + self.failed


@dataclass(frozen=True)
class RecipientResult:
    """How one recipient's send ended: 'sent', 'failed', 'skipped', or back to 'pending'
    (attempts made by a run that stopped); `message_id` is what it went out with."""

    customer_id: int
    status: str
    attempts: int
    reply: str
    message_id: str = ""


@dataclass(frozen=True)
class Recipient:
    """What the sender needs about one customer at the moment of sending."""

    customer_id: int
    email: str
    name: str
    company: str
    opted_in: bool
    campaign_status: str
    # Why the address is not to be mailed (a hard bounce, soft bounces), or "": deliverable.
    undeliverable: str = ""


def _campaign(row: StoredRow) -> Campaign:
    return Campaign(
        id=row["id"], kind=row["kind"], template=row["template"], subject=row["subject"],
        status=row["status"], scheduled_at=row["scheduled_at"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        status_reason=row["status_reason"], audience_at=row["audience_at"],
        paused_by=row["paused_by"],
    )


def kind_column(kind: str) -> str:
    """The customers column of a campaign kind; never interpolate anything else."""
    if kind not in CATEGORIES:
        raise ValueError(f"unknown campaign kind {kind!r}")
    return kind


# --- campaigns ------------------------------------------------------------------------------


@translated("campaign store: insert campaign")
async def insert_campaign(
    conn: Connection, *, kind: str, template: str, subject: str,
    scheduled_at: str | None,
) -> int:
    status = "draft" if scheduled_at is None else "scheduled"
    async with conn.execute(
        "INSERT INTO campaigns (kind, template, subject, status, scheduled_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (kind_column(kind), template, subject, status, scheduled_at, utcnow()),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@translated("campaign store: get campaign")
async def get_campaign(conn: Connection, campaign_id: int) -> Campaign | None:
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM campaigns WHERE id = ?", (campaign_id,)
    ) as cur:
        row = await cur.fetchone()
    return _campaign(row) if row else None


@translated("campaign store: list campaigns")
async def list_campaigns(conn: Connection) -> list[Campaign]:
    async with conn.execute(f"SELECT {_COLUMNS} FROM campaigns ORDER BY id") as cur:
        return [_campaign(r) for r in await cur.fetchall()]


@translated("campaign store: due campaigns")
async def due_campaigns(conn: Connection, now: str) -> list[Campaign]:
    """Scheduled campaigns whose time has come, and campaigns left 'sending' (by a stopped or
    crashed process; whether they are free to take is the lease's business)."""
    async with conn.execute(
        f"SELECT {_COLUMNS} FROM campaigns WHERE (status = 'scheduled' AND scheduled_at <= ?) "
        "OR status = 'sending' ORDER BY scheduled_at, id",
        (now,),
    ) as cur:
        return [_campaign(r) for r in await cur.fetchall()]


@translated("campaign store: set status")
async def set_status(
    conn: Connection, campaign_id: int, status: str, *, reason: str,
    expected: Sequence[str], scheduled_at: str | None = None, finished: bool = False,
    paused_by: PauseCause = "",
) -> bool:
    """Move the campaign to `status` if it is in one of `expected`; True if it moved.
    `paused_by` says why, for `status` "paused" (and is cleared otherwise)."""
    marks = ",".join("?" * len(expected))
    now = utcnow()
    cur = await conn.execute(
        f"UPDATE campaigns SET status = ?, status_reason = ?, paused_by = ?, "
        f"scheduled_at = coalesce(?, scheduled_at), "
        f"finished_at = CASE WHEN ? = 1 THEN ? ELSE finished_at END "
        f"WHERE id = ? AND status IN ({marks})",
        (status, reason, paused_by if status == "paused" else "", scheduled_at, int(finished),
         now, campaign_id, *expected),
    )
    changed = cur.rowcount == 1
    await cur.close()
    return changed


@translated("campaign store: mark started")
async def mark_started(conn: Connection, campaign_id: int) -> None:
    await conn.execute(
        "UPDATE campaigns SET status = 'sending', status_reason = '', paused_by = '', "
        "started_at = coalesce(started_at, ?) WHERE id = ?",
        (utcnow(), campaign_id),
    )


# --- the ledger -----------------------------------------------------------------------------


@translated("campaign store: snapshot audience")
async def snapshot_audience(conn: Connection, campaign: Campaign) -> int:
    """Write one pending row per customer opted in to the campaign's kind, once per campaign.

    One INSERT ... SELECT, so 100,000 customers take a fraction of a second and no memory.
    Returns the rows added (0 if the audience was already taken).
    """
    if campaign.audience_at is not None:
        return 0
    now = utcnow()
    column = kind_column(campaign.kind)
    cur = await conn.execute(
        "INSERT INTO campaign_recipients (campaign_id, customer_id, status, updated_at) "
        f"SELECT ?, id, 'pending', ? FROM customers WHERE {column} = 1 ORDER BY id "
        "ON CONFLICT DO NOTHING",
        (campaign.id, now),
    )
    added = cur.rowcount
    await cur.close()
    await conn.execute("UPDATE campaigns SET audience_at = ? WHERE id = ?", (now, campaign.id))
    if conn.engine == "postgresql" and added:
        # Statistics for the rows just written, so the planner's choices during the send are
        # made on them (autovacuum would take a minute or more to notice).
        await conn.execute("ANALYZE campaign_recipients")
    return added


@translated("campaign store: counts")
async def counts(conn: Connection, campaign_id: int) -> Counts:
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


@translated("campaign store: opted in count")
async def opted_in_count(conn: Connection, kind: str) -> int:
    async with conn.execute(
        f"SELECT count(*) FROM customers WHERE {kind_column(kind)} = 1"
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


# A claim: fresh pending rows first, by customer id (an index range: the status index is
# (campaign_id, status, customer_id, requeued)), then, once none is left, the rows requeued
# after a dead sender, least requeued first (a handful: a sort costs nothing). On PostgreSQL
# the rows are locked with SKIP LOCKED, so senders on several hosts claiming at the same moment
# each take different rows and none waits for another. The pick is a MATERIALIZED CTE there,
# not `WHERE ... IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`: the planner may run that as a
# nested-loop semi-join that rescans the subquery for every outer row, and each rescan picks n
# more (a claim of 3 took 8 rows). SQLite has one writer.
_CLAIM = {
    "sqlite":
        "UPDATE campaign_recipients SET status = 'sending', claimed_by = :holder, "
        "updated_at = :now WHERE campaign_id = :campaign AND status = 'pending' "
        "AND customer_id IN ("
        "  SELECT customer_id FROM campaign_recipients WHERE campaign_id = :campaign "
        "  AND status = 'pending' {pick} LIMIT :limit) "
        "RETURNING customer_id, requeued",
    "postgresql":
        "WITH picked AS MATERIALIZED ("
        "  SELECT customer_id FROM campaign_recipients WHERE campaign_id = :campaign "
        "  AND status = 'pending' {pick} LIMIT :limit "
        "  FOR UPDATE SKIP LOCKED) "
        "UPDATE campaign_recipients SET status = 'sending', claimed_by = :holder, "
        "updated_at = :now FROM picked WHERE campaign_recipients.campaign_id = :campaign "
        "AND campaign_recipients.customer_id = picked.customer_id "
        "RETURNING campaign_recipients.customer_id, campaign_recipients.requeued",
}
_FRESH = "AND requeued = 0 ORDER BY customer_id"
_REQUEUED = "AND requeued > 0 ORDER BY requeued, customer_id"


@translated("campaign store: claim batch")
async def claim_batch(conn: Connection, campaign_id: int, limit: int,
                      claimed_by: str) -> list[int]:
    """Mark up to `limit` pending rows 'sending', claimed by the sender `claimed_by`; their
    ids in sending order (rows requeued after a dead sender last, see `requeue_claims_of`).

    Each statement is its own transaction when no other is open."""
    parameters = {"holder": claimed_by, "now": utcnow(), "campaign": campaign_id,
                  "limit": limit}
    rows = list(await conn.execute_fetchall(_CLAIM[conn.engine].format(pick=_FRESH),
                                            parameters))
    if len(rows) < limit:
        rows += await conn.execute_fetchall(_CLAIM[conn.engine].format(pick=_REQUEUED),
                                            {**parameters, "limit": limit - len(rows)})
    return [int(r[0]) for r in sorted(rows, key=lambda r: (int(r[1]), int(r[0])))]


@translated("campaign store: return claims")
async def requeue_own(conn: Connection, campaign_id: int, claimed_by: str) -> int:
    """Return the rows `claimed_by` claimed and did not send to pending: the sender's own
    clean stop (nothing of them was in flight, so they keep their place)."""
    cur = await conn.execute(
        "UPDATE campaign_recipients SET status = 'pending', claimed_by = '', updated_at = ? "
        "WHERE campaign_id = ? AND status = 'sending' AND claimed_by = ?",
        (utcnow(), campaign_id, claimed_by),
    )
    count = cur.rowcount
    await cur.close()
    return count


@translated("campaign store: pending")
async def has_pending(conn: Connection, campaign_id: int) -> bool:
    """Whether any row of the campaign waits to be claimed."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM campaign_recipients WHERE campaign_id = ? AND status = 'pending' "
        "LIMIT 1", (campaign_id,))
    return bool(list(rows))


@translated("campaign store: claimants")
async def claimants(conn: Connection, campaign_id: int) -> list[str]:
    """The senders that hold rows of the campaign in 'sending'."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT claimed_by FROM campaign_recipients "
        "WHERE campaign_id = ? AND status = 'sending'", (campaign_id,))
    return sorted(str(r[0]) for r in rows)


@translated("campaign store: requeue in flight")
async def requeue_claims_of(conn: Connection, campaign_id: int, claimed_by: str) -> int:
    """Return a gone sender's 'sending' rows to pending, one more `requeued` each: some were
    in flight when it died (delivered, perhaps), so they are claimed after every fresh row
    and a second kill soon after cannot catch the same people again. Only once that
    sender's lease is broken (`store.leases.break_lease`) may this be called."""
    cur = await conn.execute(
        "UPDATE campaign_recipients SET status = 'pending', claimed_by = '', "
        "requeued = requeued + 1, updated_at = ? "
        "WHERE campaign_id = ? AND status = 'sending' AND claimed_by = ?",
        (utcnow(), campaign_id, claimed_by),
    )
    count = cur.rowcount
    await cur.close()
    return count


@translated("campaign store: unsettled")
async def unsettled(conn: Connection, campaign_id: int) -> int:
    async with conn.execute(
        "SELECT count(*) FROM campaign_recipients WHERE campaign_id = ? "
        "AND status IN ('pending', 'sending')",
        (campaign_id,),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


# --- test copies ------------------------------------------------------------------------------


@translated("campaign store: take a test copy")
async def take_test_copy(conn: Connection, campaign_id: int, day: str,
                         cap: int) -> int | None:
    """Count one more test copy of the campaign on `day` if fewer than `cap` were; the new
    count, or None when the cap is reached. One statement, so two senders cannot both take
    the last one."""
    async with conn.execute(
        "INSERT INTO campaign_test_copies (campaign_id, day, count) VALUES (?, ?, 1) "
        # Qualified: PostgreSQL reads a bare `count` here as ambiguous (table or excluded).
        "ON CONFLICT (campaign_id, day) DO UPDATE SET count = campaign_test_copies.count + 1 "
        "WHERE campaign_test_copies.count < ? "
        "RETURNING count",
        (campaign_id, day, cap),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else None


@translated("campaign store: give back a test copy")
async def give_back_test_copy(conn: Connection, campaign_id: int, day: str) -> None:
    """Uncount a test copy that was not sent after all."""
    await conn.execute(
        "UPDATE campaign_test_copies SET count = count - 1 "
        "WHERE campaign_id = ? AND day = ? AND count > 0",
        (campaign_id, day),
    )
