"""`mailer db backup|check|migrate` on either engine.

SQLite: the online backup API and `PRAGMA integrity_check`. The backup copies a consistent
snapshot while the daemon keeps writing (in WAL mode a reader never blocks the writer, and one
backup step of all pages reads one snapshot).

PostgreSQL: `pg_dump --format=custom` (one consistent snapshot, restored with `pg_restore`),
found on PATH or in Debian's /usr/lib/postgresql/*/bin; where there is none the error says
exactly which command to run. `check` connects, reads the schema version and counts each table.

Either way the copy is written beside the target as `PATH.partial`, checked (SQLite's integrity
check; `pg_restore --list` reads the archive back), then renamed over PATH, so PATH is always
either the old backup or a whole new one.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shlex
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from mailer.errors import NotFound, StoreError
from mailer.store.db import MIGRATIONS, open_db, read_only_uri, schema_version
from mailer.store.edge import translated
from mailer.store.engine import (
    DRIVER_ERRORS,
    PASSWORD_ENV,
    Connection,
    Location,
    Where,
    where,
)
from mailer.store.postgres_engine import without_mailer_options


@dataclass(frozen=True)
class CheckReport:
    place: str
    integrity: str  # "ok", or SQLite's first complaint
    schema_version: int
    code_version: int
    # PostgreSQL: each table's row count (SQLite's integrity check reads every page instead).
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and self.schema_version <= self.code_version


async def _integrity(conn: aiosqlite.Connection) -> str:
    async with conn.execute("PRAGMA integrity_check") as cur:
        rows = list(await cur.fetchall())
    return "; ".join(str(r[0]) for r in rows[:5]) or "no answer"


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def backup(location: Location, target: Path,
                 find: Callable[[str], str | None] | None = None) -> int:
    """Copy the database at `location` to `target`; returns the copy's size in bytes. `find`
    locates pg_dump and pg_restore (default `pg_program`)."""
    place = where(location)
    if place.path is None:
        return await _pg_backup(place, target, find or pg_program)
    source = place.path
    if not await asyncio.to_thread(source.exists):
        raise NotFound(f"no database at {source}")
    partial = target.with_name(target.name + ".partial")
    try:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        async with aiosqlite.connect(read_only_uri(source), uri=True) as src:
            await src.execute("PRAGMA busy_timeout = 10000")
            async with aiosqlite.connect(str(partial)) as dst:
                await src.backup(dst)  # pages=-1: the whole database in one step
                await dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                integrity = await _integrity(dst)
        if integrity != "ok":
            raise StoreError(f"backup of {source} failed its integrity check: {integrity}")
        await asyncio.to_thread(os.replace, partial, target)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source} to {target}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot write backup {target}: {exc.strerror or exc}") from exc
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    return (await asyncio.to_thread(target.stat)).st_size


def pg_program(name: str) -> str | None:
    """`pg_dump` or `pg_restore`: on PATH, else the newest of Debian's versioned folders (the
    newest dumps every older server)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    return candidates[-1] if candidates else None


def pg_dump_command(place: Where, target: Path, program: str = "pg_dump") -> list[str]:
    return [program, "--format=custom", f"--file={target}", without_mailer_options(place.url)]


async def _pg_backup(place: Where, target: Path, find: Callable[[str], str | None]) -> int:
    program = find("pg_dump")
    if program is None:
        shown = [*pg_dump_command(place, target)[:-1], str(place)]
        raise StoreError("pg_dump not found (Debian: apt-get install postgresql-client); run: "
                         + shlex.join(shown))
    partial = target.with_name(target.name + ".partial")
    env = dict(os.environ)
    if os.environ.get(PASSWORD_ENV):
        env["PGPASSWORD"] = os.environ[PASSWORD_ENV]
    try:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
        await _run(pg_dump_command(place, partial, program), env, f"pg_dump of {place}")
        restore = find("pg_restore")
        if restore is not None:  # the archive reads back whole
            await _run([restore, "--list", str(partial)], env, f"pg_restore --list {target}")
        await asyncio.to_thread(os.replace, partial, target)
    except OSError as exc:
        raise StoreError(f"cannot write backup {target}: {exc.strerror or exc}") from exc
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    return (await asyncio.to_thread(target.stat)).st_size


async def _run(command: list[str], env: dict[str, str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env)
    _, err = await process.communicate()
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines() or ["no message"]
        raise StoreError(f"{what} failed (exit {process.returncode}): {lines[0]}")


async def check(location: Location) -> CheckReport:
    """Integrity and schema version of the database at `location` (nothing migrated)."""
    place = where(location)
    if place.path is None:
        return await _pg_check(place)
    path = place.path
    if not await asyncio.to_thread(path.exists):
        raise NotFound(f"no database at {path}")
    try:
        async with aiosqlite.connect(read_only_uri(path), uri=True) as conn:
            await conn.execute("PRAGMA busy_timeout = 10000")
            version = await _user_version(conn)
            integrity = await _integrity(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot check database {path}: {exc}") from exc
    return CheckReport(str(path), integrity, version, len(MIGRATIONS))


async def _pg_check(place: Where) -> CheckReport:
    async with open_db(place.url, migrate_schema=False) as conn:
        try:
            version = await _pg_version(conn)
            tables = {}
            for (name,) in await table_names(conn):
                rows = list(await conn.execute_fetchall(f'SELECT count(*) FROM "{name}"'))
                tables[str(name)] = int(rows[0][0])
        except DRIVER_ERRORS as exc:
            raise StoreError(f"cannot check database {place}: {exc}") from exc
    return CheckReport(str(place), "ok", version, len(MIGRATIONS), tables)


@translated("listing tables")
async def table_names(conn: Connection) -> list[tuple[str]]:
    """The store's tables in this PostgreSQL database's schema, by name."""
    return [(str(r[0]),) for r in await conn.execute_fetchall(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "ORDER BY tablename")]


async def _pg_version(conn: Connection) -> int:
    """0 for a database no mailer has migrated (no `schema_version` table yet)."""
    rows = list(await conn.execute_fetchall(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
        "AND tablename = 'schema_version'"))
    return await schema_version(conn) if int(rows[0][0]) else 0


@dataclass(frozen=True)
class Migrated:
    place: str
    before: int
    after: int


async def migrate(location: Location) -> Migrated:
    """Apply the migrations the database lacks (creating it if need be); from and to which
    schema version. A schema newer than this code is refused (StoreError)."""
    place = where(location)
    async with open_db(location, migrate_schema=False) as conn:
        try:
            before = (await _pg_version(conn) if place.path is None
                      else await schema_version(conn))
        except DRIVER_ERRORS as exc:
            raise StoreError(f"cannot read database {place}: {exc}") from exc
    async with open_db(location) as conn:
        after = await schema_version(conn)
    return Migrated(str(place), before, after)
