"""What the handlers share: the database connection, the pages, the secrets and the clock.

One connection serves every request, one request at a time behind an asyncio lock: a
connection holds one transaction at a time. On SQLite it runs inline on the loop's thread
(`store.engine.InlineSqliteConnection`): the listener's statements are small and indexed, and
its transactions then hold the write lock for microseconds, not loop turns. One-click requests
that arrive together share a transaction (`choices.OneClickWriter`), so a burst of clicks does
not queue one commit each.
The connection is opened when the app starts and closed when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from mailer.clock import Clock
from mailer.errors import StoreError
from mailer.public.choices import OneClickWriter
from mailer.public.pages import Pages
from mailer.store.db import Connection


@dataclass
class WebContext:
    pages: Pages
    secrets: tuple[str, ...]  # the current campaign secret first, then previous ones
    one_click_categories: tuple[str, ...]
    clock: Clock
    conn: Connection | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    one_click: OneClickWriter = field(init=False)

    def __post_init__(self) -> None:
        self.one_click = OneClickWriter(self.db, self.one_click_categories)

    @asynccontextmanager
    async def db(self) -> AsyncIterator[Connection]:
        """The connection, to this request alone until the block ends."""
        async with self._lock:
            if self.conn is None:
                raise StoreError("the database is not open")
            yield self.conn


WEB = web.AppKey("mailer.public", WebContext)
