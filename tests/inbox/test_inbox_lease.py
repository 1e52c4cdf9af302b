"""One reader per mailbox across daemons and hosts: the inbox lease (mailer.inbox.lease).

Each "daemon" here is an `InboxWorker` under the supervisor with a holder of its own, named
as if on another host, so that only the lease (never the same-host pid check) keeps them
apart; they share one IMAP account and one database, on either engine.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.inbox.lease import InboxLease
from mailer.inbox.worker import InboxWorker, WatchTiming
from mailer.lifecycle.supervise import Part
from mailer.lifecycle.worker import run_supervised
from mailer.store.db import open_db
from mailer.store.leases import Holder
from tests import dbrows
from tests.daemon_world import daemon, daemon_log
from tests.helpers import DAEMON_SECRET, ROOT, dovecot_only
from tests.inbox.world import World, make_world
from tests.postgres import PostgresServer
from tests.servers import DovecotServer, ImapTestServer, RawImapError, SmtpSink, sample_message
from tests.waiting import wait_for

SUBJECT = "Unsubscribe special offers"
COUNT = 40
CSV = "name,email,company,phone\n" + "".join(
    f"Customer {i},c{i}@example.com,,01632 96{i:04d}\n" for i in range(COUNT))


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink) -> AsyncIterator[World]:
    yield await make_world(tmp_path, imap_server, smtp_sink, CSV, database=database)


def request(n: int) -> bytes:
    return sample_message(subject=SUBJECT, sender=f"c{n}@example.com", body="Please stop.\n")


class Daemon:
    """One daemon's inbox part, as `mailer run` supervises it, on a host of its own."""

    def __init__(self, world: World, host: str, *, ttl_s: float = 6.0) -> None:
        self.part = Part(f"inbox on {host}")
        self.lease = InboxLease(world.db_path, "inbox", ttl_s=ttl_s,
                                holder=Holder(f"{host}-holder", host, os.getpid()))
        self.worker = InboxWorker(world.db_path, world.imap, world.rules,
                                  WatchTiming(idle_timeout_s=60.0, poll_interval_s=1.0),
                                  part=self.part, lease=self.lease)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(run_supervised(self.worker, self.stop))

    @property
    def lease_state(self) -> object:
        return self.part.state.details.get("lease")

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout=30)


def message_ids(world: World, folder: str) -> list[str]:
    """The Message-ID of every message in `folder`, one entry per copy."""
    with world.raw() as raw:
        try:
            raw.command(f'EXAMINE "{folder}"')
        except RawImapError:
            return []  # not created yet: it holds nothing
        lines = raw.command("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    found = [re.search(rb"Message-ID: ?(<[^>\r\n]*>)", line, re.IGNORECASE) for line in lines]
    return [m.group(1).decode() for m in found if m]


async def write(world: World, sql: str, parameters: tuple[object, ...] = ()) -> None:
    """Change the leases as another daemon would: through the store, which waits its turn
    for SQLite's write lock as long as a daemon does."""
    async with open_db(world.db_path) as conn:
        await conn.execute(sql, parameters)


def lease_holder(world: World) -> list[tuple[object, ...]]:
    return dbrows.rows(world.db_path, "SELECT holder FROM leases WHERE name = 'inbox'")


@dovecot_only
async def test_two_daemons_on_one_inbox_leave_each_request_once_in_processed(
    tmp_path: Path, database: Path | str, smtp_sink: SmtpSink
) -> None:
    # A server without MOVE (COPY, then expunge) widens the window two readers race in.
    with DovecotServer(without_move=True) as server:
        world = await make_world(tmp_path, server, smtp_sink, CSV, database=database)
        daemons = [Daemon(world, "host-a"), Daemon(world, "host-b")]
        for daemon in daemons:
            daemon.start()
        try:
            await wait_for(lambda: sorted(str(d.lease_state) for d in daemons)
                           == ["held", "standing by"],
                           what="one daemon holding, one standing by")
            # One at a time, as mail arrives: each arrival ends both daemons' IDLE at once,
            # and without the lease both then pass and copy the same messages (9 to 16 of 40
            # twice in Processed, measured so), though each is decided once.
            for n in range(COUNT):
                world.deliver(request(n))
                await asyncio.sleep(0.05)
            await wait_for(lambda: len(message_ids(world, "Processed")) >= COUNT
                           and not message_ids(world, "INBOX"), what="every request processed")
        finally:
            for daemon in daemons:
                await daemon.close()
        assert_each_request_once(world)


def assert_each_request_once(world: World) -> None:
    copies = Counter(message_ids(world, "Processed"))
    assert len(copies) == COUNT
    assert [m for m, n in copies.items() if n > 1] == []
    # Consent recorded once per request: each customer's preferences changed once.
    assert world.query(
        "SELECT count(*), count(DISTINCT customer_id) FROM consent_events "
        "WHERE source = 'email' AND category = 'offers'") == [(COUNT, COUNT)]
    assert world.query("SELECT count(*) FROM inbound") == [(COUNT,)]


async def test_a_daemon_standing_by_takes_over_once_the_holders_lease_expires(
    world: World,
) -> None:
    # A daemon of another host holds it and dies there: its lease only expires.
    await write(world, "INSERT INTO leases (name, holder, host, pid, expires_at) "
                       "VALUES ('inbox', 'gone', 'host-gone', 1, ?)", (time.time() + 3600,))
    daemon = Daemon(world, "host-b", ttl_s=3.0)
    daemon.start()
    try:
        await wait_for(lambda: daemon.lease_state == "standing by", what="standing by")
        assert daemon.part.state.state == "running"  # healthy, as `mailer status` shows it
        world.deliver(request(1))
        # The holder's host went away an hour ago, as far as the lease can tell.
        await write(world, "UPDATE leases SET expires_at = ? WHERE name = 'inbox'",
                           (time.time() - 1,))
        await wait_for(lambda: world.opted_out() == {"c1@example.com"}, what="c1 opted out")
        assert daemon.lease_state == "held"
        assert lease_holder(world) == [("host-b-holder",)]
    finally:
        await daemon.close()
    # A daemon that stops gives the lease up, so the next one need not wait for it.
    assert lease_holder(world) == []


async def test_a_daemon_killed_while_holding_the_inbox_is_replaced_at_once_on_its_host(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink,
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink, CSV, database=database,
                             imap={"lease_ttl_s": 3600.0})
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), "run"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MAILER_SECRET": DAEMON_SECRET})
    try:
        await wait_for(lambda: lease_holder(world) != [], what="`mailer run` holding the inbox")
        (pid,), = dbrows.rows(world.db_path, "SELECT pid FROM leases WHERE name = 'inbox'")
        assert pid == process.pid
        standby = Daemon(world, socket.gethostname(), ttl_s=3.0)
        standby.start()
        try:
            await wait_for(lambda: standby.lease_state == "standing by", what="standing by")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            # Its lease has an hour to run, but its pid is gone from this host.
            world.deliver(request(5))
            await wait_for(lambda: world.opted_out() == {"c5@example.com"},
                           what="c5 opted out by the daemon standing by")
            assert lease_holder(world) == [(standby.lease.holder.id,)]
        finally:
            await standby.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


async def test_a_holder_that_lost_its_lease_decides_nothing_more(world: World) -> None:
    daemon = Daemon(world, "host-a")
    daemon.start()
    try:
        await wait_for(lambda: daemon.lease_state == "held", what="the lease held")
        # Another daemon took it over (ours looked expired to it): ours must stop reading.
        await write(world, "UPDATE leases SET holder = 'other', host = 'host-c', "
                           "expires_at = ? WHERE name = 'inbox'", (time.time() + 3600,))
        world.deliver(request(2))
        await wait_for(lambda: daemon.lease_state == "standing by",
                       what="standing by again")
        assert world.query("SELECT count(*) FROM inbound") == [(0,)]
        assert world.opted_out() == set()
    finally:
        await daemon.close()
    assert lease_holder(world) == [("other",)]


async def test_a_burst_leaves_the_mailbox_to_the_daemon_holding_it(world: World) -> None:
    await write(world, "INSERT INTO leases (name, holder, host, pid, expires_at) "
                       "VALUES ('inbox', 'daemon', 'host-a', 1, ?)", (time.time() + 3600,))
    world.deliver(request(3))
    burst = Daemon(world, "host-b")
    report = await burst.worker.run_once()
    assert report.seen == 0
    assert len(message_ids(world, "INBOX")) == 1
    assert world.opted_out() == set()
    # Free, the burst reads it, and leaves it free again.
    await write(world, "DELETE FROM leases")
    assert (await burst.worker.run_once()).unsubscribed == 1
    assert lease_holder(world) == []


async def test_a_daemon_stopping_wakes_the_one_standing_by_on_another_host(
    tmp_path: Path, postgres_server: PostgresServer, imap_server: ImapTestServer,
    smtp_sink: SmtpSink,
) -> None:
    """PostgreSQL: the release notifies `mailer_inbox`; without it the one standing by would
    only look again after ttl/3, 40 s here."""
    url = postgres_server.create_database()
    world = await make_world(tmp_path, imap_server, smtp_sink, CSV, database=url)
    first, second = Daemon(world, "host-a", ttl_s=120.0), Daemon(world, "host-b", ttl_s=120.0)
    first.start()
    await wait_for(lambda: first.lease_state == "held", what="host-a holding the lease")
    second.start()
    try:
        await wait_for(lambda: second.lease_state == "standing by", what="host-b standing by")
        await first.close()
        await wait_for(lambda: second.lease_state == "held", what="host-b taking over",
                       timeout_s=20.0)
        world.deliver(request(4))
        await wait_for(lambda: world.opted_out() == {"c4@example.com"}, what="c4 opted out")
    finally:
        await second.close()
        postgres_server.drop_database(url.rsplit("/", 1)[1])


async def test_a_daemon_standing_by_tells_systemd_it_is_ready(world: World) -> None:
    """Another daemon reads the inbox, so this one's first pass never comes: standing by is
    its ready state, or systemd would kill it at its start timeout."""
    await write(world, "INSERT INTO leases (name, holder, host, pid, expires_at) "
                       "VALUES ('inbox', 'daemon', 'host-a', 1, ?)", (time.time() + 3600,))
    folder = tempfile.mkdtemp(prefix="notify-")  # AF_UNIX paths are limited to 108 bytes
    path = os.path.join(folder, "notify.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(60)
            with daemon(world, env={"NOTIFY_SOCKET": path}):
                first = sock.recv(256).decode()
    finally:
        shutil.rmtree(folder)
    assert first == "READY=1"
    assert "inbox standing by" in daemon_log(world)
    assert lease_holder(world) == [("daemon",)]
