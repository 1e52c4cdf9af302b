"""The daemons' heartbeats and what `mailer status` reads beside them.

`mailer run` upserts one `daemon_heartbeat` row (its instance name and pid) every few seconds
with each part's state; several hosts on one database each keep their own row. `read_snapshot`
reads every row, the holder of the inbox lease and the queues, opening the database read-only
(SQLite) or without migrating it (PostgreSQL), so `mailer status` works from any shell on any
host without talking to a daemon and never creates or migrates a database.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from mailer.clock import SYSTEM_CLOCK
from mailer.errors import StoreError
from mailer.store import leases
from mailer.store.db import MIGRATIONS, open_db, read_only_uri, schema_version
from mailer.store.edge import translated
from mailer.store.engine import DRIVER_ERRORS, Connection, Location, SqliteConnection, where

# Rows of daemons gone for this long are pruned at the next beat.
_KEEP_STOPPED = timedelta(days=7)
# A campaign's rate is measured over this window.
RATE_WINDOW_S = 60
_LEASE_HOST_VERSION = 6


@dataclass(frozen=True)
class Heartbeat:
    host: str
    pid: int
    started_at: str
    version: str
    beat_at: str
    stopped_at: str | None
    parts: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class CampaignProgress:
    id: int
    kind: str
    sent: int
    total: int
    rate_per_s: float  # sent over the last RATE_WINDOW_S


@dataclass(frozen=True)
class PausedCampaign:
    """A campaign paused because of its settings (`paused_by` "settings") or the sender-wide
    complaint rate ("complaint-rate"): it waits for a person, so `mailer status` warns."""

    id: int
    reason: str


@dataclass(frozen=True)
class InboxLease:
    """Who holds the lease named `inbox` (one daemon reads the IMAP inbox at a time)."""

    holder: str
    host: str
    pid: int
    expires_at: float  # seconds since the epoch
    # The time leases are judged by when this was read: the database server's clock on
    # PostgreSQL (the holder set `expires_at` by it), None on SQLite (the caller's clock).
    judged_at: float | None = None


@dataclass(frozen=True)
class Snapshot:
    # Every daemon's row, the latest beat first.
    heartbeats: list[Heartbeat] = field(default_factory=list)
    inbox_lease: InboxLease | None = None
    outbox_depth: int = 0
    review_open: int = 0
    campaigns: list[CampaignProgress] = field(default_factory=list)
    paused_by_settings: list[PausedCampaign] = field(default_factory=list)
    paused_by_complaints: list[PausedCampaign] = field(default_factory=list)

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The latest beat of any daemon."""
        return self.heartbeats[0] if self.heartbeats else None


@translated("heartbeat: write heartbeat")
async def write_heartbeat(conn: Connection, beat: Heartbeat) -> None:
    """Upsert this daemon's row (one statement: its own transaction)."""
    await conn.execute(
        "INSERT INTO daemon_heartbeat (host, pid, started_at, version, beat_at, stopped_at, parts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, pid) DO UPDATE SET "
        "started_at = excluded.started_at, version = excluded.version, "
        "beat_at = excluded.beat_at, stopped_at = excluded.stopped_at, parts = excluded.parts",
        (beat.host, beat.pid, beat.started_at, beat.version, beat.beat_at, beat.stopped_at,
         json.dumps(beat.parts, sort_keys=True)),
    )


@translated("heartbeat: prune heartbeats")
async def prune_heartbeats(conn: Connection, now: datetime) -> None:
    await conn.execute("DELETE FROM daemon_heartbeat WHERE beat_at < ?",
                       ((now - _KEEP_STOPPED).isoformat(timespec="microseconds"),))


@translated("heartbeat: outbox depth")
async def outbox_depth(conn: Connection) -> int:
    return await _count(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'")


async def _count(conn: Connection, sql: str) -> int:
    async with conn.execute(sql) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def read_snapshot(location: Location) -> Snapshot | None:
    """The latest heartbeat and the queues beside it; None when there is no database (file).

    Never creates or migrates a database (on SQLite it opens the file read-only). Raises
    StoreError for a database that cannot be read or is newer than this code."""
    place = where(location)
    if place.path is None:
        async with open_db(location, migrate_schema=False) as conn:
            try:
                if not await _count(conn, "SELECT count(*) FROM pg_tables WHERE tablename = "
                                    "'schema_version' AND schemaname = current_schema()"):
                    return None  # an empty database no mailer has opened yet
                return await _snapshot(conn)
            except DRIVER_ERRORS as exc:
                raise StoreError(f"cannot read database {place}: {exc}") from exc
    path = place.path
    if not await asyncio.to_thread(path.exists):
        return None
    try:
        async with aiosqlite.connect(read_only_uri(path), uri=True) as raw:
            await raw.execute("PRAGMA busy_timeout = 5000")
            raw.row_factory = aiosqlite.Row
            return await _snapshot(SqliteConnection(raw, place))
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read database {path}: {exc}") from exc


async def _lease_clock(conn: Connection) -> float | None:
    if conn.engine != "postgresql":
        return None
    return await leases.now_s(conn, SYSTEM_CLOCK)


async def _snapshot(conn: Connection) -> Snapshot | None:
    version = await schema_version(conn)
    if version > len(MIGRATIONS):
        raise StoreError(f"database schema version {version} is newer than this mailer "
                         f"({len(MIGRATIONS)})")
    if version == 0:  # created by nothing of ours yet
        return None
    if conn.engine == "sqlite" and not await _count(
            conn, "SELECT count(*) FROM sqlite_master WHERE name = 'daemon_heartbeat'"):
        return Snapshot()  # not yet migrated by a daemon of this version
    heartbeats = [Heartbeat(host=str(row[0]), pid=int(row[1]), started_at=str(row[2]),
                            version=str(row[3]), beat_at=str(row[4]), stopped_at=row[5],
                            parts=json.loads(row[6]))
                  for row in await conn.execute_fetchall(
                      "SELECT host, pid, started_at, version, beat_at, stopped_at, parts "
                      "FROM daemon_heartbeat ORDER BY beat_at DESC, host, pid")]
    inbox_lease = None
    # Leases carry their holder's host and pid from migration 6 on.
    if conn.engine == "postgresql" or version >= _LEASE_HOST_VERSION:
        for row in await conn.execute_fetchall(
                "SELECT holder, host, pid, expires_at FROM leases WHERE name = 'inbox'"):
            inbox_lease = InboxLease(holder=str(row[0]), host=str(row[1]), pid=int(row[2]),
                                     expires_at=float(row[3]), judged_at=await _lease_clock(conn))
    since = (datetime.now(UTC) - timedelta(seconds=RATE_WINDOW_S)).isoformat(
        timespec="microseconds")
    campaigns = []
    async with conn.execute(
        "SELECT c.id, c.kind, sum(CASE WHEN r.status = 'sent' THEN 1 ELSE 0 END), "
        "count(r.customer_id), "
        "sum(CASE WHEN r.status = 'sent' AND r.updated_at >= ? THEN 1 ELSE 0 END) "
        "FROM campaigns c "
        "LEFT JOIN campaign_recipients r ON r.campaign_id = c.id "
        "WHERE c.status = 'sending' GROUP BY c.id ORDER BY c.id", (since,)
    ) as cur:
        for r in await cur.fetchall():
            campaigns.append(CampaignProgress(
                id=int(r[0]), kind=str(r[1]), sent=int(r[2] or 0), total=int(r[3]),
                rate_per_s=round(int(r[4] or 0) / RATE_WINDOW_S, 2)))
    paused: dict[str, list[PausedCampaign]] = {"settings": [], "complaint-rate": []}
    # A database a daemon of this version has not migrated yet has no `paused_by` (read-only
    # here: status never migrates).
    if conn.engine == "postgresql" or await _count(
            conn, "SELECT count(*) FROM pragma_table_info('campaigns') WHERE name = 'paused_by'"):
        async with conn.execute(
            "SELECT id, status_reason, paused_by FROM campaigns WHERE status = 'paused' "
            "AND paused_by IN ('settings', 'complaint-rate') ORDER BY id"
        ) as cur:
            for r in await cur.fetchall():
                paused[str(r[2])].append(PausedCampaign(id=int(r[0]), reason=str(r[1])))
    return Snapshot(
        heartbeats=heartbeats,
        inbox_lease=inbox_lease,
        paused_by_settings=paused["settings"],
        paused_by_complaints=paused["complaint-rate"],
        outbox_depth=await outbox_depth(conn),
        review_open=await _count(conn, "SELECT count(*) FROM review_items WHERE status = 'open'"),
        campaigns=campaigns,
    )
