"""Waking the parts of every host at once: PostgreSQL's LISTEN/NOTIFY.

    notify(conn, channel)      inside the transaction that made the work: PostgreSQL delivers
                               it at COMMIT, to every listening connection of every host, and
                               never for a transaction rolled back
    listen(location, channel)  an async iterator that yields once when it starts listening and
                               once per notification; it listens on a connection of its own and
                               reconnects after losing it, yielding again then (notifications
                               sent meanwhile were lost, so the caller looks once more)

On SQLite both are no-ops (`listen` ends at once): one host shares one file, and the daemon's
parts wake each other in-process as before. A notification is only a hint to look now; the
listeners still poll, so a lost one costs a poll interval, never work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from mailer.backoff import RECONNECT, Backoff
from mailer.store.edge import translated
from mailer.store.engine import (
    OPEN_ERRORS,
    Connection,
    Location,
    PostgresConnection,
    connect,
    where,
)

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "mailer_outbox"  # a confirmation was queued
INBOX_CHANNEL = "mailer_inbox"    # an inbox lease was released

# A listening connection that a dead network left open would wait for ever: every this many
# seconds without a notification it is asked a question, which fails on a dead connection.
KEEPALIVE_S = 30.0


@translated("notify")
async def notify(conn: Connection, channel: str) -> None:
    """Wake `channel`'s listeners on every host when the caller's transaction commits (at
    once outside one); nothing on SQLite."""
    if conn.engine == "postgresql":
        await conn.execute("SELECT pg_notify(?, '')", (channel,))


async def listen(location: Location, channel: str, *, policy: Backoff = RECONNECT,
                 keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[None]:
    """Yield when listening starts, on each notification on `channel`, and after each
    reconnect; ends at once on SQLite. Never raises for the database: a lost connection is
    logged and opened again after `policy`'s delay."""
    place = where(location)
    if place.engine != "postgresql":
        return
    failures = 0
    while True:
        try:
            conn = await connect(place, application_name=f"mailer listen {channel}")
        except OPEN_ERRORS as exc:
            failures += 1
            log.warning("listening on %s: cannot connect to %s: %s", channel, place,
                        _first_line(exc))
            await asyncio.sleep(policy.delay_s(failures))
            continue
        try:
            assert isinstance(conn, PostgresConnection)
            await conn.raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            if failures:
                log.info("listening on %s again", channel)
            failures = 0
            yield None
            while True:
                async for _ in conn.raw.notifies(timeout=keepalive_s):
                    yield None
                await conn.raw.execute("SELECT 1")
        except psycopg.Error as exc:
            failures += 1
            log.warning("listening on %s: connection lost: %s", channel, _first_line(exc))
        finally:
            with contextlib.suppress(*OPEN_ERRORS):
                await conn.close()
        await asyncio.sleep(policy.delay_s(failures))


@translated("listening")  # never raises a driver's error itself: `listen` handles them
async def wake_on(location: Location, channel: str, wake: asyncio.Event) -> None:
    """Set `wake` at every `listen` yield, until cancelled (returns at once on SQLite)."""
    async for _ in listen(location, channel):
        wake.set()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
