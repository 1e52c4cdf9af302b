"""`mailer db copy --to postgresql://...`: move a SQLite installation into an empty PostgreSQL
database, every table, in one transaction on the target, and prove it arrived.

    1. The target must be empty: no tables at all, or a mailer schema whose tables hold no
       rows; anything else is refused before a byte is written.
    2. `open_db` creates (or completes) the schema there, as at any start.
    3. One transaction: the tables in foreign-key order (a parent before the tables that name
       it), each by COPY from one read snapshot of the SQLite file (so a daemon may keep
       writing to it); triggers of our own are off meanwhile, so counters derived by triggers
       (opt-outs per day, campaign progress) are copied as they stand and not counted twice;
       then each identity column's sequence is set to the largest id copied.
    4. After COMMIT: every table's row count and a SHA-256 of the consent history (the
       `consent_events` rows in id order, values in one canonical text form) are compared
       between the snapshot and the target. A difference is a StoreError.

A failure before COMMIT rolls the whole copy back: the target keeps its schema and no row.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from mailer.errors import BadInput, NotFound, StoreError
from mailer.store.backup import table_names
from mailer.store.db import open_db
from mailer.store.engine import DRIVER_ERRORS, Connection, PostgresConnection, where

# Rows read from SQLite per round trip.
_BATCH = 5000
# The history whose checksum is compared: opt-outs and opt-ins with their evidence.
CONSENT_HISTORY = "consent_events"


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    counts: dict[str, tuple[int, int]]  # table: (rows in SQLite, rows in PostgreSQL)
    checksum: str  # of the consent history, the same on both
    seconds: float

    @property
    def rows(self) -> int:
        return sum(copied for copied, _ in self.counts.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


def canonical(value: Any) -> str:
    """One text form per value whatever the engine returned it as (both give int, float,
    str, bytes or None for the store's columns)."""
    if value is None:
        return "N"
    if isinstance(value, bool | int):
        return f"i{int(value)}"
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, bytes | memoryview):
        return f"b{bytes(value).hex()}"
    return f"s{value}"


def checksum(rows: Iterable[Iterable[Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update("\x1f".join(canonical(v) for v in row).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def fk_order(tables: list[str], parents: dict[str, set[str]]) -> list[str]:
    """`tables` with every table after the tables it references (a table naming itself is
    left to its id order); alphabetical among equals, so the order is always the same."""
    done: list[str] = []
    waiting = sorted(tables)
    while waiting:
        ready = [t for t in waiting if not (parents.get(t, set()) - {t}) - set(done)]
        if not ready:
            raise StoreError(f"foreign keys form a cycle among {', '.join(waiting)}")
        done.extend(ready)
        waiting = [t for t in waiting if t not in ready]
    return done


async def _pg_columns(conn: Connection, table: str) -> list[str]:
    return [str(r[0]) for r in await conn.execute_fetchall(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ? AND is_generated = 'NEVER' "
        "ORDER BY ordinal_position", (table,))]


async def _pg_parents(conn: Connection) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for child, parent in await conn.execute_fetchall(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"):
        parents.setdefault(str(child).strip('"'), set()).add(str(parent).strip('"'))
    return parents


async def _identity_columns(conn: Connection) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in await conn.execute_fetchall(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND is_identity = 'YES' ORDER BY table_name")]


async def _refuse_unless_empty(url: str) -> None:
    """A StoreError (one line) unless the target holds no table, or only a mailer schema with
    no row in it."""
    async with open_db(url, migrate_schema=False) as conn:
        tables = [name for (name,) in await table_names(conn)]
        if tables and "schema_version" not in tables:
            raise StoreError(f"{where(url)} is not empty: it has tables ({', '.join(tables[:5])}) "
                             "and is no mailer database; give an empty database")
        for table in tables:
            if table == "schema_version":
                continue
            (found,) = list(await conn.execute_fetchall(
                f'SELECT EXISTS (SELECT 1 FROM "{table}")'))
            if found[0]:
                raise StoreError(f"{where(url)} is not empty: table {table} has rows; "
                                 "mailer db copy fills only an empty database")


async def _sqlite_rows(src: aiosqlite.Connection, table: str, columns: list[str]
                       ) -> AsyncIterator[list[Any]]:
    names = ", ".join(f'"{c}"' for c in columns)
    # In id order where there is one: a row naming an earlier row of its own table follows it.
    order = ' ORDER BY "id"' if "id" in columns else ""
    async with src.execute(f'SELECT {names} FROM "{table}"{order}') as cur:
        while batch := await cur.fetchmany(_BATCH):
            for row in batch:
                yield list(row)


async def _sqlite_columns(src: aiosqlite.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in await src.execute_fetchall(f'PRAGMA table_info("{table}")')}


async def copy_to_postgresql(source: Path, url: str) -> CopyReport:
    """Copy the SQLite database at `source` into the empty PostgreSQL database at `url`."""
    target = where(url)
    if target.engine != "postgresql":
        raise BadInput(f"--to {target}: expected an empty PostgreSQL database, "
                       "postgresql://user@host:port/db")
    if not await asyncio.to_thread(source.exists):
        raise NotFound(f"no database at {source}")
    started = time.monotonic()
    async with open_db(source):  # the source at this code's schema version, as at a start
        pass
    try:
        await _refuse_unless_empty(url)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot read {target}: {_first_line(exc)}") from exc
    async with open_db(url) as conn:
        assert isinstance(conn, PostgresConnection)
        try:
            async with aiosqlite.connect(source) as src:
                await src.execute("PRAGMA busy_timeout = 10000")
                await src.execute("BEGIN")  # one read snapshot for the copy and the checks
                try:
                    counts, digest = await _copy(src, conn, str(source), str(target))
                finally:
                    await src.rollback()
        except DRIVER_ERRORS as exc:
            raise StoreError(f"copy to {target} failed, nothing kept there: "
                             f"{_first_line(exc)}") from exc
    return CopyReport(str(source), str(target), counts, digest, time.monotonic() - started)


async def _copy(src: aiosqlite.Connection, conn: PostgresConnection, source: str, target: str
                ) -> tuple[dict[str, tuple[int, int]], str]:
    tables = fk_order([t for (t,) in await table_names(conn) if t != "schema_version"],
                      await _pg_parents(conn))
    columns = {t: await _pg_columns(conn, t) for t in tables}
    for table in tables:
        missing = set(columns[table]) - await _sqlite_columns(src, table)
        if missing:
            raise StoreError(f"{source}: table {table} lacks {', '.join(sorted(missing))}; "
                             "run `mailer db migrate` on it first")
    raw = conn.raw
    async with raw.transaction():
        for table in tables:
            names = ", ".join(f'"{c}"' for c in columns[table])
            await raw.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
            async with raw.cursor() as cur, cur.copy(
                    f'COPY "{table}" ({names}) FROM STDIN') as copy:
                async for row in _sqlite_rows(src, table, columns[table]):
                    await copy.write_row(row)
            await raw.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
        for table, column in await _identity_columns(conn):
            await raw.execute(
                f'SELECT setval(pg_get_serial_sequence(%s, %s), max("{column}")) '
                f'FROM "{table}" HAVING max("{column}") IS NOT NULL',
                (f'"{table}"', column))
    counts = {}
    for table in tables:
        copied = (await (await src.execute(f'SELECT count(*) FROM "{table}"')).fetchone())
        arrived = list(await conn.execute_fetchall(f'SELECT count(*) FROM "{table}"'))
        counts[table] = (int(copied[0]) if copied else 0, int(arrived[0][0]))
    wrong = [f"{t} {a} of {b}" for t, (b, a) in counts.items() if a != b]
    if wrong:
        raise StoreError(f"copy to {target} committed but row counts differ: {'; '.join(wrong)}")
    history = ", ".join(f'"{c}"' for c in columns[CONSENT_HISTORY])
    ordered = f'SELECT {history} FROM "{CONSENT_HISTORY}" ORDER BY id'
    here = checksum(await src.execute_fetchall(ordered))
    there = checksum(await conn.execute_fetchall(ordered))
    if here != there:
        raise StoreError(f"copy to {target} committed but the consent history differs "
                         f"(sha256 {here[:16]} in SQLite, {there[:16]} in PostgreSQL)")
    return counts, here


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

