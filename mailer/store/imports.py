"""The streaming CSV import into `customers` and `consent_events`: every row in one
transaction, or none.

Rows stream into a temporary table in batches, so memory stays flat for a million rows;
duplicates, and the opt-outs a file may not reverse (those made by request), are then found
with SQL. `mailer.consent.imports.import_csv` is the one caller outside tests: it reads and
checks the file (`mailer.importer`) and hands the rows here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from mailer.categories import CATEGORIES
from mailer.errors import SettingsError
from mailer.importer import BadRow, CustomerRow
from mailer.store.db import transaction, utcnow
from mailer.store.edge import translated
from mailer.store.engine import Connection
from mailer.store.rights import suppression_count, suppression_digest

_BATCH = 5000

# What SQLite says with the temp table's `COLLATE NOCASE` email column, PostgreSQL says with
# lower() (ASCII-only under COLLATE "C", as NOCASE is); joins to `customers` then use each
# engine's own index on the address (NOCASE on SQLite, lower(email) on PostgreSQL).
_DIALECT: dict[str, dict[str, str]] = {
    "sqlite": {
        "drop": "DROP TABLE IF EXISTS temp.import_rows",
        "email": "email TEXT NOT NULL COLLATE NOCASE",
        "index": "CREATE INDEX temp.import_rows_email ON import_rows (email)",
        "duplicates": "SELECT email, group_concat(line) AS lines FROM import_rows "
                      "GROUP BY email HAVING count(*) > 1",
        "same": "c.email = r.email",
        "recased": "r.email IS NOT c.email COLLATE BINARY",
    },
    "postgresql": {
        "drop": "DROP TABLE IF EXISTS pg_temp.import_rows",
        "email": 'email TEXT COLLATE "C" NOT NULL',
        "index": "CREATE INDEX import_rows_email ON import_rows (lower(email))",
        "duplicates": "SELECT (array_agg(email ORDER BY line))[1] AS email, "
                      "string_agg(line::text, ',') AS lines FROM import_rows "
                      "GROUP BY lower(email) HAVING count(*) > 1",
        "same": "lower(c.email) = lower(r.email)",
        "recased": "r.email IS DISTINCT FROM c.email",
    },
}


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    # (line, email, category): rows that asked to opt back in someone who opted out by request.
    kept_opt_outs: list[tuple[int, str, str]] = field(default_factory=list)
    # (line, email): addresses on the suppression list (erased before), created or kept opted
    # out of everything.
    suppressed: list[tuple[int, str]] = field(default_factory=list)
    # (category, value, why) -> rows: what the file asked for, and whether it said so in a
    # column ("column") or left it to the import's named default ("default").
    consent: dict[tuple[str, bool, str], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.bad_rows

@translated("customers: import customers")
async def import_customers(
    conn: Connection,
    rows: AsyncIterator[CustomerRow | BadRow],
    *,
    reference: str,
    suppression_key: bytes | None = None,
    actor: str = "",
) -> ImportReport:
    """Upsert every row in one transaction; if any row is bad, change nothing. Each consent
    event it writes has source `import`, reference `<reference> line <n>` (the file and the
    row's line) and `actor`.

    A row whose address is on the suppression list (an erased customer's keyed digest) is
    opted out of everything, whatever the file says, and reported in `suppressed`: every way
    an address comes back goes through here. Without `suppression_key` an import is refused
    once the list has entries, since it could not be checked.

    Rows stream into a temporary table in batches, so memory stays flat for a million rows;
    duplicates and the request-made opt-outs are then found with SQL.
    """
    report = ImportReport()
    now = utcnow()
    if suppression_key is None and await suppression_count(conn):
        raise SettingsError("[privacy] suppression_key: not set (MAILER_SUPPRESSION_KEY); "
                            "the suppression list cannot be checked, so nothing was imported")
    async with transaction(conn):
        sql = _DIALECT[conn.engine]
        await conn.execute(sql["drop"])
        await conn.execute(
            f"CREATE TEMP TABLE import_rows (line INTEGER PRIMARY KEY, {sql['email']}, "
            "name TEXT, company TEXT, phone TEXT, name_key TEXT, "
            "company_key TEXT, announcements INTEGER, offers INTEGER, customer_id INTEGER, "
            "keep_announcements INTEGER NOT NULL DEFAULT 0, keep_offers INTEGER NOT NULL "
            "DEFAULT 0, is_new INTEGER NOT NULL DEFAULT 0, digest TEXT, "
            "suppressed INTEGER NOT NULL DEFAULT 0)"
        )
        batch: list[tuple[Any, ...]] = []
        async for item in rows:
            if isinstance(item, BadRow):
                report.bad_rows.append(item)
                continue
            batch.append((
                item.line, item.email, item.name, item.company, item.phone, item.name_key,
                item.company_key, _flag(item.announcements), _flag(item.offers),
                None if suppression_key is None else suppression_digest(suppression_key,
                                                                        item.email),
            ))
            if len(batch) >= _BATCH:
                await _insert_batch(conn, batch)
                batch = []
        if batch:
            await _insert_batch(conn, batch)
        await conn.execute(sql["index"])
        async with conn.execute(sql["duplicates"]) as cur:
            for r in await cur.fetchall():
                lines = [int(x) for x in str(r["lines"]).split(",")]
                for line in sorted(lines)[1:]:
                    report.bad_rows.append(
                        BadRow(line, f"email '{r['email']}' appears more than once "
                                     f"(first on line {min(lines)})")
                    )
        if report.bad_rows:
            report.bad_rows.sort(key=lambda b: b.line)
            await conn.execute(sql["drop"])
            raise _Rollback(report)
        await _apply_import(conn, report, now, reference, actor)
        await conn.execute(sql["drop"])
    return report


class _Rollback(Exception):
    def __init__(self, report: ImportReport) -> None:
        super().__init__("import has bad rows")
        self.report = report


@translated("customers: import customers atomically")
async def import_customers_atomically(
    conn: Connection,
    rows: AsyncIterator[CustomerRow | BadRow],
    *,
    reference: str,
    suppression_key: bytes | None = None,
    actor: str = "",
) -> ImportReport:
    """Like import_customers, but a file with bad rows returns its report instead of raising."""
    try:
        return await import_customers(conn, rows, reference=reference,
                                      suppression_key=suppression_key, actor=actor)
    except _Rollback as rollback:
        return rollback.report


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


async def _insert_batch(conn: Connection, batch: list[tuple[Any, ...]]) -> None:
    await conn.executemany(
        "INSERT INTO import_rows (line, email, name, company, phone, name_key, company_key, "
        "announcements, offers, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )


async def _apply_import(
    conn: Connection, report: ImportReport, now: str, reference: str, actor: str
) -> None:
    sql = _DIALECT[conn.engine]
    await conn.execute(
        "UPDATE import_rows SET suppressed = 1, announcements = 0, offers = 0 "
        "WHERE digest IN (SELECT digest FROM suppression_entries)")
    async with conn.execute(
        "SELECT line, email FROM import_rows WHERE suppressed = 1 ORDER BY line"
    ) as cur:
        report.suppressed = [(r["line"], r["email"]) for r in await cur.fetchall()]
    await conn.execute(
        "UPDATE import_rows AS r SET customer_id = c.id FROM customers c "
        f"WHERE {sql['same']}"
    )
    for category in CATEGORIES:
        # An opt-in in the file never reverses an opt-out whose latest event is a request.
        await conn.execute(
            f"UPDATE import_rows SET keep_{category} = 1 FROM customers c "
            f"WHERE c.id = import_rows.customer_id AND import_rows.{category} = 1 "
            f"AND c.{category} = 0 AND (SELECT e.source FROM consent_events e "
            f"WHERE e.customer_id = c.id AND e.category = '{category}' "
            f"ORDER BY e.id DESC LIMIT 1) IS DISTINCT FROM 'import'"
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
        "WHERE r.name IS DISTINCT FROM c.name OR r.company IS DISTINCT FROM c.company "
        "OR r.phone IS DISTINCT FROM c.phone "
        f"OR {sql['recased']} "
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
            f"source, reference, actor, import_file, import_line) SELECT c.id, ?, '{category}', "
            f"c.{category}, r.{category}, 'import', ? || ' line ' || r.line, ?, ?, r.line "
            f"FROM import_rows r JOIN customers c ON c.id = r.customer_id WHERE {where} "
            "ORDER BY r.line",
            (now, reference, actor, reference),
        )
        await conn.execute(
            f"UPDATE customers SET {category} = r.{category}, updated_at = ? FROM import_rows r "
            f"WHERE r.customer_id = customers.id AND r.{category} IS NOT NULL "
            f"AND r.{category} != customers.{category} AND r.keep_{category} = 0",
            (now,),
        )
    await conn.execute(
        "UPDATE customers AS c SET name = r.name, company = r.company, phone = r.phone, "
        "email = r.email, name_key = r.name_key, company_key = r.company_key, updated_at = ? "
        "FROM import_rows r WHERE r.customer_id = c.id "
        "AND (r.name IS DISTINCT FROM c.name "
        "OR r.company IS DISTINCT FROM c.company "
        "OR r.phone IS DISTINCT FROM c.phone "
        f"OR {sql['recased']})",
        (now,),
    )
    report.updated = len(changed_lines)

    # New customers: what the file (or the import's named default) says; no answer is no
    # consent (opted out). Their starting state is an event.
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
        "name_key, company_key, coalesce(announcements, 0), coalesce(offers, 0), ?, ? "
        "FROM import_rows WHERE customer_id IS NULL ORDER BY line",
        (now, now),
    )
    await conn.execute(
        "UPDATE import_rows AS r SET customer_id = c.id FROM customers c "
        f"WHERE r.customer_id IS NULL AND {sql['same']}"
    )
    for category in CATEGORIES:
        await conn.execute(
            "INSERT INTO consent_events (customer_id, at, category, old_value, new_value, "
            f"source, reference, actor, import_file, import_line) SELECT c.id, ?, '{category}', "
            f"NULL, c.{category}, 'import', ? || ' line ' || r.line, ?, ?, r.line "
            "FROM import_rows r JOIN customers c ON c.id = r.customer_id WHERE r.is_new = 1 "
            "ORDER BY r.line",
            (now, reference, actor, reference),
        )
