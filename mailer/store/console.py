"""The queries the console's pages need and no other caller does.

Customer search runs on the full-text index `customers_search` (FTS5, kept by triggers; see
migration 3; on PostgreSQL a GIN index on the same words) or, for something that looks like
an address, on the unique email index (NOCASE; lower(email) on PostgreSQL); pages
go by id (keyset), never by OFFSET, so page 500 costs what page 1 does. The charts read the
daily roll-ups (`optouts_daily`, `sends_daily`) the same triggers keep, so 90 days of a
ten-million-event history is at most a few hundred rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailer.categories import CATEGORIES
from mailer.store.customers import Customer, _customer
from mailer.store.edge import translated
from mailer.store.engine import Connection


@dataclass(frozen=True)
class SearchPage:
    customers: list[Customer]
    next_after: int | None  # the id to continue after, or None on the last page


@dataclass(frozen=True)
class Deliverability:
    """How mail to one customer has gone: campaign sends by outcome, and the last failure."""

    sent: int
    failed: int
    skipped: int
    last_failure: str
    confirmations_failed: int


@dataclass(frozen=True)
class QueueFacts:
    review_open: int
    outbox_pending: int
    outbox_failed: int


_WORD = re.compile(r"\w+", re.UNICODE)


def match_expression(text: str) -> str | None:
    """An FTS5 query for what a person typed: every word must start a word of the name,
    company or address (`"ann"* AND "lee"*`); None when nothing searchable was typed.
    Words are quoted, so nothing typed is ever read as FTS5 syntax."""
    words = _WORD.findall(text)[:8]
    if not words:
        return None
    return " AND ".join(f'"{w}"*' for w in words)


def tsquery_expression(text: str) -> str | None:
    """The PostgreSQL form of `match_expression`, for to_tsquery('simple', ...): every word a
    quoted prefix (`'ann':* & 'lee':*`), so nothing typed is ever read as tsquery syntax."""
    words = _WORD.findall(text)[:8]
    if not words:
        return None
    return " & ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "':*" for w in words)


# The search index's own expression (schema_postgresql.sql), so the planner uses the index.
_WORDS = ("to_tsvector('simple', regexp_replace(name || ' ' || company || ' ' || email, "
          "'[[:punct:][:space:]]+', ' ', 'g'))")

_WALK_ROWS = 3000

_SEARCH: dict[str, dict[str, str]] = {
    "sqlite": {
        # `+id` keeps the planner off the rowid (walking a million rows in id order to find
        # the few in the range): an address prefix names few customers, sorting them is free.
        "address": "SELECT * FROM customers WHERE email >= ? AND email < ? AND +id > ? "
                   "ORDER BY +id LIMIT ?",
        "words": "SELECT c.* FROM customers_search s JOIN customers c ON c.id = s.rowid "
                 "WHERE customers_search MATCH ? AND s.rowid > ? ORDER BY s.rowid LIMIT ?",
    },
    "postgresql": {
        "address": "SELECT * FROM customers WHERE lower(email) >= lower(?) "
                   "AND lower(email) < lower(?) AND id > ? ORDER BY id LIMIT ?",
        # `id + 0`, as SQLite's `+id`: PostgreSQL cannot estimate a prefix query's matches
        # and would walk the primary key in id order computing every row's words (0.3-0.5 s
        # for a name among 50,000); from the GIN index, a search costs what it matches.
        "words": f"SELECT * FROM customers WHERE {_WORDS} @@ to_tsquery('simple', ?) "
                 "AND id > ? ORDER BY id + 0 LIMIT ?",
        # A common word (a surname, a first name) matches tens of thousands: from the GIN
        # index each must be fetched and sorted (100 ms at a million customers), while the
        # next few thousand customers in id order already hold a page of them. So this walk
        # is asked first, and the index only when it found less than a page.
        "walk": f"SELECT * FROM (SELECT * FROM customers WHERE id > ? ORDER BY id LIMIT "
                f"{_WALK_ROWS}) c WHERE {_WORDS} @@ to_tsquery('simple', ?) ORDER BY id LIMIT ?",
    },
}


@translated("console: search customers")
async def search_customers(
    conn: Connection, text: str, *, after: int = 0, limit: int = 25
) -> SearchPage:
    text = text.strip()
    sql = _SEARCH[conn.engine]
    if "@" in text and " " not in text:
        # An address (or its start): the unique index on the address, as a range.
        rows = await conn.execute_fetchall(
            sql["address"], (text, text + "\U0010ffff", after, limit + 1))
    else:
        if conn.engine == "postgresql":
            expression = tsquery_expression(text)
        else:
            expression = match_expression(text)
        if expression is None:
            return SearchPage([], None)
        rows = []
        if "walk" in sql:
            rows = list(await conn.execute_fetchall(sql["walk"], (after, expression,
                                                                  limit + 1)))
        if len(rows) <= limit:
            rows = list(await conn.execute_fetchall(sql["words"],
                                                    (expression, after, limit + 1)))
    found = [_customer(r) for r in rows]
    if len(found) > limit:
        return SearchPage(found[:limit], found[limit - 1].id)
    return SearchPage(found, None)


@translated("console: customer")
async def customer(conn: Connection, customer_id: int) -> Customer | None:
    async with conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)) as cur:
        row = await cur.fetchone()
    return _customer(row) if row else None


@translated("console: deliverability")
async def deliverability(conn: Connection, customer_id: int) -> Deliverability:
    rows = await conn.execute_fetchall(
        "SELECT status, count(*) AS n FROM campaign_recipients WHERE customer_id = ? "
        "GROUP BY status", (customer_id,))
    by_status = {r["status"]: int(r["n"]) for r in rows}
    async with conn.execute(
        "SELECT last_reply FROM campaign_recipients WHERE customer_id = ? AND status = 'failed' "
        "ORDER BY updated_at DESC LIMIT 1", (customer_id,)) as cur:
        last = await cur.fetchone()
    async with conn.execute(
        "SELECT count(*) FROM outbox WHERE customer_id = ? AND status = 'failed'",
        (customer_id,)) as cur:
        outbox = await cur.fetchone()
    return Deliverability(
        sent=by_status.get("sent", 0), failed=by_status.get("failed", 0),
        skipped=by_status.get("skipped", 0), last_failure=last[0] if last else "",
        confirmations_failed=int(outbox[0]) if outbox else 0)


@translated("console: opted in counts")
async def opted_in_counts(conn: Connection) -> dict[str, int]:
    """How many customers are opted in to each category now."""
    # The category names are columns of customers; CATEGORIES is the only source of them.
    sums = ", ".join(f"coalesce(sum({c}), 0) AS {c}" for c in CATEGORIES)
    async with conn.execute(f"SELECT {sums} FROM customers") as cur:
        row = await cur.fetchone()
    return {c: int(row[c]) if row else 0 for c in CATEGORIES}


@translated("console: queue facts")
async def queue_facts(conn: Connection) -> QueueFacts:
    async with conn.execute(
        "SELECT (SELECT count(*) FROM review_items WHERE status = 'open'), "
        "(SELECT count(*) FROM outbox WHERE status = 'pending'), "
        "(SELECT count(*) FROM outbox WHERE status = 'failed')") as cur:
        row = await cur.fetchone()
    assert row is not None
    return QueueFacts(review_open=int(row[0]), outbox_pending=int(row[1]),
                      outbox_failed=int(row[2]))


@dataclass(frozen=True)
class Progress:
    """A campaign's ledger in numbers (as `campaigns.model.Counts`, without importing above
    the store)."""

    audience: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0


@translated("console: campaign progress")
async def campaign_progress(conn: Connection, campaign_id: int) -> Progress:
    """A campaign's ledger counts from the running totals (migration 3), not the ledger."""
    rows = await conn.execute_fetchall(
        "SELECT status, n FROM campaign_progress WHERE campaign_id = ?", (campaign_id,))
    by_status = {r["status"]: int(r["n"]) for r in rows}
    return Progress(
        audience=sum(by_status.values()), sent=by_status.get("sent", 0),
        failed=by_status.get("failed", 0), skipped=by_status.get("skipped", 0),
        pending=by_status.get("pending", 0) + by_status.get("sending", 0))


@translated("console: optouts per day")
async def optouts_per_day(
    conn: Connection, since_day: str
) -> dict[tuple[str, str], int]:
    """(day, source) -> preferences turned off that day (UTC days, `YYYY-MM-DD`)."""
    rows = await conn.execute_fetchall(
        "SELECT day, source, count FROM optouts_daily WHERE day >= ?", (since_day,))
    return {(r["day"], r["source"]): int(r["count"]) for r in rows}


@translated("console: sends per day")
async def sends_per_day(conn: Connection, since_day: str) -> dict[str, int]:
    """day -> campaign messages sent that day (UTC)."""
    rows = await conn.execute_fetchall(
        "SELECT day, count FROM sends_daily WHERE day >= ?", (since_day,))
    return {r["day"]: int(r["count"]) for r in rows}


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str  # UTC, ISO 8601
    actor: str  # a console user's name, or "cli" for `mailer users …`
    action: str
    target: str


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]  # newest first
    next_before: int | None  # the id to continue before, or None on the last page


@translated("console: audit log")
async def audit_page(conn: Connection, *, before: int = 0,
                     limit: int = 50) -> AuditPage:
    """Who did what and when (`console_audit`, console and CLI alike), newest first, a page
    of `limit` entries older than the entry `before` (0: from the newest); keyset-paged."""
    rows = list(await conn.execute_fetchall(
        "SELECT id, at, actor, action, target FROM console_audit WHERE (? = 0 OR id < ?) "
        "ORDER BY id DESC LIMIT ?", (before, before, limit + 1)))
    entries = [AuditEntry(r["id"], r["at"], r["actor"], r["action"], r["target"])
               for r in rows[:limit]]
    return AuditPage(entries, entries[-1].id if len(rows) > limit else None)
