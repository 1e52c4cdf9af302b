"""Leases (`mailer.store.leases`): one holder at a time, expiry by a moved clock, and a
holder that died on this host taken over at once (a real process, killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

from mailer.store import leases
from mailer.store.db import open_db, transaction
from mailer.store.leases import Holder, Lease
from tests.campaigns.clock import FakeClock
from tests.campaigns.world import ROOT, World
from tests.servers import SmtpSink

HOST = "this-host"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield World.build(tmp_path, SmtpSink())


@pytest.fixture
async def conn(world: World) -> AsyncIterator[aiosqlite.Connection]:
    async with open_db(world.db) as connection:
        yield connection


def alive(name: str) -> Holder:
    """A holder that is this very (live) process."""
    return Holder(id=name, host=HOST, pid=os.getpid())


async def take(conn: aiosqlite.Connection, name: str, holder: Holder, clock: FakeClock,
               ttl_s: float = 10.0) -> bool:
    async with transaction(conn):
        return await leases.acquire(conn, name, holder, now_s=clock.time(), ttl_s=ttl_s)


async def test_a_lease_has_one_holder_until_it_expires(conn: aiosqlite.Connection) -> None:
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
    conn: aiosqlite.Connection,
) -> None:
    clock = FakeClock()
    killed = Holder(id="killed", host=HOST, pid=dead_process())
    assert await take(conn, "campaign:3", killed, clock, ttl_s=60.0)
    assert not leases.process_exists(killed.pid)
    assert await take(conn, "campaign:3", alive("next"), clock)
    assert await leases.holds(conn, "campaign:3", alive("next"))


async def test_a_lease_held_from_another_host_waits_for_its_expiry(
    conn: aiosqlite.Connection,
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


async def test_a_live_holder_of_this_host_keeps_its_lease(conn: aiosqlite.Connection) -> None:
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
