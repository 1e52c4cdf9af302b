"""The confirmation outbox on several hosts sharing one PostgreSQL: claims that pass over rows
another host is claiming (SKIP LOCKED) instead of waiting, and LISTEN/NOTIFY waking every
host's outbox when a confirmation is queued anywhere (mailer.store.notify). The outbox's
exactly-once tests on both engines are in tests/test_outbox.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.backoff import Backoff
from mailer.consent.confirmations import Outbox, OutboxReport, outbox_config
from mailer.lifecycle.supervise import Part
from mailer.store import outbox as outbox_store
from mailer.store.db import open_db, transaction
from mailer.store.notify import OUTBOX_CHANNEL, listen, notify
from mailer.store.outbox import ClaimOwner, NewConfirmation
from tests import dbrows
from tests.inbox.world import World, make_world
from tests.postgres import PostgresServer
from tests.servers import ImapTestServer, SmtpSink
from tests.waiting import wait_for

CSV = "name,email\n" + "".join(f"Customer {i},c{i}@example.com\n" for i in range(3))


@pytest.fixture
async def world(tmp_path: Path, postgres_server: PostgresServer, imap_server: ImapTestServer,
                smtp_sink: SmtpSink) -> AsyncIterator[World]:
    url = postgres_server.create_database()
    yield await make_world(tmp_path, imap_server, smtp_sink, CSV, database=url)
    postgres_server.drop_database(url.rsplit("/", 1)[1])


async def queue_confirmations(world: World, count: int) -> None:
    """As a request honoured on another host does: in a transaction of its own."""
    ids = [int(r[0]) for r in world.query("SELECT id FROM customers ORDER BY id")][:count]
    async with open_db(world.db_path) as conn, transaction(conn):
        await outbox_store.enqueue_confirmations(conn, [
            NewConfirmation(customer_id=i, to_address=f"c{n}@example.com", to_name="Customer",
                            categories=("offers",), request_subject="Unsubscribe",
                            in_reply_to="", refs=())
            for n, i in enumerate(ids)], interval_h=24.0, now=datetime.now(UTC))


def listening(world: World) -> bool:
    return dbrows.rows(world.db_path, "SELECT count(*) FROM pg_stat_activity WHERE "
                       "application_name = ? AND query LIKE 'LISTEN%'",
                       (f"mailer listen {OUTBOX_CHANNEL}",)) == [(1,)]


async def test_a_confirmation_queued_on_another_host_wakes_a_waiting_outbox_at_once(
    world: World,
) -> None:
    rounds: list[OutboxReport] = []
    # A minute between rounds: only a wake-up can send it within the wait below.
    outbox = Outbox(world.db_path, outbox_config(world.settings), part=Part("outbox"),
                    interval_s=60.0, on_round=rounds.append)
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    try:
        await wait_for(lambda: listening(world) and bool(rounds) and not outbox.wake.is_set(),
                       what="the outbox listening, its first rounds done")
        await asyncio.sleep(0.5)  # the round its own start woke (if any) has ended
        sent_before = sum(r.sent for r in rounds)
        await queue_confirmations(world, 1)
        await wait_for(lambda: len(world.sink.messages) == 1, what="the confirmation sent",
                       timeout_s=20.0)
        assert sent_before == 0
        # The sink has the message before the outbox records it sent: wait for the record.
        await wait_for(lambda: world.query("SELECT status FROM outbox") == [("sent",)],
                       what="the confirmation recorded sent")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_a_claim_passes_over_a_row_another_host_is_claiming_instead_of_waiting(
    world: World,
) -> None:
    await queue_confirmations(world, 2)
    now = datetime.now(UTC)
    async with (open_db(world.db_path) as first, open_db(world.db_path) as second,
                transaction(first, exclusive=False)):
        mine = await outbox_store.claim_next(first, ClaimOwner("host-a", 1), now=now,
                                             now_s=now.timestamp(), ttl_s=300.0)
        # Host A has not committed its claim yet: host B takes the next row meanwhile.
        async with transaction(second, exclusive=False):
            theirs = await asyncio.wait_for(outbox_store.claim_next(
                second, ClaimOwner("host-b", 2), now=now, now_s=now.timestamp(),
                ttl_s=300.0), timeout=20.0)
    assert mine is not None and theirs is not None
    assert mine.id != theirs.id
    assert sorted(map(tuple, world.query("SELECT claim_host FROM outbox ORDER BY id"))) == [
        ("host-a",), ("host-b",)]


async def test_a_listener_listens_again_after_losing_its_connection(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    heard: list[None] = []

    async def keep_listening() -> None:
        async for _ in listen(url, "mailer_test", policy=Backoff(base_s=0.05, max_s=0.2)):
            heard.append(None)

    task = asyncio.create_task(keep_listening())
    try:
        await wait_for(lambda: len(heard) == 1, what="listening")  # it says when it starts
        async with open_db(url) as conn:
            await notify(conn, "mailer_test")
            await wait_for(lambda: len(heard) == 2, what="the first notification")
        postgres_server.kill_connections(url.rsplit("/", 1)[1])
        # Back, it says so (notifications sent while it was away are lost: look again).
        await wait_for(lambda: len(heard) == 3, what="listening again")
        async with open_db(url) as conn:
            await notify(conn, "mailer_test")
            await wait_for(lambda: len(heard) == 4, what="a notification after the loss")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        postgres_server.drop_database(url.rsplit("/", 1)[1])


async def test_notify_is_nothing_on_sqlite_and_listen_ends_at_once(tmp_path: Path) -> None:
    async with open_db(tmp_path / "mailer.db") as conn:
        await notify(conn, OUTBOX_CHANNEL)
    assert [_ async for _ in listen(tmp_path / "mailer.db", OUTBOX_CHANNEL)] == []


async def test_a_claim_of_a_daemon_gone_silent_on_another_host_is_taken_back_before_it_expires(
    world: World,
) -> None:
    # Host A's daemon claimed a confirmation and its host died: its heartbeat stopped two
    # minutes ago. Its claim would hold for another five minutes; host B sends it now.
    await queue_confirmations(world, 2)
    stale = "2000-01-01T00:00:00.000000+00:00"
    dbrows.execute(world.db_path, "INSERT INTO daemon_heartbeat (host, pid, started_at, version, "
                   "beat_at, stopped_at, parts) VALUES ('host-a', 4242, ?, '0.1.0', ?, NULL, "
                   "'{}')", (stale, stale))
    # A command run by hand on host C (no heartbeat) holds the other: that one waits.
    dbrows.execute(world.db_path, "UPDATE outbox SET claim_host = 'host-a', claim_pid = 4242, "
                   "claim_expires_at = 4102444800 WHERE id = (SELECT min(id) FROM outbox)")
    dbrows.execute(world.db_path, "UPDATE outbox SET claim_host = 'host-c', claim_pid = 99, "
                   "claim_expires_at = 4102444800 WHERE id = (SELECT max(id) FROM outbox)")
    report = await world.send_confirmations()
    assert report.sent == 1
    assert world.query("SELECT status, claim_host FROM outbox ORDER BY id") == [
        ("sent", None), ("pending", "host-c")]
