"""Fault injection on the database: its folder read-only, then writable again; its disk full,
then freed.

As root (CI) the folder is a small tmpfs remounted read-only, so even root cannot write; as
another user, the folder and its files lose their write permission. The fault is in place
before the daemon starts, because Linux refuses to remount a file system read-only while a
file on it is open for writing.

The full disk is a 4 MB tmpfs (root only: CI runs as root) filled up by a file while the
daemon runs; deleting the file frees the space.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.daemon_world import daemon, daemon_log, request, status
from tests.inbox.world import make_world
from tests.postgres import PostgresServer
from tests.servers import ImapTestServer, SmtpSink, free_port
from tests.waiting import wait_for

CUSTOMERS = ("eve@example.com", "frank@example.com", "grace@example.com")


class Folder:
    """A folder whose writability a test can switch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = os.geteuid() == 0

    def read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
        else:
            for item in [*self.path.iterdir(), self.path]:
                item.chmod(0o555 if item.is_dir() else 0o444)

    def writable(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)
        else:
            for item in [self.path, *self.path.iterdir()]:
                item.chmod(0o755 if item.is_dir() else 0o644)


@contextmanager
def switchable_folder(path: Path, size: str = "16m") -> Iterator[Folder]:
    path.mkdir()
    folder = Folder(path)
    if folder.mounted:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True)
    try:
        yield folder
    finally:
        folder.writable()
        if folder.mounted:
            subprocess.run(["umount", "--lazy", str(path)], check=True)


async def test_a_read_only_database_folder_loses_no_request_and_recovers(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    with switchable_folder(tmp_path / "data") as folder:
        world = await make_world(tmp_path, imap_server, smtp_sink,
                                 database=folder.path / "mailer.db")
        folder.read_only()
        world.deliver(*(request(customer) for customer in CUSTOMERS))
        with daemon(world) as process:
            await wait_for(lambda: daemon_log(world).count("retrying in") >= 6,
                           what="six 'retrying in' lines in the daemon log")
            await asyncio.sleep(2)  # a few more attempts
            assert process.poll() is None  # still running, still trying
            assert len(world.folder_subjects("INBOX")) == len(CUSTOMERS)  # left where they were
            folder.writable()
            await wait_for(lambda: world.opted_out() == set(CUSTOMERS),
                           what="every customer opted out")
            await wait_for(lambda: len(smtp_sink.messages) == len(CUSTOMERS),
                           what="every confirmation sent")
        assert process.returncode == 0
        log = daemon_log(world)
        failures = [line for line in log.splitlines() if "retrying in" in line]
        # One clear line per failed attempt, naming the database; no traceback.
        assert all(re.search(r"(inbox|outbox|campaigns|campaign-resume|heartbeat|reputation|"
                             r"housekeeping): cannot "
                             r"(open|prepare) "
                             r"database .*mailer\.db: .*; retrying in [\d.]+ s \(attempt \d+\)$",
                             line) for line in failures), failures
        assert "Traceback" not in log
        assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [
            (2 * len(CUSTOMERS),)]
        with sqlite3.connect(world.db_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert world.folder_subjects("INBOX") == []


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def fill(folder: Path) -> Path:
    """Write a file until the file system has no space left; the file, to delete later."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]  # fill the last blocks too


FULL = re.compile(r"^.* (inbox|outbox|campaigns|heartbeat|campaign-resume): .*"
                  r"database or disk is full.*; retrying in [\d.]+ s \(attempt \d+\)$",
                  re.MULTILINE)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI is root)")
async def test_a_full_disk_loses_no_request_corrupts_nothing_and_recovers_once_space_is_freed(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    with switchable_folder(tmp_path / "data", size="4m") as folder:
        world = await make_world(tmp_path, imap_server, smtp_sink,
                                 database=folder.path / "mailer.db")
        with daemon(world) as process:
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
            filler = fill(folder.path)
            full_at = time.monotonic()
            world.deliver(*(request(customer) for customer in CUSTOMERS))
            await wait_for(lambda: len(FULL.findall(daemon_log(world))) >= 6,
                           what="six disk-full lines in the daemon log")
            await asyncio.sleep(2)  # a few more attempts
            assert process.poll() is None  # still running, still trying
            assert world.opted_out() == set()
            filler.unlink()
            freed_at = time.monotonic()
            await wait_for(lambda: world.opted_out() == set(CUSTOMERS),
                           what="every customer opted out")
            recovered_s = time.monotonic() - freed_at
            await wait_for(lambda: len(smtp_sink.messages) == len(CUSTOMERS),
                           what="every confirmation sent")
            await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        assert process.returncode == 0
        print(f"\ndisk full for {freed_at - full_at:.1f} s: requests honoured "
              f"{recovered_s:.1f} s after space was freed")
        log = daemon_log(world)
        failures = [line for line in log.splitlines() if "retrying in" in line]
        # One clear line per failed attempt, saying the disk is full. (An error from SQLite
        # itself is one `mailer.lifecycle.supervise` did not foresee: it adds its traceback once per
        # part, on the first attempt, not on every retry.)
        assert failures
        assert all(FULL.match(line) for line in failures), failures
        # The store says what failed in one line (StoreError); no traceback, ever.
        assert "Traceback" not in log and "OperationalError" not in log
        assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [
            (2 * len(CUSTOMERS),)]
        with sqlite3.connect(world.db_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert world.folder_subjects("INBOX") == []


async def test_postgresql_ending_every_daemon_connection_loses_no_request(
    tmp_path: Path, imap_server: ImapTestServer, smtp_sink: SmtpSink,
    postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    port = free_port()
    world = await make_world(tmp_path, imap_server, smtp_sink, database=url,
                             http={"host": "127.0.0.1", "port": port})
    first, *others = CUSTOMERS
    with daemon(world) as process:
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0")
        world.deliver(request(first))
        await wait_for(lambda: world.opted_out() == {first}, what="the first customer opted out")
        # What a server restart or a failover of a managed PostgreSQL looks like to clients.
        assert postgres_server.kill_connections(url.rsplit("/", 1)[1]) > 0
        world.deliver(*(request(customer) for customer in others))
        await wait_for(lambda: world.opted_out() == set(CUSTOMERS),
                       what="every customer opted out")
        await wait_for(lambda: len(smtp_sink.messages) == len(CUSTOMERS),
                       what="every confirmation sent")
        await wait_for(lambda: status(world)[0] == 0, what="mailer status to exit 0 again")
        # The public listener's connection was ended too: the unsubscribe link works again.
        await wait_for(lambda: healthz(port) == 200, what="/healthz to answer 200")
        assert process.poll() is None
    assert process.returncode == 0
    log = daemon_log(world)
    assert "programming error" not in log
    assert world.query("SELECT count(*) FROM consent_events WHERE source = 'email'") == [
        (2 * len(CUSTOMERS),)]
    assert world.folder_subjects("INBOX") == []
    assert sorted(r for m in smtp_sink.messages for r in m.rcpt_tos) == sorted(CUSTOMERS)
