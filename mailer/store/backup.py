"""`mailer db backup` and `mailer db check`: SQLite's online backup API and integrity check.

The backup copies a consistent snapshot while the daemon keeps writing (in WAL mode a reader
never blocks the writer, and one backup step of all pages reads one snapshot). It is written
beside the target as `PATH.partial`, checked with `PRAGMA integrity_check`, then renamed over
PATH, so PATH is always either the old backup or a whole new one.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from mailer.errors import NotFound, StoreError
from mailer.store.db import MIGRATIONS, read_only_uri


@dataclass(frozen=True)
class CheckReport:
    path: Path
    integrity: str  # "ok", or SQLite's first complaint
    schema_version: int
    code_version: int

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


async def backup(source: Path, target: Path) -> int:
    """Copy the database at `source` to `target`; returns the copy's size in bytes."""
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


async def check(path: Path) -> CheckReport:
    """Integrity and schema version of the database at `path` (read-only; nothing migrated)."""
    if not await asyncio.to_thread(path.exists):
        raise NotFound(f"no database at {path}")
    try:
        async with aiosqlite.connect(read_only_uri(path), uri=True) as conn:
            await conn.execute("PRAGMA busy_timeout = 10000")
            version = await _user_version(conn)
            integrity = await _integrity(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot check database {path}: {exc}") from exc
    return CheckReport(path, integrity, version, len(MIGRATIONS))
