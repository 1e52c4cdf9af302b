"""Customers, their preferences and the consent events that record every change.

A preference only ever changes here, and always together with a consent event in the same
transaction. An opt-out made by request (email, one-click, operator) is never reversed by an
import: only a newer request could do that, and no request ever opts anyone in. Opting back
in (`opt_in`) is for the customer on the preference page, or a person acting for them.

Longer than most modules (about 500 lines) because it is the one owner of the `customers` and
`consent_events` tables: reads, opting out, opting in and the streaming CSV import. The import
(the second half) is the part to move out if it grows further.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from mailer.categories import CATEGORIES
from mailer.categories import check as check_category
from mailer.errors import StoreError
from mailer.importer import BadRow, CustomerRow
from mailer.store.db import transaction, utcnow
from mailer.store.edge import translated

_BATCH = 5000


@dataclass(frozen=True)
class Customer:
    id: int
    email: str
    name: str
    company: str
    phone: str
    preferences: dict[str, bool]


@dataclass(frozen=True)
class ConsentEvent:
    at: str
    category: str
    old_value: bool | None
    new_value: bool
    source: str
    reference: str
    actor: str = ""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    # (line, email, category): rows that asked to opt back in someone who opted out by request.
    kept_opt_outs: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_rows


def _customer(row: aiosqlite.Row) -> Customer:
    return Customer(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        company=row["company"],
        phone=row["phone"],
        preferences={c: bool(row[c]) for c in CATEGORIES},
    )


@translated("customers: get by email")
async def get_by_email(conn: aiosqlite.Connection, email: str) -> Customer | None:
    async with conn.execute("SELECT * FROM customers WHERE email = ?", (email.strip(),)) as cur:
        row = await cur.fetchone()
    return _customer(row) if row else None


@translated("customers: get many")
async def get_many(conn: aiosqlite.Connection, ids: Sequence[int]) -> list[Customer]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = await conn.execute_fetchall(
        f"SELECT * FROM customers WHERE id IN ({marks}) ORDER BY id", tuple(ids))
    return [_customer(r) for r in rows]


@translated("customers: history")
async def history(conn: aiosqlite.Connection, customer_id: int) -> list[ConsentEvent]:
    async with conn.execute(
        "SELECT at, category, old_value, new_value, source, reference, actor FROM consent_events "
        "WHERE customer_id = ? ORDER BY id",
        (customer_id,),
    ) as cur:
        rows = await cur.fetchall()
    return [
        ConsentEvent(
            at=r["at"],
            category=r["category"],
            old_value=None if r["old_value"] is None else bool(r["old_value"]),
            new_value=bool(r["new_value"]),
            source=r["source"],
            reference=r["reference"],
            actor=r["actor"],
        )
        for r in rows
    ]


@translated("customers: count")
async def count(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT count(*) FROM customers") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


# --- lookups for matching -------------------------------------------------------------------


@translated("customers: ids by address")
async def ids_by_address(conn: aiosqlite.Connection, addresses: Iterable[str]) -> dict[str, int]:
    wanted = sorted({a.lower() for a in addresses if a})
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    rows = await conn.execute_fetchall(
        f"SELECT id, email FROM customers WHERE email IN ({marks})", tuple(wanted))
    return {r["email"].lower(): r["id"] for r in rows}


async def _ids_by_key(
    conn: aiosqlite.Connection, column: str, keys: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    wanted = sorted({k for k in keys if k})
    found: dict[str, list[int]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = await conn.execute_fetchall(
            f"SELECT id, {column} AS k FROM customers WHERE {column} IN ({marks}) ORDER BY id",
            tuple(chunk),
        )
        for r in rows:
            found.setdefault(r["k"], []).append(r["id"])
    return {k: tuple(v) for k, v in found.items()}


@translated("customers: ids by name key")
async def ids_by_name_key(
    conn: aiosqlite.Connection, keys: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    return await _ids_by_key(conn, "name_key", keys)


@translated("customers: ids by company key")
async def ids_by_company_key(
    conn: aiosqlite.Connection, keys: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    return await _ids_by_key(conn, "company_key", keys)


# --- changing preferences -------------------------------------------------------------------


@translated("customers: turn off")
async def turn_off(
    conn: aiosqlite.Connection,
    requests: Sequence[tuple[int, str]],
    categories: Sequence[str],
    *,
    source: str,
    actor: str = "",
) -> dict[int, list[str]]:
    """Turn `categories` off for each (customer id, reference), in order, recording a consent
    event per actual change (the first request to change a preference is its reference).

    Must run inside the caller's transaction. Returns, per customer, the categories that
    changed. Never opts anyone in. Pending campaign mail of those categories is skipped in the
    same transaction, so no campaign can mail them after this commits. Only
    `mailer.consent.optout.opt_out` calls it: every refusal goes through there, so none can
    leave out the confirmation it owes.
    """
    for category in categories:
        check_category(category)
    ids = sorted({cid for cid, _ in requests})
    if not ids:
        return {}
    now = utcnow()
    current: dict[int, dict[str, bool]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await conn.execute_fetchall(
            "SELECT id, announcements, offers FROM customers "
            f"WHERE id IN ({','.join('?' * len(chunk))})",
            tuple(chunk),
        )
        current.update({r["id"]: {c: bool(r[c]) for c in CATEGORIES} for r in rows})
    changed: dict[int, list[str]] = {}
    events: list[tuple[int, str, str, str, str, str]] = []
    for customer_id, reference in requests:
        prefs = current.get(customer_id)
        if prefs is None:
            continue
        for category in categories:
            if prefs[category]:
                prefs[category] = False
                changed.setdefault(customer_id, []).append(category)
                events.append((customer_id, now, category, source, reference, actor))
    if not events:
        return changed
    await conn.executemany(
        "INSERT INTO consent_events (customer_id, at, category, old_value, new_value, source, "
        "reference, actor) VALUES (?, ?, ?, 1, 0, ?, ?, ?)",
        events,
    )
    for category in categories:
        for_category = [(now, cid) for cid, cats in changed.items() if category in cats]
        if not for_category:
            continue
        await conn.executemany(
            f"UPDATE customers SET {category} = 0, updated_at = ? WHERE id = ?", for_category)
        await conn.executemany(
            "UPDATE campaign_recipients SET status = 'skipped', updated_at = ?, "
            "last_reply = 'opted out before sending' "
            "WHERE customer_id = ? AND status = 'pending' AND campaign_id IN "
            f"(SELECT id FROM campaigns WHERE kind = '{category}')",
            for_category,
        )
    return changed


# Sources that may opt a customer back in: the customer on the preference page (the link's
# token proves who it is), or a person acting for them. An email, a click of one-click
# unsubscribe or a complaint only ever opts out.
OPT_IN_SOURCES = frozenset({"preference page", "console", "operator"})


@translated("customers: opt in")
async def opt_in(
    conn: aiosqlite.Connection,
    customer_id: int,
    categories: Sequence[str],
    *,
    source: str,
    reference: str,
    actor: str = "",
) -> list[str]:
    """Turn `categories` on for one customer, recording a consent event per actual change.

    Must run inside the caller's transaction (the preference page turns other categories off
    through `mailer.consent.optout` in the same one). Returns the categories that changed;
    an unknown customer changes nothing. Raises ValueError for an unknown category or a
    source that may not opt anyone in.
    """
    if source not in OPT_IN_SOURCES:
        raise ValueError(f"source {source!r} may not opt anyone in")
    for category in categories:
        check_category(category)
    async with conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return []
    changed = [c for c in dict.fromkeys(categories) if not row[c]]
    if not changed:
        return []
    now = utcnow()
    await conn.executemany(
        "INSERT INTO consent_events (customer_id, at, category, old_value, new_value, source, "
        "reference, actor) VALUES (?, ?, ?, 0, 1, ?, ?, ?)",
        [(customer_id, now, c, source, reference, actor) for c in changed],
    )
    for category in changed:
        await conn.execute(f"UPDATE customers SET {category} = 1, updated_at = ? WHERE id = ?",
                           (now, customer_id))
    return changed


@translated("customers: get")
async def get(conn: aiosqlite.Connection, customer_id: int) -> Customer | None:
    """One customer by id, or None (never existed, or erased)."""
    async with conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)) as cur:
        row = await cur.fetchone()
    return _customer(row) if row else None


async def check_usable(conn: aiosqlite.Connection) -> None:
    """Raise StoreError unless the database answers a read (health checks)."""
    try:
        async with conn.execute("SELECT 1 FROM customers LIMIT 1") as cur:
            await cur.fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"database cannot be read: {exc}") from exc


# --- import ---------------------------------------------------------------------------------


@translated("customers: import customers")
async def import_customers(
    conn: aiosqlite.Connection,
    rows: AsyncIterator[CustomerRow | BadRow],
    *,
    reference: str,
) -> ImportReport:
    """Upsert every row in one transaction; if any row is bad, change nothing.

    Rows stream into a temporary table in batches, so memory stays flat for a million rows;
    duplicates and the request-made opt-outs are then found with SQL.
    """
    report = ImportReport()
    now = utcnow()
    async with transaction(conn):
        await conn.execute("DROP TABLE IF EXISTS temp.import_rows")
        await conn.execute(
            "CREATE TEMP TABLE import_rows (line INTEGER PRIMARY KEY, email TEXT NOT NULL "
            "COLLATE NOCASE, name TEXT, company TEXT, phone TEXT, name_key TEXT, "
            "company_key TEXT, announcements INTEGER, offers INTEGER, customer_id INTEGER, "
            "keep_announcements INTEGER NOT NULL DEFAULT 0, keep_offers INTEGER NOT NULL "
            "DEFAULT 0, is_new INTEGER NOT NULL DEFAULT 0)"
        )
        batch: list[tuple[Any, ...]] = []
        async for item in rows:
            if isinstance(item, BadRow):
                report.bad_rows.append(item)
                continue
            batch.append((
                item.line, item.email, item.name, item.company, item.phone, item.name_key,
                item.company_key, _flag(item.announcements), _flag(item.offers),
            ))
            if len(batch) >= _BATCH:
                await _insert_batch(conn, batch)
                batch = []
        if batch:
            await _insert_batch(conn, batch)
        await conn.execute("CREATE INDEX temp.import_rows_email ON import_rows (email)")
        async with conn.execute(
            "SELECT email, group_concat(line) AS lines FROM import_rows GROUP BY email "
            "HAVING count(*) > 1"
        ) as cur:
            for r in await cur.fetchall():
                lines = [int(x) for x in str(r["lines"]).split(",")]
                for line in sorted(lines)[1:]:
                    report.bad_rows.append(
                        BadRow(line, f"email '{r['email']}' appears more than once "
                                     f"(first on line {min(lines)})")
                    )
        if report.bad_rows:
            report.bad_rows.sort(key=lambda b: b.line)
            await conn.execute("DROP TABLE temp.import_rows")
            raise _Rollback(report)
        await _apply_import(conn, report, now, reference)
        await conn.execute("DROP TABLE temp.import_rows")
    return report


class _Rollback(Exception):
    def __init__(self, report: ImportReport) -> None:
        super().__init__("import has bad rows")
        self.report = report


@translated("customers: import customers atomically")
async def import_customers_atomically(
    conn: aiosqlite.Connection,
    rows: AsyncIterator[CustomerRow | BadRow],
    *,
    reference: str,
) -> ImportReport:
    """Like import_customers, but a file with bad rows returns its report instead of raising."""
    try:
        return await import_customers(conn, rows, reference=reference)
    except _Rollback as rollback:
        return rollback.report


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


async def _insert_batch(conn: aiosqlite.Connection, batch: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        "INSERT INTO import_rows (line, email, name, company, phone, name_key, company_key, "
        "announcements, offers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )


async def _apply_import(
    conn: aiosqlite.Connection, report: ImportReport, now: str, reference: str
) -> None:
    await conn.execute(
        "UPDATE import_rows SET customer_id = c.id FROM customers c "
        "WHERE c.email = import_rows.email"
    )
    for category in CATEGORIES:
        # An opt-in in the file never reverses an opt-out whose latest event is a request.
        await conn.execute(
            f"UPDATE import_rows SET keep_{category} = 1 FROM customers c "
            f"WHERE c.id = import_rows.customer_id AND import_rows.{category} = 1 "
            f"AND c.{category} = 0 AND (SELECT e.source FROM consent_events e "
            f"WHERE e.customer_id = c.id AND e.category = '{category}' "
            f"ORDER BY e.id DESC LIMIT 1) IS NOT 'import'"
        )
        async with conn.execute(
            f"SELECT line, email FROM import_rows WHERE keep_{category} = 1 ORDER BY line"
        ) as cur:
            for r in await cur.fetchall():
                report.kept_opt_outs.append((r["line"], r["email"], category))
    report.kept_opt_outs.sort()

    # Known customers: details, then each preference that really changes, with its event.
    changed_lines: set[int] = set()
    async with conn.execute(
        "SELECT r.line FROM import_rows r JOIN customers c ON c.id = r.customer_id "
        "WHERE r.name IS NOT c.name OR r.company IS NOT c.company OR r.phone IS NOT c.phone "
        "OR r.email IS NOT c.email COLLATE BINARY "
        "OR (r.announcements IS NOT NULL AND r.announcements != c.announcements "
        "    AND r.keep_announcements = 0) "
        "OR (r.offers IS NOT NULL AND r.offers != c.offers AND r.keep_offers = 0)"
    ) as cur:
        changed_lines = {r["line"] for r in await cur.fetchall()}
    for category in CATEGORIES:
        where = (
            f"r.customer_id IS NOT NULL AND r.{category} IS NOT NULL "
            f"AND r.{category} != c.{category} AND r.keep_{category} = 0"
        )
        await conn.execute(
            "INSERT INTO consent_events (customer_id, at, category, old_value, new_value, "
            f"source, reference) SELECT c.id, ?, '{category}', c.{category}, r.{category}, "
            f"'import', ? FROM import_rows r JOIN customers c ON c.id = r.customer_id "
            f"WHERE {where} ORDER BY r.line",
            (now, reference),
        )
        await conn.execute(
            f"UPDATE customers SET {category} = r.{category}, updated_at = ? FROM import_rows r "
            f"WHERE r.customer_id = customers.id AND r.{category} IS NOT NULL "
            f"AND r.{category} != customers.{category} AND r.keep_{category} = 0",
            (now,),
        )
    await conn.execute(
        "UPDATE customers SET name = r.name, company = r.company, phone = r.phone, "
        "email = r.email, name_key = r.name_key, company_key = r.company_key, updated_at = ? "
        "FROM import_rows r WHERE r.customer_id = customers.id AND (r.name IS NOT customers.name "
        "OR r.company IS NOT customers.company OR r.phone IS NOT customers.phone "
        "OR r.email IS NOT customers.email COLLATE BINARY)",
        (now,),
    )
    report.updated = len(changed_lines)

    # New customers: opted in unless the file says otherwise; their starting state is an event.
    async with conn.execute(
        "SELECT count(*) FROM import_rows WHERE customer_id IS NULL"
    ) as cur:
        row = await cur.fetchone()
    report.created = int(row[0]) if row else 0
    async with conn.execute("SELECT count(*) FROM import_rows") as cur:
        row = await cur.fetchone()
    total = int(row[0]) if row else 0
    report.unchanged = total - report.created - report.updated
    await conn.execute("UPDATE import_rows SET is_new = 1 WHERE customer_id IS NULL")
    await conn.execute(
        "INSERT INTO customers (email, name, company, phone, name_key, company_key, "
        "announcements, offers, created_at, updated_at) SELECT email, name, company, phone, "
        "name_key, company_key, coalesce(announcements, 1), coalesce(offers, 1), ?, ? "
        "FROM import_rows WHERE customer_id IS NULL ORDER BY line",
        (now, now),
    )
    await conn.execute(
        "UPDATE import_rows SET customer_id = c.id FROM customers c "
        "WHERE import_rows.customer_id IS NULL AND c.email = import_rows.email"
    )
    for category in CATEGORIES:
        await conn.execute(
            "INSERT INTO consent_events (customer_id, at, category, old_value, new_value, "
            f"source, reference) SELECT c.id, ?, '{category}', NULL, c.{category}, 'import', ? "
            "FROM import_rows r JOIN customers c ON c.id = r.customer_id WHERE r.is_new = 1 "
            "ORDER BY r.line",
            (now, reference),
        )
