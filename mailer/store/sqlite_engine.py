"""SQLite behind the store's handle: aiosqlite (its own thread) for most connections, and
`InlineSqliteConnection` on the loop's own thread for a listener's short transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import aiosqlite

from mailer.store.handle import Connection, Engine, LazyResult, Params, Result, Where


class SqliteConnection(Connection):
    """aiosqlite underneath (its own thread); rows are sqlite3.Row."""

    engine: Engine = "sqlite"

    def __init__(self, raw: aiosqlite.Connection, place: Where) -> None:
        self.raw = raw
        self.where = place

    def execute(self, sql: str, parameters: Params = ()) -> Result:
        return self.raw.execute(sql, parameters)

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> Iterable[Any]:
        return await self.raw.execute_fetchall(sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        await self.raw.executemany(sql, parameters)

    async def executescript(self, script: str) -> None:
        await self.raw.executescript(script)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    async def rollback(self) -> None:
        await self.raw.rollback()

    async def commit(self) -> None:
        await self.raw.commit()

    async def close(self) -> None:
        await self.raw.close()


class _InlineCursor:
    """A sqlite3 cursor behind the async cursor API (every call completes at once)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> Any:
        return self._rows()

    async def _rows(self) -> Any:
        for row in self._cursor:
            yield row


class InlineSqliteConnection(Connection):
    """SQLite on the event loop's own thread, for a listener's short transactions.

    Through aiosqlite each statement is a hand-off to its thread and back: on a loop busy
    with a campaign, about a loop turn each, so a ten-statement one-click transaction held
    SQLite's single write lock for milliseconds, and the campaign's ledger commits queued
    behind it (its rate fell to a third). Inline, the same transaction runs in a few hundred
    microseconds without yielding. The busy timeout is 0, so nothing blocks the loop: a
    statement that finds another process writing is retried after an asyncio sleep, up to
    `_BUSY_WAIT_S`. Only for small, indexed statements (the public listener's); everything
    else keeps aiosqlite."""

    engine: Engine = "sqlite"
    _BUSY_WAIT_S = 10.0

    def __init__(self, raw: sqlite3.Connection, place: Where) -> None:
        self.raw = raw
        self.where = place

    async def _run(self, call: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        waited = 0.0
        pause = 0.001
        while True:
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if (exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                        or waited >= self._BUSY_WAIT_S):
                    raise
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.05)

    def execute(self, sql: str, parameters: Params = ()) -> Result:
        async def run() -> _InlineCursor:
            return _InlineCursor(await self._run(lambda: self.raw.execute(sql, parameters)))

        return LazyResult(run)

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> Iterable[Any]:
        cursor = await self._run(lambda: self.raw.execute(sql, parameters))
        return cursor.fetchall()

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        rows = list(parameters)
        await self._run(lambda: self.raw.executemany(sql, rows))

    async def executescript(self, script: str) -> None:
        await self._run(lambda: self.raw.executescript(script))

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    async def rollback(self) -> None:
        self.raw.rollback()

    async def commit(self) -> None:
        self.raw.commit()

    async def close(self) -> None:
        self.raw.close()
