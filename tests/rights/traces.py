"""Looking for a trace of a person in a test's database, on either engine: every table and
column by the catalogue, and on PostgreSQL the row versions and index entries on the pages
themselves (pageinspect; the test server's user is a superuser)."""

from __future__ import annotations

from pathlib import Path

from tests import dbrows


def table_names(database: Path | str) -> set[str]:
    if isinstance(database, Path):
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    else:
        sql = ("SELECT table_name FROM information_schema.tables "
               "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")
    return {str(name) for (name,) in dbrows.rows(database, sql)}


def column_names(database: Path | str, table: str) -> list[str]:
    if isinstance(database, Path):
        sql = "SELECT name FROM pragma_table_info(?)"
    else:
        sql = ("SELECT column_name FROM information_schema.columns "
               "WHERE table_schema = current_schema() AND table_name = ?")
    return [str(name) for (name,) in dbrows.rows(database, sql, (table,))]


def versions_holding(url: str, secret: bytes) -> list[str]:
    """The tables with a row version (live or dead) on disk whose data holds `secret`, read
    page by page with pageinspect (the test server's user is a superuser)."""
    dbrows.execute(url, "CREATE EXTENSION IF NOT EXISTS pageinspect")
    found = []
    for table in sorted(table_names(url)):
        pages = one(url, "SELECT pg_relation_size(?) / current_setting('block_size')::int",
                    table)
        hits = one(url, "SELECT count(*) FROM generate_series(0, ? - 1) AS page, "
                   "heap_page_items(get_raw_page(?, page::int)) AS item "
                   "WHERE item.t_data IS NOT NULL AND position(? IN item.t_data) > 0",
                   pages, table, secret)
        if hits:
            found.append(table)
    return found


def index_entries_holding(url: str, secret: bytes) -> list[str]:
    """The B-tree indexes with an entry whose key holds `secret` (pageinspect)."""
    dbrows.execute(url, "CREATE EXTENSION IF NOT EXISTS pageinspect")
    indexes = dbrows.rows(url, "SELECT c.relname FROM pg_class c JOIN pg_am a ON a.oid = "
                          "c.relam WHERE c.relkind = 'i' AND a.amname = 'btree' AND "
                          "c.relnamespace = current_schema()::regnamespace ORDER BY 1")
    found = []
    for (index,) in indexes:
        pages = one(url, "SELECT pg_relation_size(?) / current_setting('block_size')::int",
                    index)
        hits = one(url, "SELECT count(*) FROM generate_series(1, ? - 1) AS page, "
                   "bt_page_items(?, page::int) AS item "
                   "WHERE position(? IN replace(item.data, ' ', '')) > 0",
                   pages, index, secret.hex())
        if hits:
            found.append(str(index))
    return found


def one(database: Path | str, sql: str, *parameters: object) -> object:
    return dbrows.rows(database, sql, parameters)[0][0]
