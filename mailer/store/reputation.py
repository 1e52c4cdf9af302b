"""Reputation numbers the sender can see in its own ledger, read for `mailer doctor` and the
daemon's complaint-rate pause: complaints against messages sent in a window, hard bounces of
the latest campaigns, and the oldest opt-out request still waiting for a person.

Only reports tied to a message we sent (by VERP or Message-ID) and not ignored count: an
untied ARF report may be about someone else's mail, or forged.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailer.store.edge import translated
from mailer.store.engine import Connection


@dataclass(frozen=True)
class ComplaintWindow:
    since: str  # ISO 8601 UTC, the store's timestamp format
    sent: int  # campaign messages and confirmations sent since then
    complaints: int  # ARF complaints received since then about our messages


@dataclass(frozen=True)
class CampaignBounces:
    campaign_id: int
    sent: int
    hard: int  # distinct customers with a hard bounce


# Sent and complaints since a time (the one parameter, three times); the metrics read it too,
# synchronously (`store.gauges`), so both count the same way.
COMPLAINT_WINDOW_SQL = (
    "SELECT (SELECT count(*) FROM campaign_recipients "
    "        WHERE status = 'sent' AND updated_at >= ?)"
    "     + (SELECT count(*) FROM outbox WHERE status = 'sent' AND sent_at >= ?),"
    "       (SELECT count(*) FROM delivery_reports WHERE kind = 'complaint' "
    "        AND received_at >= ? AND outcome != 'ignored' "
    "        AND (campaign_id IS NOT NULL OR outbox_id IS NOT NULL))")


@translated("reputation: complaint window")
async def complaint_window(conn: Connection, since: str) -> ComplaintWindow:
    async with conn.execute(COMPLAINT_WINDOW_SQL, (since, since, since)) as cur:
        row = await cur.fetchone()
    sent, complaints = (int(row[0]), int(row[1])) if row else (0, 0)
    return ComplaintWindow(since=since, sent=sent, complaints=complaints)


@translated("reputation: campaign bounces")
async def recent_campaign_bounces(conn: Connection, *, campaigns: int = 5
                                  ) -> list[CampaignBounces]:
    """Sent and hard-bounced counts of the latest `campaigns` that started, newest first."""
    rows = await conn.execute_fetchall(
        "SELECT c.id, "
        "  (SELECT count(*) FROM campaign_recipients r "
        "   WHERE r.campaign_id = c.id AND r.status = 'sent'), "
        "  (SELECT count(DISTINCT customer_id) FROM delivery_reports d "
        "   WHERE d.campaign_id = c.id AND d.kind = 'hard' AND d.outcome != 'ignored') "
        "FROM campaigns c WHERE c.started_at IS NOT NULL "
        "ORDER BY c.started_at DESC, c.id DESC LIMIT ?",
        (campaigns,),
    )
    return [CampaignBounces(int(r[0]), int(r[1]), int(r[2])) for r in rows]


@translated("reputation: oldest open review item")
async def oldest_open_review(conn: Connection) -> str | None:
    """When the oldest request still waiting in review arrived (None: none waits)."""
    async with conn.execute(
        "SELECT min(created_at) FROM review_items WHERE status = 'open'"
    ) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row and row[0] is not None else None
