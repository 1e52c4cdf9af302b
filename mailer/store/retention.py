"""The SQL of retention: clearing what is kept only for a while.

Web evidence (the client address and user agent recorded with a consent change made on a
page) is cleared after `[retention] web_evidence_days`, leaving the rest of the event. The
columns that hold it are listed in `WEB_EVIDENCE_COLUMNS`: a migration that adds such a
column adds it there, and `clear_web_evidence` clears it from then on.
"""

from __future__ import annotations

from mailer.store import rights
from mailer.store.db import transaction
from mailer.store.edge import translated
from mailer.store.engine import Connection
from mailer.store.evidence import WEB_COLUMNS

# table -> (its time column, the columns of web evidence). consent_events' permanence
# triggers (migration 13) allow exactly this clearing and no other update.
WEB_EVIDENCE_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "consent_events": ("at", WEB_COLUMNS),
}


async def _existing(conn: Connection, table: str, columns: tuple[str, ...]
                    ) -> list[str]:
    have = {column.name for column in await rights.columns(conn, table)}
    return [c for c in columns if c in have]


@translated("retention: web evidence")
async def clear_web_evidence(conn: Connection, *, before: str, dry_run: bool
                             ) -> int:
    """Blank the web evidence of rows older than `before` (ISO time); how many rows."""
    total = 0
    for table, (at_column, columns) in WEB_EVIDENCE_COLUMNS.items():
        present = await _existing(conn, table, columns)
        if not present:
            continue
        held = " OR ".join(f"{c} != ''" for c in present)
        where = f"{at_column} < ? AND ({held})"
        if dry_run:
            async with conn.execute(f"SELECT count(*) FROM {table} WHERE {where}",
                                    (before,)) as cur:
                row = await cur.fetchone()
            total += int(row[0]) if row else 0
            continue
        async with transaction(conn, f"retention: clearing web evidence in {table}"):
            cursor = await conn.execute(
                f"UPDATE {table} SET {', '.join(f'{c} = ' + repr('') for c in present)} "
                f"WHERE {where}", (before,))
            total += cursor.rowcount
    return total
