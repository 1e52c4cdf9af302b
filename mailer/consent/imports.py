"""Importing customers from a CSV file: the one way in, for `mailer customers import` and the
console's upload alike.

The file is decoded as UTF-8 (a byte-order mark allowed) while it streams, read and checked
row by row by `mailer.importer`, and written by `store.imports.import_customers_atomically`:
all rows or none, every bad row named by its line. A file that cannot be read as a whole (not
UTF-8, a header without `name` and `email`) is one CsvError line naming the file.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import IO

import aiosqlite

from mailer.errors import CsvError
from mailer.importer import BadRow, CustomerRow, HeaderError, read_rows
from mailer.store.imports import ImportReport, import_customers_atomically

__all__ = ["ImportReport", "import_csv"]


async def import_csv(conn: aiosqlite.Connection, source: IO[bytes], *, name: str,
                     reference: str | None = None, suppression_key: bytes | None = None
                     ) -> ImportReport:
    """Import the CSV in `source`; `name` is how errors name the file, `reference` how the
    consent history does (default: `name`); `suppression_key` checks each address against
    the suppression list of erased customers (`[privacy]`). Returns the report, bad rows
    included (nothing was imported then); CsvError for a file that cannot be read as a whole."""
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    try:
        rows = read_rows(text)
        # Read the header now, so a file that is no customers CSV fails before the database.
        first = next(rows, None)
    except HeaderError as exc:
        raise CsvError(f"{name}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CsvError(f"{name}: not valid UTF-8") from exc

    async def stream() -> AsyncIterator[CustomerRow | BadRow]:
        if first is not None:
            yield first
        for row in rows:
            yield row

    return await import_customers_atomically(conn, stream(), reference=reference or name,
                                             suppression_key=suppression_key)
