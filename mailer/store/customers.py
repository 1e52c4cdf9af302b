"""Customers, their preferences and the consent events that record every change.

A preference only ever changes here (or in `store.imports`), and always together with a
consent event in the same transaction. An opt-out made by request (email, one-click, operator)
is never reversed by an import: only a newer request could do that, and no request ever opts
anyone in. Opting back in (`opt_in`) is for the customer on the preference page, or a person
acting for them.

It owns the `customers` and `consent_events` tables: reads, the look-ups for matching, turning
categories off and on. The streaming CSV import writes them too, from `store.imports`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailer.categories import CATEGORIES
from mailer.categories import check as check_category
from mailer.errors import StoreError
from mailer.store.db import utcnow
from mailer.store.edge import translated
from mailer.store.engine import DRIVER_ERRORS, Connection, StoredRow, int_array
from mailer.store.evidence import COLUMNS as EVIDENCE_COLUMNS
from mailer.store.evidence import NO_EVIDENCE, EventEvidence, from_row

# The column an address is compared on, as each engine's unique index on it is written: SQLite's
# `email` is COLLATE NOCASE; PostgreSQL's index is on lower(email) (ASCII folding under
# COLLATE "C", as NOCASE). Comparing lower(email) on SQLite would scan the table.
EMAIL_KEY = {"sqlite": "email", "postgresql": "lower(email)"}


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
    evidence: EventEvidence = NO_EVIDENCE


# The INSERT of one consent event with its evidence (store.evidence); old and new value fixed
# by the caller's statement.
_EVENT_COLUMNS = ("customer_id, at, category, old_value, new_value, source, reference, actor, "
                  + ", ".join(EVIDENCE_COLUMNS))
_EVENT_MARKS = ", ".join("?" * (len(EVIDENCE_COLUMNS) + 3))


def _customer(row: StoredRow) -> Customer:
    return Customer(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        company=row["company"],
        phone=row["phone"],
        preferences={c: bool(row[c]) for c in CATEGORIES},
    )


@translated("customers: get by email")
async def get_by_email(conn: Connection, email: str) -> Customer | None:
    key = EMAIL_KEY[conn.engine]
    async with conn.execute(f"SELECT * FROM customers WHERE {key} = lower(?)",
                            (email.strip(),)) as cur:
        row = await cur.fetchone()
    return _customer(row) if row else None


@translated("customers: get many")
async def get_many(conn: Connection, ids: Sequence[int]) -> list[Customer]:
    if not ids:
        return []
    condition, parameters = conn.one_of("id", ids)
    rows = await conn.execute_fetchall(
        f"SELECT * FROM customers WHERE {condition} ORDER BY id", parameters)
    return [_customer(r) for r in rows]


@translated("customers: history")
async def history(conn: Connection, customer_id: int) -> list[ConsentEvent]:
    async with conn.execute(
        "SELECT * FROM consent_events WHERE customer_id = ? ORDER BY id",
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
            evidence=from_row(r),
        )
        for r in rows
    ]


@translated("customers: count")
async def count(conn: Connection) -> int:
    async with conn.execute("SELECT count(*) FROM customers") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


# --- lookups for matching -------------------------------------------------------------------


@translated("customers: ids by address")
async def ids_by_address(conn: Connection, addresses: Iterable[str]) -> dict[str, int]:
    wanted = sorted({a.lower() for a in addresses if a})
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    rows = await conn.execute_fetchall(
        f"SELECT id, email FROM customers WHERE {EMAIL_KEY[conn.engine]} IN ({marks})",
        tuple(wanted))
    return {r["email"].lower(): r["id"] for r in rows}


async def _ids_by_key(
    conn: Connection, column: str, keys: Iterable[str]
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
    conn: Connection, keys: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    return await _ids_by_key(conn, "name_key", keys)


@translated("customers: ids by company key")
async def ids_by_company_key(
    conn: Connection, keys: Iterable[str]
) -> dict[str, tuple[int, ...]]:
    return await _ids_by_key(conn, "company_key", keys)


# --- changing preferences -------------------------------------------------------------------


@translated("customers: turn off")
async def turn_off(
    conn: Connection,
    requests: Sequence[tuple[int, str]],
    categories: Sequence[str],
    *,
    source: str,
    actor: str = "",
    evidence: Sequence[EventEvidence] = (),
) -> dict[int, list[str]]:
    """Turn `categories` off for each (customer id, reference), in order, recording a consent
    event per actual change (the first request to change a preference is its reference, and
    its `evidence`, aligned with `requests`, what proves it; none given: no evidence).

    Must run inside the caller's transaction. Returns, per customer, the categories that
    changed. Never opts anyone in. Pending campaign mail of those categories is skipped in the
    same transaction, so no campaign can mail them after this commits. Only
    `mailer.consent.change.opt_out` calls it: every refusal goes through there, so none can
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
        condition, parameters = conn.one_of("id", chunk)
        rows = await conn.execute_fetchall(
            f"SELECT id, announcements, offers FROM customers WHERE {condition}", parameters)
        current.update({r["id"]: {c: bool(r[c]) for c in CATEGORIES} for r in rows})
    changed: dict[int, list[str]] = {}
    events: list[tuple[object, ...]] = []
    for index, (customer_id, reference) in enumerate(requests):
        prefs = current.get(customer_id)
        if prefs is None:
            continue
        proof = evidence[index] if index < len(evidence) else NO_EVIDENCE
        for category in categories:
            if prefs[category]:
                prefs[category] = False
                changed.setdefault(customer_id, []).append(category)
                events.append((customer_id, now, category, source, reference, actor,
                               *proof.values()))
    if not events:
        return changed
    await conn.executemany(
        f"INSERT INTO consent_events ({_EVENT_COLUMNS}) "
        f"VALUES (?, ?, ?, 1, 0, {_EVENT_MARKS})",
        events,
    )
    for category in categories:
        for_category = [(now, cid) for cid, cats in changed.items() if category in cats]
        if not for_category:
            continue
        await conn.executemany(
            f"UPDATE customers SET {category} = 0, updated_at = ? WHERE id = ?", for_category)
        # Named by (campaign not yet ended, customer), a key look-up each: asked by customer
        # alone, both engines' planners may walk a campaign's pending rows instead, a cost
        # that grows with the audience on every opt-out. One statement for them all
        # (PostgreSQL's progress triggers run once per statement).
        campaigns = [int(r[0]) for r in await conn.execute_fetchall(
            "SELECT id FROM campaigns WHERE kind = ? "
            "AND status NOT IN ('sent', 'cancelled', 'failed')", (category,))]
        targets = [(campaign, cid) for campaign in campaigns for _, cid in for_category]
        for start in range(0, len(targets), 500):
            part = targets[start:start + 500]
            if conn.engine == "postgresql":
                pairs = "SELECT * FROM unnest(?::bigint[], ?::bigint[])"
                values: tuple[object, ...] = (int_array(c for c, _ in part),
                                              int_array(c for _, c in part))
            else:
                pairs = f"VALUES {','.join('(?, ?)' for _ in part)}"
                values = tuple(v for pair in part for v in pair)
            await conn.execute(
                f"WITH r (campaign_id, customer_id) AS ({pairs}) "
                "UPDATE campaign_recipients SET status = 'skipped', updated_at = ?, "
                "last_reply = 'opted out before sending' FROM r "
                "WHERE campaign_recipients.campaign_id = r.campaign_id "
                "AND campaign_recipients.customer_id = r.customer_id "
                "AND campaign_recipients.status = 'pending'",
                (*values, now))
    return changed


# Sources that may opt a customer back in: the customer on the preference page (the link's
# token proves who it is), a person acting for them (console, operator, an import naming the
# consent), or a reviewer who read the customer's email asking for it ("email (reviewed)").
# An email by itself, a click of one-click unsubscribe or a complaint only ever opts out.
OPT_IN_SOURCES = frozenset({"preference page", "console", "operator", "email (reviewed)"})


@translated("customers: opt in")
async def opt_in(
    conn: Connection,
    customer_id: int,
    categories: Sequence[str],
    *,
    source: str,
    reference: str,
    actor: str = "",
    evidence: EventEvidence = NO_EVIDENCE,
) -> list[str]:
    """Turn `categories` on for one customer, recording a consent event per actual change.

    Must run inside the caller's transaction; only `mailer.consent.change.change_consent`
    calls it, which turns the other categories off in the same one. Returns the categories
    that changed; an unknown customer changes nothing. Raises ValueError for an unknown
    category or a
    source that may not opt anyone in.
    """
    if source not in OPT_IN_SOURCES:
        raise ValueError(f"source {source!r} may not opt anyone in")
    for category in categories:
        check_category(category)
    async with conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)) as cur:
        row = await cur.fetchone()
    if row is None or row["erased_at"] is not None:
        return []  # an erased customer is opted out of everything for good
    changed = [c for c in dict.fromkeys(categories) if not row[c]]
    if not changed:
        return []
    now = utcnow()
    await conn.executemany(
        f"INSERT INTO consent_events ({_EVENT_COLUMNS}) "
        f"VALUES (?, ?, ?, 0, 1, {_EVENT_MARKS})",
        [(customer_id, now, c, source, reference, actor, *evidence.values()) for c in changed],
    )
    for category in changed:
        await conn.execute(f"UPDATE customers SET {category} = 1, updated_at = ? WHERE id = ?",
                           (now, customer_id))
    return changed


@translated("customers: get")
async def get(conn: Connection, customer_id: int) -> Customer | None:
    """One customer by id, or None (never existed, or erased)."""
    async with conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)) as cur:
        row = await cur.fetchone()
    return _customer(row) if row else None


async def check_usable(conn: Connection) -> None:
    """Raise StoreError unless the database answers a read (health checks)."""
    try:
        async with conn.execute("SELECT 1 FROM customers LIMIT 1") as cur:
            await cur.fetchone()
    except DRIVER_ERRORS as exc:
        raise StoreError(f"database cannot be read: {exc}") from exc
