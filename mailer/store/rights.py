"""The SQL of a customer's data rights: every table's rows for one person (access,
portability), the erasure in one transaction, the suppression list, and the IMAP clean-ups
still to do.

Every table of the database is in exactly one of `PERSONAL` (how to find one person's rows)
or `NOT_PERSONAL` (why it holds nothing about a person); a test enumerates the database's
tables (`tables`), so a new table fails it until it is placed here and the export and erasure
know about it.

An erased customer keeps its row and id (consent events and the ledger point to it, so the
counts stay true) with every personal field blanked. Erased means gone from the files too.
On SQLite the erasing connection turns on `PRAGMA secure_delete` (freed space is overwritten
with zeros), merges the full-text index (an FTS5 delete only adds a marker until the segments
merge) and checkpoints the write-ahead log with TRUNCATE afterwards, so older page images
holding the address are not left in the -wal file.

PostgreSQL never overwrites a row in place: an UPDATE leaves the old version (a dead tuple,
the address in it) in the table and its index entries (the GIN search index too) until a
VACUUM removes them, which autovacuum does only when enough of a table has changed. So after
the erasure commits, `flush` runs VACUUM on each table the erasure wrote, which removes the dead
versions from tables and their index entries from the indexes. What PostgreSQL still keeps,
and we cannot clear from here: freed space is not zeroed until a page is reused (a GIN index
may keep a word as a key with no rows left under it), a VACUUM cannot remove versions that an
older transaction (another host's) may still see (the next autovacuum does), and the WAL
segments, WAL archives and base backups hold the old values until they are recycled or expire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from mailer.store.db import transaction, utcnow
from mailer.store.edge import translated
from mailer.store.engine import Connection
from mailer.store.evidence import PERSONAL_COLUMNS

ERASED = "[erased]"

# table -> SQL selecting one person's rows (`:id` the customer id, `:email` the address).
PERSONAL: dict[str, str] = {
    "customers": "SELECT * FROM customers WHERE id = :id",
    "consent_events": "SELECT * FROM consent_events WHERE customer_id = :id ORDER BY id",
    "outbox": "SELECT * FROM outbox WHERE customer_id = :id ORDER BY id",
    "campaign_recipients": "SELECT * FROM campaign_recipients WHERE customer_id = :id "
                           "ORDER BY campaign_id",
    "campaigns": "SELECT * FROM campaigns WHERE id IN (SELECT campaign_id FROM "
                 "campaign_recipients WHERE customer_id = :id) ORDER BY id",
    "delivery_reports": "SELECT * FROM delivery_reports WHERE customer_id = :id ORDER BY id",
    "delivery_events": "SELECT * FROM delivery_events WHERE customer_id = :id ORDER BY id",
    "undeliverable": "SELECT * FROM undeliverable WHERE customer_id = :id",
    "report_moves": "SELECT * FROM report_moves WHERE report_id IN (SELECT id FROM "
                    "delivery_reports WHERE customer_id = :id)",
    # Requests from them or that opted them out (their Message-ID is the event's reference).
    "inbound": "SELECT * FROM inbound WHERE message_id != '' AND message_id IN (SELECT "
               "reference FROM consent_events WHERE customer_id = :id AND source = 'email' "
               "UNION SELECT message_id FROM review_items WHERE sender = :email) ORDER BY id",
    "review_items": "SELECT * FROM review_items WHERE sender = :email OR (message_id != '' AND "
                    "message_id IN (SELECT reference FROM consent_events WHERE customer_id = "
                    ":id AND source = 'email')) ORDER BY id",
    "erasures": "SELECT * FROM erasures WHERE customer_id = :id",
}

# Tables that hold nothing about one person, and why.
NOT_PERSONAL: dict[str, str] = {
    "mailbox_state": "where the inbox worker has got to",
    "leases": "which process holds which job",
    "daemon_heartbeat": "the daemon's health",
    "console_users": "staff accounts",
    "console_sessions": "staff sessions",
    "console_login_failures": "staff login throttling",
    "console_audit": "staff actions (targets are ids and file names)",
    "optouts_daily": "counts per day",
    "sends_daily": "counts per day",
    "campaign_progress": "counts per campaign",
    "campaign_test_copies": "test copies sent per campaign and day (counts, no address)",
    "doctor_runs": "results of `mailer doctor` at daemon start (our DNS and servers, no customer)",
    "suppression_entries": "keyed digests, no address",
    "erasure_imap_pending": "clean-ups to do (emptied when done)",
    "customers_search": "the index of `customers` (its rows are the customer's)",
    "schema_version": "the schema's migration number (PostgreSQL)",
}

# Tables whose rows are never updated (the evidence); the sweep leaves them alone.
_PERMANENT = {"consent_events", "delivery_events"}


def suppression_digest(key: bytes, address: str) -> str:
    """The suppression entry of an address: HMAC-SHA256 under our key of the normalised
    address. Keyed because a bare hash of an address is reversed by hashing guesses."""
    normalised = address.strip().lower()
    return hmac.new(key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()


def is_fts_shadow(table: str) -> bool:
    """FTS5's own storage tables (`customers_search_data` ...), part of `customers_search`."""
    return table.startswith("customers_search_")


# Each engine's catalogue: the store's tables, and a table's columns as (name, type, pk).
_CATALOGUE: dict[str, dict[str, str]] = {
    "sqlite": {
        "tables": "SELECT name FROM sqlite_master WHERE type = 'table' "
                  "AND name NOT LIKE 'sqlite_%' ORDER BY name",
        "columns": "SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid",
    },
    "postgresql": {
        "tables": "SELECT table_name AS name FROM information_schema.tables "
                  "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' "
                  "ORDER BY table_name",
        "columns": "SELECT c.column_name AS name, c.data_type AS type, EXISTS (SELECT 1 FROM "
                   "information_schema.table_constraints t JOIN "
                   "information_schema.key_column_usage k ON k.constraint_schema = "
                   "t.constraint_schema AND k.constraint_name = t.constraint_name "
                   "WHERE t.constraint_type = 'PRIMARY KEY' AND t.table_schema = "
                   "c.table_schema AND t.table_name = c.table_name AND k.column_name = "
                   "c.column_name)::int AS pk FROM information_schema.columns c "
                   "WHERE c.table_schema = current_schema() AND c.table_name = ? "
                   "ORDER BY c.ordinal_position",
    },
}


@dataclass(frozen=True)
class Column:
    name: str
    is_text: bool
    is_key: bool  # part of the primary key


@translated("rights: tables")
async def tables(conn: Connection) -> list[str]:
    """Every table of the database (not SQLite's own, not FTS5's storage)."""
    rows = await conn.execute_fetchall(_CATALOGUE[conn.engine]["tables"])
    return [str(r["name"]) for r in rows if not is_fts_shadow(str(r["name"]))]


@translated("rights: columns")
async def columns(conn: Connection, table: str) -> list[Column]:
    """The columns of `table`, in order (none if there is no such table)."""
    rows = await conn.execute_fetchall(_CATALOGUE[conn.engine]["columns"], (table,))
    return [Column(str(r["name"]), "TEXT" in str(r["type"]).upper(), bool(r["pk"]))
            for r in rows]


@translated("rights: rows of one customer")
async def rows_for(conn: Connection, customer_id: int, email: str
                   ) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows about one person, as plain dicts, by table name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for table, sql in PERSONAL.items():
        rows = await conn.execute_fetchall(sql, {"id": customer_id, "email": email})
        found[table] = [dict(r) for r in rows]
    return found


@translated("rights: suppression look-up")
async def suppressed_since(conn: Connection, digest: str) -> str | None:
    """When the address of `digest` was erased, or None if it is not suppressed."""
    async with conn.execute("SELECT created_at FROM suppression_entries WHERE digest = ?",
                            (digest,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else None


@translated("rights: suppression count")
async def suppression_count(conn: Connection) -> int:
    async with conn.execute("SELECT count(*) FROM suppression_entries") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Erased:
    erasure_id: int
    customer_id: int
    # False: a reader held SQLite's WAL (the next checkpoint finishes it), or on PostgreSQL
    # our role does not own a table the erasure wrote, so it could not VACUUM it.
    checkpointed: bool


@translated("rights: erase")
async def erase(conn: Connection, customer_id: int, *, digest: str, reason: str,
                actor: str, imap_terms: list[str]) -> Erased:
    """Blank one customer's personal data everywhere, in one transaction, and record it.

    `imap_terms` (the address and name) are kept in `erasure_imap_pending` until the IMAP
    clean-up has been done (`imap_done`)."""
    await _secure_delete(conn)
    async with conn.execute("SELECT email, name FROM customers WHERE id = ?",
                            (customer_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise ValueError(f"no customer {customer_id}")
    email, name = str(row["email"]), str(row["name"])
    now = utcnow()
    async with transaction(conn, "erasing a customer"):
        await conn.execute(
            "UPDATE customers SET email = ?, name = '', company = '', phone = '', "
            "name_key = '', company_key = '', announcements = 0, offers = 0, updated_at = ?, "
            "erased_at = ? WHERE id = ?",
            (f"erased-{customer_id}@erased.invalid", now, now, customer_id))
        await conn.execute(
            "UPDATE outbox SET status = 'suppressed' WHERE customer_id = ? AND status = 'pending'",
            (customer_id,))
        await conn.execute(
            "UPDATE outbox SET to_address = '', to_name = '', request_subject = '', "
            "in_reply_to = '', refs = '' WHERE customer_id = ?", (customer_id,))
        await conn.execute(
            "UPDATE campaign_recipients SET status = 'skipped', updated_at = ? "
            "WHERE customer_id = ? AND status = 'pending'", (now, customer_id))
        await conn.execute("UPDATE delivery_reports SET diagnostic = '' WHERE customer_id = ?",
                           (customer_id,))
        await conn.execute(
            "UPDATE review_items SET sender = ?, subject = ?, reason = ? WHERE sender = ?",
            (ERASED, ERASED, ERASED, email))
        # Consent events stay (the evidence, pseudonymous once erased) without the personal
        # part of their evidence; the request's From may name them on another's event too.
        blank = ", ".join(f"{c} = ''" for c in PERSONAL_COLUMNS)
        await conn.execute(f"UPDATE consent_events SET {blank} WHERE customer_id = ?",
                           (customer_id,))
        touched = {"customers", "outbox", "campaign_recipients", "delivery_reports",
                   "review_items", "consent_events"}
        for term in _sweep_terms(email, name):
            touched |= await _sweep(conn, term)
            # lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
            await conn.execute("UPDATE consent_events SET message_from = '' "
                               "WHERE lower(message_from) LIKE lower(?) ESCAPE '\\'",
                               (_like(term),))
        # The ledger is the largest table: only this customer's rows (by its index) can hold
        # their address, in a server's reply.
        await conn.execute(
            "UPDATE campaign_recipients SET last_reply = ? WHERE customer_id = ? "
            "AND last_reply != ''", (ERASED, customer_id))
        if conn.engine == "sqlite":
            # An FTS5 delete only marks; merging the segments drops the old terms from the
            # file. (PostgreSQL's GIN index loses them in `flush`'s VACUUM of customers.)
            await conn.execute(
                "INSERT INTO customers_search (customers_search) VALUES ('optimize')")
        await conn.execute(
            "INSERT INTO suppression_entries (digest, created_at) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            (digest, now))
        async with conn.execute(
            "INSERT INTO erasures (customer_id, erased_at, reason, actor) VALUES (?, ?, ?, ?) "
            "RETURNING id", (customer_id, now, reason, actor)) as cursor:
            inserted = await cursor.fetchone()
        erasure_id = int(inserted[0])
        await conn.execute(
            "INSERT INTO erasure_imap_pending (erasure_id, terms, next_attempt_at) "
            "VALUES (?, ?, ?)", (erasure_id, json.dumps([t for t in imap_terms if t]), now))
    return Erased(erasure_id, customer_id, await flush(conn, touched))


def _like(term: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching any text that holds `term`."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _sweep_terms(email: str, name: str) -> list[str]:
    # A short name ("Al") would blank unrelated text; a full name or a longer one is specific.
    return [email] + ([name] if len(name.strip()) >= 4 else [])


async def _sweep(conn: Connection, term: str) -> set[str]:
    """Blank every text value holding `term` in any table but the permanent ones; the tables
    it changed."""
    pattern = _like(term)
    changed: set[str] = set()
    for table in await tables(conn):
        if table in _PERMANENT or table in ("customers", "customers_search",
                                             "campaign_recipients"):
            continue
        for column in await columns(conn, table):
            if not column.is_text or column.is_key:
                continue
            cursor = await conn.execute(
                f"UPDATE {table} SET {column.name} = ? "
                f"WHERE lower({column.name}) LIKE lower(?) ESCAPE '\\'", (ERASED, pattern))
            if cursor.rowcount:
                changed.add(table)
    return changed


async def _secure_delete(conn: Connection) -> None:
    """SQLite: overwrite freed space with zeros. PostgreSQL has no such switch (see `flush`)."""
    if conn.engine == "sqlite":
        await conn.execute("PRAGMA secure_delete = ON")


@translated("rights: flush")
async def flush(conn: Connection, touched: set[str]) -> bool:
    """After a committed erasure, drop the old versions of what it wrote from the files.

    SQLite: copy the WAL into the database and empty it (TRUNCATE); False if a reader held it.
    PostgreSQL: VACUUM each table in `touched` (outside any transaction, as VACUUM must be),
    removing the dead row versions and their index entries (what VACUUM cannot reach is in the
    module docstring); False if our role does not own one of them, since VACUUM would only
    warn and skip it."""
    if conn.engine == "sqlite":
        async with conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
            row = await cur.fetchone()
        return row is not None and int(row[0]) == 0
    owned = {str(r["relname"]) for r in await conn.execute_fetchall(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
        "current_schema()::regnamespace AND pg_has_role(relowner, 'USAGE')")}
    touched = touched & set(await tables(conn))
    for table in sorted(touched & owned):
        # INDEX_CLEANUP ON: left to itself (AUTO) VACUUM may skip the indexes when few
        # rows changed, and an index entry holds its key (the address, in customers_email).
        await conn.execute(f"VACUUM (INDEX_CLEANUP ON) {table}")
    return touched <= owned


@dataclass(frozen=True)
class PendingCleanup:
    erasure_id: int
    terms: tuple[str, ...]
    attempts: int


@translated("rights: pending IMAP clean-ups")
async def pending_cleanups(conn: Connection, *, due_by: str) -> list[PendingCleanup]:
    rows = await conn.execute_fetchall(
        "SELECT erasure_id, terms, attempts FROM erasure_imap_pending "
        "WHERE next_attempt_at <= ? ORDER BY erasure_id", (due_by,))
    return [PendingCleanup(int(r["erasure_id"]), tuple(json.loads(r["terms"])),
                           int(r["attempts"])) for r in rows]


@translated("rights: IMAP clean-up done")
async def cleanup_done(conn: Connection, erasure_id: int) -> None:
    """Forget a finished clean-up's search terms, overwriting them in the file."""
    await _secure_delete(conn)
    async with transaction(conn, "finishing an erasure"):
        await conn.execute("DELETE FROM erasure_imap_pending WHERE erasure_id = ?",
                           (erasure_id,))
    await flush(conn, {"erasure_imap_pending"})


@translated("rights: IMAP clean-up failed")
async def cleanup_failed(conn: Connection, erasure_id: int, *, error: str,
                         next_attempt_at: str) -> None:
    async with transaction(conn, "postponing an erasure's IMAP clean-up"):
        await conn.execute(
            "UPDATE erasure_imap_pending SET attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ? WHERE erasure_id = ?", (error, next_attempt_at, erasure_id))


@dataclass(frozen=True)
class Erasure:
    id: int
    customer_id: int
    erased_at: str
    reason: str
    actor: str


@translated("rights: erasures")
async def erasures(conn: Connection) -> list[Erasure]:
    rows = await conn.execute_fetchall(
        "SELECT id, customer_id, erased_at, reason, actor FROM erasures ORDER BY id")
    return [Erasure(int(r["id"]), int(r["customer_id"]), str(r["erased_at"]), str(r["reason"]),
                    str(r["actor"])) for r in rows]


@translated("rights: erased at")
async def erased_at(conn: Connection, customer_id: int) -> str | None:
    """When customer `customer_id` was erased, or None (not erased, or no such customer)."""
    async with conn.execute("SELECT erased_at FROM customers WHERE id = ?",
                            (customer_id,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row and row[0] else None
