"""Importing customers from a CSV file: the one way in, for `mailer customers import` and the
console's upload alike.

The file is decoded as UTF-8 (a byte-order mark allowed) while it streams, read and checked
row by row by `mailer.importer`, and written by `store.imports.import_customers_atomically`:
all rows or none, every bad row named by its line. Consent is never assumed: a file without
a consent column is imported only when the caller names the default (`consent`), and the
report counts which value each row got and why (`consent_summary`). A file that cannot be
read as a whole (not UTF-8, a header without `name` and `email`) is one CsvError line naming
the file.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import IO

from mailer.categories import CATEGORIES
from mailer.errors import ConsentNotNamed, CsvError
from mailer.importer import BadRow, CustomerRow, HeaderError, read_rows
from mailer.store.db import Connection
from mailer.store.imports import ImportReport, import_customers_atomically

__all__ = ["ImportReport", "consent_summary", "import_csv"]


async def import_csv(conn: Connection, source: IO[bytes], *, name: str,
                     reference: str | None = None, consent: bool | None = None,
                     actor: str = "", suppression_key: bytes | None = None) -> ImportReport:
    """Import the CSV in `source`; `name` is how errors name the file, `reference` how the
    consent history does (default: `name`; each event adds the row's line), `consent` the
    default for a missing consent column or an empty cell (None: a file without a consent
    column is refused, ConsentNotNamed), `actor` who imported it; `suppression_key` checks
    each address against the suppression list of erased customers (`[privacy]`). Returns
    the report, bad rows included (nothing was imported then); CsvError for a file that
    cannot be read as a whole."""
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    try:
        rows = read_rows(text, consent_default=consent)
        # Read the header now, so a file that is no customers CSV fails before the database.
        first = next(rows, None)
    except ConsentNotNamed as exc:
        raise ConsentNotNamed(f"{name}: {exc}") from exc
    except HeaderError as exc:
        raise CsvError(f"{name}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CsvError(f"{name}: not valid UTF-8") from exc

    counts: dict[tuple[str, bool, str], int] = {}

    def counted(row: CustomerRow | BadRow) -> CustomerRow | BadRow:
        if isinstance(row, CustomerRow):
            for category, value in (("announcements", row.announcements),
                                    ("offers", row.offers)):
                if value is not None:
                    why = "default" if category in row.defaulted else "column"
                    counts[category, value, why] = counts.get((category, value, why), 0) + 1
        return row

    async def stream() -> AsyncIterator[CustomerRow | BadRow]:
        if first is not None:
            yield counted(first)
        for row in rows:
            yield counted(row)

    report = await import_customers_atomically(conn, stream(), reference=reference or name,
                                               actor=actor,
                                               suppression_key=suppression_key)
    report.consent = dict(sorted(counts.items()))
    return report


_WHY = {"column": "the file's column", "default": "the named default"}


def consent_summary(report: ImportReport) -> list[str]:
    """One line per category: how many rows asked for which value, and why (the file's
    column, or the import's named default)."""
    lines: list[str] = []
    for category in CATEGORIES:
        parts = [f"{n} opted {'in' if value else 'out'} ({_WHY[why]})"
                 for (c, value, why), n in report.consent.items() if c == category]
        if parts:
            lines.append(f"{category}: " + ", ".join(parts))
    return lines
