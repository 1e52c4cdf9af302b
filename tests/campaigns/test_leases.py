"""Leases (`mailer.store.leases`): one holder at a time, expiry by a moved clock, and a
holder that died on this host taken over at once (a real process, killed with SIGKILL); the
database's clock on PostgreSQL; several senders' leases counted and a gone one broken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailer.store import leases
from mailer.store.db import Connection, open_db, transaction
from mailer.store.leases import Holder, Lease
from tests.campaigns.clock import FakeClock
from tests.campaigns.world import ROOT, World
from tests.servers import SmtpSink

HOST = "this-host"


@pytest.fixture
def world(tmp_path: Path, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, SmtpSink(), database)


@pytest.fixture
async def conn(world: World) -> AsyncIterator[Connection]:
    async with open_db(world.db) as connection:
        yield connection


def alive(name: str) -> Holder:
    """A holder that is this very (live) process."""
    return Holder(id=name, host=HOST, pid=os.getpid())


async def take(conn: Connection, name: str, holder: Holder, clock: FakeClock,
               ttl_s: float = 10.0) -> bool:
    async with transaction(conn):
        return await leases.acquire(conn, name, holder, now_s=clock.time(), ttl_s=ttl_s)


async def test_a_lease_has_one_holder_until_it_expires(conn: Connection) -> None:
    name, clock = "campaign:1", FakeClock()
    a, b = alive("a"), alive("b")
    start = clock.time()
    assert await take(conn, name, a, clock)
    clock.advance(5)
    assert not await take(conn, name, b, clock)
    assert await take(conn, name, a, clock)
    clock.advance(5)
    assert await leases.renew(conn, name, a, now_s=clock.time(), ttl_s=10.0)
    clock.advance(9)
    assert not await take(conn, name, b, clock)
    clock.advance(1)
    assert await take(conn, name, b, clock)
    clock.advance(1)
    assert not await leases.renew(conn, name, a, now_s=clock.time(), ttl_s=10.0)
    assert not await leases.holds(conn, name, a)
    assert await leases.holds(conn, name, b)
    await leases.release(conn, name, a)  # not the holder: no effect
    assert await leases.lease_of(conn, name) == Lease(name, b, start + 30.0)
    await leases.release(conn, name, b)
    assert await leases.lease_of(conn, name) is None


async def test_two_connections_racing_for_a_free_lease_get_one_winner(world: World) -> None:
    clock = FakeClock()
    async with open_db(world.db) as one, open_db(world.db) as two:
        results = [await take(one, "campaign:9", alive("one"), clock, ttl_s=30.0),
                   await take(two, "campaign:9", alive("two"), clock, ttl_s=30.0)]
    assert results == [True, False]


def dead_process() -> int:
    """The pid of a real process of this host that was killed with SIGKILL (and reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=ROOT)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    return child.pid


async def test_a_lease_whose_holder_was_killed_on_this_host_is_taken_over_at_once(
    conn: Connection,
) -> None:
    clock = FakeClock()
    killed = Holder(id="killed", host=HOST, pid=dead_process())
    assert await take(conn, "campaign:3", killed, clock, ttl_s=60.0)
    assert not leases.process_exists(killed.pid)
    assert await take(conn, "campaign:3", alive("next"), clock)
    assert await leases.holds(conn, "campaign:3", alive("next"))


async def test_a_lease_held_from_another_host_waits_for_its_expiry(
    conn: Connection,
) -> None:
    clock = FakeClock()
    # The same (dead here) pid, on a host whose processes we cannot see.
    elsewhere = Holder(id="elsewhere", host="another-host", pid=dead_process())
    assert await take(conn, "campaign:4", elsewhere, clock, ttl_s=60.0)
    assert not await take(conn, "campaign:4", alive("next"), clock)
    clock.advance(59)
    assert not await take(conn, "campaign:4", alive("next"), clock)
    clock.advance(1)
    assert await take(conn, "campaign:4", alive("next"), clock)


async def test_a_live_holder_of_this_host_keeps_its_lease(conn: Connection) -> None:
    clock = FakeClock()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=ROOT)
    try:
        running = Holder(id="running", host=HOST, pid=child.pid)
        assert await take(conn, "campaign:5", running, clock)
        assert not await take(conn, "campaign:5", alive("next"), clock)
        assert leases.takeable(await leases.lease_of(conn, "campaign:5"), alive("next"),
                               now_s=clock.time() + 10)
    finally:
        child.kill()
        child.wait(10)


def test_a_new_holder_names_this_host_and_process() -> None:
    holder = leases.new_holder()
    assert holder.pid == os.getpid() and holder.host and holder.id
    assert leases.new_holder().id != holder.id


async def test_the_time_of_leases_is_the_databases_on_postgresql_and_the_callers_on_sqlite(
    conn: Connection,
) -> None:
    clock = FakeClock()
    clock.advance(-86400.0 * 365)  # a year behind: only SQLite believes it
    now = await leases.now_s(conn, clock)
    if conn.engine == "postgresql":
        assert abs(now - time.time()) < 60  # the server's clock (the same machine here)
    else:
        assert now == clock.time()


async def test_live_senders_are_counted_by_prefix_and_a_gone_one_is_broken(
    conn: Connection,
) -> None:
    clock = FakeClock()
    async with transaction(conn):
        for name, holder in (("campaign:1:a", alive("a")), ("campaign:1:b", alive("b")),
                             ("campaign:12:c", alive("c")), ("campaign:1", alive("old"))):
            assert await leases.acquire(conn, name, holder, now_s=clock.time(), ttl_s=10.0)
        killed = Holder(id="k", host=HOST, pid=dead_process())
        assert await leases.acquire(conn, "campaign:1:k", killed, now_s=clock.time(),
                                    ttl_s=60.0)
    now = clock.time()
    assert await leases.live_count(conn, "campaign:1:", now_s=now) == 3
    a = await leases.lease_of(conn, "campaign:1:a")
    assert a is not None
    assert not await leases.break_lease(conn, a, now_s=now, host=HOST)  # alive
    k = await leases.lease_of(conn, "campaign:1:k")
    assert k is not None and await leases.break_lease(conn, k, now_s=now, host=HOST)
    assert await leases.live_count(conn, "campaign:1:", now_s=now) == 2
    # Expired: broken, unless its holder renewed first (the break names the row as read).
    assert not await leases.break_lease(conn, a, now_s=now + 9, host=HOST)
    assert await leases.renew(conn, "campaign:1:a", alive("a"), now_s=now + 9, ttl_s=10.0)
    assert not await leases.break_lease(conn, a, now_s=now + 10, host=HOST)
    assert await leases.break_lease(conn, a, now_s=now + 19, host=HOST)
    assert await leases.lease_of(conn, "campaign:1:a") is None
