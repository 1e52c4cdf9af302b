"""Reading and writing a test's database directly, on either engine, to seed and to inspect.

`rows(location, sql, parameters)` takes the store's own dialect (`?` placeholders) and runs it
on SQLite through sqlite3, or on PostgreSQL through psycopg with the store's own translation,
so a test says what it checks once for both engines.

These are blocking calls: a write made on the event loop's thread while a task of that loop is
inside a transaction holding the same row would wait for a commit that cannot come. Such a write
runs in a thread (`asyncio.to_thread`); on PostgreSQL a lock wait gives up after LOCK_TIMEOUT
with the server's own error instead of freezing the test until pytest-timeout.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

from mailer.store.engine import postgresql_sql

LOCK_TIMEOUT = "15s"


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, options=f"-c lock_timeout={LOCK_TIMEOUT}")


def rows(location: Path | str, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """The statement's rows as plain tuples (committed at once when it writes)."""
    values = tuple(parameters)
    if isinstance(location, Path):
        with sqlite3.connect(location) as conn:
            return [tuple(r) for r in conn.execute(sql, values).fetchall()]
    with _connect(location) as conn:
        cursor = conn.execute(postgresql_sql(sql), values)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []


def execute(location: Path | str, sql: str, parameters: Iterable[Any] = ()) -> int:
    """Run one writing statement; the number of rows it changed."""
    values = tuple(parameters)
    if isinstance(location, Path):
        with sqlite3.connect(location) as conn:
            return conn.execute(sql, values).rowcount
    with _connect(location) as conn:
        return conn.execute(postgresql_sql(sql), values).rowcount


# Either driver's constraint error, for tests that check a trigger or a constraint refuses.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)


def database_section(location: Path | str) -> dict[str, Any]:
    """The settings.toml `[database]` section naming `location` (a path, or a url)."""
    if isinstance(location, Path):
        return {"path": str(location)}
    return {"url": location}
