"""The consent gate: whether one campaign message may go out, read fresh for every message.

Just before each recipient's SMTP transaction the sender asks `ConsentGate.check`, which reads
that customer's row again together with the campaign's status: a customer who opted out since
the audience was taken is skipped, and a pause or cancel made by another process stops the
sender before its next message.

On SQLite the read is synchronous, on its own plain `sqlite3` connection: it is two
primary-key lookups (a few microseconds) on every message's critical path, and through
aiosqlite each would be a thread hand-off of several event-loop turns, while the decision it
makes must be as fresh as possible when the message goes out. The connection is read-only and
in WAL mode: readers never wait for a writer, so the read cannot stall the event loop behind an
import or an opt-out, and each read sees every transaction committed before it (an opt-out
committed by the inbox worker a millisecond earlier is seen). On PostgreSQL it is a query on
the gate's own connection (autocommit: each read sees every commit made before it, on any
host); reads asked while one is on the wire wait for it and then go together, in one query
started after every one of them was asked: the gate's round trips no longer queue one per
message behind each other (the campaign's rate was bound by them).

A decision is at most `FRESH_S` old when its message goes out (`Verdict.read_at` says when
the read started; the sender reads again if it has waited longer). On PostgreSQL each query
costs a round trip and about a quarter of a sending daemon's CPU when made once per message,
so a query also reads the next `LOOKAHEAD` recipients the sender has queued (`expect`), and
such a row answers that recipient's own check if it was read at most `REUSE_S` before: a
decision at most `FRESH_S` old at the send either way, in about a third of the queries.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mailer.errors import StoreError
from mailer.store.campaigns import Recipient, kind_column
from mailer.store.engine import (
    DRIVER_ERRORS,
    OPEN_ERRORS,
    Connection,
    Location,
    connect,
    one_of,
    where,
)

# How old a consent decision may be when its message goes out, at most (plus rendering).
FRESH_S = 0.005
# On PostgreSQL: how many queued recipients a query reads beyond those asked, and how old such
# a read may be to answer a check (the rest of FRESH_S is for building and the last commit).
LOOKAHEAD = 6
REUSE_S = FRESH_S / 2


@dataclass(frozen=True)
class Verdict:
    """The decision for one recipient: send to `recipient`, skip them, or stop the run;
    `read_at` is when the read it rests on started (on the gate's monotonic clock)."""

    recipient: Recipient | None
    skip_reason: str = ""
    stop_reason: str = ""
    read_at: float = 0.0


# A customer's row as the gate's query returns it (None: no such customer), and when the
# read started.
_Read = tuple[tuple[Any, ...] | None, float]


class ConsentGate:
    """The last word on whether one message of one campaign may go out."""

    def __init__(self, location: Location, campaign_id: int, kind: str, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._where = where(location)
        self._monotonic = monotonic
        self._campaign_id = campaign_id
        self._kind = kind
        # The kind names a column; checked before it goes into the statement.
        self._sql = (f"SELECT c.email, c.name, c.company, c.{kind_column(kind)}, p.status, "
                     "u.reason FROM customers c JOIN campaigns p ON p.id = ? "
                     "LEFT JOIN undeliverable u ON u.customer_id = c.id WHERE c.id = ?")
        self._sql_many = (f"SELECT c.id, c.email, c.name, c.company, c.{kind_column(kind)}, "
                          "p.status, u.reason FROM customers c JOIN campaigns p ON p.id = ? "
                          "LEFT JOIN undeliverable u ON u.customer_id = c.id WHERE ")
        self._sqlite: sqlite3.Connection | None = None
        self._conn: Connection | None = None
        self._asked: list[tuple[int, asyncio.Future[_Read]]] = []
        self._reader: asyncio.Task[None] | None = None
        # PostgreSQL: ids queued for sending, in order, not yet asked about; rows read ahead.
        self._upcoming: dict[int, None] = {}
        self._ahead: dict[int, _Read] = {}

    async def __aenter__(self) -> ConsentGate:
        try:
            if self._where.path is not None:
                self._sqlite = sqlite3.connect(str(self._where.path), isolation_level=None)
                # A WAL reader only waits in rare recovery cases; keep any such wait short.
                self._sqlite.execute("PRAGMA busy_timeout = 2000")
                self._sqlite.execute("PRAGMA query_only = 1")
            else:
                self._conn = await connect(self._where, application_name="mailer consent gate")
        except OPEN_ERRORS as exc:
            raise StoreError(f"cannot open database {self._where}: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def expect(self, customer_ids: Iterable[int]) -> None:
        """The sender queued these recipients, in this order (PostgreSQL reads ahead)."""
        if self._conn is not None:
            self._upcoming.update(dict.fromkeys(customer_ids))

    async def read(self, customer_id: int) -> tuple[Recipient | None, float]:
        """The customer with their consent and the campaign's status, and when that read
        started. On SQLite fetchall() runs the statement to completion, so no read
        transaction stays open and the next call sees every commit made since."""
        row: Any
        try:
            if self._sqlite is not None:
                read_at = self._monotonic()
                rows = self._sqlite.execute(self._sql, (self._campaign_id, customer_id)
                                            ).fetchall()
                row = rows[0] if rows else None
            else:
                row, read_at = await self._read_together(customer_id)
        except DRIVER_ERRORS as exc:
            raise StoreError(f"consent check for customer {customer_id}: {exc}") from exc
        if row is None:
            return None, read_at
        email, name, company, opted_in, status, undeliverable = row
        return Recipient(customer_id=customer_id, email=email, name=name, company=company,
                         opted_in=bool(opted_in), campaign_status=status,
                         undeliverable="" if undeliverable is None else
                         str(undeliverable) or "undeliverable"), read_at

    async def _read_together(self, customer_id: int) -> _Read:
        self._upcoming.pop(customer_id, None)
        ahead = self._ahead.pop(customer_id, None)
        if ahead is not None and self._monotonic() - ahead[1] <= REUSE_S:
            return ahead
        asked: asyncio.Future[_Read] = asyncio.get_running_loop().create_future()
        self._asked.append((customer_id, asked))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_asked(), name="consent gate")
        return await asyncio.shield(asked)

    async def _read_asked(self) -> None:
        assert self._conn is not None, "the gate is not open"
        while self._asked:
            batch, self._asked = self._asked, []
            ahead = list(itertools.islice(self._upcoming, LOOKAHEAD))
            condition, ids = one_of("postgresql", "c.id",
                                    sorted({c for c, _ in batch}.union(ahead)))
            read_at = self._monotonic()
            try:
                rows = await self._conn.execute_fetchall(
                    self._sql_many + condition, (self._campaign_id, *ids))
            except BaseException as exc:
                for _, asked in batch:
                    if not asked.done():
                        asked.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            found = {int(r[0]): tuple(r[1:]) for r in rows}
            self._ahead = {c: (found.get(c), read_at) for c in ahead}
            for customer_id, asked in batch:
                if not asked.done():
                    asked.set_result((found.get(customer_id), read_at))

    async def check(self, customer_id: int) -> Verdict:
        recipient, read_at = await self.read(customer_id)
        if recipient is None:
            return Verdict(None, skip_reason="customer no longer exists", read_at=read_at)
        if recipient.campaign_status != "sending":
            return Verdict(None, stop_reason=f"campaign is now {recipient.campaign_status}",
                           read_at=read_at)
        if not recipient.opted_in:
            return Verdict(None, skip_reason=f"opted out of {self._kind} before sending",
                           read_at=read_at)
        if recipient.undeliverable:
            return Verdict(None, skip_reason=f"undeliverable: {recipient.undeliverable}",
                           read_at=read_at)
        return Verdict(recipient, read_at=read_at)
