"""Erasing one customer among many leaves no trace of them in the store's files, on both
engines: SQLite's file and write-ahead log hold no byte of the address; on PostgreSQL no row
version and no B-tree index entry holds it (a vacuum left to itself skips the indexes when so
few rows of a large table changed)."""

from __future__ import annotations

import io
from pathlib import Path

from mailer.consent import rights
from mailer.consent.imports import import_csv
from mailer.store import rights as rights_store
from mailer.store.db import open_db
from tests.rights.traces import index_entries_holding, versions_holding

KEY = b"a test key of at least sixteen characters"
MANY = 20_000


async def test_erasing_one_of_many_customers_leaves_no_trace_in_tables_or_indexes(
    database: Path | str
) -> None:
    csv = "name,email\n" + "".join(f"Customer {n},c{n}@example.com\n" for n in range(MANY))
    async with open_db(database) as conn:
        report = await import_csv(conn, io.BytesIO(csv.encode()), name="c.csv", consent=True,
                                  suppression_key=KEY)
        assert report.ok and report.created == MANY
        erased = await rights.erase(conn, "c4242@example.com", key=KEY, reason="asked",
                                    actor="test")
        # The IMAP clean-up's search terms are kept until it is done; here it is done.
        await rights_store.cleanup_done(conn, erased.erasure_id)
    assert erased.checkpointed
    if isinstance(database, Path):
        for path in (database, database.with_name(database.name + "-wal")):
            data = path.read_bytes() if path.exists() else b""
            assert b"c4242@example.com" not in data, path.name
            assert b"Customer 4242" not in data, path.name
    else:
        assert versions_holding(database, b"c4242@example.com") == []
        assert index_entries_holding(database, b"c4242@example.com") == []
        # The neighbours are all still there, entries and all.
        assert index_entries_holding(database, b"c4241@example.com") == ["customers_email"]
