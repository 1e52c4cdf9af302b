"""The confirmation outbox (mailer.consent.confirmations): every customer who asked gets one
confirmation, however many processes send the outbox and whichever of them is killed.
Real IMAP server, real SMTP sink, real SQLite file, real `mailer` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer import backoff
from mailer.consent.confirmations import (
    ClaimOwner,
    outbox_config,
    owner_is_gone,
    send_due_confirmations,
)
from mailer.store import outbox as outbox_store
from mailer.store.db import open_db, transaction
from tests import dbrows
from tests.helpers import DAEMON_SECRET, ROOT
from tests.inbox.world import World, make_world
from tests.servers import ImapTestServer, SmtpSink, sample_message
from tests.waiting import wait_for

SUBJECT = "Unsubscribe special offers"
CUSTOMERS = 30


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def time(self) -> float:
        return self._now.timestamp()

    def monotonic(self) -> float:
        return self._now.timestamp()

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def customer(i: int) -> str:
    return f"c{i:02d}@example.com"


@pytest.fixture
async def world(tmp_path: Path, database: Path | str, imap_server: ImapTestServer,
                smtp_sink: SmtpSink
                ) -> AsyncIterator[World]:
    csv_text = "name,email\n" + "".join(
        f"Customer {i:02d},{customer(i)}\n" for i in range(CUSTOMERS))
    yield await make_world(tmp_path, imap_server, smtp_sink, database=database, csv_text=csv_text)


def requests_from(world: World, count: int) -> None:
    world.deliver(*(sample_message(subject=SUBJECT, sender=customer(i),
                                   to="unsubscribe@imperial.test", body="Please stop.\n")
                    for i in range(count)))


def confirmations(sink: SmtpSink) -> Counter[str]:
    return Counter(r for m in sink.messages for r in m.rcpt_tos
                   if b"Auto-Submitted: auto-replied" in m.content)


def mailer(world: World, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "--settings", str(world.settings_path), *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "MAILER_SECRET": DAEMON_SECRET})


async def test_three_overlapping_inbox_runs_and_a_daemon_confirm_every_customer_exactly_once(
    world: World
) -> None:
    requests_from(world, CUSTOMERS)
    world.sink.delay_s = 0.05  # sends take a while, so the four senders overlap

    daemon = mailer(world, "run")
    try:
        crons = [mailer(world, "inbox", "process") for _ in range(3)]
        for cron in crons:
            _, stderr = cron.communicate(timeout=120)
            assert cron.returncode == 0, stderr.decode()
        await wait_for(
            lambda: world.query("SELECT count(*) FROM outbox WHERE status = 'pending'")
            == [(0,)], what="the outbox to be empty")
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, stderr.decode()

    assert confirmations(world.sink) == {customer(i): 1 for i in range(CUSTOMERS)}
    assert world.query("SELECT status, count(*) FROM outbox GROUP BY status") == [
        ("sent", CUSTOMERS)]


async def test_three_senders_on_one_outbox_never_send_the_same_confirmation(
    world: World
) -> None:
    requests_from(world, CUSTOMERS)
    await world.process()
    world.sink.delay_s = 0.02
    settings = outbox_config(world.settings)

    async def sender(pid: int) -> int:
        async with open_db(world.db_path) as conn:
            sent = 0
            while (report := await send_due_confirmations(conn, settings,
                                            owner=ClaimOwner("elsewhere", pid))).sent:
                sent += report.sent
            return sent

    counts = await asyncio.gather(*(sender(pid) for pid in (1, 2, 3)))

    assert sum(counts) == CUSTOMERS
    assert confirmations(world.sink) == {customer(i): 1 for i in range(CUSTOMERS)}


async def test_a_confirmation_sent_by_a_process_killed_before_marking_it_goes_once_more(
    world: World
) -> None:
    requests_from(world, 1)
    await world.process()
    world.sink.delay_s = 5.0  # the sink holds its reply to DATA: the sender waits, unmarked
    cron = mailer(world, "inbox", "process")
    try:
        await wait_for(lambda: world.sink.transactions == 1, what="the one SMTP transaction")
    finally:
        cron.send_signal(signal.SIGKILL)
        cron.wait(timeout=60)
    # The whole message had reached the sink (its DATA ended) when the sender died unmarked.
    assert world.query("SELECT status, claim_pid FROM outbox") == [("pending", cron.pid)]
    world.sink.delay_s = 0.0

    again = await world.send_confirmations()
    after = await world.send_confirmations()

    assert (again.sent, after.sent) == (1, 0)
    assert world.sink.transactions == 2  # the killed process's send, and exactly one more
    assert confirmations(world.sink) == {customer(0): 1}
    assert world.query("SELECT status, claim_pid FROM outbox") == [("sent", None)]


async def claim_as(world: World, owner: ClaimOwner, clock: FakeClock) -> int:
    async with open_db(world.db_path) as conn, transaction(conn):
        item = await outbox_store.claim_next(conn, owner, now=clock.now(),
                                             now_s=clock.time(), ttl_s=300.0)
    assert item is not None
    return item.id


async def test_a_claim_held_by_a_process_on_another_host_is_waited_out_until_it_expires(
    world: World
) -> None:
    requests_from(world, 1)
    await world.process()
    clock = FakeClock()
    claimed_at = clock.time()
    await claim_as(world, ClaimOwner("another-host", os.getpid() + 1), clock)
    settings = outbox_config(world.settings)

    def expire_in(seconds: float) -> None:
        # On PostgreSQL claims expire by the database's clock, which the test cannot move:
        # the claim's expiry is moved instead.
        if isinstance(world.db_path, str):
            dbrows.execute(world.db_path, "UPDATE outbox SET claim_expires_at = "
                           "extract(epoch FROM clock_timestamp()) + ?", (seconds,))
        else:
            clock.advance(claimed_at + 300.0 - seconds - clock.time())

    async with open_db(world.db_path) as conn:
        expire_in(1.0)
        before = await send_due_confirmations(conn, settings, clock=clock)
        expire_in(0.0)
        expired = await send_due_confirmations(conn, settings, clock=clock)

    assert (before.sent, expired.sent) == (0, 1)
    assert confirmations(world.sink) == {customer(0): 1}


async def test_a_claim_held_by_a_live_process_on_this_host_is_left_alone(world: World) -> None:
    requests_from(world, 1)
    await world.process()
    clock = FakeClock()
    parent = ClaimOwner(socket.gethostname(), os.getppid())  # alive: it runs this test
    await claim_as(world, parent, clock)

    async with open_db(world.db_path) as conn:
        report = await send_due_confirmations(conn, outbox_config(world.settings), clock=clock)

    assert report.sent == 0
    assert world.sink.messages == []
    assert not owner_is_gone(parent, ClaimOwner(socket.gethostname(), os.getpid()))


async def test_a_transient_failure_is_retried_when_the_confirmation_policy_says(
    world: World
) -> None:
    requests_from(world, 1)
    await world.process()
    clock = FakeClock()
    settings = outbox_config(world.settings)
    world.sink.fail_next(1, code=451)
    wait_s = backoff.CONFIRMATION.delay_s(1, rand=lambda: 0.0)

    async with open_db(world.db_path) as conn:
        failed = await send_due_confirmations(conn, settings, clock=clock)
        clock.advance(wait_s - 1.0)
        early = await send_due_confirmations(conn, settings, clock=clock)
        clock.advance(1.0)
        due = await send_due_confirmations(conn, settings, clock=clock)

    assert (failed.retrying, early.sent, due.sent) == (1, 0, 1)
    assert confirmations(world.sink) == {customer(0): 1}
    assert world.query("SELECT attempts, claim_host FROM outbox") == [(2, None)]


async def test_a_confirmation_that_keeps_failing_gives_up_after_the_policys_attempts(
    world: World
) -> None:
    requests_from(world, 1)
    await world.process()
    clock = FakeClock()
    settings = outbox_config(world.settings)
    attempts = backoff.CONFIRMATION.max_attempts
    assert attempts is not None
    world.sink.fail_next(attempts, code=451)

    async with open_db(world.db_path) as conn:
        for attempt in range(1, attempts + 1):
            report = await send_due_confirmations(conn, settings, clock=clock)
            clock.advance(backoff.CONFIRMATION.delay_s(attempt, rand=lambda: 0.0))

    assert (report.retrying, report.failed) == (0, 1)
    assert world.query("SELECT status, attempts FROM outbox") == [("failed", attempts)]
    assert world.sink.messages == []


def request(sender: str) -> bytes:
    return sample_message(subject=SUBJECT, sender=sender, to="unsubscribe@imperial.test",
                          body="Please stop.\n")


async def test_confirmation_that_fails_to_send_is_retried_and_never_undoes_the_opt_out(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database)
    world.deliver(request("ann@example.com"))
    await world.process()
    world.sink.fail_next(1, code=451)

    first = await world.send_confirmations()
    assert (first.sent, first.retrying) == (0, 1)
    assert world.opted_out() == {"ann@example.com"}
    world.query("UPDATE outbox SET next_attempt_at = '2000-01-01'")  # make the retry due now
    second = await world.send_confirmations()
    assert second.sent == 1
    assert len(world.sink.messages) == 1


async def test_a_confirmation_that_cannot_be_built_fails_alone_and_the_rest_go_out(
    tmp_path: Path, database: Path | str, imap_server: ImapTestServer, smtp_sink: SmtpSink
) -> None:
    world = await make_world(tmp_path, imap_server, smtp_sink, database=database,
                             csv_text="name,email\nZoë Brontë,zoë@example.com\n"
                                      "Ann Lee,ann@example.com\n")
    world.deliver(request("zoë@example.com"), request("ann@example.com"))
    await world.process()

    report = await world.send_confirmations()

    assert world.opted_out() == {"zoë@example.com", "ann@example.com"}
    assert (report.sent, report.failed) == (1, 1)
    assert [m.rcpt_tos for m in world.sink.messages] == [("ann@example.com",)]
    (error,) = world.query("SELECT last_error FROM outbox WHERE status = 'failed'")
    assert str(error[0]).startswith("cannot build the message:")
