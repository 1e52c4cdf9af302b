"""`mailer run`'s campaign scheduler: due campaigns go out once, whoever runs it and however
often it is stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailer.campaigns.scheduler import CampaignScheduler, send_due_campaigns
from mailer.campaigns.senders import sender_lease
from mailer.lifecycle.supervise import Part
from mailer.store import campaigns as store
from mailer.store import leases
from mailer.store.db import open_db, transaction
from mailer.store.leases import Holder
from tests.campaigns.clock import FakeClock
from tests.campaigns.world import World
from tests.servers import SmtpSink
from tests.waiting import wait_for


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink, database: Path | str) -> Iterator[World]:
    yield World.build(tmp_path, smtp_sink, database)


def scheduling(world: World, stop: asyncio.Event, poll_interval_s: float,
               part: Part | None = None) -> asyncio.Task[None]:
    """The daemon's campaigns part, running until `stop`."""
    scheduler = CampaignScheduler.from_settings(world.settings, poll_interval_s=poll_interval_s,
                                                part=part)
    return asyncio.create_task(scheduler.run(stop))


def iso(delta_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat()


def status(world: World, campaign_id: int) -> tuple[str, str]:
    [(state, reason)] = world.rows(
        "SELECT status, status_reason FROM campaigns WHERE id = ?", (campaign_id,))
    return state, reason


def each_once(world: World, expected: set[str]) -> None:
    received = world.received()
    assert set(received) == expected
    assert set(received.values()) == {1}


async def test_a_due_campaign_is_sent_and_drafts_and_future_ones_are_left_alone(
    world: World,
) -> None:
    await world.add_customers(10)
    due = await world.create_campaign(at=iso(-60))
    future = await world.create_campaign(at=iso(3600))
    draft = await world.create_campaign()
    stop = asyncio.Event()
    loop = scheduling(world, stop, 0.05)
    await wait_for(lambda: status(world, due)[0] == "sent", what="the due campaign sent")
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert status(world, future)[0] == "scheduled" and status(world, draft)[0] == "draft"
    each_once(world, world.opted_in())


async def test_a_campaign_falls_due_while_the_loop_runs(world: World) -> None:
    await world.add_customers(3)
    due = datetime.now(UTC) + timedelta(seconds=3)
    campaign_id = await world.create_campaign(at=due.isoformat())
    early: list[int] = []  # messages sent by the end of each round that ended before `due`

    class Rounds(Part):
        def succeeded(self, **details: Any) -> None:
            if datetime.now(UTC) < due:
                early.append(len(world.sink.messages))
            super().succeeded(**details)

    stop = asyncio.Event()
    loop = scheduling(world, stop, 0.05, Rounds("campaigns"))
    await wait_for(lambda: status(world, campaign_id)[0] == "sent", what="the campaign sent")
    # Rounds ran while it was not yet due, and sent nothing.
    assert early and set(early) == {0}
    stop.set()
    await asyncio.wait_for(loop, 5)
    each_once(world, world.opted_in())


async def test_stopping_mid_campaign_returns_promptly_and_the_next_run_finishes_it(
    world: World,
) -> None:
    await world.add_customers(60)
    campaign_id = await world.create_campaign(at=iso(-1))
    world.sink.delay_s = 0.02
    stop = asyncio.Event()
    loop = scheduling(world, stop, 0.05)
    await wait_for(lambda: len(world.sink.messages) >= 10, what="10 messages sent")
    stop.set()
    stopped_with = len(world.sink.messages)
    await asyncio.wait_for(loop, 5)
    # Only the messages in flight when it stopped went out after: one per connection.
    assert len(world.sink.messages) - stopped_with <= world.settings.smtp.max_connections
    assert status(world, campaign_id)[0] == "sending"
    assert world.rows("SELECT count(*) FROM leases") == [(0,)]
    assert world.rows("SELECT count(*) FROM campaign_recipients WHERE status = 'sending'") == [
        (0,)]
    assert len(world.sink.messages) < 60
    world.sink.delay_s = 0.0
    stop = asyncio.Event()
    loop = scheduling(world, stop, 0.05)
    await wait_for(lambda: status(world, campaign_id)[0] == "sent", what="the campaign sent")
    stop.set()
    await asyncio.wait_for(loop, 5)
    each_once(world, world.opted_in())


async def test_two_daemons_on_one_database_send_each_message_once(world: World) -> None:
    await world.add_customers(80)
    first = await world.create_campaign(at=iso(-1))
    second = await world.create_campaign(kind="announcements", at=iso(-1))
    world.sink.delay_s = 0.002
    stop = asyncio.Event()
    loops = [scheduling(world, stop, 0.02)
             for _ in range(2)]
    await wait_for(lambda: status(world, first)[0] == status(world, second)[0] == "sent",
                   what="both campaigns sent")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*loops), 5)
    received = world.received()
    assert set(received) == world.opted_in("offers") | world.opted_in("announcements")
    assert set(received.values()) == {2}  # one offer and one announcement each
    assert len(world.sink.messages) == 160


async def test_a_crashed_senders_rows_on_another_host_are_sent_after_its_lease_expires(
    world: World,
) -> None:
    await world.add_customers(10)
    campaign_id = await world.create_campaign(at=iso(-1))
    clock = FakeClock(datetime.now(UTC))
    # What a sender killed mid-campaign on another host leaves behind: 'sending' rows and a
    # live lease (whether that process lives, this host cannot see).
    elsewhere = Holder(id="dead-pid1", host="another-host.invalid", pid=1)
    name = sender_lease(campaign_id, elsewhere.id)
    async with open_db(world.db) as conn:
        campaign = await store.get_campaign(conn, campaign_id)
        assert campaign is not None
        async with transaction(conn):
            await leases.acquire(conn, name, elsewhere,
                                 now_s=await leases.now_s(conn, clock), ttl_s=30.0)
            await store.snapshot_audience(conn, campaign)
            await store.mark_started(conn, campaign_id)
        theirs = await store.claim_batch(conn, campaign_id, 4, elsewhere.id)
        stop = asyncio.Event()
        # This daemon sends the rest alongside, and leaves theirs to them while they may live.
        [outcome] = await send_due_campaigns(conn, world.config(), stop, clock=clock)
        assert (outcome.status, outcome.sent) == ("sending", 6)
        expire(world, name, clock, 29.0)
        # Only their rows are left, and they may still be sending them: nothing to join.
        assert await send_due_campaigns(conn, world.config(), stop, clock=clock) == []
        expire(world, name, clock, 1.0)
        [outcome] = await send_due_campaigns(conn, world.config(), stop, clock=clock)
    assert (outcome.status, outcome.sent) == ("sent", 4)
    each_once(world, world.opted_in())
    ids = dict(world.rows("SELECT email, id FROM customers"))
    assert {ids[m.rcpt_tos[0]] for m in world.sink.messages[-4:]} == set(theirs)


async def test_a_campaign_whose_last_sender_died_before_writing_sent_is_finished(
    world: World,
) -> None:
    await world.add_customers(3)
    campaign_id = await world.create_campaign(at=iso(-1))
    async with open_db(world.db) as conn:
        campaign = await store.get_campaign(conn, campaign_id)
        assert campaign is not None
        async with transaction(conn):
            await store.snapshot_audience(conn, campaign)
            await store.mark_started(conn, campaign_id)
        # Every row settled, then the sender was killed before it wrote the campaign's end.
        world.rows("UPDATE campaign_recipients SET status = 'sent'")
        [outcome] = await send_due_campaigns(conn, world.config(), asyncio.Event())
    assert (outcome.status, outcome.sent) == ("sent", 0)
    assert world.sink.messages == []


def expire(world: World, name: str, clock: FakeClock, seconds: float) -> None:
    """Let `seconds` pass for a lease: the clock moves on SQLite (the caller's clock); on
    PostgreSQL, whose clock is the server's, the lease's expiry moves back instead."""
    clock.advance(seconds)
    if isinstance(world.db, str):
        world.rows("UPDATE leases SET expires_at = expires_at - ? WHERE name = ?",
                   (seconds, name))


async def test_a_due_campaign_whose_template_broke_is_paused_with_the_reason(
    world: World,
) -> None:
    await world.add_customers(3)
    world.write_template("fragile.txt", '{% extends "base.txt" %}{% block content %}Hi'
                         '{% endblock %}\n')
    campaign_id = await world.create_campaign(template="fragile", at=iso(-1))
    world.write_template("fragile.txt", '{% extends "base.txt" %}{% block content %}\n'
                         '{{ customer.nmae }}{% endblock %}\n')
    async with open_db(world.db) as conn:
        assert await send_due_campaigns(conn, world.config(), asyncio.Event()) == []
    state, reason = status(world, campaign_id)
    assert state == "paused"
    assert "campaigns/fragile" in reason and "nmae" in reason
    assert world.sink.messages == []
