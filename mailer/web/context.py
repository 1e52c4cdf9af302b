"""What the handlers share: the database connection, the pages, the secrets and the clock.

One aiosqlite connection serves every request, one request at a time behind an asyncio lock: a
connection holds one transaction at a time, and each request's work is a few milliseconds of
SQLite (the benchmark shows it keeps up). The connection is opened when the app starts and
closed when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiosqlite
from aiohttp import web

from mailer.clock import Clock
from mailer.errors import StoreError
from mailer.web.pages import Pages


@dataclass
class WebContext:
    pages: Pages
    secrets: tuple[str, ...]  # the current campaign secret first, then previous ones
    one_click_categories: tuple[str, ...]
    clock: Clock
    conn: aiosqlite.Connection | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @asynccontextmanager
    async def db(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, to this request alone until the block ends."""
        async with self._lock:
            if self.conn is None:
                raise StoreError("the database is not open")
            yield self.conn


WEB = web.AppKey("mailer.web", WebContext)
