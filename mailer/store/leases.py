"""Leases: one holder at a time for work that must not run twice (a campaign's sending; next
the confirmation outbox and the inbox worker).

A lease is a row (`leases`): a name, a holder id, the holder's host and pid, and an expiry in
unix seconds. It is taken with one conditional upsert inside the caller's BEGIN IMMEDIATE, so
two processes can never both see it free, and renewed by its holder well before it expires.

It can be taken when it is free, expired, already ours, or held by a process of this host
that no longer exists: after `kill -9` the next run takes over at once instead of waiting for
the expiry. A lease held from another host waits for its expiry, because we cannot see
whether that process lives. A pid reused by an unrelated process only makes us wait for the
expiry, never take a live holder's lease.

Times are passed in by the caller, as unix seconds from `now_s`: on PostgreSQL the database's
own clock, so that hosts whose clocks disagree still agree on when a lease expires; on SQLite
(one host) the caller's `mailer.clock.Clock`, so tests move time instead of sleeping. (Tests on
PostgreSQL expire a lease by updating its row.)

Several holders can share one piece of work by each holding a lease of its own under a common
prefix (`campaign:{id}:{holder}`): `live_count` counts them and `break_lease` removes the lease
of one that is gone, so that what it had claimed may be taken back.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mailer.clock import Clock
from mailer.instance import instance_name
from mailer.store.edge import translated
from mailer.store.engine import Connection


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: a random id (one per process or run), and where it runs."""

    id: str
    host: str
    pid: int

    def __str__(self) -> str:
        return f"{self.id} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: Holder
    expires_at: float


def new_holder() -> Holder:
    """A holder for this process: a random id, this host and this pid."""
    return Holder(id=f"{secrets.token_hex(6)}-pid{os.getpid()}", host=instance_name(),
                  pid=os.getpid())


def process_exists(pid: int) -> bool:
    """True if a process `pid` exists on this host and is not a zombie (a killed child its
    parent has not reaped yet is dead for our purpose)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc: trust kill(0)
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def holder_is_dead(holder: Holder, *, host: str) -> bool:
    """True only when we can see it: the holder ran on `host` (ours) and is gone."""
    return holder.host == host and holder.pid > 0 and not process_exists(holder.pid)


def takeable(lease: Lease | None, holder: Holder, *, now_s: float) -> bool:
    """Whether `holder` may take the lease as it stands (the same rule `acquire` applies)."""
    return (lease is None or lease.expires_at <= now_s or lease.holder.id == holder.id
            or holder_is_dead(lease.holder, host=holder.host))


@translated("lease")
async def lease_of(conn: Connection, name: str) -> Lease | None:
    async with conn.execute(
        "SELECT holder, host, pid, expires_at FROM leases WHERE name = ?", (name,)
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return Lease(name, Holder(str(row[0]), str(row[1]), int(row[2])), float(row[3]))


@translated("taking a lease")
async def acquire(
    conn: Connection, name: str, holder: Holder, *, now_s: float, ttl_s: float
) -> bool:
    """Take the lease if `takeable`; run inside BEGIN IMMEDIATE. True if we hold it now."""
    current = await lease_of(conn, name)
    # A dead local holder's lease is taken as if expired; the upsert's condition names that
    # holder, so a lease renewed meanwhile by someone else is never overwritten.
    dead = (current.holder.id if current is not None
            and holder_is_dead(current.holder, host=holder.host) else None)
    await conn.execute(
        "INSERT INTO leases (name, holder, host, pid, expires_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, host = excluded.host, "
        "pid = excluded.pid, expires_at = excluded.expires_at "
        "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder "
        "OR leases.holder = ?",
        (name, holder.id, holder.host, holder.pid, now_s + ttl_s, now_s, dead),
    )
    async with conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    return row is not None and row[0] == holder.id


@translated("renewing a lease")
async def renew(
    conn: Connection, name: str, holder: Holder, *, now_s: float, ttl_s: float
) -> bool:
    """Extend our lease; False if someone else holds it now (ours expired and was taken)."""
    cur = await conn.execute(
        "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
        (now_s + ttl_s, name, holder.id),
    )
    renewed = cur.rowcount == 1
    await cur.close()
    return renewed


@translated("checking a lease")
async def holds(conn: Connection, name: str, holder: Holder) -> bool:
    """True if `holder` still holds the lease: not taken over, even if it has just expired
    (taking it over is the only way another process can act on it)."""
    async with conn.execute(
        "SELECT 1 FROM leases WHERE name = ? AND holder = ?", (name, holder.id)
    ) as cur:
        return await cur.fetchone() is not None


@translated("releasing a lease")
async def release(conn: Connection, name: str, holder: Holder) -> None:
    await conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder.id))


@translated("reading the database clock")
async def now_s(conn: Connection, clock: Clock) -> float:
    """The time leases are judged by, in unix seconds: the database server's clock on
    PostgreSQL (every host reads the same one), the caller's clock on SQLite."""
    if conn.engine == "postgresql":
        rows = list(await conn.execute_fetchall(
            "SELECT extract(epoch FROM clock_timestamp())"))
        return float(rows[0][0])
    return clock.time()


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Names starting with `prefix`, as a range of the primary key (byte order on both
    engines: COLLATE "C" on PostgreSQL, BINARY on SQLite): prefix <= name < prefix + 1."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


@translated("counting leases")
async def live_count(conn: Connection, prefix: str, *, now_s: float) -> int:
    """How many unexpired leases have a name starting with `prefix`."""
    low, high = _prefix_range(prefix)
    rows = list(await conn.execute_fetchall(
        "SELECT count(*) FROM leases WHERE name >= ? AND name < ? AND expires_at > ?",
        (low, high, now_s)))
    return int(rows[0][0])


@translated("breaking a lease")
async def break_lease(conn: Connection, lease: Lease, *, now_s: float, host: str) -> bool:
    """Remove `lease` if its holder is gone (expired, or a dead process of `host`); True if
    removed. Conditional on the row as read, so a renewal that got in first keeps it."""
    dead = holder_is_dead(lease.holder, host=host)
    cur = await conn.execute(
        "DELETE FROM leases WHERE name = ? AND holder = ? AND (expires_at <= ? OR ? = 1)",
        (lease.name, lease.holder.id, now_s, int(dead)))
    removed = cur.rowcount == 1
    await cur.close()
    return removed
