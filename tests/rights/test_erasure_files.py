"""An erasure leaves no trace of the person in the store's files, on both engines: erasing
one customer among many, SQLite's file and write-ahead log hold no byte of the address, and on
PostgreSQL no row version and no B-tree index entry holds it (a vacuum left to itself skips
the indexes when so few rows of a large table changed). When the old versions cannot be
cleared (a reader holds SQLite's log; the PostgreSQL role does not own the tables), it says so."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from mailer.consent import rights
from mailer.consent.imports import import_csv
from mailer.store import rights as rights_store
from mailer.store.db import open_db
from tests import dbrows
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


async def test_an_erasure_that_cannot_clear_the_old_versions_says_so(
    database: Path | str
) -> None:
    """SQLite: a reader holds the write-ahead log. PostgreSQL: the role erasing does not own
    the tables (it was granted their rows only), so VACUUM would skip them."""
    csv = "name,email\nAnn Lee,ann@example.com\n"
    async with open_db(database) as conn:
        assert (await import_csv(conn, io.BytesIO(csv.encode()), name="c.csv", consent=True,
                                 suppression_key=KEY)).ok
    if isinstance(database, Path):
        reader = sqlite3.connect(database)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM customers").fetchone()
        erasing: Path | str = database
    else:
        reader = None
        parts = urlsplit(database)
        clerk = f"clerk_{parts.path.strip('/')}"  # roles are the cluster's, shared by tests
        # CREATE on the schema: open_db's `CREATE TABLE IF NOT EXISTS schema_version` asks it.
        for sql in (f"CREATE ROLE {clerk} LOGIN",
                    f"GRANT USAGE, CREATE ON SCHEMA public TO {clerk}",
                    f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {clerk}",
                    f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {clerk}"):
            dbrows.execute(database, sql)
        erasing = parts._replace(netloc=f"{clerk}@{parts.hostname}:{parts.port}").geturl()
    try:
        async with open_db(erasing) as conn:
            erased = await rights.erase(conn, "ann@example.com", key=KEY, reason="asked",
                                        actor="test")
    finally:
        if reader is not None:
            reader.close()
        else:
            dbrows.execute(database, f"DROP OWNED BY {clerk}")
            dbrows.execute(database, f"DROP ROLE {clerk}")
    assert not erased.checkpointed
    assert dbrows.rows(database, "SELECT count(*) FROM customers WHERE email = ?",
                       ("ann@example.com",)) == [(0,)]
