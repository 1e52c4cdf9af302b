"""Opening either engine behind the store's handle (`store.handle`): SQLite (embedded, the
default; `store.sqlite_engine`) or PostgreSQL (several hosts; `store.postgres_engine`).

Everything above `store/` holds a `Connection`, never a driver's object; this module is where
the store chooses the driver for a location.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from mailer.store.handle import (
    DRIVER_ERRORS,
    OPEN_ERRORS,
    PASSWORD_ENV,
    Connection,
    Cursor,
    Engine,
    Location,
    Params,
    Result,
    StoredRow,
    Where,
    int_array,
    one_of,
    redact,
    where,
)
from mailer.store.postgres_engine import (
    PostgresConnection,
    Row,
    SyncPostgres,
    open_postgres,
    postgresql_sql,
)
from mailer.store.sqlite_engine import InlineSqliteConnection, SqliteConnection

__all__ = [
    "DRIVER_ERRORS", "OPEN_ERRORS", "PASSWORD_ENV", "Connection", "Cursor", "Engine",
    "InlineSqliteConnection", "Location", "Params", "PostgresConnection", "Result", "Row",
    "SqliteConnection", "StoredRow", "SyncPostgres", "Where", "connect", "int_array",
    "one_of", "postgresql_sql",
    "redact", "where",
]


async def connect(place: Where, *, application_name: str = "mailer", inline: bool = False
                  ) -> Connection:
    """Open one connection (not yet configured or migrated: see `db.open_db`). `inline`: on
    SQLite, statements run on the loop's thread (`InlineSqliteConnection`)."""
    if place.engine == "sqlite":
        assert place.path is not None
        place.path.parent.mkdir(parents=True, exist_ok=True)
        if inline:
            plain = sqlite3.connect(str(place.path), isolation_level=None)
            plain.row_factory = sqlite3.Row
            return InlineSqliteConnection(plain, place)
        raw = await aiosqlite.connect(str(place.path), isolation_level=None)
        raw.row_factory = aiosqlite.Row
        return SqliteConnection(raw, place)
    return PostgresConnection(await open_postgres(place, application_name), place,
                              application_name)
