"""The campaign ledger's writer: settling claimed rows, one group commit at a time.

`record_results` settles claimed rows ('sent', 'failed', 'skipped', or back to 'pending')
and keeps each one's Message-ID, in one UPDATE ... FROM (VALUES ...) statement per thousand
results (on PostgreSQL one statement whose one JSON parameter carries them all, the same
text whatever the batch). `Ledger` is the sender's group committer: every result recorded
since its last flush goes out in one such statement.

Why a synchronous fast path lives here: a worker does not start its next SMTP transaction
until its previous result is committed (so a kill -9 re-sends at most one message per
connection), which puts the commit on every message's critical path. Through aiosqlite each
commit is a hand-off to its thread and back, several event-loop turns; on the loop's own
thread through a plain sqlite3 connection with no busy wait, a small UPDATE in WAL mode with
synchronous=NORMAL takes tens of microseconds (`bench/campaign_bench.py` measures the
difference). If another writer holds the database lock (an
import, the inbox worker) the batch goes through aiosqlite instead, which waits in its own
thread. Checkpoints are left to the aiosqlite connection (wal_autocheckpoint=0 here), so they
never run on the loop's thread either.

On PostgreSQL the ledger has two connections of its own, so its commits never wait behind the
sender's claims and lease renewals; each flush is one round trip, and results recorded while
one flush is on the wire go out at once on the other connection instead of after it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence

from mailer.errors import StoreError
from mailer.store.campaigns import RecipientResult
from mailer.store.db import process_writer_lock, utcnow
from mailer.store.edge import translated
from mailer.store.engine import (
    OPEN_ERRORS,
    Connection,
    Engine,
    Location,
    connect,
    one_of,
    where,
)

# SQLite allows 32766 parameters per statement; five per result, and some headroom.
_RESULTS_PER_STATEMENT = 1000
# A flush is forced once this many results wait, whoever waits for them.
_MAX_GROUP = 200
# PostgreSQL: connections flushing side by side (a flush is a round trip; one on the wire
# does not hold back the next).
_POSTGRESQL_WRITERS = 2


_SET_RESULTS = (
    "UPDATE campaign_recipients SET status = r.status, "
    "attempts = campaign_recipients.attempts + r.attempts, last_reply = r.reply, "
    "message_id = CASE WHEN r.message_id != '' THEN r.message_id "
    "ELSE campaign_recipients.message_id END, "
    "updated_at = ? FROM r WHERE campaign_recipients.campaign_id = ? "
    "AND campaign_recipients.customer_id = r.customer_id "
    "AND campaign_recipients.status = 'sending' "
    # Only rows still ours: a sender judged dead has had its rows taken back.
    "AND campaign_recipients.claimed_by = coalesce(?, campaign_recipients.claimed_by)")

# PostgreSQL: the results as one JSON parameter, so the statement's text is the same for every
# batch (prepared and planned once, where VALUES lists would be a text per batch size), and
# its one string is dumped by the C JSON encoder instead of psycopg's array dumper in Python.
# The rows are found by the primary key, the ids given again as an array: the planner, whose
# statistics lag a campaign's fresh audience (it takes 'sending' for one row), otherwise walked
# every 'sending' row of the campaign by the status index to settle a handful (1 ms a flush,
# on the critical path of every message); `IS TRUE` keeps the status out of its index choice.
_RESULTS_POSTGRESQL = (
    "WITH r AS (SELECT * FROM json_to_recordset(?::json) AS r (customer_id bigint, "
    "status text, attempts integer, reply text, message_id text)) "
    + _SET_RESULTS.replace("AND campaign_recipients.status = 'sending' ",
                           "AND (campaign_recipients.status = 'sending') IS TRUE ")
    + " AND ")


def _results_statements(
    campaign_id: int, results: Sequence[RecipientResult], claimed_by: str | None,
    engine: Engine = "sqlite",
) -> list[tuple[str, tuple[object, ...]]]:
    now = utcnow()
    if engine == "postgresql":
        rows = json.dumps([{"customer_id": r.customer_id, "status": r.status,
                            "attempts": r.attempts, "reply": r.reply,
                            "message_id": r.message_id} for r in results])
        condition, ids = one_of(engine, "campaign_recipients.customer_id",
                                (r.customer_id for r in results))
        return [(_RESULTS_POSTGRESQL + condition, (rows, now, campaign_id, claimed_by, *ids))]
    statements = []
    for start in range(0, len(results), _RESULTS_PER_STATEMENT):
        chunk = results[start : start + _RESULTS_PER_STATEMENT]
        values = ",".join("(?, ?, ?, ?, ?)" for _ in chunk)
        parameters: list[object] = []
        for r in chunk:
            parameters += (r.customer_id, r.status, r.attempts, r.reply, r.message_id)
        statements.append((
            f"WITH r (customer_id, status, attempts, reply, message_id) AS (VALUES {values}) "
            + _SET_RESULTS, (*parameters, now, campaign_id, claimed_by)))
    return statements


@translated("ledger: recording results")
async def record_results(
    conn: Connection, campaign_id: int, results: Sequence[RecipientResult],
    claimed_by: str | None = None,
) -> None:
    """Settle claimed rows (only those `claimed_by` claimed, unless None); each statement is
    atomic on its own (an implicit transaction outside an explicit one) and costs one round
    trip to the database thread."""
    for sql, parameters in _results_statements(campaign_id, results, claimed_by,
                                               conn.engine):
        await conn.execute_fetchall(sql, parameters)


def _record_results_now(
    conn: sqlite3.Connection, campaign_id: int, results: Sequence[RecipientResult],
    claimed_by: str | None,
) -> None:
    """`record_results` on a plain sqlite3 connection; raises sqlite3.OperationalError
    (SQLITE_BUSY) at once if another writer holds the lock (busy timeout 0)."""
    for sql, parameters in _results_statements(campaign_id, results, claimed_by):
        conn.execute(sql, parameters).fetchall()


@translated("ledger: looking up a Message-ID")
async def find_message(
    conn: Connection, message_id: str
) -> tuple[int, int] | None:
    """The (campaign id, customer id) a Message-ID we sent belongs to, if it is ours."""
    async with conn.execute(
        "SELECT campaign_id, customer_id FROM campaign_recipients WHERE message_id = ? "
        "AND message_id != ''", (message_id,)
    ) as cur:
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else None


class Ledger:
    """Group commit of one campaign's results: each flush writes, in one statement, every
    result recorded since the last flush. `lock` serialises the aiosqlite connection with
    its other users in the sender (claims, lease renewals)."""

    def __init__(self, conn: Connection, lock: asyncio.Lock, campaign_id: int,
                 location: Location, claimed_by: str | None = None) -> None:
        self._conn = conn
        self._claimed_by = claimed_by
        self._lock = lock
        self._campaign_id = campaign_id
        self._buffer: list[RecipientResult] = []
        self._flushed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = asyncio.Event()
        self._closing = False
        self._where = where(location)
        self._writer: sqlite3.Connection | None = None

    def record(self, result: RecipientResult) -> asyncio.Future[None]:
        """Queue a result; the future resolves once it is committed. The flush happens when
        someone waits for it (`wait`), so results from several connections share it."""
        self._buffer.append(result)
        if len(self._buffer) >= _MAX_GROUP:
            self._wake.set()
        return self._flushed

    def hurry(self, flushed: asyncio.Future[None]) -> None:
        """Start writing `flushed`'s results now, without waiting for them (`wait` later)."""
        if not flushed.done():
            self._wake.set()

    async def wait(self, flushed: asyncio.Future[None]) -> None:
        if not flushed.done():
            self.hurry(flushed)
            # Shielded: a worker cancelled while waiting must not cancel the flush.
            await asyncio.shield(flushed)
        else:
            flushed.result()

    def close(self) -> None:
        """Write what is left, then end `run`."""
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        owns: list[Connection] = []
        try:
            if self._where.path is None:
                for _ in range(_POSTGRESQL_WRITERS):
                    owns.append(await connect(self._where, application_name="mailer ledger"))
            else:
                self._writer = sqlite3.connect(str(self._where.path), isolation_level=None)
                for pragma in ("busy_timeout = 0", "synchronous = NORMAL",
                               "wal_autocheckpoint = 0"):
                    self._writer.execute(f"PRAGMA {pragma}")
        except OPEN_ERRORS as exc:
            for own in owns:
                await own.close()
            raise StoreError(f"cannot open database {self._where}: {exc}") from exc
        try:
            if not owns:
                await self._write_loop(None)
                return
            try:
                async with asyncio.TaskGroup() as group:
                    for own in owns:
                        group.create_task(self._write_loop(own))
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for own in owns:
                await own.close()

    async def _write_loop(self, own: Connection | None) -> None:
        """Flush whatever is recorded, on `own` (PostgreSQL) or the SQLite writer, until closed.
        On PostgreSQL two of these run, each on its own connection: results recorded while
        one flush is on the wire go out at once on the other, not after it."""
        while True:
            # Look at the state before sleeping: one wake-up may stand for several
            # record/close calls.
            if self._buffer:
                await self._flush(own)
            elif self._closing:
                return
            else:
                await self._wake.wait()
                self._wake.clear()

    async def _flush(self, own: Connection | None) -> None:
        # One more turn of the loop lets the replies that have just arrived on the other
        # connections be recorded too: commits nearly halve, at ~100 microseconds of latency.
        await asyncio.sleep(0)
        if not self._buffer:
            return  # the other writer took them during that turn
        batch, done = self._buffer, self._flushed
        self._buffer = []
        self._flushed = asyncio.get_running_loop().create_future()
        try:
            await self._write(batch, own)
        except Exception as exc:
            done.set_exception(exc)
            done.exception()  # retrieved here; workers awaiting it see it too
            raise
        done.set_result(None)

    async def _write(self, batch: list[RecipientResult], own: Connection | None) -> None:
        if own is not None:
            await record_results(own, self._campaign_id, batch, self._claimed_by)
            return
        assert self._writer is not None and self._where.path is not None
        try:
            # Our turn among this process's writers first (an opt-out's transaction holds
            # SQLite's lock across awaits), then at once: only another process can be busy.
            async with process_writer_lock(self._where.path):
                _record_results_now(self._writer, self._campaign_id, batch, self._claimed_by)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StoreError(f"campaign {self._campaign_id}: ledger: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"campaign {self._campaign_id}: ledger: {exc}") from exc
        async with self._lock:
            await record_results(self._conn, self._campaign_id, batch, self._claimed_by)
