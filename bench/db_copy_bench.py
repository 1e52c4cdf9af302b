"""`mailer db copy` rate: a SQLite installation of N customers (default 100,000), each with one
consent event, copied into an empty database of a throwaway PostgreSQL server (tests/postgres.py)
with `mailer.store.copy.copy_to_postgresql`, as the command does. Prints rows/s over the whole
command: the target's schema, the COPY of every table, the sequences, and the verification
(counts and the consent history's checksum) after commit. Seeding is not timed.

    PYTHONPATH=. python bench/db_copy_bench.py [N]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from pathlib import Path

from mailer.store.copy import copy_to_postgresql
from mailer.store.db import open_db
from tests.postgres import PostgresServer


def seed(db: Path, customers: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO customers (id, email, name, created_at, updated_at) "
            "VALUES (?, ?, ?, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
            ((i, f"c{i}@example.com", f"Customer {i}") for i in range(1, customers + 1)))
        conn.executemany(
            "INSERT INTO consent_events (customer_id, at, category, new_value, source) "
            "VALUES (?, '2026-01-01T00:00:00+00:00', 'offers', 1, 'import')",
            ((i,) for i in range(1, customers + 1)))


async def main(customers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as server:
        db = Path(tmp) / "mailer.db"
        async with open_db(db):
            pass
        seed(db, customers)
        report = await copy_to_postgresql(db, server.create_database())
        print(f"db copy: {customers} customers, {report.rows} rows in {report.seconds:.2f} s: "
              f"{report.rows_per_s:,.0f} rows/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
