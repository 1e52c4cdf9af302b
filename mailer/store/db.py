"""Opening the SQLite database and migrating its schema.

The database is both the truth and the queue. Migrations live in `store.migrations`, an ordered
list of SQL scripts; `PRAGMA user_version` records how many have been applied, and `open_db`
applies the rest, each in its own transaction, every time a connection is opened.

Connections run in WAL mode (readers never block the writer, a crash never corrupts) with a
busy timeout, so the daemon and a CLI command can share one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from mailer.errors import StoreError
from mailer.store.migrations import MIGRATIONS as MIGRATIONS

# The largest value an INTEGER column (and so any id) can hold: SQLite integers are signed
# 64-bit, and binding a larger Python int raises OverflowError instead of matching nothing.
MAX_INTEGER = 2**63 - 1


def read_only_uri(path: Path) -> str:
    """The SQLite URI that opens `path` read-only and never creates it.

    Percent-encoded (RFC 8089 file URI): a folder named `site#1` or `a?b` would otherwise
    end the path early, drop `mode=ro` with the rest, and make SQLite create an empty file."""
    return f"{path.absolute().as_uri()}?mode=ro"


def utcnow() -> str:
    """The store's timestamp format: ISO 8601 UTC with microseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


async def _configure(conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA busy_timeout = 10000")
    await _use_wal(conn)
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")


async def _use_wal(conn: aiosqlite.Connection) -> None:
    """Switch to write-ahead logging (persistent: once per database file).

    Switching takes an exclusive lock, and SQLite answers SQLITE_BUSY at once, without the busy
    handler, when another connection opening the same new database holds a lock it waits on:
    that is retried for as long as the busy timeout."""
    for _ in range(_WAL_ATTEMPTS):
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            await asyncio.sleep(_WAL_RETRY_S)
    await conn.execute("PRAGMA journal_mode = WAL")


_WAL_RETRY_S = 0.05
_WAL_ATTEMPTS = 200  # 10 s, the busy timeout


async def migrate(conn: aiosqlite.Connection) -> None:
    """Apply the migrations this database lacks, one transaction each.

    Several processes (or a daemon's parts, each with its own connection) may open a new
    database at once. Each migration runs under SQLite's write lock, but the version was read
    before taking it, so another connection may have applied it meanwhile. The script's first
    statement checks the version under the lock (a CHECK constraint on a temporary table, as
    a script cannot branch): a migration that another connection applied fails that check,
    or its own statements, is rolled back, and the version is read again. Without the check
    a migration that can run twice (data only) would set the version back. A failure that is
    not explained that way is raised."""
    while True:
        applied = await _schema_version(conn)
        if applied > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {applied} is newer than this mailer ({len(MIGRATIONS)})"
            )
        if applied == len(MIGRATIONS):
            return
        number = applied + 1
        try:
            # executescript commits first; wrap the script so it applies entirely or not at all.
            await conn.executescript(
                "BEGIN IMMEDIATE;\n"
                f"CREATE TEMP TABLE migration_guard (version INTEGER CHECK (version = {applied}));"
                "\n"
                "INSERT INTO migration_guard SELECT user_version FROM pragma_user_version;\n"
                "DROP TABLE migration_guard;\n"
                f"{MIGRATIONS[applied]}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:  # a failed script leaves its transaction open
                await conn.rollback()
            if await _schema_version(conn) >= number:
                continue  # another connection applied it first
            raise


async def _schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


@asynccontextmanager
async def open_db(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """Open (creating and migrating as needed) the database at `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        conn.row_factory = aiosqlite.Row
        try:
            await _configure(conn)
            await migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prepare database {path}: {exc}") from exc
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection, what: str = "transaction"
                      ) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (cancellation included).

    Its own statements' failures (a lock held too long, a full disk) are StoreError naming
    `what` the transaction was for. A COMMIT that fails is followed by a ROLLBACK, so the
    connection never stays inside a transaction (SQLite keeps one open after some failed
    COMMITs); a ROLLBACK that fails gives way to the error that caused it."""
    try:
        await conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"{what}: cannot begin: database error: {exc}") from exc
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    try:
        await conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise StoreError(f"{what}: cannot commit: database error: {exc}") from exc
