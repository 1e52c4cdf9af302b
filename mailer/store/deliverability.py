"""Deliverability: the reports we received, the addresses we no longer mail, and why.

- `delivery_reports`: one row per bounce or complaint read, acted on or not, keyed by the
  report's own Message-ID (or a digest), so the same report seen twice counts once.
- `undeliverable`: one row per customer not to be mailed now (read per recipient at send
  time, like consent); `delivery_events`: every change of that, permanent, with who and why.
- Lookups that tie a report to a message we sent: the campaign ledger and the outbox, by id
  (a verified VERP tag) or by the Message-ID the report quotes.

Functions run inside the caller's transaction unless they say otherwise; timestamps are
passed in (`now`, ISO 8601 UTC) so callers decide the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailer.store.edge import translated
from mailer.store.engine import Connection, StoredRow

_CHUNK = 500


@dataclass(frozen=True)
class SentMessage:
    """A message we sent, found in the ledger or the outbox."""

    customer_id: int
    campaign_id: int | None = None
    outbox_id: int | None = None


@dataclass(frozen=True)
class StoredReport:
    id: int
    report_key: str
    received_at: str
    kind: str
    format: str
    status: str
    diagnostic: str
    customer_id: int | None
    campaign_id: int | None
    outbox_id: int | None
    tied_by: str
    outcome: str
    reason: str
    moved: bool


@dataclass(frozen=True)
class DeliveryEvent:
    at: str
    event: str  # 'undeliverable' | 'reactivated'
    source: str  # 'bounce' | 'soft bounces' | 'operator' | 'console'
    reason: str
    actor: str
    report_id: int | None


@dataclass(frozen=True)
class ReportCounts:
    """Distinct customers per kind of report acted on for one campaign."""

    hard: int = 0
    soft: int = 0
    complaints: int = 0


# --- tying a report to what we sent ---------------------------------------------------------


@translated("deliverability: campaign message")
async def campaign_message(
    conn: Connection, campaign_id: int, customer_id: int
) -> SentMessage | None:
    """The campaign message to this customer, if the ledger says it was handed to SMTP."""
    async with conn.execute(
        "SELECT 1 FROM campaign_recipients WHERE campaign_id = ? AND customer_id = ? "
        "AND status IN ('sent', 'sending', 'failed')",
        (campaign_id, customer_id),
    ) as cur:
        row = await cur.fetchone()
    return SentMessage(customer_id, campaign_id=campaign_id) if row else None


@translated("deliverability: outbox message")
async def outbox_message(conn: Connection, outbox_id: int) -> SentMessage | None:
    """The confirmation in outbox row `outbox_id`, if it was sent (or tried)."""
    async with conn.execute(
        "SELECT customer_id FROM outbox WHERE id = ? AND status IN ('sent', 'failed')",
        (outbox_id,),
    ) as cur:
        row = await cur.fetchone()
    return SentMessage(int(row[0]), outbox_id=outbox_id) if row else None


@translated("deliverability: message by id")
async def message_by_id(
    conn: Connection, message_ids: Sequence[str]
) -> SentMessage | None:
    """The first message of ours among `message_ids` (campaign ledger, then outbox)."""
    wanted = [m for m in dict.fromkeys(message_ids) if m][:_CHUNK]
    if not wanted:
        return None
    marks = ",".join("?" * len(wanted))
    async with conn.execute(
        f"SELECT campaign_id, customer_id FROM campaign_recipients WHERE message_id IN ({marks})"
        " ORDER BY campaign_id, customer_id LIMIT 1", tuple(wanted),
    ) as cur:
        row = await cur.fetchone()
    if row is not None:
        return SentMessage(int(row[1]), campaign_id=int(row[0]))
    async with conn.execute(
        f"SELECT id, customer_id FROM outbox WHERE message_id IN ({marks}) ORDER BY id LIMIT 1",
        tuple(wanted),
    ) as cur:
        row = await cur.fetchone()
    return SentMessage(int(row[1]), outbox_id=int(row[0])) if row else None


# --- reports --------------------------------------------------------------------------------


_REPORT_COLUMNS = ("id, report_key, received_at, kind, format, status, diagnostic, customer_id, "
                   "campaign_id, outbox_id, tied_by, outcome, reason, moved")


def _report(row: StoredRow) -> StoredReport:
    return StoredReport(
        id=row["id"], report_key=row["report_key"], received_at=row["received_at"],
        kind=row["kind"], format=row["format"], status=row["status"],
        diagnostic=row["diagnostic"], customer_id=row["customer_id"],
        campaign_id=row["campaign_id"], outbox_id=row["outbox_id"], tied_by=row["tied_by"],
        outcome=row["outcome"], reason=row["reason"], moved=bool(row["moved"]),
    )


@translated("deliverability: report by key")
async def report_by_key(conn: Connection, report_key: str) -> StoredReport | None:
    async with conn.execute(
        f"SELECT {_REPORT_COLUMNS} FROM delivery_reports WHERE report_key = ?", (report_key,)
    ) as cur:
        row = await cur.fetchone()
    return _report(row) if row else None


@translated("deliverability: insert report")
async def insert_report(
    conn: Connection,
    *,
    report_key: str,
    now: str,
    kind: str,
    format: str,
    status: str,
    diagnostic: str,
    sent: SentMessage | None,
    tied_by: str,
    outcome: str,
    reason: str,
) -> int:
    async with conn.execute(
        "INSERT INTO delivery_reports (report_key, received_at, kind, format, status, "
        "diagnostic, customer_id, campaign_id, outbox_id, tied_by, outcome, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (report_key, now, kind, format, status, diagnostic,
         sent.customer_id if sent else None, sent.campaign_id if sent else None,
         sent.outbox_id if sent else None, tied_by, outcome, reason),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@translated("deliverability: mark moved")
async def mark_moved(conn: Connection, report_id: int) -> None:
    """The report message has been moved to the bounces folder (its own transaction is fine)."""
    await conn.execute("UPDATE delivery_reports SET moved = 1 WHERE id = ?", (report_id,))


@dataclass(frozen=True)
class ReportMove:
    uid: int
    report_id: int
    destination: str


@translated("deliverability: add report moves")
async def add_report_moves(
    conn: Connection, folder: str, uidvalidity: int, moves: Sequence[ReportMove]
) -> None:
    """Remember report messages to move (in the transaction that recorded the reports)."""
    await conn.executemany(
        "INSERT INTO report_moves (folder, uidvalidity, uid, report_id, destination) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (folder, uidvalidity, uid) DO NOTHING",
        [(folder, uidvalidity, m.uid, m.report_id, m.destination) for m in moves])


@translated("deliverability: unmoved reports")
async def unmoved_reports(
    conn: Connection, folder: str, uidvalidity: int
) -> list[ReportMove]:
    rows = await conn.execute_fetchall(
        "SELECT uid, report_id, destination FROM report_moves WHERE folder = ? AND moved = 0 "
        "AND uidvalidity = ? ORDER BY uid", (folder, uidvalidity))
    return [ReportMove(int(r[0]), int(r[1]), str(r[2])) for r in rows]


@translated("deliverability: mark reports moved")
async def mark_reports_moved(
    conn: Connection, folder: str, uidvalidity: int, uids: Sequence[int]
) -> None:
    await conn.executemany(
        "UPDATE delivery_reports SET moved = 1 WHERE id IN (SELECT report_id FROM report_moves "
        "WHERE folder = ? AND uidvalidity = ? AND uid = ?)",
        [(folder, uidvalidity, uid) for uid in uids])
    await conn.executemany(
        "UPDATE report_moves SET moved = 1 WHERE folder = ? AND uidvalidity = ? AND uid = ?",
        [(folder, uidvalidity, uid) for uid in uids])


@translated("deliverability: forget stale report moves")
async def forget_stale_report_moves(
    conn: Connection, folder: str, uidvalidity: int
) -> None:
    """Under a new UIDVALIDITY old UIDs mean nothing: the reports are read again, found to be
    seen before (their key), and moved then."""
    await conn.execute("UPDATE report_moves SET moved = 1 WHERE folder = ? AND moved = 0 "
                       "AND uidvalidity != ?", (folder, uidvalidity))


@translated("deliverability: recent reports")
async def recent_reports(
    conn: Connection, since: str, *, limit: int = 1000
) -> list[StoredReport]:
    """Reports received at or after `since`, newest first (`mailer bounces list`)."""
    rows = await conn.execute_fetchall(
        f"SELECT {_REPORT_COLUMNS} FROM delivery_reports WHERE received_at >= ? "
        "ORDER BY received_at DESC, id DESC LIMIT ?", (since, limit))
    return [_report(r) for r in rows]


_MESSAGE_KEY = "coalesce('c' || campaign_id, 'n' || outbox_id)"


@translated("deliverability: soft bounced messages")
async def soft_bounced_messages(
    conn: Connection, customer_id: int, since: str, *,
    besides: SentMessage | None = None,
) -> int:
    """How many different messages to this customer soft-bounced at or after `since`, not
    counting `besides`."""
    if besides is None:
        other = ""
    elif besides.campaign_id is not None:
        other = f"c{besides.campaign_id}"
    else:
        other = f"n{besides.outbox_id}"
    async with conn.execute(
        f"SELECT count(DISTINCT {_MESSAGE_KEY}) "
        "FROM delivery_reports WHERE customer_id = ? AND kind = 'soft' "
        f"AND outcome IN ('soft-counted', 'undeliverable') AND received_at >= ? "
        f"AND {_MESSAGE_KEY} != ?",
        (customer_id, since, other),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


@translated("deliverability: campaign report counts")
async def campaign_report_counts(conn: Connection, campaign_id: int) -> ReportCounts:
    """Distinct customers with a hard bounce, a soft bounce, a complaint for this campaign."""
    async with conn.execute(
        "SELECT kind, count(DISTINCT customer_id) FROM delivery_reports "
        "WHERE campaign_id = ? AND outcome != 'ignored' GROUP BY kind",
        (campaign_id,),
    ) as cur:
        by_kind = {r[0]: int(r[1]) for r in await cur.fetchall()}
    return ReportCounts(hard=by_kind.get("hard", 0), soft=by_kind.get("soft", 0),
                        complaints=by_kind.get("complaint", 0))


# --- undeliverable addresses ----------------------------------------------------------------


@translated("deliverability: undeliverable ids")
async def undeliverable_ids(conn: Connection, customer_ids: Iterable[int]) -> set[int]:
    """Which of these customers must not be mailed now (the send-time check, per batch)."""
    wanted = sorted(set(customer_ids))
    found: set[int] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = await conn.execute_fetchall(
            f"SELECT customer_id FROM undeliverable WHERE customer_id IN "
            f"({','.join('?' * len(chunk))})", tuple(chunk))
        found.update(int(r[0]) for r in rows)
    return found


@translated("deliverability: undeliverable reason")
async def undeliverable_reason(conn: Connection, customer_id: int) -> str | None:
    """Why this customer is not mailed (None: deliverable)."""
    async with conn.execute(
        "SELECT reason FROM undeliverable WHERE customer_id = ?", (customer_id,)
    ) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else None


@translated("deliverability: mark undeliverable")
async def mark_undeliverable(
    conn: Connection,
    customer_id: int,
    *,
    now: str,
    source: str,
    reason: str,
    report_id: int | None = None,
    actor: str = "",
) -> bool:
    """Stop mailing this address; False (nothing recorded) if it already was undeliverable."""
    cur = await conn.execute(
        "INSERT INTO undeliverable (customer_id, since, reason) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (customer_id, now, reason))
    changed = cur.rowcount == 1
    await cur.close()
    if changed:
        await _event(conn, customer_id, now=now, event="undeliverable", source=source,
                     reason=reason, report_id=report_id, actor=actor)
    return changed


@translated("deliverability: reactivate")
async def reactivate(
    conn: Connection, customer_id: int, *, now: str, actor: str,
    source: str = "operator", reason: str = "",
) -> bool:
    """Mail this address again, recorded with who did it; False if it was deliverable."""
    cur = await conn.execute("DELETE FROM undeliverable WHERE customer_id = ?", (customer_id,))
    changed = cur.rowcount == 1
    await cur.close()
    if changed:
        await _event(conn, customer_id, now=now, event="reactivated", source=source,
                     reason=reason, report_id=None, actor=actor)
    return changed


@translated("deliverability: last reactivated")
async def last_reactivated(conn: Connection, customer_id: int) -> str | None:
    """When this customer was last made deliverable again (soft bounces before do not count)."""
    async with conn.execute(
        "SELECT max(at) FROM delivery_events WHERE customer_id = ? AND event = 'reactivated'",
        (customer_id,),
    ) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row and row[0] is not None else None


@translated("deliverability: delivery history")
async def delivery_history(conn: Connection, customer_id: int) -> list[DeliveryEvent]:
    rows = await conn.execute_fetchall(
        "SELECT at, event, source, reason, actor, report_id FROM delivery_events "
        "WHERE customer_id = ? ORDER BY id", (customer_id,))
    return [DeliveryEvent(at=r["at"], event=r["event"], source=r["source"], reason=r["reason"],
                          actor=r["actor"], report_id=r["report_id"]) for r in rows]


async def _event(
    conn: Connection, customer_id: int, *, now: str, event: str, source: str,
    reason: str, report_id: int | None, actor: str,
) -> None:
    await conn.execute(
        "INSERT INTO delivery_events (customer_id, at, event, source, reason, report_id, actor) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (customer_id, now, event, source, reason, report_id, actor))
