"""Opening the database (SQLite or PostgreSQL, `store.engine`), migrating its schema, and
the one way to run a transaction.

The database is both the truth and the queue. Migrations live in `store.migrations`, an ordered
list of SQL scripts. On SQLite `PRAGMA user_version` records how many have been applied; on
PostgreSQL the table `schema_version` does, and a new PostgreSQL database starts from the
baseline (`schema_postgresql.sql`, the schema at `POSTGRESQL_BASELINE`) with later migrations
in `POSTGRESQL_MIGRATIONS`. `open_db` applies what is missing, each in its own transaction,
every time a connection is opened, and refuses a schema newer than the code on both engines.

SQLite connections run in WAL mode (readers never block the writer, a crash never corrupts)
with a busy timeout, so the daemon and a CLI command can share one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from mailer.errors import SchemaTooNew, StoreError
from mailer.store.engine import (
    DRIVER_ERRORS,
    OPEN_ERRORS,
    Connection,
    InlineSqliteConnection,
    Location,
    PostgresConnection,
    SqliteConnection,
    StoredRow,
    connect,
    where,
)
from mailer.store.migrations import MIGRATIONS as MIGRATIONS

__all__ = ["MIGRATIONS", "Connection", "Location", "StoredRow", "open_db", "transaction", "utcnow"]
from mailer.store.migrations import POSTGRESQL_BASELINE, POSTGRESQL_MIGRATIONS

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


async def _configure(conn: SqliteConnection | InlineSqliteConnection) -> None:
    # Inline connections never wait inside SQLite (that would block the loop): they retry.
    timeout = 0 if isinstance(conn, InlineSqliteConnection) else 10000
    await conn.execute(f"PRAGMA busy_timeout = {timeout}")
    await _use_wal(conn)
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")


async def _use_wal(conn: SqliteConnection | InlineSqliteConnection) -> None:
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


async def migrate(conn: Connection) -> None:
    """Apply the migrations this database lacks, one transaction each.

    Several processes (or a daemon's parts, each with its own connection) may open a new
    database at once. Each migration runs under SQLite's write lock, but the version was read
    before taking it, so another connection may have applied it meanwhile. The script's first
    statement checks the version under the lock (a CHECK constraint on a temporary table, as
    a script cannot branch): a migration that another connection applied fails that check,
    or its own statements, is rolled back, and the version is read again. Without the check
    a migration that can run twice (data only) would set the version back. A failure that is
    not explained that way is raised."""
    if isinstance(conn, PostgresConnection):
        await _migrate_postgresql(conn)
        return
    while True:
        applied = await _schema_version(conn)
        if applied > len(MIGRATIONS):
            raise SchemaTooNew(
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


async def _schema_version(conn: Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


# Advisory lock keys (any 64-bit numbers, fixed forever): one for migrations, one that
# `transaction` holds to serialise writers as SQLite's single write lock does.
_MIGRATION_LOCK = 0x6D61696C65720001
WRITER_LOCK = 0x6D61696C65720002


def latest_version() -> int:
    return len(MIGRATIONS)


async def _migrate_postgresql(conn: PostgresConnection) -> None:
    """The baseline, then the PostgreSQL migrations after it, under an advisory lock so that
    several hosts starting at once apply each exactly once."""
    raw = conn.raw
    # Nearly always up to date: one read, no lock, and nothing a role without CREATE on the
    # schema would be refused.
    cursor = await raw.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    found = await cursor.fetchone()
    if found and found[0]:
        cursor = await raw.execute("SELECT max(version) FROM schema_version")
        row = await cursor.fetchone()
        if row and row[0] is not None and int(row[0]) == latest_version():
            return
    async with raw.transaction():
        await raw.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await raw.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        cursor = await raw.execute("SELECT max(version) FROM schema_version")
        row = await cursor.fetchone()
        applied = int(row[0]) if row and row[0] is not None else 0
        if applied > latest_version():
            raise SchemaTooNew(f"database schema version {applied} is newer than this mailer "
                             f"({latest_version()})")
        if applied == latest_version():
            return
        if applied == 0:
            await raw.execute(baseline_sql().encode())
            applied = POSTGRESQL_BASELINE
        for number in range(applied + 1, latest_version() + 1):
            await raw.execute(POSTGRESQL_MIGRATIONS[number].encode())
        await raw.execute("DELETE FROM schema_version")
        await raw.execute("INSERT INTO schema_version (version) VALUES (%s)",
                          (latest_version(),))


def baseline_sql() -> str:
    return (Path(__file__).parent / "schema_postgresql.sql").read_text(encoding="utf-8")


async def schema_version(conn: Connection) -> int:
    """The schema version the database records (0 for a new one); the caller says what a
    driver error means (status: "cannot read database")."""
    if isinstance(conn, PostgresConnection):
        rows = list(await conn.execute_fetchall(
            "SELECT max(version) FROM schema_version"))
        return int(rows[0][0] or 0) if rows else 0
    return await _schema_version(conn)


@asynccontextmanager
async def open_db(location: Location, *, migrate_schema: bool = True, inline: bool = False
                  ) -> AsyncIterator[Connection]:
    """Open (creating and migrating as needed) the database at `location`: a Path (SQLite)
    or a URL (`sqlite:///...`, `postgresql://...`). `inline`: SQLite statements on the loop's
    own thread, for a listener's short transactions (`engine.InlineSqliteConnection`)."""
    place = where(location)
    try:
        conn = await connect(place, inline=inline)
    except OPEN_ERRORS as exc:
        raise StoreError(f"cannot open database {place}: {_first_line(exc)}") from exc
    try:
        try:
            if isinstance(conn, SqliteConnection | InlineSqliteConnection):
                await _configure(conn)
            if migrate_schema:
                await migrate(conn)
        except DRIVER_ERRORS as exc:
            raise StoreError(f"cannot prepare database {place}: {_first_line(exc)}") from exc
        yield conn
    finally:
        with contextlib.suppress(*DRIVER_ERRORS):
            await conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# One FIFO lock per SQLite file per event loop: the process's writers queue for SQLite's
# single write lock here, in order, instead of in SQLite's busy handler, which sleeps with a
# growing backoff (up to 100 ms a try) while a busy writer (500 one-click POSTs a second)
# takes the lock again and again: a campaign's ledger commits starved behind it.
_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def process_writer_lock(path: Path) -> asyncio.Lock:
    """This process's queue for the write lock of the SQLite file at `path` (on this loop)."""
    locks = _WRITERS.setdefault(asyncio.get_running_loop(), {})
    key = str(path.absolute())
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock


@asynccontextmanager
async def transaction(conn: Connection, what: str = "transaction", *, exclusive: bool = True
                      ) -> AsyncIterator[Connection]:
    """See `_transaction`; on SQLite the process's writers take their turn in FIFO order
    (`process_writer_lock`) before asking SQLite for its write lock."""
    if conn.engine == "sqlite":
        async with process_writer_lock(conn.sqlite_path), _transaction(conn, what,
                                                                       exclusive) as inside:
            yield inside
    else:
        async with _transaction(conn, what, exclusive) as inside:
            yield inside


@asynccontextmanager
async def _transaction(conn: Connection, what: str, exclusive: bool
                       ) -> AsyncIterator[Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (cancellation included).

    On SQLite every write transaction holds the database's single write lock from its first
    statement. On PostgreSQL an `exclusive` transaction (the default) takes one advisory lock
    (`WRITER_LOCK`) for the same effect across every host: the store's read-then-write steps
    (a lease, a consent change and its audit row) keep SQLite's meaning with no retry loops.
    The hot paths that several hosts must run side by side (claims with SKIP LOCKED, the
    ledger) pass `exclusive=False` and rely on row locks and unique keys instead.

    Its own statements' failures (a lock held too long, a full disk) are StoreError naming
    `what` the transaction was for. A COMMIT that fails is followed by a ROLLBACK, so the
    connection never stays inside a transaction (SQLite keeps one open after some failed
    COMMITs); a ROLLBACK that fails gives way to the error that caused it."""
    try:
        await conn.execute("BEGIN IMMEDIATE")
        if exclusive and conn.engine == "postgresql":
            await conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))
    except DRIVER_ERRORS as exc:
        with contextlib.suppress(*DRIVER_ERRORS):
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        raise StoreError(f"{what}: cannot begin: database error: {_first_line(exc)}") from exc
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(*DRIVER_ERRORS):
            await conn.execute("ROLLBACK")
        raise
    try:
        await conn.execute("COMMIT")
    except DRIVER_ERRORS as exc:
        with contextlib.suppress(*DRIVER_ERRORS):
            await conn.execute("ROLLBACK")
        raise StoreError(f"{what}: cannot commit: database error: {_first_line(exc)}") from exc
