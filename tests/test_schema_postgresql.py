"""The PostgreSQL baseline schema says what SQLite's schema at the same version says: the same
tables, columns in the same order with the mapped types and NOT NULL, the named indexes, and the
triggers' messages (callers and tests match them).

Read as text against a real SQLite database built by the migrations up to the version the file
names (later migrations carry SQL for both engines), so an edit to either side that the other
lacks fails here."""

from __future__ import annotations

import re
import sqlite3
from importlib.resources import files
from pathlib import Path

from mailer.store.db import MIGRATIONS

SCHEMA = (files("mailer.store") / "schema_postgresql.sql").read_text(encoding="utf-8")
# SQLite type -> PostgreSQL type; a rowid alias numbered by SQLite is an identity column.
TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": "TEXT", "BLOB": "BYTEA"}
# A column line: four spaces, a name, a type (CHECK and value continuations start otherwise).
_COLUMN = re.compile(r"^ {4}([a-z_]+) +(BIGINT|DOUBLE PRECISION|TEXT|BYTEA)\b(.*)$")


def pg_tables() -> dict[str, list[tuple[str, str, bool]]]:
    """Each CREATE TABLE of the PostgreSQL schema: (column, type, not null), in order."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for name, body in re.findall(r"^CREATE TABLE (\w+) \((.*?)^\);", SCHEMA, re.M | re.S):
        columns = []
        for line in body.splitlines():
            found = _COLUMN.match(line)
            if found:
                rest = found[3]
                columns.append((found[1], found[2], "NOT NULL" in rest or "PRIMARY KEY" in rest))
        tables[name] = columns
    for name, keys in re.findall(r"^CREATE TABLE (\w+) \(.*?PRIMARY KEY \(([^)]*)\)\n\);",
                                 SCHEMA, re.M | re.S):
        key = {k.strip() for k in keys.split(",")}
        tables[name] = [(c, t, n or c in key) for c, t, n in tables[name]]
    return tables


def baseline_version() -> int:
    found = re.match(r"-- The PostgreSQL 15 schema: SQLite's schema at migration (\d+) ", SCHEMA)
    assert found, "the first line names the migration the schema stands at"
    return int(found[1])


def sqlite_schema(tmp_path: Path) -> sqlite3.Connection:
    """A real SQLite database at the baseline version, migration by migration."""
    conn = sqlite3.connect(tmp_path / "mailer.db", isolation_level=None)
    for script in MIGRATIONS[: baseline_version()]:
        conn.executescript(f"BEGIN;\n{script}\nCOMMIT;")
    return conn


def fts(name: str) -> bool:
    """The FTS5 table and its shadow tables: a GIN index on customers in PostgreSQL."""
    return name.startswith("customers_search")


def test_every_table_has_the_same_columns_in_the_same_order(tmp_path: Path) -> None:
    conn = sqlite_schema(tmp_path)
    names = [str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    expected = {
        name: [(str(c[1]), TYPES[str(c[2])], bool(c[3]) or bool(c[5]))
               for c in conn.execute(f"PRAGMA table_info({name})")]
        for name in names if not fts(name)
    }
    assert pg_tables() == expected


def test_every_named_index_and_trigger_message_is_there(tmp_path: Path) -> None:
    conn = sqlite_schema(tmp_path)
    indexes = {str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    assert indexes <= set(re.findall(r"^CREATE (?:UNIQUE )?INDEX (\w+) ON", SCHEMA, re.M))
    messages = {m for (sql,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger'")
        for m in re.findall(r"RAISE\(ABORT, '([^']*)'\)", str(sql))}
    assert messages == {"consent events are permanent", "delivery events are permanent",
                        "consent events are permanent: evidence may only be cleared"}
    assert all(f"RAISE EXCEPTION '{m}'" in SCHEMA for m in messages)


def test_the_schema_stands_at_a_version_this_mailer_has() -> None:
    assert 1 <= baseline_version() <= len(MIGRATIONS)
