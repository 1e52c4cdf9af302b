"""Reading and writing a test's database directly, on either engine, to seed and to inspect.

`rows(location, sql, parameters)` takes the store's own dialect (`?` placeholders) and runs it
on SQLite through sqlite3, or on PostgreSQL through psycopg with the store's own translation,
so a test says what it checks once for both engines.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

from mailer.store.engine import postgresql_sql


def rows(location: Path | str, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """The statement's rows as plain tuples (committed at once when it writes)."""
    values = tuple(parameters)
    if isinstance(location, Path):
        with sqlite3.connect(location) as conn:
            return [tuple(r) for r in conn.execute(sql, values).fetchall()]
    with psycopg.connect(location, autocommit=True) as conn:
        cursor = conn.execute(postgresql_sql(sql), values)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []


def execute(location: Path | str, sql: str, parameters: Iterable[Any] = ()) -> int:
    """Run one writing statement; the number of rows it changed."""
    values = tuple(parameters)
    if isinstance(location, Path):
        with sqlite3.connect(location) as conn:
            return conn.execute(sql, values).rowcount
    with psycopg.connect(location, autocommit=True) as conn:
        return conn.execute(postgresql_sql(sql), values).rowcount


# Either driver's constraint error, for tests that check a trigger or a constraint refuses.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)


def database_section(location: Path | str) -> dict[str, Any]:
    """The settings.toml `[database]` section naming `location` (a path, or a url)."""
    if isinstance(location, Path):
        return {"path": str(location)}
    return {"url": location}
