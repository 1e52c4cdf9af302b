"""A PostgreSQL connection the server ended is opened again before the next statement, but
never in the middle of a transaction: its remaining statements fail until the ROLLBACK."""

from __future__ import annotations

import pytest

from mailer.store.db import open_db, transaction
from mailer.store.engine import DRIVER_ERRORS, Connection
from tests.dbrows import rows
from tests.postgres import PostgresServer


async def backend_pid(conn: Connection) -> int:
    (row,) = await conn.execute_fetchall("SELECT pg_backend_pid()")
    return int(row[0])


async def test_after_the_server_ends_the_session_the_next_statement_runs_on_a_new_one(
        postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    async with open_db(url) as conn:
        before = await backend_pid(conn)
        assert postgres_server.kill_connections(url.rsplit("/", 1)[1]) == 1
        with pytest.raises(DRIVER_ERRORS):
            await conn.execute_fetchall("SELECT 1")  # the statement that meets the end
        after = await backend_pid(conn)
        assert after != before
        async with transaction(conn):
            await conn.execute("INSERT INTO review_items (reason, created_at) "
                               "VALUES ('after', 'now')")
    assert rows(url, "SELECT reason FROM review_items") == [("after",)]


async def test_a_transaction_cut_by_the_server_writes_nothing_of_its_rest(
        postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    async with open_db(url) as conn:
        with pytest.raises(DRIVER_ERRORS, match="ended inside a transaction"):
            async with transaction(conn, "two rows"):
                await conn.execute("INSERT INTO review_items (reason, created_at) "
                                   "VALUES ('first', 'now')")
                postgres_server.kill_connections(url.rsplit("/", 1)[1])
                with pytest.raises(DRIVER_ERRORS):
                    await conn.execute("SELECT 1")
                # A caller that carried on: the rest is refused, not run without the first.
                await conn.execute("INSERT INTO review_items (reason, created_at) "
                                   "VALUES ('second', 'now')")
        assert not conn.in_transaction
        assert list(await conn.execute_fetchall("SELECT count(*) FROM review_items")) == [(0,)]
